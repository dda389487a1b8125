"""IAL-CMS (AAAI 2024): the Cross-Modal Separation (CMS) network, one ratio mask per object, computed as the
authors' code computes it (`SeperateNet/SeparateNet.py` UnetSeparator, `AVModule/AVModule_visual_related_fa_
separation.py`; golden tests in tests/test_golden.py). For each detected object (a square crop of one
player, K frames of it) and the mixture it sounds in:

- Visual encoder (`visual_head="deeplab"`, the default): the shared ResNet-18 trunk (frozen) at output
  stride 16 (last stage dilated), its second-stage map (128 ch, stride 8) and last-stage map (512 ch,
  stride 16) each averaged over the K frames, the authors' DeepLabv3+ head (models/deeplab.py: ASPP
  1/3/6/9, low-level branch, 7,048,336 trained parameters at dim 512), then the reference's common-space
  MLP (1x1 conv, ReLU, BatchNorm, 1x1 conv) and L2 normalisation over channels at each position -> the
  visual map f_v (N, dim, H/8, W/8): 28 x 28 for a 224 crop. `visual_head="mlp"` (what avsep had before;
  cheap on CPU, 7 x 7 maps): the plain trunk's last map, a 1x1 conv projection 512 -> dim, the same MLP
  and normalisation.
- Audio encoder on the mixture's 256-bin log-frequency magnitude, bn0(log(mag + 1e-8)): 7x7 stride-2 conv
  to ngf, BatchNorm, LeakyReLU 0.2, then four stages of ResNet basic blocks (LeakyReLU 0.2) of ngf, ngf,
  2 ngf, 4 ngf, 8 ngf... each stride 2 -> f_a^mix (8 ngf = dim channels at 8 x T/32). The mixture is encoded
  once and shared by all of its objects (`mix_index`).
- Audio-visual module (the innermost U-Net level), per object: fa = fuse(concat(f_a^mix, max-pooled f_v
  broadcast)) (1x1 conv, LeakyReLU, BatchNorm, twice); fa_c = L2-normalised phi_a(fa) per position and
  f_av^c = L2-normalised mean of fa_c; spatial attention (audio -> visual): loc = sigmoid(w cos(f_v, f_av^c)
  + b) (learnable scalars, init 1 and -0.2), v = L1-normalised (over channels) sum over positions of loc x
  f_v; channel attention (visual -> audio): weight = sigmoid(MLP(mean over positions of v x fa_c)) (Conv1d,
  LeakyReLU, BatchNorm1d, Conv1d), att_fa = weight x fa + fa; f_con = concat(v, mean of att_fa) and the
  decoder input y = concat(broadcast v, att_fa).
- Decoder: each level upsamples (bilinear x2, align_corners=True), 3x3 conv, LeakyReLU 0.2, BatchNorm,
  then AdaIN: InstanceNorm x w(f_con) + b(f_con) (linear maps), and concatenates the level's input (the
  skip); widths mirror the encoder (8, 4, 2, 1 x ngf); the outermost level gives a score map (3x3 conv
  with bias, 2 ngf -> 1).
- Mask: relu(scale x score + bias + 0.5) (the reference's "IRM" with its +0.5 bias; unbounded above),
  learnable scalars scale (init 1) and bias (init 0). `mask="sigmoid"` is sigmoid(scale x score + bias).

Switches (`IALCMSConfig`): `spatial_attention=False`: v = max over positions of f_v; `channel_attention=False`:
att_fa = fa; `adain=False`: the decoder levels stop after their BatchNorm; `av_contrast` only tells the
training system whether to add L_av. `freq_scale`: "log" (the code's grid, named "mel" there) or "mel"
(the paper's HTK mel scale). Any number of STFT frames works: the input is padded (edge values) to a
multiple of 32 and the mask cropped back. Cached trunk features stand in for the crops as float tensors:
(N, K, 512, h, w) for the mlp head, (N, K, 1024, h, w) (`deeplab.pack_levels`) for DeepLabv3+. `legacy=True` builds the network avsep shipped before
(models/ialcms_legacy.py). Shapes: B mixtures, N objects, K frames per object, F = 256 bins, T frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from avsep_cli.checkpoint import register_model
from avsep_cli.models.deeplab import PACKED_CHANNELS, DeepLabV3PlusHead, PackedTrunk, unpack_levels
from avsep_cli.models.frames import normalize
from avsep_cli.models.resnet import FrozenResNet18Trunk

LEAK = 0.2
DOWN = 32  # total down-sampling of the audio encoder (stem + 4 stages, stride 2 each)
MASKS = ("relu", "sigmoid")
SCALES = ("log", "mel")
HEADS = ("deeplab", "mlp")


@dataclass
class IALCMSConfig:
    ngf: int = 64  # audio encoder width: stem ngf, stages ngf, 2ngf, 4ngf, 8ngf (reference: 64 -> f_a^mix of 512)
    dim: int = 512  # common space of the visual map and the AV module (reference: 512; must be 8 ngf)
    blocks: int = 2  # residual blocks per encoder stage (reference: 2, the ResNet-18 layout)
    frame_size: int = 224  # object crops are this size (the authors' crops: 224)
    spatial_attention: bool = True  # audio -> visual attention pooling of the visual map (paper ablation)
    channel_attention: bool = True  # visual -> audio channel re-weighting (paper ablation)
    adain: bool = True  # AdaIN conditioned on f_con in the decoder (paper ablation)
    av_contrast: bool = True  # the contrastive loss L_av in training (read by the training system, not forward)
    freq_scale: str = "log"  # the code's log grid (utils.py warpMagSpec, align_corners True); "mel": the paper's
    mask: str = "relu"  # relu(s x + b + 0.5) (SeparateNet.py 174-180); "sigmoid": sigmoid(s x + b)
    legacy: bool = False  # the network avsep shipped before issue 16 (not faithful; loads the old weights)
    # DeepLabv3+ on an OS-16 trunk, 28 x 28 maps at 224 px (`DeepLab/`); "mlp": 1x1 projection of the plain
    # trunk's last map (7 x 7), avsep's head before: much cheaper for CPU training
    visual_head: str = "deeplab"

    @classmethod
    def preset(cls, name: str) -> "IALCMSConfig":
        """paper: the published widths. cpu: a quarter of the widths (the DeepLabv3+ head's too), one block per
        stage and 128-px crops (16 x 16 visual maps; with --cache-features the trunk's two maps per crop are
        computed once, otherwise the trunk runs on every crop; `visual_head=mlp` is cheaper still)."""
        if name == "paper":
            return cls()
        if name == "cpu":
            return cls(ngf=16, dim=128, blocks=1, frame_size=128)
        raise ValueError(f"unknown IAL-CMS preset {name!r}: expected paper or cpu")


# fields added after weights were shipped: a file whose config lacks them was made by the legacy network
LEGACY_ARGS = {"legacy": True, "freq_scale": "mel", "mask": "sigmoid", "visual_head": "mlp"}


# --- visual encoder -------------------------------------------------------------------------------------


class VisualEncoder(nn.Module):
    """(N, K, 3, H, W) uint8 crops (or their cached trunk features) -> the visual map f_v, L2-normalised over
    channels at every position (the reference's common_f): (N, dim, H/8, W/8) with the DeepLabv3+ head,
    (N, dim, H/32, W/32) with the mlp head."""

    def __init__(self, dim: int = 512, head: str = "deeplab"):
        super().__init__()
        self.head_kind = head
        if head == "deeplab":
            self.trunk = FrozenResNet18Trunk(dilated=True)  # output stride 16, as the reference's backbone
            self.head = DeepLabV3PlusHead(branch=dim // 2, out=dim)  # reference: 256 / 512 at dim 512
        else:
            self.trunk = FrozenResNet18Trunk()
            self.proj = nn.Conv2d(512, dim, 1)
        self.common = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.ReLU(), nn.BatchNorm2d(dim), nn.Conv2d(dim, dim, 1))

    @property
    def feature_channels(self) -> int:
        """Channels of the cached trunk features this encoder takes in place of pictures."""
        return PACKED_CHANNELS if self.head_kind == "deeplab" else 512

    def cached_trunk(self) -> tuple[nn.Module, str]:
        """What `--cache-features` stores for this encoder: the module that maps (N, 3, S, S) pictures to the
        features it takes in their place, and the cache's name for them (both trunk levels packed for the
        DeepLabv3+ head, `deeplab.PackedTrunk`; the last map for the mlp head)."""
        if self.head_kind == "deeplab":
            return PackedTrunk(self.trunk), "resnet18-levels"
        return self.trunk, "resnet18"

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """crops: (N, K, 3, H, W) uint8 pictures, or (N, K, C, h, w) float trunk features (cached; C =
        `feature_channels`)."""
        n, k = crops.shape[:2]
        if crops.is_floating_point():
            if crops.shape[2] != self.feature_channels:
                raise ValueError(f"IAL-CMS ({self.head_kind} head): trunk features of {crops.shape[2]} channels, "
                                 f"expected {self.feature_channels}")
            f = crops.flatten(0, 1)
            levels = unpack_levels(f) if self.head_kind == "deeplab" else (f,)
        else:
            with torch.no_grad():
                x = normalize(crops.flatten(0, 1))
                levels = self.trunk.levels(x) if self.head_kind == "deeplab" else (self.trunk(x),)
        # mean over the K frames: (N, 128, H/8, W/8) and (N, 512, H/16, W/16), or (N, 512, H/32, W/32)
        levels = [f.view(n, k, *f.shape[1:]).mean(1).detach() for f in levels]
        h = self.head(*levels) if self.head_kind == "deeplab" else self.proj(levels[0])  # (N, dim, h, w)
        return F.normalize(self.common(h), dim=1)  # (N, dim, h, w)


# --- audio encoder --------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block with LeakyReLU 0.2: two 3x3 convs with BatchNorm, a 1x1 strided shortcut
    (`downsample`) when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (None if stride == 1 and cin == cout else
                           nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.bn1(self.conv1(x)), LEAK)
        short = x if self.downsample is None else self.downsample(x)
        return F.leaky_relu(self.bn2(self.conv2(h)) + short, LEAK)


def encoder_stage(cin: int, cout: int, blocks: int, stride: int = 2) -> nn.Sequential:
    """The reference's `_make_encoder_block`: a strided block then `blocks - 1` plain ones."""
    return nn.Sequential(*[BasicBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1) for j in range(blocks)])


