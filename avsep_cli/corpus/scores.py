"""Notes from real scores for the corpus: folk tunes for solos, two parts of one chorale for duets.

The notes come from music21's bundled corpus (BSD-3; the works are public domain): single-line tunes of
the Essen and O'Neill folk collections for solos, the four voices of Bach's chorales for duets. Each
score is parsed once, flattened with our own tie merging (10-20x faster than ``stripTies()``, same
notes) and cached as JSON in a cache folder, so clip generation never parses a score. Pieces come in a
fixed order (a hash of their name), independent of the corpus seed, so the cache can be shared between
corpora and the train/val/test assignment of a piece never changes. When music21 is missing, a
procedural phrase generator stands in (and the recipe records it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avsep_cli.fsio import atomic_path

log = logging.getLogger("avsep")

CACHE_VERSION = 1
MIN_NOTES = 16          # shorter tunes cannot fill a six-second window without looping at once
MAX_SPAN = 26           # semitones; wider "single lines" are usually two voices merged


@dataclass(frozen=True)
class Piece:
    id: str                                    # stable id, e.g. "essen:altdeu10:12", "bach:bwv10.7"
    title: str
    source: str                                # where in the music21 corpus
    parts: tuple[tuple[tuple[float, float, int], ...], ...]  # per part: (onset_q, duration_q, midi)
    part_names: tuple[str, ...]

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "source": self.source,
                "parts": [[list(n) for n in p] for p in self.parts], "part_names": list(self.part_names)}

    @staticmethod
    def from_json(d: dict) -> "Piece":
        return Piece(d["id"], d["title"], d["source"],
                     tuple(tuple((float(a), float(b), int(c)) for a, b, c in p) for p in d["parts"]),
                     tuple(d["part_names"]))


def piece_split(index: int) -> str:
    """Split of the piece at position `index` of its pool: 8 train, 1 val, 1 test in every 10."""
    return {8: "val", 9: "test"}.get(index % 10, "train")


def _order(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def _line(stream, *, top: bool) -> list[tuple[float, float, int]]:
    """Notes of a (part) stream as (onset, duration, pitch) in quarters, ties merged; chords give their
    top (or bottom) pitch; grace notes (duration 0) dropped."""
    flat = stream.flatten()
    out: list[list] = []
    for n in flat.notes:
        ql = float(n.quarterLength)
        if ql <= 0:
            continue
        pitches = [p.midi for p in n.pitches]
        if not pitches:
            continue
        pitch = max(pitches) if top else min(pitches)
        onset = float(n.offset)
        tie = n.tie.type if n.tie is not None else None
        if tie in ("stop", "continue") and out and out[-1][2] == pitch and abs(out[-1][0] + out[-1][1] - onset) < 1e-6:
            out[-1][1] += ql
            continue
        if out and onset < out[-1][0] + out[-1][1] - 1e-6:  # overlapping voice in a "single line": cut
            out[-1][1] = max(onset - out[-1][0], 1e-3)
            if onset <= out[-1][0] + 1e-6:
                out.pop()
        out.append([onset, ql, pitch])
    return [(round(a, 4), round(b, 4), int(c)) for a, b, c in out]


def _usable(notes: list) -> bool:
    if len(notes) < MIN_NOTES:
        return False
    pitches = [n[2] for n in notes]
    return max(pitches) - min(pitches) <= MAX_SPAN


def _folk_candidates() -> list[tuple[str, int, str]]:
    """(corpus file, tune number, abc text) for every tune of the Essen and O'Neill collections, in
    the fixed pool order."""
    from music21 import corpus

    cands = []
    for p in corpus.getPaths(fileExtensions=("abc",)):
        p = Path(p)
        coll = p.parent.name
        if coll not in ("essenFolksong", "oneills1850"):
            continue
        text = p.read_text(encoding="latin-1")
        for chunk in re.split(r"\n(?=X:)", "\n" + text):
            m = re.match(r"\s*X:\s*(\d+)", chunk)
            if m:
                cands.append((f"{coll}/{p.name}", int(m.group(1)), chunk.strip() + "\n"))
    cands.sort(key=lambda c: _order(f"{c[0]}#{c[1]}"))
    return cands


def _parse_folk(cand) -> Piece | None:
    from music21 import converter

    rel, number, text = cand
    try:
        s = converter.parse(text, format="abc")
    except Exception:
        return None
    parts = getattr(s, "parts", None)
    notes = _line(parts[0] if parts is not None and len(parts) else s, top=True)
    if not _usable(notes):
        return None
    title = (s.metadata.title if s.metadata is not None and s.metadata.title else "") or f"tune {number}"
    stem = rel.split("/")[0].replace("Folksong", "").replace("1850", "")
    return Piece(f"{stem}:{Path(rel).stem}:{number}", title, f"music21 corpus {rel} X:{number}",
                 (tuple(notes),), ("melody",))


def _chorale_candidates() -> list[str]:
    from music21 import corpus

    names = [Path(p) for p in corpus.getComposer("bach")]
    names = [p for p in names if p.suffix in (".mxl", ".xml", ".musicxml") and p.name.startswith("bwv")]
    return sorted((str(p) for p in names), key=lambda p: _order(Path(p).name))


def _parse_chorale(path: str) -> Piece | None:
    from music21 import converter

    try:
        s = converter.parse(path)
    except Exception:
        return None
    parts, names = [], []
    for i, part in enumerate(s.parts):
        notes = _line(part, top=True)
        if len(notes) >= MIN_NOTES:
            parts.append(tuple(notes))
            names.append(part.partName or f"part {i + 1}")
    if len(parts) < 2:
        return None
    stem = Path(path).name.rsplit(".", 1)[0]
    title = (s.metadata.title if s.metadata is not None and s.metadata.title else "") or stem
    return Piece(f"bach:{stem}", title, f"music21 corpus bach/{Path(path).name}", tuple(parts), tuple(names))


def music21_available() -> bool:
    try:
        import music21  # noqa: F401
        return True
    except Exception:
        return False


def load_pool(kind: str, n: int, cache_dir: Path) -> list[Piece]:
    """The first `n` usable pieces of the solo ("folk") or duet ("chorale") pool, parsed at most once
    and cached in `cache_dir/scores-v1-<kind>.json`. Falls back to procedural phrases without music21."""
    if not music21_available():
        log.warning("music21 is not installed: using procedural phrases instead of real scores "
                    "(pip install music21)")
        return [procedural_piece(kind, i) for i in range(n)]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"scores-v{CACHE_VERSION}-{kind}.json"
    data = {"pieces": [], "next": 0}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    pieces = [Piece.from_json(d) for d in data["pieces"]]
    if len(pieces) < n:
        os.environ.setdefault("MUSIC21_CACHE_DIR", str(cache_dir))
        cands = _folk_candidates() if kind == "folk" else _chorale_candidates()
        parse = _parse_folk if kind == "folk" else _parse_chorale
        i = int(data["next"])
        while len(pieces) < n and i < len(cands):
            p = parse(cands[i])
            i += 1
            if p is not None:
                pieces.append(p)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"pieces": [p.to_json() for p in pieces], "next": i}))
    return pieces[:n]


def procedural_piece(kind: str, index: int) -> Piece:
    """A phrase in a major or minor key: stepwise random walk on the scale in 2- and 4-bar cells
    (fallback when music21 is unavailable). Duets add a lower part moving in consonant intervals."""
    rng = np.random.default_rng([7919, index, 0 if kind == "folk" else 1])
    scale = [0, 2, 4, 5, 7, 9, 11] if rng.random() < 0.6 else [0, 2, 3, 5, 7, 8, 10]
    tonic = 60 + int(rng.integers(-5, 7))
    rhythms = [[1, 1, 1, 1], [1.5, 0.5, 1, 1], [0.5, 0.5, 1, 2], [2, 1, 1], [1, 0.5, 0.5, 2], [3, 1]]
    deg, t, melody = 0, 0.0, []
    while t < 32:
        for d in rhythms[int(rng.integers(len(rhythms)))]:
            deg = int(np.clip(deg + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3]), -3, 10))
            pitch = tonic + 12 * (deg // 7) + scale[deg % 7]
            melody.append((t, float(d), pitch))
            t += d
    parts = [tuple(melody)]
    names = ["melody"]
    if kind != "folk":
        bass = tuple((a, b, p - int(rng.choice([9, 12, 15, 16]))) for a, b, p in melody)
        parts.append(bass)
        names.append("bass")
    return Piece(f"procedural:{kind}:{index}", f"procedural phrase {index}", "avsep procedural phrase",
                 tuple(parts), tuple(names))
