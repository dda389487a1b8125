"""The shipped weights: hashes verify, every model loads without pickle and runs, and the README's
first command (`avsep separate` on the committed demo clip with the defaults) separates each player: its
stem is closer to its own ground truth than to the other one, at >= 3 dB SDR (our BSS Eval)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from avsep_cli import dsp, evaluate, media, registry
from avsep_cli.layout import open_corpus
from avsep_cli.methods import MixBatch, get_method
from avsep_cli.separator import Separator
from clihelp import run

DEMO = open_corpus(Path(__file__).resolve().parents[1] / "demo" / "corpus").clips()[0]


def test_shipped_weights_verify(capsys):
    rows = registry.entries()
    rc, out, _ = run(capsys, "weights", "verify")
    assert rc == 0 and f"{len(rows)} file(s) verified" in out
    for method in ("avpc", "sop", "detector"):
        assert registry.default_for(method) is not None, f"no shipped default for {method}"


def test_every_shipped_model_loads_and_runs():
    """Each safetensors file builds its model with the manifest's parameter count; the trunk classifies
    and every separator, through the method interface `eval` and `separate` use, splits a 2-source
    mixture into two finite estimates."""
    rows = [e for e in registry.entries() if e["file"].endswith(".safetensors") and e["method"] != "prototypes"]
    assert {"visual-trunk", "avpc", "sop"} <= {e["method"] for e in rows}
    g = torch.Generator().manual_seed(0)
    for e in rows:
        if e["method"] == "audio-tagger":  # presence probabilities of 3 s of noise, one per class
            from avsep_cli.naming import AudioTagger

            tagger = AudioTagger.load(e["name"])
            assert sum(p.numel() for p in tagger.model.parameters()) == e["parameters"]
            probs = tagger.probs((torch.randn(1, 3 * dsp.SAMPLE_RATE, generator=g) * 0.1).numpy())
            assert probs.shape == (1, len(tagger.classes)) and np.isfinite(probs).all()
            continue
        if e["method"] == "visual-trunk":
            model = registry.build(registry.resolve(e["name"])).eval()
            assert sum(p.numel() for p in model.parameters()) == e["parameters"]
            with torch.no_grad():
                out = model(torch.randint(0, 255, (1, 3, 224, 224), dtype=torch.uint8, generator=g))
            assert out.shape == (1, e["config"]["num_classes"]) and torch.isfinite(out).all()
            continue
        method = get_method(e["method"], weights=e["name"])
        assert sum(p.numel() for p in method.model.parameters()) == e["parameters"]
        stems = torch.randn(1, 2, 2 * dsp.SAMPLE_RATE, generator=g) * 0.1
        size = method.frame_size
        frames = torch.randint(0, 255, (1, 2, method.frames_per_source, 3, size, size), dtype=torch.uint8, generator=g)
        est = method.separate(MixBatch(mixture=stems.sum(1), stems=stems, classes=[["a", "b"]], frames=frames))
        assert est.shape == stems.shape and torch.isfinite(est).all(), e["name"]
        assert est.abs().max() > 0, e["name"]


def test_demo_with_the_defaults_separates_each_player(capsys, tmp_path):
    """The README's first command: every player gets its own stem, closer to its own ground truth than
    to the other player's and at least 3 dB SDR against it (the guard against weights that score 0 dB)."""
    out = tmp_path / "stems"
    rc, stdout, err = run(capsys, "separate", DEMO.video, "-o", out)  # the shipped detector and AVPC weights
    assert rc == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"]["name"] == registry.default_for("avpc")["name"] and manifest["masks"] == "joint"
    assert manifest["detector"]["sha256"] == registry.default_for("detector")["sha256"]
    side = json.loads(DEMO.sidecar.read_text())
    owner = evaluate.match_identities(manifest["identities"], side)  # tracked boxes on the player (mean IoU >= 0.5)
    assert sorted(owner) == sorted(DEMO.classes), manifest["identities"]
    n = round(media.probe(DEMO.video).duration * dsp.SAMPLE_RATE)
    mixture = media.load_audio(DEMO.video, dsp.SAMPLE_RATE, duration=n / dsp.SAMPLE_RATE)
    stems = {}
    for ident in manifest["identities"]:
        est = media.read_audio_file(out / ident["file"], sr=dsp.SAMPLE_RATE)
        assert len(est) == n and 0 < np.abs(est).max() and np.sum(est**2) < np.sum(mixture**2)
        assert str(out / ident["file"]) in stdout.replace("\n", "")
        stems[ident["name"]] = est
    for row in evaluate.score_clip_stems(DEMO, stems, owner):
        assert row["sdr_own"] > row["sdr_other"], row
        assert row["sdr_own"] >= 3.0, row
    # the same players, found and named without separating (what benchmarks/bench_visual.py --players counts)
    players = Separator().find_players(DEMO.video)
    assert [(i.name, i.cls, i.boxes) for i in players] == \
        [(i["name"], i["cls"], i["boxes"]) for i in manifest["identities"]]


