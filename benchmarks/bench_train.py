"""Training speed of AVPC, Sound-of-Pixels and IAL-CMS per precision and memory format, side by side.

Each method is built as `avsep train --method M --preset cpu --cache-features --batch-size B` builds it
(its reference defaults, trunk features in place of frames) and stepped by the shared `Trainer`, once per
variant: fp32 (the references' precision, the default), fp32 with channels-last weights, bf16 autocast, and
bf16 with channels-last (`--precision bf16 --channels-last`). Every variant starts from the same seed, so
the same initial weights see the same batches in the same order (and IAL-CMS draws the same pairs).

Inputs are synthetic but shaped like a training batch: two (IAL-CMS: two items of two) sources of 65535
samples of harmonic notes with random pitches and envelopes, mixed as the datasets mix them, and
non-negative random trunk features of the trunk's output size for each of 3 frames (the cache's role);
a pool of 4 such batches is cycled. The timing does not depend on the content.

For each variant: steps/s (wall), process CPU seconds per step (all threads; the measure on a shared
machine) and the speed-up in steps per CPU-second over fp32, and the training loss over the last 5 of the N
steps (mean and spread) with its difference from fp32's: bf16 "matches within noise" when that difference
is no larger than the steps' own spread. `--profile` adds torch.profiler's top operators (self CPU time) of
3 steps of each variant.

Run:  python benchmarks/bench_train.py [--methods avpc,sop,ialcms] [--variants fp32,fp32-cl,bf16,bf16-cl]
          [--steps 20] [--warmup 3] [--batch 8] [--threads 1] [--seed 0] [--profile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from avsep_cli import checkpoint, dsp  # noqa: E402
from avsep_cli.training.config import TrainConfig  # noqa: E402
from avsep_cli.training.run import METHOD_DEFAULTS, MASK_OPTIONS, model_config  # noqa: E402
from avsep_cli.training.trainer import Trainer  # noqa: E402

VARIANTS = {"fp32": ("fp32", False), "fp32-cl": ("fp32", True), "bf16": ("bf16", False), "bf16-cl": ("bf16", True)}
FRAMES, POOL, LAST = 3, 4, 5


def make_audio(g: torch.Generator, shape: tuple, length: int) -> torch.Tensor:
    """(*shape, L) harmonic notes with random pitches and envelopes at 11025 Hz."""
    t = torch.arange(length) / dsp.SAMPLE_RATE
    f0 = 110 * 2 ** (torch.rand(*shape, 1, generator=g) * 4)
    x = sum(torch.sin(2 * torch.pi * h * f0 * t) / h for h in range(1, 8))
    env = torch.rand(*shape, 24, generator=g).repeat_interleave(-(-length // 24), -1)[..., :length]
    return 0.3 * x * env + 0.01 * torch.randn(*shape, length, generator=g)


def build(method: str, variant: str, batch: int, seed: int, run_dir: Path) -> Trainer:
    """The method's system at --preset cpu with cached features, in a Trainer of the variant's precision."""
    from avsep_cli.training.systems import MaskSystem

    precision, channels_last = VARIANTS[variant]
    cfg = TrainConfig(**{**METHOD_DEFAULTS[method], "method": method, "preset": "cpu", "cache_features": True,
                         "batch_size": batch, "seed": seed, "precision": precision, "channels_last": channels_last})
    cfg.model = model_config(method, "cpu", {})
    cfg.model.update({"avpc": {"trunk_bn_train": False}, "sop": {"train_trunk": False}}.get(method, {}))  # as --cache-features
    checkpoint._load_builtin_models()
    torch.manual_seed(seed)
    model = checkpoint.MODELS[method](**cfg.model)
    if method == "ialcms":
        from avsep_cli.models.ialcms_critic import CriticConfig
        from avsep_cli.training.ialcms import IALCMSSystem, IALOptions

        system = IALCMSSystem(model, method, cfg.model, IALOptions(), asdict(CriticConfig.preset("cpu")), cfg.grad_clip)
    else:
        system = MaskSystem(model, method, cfg.model, target=MASK_OPTIONS[method]["target"])
    return Trainer(system, cfg, [], torch.device("cpu"), run_dir)


def trunk_shape(trainer: Trainer) -> tuple[int, int, int]:
    """(C, h, w) of one frame's cached trunk features: (512, h, w), or both levels packed (1024, h, w) for
    IAL-CMS's DeepLabv3+ head (what `--cache-features` stores for it)."""
    model = trainer.model
    trunk = model.visual.cached_trunk()[0] if hasattr(model, "visual") else model.frame_net.trunk
    size = trainer.cfg.model["frame_size"]
    with torch.no_grad():
        return tuple(trunk(torch.zeros(1, 3, size, size)).shape[1:])  # (C, h, w)


