"""The training cache: every clip of a corpus decoded once, so that training reads arrays, not videos.

`build_cache` (behind `avsep data index`) decodes each clip's audio (float32 mono at 11025 Hz) and its
frames (uint8 RGB at 8 fps, resized to a square `size`) into `.npy` files at `datasets.cache_paths`, the
paths `datasets.ClipReader` reads, so reader and writer cannot disagree. It runs over a process pool,
is resumable (a clip whose two files exist, are newer than its video and have the requested frame size
is skipped) and writes atomically, so an interrupted run leaves only whole files. Frames are streamed
to disk while decoding, so a five-minute MUSIC video never sits in memory.

Methods with a frozen visual trunk can also cache its features per clip with `write_features` /
`read_features`. The files are keyed by the sha256 of the trunk's weights (`state_dict_sha256`): a
changed trunk reads and writes other files, and the files of other hashes are simply never looked at.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from avsep_cli import media
from avsep_cli.datasets import CACHE_DIR, FPS, cache_paths
from avsep_cli.errors import AvsepError, MediaError, worker_pool
from avsep_cli.fsio import atomic_path
from avsep_cli.layout import Clip, open_corpus

DEFAULT_SIZE = 224
FEATURES_DIR = "features"


@dataclass
class CacheResult:
    root: Path
    decoded: int = 0
    skipped: int = 0                                        # already cached and up to date
    failed: list[tuple[Clip, str]] = field(default_factory=list)  # clip, one-line reason
    bytes: int = 0                                          # size of the clips' cache files


def _frames_shape(path: Path) -> tuple[int, ...] | None:
    """The shape in a .npy header (reads the header only), or None if unreadable."""
    try:
        return np.load(path, mmap_mode="r").shape
    except (OSError, ValueError):
        return None


def is_fresh(root: Path, clip: Clip, size: int = DEFAULT_SIZE) -> bool:
    """Both cache files exist, are at least as new as the video (symlinks followed) and the frames have
    the requested size."""
    apath, fpath = cache_paths(root, clip)
    try:
        t_video = clip.video.stat().st_mtime
        if apath.stat().st_mtime < t_video or fpath.stat().st_mtime < t_video:
            return False
    except OSError:
        return False
    shape = _frames_shape(fpath)
    return shape is not None and len(shape) == 4 and shape[1:] == (size, size, 3)


def _save_stream(path: Path, frames, dtype=np.uint8) -> int:
    """Write an iterator of equally shaped arrays as one .npy (N, ...) without holding them all: the
    frames go to a raw side file first, then the header (which needs N) and the raw bytes are joined.
    Returns N."""
    with atomic_path(path) as tmp:
        raw = tmp.with_name(tmp.name + ".raw")
        try:
            n, shape = 0, None
            with open(raw, "wb") as f:
                for img in frames:
                    img = np.ascontiguousarray(img, dtype=dtype)
                    if shape is None:
                        shape = img.shape
                    elif img.shape != shape:
                        raise MediaError(f"frame size changed mid-stream ({shape} -> {img.shape})")
                    f.write(img.tobytes())
                    n += 1
            if shape is None:
                raise MediaError("no video frame could be decoded")
            with open(tmp, "wb") as out:
                np.lib.format.write_array_header_1_0(
                    out, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                          "shape": (n, *shape)})
                with open(raw, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        finally:
            raw.unlink(missing_ok=True)
    return n


def decode_clip(video: Path, audio_path: Path, frames_path: Path, size: int) -> tuple[int, int]:
    """Decode one video into its two cache files; returns (audio samples, frames). A video already
    `size` x `size` is not rescaled, so its cached frames equal `media.frames_at`'s byte for byte."""
    info = media.probe(video)
    media.require(info, audio=True, video=True, min_duration=0.0)
    audio_path.parent.mkdir(parents=True, exist_ok=True)
    resize = None if (info.width, info.height) == (size, size) else (size, size)
    n_frames = _save_stream(frames_path, (img for _, img in media.iter_frames(video, FPS, size=resize)))
    wav = media.load_audio(video)  # (L,) float32 at 11025 Hz
    with atomic_path(audio_path) as tmp:
        np.save(tmp, wav)
    return len(wav), n_frames


