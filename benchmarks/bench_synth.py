"""Time `avsep data synth` on 1,005 six-second solo clips (15 classes x 67) with 2 worker processes.

The issue's target is 1,000 clips in under 5 minutes on a 2-core machine. The score cache is warmed
first (a one-off cost of ~15 s per cache folder, reported separately), so the figure is the steady
cost of generation: planning, FluidSynth, room, pictures in motion, encoding and writing. Two of its parts
are timed first, in this process: one procedural drawing (median over every style and class, 224 px) and
one 6-s duet scene at 8 fps (mean of 4); the tests check what they draw, not how fast.
Run: python benchmarks/bench_synth.py [OUT_DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from avsep_cli.corpus import drawings, pictures, scene, scores
from avsep_cli.corpus import generate as G


def time_parts() -> None:
    times = []
    for style in drawings.STYLES:
        for cls in pictures.CLASSES:
            t = time.perf_counter()
            drawings.draw(cls, 1, 224, style)
            times.append(time.perf_counter() - t)
    pics = [drawings.draw("violin", 0, 224), drawings.draw("tuba", 0, 224)]
    scene.render_scene(pics, 4, 8.0, 224, np.random.default_rng(0))  # warm-up
    t = time.perf_counter()
    for seed in range(4):
        scene.render_scene(pics, 48, 8.0, 224, np.random.default_rng(seed))
    print(f"one drawing: {np.median(times) * 1000:.1f} ms (median of {len(times)}); one 6-s duet scene at 8 fps: "
          f"{(time.perf_counter() - t) / 4 * 1000:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--per-class", type=int, default=67)
    args = ap.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="avsep-bench-")) / "corpus"
    if out.exists():
        shutil.rmtree(out)
    time_parts()
    cache = G.default_cache_dir()
    t = time.perf_counter()
    scores.load_pool("folk", G.PRESETS["default"].folk_pieces, cache / "scores")
    print(f"score cache warm-up: {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    plan = G.generate(out, workers=args.workers, size="default", seed=0, solos_per_class=args.per_class, duets=0)
    dt = time.perf_counter() - t
    n = len(plan.clips)
    size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    print(f"{n} clips of {plan.recipe['duration']:.0f} s with {args.workers} workers: {dt:.1f} s "
          f"({dt / n * 1000:.0f} ms per clip, {dt / n * 1000 / 60:.2f} min per 1,000 clips); {size_mb:.0f} MB in {out}")


if __name__ == "__main__":
    main()
