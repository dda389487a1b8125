"""Sound-of-Pixels (ECCV 2018): the baseline every paper of the field compares against, computed as the
authors' code computes it (`models/audio_net.py` Unet, `vision_net.py` ResnetDilated, `synthesizer_net.py`
InnerProd; golden tests in tests/test_golden.py).

Frame net: a dilated ResNet-18 trunk (14x14 maps at 224 px; trained with the rest, at a tenth of the
learning rate, as in the reference), a 3x3 conv to K = 32 channels, max-pooled over frames and space jointly,
then a sigmoid -> a K-vector per source. Sound net: a 7-level U-Net on the 256 x 256 log-magnitude mixture
(4x4 stride-2 convs with BatchNorm and LeakyReLU 0.2 down; ReLU, bilinear x2 upsampling with
align_corners=True, 3x3 conv and BatchNorm up; skip connections) giving K feature maps. Synthesizer: the
mask logit is the channel-weighted sum of the K maps with the visual vector as the weights, times a
learnable per-channel scale, plus a learnable bias. The sound net starts from the reference's
initialisation (convs N(0, 0.001), BatchNorm weights N(1, 0.02), biases 0). At ngf = 64 the U-Net has
30,274,210 parameters (the reference's unet7 with fc_dim 32). `legacy=True` builds the network avsep shipped
before (models/sop_legacy.py).

Level naming: U-Net level d = 0 (outermost, 256 -> 128) .. 6 (innermost, 4 -> 2); `downs[d]` its down conv
(+ BatchNorm for d = 1..5), `ups[d]` its up conv (+ BatchNorm for d >= 1; level 0's has a bias and gives the K
maps). Channels c[d] = ngf x [1, 2, 4, 8, 8, 8, 8].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from avsep_cli.checkpoint import register_model
from avsep_cli.models.frames import normalize
from avsep_cli.models.resnet import FrozenResNet18Trunk, ResNet18Trunk
from avsep_cli.models.sop_legacy import LegacySoPFrameNet, LegacyUNet7

LEAK = 0.2


@dataclass
class SoPConfig:
    ngf: int = 64  # U-Net width (Sound-of-Pixels: 64)
    k: int = 32  # channels of the audio maps and the visual vector (Sound-of-Pixels: 32)
    frame_size: int = 224
    # the trunk trains with the rest (reference: lr 1e-4, main.py 436-442); False: frozen (no gradients,
    # BatchNorm in eval mode), which cached trunk features (`--cache-features`) need
    train_trunk: bool = True
    # the log-frequency warp's grid_sample align_corners: the code passes none, which meant True on the
    # PyTorch 0.4 it was written for and published with (False on PyTorch >= 1.3)
    align_corners: bool = True
    legacy: bool = False  # the network avsep shipped before issue 16 (not faithful; loads the old weights)

    @classmethod
    def preset(cls, name: str) -> "SoPConfig":
        """paper: the published configuration. cpu: a quarter of the U-Net width."""
        if name == "paper":
            return cls()
        if name == "cpu":
            return cls(ngf=16)
        raise ValueError(f"unknown Sound-of-Pixels preset {name!r}: expected paper or cpu")


# fields added after weights were shipped: a file whose config lacks them was made by the legacy network
LEGACY_ARGS = {"legacy": True, "train_trunk": False}


class SoPFrameNet(nn.Module):
    """(B, K_frames, 3, H, W) uint8 -> (B, k) visual vector in (0, 1)."""

    def __init__(self, k: int = 32, train_trunk: bool = True):
        super().__init__()
        self.train_trunk = train_trunk
        self.trunk = ResNet18Trunk(dilated=True) if train_trunk else FrozenResNet18Trunk(dilated=True)
        self.head = nn.Conv2d(512, k, 3, padding=1)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, K_frames, 3, H, W) -> (B, K_frames, 512, 14, 14) trunk features (detached when frozen)."""
        b, n = frames.shape[:2]
        with torch.set_grad_enabled(self.train_trunk and torch.is_grad_enabled()):
            f = self.trunk(normalize(frames.flatten(0, 1)))
        f = f.view(b, n, *f.shape[1:])
        return f if self.train_trunk else f.detach()

    def pooled(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, K_frames, 512, h, w) -> (B, k): head conv per frame, max over frames and space jointly
        (adaptive_max_pool3d, vision_net.py 142), before the sigmoid."""
        b, n = feats.shape[:2]
        v = self.head(feats.flatten(0, 1))  # (B*K_frames, k, h, w)
        return v.view(b, n, *v.shape[1:]).amax(dim=(1, 3, 4))

    def from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.pooled(feats))  # img_activation 'sigmoid' (main.py 79)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.features(frames))


def reference_init(module: nn.Module) -> None:
    """The reference's `weights_init` (models/__init__.py 31-49): conv weights N(0, 0.001), BatchNorm
    weights N(1, 0.02) and biases 0; conv biases keep PyTorch's default."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.001)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class UNet7(nn.Module):
    """(B, 1, 256, 256) -> (B, k, 256, 256); 7 stride-2 levels down to 2 x 2."""

    def __init__(self, ngf: int = 64, k: int = 32):
        super().__init__()
        c = [ngf, 2 * ngf, 4 * ngf, 8 * ngf, 8 * ngf, 8 * ngf, 8 * ngf]
        self.bn_in = nn.BatchNorm2d(1)
        self.downs = nn.ModuleList()
        for d in range(7):
            conv = nn.Conv2d(1 if d == 0 else c[d - 1], c[d], 4, 2, 1, bias=False)
            self.downs.append(nn.Sequential(conv, nn.BatchNorm2d(c[d])) if 0 < d < 6 else nn.Sequential(conv))
        self.ups = nn.ModuleList()
        for d in range(7):
            cin = c[d] if d == 6 else 2 * c[d]  # the innermost level upsamples its own down output
            if d == 0:
                self.ups.append(nn.Sequential(nn.Conv2d(cin, k, 3, padding=1)))
            else:
                self.ups.append(nn.Sequential(nn.Conv2d(cin, c[d - 1], 3, padding=1, bias=False), nn.BatchNorm2d(c[d - 1])))
        reference_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.downs[0](self.bn_in(x))  # (B, ngf, 128, 128)
        skips = [None] * 7
        for d in range(1, 7):
            skips[d] = F.leaky_relu(y, LEAK)  # level d's skip is its activated input (the in-place LeakyReLU)
            y = self.downs[d](skips[d])  # (B, c[d], 128 / 2^d, ...)
        for d in range(6, -1, -1):
            u = self.ups[d](F.interpolate(F.relu(y), scale_factor=2, mode="bilinear", align_corners=True))
            y = torch.cat([skips[d], u], 1) if d > 0 else u
        return y  # (B, k, 256, 256)


