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


def _reference_visual_net(dim: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    """The authors' VisualNet tensors (`visualNet.*`) at common-space width `dim`, named and shaped from its
    definitions (`DeepLab/`): the backbone is torchvision's resnet18 regrouped (layer1 = conv1, bn1, relu;
    layer2 = maxpool, layer1; layer3-5 = layer2-4), the last stage made stride 1 with its other 3x3 convs
    dilated 2 (OS 16); ASPP branches dim / 2, output dim; reduce_block 128 -> 48; one decoder conv; the
    common-space MLP. Random values, BatchNorm statistics included. Returns (state, the backbone)."""
    import torchvision

    g = torch.Generator().manual_seed(seed)
    ch = list(torchvision.models.resnet18(weights=None).children())
    backbone = torch.nn.Module()
    for name, mod in (("layer1", torch.nn.Sequential(*ch[:3])), ("layer2", torch.nn.Sequential(*ch[3:5])),
                      ("layer3", ch[5]), ("layer4", ch[6]), ("layer5", ch[7])):
        backbone.add_module(name, mod)
    for m in backbone.layer5.modules():
        if isinstance(m, torch.nn.Conv2d):
            if m.stride == (2, 2):
                m.stride = (1, 1)
            elif m.kernel_size == (3, 3):
                m.dilation, m.padding = (2, 2), (2, 2)
    shapes = {}
    b, a = "visualNet.basenet.", "visualNet.basenet.aspp."
    bn = lambda p, c: shapes.update({f"{p}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")})  # noqa: E731
    for i, k in enumerate((1, 3, 3, 3)):
        shapes[f"{a}aspp{i + 1}.model.0.weight"] = (dim // 2, 512, k, k)
        bn(f"{a}aspp{i + 1}.model.1", dim // 2)
    shapes[a + "global_avg_pool.1.weight"] = (dim // 2, 512, 1, 1)
    bn(a + "global_avg_pool.2", dim // 2)
    shapes[a + "conv1.weight"] = (dim, 5 * (dim // 2), 1, 1)
    bn(a + "bn1", dim)
    shapes.update({b + "reduce_block.0.weight": (48, 128, 1, 1), b + "reduce_block.0.bias": (48,),
                   b + "decoder.0.weight": (dim, dim + 48, 3, 3), b + "decoder.0.bias": (dim,)})
    bn(b + "reduce_block.2", 48)
    bn(b + "decoder.2", dim)
    c = "visualNet.common_space_mlp."
    shapes.update({c + "0.weight": (dim, dim, 1, 1), c + "0.bias": (dim,), c + "3.weight": (dim, dim, 1, 1), c + "3.bias": (dim,)})
    bn(c + "2", dim)
    state = {k: (torch.rand(v, generator=g) + 0.5 if k.endswith("running_var") else torch.randn(v, generator=g) * 0.1)
             for k, v in shapes.items()}
    for k, v in backbone.state_dict().items():
        if v.is_floating_point():
            v.copy_(torch.rand(v.shape, generator=g) + 0.5 if k.endswith("running_var") else torch.randn(v.shape, generator=g) * 0.1)
        state[b + "backbone." + k] = v.clone()
    return state, backbone.eval()


def _reference_visual_forward(sd: dict, backbone, x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) normalised -> (N, dim, H/8, W/8): the authors' VisualNet in eval mode (common_f), written
    from its definitions with the tensors of `_reference_visual_net`."""
    import torch.nn.functional as F

    bn = lambda x, p: F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"])  # noqa: E731
    low = backbone.layer3(backbone.layer2(backbone.layer1(x)))  # conv3: (N, 128, H/8, W/8)
    high = backbone.layer5(backbone.layer4(low))  # conv5: (N, 512, H/16, W/16)
    b, a, c = "visualNet.basenet.", "visualNet.basenet.aspp.", "visualNet.common_space_mlp."
    ys = [F.leaky_relu(bn(F.conv2d(high, sd[f"{a}aspp{i + 1}.model.0.weight"], padding=0 if r == 1 else r, dilation=r),
                          f"{a}aspp{i + 1}.model.1")) for i, r in enumerate((1, 3, 6, 9))]
    pooled = F.relu(bn(F.conv2d(high.mean((2, 3), keepdim=True), sd[a + "global_avg_pool.1.weight"]), a + "global_avg_pool.2"))
    ys.append(F.interpolate(pooled, size=high.shape[-2:], mode="bilinear", align_corners=True))
    f1 = F.relu(bn(F.conv2d(torch.cat(ys, 1), sd[a + "conv1.weight"]), a + "bn1"))
    f1 = F.interpolate(f1, size=low.shape[-2:], mode="bilinear", align_corners=True)
    f2 = bn(F.relu(F.conv2d(low, sd[b + "reduce_block.0.weight"], sd[b + "reduce_block.0.bias"])), b + "reduce_block.2")
    f = bn(F.relu(F.conv2d(torch.cat([f1, f2], 1), sd[b + "decoder.0.weight"], sd[b + "decoder.0.bias"], padding=1)), b + "decoder.2")
    h = bn(F.relu(F.conv2d(f, sd[c + "0.weight"], sd[c + "0.bias"])), c + "2")
    return F.normalize(F.conv2d(h, sd[c + "3.weight"], sd[c + "3.bias"]), dim=1)


def _reference_audio_side(ngf: int = 8) -> dict[str, torch.Tensor]:
    """`separator_w_v.*` in the reference's names: the AV module from its golden fixture, the rest random
    through the name map the golden tests pin."""
    from avsep_cli.models.ialcms import IALCMS

    torch.manual_seed(0)
    own = IALCMS(ngf=ngf, dim=8 * ngf, blocks=2, frame_size=64, visual_head="mlp").state_dict()
    ref = {k: own[v].clone() for k, v in R.ialcms_separator(2, visual_head="mlp").items()
           if v in own and k.startswith("separator_w_v.")}
    avmod = "separator_w_v.unet_block." + "submodule." * 5 + "avmodule."
    ref.update({avmod + k: v for k, v in state(load("ialcms_avmodule_d64")).items()})
    return ref


def test_import_ialcms_lightning_checkpoint_with_its_deeplab_head(tmp_path, weights_dir, capsys):
    """A Lightning .ckpt holding the whole AVSeparator in the reference's names (the visual side built from
    the reference's definitions, the AV module from its golden fixture) and the critic's tensors (left out)
    imports with the DeepLabv3+ head, and the imported visual encoder computes the reference's visual map."""
    from avsep_cli.models.frames import normalize

    visual, backbone = _reference_visual_net(64)
    ref = {**_reference_audio_side(), **visual}
    ckpt = {"epoch": 3, "state_dict": {**{f"net_wrapper.av_separator.{k}": v for k, v in ref.items()},
                                       "net_wrapper.critics.critics_model.w.weight": torch.randn(1, 64)}}
    torch.save(ckpt, tmp_path / "last.ckpt")
    rc, _, err = run(capsys, "weights", "import", "--from", "ialcms", tmp_path / "last.ckpt", "-o", "ref-ial",
                     "--fp32", "--frame-size", "64")
    assert rc == 0, err
    e = registry.entry("ref-ial", weights_dir)
    assert e["config"]["visual_head"] == "deeplab" and e["config"]["legacy"] is False and e["config"]["ngf"] == 8
    model = registry.build(registry.resolve("ref-ial", folder=weights_dir)).eval()
    got = model.state_dict()
    assert torch.equal(got["visual.head.aspp.branches.2.0.weight"], ref["visualNet.basenet.aspp.aspp3.model.0.weight"])
    assert torch.equal(got["visual.trunk.layer4.1.conv2.weight"], ref["visualNet.basenet.backbone.layer5.1.conv2.weight"])
    assert torch.equal(got["av.att_w"], ref["separator_w_v.unet_block." + "submodule." * 5 + "avmodule.sigmoid.w"])
    crops = torch.randint(0, 256, (2, 1, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model.visual(crops)  # (2, 64, 8, 8)
        want = _reference_visual_forward(ref, backbone, normalize(crops[:, 0]))
    assert ours.shape == want.shape == (2, 64, 8, 8)
    close(ours, want, "imported DeepLabv3+ visual map")
    # another decoder depth (decoder.num 2) has no place in ours: one line
    ckpt["state_dict"]["net_wrapper.av_separator.visualNet.basenet.decoder.3.weight"] = torch.zeros(64, 64, 3, 3)
    torch.save(ckpt, tmp_path / "deeper.ckpt")
    rc, _, err = run(capsys, "weights", "import", "--from", "ialcms", tmp_path / "deeper.ckpt", "-o", "x")
    assert_one_error(rc, err, "visualNet.basenet.decoder.3.weight")


def test_import_ialcms_checkpoint_without_a_deeplab_head_gives_the_mlp_head(tmp_path, weights_dir, capsys):
    """A file without `visualNet.basenet.*` (avsep's earlier import path) builds the mlp head."""
    ref = _reference_audio_side()
    from avsep_cli.models.ialcms import IALCMS

    torch.manual_seed(1)
    mlp = IALCMS(ngf=8, dim=64, blocks=2, frame_size=64, visual_head="mlp").state_dict()
    ref.update({k: mlp[v].clone() for k, v in R.ialcms_separator(2, visual_head="mlp").items() if k.startswith("visualNet.")})
    torch.save({"state_dict": ref}, tmp_path / "mlp.ckpt")
    rc, _, err = run(capsys, "weights", "import", "--from", "ialcms", tmp_path / "mlp.ckpt", "-o", "ref-mlp", "--fp32",
                     "--frame-size", "64")
    assert rc == 0, err
    model = registry.build(registry.resolve("ref-mlp", folder=weights_dir))
    assert model.config.visual_head == "mlp" and not hasattr(model.visual, "head")
    assert torch.equal(model.state_dict()["visual.common.3.weight"], ref["visualNet.common_space_mlp.3.weight"])


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
