"""AVPC as avsep built it before issue 16 (not the authors' computation; see docs/fidelity.md).

Kept, unchanged, only so that weights trained with it (the shipped `avpc-cpu`, `avpc-rcop-cpu`) keep loading
and separating until they are retrained: `AVPCConfig(legacy=True)` builds these classes, with the same
parameter names as then. Differences from the reference PCNetLR: the visual-end layer is recomputed, not
mixed, in the top-down pass; every layer is re-normalised in each cycle and the top-down predictions are
taken after BatchNorm and LeakyReLU; the x2 upsampling uses align_corners=False; the visual prediction has
no activation. The legacy RCoP head reads the top representation (8 ngf x 2 x 2) through a 512-d
projector and a 128-d predictor, without biases.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

LEAK = 0.2


class _LegacyUp(nn.Module):
    """x2 bilinear upsampling then a 3x3 transposed conv (stride 1, padding 1, no bias)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 3, stride=1, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class _LegacyDown(nn.Module):
    """3x3 conv (no bias) then 2x2 max-pool."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.conv(x), 2)


class LegacyPCNet(nn.Module):
    """log-magnitude mixture (B, 1, 256, 256) + visual map (B, 16, 2, 2) -> mask logits (B, 1, 256, 256)."""

    def __init__(self, ngf: int = 64, visual_channels: int = 16, cycles: int = 4):
        super().__init__()
        ch = [1, ngf, ngf, 2 * ngf, 2 * ngf, 4 * ngf, 4 * ngf, 8 * ngf]  # ch[0]: the spectrogram
        self.ch, self.cycles, self.n = ch, cycles, 7
        self.bn_in = nn.BatchNorm2d(1)
        self.down = nn.ModuleList([nn.Identity()] + [_LegacyDown(ch[l - 1], ch[l]) for l in range(1, 8)]
                                  + [nn.Conv2d(ch[7], visual_channels, 1, bias=False)])
        self.up = nn.ModuleList([nn.Identity()] + [_LegacyUp(ch[l], ch[l - 1]) for l in range(1, 8)]
                                + [nn.Conv2d(visual_channels, ch[7], 1, bias=False)])
        # error update rate a (layers 1..7, init 1.0) and top-down mixing rate b (layers 1..6, init 0.5):
        # the layer nearest the visual end is recomputed from below in every top-down pass, not mixed
        self.a = nn.ParameterList([nn.Parameter(torch.ones(1, ch[l], 1, 1)) for l in range(1, 8)])
        self.b = nn.ParameterList([nn.Parameter(torch.full((1, ch[l], 1, 1), 0.5)) for l in range(1, 7)])

        def norms():
            return nn.ModuleList([nn.BatchNorm2d(ch[l]) for l in range(1, 8)])

        # one set for the initial top-down pass and one for the initial bottom-up pass, then two per cycle
        self.bn_down = nn.ModuleList([norms() for _ in range(cycles + 1)])
        self.bn_up = nn.ModuleList([norms() for _ in range(cycles + 1)])

    def _bottom_up(self, r: list, visual: torch.Tensor, norms: nn.ModuleList) -> list:
        """Propagate the visual-end prediction error towards the mask: returns corrected r_up[1..7]."""
        r_up = [None] * 8
        err = visual - self.down[8](r[7])  # (B, 16, 2, 2): what the audio path fails to predict
        for l in range(7, 0, -1):
            upd = self.up[l + 1](err)  # error of the layer nearer the visual end, mapped to layer l
            r_up[l] = F.leaky_relu(norms[l - 1](r[l] + F.relu(self.a[l - 1]) * upd), LEAK)
            err = r_up[l] - r[l]
        return r_up

    def forward(self, log_mag: torch.Tensor, visual: torch.Tensor, cycles: int | None = None,
                return_top: bool = False):
        """-> mask logits (B, 1, 256, 256); with `return_top` also the audio-visual representation of the
        layer nearest the visual end after the last bottom-up pass, (B, 8 ngf, 2, 2) (RCoP's input)."""
        cycles = self.cycles if cycles is None else cycles
        x = self.bn_in(log_mag)
        # top-down initialisation from the spectrogram
        r = [x] + [None] * 7
        for l in range(1, 8):
            r[l] = F.leaky_relu(self.bn_down[0][l - 1](self.down[l](r[l - 1])), LEAK)
        r_up = self._bottom_up(r, visual, self.bn_up[0])
        for t in range(1, cycles + 1):
            k = min(t, self.cycles)  # extra test-time cycles reuse the last cycle's norms
            r = [x] + [None] * 7
            for l in range(1, 8):
                pred = self.down[l](r[l - 1] if l > 1 else x)
                mixed = pred if l == 7 else (1 - F.relu(self.b[l - 1])) * r_up[l] + F.relu(self.b[l - 1]) * pred
                r[l] = F.leaky_relu(self.bn_down[k][l - 1](mixed), LEAK)
            r_up = self._bottom_up(r, visual, self.bn_up[k])
        logits = self.up[1](r_up[1])  # (B, 1, 256, 256)
        return (logits, r_up[7]) if return_top else logits


class LegacyRCoPHead(nn.Module):
    """RCoP's projector and predictor (SimSiam style) on the flattened top representation."""

    def __init__(self, in_dim: int, dim: int = 512, pred_dim: int = 128):
        super().__init__()
        self.projector = nn.Sequential(nn.Linear(in_dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(),
                                       nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim))
        self.predictor = nn.Sequential(nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim), nn.ReLU(),
                                       nn.Linear(pred_dim, dim))

    def forward(self, top: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, 2, 2) -> projection z (B, dim), prediction p (B, dim)."""
        z = self.projector(top.flatten(1))
        return z, self.predictor(z)
