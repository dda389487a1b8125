"""The weights registry: export to safetensors, lookup by name, sha256 checks, `avsep weights`."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from avsep_cli import checkpoint, registry
from avsep_cli.models.tiny import TinyNet, config_dict
from clihelp import assert_one_error, run


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A weights folder with one exported tiny model, used as the shipped folder."""
    torch.manual_seed(0)
    m = TinyNet()
    ckpt = checkpoint.save(tmp_path / "run" / "best.pt", checkpoint.model_state("tiny", config_dict(m), m))
    folder = tmp_path / "weights"
    monkeypatch.setenv("AVSEP_WEIGHTS", str(folder))
    e = registry.export(ckpt, "tiny-test", "tiny", default=True, extra={"metrics": {"mix2": {"sdr": 1.5}}})
    return {"folder": folder, "entry": e, "ckpt": ckpt, "model": m}


def test_export_and_resolve_by_name(shipped):
    e = shipped["entry"]
    assert e["file"] == "tiny-test.safetensors" and e["dtype"] == "float16" and e["default"]
    assert e["parameters"] == sum(p.numel() for p in shipped["model"].parameters())
    assert json.loads((shipped["folder"] / "manifest.json").read_text())["weights"][0]["sha256"] == e["sha256"]
    r = registry.resolve("tiny-test", expect_model="tiny")
    assert r.shipped and r.sha256 == e["sha256"] and registry.default_for("tiny")["name"] == "tiny-test"
    model = registry.build(r).eval()
    ref = shipped["model"].eval()
    x, frames = torch.randn(2, 1, 256, 64), torch.randint(0, 255, (2, 3, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():  # fp16 storage: the same outputs to fp16 precision
        assert torch.allclose(model(x, frames), ref(x, frames), atol=1e-2, rtol=1e-2)
    with pytest.raises(Exception, match="holds a 'tiny' model, not 'avpc'"):
        registry.resolve("tiny-test", expect_model="avpc")


def test_tampered_file_fails_with_a_clear_message(shipped, capsys):
    path = shipped["folder"] / "tiny-test.safetensors"
    copy = shipped["folder"].parent / "copy"
    shutil.copytree(shipped["folder"], copy)
    data = bytearray((copy / path.name).read_bytes())
    data[-10] ^= 0xFF  # one byte of the weights
    (copy / path.name).write_bytes(bytes(data))
    with pytest.raises(Exception, match="fails its sha256 check"):
        registry.resolve("tiny-test", folder=copy)
    rc, out, _ = run(capsys, "weights", "verify")
    assert rc == 0 and "1 file(s) verified" in out
    (copy / "manifest.json").replace(shipped["folder"] / "manifest.json")
    (copy / path.name).replace(path)
    rc, _, err = run(capsys, "weights", "verify")
    assert_one_error(rc, err, "sha256 check")


def test_weights_cli(shipped, capsys, tmp_path):
    rc, out, _ = run(capsys, "weights", "list")
    assert rc == 0 and "tiny-test" in out and "1.50" in out
    rc, out, _ = run(capsys, "weights", "info", "tiny-test")
    assert rc == 0 and json.loads(out)["sha256"] == shipped["entry"]["sha256"]
    rc, _, err = run(capsys, "weights", "info", "nope")
    assert_one_error(rc, err, "no shipped weights named 'nope'")
    rc, out, _ = run(capsys, "weights", "add", shipped["ckpt"], "--name", "tiny-32", "--method", "tiny", "--fp32")
    assert rc == 0 and (shipped["folder"] / "tiny-32.safetensors").exists()
    assert registry.entry("tiny-32")["dtype"] == "float32" and registry.default_for("tiny")["name"] == "tiny-test"
    assert registry.resolve("tiny-32").data["state_dict"].keys() == shipped["model"].state_dict().keys()


def test_checkpoints_and_safetensors_files_resolve_by_path(shipped):
    r = registry.resolve(shipped["ckpt"])
    assert not r.shipped and r.data["model_name"] == "tiny" and r.sha256 == checkpoint.sha256(shipped["ckpt"])
    r = registry.resolve(shipped["folder"] / "tiny-test.safetensors")
    assert r.data["model_args"] == config_dict(shipped["model"])
    with pytest.raises(Exception, match="weights not found"):
        registry.resolve("no-such-file.pt")


def test_shared_trunk_is_stored_once(tmp_path, monkeypatch):
    from safetensors import safe_open

    from avsep_cli.models.avpc import AVPC
    from avsep_cli.models.trunk_classifier import TrunkClassifier

    folder = tmp_path / "weights"
    monkeypatch.setenv("AVSEP_WEIGHTS", str(folder))
    torch.manual_seed(0)
    cls = TrunkClassifier(num_classes=3)
    registry.export(checkpoint.save(tmp_path / "t.pt", checkpoint.model_state("visual-trunk", {"num_classes": 3, "frame_size": 224}, cls)),
                    "trunk-test", "visual-trunk")
    shared = registry.resolve("trunk-test").data["state_dict"]  # what was shipped (fp16 values)
    avpc = AVPC(ngf=4, cycles=1)
    avpc.frame_net.trunk.load_state_dict({k.removeprefix("trunk."): v for k, v in shared.items() if k.startswith("trunk.")})
    args = {"ngf": 4, "visual_channels": 16, "cycles": 1, "frame_size": 224}
    ckpt = checkpoint.save(tmp_path / "a.pt", checkpoint.model_state("avpc", args, avpc))
    e = registry.export(ckpt, "avpc-test", "avpc", trunk="trunk-test")
    with safe_open(str(folder / e["file"]), "pt") as f:
        assert not any(k.startswith("frame_net.trunk.") for k in f.keys())
    assert (folder / e["file"]).stat().st_size < (folder / "trunk-test.safetensors").stat().st_size / 5
    back = registry.resolve("avpc-test", expect_model="avpc").data["state_dict"]
    ref = avpc.state_dict()
    assert back.keys() == ref.keys()
    for k, v in ref.items():
        assert torch.allclose(back[k].float(), v.float(), atol=1e-2, rtol=1e-2), k
    other = AVPC(ngf=4, cycles=1)  # a trunk that is not the shipped one
    with pytest.raises(Exception, match="its trunk differs"):
        registry.export(checkpoint.save(tmp_path / "b.pt", checkpoint.model_state("avpc", args, other)), "x", "avpc",
                        trunk="trunk-test")
