"""Benchmark of avsep_cli.metrics against mir_eval.separation.bss_eval_sources on 2-source clips of
65535 samples (6 s at 11025 Hz, the evaluation clip length): mir_eval per clip, our NumPy drop-in per
clip, and our batched torch API over a batch of clips. Timings are interleaved (mir_eval, then ours,
clip by clip) so that load from other processes hits both alike; the table reports medians. It also
checks that every benchmarked clip agrees with mir_eval to 0.01 dB, and reports how many clips of the
batch the Levinson path's checks accepted (the others are recomputed by the dense path).

`--no-permutation` runs every implementation with compute_permutation=False (estimate j scored against
reference j), the mode `avsep eval` uses; mir_eval then decomposes S pairs per clip instead of S^2, so the
speed-up is smaller than with the default, compute_permutation=True (the drop-in's and mir_eval's default).

`--threads N` limits torch and the BLAS behind NumPy (mir_eval's solver included) to N threads; it sets
OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS before NumPy is loaded.

Run:  python benchmarks/bench_metrics.py [--clips 5] [--batch 16] [--repeats 3] [--sources 2] [--threads N]
             [--no-permutation]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings


def _early_threads() -> None:
    """Apply --threads to the BLAS libraries, which read their thread count once, when NumPy loads."""
    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
        elif arg == "--threads" and i + 1 < len(args):
            value = args[i + 1]
        else:
            continue
        if int(value) > 0:
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = value


_early_threads()

import numpy as np  # noqa: E402  (after the thread settings)
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from avsep_cli import metrics  # noqa: E402

SR = 11025


def make_clip(seed: int, n_src: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic-tone references with note envelopes; estimates = references leaking into each other plus
    noise (the timing does not depend on the content, but realistic numbers make the check meaningful)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    refs = []
    for _ in range(n_src):
        f0 = 110 * 2 ** (rng.integers(0, 24, size=n // 4000 + 1) / 12)
        f = np.repeat(f0, 4000)[:n]  # one note per 4000 samples
        phase = 2 * np.pi * np.cumsum(f) / SR
        env = np.exp(-(t % (4000 / SR)) * rng.uniform(2, 6))
        refs.append(env * sum(0.6**h * np.sin((h + 1) * phase) for h in range(6)))
    refs = np.stack(refs)
    mix = np.eye(n_src) + 0.2 * rng.random((n_src, n_src))
    return refs, mix @ refs + 0.05 * rng.standard_normal((n_src, n))


def timed(fn):
    """(wall seconds, CPU seconds of this process over all threads, result)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=5, help="clips timed one by one (mir_eval and ours)")
    ap.add_argument("--batch", type=int, default=16, help="clips per call of the batched API")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls of the batched API")
    ap.add_argument("--sources", type=int, default=2)
    ap.add_argument("--samples", type=int, default=65535)
    ap.add_argument("--threads", type=int, default=0, help="threads for torch and BLAS (0: the libraries' defaults)")
    ap.add_argument("--permutation", action=argparse.BooleanOptionalAction, default=True,
                    help="compute_permutation for every implementation (--no-permutation: as `avsep eval` scores)")
    args = ap.parse_args()
    perm = args.permutation
    load_start = os.getloadavg()[0]
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    import mir_eval.separation as mir_sep

    n_src, n = args.sources, args.samples
    clips = [make_clip(seed, n_src, n) for seed in range(max(args.clips, args.batch))]

    # warm-up (first calls pay for library initialisation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mir_sep.bss_eval_sources(*clips[0], compute_permutation=perm)
    metrics.bss_eval_sources(*clips[0], compute_permutation=perm)

    t_mir, t_ours, worst = [], [], 0.0
    for refs, est in clips[: args.clips]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            *dt, theirs = timed(lambda: mir_sep.bss_eval_sources(refs, est, compute_permutation=perm))
        t_mir.append(dt)
        *dt, ours = timed(lambda: metrics.bss_eval_sources(refs, est, compute_permutation=perm))
        t_ours.append(dt)
        worst = max(worst, max(float(np.abs(a - b).max()) for a, b in zip(ours[:3], theirs[:3])))
        assert np.array_equal(ours[3], theirs[3]), "permutation differs from mir_eval"

    ref_b = torch.from_numpy(np.stack([c[0] for c in clips[: args.batch]]))
    est_b = torch.from_numpy(np.stack([c[1] for c in clips[: args.batch]]))
    metrics.bss_eval(ref_b[:2], est_b[:2], compute_permutation=perm)
    t_batch = []
    for _ in range(args.repeats):
        wall, cpu, _ = timed(lambda: metrics.bss_eval(ref_b, est_b, compute_permutation=perm))
        t_batch.append((wall / args.batch, cpu / args.batch))

    load_end = os.getloadavg()[0]
    rr, xc = metrics._correlations(ref_b, est_b, metrics.FILTER_LEN, use_numpy=True)
    accepted = metrics._levinson_energies(rr, xc, np.zeros(ref_b.shape[:2], bool), metrics._sum_sq(est_b).numpy())[2]

    def med(ts, k):
        return statistics.median(t[k] for t in ts) * 1e3

    mir_ms, mir_cpu = med(t_mir, 0), med(t_mir, 1)
    rows = [
        ("mir_eval 0.8 `bss_eval_sources` (per clip)", t_mir),
        ("avsep `bss_eval_sources` (NumPy drop-in, per clip)", t_ours),
        (f"avsep `bss_eval` (torch, batch of {args.batch}, per clip)", t_batch),
    ]
    cmd = "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:])
    print(f"`{cmd}`\n")
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(
        f"{n_src} sources x {n} samples, compute_permutation={perm} (all three); {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, BLAS threads {blas}, load average {load_start:.2f} at the "
        f"start, {load_end:.2f} at the end; median of {args.clips} clips (per-clip rows) / {args.repeats} calls "
        f"(batched row).\n"
    )
    print("| implementation | wall ms per clip | speed-up | CPU ms per clip (all threads) | CPU speed-up |")
    print("|---|---:|---:|---:|---:|")
    for name, ts in rows:
        wall, cpu = med(ts, 0), med(ts, 1)
        print(f"| {name} | {wall:.1f} | {mir_ms / wall:.1f}x | {cpu:.1f} | {mir_cpu / cpu:.1f}x |")
    print(f"\nLargest |difference| from mir_eval over the timed clips (SDR/SIR/SAR): {worst:.2e} dB")
    if not worst <= 0.01:  # the promise of avsep_cli.metrics (also False for NaN)
        sys.exit(f"disagreement with mir_eval above 0.01 dB: {worst:.2e} dB")
    print(f"Levinson path accepted {int(accepted.sum())}/{len(accepted)} clips of the batch (the rest: dense path)")


if __name__ == "__main__":
    main()
