"""AVPC: audio-visual predictive coding (T-NNLS 2023), the frame net and the PCNet sound net.

The frame net turns K frames of a source into a 16 x 2 x 2 visual map (frozen ResNet-18 trunk, a 6x6
conv head, temporal mean). PCNet separates by iterative error minimisation between the two modalities:
a top-down initialisation computes representations from the mixture spectrogram layer by layer down
to a prediction of the visual map; the prediction error at the visual end is then propagated bottom-up
towards the mask, each layer correcting its representation with the error of the layer nearer the
visual end; recurrent cycles repeat the top-down pass (mixing the corrected and freshly predicted
representations) and the bottom-up pass. Each cycle has its own BatchNorm layers; extra cycles at test
time reuse the last cycle's. The mask head maps the bottom representation to a 256 x 256 mask.

Layer naming: representation l = 1..7 from the spectrogram side, channels ngf x [1, 1, 2, 2, 4, 4, 8],
spatial 128, 64, ..., 2 (the spectrogram is 256 x 256). `down[l]` maps l-1 -> l (3x3 conv, no bias,
2x2 max-pool); `down[8]` is the 1x1 conv 8ngf -> 16 predicting the visual map. `up[l]` maps l -> l-1
(x2 bilinear upsampling, 3x3 transposed conv, no bias); `up[8]` is the 1x1 conv 16 -> 8ngf; `up[1]` is
the mask head. At ngf = 64 with 4 cycles PCNet has 4,692,866 parameters, as in the paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from avsep_cli.checkpoint import register_model
from avsep_cli.models.frames import normalize
from avsep_cli.models.resnet import FrozenResNet18Trunk

LEAK = 0.2


@dataclass
class AVPCConfig:
    ngf: int = 64  # PCNet width: representations ngf x [1, 1, 2, 2, 4, 4, 8] (paper: 64)
    visual_channels: int = 16  # channels of the 2x2 visual map (paper: 16; 2x2 beat 1x1, 4x4 and 7x7)
    cycles: int = 4  # recurrent cycles in training (paper: 4)
    frame_size: int = 224  # ResNet input; 224 gives 7x7 trunk maps and a 2x2 map after the 6x6 head

    @classmethod
    def preset(cls, name: str) -> "AVPCConfig":
        """paper: the published configuration. cpu: a quarter of the PCNet width, for training on a
        2-core CPU (trunk features are cached, so the frame size stays 224)."""
        if name == "paper":
            return cls()
        if name == "cpu":
            return cls(ngf=16)
        raise ValueError(f"unknown AVPC preset {name!r}: expected paper or cpu")


class FrameNet(nn.Module):
    """(B, K, 3, 224, 224) uint8 frames -> (B, 16, 2, 2) visual map."""

    def __init__(self, visual_channels: int = 16):
        super().__init__()
        self.trunk = FrozenResNet18Trunk()
        self.head = nn.Sequential(nn.Conv2d(512, visual_channels, 6), nn.BatchNorm2d(visual_channels), nn.LeakyReLU(LEAK))


    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, K, 3, H, W) -> (B, K, 512, H/32, W/32) frozen trunk features (cacheable)."""
        b, k = frames.shape[:2]
        with torch.no_grad():
            f = self.trunk(normalize(frames.flatten(0, 1)))
        return f.view(b, k, *f.shape[1:]).detach()

    def from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, K, 512, 7, 7) -> (B, 16, 2, 2): head per frame, mean over the K frames."""
        b, k = feats.shape[:2]
        v = self.head(feats.flatten(0, 1))  # (B*K, 16, 2, 2)
        return v.view(b, k, *v.shape[1:]).mean(1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.features(frames))


class _Up(nn.Module):
    """x2 bilinear upsampling then a 3x3 transposed conv (stride 1, padding 1, no bias)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 3, stride=1, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class _Down(nn.Module):
    """3x3 conv (no bias) then 2x2 max-pool."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.conv(x), 2)


class PCNet(nn.Module):
    """log-magnitude mixture (B, 1, 256, 256) + visual map (B, 16, 2, 2) -> mask logits (B, 1, 256, 256)."""

    def __init__(self, ngf: int = 64, visual_channels: int = 16, cycles: int = 4):
        super().__init__()
        ch = [1, ngf, ngf, 2 * ngf, 2 * ngf, 4 * ngf, 4 * ngf, 8 * ngf]  # ch[0]: the spectrogram
        self.ch, self.cycles, self.n = ch, cycles, 7
        self.bn_in = nn.BatchNorm2d(1)
        self.down = nn.ModuleList([nn.Identity()] + [_Down(ch[l - 1], ch[l]) for l in range(1, 8)]
                                  + [nn.Conv2d(ch[7], visual_channels, 1, bias=False)])
        self.up = nn.ModuleList([nn.Identity()] + [_Up(ch[l], ch[l - 1]) for l in range(1, 8)]
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


class AVPC(nn.Module):
    """The whole model: `forward(log_mag, frames)` -> mask logits, same interface as the other mask nets.
    `forward_features` takes cached trunk features instead of frames."""

    def __init__(self, ngf: int = 64, visual_channels: int = 16, cycles: int = 4, frame_size: int = 224):
        super().__init__()
        self.config = AVPCConfig(ngf, visual_channels, cycles, frame_size)
        self.frame_net = FrameNet(visual_channels)
        self.sound_net = PCNet(ngf, visual_channels, cycles)
        self.test_cycles: int | None = None  # set to evaluate with another number of cycles

    def forward(self, log_mag: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """log_mag (B, 1, 256, T), frames (B, K, 3, H, W) -> mask logits (B, 1, 256, T)."""
        return self.sound_net(log_mag, self.frame_net(frames), self.test_cycles if not self.training else None)

    def forward_features(self, log_mag: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return self.sound_net(log_mag, self.frame_net.from_features(feats), self.test_cycles if not self.training else None)


class RCoPHead(nn.Module):
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


def rcop_loss(p1: torch.Tensor, z1: torch.Tensor, p2: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Symmetric negative cosine similarity; the targets z are detached (stop-gradient), so no
    gradient reaches the target branch and no negatives or momentum encoder are needed."""
    return -(F.cosine_similarity(p1, z2.detach(), dim=-1).mean() + F.cosine_similarity(p2, z1.detach(), dim=-1).mean()) / 2


