"""Instrument detection with ultralytics YOLO: the corpus as a YOLO dataset, and a detector for inference.

`export_yolo_dataset` writes every `every`-th frame of the corpus' train/val/test clips as JPEG with one
YOLO label file each (class, centre x, centre y, width, height, normalised to the frame) from the
sidecar boxes, plus a `data.yaml` with absolute paths and our class names; it is cached under
`ROOT/.avsep-cache/yolo/` and rebuilt only when the corpus changes. `Detector` wraps any ultralytics
detection weights (ours from `avsep train --method detector`, or e.g. an Open Images V7 model for real
footage): it takes RGB frames and returns boxes in the frame's pixels with *our* class indices, mapping
the model's class names to ours (`map_class_names`) and ignoring the classes we do not know.

ultralytics is kept from reaching the network and from changing the process: `ultralytics_session`
skips its font download (plots are off, so no font is needed) and restores torch's thread count and
deterministic-algorithms flag, which ultralytics sets process-wide.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from avsep_cli.errors import AvsepError

log = logging.getLogger("avsep")

YOLO_DIR = "yolo"  # under the corpus cache (datasets.CACHE_DIR)
EXPORT_FORMAT = 1  # bump when the export's files change meaning, so old caches are rebuilt

# Model class names (normalised by `_norm`) that mean one of our classes without being spelled like
# it: Open Images V7 (Guitar, Musical keyboard, Harpsichord), LVIS (fiddle, sousaphone, "bass horn")
# and common variants. A harpsichord is shown and heard as the nearest keyboard instrument we know,
# the piano; a keyboard ("Musical keyboard") mostly plays piano sounds. Plain "keyboard" is left out:
# in COCO and Objects365 it is a computer keyboard.
ALIASES: dict[str, str] = {
    "guitar": "acoustic_guitar",
    "classical_guitar": "acoustic_guitar",
    "musical_keyboard": "piano",
    "harpsichord": "piano",
    "grand_piano": "piano",
    "upright_piano": "piano",
    "fiddle": "violin",
    "sousaphone": "tuba",
    "bass_horn": "tuba",
    "drum_musical_instrument": "drum",
    "drum_kit": "drum",
    "snare_drum": "drum",
    "bass_drum": "drum",
    "sax": "saxophone",
}

# Musical-instrument classes of the common label sets (Open Images V7, Objects365, LVIS) that none of
# our classes covers: a model's classes among these are reported in `Detector.ignored` (for the
# manifest); its other unknown classes (person, car, ...) are dropped silently.
OTHER_INSTRUMENTS = frozenset({
    "french_horn", "harmonica", "oboe", "organ_musical_instrument", "organ", "maracas", "musical_instrument",
    "instrument", "instrument_musical", "cymbal", "tambourine", "bagpipe", "gong", "harmonium",
    "reed_organ", "reed_organ_musical_instrument", "triangle_musical_instrument", "bassoon", "erhu",
    "ukulele", "mandolin", "marimba", "glockenspiel", "bell", "horn", "cornet", "recorder", "bongo",
    "conga", "timpani", "double_bass", "electric_guitar", "bass_guitar", "synthesizer",
})


AGNOSTIC_CLASS = "instrument"
# The class of a class-agnostic instrument detector (ours: `avsep train --method detector --agnostic`).
INSTRUMENT_NAMES = frozenset({"instrument", "musical_instrument", "instrument_musical"})


def _norm(name: str) -> str:
    """'Organ (Musical Instrument)' -> 'organ_musical_instrument'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def default_classes() -> tuple[str, ...]:
    """Our 15 instrument classes, sorted (the corpus' and the separation models' order)."""
    from avsep_cli.corpus.classes import CLASSES

    return tuple(sorted(CLASSES))


def map_class_names(names: Mapping[int, str] | Sequence[str],
                    classes: Sequence[str]) -> tuple[dict[int, int], tuple[str, ...]]:
    """Map a model's class names to indices into `classes`.

    A name matches a class when it is spelled the same (case, spaces and punctuation aside) or through
    `ALIASES`; an LVIS-style name with alternatives ("bass horn/sousaphone/tuba") matches through any
    of them. Returns ({model index: our index}, the sorted names of the model's instrument classes
    that match none of ours)."""
    items = names.items() if isinstance(names, Mapping) else enumerate(names)
    ours = {_norm(c): i for i, c in enumerate(classes)}
    mapping: dict[int, int] = {}
    ignored = []
    for k, name in items:
        keys = [_norm(a) for a in str(name).split("/")] or [""]
        hit = next((ours[x] for x in keys if x in ours), None)
        if hit is None:
            hit = next((ours[ALIASES[x]] for x in keys if ALIASES.get(x) in ours), None)
        if hit is not None:
            mapping[int(k)] = hit
        elif any(x in OTHER_INSTRUMENTS or x in ALIASES or x.endswith("musical_instrument") for x in keys):
            ignored.append(str(name))
    return mapping, tuple(sorted(ignored))


