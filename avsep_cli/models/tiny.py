"""`tiny`: a few-thousand-parameter visually conditioned mask net, the test vehicle of the trainer.

Same interface as the AVPC and Sound-of-Pixels sound nets: a log-magnitude mixture on the 256-bin log
grid plus the source's frames in, mask logits on the same grid out. The visual path pools a small conv
stack over frames and time; the audio path is a small conv net whose features are scaled and shifted by
the visual vector (FiLM). No BatchNorm, so distributed and single-process training agree exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from avsep_cli.checkpoint import register_model
from avsep_cli.models.frames import normalize


@dataclass
class TinyConfig:
    channels: int = 16  # audio conv width
    visual_dim: int = 16  # size of the pooled visual vector
    frame_size: int = 64  # frames are resized to this before the visual convs (cheap on CPU)


class TinyNet(nn.Module):
    def __init__(self, channels: int = 16, visual_dim: int = 16, frame_size: int = 64):
        super().__init__()
        self.config = TinyConfig(channels, visual_dim, frame_size)
        self.visual = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(8, visual_dim, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.inp = nn.Conv2d(1, channels, 3, padding=1)
        self.film = nn.Linear(visual_dim, 2 * channels)
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=2, dilation=2), nn.GroupNorm(4, channels), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=4, dilation=4), nn.GroupNorm(4, channels), nn.LeakyReLU(0.2),
        )
        self.out = nn.Conv2d(channels, 1, 1)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, K, 3, H, W) uint8 -> (B, K, D, h, w) conv maps (h = w = frame_size / 4): the part that plays
        the frozen trunk's role in the other nets (class prototypes are means of these)."""
        b, k = frames.shape[:2]
        x = normalize(frames.flatten(0, 1))  # (B*K, 3, H, W)
        x = F.interpolate(x, size=(self.config.frame_size,) * 2, mode="bilinear", align_corners=False)
        v = self.visual(x)  # (B*K, D, h, w)
        return v.view(b, k, *v.shape[1:])

    def visual_vector(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, K, 3, H, W) uint8 -> (B, D): conv features pooled over space and the K frames."""
        return self.features(frames).mean(dim=(3, 4)).mean(1)

    def forward(self, log_mag: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """log_mag (B, 1, 256, T), frames (B, K, 3, H, W) -> mask logits (B, 1, 256, T)."""
        return self.forward_features(log_mag, self.features(frames))

    def forward_features(self, log_mag: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """log_mag (B, 1, 256, T), feats (B, K, D, h, w) from `features` -> mask logits (B, 1, 256, T)."""
        gamma, beta = self.film(feats.mean(dim=(3, 4)).mean(1)).chunk(2, dim=-1)  # (B, C) each
        h = F.leaky_relu(self.inp(log_mag), 0.2)  # (B, C, 256, T)
        h = h * (1 + gamma[..., None, None]) + beta[..., None, None]
        return self.out(self.body(h) + h)


@register_model("tiny")
def _build(**kwargs) -> TinyNet:
    return TinyNet(**kwargs)


def config_dict(model: TinyNet) -> dict:
    return asdict(model.config)
