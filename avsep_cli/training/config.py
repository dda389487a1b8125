"""The training configuration every method shares; methods extend it with their own defaults.

One dataclass, saved as `run/config.json` with every run and inside every checkpoint, so a run can be
reproduced or resumed from its folder alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from avsep_cli.errors import AvsepError


@dataclass
class TrainConfig:
    method: str = "tiny"
    dataset: str = "synth"  # synth (our corpus) or music; both use the same layout
    root: str = ""
    epochs: int = 10
    batch_size: int = 8
    steps_per_epoch: int = 0  # 0: one pass over the dataset's nominal length
    optimizer: str = "adamw"  # adamw | adam | sgd
    lr: dict = field(default_factory=lambda: {"default": 1e-3})  # per dotted parameter-name prefix (longest wins)
    no_decay: tuple = ()  # parameter-name prefixes trained without weight decay (AVPC: the PCNet rates)
    weight_decay: float = 1e-2  # AVPC: AdamW, weight decay 1e-2
    betas: tuple = (0.9, 0.999)
    momentum: float = 0.9  # SGD only (RCoP stage 1)
    lr_steps: tuple = ()  # epochs at which every LR is multiplied by lr_gamma (AVPC: 40, 80 of 100)
    lr_gamma: float = 0.1
    grad_clip: float = 5.0  # 0: off
    amp: bool = True  # fp16 mixed precision; used on CUDA only, and only with precision fp32
    # fp32 (the references') or bf16: the networks under bfloat16 autocast, signal path and losses in float32
    # (a speed option for CPUs with AVX512-BF16/AMX; docs/fidelity.md lists it as a kept deviation)
    precision: str = "fp32"
    channels_last: bool = False  # 4-D weights and activations NHWC (faster convolutions on CPU)
    seed: int = 0
    # the training draws (mixtures, their gains and crops, batch order) from this seed instead of `seed`, which
    # keeps the validation set and the initialisation: a later segment started from earlier weights
    # (init_from) takes a new one, else it replays the mixtures of the segment before it, epoch for epoch
    data_seed: int | None = None
    num_workers: int = 0
    mix: int = 2  # sources per training mixture
    segment: int = 65535  # samples per training window (~5.94 s: 256 STFT frames, as in the papers)
    val_every: int = 1
    val_num: int = 32  # validation mixtures (fixed, seeded: the same every epoch)
    monitor: str = "sdr"  # validation metric that picks best.pt (higher is better)
    max_minutes: float = 0.0  # stop at the first epoch end after this much training time (0: no limit)
    max_cpu_minutes: float = 0.0  # stop before an epoch would take the run's process CPU time past this (0: no limit)
    # keep the model weights after every N-th epoch in RUN/epochs/eNNN.pt, for weight averaging
    # (scripts/average_weights.py); 0: none
    keep_every: int = 0
    cache_features: bool = False  # frozen-trunk features computed once and cached (no frame augmentation)
    init_from: str = ""  # start from another run's weights (curriculum: 2-mix -> 3-/4-mix); fresh optimiser
    preset: str = "paper"  # model preset: paper (published configuration) or cpu (smaller, for CPU training)
    model: dict = field(default_factory=dict)  # the method's model config (its own dataclass, as a dict)
    options: dict = field(default_factory=dict)  # the method's training options (IAL-CMS: training/ialcms.IALOptions)

    @property
    def train_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    def save(self, path: Path) -> None:
        from avsep_cli.fsio import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=1, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise AvsepError(f"unknown training config keys: {', '.join(sorted(unknown))}")
        d = dict(d)
        for k in ("betas", "lr_steps", "no_decay"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise AvsepError(f"cannot read run config {path}: {e}") from None
