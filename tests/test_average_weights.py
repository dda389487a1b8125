"""scripts/average_weights.py: the mean of several checkpoints of one model, as a checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from avsep_cli import checkpoint
from avsep_cli.models.tiny import TinyNet, config_dict

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "average_weights.py"


def _tiny(path: Path, seed: int, channels: int = 8) -> Path:
    torch.manual_seed(seed)
    m = TinyNet(channels=channels)
    return checkpoint.save(path, checkpoint.model_state("tiny", config_dict(m), m))


def test_the_average_is_the_mean_of_every_float_tensor_and_loads(tmp_path):
    a, b, c = (_tiny(tmp_path / f"{n}.pt", seed) for n, seed in (("a", 0), ("b", 1), ("c", 2)))
    out = tmp_path / "avg.pt"
    r = subprocess.run([sys.executable, str(SCRIPT), str(a), str(b), str(c), "-o", str(out)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    avg = checkpoint.load(out)  # checksum inside, verified
    states = [checkpoint.load(p)["state_dict"] for p in (a, b, c)]
    floats = [k for k, v in states[0].items() if v.is_floating_point()]
    assert floats
    for k in floats:
        assert torch.allclose(avg["state_dict"][k], (states[0][k] + states[1][k] + states[2][k]) / 3, atol=1e-6)
    assert not torch.equal(avg["state_dict"][floats[0]], states[0][floats[0]])
    checkpoint.build_model(avg, out)  # a model that builds from it


def test_other_models_are_refused_in_one_line(tmp_path):
    a, b = _tiny(tmp_path / "a.pt", 0), _tiny(tmp_path / "b.pt", 1, channels=4)
    r = subprocess.run([sys.executable, str(SCRIPT), str(a), str(b), "-o", str(tmp_path / "avg.pt")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "not the same model" in r.stderr, r.stderr
    assert not (tmp_path / "avg.pt").exists()


def test_tensors_equal_in_every_input_stay_bit_for_bit(tmp_path):
    """A frozen part (a separator's visual trunk) is not re-averaged: a float mean of equal values can move
    the last bit, and the trunk's sha256 is how its class prototypes are found."""
    a, b, c = (_tiny(tmp_path / f"{n}.pt", seed) for n, seed in (("a", 0), ("b", 1), ("c", 2)))
    states = [checkpoint.load(p)["state_dict"] for p in (a, b, c)]
    k = next(k for k, v in states[0].items() if v.is_floating_point())
    frozen = torch.full_like(states[0][k], 0.1) + torch.rand(states[0][k].shape, generator=torch.Generator().manual_seed(3)) * 1e-3
    assert not torch.equal(torch.stack([frozen] * 3).mean(0), frozen)  # the plain mean would change it
    for p, st in zip((a, b, c), states):
        d = checkpoint.load(p)
        d["state_dict"][k] = frozen.clone()
        checkpoint.save(p, {key: d[key] for key in ("model_name", "model_args", "state_dict")})
    out = tmp_path / "avg.pt"
    r = subprocess.run([sys.executable, str(SCRIPT), str(a), str(b), str(c), "-o", str(out)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    avg = checkpoint.load(out)["state_dict"]
    assert torch.equal(avg[k], frozen)
    other = next(j for j, v in states[0].items() if v.is_floating_point() and j != k)
    assert not torch.equal(avg[other], states[0][other])  # the rest is averaged
