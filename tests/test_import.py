"""`avsep weights import`: the authors' checkpoint files (plain state dicts, a Lightning .ckpt), written here
from the golden fixtures' reference state dicts, become avsep weights that compute the fixtures' outputs;
files that do not fit are one error line and exit 2."""

from __future__ import annotations

import json

import pytest
import torch
from clihelp import assert_one_error, run
from test_golden import close, load, state

from avsep_cli import registry
from avsep_cli.models import reference_names as R


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    monkeypatch.setenv("AVSEP_WEIGHTS", str(folder))
    return folder


def _trunk_in_reference_names() -> dict[str, torch.Tensor]:
    """The shipped ResNet-18 trunk as the references' `features.*`."""
    vt = registry.resolve("visual-trunk", folder=registry.Path(__file__).resolve().parents[1] / "weights").data["state_dict"]
    return {ref: vt[ours] for ref, ours in R.resnet_trunk().items() if ours in vt}


def test_import_avpc_reference_files_computes_the_golden_outputs(tmp_path, weights_dir, capsys):
    sound, frame = load("avpc_pcnet_ngf16"), load("avpc_framehead")
    torch.save(state(sound), tmp_path / "sound_best.pth")
    torch.save({**state(frame), **_trunk_in_reference_names()}, tmp_path / "frame_best.pth")
    rc, _, err = run(capsys, "weights", "import", "--from", "avpc", tmp_path / "frame_best.pth",
                       tmp_path / "sound_best.pth", "-o", "ref-avpc", "--fp32")
    assert rc == 0, err
    e = registry.entry("ref-avpc", weights_dir)
    assert e["method"] == "avpc" and e["config"]["ngf"] == 16 and e["config"]["cycles"] == 4
    assert e["config"]["legacy"] is False and len(e["source"]["files"]) == 2
    model = registry.build(registry.resolve("ref-avpc", folder=weights_dir)).eval()
    with torch.no_grad():
        vmap = model.frame_net.from_features(frame["in.trunk_features"].view(2, 3, 512, 7, 7))
        logits = model.sound_net(sound["in.log_mag_mix"], sound["in.feat_map_frames"])
    close(vmap, frame["out.eval.visual_map"], "imported frame head")
    close(logits, sound["out.eval_c4.logits"], "imported PCNet")


def test_import_sop_reference_files_computes_the_golden_outputs(tmp_path, weights_dir, capsys):
    g = load("sop_unet_ngf8_head_synth")
    ref = state(g)
    for net in ("net_sound", "net_synthesizer"):
        torch.save({k[len(net) + 1:]: v for k, v in ref.items() if k.startswith(net + ".")}, tmp_path / f"{net}.pth")
    frame = {k[len("net_frame."):]: v for k, v in ref.items() if k.startswith("net_frame.")}
    torch.save({**frame, **_trunk_in_reference_names()}, tmp_path / "net_frame.pth")
    rc, _, err = run(capsys, "weights", "import", "--from", "sop", *(tmp_path / f"{n}.pth" for n in
                     ("net_sound", "net_frame", "net_synthesizer")), "-o", "ref-sop", "--fp32")
    assert rc == 0, err
    model = registry.build(registry.resolve("ref-sop", folder=weights_dir)).eval()
    assert model.config.ngf == 8 and model.config.k == 32
    feats = g["in.trunk_features"].view(2, 3, 512, 14, 14)
    with torch.no_grad():
        maps = model.sound_net(g["in.log_mag_mix"])
        visual = model.frame_net.from_features(feats)
    close(maps[..., ::8, ::8], g["out.eval.feat_sound_sub8"], "imported U-Net")
    close(visual, g["out.eval.visual"], "imported frame net")


def test_import_ialcms_lightning_checkpoint(tmp_path, weights_dir, capsys):
    """A Lightning .ckpt in the reference's names (the AV module's tensors from its golden fixture), the
    critic's tensors left out; a DeepLabv3+ visual head is refused with its reason."""
    from avsep_cli.models.ialcms import IALCMS

    torch.manual_seed(0)
    ours = IALCMS(ngf=8, dim=64, blocks=2, frame_size=64)
    own = ours.state_dict()
    names = R.ialcms_separator(2)
    ref = {k: own[v].clone() for k, v in names.items() if v in own}
    av = state(load("ialcms_avmodule_d64"))
    avmod = "separator_w_v.unet_block." + "submodule." * 5 + "avmodule."
    ref.update({avmod + k: v for k, v in av.items()})
    ckpt = {"epoch": 3, "state_dict": {**{f"net_wrapper.av_separator.{k}": v for k, v in ref.items()},
                                       "net_wrapper.critics.critics_model.w.weight": torch.randn(1, 64)}}
    torch.save(ckpt, tmp_path / "last.ckpt")
    rc, _, err = run(capsys, "weights", "import", "--from", "ialcms", tmp_path / "last.ckpt", "-o", "ref-ial",
                     "--fp32", "--frame-size", "64")
    assert rc == 0, err
    model = registry.build(registry.resolve("ref-ial", folder=weights_dir))
    got = model.state_dict()
    assert torch.equal(got["av.fuse.0.weight"], av["sep_mlp.0.weight"]) and torch.equal(got["av.att_w"], av["sigmoid.w"])
    assert torch.equal(got["decoder.head.weight"], own["decoder.head.weight"])
    ckpt["state_dict"]["net_wrapper.av_separator.visualNet.basenet.aspp.conv1.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "deeplab.ckpt")
    rc, _, err = run(capsys, "weights", "import", "--from", "ialcms", tmp_path / "deeplab.ckpt", "-o", "x")
    assert_one_error(rc, err, "DeepLabv3+")


def test_import_refuses_what_does_not_fit_in_one_line(tmp_path, weights_dir, capsys):
    sound = state(load("avpc_pcnet_ngf16"))
    frame = state(load("avpc_framehead"))
    trunk = _trunk_in_reference_names()
    torch.save({**frame, **trunk}, tmp_path / "frame.pth")
    bad = dict(sound)
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "unknown.pth")
    rc, _, err = run(capsys, "weights", "import", "--from", "avpc", tmp_path / "frame.pth", tmp_path / "unknown.pth", "-o", "x")
    assert_one_error(rc, err, "unknown keys")
    bad = {k: v for k, v in sound.items() if k != "b0.3"}
    torch.save(bad, tmp_path / "missing.pth")
    rc, _, err = run(capsys, "weights", "import", "--from", "avpc", tmp_path / "frame.pth", tmp_path / "missing.pth", "-o", "x")
    assert_one_error(rc, err, "b0.3")
    bad = dict(sound)
    bad["a0.2"] = torch.zeros(1, 3, 1, 1)
    torch.save(bad, tmp_path / "shape.pth")
    rc, _, err = run(capsys, "weights", "import", "--from", "avpc", tmp_path / "frame.pth", tmp_path / "shape.pth", "-o", "x")
    assert_one_error(rc, err, "a0.2")
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pth")  # not plain data: weights_only refuses it
    rc, _, err = run(capsys, "weights", "import", "--from", "avpc", tmp_path / "pickled.pth", "-o", "x")
    assert_one_error(rc, err, "weights_only=True")
    rc, _, err = run(capsys, "weights", "import", "--from", "nope", tmp_path / "frame.pth", "-o", "x")
    assert_one_error(rc, err, "expected one of avpc, sop, ialcms")
    assert not (weights_dir / "manifest.json").exists() or "x" not in json.loads((weights_dir / "manifest.json").read_text())
