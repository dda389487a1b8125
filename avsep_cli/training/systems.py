"""Systems: what a method gives the trainer (model, parameter groups, training step, validation).

`MaskSystem` serves every Mix-and-Separate mask method (tiny, and later AVPC and Sound-of-Pixels): the
mixture's log magnitude on the 256-bin log grid goes in with each source's frames, mask logits come out,
and the loss is the binary cross-entropy against the dominance mask weighted by log1p of the mixture
magnitude (clamped to [1e-3, 10]), as in Sound-of-Pixels and AVPC. The same signal path, wrapped as a
`MaskMethod`, is what `avsep eval` and validation run.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from avsep_cli import checkpoint, dsp
from avsep_cli.methods import MixBatch


PRECISIONS = ("fp32", "bf16")


def precision_autocast(precision: str, device_type: str):
    """The context factory networks run in at `precision`: bf16 autocast on `device_type` (bfloat16
    convolutions and matmuls), or nothing for fp32. Unknown precisions are one line (AvsepError)."""
    from avsep_cli.errors import AvsepError

    if precision not in PRECISIONS:
        raise AvsepError(f"unknown precision {precision!r}: expected {' or '.join(PRECISIONS)}")
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _unwrapped(model):
    return model.module if hasattr(model, "module") else model


def signal_warp(model):
    """The log-frequency warp a mask net was trained with: its config's align_corners (AVPC: False, grid
    sampling as the reference; Sound-of-Pixels and legacy nets: True, the fixed `dsp.LOG` matrix)."""
    cfg = getattr(_unwrapped(model), "config", None)
    return dsp.log_warp(bool(getattr(cfg, "align_corners", True)))


def is_legacy(model) -> bool:
    return bool(getattr(getattr(_unwrapped(model), "config", None), "legacy", False))


def mixture_features(mixture: torch.Tensor, warp=dsp.LOG, legacy: bool = False,
                     mag: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) -> log magnitude on the log grid (B, 1, 256, T) and the warped magnitude (B, 256, T). As the
    references: log(warp(|STFT| + 1e-10)) (avpc/main.py 196-233); legacy nets: log(max(warp(|STFT|), 1e-10)).
    `mag`: the mixture's |STFT| (B, 512, T) when the caller has it already."""
    mag = dsp.stft(mixture).abs() if mag is None else mag
    if legacy:
        w = dsp.LOG.warp(mag)  # (B, 256, T)
        return dsp.log_magnitude(w).unsqueeze(1), w
    w = warp.warp(mag + dsp.EPS)  # (B, 256, T)
    return torch.log(w).unsqueeze(1), w


