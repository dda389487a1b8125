"""One registry of separation methods, shared by `avsep eval` and (later) `avsep separate`.

A method turns a batch of test mixtures into one estimate per source. Reference methods (the mixture
floor and the oracle-mask ceilings) live in `reference.py`; learned methods register themselves the same
way when their issues land. `get_method(name)` is the only way the CLI finds a method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from avsep_cli.errors import AvsepError


@dataclass
class MixBatch:
    """What a method may look at. Oracles alone read `stems`; learned methods get the mixture and the
    visual guidance of each source (frames or crops), never the stems. `features`, when set, is the
    guidance instead of `frames`: what the method's frozen visual trunk gives for K pictures (its class
    prototype repeated K times for separation by name, see `avsep_cli.prototypes`); a method reads the
    same trunk output either way, so features of crops separate exactly as the crops do."""

    mixture: torch.Tensor  # (B, L) float32
    stems: torch.Tensor  # (B, S, L) references, for oracles and scoring only
    classes: list[list[str]]  # B lists of S class names
    frames: torch.Tensor | None = None  # (B, S, K, 3, H, W) uint8 when the method asks for frames
    features: torch.Tensor | None = None  # (B, S, K, C, h, w) float32 trunk features; used in place of frames
    extra: dict = field(default_factory=dict)


class Method(Protocol):
    name: str
    frames_per_source: int  # 0: needs no pictures

    def separate(self, batch: MixBatch) -> torch.Tensor:
        """-> (B, S, L) estimates in the order of batch.stems / batch.classes."""


class MaskingMethod(Method, Protocol):
    """A method whose estimates are masks on the mixture's STFT (every learned one): `masks` gives them
    without applying them, so the same masks can be applied elsewhere (full-band outputs, `outputs.py`)."""

    def masks(self, batch: MixBatch, soft: bool = False) -> torch.Tensor:
        """-> (B, S, 512, T) masks on the linear grid of `dsp.stft(batch.mixture)` (T = 1 + L // 256):
        what `separate` multiplies the mixture STFT by; `soft`: before any threshold (AVPC and
        Sound-of-Pixels binarise theirs at 0.5)."""

    def own_rule(self, masks: torch.Tensor) -> torch.Tensor:
        """Soft masks -> what the method applies on its own (`masks(soft=False)` of the same batch)."""


MASK_MODES = ("own", "joint")  # each source's mask as its method gives it (the papers), or shared out jointly


class JointMasks:
    """A masking method whose S soft masks per mixture are shared out among the sources (`dsp.joint_masks`:
    the Wiener rule) before they are applied: the estimates add up to the mixture. Reported as
    "NAME+joint"; everything else (pictures, window, weights) is the wrapped method's."""

    def __init__(self, method: MaskingMethod):
        self.method, self.name = method, f"{method.name}+joint"

    def __getattr__(self, attr: str):  # frames_per_source, frame_gap, model, segment, ...: the method's
        if attr == "method":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(attr)
        return getattr(self.method, attr)

    def masks(self, batch: MixBatch, soft: bool = True) -> torch.Tensor:
        from avsep_cli import dsp

        return dsp.joint_masks(self.method.masks(batch, soft=True))

    def separate(self, batch: MixBatch) -> torch.Tensor:
        """-> (B, S, L): the mixture in consecutive windows of the method's segment (as its own `separate`
        cuts it; any length in one window for nets that take one), each separated with joint masks."""
        from dataclasses import replace

        from avsep_cli import dsp

        length = batch.mixture.shape[-1]
        seg = getattr(self.method, "segment", None) or length
        out = []
        for c0 in range(0, length, seg):
            part = replace(batch, mixture=batch.mixture[:, c0 : c0 + seg])
            m = self.masks(part)  # (B, S, 512, T)
            out.append(dsp.masked_waveforms(part.mixture.to(m.device).float(), m))  # (B, S, l)
        return torch.cat(out, -1)


def with_masks(method: Method, mode: str) -> Method:
    """`method` as `--masks MODE` asks: "own" leaves it as it is, "joint" wraps a masking method in
    `JointMasks`; methods without masks (the reference methods) are left as they are."""
    if mode not in MASK_MODES:
        raise AvsepError(f"--masks must be {' or '.join(MASK_MODES)}, not {mode!r}")
    return JointMasks(method) if mode == "joint" and hasattr(method, "masks") else method


_REGISTRY: dict[str, Callable[..., Method]] = {}
_LEARNED: set[str] = set()


def register(name: str, factory: Callable[..., Method], learned: bool = False) -> None:
    """Reference methods: factory() -> Method. Learned methods: factory(weights, device, precision) -> Method,
    with `weights` a shipped name or a file and `precision` "fp32" or "bf16" (what the network runs in)."""
    _REGISTRY[name] = factory
    if learned:
        _LEARNED.add(name)


def available(shipped_only: bool = False) -> list[str]:
    """Every registered method; with `shipped_only`, learned methods only when weights for them ship."""
    from avsep_cli import registry

    _load_builtin()
    return [n for n in _REGISTRY if not (shipped_only and n in _LEARNED and registry.default_for(n) is None)]


def get_method(name: str, *, weights: str | None = None, device="cpu", precision: str = "fp32") -> Method:
    """A method by name; learned ones load `weights` (a shipped name or a file), by default the shipped
    weights registered as that method's default, and run their network at `precision` ("fp32" or "bf16":
    bfloat16 autocast, the signal path in float32). Reference methods run no network: always float32."""
    from avsep_cli import registry
    from avsep_cli.training.systems import precision_autocast

    precision_autocast(precision, "cpu")  # an unknown precision is one line, whatever the method
    _load_builtin()
    if name not in _REGISTRY:
        raise AvsepError(f"unknown method {name!r}; available: {', '.join(_REGISTRY)}")
    if name in _LEARNED:
        if weights is None:
            shipped = registry.default_for(name)
            if shipped is None:
                raise AvsepError(f"--method {name} needs --weights PATH (a checkpoint from avsep train): "
                                 "no shipped default weights for it")
            weights = shipped["name"]
        return _REGISTRY[name](weights, device, precision=precision)
    return _REGISTRY[name]()


def _load_builtin() -> None:
    from avsep_cli.methods import learned, reference  # noqa: F401  (register on import)