def batches(method: str, b: int, feat: tuple, seed: int) -> list[dict]:
    """A pool of training batches shaped as the method's cached-feature batches."""
    g = torch.Generator().manual_seed(seed + 1000)
    feats = lambda *lead: torch.relu(torch.randn(*lead, FRAMES, *feat, generator=g))  # noqa: E731
    out = []
    for _ in range(POOL):
        if method == "ialcms":  # two items, each the mean of two solos; one object per solo
            solos = make_audio(g, (b, 2, 2), dsp.SEGMENT)  # (B, item, solo, L)
            clips = solos.mean(2)  # (B, 2, L)
            out.append({"mixture": clips.sum(1), "clip_mixtures": clips, "crops": feats(b, 4),
                        "object_clip": torch.tensor([0, 0, 1, 1]).repeat(b, 1), "object_valid": torch.ones(b, 4, dtype=torch.bool)})
        else:  # two sources, mean-mixed (the references'): stems are each source's contribution
            stems = make_audio(g, (b, 2), dsp.SEGMENT) / 2  # (B, N, L)
            out.append({"mixture": stems.sum(1), "stems": stems, "feats": feats(b, 2)})
    return out


def run(method: str, variant: str, a, profile: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build(method, variant, a.batch, a.seed, Path(tmp))
        pool = batches(method, a.batch, trunk_shape(trainer), a.seed)
        torch.manual_seed(a.seed)  # the same random draws (IAL-CMS pairs, bank) in every variant
        losses = []
        for i in range(a.warmup):
            losses.append(trainer.train_step(pool[i % POOL])["loss"])
        w0, c0 = time.perf_counter(), time.process_time()
        for i in range(a.warmup, a.warmup + a.steps):
            losses.append(trainer.train_step(pool[i % POOL])["loss"])
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        top = None
        if profile:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as prof

            with prof(activities=[ProfilerActivity.CPU]) as p:
                for i in range(3):
                    trainer.train_step(pool[i % POOL])
            top = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40)
    last = losses[-LAST:]
    return {"steps_s": a.steps / wall, "cpu_step": cpu / a.steps, "loss": statistics.mean(last),
            "spread": statistics.pstdev(last), "top": top}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="avpc,sop,ialcms")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    variants = a.variants.split(",")
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}: expected {', '.join(VARIANTS)}")
    isa = torch.backends.cpu.get_cpu_capability()
    print(f"--preset cpu, cached features, batch {a.batch}, {a.steps} timed steps after {a.warmup} warm-up, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, CPU capability {isa}, "
          f"oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}")
    print(f"{'method':8s} {'variant':8s} {'steps/s':>8s} {'CPU s/step':>11s} {'x fp32 (CPU)':>13s} "
          f"{'loss (last ' + str(LAST) + ')':>16s} {'spread':>8s} {'- fp32':>8s}")
    tops = []
    for method in a.methods.split(","):
        base = None
        for v in variants:
            r = run(method, v, a, a.profile)
            base = base or r
            print(f"{method:8s} {v:8s} {r['steps_s']:8.3f} {r['cpu_step']:11.3f} {base['cpu_step'] / r['cpu_step']:13.2f} "
                  f"{r['loss']:16.4f} {r['spread']:8.4f} {r['loss'] - base['loss']:+8.4f}", flush=True)
            if r["top"]:
                tops.append((method, v, r["top"]))
    for method, v, top in tops:
        print(f"\n{method} {v}: top operators by self CPU time (3 steps)\n{top}")


if __name__ == "__main__":
    main()
