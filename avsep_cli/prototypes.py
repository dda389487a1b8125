"""Class prototypes: what each instrument class looks like to a separator's frozen visual trunk, so that a
recording can be separated by naming its instruments instead of showing them (`--instruments`).

A prototype is the mean trunk feature map of one class's player crops in a corpus' training split: the
crops the separation pipeline cuts around a tracked instrument (square, padded by 0.1 of the box,
`features.player_crops`) on the pipeline's 1-fps guidance grid, at most `per_class` of them per class (a
seeded draw over all of that class' players and times). Every method averages the trunk output of its K
pictures, before anything learned (IAL-CMS) or right after a per-picture head (AVPC: 6x6 conv + BatchNorm;
Sound-of-Pixels: 3x3 conv + spatial max), so K copies of a prototype stand in for K crops in
`MixBatch.features`, and features of real crops separate exactly as the crops do. Maps, not pooled vectors:
the heads read the layout (AVPC's head sees the whole 7x7 map at once, IAL-CMS attends over positions),
and the first, linear layer of each head commutes with the mean.

A method sees its trunk through a *view*, the trunk variant and picture size of its visual path: AVPC
the plain ResNet-18 at 224 px (512x7x7), Sound-of-Pixels the dilated one at 224 px (512x14x14), IAL-CMS
with the mlp head (cpu preset) the plain one at 128 px (512x4x4), IAL-CMS with its DeepLabv3+ head the
dilated one's second and last stages packed into one map (`resnet18-levels`, 1024x8x8 at 128 px,
`models/deeplab.py`), the test model `tiny` its own conv stack. A prototype file
holds, for one trunk, one (classes, C, h, w) float16 map per view, the number of crops per class, and the
sha256 of the trunk's weights (`cache.state_dict_sha256`): a separator finds the file made for its own
trunk whatever file the separator came from, and another trunk's file is refused. Files are shipped and
sha256-checked like weights (`registry`, method "prototypes"); `avsep weights prototypes` builds them.

Shapes: S sources, K pictures per source, C trunk channels, h x w trunk map.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from avsep_cli import cache, registry
from avsep_cli.errors import AvsepError

METHOD = "prototypes"  # the manifest `method` of prototype files
FORMAT = "avsep-prototypes"
VERSION = 1
GUIDE_FPS = 1.0  # the separation pipeline's default guidance grid: the times crops are taken at
KINDS = ("resnet18", "resnet18-dilated", "resnet18-levels", "tiny")
RESNET_VIEWS = ("resnet18-224", "resnet18-dilated-224", "resnet18-128")  # AVPC, Sound-of-Pixels, IAL-CMS (cpu)


@dataclass(frozen=True)
class View:
    """How a method's visual path sees a picture: trunk variant ("resnet18", "resnet18-dilated",
    "resnet18-levels", "tiny") and picture side in pixels."""

    kind: str
    size: int

    @property
    def key(self) -> str:
        return f"{self.kind}-{self.size}"

    @classmethod
    def parse(cls, key: str) -> "View":
        kind, _, size = key.rpartition("-")
        if kind not in KINDS or not size.isdigit() or not 16 <= int(size) <= 1024:
            raise AvsepError(f"unknown view {key!r}: expected resnet18-SIZE, resnet18-dilated-SIZE, resnet18-levels-SIZE "
                             "or tiny-SIZE "
                             f"(e.g. {', '.join(RESNET_VIEWS)})")
        return cls(kind, int(size))


# --- the trunk of a model ----------------------------------------------------------------------------


def _resnet(model: torch.nn.Module):
    from avsep_cli.models.resnet import ResNet18Trunk

    return next((m for m in model.modules() if isinstance(m, ResNet18Trunk)), None)


def _trunk_module(model: torch.nn.Module) -> torch.nn.Module:
    """The frozen feature extractor of a separator: its ResNet-18 trunk (tiny: its visual conv stack)."""
    from avsep_cli.models.tiny import TinyNet

    trunk = _resnet(model)
    if trunk is not None:
        return trunk
    if isinstance(model, TinyNet):
        return model.visual
    raise AvsepError(f"a {type(model).__name__} model has no visual trunk: it cannot be guided by class prototypes")


def view_of(model: torch.nn.Module) -> View:
    """The view of a separator (AVPC, Sound-of-Pixels, IAL-CMS or tiny model)."""
    trunk = _resnet(model)
    size = int(model.config.frame_size)
    if trunk is None:
        _trunk_module(model)  # refuses a model without a visual trunk
        return View("tiny", size)
    if getattr(getattr(model, "visual", None), "head_kind", None) == "deeplab":
        return View("resnet18-levels", size)
    return View("resnet18-dilated" if trunk.layer4[0].conv1.stride == (1, 1) else "resnet18", size)


def trunk_sha256(model: torch.nn.Module) -> str:
    """sha256 of the weights of a separator's trunk (names, dtypes, shapes, bytes): what a prototype file
    must have been made with."""
    return cache.state_dict_sha256(_trunk_module(model))


def _extract(model: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """(N, K, 3, S, S) uint8 -> (N, K, C, h, w): the model's own trunk output, computed as its visual path
    computes it (AVPC / Sound-of-Pixels `frame_net.features`, IAL-CMS's visual encoder, tiny `features`)."""
    trunk = _resnet(model)
    if trunk is None:
        return model.features(frames)
    return _resnet_features(_packed(trunk) if view_of(model).kind == "resnet18-levels" else trunk, frames)


def _packed(trunk: torch.nn.Module) -> torch.nn.Module:
    from avsep_cli.models.deeplab import PackedTrunk

    return PackedTrunk(trunk)


def _resnet_features(trunk: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """(N, K, 3, S, S) uint8 -> (N, K, C, h, w) through a ResNet-18 trunk (ImageNet normalisation first;
    C = 512, or 1024 through `deeplab.PackedTrunk`)."""
    from avsep_cli.models.frames import normalize

    n, k = frames.shape[:2]
    f = trunk(normalize(frames.flatten(0, 1)))  # (N*K, C, h, w)
    return f.view(n, k, *f.shape[1:])


@torch.no_grad()
def trunk_features(method, frames: torch.Tensor) -> torch.Tensor:
    """frames (..., K, 3, S, S) uint8 at the method's frame size -> (..., K, C, h, w) float32: what the
    method's visual path gets from its trunk. As `MixBatch.features` they separate exactly as the frames do
    (so one batch can mix pictured sources with named ones)."""
    model = method.model
    dev = next(model.parameters()).device
    lead = frames.shape[:-4]
    f = _extract(model, frames.reshape(-1, *frames.shape[-4:]).to(dev))
    return f.reshape(*lead, *f.shape[1:]).float()


# --- prototype files ---------------------------------------------------------------------------------


@dataclass
class Prototypes:
    """One prototype file: per view, a (classes, C, h, w) map per class."""

    name: str
    sha256: str
    classes: tuple[str, ...]
    crops: dict[str, int]  # class -> crops averaged
    trunk: str  # what the trunk was called when the file was made (a shipped name or a file name)
    trunk_sha256: str | None  # sha256 of that file
    trunk_state_sha256: str  # sha256 of the trunk's weights: what a separator's trunk must match
    maps: dict[str, torch.Tensor]  # view key -> (classes, C, h, w) float32

    def guidance(self, classes: Iterable[str], method) -> torch.Tensor:
        """(S, K, C, h, w) float32: K copies (the method's frames per source) of each named class'
        prototype, in the method's view; names are checked (`check_names`), not deduplicated."""
        view = view_of(method.model)
        if view.key not in self.maps:
            raise AvsepError(f"prototypes {self.name!r} hold no {view.key} maps (they have {', '.join(self.maps)}): "
                             f"rebuild them with avsep weights prototypes --view {view.key}")
        classes = list(classes)
        check_names(classes, self.classes)
        idx = torch.tensor([self.classes.index(_normal(c)) for c in classes], dtype=torch.long)
        k = max(1, int(getattr(method, "frames_per_source", 1)))
        m = self.maps[view.key].index_select(0, idx)  # (S, C, h, w)
        return m[:, None].repeat(1, k, 1, 1, 1)


def load(spec: str | Path, folder: Path | None = None) -> Prototypes:
    """A shipped prototype file by name (sha256-checked against the manifest) or a .safetensors path."""
    r = registry.resolve_tensors(spec, METHOD, folder)
    meta = r.metadata
    if meta.get("format") != FORMAT:
        raise AvsepError(f"{r.path} is not an avsep prototype file (metadata format {meta.get('format')!r})")
    try:
        classes = tuple(json.loads(meta["classes"]))
        views = json.loads(meta["views"])
        counts = r.tensors["crops"].tolist()
        maps = {v: r.tensors[v].float() for v in views}
        if any(m.shape[0] != len(classes) for m in maps.values()) or len(counts) != len(classes):
            raise ValueError("class count mismatch")
        return Prototypes(r.name, r.sha256, classes, dict(zip(classes, counts)), meta["trunk"],
                          meta.get("trunk_sha256") or None, meta["trunk_state_sha256"], maps)
    except (KeyError, ValueError, json.JSONDecodeError) as e:
        raise AvsepError(f"{r.path}: broken prototype file ({e})") from None


def for_method(method, spec: str | Path | Prototypes | None = None, folder: Path | None = None) -> Prototypes:
    """The prototypes for `method`'s trunk: `spec` (a shipped name, a file, or already loaded), by default
    the shipped file made with the same trunk weights. Prototypes of another trunk are refused."""
    sha = trunk_sha256(method.model)
    if isinstance(spec, Prototypes):
        protos = spec
    elif spec is not None:
        protos = load(spec, folder)
    else:
        found = [e for e in registry.entries(folder) if e.get("method") == METHOD and e.get("trunk_state_sha256") == sha]
        view = view_of(method.model).key
        found = [e for e in found if view in e.get("views", [view])] or found
        if not found:
            weights = getattr(method, "weights_name", None) or method.name
            raise AvsepError(f"no class prototypes ship for the visual trunk of {weights}: build them with "
                             f"avsep weights prototypes --root CORPUS --trunk {weights}")
        protos = load(found[0]["name"], folder)
    if protos.trunk_state_sha256 != sha:
        raise AvsepError(f"prototypes {protos.name!r} were made with another visual trunk ({protos.trunk}) than "
                         f"{getattr(method, 'weights_name', None) or method.name}'s")
    return protos


def known_classes(method, spec: str | Path | Prototypes | None = None) -> tuple[str, ...]:
    """The instrument names `method` can separate by name: the classes its prototype file holds."""
    return for_method(method, spec).classes


def _normal(name: str) -> str:
    return re.sub(r"[\s-]+", "_", name.strip().lower())


def parse_names(text: str) -> list[str]:
    """'violin, Cello' -> ['violin', 'cello']: comma-separated, lower case, spaces and hyphens as '_'."""
    names = [_normal(n) for n in text.split(",") if n.strip()]
    if not names:
        raise AvsepError("--instruments: name at least one instrument (e.g. --instruments violin,cello)")
    return names


def check_names(names: Iterable[str], known: Iterable[str]) -> list[str]:
    """The names normalised (see `parse_names`), in order, duplicates dropped; AvsepError, one line listing
    the known classes, when one is not among `known`."""
    known = list(known)
    out = list(dict.fromkeys(_normal(n) for n in names))
    bad = [n for n in out if n not in known]
    if bad:
        what = "instrument" if len(bad) == 1 else "instruments"
        raise AvsepError(f"unknown {what} {', '.join(repr(b) for b in bad)}; known: {', '.join(known)}")
    return out


def guidance_for(classes: list[str], method, prototypes: str | Path | Prototypes | None = None) -> torch.Tensor:
    """(S, K, C, h, w) float32 guidance for the named classes: stack B of these as `MixBatch.features`
    (B, S, K, C, h, w) and `method.separate` returns their stems. `prototypes` as in `for_method`."""
    return for_method(method, prototypes).guidance(classes, method)


# --- building ----------------------------------------------------------------------------------------


@dataclass
class Source:
    """Where the trunk comes from: shipped visual-trunk weights or a separator (whose trunk is its own)."""

    name: str
    sha256: str
    views: dict[View, Callable[[torch.Tensor], torch.Tensor]]  # view -> (N, K, 3, S, S) uint8 -> (N, K, C, h, w)
    state_sha256: str


def trunk_source(spec: str | Path, views: list[str] | None = None, device="cpu") -> Source:
    """Visual-trunk weights (its plain and dilated trunks, `views` default RESNET_VIEWS) or separator
    weights (its own view), by shipped name or file."""
    from avsep_cli.models.resnet import FrozenResNet18Trunk

    r = registry.resolve(spec)
    model = registry.build(r, device).eval()
    if r.data["model_name"] == "visual-trunk":
        state = model.trunk.state_dict()
        out = {}
        for key in views or RESNET_VIEWS:
            v = View.parse(key)
            if v.kind == "tiny":
                raise AvsepError(f"view {key}: visual-trunk weights have resnet18 views only")
            trunk = FrozenResNet18Trunk(dilated=v.kind != "resnet18").to(device)
            trunk.load_state_dict(state)
            out[v] = partial(_resnet_features, _packed(trunk) if v.kind == "resnet18-levels" else trunk)
        return Source(r.name, r.sha256, out, cache.state_dict_sha256(model.trunk))
    own = view_of(model)
    if views and [View.parse(k) for k in views] != [own]:
        raise AvsepError(f"{spec} is a {r.data['model_name']} separator: its only view is {own.key}")
    return Source(r.name, r.sha256, {own: lambda x: _extract(model, x)}, trunk_sha256(model))


def _candidates(root: Path, split: str, fps: float) -> tuple[list, dict[str, list[tuple[int, int, float]]]]:
    """The split's clips (sorted) and, per class, every (clip index, player, time) on the `fps` grid where
    that player has a box."""
    from avsep_cli.datasets import ClipReader
    from avsep_cli.layout import open_corpus

    corpus = open_corpus(root)
    reader = ClipReader(root)
    clips = sorted(corpus.clips(split=split), key=lambda c: (c.kind, c.classes, c.id))
    cands: dict[str, list[tuple[int, int, float]]] = {}
    for ci, clip in enumerate(clips):
        meta = reader.meta(clip)
        duration = float(meta.get("duration") or 0.0)
        box_fps = float(meta.get("fps", 8.0))
        times = [i / fps for i in range(int(np.ceil(duration * fps - 1e-9)))]
        for j, p in enumerate(meta.get("players") or []):
            boxes = p.get("boxes") or []
            for t in times:
                i = min(len(boxes) - 1, int(np.floor(t * box_fps + 1e-6)))
                if boxes and boxes[i] is not None:
                    cands.setdefault(p["class"], []).append((ci, j, t))
    return clips, cands


@torch.no_grad()
def build(root: str | Path, source: Source, *, split: str = "train", per_class: int = 256, fps: float = GUIDE_FPS,
          seed: int = 0, batch: int = 32, progress: Callable[[int, int], None] | None = None) -> tuple[dict, dict]:
    """Prototypes of every class with boxes in `split` of the corpus at `root` -> (tensors, metadata) for
    `registry.export_tensors`: per view a (classes, C, h, w) float16 mean map, and `crops` (classes,)."""
    from avsep_cli.datasets import ClipReader
    from avsep_cli.features import player_crops

    if per_class < 1 or not fps > 0:
        raise AvsepError("need --per-class >= 1 and a positive guidance rate")
    root = Path(root)
    clips, cands = _candidates(root, split, fps)
    if not cands:
        raise AvsepError(f"{root}: no clip of split {split!r} has player boxes (a synthetic corpus has them)")
    classes = sorted(cands)
    picks: dict[int, dict[int, list[tuple[float, int]]]] = {}  # clip -> player -> [(time, class index)]
    for c, cls in enumerate(classes):
        rows = cands[cls]
        rng = np.random.default_rng([seed, c])
        chosen = sorted(rng.choice(len(rows), size=min(per_class, len(rows)), replace=False).tolist())
        for ci, j, t in (rows[i] for i in chosen):
            picks.setdefault(ci, {}).setdefault(j, []).append((t, c))
    total = sum(len(ts) for per in picks.values() for ts in per.values())
    reader = ClipReader(root)
    sums = {v: None for v in source.views}
    counts = torch.zeros(len(classes), dtype=torch.long)
    pending: dict[View, list[tuple[torch.Tensor, int]]] = {v: [] for v in source.views}

    def flush(v: View) -> None:
        if not pending[v]:
            return
        crops = torch.stack([p for p, _ in pending[v]])[:, None]  # (N, 1, 3, S, S)
        f = source.views[v](crops)[:, 0].double()  # (N, C, h, w)
        if sums[v] is None:
            sums[v] = torch.zeros(len(classes), *f.shape[1:], dtype=torch.float64)
        sums[v].index_add_(0, torch.tensor([c for _, c in pending[v]]), f)
        pending[v].clear()

    done = 0
    for ci in sorted(picks):
        clip = clips[ci]
        times = sorted({t for ts in picks[ci].values() for t, _ in ts})
        frames = reader.frames(clip, times)  # read once per clip, cropped per player and view
        for j, ts in sorted(picks[ci].items()):
            at = [times.index(t) for t, _ in ts]
            for v in source.views:
                crops = player_crops(reader, clip, [times[a] for a in at], j, v.size, frames=frames[at])
                pending[v] += [(crop, c) for crop, (_, c) in zip(crops, ts)]
                if len(pending[v]) >= batch:
                    flush(v)
            for _, c in ts:
                counts[c] += 1
            done += len(ts)
            if progress:
                progress(done, total)
    for v in source.views:
        flush(v)
    tensors = {v.key: (sums[v] / counts.view(-1, 1, 1, 1)).to(torch.float16) for v in source.views}
    tensors["crops"] = counts
    meta = {"format": FORMAT, "version": str(VERSION), "classes": json.dumps(classes),
            "views": json.dumps([v.key for v in source.views]), "trunk": source.name, "trunk_sha256": source.sha256,
            "trunk_state_sha256": source.state_sha256,
            "recipe": json.dumps({"split": split, "per_class": per_class, "fps": fps, "seed": seed,
                                  "crop": "square_crop, padding 0.1 of the box (the pipeline's crops)"})}
    return tensors, meta


def export(tensors: dict, meta: dict, name: str, *, folder: Path | None = None, extra: dict | None = None) -> dict:
    """Write a built prototype file into the weights folder and record it in the manifest."""
    classes = json.loads(meta["classes"])
    entry = {"trunk": meta["trunk"], "trunk_sha256": meta["trunk_sha256"], "trunk_state_sha256": meta["trunk_state_sha256"],
             "classes": classes, "views": json.loads(meta["views"]),
             "crops_per_class": dict(zip(classes, tensors["crops"].tolist())), "recipe": json.loads(meta["recipe"]),
             **(extra or {})}
    return registry.export_tensors(tensors, meta, name, METHOD, folder=folder, extra=entry)
