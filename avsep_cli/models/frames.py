"""Frame preprocessing shared by the visual parts of every model: uint8 RGB to ImageNet-normalised float."""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(frames: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) uint8 or float in [0, 1] -> (..., 3, H, W) float, ImageNet mean/std."""
    x = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std
