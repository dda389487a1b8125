"""The visual trunk's pre-training model: ResNet-18 trunk, global average pool, a linear classifier.

ImageNet weights cannot be fetched here, so the trunk every method shares learns from the corpus
pictures instead: instrument classification on random crops of frames (`avsep train --method
visual-trunk`). Only the trunk is kept afterwards (`trunk_state`), in the torchvision key layout that
`resnet.load_trunk_weights` reads, so it plugs in where ImageNet weights would.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from avsep_cli.checkpoint import register_model
from avsep_cli.models.frames import normalize
from avsep_cli.models.resnet import ResNet18Trunk


class TrunkClassifier(nn.Module):
    def __init__(self, num_classes: int = 15, frame_size: int = 224):
        super().__init__()
        self.frame_size = frame_size
        self.trunk = ResNet18Trunk()
        self.fc = nn.Linear(512, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> (B, num_classes) logits."""
        return self.fc(self.trunk(normalize(images)).mean(dim=(2, 3)))


def trunk_state(model: TrunkClassifier) -> dict[str, torch.Tensor]:
    """The trunk's weights with torchvision's resnet18 key names (conv1, bn1, layer1-4)."""
    out = {}
    for k, v in model.trunk.state_dict().items():
        k = k.replace("stem.0.", "conv1.").replace("stem.1.", "bn1.")
        out[k] = v
    return out


@register_model("visual-trunk")
def _build(**kwargs) -> TrunkClassifier:
    return TrunkClassifier(**kwargs)
