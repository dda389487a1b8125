"""Systems: what a method gives the trainer (model, parameter groups, training step, validation).

`MaskSystem` serves every Mix-and-Separate mask method (tiny, and later AVPC and Sound-of-Pixels): the
mixture's log magnitude on the 256-bin log grid goes in with each source's frames, mask logits come out,
and the loss is the binary cross-entropy against the dominance mask weighted by log1p of the mixture
magnitude (clamped to [1e-3, 10]), as in Sound-of-Pixels and AVPC. The same signal path, wrapped as a
`MaskMethod`, is what `avsep eval` and validation run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avsep_cli import checkpoint, dsp
from avsep_cli.methods import MixBatch


def mixture_features(mixture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) -> log magnitude on the log grid (B, 1, 256, T) and the warped magnitude (B, 256, T)."""
    mag = dsp.LOG.warp(dsp.stft(mixture).abs())  # (B, 256, T)
    return dsp.log_magnitude(mag).unsqueeze(1), mag


def mask_logits(model, mixture: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mixture (B, L), frames (B, N, K, 3, H, W) -> logits (B, N, 256, T) and warped mixture magnitude."""
    b, n = frames.shape[:2]
    log_mag, mag = mixture_features(mixture)
    log_mag = log_mag.repeat_interleave(n, dim=0)  # (B*N, 1, 256, T)
    logits = model(log_mag, frames.flatten(0, 1))  # (B*N, 1, 256, T)
    return logits.view(b, n, *logits.shape[-2:]), mag


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, mix_mag: torch.Tensor) -> torch.Tensor:
    """logits, target (B, N, F, T); mix_mag (B, F, T): BCE weighted by log1p(|mix|) clamped to [1e-3, 10]."""
    weight = torch.log1p(mix_mag).clamp(1e-3, 10.0).unsqueeze(1).expand_as(target)
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight)


class MaskSystem:
    """Mix-and-Separate training of a visually guided mask net on the log grid."""

    def __init__(self, model: torch.nn.Module, model_name: str, model_args: dict, lr: dict[str, float] | None = None):
        self.model = model
        self.forward_model = model  # the trainer swaps in the DDP wrapper
        self.model_name, self.model_args = model_name, model_args
        self.lr = lr or {}

    def param_groups(self, cfg) -> list[dict]:
        """One group per top-level child whose name has its own LR in cfg.lr, the rest in 'default'."""
        groups: dict[str, list] = {}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            top = name.split(".")[0]
            groups.setdefault(top if top in cfg.lr else "default", []).append(p)
        return [{"params": ps, "lr": cfg.lr.get(g, cfg.lr.get("default", 1e-3)), "name": g} for g, ps in groups.items()]

    def model_state(self) -> dict:
        return checkpoint.model_state(self.model_name, self.model_args, self.model)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        logits, mag = mask_logits(self.forward_model, batch["mixture"], batch["frames"])
        src_mag = dsp.LOG.warp(dsp.stft(batch["stems"]).abs())  # (B, N, 256, T)
        target = dsp.ideal_binary_mask(src_mag)
        return {"loss": weighted_bce(logits, target, mag)}


class MaskMethod:
    """A trained mask net as an evaluation/separation method: binary mask at 0.5 on the log grid, warped
    back to the linear grid and applied with the mixture phase (AVPC's test-time rule)."""

    def __init__(self, model: torch.nn.Module, name: str, frames_per_source: int = 3, frame_gap: float = 3.0,
                 frame_size: int = 224, binary: bool = True):
        self.model, self.name = model.eval(), name
        self.frames_per_source, self.frame_gap, self.frame_size, self.binary = frames_per_source, frame_gap, frame_size, binary

    @torch.no_grad()
    def separate(self, batch: MixBatch) -> torch.Tensor:
        dev = next(self.model.parameters()).device
        mixture = batch.mixture.to(dev).float()
        logits, _ = mask_logits(self.model, mixture, batch.frames.to(dev))
        mask = torch.sigmoid(logits)  # (B, N, 256, T)
        lin = dsp.LOG.unwarp(mask)
        if self.binary:
            lin = (lin > 0.5).float()
        return dsp.masked_waveforms(mixture, lin, "linear")


def method_from_checkpoint(path: str, name: str | None = None, device: str | torch.device = "cpu") -> MaskMethod:
    data = checkpoint.load(path, map_location=device)
    model = checkpoint.build_model(data).to(device)
    return MaskMethod(model, name or data["model_name"])
