"""End-to-end speed and peak memory of `avsep separate` on long 720p videos of two instruments.

Builds test videos from one corpus duet clip (default: the committed demo clip): its 224x224 frames
scaled x3 onto a 1280x720 canvas at 25 fps, its audio (44.1 kHz stereo AAC) and picture looped to the
asked length. Then runs `avsep separate VIDEO -o TMP -v` in a fresh child process per video and
reports wall time (decode, detection, tracking, separation and writing all included), the child's
peak RSS and the per-stage breakdown `-v` prints. Targets (issue 8): 60 s separated in <= 60 s wall on
this 2-core CPU; peak memory <= 3 GB for 10 minutes.

    python benchmarks/bench_separate.py --weights W.pt --detector D.pt [--method avpc]
        [--seconds 60] [--memory-minutes 10] [--clip demo/corpus/duet/.../syn001249.mp4] [--detect-imgsz 320]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
W, H, FPS, SR = 1280, 720, 25, 44100


def default_clip() -> Path:
    found = sorted((ROOT / "demo").rglob("*.mp4"))
    if not found:
        sys.exit("no demo clip found; pass --clip")
    return found[0]


def make_video(clip: Path, seconds: float, path: Path) -> None:
    """Loop `clip` to `seconds`, frames x3 on a 1280x720 canvas, streamed frame by frame."""
    from avsep_cli import media

    info = media.probe(clip)
    frames = [f for _, f in media.iter_frames(clip, FPS)]  # one loop at 25 fps (6 s: 150 small frames)
    audio = media.load_audio(clip, SR, duration=info.duration)
    reps = int(np.ceil(seconds / info.duration))
    n_audio = int(round(seconds * SR))
    wav = np.tile(audio, reps)[:n_audio]

    def canvas():
        for k in range(int(round(seconds * FPS))):
            f = frames[k % len(frames)]
            big = f.repeat(3, axis=0).repeat(3, axis=1)  # (672, 672, 3)
            out = np.full((H, W, 3), 40, np.uint8)
            y0, x0 = (H - big.shape[0]) // 2, (W - big.shape[1]) // 2
            out[y0 : y0 + big.shape[0], x0 : x0 + big.shape[1]] = big
            yield out

    media.write_video(path, canvas(), FPS, audio=np.stack([wav, wav]), sr=SR, preset="ultrafast", crf=23)


def run(video: Path, args) -> dict:
    out = video.parent / (video.stem + "-stems")
    cmd = [sys.executable, "-m", "avsep_cli", "separate", str(video), "-o", str(out), "-v", "--force",
           "--method", args.method]
    if args.weights:
        cmd += ["--weights", args.weights]
    if args.detector:
        cmd += ["--detector", args.detector]
    if args.detect_imgsz:
        cmd += ["--detect-imgsz", str(args.detect_imgsz)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"avsep separate failed: {proc.stderr.strip()}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB; the largest child so far
    return {"wall": wall, "peak_mb": max(peak, before) / 1024, "stdout": proc.stdout}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights")
    ap.add_argument("--detector")
    ap.add_argument("--method", default="avpc")
    ap.add_argument("--detect-imgsz", type=int, help="detector input size (the canvas shrinks the instruments)")
    ap.add_argument("--clip", type=Path)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--memory-minutes", type=float, default=10.0, help="0: skip the memory run")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    clip = args.clip or default_clip()
    tmp = Path(tempfile.mkdtemp(prefix="avsep-bench-"))
    try:
        rows = []
        for seconds in [args.seconds] + ([args.memory_minutes * 60] if args.memory_minutes else []):
            video = tmp / f"duet-{int(seconds)}s.mp4"
            t0 = time.perf_counter()
            make_video(clip, seconds, video)
            print(f"built {video.name} ({seconds:.0f} s, {W}x{H}) in {time.perf_counter() - t0:.0f} s", flush=True)
            r = run(video, args)
            rows.append((seconds, r))
            print(r["stdout"], flush=True)
        print("| video | wall time | x real time | peak RSS |")
        print("|---|---|---|---|")
        for seconds, r in rows:
            print(f"| {seconds:.0f} s 720p, 2 instruments | {r['wall']:.1f} s | {seconds / r['wall']:.2f} | {r['peak_mb']:.0f} MB |")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