class AudioEncoder(nn.Module):
    """(B, 1, 256, T) log magnitude (T a multiple of 32) -> the level inputs [(B, ngf, 128, T/2), (B, ngf, 64,
    T/4), (B, 2ngf, 32, T/8), (B, 4ngf, 16, T/16)] and f_a^mix (B, 8ngf, 8, T/32)."""

    def __init__(self, ngf: int = 64, blocks: int = 2):
        super().__init__()
        self.bn_in = nn.BatchNorm2d(1)
        self.stem = nn.Sequential(nn.Conv2d(1, ngf, 7, 2, 3, bias=False), nn.BatchNorm2d(ngf), nn.LeakyReLU(LEAK))
        w = [ngf, ngf, 2 * ngf, 4 * ngf, 8 * ngf]
        self.stages = nn.ModuleList(encoder_stage(w[i], w[i + 1], blocks) for i in range(4))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        h = self.stem(self.bn_in(x))
        skips = [h]
        for stage in self.stages:
            h = stage(h)
            skips.append(h)
        return skips[:-1], skips[-1]


# --- audio-visual module --------------------------------------------------------------------------------


class AVModule(nn.Module):
    """f_a^mix per object (N, D, f, t) and f_v (N, D, h, w) (D = dim) -> the dict of `forward`."""

    def __init__(self, dim: int = 512, hidden: int | None = None, spatial_attention: bool = True,
                 channel_attention: bool = True):
        super().__init__()
        hidden = hidden or dim
        self.spatial, self.channel = spatial_attention, channel_attention
        # conv -> LeakyReLU -> BatchNorm, as the reference orders them
        self.fuse = nn.Sequential(nn.Conv2d(2 * dim, 2 * dim, 1), nn.LeakyReLU(LEAK), nn.BatchNorm2d(2 * dim),
                                  nn.Conv2d(2 * dim, dim, 1), nn.LeakyReLU(LEAK), nn.BatchNorm2d(dim))
        self.phi_a = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.LeakyReLU(LEAK), nn.BatchNorm2d(hidden),
                                   nn.Conv2d(hidden, dim, 1))
        self.channel_mlp = nn.Sequential(nn.Conv1d(dim, dim, 1), nn.LeakyReLU(LEAK), nn.BatchNorm1d(dim),
                                         nn.Conv1d(dim, dim, 1), nn.Sigmoid())
        self.att_w = nn.Parameter(torch.ones(1))  # sound localisation sigmoid(w cos + b)
        self.att_b = nn.Parameter(torch.full((1,), -0.2))

    def forward(self, fa_mix: torch.Tensor, fv: torch.Tensor) -> dict[str, torch.Tensor]:
        f, t = fa_mix.shape[-2:]
        v_max = fv.amax(dim=(2, 3))  # (N, D)
        fa = self.fuse(torch.cat([fa_mix, v_max[..., None, None].expand(-1, -1, f, t)], 1))  # (N, D, f, t)
        fa_c = F.normalize(self.phi_a(fa), dim=1)  # (N, D, f, t)
        f_av_c = F.normalize(fa_c.mean(dim=(2, 3)), dim=1)  # (N, D)
        if self.spatial:
            cos = F.cosine_similarity(fv, f_av_c[..., None, None], dim=1)  # (N, h, w)
            # the scalars in the maps' dtype: float32 ones would promote loc, v and the decoder's input to
            # float32 under bf16 autocast
            loc = torch.sigmoid(cos * self.att_w.to(cos.dtype) + self.att_b.to(cos.dtype))  # (N, h, w)
            v = F.normalize((loc.unsqueeze(1) * fv).sum(dim=(2, 3)), p=1, dim=-1)  # (N, D)
        else:
            cos = loc = fv.new_zeros(fv.shape[:1] + fv.shape[2:])
            v = v_max
        weight = None
        if self.channel:
            g = (v.unsqueeze(-1) * fa_c.flatten(2)).mean(-1, keepdim=True)  # (N, D, 1)
            weight = self.channel_mlp(g)[..., None]  # (N, D, 1, 1)
            att_fa = weight * fa + fa
        else:
            att_fa = fa
        f_con = torch.cat([v, att_fa.mean(dim=(2, 3))], 1)  # (N, 2D)
        y = torch.cat([v[..., None, None].expand(-1, -1, f, t), att_fa], 1)  # (N, 2D, f, t)
        return {"fa": fa, "f_av_c": f_av_c, "cos": cos, "attention": loc, "v": v, "channel_weight": weight,
                "att_fa": att_fa, "f_con": f_con, "y": y}


