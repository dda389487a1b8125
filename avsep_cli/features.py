"""Frozen visual-trunk features per clip frame, computed once and kept on disk.

The papers keep the ResNet-18 trunk frozen, so its output for a given frame never changes during
separation training; recomputing it every step is most of a CPU step's cost. `TrunkFeatureStore` computes
the features of a frame (at 8 fps, the frame `media.frames_at` would give) the first time a dataset asks
for it and stores them (float16) under the corpus' feature cache keyed by the trunk's sha256
(`cache.feature_cache_path`), so a different trunk never reads stale features. Frames are used as they
are (no random crop or flip): training on cached features gives up frame augmentation. `get_crops` does
the same for one player's square crops (IAL-CMS's inputs), keyed by player and crop size; `player_crops`
makes those crops (also what `avsep_cli.prototypes` averages into class prototypes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from avsep_cli import cache
from avsep_cli.datasets import FPS, ClipReader, augment_frames, square_crop
from avsep_cli.layout import Clip
from avsep_cli.models.frames import normalize


class TrunkFeatureStore:
    def __init__(self, root: str | Path, trunk: torch.nn.Module, kind: str, frame_size: int = 224):
        self.root, self.trunk, self.kind, self.frame_size = Path(root), trunk, kind, frame_size
        self._sha: str | None = None
        self.reader = ClipReader(self.root)

    @property
    def sha(self) -> str:
        """The trunk's sha256, taken at the first look-up: a resumed run loads its trunk weights after
        the store is made, and the key must be that of the weights the features come from."""
        if self._sha is None:
            self._sha = cache.state_dict_sha256(self.trunk)
        return self._sha

    @torch.no_grad()
    def _cached(self, clip: Clip, times: list[float], key: Callable[[int], str],
                pictures: Callable[[list[float]], torch.Tensor]) -> torch.Tensor:
        """(K, C, h, w) float32 features (C = 512, or 1024 for `deeplab.PackedTrunk`) for the frames at `times`:
        read from the cache, or computed from `pictures(missing times)` -> (M, 3, H, W) uint8 and stored
        (float16) under `key(frame index)`."""
        idx = [int(np.floor(t * FPS + 1e-6)) for t in times]
        out: dict[int, np.ndarray] = {}
        missing = []
        for i in dict.fromkeys(idx):
            p = cache.feature_cache_path(self.root, clip, self.sha, key(i))
            if p.exists() and p.stat().st_mtime >= clip.video.stat().st_mtime:
                out[i] = np.load(p)
            else:
                missing.append(i)
        if missing:
            x = pictures([i / FPS for i in missing])
            self.trunk.eval()
            feats = self.trunk(normalize(x.to(next(self.trunk.parameters()).device))).cpu().numpy().astype(np.float16)
            for i, f in zip(missing, feats):
                cache.write_features(self.root, clip, self.sha, key(i), f)
                out[i] = f
        return torch.from_numpy(np.stack([out[i] for i in idx]).astype(np.float32))

    def get(self, clip: Clip, times: list[float]) -> torch.Tensor:
        """(K, C, h, w) float32 trunk features of the frames at `times` (seconds)."""

        def pictures(ts):
            frames = torch.from_numpy(self.reader.frames(clip, ts)).permute(0, 3, 1, 2)
            return augment_frames(frames, np.random.default_rng(0), self.frame_size, train=False)

        return self._cached(clip, times, lambda i: f"{self.kind}-f{i:05d}", pictures)

    def get_crops(self, clip: Clip, times: list[float], player: int, size: int) -> torch.Tensor:
        """(K, C, h, w) float32 trunk features of player `player`'s square crops (padding 0.1 of the box,
        `size` pixels: what IAL-CMS sees without augmentation) in the frames at `times`."""
        return self._cached(clip, times, lambda i: f"{self.kind}-p{player}-s{size}-f{i:05d}",
                            lambda ts: player_crops(self.reader, clip, ts, player, size))


def player_crops(reader: ClipReader, clip: Clip, times: list[float], player: int, size: int,
                 frames: np.ndarray | None = None) -> torch.Tensor:
    """(K, 3, size, size) uint8: player `player`'s square crops (padding 0.1 of its box, no augmentation) in
    the frames at `times`, as the separation pipeline crops a tracked instrument (`datasets.square_crop`).
    `frames`: those frames (K, H, W, 3) when the caller has read them already."""
    boxes = reader.boxes(clip, times)[player][1]
    frames = reader.frames(clip, times) if frames is None else frames
    crops = np.stack([square_crop(f, b, size) for f, b in zip(frames, boxes)])
    return torch.from_numpy(crops).permute(0, 3, 1, 2)
