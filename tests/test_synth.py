"""`avsep data synth`: the tiny corpus is generated for real (FluidSynth, pictures, H.264 + FLAC) and its
media are checked: timing, determinism, mixture = sum of stems after decoding, non-silent stems, boxes
on the drawn instruments, class separability of the stems, resuming, and one clear error per bad input.

The corpus uses TimGM6mb (bundled with pretty_midi) and the procedural drawings only (a licence filter
no asset package matches), so the tests do not depend on which asset packages the machine has.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from avsep_cli import media
from avsep_cli.cli import main
from avsep_cli.corpus import classes as C
from avsep_cli.corpus import generate as G
from avsep_cli.corpus import pictures as P
from avsep_cli.layout import open_corpus

TIM = C.timgm6mb_path()
OPTS = dict(size="tiny", soundfonts=[TIM], licences=["drawings-only"], assets=None)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synth-cache")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, cache):
    root = tmp_path_factory.mktemp("tiny") / "corpus"
    t0 = time.perf_counter()
    G.generate(root, workers=2, seed=0, cache_dir=cache, **OPTS)
    return root, time.perf_counter() - t0


def _files(root: Path, pattern: str) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob(pattern)) if p.is_file()}


def test_tiny_preset_is_fast_and_in_music_layout(corpus):
    root, seconds = corpus
    assert seconds < 60, f"tiny preset took {seconds:.1f} s"
    c = open_corpus(root)
    clips = c.clips()
    assert 0 < len(clips) <= 20
    duets = c.clips(kind="duet")
    assert len(duets) >= 2 and len(c.clips(kind="solo")) >= 8
    assert c.recipe["seed"] == 0 and c.classes == tuple(G.PRESETS["tiny"].classes)
    assert (root / "classes.txt").read_text().split() == list(c.classes)
    for clip in clips:
        folder = clip.video.parent
        if clip.kind == "solo":
            assert folder == root / "solo" / clip.classes[0]
        else:
            assert folder == root / "duet" / "+".join(clip.classes) and clip.classes[0] < clip.classes[1]
        assert set(clip.stems) == set(clip.classes)
        assert all(p.name == f"{clip.id}.{k}.flac" for k, p in clip.stems.items())
        assert clip.split in ("train", "val", "test")
        info = media.probe(clip.video)
        assert info.fps >= 8 and info.width >= 224 and info.height >= 224
        assert info.sample_rate == G.SR and abs(info.duration - 6.0) < 0.2
    # Splits: every clip exactly once, and the test split's pieces/pictures are not used by train.
    in_splits = [c.clips(split=s) for s in ("train", "val", "test")]
    assert sum(map(len, in_splits)) == len(clips) and all(in_splits)
    side = {cl.id: json.loads(cl.sidecar.read_text()) for cl in clips}
    train = [side[cl.id] for cl in in_splits[0]]
    test = [side[cl.id] for cl in in_splits[2]]
    train_pieces = {p["piece"]["id"] for s in train for p in s["players"]}
    train_pics = {p["picture"]["key"] for s in train for p in s["players"]}
    for s in test:
        for p in s["players"]:
            assert p["piece"]["id"] not in train_pieces
            assert p["picture"]["key"] not in train_pics


def test_same_seed_gives_identical_stems_and_sidecars_other_seed_differs(corpus, tmp_path, cache):
    root, _ = corpus
    again = tmp_path / "again"
    G.generate(again, workers=1, seed=0, cache_dir=cache, **OPTS)  # other worker count, same seed
    a_stems, b_stems = _files(root, "*.flac"), _files(again, "*.flac")
    assert a_stems and a_stems == b_stems
    assert _files(root, "*.json") == _files(again, "*.json")
    assert _files(root, "*.txt") == _files(again, "*.txt")
    other = tmp_path / "other"
    G.generate(other, workers=2, seed=1, cache_dir=cache, **OPTS)
    c_stems = _files(other, "*.flac")
    assert len(c_stems) == len(a_stems)
    assert {k for k in c_stems if k.startswith("solo/")} == {k for k in a_stems if k.startswith("solo/")}
    same = set(a_stems.values()) & set(c_stems.values())
    assert not same, f"{len(same)} stems identical across seeds"


def test_decoded_mixture_is_sum_of_stems_and_stems_sound(corpus):
    root, _ = corpus
    for clip in open_corpus(root).clips():
        mix = media.load_audio(clip.video, sr=G.SR)
        stems = [media.read_audio_file(p, sr=G.SR) for p in clip.stems.values()]
        total = np.sum(stems, axis=0)
        assert len(mix) == len(total) == int(6.0 * G.SR)
        snr = 10 * np.log10(np.sum(total ** 2) / (np.sum((total - mix) ** 2) + 1e-20))
        assert snr >= 40, f"{clip.video}: mixture vs sum of stems {snr:.1f} dB"
        for s in stems:
            rms_db = 20 * np.log10(np.sqrt(np.mean(s ** 2)))
            # The noise floor sits 45-60 dB below the mixture, so this is the instrument, not noise.
            assert rms_db > -40, f"{clip.id}: a stem is near-silent ({rms_db:.1f} dBFS)"


def _palette(rgba: np.ndarray) -> np.ndarray:
    """Mean colours of the 6 most frequent 32-level colour bins of a picture's opaque pixels: (6, 3)."""
    px = rgba[rgba[..., 3] > 200][:, :3].astype(float)
    q = (px // 32).astype(int)
    codes = q[:, 0] * 64 + q[:, 1] * 8 + q[:, 2]
    uniq, counts = np.unique(codes, return_counts=True)
    return np.stack([px[codes == c].mean(0) for c in uniq[np.argsort(-counts)[:6]]])


def test_boxes_lie_in_frame_and_cover_the_drawn_instrument(corpus):
    root, _ = corpus
    ratios = []
    for clip in open_corpus(root).clips():
        side = json.loads(clip.sidecar.read_text())
        size, fps = side["frame_size"], side["fps"]
        n = int(round(side["duration"] * fps))
        players = side["players"]
        assert len(players) == len(clip.classes)
        if clip.kind == "duet":
            assert len({p["class"] for p in players}) == 2
        for p in players:
            boxes = np.array(p["boxes"])
            assert boxes.shape == (n, 4)
            assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= size).all() and (boxes[:, [1, 3]] <= size).all()
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        # YOLO labels: one line per player, class index per classes.txt, normalised and matching the boxes.
        names = (root / "classes.txt").read_text().split()
        for fi in side["label_frames"]:
            rows = [l.split() for l in (clip.video.parent / side["labels"] / f"{fi:06d}.txt").read_text().splitlines()]
            assert sorted(names[int(r[0])] for r in rows) == sorted(clip.classes)
            for r in rows:
                cx, cy, w, h = map(float, r[1:])
                b = next(np.array(p["boxes"][fi]) for p in players if p["class"] == names[int(r[0])])
                assert np.allclose([cx * size, cy * size, w * size, h * size],
                                   [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]], atol=0.05)
        # Pixels: the instrument's own colours are much denser inside its box than outside it.
        frames = media.frames_at(clip.video, [(fi + 0.5) / fps for fi in side["label_frames"]])
        for p in players:
            key = p["picture"]["key"]
            pic = P.Picture(p["class"], key, p["picture"]["source"], p["picture"]["licence"], None)
            pal = _palette(P.load_rgba(pic, 128))
            for frame, fi in zip(frames, side["label_frames"]):
                dist = np.abs(frame.astype(float)[:, :, None, :] - pal[None, None]).max(-1).min(-1)
                match = dist < 20  # (H, W): pixel has one of the instrument's colours
                x0, y0, x1, y1 = np.round(p["boxes"][fi]).astype(int)
                inside = np.zeros_like(match)
                inside[y0:y1, x0:x1] = True
                d_in = match[inside].mean()
                d_out = match[~inside].mean() if (~inside).any() else 0.0
                ratios.append((d_in + 1e-3) / (d_out + 1e-3))
    ratios = np.array(ratios)
    print("box colour ratios", np.percentile(ratios, [5, 25, 50]))
    assert np.median(ratios) > 5, f"median inside/outside colour density {np.median(ratios):.2f}"
    assert np.mean(ratios > 2) > 0.85, f"{np.mean(ratios > 2):.2f} of boxes clearly hold their instrument"