# --- decoder --------------------------------------------------------------------------------------------


def instance_norm(y: torch.Tensor) -> torch.Tensor:
    """F.instance_norm without affine, (N, C, h, w) -> (N, C, h, w) in y's memory format: F.instance_norm
    returns NCHW for a channels-last input, and the concatenation, upsampling and convolution after it
    would then each convert between the layouts."""
    out = F.instance_norm(y)
    channels_last = y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


class UpLevel(nn.Module):
    """One decoder level: (N, cin, f, t) -> (N, cout, 2f, 2t): bilinear x2 (align_corners=True), 3x3 conv (no
    bias), LeakyReLU 0.2, BatchNorm, then with AdaIN InstanceNorm x w(f_con) + b(f_con)."""

    def __init__(self, cin: int, cout: int, cond_dim: int, adain: bool = True):
        super().__init__()
        self.adain = adain
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        if adain:
            self.style_w = nn.Linear(cond_dim, cout)
            self.style_b = nn.Linear(cond_dim, cout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        y = self.bn(F.leaky_relu(self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)), LEAK))
        if self.adain:
            y = instance_norm(y) * self.style_w(cond)[..., None, None] + self.style_b(cond)[..., None, None]
        return y


class MaskDecoder(nn.Module):
    """AV module output y (N, 2 dim, 8, T/32) + the encoder's level inputs + f_con -> score map (N, 1, 256, T).
    Level k (4 .. 1) outputs w[k] channels and concatenates its input (w[k-1] channels); w = ngf x [1, 1, 2, 4, 8]."""

    def __init__(self, ngf: int = 64, dim: int = 512, adain: bool = True):
        super().__init__()
        w = [ngf, ngf, 2 * ngf, 4 * ngf, 8 * ngf]
        cin = [None, w[1] + w[2], w[2] + w[3], w[3] + w[4], 2 * dim]
        self.levels = nn.ModuleList([nn.Identity()] + [UpLevel(cin[k], w[k], 2 * dim, adain) for k in range(1, 5)])
        self.head = nn.Conv2d(w[0] + w[1], 1, 3, padding=1)  # the outermost level's up conv

    def forward(self, y: torch.Tensor, skips: list[torch.Tensor], cond: torch.Tensor) -> torch.Tensor:
        for k in range(4, 0, -1):
            y = torch.cat([skips[k - 1], self.levels[k](y, cond)], 1)
        return self.head(F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True))


