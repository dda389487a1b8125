"""The shipped weights: hashes verify, every model loads without pickle and runs, and the README's
first command (`avsep separate` on the committed demo clip with the defaults) gives one stem per player.

Not here yet: the demo's SDR guard (each stem >= 3 dB against its own reference). The shipped AVPC does
not pass it (see README, Results), and a test that is known to fail cannot land."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from avsep_cli import dsp, media, registry
from clihelp import run

DEMO = Path(__file__).resolve().parents[1] / "demo" / "corpus" / "duet" / "flute+violin"
VIDEO = DEMO / "syn000000.mp4"


def test_shipped_weights_verify(capsys):
    rows = registry.entries()
    rc, out, _ = run(capsys, "weights", "verify")
    assert rc == 0 and f"{len(rows)} file(s) verified" in out
    for method in ("avpc", "sop", "detector"):
        assert registry.default_for(method) is not None, f"no shipped default for {method}"


def test_every_shipped_separator_loads_and_runs():
    rows = [e for e in registry.entries() if e["file"].endswith(".safetensors")]
    assert rows
    for e in rows:
        model = registry.build(registry.resolve(e["name"])).eval()
        assert sum(p.numel() for p in model.parameters()) == e["parameters"]
        with torch.no_grad():
            if e["model_name"] == "visual-trunk":
                out = model(torch.randint(0, 255, (1, 3, 224, 224), dtype=torch.uint8))
                assert out.shape == (1, e["config"]["num_classes"])
            else:
                frames = torch.randint(0, 255, (1, 3, 3, 224, 224), dtype=torch.uint8)
                out = model(torch.randn(1, 1, 256, 256), frames)
                assert out.shape == (1, 1, 256, 256)
        assert torch.isfinite(out).all(), e["name"]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_demo_with_the_defaults_gives_one_stem_per_player(capsys, tmp_path):
    out = tmp_path / "stems"
    rc, stdout, err = run(capsys, "separate", VIDEO, "-o", out)  # the shipped detector and AVPC weights
    assert rc == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"]["name"] == registry.default_for("avpc")["name"]
    assert manifest["detector"]["sha256"] == registry.default_for("detector")["sha256"]
    side = json.loads((DEMO / "syn000000.json").read_text())
    # each identity is the player whose ground-truth boxes its tracked boxes overlap most
    own = {}
    for ident in manifest["identities"]:
        overlap = {p["class"]: np.mean([_iou(b["box"], p["boxes"][int(b["t"] * side["fps"])]) for b in ident["boxes"]])
                   for p in side["players"]}
        own[ident["file"]] = max(overlap, key=overlap.get)
        assert overlap[own[ident["file"]]] > 0.7, overlap  # the tracked boxes sit on the player
    assert sorted(own.values()) == sorted(p["class"] for p in side["players"]), manifest["identities"]
    n = round(media.probe(VIDEO).duration * dsp.SAMPLE_RATE)
    mixture = media.load_audio(VIDEO, dsp.SAMPLE_RATE, duration=n / dsp.SAMPLE_RATE)
    for file in own:
        est = media.read_audio_file(out / file, sr=dsp.SAMPLE_RATE)
        assert len(est) == n and 0 < np.abs(est).max() and np.sum(est**2) < np.sum(mixture**2)
        assert str(out / file) in stdout.replace("\n", "")
