"""`avsep data music` on a fake MUSIC download: the tiny corpus' videos renamed to YouTube-like ids and
listed in MUSIC-format JSON files, with some listed videos never "downloaded". Checks the layout, the
papers' split convention, the report of missing videos, that every reader and `avsep eval` accept the
result, the bad-input contract, and the Sound-of-Pixels index CSV reader."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from avsep_cli import music as M
from avsep_cli.cli import main
from avsep_cli.datasets import MixSeparate
from avsep_cli.errors import AvsepError
from avsep_cli.layout import open_corpus
from clihelp import assert_one_error, run


def yt_id(i: int) -> str:
    """An 11-character YouTube-like id; some start with '-' as real ones can."""
    return f"{'-' if i % 3 == 0 else 'Q'}x{i:03d}_Yt{'ab'[i % 2]}Z9"


@pytest.fixture(scope="module")
def download(tiny_corpus, tmp_path_factory):
    """(folder with videos/, solo.json, duet.json, expected) where expected maps each JSON key to its
    listed ids (in order), the corpus clip behind each present id, and the ids left missing."""
    d = tmp_path_factory.mktemp("music-download")
    videos = d / "videos"
    (videos / "batch2").mkdir(parents=True)
    corpus = open_corpus(tiny_corpus)
    clip_of: dict[str, object] = {}
    listed: dict[str, list[str]] = {}
    missing: set[str] = set()
    n = 0

    def add(key: str, clips: list, missing_at: int) -> None:
        nonlocal n
        ids = []
        for c in clips:
            ids.append(yt_id(n))
            clip_of[ids[-1]] = c
            n += 1
        ghost = yt_id(n)  # listed but never downloaded
        n += 1
        missing.add(ghost)
        ids.insert(missing_at, ghost)
        listed[key] = ids

    solos = {}
    for c in sorted(corpus.clips(kind="solo"), key=lambda c: c.id):
        solos.setdefault(c.classes[0], []).append(c)
    # flute's first listed video is the missing one: it then has no val clip (splits follow the list)
    add("flute", solos["flute"], 0)
    add("Piano", solos["piano"], 4)  # class names are normalised to lower_snake_case
    add("trumpet", solos["trumpet"], 2)
    add("violin", solos["violin"], 4)
    duets = {}
    for c in sorted(corpus.clips(kind="duet"), key=lambda c: c.id):
        duets.setdefault(c.classes, []).append(c)
    assert set(duets) == {("flute", "piano"), ("flute", "violin")}
    add("piano flute", duets[("flute", "piano")], 2)  # MUSIC's own form: space, unsorted
    add("violin+flute", duets[("flute", "violin")], 2)

    for i, (vid, c) in enumerate(sorted(clip_of.items())):
        dst = (videos / "batch2" if i % 4 == 0 else videos) / f"{vid}.mp4"  # downloads may sit in sub-folders
        shutil.copyfile(c.video, dst)
    (videos / f"{yt_id(1)}.f137.mp4.part").write_bytes(b"unfinished yt-dlp fragment")
    (videos / ".hidden.mp4").write_bytes(b"not a video")
    solo_json, duet_json = d / "MUSIC_solo_videos.json", d / "MUSIC_duet_videos.json"
    solo_json.write_text(json.dumps({"videos": {k: listed[k] for k in ("flute", "Piano", "trumpet", "violin")}}))
    duet_json.write_text(json.dumps({"videos": {k: listed[k] for k in ("piano flute", "violin+flute")}}))
    return {"dir": d, "videos": videos, "solo": solo_json, "duet": duet_json, "listed": listed,
            "clip_of": clip_of, "missing": missing}


FOLDER = {"flute": "solo/flute", "Piano": "solo/piano", "trumpet": "solo/trumpet", "violin": "solo/violin",
          "piano flute": "duet/flute+piano", "violin+flute": "duet/flute+violin"}


def read_split(root: Path, split: str) -> list[dict]:
    with open(root / "splits" / f"{split}.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def organised(download, tmp_path_factory):
    root = tmp_path_factory.mktemp("music-root") / "MUSIC"
    rc = main(["data", "music", "--json", str(download["solo"]), "--json", str(download["duet"]),
               "--videos", str(download["videos"]), "-o", str(root)])
    assert rc == 0
    return root


def test_layout_links_every_found_video(organised, download):
    root = organised
    for key, ids in download["listed"].items():
        folder = root / FOLDER[key]
        present = [i for i in ids if i not in download["missing"]]
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{i}.mp4" for i in present)
        for i in present:
            link = folder / f"{i}.mp4"
            assert link.is_symlink() and Path(link.readlink()).is_absolute()
            assert link.read_bytes() == download["clip_of"][i].video.read_bytes()
    names = [p.name for p in root.rglob("*")]
    assert not [n for n in names for m in download["missing"] if m in n]


def test_split_convention_first_val_second_test(organised, download):
    root = organised
    splits = {s: read_split(root, s) for s in ("train", "val", "test")}
    for rows in splits.values():
        assert rows and set(rows[0]) == {"id", "kind", "classes", "video"}
    by_id = {r["id"]: (s, r) for s, rows in splits.items() for r in rows}
    for key, ids in download["listed"].items():
        for pos, vid in enumerate(ids):
            if vid in download["missing"]:
                assert vid not in by_id
                continue
            split, row = by_id[vid]
            assert split == ("val" if pos == 0 else "test" if pos == 1 else "train"), (key, pos)
            assert row["video"] == f"{FOLDER[key]}/{vid}.mp4"
            assert row["kind"] == FOLDER[key].split("/")[0]
            assert row["classes"] == FOLDER[key].split("/")[1]
    # flute's first listed video was never downloaded, so flute has no val clip at all
    assert not [r for r in splits["val"] if r["classes"] == "flute"]
    assert len(splits["val"]) == 5 and len(splits["test"]) == 6 and len(splits["train"]) == 9


def test_missing_videos_are_counted_per_key_and_listed(download, tmp_path, capsys):
    root = tmp_path / "m"
    rc, _, err = run(capsys, "data", "music", "--json", download["solo"], "--json", download["duet"],
                     "--videos", download["videos"], "-o", root)
    assert rc == 0, err
    assert "6 listed videos missing" in err and "20 clips (train 9, val 5, test 6)" in err
    assert sorted((root / "missing.txt").read_text().split()) == sorted(download["missing"])
    res = M.organise([download["solo"], download["duet"]], download["videos"], root, force=True)
    reports = {r.key: r for r in res.reports}
    for key, ids in download["listed"].items():
        r = reports[key]
        assert (r.folder, r.listed, r.found) == (FOLDER[key], len(ids), len(ids) - 1)
        assert r.missing == [i for i in ids if i in download["missing"]]
    assert res.missing == 6


def test_readers_and_eval_accept_the_layout(organised, download, capsys):
    corpus = open_corpus(organised)
    assert corpus.recipe is None and corpus.classes == ("flute", "piano", "trumpet", "violin")
    train = corpus.clips(split="train")
    assert len(train) == 9 and len(corpus.clips(split="val")) == 5 and len(corpus.clips(split="test")) == 6
    for c in corpus.clips():
        assert c.stems == {} and c.sidecar is None
        assert c.classes == download["clip_of"][c.id].classes
    ds = MixSeparate(organised, "train", length=2, segment=4096, frame_size=32)
    item = ds[0]
    assert item["stems"].shape == (2, 4096) and item["frames"].shape == (2, 3, 3, 32, 32)
    rc, out, err = run(capsys, "eval", "--method", "mixture", "--data", organised, "--split", "train", "--num", "2")
    assert rc == 0, err
    assert "mixture" in out + err


def test_copy_mode_makes_real_files(download, tmp_path, capsys):
    root = tmp_path / "copied"
    rc, _, err = run(capsys, "data", "music", "--json", download["solo"], "--videos", download["videos"],
                     "-o", root, "--copy")
    assert rc == 0, err
    vids = sorted(root.glob("solo/*/*.mp4"))
    assert len(vids) == 16 and not any(p.is_symlink() for p in vids)
    assert all(p.read_bytes() == download["clip_of"][p.stem].video.read_bytes() for p in vids)
    assert not (root / "duet").exists()


def test_bad_input_one_line_exit_2(download, tmp_path, capsys):
    args = ["--videos", download["videos"], "-o", tmp_path / "out"]
    for name, content, phrase in [
        ("list.json", json.dumps([["flute", "abc"]]), "not a MUSIC list"),
        ("other.json", json.dumps({"clips": {"flute": ["a"]}}), "not a MUSIC list"),
        ("ids.json", json.dumps({"videos": {"flute": "abc"}}), "is not a list of YouTube ids"),
        ("trio.json", json.dumps({"videos": {"a b c": ["x"]}}), "names 3 classes"),
        ("broken.json", '{"videos": {', "not readable JSON"),
    ]:
        (tmp_path / name).write_text(content)
        rc, _, err = run(capsys, "data", "music", "--json", tmp_path / name, *args)
        assert_one_error(rc, err, phrase)
    rc, _, err = run(capsys, "data", "music", "--json", tmp_path / "nope.json", *args)
    assert_one_error(rc, err, "no such file")
    rc, _, err = run(capsys, "data", "music", "--json", download["solo"], "--videos", tmp_path / "no-videos",
                     "-o", tmp_path / "out")
    assert_one_error(rc, err, "no such folder")
    rc, _, err = run(capsys, "data", "music", "--json", download["solo"], "-o", tmp_path / "out")
    assert_one_error(rc, err, "--json needs --videos")
    assert not (tmp_path / "out").exists()  # nothing was written by any refused run

    root = tmp_path / "again"
    assert run(capsys, "data", "music", "--json", download["solo"], *args[:2], "-o", root)[0] == 0
    rc, _, err = run(capsys, "data", "music", "--json", download["solo"], *args[:2], "-o", root)
    assert_one_error(rc, err, "output exists")
    assert "--force" in err
    rc, _, err = run(capsys, "data", "music", "--json", download["solo"], *args[:2], "-o", root, "--force")
    assert rc == 0, err


def test_refuses_to_write_into_a_synthetic_corpus(download, tiny_corpus, tmp_path, capsys):
    fake = tmp_path / "synth"
    fake.mkdir()
    shutil.copyfile(tiny_corpus / "corpus.json", fake / "corpus.json")
    rc, _, err = run(capsys, "data", "music", "--json", download["solo"], "--videos", download["videos"],
                     "-o", fake, "--force")
    assert_one_error(rc, err, "holds a synthetic corpus")
    assert sorted(p.name for p in fake.iterdir()) == ["corpus.json"]


def test_class_names_and_keys():
    assert M.normalise_class("Acoustic Guitar") == "acoustic_guitar"
    assert M.parse_key("acoustic_guitar violin") == ("duet", ("acoustic_guitar", "violin"))
    assert M.parse_key("violin+cello") == ("duet", ("cello", "violin"))
    assert M.parse_key("Xylophone") == ("solo", ("xylophone",))


# --------------------------------------------------------------------------------------------- index CSVs


def test_index_csv_reader_and_check(tmp_path, capsys):
    (tmp_path / "data/audio/violin").mkdir(parents=True)
    (tmp_path / "data/audio/violin/aaaaaaaaaaa.mp3").write_bytes(b"\0" * 16)
    frames = tmp_path / "data/frames/violin/aaaaaaaaaaa.mp4"
    frames.mkdir(parents=True)
    for k in range(1, 4):
        (frames / f"{k:06d}.jpg").write_bytes(b"\xff\xd8")
    idx = tmp_path / "data/train.csv"
    idx.write_text("data/audio/violin/aaaaaaaaaaa.mp3,data/frames/violin/aaaaaaaaaaa.mp4,1580544,3\n"
                   "data/audio/cello/bbbbbbbbbbb.mp3,data/frames/cello/bbbbbbbbbbb.mp4,1000,201\n\n")
    rows = M.read_index_csv(idx)
    assert rows == [M.IndexRow("data/audio/violin/aaaaaaaaaaa.mp3", "data/frames/violin/aaaaaaaaaaa.mp4", 1580544, 3),
                    M.IndexRow("data/audio/cello/bbbbbbbbbbb.mp3", "data/frames/cello/bbbbbbbbbbb.mp4", 1000, 201)]
    assert rows[0].id == "aaaaaaaaaaa" and rows[0].label == "violin"
    # paths are relative to the training code's folder (here: the CSV's parent's parent); not found
    # from the current folder, they are tried below the CSV's folder and the folders above it
    chk = M.check_index_rows(rows, idx)
    assert chk.rows == 2 and chk.labels == {"cello": 1, "violin": 1}
    assert chk.audio_missing == [rows[1].audio_path] and chk.frames_missing == [rows[1].frames_folder]
    assert chk.frames_short == []
    rc, _, err = run(capsys, "data", "music", "--index-csv", idx)
    assert rc == 0, err
    assert "2 rows, 2 classes" in err and "audio missing 1" in err and "not imported" in err

    bad = tmp_path / "bad.csv"
    for content, phrase in [("a.mp3,f,12\n", "line 1: 3 fields"), ("a.mp3,f,12,x\n", "must be integers"), ("\n", "no rows")]:
        bad.write_text(content)
        with pytest.raises(AvsepError, match=phrase):
            M.read_index_csv(bad)
    bad.write_text("a.mp3,f,1,2\nb.mp3,g,3\n")
    rc, _, err = run(capsys, "data", "music", "--index-csv", bad)
    assert_one_error(rc, err, "line 2: 3 fields")
    rc, _, err = run(capsys, "data", "music")
    assert_one_error(rc, err, "nothing to do")


def test_index_of_an_organised_layout_follows_the_links(organised, tmp_path, capsys):
    """`avsep data index` caches a linked MUSIC layout; the reader then serves the same audio."""
    root = tmp_path / "MUSIC"
    shutil.copytree(organised, root, symlinks=True)
    rc, _, err = run(capsys, "data", "index", root, "--workers", "1", "--size", "64")
    assert rc == 0, err
    clip = open_corpus(root).clips(split="val")[0]
    from avsep_cli import media
    from avsep_cli.datasets import cache_paths

    apath, fpath = cache_paths(root, clip)
    assert np.array_equal(np.load(apath), media.load_audio(clip.video))
    assert np.load(fpath, mmap_mode="r").shape[1:] == (64, 64, 3)