def _work(args: tuple[str, str, str, int]) -> tuple[str, str | None]:
    video, apath, fpath, size = args
    try:
        decode_clip(Path(video), Path(apath), Path(fpath), size)
        return video, None
    except MediaError as e:
        return video, str(e)


def build_cache(root: str | os.PathLike, *, workers: int = 2, size: int = DEFAULT_SIZE, force: bool = False,
                progress: Callable[[int, int], None] | None = None) -> CacheResult:
    """Decode every clip of the corpus at `root` into the cache. Up-to-date clips are skipped unless
    `force`. A clip that cannot be decoded is recorded in the result (the others go on); the caller
    decides whether that is an error. `progress(done, total)` is called after every clip."""
    if workers < 1:
        raise AvsepError("--workers must be at least 1")
    if not 16 <= size <= 1024:
        raise AvsepError(f"--size {size}: expected a frame size between 16 and 1024 pixels")
    root = Path(root)
    corpus = open_corpus(root)
    clips = corpus.clips()
    res = CacheResult(root)
    todo = []
    for c in clips:
        if not force and is_fresh(root, c, size):
            res.skipped += 1
        else:
            todo.append(c)
    if todo:
        probe_dir = root / CACHE_DIR
        try:
            probe_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AvsepError(f"cannot write the cache under {root}: {e.strerror or e}") from None
    done = res.skipped
    if progress:
        progress(done, len(clips))
    by_video = {str(c.video): c for c in todo}
    args = [(str(c.video), *(str(p) for p in cache_paths(root, c)), size) for c in todo]

    def collect(video: str, err: str | None) -> None:
        nonlocal done
        if err is None:
            res.decoded += 1
        else:
            res.failed.append((by_video[video], err))
        done += 1
        if progress:
            progress(done, len(clips))

    if workers == 1 or len(todo) <= 1:
        for a in args:
            collect(*_work(a))
    else:
        # fork: the workers only use PyAV and numpy, never torch, so forking after torch was imported
        # is safe; it saves every worker re-importing the package.
        with worker_pool(min(workers, len(todo))) as pool:
            for video, err in pool.imap_unordered(_work, args, chunksize=1):
                collect(video, err)
    for c in clips:
        for p in cache_paths(root, c):
            if p.exists():
                res.bytes += p.stat().st_size
    return res


# --------------------------------------------------------------------------------------------- features

_SHA = re.compile(r"[0-9a-f]{64}")
_KIND = re.compile(r"[A-Za-z0-9_-]+")


def state_dict_sha256(weights) -> str:
    """sha256 of a module's or state dict's tensors: names, dtypes, shapes and bytes in name order, so
    the same weights give the same hash whatever file they were loaded from."""
    import torch

    sd = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    h = hashlib.sha256()
    for name in sorted(sd):
        t = sd[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def feature_cache_path(root: str | os.PathLike, clip: Clip, trunk_sha256: str, kind: str) -> Path:
    """ROOT/.avsep-cache/features/<trunk sha256>/<video path below ROOT, no suffix>.<kind>.npy."""
    if not isinstance(trunk_sha256, str) or not _SHA.fullmatch(trunk_sha256):
        raise ValueError(f"trunk_sha256 must be 64 lowercase hex digits, got {trunk_sha256!r}")
    if not _KIND.fullmatch(kind):
        raise ValueError(f"feature kind must be letters, digits, '_' or '-', got {kind!r}")
    root = Path(root)
    rel = clip.video.relative_to(root).with_suffix("")
    base = root / CACHE_DIR / FEATURES_DIR / trunk_sha256 / rel
    return base.with_name(f"{base.name}.{kind}.npy")


def write_features(root: str | os.PathLike, clip: Clip, trunk_sha256: str, kind: str, array: np.ndarray) -> Path:
    """Store a clip's features for one trunk (atomically)."""
    path = feature_cache_path(root, clip, trunk_sha256, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.save(tmp, np.asarray(array))
    return path


def read_features(root: str | os.PathLike, clip: Clip, trunk_sha256: str, kind: str,
                  mmap: bool = True) -> np.ndarray | None:
    """A clip's features for this trunk, or None when they were never written or are older than the
    video (then they must be recomputed)."""
    path = feature_cache_path(root, clip, trunk_sha256, kind)
    try:
        if path.stat().st_mtime < clip.video.stat().st_mtime:
            return None
    except OSError:
        return None
    return np.load(path, mmap_mode="r" if mmap else None)
