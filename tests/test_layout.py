"""The corpus reader shared by every later issue: MUSIC-style folders with videos only, synthetic corpora
with stems, sidecars and splits, unfinished clips, and folders that are neither."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from avsep_cli import media
from avsep_cli.errors import AvsepError
from avsep_cli.layout import Clip, open_corpus


def _video(path, seconds=1.0, fps=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.full((int(seconds * fps), 64, 64, 3), 120, np.uint8)
    t = np.arange(int(seconds * 11025)) / 11025
    media.write_video(path, frames, fps, audio=0.2 * np.sin(2 * np.pi * 440 * t).astype(np.float32), sr=11025)
    return path


def test_music_download_layout_with_videos_only(tmp_path):
    _video(tmp_path / "solo" / "violin" / "abc123.mp4")
    _video(tmp_path / "solo" / "acoustic_guitar" / "xyz.mp4")
    _video(tmp_path / "duet" / "acoustic_guitar violin" / "d1.mp4")   # MUSIC's own folder naming
    _video(tmp_path / "duet" / "flute+tuba" / "d2.mp4")                 # ours
    (tmp_path / "solo" / "violin" / "notes.txt").write_text("not a video")
    c = open_corpus(tmp_path)
    assert c.recipe is None
    assert c.classes == ("acoustic_guitar", "flute", "tuba", "violin")
    assert [x.id for x in c.clips(kind="solo")] == ["xyz", "abc123"]
    d1 = next(x for x in c.clips(kind="duet") if x.id == "d1")
    assert d1 == Clip("d1", "duet", ("acoustic_guitar", "violin"), tmp_path / "duet" / "acoustic_guitar violin" / "d1.mp4",
                      {}, None, None)
    assert {x.classes for x in c.clips(kind="duet")} == {("acoustic_guitar", "violin"), ("flute", "tuba")}
    assert len(c) == 4 and c.clips(split="train") == []


def test_synth_layout_with_stems_sidecars_splits_and_unfinished_clips(tmp_path):
    (tmp_path / "corpus.json").write_text(json.dumps({"format": "avsep-synth-corpus", "seed": 3,
                                                      "classes": ["cello", "flute", "piano"]}))
    done = _video(tmp_path / "solo" / "cello" / "syn000000.mp4")
    done.with_name("syn000000.cello.flac").write_bytes(b"")
    done.with_suffix(".json").write_text("{}")
    _video(tmp_path / "solo" / "cello" / "syn000001.mp4")           # no sidecar yet: still being made
    duet = _video(tmp_path / "duet" / "flute+piano" / "syn000002.mp4")
    for c in ("flute", "piano"):
        duet.with_name(f"syn000002.{c}.flac").write_bytes(b"")
    duet.with_suffix(".json").write_text("{}")
    (tmp_path / "splits").mkdir()
    for split, rows in (("train", [("syn000000", "solo", "cello", "solo/cello/syn000000.mp4")]),
                        ("test", [("syn000002", "duet", "flute+piano", "duet/flute+piano/syn000002.mp4")]),
                        ("val", [])):
        with open(tmp_path / "splits" / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "kind", "classes", "video"])
            w.writerows(rows)
    c = open_corpus(tmp_path)
    assert c.recipe["seed"] == 3 and c.classes == ("cello", "flute", "piano")
    assert [x.id for x in c.clips()] == ["syn000000", "syn000002"]
    (train,) = c.clips(split="train")
    assert train.stems == {"cello": done.with_name("syn000000.cello.flac")} and train.sidecar == done.with_suffix(".json")
    (test,) = c.clips(split="test", kind="duet")
    assert set(test.stems) == {"flute", "piano"} and test.split == "test"
    assert c.clips(split="val") == []


@pytest.mark.parametrize("make", ["empty", "file", "other", "bad_recipe"])
def test_folders_that_are_not_corpora_raise_one_clear_error(tmp_path, make):
    target = tmp_path / "x"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("hello")
    elif make == "other":
        (target / "images").mkdir(parents=True)
        _video(target / "clip.mp4")
    else:
        target.mkdir()
        (target / "corpus.json").write_text("{not json")
    with pytest.raises(AvsepError, match="not a corpus or MUSIC layout"):
        open_corpus(target)


def test_unknown_split_or_kind_is_refused(tmp_path):
    _video(tmp_path / "solo" / "violin" / "a.mp4")
    c = open_corpus(tmp_path)
    with pytest.raises(AvsepError, match="unknown split"):
        c.clips(split="training")
    with pytest.raises(AvsepError, match="unknown clip kind"):
        c.clips(kind="trio")