def mask_logits(model, mixture: torch.Tensor, frames: torch.Tensor, feats: bool = False, autocast=contextlib.nullcontext,
                mix_mag: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """mixture (B, L), frames (B, N, K, 3, H, W) -> logits (B, N, 256, T) float32 and warped mixture magnitude.
    With `feats`, `frames` holds cached trunk features (B, N, K, 512, h, w) instead. Nets with a
    `forward_sources` (AVPC, Sound-of-Pixels) get each mixture once with its N sources' frames. The net runs
    in `autocast()` (e.g. bf16), the signal path outside it; `mix_mag`: the mixture's |STFT| if known."""
    b, n = frames.shape[:2]
    log_mag, mag = mixture_features(mixture, signal_warp(model), is_legacy(model), mix_mag)
    with autocast():
        if hasattr(_unwrapped(model), "forward_sources"):
            logits = model(log_mag, frames, sources=True, feats=feats)  # (B, N, 256, T)
        else:
            log_mag = log_mag.repeat_interleave(n, dim=0)  # (B*N, 1, 256, T)
            net = _unwrapped(model) if feats else model  # DDP wraps forward() only
            logits = (net.forward_features if feats else model)(log_mag, frames.flatten(0, 1))  # (B*N, 1, 256, T)
            logits = logits.view(b, n, *logits.shape[-2:])
    return logits.float(), mag


TARGET_RULES = ("avpc", "sop", "dominant")


class MaskTargets:
    """The Mix-and-Separate training target and loss weight, on the warped grid.

    Called with the linear magnitudes of each source's contribution to the mixture (B, N, 512, T) (the
    mixture is their sum) and of the mixture (B, 512, T); returns binary targets (B, N, 256, T) and the loss
    weight clamp(log1p(warped mixture), 1e-3, 10) (B, 256, T). Rules:
    - "avpc" (avpc/main.py 226): the reference mixes the mean of N sources and compares each undivided
      source with half the mixture: N |contribution| > 0.5 |mixture|, i.e. |S_n| > |sum S| / (2N);
    - "sop" (Sound-of-Pixels main.py 62): sources divided by N are the contributions: |contribution| >
      0.5 |mixture|, i.e. |S_n| > |sum S| / 2;
    - "dominant" (avsep before issue 16): one-hot of the loudest source per bin.
    The 1e-10 goes into the mixture before warping, as in the references."""

    def __init__(self, rule: str = "avpc", align_corners: bool = False):
        if rule not in TARGET_RULES:
            raise ValueError(f"unknown target rule {rule!r}: expected one of {', '.join(TARGET_RULES)}")
        self.rule, self.warp = rule, dsp.log_warp(align_corners)

    def __call__(self, src_mag: torch.Tensor, mix_mag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mix_w = self.warp.warp(mix_mag + dsp.EPS)  # (B, 256, T)
        src_w = self.warp.warp(src_mag)  # (B, N, 256, T)
        weight = torch.log1p(mix_w).clamp(1e-3, 10.0)
        if self.rule == "dominant":
            return dsp.ideal_binary_mask(src_w), weight
        gain = src_mag.shape[-3] if self.rule == "avpc" else 1
        return dsp.threshold_mask(src_w * gain, mix_w), weight


class System:
    """What every method gives the trainer: its model, parameter groups and plain-data model state;
    subclasses add `training_step(batch) -> {"loss": ..., ...}`."""

    # the context the networks run in; the trainer sets its own (bf16 autocast with precision bf16)
    autocast = staticmethod(contextlib.nullcontext)

    def __init__(self, model: torch.nn.Module, model_name: str, model_args: dict, lr: dict[str, float] | None = None):
        self.model = model
        self.forward_model = model  # the trainer swaps in the DDP wrapper
        self.model_name, self.model_args = model_name, model_args
        self.lr = lr or {}

    def networks(self) -> list[torch.nn.Module]:
        """Every network the system trains (the trainer lays out their weights with --channels-last)."""
        return [self.model]

    def param_groups(self, cfg) -> list[dict]:
        """Parameter groups by name: each trainable parameter takes the LR of the longest key of cfg.lr that
        is a dotted prefix of its name ("frame_net.trunk" before "frame_net"), else 'default'; those matching
        a prefix in cfg.no_decay form groups of their own without weight decay (AVPC: the rates a, b)."""
        groups: dict[tuple[str, bool], list] = {}
        keys = sorted((k for k in cfg.lr if k != "default"), key=len, reverse=True)
        no_decay = tuple(getattr(cfg, "no_decay", ()) or ())
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            key = next((k for k in keys if name == k or name.startswith(k + ".")), "default")
            nd = any(name == k or name.startswith(k + ".") for k in no_decay)
            groups.setdefault((key, nd), []).append(p)
        out = []
        for (g, nd), ps in groups.items():
            group = {"params": ps, "lr": cfg.lr.get(g, cfg.lr.get("default", 1e-3)), "name": g + (" (no decay)" if nd else "")}
            if nd:
                group["weight_decay"] = 0.0
            out.append(group)
        return out

    def model_state(self) -> dict:
        return checkpoint.model_state(self.model_name, self.model_args, self.model)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class MaskSystem(System):
    """Mix-and-Separate training of a visually guided mask net on the log grid: weighted BCE of the mask
    logits against `MaskTargets` of the rule `target` (AVPC's, Sound-of-Pixels' or the legacy dominant
    source); the batch's stems are each source's contribution to its mixture."""

    def __init__(self, model, model_name: str, model_args: dict, target: str = "avpc"):
        super().__init__(model, model_name, model_args)
        cfg = getattr(model, "config", None)
        self.targets = MaskTargets(target, bool(getattr(cfg, "align_corners", True)))

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        feats = "feats" in batch
        mix_mag = dsp.stft(batch["mixture"]).abs()  # (B, 512, T): the net's input and the targets' reference
        logits, _ = mask_logits(self.forward_model, batch["mixture"], batch["feats" if feats else "frames"], feats,
                                self.autocast, mix_mag)
        target, weight = self.targets(dsp.stft(batch["stems"]).abs(), mix_mag)
        loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight.unsqueeze(1).expand_as(target))
        return {"loss": loss}


class ClassifierSystem(System):
    """Instrument classification (the visual trunk's pre-training): cross-entropy on the class logits."""

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        with self.autocast():
            logits = self.forward_model(batch["image"]).float()
        loss = F.cross_entropy(logits, batch["label"])
        return {"loss": loss, "acc": (logits.argmax(-1) == batch["label"]).float().mean()}


class TaggerSystem(System):
    """The audio tagger: binary cross-entropy per class on mixtures of 1-3 solos. In training, one random
    band of up to an eighth of the frequency bins and one of up to an eighth of the frames are zeroed
    (SpecAugment-style masking) so that no single band or moment decides."""

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        from avsep_cli.models.audio_tagger import tagger_input

        x = tagger_input(batch["mixture"])  # (B, 1, F, T)
        b, _, nf, nt = x.shape
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
        for dim, n in ((2, nf), (3, nt)):
            width = torch.randint(0, n // 8 + 1, (b,), generator=g)
            start = (torch.rand(b, generator=g) * (n - width)).long()
            idx = torch.arange(n)
            band = (idx[None] >= start[:, None]) & (idx[None] < (start + width)[:, None])  # (B, n)
            x = x.masked_fill(band[:, None, :, None] if dim == 2 else band[:, None, None, :], 0.0)
        with self.autocast():
            logits = self.forward_model(x).float()
        target = batch["target"].float()
        loss = F.binary_cross_entropy_with_logits(logits, target)
        return {"loss": loss, "recall": top_n_recall(logits, target)}


def top_n_recall(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean share of each item's n sounding classes among its n highest logits (target (B, classes) multi-hot)."""
    n = target.sum(1).long()
    order = logits.argsort(dim=1, descending=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(logits.shape[1]).expand_as(order))
    hit = ((ranks < n[:, None]) & (target > 0)).sum(1).float()
    return (hit / n.clamp_min(1)).mean()


class RCoPSystem(System):
    """RCoP stage 1: one clip's frames with its audio in two different mixtures; the two top-layer
    audio-visual representations co-predict each other (models/avpc.py: rcop_loss)."""

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        from avsep_cli.models.avpc import rcop_loss

        frames = batch["frames"]
        warp, legacy = signal_warp(self.model), is_legacy(self.model)
        x1, x2 = (mixture_features(batch[k], warp, legacy)[0] for k in ("mix1", "mix2"))
        with self.autocast():
            z1, p1 = self.forward_model(x1, frames)
            z2, p2 = self.forward_model(x2, frames)
        z1, p1, z2, p2 = (t.float() for t in (z1, p1, z2, p2))
        return {"loss": rcop_loss(p1, z1, p2, z2)}


class InferencePrecision:
    """What the learned methods share about precision: `precision` ("fp32" | "bf16") and `autocast`, the
    context their networks run in (bf16: `torch.autocast` on the model's device; the STFT, warps, mask
    application and iSTFT stay float32 outside it, and the net's outputs are cast back to float32)."""

    precision = "fp32"
    autocast = staticmethod(contextlib.nullcontext)

    def set_precision(self, precision: str) -> None:
        device_type = next(self.model.parameters()).device.type
        self.autocast = precision_autocast(precision, device_type)
        self.precision = precision


class MaskMethod(InferencePrecision):
    """A trained mask net as an evaluation/separation method: binary mask at 0.5 on the log grid, warped
    back to the linear grid and applied with the mixture phase (AVPC's test-time rule). Nets built for
    a fixed window (AVPC and Sound-of-Pixels: 65535 samples, 256 frames) see the audio in consecutive
    windows of that length, the last one zero-padded. With `precision="bf16"` the net runs under bfloat16
    autocast (`InferencePrecision`); the signal path and the masks stay float32."""

    def __init__(self, model: torch.nn.Module, name: str, frames_per_source: int = 3, frame_gap: float = 3.0,
                 frame_size: int = 224, binary: bool = True, segment: int | None = None, precision: str = "fp32"):
        self.model, self.name = model.eval(), name
        self.frames_per_source, self.frame_gap, self.frame_size, self.binary = frames_per_source, frame_gap, frame_size, binary
        self.segment = segment
        self.set_precision(precision)

    @torch.no_grad()
    def separate(self, batch: MixBatch) -> torch.Tensor:
        dev = next(self.model.parameters()).device
        mixture = batch.mixture.to(dev).float()  # (B, L)
        feats = batch.features is not None  # trunk features (class prototypes) in place of pictures
        frames = (batch.features.float() if feats else batch.frames).to(dev)  # (B, N, K, 3, H, W) or (B, N, K, C, h, w)
        b, length = mixture.shape
        seg = self.segment or length
        n_chunks = -(-length // seg)
        padded = F.pad(mixture, (0, n_chunks * seg - length)).view(b * n_chunks, seg)
        frames = frames.repeat_interleave(n_chunks, dim=0)
        logits, _ = mask_logits(self.model, padded, frames, feats, self.autocast)
        mask = torch.sigmoid(logits)  # (B*C, N, 256, T)
        lin = self.own_rule(signal_warp(self.model).unwarp(mask))
        est = dsp.masked_waveforms(padded, lin, "linear")  # (B*C, N, seg)
        n = est.shape[1]
        return est.view(b, n_chunks, n, seg).permute(0, 2, 1, 3).reshape(b, n, n_chunks * seg)[..., :length]

    @torch.no_grad()
    def masks(self, batch: MixBatch, soft: bool = False) -> torch.Tensor:
        """-> (B, N, 512, T) the masks `separate` applies, on the linear grid of the mixture's STFT (T = 1 +
        L // 256), for one window of at most `segment` samples (zero-padded to it, as `separate` pads);
        `soft`: the sigmoid masks before the 0.5 threshold (what joint masks share out)."""
        dev = next(self.model.parameters()).device
        mixture = batch.mixture.to(dev).float()  # (B, L)
        feats = batch.features is not None
        frames = (batch.features.float() if feats else batch.frames).to(dev)  # (B, N, K, 3, H, W) or (B, N, K, C, h, w)
        length = mixture.shape[-1]
        seg = self.segment or length
        if length > seg:
            raise ValueError(f"masks() takes one window of at most {seg} samples, not {length}")
        logits, _ = mask_logits(self.model, F.pad(mixture, (0, seg - length)), frames, feats, self.autocast)
        lin = signal_warp(self.model).unwarp(torch.sigmoid(logits))  # (B, N, 512, T_seg)
        return (lin if soft else self.own_rule(lin))[..., : 1 + length // dsp.HOP]

    def own_rule(self, masks: torch.Tensor) -> torch.Tensor:
        """Soft masks -> the masks this method applies on its own: thresholded at 0.5 when `binary`."""
        return (masks > 0.5).float() if self.binary else masks


class IALCMSMethod(InferencePrecision):
    """A trained IAL-CMS separator as an evaluation/separation method: each source's pictures (crops of
    its player, or its solo clip's frames) guide one soft mel ratio mask, warped back to the linear grid and
    applied with the mixture phase (training/ialcms.separate). Any window length works (the net pads)."""

    guidance = "crops"  # trained on player crops: evaluated on them too (solo sources included)

    def _net_context(self, length: int):
        """The context the net runs in for a mixture of `length` samples. bf16 falls back to float32 for
        mixtures of at most 32 STFT frames (< 8192 samples): there the audio encoder's deepest maps are one
        frame wide, and oneDNN's bf16 3x3 convolutions on CPU (torch 2.14) then give garbage (NaN or 1e30)
        from run to run; from 33 frames on (deepest maps 2 wide) bf16 stays within rounding of fp32."""
        from avsep_cli.models.ialcms import DOWN

        return self.autocast if 1 + length // dsp.HOP > DOWN else contextlib.nullcontext

    def __init__(self, model: torch.nn.Module, name: str = "ialcms", frames_per_source: int = 3,
                 frame_gap: float = 3.0, frame_size: int = 224, precision: str = "fp32"):
        self.model, self.name = model.eval(), name
        self.frames_per_source, self.frame_gap, self.frame_size = frames_per_source, frame_gap, frame_size
        self.set_precision(precision)

    @torch.no_grad()
    def separate(self, batch: MixBatch) -> torch.Tensor:
        from avsep_cli.training.ialcms import separate

        self.model.eval()
        dev = next(self.model.parameters()).device
        mixture = batch.mixture.to(dev).float()  # (B, L)
        # pictures, or trunk features (class prototypes) that the visual encoder takes in their place
        frames = (batch.frames if batch.features is None else batch.features.float()).to(dev)  # (B, S, K, 3, H, W) | (B, S, K, C, h, w)
        b, s = frames.shape[:2]
        mix_index = torch.arange(b, device=dev).repeat_interleave(s)
        waves = separate(self.model, mixture, frames.flatten(0, 1), mix_index, self._net_context(mixture.shape[-1]))["waves"]  # (B*S, L)
        return waves.view(b, s, -1)

    @torch.no_grad()
    def masks(self, batch: MixBatch, soft: bool = True) -> torch.Tensor:
        """-> (B, S, 512, T) the soft masks `separate` applies (the mel masks on the linear grid), T = 1 + L // 256.
        They are soft either way (`soft` is for the masking-method interface)."""
        from avsep_cli.training.ialcms import linear_masks

        self.model.eval()
        dev = next(self.model.parameters()).device
        mixture = batch.mixture.to(dev).float()  # (B, L)
        frames = (batch.frames if batch.features is None else batch.features.float()).to(dev)  # (B, S, K, ...)
        b, s = frames.shape[:2]
        mix_index = torch.arange(b, device=dev).repeat_interleave(s)
        lin = linear_masks(self.model, mixture, frames.flatten(0, 1), mix_index,
                           self._net_context(mixture.shape[-1]))  # (B*S, 512, T)
        return lin.view(b, s, *lin.shape[-2:])

    def own_rule(self, masks: torch.Tensor) -> torch.Tensor:
        """IAL-CMS applies its soft masks as they are."""
        return masks


FIXED_SEGMENT = {"avpc": dsp.SEGMENT, "sop": dsp.SEGMENT}  # nets whose depth needs 256 STFT frames


def method_from_checkpoint(path: str, name: str | None = None, device: str | torch.device = "cpu",
                          label: str | None = None, precision: str = "fp32") -> MaskMethod | IALCMSMethod:
    """A method from shipped weights (by name, sha256-checked), a .safetensors file or a training
    checkpoint; the file must hold the model `name` asks for. `label` names the method in reports;
    `precision` ("fp32" | "bf16") is what its network runs in."""
    from avsep_cli import registry

    precision_autocast(precision, "cpu")  # an unknown precision fails before the weights load
    resolved = registry.resolve(path, expect_model=name)
    data = resolved.data
    model = registry.build(resolved, device)
    if data["model_name"] == "ialcms":
        method = IALCMSMethod(model, label or name or "ialcms", frame_size=data["model_args"].get("frame_size", 224),
                              precision=precision)
    else:
        method = MaskMethod(model, label or name or data["model_name"], frame_size=data["model_args"].get("frame_size", 224),
                            segment=FIXED_SEGMENT.get(data["model_name"]), precision=precision)
    method.weights_name, method.weights_sha256 = resolved.name, resolved.sha256
    return method
