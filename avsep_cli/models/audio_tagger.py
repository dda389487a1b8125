"""Which instruments sound in a stretch of audio: a small CNN tagger (ours, not in either paper).

The pipeline names each tracked player with the crop classifier (`classifier.py`). On picture families it
never saw, that classifier is sometimes sure and wrong (a trumpet drawn in an unseen style called an
acoustic guitar at 0.9), and a player separated by the wrong name gets the wrong stem. The sound says
which instruments play: `naming.py` weighs this tagger's presence probabilities against the picture's
class probabilities when it names the players (`avsep separate --naming audio-visual`).

Input: the separators' own front end, log magnitude of the 1022-point STFT on the 256-bin log-frequency
grid (`dsp.LOG`), average-pooled 2x2 to 128 bins x T/2 frames and normalised per item (mean and standard
deviation over the whole window), so a mixture's level does not matter. Four conv blocks (3x3 conv,
BatchNorm, ReLU; two convs in the deeper two) with 2x2 average pooling, frequency averaged out, then the
mean and the max over time, dropout and one linear layer: one logit per class (multi-label, sigmoid).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from avsep_cli import dsp
from avsep_cli.checkpoint import register_model


@dataclass
class AudioTaggerConfig:
    num_classes: int = 15
    classes: tuple = ()  # the names of the outputs, in order (the training corpus' classes)
    width: int = 32  # channels of the first block; each block doubles them
    dropout: float = 0.2

    @classmethod
    def preset(cls, name: str) -> "AudioTaggerConfig":
        """One size for every preset (paper and cpu): the papers have no tagger, and this one trains on a CPU."""
        return cls()


def _block(cin: int, cout: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.AvgPool2d(2))


def tagger_input(wav: torch.Tensor) -> torch.Tensor:
    """(B, L) waveforms at dsp.SAMPLE_RATE -> (B, 1, 128, T/2) level-normalised log spectrograms."""
    w = dsp.LOG.warp(dsp.stft(wav.float()).abs() + dsp.EPS)  # (B, 256, T)
    x = F.avg_pool2d(torch.log(w).unsqueeze(1), 2, ceil_mode=True)  # (B, 1, 128, T/2)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
    return (x - mean) / std


class AudioTagger(nn.Module):
    def __init__(self, num_classes: int = 15, classes: tuple | list = (), width: int = 32, dropout: float = 0.2):
        super().__init__()
        self.classes = tuple(classes)  # output names (not weights): what `naming.AudioTagger` maps by
        c = [width, 2 * width, 4 * width, 8 * width]
        self.blocks = nn.Sequential(_block(1, c[0], 1), _block(c[0], c[1], 1), _block(c[1], c[2], 2),
                                    _block(c[2], c[3], 2))
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * c[3], num_classes)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, 1, F, T) from `tagger_input` -> (B, num_classes) logits."""
        h = self.blocks(spec).mean(dim=2)  # (B, C, T/16)
        return self.fc(self.drop(torch.cat([h.mean(-1), h.amax(-1)], 1)))


@register_model("audio-tagger")
def _build(**kwargs) -> AudioTagger:
    return AudioTagger(**kwargs)
