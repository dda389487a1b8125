"""Models: shapes through every module on tiny configurations, the paper's parameter counts, a generic
save-and-reload round trip, test-time cycles, and `avsep info`."""

from __future__ import annotations

import json

import pytest
import torch

from avsep_cli import checkpoint
from avsep_cli.cli import main
from avsep_cli.errors import AvsepError
from avsep_cli.models.avpc import AVPC, AVPCConfig, PCNet, parameter_counts
from avsep_cli.models.sop import SoundOfPixels, UNet7
from avsep_cli.models.tiny import TinyNet

T = 64  # STFT frames in these tests (the papers use 256)


def frames(b: int, k: int = 3, size: int = 224) -> torch.Tensor:
    return torch.randint(0, 256, (b, k, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_avpc_parameter_counts_match_the_paper_and_the_reference_layout():
    counts = parameter_counts(AVPCConfig.preset("paper"))
    assert counts["sound net (PCNet)"] == 4_692_866
    assert counts["total"] == 16_164_338
    assert counts["frame net (trunk)"] == 11_176_512 and counts["frame net (head)"] == 294_960
    cpu = parameter_counts(AVPCConfig.preset("cpu"))
    assert cpu["sound net (PCNet)"] < counts["sound net (PCNet)"] / 10
    # the reference's layout (PCNetLR): 7 error rates a and 7 mixing rates b (the visual end's included); BN:
    # 8 initial top-down (input + 7), 7 initial bottom-up, per cycle 6 top-down and 7 bottom-up
    net = PCNet(ngf=64, cycles=4)
    ch = [64, 64, 128, 128, 256, 256, 512]
    assert [p.shape[1] for p in net.a] == [p.shape[1] for p in net.b] == ch
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 8 + 7 + 4 * (6 + 7)
    assert sum(m.num_features for m in bns) == 1 + 2 * sum(ch) + 4 * (sum(ch[1:]) + sum(ch))


def test_sop_unet_parameter_count_is_the_reference_one():
    from avsep_cli.models.sop import SoPConfig
    from avsep_cli.models.sop import parameter_counts as sop_counts

    assert sop_counts(SoPConfig())["sound net (U-Net)"] == 30_274_210  # unet7, ngf 64, fc_dim 32
    assert sop_counts(SoPConfig(ngf=8))["sound net (U-Net)"] == 478_066  # the golden fixture's width
    assert sop_counts(SoPConfig(legacy=True))["sound net (U-Net)"] == 41_886_370  # the transposed-conv U-Net shipped before


def test_sop_reference_initialisation():
    torch.manual_seed(0)
    unet = UNet7(ngf=64, k=32)
    convs = torch.cat([m.weight.flatten() for m in unet.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(convs.std().item() - 1e-3) < 2e-5 and abs(convs.mean().item()) < 1e-5
    bn_w = torch.cat([m.weight for m in unet.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    bn_b = torch.cat([m.bias for m in unet.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(bn_w.mean().item() - 1) < 2e-3 and abs(bn_w.std().item() - 0.02) < 2e-3 and not bn_b.any()
    assert unet.ups[0][0].bias.abs().max() > 0.01  # the outermost up conv's bias keeps PyTorch's default


def test_weights_without_the_new_config_fields_build_the_legacy_networks():
    """Shipped weights made before issue 16 carry model_args without `legacy`: they rebuild the networks they
    were trained with, with the same parameter names; weights written now record legacy=False."""
    from avsep_cli.models.avpc_legacy import LegacyPCNet
    from avsep_cli.models.sop_legacy import LegacyUNet7

    old_avpc = checkpoint.build_model({"model_name": "avpc", "model_args": {"ngf": 4, "cycles": 1},
                                       "state_dict": AVPC(ngf=4, cycles=1, legacy=True, trunk_bn_train=False,
                                                          align_corners=True).state_dict()})
    assert isinstance(old_avpc.sound_net, LegacyPCNet) and old_avpc.config.align_corners
    old_sop = checkpoint.build_model({"model_name": "sop", "model_args": {"ngf": 4, "k": 8},
                                      "state_dict": SoundOfPixels(ngf=4, k=8, legacy=True, train_trunk=False).state_dict()})
    assert isinstance(old_sop.sound_net, LegacyUNet7)
    state = checkpoint.model_state("avpc", {"ngf": 4, "cycles": 1}, AVPC(ngf=4, cycles=1))
    assert state["model_args"]["legacy"] is False and isinstance(checkpoint.build_model(state).sound_net, PCNet)


@pytest.mark.parametrize("ngf,cycles", [(4, 0), (4, 1), (8, 2)])
def test_pcnet_shapes(ngf, cycles):
    net = PCNet(ngf=ngf, cycles=cycles)
    out = net(torch.randn(2, 1, 256, T * 4), torch.randn(2, 16, 2, T * 4 // 128))
    assert out.shape == (2, 1, 256, T * 4)


def test_avpc_frame_net_gives_a_2x2_map_and_keeps_the_trunk_frozen():
    m = AVPC(ngf=4, cycles=1)
    v = m.frame_net(frames(2))
    assert v.shape == (2, 16, 2, 2)
    m.train()
    # the reference freezes the trunk's weights only: its BatchNorm normalises with batch statistics in training
    assert m.frame_net.trunk.training and all(not p.requires_grad for p in m.frame_net.trunk.parameters())
    before = m.frame_net.trunk.stem[1].running_mean.clone()
    out = m(torch.randn(2, 1, 256, 256), frames(2))
    out.mean().backward()
    assert not torch.equal(before, m.frame_net.trunk.stem[1].running_mean)
    assert m.frame_net.head[0].weight.grad is not None
    assert all(p.grad is None for p in m.frame_net.trunk.parameters())
    cached = AVPC(ngf=4, cycles=1, trunk_bn_train=False).train()  # what cached trunk features amount to
    assert not cached.frame_net.trunk.training and all(not p.requires_grad for p in cached.frame_net.trunk.parameters())


def test_more_test_cycles_than_training_reuse_the_last_norms():
    torch.manual_seed(0)
    m = AVPC(ngf=4, cycles=2).eval()
    x, f = torch.randn(1, 1, 256, 256), frames(1)
    base = m(x, f)
    m.test_cycles = 5
    more = m(x, f)
    m.test_cycles = 0
    none = m(x, f)
    assert more.shape == base.shape == none.shape
    assert not torch.allclose(more, base) and not torch.allclose(none, base)
    m.test_cycles = 2
    assert torch.equal(m(x, f), base)


def test_sop_shapes_and_dilated_trunk():
    m = SoundOfPixels(ngf=4, k=8)
    feats = m.frame_net.features(frames(2))
    assert feats.shape == (2, 3, 512, 14, 14)  # dilated last stage: output stride 16
    assert m.frame_net.from_features(feats).shape == (2, 8)
    assert UNet7(ngf=4, k=8)(torch.randn(2, 1, 256, 256)).shape == (2, 8, 256, 256)
    assert m(torch.randn(2, 1, 256, 256), frames(2)).shape == (2, 1, 256, 256)


@pytest.mark.parametrize("name,args", [("tiny", {"channels": 8}), ("avpc", {"ngf": 4, "cycles": 1}),
                                       ("sop", {"ngf": 4, "k": 8})])
def test_save_and_reload_gives_identical_outputs(tmp_path, name, args):
    torch.manual_seed(1)
    checkpoint._load_builtin_models()
    model = checkpoint.MODELS[name](**args)
    model.train()
    x, f = torch.randn(2, 1, 256, 256), frames(2)
    model(x, f)  # move BatchNorm statistics off their defaults
    model.eval()
    path = checkpoint.save(tmp_path / f"{name}.pt", checkpoint.model_state(name, args, model))
    data = torch.load(path, weights_only=True)
    again = checkpoint.build_model(data).eval()
    assert torch.equal(again(x, f), model(x, f))


def test_info_cli(capsys):
    assert main(["info", "--method", "avpc", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parameters"]["sound net (PCNet)"] == 4_692_866
    assert main(["info", "--method", "sop", "--preset", "cpu"]) == 0
    assert "U-Net" in capsys.readouterr().out
    assert main(["info", "--method", "nope"]) == 2


@pytest.mark.parametrize("method", ["avpc", "sop"])
def test_train_end_to_end_and_eval_loads_the_checkpoint(tiny_corpus, tmp_path, method):
    run = tmp_path / method
    assert main(["train", "--method", method, "--preset", "cpu", "--root", str(tiny_corpus), "--run", str(run),
                 "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
                 "--val-num", "0"]) == 0
    ck = checkpoint.load(run / "last.pt")
    assert ck["model_name"] == method
    if method == "avpc":  # the references' optimisers: AVPC AdamW (frame head 1e-4), Sound-of-Pixels SGD (trunk 1e-4)
        assert ck["config"]["optimizer"] == "adamw" and ck["config"]["lr"]["frame_net"] == 1e-4
        assert tuple(ck["config"]["lr_steps"]) == (40, 80) and ck["config"]["options"]["target"] == "avpc"
    else:
        assert ck["config"]["optimizer"] == "sgd" and ck["config"]["lr"]["frame_net.trunk"] == 1e-4
        assert ck["config"]["options"]["target"] == "sop"
    out = tmp_path / "e.json"
    assert main(["eval", "--method", method, "--weights", str(run / "last.pt"), "--data", str(tiny_corpus),
                 "--num", "2", "--window", "10s", "--json", str(out)]) == 0  # 10 s: two 65535-sample windows
    data = json.loads(out.read_text())
    n_duets = sum(1 for k in data["setup"]["items"] if k.startswith("duet-"))
    assert len(data["methods"][method]["sources"]) == 4 + 2 * n_duets
    cyc = ["eval", "--method", method, "--weights", str(run / "last.pt"), "--data", str(tiny_corpus), "--num", "1",
           "--no-duets", "--cycles", "0"]
    if method == "avpc":  # the paper's ablation: test cycles other than the training ones
        assert main(cyc + ["--json", str(tmp_path / "c0.json")]) == 0
        assert "avpc-c0" in json.loads((tmp_path / "c0.json").read_text())["methods"]
    else:
        assert main(cyc) == 2


def test_fixed_window_methods_refuse_other_segments(tiny_corpus, tmp_path, capsys):
    assert main(["train", "--method", "avpc", "--root", str(tiny_corpus), "--run", str(tmp_path / "r"),
                 "--segment", "16383"]) == 2
    assert "65535-sample windows" in capsys.readouterr().err


def test_visual_trunk_pretraining_feeds_the_separators(tiny_corpus, tmp_path, capsys):
    from avsep_cli.datasets import FrameClassification
    from avsep_cli.models.resnet import ResNet18Trunk, load_trunk_weights

    ds = FrameClassification(tiny_corpus, "train", length=12)
    labels = set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 224, 224) and item["image"].dtype == torch.uint8
        labels.add(int(item["label"]))
    assert len(labels) >= 3
    run = tmp_path / "trunk"
    assert main(["train", "--method", "visual-trunk", "--root", str(tiny_corpus), "--run", str(run), "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch-size", "4", "--val-num", "1"]) == 0
    assert "val ACC" in capsys.readouterr().err
    trunk = ResNet18Trunk()
    load_trunk_weights(trunk, run / "best.pt")
    saved = torch.load(run / "best.pt", weights_only=True)["state_dict"]
    assert torch.equal(trunk.layer4[1].conv2.weight, saved["trunk.layer4.1.conv2.weight"])
    assert main(["train", "--method", "avpc", "--preset", "cpu", "--root", str(tiny_corpus), "--run",
                 str(tmp_path / "avpc"), "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--val-num", "0",
                 "--visual-weights", str(run / "best.pt")]) == 0
    avpc = torch.load(tmp_path / "avpc" / "last.pt", weights_only=True)["state_dict"]
    assert torch.equal(avpc["frame_net.trunk.layer4.1.conv2.weight"], saved["trunk.layer4.1.conv2.weight"])  # frozen


def test_visual_weights_by_shipped_name_load_the_shipped_trunk(capsys):
    from safetensors.torch import load_file

    from avsep_cli import registry
    from avsep_cli.models.resnet import ResNet18Trunk, load_trunk_weights

    trunk = ResNet18Trunk()
    load_trunk_weights(trunk, "visual-trunk-broad")  # a shipped name, not a file here
    shipped = load_file(str(registry.weights_dir() / registry.entry("visual-trunk-broad")["file"]))
    assert torch.equal(trunk.layer4[1].conv2.weight, shipped["trunk.layer4.1.conv2.weight"].float())
    assert torch.equal(trunk.stem[0].weight, shipped["trunk.stem.0.weight"].float())
    with pytest.raises(AvsepError, match="nor shipped visual-trunk weights"):
        load_trunk_weights(ResNet18Trunk(), "avpc-cpu")  # shipped, but not a trunk


def test_tiny_model_shapes():
    assert TinyNet(channels=8)(torch.randn(3, 1, 256, T), frames(3, size=64)).shape == (3, 1, 256, T)


def test_rcop_loss_stops_gradients_at_the_targets():
    from avsep_cli.models.avpc import rcop_loss

    p1, z1, p2, z2 = (torch.randn(4, 16, requires_grad=True) for _ in range(4))
    rcop_loss(p1, z1, p2, z2).backward()
    assert z1.grad is None and z2.grad is None  # stop-gradient branch: nothing flows back
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0
    same = torch.randn(4, 16)
    assert torch.isclose(rcop_loss(same, same, same, same), torch.tensor(-1.0))


def test_rcop_two_stages_end_to_end(tiny_corpus, tmp_path):
    from avsep_cli.models.avpc import AVPCRCoP

    m = AVPCRCoP(ngf=4, cycles=1)
    z, p = m(torch.randn(2, 1, 256, 256), frames(2))
    assert z.shape == p.shape == (2, 2048)  # the reference SimSiam widths
    run = tmp_path / "rcop-run"
    assert main(["train", "--method", "avpc", "--rcop", "--rcop-epochs", "1", "--preset", "cpu", "--root", str(tiny_corpus),
                 "--run", str(run), "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--val-num", "0"]) == 0
    stage1 = checkpoint.load(run / "rcop" / "last.pt")
    stage2 = checkpoint.load(run / "last.pt")
    assert stage1["model_name"] == "avpc-rcop" and stage1["config"]["optimizer"] == "sgd"
    assert stage2["model_name"] == "avpc" and stage2["config"]["init_from"].endswith("last.pt")
    s1 = {k[5:]: v for k, v in stage1["state_dict"].items() if k.startswith("avpc.")}
    fresh = AVPC(**stage2["model_args"]).state_dict()
    key = "sound_net.down.3.conv.weight"
    moved = (stage2["state_dict"][key] - s1[key]).abs().sum()
    assert moved < 0.1 * (fresh[key] - s1[key]).abs().sum()  # stage 2 started from the stage-1 weights


def test_cached_trunk_features_match_the_trunk_and_train(tiny_corpus, tmp_path):
    import shutil

    from avsep_cli.datasets import MixSeparate
    from avsep_cli.features import TrunkFeatureStore
    from avsep_cli.models.frames import normalize

    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    model = AVPC(ngf=4, cycles=1)
    store = TrunkFeatureStore(root, model.frame_net.trunk, "resnet18")
    ds = MixSeparate(root, "train", length=2, features=store, train=False)
    plain = MixSeparate(root, "train", length=2, train=False)
    item, ref = ds[0], plain[0]
    assert item["feats"].shape == (2, 3, 512, 7, 7) and "frames" not in item
    with torch.no_grad():
        direct = model.frame_net.trunk(normalize(ref["frames"].flatten(0, 1))).view(2, 3, 512, 7, 7)
    torch.testing.assert_close(item["feats"], direct, rtol=2e-3, atol=2e-3)  # stored as float16
    files = sorted((root / ".avsep-cache" / "features").rglob("*.npy"))
    assert files and torch.equal(ds[0]["feats"], item["feats"])  # second read: from disk, same values
    assert sorted((root / ".avsep-cache" / "features").rglob("*.npy")) == files
    other = TrunkFeatureStore(root, AVPC(ngf=4).frame_net.trunk, "resnet18")
    assert other.sha != store.sha  # another trunk never reads these
    run = tmp_path / "run"
    assert main(["train", "--method", "avpc", "--preset", "cpu", "--root", str(root), "--run", str(run), "--epochs", "1",
                 "--steps-per-epoch", "1", "--batch-size", "2", "--val-num", "0", "--cache-features"]) == 0
    assert checkpoint.load(run / "last.pt")["config"]["cache_features"] is True
