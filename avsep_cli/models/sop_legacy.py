"""Sound-of-Pixels as avsep built it before issue 16 (not the authors' computation; see docs/fidelity.md).

Kept, unchanged, only so that weights trained with it (the shipped `sop-cpu`) keep loading and separating
until they are retrained: `SoPConfig(legacy=True)` builds these classes, with the same parameter names as
then. Differences from the reference: the U-Net's up path is a 4x4 stride-2 transposed conv (11.6 M more
parameters at ngf 64) instead of bilinear x2 upsampling and a 3x3 conv; the visual vector is the mean over
frames of a spatial max, without the sigmoid.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from avsep_cli.models.frames import normalize
from avsep_cli.models.resnet import FrozenResNet18Trunk


class LegacySoPFrameNet(nn.Module):
    """(B, K_frames, 3, H, W) uint8 -> (B, k) visual vector."""

    def __init__(self, k: int = 32):
        super().__init__()
        self.trunk = FrozenResNet18Trunk(dilated=True)
        self.head = nn.Conv2d(512, k, 3, padding=1)


    def features(self, frames: torch.Tensor) -> torch.Tensor:
        b, n = frames.shape[:2]
        with torch.no_grad():
            f = self.trunk(normalize(frames.flatten(0, 1)))
        return f.view(b, n, *f.shape[1:]).detach()  # (B, K_frames, 512, 14, 14)

    def from_features(self, feats: torch.Tensor) -> torch.Tensor:
        b, n = feats.shape[:2]
        v = self.head(feats.flatten(0, 1)).amax(dim=(2, 3))  # (B*K_frames, k): spatial max
        return v.view(b, n, -1).mean(1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.features(frames))


class LegacyUNet7(nn.Module):
    """(B, 1, 256, 256) -> (B, k, 256, 256); 7 stride-2 levels down to 2 x 2."""

    def __init__(self, ngf: int = 64, k: int = 32):
        super().__init__()
        chans = [1, ngf, 2 * ngf, 4 * ngf, 8 * ngf, 8 * ngf, 8 * ngf, 8 * ngf]
        self.bn_in = nn.BatchNorm2d(1)
        self.downs = nn.ModuleList()
        for i in range(7):
            layers = [nn.Conv2d(chans[i], chans[i + 1], 4, 2, 1, bias=False)]
            if 0 < i < 6:  # no norm on the outermost and innermost convs
                layers.append(nn.BatchNorm2d(chans[i + 1]))
            self.downs.append(nn.Sequential(*layers))
        self.ups = nn.ModuleList()
        for i in range(6, -1, -1):
            cin = chans[i + 1] if i == 6 else 2 * chans[i + 1]
            cout = k if i == 0 else chans[i]
            layers = [nn.ReLU(), nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=i == 0)]
            if i > 0:
                layers.append(nn.BatchNorm2d(cout))
            self.ups.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn_in(x)
        skips = []
        for i, d in enumerate(self.downs):
            h = d(h if i == 0 else nn.functional.leaky_relu(h, 0.2))
            skips.append(h)
        for j, u in enumerate(self.ups):
            h = u(h if j == 0 else torch.cat([h, skips[6 - j]], dim=1))
        return h
