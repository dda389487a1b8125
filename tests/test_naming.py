"""Naming players by picture and sound (`avsep_cli.naming`), the audio tagger that hears the classes
(`models/audio_tagger.py`, `avsep train --method audio-tagger`) and the pipeline's `--naming`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avsep_cli import checkpoint, dsp, layout, media, naming
from avsep_cli.cli import main
from avsep_cli.datasets import AudioTagging
from avsep_cli.models.audio_tagger import AudioTagger, tagger_input
from avsep_cli.separator import Separator
from avsep_cli.tracking import OnlineTracker
from clihelp import assert_one_error, run

C = 4  # classes in the assignment tests


def _onehotish(main: int, p: float) -> np.ndarray:
    row = np.full(C, (1 - p) / (C - 1))
    row[main] = p
    return row


# --- the assignment ----------------------------------------------------------------------------------


def test_a_sure_picture_keeps_its_name_and_an_unsure_one_follows_the_sound():
    audio = np.array([0.95, 0.02, 0.9, 0.02])  # classes 0 and 2 sound
    sure = np.stack([_onehotish(0, 0.97), _onehotish(1, 0.97)])  # the picture is sure of 0 and 1
    assert naming.assign(sure, audio, weight=0.25) == [0, 1]
    unsure = np.stack([_onehotish(0, 0.97), np.array([0.05, 0.6, 0.3, 0.05])])  # track 2: 1 (0.6) or 2 (0.3)
    assert naming.assign(unsure, audio, weight=0.0) == [0, 1]  # weight 0: the picture's argmax
    assert naming.assign(unsure, audio, weight=1.0) == [0, 2]
    # a class the sound says is absent does not help a name that is also not among the candidates
    far = np.stack([np.array([0.5, 0.3, 0.15, 0.05])])
    assert naming.assign(far, np.array([0.01, 0.01, 0.01, 0.99]), weight=10.0, candidates=3) in ([0], [1], [2])


def test_the_assignment_counts_each_sounding_class_once():
    # two tracks whose picture says "1" for both; the sound says 1 and 3 sound: one of them becomes 3
    picture = np.stack([np.array([0.02, 0.6, 0.02, 0.36]), np.array([0.02, 0.7, 0.02, 0.26])])
    names = naming.assign(picture, np.array([0.01, 0.99, 0.01, 0.99]), weight=1.0)
    assert names == [3, 1]  # the less sure track moves


def test_the_sound_gives_no_class_to_more_tracks_than_the_picture_does():
    # a third, false-positive track pictured as 2 (0.5) or 1 (0.45); the sound says only 0 and 1 play
    picture = np.stack([_onehotish(0, 0.97), _onehotish(1, 0.97), np.array([0.025, 0.45, 0.5, 0.025])])
    audio = np.array([0.99, 0.99, 0.01, 0.01])
    assert naming.assign(picture, audio, weight=1.0) == [0, 1, 2]  # not [0, 1, 1]: two "1"s lose guidance by name
    two = np.stack([_onehotish(1, 0.9), _onehotish(1, 0.8)])  # two players the picture calls 1: they may stay so
    assert naming.assign(two, np.array([0.01, 0.99, 0.01, 0.01]), weight=1.0) == [1, 1]


def test_many_tracks_are_named_one_at_a_time_as_well_as_all_at_once(monkeypatch):
    rng = np.random.default_rng(0)
    picture = rng.dirichlet(np.ones(C) * 0.5, size=7)
    audio = rng.uniform(0.01, 0.99, C)
    exhaustive = naming.assign(picture, audio, weight=1.0)
    monkeypatch.setattr(naming, "EXHAUSTIVE", 2)
    greedy = naming.assign(picture, audio, weight=1.0)

    def score(names):
        lp = np.log(np.clip(picture, naming.EPS, None))
        on, off = np.log(audio), np.log1p(-audio)
        return sum(lp[t, c] for t, c in enumerate(names)) + off.sum() + sum(on[c] - off[c] for c in set(names))

    assert score(greedy) <= score(exhaustive) + 1e-9
    assert score(greedy) >= score([int(np.argmax(r)) for r in picture]) - 1e-9  # never worse than the picture


def test_picture_probs_normalise_and_fill_in():
    rows = naming.picture_probs([np.array([2.0, 0, 6, 0]), None], C)
    assert np.allclose(rows[0], [0.25, 0, 0.75, 0]) and np.allclose(rows[1], 0.25)
    with pytest.raises(ValueError):
        naming.assign(rows, np.ones(C + 1) / 2)


# --- tagging a stream --------------------------------------------------------------------------------


def _tagger(classes, favour: str | None = None) -> naming.AudioTagger:
    """A tiny tagger; with `favour`, one that says that class sounds and no other does, whatever it hears."""
    torch.manual_seed(0)
    m = AudioTagger(num_classes=len(classes), classes=tuple(classes), width=4)
    if favour is not None:
        with torch.no_grad():
            m.fc.weight.zero_()
            m.fc.bias.fill_(-6.0)
            m.fc.bias[list(classes).index(favour)] = 6.0
    return naming.AudioTagger(m)


def test_tag_stream_cuts_back_to_back_windows_and_keeps_a_long_tail():
    t = _tagger(["a", "b", "c"])
    L = dsp.SEGMENT
    rng = np.random.default_rng(0)
    wav = rng.standard_normal(int(2.6 * L)).astype(np.float32) * 0.1
    starts, probs = naming.tag_stream(t, (wav[i:i + 10_000] for i in range(0, len(wav), 10_000)), batch=2)
    assert np.allclose(starts * dsp.SAMPLE_RATE, [0, L, 2 * L])  # the 0.6-window tail is tagged, padded
    assert probs.shape == (3, 3) and np.all((probs > 0) & (probs < 1))
    whole = t.probs(np.stack([wav[:L], wav[L:2 * L], np.pad(wav[2 * L:], (0, 3 * L - len(wav)))]))
    assert np.allclose(probs, whole, atol=1e-6)
    s_short, p_short = naming.tag_stream(t, [wav[: L // 4]])  # shorter than a window: one, padded
    assert len(s_short) == 1
    s_tail, _ = naming.tag_stream(t, [wav[: L + L // 4]])  # a short tail after a full window is left out
    assert len(s_tail) == 1
    span = naming.presence(starts, probs, (L / dsp.SAMPLE_RATE + 0.1, L / dsp.SAMPLE_RATE + 0.2))
    assert np.allclose(span, probs[1])


def test_tagger_input_ignores_the_level():
    wav = torch.from_numpy(np.random.default_rng(1).standard_normal((2, dsp.SEGMENT)).astype(np.float32))
    a, b = tagger_input(wav), tagger_input(wav * 0.01)
    assert a.shape == (2, 1, 128, 128)
    assert torch.allclose(a, b, atol=1e-3)


# --- tracking keeps the classifier's probabilities ---------------------------------------------------


def test_tracks_sum_the_classifier_probabilities_of_their_detections():
    tr = OnlineTracker(fps=4.0, min_duration=0.0)
    box = np.array([[10, 10, 60, 60, 0.8, 1]], np.float32)
    for k in range(8):
        p = np.array([[0.1, 0.6, 0.3]]) if k % 2 else np.array([[0.2, 0.5, 0.3]])
        tr.update(box + np.array([[k, 0, k, 0, 0, 0]], np.float32), p)
    tracks, _ = tr.finish()
    assert len(tracks) == 1
    assert np.allclose(tracks[0].class_probs, 0.8 * 4 * (np.array([0.1, 0.6, 0.3]) + np.array([0.2, 0.5, 0.3])))


# --- the pipeline ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def duet(tiny_corpus):
    return layout.open_corpus(tiny_corpus).clips(kind="duet")[0]


class NamingDetector:
    """Boxes where the corpus sidecar has them, with classifier probabilities that favour the wrong class
    for the second player (0.6) over its true one (0.4)."""

    def __init__(self, sidecar, classes):
        self.side = json.loads(sidecar.read_text())
        self.classes = tuple(classes)
        self.t = 0

    def info(self):
        return {"weights": "test"}

    def named(self, frames):
        out = []
        for _ in frames:
            k = min(int(self.t * self.side["fps"] / 4.0), len(self.side["players"][0]["boxes"]) - 1)
            self.t += 1
            rows, probs = [], []
            for j, p in enumerate(self.side["players"]):
                true = self.classes.index(p["class"])
                pr = np.full(len(self.classes), 0.0)
                if j == 0:
                    pr[true] = 1.0
                else:
                    wrong = next(c for c in range(len(self.classes)) if c != true and
                                 self.classes[c] != self.side["players"][0]["class"])
                    pr[wrong], pr[true] = 0.6, 0.4
                rows.append([*p["boxes"][k], 0.9, int(np.argmax(pr))])
                probs.append(pr)
            out.append((np.array(rows, np.float32), np.array(probs)))
        return out


@pytest.mark.usefixtures("no_shipped_weights")
def test_the_sound_renames_a_player_the_picture_got_wrong(tiny_weights, duet, tmp_path):
    classes = layout.open_corpus(duet.video.parents[2]).classes
    second = json.loads(duet.sidecar.read_text())["players"][1]["class"]
    tagger = _tagger(classes, favour=second)
    path = checkpoint.save(tmp_path / "tagger.pt", checkpoint.model_state(
        "audio-tagger", {"num_classes": len(classes), "classes": list(classes), "width": 4, "dropout": 0.2},
        tagger.model))
    picture_only = Separator("tiny", tiny_weights, NamingDetector(duet.sidecar, classes), naming="visual")
    names = sorted(i.cls for i in picture_only.separate_file(duet.video).identities)
    assert second not in names  # the picture alone names it wrong
    both = Separator("tiny", tiny_weights, NamingDetector(duet.sidecar, classes), naming="audio-visual", tagger=path)
    result = both.separate_file(duet.video)
    assert sorted(i.cls for i in result.identities) == sorted(duet.classes)
    assert result.naming["by"] == "picture and sound"
    assert [r["name"] for r in result.naming["renamed"]] == [second]
    assert result.manifest["naming"]["asked"] == "audio-visual" and set(result.stems) == {f"{c}_1" for c in duet.classes}


@pytest.mark.usefixtures("no_shipped_weights")
def test_naming_errors_are_one_line(capsys, tiny_weights, duet, tmp_path):
    rc, _, err = run(capsys, "separate", duet.video, "-o", tmp_path / "a", "--method", "tiny", "--weights", tiny_weights,
                     "--boxes", duet.sidecar, "--naming", "audio-visual")
    assert_one_error(rc, err, "audio tagger")
    rc, _, err = run(capsys, "separate", duet.video, "-o", tmp_path / "b", "--method", "tiny", "--weights", tiny_weights,
                     "--boxes", duet.sidecar, "--naming", "visual", "--tagger", "x")
    assert_one_error(rc, err, "--tagger")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --- training the tagger -----------------------------------------------------------------------------


def test_tagging_items_and_a_tiny_training_run(capsys, tiny_corpus, tmp_path):
    ds = AudioTagging(tiny_corpus, "train", length=12, segment=16384, max_sources=3)
    sizes = set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["mixture"].shape == (16384,) and item["target"].shape == (len(ds.classes),)
        sizes.add(int(item["target"].sum()))
    assert sizes <= {1, 2, 3} and len(sizes) >= 2
    assert torch.equal(ds[3]["mixture"], AudioTagging(tiny_corpus, "train", length=12, segment=16384)[3]["mixture"])
    run_dir = tmp_path / "tagger"
    assert main(["train", "--method", "audio-tagger", "--root", str(tiny_corpus), "--run", str(run_dir), "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch-size", "4", "--val-num", "2", "--mix", "3",
                 "--model-option", "width=4"]) == 0
    assert "val RECALL" in capsys.readouterr().err
    t = naming.AudioTagger.load(str(run_dir / "best.pt"))
    assert t.classes == tuple(layout.open_corpus(tiny_corpus).classes)
    clip = layout.open_corpus(tiny_corpus).clips(kind="solo")[0]
    wav = media.load_audio(clip.video, dsp.SAMPLE_RATE)
    starts, probs = naming.tag_stream(t, [wav])
    assert probs.shape == (len(starts), len(t.classes)) and np.all(np.isfinite(probs))
    rc, _, err = run(capsys, "train", "--method", "audio-tagger", "--root", tiny_corpus, "--cache-features")
    assert_one_error(rc, err, "no visual trunk")
