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
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avsep_cli import media
from avsep_cli.cli import main
from avsep_cli.corpus import classes as C
from avsep_cli.corpus import generate as G
from avsep_cli.corpus import pictures as P
from avsep_cli.errors import AvsepError
from avsep_cli.layout import open_corpus

TIM = C.timgm6mb_path()
OPTS = dict(size="tiny", soundfonts=[TIM], licences=["drawings-only"], assets=None)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synth-cache")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, cache):
    root = tmp_path_factory.mktemp("tiny") / "corpus"
    G.generate(root, workers=2, seed=0, cache_dir=cache, **OPTS)
    return root


def _files(root: Path, pattern: str) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob(pattern)) if p.is_file()}


def test_tiny_preset_is_in_music_layout(corpus):
    root = corpus
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
    root = corpus
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
    root = corpus
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
    root = corpus
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
    # Colour matching is approximate once the scene's photometric shifts, noise and compression apply (a
    # quarter of the players here); box exactness itself is tested on the renderer (test_scene.py).
    assert np.mean(ratios > 2) > 0.6, f"{np.mean(ratios > 2):.2f} of boxes clearly hold their instrument"


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
    root = corpus
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
    root = corpus
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
    root = corpus
    before = _files(root, "*")
    code, err = _cli(capsys, "-o", root, "--size", "tiny", "--seed", 7, "--soundfont", TIM,
                     "--licence", "drawings-only", "--cache", cache)
    assert code == 2 and "seed 0, not 7" in err and len(err.strip().splitlines()) == 1
    assert _files(root, "*") == before


def test_docs_table_covers_every_class_and_every_left_out_class():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "corpus.md").read_text()
    doc = doc[doc.index("\n## Classes"):]
    doc = doc[: doc.index("\n## ", 1)]  # the Classes section: its class table and its left-out table
    rows = {line.split("|")[1].strip() for line in doc.splitlines() if line.startswith("| ")}
    assert set(C.CLASSES) <= rows
    assert {c.replace("french_horn", "French horn") for c in C.LEFT_OUT} <= rows
    for name, spec in C.CLASSES.items():
        row = next(line for line in doc.splitlines() if line.startswith(f"| {name} |"))
        assert all(str(p) in row for p in spec.programs) and f"{spec.low}-{spec.high}" in row or spec.bank == 128


# --- --sample-rate, --stereo, --split / --kind --------------------------------------------------------

# The keys of the default recipe (and of every recipe before --sample-rate and --stereo existed): a
# default corpus must keep resuming, and keep being the same corpus.
DEFAULT_RECIPE_KEYS = {"format", "version", "size", "seed", "classes", "duration", "sample_rate", "fps",
                       "frame_size", "solos_per_class", "duets", "soundfonts", "sample_sets", "pictures",
                       "picture_licences", "pieces", "picture_families"}


def _read_stereo(video: Path) -> tuple[np.ndarray, int, int]:
    """The audio track of `video` as (C, n) float32 with its rate and channel count (media reads mono)."""
    import av

    with av.open(str(video)) as c:
        s = c.streams.audio[0]
        sr, ch = s.codec_context.sample_rate, s.codec_context.channels
        rs = av.AudioResampler(format="fltp", layout="stereo" if ch == 2 else "mono", rate=sr)
        parts = [f.to_ndarray() for fr in c.decode(s) for f in rs.resample(fr)]
    return np.concatenate(parts, axis=1), sr, ch


