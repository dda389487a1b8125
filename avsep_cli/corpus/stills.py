"""Still images of one to three players, rendered on demand from a corpus' pictures: the visual front
end's training data beyond the corpus' clips.

A corpus holds a few thousand frames, and neighbouring ones are near copies; the detector and the
visual trunk need many more views than that to learn the instrument and not the picture. A still is
one frame of the corpus' own scene generator (`scene.render_scene_detailed`: the same backgrounds,
lighting, blur, noise, compression, occluders, scales and framings as the clips) with 1-3 players
whose pictures come from one split of the corpus recipe, so train stills never show a held-out family.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avsep_cli.errors import AvsepError

PLAYERS_P = (0.35, 0.4, 0.25)  # probability of 1, 2, 3 players in a still


def recipe_pictures(recipe: dict, split: str, assets: Path | None = None,
                    cache_dir: Path | None = None) -> dict[str, list]:
    """The recipe's pictures of `split` per class, as `pictures.Picture`s found on this machine.

    The recipe records picture keys; they are looked up among the pictures installed here (the assets
    the corpus was made from). A key that is not here any more is one clear error."""
    from avsep_cli.corpus import pictures as P
    from avsep_cli.corpus.generate import default_cache_dir

    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    found = P.discover(assets if assets is not None else P.default_assets_dir(), cache_dir / "pictures")
    by_key = {p.key: p for ps in found.values() for p in ps}
    out: dict[str, list] = {}
    for cls, splits in recipe["pictures"].items():
        keys = splits.get(split) or splits.get("train") or []
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise AvsepError(f"picture {missing[0]!r} of the corpus recipe ({len(missing)} in all) is not installed "
                             f"here: install the assets the corpus was made with (scripts/install-assets.sh)")
        out[cls] = [by_key[k] for k in keys]
    return out


def render_still(pictures: list[np.ndarray], size: int, rng: np.random.Generator):
    """RGBA pictures -> (frame (S, S, 3) uint8, boxes (P, 4) float32 x0 y0 x1 y1 px, visible (P,) bool)."""
    from avsep_cli.corpus.scene import render_scene_detailed

    sc = render_scene_detailed(pictures, 1, 8.0, size, rng)
    return sc.frames[0], sc.boxes[:, 0], sc.visible[:, 0]


class StillSampler:
    """Draws stills from one split's pictures: `sample(rng)` -> (frame, boxes, classes)."""

    def __init__(self, pics: dict[str, list], size: int = 224, picture_size: int = 224):
        self.pics = {c: v for c, v in sorted(pics.items()) if v}
        if len(self.pics) < 1:
            raise AvsepError("no pictures to render stills from")
        self.classes = sorted(self.pics)
        self.size, self.picture_size = int(size), int(picture_size)

    def sample(self, rng: np.random.Generator, first: str | None = None):
        """A still; `first` forces the class of player 0 (the others are other classes, drawn at random)."""
        from avsep_cli.corpus.pictures import load_rgba

        n = int(rng.choice(len(PLAYERS_P), p=PLAYERS_P)) + 1
        others = [c for c in self.classes if c != first]
        picks = list(rng.choice(others, size=min(len(others), n - (first is not None)), replace=False))
        cls = ([first] if first is not None else []) + [str(c) for c in picks]
        imgs = [load_rgba(self.pics[c][int(rng.integers(len(self.pics[c])))], self.picture_size) for c in cls]
        frame, boxes, visible = render_still(imgs, self.size, rng)
        return frame, boxes, cls, visible
