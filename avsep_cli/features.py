"""Frozen visual-trunk features per clip frame, computed once and kept on disk.

The papers keep the ResNet-18 trunk frozen, so its output for a given frame never changes during
separation training; recomputing it every step is most of a CPU step's cost. `TrunkFeatureStore` computes
the features of a frame (at 8 fps, the frame `media.frames_at` would give) the first time a dataset asks
for it and stores them (float16) under the corpus' feature cache keyed by the trunk's sha256
(`cache.feature_cache_path`), so a different trunk never reads stale features. Frames are used as they
are (no random crop or flip): training on cached features gives up frame augmentation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avsep_cli import cache
from avsep_cli.datasets import FPS, ClipReader, augment_frames
from avsep_cli.layout import Clip
from avsep_cli.models.frames import normalize


class TrunkFeatureStore:
    def __init__(self, root: str | Path, trunk: torch.nn.Module, kind: str, frame_size: int = 224):
        self.root, self.trunk, self.kind, self.frame_size = Path(root), trunk, kind, frame_size
        self.sha = cache.state_dict_sha256(trunk)
        self.reader = ClipReader(self.root)

    def _path(self, clip: Clip, index: int) -> Path:
        return cache.feature_cache_path(self.root, clip, self.sha, f"{self.kind}-f{index:05d}")

    @torch.no_grad()
    def get(self, clip: Clip, times: list[float]) -> torch.Tensor:
        """(K, 512, h, w) float32 trunk features of the frames at `times` (seconds)."""
        idx = [int(np.floor(t * FPS + 1e-6)) for t in times]
        out: dict[int, np.ndarray] = {}
        missing = []
        for i in dict.fromkeys(idx):
            p = self._path(clip, i)
            if p.exists() and p.stat().st_mtime >= clip.video.stat().st_mtime:
                out[i] = np.load(p)
            else:
                missing.append(i)
        if missing:
            frames = torch.from_numpy(self.reader.frames(clip, [i / FPS for i in missing])).permute(0, 3, 1, 2)
            frames = augment_frames(frames, np.random.default_rng(0), self.frame_size, train=False)
            dev = next(self.trunk.parameters()).device
            self.trunk.eval()
            feats = self.trunk(normalize(frames.to(dev))).cpu().numpy().astype(np.float16)  # (M, 512, h, w)
            for i, f in zip(missing, feats):
                cache.write_features(self.root, clip, self.sha, f"{self.kind}-f{i:05d}", f)
                out[i] = f
        return torch.from_numpy(np.stack([out[i] for i in idx]).astype(np.float32))
