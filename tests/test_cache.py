"""`avsep data index` and the training cache: files, shapes and contents equal to decoding, resumability,
dataset items identical with and without the cache, resized caches with boxes scaled to match, the
failure report, and the feature cache keyed by the trunk's weights."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from avsep_cli import cache, media
from avsep_cli.cli import main
from avsep_cli.datasets import CACHE_DIR, ClipReader, MixSeparate, MixtureOfMixtures, RCoPPairs, cache_paths
from avsep_cli.layout import open_corpus
from clihelp import assert_one_error, run

SEG = 8192


def copy_corpus(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(CACHE_DIR))
    return dst


@pytest.fixture(scope="module")
def indexed(tiny_corpus, tmp_path_factory):
    """A private copy of the tiny corpus (the fixture is shared), indexed at the default size."""
    root = copy_corpus(tiny_corpus, tmp_path_factory.mktemp("cache") / "corpus")
    assert main(["data", "index", str(root), "--workers", "2"]) == 0
    return root


def mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in (root / CACHE_DIR).rglob("*.npy")}


def test_cache_files_hold_the_decoded_clip(indexed):
    clips = open_corpus(indexed).clips()
    assert len(clips) == 20
    for clip in clips:
        apath, fpath = cache_paths(indexed, clip)
        audio, frames = np.load(apath), np.load(fpath)
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert frames.dtype == np.uint8 and frames.shape[1:] == (224, 224, 3)
        assert np.array_equal(audio, media.load_audio(clip.video))
        decoded = np.stack([img for _, img in media.iter_frames(clip.video, 8.0)])
        assert np.array_equal(frames, decoded)  # the corpus is 224 x 224 already: no resize, exact
        assert len(frames) == 48 and len(audio) == 66150  # 6 s at 8 fps and 11025 Hz
    assert not list((indexed / CACHE_DIR).rglob("*.part*")) and not list((indexed / CACHE_DIR).rglob("*.raw"))


def test_second_run_skips_everything_and_a_changed_video_is_redone(indexed, capsys):
    before = mtimes(indexed)
    rc, _, err = run(capsys, "data", "index", indexed)
    assert rc == 0, err
    assert "0 clips decoded, 20 up to date" in err
    assert mtimes(indexed) == before
    clip = open_corpus(indexed).clips()[3]
    later = time.time() + 5
    os.utime(clip.video, (later, later))  # the video changed after it was cached
    rc, _, err = run(capsys, "data", "index", indexed, "--workers", "1")
    assert rc == 0 and "1 clips decoded, 19 up to date" in err, err
    after = mtimes(indexed)
    changed = {p for p in before if after[p] != before[p]}
    assert changed == {str(p) for p in cache_paths(indexed, clip)}
    rc, _, err = run(capsys, "data", "index", indexed, "--workers", "2", "--force")
    assert rc == 0 and "20 clips decoded, 0 up to date" in err, err


@pytest.mark.parametrize("cls, kw", [(MixSeparate, {"frame_size": 64}), (MixtureOfMixtures, {"crop_size": 64}),
                                     (RCoPPairs, {"frame_size": 64}), (MixSeparate, {"frame_size": 64, "train": False})])
def test_items_from_the_cache_equal_decoded_items(indexed, tiny_corpus, cls, kw):
    """Same seed, same items, bit for bit: the reader picks the frame shown at each time (the latest at
    or before it) from the cache exactly as `media.frames_at` does from the video."""
    cached = cls(indexed, "train", length=6, segment=SEG, seed=5, **kw)
    decoded = cls(tiny_corpus, "train", length=6, segment=SEG, seed=5, **kw)
    assert (indexed / CACHE_DIR).is_dir() and not (tiny_corpus / CACHE_DIR).exists()
    for i in range(6):
        a, b = cached[i], decoded[i]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (cls.__name__, i, k)


def test_resized_cache_scales_boxes_and_stays_close_to_decoding(tiny_corpus, tmp_path, capsys):
    """A cache at --size 112 resizes with FFmpeg's area filter and the dataset then resizes to 64 with
    bilinear interpolation, while decoding resizes 224 -> 64 bilinearly in one go: two different
    resamplers, so pictures differ by a couple of grey levels on average (more on sharp edges), not
    exactly. Boxes are scaled to the cached frames, so crops show the same region."""
    root = copy_corpus(tiny_corpus, tmp_path / "c")
    rc, _, err = run(capsys, "data", "index", root, "--size", "112")
    assert rc == 0, err
    clip = open_corpus(root).clips(kind="duet")[0]
    frames = np.load(cache_paths(root, clip)[1])
    assert frames.shape[1:] == (112, 112, 3)
    ref = np.stack([img for _, img in media.iter_frames(clip.video, 8.0, size=(112, 112))])
    assert np.array_equal(frames, ref)
    times = [0.3, 2.0, 4.9]
    scaled = dict(ClipReader(root).boxes(clip, times))
    twin = next(c for c in open_corpus(tiny_corpus).clips() if c.id == clip.id)
    full = dict(ClipReader(tiny_corpus).boxes(twin, times))
    assert scaled.keys() == full.keys()
    for c in full:
        np.testing.assert_allclose(scaled[c], full[c] * 0.5, rtol=1e-6)

    kw = {"length": 4, "segment": SEG, "seed": 2, "crop_size": 64}
    a, b = MixtureOfMixtures(root, "train", **kw), MixtureOfMixtures(tiny_corpus, "train", **kw)
    for i in range(4):
        x, y = a[i], b[i]
        assert torch.equal(x["mixture"], y["mixture"]) and torch.equal(x["object_valid"], y["object_valid"])
        v = x["object_valid"]
        same = (x["crops"][v].float() - y["crops"][v].float()).abs().mean().item()
        other = (x["crops"][v].float() - y["crops"][v].roll(1, 0).float()).abs().mean().item()
        assert same < 5.0 and other > 4 * same, (same, other)
    m_a = MixSeparate(root, "train", length=4, segment=SEG, seed=2, frame_size=64, train=False)
    m_b = MixSeparate(tiny_corpus, "train", length=4, segment=SEG, seed=2, frame_size=64, train=False)
    for i in range(4):
        x, y = m_a[i], m_b[i]
        assert torch.equal(x["stems"], y["stems"])
        assert (x["frames"].float() - y["frames"].float()).abs().mean().item() < 5.0

    rc, _, err = run(capsys, "data", "index", root)  # another size: the cache is redone
    assert rc == 0 and "20 clips decoded" in err, err
    assert np.load(cache_paths(root, clip)[1], mmap_mode="r").shape[1:] == (224, 224, 3)


def test_a_broken_video_is_reported_after_the_others_are_cached(tiny_corpus, tmp_path, capsys):
    root = copy_corpus(tiny_corpus, tmp_path / "c")
    clips = open_corpus(root).clips()
    bad = clips[7].video
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # mp4 with its index cut off
    rc, _, err = run(capsys, "data", "index", root, "--workers", "2")
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 2 and "19 clips decoded, 0 up to date, 1 failed" in lines[0], err  # the summary
    assert_one_error(rc, lines[1], "could not decode")
    assert str(bad) in lines[1] and "truncated" in lines[1]
    assert all(p.exists() for c in clips if c.video != bad for p in cache_paths(root, c))
    assert not any(p.exists() for p in cache_paths(root, clips[7]))


def test_index_with_workers_as_a_command_prints_only_its_summary(tiny_corpus, tmp_path):
    """As a real `avsep` process (its SIGINT/SIGTERM handlers installed): the pool's workers, stopped with
    SIGTERM when the pool closes, must end quietly, not print a `Terminated` traceback each."""
    root = copy_corpus(tiny_corpus, tmp_path / "c")
    proc = subprocess.run([sys.executable, "-m", "avsep_cli", "data", "index", str(root), "--workers", "2",
                           "--size", "64"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "20 clips decoded, 0 up to date, 0 failed" in lines[0], proc.stderr


def test_index_bad_input(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, _, err = run(capsys, "data", "index", tmp_path / "empty")
    assert_one_error(rc, err, "not a corpus or MUSIC layout")
    rc, _, err = run(capsys, "data", "index", tmp_path / "nope")
    assert_one_error(rc, err, "is not a folder")
    rc, _, err = run(capsys, "data", "index", tmp_path, "--workers", "0")
    assert_one_error(rc, err, "--workers 0")
    rc, _, err = run(capsys, "data", "index", tmp_path, "--size", "4")
    assert_one_error(rc, err, "--size 4")


# --------------------------------------------------------------------------------------------- features


class TinyTrunk(torch.nn.Module):
    """A stand-in frozen visual trunk: (B, 3, H, W) uint8 -> (B, 8) pooled conv features."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float() / 255).relu().mean((2, 3))


