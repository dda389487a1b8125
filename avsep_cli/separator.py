"""The separation pipeline: a video in, the sound of each visible instrument out.

`Separator(method, weights, detector).separate_file(video, out_dir)` takes a video through four stages,
each streamed, so memory does not grow with the video's length: decode -> scan -> separate -> write.

1. **Decode** (`media`): frames at `detect_fps`, and the audio as the models hear it, 11,025 Hz mono.
2. **Scan** (frames): detect instruments, track them (`tracking`), and keep, on a coarser guidance grid
   (`guide_fps`), a square padded crop of every tracked instrument plus a square whole-frame view (the
   fallback when nothing is detected). Only crops are kept, never frames, and they wait in a temporary
   folder (`CropStore`), not in memory. Each track is named by the crop classifier's vote or, with
   `naming` "audio-visual" (and "auto" where an audio tagger is shipped), by the classifier's
   probabilities weighed against which classes the audio tagger hears (`naming`; one more pass over the
   audio, tagged window by window).
3. **Separate** (audio): the mixture is cut into windows of the method's training length overlapping by
   half (`OverlapAdd`); each window is separated for every identity visible in it (all of them with
   `full_length`), guided by that identity's crops at the window's frame times (seconds -> guidance-grid
   index; an identity not visible then uses its nearest crop in time), or, with `guide` "name" or "auto"
   (the default; see GUIDES), by the class prototype of the name its track was given (`prototypes`);
   windows go through the model in batches. What comes out per window is the method's estimates at
   11,025 Hz, or, for full-band output, its masks; with `masks` "joint" (the default) the soft masks of the
   identities visible in a window are first shared out among them by the Wiener rule (`dsp.joint_masks`),
   so their stems add up to the window ("own": each identity's mask by its method's rule, the papers').
4. **Write** (`outputs`): the windows are merged by overlap-add with a triangle window (weights
   min(n+1, L-n), normalised by their sum, so an identity model gives back the mixture exactly), at the
   models' rate or, full band, with the masks applied to every channel of the input at its own rate;
   each stem is kept only over the span where its identity was seen (50 ms fades; `full_length` keeps
   all of it) and the optional residual is the input minus the stems. Samples are written as soon as no
   later window can touch them, into a staging folder committed with the manifest; on request a video
   per identity with only its sound, and spectrogram/mask plots.

With `out_dir=None` the stems are returned as arrays instead (the library use); `boxes` injects known
boxes (e.g. a corpus sidecar) in place of the detector.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import math
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from avsep_cli import dsp, fsio, media, outputs, registry
from avsep_cli.boxes import validate_boxes
from avsep_cli.datasets import square_crop
from avsep_cli.errors import AvsepError, OutputError
from avsep_cli.naming import NAMINGS
from avsep_cli.tracking import OnlineTracker, Track

log = logging.getLogger(__name__)

SEPARABLE = ("avpc", "sop", "ialcms", "tiny")
# What guides each tracked player: its crops (the methods' own guidance), or the class prototype of the name
# its track was given (`name`; players who share a class keep their crops). `auto`, the default: by name
# where the weights' trunk has shipped class prototypes, else crops. End to end on the val duets (README), by
# name AVPC's stems gained 3.0 dB [0.9, 5.2] over its crops (session 12), supervised IAL-CMS's 1.8 [0.7, 3.2]
# and unsupervised IAL-CMS's 1.3 [-0.0, 3.2] (session 15; in session 12, before tracking joined a player
# boxed twice and with earlier weights, IAL-CMS's gain was 0.6 [-0.6, 2.4] and `auto` kept its crops).
GUIDES = ("auto", "crops", "name")
FADE_S = 0.05


# --- overlap-add ------------------------------------------------------------------------------------


class OverlapAdd:
    """Streaming overlap-add of windowed estimates (C channels) with a triangle window (`dsp.triangle`).

    `windows(chunk)` takes mixture samples as they are decoded and yields (start, window) pairs of length
    L every `hop` samples; `end()` yields the one window that covers the tail: flush with the end of the
    input, so it holds real samples only (zero-padded only when the whole input is shorter than L; a
    half-empty window separates worse). `add(start, est)` accumulates an estimate (C, L); `pop(upto)`
    returns the finished samples before `upto` (C, n) and forgets them; no window yet to come reaches
    before `settled`."""

    def __init__(self, length: int, hop: int, channels: int):
        self.L, self.hop, self.C = length, hop, channels
        self.w = dsp.triangle(length)
        self.mix = np.zeros(0, np.float32)  # undelivered-window mixture samples from `mix_start`
        self.mix_start = 0
        self.next_start = 0
        self.total = 0  # samples seen so far
        self.sum = dsp.WeightedSum(channels)

    def _window(self, start: int) -> np.ndarray:
        off = start - self.mix_start
        win = self.mix[off : off + self.L]
        return np.pad(win, (0, self.L - len(win))) if len(win) < self.L else win.copy()

    @property
    def settled(self) -> int:
        """Samples before this index get no further window (the tail window starts after the last full one)."""
        return max(0, self.next_start - self.hop + 1)

    def _trim(self) -> None:
        keep_from = max(0, self.next_start - self.hop)  # the tail window may start anywhere after the last one
        drop = keep_from - self.mix_start
        if drop > 0:
            self.mix, self.mix_start = self.mix[drop:], keep_from

    def windows(self, chunk: np.ndarray):
        self.mix = np.concatenate([self.mix, chunk.astype(np.float32)])
        self.total += len(chunk)
        while self.next_start + self.L <= self.total:
            yield self.next_start, self._window(self.next_start)
            self.next_start += self.hop
            self._trim()

    def end(self):
        """The window covering the samples after the last full window, if any."""
        if self.total == 0:
            return
        if self.next_start == 0:  # shorter than one window: zero-padded
            start = 0
        elif self.next_start - self.hop + self.L < self.total:
            start = self.total - self.L
        else:
            return
        yield start, self._window(start)
        self.next_start = self.total  # nothing further

    def add(self, start: int, est: np.ndarray) -> None:
        self.sum.add(start, est[..., : min(self.L, self.total - start)], self.w[: min(self.L, self.total - start)])

    def pop(self, upto: int) -> np.ndarray:
        """Finished samples [start, upto) as (C, n), normalised by the window sum."""
        return self.sum.pop(min(upto, self.total))


# --- crops on disk ----------------------------------------------------------------------------------


class CropStore:
    """Guidance crops kept in a temporary folder and indexed in memory, so a long video does not fill
    the memory with pictures (a 224 px crop is 150 kB; an hour at 1 crop/s per instrument is ~0.5 GB)."""

    def __init__(self):
        try:
            self.dir = Path(tempfile.mkdtemp(prefix="avsep-crops-"))
        except OSError as e:
            raise OutputError(f"cannot make a temporary folder for guidance crops in {tempfile.gettempdir()} "
                              f"(TMPDIR): {e.strerror or e}") from None
        self.index: dict[int, dict[int, Path]] = {}
        self.best: dict[int, tuple[float, int, Path]] = {}  # owner -> (confidence, grid index, path)

    def _save(self, name: str, crop: np.ndarray) -> Path:
        path = self.dir / name
        try:
            np.save(path, crop)
        except OSError as e:
            raise OutputError(fsio.describe_write_error(e, self.dir, what="guidance crops to ")
                              + " (set TMPDIR to a folder with space)") from None
        return path

    def put(self, owner: int, g: int, crop: np.ndarray) -> None:
        self.index.setdefault(owner, {})[g] = self._save(f"{owner}-{g}.npy", crop)
        if owner in self.best:  # a guidance frame caught it after all
            self.best.pop(owner)[2].unlink(missing_ok=True)

    def offer_best(self, owner: int, g: int, conf: float, crop_fn: Callable[[], np.ndarray]) -> None:
        """While no guidance frame has caught `owner`, keep its most confident crop from the other detection
        frames (at grid position `g`, rounded): a short track between guidance frames still gets guidance."""
        if owner in self.index or (owner in self.best and self.best[owner][0] >= conf):
            return
        self.best[owner] = (conf, g, self._save(f"{owner}-best.npy", crop_fn()))

    def view(self, owners: list[int]) -> "CropView":
        merged: dict[int, Path] = {}
        for o in owners:
            merged.update(self.index.get(o, {}))
        if not merged:  # seen only between guidance frames: its best crop, at the grid index where it was seen
            best = max((self.best[o] for o in owners if o in self.best), default=None, key=lambda b: b[0])
            if best is not None:
                merged[best[1]] = best[2]
        return CropView(merged)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class CropView(Mapping):
    """grid index -> crop (S, S, 3) uint8 of one identity, read from disk on access."""

    def __init__(self, paths: dict[int, Path]):
        self.paths = paths

    def __getitem__(self, g: int) -> np.ndarray:
        return np.load(self.paths[g])

    def __iter__(self) -> Iterator[int]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


WHOLE = -1  # the CropStore owner of the whole-frame views


# --- injected boxes ---------------------------------------------------------------------------------


class InjectedBoxes:
    """Known boxes in place of a detector: a corpus sidecar (`players` with per-frame boxes at its `fps`)
    or {"fps": f, "players": [{"class": name, "boxes": [[x1, y1, x2, y2] | null, ...]}]}."""

    def __init__(self, source: str | Path | dict, classes: tuple[str, ...] | None = None):
        data = source if isinstance(source, dict) else self._read(Path(source))
        validate_boxes(data, source)
        try:
            self.fps = float(data.get("fps", 8.0))
            self.players = [(p["class"], p["boxes"]) for p in data["players"]]
        except (KeyError, TypeError, AttributeError):
            raise AvsepError(f"{source}: boxes need 'players', each with 'class' and 'boxes'") from None
        self.classes = tuple(classes or sorted({c for c, _ in self.players}))
        self.ignored: list[str] = sorted({c for c, _ in self.players} - set(self.classes))
        self.name, self.sha256 = "boxes", None

    def info(self) -> dict:
        return {"weights": "boxes given by the caller", "sha256": None, "ignored": self.ignored}

    @staticmethod
    def _read(path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise AvsepError(f"cannot read boxes from {path}: {e}") from None

    def at(self, times: list[float]) -> list[np.ndarray]:
        out = []
        for t in times:
            rows = []
            for cls, boxes in self.players:
                i = int(np.floor(t * self.fps + 1e-6))
                if cls in self.classes and 0 <= i < len(boxes) and boxes[i] is not None:
                    rows.append([*boxes[i], 1.0, self.classes.index(cls)])
            out.append(np.asarray(rows, dtype=np.float64).reshape(-1, 6))
        return out


# --- results ----------------------------------------------------------------------------------------


@dataclass
class Identity:
    name: str  # file stem, <class>_<k>
    cls: str
    track_id: int
    mean_conf: float
    start: float  # seconds, first and last sighting (+ one frame)
    end: float
    boxes: list[dict]  # [{"t": seconds, "box": [x1, y1, x2, y2]}] at the detection rate
    file: str | None = None
    guidance: str = "crops"  # crops of the tracked player, "name" (the class prototype) or "whole-frame"


@dataclass
class SeparationResult:
    input: str
    method: str
    sample_rate: int  # of the stems: the models' 11025, or the input's own (full band)
    duration: float
    identities: list[Identity]
    audio_stream: int | None = None  # which of the input's audio streams was separated (0-based)
    # name -> (n,) at the models' rate, (C, n) at the input's (in-memory use only)
    stems: dict[str, np.ndarray] = field(default_factory=dict)
    residual: np.ndarray | None = None
    channels: int = 1
    files: list[Path] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    naming: dict = field(default_factory=dict)  # how the players were named (`Separator._name_by_sound`)


class _Timer:
    def __init__(self):
        self.t: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.t[stage] = self.t.get(stage, 0.0) + time.perf_counter() - t0


# --- the separator -----------------------------------------------------------------------------------


class Separator:
    """Video -> one stem per visible instrument. `method`: avpc, sop, ialcms (or tiny, a test model);
    `weights`: a shipped name or a file (None: the method's shipped default); `detector`: a
    `detection.Detector`, a shipped name or a weights file, "auto" (the shipped default, if any) or None
    (every call then passes `boxes`); `precision`: "fp32" or "bf16", what the method's network runs in
    (bfloat16 autocast; the signal path and the masks stay float32)."""

    def __init__(self, method: str = "avpc", weights: str | Path | None = None, detector="auto", *,
                 device: str | torch.device = "cpu", conf: float = 0.1, detect_fps: float = 4.0,
                 guide_fps: float = 1.0, min_duration: float = 1.0, on_empty: str = "auto",
                 full_length: bool = False, residual: bool = False, batch_windows: int = 4,
                 detect_imgsz: int | None = None, precision: str = "fp32", guide: str = "auto",
                 naming: str = "auto", tagger: str | Path | None = None, masks: str = "joint"):
        from avsep_cli.methods import MASK_MODES, get_method

        if method not in SEPARABLE:
            raise AvsepError(f"--method {method!r} cannot separate a video; choose one of {', '.join(SEPARABLE[:3])}")
        if on_empty not in ("auto", "whole-frame", "error"):
            raise AvsepError(f"--on-empty must be whole-frame or error, not {on_empty!r}")
        if guide not in GUIDES:
            raise AvsepError(f"--guide must be {' or '.join(GUIDES)}, not {guide!r}")
        if naming not in NAMINGS:
            raise AvsepError(f"--naming must be {' or '.join(NAMINGS)}, not {naming!r}")
        if masks not in MASK_MODES:
            raise AvsepError(f"--masks must be {' or '.join(MASK_MODES)}, not {masks!r}")
        if not (math.isfinite(detect_fps) and math.isfinite(guide_fps) and 0 < guide_fps <= detect_fps):
            raise AvsepError("need 0 < guidance fps <= detection fps (finite)")
        if not (0 <= conf <= 1 and math.isfinite(min_duration) and min_duration >= 0 and batch_windows >= 1):
            raise AvsepError("need conf in [0, 1], min_duration >= 0 and batch_windows >= 1")
        self.method_name = method
        self.device = torch.device(device)
        self.method = get_method(method, weights=None if weights is None else str(weights), device=self.device,
                                 precision=precision)
        self.precision, self.guide = precision, guide
        self.weights_name, self.weights_sha256 = self.method.weights_name, self.method.weights_sha256
        self.detector = self._detector(detector, conf, detect_imgsz)
        self.conf, self.detect_fps, self.min_duration = conf, detect_fps, min_duration
        self.guide_every = max(1, int(round(detect_fps / guide_fps)))
        self.guide_fps = detect_fps / self.guide_every
        self.on_empty = ("error" if method == "ialcms" else "whole-frame") if on_empty == "auto" else on_empty
        self.full_length, self.residual, self.batch_windows = full_length, residual, batch_windows
        self.segment = getattr(self.method, "segment", None) or dsp.SEGMENT
        self.k = max(1, self.method.frames_per_source)
        self.frame_gap = float(getattr(self.method, "frame_gap", 3.0))
        self.frame_size = int(getattr(self.method, "frame_size", 224))
        self.naming, self.masks = naming, masks
        self.tagger = self._tagger(naming, tagger)

    def _tagger(self, naming: str, spec):
        """The audio tagger that naming "audio-visual" (or "auto", where one is shipped) weighs in; None for
        naming by the picture alone."""
        if naming == "visual":
            if spec is not None:
                raise AvsepError("--tagger: --naming visual names the players by the picture alone")
            return None
        from avsep_cli.naming import AudioTagger

        tagger = AudioTagger.load(str(spec), self.device) if spec is not None else AudioTagger.shipped(self.device)
        if tagger is None and naming == "audio-visual":
            raise AvsepError("--naming audio-visual needs audio tagger weights (none shipped: pass --tagger FILE)")
        return tagger

    def _detector(self, detector, conf: float, imgsz: int | None):
        if isinstance(detector, str) and detector == "auto":
            shipped = registry.default_for("detector")
            detector = shipped["name"] if shipped else None
        if detector is None or not isinstance(detector, (str, Path)):
            return detector
        from avsep_cli.detection import Detector

        path, sha = registry.shipped_file(str(detector), "detector")
        from avsep_cli.classifier import CropClassifier

        # A shipped detector that only finds instruments names its classifier (the visual trunk that names them).
        classifier = CropClassifier.for_detector(str(detector), device=self.device)
        # conf / 2: the tracker's low-confidence boxes too; imgsz None: the size the detector was trained at
        return Detector(path, device=self.device, conf=conf / 2, imgsz=imgsz, sha256=sha, classifier=classifier)

    # -- public ------------------------------------------------------------------------------------

    def separate_file(self, path: str | Path, out_dir: str | Path | None = None, *, boxes=None,
                      force: bool = False, video: bool = False, plots: bool = False, audio_stream: int | None = None,
                      sample_rate: str = "model", format: str = "wav", bits: int = 16,
                      instruments: list[str] | None = None,
                      on_progress: Callable[[str, float], None] | None = None) -> SeparationResult:
        """Separate `path`. With `out_dir`: write `<class>_<k>.wav` (or .flac) per identity (+ residual),
        manifest.json and, on request, videos and plots there; without: return the stems as arrays.
        `sample_rate`: "model" (11025 Hz mono, what the models hear) or "input" (full band: the input's own
        rate and channels, see `outputs`); `format` wav or flac, `bits` 16, 24 or 32 (float, wav only).
        `audio_stream`: which of the file's audio streams (0-based; default the first, with a warning when
        there are several). `instruments`: separate only these classes, each guided by the crops of its
        tracked players, or by its class prototype (`prototypes`) where the detector finds none of it or
        the input has no picture (an audio file)."""
        path = Path(path)
        options = outputs.OutputOptions(sample_rate, format, bits, self.residual, video, plots)
        named = self._named(instruments)
        info = media.probe(path, audio_stream=audio_stream)
        media.require(info, audio=True, video=named is None, min_duration=1.0)
        if options.video and not info.has_video:
            raise AvsepError(f"{path} has no video stream: --video needs one")
        detector = InjectedBoxes(boxes, getattr(self.detector, "classes", None)) if boxes is not None else self.detector
        if detector is None and info.has_video and named is None:
            raise AvsepError("no detector: pass --detector WEIGHTS (or --boxes FILE, or --instruments NAMES)")
        if not info.has_video or detector is None:
            detector = None  # guidance by name only
        if options.full_band and not hasattr(self.method, "masks"):
            raise AvsepError(f"method {self.method_name} gives no masks, so it cannot separate at the input's rate; "
                             "use the models' rate (--sample-rate model)")
        timer = _Timer()
        progress = on_progress or (lambda stage, frac: None)
        with contextlib.ExitStack() as stack:
            out = None
            if out_dir is not None:  # everything is staged and appears at once, in commit()
                out = stack.enter_context(fsio.OutputFolder(out_dir, force=force, listed=outputs.manifest_files))
                out.refuse_existing(["manifest.json"])
            store = CropStore()
            stack.callback(store.close)
            result = self._separate(path, info, detector, out, store, timer, progress, options, named)
            if out is not None:
                result.files = out.commit()
            return result

    def find_players(self, path: str | Path) -> list[Identity]:
        """The players `separate_file` would give stems to, found and named in the picture (detection and
        tracking only; no audio is separated); empty where no instrument is tracked."""
        path = Path(path)
        info = media.probe(path)
        media.require(info, audio=False, video=True)
        if self.detector is None:
            raise AvsepError("no detector: pass --detector WEIGHTS")
        store = CropStore()
        try:
            tracks, _ = self._scan(path, info.duration, self.detector, store, _Timer(), lambda stage, frac: None)
        finally:
            store.close()
        classes = list(self.detector.classes)
        if info.has_audio:
            self._name_by_sound(path, info, tracks, classes, None, _Timer())
        return self._identities(tracks, classes)

    def _named(self, instruments: list[str] | None):
        """-> (class names in order, their prototypes) for `instruments`, or None; unknown names are one line."""
        if instruments is None:
            return None
        from avsep_cli import prototypes

        protos = prototypes.for_method(self.method)
        return prototypes.check_names(instruments, protos.classes), protos

    def _separate(self, path: Path, info, detector, out: fsio.OutputFolder | None, store: CropStore, timer: _Timer,
                  progress, options: outputs.OutputOptions, named=None) -> SeparationResult:
        result = SeparationResult(str(path), self.method_name, dsp.SAMPLE_RATE, info.duration, [], info.audio_stream)
        for w in info.warnings:
            _warn(result, w)
        tracks, crops = self._scan(path, info.duration, detector, store, timer, progress) if detector else ([], {})
        classes = list(getattr(detector, "classes", None) or [])
        result.naming = self._name_by_sound(path, info, tracks, classes, result.audio_stream, timer)
        if named is not None:  # only the named classes; each one not tracked is guided by its prototype
            names, protos = named
            tracks = [t for t in tracks if classes[t.cls] in names]
            seen = {classes[t.cls] for t in tracks}
            n_frames = max(1, int(np.ceil(info.duration * self.detect_fps)))
            for cls in names:
                if cls not in seen:
                    if detector is not None:
                        _warn(result, f"{cls}: not found in the picture; separated by its name over the whole input")
                    if cls not in classes:
                        classes.append(cls)
                    tid = -1 - len(crops)  # negative ids: not the tracker's
                    tracks.append(Track(tid, classes.index(cls), list(range(n_frames)), [np.zeros(4)] * n_frames,
                                        [0.0] * n_frames))
                    crops[tid] = protos.guidance([cls], self.method)[0]  # (K, C, h, w) features
        by_name = (self._guide_by_name(tracks, classes, crops, result, named[1] if named else None)
                   if self.guide != "crops" else set())
        if named is None and not tracks:
            if self.on_empty == "error":
                raise AvsepError(f"no instrument detected in {path} (--on-empty whole-frame separates the whole frame)")
            _warn(result, f"no instrument detected in {path}: the whole frame is one object")
            n_frames = max(1, int(np.ceil(info.duration * self.detect_fps)))
            whole_track = Track(0, -1, list(range(n_frames)), [np.zeros(4)] * n_frames, [0.0] * n_frames)
            tracks, crops = [whole_track], {0: store.view([WHOLE])}
        result.identities = self._identities(tracks, classes, by_name)
        if out is not None:
            out.refuse_existing(options.planned([i.name for i in result.identities]))
            for ident in result.identities:
                ident.file = options.file(ident.name)

        with timer("separate"):
            self._separate_audio(path, info, result, tracks, crops, out, options, timer, progress)
        if out is not None and options.video:
            with timer("video"):
                outputs.solo_videos(path, out, result.identities)
        if out is not None and options.plots:
            with timer("plots"):
                outputs.plots(out, result, self.segment)
        result.timings = dict(timer.t)
        result.manifest = self._manifest(result, detector, info, options)
        if out is not None:
            outputs.write_manifest(out, result.manifest)
        return result

    # -- pass 1: frames -----------------------------------------------------------------------------

    def _scan(self, path: Path, duration: float, detector, store: CropStore, timer: _Timer, progress):
        """-> identities and {identity: {grid index: crop (S, S, 3)}}; the whole-frame views are kept in
        `store` under WHOLE."""
        tracker = OnlineTracker(self.detect_fps, self.conf, self.min_duration)
        batch: list[tuple[int, float, np.ndarray]] = []
        size = self.frame_size

        def flush():
            frames = np.stack([f for _, _, f in batch])
            with timer("detect"):
                if isinstance(detector, InjectedBoxes):
                    dets, probs = detector.at([t for _, t, _ in batch]), [None] * len(batch)
                elif hasattr(detector, "named"):  # with the classifier's probabilities, for naming by sound
                    dets, probs = zip(*detector.named(frames))
                else:
                    dets = detector(frames)
                    probs = [None] * len(dets)
            with timer("track"):
                for (i, _, frame), d, p in zip(batch, dets, probs):
                    seen = tracker.update(d, p)
                    g = int(round(i / self.guide_every))
                    if i % self.guide_every == 0:
                        h, w = frame.shape[:2]
                        store.put(WHOLE, g, square_crop(frame, (0, 0, w, h), size, pad=0.0))
                        for tid, box in seen:
                            store.put(tid, g, square_crop(frame, box, size))
                    else:  # a track may live only between guidance frames: keep its best crop
                        for tid, box in seen:
                            store.offer_best(tid, g, tracker.raw[tid].confs[-1],
                                             lambda f=frame, b=box: square_crop(f, b, size))
            batch.clear()

        frames_iter = media.iter_frames(path, self.detect_fps, duration=duration)
        while True:
            with timer("decode frames"):
                item = next(frames_iter, None)
            if item is None:
                break
            t, frame = item
            batch.append((len(batch) + tracker.frame, t, frame))
            if len(batch) == 8:
                flush()
                progress("scan", min(1.0, t / max(duration, 1e-9)))
        if batch:
            flush()
        identities, raw_to_id = tracker.finish()
        crops = {i.track_id: store.view([raw for raw, ident in raw_to_id.items() if ident == i.track_id])
                 for i in identities}
        return identities, crops

    def _name_by_sound(self, path: Path, info, tracks: list[Track], classes: list[str], audio_stream,
                       timer: _Timer) -> dict:
        """Naming "audio-visual": rename the tracked players by picture and sound together (`naming.assign`)
        -> what was done, for the manifest. Tracks without the classifier's probabilities (injected boxes,
        a detector that names its own classes) keep the picture's names."""
        tracked = [t for t in tracks if t.track_id >= 0 and t.cls >= 0]
        if self.tagger is None or not tracked or any(t.class_probs is None for t in tracked):
            return {"by": "picture"}
        from avsep_cli import naming

        with timer("name"):
            chunks = media.iter_audio(path, dsp.SAMPLE_RATE, chunk_seconds=30.0, duration=info.duration,
                                      audio_stream=audio_stream)
            audio = naming.heard(self.tagger, chunks, naming.tracks_span(tracked, self.detect_fps), classes)
        picture = naming.picture_probs([t.class_probs for t in tracked], len(classes))
        renamed = []
        for t, c in zip(tracked, naming.assign(picture, audio, names=[t.cls for t in tracked])):
            if c != t.cls:
                renamed.append({"track": t.track_id, "picture": classes[t.cls], "name": classes[c]})
                t.cls = c
        return {"by": "picture and sound", "tagger": self.tagger.info(), "weight": naming.AUDIO_WEIGHT,
                "presence": {c: round(float(p), 4) for c, p in zip(classes, audio) if c in self.tagger.classes},
                "renamed": renamed}

    def _guide_by_name(self, tracks: list[Track], classes: list[str], crops: dict, result: SeparationResult,
                       protos=None) -> set[int]:
        """`guide` name or auto: each tracked player whose class is the only one of its kind in the clip is
        guided by its class' prototype in place of its crops (its span and boxes stay its track's) -> their
        track ids. Players who share a class keep their crops: one prototype would give them the same stem.
        Without prototypes for the method's trunk, "name" is an error and "auto" keeps every player's crops."""
        from avsep_cli import prototypes

        try:
            if getattr(self.method, "model", None) is None:
                raise AvsepError(f"method {self.method_name} has no visual trunk, so no class prototypes")
            protos = protos or prototypes.for_method(self.method)  # already loaded for --instruments
            protos.guidance([], self.method)  # refuses prototypes without the method's view
        except AvsepError:
            if self.guide == "name":
                raise
            return set()
        tracked = [t for t in tracks if t.track_id >= 0 and t.cls >= 0]
        count = Counter(t.cls for t in tracked)
        for c in sorted(c for c, n in count.items() if n > 1):
            _warn(result, f"{classes[c]}: {count[c]} players share the class; each is guided by its crops")
        out = set()
        for t in (t for t in tracked if count[t.cls] == 1):
            try:  # the view was checked above: only an unknown class fails here
                crops[t.track_id] = protos.guidance([classes[t.cls]], self.method)[0]  # (K, C, h, w) features
            except AvsepError:  # a class the prototypes do not know (another detector's): its crops
                _warn(result, f"{classes[t.cls]}: no class prototype; guided by its crops")
                continue
            out.add(t.track_id)
        return out

    def _identities(self, tracks: list[Track], classes: list[str], by_name: set[int] = frozenset()) -> list[Identity]:
        """Tracks -> named identities; guidance "name" for prototype-guided ones (`by_name`, or not tracked)."""
        counts: dict[str, int] = {}
        out = []
        for t in tracks:
            cls = "whole_frame" if t.cls < 0 else classes[t.cls]
            guidance = "whole-frame" if t.cls < 0 else "name" if t.track_id < 0 or t.track_id in by_name else "crops"
            counts[cls] = counts.get(cls, 0) + 1
            boxes = [] if t.cls < 0 or t.track_id < 0 else [{"t": round(f / self.detect_fps, 3),
                                                     "box": [round(float(v), 1) for v in b]}
                                                    for f, b in zip(t.frames, t.boxes)]
            out.append(Identity(f"{cls}_{counts[cls]}", cls, t.track_id, round(t.mean_conf, 4),
                                round(t.first / self.detect_fps, 3), round((t.last + 1) / self.detect_fps, 3), boxes,
                                guidance=guidance))
        return out

    # -- pass 2: audio ------------------------------------------------------------------------------

    def _guidance(self, crops: Mapping[int, np.ndarray], s0: int) -> torch.Tensor:
        """(K, 3, H, W) uint8: one identity's crops at the frame times of the window starting at sample s0
        (its nearest crop in time where it was not seen then)."""
        centre = (s0 + self.segment / 2) / dsp.SAMPLE_RATE
        grid = sorted(crops)
        pics = []
        for j in range(self.k):
            g = int(round((centre + (j - (self.k - 1) / 2) * self.frame_gap) * self.guide_fps))
            i = bisect.bisect_left(grid, g)
            near = min((grid[n] for n in (i - 1, i) if 0 <= n < len(grid)), key=lambda x: abs(x - g))
            pics.append(crops[near])
        return torch.from_numpy(np.stack(pics)).permute(0, 3, 1, 2)

    def _active(self, track: Track, s0: int) -> bool:
        """Whether the window starting at s0 touches the identity's span (always, with full_length)."""
        if self.full_length:
            return True
        sr = dsp.SAMPLE_RATE
        a, b = (track.first / self.detect_fps - FADE_S) * sr, ((track.last + 1) / self.detect_fps + FADE_S) * sr
        return s0 < b and s0 + self.segment > a

    def _gates(self, tracks: list[Track], n0: int, n: int, sr: int) -> np.ndarray:
        """(S, n) weights of samples [n0, n0 + n) at rate sr: 1 over each identity's span, 0 outside, linear fades."""
        t = (n0 + np.arange(n)) / sr
        out = np.ones((len(tracks), n))
        if self.full_length:
            return out
        for s, tr in enumerate(tracks):
            a, b = tr.first / self.detect_fps, (tr.last + 1) / self.detect_fps
            out[s] = np.clip(np.minimum(t - a + FADE_S, b + FADE_S - t) / FADE_S, 0.0, 1.0)
        return out

    def _separate_audio(self, path: Path, info, result: SeparationResult, tracks: list[Track],
                        crops: dict[int, Mapping[int, np.ndarray]], out: fsio.OutputFolder | None,
                        options: outputs.OutputOptions, timer: _Timer, progress) -> None:
        from avsep_cli.methods import MixBatch

        L = self.segment
        S = len(tracks)
        ola = OverlapAdd(L, L // 2, S)
        crop_list = [crops[t.track_id] for t in tracks]  # crops by grid index, or (K, C, h, w) prototype features
        assert all(len(c) for c in crop_list), "every tracked identity keeps at least its best crop"
        names = [i.name for i in result.identities]
        by_name = [i.guidance == "name" for i in result.identities]
        stems = outputs.open_stems(path, info, options, names, lambda n0, n, sr: self._gates(tracks, n0, n, sr), out,
                                   ola, L, result.duration, timer)
        result.sample_rate, result.channels = stems.rate, stems.channels
        with stems:
            pending: list[tuple[int, np.ndarray]] = []

            def run(final: bool) -> None:
                while pending and (final or len(pending) >= self.batch_windows):
                    todo, pending[:] = pending[: self.batch_windows], pending[self.batch_windows :]
                    # only (window, identity) pairs where the identity is visible run through the model
                    pairs = [(w, k) for w, (s0, _) in enumerate(todo) for k in range(S) if self._active(tracks[k], s0)]
                    # per window and identity: the estimate (L,), or the mask (512, T) for full band or joint masks
                    as_masks = stems.wants_masks or self.masks == "joint"
                    shape = (dsp.N_FREQ, 1 + L // dsp.HOP) if as_masks else (L,)
                    est = np.zeros((len(todo), S, *shape), np.float32 if as_masks else np.float64)
                    for c in range(0, len(pairs), 2 * self.batch_windows):
                        chunk = pairs[c : c + 2 * self.batch_windows]
                        # crops and prototype features cannot share a batch: one model call for each kind
                        for group in ([p for p in chunk if not by_name[p[1]]], [p for p in chunk if by_name[p[1]]]):
                            if not group:
                                continue
                            with timer("guidance"):
                                guide = torch.stack([crop_list[k] if by_name[k] else self._guidance(crop_list[k], todo[w][0])
                                                     for w, k in group])[:, None]  # (P, 1, K, 3, H, W) or (P, 1, K, C, h, w)
                            batch = MixBatch(mixture=torch.from_numpy(np.stack([todo[w][1] for w, _ in group])).float(),
                                             stems=torch.zeros(len(group), 1, 0),
                                             classes=[[result.identities[k].cls] for _, k in group],
                                             **{"features" if by_name[group[0][1]] else "frames": guide})
                            with timer("model"), torch.no_grad():
                                if as_masks:  # joint: soft, before AVPC's and Sound-of-Pixels' 0.5 threshold
                                    soft = self.masks == "joint"
                                    separated = self.method.masks(batch, soft=soft)[:, 0].float().cpu().numpy()  # (P, 512, T)
                                else:
                                    separated = self.method.separate(batch)[:, 0].double().cpu().numpy()  # (P, L)
                            for (w, k), e in zip(group, separated):
                                est[w, k] = e
                    if self.masks == "joint":
                        with timer("joint masks"):
                            est = self._share_out(todo, est, {(w, k) for w, k in pairs}, stems.wants_masks)
                    for (s0, window), e in zip(todo, est):
                        stems.add(s0, window, e)
                    # samples before the first window still to run are final
                    stems.settle(pending[0][0] if pending else (ola.total if final else ola.settled))

            audio = media.iter_audio(path, dsp.SAMPLE_RATE, chunk_seconds=30.0, duration=result.duration,
                                     audio_stream=result.audio_stream)
            while True:
                with timer("decode audio"):
                    chunk = next(audio, None)
                if chunk is None:
                    break
                stems.feed(chunk)
                pending.extend(ola.windows(chunk))
                run(final=False)
                progress("separate", min(1.0, ola.total / dsp.SAMPLE_RATE / max(result.duration, 1e-9)))
            pending.extend(ola.end())
            run(final=True)
            stems.settle(ola.total, final=True)
        if out is None:
            arrays = stems.arrays()
            result.stems = {n: arrays[n] for n in names}
            result.residual = arrays.get("residual")

    def _share_out(self, todo: list[tuple[int, np.ndarray]], masks: np.ndarray, ran: set[tuple[int, int]],
                   keep_masks: bool) -> np.ndarray:
        """Joint masks: in each window, the soft masks (W, S, 512, T) of the identities visible in it are shared
        out by the Wiener rule (`dsp.joint_masks`), so their stems add up to the window; a window with one
        visible identity keeps its own mask (its method's rule). -> the masks, or (W, S, L) estimates."""
        out = torch.from_numpy(masks)
        for w in range(len(masks)):
            ks = [k for k in range(masks.shape[1]) if (w, k) in ran]
            if ks:
                out[w, ks] = dsp.joint_masks(out[w, ks]) if len(ks) > 1 else self.method.own_rule(out[w, ks])
        if keep_masks:
            return out.numpy()
        mixture = torch.from_numpy(np.stack([window for _, window in todo])).float()  # (W, L)
        return dsp.masked_waveforms(mixture, out).double().numpy()  # (W, S, L)

    # -- the manifest -------------------------------------------------------------------------------

    def _manifest(self, result: SeparationResult, detector, info, options: outputs.OutputOptions) -> dict:
        return {
            "input": result.input,
            "duration": round(info.duration, 3),
            "audio_stream": result.audio_stream,
            "method": self.method_name,
            "weights": {"name": self.weights_name, "sha256": self.weights_sha256},
            "detector": detector.info() if detector is not None else None,  # weights, sha256, ignored classes
            "device": str(self.device),
            "precision": self.precision,  # what the method's network ran in (fp32, or bf16 autocast)
            "guide": self.guide,  # asked for; each identity's `guidance` says what it got
            "naming": {"asked": self.naming, **result.naming},
            "masks": self.masks,  # own (each player's, the papers'), or joint (shared out by the Wiener rule)
            # sample_rate, channels, format, bits, high-band rule, residual file
            **outputs.audio_fields(options, result.sample_rate, result.channels),
            "window": {"samples": self.segment, "hop": self.segment // 2, "frames_per_window": self.k,
                       "frame_gap_s": self.frame_gap},
            "detect_fps": self.detect_fps,
            "full_length": self.full_length,
            "warnings": result.warnings,
            "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
            "identities": [ident.__dict__ for ident in result.identities],
        }


def _warn(result: SeparationResult, msg: str) -> None:
    """A warning for the caller: logged once (the CLI shows the log) and kept in `result.warnings` and the
    manifest."""
    log.warning(msg)
    result.warnings.append(msg)
