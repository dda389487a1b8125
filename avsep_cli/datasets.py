"""Training and validation data: Mix-and-Separate, mixtures of mixtures, RCoP pairs.

Every dataset draws from a corpus in the MUSIC layout (`layout.open_corpus`) and reads clips through
`ClipReader`, which uses the cache made by `avsep data index` when it exists and decodes the video
otherwise. All randomness of an item is a pure function of (seed, epoch, index), so an epoch can be
replayed exactly (the trainer's `--resume` relies on it) and several processes agree without sharing
state. Audio is mono 11025 Hz; frames are uint8 RGB (K, 3, H, W), normalised inside the models.
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from avsep_cli import dsp, media
from avsep_cli.errors import AvsepError
from avsep_cli.layout import Clip, open_corpus

FPS = 8.0  # frame rate of the cache and of the papers' frame sampling
CACHE_DIR = ".avsep-cache"


def cache_paths(root: Path, clip: Clip) -> tuple[Path, Path]:
    """Where `avsep data index` keeps a clip's decoded audio and frames."""
    rel = clip.video.relative_to(root).with_suffix("")
    base = root / CACHE_DIR / rel
    return base.with_name(base.name + ".audio.npy"), base.with_name(base.name + ".frames.npy")


class ClipReader:
    """Audio, frames and boxes of corpus clips, from the cache when present; a small LRU of decoded
    audio keeps repeated draws of one clip cheap."""

    def __init__(self, root: Path, keep: int = 64):
        self.root = Path(root)
        self._audio: OrderedDict[str, np.ndarray] = OrderedDict()
        self._meta: dict[str, dict] = {}
        self.keep = keep

    def audio(self, clip: Clip) -> np.ndarray:
        """(L,) float32 at 11025 Hz: the clip's own audio track."""
        key = str(clip.video)
        if key in self._audio:
            self._audio.move_to_end(key)
            return self._audio[key]
        apath, _ = cache_paths(self.root, clip)
        wav = np.load(apath) if apath.exists() else media.load_audio(clip.video)
        self._audio[key] = wav
        if len(self._audio) > self.keep:
            self._audio.popitem(last=False)
        return wav

    def stem(self, clip: Clip, cls: str) -> np.ndarray:
        return media.read_audio_file(clip.stems[cls])

    def frames(self, clip: Clip, times: list[float]) -> np.ndarray:
        """(K, H, W, 3) uint8 frames at `times` (seconds): as `media.frames_at`, the latest frame at or
        before each time. From the cache these are square at the cache's size (see `boxes`)."""
        _, fpath = cache_paths(self.root, clip)
        if fpath.exists():
            arr = np.load(fpath, mmap_mode="r")  # (N, S, S, 3); frame n is the video's frame at n / 8 s
            idx = [_frame_index(t, FPS, len(arr)) for t in times]
            return np.ascontiguousarray(arr[idx])
        return media.frames_at(clip.video, times)

    def meta(self, clip: Clip) -> dict:
        key = str(clip.video)
        if key not in self._meta:
            self._meta[key] = json.loads(clip.sidecar.read_text()) if clip.sidecar and clip.sidecar.exists() else {}
        return self._meta[key]

    def boxes(self, clip: Clip, times: list[float]) -> list[tuple[str, np.ndarray]]:
        """Per player of the clip: its class and (K, 4) boxes x0, y0, x1, y1 in pixels of the frames
        `frames` returns at `times` (scaled to the cache's frame size when the cache is used)."""
        m = self.meta(clip)
        if not m.get("players"):
            raise AvsepError(f"{clip.video}: no boxes (sidecar missing or without players)")
        fps = float(m.get("fps", FPS))
        scale = self._box_scale(clip)
        out = []
        for p in m["players"]:
            bx = np.asarray(p["boxes"], dtype=np.float32)
            idx = [_frame_index(t, fps, len(bx)) for t in times]
            out.append((p["class"], bx[idx] * scale))
        return out

    def _box_scale(self, clip: Clip) -> np.ndarray:
        """(4,) factors from the video's pixels to the cached frames' (ones without a cache)."""
        _, fpath = cache_paths(self.root, clip)
        if not fpath.exists():
            return np.ones(4, np.float32)
        h, w = np.load(fpath, mmap_mode="r").shape[1:3]
        m = self.meta(clip)
        if m.get("frame_size"):  # the synthetic corpus' videos are frame_size x frame_size
            vw = vh = int(m["frame_size"])
        else:
            info = media.probe(clip.video)
            vw, vh = info.width, info.height
        return np.array([w / vw, h / vh, w / vw, h / vh], np.float32)