# --------------------------------------------------------------------------------------------- ultralytics


@contextlib.contextmanager
def ultralytics_session(verbose: bool = False, threads: int | None = None) -> Iterator[None]:
    """Run ultralytics calls without network access and without lasting side effects on the process:

    - `check_font` (every dataset check calls it to fetch Arial.ttf for plots) does nothing: our plots
      are off, so no font is needed;
    - ultralytics' log lines and progress bars show only when `verbose`;
    - ultralytics' device selection sets torch's intra-op threads to cores - 1 on CPU; inside the
      session it sets `threads` (default: the current count) instead;
    - on exit, the thread count, torch's deterministic flags and the random states of Python, NumPy
      and torch (ultralytics seeds them all when training) are as they were.
    """
    import random

    import torch
    import ultralytics.data.utils as data_utils
    import ultralytics.utils.checks as checks
    import ultralytics.utils.torch_utils as torch_utils
    from ultralytics.utils import LOGGER

    patched = (data_utils.check_font, checks.check_font, torch_utils.NUM_THREADS, LOGGER.level)
    process = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
               torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.deterministic)
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    data_utils.check_font = checks.check_font = _no_font
    torch_utils.NUM_THREADS = threads or torch.get_num_threads()
    LOGGER.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        data_utils.check_font, checks.check_font, torch_utils.NUM_THREADS = patched[:3]
        LOGGER.setLevel(patched[3])
        torch.set_num_threads(process[0])
        torch.use_deterministic_algorithms(process[1], warn_only=process[2])
        torch.backends.cudnn.deterministic = process[3]
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])


def _no_font(*args, **kwargs) -> None:
    return None


def ultralytics_device(device) -> str:
    """torch.device / 'cuda:1' / 'cpu' -> ultralytics' device string ('cpu', '0', '1', ...)."""
    name = str(device)
    if name.startswith("cuda"):
        return name.split(":", 1)[1] if ":" in name else "0"
    return name


# --------------------------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class YoloDataset:
    """An exported YOLO dataset: `data_yaml` for ultralytics, images per split, boxes per split."""

    dir: Path
    data_yaml: Path
    classes: tuple[str, ...]
    images: dict[str, int]
    boxes: dict[str, int]


def _fingerprint(clips) -> list[list]:
    """What the export depends on: each clip's id, split and sidecar time."""
    return [[c.id, c.split, c.sidecar.stat().st_mtime_ns] for c in clips]


