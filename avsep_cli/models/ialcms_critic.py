"""IAL-CMS's independence critic D(x1, x2) = <w, E(x1, x2)> + b, as the authors' code builds it
(`Model/Critics/models/LatePair.py`, LatePairCriticsModel with spectral normalisation; golden test in
tests/test_golden.py).

It scores a pair of separated elements (their log-frequency magnitudes, 256 bins x T frames, raw, not
logged): high for pairs drawn independently (an element and one from the memory bank), low for dependent
pairs (two elements separated from the same input mixture). E encodes each spectrum with a DCGAN stack g:
4x4 stride-2 convs without bias from `ndf` channels, doubling up to `max_channels` (1024), LeakyReLU 0.2,
down to 4 bins, global average pool; concatenates the two codes and applies h = Linear(2C, C), LeakyReLU,
Linear(C, C), LeakyReLU. Spectral normalisation (`torch.nn.utils.spectral_norm`: one power iteration per
training-mode forward) is on every layer of g and h, not on w: w is a free bias-free linear layer whose
squared norm is the hinge loss's penalty, and b a free scalar. The time axis is zero-padded to a multiple
of 2^layers (the reference needs exactly 256 frames; any number works here).

`LegacyPairCritic` is the critic avsep used before (capped at 512 channels, biased convs, log1p input,
spectral norm on w too, no b), kept so that runs made with it resume; `build_critic` picks by `legacy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm as sn_hook
from torch.nn.utils.parametrizations import spectral_norm

LEAK = 0.2


@dataclass
class CriticConfig:
    ndf: int = 64  # first conv width, doubling per layer (reference: 64)
    max_channels: int = 1024  # cap on the doubling (reference: 1024; 6 layers at 256 bins reach it)
    hidden: int = 0  # width of h; 0: the last conv's width (reference: h is C -> C)
    n_freq: int = 256  # bins of the input; the stack halves them down to 4 (6 layers at 256)
    legacy: bool = False  # avsep's critic before issue 16 (resumes runs made with it)

    @classmethod
    def preset(cls, name: str) -> "CriticConfig":
        """paper: the reference's widths (31.1 M parameters). cpu: a quarter of the widths, capped at 256."""
        if name == "paper":
            return cls()
        if name == "cpu":
            return cls(ndf=16, max_channels=256)
        raise ValueError(f"unknown critic preset {name!r}: expected paper or cpu")


LEGACY_CRITIC = {"legacy": True}  # critic args saved before issue 16 lack `legacy`


def build_critic(args: dict) -> nn.Module:
    """The critic of saved critic args: the reference's, or the legacy one for args without `legacy`."""
    args = {**LEGACY_CRITIC, **args}
    if args.pop("legacy"):
        return LegacyPairCritic(**{k: v for k, v in args.items() if k in ("ndf", "max_channels", "hidden", "n_freq")})
    return PairCritic(**args)


class PairCritic(nn.Module):
    """x1, x2 (B, 256, T) magnitudes -> scores (B,). `g`, `h`, `w`, `b` as the reference names them."""

    def __init__(self, ndf: int = 64, max_channels: int = 1024, hidden: int = 0, n_freq: int = 256):
        super().__init__()
        self.layers = int(round(math.log2(n_freq / 4)))
        g, cin = [], 1
        for i in range(self.layers):
            cout = min(ndf * 2**i, max_channels)
            g += [sn_hook(nn.Conv2d(cin, cout, 4, 2, 1, bias=False)), nn.LeakyReLU(LEAK)]
            cin = cout
        self.g = nn.Sequential(*g)
        self.code_dim = cin
        hidden = hidden or cin
        self.h = nn.Sequential(sn_hook(nn.Linear(2 * cin, hidden)), nn.LeakyReLU(LEAK),
                               sn_hook(nn.Linear(hidden, hidden)), nn.LeakyReLU(LEAK))
        self.w = nn.Linear(hidden, 1, bias=False)
        self.b = nn.Parameter(torch.zeros(1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 256, T) magnitudes -> (B, C) code (the reference's component_feature)."""
        x = x.unsqueeze(1)  # (B, 1, 256, T)
        pad = (-x.shape[-1]) % (2**self.layers)
        if pad:
            x = F.pad(x, (0, pad))
        return self.g(x).mean(dim=(2, 3))  # (B, C): average pool over 4 x T/2^layers

    def features(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """E(x1, x2): (B, hidden); x1 and x2 go through g as one batch, pairs adjacent (as the reference)."""
        codes = self.encode(torch.stack([x1, x2], 1).flatten(0, 1))  # (2B, C)
        return self.h(codes.view(x1.shape[0], -1))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return (self.w(self.features(x1, x2)) + self.b).squeeze(-1)  # (B,)

    def w_penalty(self) -> torch.Tensor:
        """||w||^2 (w is not normalised: the penalty keeps it bounded)."""
        return self.w.weight.pow(2).sum()


class LegacyPairCritic(nn.Module):
    """avsep's critic before issue 16 (kept to resume runs made with it): x1, x2 (B, 256, T) mel magnitudes -> scores (B,)."""

    def __init__(self, ndf: int = 64, max_channels: int = 512, hidden: int = 512, n_freq: int = 256):
        super().__init__()
        hidden = hidden or 512
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
