"""AVPC: audio-visual predictive coding (T-NNLS 2023), the frame net and the PCNet sound net, computed as
the authors' code computes them (`avpc/models/audio_net.py` PCNetLR; golden tests in tests/test_golden.py).

The frame net turns K frames of a source into a 16 x 2 x 2 visual map (frozen ResNet-18 trunk, a 6x6
conv head with BatchNorm and LeakyReLU, temporal mean). PCNet separates by iterative error minimisation
between the two modalities:

- initial top-down pass: representations r_down[1..7] from the spectrogram, layer by layer (conv, 2x2
  max-pool, BatchNorm, LeakyReLU 0.2); the visual-end conv predicts the visual map (then LeakyReLU);
- initial bottom-up pass: the visual prediction error, carried by the up convs, corrects each layer from
  the visual end towards the spectrogram, r_up[l] = LReLU(BN(r_down[l] + relu(a_l) up(error of layer l+1)))
  with the error of a layer = r_up - r_down there;
- each cycle: a top-down pass mixes r_up[l] = LReLU(BN((1 - b_l) r_up[l] + b_l r_down[l])) with
  b_l = relu(rate) on every layer; the spectrogram-side layer mixes with its initial r_down[1] and has no
  BatchNorm; every other r_down[l] is re-predicted from the layer below as a raw conv output (no BN, no
  activation), and the errors of the following bottom-up pass are taken against these raw predictions;
  then the visual map is predicted again and the bottom-up pass repeats (on r_up, not r_down).

Each cycle has its own BatchNorm layers; extra cycles at test time reuse the last cycle's. The mask head
maps the bottom representation to a 256 x 256 mask (logits; the sigmoid is applied by the caller).

Layer naming: representation l = 1..7 from the spectrogram side, channels ngf x [1, 1, 2, 2, 4, 4, 8],
spatial 128, 64, ..., 2 (the spectrogram is 256 x 256). `down[l]` maps l-1 -> l (3x3 conv, no bias,
2x2 max-pool); `down[8]` is the 1x1 conv 8ngf -> 16 predicting the visual map. `up[l]` maps l -> l-1
(x2 bilinear upsampling with align_corners=True, 3x3 transposed conv, no bias); `up[8]` is the 1x1 conv
16 -> 8ngf; `up[1]` is the mask head. `a[l-1]`, `b[l-1]`: the rates of layer l. `bn_down[0]`, `bn_up[0]`:
the initial passes; `bn_down[t]`, `bn_up[t]`: cycle t (bn_down[t][0] is empty: layer 1 has no norm in the
cycles). The reference's names map onto these in `avsep_cli/models/reference_names.py`.

At ngf = 64 with 4 cycles PCNet has 4,692,866 parameters and the whole model 16,164,338, as in the paper
and the reference. `legacy=True` builds the network avsep shipped before (models/avpc_legacy.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from avsep_cli.checkpoint import register_model
from avsep_cli.models.avpc_legacy import LegacyPCNet, LegacyRCoPHead
from avsep_cli.models.frames import normalize
from avsep_cli.models.resnet import FrozenResNet18Trunk

LEAK = 0.2


@dataclass
class AVPCConfig:
    ngf: int = 64  # PCNet width: representations ngf x [1, 1, 2, 2, 4, 4, 8] (paper: 64)
    visual_channels: int = 16  # channels of the 2x2 visual map (paper: 16; 2x2 beat 1x1, 4x4 and 7x7)
    cycles: int = 4  # recurrent cycles in training (paper: 4)
    frame_size: int = 224  # ResNet input; 224 gives 7x7 trunk maps and a 2x2 map after the 6x6 head
    # the frozen trunk's BatchNorm follows the model's mode (reference: weights frozen, BN in train mode while
    # training, avpc/models/__init__.py 59 + main.py 262); False: always running statistics (what cached
    # trunk features give: `--cache-features` trains that way)
    trunk_bn_train: bool = True
    # the log-frequency warp's grid_sample align_corners (reference: False, avpc/main.py 210 and utils.py 426;
    # True is the time-identity warp avsep used before, which scores a higher oracle SDR)
    align_corners: bool = False
    rcop_dim: int = 2048  # RCoP projector width and output (reference SimSiam: 2048)
    rcop_pred_dim: int = 512  # RCoP predictor bottleneck (reference: 512)
    legacy: bool = False  # the network avsep shipped before issue 16 (not faithful; loads the old weights)

    @classmethod
    def preset(cls, name: str) -> "AVPCConfig":
        """paper: the published configuration. cpu: a quarter of the PCNet width, for training on a
        2-core CPU (trunk features are cached, so the frame size stays 224)."""
        if name == "paper":
            return cls()
        if name == "cpu":
            return cls(ngf=16)
        raise ValueError(f"unknown AVPC preset {name!r}: expected paper or cpu")


# fields added after weights were shipped: a file whose config lacks them was made by the legacy network
LEGACY_ARGS = {"legacy": True, "trunk_bn_train": False, "align_corners": True}


class FrameNet(nn.Module):
    """(B, K, 3, 224, 224) uint8 frames -> (B, 16, 2, 2) visual map."""

    def __init__(self, visual_channels: int = 16, trunk_bn_train: bool = True):
        super().__init__()
        self.trunk = FrozenResNet18Trunk(bn_follows_mode=trunk_bn_train)
        self.head = nn.Sequential(nn.Conv2d(512, visual_channels, 6), nn.BatchNorm2d(visual_channels), nn.LeakyReLU(LEAK))

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, K, 3, H, W) -> (B, K, 512, H/32, W/32) frozen trunk features (cacheable), detached."""
        b, k = frames.shape[:2]
        with torch.no_grad():
            f = self.trunk(normalize(frames.flatten(0, 1)))
        return f.view(b, k, *f.shape[1:]).detach()

    def from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, K, 512, 7, 7) -> (B, 16, 2, 2): head per frame (one BatchNorm batch of B*K), mean over K."""
        b, k = feats.shape[:2]
        v = self.head(feats.flatten(0, 1))  # (B*K, 16, 2, 2)
        return v.view(b, k, *v.shape[1:]).mean(1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.features(frames))


class _Up(nn.Module):
    """x2 bilinear upsampling (align_corners=True, audio_net.py 37) then a 3x3 transposed conv (stride 1,
    padding 1, no bias)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 3, stride=1, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))


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
        self.ch, self.cycles = ch, cycles
        self.bn_in = nn.BatchNorm2d(1)
        self.down = nn.ModuleList([nn.Identity()] + [_Down(ch[l - 1], ch[l]) for l in range(1, 8)]
                                  + [nn.Conv2d(ch[7], visual_channels, 1, bias=False)])
        self.up = nn.ModuleList([nn.Identity()] + [_Up(ch[l], ch[l - 1]) for l in range(1, 8)]
                                + [nn.Conv2d(visual_channels, ch[7], 1, bias=False)])
        # bottom-up error rate a (init 1.0) and top-down mixing rate b (init 0.5) of layers 1..7, used as relu(rate)
        self.a = nn.ParameterList([nn.Parameter(torch.ones(1, ch[l], 1, 1)) for l in range(1, 8)])
        self.b = nn.ParameterList([nn.Parameter(torch.full((1, ch[l], 1, 1), 0.5)) for l in range(1, 8)])

        def norms(first: bool = True):
            return nn.ModuleList([nn.BatchNorm2d(ch[1]) if first else nn.Identity()]
                                 + [nn.BatchNorm2d(ch[l]) for l in range(2, 8)])

        # initial passes, then one set per cycle (the spectrogram-side layer has none in the top-down cycles)
        self.bn_down = nn.ModuleList([norms()] + [norms(first=False) for _ in range(cycles)])
        self.bn_up = nn.ModuleList([norms() for _ in range(cycles + 1)])

    def _predict_visual(self, top: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.down[8](top), LEAK)  # (B, 16, 2, 2)

    def _mix(self, up: torch.Tensor, down: torch.Tensor, i: int) -> torch.Tensor:
        """(1 - b) up + b down with b = relu(b_i), as one lerp (up + b (down - up)); both (B, C, H, W) in one dtype."""
        return torch.lerp(up, down.to(up.dtype), F.relu(self.b[i]).to(up.dtype))

    def _bottom_up(self, base: list, r_down: list, visual: torch.Tensor, norms: nn.ModuleList) -> list:
        """r_up[l] = LReLU(BN(base[l] + relu(a_l) up(error of layer l+1))) from the visual end (l = 7) down to
        l = 1; the error at the visual end is visual - prediction, elsewhere r_up - r_down of the layer above."""
        r_up = [None] * 8
        err = visual - self._predict_visual(base[7])
        for l in range(7, 0, -1):
            u = self.up[l + 1](err)
            # base + relu(a) u in one pass; the rate in the activations' dtype (bf16 under autocast), else the
            # sum is promoted to fp32 and every later op reads and writes twice the bytes
            r_up[l] = F.leaky_relu(norms[l - 1](torch.addcmul(base[l], F.relu(self.a[l - 1]).to(u.dtype), u)), LEAK)
            err = r_up[l] - r_down[l]
        return r_up

    def forward(self, log_mag: torch.Tensor, visual: torch.Tensor, cycles: int | None = None) -> torch.Tensor:
        """-> mask logits (B, 1, 256, 256). `cycles` other than the training ones: extra cycles reuse the last
        cycle's norms (the reference's forward_test_stage)."""
        cycles = self.cycles if cycles is None else cycles
        x = self.bn_in(log_mag)
        r_down = [x] + [None] * 7
        for l in range(1, 8):
            r_down[l] = F.leaky_relu(self.bn_down[0][l - 1](self.down[l](r_down[l - 1])), LEAK)
        r_up = self._bottom_up(r_down, r_down, visual, self.bn_up[0])
        r_first = r_down[1]  # the spectrogram-side layer is always mixed with its initial value
        for t in range(1, cycles + 1):
            k = min(t, self.cycles)  # extra test-time cycles reuse the last cycle's norms
            r_up[1] = F.leaky_relu(self._mix(r_up[1], r_first, 0), LEAK)
            r_down = [x, r_first] + [None] * 6
            for l in range(2, 8):
                r_down[l] = self.down[l](r_up[l - 1])  # raw prediction: no BN, no activation
                r_up[l] = F.leaky_relu(self.bn_down[k][l - 1](self._mix(r_up[l], r_down[l], l - 1)), LEAK)
            r_up = self._bottom_up(r_up, r_down, visual, self.bn_up[k])
        return self.up[1](r_up[1])  # (B, 1, 256, 256)