def test_the_default_detector_is_named_by_a_shipped_trunk_checked_by_sha256(monkeypatch):
    """The shipped detector finds instruments (one class); the visual trunk its entry names tells which
    instrument each box is. Both files are checked against the manifest before they are loaded."""
    from avsep_cli import classifier, registry

    det = registry.default_for("detector")
    trunk = registry.entry(det["classifier"])
    assert trunk["method"] == "visual-trunk" and trunk["name"] != "visual-trunk"  # a new name: separators keep theirs
    checked = []
    real = registry.verify_file
    monkeypatch.setattr(registry, "verify_file", lambda e, *a, **k: (checked.append(e["name"]), real(e, *a, **k))[1])
    sep = Separator("avpc")
    assert sep.detector.classifier is not None and sep.detector.classifier.sha256 == trunk["sha256"]
    assert sep.detector.sha256 == det["sha256"] and trunk["name"] in checked
    info = sep.detector.info()
    assert info["classifier"] == {"weights": trunk["name"], "sha256": trunk["sha256"],
                                  "size": trunk["config"]["frame_size"]}
    # every separator names the shipped trunk it was trained with: the legacy ones the first trunk, those
    # retrained on the broad corpus its trunk (not the averaged classifier), the campaign's the fine-tuned one
    trunks = {x["name"] for x in registry.entries() if x["method"] == "visual-trunk"}
    for e in registry.entries():
        if e["method"] in ("avpc", "avpc-rcop", "sop", "ialcms", "ialcms-supervised"):
            assert e["trunk"] in trunks, e["name"]
            want = ("visual-trunk-broad-ft" if "-broad-ft-" in e["name"] else
                    "visual-trunk-broad" if "-broad-" in e["name"] else "visual-trunk")
            assert e["trunk"] == want, e["name"]
    assert isinstance(sep.detector.classifier, classifier.CropClassifier)


def test_the_shipped_tagger_hears_the_demo_players_and_names_them_with_the_picture():
    """The audio tagger knows the classifier's classes; on the demo clip (a test duet: pictures and sound
    of families held out of training) the two instruments playing are the two it is most sure of, and
    naming by picture and sound (the default where a tagger is shipped) keeps the picture's right names."""
    from avsep_cli import naming

    tagger = naming.AudioTagger.shipped()
    assert tagger is not None and registry.default_for("audio-tagger")["sha256"] == tagger.sha256
    sep = Separator("avpc")
    assert set(tagger.classes) == set(sep.detector.classes)
    info = media.probe(DEMO.video)
    starts, probs = naming.tag_stream(tagger, media.iter_audio(DEMO.video, dsp.SAMPLE_RATE, duration=info.duration))
    heard = naming.presence(starts, probs, (0.0, info.duration))
    top2 = {tagger.classes[i] for i in np.argsort(-heard)[:2]}
    assert top2 == set(DEMO.classes), dict(zip(tagger.classes, heard.round(3)))
    assert sep.tagger is not None and sorted(i.cls for i in sep.find_players(DEMO.video)) == sorted(DEMO.classes)
