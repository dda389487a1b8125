"""Peak memory and wall time of decoding a long video with `avsep_cli.media`'s streamed readers.

Writes a test video (default 10 minutes, 1280x720, 25 fps, h264 ultrafast, stereo 44.1 kHz AAC) to a
temporary folder, then decodes it in fresh child processes: all audio through `iter_audio` (mono
11025 Hz) and all frames at 8 fps through `iter_frames`, plus `load_audio` of the whole track and
three seeking `frames_at` look-ups for comparison. Each child reports its own peak RSS
(VmHWM) and wall time; a baseline child that only imports the module shows what the
interpreter and libraries cost before any decoding. Prints a markdown table. Target: peak < 500 MB.

    python benchmarks/bench_decode_memory.py [--minutes 10] [--video existing.mp4] [--keep]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

W, H, FPS, SR = 1280, 720, 25, 44100


def make_video(path: Path, minutes: float) -> None:
    """Encode a moving colour pattern with a stereo tone pair, frame by frame (bounded memory)."""
    import av

    n_frames = int(minutes * 60 * FPS)
    ramp = np.linspace(0, 255, W * 2, dtype=np.float32)
    base = np.empty((H, W * 2, 3), np.uint8)  # twice as wide: each frame is a sliding window of it
    base[..., 0] = ramp[None]
    base[..., 1] = np.linspace(0, 255, H, dtype=np.float32)[:, None]
    base[..., 2] = (ramp[None] * 3) % 256
    samples_per_frame = SR // FPS
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "23"}
        aus = out.add_stream("aac", rate=SR, layout="stereo")
        aus.bit_rate = 128000
        for k in range(n_frames):
            shift = (k * 7) % W
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, shift : shift + W]), format="rgb24")
            frame.pts = k
            out.mux(vs.encode(frame))
            t = (np.arange(samples_per_frame) + k * samples_per_frame) / SR
            stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
            aframe = av.AudioFrame.from_ndarray(stereo, format="fltp", layout="stereo")
            aframe.sample_rate, aframe.pts, aframe.time_base = SR, k * samples_per_frame, Fraction(1, SR)
            out.mux(aus.encode(aframe))
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))


def child(stage: str, path: str) -> None:
    """Run one stage in this (fresh) process and print {"seconds", "peak_mb", "result"} as JSON."""
    t0 = time.perf_counter()
    from avsep_cli import media

    if stage == "import":
        result = "-"
    elif stage == "audio":
        n = sum(len(chunk) for chunk in media.iter_audio(path))
        result = f"{n} samples ({n / media.SAMPLE_RATE:.1f} s)"
    elif stage == "load":
        n = len(media.load_audio(path))
        result = f"{n} samples in one array"
    elif stage == "seek":
        info = media.probe(path)
        times = [info.duration * f for f in (0.9, 0.1, 0.5)]
        result = f"{len(media.frames_at(path, times))} frames at {', '.join(f'{t:.0f}' for t in times)} s"
    elif stage == "frames":
        n = 0
        for _, frame in media.iter_frames(path, fps=8.0):
            n += 1
        result = f"{n} frames {frame.shape[1]}x{frame.shape[0]}"
    else:
        raise SystemExit(f"unknown stage {stage}")
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb(), "result": result}))


def peak_rss_mb() -> float:
    """This process's peak resident set size. VmHWM rather than getrusage's ru_maxrss, which on Linux
    starts from the parent's peak at fork time (it survives exec) and so would report the encoder's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--video", type=Path, help="use this video instead of making one")
    ap.add_argument("--keep", action="store_true", help="keep the generated video and print its path")
    ap.add_argument("--child", nargs=2, metavar=("STAGE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    tmp = Path(tempfile.mkdtemp(prefix="avsep-bench-"))
    video = args.video
    if video is None:
        video = tmp / "bench.mp4"
        t0 = time.perf_counter()
        make_video(video, args.minutes)
        print(f"made {video} ({video.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    stages = [
        ("import", "import avsep_cli.media (baseline)"),
        ("audio", "iter_audio → mono 11025 Hz"),
        ("load", "load_audio (whole track)"),
        ("frames", "iter_frames at 8 fps, RGB"),
        ("seek", "frames_at, 3 times (seeking)"),
    ]
    rows = []
    for stage, label in stages:
        out = subprocess.run([sys.executable, __file__, "--child", stage, str(video)], capture_output=True, text=True, check=True)
        rows.append((label, json.loads(out.stdout.strip().splitlines()[-1])))
    from avsep_cli import media

    info = media.probe(video)
    print(
        f"\nDecoding {video.name}: {info.duration / 60:.1f} min, {info.width}x{info.height} {info.fps:g} fps, "
        f"{info.channels} channels at {info.sample_rate} Hz\n"
    )
    print("| stage | wall time (s) | peak RSS (MB) | output |")
    print("|---|---:|---:|---|")
    for label, r in rows:
        print(f"| {label} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | {r['result']} |")
    if args.keep and args.video is None:
        print(f"\nkept {video}")
    else:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