class AVPC(nn.Module):
    """The whole model: `forward(log_mag, frames)` -> mask logits, same interface as the other mask nets.
    `forward_features` takes cached trunk features instead of frames; `forward_sources` runs N sources of
    one mixture the way the reference trains them (one forward, hence one BatchNorm batch, per source)."""

    def __init__(self, ngf: int = 64, visual_channels: int = 16, cycles: int = 4, frame_size: int = 224,
                 trunk_bn_train: bool = True, align_corners: bool = False, rcop_dim: int = 2048, rcop_pred_dim: int = 512,
                 legacy: bool = False):
        super().__init__()
        self.config = AVPCConfig(ngf, visual_channels, cycles, frame_size, trunk_bn_train, align_corners, rcop_dim,
                                 rcop_pred_dim, legacy)
        self.frame_net = FrameNet(visual_channels, trunk_bn_train)
        self.sound_net = (LegacyPCNet if legacy else PCNet)(ngf, visual_channels, cycles)
        self.test_cycles: int | None = None  # set to evaluate with another number of cycles

    def _cycles(self) -> int | None:
        return self.test_cycles if not self.training else None

    def forward(self, log_mag: torch.Tensor, frames: torch.Tensor, sources: bool = False, feats: bool = False) -> torch.Tensor:
        """log_mag (B, 1, 256, T), frames (B, K, 3, H, W) -> mask logits (B, 1, 256, T). With `sources`, the
        layout of `forward_sources`; with `feats`, trunk features in place of frames (a wrapper such as DDP
        sees one forward either way)."""
        if sources:
            return self.forward_sources(log_mag, frames, feats)
        if feats:
            return self.forward_features(log_mag, frames)
        return self.sound_net(log_mag, self.frame_net(frames), self._cycles())

    def forward_features(self, log_mag: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return self.sound_net(log_mag, self.frame_net.from_features(feats), self._cycles())

    def forward_sources(self, log_mag: torch.Tensor, frames: torch.Tensor, feats: bool = False) -> torch.Tensor:
        """log_mag (B, 1, 256, T) one mixture per row; frames (B, N, K, 3, H, W) (or trunk features (B, N, K,
        512, h, w) with `feats`) -> logits (B, N, 256, T). One forward per source (avpc/main.py 236-244: BatchNorm
        batches of B); the legacy network ran the B x N rows as one batch."""
        b, n = frames.shape[:2]
        step = self.forward_features if feats else lambda x, f: self.sound_net(x, self.frame_net(f), self._cycles())
        if self.config.legacy:
            out = step(log_mag.repeat_interleave(n, dim=0), frames.flatten(0, 1))  # (B*N, 1, 256, T)
            return out.view(b, n, *out.shape[-2:])
        return torch.cat([step(log_mag, frames[:, i]) for i in range(n)], dim=1)  # (B, N, 256, T)


class SimSiamHead(nn.Module):
    """RCoP's projector and predictor (SimSiam; avpc_rcop/models/simsiam_net.py 26-82): projector 3 x
    (Linear with bias, BatchNorm1d, ReLU except after the last), predictor Linear-BN-ReLU-Linear."""

    def __init__(self, in_dim: int, dim: int = 2048, pred_dim: int = 512):
        super().__init__()

        def layer(i: int, o: int, relu: bool = True) -> nn.Sequential:
            return nn.Sequential(nn.Linear(i, o), nn.BatchNorm1d(o), *([nn.ReLU()] if relu else []))

        self.projector = nn.Sequential(layer(in_dim, dim), layer(dim, dim), layer(dim, dim, relu=False))
        self.predictor = nn.Sequential(layer(dim, pred_dim), nn.Linear(pred_dim, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, ...) flattened to (B, in_dim) -> projection z (B, dim), prediction p (B, dim)."""
        z = self.projector(x.flatten(1))
        return z, self.predictor(z)


RCOP_POOL = 64  # RCoP's input: the mask logits average-pooled to 64 x 64 (avpc_rcop/models/audio_net.py 174)


def rcop_loss(p1: torch.Tensor, z1: torch.Tensor, p2: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Symmetric negative cosine similarity; the targets z are detached (stop-gradient), so no
    gradient reaches the target branch and no negatives or momentum encoder are needed."""
    return -(F.cosine_similarity(p1, z2.detach(), dim=-1).mean() + F.cosine_similarity(p2, z1.detach(), dim=-1).mean()) / 2


class AVPCRCoP(nn.Module):
    """AVPC plus the RCoP head: what stage 1 (self-supervised pre-training) trains. Stage 2 keeps `avpc`.
    The head reads the mask logits average-pooled to 64 x 64 (4096-d), as the reference does."""

    def __init__(self, ngf: int = 64, visual_channels: int = 16, cycles: int = 4, frame_size: int = 224,
                 trunk_bn_train: bool = True, align_corners: bool = False, rcop_dim: int = 2048, rcop_pred_dim: int = 512,
                 legacy: bool = False):
        super().__init__()
        self.avpc = AVPC(ngf, visual_channels, cycles, frame_size, trunk_bn_train, align_corners, rcop_dim, rcop_pred_dim,
                         legacy)
        self.config = self.avpc.config
        self.head = LegacyRCoPHead(8 * ngf * 4) if legacy else SimSiamHead(RCOP_POOL * RCOP_POOL, rcop_dim, rcop_pred_dim)

    def forward(self, log_mag: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log_mag (B, 1, 256, 256), frames (B, K, 3, H, W) -> z, p (B, rcop_dim)."""
        visual = self.avpc.frame_net(frames)
        if self.avpc.config.legacy:
            _, top = self.avpc.sound_net(log_mag, visual, return_top=True)
            return self.head(top)
        logits = self.avpc.sound_net(log_mag, visual)  # (B, 1, 256, 256)
        return self.head(F.adaptive_avg_pool2d(logits, RCOP_POOL))


@register_model("avpc-rcop", legacy_args=LEGACY_ARGS)
def _build_rcop(**kwargs) -> AVPCRCoP:
    return AVPCRCoP(**kwargs)


@register_model("avpc", legacy_args=LEGACY_ARGS)
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
