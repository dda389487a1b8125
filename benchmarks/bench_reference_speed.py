"""One AVPC training step of the authors' code against ours, same configuration, same inputs, one process.

A training step is what each trains per batch: the reference's `NetWrapper.forward` (log-frequency warp by
grid sampling, loss weight, binary targets, the frame net on every source's frames, PCNetLR once per source,
BCE) then backward and its AdamW step with `create_optimizer`'s groups (avpc/main.py 183-291, 438-450);
ours is `Trainer.train_step` on `MaskSystem` with the AVPC defaults of `avsep train --method avpc` (fp32,
the frame net's trunk BatchNorm in train mode, as the reference). Both see the same batch: B mixtures of N
sources, K frames per source at the frame size. The reference computes its STFTs in the data loader; ours
computes them inside the step, so the table also gives our step without the STFTs of the mixture and
stems (the STFT cost measured on the same batch and subtracted). Steps of the two alternate (theirs,
then ours, repeated) so that load from other processes hits both alike; medians are reported, of process
CPU time (the measure: with one thread it does not count time spent waiting for a shared core) and of
wall time.

Export the reference (it is not part of avsep and is never committed here) into a folder outside the
repository, from a clone of https://github.com/zjsong/Audio-Visual-Predictive-Coding:

    DIR=$(mktemp -d)
    git -C Audio-Visual-Predictive-Coding archive HEAD avpc | tar -x -C "$DIR"
    python benchmarks/bench_reference_speed.py --reference "$DIR"

`--reference` is the folder holding `avpc/` (or `avpc/` itself). The reference imports packages its
training step does not use (OpenCV, librosa, mir_eval for its utilities, its MUSIC dataset); this script
puts empty stand-ins for those in `sys.modules` before importing it and changes no file of it. Its frame
net is built from an untrained torchvision ResNet-18 (weights play no part in the timing; nothing is
downloaded), and `Tensor.cuda` is the identity while its step runs (its wrapper moves inputs to the GPU).
It runs without DistributedDataParallel, in one process, as ours does on a CPU.

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_reference_speed.py --reference DIR [--ngf 64] [--cycles 4]
          [--batch 4] [--mix 2] [--frames 3] [--frame-size 224] [--steps 5] [--warmup 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from avsep_cli import dsp  # noqa: E402
from avsep_cli.models.avpc import AVPC  # noqa: E402
from avsep_cli.training.config import TrainConfig  # noqa: E402
from avsep_cli.training.run import METHOD_DEFAULTS  # noqa: E402
from avsep_cli.training.systems import MaskSystem  # noqa: E402
from avsep_cli.training.trainer import Trainer  # noqa: E402


def _stand_ins() -> None:
    """Empty modules for what the reference imports but its training step never calls."""
    for name in ("cv2", "librosa", "mir_eval", "mir_eval.separation", "dataset"):
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
    sys.modules["mir_eval"].separation = sys.modules["mir_eval.separation"]
    sys.modules["mir_eval.separation"].bss_eval_sources = None
    sys.modules["dataset"].MUSICMixDataset = None


@contextlib.contextmanager
def _cuda_is_identity():
    old = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda = old


def load_reference(folder: Path):
    """-> the reference's main module and models package, imported from `folder` (holding avpc/)."""
    avpc = folder / "avpc" if (folder / "avpc" / "main.py").exists() else folder
    if not (avpc / "main.py").exists() or not (avpc / "models" / "audio_net.py").exists():
        raise SystemExit(f"--reference {folder}: no avpc/main.py and avpc/models/ there (see this script's docstring)")
    _stand_ins()
    sys.path.insert(0, str(avpc))
    import main as ref_main  # noqa: PLC0415
    import models as ref_models  # noqa: PLC0415

    return ref_main, ref_models


