"""IAL-CMS's independence critic D(x1, x2) = <w, E(x1, x2)> (Independency Adversarial Learning).

It scores a pair of separated elements (mel magnitude spectra, 256 x T): high for pairs drawn
independently (an element and one from the memory bank of other mixtures), low for dependent pairs (two
elements separated from the same video's mixture). E encodes each spectrum with a DCGAN-style stack
(4x4 stride-2 convs from `ndf` channels doubling, capped at `max_channels`, LeakyReLU 0.2, down to 4 bins,
global average pool), concatenates the two codes and applies a two-layer MLP; w is a bias-free linear
layer. Every layer, w included, is spectrally normalised (torch's parametrization); `w_penalty()` is the
L2 penalty ||w||^2 of the hinge loss. Since spectral normalisation gives the effective w unit norm, the
penalty is taken on the raw parameter `w.parametrizations.weight.original`, the one the optimiser moves.

Input scale: the critic takes magnitudes and looks at log(1 + |s|) (silence is 0, loud bins compress).
The time axis is zero-padded to a multiple of 2^layers so any number of frames reaches at least 1 frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

LEAK = 0.2


@dataclass
class CriticConfig:
    ndf: int = 64  # first conv width, doubling per layer (DCGAN; the method notes: from 64)
    max_channels: int = 512  # cap on the doubling (uncapped, 6 layers would reach 2048 channels on 256 bins)
    hidden: int = 512  # width of the two-layer MLP on the concatenated codes
    n_freq: int = 256  # mel bins of the input; the stack halves them down to 4 (6 layers at 256)

    @classmethod
    def preset(cls, name: str) -> "CriticConfig":
        """paper: DCGAN widths. cpu: a quarter of them."""
        if name == "paper":
            return cls()
        if name == "cpu":
            return cls(ndf=16, max_channels=128, hidden=128)
        raise ValueError(f"unknown critic preset {name!r}: expected paper or cpu")


class PairCritic(nn.Module):
    """x1, x2 (B, 256, T) mel magnitudes -> scores (B,)."""

    def __init__(self, ndf: int = 64, max_channels: int = 512, hidden: int = 512, n_freq: int = 256):
        super().__init__()
        self.layers = int(round(math.log2(n_freq / 4)))
        convs, cin = [], 1
        for i in range(self.layers):
            cout = min(ndf * 2**i, max_channels)
            convs += [spectral_norm(nn.Conv2d(cin, cout, 4, 2, 1)), nn.LeakyReLU(LEAK)]
            cin = cout
        self.encoder = nn.Sequential(*convs)
        self.code_dim = cin
        self.mlp = nn.Sequential(spectral_norm(nn.Linear(2 * cin, hidden)), nn.LeakyReLU(LEAK),
                                 spectral_norm(nn.Linear(hidden, hidden)), nn.LeakyReLU(LEAK))
        self.w = spectral_norm(nn.Linear(hidden, 1, bias=False))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 256, T) magnitudes -> (B, C) code."""
        x = torch.log1p(x.clamp_min(0)).unsqueeze(1)  # (B, 1, 256, T)
        pad = (-x.shape[-1]) % (2**self.layers)
        if pad:
            x = F.pad(x, (0, pad))
        return self.encoder(x).mean(dim=(2, 3))  # (B, C): global average pool over 4 x T/2^layers

    def features(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """E(x1, x2): (B, hidden)."""
        return self.mlp(torch.cat([self.encode(x1), self.encode(x2)], -1))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.w(self.features(x1, x2)).squeeze(-1)  # (B,)

    def w_penalty(self) -> torch.Tensor:
        """||w||^2 of the raw (pre-normalisation) weight of the last layer."""
        return self.w.parametrizations.weight.original.pow(2).sum()
