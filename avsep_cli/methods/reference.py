"""Reference methods that bracket every learned one: the mixture itself (the floor) and ideal masks
computed from the true stems (the ceiling of mask-based separation), on the linear STFT and on the
256-bin log grid the AVPC/Sound-of-Pixels mask path uses."""

from __future__ import annotations

import torch

from avsep_cli import dsp
from avsep_cli.methods import MixBatch, register


class MixtureMethod:
    """Every estimate is the mixture: the score any method must beat."""

    name = "mixture"
    frames_per_source = 0

    def separate(self, batch: MixBatch) -> torch.Tensor:
        return batch.mixture.unsqueeze(1).expand_as(batch.stems).clone()


class OracleMask:
    """Ideal binary or ratio masks from the true stems, applied to the mixture with its phase."""

    frames_per_source = 0

    def __init__(self, kind: str, scale: str):
        self.kind, self.scale = kind, scale
        self.name = f"oracle-{kind}" + ("" if scale == "linear" else f"-{scale}")

    def separate(self, batch: MixBatch) -> torch.Tensor:
        mags = dsp.stft(batch.stems.double()).abs()  # (B, S, F, T)
        warp = dsp.warp_for(self.scale)
        if warp is not None:
            mags = warp.warp(mags)  # (B, S, 256, T)
        masks = dsp.ideal_binary_mask(mags) if self.kind == "ibm" else dsp.ideal_ratio_mask(mags)
        if warp is not None and self.kind == "ibm":
            masks = (warp.unwarp(masks) > 0.5).double()  # binarised on the linear grid, as AVPC tests
            return dsp.masked_waveforms(batch.mixture.double(), masks, "linear").float()
        return dsp.masked_waveforms(batch.mixture.double(), masks, self.scale).float()


register("mixture", MixtureMethod)
for _kind in ("ibm", "irm"):
    for _scale in ("linear", "log"):
        register(OracleMask(_kind, _scale).name, lambda k=_kind, s=_scale: OracleMask(k, s))
