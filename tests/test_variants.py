"""Named variants (docs/fidelity.md): each option that selects a behaviour other than the authors' code
changes what it says it changes, and nothing when it is left at its default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avsep_cli import dsp
from avsep_cli.datasets import MixSeparate, augment_frames
from avsep_cli.methods import MixBatch


def _frames(b: int, n: int) -> torch.Tensor:
    return torch.randint(0, 256, (b, n, 3, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name,args", [("avpc", {"ngf": 4, "cycles": 1}), ("sop", {"ngf": 4, "k": 8})])
def test_align_corners_selects_the_warp_of_the_signal_path(name, args):
    from avsep_cli import checkpoint
    from avsep_cli.training.systems import MaskMethod, mixture_features, signal_warp

    checkpoint._load_builtin_models()
    torch.manual_seed(0)
    a = checkpoint.MODELS[name](**args, align_corners=False).eval()
    b = checkpoint.MODELS[name](**args, align_corners=True).eval()
    b.load_state_dict(a.state_dict())
    assert isinstance(signal_warp(a), dsp.GridWarp) and signal_warp(b) is dsp.LOG
    mix = torch.randn(1, dsp.SEGMENT) * 0.1
    fa, fb = mixture_features(mix, signal_warp(a)), mixture_features(mix, signal_warp(b))
    assert not torch.allclose(fa[0], fb[0])
    batch = MixBatch(mixture=mix, stems=torch.zeros(1, 2, dsp.SEGMENT), classes=[["a", "b"]], frames=_frames(1, 2))
    ma, mb = (MaskMethod(m, name, segment=dsp.SEGMENT, binary=False).masks(batch) for m in (a, b))  # soft masks
    assert ma.shape == mb.shape == (1, 2, 512, 256) and (ma - mb).abs().mean() > 1e-4


def test_sop_trunk_trains_by_default_and_freezes_on_request():
    from avsep_cli.models.sop import SoundOfPixels

    m = SoundOfPixels(ngf=4, k=8).train()
    out = m(torch.randn(2, 1, 256, 256), _frames(2, 1)[:, 0])
    out.mean().backward()
    assert m.frame_net.trunk.training and m.frame_net.trunk.layer4[1].conv2.weight.grad is not None
    frozen = SoundOfPixels(ngf=4, k=8, train_trunk=False).train()
    assert not frozen.frame_net.trunk.training
    assert all(not p.requires_grad for p in frozen.frame_net.trunk.parameters())


def test_ialcms_freq_scale_and_mask_variants():
    from avsep_cli.models.ialcms import IALCMS
    from avsep_cli.training.ialcms import signal_path

    torch.manual_seed(0)
    log, mel = IALCMS(ngf=4, dim=32, blocks=1), IALCMS(ngf=4, dim=32, blocks=1, freq_scale="mel")
    assert signal_path(log).warp is dsp.LOG and signal_path(mel).warp is dsp.MEL
    mix = torch.randn(1, 4095) * 0.1
    assert not torch.allclose(signal_path(log).features(mix)[1], signal_path(mel).features(mix)[1])
    relu = IALCMS(ngf=4, dim=32, blocks=1).eval()
    sig = IALCMS(ngf=4, dim=32, blocks=1, mask="sigmoid").eval()
    sig.load_state_dict(relu.state_dict())
    relu.mask_scale.data.fill_(40.0)  # scores large enough to leave [0, 1]
    sig.mask_scale.data.fill_(40.0)
    x, crops = torch.randn(1, 1, 256, 8), torch.randint(0, 256, (1, 1, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        mr, ms = relu(x, crops)["mask"], sig(x, crops)["mask"]
    assert mr.max() > 1 and (mr == 0).any() and 0 <= ms.min() and ms.max() <= 1
    with pytest.raises(ValueError):
        IALCMS(ngf=4, dim=16)  # the AV module adds audio and visual features channel by channel


def test_frame_augmentation_modes():
    frames = torch.randint(0, 256, (3, 3, 240, 240), dtype=torch.uint8)
    ref = augment_frames(frames, np.random.default_rng(1), 224, True, "reference")
    old = augment_frames(frames, np.random.default_rng(1), 224, True, "scale")
    assert ref.shape == old.shape == (3, 3, 224, 224) and not torch.equal(ref, old)
    assert torch.equal(augment_frames(frames, np.random.default_rng(1), 224, False, "reference"),
                       augment_frames(frames, np.random.default_rng(1), 224, False, "scale"))  # evaluation: no augmentation


def test_mix_partners_any_allows_one_class_twice(tiny_corpus):
    same = {p: 0 for p in ("any", "classes")}
    for partners in same:
        ds = MixSeparate(tiny_corpus, "train", mix=2, length=40, segment=2047, frame_size=32, partners=partners)
        for i in range(len(ds)):
            labels = ds[i]["labels"]
            same[partners] += int(labels[0] == labels[1])
    assert same["classes"] == 0 and same["any"] > 0


def test_cli_sets_schedules_options_and_model_fields(tiny_corpus, tmp_path, capsys):
    import json

    from avsep_cli.cli import main

    run = tmp_path / "r"
    assert main(["train", "--method", "avpc", "--preset", "cpu", "--root", str(tiny_corpus), "--run", str(run),
                 "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--val-num", "0", "--lr-steps", "1",
                 "--option", "target=dominant", "--option", "partners=classes",
                 "--model-option", "align_corners=true"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["lr_steps"] == [1] and cfg["options"]["target"] == "dominant" and cfg["options"]["partners"] == "classes"
    assert cfg["options"]["levels"] == "avpc" and cfg["model"]["align_corners"] is True and cfg["model"]["legacy"] is False
    assert cfg["no_decay"] == ["sound_net.a", "sound_net.b"] and cfg["grad_clip"] == 0.0
    capsys.readouterr()
    for bad, phrase in ((["--lr-steps", "80,40"], "increasing"), (["--option", "nope=1"], "unknown options"),
                        (["--option", "target"], "KEY=VALUE")):
        rc = main(["train", "--method", "avpc", "--root", str(tiny_corpus), "--run", str(tmp_path / "x"), *bad])
        assert rc == 2 and phrase in capsys.readouterr().err, bad


def test_avpc_rates_train_without_weight_decay():
    from avsep_cli.models.avpc import AVPC
    from avsep_cli.training.config import TrainConfig
    from avsep_cli.training.run import METHOD_DEFAULTS
    from avsep_cli.training.systems import System

    cfg = TrainConfig(method="avpc", **METHOD_DEFAULTS["avpc"])
    groups = System(AVPC(ngf=4, cycles=1), "avpc", {}).param_groups(cfg)
    by = {g["name"]: g for g in groups}
    assert by["sound_net (no decay)"]["weight_decay"] == 0.0 and len(by["sound_net (no decay)"]["params"]) == 14
    assert by["frame_net"]["lr"] == 1e-4 and "weight_decay" not in by["sound_net"]


def test_a_run_made_before_the_faithful_networks_resumes_with_its_own(tiny_corpus, tmp_path):
    """A run whose config.json predates the `legacy` field (avsep before issue 16) resumes with the legacy
    network and recipe it was made with."""
    import json

    from avsep_cli import checkpoint
    from avsep_cli.cli import main

    run = tmp_path / "old"
    assert main(["train", "--method", "avpc", "--preset", "cpu", "--root", str(tiny_corpus), "--run", str(run),
                 "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--val-num", "0",
                 "--model-option", "legacy=true", "--model-option", "trunk_bn_train=false",
                 "--model-option", "align_corners=true"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["options"]["target"] == "dominant"  # legacy networks train with avsep's old recipe
    for k in ("legacy", "trunk_bn_train", "align_corners", "rcop_dim", "rcop_pred_dim"):
        del cfg["model"][k]  # as written before these fields existed
    (run / "config.json").write_text(json.dumps(cfg))
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert checkpoint.load(run / "last.pt")["model_args"]["legacy"] is True