def test_default_recipe_is_unchanged_and_the_audio_options_change_only_the_audio(tmp_path, cache):
    base = G.plan(tmp_path / "a", seed=0, cache_dir=cache, **OPTS)
    assert set(base.recipe) == DEFAULT_RECIPE_KEYS and base.recipe["sample_rate"] == G.SR == 22050
    same = G.plan(tmp_path / "a", seed=0, cache_dir=cache, sample_rate=22050, stereo=False, **OPTS)
    assert same.recipe == base.recipe and same.clips == base.clips
    wide = G.plan(tmp_path / "b", seed=0, cache_dir=cache, sample_rate=44100, stereo=True, **OPTS)
    assert {k for k in set(wide.recipe) | set(base.recipe) if wide.recipe.get(k) != base.recipe.get(k)} == \
        {"sample_rate", "channels", "stereo"}
    assert wide.recipe["sample_rate"] == 44100 and wide.recipe["channels"] == 2
    assert wide.clips == base.clips  # same players, pieces, pictures, splits
    only = G.plan(tmp_path / "c", seed=0, cache_dir=cache, only_splits=["test"], only_kinds=["duet"], **OPTS)
    assert only.clips == [c for c in base.clips if c["split"] == "test" and c["kind"] == "duet"] and only.clips
    assert only.recipe["only"] == {"splits": ["test"], "kinds": ["duet"]}
    with pytest.raises(AvsepError, match="--sample-rate 8000"):
        G.plan(tmp_path / "d", seed=0, cache_dir=cache, sample_rate=8000, **OPTS)


@pytest.fixture(scope="module")
def stereo_corpus(tmp_path_factory, cache):
    """The tiny preset's duets at 44.1 kHz stereo (4 clips, a few seconds)."""
    root = tmp_path_factory.mktemp("tiny-stereo") / "corpus"
    G.generate(root, workers=1, seed=0, cache_dir=cache, sample_rate=44100, stereo=True, only_kinds=["duet"], **OPTS)
    return root


def test_stereo_clip_has_the_rate_and_channels_and_its_stems_sum_to_the_mixture(stereo_corpus, corpus):
    clips = open_corpus(stereo_corpus).clips()
    mono = {c.id: c for c in open_corpus(corpus).clips()}
    assert len(clips) == 4 and all(c.kind == "duet" for c in clips)
    for clip in clips:
        info = media.probe(clip.video)
        assert info.sample_rate == 44100 and info.channels == 2
        side = json.loads(clip.sidecar.read_text())
        assert side["sample_rate"] == 44100 and side["channels"] == 2
        # The same clip as in the mono corpus: players, pieces, pictures and split.
        twin = json.loads(mono[clip.id].sidecar.read_text())
        keys = lambda s: [(p["class"], p["piece"], p["picture"]["key"], p["program"]) for p in s["players"]]  # noqa: E731
        assert keys(side) == keys(twin) and side["split"] == twin["split"]
        stems = []
        for p in clip.stems.values():
            x, sr = sf.read(p, dtype="float32", always_2d=True)
            assert sr == 44100 and x.shape == (int(6.0 * 44100), 2)
            stems.append(x.T)
        mix, sr, ch = _read_stereo(clip.video)
        total = np.sum(stems, axis=0)
        assert mix.shape == total.shape
        for c in range(2):  # the mixing rule, per channel: mixture = sum of the stems
            snr = 10 * np.log10(np.sum(total[c] ** 2) / (np.sum((total[c] - mix[c]) ** 2) + 1e-20))
            assert snr >= 40, f"{clip.id} channel {c}: mixture vs sum of stems {snr:.1f} dB"
        # The band above the mono corpus' Nyquist (11.025 kHz) is there: rendered, not upsampled.
        spec = np.abs(np.fft.rfft(total.mean(0))) ** 2
        freqs = np.fft.rfftfreq(total.shape[1], 1 / 44100)
        assert spec[freqs > 11025].sum() / spec.sum() > 1e-6


