"""Name the tracked players by what the picture shows *and* what the sound says (ours, not the papers').

The crop classifier (`classifier.py`) names each detected instrument; a track's name is its frames' vote.
On picture families it never saw, the classifier is sometimes confidently wrong, and a player separated by
the wrong name (its class prototype, `separator.GUIDES`) gets the wrong stem. The audio tagger
(`models/audio_tagger.py`) gives the probability that each class sounds in the clip. Naming
"audio-visual" picks, over every way of giving each track one of its `CANDIDATES` most probable classes
by the picture, the assignment that maximises

    sum over tracks of log p_picture(track's class)
    + AUDIO_WEIGHT * sum over classes of log p_audio(class sounds)      for the classes assigned,
                                          log (1 - p_audio(class sounds)) for the others,

i.e. the picture's evidence and the sound's evidence that exactly the assigned classes play. A sure
picture keeps its name unless the sound strongly says otherwise; an uncertain one follows the sound.
The sound never gives a class to more tracks than the picture does (at least one): a false-positive
track would otherwise take the name of a class already playing (it costs the sound nothing), and
players who share a name lose their guidance by name (`separator.GUIDES`).
The audio probabilities are the mean over the tagger's windows (`dsp.SEGMENT` samples, back to back)
that fall within the tracks' common span.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Iterable, Sequence

import numpy as np
import torch

from avsep_cli import dsp
from avsep_cli.errors import AvsepError

NAMINGS = ("auto", "visual", "audio-visual")
# How much the sound counts against the picture; chosen on the val duets (README, "Naming by picture and
# sound"), never on test.
AUDIO_WEIGHT = 1.0
CANDIDATES = 3  # classes per track considered (its most probable by the picture)
EXHAUSTIVE = 6  # up to this many tracks every assignment is scored; beyond, one track at a time
EPS = 1e-4


class AudioTagger:
    """Class presence probabilities of audio. `model`: an `AudioTagger` network whose `classes` name its
    outputs."""

    def __init__(self, model: torch.nn.Module, *, name: str = "", sha256: str = "", device="cpu"):
        classes = tuple(getattr(model, "classes", ()) or ())
        if len(classes) != model.fc.out_features:
            raise AvsepError(f"audio tagger {name}: {model.fc.out_features} outputs but {len(classes)} class names")
        self.model = model.eval().to(device)
        self.classes, self.name, self.sha256, self.device = classes, name, sha256, torch.device(device)

    @classmethod
    def load(cls, spec: str, device="cpu") -> "AudioTagger":
        """Shipped tagger weights by name, or a file (safetensors or a training checkpoint)."""
        from avsep_cli import registry

        res = registry.resolve(spec, expect_model="audio-tagger")
        return cls(registry.build(res, device), name=res.name, sha256=res.sha256, device=device)

    @classmethod
    def shipped(cls, device="cpu") -> "AudioTagger | None":
        """The shipped default tagger, or None where none is shipped."""
        from avsep_cli import registry

        e = registry.default_for("audio-tagger")
        return cls.load(e["name"], device) if e else None

    def info(self) -> dict:
        return {"weights": self.name, "sha256": self.sha256}

    @torch.inference_mode()
    def probs(self, windows: np.ndarray) -> np.ndarray:
        """(N, L) float32 windows at dsp.SAMPLE_RATE -> (N, classes) presence probabilities."""
        from avsep_cli.models.audio_tagger import tagger_input

        if len(windows) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        x = tagger_input(torch.from_numpy(np.asarray(windows, np.float32))).to(self.device)
        return torch.sigmoid(self.model(x).float()).cpu().numpy()


def tag_stream(tagger: AudioTagger, chunks: Iterable[np.ndarray], batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Mono chunks at dsp.SAMPLE_RATE -> window start times (N,) in seconds and their presence probabilities
    (N, classes): back-to-back windows of dsp.SEGMENT samples; a last part shorter than a window is tagged
    zero-padded when it holds at least half a window, or when it is all there is."""
    L = dsp.SEGMENT
    buf = np.zeros(0, np.float32)
    starts: list[int] = []
    pending: list[np.ndarray] = []
    out: list[np.ndarray] = []
    pos = 0
    for chunk in chunks:
        buf = np.concatenate([buf, np.asarray(chunk, np.float32)])
        while len(buf) >= L:
            pending.append(buf[:L])
            starts.append(pos)
            buf, pos = buf[L:], pos + L
            if len(pending) == batch:
                out.append(tagger.probs(np.stack(pending)))
                pending = []
    if len(buf) and (len(buf) >= L // 2 or not starts):
        pending.append(np.pad(buf, (0, L - len(buf))))
        starts.append(pos)
    if pending:
        out.append(tagger.probs(np.stack(pending)))
    probs = np.concatenate(out) if out else np.zeros((0, len(tagger.classes)), np.float32)
    return np.asarray(starts, np.float64) / dsp.SAMPLE_RATE, probs


def presence(starts: np.ndarray, probs: np.ndarray, span: tuple[float, float]) -> np.ndarray:
    """The mean presence over the windows that overlap `span` (seconds), over all windows where none does."""
    if len(probs) == 0:
        raise ValueError("no tagged windows")
    ends = starts + dsp.SEGMENT / dsp.SAMPLE_RATE
    inside = (starts < span[1]) & (ends > span[0])
    return probs[inside].mean(0) if inside.any() else probs.mean(0)


def heard(tagger: AudioTagger, chunks: Iterable[np.ndarray], span: tuple[float, float],
          classes: Sequence[str]) -> np.ndarray:
    """Mono chunks at dsp.SAMPLE_RATE -> (len(classes),) presence of each of `classes` over `span` (seconds;
    `presence`), 0.5 (no evidence either way) for a class the tagger does not know."""
    tagged = presence(*tag_stream(tagger, chunks), span)
    return np.array([tagged[tagger.classes.index(c)] if c in tagger.classes else 0.5 for c in classes])


def tracks_span(tracks: Sequence, fps: float) -> tuple[float, float]:
    """Seconds from the first sighting of any of `tracks` (tracking.Track) to the end of the last one."""
    return min(t.first for t in tracks) / fps, (max(t.last for t in tracks) + 1) / fps


def assign(picture: np.ndarray, audio: np.ndarray, weight: float = AUDIO_WEIGHT,
           candidates: int = CANDIDATES, names: Sequence[int] | None = None) -> list[int]:
    """picture (T, C): each track's class probabilities by the picture (rows summing to 1); audio (C,): each
    class' presence probability -> one class index per track (the module docstring's assignment). `names`:
    the picture's own names (tracking's vote; default: each row's most probable class), each a candidate of
    its track besides the `candidates` most probable; with weight 0 they are the answer."""
    picture = np.asarray(picture, np.float64)
    audio = np.clip(np.asarray(audio, np.float64), EPS, 1 - EPS)
    if picture.ndim != 2 or audio.shape != picture.shape[1:]:
        raise ValueError(f"picture (T, C) and audio (C,): got {picture.shape} and {audio.shape}")
    if len(picture) == 0:
        return []
    lp = np.log(np.clip(picture, EPS, None))
    on, off = np.log(audio), np.log1p(-audio)
    base = float(off.sum())

    def score(cls: Sequence[int]) -> float:
        present = set(cls)
        return (sum(lp[t, c] for t, c in enumerate(cls))
                + weight * (base + sum(on[c] - off[c] for c in present)))

    top = [list(np.argsort(-lp[t], kind="stable")[:candidates]) for t in range(len(lp))]
    best = [int(c) for c in names] if names is not None else [row[0] for row in top]
    if len(best) != len(lp):
        raise ValueError(f"{len(best)} names for {len(lp)} tracks")
    if weight == 0:
        return best
    top = [row if c in row else [c, *row] for c, row in zip(best, top)]
    most = Counter(best)  # how many tracks the picture gives each class

    def allowed(cls: Sequence[int]) -> bool:
        return all(n <= max(1, most[c]) for c, n in Counter(cls).items())

    if len(lp) <= EXHAUSTIVE:
        best = list(max(filter(allowed, itertools.product(*top)), key=score))
    else:  # coordinate ascent from the picture's names
        improved = True
        while improved:
            improved = False
            for t in range(len(lp)):
                for c in top[t]:
                    trial = best[:t] + [c] + best[t + 1:]
                    if allowed(trial) and score(trial) > score(best) + 1e-12:
                        best, improved = trial, True
    return [int(c) for c in best]


def picture_probs(class_probs: Sequence[np.ndarray | None], n_classes: int) -> np.ndarray:
    """Per track, its summed (confidence-weighted) classifier probabilities -> rows summing to 1 (uniform
    for a track without any)."""
    rows = []
    for p in class_probs:
        p = np.zeros(n_classes) if p is None else np.asarray(p, np.float64)
        total = float(p.sum())
        rows.append(p / total if total > 0 and math.isfinite(total) else np.full(n_classes, 1.0 / n_classes))
    return np.stack(rows) if rows else np.zeros((0, n_classes))
