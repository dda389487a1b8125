"""Sound-of-Pixels (ECCV 2018): the baseline every paper of the field compares against.

Frame net: a dilated ResNet-18 trunk (frozen, shared with the other methods; 14x14 maps at 224 px),
a 3x3 conv to K = 32 channels, max-pooled over space and averaged over the K frames -> a K-vector per
source. Sound net: a 7-level U-Net on the 256 x 256 log-magnitude mixture (4x4 stride-2 convs, BatchNorm,
LeakyReLU 0.2 down; transposed convs, BatchNorm, ReLU up; skip connections) giving K feature maps.
Synthesizer: the mask logit is the channel-weighted sum of the K maps with the visual vector as the
weights, times a learnable per-channel scale, plus a learnable bias.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from avsep_cli.checkpoint import register_model
from avsep_cli.models.frames import normalize
from avsep_cli.models.resnet import FrozenResNet18Trunk


@dataclass
class SoPConfig:
    ngf: int = 64  # U-Net width (Sound-of-Pixels: 64)
    k: int = 32  # channels of the audio maps and the visual vector (Sound-of-Pixels: 32)
    frame_size: int = 224

    @classmethod
    def preset(cls, name: str) -> "SoPConfig":
        """paper: the published configuration. cpu: a quarter of the U-Net width."""
        if name == "paper":
            return cls()
        if name == "cpu":
            return cls(ngf=16)
        raise ValueError(f"unknown Sound-of-Pixels preset {name!r}: expected paper or cpu")


class SoPFrameNet(nn.Module):
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


class UNet7(nn.Module):
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


class SoundOfPixels(nn.Module):
    def __init__(self, ngf: int = 64, k: int = 32, frame_size: int = 224):
        super().__init__()
        self.config = SoPConfig(ngf, k, frame_size)
        self.frame_net = SoPFrameNet(k)
        self.sound_net = UNet7(ngf, k)
        self.scale = nn.Parameter(torch.ones(k))
        self.bias = nn.Parameter(torch.zeros(1))

    def synthesize(self, maps: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """maps (B, k, F, T), visual (B, k) -> logits (B, 1, F, T)."""
        w = (visual * self.scale)[..., None, None]  # (B, k, 1, 1)
        return (maps * w).sum(1, keepdim=True) + self.bias

    def forward(self, log_mag: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """log_mag (B, 1, 256, T), frames (B, K, 3, H, W) -> mask logits (B, 1, 256, T)."""
        return self.synthesize(self.sound_net(log_mag), self.frame_net(frames))

    def forward_features(self, log_mag: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return self.synthesize(self.sound_net(log_mag), self.frame_net.from_features(feats))


@register_model("sop")
def _build(**kwargs) -> SoundOfPixels:
    return SoundOfPixels(**kwargs)


def parameter_counts(cfg: SoPConfig) -> dict[str, int]:
    with torch.device("meta"):
        m = SoundOfPixels(**asdict(cfg))
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    return {"frame net (trunk)": count(m.frame_net.trunk), "frame net (head)": count(m.frame_net.head),
            "sound net (U-Net + synthesizer)": count(m.sound_net) + m.scale.numel() + m.bias.numel(), "total": count(m)}
