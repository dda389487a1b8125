"""Read a corpus folder in the MUSIC layout: the synthetic corpus of ``avsep data synth`` or downloaded
MUSIC videos, through one reader.

The layout is ``ROOT/solo/<class>/<id>.<ext>`` and ``ROOT/duet/<classA>+<classB>/<id>.<ext>`` (MUSIC's
own duet folder names, with a space between the classes, are accepted too). Beside a synthetic clip
sit its ground-truth stems ``<id>.<class>.flac`` and its JSON sidecar ``<id>.json``; a downloaded MUSIC
folder has videos only, and then a clip has no stems and no sidecar. Splits come from
``ROOT/splits/<split>.csv`` when present. A synthetic clip counts only once its sidecar exists (it is
written last), so a corpus that is still being generated reads as the clips finished so far.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from avsep_cli.errors import AvsepError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
KINDS = ("solo", "duet")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Clip:
    id: str
    kind: str                     # "solo" | "duet"
    classes: tuple[str, ...]      # sorted; one for a solo
    video: Path
    stems: dict[str, Path]        # class -> ground-truth stem (empty for MUSIC videos)
    sidecar: Path | None
    split: str | None


def _duet_classes(folder: str) -> tuple[str, ...]:
    for sep in ("+", " "):
        if sep in folder:
            return tuple(sorted(p for p in folder.split(sep) if p))
    return (folder,)


class Corpus:
    """The clips of one corpus folder. `recipe` is the synth recipe (None for MUSIC downloads)."""

    def __init__(self, root: Path, clips: list[Clip], recipe: dict | None):
        self.root = root
        self._clips = clips
        self.recipe = recipe
        if recipe and recipe.get("classes"):
            self.classes: tuple[str, ...] = tuple(recipe["classes"])
        else:
            self.classes = tuple(sorted({c for clip in clips for c in clip.classes}))

    def clips(self, split: str | None = None, kind: str | None = None) -> list[Clip]:
        if split is not None and split not in SPLITS:
            raise AvsepError(f"unknown split {split!r} (train, val or test)")
        if kind is not None and kind not in KINDS:
            raise AvsepError(f"unknown clip kind {kind!r} (solo or duet)")
        return [c for c in self._clips if (split is None or c.split == split) and (kind is None or c.kind == kind)]

    def __len__(self) -> int:
        return len(self._clips)

    def __repr__(self) -> str:
        return f"Corpus({self.root}, {len(self._clips)} clips, {len(self.classes)} classes)"


def _read_splits(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for split in SPLITS:
        f = root / "splits" / f"{split}.csv"
        if f.is_file():
            with open(f, newline="") as fh:
                for row in csv.DictReader(fh):
                    key = row.get("video") or row.get("id")
                    if key:
                        out[key] = split
    return out


def open_corpus(root: str | Path) -> Corpus:
    """Index the clips under `root`; raises AvsepError when it is neither a synth corpus nor a MUSIC
    layout (no solo/ or duet/ folder with videos)."""
    root = Path(root)
    if not root.is_dir():
        raise AvsepError(f"not a corpus or MUSIC layout: {root} is not a folder")
    recipe = None
    if (root / "corpus.json").is_file():
        try:
            recipe = json.loads((root / "corpus.json").read_text())
        except (OSError, ValueError) as e:
            raise AvsepError(f"not a corpus or MUSIC layout: {root / 'corpus.json'} is unreadable ({e})") from None
    splits = _read_splits(root)
    clips: list[Clip] = []
    for kind in KINDS:
        base = root / kind
        if not base.is_dir():
            continue
        for folder in sorted(p for p in base.iterdir() if p.is_dir()):
            classes = (folder.name,) if kind == "solo" else _duet_classes(folder.name)
            for video in sorted(folder.iterdir()):
                if video.suffix.lower() not in VIDEO_SUFFIXES or video.name.startswith("."):
                    continue
                sidecar = video.with_suffix(".json")
                has_sidecar = sidecar.is_file()
                if recipe is not None and not has_sidecar:
                    continue  # synth clip not finished yet
                stems = {c: video.with_name(f"{video.stem}.{c}.flac") for c in classes}
                stems = {c: p for c, p in stems.items() if p.is_file()}
                rel = video.relative_to(root).as_posix()
                split = splits.get(rel) or splits.get(video.stem)
                clips.append(Clip(video.stem, kind, classes, video, stems, sidecar if has_sidecar else None, split))
    if not clips and recipe is None:
        raise AvsepError(f"not a corpus or MUSIC layout: {root} has no videos under solo/<class>/ or "
                         f"duet/<classA>+<classB>/")
    return Corpus(root, clips, recipe)