def _logmel_stats(x: np.ndarray, sr: int) -> np.ndarray:
    """Mean and std over time of a 40-band log-mel spectrogram: (80,)."""
    n_fft, hop = 1024, 256
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2                      # (T, F)
    mel = lambda f: 2595 * np.log10(1 + f / 700)
    edges = 700 * (10 ** (np.linspace(mel(40), mel(sr / 2), 42) / 2595) - 1)
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    fb = np.maximum(0, np.minimum((freqs[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None]),
                                  (edges[2:, None] - freqs[None]) / (edges[2:, None] - edges[1:-1, None])))
    lm = np.log(spec @ fb.T + 1e-8)                                       # (T, 40)
    lm = lm - lm.max()                                                    # level-free
    loud = lm.max(axis=1) > -40                                           # skip rests
    lm = lm[loud] if loud.sum() > 10 else lm
    return np.concatenate([lm.mean(0), lm.std(0)])


def test_classes_are_audibly_distinct(corpus):
    root, _ = corpus
    feats, labels, clip_of = [], [], []
    for clip in open_corpus(root).clips():
        for cls, path in clip.stems.items():
            feats.append(_logmel_stats(media.read_audio_file(path, sr=G.SR), G.SR))
            labels.append(cls)
            clip_of.append(clip.id)
    feats = np.array(feats)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    labels, clip_of = np.array(labels), np.array(clip_of)
    classes = sorted(set(labels))
    correct = 0
    for i in range(len(feats)):
        train = clip_of != clip_of[i]  # hold out the whole clip (both stems of a duet)
        cents = np.stack([feats[train & (labels == c)].mean(0) for c in classes])
        correct += classes[int(np.argmin(((cents - feats[i]) ** 2).sum(1)))] == labels[i]
    acc = correct / len(feats)
    print("nearest-centroid accuracy", acc)
    chance = 1 / len(classes)
    assert acc >= chance + 0.4, f"nearest-centroid accuracy {acc:.2f} (chance {chance:.2f})"


