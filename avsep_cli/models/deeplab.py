"""IAL-CMS's visual head as the authors' code builds it: DeepLabv3+ (ASPP and a low-level branch) on a
ResNet-18 trunk of output stride 16 (`Model/AVSeparator/IALCMS/DeepLab/`, facts only: layer sizes, order,
rates). For a 224-px crop the trunk gives a low-level map (its second stage, 128 x 28 x 28, stride 8) and a
high-level one (its last stage, dilated, 512 x 14 x 14, stride 16); the head returns a 28 x 28 map.

- ASPP on the high-level map: four branches (1x1 conv; 3x3 convs at dilation 3, 6, 9), each conv without
  bias, BatchNorm, LeakyReLU (slope 0.01); an image-pooling branch (global mean, 1x1 conv without bias,
  BatchNorm, ReLU, broadcast back); the five concatenated (5 x branch channels), 1x1 conv without bias to
  `out` channels, BatchNorm, ReLU. No dropout.
- Low-level branch: 1x1 conv (with bias) 128 -> 48, ReLU, BatchNorm (in that order).
- Decoder: ASPP output upsampled to the low-level size (bilinear, align_corners=True), concatenated before
  the reduced low-level map, one 3x3 conv (with bias) to `out`, ReLU, BatchNorm.
At the paper's widths (branches 256, out 512) the head has 7,048,336 parameters, all trained (the trunk is
frozen): the reference's 7.05 M.

The two trunk levels travel as one tensor where a single feature map is expected (the feature cache, class
prototypes): `pack_levels` puts the low-level map's 2 x 2 neighbourhoods into channels (pixel unshuffle,
128 x 2h x 2w -> 512 x h x w) after the high-level channels, so (N, 1024, h, w) holds both exactly; every
step is linear and per position, so the mean over frames commutes with it. Shapes: N pictures, C channels.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

RATES = (1, 3, 6, 9)  # the reference's ASPP dilations (config `aspp.dilations`)
LOW_CHANNELS, HIGH_CHANNELS = 128, 512  # ResNet-18's second and last stages (the reference's conv3, conv5)
REDUCED = 48  # low-level branch width (config `shallow.reduced_dim`)
PACKED_CHANNELS = HIGH_CHANNELS + 4 * LOW_CHANNELS  # (N, 1024, h, w): both levels in one map


def pack_levels(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """low (N, 128, 2h, 2w), high (N, 512, h, w) -> (N, 1024, h, w)."""
    return torch.cat([high, F.pixel_unshuffle(low, 2)], 1)


def unpack_levels(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1024, h, w) -> low (N, 128, 2h, 2w), high (N, 512, h, w)."""
    return F.pixel_shuffle(packed[:, HIGH_CHANNELS:], 2), packed[:, :HIGH_CHANNELS]


class PackedTrunk(nn.Module):
    """A dilated (output stride 16) ResNet-18 trunk seen as one map: (N, 3, H, W) -> (N, 1024, H/16, W/16)
    (`pack_levels` of its second and last stages). What the feature cache and the prototypes store for
    the DeepLabv3+ head; not part of any model's state (it wraps the model's own trunk)."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pack_levels(*self.trunk.levels(x))


class ASPP(nn.Module):
    """(N, cin, h, w) -> (N, out, h, w): atrous spatial pyramid pooling (module docstring)."""

    def __init__(self, cin: int = HIGH_CHANNELS, branch: int = 256, out: int = 512, rates: tuple = RATES):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, branch, 1 if r == 1 else 3, padding=0 if r == 1 else r, dilation=r, bias=False),
                          nn.BatchNorm2d(branch), nn.LeakyReLU())  # LeakyReLU's default slope 0.01, as the reference
            for r in rates)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, branch, 1, bias=False), nn.BatchNorm2d(branch),
                                  nn.ReLU())
        self.project = nn.Sequential(nn.Conv2d((len(rates) + 1) * branch, out, 1, bias=False), nn.BatchNorm2d(out),
                                     nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys = [b(x) for b in self.branches]  # 4 x (N, branch, h, w)
        ys.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))  # a 1x1 map upsampled is a broadcast
        return self.project(torch.cat(ys, 1))


class DeepLabV3PlusHead(nn.Module):
    """low (N, 128, 2h, 2w), high (N, 512, h, w) trunk maps -> (N, out, 2h, 2w) (module docstring)."""

    def __init__(self, branch: int = 256, out: int = 512, reduced: int = REDUCED, rates: tuple = RATES):
        super().__init__()
        self.aspp = ASPP(HIGH_CHANNELS, branch, out, rates)
        self.reduce = nn.Sequential(nn.Conv2d(LOW_CHANNELS, reduced, 1), nn.ReLU(), nn.BatchNorm2d(reduced))
        self.fuse = nn.Sequential(nn.Conv2d(out + reduced, out, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(out))

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        a = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=True)  # (N, out, 2h, 2w)
        return self.fuse(torch.cat([a, self.reduce(low)], 1))  # (N, out, 2h, 2w)
