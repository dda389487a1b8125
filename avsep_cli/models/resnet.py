"""The visual trunk every method shares: torchvision's ResNet-18 architecture up to its last conv stage.

ImageNet weights cannot be downloaded here, so the trunk is built without weights and filled from a
local file when the user has one (`load_trunk_weights`), from torchvision's cache if it holds them, or
from our own corpus pre-training (`avsep train --method visual-trunk`, issue 6). Methods keep it frozen
(no gradients, output detached), as the papers do.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from avsep_cli.errors import AvsepError


class ResNet18Trunk(nn.Module):
    """(B, 3, H, W) ImageNet-normalised -> (B, 512, H/32, W/32); with `dilated`, the last stage keeps
    stride 16 and dilates its convs instead (Sound-of-Pixels' frame net: 14x14 maps at 224 px)."""

    def __init__(self, dilated: bool = False):
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        if dilated:
            _dilate_last_stage(net.layer4)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))

    def levels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> the second stage's map (B, 128, H/8, W/8) and the last one's (B, 512, H/32 or, when
        dilated, H/16): the low- and high-level inputs of IAL-CMS's DeepLabv3+ head (models/deeplab.py)."""
        low = self.layer2(self.layer1(self.stem(x)))
        return low, self.layer4(self.layer3(low))


def _dilate_last_stage(stage: nn.Module) -> None:
    """Stride 1 instead of 2 in the stage (output stride 16); the strided 3x3 conv keeps dilation 1, every
    other 3x3 conv gets dilation 2 so the receptive field is unchanged. Parameters are untouched, so
    plain ResNet-18 weights load into it."""
    for m in stage.modules():
        if isinstance(m, nn.Conv2d):
            if m.stride == (2, 2):
                m.stride = (1, 1)
            elif m.kernel_size == (3, 3):
                m.dilation, m.padding = (2, 2), (2, 2)


class FrozenResNet18Trunk(ResNet18Trunk):
    """The trunk as the papers use it during separation training: no gradients (same parameter names as
    `ResNet18Trunk`). With `bn_follows_mode` its BatchNorm follows the parent's mode, as in the authors'
    code (only the weights are frozen: in training mode it normalises with batch statistics and updates its
    running ones); without, BatchNorm stays in eval mode whatever mode its parent is put in (what cached
    trunk features amount to)."""

    def __init__(self, dilated: bool = False, bn_follows_mode: bool = False):
        super().__init__(dilated)
        self.bn_follows_mode = bn_follows_mode
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(mode and self.bn_follows_mode)


def _torchvision_cache_file() -> Path | None:
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    found = sorted(hub.glob("resnet18-*.pth")) if hub.is_dir() else []
    return found[0] if found else None


def load_trunk_weights(trunk: ResNet18Trunk, path: str | os.PathLike | None = None) -> str:
    """Fill the trunk from a torchvision-format ResNet-18 state dict (e.g. ImageNet weights), from `path`
    (a file, or the name of shipped `visual-trunk` weights, sha256-checked) or torchvision's cache; never
    downloads. Returns a description of the source."""
    src = Path(path) if path else _torchvision_cache_file()
    if src is None:
        raise AvsepError("no ResNet-18 weights: pass --visual-weights FILE (a torchvision resnet18 state dict) "
                         "or pre-train the trunk on the corpus with `avsep train --method visual-trunk`")
    if not src.is_file():
        from avsep_cli import registry

        if path and str(path) in {e["name"] for e in registry.entries() if e.get("method") == "visual-trunk"}:
            sd = registry.resolve(str(path), expect_model="visual-trunk").data
        else:
            raise AvsepError(f"--visual-weights {src}: no such file (nor shipped visual-trunk weights of that name)")
    else:
        try:
            sd = torch.load(src, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise AvsepError(f"cannot read ResNet-18 weights {src}: {str(e).splitlines()[0]}") from None
    if sd.get("model_name") == "visual-trunk":  # a checkpoint of `avsep train --method visual-trunk`
        sd = {k.removeprefix("trunk."): v for k, v in sd["state_dict"].items() if k.startswith("trunk.")}
    sd = sd.get("state_dict", sd)
    mapped = {}
    for k, v in sd.items():
        k = k.removeprefix("module.")
        if k.startswith(("fc.",)):
            continue
        for a, b in (("conv1.", "stem.0."), ("bn1.", "stem.1.")):
            if k.startswith(a):
                k = b + k[len(a):]
        mapped[k] = v
    missing, unexpected = trunk.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise AvsepError(f"{src} is not a ResNet-18 state dict ({len(missing)} missing, {len(unexpected)} unexpected keys)")
    return str(src)