class SoundOfPixels(nn.Module):
    def __init__(self, ngf: int = 64, k: int = 32, frame_size: int = 224, train_trunk: bool = True,
                 align_corners: bool = True, legacy: bool = False):
        super().__init__()
        self.config = SoPConfig(ngf, k, frame_size, train_trunk, align_corners, legacy)
        self.frame_net = LegacySoPFrameNet(k) if legacy else SoPFrameNet(k, train_trunk)
        self.sound_net = LegacyUNet7(ngf, k) if legacy else UNet7(ngf, k)
        self.scale = nn.Parameter(torch.ones(k))
        self.bias = nn.Parameter(torch.zeros(1))

    def synthesize(self, maps: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """maps (B, k, F, T), visual (B, k) -> logits (B, 1, F, T)."""
        w = (visual * self.scale).unsqueeze(1)  # (B, 1, k)
        b, k, f, t = maps.shape
        # the weighted sum over k as one batched matmul (B, 1, k) x (B, k, F T): no (B, k, F, T) product in memory
        return torch.bmm(w.to(maps.dtype), maps.reshape(b, k, f * t)).view(b, 1, f, t) + self.bias

    def forward(self, log_mag: torch.Tensor, frames: torch.Tensor, sources: bool = False, feats: bool = False) -> torch.Tensor:
        """log_mag (B, 1, 256, T), frames (B, K, 3, H, W) -> mask logits (B, 1, 256, T). With `sources`, the
        layout of `forward_sources`; with `feats`, trunk features in place of frames."""
        if sources:
            return self.forward_sources(log_mag, frames, feats)
        if feats:
            return self.forward_features(log_mag, frames)
        return self.synthesize(self.sound_net(log_mag), self.frame_net(frames))

    def forward_features(self, log_mag: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return self.synthesize(self.sound_net(log_mag), self.frame_net.from_features(feats))

    def forward_sources(self, log_mag: torch.Tensor, frames: torch.Tensor, feats: bool = False) -> torch.Tensor:
        """log_mag (B, 1, 256, T) one mixture per row; frames (B, N, K, 3, H, W) (or trunk features with
        `feats`) -> logits (B, N, 256, T). The U-Net runs once per mixture and its maps serve every source
        (main.py 72); the legacy network ran it once per source."""
        b, n = frames.shape[:2]
        visual = (self.frame_net.from_features if feats else self.frame_net)(frames.flatten(0, 1))  # (B*N, k)
        if self.config.legacy:
            maps = self.sound_net(log_mag.repeat_interleave(n, dim=0))  # (B*N, k, F, T)
        else:
            maps = self.sound_net(log_mag).repeat_interleave(n, dim=0)  # (B*N, k, F, T)
        logits = self.synthesize(maps, visual)  # (B*N, 1, F, T)
        return logits.view(b, n, *logits.shape[-2:])


@register_model("sop", legacy_args=LEGACY_ARGS)
def _build(**kwargs) -> SoundOfPixels:
    return SoundOfPixels(**kwargs)


def parameter_counts(cfg: SoPConfig) -> dict[str, int]:
    with torch.device("meta"):
        m = SoundOfPixels(**asdict(cfg))
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    return {"frame net (trunk)": count(m.frame_net.trunk), "frame net (head)": count(m.frame_net.head),
            "sound net (U-Net)": count(m.sound_net),
            "sound net (U-Net + synthesizer)": count(m.sound_net) + m.scale.numel() + m.bias.numel(), "total": count(m)}
