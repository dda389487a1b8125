"""IAL-CMS's CMS network as avsep built it before issue 16 (not the authors' computation; see docs/fidelity.md).

Kept, unchanged, only so that weights trained with it (the shipped `ialcms-cpu`, `ialcms-supervised-cpu`)
keep loading and separating until they are retrained: `IALCMSConfig(legacy=True)` builds this network,
with the same parameter names as then. Differences from the reference: an HTK mel grid; a sigmoid mask;
ReLU in the audio encoder; a decoder with other widths, IN without the BN and LeakyReLU, align_corners
False; sigmoid(5 cos) attention weights L1-normalised over positions; an L_av on projected max-pooled
visual features; a 1x1 projection + MLP visual head without L2 normalisation.

The description as it was:

IAL-CMS (AAAI 2024): the Cross-Modal Separation (CMS) network, one mel-grid ratio mask per object.

For each detected object (a square crop of one player, K frames of it) and the mixture it sounds in:

- Visual encoder: the shared ResNet-18 trunk (frozen), averaged over the K frames, then a 1x1 conv
  projection 512 -> `dim` and a one-hidden-layer MLP (1x1 convs) into the `dim`-d common space, giving a
  visual map f_v (N, dim, h, w). SIMPLIFICATION: the authors put a DeepLabv3+ head (ASPP with dilations
  1/3/6/9 and a low-level branch) on the trunk; we use the plain trunk plus the 1x1 projection, which the
  method notes allow. Every ablation switch below works the same with either head.
- Audio encoder on the mixture's 256-bin mel log-magnitude: 7x7 stride-2 conv to ngf, then residual
  stages ngf, 2ngf, 4ngf, 8ngf, each stride 2 -> f_a^mix (8 ngf channels at 256/32 x T/32). The mixture is
  encoded once and shared by all of its objects (`mix_index`).
- Audio-visual interaction: f_av = fusion MLP (1x1 convs, BatchNorm, LeakyReLU 0.2) of concat(f_a^mix,
  max-pooled f_v broadcast); projectors Phi_av (on the pooled f_av) and Phi_v (per position of f_v) with L2
  normalisation give f_av^c and the visual common map (f_v^c, for InfoNCE, is Phi_v of the max-pooled f_v);
  spatial attention (audio -> visual): sigmoid(scale * cos(f_av^c, visual common map) + bias), L1-normalised
  over positions, pools f_v into the attended visual vector v; channel attention (visual -> audio):
  w = sigmoid(MLP(v * f_av^c)), att_fa = w * f_av + f_av; f_con = concat(v, pooled att_fa).
- Mask generator: a U-Net decoder mirroring the encoder with its skip connections, on concat(broadcast v,
  att_fa), with AdaIN (per-channel std and mean predicted from f_con by linear layers) in place of
  BatchNorm; the ratio mask is sigmoid(scale * x + bias) with a learnable scalar scale and bias.

Switches (`IALCMSConfig`): `spatial_attention=False` uses the max-pooled f_v as v; `channel_attention=False`
uses att_fa = f_av; `adain=False` puts BatchNorm in the decoder; `av_contrast` only tells the training
system whether to add the InfoNCE loss L_av (the projectors are always built: spatial attention uses them).
Any number of STFT frames T works: the input is padded (edge values) to a multiple of 32 and the mask
cropped back. Shapes: B mixtures, N objects, K frames per object, F = 256 mel bins, T frames.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from avsep_cli.models.frames import normalize
from avsep_cli.models.resnet import FrozenResNet18Trunk

LEAK = 0.2
DOWN = 32  # total down-sampling of the audio encoder (stem + 4 stages, stride 2 each)


# --- visual encoder -------------------------------------------------------------------------------------


class VisualEncoder(nn.Module):
    """(N, K, 3, H, W) uint8 crops (or their cached trunk features) -> (N, dim, H/32, W/32) visual map f_v
    in the common space."""

    def __init__(self, dim: int = 512):
        super().__init__()
        self.trunk = FrozenResNet18Trunk()
        self.proj = nn.Conv2d(512, dim, 1)  # stands in for the authors' DeepLabv3+ head (see module docstring)
        self.mlp = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.LeakyReLU(LEAK), nn.Conv2d(dim, dim, 1))


    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """crops: (N, K, 3, H, W) uint8 pictures, or (N, K, 512, h, w) float trunk features (cached)."""
        n, k = crops.shape[:2]
        if crops.is_floating_point():
            f = crops.flatten(0, 1)
        else:
            with torch.no_grad():
                f = self.trunk(normalize(crops.flatten(0, 1)))  # (N*K, 512, h, w)
        f = f.view(n, k, *f.shape[1:]).mean(1).detach()  # (N, 512, h, w): mean over the K frames
        return self.mlp(self.proj(f))  # (N, dim, h, w)


# --- audio encoder --------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BatchNorm, a 1x1 strided shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Identity() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.short(x))


class AudioEncoder(nn.Module):
    """(B, 1, 256, T) log-mel (T a multiple of 32) -> skips [(B, ngf, 128, T/2), (B, ngf, 64, T/4),
    (B, 2ngf, 32, T/8), (B, 4ngf, 16, T/16)] and f_a^mix (B, 8ngf, 8, T/32)."""

    def __init__(self, ngf: int = 64, blocks: int = 2):
        super().__init__()
        self.bn_in = nn.BatchNorm2d(1)  # log magnitudes are far from zero-mean, unit-variance
        self.stem = nn.Sequential(nn.Conv2d(1, ngf, 7, 2, 3, bias=False), nn.BatchNorm2d(ngf), nn.ReLU())
        widths = [ngf, ngf, 2 * ngf, 4 * ngf, 8 * ngf]
        self.stages = nn.ModuleList(
            nn.Sequential(*[BasicBlock(widths[i] if j == 0 else widths[i + 1], widths[i + 1], 2 if j == 0 else 1)
                            for j in range(blocks)])
            for i in range(4))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        h = self.stem(self.bn_in(x))
        skips = [h]
        for stage in self.stages:
            h = stage(h)
            skips.append(h)
        return skips[:-1], skips[-1]


# --- audio-visual interaction ---------------------------------------------------------------------------


class Interaction(nn.Module):
    """f_a^mix (N, Ca, f, t) and f_v (N, dim, h, w) -> decoder input (N, 2 dim, f, t), f_con (N, 2 dim),
    f_av^c and f_v^c (N, dim), unit L2 norm, and the spatial attention (N, h, w)."""

    def __init__(self, audio_channels: int, dim: int = 512, spatial_attention: bool = True,
                 channel_attention: bool = True):
        super().__init__()
        self.spatial, self.channel = spatial_attention, channel_attention
        self.fuse = nn.Sequential(
            nn.Conv2d(audio_channels + dim, dim, 1, bias=False), nn.BatchNorm2d(dim), nn.LeakyReLU(LEAK),
            nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim), nn.LeakyReLU(LEAK))
        self.phi_av = nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(LEAK), nn.Linear(dim, dim))
        self.phi_v = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.LeakyReLU(LEAK), nn.Conv2d(dim, dim, 1))  # per position
        # sigmoid(scale * cos + bias): cos in [-1, 1]; scale 5 spans most of the sigmoid at the start
        self.att_scale = nn.Parameter(torch.tensor(5.0))
        self.att_bias = nn.Parameter(torch.tensor(0.0))
        hidden = max(dim // 4, 8)  # squeeze-and-excitation style bottleneck (the paper gives no width)
        self.channel_mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, fa: torch.Tensor, fv: torch.Tensor) -> dict[str, torch.Tensor]:
        f, t = fa.shape[-2:]
        v_max = fv.amax(dim=(2, 3))  # (N, dim)
        f_av = self.fuse(torch.cat([fa, v_max[..., None, None].expand(-1, -1, f, t)], 1))  # (N, dim, f, t)
        f_av_c = F.normalize(self.phi_av(f_av.mean(dim=(2, 3))), dim=-1)  # (N, dim)
        f_v_c = F.normalize(self.phi_v(v_max[..., None, None]).flatten(1), dim=-1)  # (N, dim)
        if self.spatial:
            v_map_c = F.normalize(self.phi_v(fv), dim=1)  # (N, dim, h, w)
            cos = torch.einsum("nd,ndhw->nhw", f_av_c, v_map_c)  # (N, h, w)
            att = torch.sigmoid(self.att_scale * cos + self.att_bias)
            att = att / att.sum(dim=(1, 2), keepdim=True).clamp_min(1e-8)  # L1-normalised
            v = torch.einsum("nhw,ndhw->nd", att, fv)  # (N, dim) attended visual vector
        else:
            att = torch.full(fv.shape[:1] + fv.shape[2:], 1.0 / (fv.shape[2] * fv.shape[3]), device=fv.device)
            v = v_max
        if self.channel:
            w = torch.sigmoid(self.channel_mlp(v * f_av_c))  # (N, dim)
            att_fa = w[..., None, None] * f_av + f_av
        else:
            att_fa = f_av
        f_con = torch.cat([v, att_fa.mean(dim=(2, 3))], -1)  # (N, 2 dim)
        dec_in = torch.cat([v[..., None, None].expand(-1, -1, f, t), att_fa], 1)  # (N, 2 dim, f, t)
        return {"dec_in": dec_in, "f_con": f_con, "f_av_c": f_av_c, "f_v_c": f_v_c, "attention": att}


# --- decoder --------------------------------------------------------------------------------------------


class AdaIN(nn.Module):
    """Instance-normalised x (N, C, f, t) scaled and shifted per channel by linear maps of f_con (N, D)."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.std = nn.Linear(cond_dim, channels)
        self.mean = nn.Linear(cond_dim, channels)
        nn.init.ones_(self.std.bias)  # start near the identity: std ~ 1, mean ~ 0
        nn.init.zeros_(self.mean.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * self.std(cond)[..., None, None] + self.mean(cond)[..., None, None]


class _BN(nn.BatchNorm2d):
    """BatchNorm with AdaIN's call signature (the condition is ignored): the `adain=False` ablation."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


class UpBlock(nn.Module):
    """x2 bilinear up-sampling, 3x3 conv (no bias), AdaIN or BatchNorm, ReLU."""

    def __init__(self, cin: int, cout: int, cond_dim: int, adain: bool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm = AdaIN(cout, cond_dim) if adain else _BN(cout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return F.relu(self.norm(self.conv(x), cond))


class MaskDecoder(nn.Module):
    """U-Net decoder mirroring the audio encoder: (N, 2 dim, 8, T/32) + the encoder's skips + f_con ->
    ratio mask (N, 1, 256, T) = sigmoid(scale * x + bias)."""

    def __init__(self, ngf: int = 64, dim: int = 512, adain: bool = True):
        super().__init__()
        cond = 2 * dim
        self.ups = nn.ModuleList([
            UpBlock(2 * dim, 4 * ngf, cond, adain),  # -> 16 bins, cat skip (4 ngf)
            UpBlock(8 * ngf, 2 * ngf, cond, adain),  # -> 32 bins, cat skip (2 ngf)
            UpBlock(4 * ngf, ngf, cond, adain),  # -> 64 bins, cat skip (ngf)
            UpBlock(2 * ngf, ngf, cond, adain),  # -> 128 bins, cat stem (ngf)
            UpBlock(2 * ngf, ngf, cond, adain),  # -> 256 bins
        ])
        self.head = nn.Conv2d(ngf, 1, 3, padding=1)
        self.mask_scale = nn.Parameter(torch.tensor(1.0))
        self.mask_bias = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], cond: torch.Tensor) -> torch.Tensor:
        for up, skip in zip(self.ups, reversed(skips)):
            x = torch.cat([up(x, cond), skip], 1)
        x = self.ups[-1](x, cond)
        return torch.sigmoid(self.mask_scale * self.head(x) + self.mask_bias)


# --- the whole separator --------------------------------------------------------------------------------


class LegacyIALCMS(nn.Module):
    """`forward(mix_logmel, crops, mix_index)` -> {"mask", "f_av_c", "f_v_c", "attention"}."""

    def __init__(self, ngf: int = 64, dim: int = 512, blocks: int = 2, frame_size: int = 224,
                 spatial_attention: bool = True, channel_attention: bool = True, adain: bool = True,
                 av_contrast: bool = True):
        super().__init__()
        self.visual = VisualEncoder(dim)
        self.audio = AudioEncoder(ngf, blocks)
        self.interaction = Interaction(8 * ngf, dim, spatial_attention, channel_attention)
        self.decoder = MaskDecoder(ngf, dim, adain)

    def forward(self, mix_logmel: torch.Tensor, crops: torch.Tensor,
                mix_index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """mix_logmel (B, 1, 256, T); crops (N, K, 3, H, W) uint8; mix_index (N,) long, the mixture each
        object sounds in (None: N == B, object n in mixture n) -> mask (N, 1, 256, T) in [0, 1],
        f_av_c and f_v_c (N, dim) unit vectors (for InfoNCE), attention (N, h, w)."""
        t = mix_logmel.shape[-1]
        pad = (-t) % DOWN
        x = F.pad(mix_logmel, (0, pad, 0, 0), mode="replicate") if pad else mix_logmel  # (B, 1, 256, T')
        skips, fa = self.audio(x)
        if mix_index is not None:  # each mixture encoded once, shared by its objects
            skips = [s[mix_index] for s in skips]
            fa = fa[mix_index]
        inter = self.interaction(fa, self.visual(crops))
        mask = self.decoder(inter["dec_in"], skips, inter["f_con"])[..., :t]  # (N, 1, 256, T)
        return {"mask": mask, "f_av_c": inter["f_av_c"], "f_v_c": inter["f_v_c"], "attention": inter["attention"]}