class AVPCRCoP(nn.Module):
    """AVPC plus the RCoP head: what stage 1 (self-supervised pre-training) trains. Stage 2 keeps `avpc`."""

    def __init__(self, ngf: int = 64, visual_channels: int = 16, cycles: int = 4, frame_size: int = 224):
        super().__init__()
        self.avpc = AVPC(ngf, visual_channels, cycles, frame_size)
        self.head = RCoPHead(8 * ngf * 4)

    def forward(self, log_mag: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log_mag (B, 1, 256, 256), frames (B, K, 3, H, W) -> z, p (B, 512)."""
        _, top = self.avpc.sound_net(log_mag, self.avpc.frame_net(frames), return_top=True)
        return self.head(top)


@register_model("avpc-rcop")
def _build_rcop(**kwargs) -> AVPCRCoP:
    return AVPCRCoP(**kwargs)


@register_model("avpc")
def _build(**kwargs) -> AVPC:
    return AVPC(**kwargs)


def config_dict(model: AVPC) -> dict:
    return asdict(model.config)


def parameter_counts(cfg: AVPCConfig) -> dict[str, int]:
    """Parameters of each part, built on the meta device (no memory, no weights loaded)."""
    with torch.device("meta"):
        m = AVPC(**asdict(cfg))
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    return {"frame net (trunk)": count(m.frame_net.trunk), "frame net (head)": count(m.frame_net.head),
            "sound net (PCNet)": count(m.sound_net), "total": count(m)}
