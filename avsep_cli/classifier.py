"""Name the instrument in a detected box: the visual trunk's classifier on the pipeline's square crop.

The detector finds *instruments* (one class); what each one is, is decided here, by a ResNet-18
trained on many picture families with augmentations that remove colour, style and background shortcuts
(`avsep train --method visual-trunk`). Splitting "where" from "what" lets the detector find instruments
of picture families it never saw (its score does not drop because the class is uncertain), and puts
the class decision on the model that sees the instrument at full resolution. The crop is the one the
separators are guided with (`datasets.square_crop`, 10 % padding), so what is named is what guides.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from avsep_cli.errors import AvsepError

CROP_PAD = 0.1  # the pipeline's crop padding (datasets.square_crop's default)


class CropClassifier:
    """Class probabilities of boxes in frames. `model`: a TrunkClassifier (weights with model_name
    "visual-trunk"); `classes`: the names of its outputs, in order."""

    def __init__(self, model: torch.nn.Module, classes: Sequence[str], *, name: str = "", sha256: str = "",
                 size: int | None = None, batch: int = 32, device: str | torch.device = "cpu"):
        n_out = int(model.fc.out_features)
        if n_out != len(classes):
            raise AvsepError(f"classifier {name or ''} has {n_out} outputs for {len(classes)} classes")
        self.model = model.eval().to(device)
        self.classes = tuple(classes)
        self.name, self.sha256 = name, sha256
        self.size = int(size or getattr(model, "frame_size", 224))
        self.batch = max(1, int(batch))
        self.device = torch.device(device)

    @classmethod
    def load(cls, spec: str, classes: Sequence[str] | None = None, device: str | torch.device = "cpu",
             size: int | None = None) -> "CropClassifier":
        """Shipped trunk weights by name, or a file (safetensors or a training checkpoint)."""
        from avsep_cli import registry
        from avsep_cli.detection import default_classes

        res = registry.resolve(spec, expect_model="visual-trunk")
        model = registry.build(res, device)
        return cls(model, tuple(classes) if classes else default_classes(), name=res.name, sha256=res.sha256,
                   size=size, device=device)

    @classmethod
    def for_detector(cls, detector: str, device: str | torch.device = "cpu") -> "CropClassifier | None":
        """The classifier a shipped detector's manifest entry names (None for a file or an entry without one)."""
        from avsep_cli import registry

        named = next((e.get("classifier") for e in registry.entries() if e["name"] == str(detector)), None)
        return cls.load(named, device=device) if named else None

    def info(self) -> dict:
        return {"weights": self.name, "sha256": self.sha256, "size": self.size}

    @torch.inference_mode()
    def probs_of_crops(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB crops -> (N, classes) float32 probabilities."""
        out = []
        for s in range(0, len(crops), self.batch):
            x = torch.from_numpy(np.ascontiguousarray(crops[s:s + self.batch])).permute(0, 3, 1, 2).to(self.device)
            out.append(torch.softmax(self.model(x).float(), dim=1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), np.float32)

    def __call__(self, frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """One (H, W, 3) uint8 RGB frame and (M, >=4) boxes x0 y0 x1 y1 in its pixels -> (M, classes)."""
        from avsep_cli.datasets import square_crop

        if len(boxes) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        crops = np.stack([square_crop(frame, b[:4], self.size, pad=CROP_PAD) for b in boxes])
        return self.probs_of_crops(crops)
