"""The one trainer every method uses; it knows nothing about any method's model or loss.

A method supplies a `System` (see `systems.py`): its model, its parameter groups, a training step that
returns losses, and a validation that returns metrics. The trainer owns everything around them:
optimiser and LR steps from the config, gradient clipping, AMP on CUDA, bf16 autocast and channels-last
weights when the config asks (`precision`, `channels_last`: CPU training speed), a deterministic sampler whose
randomness is a pure function of (seed, epoch, index) so that `--resume` continues exactly, plain-data
checkpoints (with a content checksum, checked on resume) every epoch plus the best by validation SDR,
Ctrl-C handling that also saves the partial epoch's loss sums (so its train_loss covers every step),
CSV/JSONL metrics and a PNG of the curves, and DistributedDataParallel when started under torchrun.

Methods with more than one optimiser (IAL-CMS: separator and critic) define `manual_step(batch, step,
optimizer) -> losses`; the trainer then calls it in place of its own zero_grad/backward/step, handing it
the trainer's optimiser (built from `param_groups` as usual, stepped by the LR schedule, checkpointed). Such
a system also moves its extra modules in `to(device)` and keeps everything else it needs for an exact
resume (e.g. a second optimiser) in `extra_state()` / `load_extra_state(state)`, saved under "extra".
They run in a single process without fp16 AMP.

`precision="bf16"` hands the system `autocast`, a context manager factory: the system runs its networks
under it (bfloat16 convolutions and matmuls) and keeps its signal path (STFT, warps, targets) and losses
in float32 outside it. No gradient scaling is needed for bf16 (fp32's exponent range). The references
train in float32 (the default), so bf16 is a speed option, recorded in the run's config.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from avsep_cli import checkpoint
from avsep_cli.errors import AvsepError, Terminated
from avsep_cli.fsio import atomic_path
from avsep_cli.training.config import TrainConfig
from avsep_cli.training.systems import precision_autocast

log = logging.getLogger("avsep")


# --- distributed --------------------------------------------------------------------------------------


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> bool:
    """Join the process group when started by torchrun (NCCL on GPUs, gloo on CPU)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


# --- sampling -----------------------------------------------------------------------------------------


def epoch_batches(n_items: int, batch_size: int, seed: int, epoch: int, steps: int, rank: int = 0,
                  world: int = 1) -> list[list[int]]:
    """The index lists of one epoch for this rank: a seeded permutation (repeated if the epoch is longer
    than the dataset), cut into global batches of batch_size * world, each split across ranks."""
    rng = np.random.default_rng([seed, epoch, 0x5A3])
    global_bs = batch_size * world
    need = steps * global_bs
    order = np.concatenate([rng.permutation(n_items) for _ in range(math.ceil(need / n_items))])[:need]
    return [order[s * global_bs : (s + 1) * global_bs][rank::world].tolist() for s in range(steps)]


def collate(samples: list[dict]) -> dict:
    """Stack tensors, keep lists of everything else."""
    out = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


def _loader(dataset, batches: list[list[int]], num_workers: int) -> Iterator[dict]:
    if num_workers <= 0:
        for b in batches:
            yield collate([dataset[i] for i in b])
        return
    dl = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate,
                                     persistent_workers=False)
    yield from dl


