"""Follow detected instruments through a video so that each instrument is one identity.

Per sampled frame the detector gives boxes (x1, y1, x2, y2, confidence, class index). ultralytics'
ByteTrack associates them over time (Kalman-predicted boxes matched by IoU, high- then low-confidence
detections), which keeps an identity through a few missed frames. ByteTrack's raw tracks still break
when an instrument is missed for longer than its buffer; afterwards:

1. each track takes the class with the largest summed confidence over its detections;
2. tracks of the same class that do not overlap in time, whose gap is at most `merge_gap` seconds and
   whose boxes at the gap are near each other (centre distance under one box side) are merged;
3. tracks of the same class seen in the same frames at the same place (over their common frames, the
   median share of the smaller box inside the other at least `duplicate_overlap`) are one instrument
   boxed twice (a second, weaker box on part of it that the detector's NMS kept, or two raw tracks
   handing over with a frame in common) and are joined: on a frame both hold, the more confident box
   stays. Without this, one player would count as two of its class, and `Separator`'s guidance by name
   would fall back to crops for both;
4. tracks shorter than `min_duration` seconds are dropped (flickers, false positives).

Everything here works on plain arrays, so ground-truth boxes can replace the detector (tests, research).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


# step 3's threshold, a margin below what duplicates measured: on the val duets of the corpus, the six
# same-class duplicates' median share was 0.87-1.00 (pairs of different classes, never joined, reach 1.00
# too: a small instrument inside a harp's box)
DUPLICATE_OVERLAP = 0.7


@dataclass
class Track:
    """One instrument identity: the sampled frames where it was seen and its box in each."""

    track_id: int
    cls: int  # class index (into the detector's classes)
    frames: list[int] = field(default_factory=list)  # indices into the sampled frame times
    boxes: list[np.ndarray] = field(default_factory=list)  # (4,) x1 y1 x2 y2 pixels, one per frame
    confs: list[float] = field(default_factory=list)
    class_votes: dict[int, float] = field(default_factory=dict)
    # the classifier's class probabilities summed over the detections, each weighted by its confidence
    # (None without a classifier): what `naming.assign` weighs against the sound
    class_probs: np.ndarray | None = None

    def add(self, frame: int, box: np.ndarray, conf: float, cls: int, probs: np.ndarray | None = None) -> None:
        self.frames.append(frame)
        self.boxes.append(np.asarray(box, dtype=np.float64))
        self.confs.append(float(conf))
        self.class_votes[cls] = self.class_votes.get(cls, 0.0) + float(conf)
        if probs is not None:
            p = float(conf) * np.asarray(probs, np.float64)
            self.class_probs = p if self.class_probs is None else self.class_probs + p

    @property
    def first(self) -> int:
        return self.frames[0]

    @property
    def last(self) -> int:
        return self.frames[-1]

    @property
    def mean_conf(self) -> float:
        return float(np.mean(self.confs)) if self.confs else 0.0

    def box_at(self, frame: int) -> np.ndarray:
        """The box at a sampled frame: interpolated between the frames it was seen at, held outside."""
        idx = np.asarray(self.frames)
        boxes = np.stack(self.boxes)
        return np.array([np.interp(frame, idx, boxes[:, j]) for j in range(4)])


class _Detections:
    """The slice of ultralytics' `Boxes` interface ByteTrack reads: conf, cls, xywh, boolean indexing."""

    def __init__(self, rows: np.ndarray):
        self.rows = rows.reshape(-1, 6).astype(np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, mask) -> "_Detections":
        return _Detections(self.rows[mask])

    @property
    def conf(self) -> np.ndarray:
        return self.rows[:, 4]

    @property
    def cls(self) -> np.ndarray:
        return self.rows[:, 5]

    @property
    def xyxy(self) -> np.ndarray:
        return self.rows[:, :4]

    @property
    def xywh(self) -> np.ndarray:
        x1, y1, x2, y2 = self.rows[:, 0], self.rows[:, 1], self.rows[:, 2], self.rows[:, 3]
        return np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)


def bytetrack(conf: float = 0.25, buffer_frames: int = 16):
    """An ultralytics ByteTrack matching boxes by IoU alone, `conf` as the threshold of confident detections
    (half of it for the second, low-confidence association) and a lost-track buffer of `buffer_frames`
    sampled frames."""
    from ultralytics.trackers.byte_tracker import BYTETracker
    from ultralytics.utils import IterableSimpleNamespace

    args = IterableSimpleNamespace(tracker_type="bytetrack", track_high_thresh=conf, track_low_thresh=conf / 2,
                                   new_track_thresh=conf, track_buffer=buffer_frames, match_thresh=0.8,
                                   fuse_score=False)  # cost 1 - IoU: fusing the score (1 - IoU * conf)
    # would stop a weak but well-placed detector's boxes (conf ~0.2) from ever matching their track
    return BYTETracker(args)