def make_audio(b: int, n: int, length: int, seed: int) -> torch.Tensor:
    """(B, N, L) harmonic notes with random pitches and envelopes at 11025 Hz: spectrograms with structure."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / dsp.SAMPLE_RATE
    f0 = 110 * 2 ** (torch.rand(b, n, 1, generator=g) * 4)  # (B, N, 1)
    x = sum(torch.sin(2 * torch.pi * h * f0 * t) / h for h in range(1, 8))  # (B, N, L)
    env = torch.rand(b, n, 1, 24, generator=g).repeat_interleave(-(-length // 24), -1)[..., :length].squeeze(2)
    return 0.3 * x * env + 0.01 * torch.randn(b, n, length, generator=g)


class Reference:
    """The reference's wrapper, optimiser and one training step (avpc/main.py train())."""

    def __init__(self, ref_main, ref_models, a):
        import torchvision

        from models.vision_net import ResNetFC  # noqa: PLC0415  (the reference's, on sys.path)

        net_frame = ResNetFC(torchvision.models.resnet18(weights=None), fc_vis=16)
        for p in net_frame.features.parameters():  # what ModelBuilder.build_frame does
            p.requires_grad = False
        builder = ref_models.ModelBuilder()
        net_sound = builder.build_sound(arch="pcnetlr", cyc_in=a.cycles, ngf=a.ngf, fc_vis=16, n_fm_out=1)
        self.args = argparse.Namespace(num_mix=a.mix, log_freq=1, weighted_loss=1, binary_mask=1, output_activation="sigmoid",
                                       lr_frame=1e-4, lr_sound=1e-3, beta1=0.9, weight_decay=1e-2)
        self.wrapper = ref_main.NetWrapper(net_frame, net_sound, builder.build_criterion(arch="bce"))
        self.optimizer = ref_main.create_optimizer(net_frame, net_sound, self.args)
        self.wrapper.train()

    def batch(self, audio: torch.Tensor, frames: torch.Tensor) -> dict:
        """audio (B, N, L), frames (B, N, K, 3, H, W) uint8 -> the reference loader's batch: magnitudes (B, 1, 512, T)
        of the mixture (mean of the sources, its dataset's mixing) and of each source, frames (B, 3, K, H, W)."""
        from avsep_cli.models.frames import normalize

        n = audio.shape[1]
        mag = lambda x: dsp.stft(x).abs().unsqueeze(1)  # noqa: E731  (B, 1, 512, T)
        return {"mag_mix": mag(audio.sum(1) / n), "mags": [mag(audio[:, i]) for i in range(n)],
                "frames": [normalize(frames[:, i]).permute(0, 2, 1, 3, 4).contiguous() for i in range(n)]}

    def step(self, batch: dict) -> float:
        batch = {"mag_mix": batch["mag_mix"], "mags": list(batch["mags"]), "frames": list(batch["frames"])}
        with _cuda_is_identity():
            self.wrapper.zero_grad()
            err_mask, _ = self.wrapper.forward(batch, self.args)
            err = err_mask.mean()
            err.backward()
            self.optimizer.step()
        return float(err)


class Ours:
    """`avsep train --method avpc` (paper defaults at this width) as the shared trainer steps it."""

    def __init__(self, a, run_dir: Path):
        model = AVPC(ngf=a.ngf, cycles=a.cycles, frame_size=a.frame_size)
        cfg = TrainConfig(**{**METHOD_DEFAULTS["avpc"], "method": "avpc", "batch_size": a.batch, "mix": a.mix})
        self.trainer = Trainer(MaskSystem(model, "avpc", {}, target="avpc"), cfg, [], torch.device("cpu"), run_dir)

    @staticmethod
    def batch(audio: torch.Tensor, frames: torch.Tensor) -> dict:
        n = audio.shape[1]
        return {"mixture": audio.sum(1) / n, "stems": audio / n, "frames": frames}

    def step(self, batch: dict) -> float:
        return self.trainer.train_step(batch)["loss"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference", type=Path, required=True, help="folder the reference's avpc/ was exported into")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--cycles", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--mix", type=int, default=2)
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--frame-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    ref_main, ref_models = load_reference(a.reference.resolve())

    audio = make_audio(a.batch, a.mix, dsp.SEGMENT, seed=0)  # (B, N, 65535)
    frames = torch.randint(0, 256, (a.batch, a.mix, a.frames, 3, a.frame_size, a.frame_size), dtype=torch.uint8)
    theirs = Reference(ref_main, ref_models, a)
    with tempfile.TemporaryDirectory() as tmp:
        ours = Ours(a, Path(tmp))
        ref_batch, our_batch = theirs.batch(audio, frames), ours.batch(audio, frames)
        times: dict[str, list[tuple[float, float]]] = {"reference": [], "avsep": [], "stft": []}

        def timed(fn) -> tuple[float, float]:
            """-> (wall seconds, process CPU seconds) of fn()."""
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            return time.perf_counter() - w0, time.process_time() - c0

        for i in range(a.warmup + a.steps):
            t_ref = timed(lambda: theirs.step(ref_batch))
            t_ours = timed(lambda: ours.step(our_batch))
            t_stft = timed(lambda: (dsp.stft(our_batch["stems"]).abs(), dsp.stft(our_batch["mixture"]).abs()))
            if i >= a.warmup:
                times["reference"].append(t_ref)
                times["avsep"].append(t_ours)
                times["stft"].append(t_stft)
    wall = {k: 1000 * statistics.median(t[0] for t in v) for k, v in times.items()}
    cpu = {k: 1000 * statistics.median(t[1] for t in v) for k, v in times.items()}
    print(f"AVPC training step, ngf {a.ngf}, {a.cycles} cycles, batch {a.batch} x {a.mix} sources x {a.frames} frames "
          f"at {a.frame_size} px, {a.threads} thread(s), median of {a.steps} steps after {a.warmup} warm-up")
    print(f"{'':30s} {'CPU ms/step':>12s} {'wall ms/step':>13s} {'CPU ratio to reference':>24s}")
    rows = [("reference (avpc/main.py)", "reference", False), ("avsep (Trainer.train_step)", "avsep", False),
            ("avsep without its STFTs", "avsep", True)]
    for label, key, no_stft in rows:
        c = cpu[key] - (cpu["stft"] if no_stft else 0.0)
        w = wall[key] - (wall["stft"] if no_stft else 0.0)
        print(f"{label:30s} {c:12.0f} {w:13.0f} {c / cpu['reference']:24.2f}")
    print(f"(our STFTs of the mixture and stems: {cpu['stft']:.0f} CPU ms; the reference computes them in its loader. "
          "CPU time is the measure: wall time also counts waiting for other processes' cores)")


if __name__ == "__main__":
    main()
