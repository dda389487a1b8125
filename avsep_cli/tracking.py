"""Follow detected instruments through a video so that each instrument is one identity.

Per sampled frame the detector gives boxes (x1, y1, x2, y2, confidence, class index). ultralytics'
ByteTrack associates them over time (Kalman-predicted boxes matched by IoU, high- then low-confidence
detections), which keeps an identity through a few missed frames. ByteTrack's raw tracks still break
when an instrument is missed for longer than its buffer; afterwards:

1. each track takes the class with the largest summed confidence over its detections;
2. tracks of the same class that do not overlap in time, whose gap is at most `merge_gap` seconds and
   whose boxes at the gap are near each other (centre distance under one box side) are merged;
3. tracks shorter than `min_duration` seconds are dropped (flickers, false positives).

Everything here works on plain arrays, so ground-truth boxes can replace the detector (tests, research).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Track:
    """One instrument identity: the sampled frames where it was seen and its box in each."""

    track_id: int
    cls: int  # class index (into the detector's classes)
    frames: list[int] = field(default_factory=list)  # indices into the sampled frame times
    boxes: list[np.ndarray] = field(default_factory=list)  # (4,) x1 y1 x2 y2 pixels, one per frame
    confs: list[float] = field(default_factory=list)
    class_votes: dict[int, float] = field(default_factory=dict)

    def add(self, frame: int, box: np.ndarray, conf: float, cls: int) -> None:
        self.frames.append(frame)
        self.boxes.append(np.asarray(box, dtype=np.float64))
        self.confs.append(float(conf))
        self.class_votes[cls] = self.class_votes.get(cls, 0.0) + float(conf)

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

    def __init__(self, fps: float, conf: float = 0.25, min_duration: float = 1.0, merge_gap: float = 3.0):
        self.fps, self.min_duration, self.merge_gap = fps, min_duration, merge_gap
        self.tracker = bytetrack(conf, buffer_frames=max(1, int(round(2.0 * fps))))
        self.raw: dict[int, Track] = {}
        self.frame = 0

    def update(self, dets: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """dets (M, 6) x1 y1 x2 y2 conf cls of the next frame -> [(raw track id, box)] tracked in it."""
        out = []
        if len(dets):
            for row in self.tracker.update(_Detections(np.asarray(dets))):
                tid, det = int(row[4]), np.asarray(dets)[int(row[7])]
                # record the detection itself (not the Kalman estimate): crops follow what was seen
                self.raw.setdefault(tid, Track(tid, int(det[5]))).add(self.frame, det[:4], det[4], int(det[5]))
                out.append((tid, det[:4]))
        else:
            self.tracker.update(_Detections(np.zeros((0, 6))))
        self.frame += 1
        return out

    def finish(self) -> tuple[list[Track], dict[int, int]]:
        """-> the identities (ids 1..n in order of appearance) and the map raw track id -> identity id
        (raw tracks dropped as flickers are absent)."""
        return merge_tracks(list(self.raw.values()), self.fps, self.min_duration, self.merge_gap)


def merge_tracks(tracks: list[Track], fps: float, min_duration: float, merge_gap: float) -> tuple[list[Track], dict[int, int]]:
    """Steps 1-3 of the module docstring on raw tracks."""
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
    identities, raw_to_id = [], {}
    for g in groups:
        merged = Track(0, g[0].cls)
        for t in g:
            for f, box, c in zip(t.frames, t.boxes, t.confs):
                merged.add(f, box, c, t.cls)
        if (merged.last - merged.first + 1) / fps < min_duration:
            continue
        merged.track_id = len(identities) + 1
        identities.append(merged)
        for t in g:
            raw_to_id[t.track_id] = merged.track_id
    return identities, raw_to_id
