"""End-to-end speed and peak memory of `avsep separate` on long 720p videos of two instruments.

Builds test videos from one corpus duet clip (default: the committed demo clip): its 224x224 frames
scaled x3 onto a 1280x720 canvas at 25 fps, its audio (AAC at `--sample-rate`, 44.1 kHz by default, with
the clip's own channels or `--channels`; a mono clip is copied to both channels of a stereo track) and
picture looped to the asked length. Then runs `avsep separate VIDEO -o TMP -v` in a fresh child process
per video and per output path (`--paths input,model`: `--sample-rate input`, full-band stems at the
input's rate and channels, and `--sample-rate model`, 11,025 Hz mono; `none` passes no --sample-rate, for
versions without it) and reports wall time (decode, detection, tracking, separation and writing all
included), the child's own peak RSS and CPU time (see TRAMPOLINE), the CPU that other jobs used meanwhile,
and the per-stage breakdown `-v` prints.
Targets (issue 8): 60 s separated in <= 60 s wall on this 2-core CPU; peak memory <= 3 GB for 10 minutes.
Full-band stems: a 1-hour 48 kHz stereo 720p video in under 2 GB, in at most 1.2x the time of the
11,025 Hz path:

    python benchmarks/bench_separate.py --seconds 0 --memory-minutes 60 --sample-rate 48000 --channels 2 \
        --paths model,input --detect-imgsz 320 --clip CORPUS44K/duet/.../<id>.mp4 [--videos DIR]

    python benchmarks/bench_separate.py --weights W.pt --detector D.pt [--method avpc]
        [--seconds 60] [--memory-minutes 10] [--clip demo/corpus/duet/.../syn001209.mp4] [--detect-imgsz 320]
        [--sample-rate 48000] [--channels 2] [--paths input,model] [--videos DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
W, H, FPS, SR = 1280, 720, 25, 44100  # SR: the default audio rate of the built videos


def default_clip() -> Path:
    found = sorted((ROOT / "demo").rglob("*.mp4"))
    if not found:
        sys.exit("no demo clip found; pass --clip")
    return found[0]


def load_track(clip: Path, sr: int, channels: int | None) -> np.ndarray:
    """The clip's audio as (C, n) float32 at `sr`, with its own channel count or `channels` (a mono track
    is copied to both sides of a stereo one; stereo becomes mono by FFmpeg's downmix)."""
    import av

    with av.open(str(clip)) as c:
        s = c.streams.audio[0]
        own = min(2, s.codec_context.channels)
        rs = av.AudioResampler(format="fltp", layout="mono" if own == 1 or channels == 1 else "stereo", rate=sr)
        parts = [f.to_ndarray() for fr in c.decode(s) for f in rs.resample(fr)]
        parts += [f.to_ndarray() for f in rs.resample(None)]
    wav = np.concatenate(parts, axis=1).astype(np.float32)
    return np.repeat(wav, 2, axis=0) if channels == 2 and wav.shape[0] == 1 else wav


def make_video(clip: Path, seconds: float, path: Path, sr: int = SR, channels: int | None = 2) -> None:
    """Loop `clip` to `seconds`, frames x3 on a 1280x720 canvas, streamed frame by frame; audio at `sr`
    with `channels` (None: the clip's)."""
    from avsep_cli import media

    info = media.probe(clip)
    frames = [f for _, f in media.iter_frames(clip, FPS)]  # one loop at 25 fps (6 s: 150 small frames)
    audio = load_track(clip, sr, channels)
    n_loop = int(round(info.duration * sr))
    audio = np.pad(audio[:, :n_loop], ((0, 0), (0, max(0, n_loop - audio.shape[1]))))
    reps = int(np.ceil(seconds / info.duration))
    n_audio = int(round(seconds * sr))
    wav = np.tile(audio, (1, reps))[:, :n_audio]

    def canvas():
        for k in range(int(round(seconds * FPS))):
            f = frames[k % len(frames)]
            big = f.repeat(3, axis=0).repeat(3, axis=1)  # (672, 672, 3)
            out = np.full((H, W, 3), 40, np.uint8)
            y0, x0 = (H - big.shape[0]) // 2, (W - big.shape[1]) // 2
            out[y0 : y0 + big.shape[0], x0 : x0 + big.shape[1]] = big
            yield out

    media.write_video(path, canvas(), FPS, audio=wav, sr=sr, preset="ultrafast", crf=23)