class OnlineTracker:
    """Feed one frame's detections at a time (`update`), then `finish()` the identities."""

    def __init__(self, fps: float, conf: float = 0.25, min_duration: float = 1.0, merge_gap: float = 3.0,
                 duplicate_overlap: float = DUPLICATE_OVERLAP):
        self.fps, self.min_duration, self.merge_gap = fps, min_duration, merge_gap
        self.duplicate_overlap = duplicate_overlap
        self.tracker = bytetrack(conf, buffer_frames=max(1, int(round(2.0 * fps))))
        self.raw: dict[int, Track] = {}
        self.frame = 0

    def update(self, dets: np.ndarray, probs: np.ndarray | None = None) -> list[tuple[int, np.ndarray]]:
        """dets (M, 6) x1 y1 x2 y2 conf cls of the next frame (and, with a classifier, (M, classes) class
        probabilities of each) -> [(raw track id, box)] tracked in it."""
        out = []
        if len(dets):
            for row in self.tracker.update(_Detections(np.asarray(dets))):
                k = int(row[7])
                tid, det = int(row[4]), np.asarray(dets)[k]
                # record the detection itself (not the Kalman estimate): crops follow what was seen
                self.raw.setdefault(tid, Track(tid, int(det[5]))).add(self.frame, det[:4], det[4], int(det[5]),
                                                                      None if probs is None else probs[k])
                out.append((tid, det[:4]))
        else:
            self.tracker.update(_Detections(np.zeros((0, 6))))
        self.frame += 1
        return out

    def finish(self) -> tuple[list[Track], dict[int, int]]:
        """-> the identities (ids 1..n in order of appearance) and the map raw track id -> identity id
        (raw tracks dropped as flickers are absent)."""
        return merge_tracks(list(self.raw.values()), self.fps, self.min_duration, self.merge_gap,
                            self.duplicate_overlap)


def overlap_smaller(a: np.ndarray, b: np.ndarray) -> float:
    """The share of the smaller of boxes a, b (x1 y1 x2 y2) that lies inside the other."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(iw * ih / smaller) if smaller > 0 else 0.0


def duplicates(a: Track, b: Track, overlap: float) -> bool:
    """Step 3's test: same class, at least one frame in common, and over the common frames the median
    share of the smaller box inside the other >= `overlap`."""
    if a.cls != b.cls:
        return False
    boxes_b = dict(zip(b.frames, b.boxes))
    shares = [overlap_smaller(box, boxes_b[f]) for f, box in zip(a.frames, a.boxes) if f in boxes_b]
    return bool(shares) and float(np.median(shares)) >= overlap


def _joined(tracks: list[Track]) -> Track:
    """One track of `tracks` (one class; the first the strongest): every frame any of them holds, with
    the most confident box of a frame several hold."""
    best: dict[int, tuple[float, np.ndarray]] = {}
    for t in tracks:
        for f, box, c in zip(t.frames, t.boxes, t.confs):
            if f not in best or c > best[f][0]:
                best[f] = (c, box)
    out = Track(0, tracks[0].cls)
    for f in sorted(best):
        out.add(f, best[f][1], best[f][0], tracks[0].cls)
    return out


def merge_tracks(tracks: list[Track], fps: float, min_duration: float, merge_gap: float,
                 duplicate_overlap: float = DUPLICATE_OVERLAP) -> tuple[list[Track], dict[int, int]]:
    """Steps 1-4 of the module docstring on raw tracks. The raw ids of an identity are listed in the map
    weakest first (`CropStore.view` lets the later of two crops at one time win)."""
    for t in tracks:
        t.cls = max(t.class_votes, key=t.class_votes.get)
    groups: list[list[Track]] = []
    for t in sorted(tracks, key=lambda t: t.first):
        for g in groups:
            tail = g[-1]
            if tail.cls != t.cls or t.first <= tail.last or (t.first - tail.last) / fps > merge_gap:
                continue
            a, b = tail.boxes[-1], t.boxes[0]
            side = max(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1])
            if np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2) <= side:
                g.append(t)
                break
        else:
            groups.append([t])
    # step 3, strongest first (summed confidence): a track joins the first kept one it duplicates
    chains = sorted(((_joined(g), g) for g in groups), key=lambda mg: -sum(mg[0].confs))
    kept: list[tuple[Track, list[list[Track]]]] = []
    for merged, g in chains:
        i = next((i for i, (k, _) in enumerate(kept) if duplicates(k, merged, duplicate_overlap)), None)
        if i is None:
            kept.append((merged, [g]))
        else:
            k, gs = kept[i]
            kept[i] = (_joined([k, merged]), gs + [g])
    identities, raw_to_id = [], {}
    for merged, gs in sorted(kept, key=lambda kg: (kg[0].first, min(t.track_id for g in kg[1] for t in g))):
        if (merged.last - merged.first + 1) / fps < min_duration:
            continue
        merged.track_id = len(identities) + 1
        identities.append(merged)
        for g in reversed(gs):  # weakest first
            for t in g:
                raw_to_id[t.track_id] = merged.track_id
        probs = [t.class_probs for g in gs for t in g if t.class_probs is not None]
        merged.class_probs = np.sum(probs, axis=0) if probs else None
    return identities, raw_to_id