def test_feature_cache_is_keyed_by_the_trunk_weights(indexed):
    clip = open_corpus(indexed).clips()[0]
    frames = torch.from_numpy(np.load(cache_paths(indexed, clip)[1])).permute(0, 3, 1, 2)  # (N, 3, H, W)
    trunk, other = TinyTrunk(0), TinyTrunk(1)
    sha, sha_other = cache.state_dict_sha256(trunk), cache.state_dict_sha256(other)
    assert len(sha) == 64 and sha != sha_other
    same = TinyTrunk(7)
    same.load_state_dict(trunk.state_dict())
    assert cache.state_dict_sha256(same) == sha == cache.state_dict_sha256(trunk.state_dict())

    assert cache.read_features(indexed, clip, sha, "pooled") is None  # never written
    feats = trunk(frames).numpy()  # (N, 8)
    path = cache.write_features(indexed, clip, sha, "pooled", feats)
    assert path == cache.feature_cache_path(indexed, clip, sha, "pooled") and sha in path.parts
    assert np.array_equal(cache.read_features(indexed, clip, sha, "pooled"), feats)

    # another trunk: another file; the first trunk's file is not read for it, and stays valid
    assert cache.feature_cache_path(indexed, clip, sha_other, "pooled") != path
    assert cache.read_features(indexed, clip, sha_other, "pooled") is None
    feats_other = other(frames).numpy()
    assert not np.allclose(feats_other, feats)
    cache.write_features(indexed, clip, sha_other, "pooled", feats_other)
    assert np.array_equal(cache.read_features(indexed, clip, sha_other, "pooled"), feats_other)
    assert np.array_equal(cache.read_features(indexed, clip, sha, "pooled"), feats)
    assert cache.read_features(indexed, clip, sha, "maps") is None  # kinds are separate files

    later = time.time() + 10  # the video changed after the features were computed: stale
    os.utime(clip.video, (later, later))
    assert cache.read_features(indexed, clip, sha, "pooled") is None
    with pytest.raises(ValueError):
        cache.feature_cache_path(indexed, clip, "not-a-hash", "pooled")
    with pytest.raises(ValueError):
        cache.feature_cache_path(indexed, clip, sha, "../x")