def mask_from_scores(score: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, kind: str = "relu") -> torch.Tensor:
    """The reference's "IRM" mask relu(scale x score + bias + 0.5), or sigmoid(scale x score + bias)."""
    s = score * scale + bias
    return F.relu(s + 0.5) if kind == "relu" else torch.sigmoid(s)


# --- the whole separator --------------------------------------------------------------------------------


class IALCMS(nn.Module):
    """`forward(mix_logmag, crops, mix_index)` -> {"mask", "f_av_c", "fv", "attention", ...}."""

    def __init__(self, ngf: int = 64, dim: int = 512, blocks: int = 2, frame_size: int = 224,
                 spatial_attention: bool = True, channel_attention: bool = True, adain: bool = True,
                 av_contrast: bool = True, freq_scale: str = "log", mask: str = "relu", legacy: bool = False,
                 visual_head: str = "deeplab"):
        super().__init__()
        if dim != 8 * ngf:
            raise ValueError(f"IAL-CMS: dim ({dim}) must be 8 x ngf ({8 * ngf}): the AV module adds audio and visual "
                             "features channel by channel")
        if mask not in MASKS or freq_scale not in SCALES:
            raise ValueError(f"IAL-CMS: mask {mask!r} / freq_scale {freq_scale!r}: expected {MASKS} / {SCALES}")
        if visual_head not in HEADS:
            raise ValueError(f"IAL-CMS: visual_head {visual_head!r}: expected one of {', '.join(HEADS)}")
        if visual_head == "deeplab" and frame_size % 16:
            raise ValueError(f"IAL-CMS: the DeepLabv3+ head needs crops of a multiple of 16 pixels, not {frame_size} "
                             "(its low-level map must be twice the size of the high-level one)")
        self.config = IALCMSConfig(ngf, dim, blocks, frame_size, spatial_attention, channel_attention, adain,
                                   av_contrast, freq_scale, mask, legacy, visual_head)
        self.visual = VisualEncoder(dim, visual_head)
        self.audio = AudioEncoder(ngf, blocks)
        self.av = AVModule(dim, dim, spatial_attention, channel_attention)
        self.decoder = MaskDecoder(ngf, dim, adain)
        self.mask_scale = nn.Parameter(torch.ones(1))
        self.mask_bias = nn.Parameter(torch.zeros(1))

    def forward(self, mix_logmag: torch.Tensor, crops: torch.Tensor,
                mix_index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """mix_logmag (B, 1, 256, T); crops (N, K, 3, H, W) uint8 (or trunk features); mix_index (N,) long, the
        mixture each object sounds in (None: N == B) -> mask (N, 1, 256, T) >= 0, f_av_c (N, dim) unit
        vectors and fv (N, dim, h, w) the visual map (for L_av), attention (N, h, w)."""
        t = mix_logmag.shape[-1]
        pad = (-t) % DOWN
        x = F.pad(mix_logmag, (0, pad, 0, 0), mode="replicate") if pad else mix_logmag  # (B, 1, 256, T')
        skips, fa = self.audio(x)
        if mix_index is not None:  # each mixture encoded once, shared by its objects
            skips = [s[mix_index] for s in skips]
            fa = fa[mix_index]
        fv = self.visual(crops)  # (N, dim, h, w)
        av = self.av(fa, fv)
        score = self.decoder(av["y"], skips, av["f_con"])[..., :t]  # (N, 1, 256, T)
        mask = mask_from_scores(score, self.mask_scale, self.mask_bias, self.config.mask)
        return {"mask": mask, "score": score, "f_av_c": av["f_av_c"], "fv": fv, "attention": av["attention"]}


@register_model("ialcms", legacy_args=LEGACY_ARGS)
def _build(**kwargs) -> nn.Module:
    cfg = IALCMSConfig(**kwargs)
    if cfg.legacy:
        from avsep_cli.models.ialcms_legacy import LegacyIALCMS

        keys = ("ngf", "dim", "blocks", "frame_size", "spatial_attention", "channel_attention", "adain", "av_contrast")
        model = LegacyIALCMS(**{k: kwargs.get(k, getattr(cfg, k)) for k in keys})
        model.config = replace(cfg, visual_head="mlp")  # the legacy network has its own (projection) head
        return model
    return IALCMS(**kwargs)


def config_dict(model: IALCMS) -> dict:
    return asdict(model.config)


def parameter_counts(cfg: IALCMSConfig, critic_preset: str | None = None) -> dict[str, int]:
    """Parameters of each part, built on the meta device (no memory, no weights loaded). With
    `critic_preset`, also the IAL critic of that preset (trained alongside, not part of the separator)."""
    from avsep_cli.models.ialcms_critic import CriticConfig, build_critic

    with torch.device("meta"):
        m = _build(**asdict(cfg))
        critic = build_critic(asdict(CriticConfig.preset(critic_preset))) if critic_preset else None
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    if cfg.legacy:
        out = {"visual encoder (trunk)": count(m.visual.trunk),
               "visual encoder (projection + MLP)": count(m.visual.proj) + count(m.visual.mlp),
               "audio encoder": count(m.audio), "audio-visual interaction": count(m.interaction),
               "mask decoder": count(m.decoder), "total (separator)": count(m)}
    else:
        head = ({"visual encoder (DeepLabv3+ head)": count(m.visual.head)} if cfg.visual_head == "deeplab"
                else {"visual encoder (projection)": count(m.visual.proj)})
        out = {"visual encoder (trunk)": count(m.visual.trunk), **head,
               "visual encoder (common-space MLP)": count(m.visual.common),
               "audio encoder": count(m.audio), "audio-visual module": count(m.av),
               "mask decoder": count(m.decoder) + 2, "total (separator)": count(m)}
    if critic is not None:
        out["IAL critic"] = count(critic)
    return out