def test_resume_skips_finished_clips_and_restores_missing_ones(corpus, tmp_path, cache):
    root, _ = corpus
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    victim = sorted(copy.rglob("*.json"))
    victim = [v for v in victim if v.name != "corpus.json"][3]
    original = victim.read_bytes()
    victim.unlink()
    (victim.with_suffix(".mp4")).unlink()
    untouched = sorted(p for p in copy.rglob("*.mp4"))[0]
    mtime = os.stat(untouched).st_mtime_ns
    calls = []
    G.generate(copy, workers=1, seed=0, cache_dir=cache, progress=lambda d, t: calls.append((d, t)), **OPTS)
    assert victim.read_bytes() == original and victim.with_suffix(".mp4").is_file()
    assert os.stat(untouched).st_mtime_ns == mtime
    assert calls[0] == (19, 20) and calls[-1] == (20, 20)


def _cli(capsys, *args) -> tuple[int, str]:
    code = main(["data", "synth", *map(str, args)])
    return code, capsys.readouterr().err


def test_unknown_class_is_one_clear_error(capsys, tmp_path):
    code, err = _cli(capsys, "-o", tmp_path / "c", "--size", "tiny", "--classes", "violin,erhu")
    assert code == 2 and "unknown instrument class 'erhu'" in err and len(err.strip().splitlines()) == 1


def test_missing_or_bogus_soundfont_is_one_clear_error(capsys, tmp_path):
    code, err = _cli(capsys, "-o", tmp_path / "c", "--size", "tiny", "--soundfont", tmp_path / "nope.sf2")
    assert code == 2 and "no such file" in err and len(err.strip().splitlines()) == 1
    bogus = tmp_path / "bogus.sf2"
    bogus.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(64))
    code, err = _cli(capsys, "-o", tmp_path / "c", "--size", "tiny", "--soundfont", bogus)
    assert code == 2 and "not a SoundFont" in err and len(err.strip().splitlines()) == 1


def test_folder_with_another_seeds_corpus_is_one_clear_error(capsys, corpus, cache):
    root, _ = corpus
    before = _files(root, "*")
    code, err = _cli(capsys, "-o", root, "--size", "tiny", "--seed", 7, "--soundfont", TIM,
                     "--licence", "drawings-only", "--cache", cache)
    assert code == 2 and "seed 0, not 7" in err and len(err.strip().splitlines()) == 1
    assert _files(root, "*") == before


def test_docs_table_covers_every_class_and_every_left_out_class():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "corpus.md").read_text()
    rows = {line.split("|")[1].strip() for line in doc.splitlines() if line.startswith("| ")}
    assert set(C.CLASSES) <= rows
    assert {c.replace("french_horn", "French horn") for c in C.LEFT_OUT} <= rows
    for name, spec in C.CLASSES.items():
        row = next(line for line in doc.splitlines() if line.startswith(f"| {name} |"))
        assert all(str(p) in row for p in spec.programs) and f"{spec.low}-{spec.high}" in row or spec.bank == 128