def _move(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


# --- RNG state as plain data --------------------------------------------------------------------------


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]), "python_pos": random.getstate()[2]}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    # generator states must be CPU byte tensors; a checkpoint loaded with map_location=cuda moved them
    torch.set_rng_state(st["torch"].cpu())
    random.setstate((3, tuple(st["python"]), st["python_pos"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in st["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- the trainer --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _interruptible(request_stop: Callable[[int], None]):
    """While training, the first SIGINT or SIGTERM asks the loop to stop at the next step boundary (so no
    exception lands in the middle of an import or a write), a second one stops at once. Installed
    whatever the process inherited (a job started in the background by a non-interactive shell ignores
    SIGINT)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    asked = []

    def stop(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)
        request_stop(signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Interrupted(Exception):
    """Raised after Ctrl-C (or SIGTERM: `terminated`) once the checkpoint is safely written."""

    def __init__(self, path: Path, terminated: bool = False):
        word = "terminated" if terminated else "interrupted"
        super().__init__(f"{word}; checkpoint saved to {path} (continue with --resume {path.parent})")
        self.path, self.terminated = path, terminated


RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng", "epoch", "step_in_epoch", "global_step", "best")


class Trainer:
    def __init__(self, system, cfg: TrainConfig, train_set, device: torch.device, run_dir: Path,
                 on_step: Callable[[int, int, dict], None] | None = None):
        self.system, self.cfg, self.train_set, self.device = system, cfg, train_set, device
        self.run_dir = Path(run_dir)
        self.on_step = on_step
        self.rank, self.world = dist_info()
        self.model = system.model.to(device)
        # the context the system runs its networks in: bf16 autocast on this device, or nothing (one line
        # for an unknown precision); the same factory the inference methods use
        self.autocast = precision_autocast(cfg.precision, device.type)
        if cfg.channels_last:  # 4-D weights NHWC: the convolutions' native layout on CPU (oneDNN)
            for net in system.networks():  # the separator, and a critic where there is one
                net.to(memory_format=torch.channels_last)
        system.autocast = self.autocast
        self.manual = hasattr(system, "manual_step")
        if self.manual:
            if self.world > 1:
                raise AvsepError(f"--method {cfg.method} trains two networks in alternation and runs in one process only "
                                 "(not under torchrun)")
            system.to(device)
        self.ddp = None
        if self.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
            system.forward_model = self.ddp
        self.optimizer = self._optimizer()
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=list(cfg.lr_steps), gamma=cfg.lr_gamma)
        self.amp = cfg.amp and device.type == "cuda" and not self.manual and cfg.precision == "fp32"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        # the current epoch's loss sums and step count so far: saved with the run's position, so an epoch
        # interrupted and resumed reports the mean over all its steps, as an uninterrupted one does
        self.epoch_sums: dict[str, float] = {}
        self.epoch_steps = 0
        # the process-clock origins of the run's CPU and wall time (set when training starts), and the time
        # a resumed checkpoint had spent
        self._cpu0: float | None = None
        self._wall0: float | None = None
        self._spent: tuple[float, float] | None = None
        self.best = -math.inf
        self.history: list[dict] = []

    # -- set-up --
    def _optimizer(self) -> torch.optim.Optimizer:
        groups = self.system.param_groups(self.cfg)
        cfg = self.cfg
        # on CPU the fused kernels (one pass over all parameters) do what the per-parameter loop does, ~6x faster
        fused = {"fused": True} if self.device.type == "cpu" else {}
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(groups, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, **fused)
        if cfg.optimizer == "adam":
            return torch.optim.Adam(groups, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, **fused)
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
        raise AvsepError(f"unknown optimizer {cfg.optimizer!r}: expected adamw, adam or sgd")

    @property
    def steps_per_epoch(self) -> int:
        if self.cfg.steps_per_epoch:
            return self.cfg.steps_per_epoch
        return max(1, len(self.train_set) // (self.cfg.batch_size * self.world))

    # -- checkpoints --
    def state(self) -> dict:
        extra = {"extra": self.system.extra_state()} if hasattr(self.system, "extra_state") else {}
        return {
            **extra,
            **self.system.model_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "epoch_sums": dict(self.epoch_sums),
            "epoch_steps": self.epoch_steps,
            "best": self.best if math.isfinite(self.best) else None,
            "config": asdict(self.cfg),
            # CPU and wall minutes spent so far, the partial epoch included (an interrupted epoch's time
            # counts once it is resumed)
            **({"cpu_min": (time.process_time() - self._cpu0) / 60, "wall_min": (time.perf_counter() - self._wall0) / 60}
               if self._cpu0 is not None else {}),
        }

    def save(self, name: str) -> Path:
        path = self.run_dir / name
        if self.rank == 0:
            checkpoint.save(path, self.state())
        return path

    def resume(self, path: Path) -> None:
        """Restore everything `state()` saved. A checkpoint that fails its checksum, is not a training
        checkpoint, or does not fit this run's model and optimiser is one AvsepError line naming it."""
        data = checkpoint.load(path, map_location=self.device, warn=False)
        checkpoint.check_model_name(data, path, self.system.model_name)
        missing = [k for k in RESUME_KEYS if k not in data]
        if missing:
            raise AvsepError(f"checkpoint {path} is not a training checkpoint (no {', '.join(missing)}): "
                             "it holds model weights only and cannot be resumed")
        checkpoint.load_weights(self.system.model, data["state_dict"], path, f"this run's {self.system.model_name!r} model")
        try:
            self.optimizer.load_state_dict(data["optimizer"])
            if "extra" in data and hasattr(self.system, "load_extra_state"):
                self.system.load_extra_state(data["extra"])
            self.scheduler.load_state_dict(data["scheduler"])
            self._replan_lr()
            self.scaler.load_state_dict(data["scaler"])
            _set_rng_state(data["rng"])
            self.epoch, self.step_in_epoch, self.global_step = (int(data[k]) for k in ("epoch", "step_in_epoch", "global_step"))
            self.best = -math.inf if data["best"] is None else float(data["best"])
            # older checkpoints lack the partial epoch's sums: that epoch then averages the resumed steps only
            self.epoch_sums = {str(k): float(v) for k, v in data.get("epoch_sums", {}).items()}
            self.epoch_steps = int(data.get("epoch_steps", 0))
            self._spent = (float(data["cpu_min"]), float(data["wall_min"])) if "cpu_min" in data else None
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            raise AvsepError(f"checkpoint {path}: its training state does not fit this run "
                             f"({type(e).__name__}: {checkpoint.error_detail(e)})") from None
        checkpoint.warn_unverified(data, path)
        hist = self.run_dir / "metrics.jsonl"
        if hist.exists():
            self.history = [json.loads(line) for line in hist.read_text().splitlines() if line.strip()]
            self.history = [h for h in self.history if h.get("epoch", 0) < self.epoch or h.get("type") == "step"]

    def _replan_lr(self) -> None:
        """The LR drops of the config (a resume may re-plan them, `train(..., lr_steps=)`) replace those the
        checkpoint's scheduler kept; a drop moved to an epoch already passed takes effect at once."""
        sched, steps = self.scheduler, sorted(int(e) for e in self.cfg.lr_steps)
        if sorted(sched.milestones.elements()) == steps:
            return
        sched.milestones = Counter(steps)
        drops = sum(1 for e in steps if e <= sched.last_epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * sched.gamma ** drops
        sched._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    # -- the loop --
    def train_step(self, batch: dict) -> dict[str, float]:
        self.model.train()
        if self.manual:
            losses = self.system.manual_step(batch, self.global_step, self.optimizer)
            return {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in losses.items()}
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, enabled=self.amp):
            losses = self.system.training_step(batch)
        self.scaler.scale(losses["loss"]).backward()
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        out = {k: float(v.detach()) for k, v in losses.items()}
        if self.world > 1:  # report the global mean
            t = torch.tensor([out[k] for k in sorted(out)], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            out = {k: float(v) / self.world for k, v in zip(sorted(out), t)}
        return out

    def fit(self, validate: Callable[[], dict] | None = None) -> list[dict]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._stop, self._stop_signal = False, signal.SIGINT
        try:
            with _interruptible(self._request_stop):
                self._epochs(validate)
        except KeyboardInterrupt as e:  # a second Ctrl-C, or a signal outside the main thread
            self._stop = True
            if isinstance(e, Terminated):
                self._stop_signal = signal.SIGTERM
        if self._stop:
            path = self.save("last.pt")
            try:
                self._write_metrics()
            except Exception as e:  # noqa: BLE001 - the checkpoint is what matters on the way out
                log.warning("metrics not written: %s", e)
            raise Interrupted(path, terminated=self._stop_signal == signal.SIGTERM)
        return self.history

    def _request_stop(self, signum: int = signal.SIGINT) -> None:
        self._stop, self._stop_signal = True, signum

    def _epochs(self, validate: Callable[[], dict] | None) -> None:
        cfg = self.cfg
        t_start = time.perf_counter()
        # cumulative over resumes: process CPU time (all threads) and wall time spent training so far
        last = next((h for h in reversed(self.history) if h["type"] == "epoch"), {})
        cpu, wall = self._spent or (last.get("cpu_min", 0.0), last.get("wall_min", 0.0))  # older checkpoints: the last epoch's
        cpu0, wall0 = self._cpu0, self._wall0 = time.process_time() - 60 * cpu, t_start - 60 * wall
        while self.epoch < cfg.epochs:
            if self._cpu_budget_spent():
                break
            if hasattr(self.train_set, "set_epoch"):
                self.train_set.set_epoch(self.epoch)
            batches = epoch_batches(len(self.train_set), cfg.batch_size, cfg.train_seed, self.epoch, self.steps_per_epoch,
                                    self.rank, self.world)[self.step_in_epoch :]
            t_data = t_step = 0.0
            if self.step_in_epoch == 0:
                self.epoch_sums, self.epoch_steps = {}, 0
            tick = time.perf_counter()
            for batch in _loader(self.train_set, batches, cfg.num_workers):
                t0 = time.perf_counter()
                t_data += t0 - tick
                losses = self.train_step(_move(batch, self.device))
                tick = time.perf_counter()
                t_step += tick - t0
                self.step_in_epoch += 1
                self.global_step += 1
                self.epoch_steps += 1
                for k, v in losses.items():
                    self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v
                if self.on_step:
                    self.on_step(self.step_in_epoch, self.steps_per_epoch, losses)
                if self._stop:
                    return
            n = max(1, self.epoch_steps)
            row = {"type": "epoch", "epoch": self.epoch, "step": self.global_step,
                   **{f"train_{k}": v / n for k, v in self.epoch_sums.items()},
                   "lr": self.optimizer.param_groups[0]["lr"],
                   "data_s": round(t_data, 3), "step_s": round(t_step, 3),
                   "data_fraction": round(t_data / max(t_data + t_step, 1e-9), 4)}
            if validate is not None and (self.epoch + 1) % cfg.val_every == 0:
                row.update({f"val_{k}": v for k, v in validate().items()})
            row["cpu_min"] = round((time.process_time() - cpu0) / 60, 3)
            row["wall_min"] = round((time.perf_counter() - wall0) / 60, 3)
            self.scheduler.step()
            self.epoch += 1
            self.step_in_epoch = 0
            self.epoch_sums, self.epoch_steps = {}, 0
            key = f"val_{cfg.monitor}"
            improved = key in row and row[key] > self.best
            if improved:
                self.best = row[key]
            self.history.append(row)
            self.save("last.pt")
            if improved:
                self.save("best.pt")
            if cfg.keep_every and self.epoch % cfg.keep_every == 0 and self.rank == 0:
                # the model alone (no optimiser): weights to average, as shipped weights are
                checkpoint.save(self.run_dir / "epochs" / f"e{self.epoch:03d}.pt",
                                {**self.system.model_state(), "epoch": self.epoch, "global_step": self.global_step})
            self._write_metrics()
            log.info("epoch %d: %s", row["epoch"], {k: v for k, v in row.items() if k not in ("type",)})
            if self.on_step:
                self.on_step(-1, self.steps_per_epoch, row)
            if cfg.max_minutes and time.perf_counter() - t_start > 60 * cfg.max_minutes:
                log.warning("stopping after epoch %d: the %.0f-minute budget is spent", self.epoch, cfg.max_minutes)
                break

    def _cpu_budget_spent(self) -> bool:
        """True when another epoch, as costly in CPU time as the last one, would pass --max-cpu-minutes."""
        rows = [h for h in self.history if h["type"] == "epoch" and "cpu_min" in h]
        if not self.cfg.max_cpu_minutes or not rows:
            return False
        per_epoch = rows[-1]["cpu_min"] - (rows[-2]["cpu_min"] if len(rows) > 1 else 0.0)
        if rows[-1]["cpu_min"] + per_epoch <= self.cfg.max_cpu_minutes:
            return False
        log.warning("stopping after epoch %d: another epoch would pass the %.1f CPU-minute budget (%.2f spent)",
                    self.epoch, self.cfg.max_cpu_minutes, rows[-1]["cpu_min"])
        return True

    def _write_metrics(self) -> None:
        if self.rank != 0:
            return
        rows = [h for h in self.history if h["type"] == "epoch"]
        with atomic_path(self.run_dir / "metrics.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        keys = sorted({k for r in rows for k in r})
        with atomic_path(self.run_dir / "metrics.csv") as tmp:
            tmp.write_text(",".join(keys) + "\n" + "".join(",".join(str(r.get(k, "")) for k in keys) + "\n" for r in rows))
        _plot_curves(rows, self.run_dir / "curves.png")


def _plot_curves(rows: list[dict], path: Path) -> None:
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ep = [r["epoch"] + 1 for r in rows]
    ax.plot(ep, [r.get("train_loss", float("nan")) for r in rows], "o-", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if any("val_sdr" in r for r in rows):
        ax2 = ax.twinx()
        ax2.plot(ep, [r.get("val_sdr", float("nan")) for r in rows], "s-", color="tab:orange", label="val SDR")
        ax2.set_ylabel("validation SDR (dB)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