# Runs the command it is given and writes that child's peak RSS (KiB) and CPU seconds. On Linux a
# child's ru_maxrss starts from its parent's RSS at fork, so a child forked by this script (which holds
# the built video's audio, 1.4 GB for an hour at 48 kHz stereo) would report at least that; a child of
# this small process reports its own peak.
TRAMPOLINE = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
              "ru = resource.getrusage(resource.RUSAGE_CHILDREN); "
              "open(sys.argv[1], 'w').write(f'{ru.ru_maxrss} {ru.ru_utime + ru.ru_stime}'); sys.exit(rc)")


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy since boot (/proc/stat), to see what else ran."""
    try:
        f = [float(v) for v in open("/proc/stat").readline().split()[1:]]
        return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    except (OSError, ValueError, IndexError):
        return float("nan")


def run(video: Path, args, path: str = "none") -> dict:
    """One `avsep separate` in a fresh child process (see TRAMPOLINE for its peak RSS and CPU time)."""
    out = video.parent / (video.stem + "-stems")
    cmd = [sys.executable, "-m", "avsep_cli", "separate", str(video), "-o", str(out), "-v", "--force",
           "--method", args.method]
    if path != "none":
        cmd += ["--sample-rate", path]
    if args.weights:
        cmd += ["--weights", args.weights]
    if args.detector:
        cmd += ["--detector", args.detector]
    if args.detect_imgsz:
        cmd += ["--detect-imgsz", str(args.detect_imgsz)]
    log_out, log_err = video.parent / "stdout.txt", video.parent / "stderr.txt"
    stats = video.parent / "rusage.txt"
    with open(log_out, "w") as fo, open(log_err, "w") as fe:
        busy0, t0 = _busy_cpu_s(), time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", TRAMPOLINE, str(stats), *cmd], stdout=fo, stderr=fe)
        wall, busy = time.perf_counter() - t0, _busy_cpu_s() - busy0
    if proc.returncode != 0:
        sys.exit(f"avsep separate failed: {log_err.read_text().strip()[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)  # an hour of full-band stems is ~1.4 GB of disk
    maxrss, cpu = (float(v) for v in stats.read_text().split())
    # other_cpu_s: CPU the rest of the machine used meanwhile (other jobs slow the run down)
    return {"wall": wall, "peak_mb": maxrss / 1024, "cpu_s": cpu, "other_cpu_s": busy - cpu,
            "stdout": log_out.read_text()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights")
    ap.add_argument("--detector")
    ap.add_argument("--method", default="avpc")
    ap.add_argument("--detect-imgsz", type=int, help="detector input size (the canvas shrinks the instruments)")
    ap.add_argument("--clip", type=Path)
    ap.add_argument("--seconds", type=float, default=60.0, help="0: skip the speed run")
    ap.add_argument("--memory-minutes", type=float, default=10.0, help="0: skip the memory run")
    ap.add_argument("--sample-rate", type=int, default=SR, help="audio rate of the built videos (Hz)")
    ap.add_argument("--channels", type=int, choices=(1, 2), default=2,
                    help="audio channels of the built videos (a mono clip is copied to both sides)")
    ap.add_argument("--paths", default="none",
                    help="comma-separated avsep separate --sample-rate values to run on each video: input, "
                         "model, or none (the option not passed: versions without it)")
    ap.add_argument("--videos", type=Path, default=None,
                    help="folder for the built videos, kept and reused by later runs (default: a temporary one)")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or set(paths) - {"input", "model", "none"}:
        sys.exit(f"--paths {args.paths}: expected a comma-separated list of input, model, none")
    clip = args.clip or default_clip()
    tmp = args.videos or Path(tempfile.mkdtemp(prefix="avsep-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    audio = f"{args.sample_rate / 1000:g} kHz {'stereo' if args.channels == 2 else 'mono'}"
    try:
        rows = []
        lengths = ([args.seconds] if args.seconds else []) + ([args.memory_minutes * 60] if args.memory_minutes else [])
        for seconds in lengths:
            video = tmp / f"{clip.stem}-{int(seconds)}s-{args.sample_rate}hz-{args.channels}ch.mp4"
            if video.is_file() and args.videos:
                print(f"reusing {video}", flush=True)
            else:
                t0 = time.perf_counter()
                make_video(clip, seconds, video, args.sample_rate, args.channels)
                print(f"built {video.name} ({seconds:.0f} s, {W}x{H}, {audio}) in {time.perf_counter() - t0:.0f} s",
                      flush=True)
            for path in paths:
                r = run(video, args, path)
                rows.append((seconds, path, r))
                print(f"--sample-rate {path}:\n{r['stdout']}", flush=True)
            if not args.videos:
                video.unlink()
        print(f"\n| video ({W}x{H}, 2 instruments, {audio}) | stems | wall time | x real time | CPU time | peak RSS "
              f"| other jobs meanwhile |")
        print("|---|---|---|---|---|---|---|")
        label = {"input": "input rate and channels", "model": "11,025 Hz mono", "none": "(default)"}
        for seconds, path, r in rows:
            print(f"| {seconds:.0f} s | {label[path]} | {r['wall']:.1f} s | {seconds / r['wall']:.2f} | "
                  f"{r['cpu_s'] / 60:.1f} CPU-min | {r['peak_mb']:.0f} MB | {r['other_cpu_s'] / r['wall']:.2f} cores |")
        for seconds in lengths:
            by = {p: r for s, p, r in rows if s == seconds}
            if "input" in by and "model" in by:
                print(f"{seconds:.0f} s: full band / 11,025 Hz wall time {by['input']['wall'] / by['model']['wall']:.2f}x "
                      f"(target <= 1.2x), peak RSS {by['input']['peak_mb']:.0f} MB (target < 2048 MB)")
        if args.json:
            with open(args.json, "w") as f:
                json.dump([{"seconds": s, "path": p, "audio": audio, **{k: v for k, v in r.items()}}
                           for s, p, r in rows], f, indent=1)
    finally:
        if not args.keep and not args.videos:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