def export_yolo_dataset(root: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, every: int = 4,
                        force: bool = False, progress: Callable[[int, int], None] | None = None,
                        agnostic: bool = False, stills: int = 0) -> YoloDataset:
    """Write the frames of the corpus' train/val/test clips with boxes as a YOLO dataset.

    Frames 0, every, 2 * every, ... of each clip (at the corpus' 8 fps) are taken from the training cache
    when `avsep data index` made one, else decoded from the video; labels come from the sidecar boxes,
    clipped to the frame (a box narrower or lower than 1 pixel is left out; a frame without boxes is
    a background image). Default folder: ROOT/.avsep-cache/yolo/every<N>. An existing export is reused
    when it was made from the same clips, unless `force`. The folder is built under a temporary name
    and renamed into place, so an interrupted export leaves nothing that looks finished.

    `agnostic`: one class, "instrument" (the detector finds, a classifier names: `classifier.py`).
    `stills`: that many more training images, rendered from the recipe's train pictures with 1-3 players
    (`corpus.stills`; a corpus made by `avsep data synth` with its pictures installed).
    """
    import yaml
    from PIL import Image

    from avsep_cli.datasets import CACHE_DIR, FPS, ClipReader
    from avsep_cli.layout import SPLITS, open_corpus

    if every < 1:
        raise AvsepError(f"--every {every}: expected a positive frame step")
    root = Path(root).resolve()
    corpus = open_corpus(root)
    clips = [c for c in corpus.clips() if c.split in SPLITS and c.sidecar is not None]
    if not any(c.split == "train" for c in clips) or not any(c.split == "val" for c in clips):
        raise AvsepError(f"{root}: the detector needs train and val clips with boxes (a corpus made by "
                         f"`avsep data synth`; MUSIC downloads have no boxes)")
    if stills < 0:
        raise AvsepError(f"--stills {stills}: expected 0 or more")
    names = (AGNOSTIC_CLASS,) if agnostic else tuple(corpus.classes)
    folder = f"every{every}" + ("-agnostic" if agnostic else "") + (f"-stills{stills}" if stills else "")
    out = Path(out_dir).resolve() if out_dir is not None else root / CACHE_DIR / YOLO_DIR / folder
    stamp = {"format": EXPORT_FORMAT, "every": every, "classes": list(names), "clips": _fingerprint(clips),
             "stills": int(stills)}
    done = out / "export.json"
    if done.is_file() and not force:
        try:
            old = json.loads(done.read_text())
            if {k: old.get(k) for k in stamp} == stamp:
                return YoloDataset(out, out / "data.yaml", names, old["images"], old["boxes"])
        except (OSError, ValueError, KeyError):
            pass
    index = {c: (0 if agnostic else i) for i, c in enumerate(corpus.classes)}
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    reader = ClipReader(root)
    images = {s: 0 for s in SPLITS}
    boxes = {s: 0 for s in SPLITS}
    for n_done, clip in enumerate(clips):
        players = reader.meta(clip).get("players") or []
        n_frames = max((len(p["boxes"]) for p in players), default=0)
        picks = list(range(0, n_frames, every))
        if not picks:
            continue
        times = [i / FPS for i in picks]
        frames = reader.frames(clip, times)                  # (K, H, W, 3) uint8 RGB
        h, w = frames.shape[1:3]
        per_player = reader.boxes(clip, times)               # [(class, (K, 4) x0 y0 x1 y1 px)]
        img_dir, lab_dir = tmp / "images" / clip.split, tmp / "labels" / clip.split
        img_dir.mkdir(parents=True, exist_ok=True)
        lab_dir.mkdir(parents=True, exist_ok=True)
        for k, i in enumerate(picks):
            stem = f"{clip.id}_{i:03d}"
            Image.fromarray(frames[k]).save(img_dir / f"{stem}.jpg", quality=95)
            lines = []
            for cls, bx in per_player:
                if cls not in index:
                    continue
                line = _yolo_line(index[cls], bx[k], w, h)
                if line:
                    lines.append(line)
            (lab_dir / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
            images[clip.split] += 1
            boxes[clip.split] += len(lines)
        if progress:
            progress(n_done + 1, len(clips) + stills)
    if stills:
        _export_stills(root, tmp, stills, index, images, boxes, progress, len(clips))
    data = {"path": str(out), "names": dict(enumerate(names))}
    for split in SPLITS:  # absolute paths: ultralytics resolves relative ones against its own datasets folder
        if images[split]:
            data[split] = str(out / "images" / split)
    (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp / "export.json").write_text(json.dumps({**stamp, "images": images, "boxes": boxes}) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return YoloDataset(out, out / "data.yaml", names, images, boxes)


def _yolo_line(k: int, box, w: int, h: int) -> str | None:
    x0, x1 = np.clip([box[0], box[2]], 0, w)
    y0, y1 = np.clip([box[1], box[3]], 0, h)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return f"{k} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}"


def _export_stills(root: Path, tmp: Path, n: int, index: dict, images: dict, boxes: dict, progress, done0: int) -> None:
    """n stills of the recipe's train pictures into tmp/{images,labels}/train (seeded by their number)."""
    from PIL import Image

    from avsep_cli.corpus.stills import StillSampler, recipe_pictures

    try:
        recipe = json.loads((root / "corpus.json").read_text())
    except (OSError, ValueError):
        raise AvsepError(f"{root}: --stills needs a corpus made by `avsep data synth` (no corpus.json)") from None
    sampler = StillSampler(recipe_pictures(recipe, "train"), size=int(recipe.get("frame_size", 224)))
    img_dir, lab_dir = tmp / "images" / "train", tmp / "labels" / "train"
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        frame, bx, cls, visible = sampler.sample(np.random.default_rng([int(recipe.get("seed", 0)), i, 13]))
        h, w = frame.shape[:2]
        lines = [ln for c, b, v in zip(cls, bx, visible) if v and c in index
                 for ln in [_yolo_line(index[c], b, w, h)] if ln]
        Image.fromarray(frame).save(img_dir / f"still{i:06d}.jpg", quality=95)
        (lab_dir / f"still{i:06d}.txt").write_text("".join(line + "\n" for line in lines))
        images["train"] += 1
        boxes["train"] += len(lines)
        if progress:
            progress(done0 + i + 1, done0 + n)


# --------------------------------------------------------------------------------------------- inference


class Detector:
    """Instrument boxes in RGB frames, with our class indices.

    `weights`: a local file ultralytics can load (a `.pt` from `avsep train --method detector`, any
    ultralytics detection weights, an exported model), or an ultralytics asset name such as
    "yolov8m-oiv7.pt" that is found in ultralytics' weights folder or downloaded by ultralytics when
    the machine is online. `sha256`, when given, is checked before the file is loaded (ultralytics
    weights are pickles: never load an unchecked file from an untrusted source). `classes` are the
    class names our indices refer to (default: our 15 classes). Calling it on (N, H, W, 3) uint8 RGB
    frames returns N float32 arrays (M, 6): x1, y1, x2, y2 in pixels of the input frames, confidence,
    index into `classes`; boxes of model classes we do not know are dropped.
    `agnostic` (default) keeps one box per object whatever its class scores (NMS across classes): an
    instrument has one class, and a weak detector otherwise stacks several boxes of different classes on it.
    """

    def __init__(self, weights: str | os.PathLike, device="cpu", conf: float = 0.25, imgsz: int | None = None,
                 sha256: str | None = None, classes: Sequence[str] | None = None, batch: int = 16,
                 agnostic: bool = True, classifier=None):
        if not 0.0 <= conf <= 1.0:
            raise AvsepError(f"detector confidence {conf}: expected a value between 0 and 1")
        self.classes: tuple[str, ...] = tuple(classes) if classes else default_classes()
        self.device = ultralytics_device(device)
        self.conf = float(conf)
        self.batch = max(1, int(batch))
        self.agnostic = agnostic  # one box per object whatever the class scores say (NMS across classes)
        self.classifier = classifier  # a classifier.CropClassifier: names every box (the detector only finds)
        if classifier is not None and tuple(classifier.classes) != self.classes:
            raise AvsepError(f"classifier {classifier.name} names {len(classifier.classes)} classes that are not "
                             f"the detector's {len(self.classes)}")
        self.path = _resolve_weights(weights)
        self.name = str(weights)
        from avsep_cli import checkpoint

        self.sha256 = (checkpoint.verify_sha256(self.path, sha256, "detector weights") if sha256 is not None
                       else checkpoint.sha256(self.path))
        self.model = _load_yolo(self.path)
        names = self.model.names
        mapping, self.ignored = map_class_names(names, self.classes)
        if classifier is not None:
            # Every box of an instrument class is named by the classifier: the class-agnostic "instrument"
            # of our detector, our own classes, and the other instruments a third-party model knows.
            keep = {int(k) for k, n in _items(names)
                    if int(k) in mapping or _norm(str(n)) in INSTRUMENT_NAMES | OTHER_INSTRUMENTS}
            if not keep:
                raise AvsepError(f"detector {self.name} knows no instrument class; its classes: {_preview(names)}")
            self.mapping = {str(names[k]): "(classifier)" for k in sorted(keep)}
            self.ignored = ()
            lut_val = {k: 0 for k in keep}
        else:
            if not mapping:
                raise AvsepError(f"detector {self.name} knows none of our classes ({', '.join(self.classes)}); "
                                 f"its classes: {_preview(names)}")
            self.mapping = {str(names[k]): self.classes[v] for k, v in sorted(mapping.items())}
            lut_val = mapping
        # model class index -> our index (-1: dropped)
        self._lut = np.full(max(int(k) for k in names) + 1, -1, np.int64)
        for k, v in lut_val.items():
            self._lut[k] = v
        self._merge = classifier is None and len(set(mapping.values())) < len(mapping)  # two model classes -> one of ours
        self.imgsz = int(imgsz or self.model.overrides.get("imgsz") or 640)

    def info(self) -> dict:
        """What a manifest records about the detector."""
        out = {"weights": self.name, "sha256": self.sha256, "imgsz": self.imgsz, "conf": self.conf,
               "mapping": self.mapping, "ignored": list(self.ignored)}
        if self.classifier is not None:
            out["classifier"] = self.classifier.info()
        return out

    def __call__(self, frames: np.ndarray) -> list[np.ndarray]:
        """(N, H, W, 3) uint8 RGB -> N (M, 6) float32 arrays: x1 y1 x2 y2 in pixels, confidence, class index.
        With a classifier, the class is its most probable one and the confidence the detector's."""
        return [boxes for boxes, _ in self.named(frames)]

    def named(self, frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """As `__call__`, with each frame's (M, classes) classifier probabilities (None without a classifier)."""
        out = []
        for boxes, probs in self.detect(frames):
            if probs is not None and len(probs):
                boxes = boxes.copy()
                boxes[:, 5] = probs.argmax(1)
            out.append((boxes, probs))
        return out

    def detect(self, frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Per frame: (M, 6) boxes as `__call__` gives them (class: the detector's own) and, with a classifier,
        (M, classes) class probabilities of each box (else None)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (N, H, W, 3) RGB, got {frames.dtype} {frames.shape}")
        out: list[tuple[np.ndarray, np.ndarray | None]] = []
        with ultralytics_session():
            for s in range(0, len(frames), self.batch):
                bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames[s:s + self.batch]]  # ultralytics reads BGR
                results = self.model.predict(bgr, imgsz=self.imgsz, conf=self.conf, device=self.device,
                                             verbose=False, save=False, agnostic_nms=self.agnostic)
                for f, r in zip(frames[s:s + self.batch], results):
                    boxes = self._ours(r.boxes)
                    probs = None if self.classifier is None else self.classifier(f, boxes)
                    out.append((boxes, probs))
        return out

    def _ours(self, boxes) -> np.ndarray:
        """ultralytics Boxes -> (M, 6) float32 x1 y1 x2 y2 conf class, our classes only."""
        import torch

        cls = boxes.cls.long().cpu()
        mapped = torch.from_numpy(self._lut)[cls.clamp(0, len(self._lut) - 1)]
        keep = (cls < len(self._lut)) & (mapped >= 0)
        xyxy, conf, mapped = boxes.xyxy.float().cpu()[keep], boxes.conf.float().cpu()[keep], mapped[keep]
        if self._merge and len(xyxy) > 1:
            # e.g. "Piano" and "Musical keyboard" boxes on one instrument: one NMS per our class
            from torchvision.ops import batched_nms

            order = batched_nms(xyxy, conf, mapped, iou_threshold=0.7)
            xyxy, conf, mapped = xyxy[order], conf[order], mapped[order]
        return torch.cat([xyxy, conf[:, None], mapped[:, None].float()], 1).numpy().astype(np.float32)


def _items(names: Mapping[int, str] | Sequence[str]):
    return names.items() if isinstance(names, Mapping) else enumerate(names)


def _preview(names: Mapping[int, str], n: int = 8) -> str:
    vals = [str(v) for v in names.values()]
    return ", ".join(vals[:n]) + (f", … ({len(vals)} in all)" if len(vals) > n else "")


def _resolve_weights(weights: str | os.PathLike) -> Path:
    """A local file, or an ultralytics asset name found in ultralytics' weights folder or downloaded
    by ultralytics (only when it is online: offline, the error says so at once)."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise AvsepError(f"detector weights {path} are not a file")
    name = str(weights)
    if path.parent != Path(".") or not name.endswith(".pt"):
        raise AvsepError(f"detector weights not found: {path}")
    from ultralytics.utils import ONLINE, SETTINGS

    local = Path(SETTINGS["weights_dir"]) / name
    if local.is_file():
        return local
    if not ONLINE:
        raise AvsepError(f"detector {name!r} is not a local file and ultralytics cannot download it offline; "
                         f"give the path of a weights file (e.g. RUN/detector.pt from `avsep train --method detector`)")
    from ultralytics.utils.downloads import attempt_download_asset

    try:
        got = Path(attempt_download_asset(name))
    except Exception as e:  # noqa: BLE001 - any download failure is one line for the user
        raise AvsepError(f"detector {name!r}: not a local file, and ultralytics could not fetch it: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not got.is_file():
        raise AvsepError(f"detector {name!r} is neither a local file nor an ultralytics asset name")
    return got


def _load_yolo(path: Path):
    """An ultralytics YOLO detection model from a weights file, any failure as one AvsepError line."""
    from ultralytics import YOLO

    try:
        model = YOLO(str(path))
        names = model.names
    except Exception as e:  # noqa: BLE001 - a bad file of any kind is the user's to fix
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AvsepError(f"cannot load detector weights {path}: {first}") from None
    if model.task not in ("detect", "segment") or not names:
        raise AvsepError(f"{path} is an ultralytics {model.task} model, not a detector")
    return model