def test_stereo_pan_follows_the_picture_and_shows_in_channel_energies(stereo_corpus):
    sides = []  # (pan, left louder) of players clearly off centre
    for clip in open_corpus(stereo_corpus).clips():
        side = json.loads(clip.sidecar.read_text())
        pans, centres = [], []
        for p in side["players"]:
            x, _ = sf.read(clip.stems[p["class"]], dtype="float64", always_2d=True)
            left, right = np.sum(x ** 2, axis=0)
            pan = p["pan"]
            assert -1 <= pan <= 1
            if abs(pan) > 0.2:  # left of centre: louder on the left, and the reverse
                sides.append((pan < 0) == (left > right))
            pans.append(pan)
            centres.append(np.mean([(b[0] + b[2]) / 2 for b in p["boxes"]]))
        # The player further left in the picture is further left in the sound.
        assert (pans[0] < pans[1]) == (centres[0] < centres[1])
    # Mostly, not always: a sustained, nearly sinusoidal tone (a flute) interferes with its own reverb, which
    # can take more energy out of the louder channel than the pan put in.
    assert len(sides) >= 4 and np.mean(sides) >= 0.75, sides


def test_split_and_kind_are_checked_in_one_line(capsys, tmp_path):
    code, err = _cli(capsys, "-o", tmp_path / "c", "--size", "tiny", "--split", "tset")
    assert code == 2 and "--split tset: expected train, val, test" in err and len(err.strip().splitlines()) == 1
    code, err = _cli(capsys, "-o", tmp_path / "c", "--size", "tiny", "--kind", "trio")
    assert code == 2 and "--kind trio: expected solo, duet" in err and len(err.strip().splitlines()) == 1


def _load_benchmark(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fullband_benchmark_scores_known_signals():
    """benchmarks/bench_fullband.py's scoring on signals whose answers are known: each source owns its
    own frequency bands, so the right stem, the swapped stems and half the mixture each have a known share
    of the energy above 5.5 kHz, and a stem with noise 30 dB down scores about 30 dB SDR."""
    fb = _load_benchmark("bench_fullband")
    sr, n = 44100, 44100
    rng = np.random.default_rng(0)

    def band(lo, hi):  # (2, n) noise in [lo, hi) Hz
        spec = np.fft.rfft(rng.standard_normal((2, n)), axis=1)
        f = np.fft.rfftfreq(n, 1 / sr)
        spec[:, (f < lo) | (f >= hi)] = 0
        return np.fft.irfft(spec, n, axis=1)

    a = band(100, 2500) + 0.3 * band(6500, 8500)
    b = band(3000, 5000) + 0.3 * band(9500, 12000)
    mix = a + b
    right = fb.band_shares([a, b], [a, b], [], sr)
    assert right["high"] > 0.99 and right["low"] > 0.99 and -25 < right["high_energy_db"] < -5
    assert fb.band_shares([a, b], [b, a], [], sr)["high"] < 0.01
    assert abs(fb.band_shares([a, b], [mix / 2, mix / 2], [], sr)["high"] - 0.5) < 0.02
    # A missing stem is silence; an extra (unmatched) stem's energy counts against the share.
    assert fb.band_shares([a, b], [a, None], [], sr)["high"] > 0.99
    high = lambda x: np.sum(np.abs(np.fft.rfft(x, axis=1)[:, np.fft.rfftfreq(n, 1 / sr) >= 5500]) ** 2)  # noqa: E731
    expected = (high(a) + high(b)) / (high(a) + 2 * high(b))
    assert abs(fb.band_shares([a, b], [a, b], [b], sr)["high"] - expected) < 0.01
    # SDR: per channel, averaged; mono works; the channel counts must agree.
    noisy = a + 10 ** (-30 / 20) * np.sqrt(np.mean(a ** 2)) * rng.standard_normal(a.shape)
    assert abs(fb.channel_sdr(a, noisy) - 30) < 1.5
    assert abs(fb.channel_sdr(a[0], noisy[0]) - 30) < 1.5
    assert fb.channel_sdr(a, a) > 60 and fb.channel_sdr(a, b) < -10
    assert np.isnan(fb.channel_sdr(a, np.zeros_like(a)))
    with pytest.raises(ValueError):
        fb.channel_sdr(a, noisy[:1])