def _frame_index(t: float, fps: float, n: int) -> int:
    """The frame shown at `t` seconds on a `fps` grid (the latest at or before t, as `media.frames_at`
    picks it), clamped to the n frames there are."""
    return min(n - 1, max(0, int(np.floor(t * fps + 1e-6))))


@contextlib.contextmanager
def _one_thread():
    """Run torch ops on one intra-op thread inside the block, restoring the count after."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def window(wav: np.ndarray, start: int, length: int) -> np.ndarray:
    """`length` samples from `start`, zero-padded past the end."""
    out = np.zeros(length, dtype=np.float32)
    seg = wav[start : start + length]
    out[: len(seg)] = seg
    return out


def frame_times(start_s: float, length: int, k: int, gap_frames: int) -> list[float]:
    """K frame times `gap_frames` apart at 8 fps, centred on the audio window (AVPC: 3 frames, 24 apart)."""
    centre = start_s + length / dsp.SAMPLE_RATE / 2
    return [max(0.0, centre + (j - (k - 1) / 2) * gap_frames / FPS) for j in range(k)]


AUGMENT = ("reference", "scale")
LEVELS = ("uniform", "avpc", "db")


def augment_frames(frames: torch.Tensor, rng: np.random.Generator, size: int, train: bool,
                   mode: str = "scale") -> torch.Tensor:
    """(K, 3, H, W) uint8 -> (K, 3, size, size) uint8; in training a crop and horizontal flip shared by the
    K frames of one source. `mode` "reference" (AVPC and Sound-of-Pixels, dataset/base.py 82): resize to
    1.1 x size (bicubic), random crop, flip; "scale" (avsep before issue 16): a random scale 1-1.15x
    (bilinear), crop, flip."""
    x = frames.float()
    if train and mode == "reference":
        big = int(size * 1.1)
        x = F.interpolate(x, size=(big, big), mode="bicubic", align_corners=False)
        y0, x0 = (int(rng.integers(0, big - size + 1)) for _ in range(2))
        x = x[..., y0 : y0 + size, x0 : x0 + size]
        if rng.random() < 0.5:
            x = x.flip(-1)
    elif train:
        scale = rng.uniform(1.0, 1.15)
        big = int(round(size * scale))
        x = F.interpolate(x, size=(big, big), mode="bilinear", align_corners=False)
        y0, x0 = (int(rng.integers(0, big - size + 1)) for _ in range(2))
        x = x[..., y0 : y0 + size, x0 : x0 + size]
        if rng.random() < 0.5:
            x = x.flip(-1)
    elif x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def square_crop(frame: np.ndarray, box, size: int, pad: float = 0.1) -> np.ndarray:
    """A square crop (H, W, 3) -> (size, size, 3) around box x0, y0, x1, y1, padded by `pad` of its
    longer side; parts outside the frame are filled with grey."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * pad)
    side = max(side, 8.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    t = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    h, w = frame.shape[:2]
    # affine grid sampling: the square [cx +- side/2] x [cy +- side/2] onto size x size
    theta = torch.tensor([[[side / w, 0, (2 * cx / w) - 1], [0, side / h, (2 * cy / h) - 1]]], dtype=torch.float32)
    grid = F.affine_grid(theta, (1, 3, size, size), align_corners=False)
    out = F.grid_sample(t - 128.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 128.0
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


class _Base(torch.utils.data.Dataset):
    """`levels`: how each source's level is drawn in training. "uniform" (Sound-of-Pixels `_load_audio`,
    IAL-CMS `load_audio`): x U(0.5, 1.5), clipped to [-1, 1]; "avpc" (avpc/dataset/music.py 89-99): min-max
    normalised to [-1, 1] (at evaluation too), x U(0.5, 1.5), clipped; "db" (avsep before issue 16): x a
    gain of +-`gain_db` dB."""

    def __init__(self, root, split: str, *, length: int, seed: int, segment: int, n_frames: int, frame_gap: int,
                 frame_size: int, train: bool, gain_db: float, levels: str = "db", augment: str = "scale"):
        if levels not in LEVELS or augment not in AUGMENT:
            raise ValueError(f"levels {levels!r} / augment {augment!r}: expected one of {LEVELS} / {AUGMENT}")
        self.root = Path(root)
        self.corpus = open_corpus(self.root)
        self.split, self.length, self.seed = split, length, seed
        self.segment, self.n_frames, self.frame_gap, self.frame_size = segment, n_frames, frame_gap, frame_size
        self.train, self.gain_db, self.levels, self.augment = train, gain_db, levels, augment
        self.epoch = 0
        self.reader = ClipReader(self.root)
        self.classes = list(self.corpus.classes)
        self.class_index = {c: i for i, c in enumerate(self.classes)}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        # An item is many small tensor ops on a few frames, where intra-op threads only add
        # synchronisation: on the shared 2-core machine a cached item took 44 ms with torch's 2 threads
        # and 3 ms with 1. So items are built on one thread; the step keeps the rest. (DataLoader
        # workers run on one thread already.)
        with _one_thread():
            return self._item(index)

    def _item(self, index: int) -> dict:
        raise NotImplementedError

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch if self.train else 0, index])

    def _gain(self, rng: np.random.Generator) -> float:
        return float(10 ** (rng.uniform(-self.gain_db, self.gain_db) / 20)) if self.train and self.gain_db else 1.0

    def _level(self, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One source's window at its training level (see `levels`)."""
        if self.levels == "db":
            return wav * self._gain(rng)
        if self.levels == "avpc":
            wav = dsp.minmax_normalize(torch.from_numpy(wav)).numpy()
        gain = rng.uniform(0.5, 1.5) if self.train else 1.0
        return np.clip(wav * gain, -1.0, 1.0).astype(np.float32)

    def _start(self, rng: np.random.Generator, n: int) -> int:
        return int(rng.integers(0, max(1, n - self.segment + 1)))

    def _frames(self, clip: Clip, start: int, rng: np.random.Generator) -> torch.Tensor:
        times = frame_times(start / dsp.SAMPLE_RATE, self.segment, self.n_frames, self.frame_gap)
        fr = torch.from_numpy(self.reader.frames(clip, times)).permute(0, 3, 1, 2)  # (K, 3, H, W)
        return augment_frames(fr, rng, self.frame_size, self.train, self.augment)


class MixSeparate(_Base):
    """N solo clips, aligned windows, mixed (Mix-and-Separate, N = 2, 3, 4).

    Item: mixture (L,), stems (N, L) (each source's contribution: the mixture is their sum), frames (N, K,
    3, H, W) uint8, labels (N,). `partners`: "any" (the references: every source an independently drawn
    solo clip, the same class or even clip allowed, avpc/dataset/music.py 40) or "classes" (N different
    classes); `mean`: each source divided by N (the references mix the mean of their sources), else summed.
    With `features` (a `features.TrunkFeatureStore`), frozen-trunk features (N, K, 512, h, w) replace the
    frames (no frame augmentation then); with `proto_share` > 0, each source is guided by its class'
    prototype (`prototypes`, class -> (C, h, w) features: set it before the first item) repeated over the K
    frame times, with that probability.
    """

    def __init__(self, root, split: str = "train", *, mix: int = 2, length: int = 1000, seed: int = 0,
                 segment: int = dsp.SEGMENT, n_frames: int = 3, frame_gap: int = 24, frame_size: int = 224,
                 train: bool = True, gain_db: float = 3.0, features=None, levels: str = "db", augment: str = "scale",
                 partners: str = "classes", mean: bool = False, prototypes: dict | None = None,
                 proto_share: float = 0.0):
        super().__init__(root, split, length=length, seed=seed, segment=segment, n_frames=n_frames,
                         frame_gap=frame_gap, frame_size=frame_size, train=train, gain_db=gain_db, levels=levels,
                         augment=augment)
        if partners not in ("any", "classes"):
            raise ValueError(f"partners {partners!r}: expected any or classes")
        self.mix, self.features, self.partners, self.mean = mix, features, partners, mean
        if proto_share > 0 and features is None:
            raise ValueError("prototypes guide in place of cached features: pass features too")
        self.prototypes, self.proto_share = prototypes, float(proto_share)
        self.by_class: dict[str, list[Clip]] = {}
        for c in sorted(self.corpus.clips(split=split, kind="solo"), key=lambda c: (c.classes, c.id)):
            self.by_class.setdefault(c.classes[0], []).append(c)
        self.solos = [c for cls in sorted(self.by_class) for c in self.by_class[cls]]
        if partners == "classes" and len(self.by_class) < mix:
            raise AvsepError(f"--mix {mix} needs solo clips of {mix} different classes in split {split!r}; "
                             f"{root} has {len(self.by_class)}")
        if not self.solos:
            raise AvsepError(f"no solo clips in split {split!r} of {root}")
        self.pool = sorted(self.by_class)

    def _clips(self, rng: np.random.Generator) -> list[Clip]:
        if self.partners == "any":
            return [self.solos[int(rng.integers(len(self.solos)))] for _ in range(self.mix)]
        chosen = [self.pool[k] for k in rng.choice(len(self.pool), size=self.mix, replace=False)]
        return [self.by_class[cls][int(rng.integers(len(self.by_class[cls])))] for cls in chosen]

    def _item(self, index: int) -> dict:
        rng = self._rng(index)
        clips = self._clips(rng)
        stems, frames = [], []
        for clip in clips:
            wav = self.reader.audio(clip)
            start = self._start(rng, len(wav))
            stems.append(self._level(window(wav, start, self.segment), rng) / (self.mix if self.mean else 1))
            if self.proto_share > 0 and rng.random() < self.proto_share:  # (K, C, h, w), K copies
                frames.append(self.prototypes[clip.classes[0]].expand(self.n_frames, -1, -1, -1).clone())
            elif self.features is not None:
                times = frame_times(start / dsp.SAMPLE_RATE, self.segment, self.n_frames, self.frame_gap)
                frames.append(self.features.get(clip, times))
            else:
                frames.append(self._frames(clip, start, rng))
        stems_t = torch.from_numpy(np.stack(stems).astype(np.float32))  # (N, L)
        return {"mixture": stems_t.sum(0), "stems": stems_t, "feats" if self.features is not None else "frames": torch.stack(frames),
                "labels": torch.tensor([self.class_index[c.classes[0]] for c in clips])}


ITEMS = ("synthetic", "duets", "both")


class MixtureOfMixtures(_Base):
    """Unsupervised training data (IAL-CMS): two items, each itself a mixture, summed; the model gets the sum
    and the objects (player crops) of both items, and each item's own mixture is the only audio target.

    An item is never a single source: `items` "synthetic" (the reference, SyntheticDuetDataset.py 87-140):
    the mean of two solo clips of different classes (the four solos of one example all of different classes
    when the corpus has four), one object per solo; "duets": a real duet clip and its two players; "both":
    either, with equal chance. Levels: every clip x U(0.5, 1.5), clipped (`levels`).

    Item: mixture (L,), clip_mixtures (2, L) targets, crops (O, K, 3, h, w) uint8 with O = 4, object_clip
    (O,) 0/1 (the item each object belongs to), object_valid (O,) bool, labels (O,). Ground-truth stems,
    for evaluation only, are added under `eval_stems` (O, L) (each object's contribution) with
    `with_eval_stems`; training code drops every `eval_` key before the loss sees the batch. With
    `features` (a `features.TrunkFeatureStore`), `crops` holds the frozen trunk's features of fixed crops
    (O, K, 512, h', w') float32 instead (no random padding or flips).
    """

    max_objects = 2  # per item

    def __init__(self, root, split: str = "train", *, length: int = 1000, seed: int = 0, segment: int = dsp.SEGMENT,
                 n_frames: int = 3, frame_gap: int = 24, frame_size: int = 224, crop_size: int = 224,
                 train: bool = True, gain_db: float = 3.0, with_eval_stems: bool = False, features=None,
                 items: str = "synthetic", levels: str = "uniform"):
        super().__init__(root, split, length=length, seed=seed, segment=segment, n_frames=n_frames,
                         frame_gap=frame_gap, frame_size=frame_size, train=train, gain_db=gain_db, levels=levels)
        if items not in ITEMS:
            raise ValueError(f"items {items!r}: expected one of {ITEMS}")
        self.features, self.items = features, items
        self.by_class: dict[str, list[Clip]] = {}
        for c in sorted(self.corpus.clips(split=split, kind="solo"), key=lambda c: (c.classes, c.id)):
            self.by_class.setdefault(c.classes[0], []).append(c)
        self.duets = sorted(self.corpus.clips(split=split, kind="duet"), key=lambda c: (c.classes, c.id))
        if items != "duets" and len(self.by_class) < 2:
            raise AvsepError(f"synthetic duets need solo clips of 2 classes in split {split!r}; {root} has {len(self.by_class)}")
        if items == "duets" and not self.duets:
            raise AvsepError(f"items 'duets' needs duet clips in split {split!r}; {root} has none")
        self.crop_size, self.with_eval_stems = crop_size, with_eval_stems

    def _solos(self, rng: np.random.Generator, n: int) -> list[Clip]:
        """n solo clips of different classes (of as many different classes as the corpus has, then of
        different classes within each pair)."""
        pool = sorted(self.by_class)
        if len(pool) >= n:
            cls = [pool[k] for k in rng.choice(len(pool), size=n, replace=False)]
        else:
            cls = [pool[k] for _ in range(n // 2) for k in rng.choice(len(pool), size=2, replace=False)]
        return [self.by_class[c][int(rng.integers(len(self.by_class[c])))] for c in cls]

    def _objects(self, clip: Clip, times: list[float], rng: np.random.Generator) -> list[tuple[str, torch.Tensor]]:
        """(class, crops (K, 3, h, w) uint8 or cached features) of each player of a clip."""
        out = []
        frames = None if self.features is not None else self.reader.frames(clip, times)  # (K, H, W, 3)
        flip = self.train and rng.random() < 0.5
        for j, (cls, boxes) in enumerate(self.reader.boxes(clip, times)):
            if self.features is not None:  # fixed crops (padding 0.1, no flip): their features are cached
                t = self.features.get_crops(clip, times, j, self.crop_size)
            else:
                cr = np.stack([square_crop(f, bx, self.crop_size, pad=0.1 + (0.1 * rng.random() if self.train else 0))
                               for f, bx in zip(frames, boxes)])  # (K, h, w, 3)
                t = torch.from_numpy(cr).permute(0, 3, 1, 2)
                t = t.flip(-1) if flip else t
            out.append((cls, t))
        return out

    def _item(self, index: int) -> dict:
        rng = self._rng(index)
        kinds = [self.items if self.items != "both" else ("synthetic" if rng.random() < 0.5 else "duets") for _ in range(2)]
        solos = self._solos(rng, 2 * kinds.count("synthetic"))
        O = 2 * self.max_objects
        crops = None  # (O, K, 3, h, w) uint8, or (O, K, 512, h', w') cached features
        obj_clip = torch.zeros(O, dtype=torch.long)
        valid = torch.zeros(O, dtype=torch.bool)
        labels = torch.full((O,), -1, dtype=torch.long)
        eval_stems = torch.zeros(O, self.segment)
        mixes = []
        for ci, kind in enumerate(kinds):
            parts = []  # (clip, start, level-scaled window, share of the item)
            if kind == "synthetic":
                for clip in (solos.pop(0), solos.pop(0)):
                    wav = self.reader.audio(clip)
                    start = self._start(rng, len(wav))
                    parts.append((clip, start, self._level(window(wav, start, self.segment), rng) / 2))
            else:
                clip = self.duets[int(rng.integers(len(self.duets)))]
                wav = self.reader.audio(clip)
                start = self._start(rng, len(wav))
                parts.append((clip, start, self._level(window(wav, start, self.segment), rng)))
            mixes.append(np.sum([p[2] for p in parts], axis=0))
            j = 0
            for clip, start, audio in parts:
                times = frame_times(start / dsp.SAMPLE_RATE, self.segment, self.n_frames, self.frame_gap)
                for cls, t in self._objects(clip, times, rng):
                    o = ci * self.max_objects + j
                    j += 1
                    if crops is None:
                        crops = torch.zeros(O, *t.shape, dtype=t.dtype)
                    crops[o] = t
                    obj_clip[o], valid[o], labels[o] = ci, True, self.class_index.get(cls, -1)
                    if self.with_eval_stems:
                        if clip.kind == "solo":
                            eval_stems[o] = torch.from_numpy(audio)
                        elif cls in clip.stems:  # a duet's player: its stem at the clip's level
                            raw = window(self.reader.audio(clip), start, self.segment)
                            scale = float(np.abs(audio).max() / max(np.abs(raw).max(), 1e-9))
                            eval_stems[o] = torch.from_numpy(window(self.reader.stem(clip, cls), start, self.segment) * scale)
        clip_mixes = torch.from_numpy(np.stack(mixes).astype(np.float32))  # (2, L)
        item = {"mixture": clip_mixes.sum(0), "clip_mixtures": clip_mixes, "crops": crops, "object_clip": obj_clip,
                "object_valid": valid, "labels": labels}
        if self.with_eval_stems:
            item["eval_stems"] = eval_stems
        return item


class RCoPPairs(_Base):
    """RCoP self-supervision: one clip's frames, its audio mixed into two different other clips' audio.

    Item: frames (K, 3, H, W), mix1 (L,), mix2 (L,) (the shared source plus one other each), source (L,) (its
    contribution to each mixture). As the reference's pre-training stage (avpc_rcop/dataset/music.py 21-45,
    base.py 157-166) by default: `levels` "avpc", each mixture the mean of its two sources, partners two other
    clips (`partners` "any": of any class; "classes": of two classes other than the source's).
    """

    def __init__(self, root, split: str = "train", *, length: int = 1000, seed: int = 0, segment: int = dsp.SEGMENT,
                 n_frames: int = 3, frame_gap: int = 24, frame_size: int = 224, train: bool = True, gain_db: float = 3.0,
                 levels: str = "avpc", augment: str = "reference", partners: str = "any", mean: bool = True):
        super().__init__(root, split, length=length, seed=seed, segment=segment, n_frames=n_frames,
                         frame_gap=frame_gap, frame_size=frame_size, train=train, gain_db=gain_db, levels=levels,
                         augment=augment)
        self.partners, self.mean = partners, mean
        self.solos = sorted(self.corpus.clips(split=split, kind="solo"), key=lambda c: (c.classes, c.id))
        if partners == "classes" and len({c.classes[0] for c in self.solos}) < 3:
            raise AvsepError(f"RCoP pairs need solo clips of at least 3 classes in split {split!r}")
        if len(self.solos) < 3:
            raise AvsepError(f"RCoP pairs need at least 3 solo clips in split {split!r}")

    def _item(self, index: int) -> dict:
        rng = self._rng(index)
        v = self.solos[int(rng.integers(len(self.solos)))]
        if self.partners == "classes":
            others = [c for c in self.solos if c.classes[0] != v.classes[0]]
            o1 = others[int(rng.integers(len(others)))]
            rest = [c for c in others if c.classes[0] != o1.classes[0]]
        else:
            others = [c for c in self.solos if c.id != v.id]
            o1 = others[int(rng.integers(len(others)))]
            rest = [c for c in others if c.id != o1.id]
        o2 = rest[int(rng.integers(len(rest)))]
        div = 2 if self.mean else 1
        wav = self.reader.audio(v)
        start = self._start(rng, len(wav))
        src = self._level(window(wav, start, self.segment), rng) / div
        outs = []
        for o in (o1, o2):
            w = self.reader.audio(o)
            outs.append(src + self._level(window(w, self._start(rng, len(w)), self.segment), rng) / div)
        return {"frames": self._frames(v, start, rng), "mix1": torch.from_numpy(outs[0].astype(np.float32)),
                "mix2": torch.from_numpy(outs[1].astype(np.float32)), "source": torch.from_numpy(src.astype(np.float32))}


class FrameClassification(_Base):
    """Pictures of single instruments with their class, for pre-training the visual trunk.

    Classes are drawn uniformly, then a player of that class (a solo clip, or one player of a duet) and a
    time. Solo players are shown as the whole frame (random scale/crop) half the time, as AVPC and
    Sound-of-Pixels see them; otherwise, and always for duet players, as the square crop around the
    player's box (with random padding in training), as IAL-CMS and the pipeline see them.
    Item: image (3, S, S) uint8, label () long.
    """

    def __init__(self, root, split: str = "train", *, length: int = 1000, seed: int = 0, frame_size: int = 224,
                 train: bool = True):
        super().__init__(root, split, length=length, seed=seed, segment=dsp.SEGMENT, n_frames=1, frame_gap=0,
                         frame_size=frame_size, train=train, gain_db=0.0)
        self.players: dict[str, list[tuple[Clip, int]]] = {}
        for c in sorted(self.corpus.clips(split=split), key=lambda c: (c.kind, c.classes, c.id)):
            for j, cls in enumerate(c.classes):
                self.players.setdefault(cls, []).append((c, j))
        if len(self.players) < 2:
            raise AvsepError(f"visual pre-training needs clips of at least 2 classes in split {split!r}")
        self.pool = sorted(self.players)

    def _item(self, index: int) -> dict:
        rng = self._rng(index)
        cls = self.pool[int(rng.integers(len(self.pool)))]
        clip, j = self.players[cls][int(rng.integers(len(self.players[cls])))]
        duration = float(self.reader.meta(clip).get("duration", 0.0)) or len(self.reader.audio(clip)) / dsp.SAMPLE_RATE
        t = float(rng.uniform(0.0, max(0.0, duration - 0.2)))
        frame = self.reader.frames(clip, [t])[0]  # (H, W, 3)
        if clip.kind == "solo" and rng.random() < 0.5:
            img = augment_frames(torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None], rng,
                                 self.frame_size, self.train)[0]
        else:
            box = dict(self.reader.boxes(clip, [t]))[clip.classes[j]][0]
            pad = 0.05 + 0.4 * rng.random() if self.train else 0.1
            crop = square_crop(frame, box, self.frame_size, pad=pad)
            img = torch.from_numpy(crop).permute(2, 0, 1)
            if self.train and rng.random() < 0.5:
                img = img.flip(-1)
        return {"image": img.contiguous(), "label": torch.tensor(self.class_index[cls])}


class AudioTagging(_Base):
    """Mixtures of 1 to `max_sources` solo clips of different classes with the set of classes sounding, for
    the audio tagger (`models/audio_tagger.py`). Each source at a level drawn in [-gain_db, +gain_db] dB in
    training (0 dB in validation), windows of `segment` samples at random times.
    Item: mixture (L,) float32, target (classes,) float32 multi-hot."""

    def __init__(self, root, split: str = "train", *, length: int = 1000, seed: int = 0, segment: int = dsp.SEGMENT,
                 max_sources: int = 3, train: bool = True, gain_db: float = 6.0):
        super().__init__(root, split, length=length, seed=seed, segment=segment, n_frames=1, frame_gap=0,
                         frame_size=224, train=train, gain_db=gain_db)
        self.by_class: dict[str, list[Clip]] = {}
        for c in sorted(self.corpus.clips(split=split, kind="solo"), key=lambda c: (c.classes, c.id)):
            self.by_class.setdefault(c.classes[0], []).append(c)
        if not self.by_class:
            raise AvsepError(f"no solo clips in split {split!r} of {root}")
        self.pool = sorted(self.by_class)
        self.max_sources = max(1, min(int(max_sources), len(self.pool)))

    def _item(self, index: int) -> dict:
        rng = self._rng(index)
        n = int(rng.integers(1, self.max_sources + 1))
        chosen = [self.pool[k] for k in rng.choice(len(self.pool), size=n, replace=False)]
        mix = np.zeros(self.segment, np.float64)
        target = torch.zeros(len(self.classes))
        for cls in chosen:
            clip = self.by_class[cls][int(rng.integers(len(self.by_class[cls])))]
            wav = self.reader.audio(clip)
            mix += window(wav, self._start(rng, len(wav)), self.segment) * self._gain(rng)
            target[self.class_index[cls]] = 1.0
        return {"mixture": torch.from_numpy(mix.astype(np.float32)), "target": target}


class PictureCrops(torch.utils.data.Dataset):
    """Crops of players in stills rendered from one split's pictures (`corpus.stills`), for training the
    visual trunk to name instruments of picture families it has not seen.

    Classes are drawn uniformly; the still shows 1-3 players with the corpus' scene variety; the crop is
    the pipeline's square crop around the player's box, with the box jittered and padded at random in
    training (detector boxes are not exact), then augmentations that take away shortcuts: colour channels
    permuted or grey (a family's palette must not name the class), contrast and gamma, horizontal flip.
    The same (seed, epoch, index) gives the same item. Item: image (3, S, S) uint8, label () long.
    Needs a corpus made by `avsep data synth` (its recipe lists the pictures of each split) and those
    pictures installed.
    """

    def __init__(self, root, split: str = "train", *, length: int = 1000, seed: int = 0, frame_size: int = 224,
                 train: bool = True, stills: int = 224):
        from avsep_cli.corpus.stills import StillSampler, recipe_pictures

        self.root = Path(root)
        recipe_path = self.root / "corpus.json"
        try:
            recipe = json.loads(recipe_path.read_text())
        except (OSError, ValueError):
            raise AvsepError(f"{self.root}: no corpus recipe (corpus.json): picture crops need a corpus made by "
                             f"`avsep data synth`") from None
        self.classes = list(open_corpus(self.root).classes)
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.sampler = StillSampler(recipe_pictures(recipe, split), size=stills)
        missing = [c for c in self.classes if c not in self.sampler.pics]
        if missing:
            raise AvsepError(f"split {split!r} has no pictures of {', '.join(missing)}")
        self.split, self.length, self.seed, self.frame_size, self.train = split, length, seed, frame_size, train
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch if self.train else 0, index, 7])
        cls = self.classes[int(rng.integers(len(self.classes)))]
        for _ in range(8):  # a player pushed wholly out of frame has no box: draw again
            frame, boxes, _, visible = self.sampler.sample(rng, first=cls)
            if visible[0] and boxes[0][2] - boxes[0][0] >= 4 and boxes[0][3] - boxes[0][1] >= 4:
                break
        box = np.asarray(boxes[0], np.float64)
        if self.train:
            w, h = box[2] - box[0], box[3] - box[1]
            box = box + rng.normal(0.0, 0.06, 4) * np.array([w, h, w, h])
            pad = float(rng.uniform(0.0, 0.3))
        else:
            pad = 0.1
        img = square_crop(frame, box, self.frame_size, pad=pad).astype(np.float32)  # (S, S, 3)
        if self.train:
            if rng.random() < 0.5:
                img = img[..., rng.permutation(3)]
            if rng.random() < 0.2:
                img = np.repeat(img.mean(-1, keepdims=True), 3, -1)
            if rng.random() < 0.5:
                mean = img.mean()
                img = (img - mean) * rng.uniform(0.6, 1.4) + mean
                img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** rng.uniform(0.7, 1.4)
            if rng.random() < 0.5:
                img = img[:, ::-1]
        out = torch.from_numpy(np.ascontiguousarray(np.clip(np.round(img), 0, 255).astype(np.uint8))).permute(2, 0, 1)
        return {"image": out.contiguous(), "label": torch.tensor(self.class_index[cls])}
