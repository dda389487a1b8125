"""Separation by instrument name: class prototypes (mean trunk features of a corpus' training crops), built
by `avsep weights prototypes`, stored and sha256-checked like weights, and given to every method in place of
pictures (`MixBatch.features`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avsep_cli import checkpoint, dsp, registry
from avsep_cli import prototypes as P
from avsep_cli.errors import AvsepError
from avsep_cli.methods import MixBatch, get_method
from avsep_cli.training.systems import IALCMSMethod, MaskMethod
from clihelp import assert_one_error, run


def _small(name: str):
    """Random-weight small nets of each kind, as methods (the shipped ones' code path)."""
    from avsep_cli.models.avpc import AVPC
    from avsep_cli.models.ialcms import IALCMS
    from avsep_cli.models.sop import SoundOfPixels
    from avsep_cli.models.tiny import TinyNet

    torch.manual_seed(0)
    if name == "tiny":
        return MaskMethod(TinyNet(), "tiny", frame_size=64, binary=False)  # soft masks: every difference shows
    if name == "avpc":
        return MaskMethod(AVPC(ngf=4, cycles=1), "avpc", segment=dsp.SEGMENT, binary=False)
    if name == "sop":
        return MaskMethod(SoundOfPixels(ngf=4, k=4), "sop", segment=dsp.SEGMENT, binary=False)
    return IALCMSMethod(IALCMS(ngf=1, dim=8, blocks=1, frame_size=64), frame_size=64)


def _batch(mixture, **guidance) -> MixBatch:
    b, s = next(iter(guidance.values())).shape[:2]
    return MixBatch(mixture=mixture, stems=torch.zeros(b, s, 0), classes=[["a", "b"]] * b, **guidance)


@pytest.mark.parametrize("name", ["tiny", "avpc", "sop", "ialcms"])
def test_features_of_crops_separate_exactly_as_the_crops(name):
    """The feature path is exact: the trunk's own features of some crops, given as `features`, give the
    stems the crops give; two sources with different features get different stems."""
    method = _small(name)
    g = torch.Generator().manual_seed(1)
    size = method.frame_size
    frames = torch.randint(0, 256, (1, 2, 2, 3, size, size), dtype=torch.uint8, generator=g)  # (B, S, K, 3, H, W)
    mixture = torch.randn(1, dsp.SEGMENT, generator=g) * 0.1
    by_crops = method.separate(_batch(mixture, frames=frames))
    feats = P.trunk_features(method, frames)
    assert feats.shape[:3] == (1, 2, 2) and feats.dtype == torch.float32
    by_feats = method.separate(_batch(mixture, features=feats))
    torch.testing.assert_close(by_feats, by_crops, rtol=0, atol=1e-6)
    assert not torch.allclose(by_feats[0, 0], by_feats[0, 1])
    if name in ("tiny", "ialcms"):  # they average the K trunk outputs first: K copies of the mean are the same
        mean = feats.mean(2, keepdim=True).expand_as(feats).contiguous()
        torch.testing.assert_close(method.separate(_batch(mixture, features=mean)), by_crops, rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_prototypes(tiny_corpus, tiny_weights, tmp_path_factory):
    """Prototypes of the tiny model's own visual stack on the tiny corpus' training split, built with the CLI
    into a private weights folder."""
    from avsep_cli.cli import main

    folder = tmp_path_factory.mktemp("protos") / "weights"
    with pytest.MonkeyPatch.context() as mp:  # only while building: later tests set it themselves
        mp.setenv("AVSEP_WEIGHTS", str(folder))
        rc = main(["weights", "prototypes", "--root", str(tiny_corpus), "--trunk", str(tiny_weights), "-o", "protos-tiny",
                   "--per-class", "1000"])
    assert rc == 0
    return {"folder": folder, "entry": registry.entry("protos-tiny", folder), "method": get_method("tiny", weights=str(tiny_weights))}


def test_prototypes_are_the_mean_trunk_feature_of_the_training_crops(tiny_corpus, tiny_prototypes, monkeypatch):
    from avsep_cli.datasets import ClipReader
    from avsep_cli.features import player_crops
    from avsep_cli.layout import open_corpus

    monkeypatch.setenv("AVSEP_WEIGHTS", str(tiny_prototypes["folder"]))
    e, method = tiny_prototypes["entry"], tiny_prototypes["method"]
    corpus = open_corpus(tiny_corpus)
    train = corpus.clips(split="train")
    assert e["method"] == "prototypes" and e["views"] == ["tiny-64"] and e["dtype"] == "float16"
    assert e["classes"] == sorted({c for clip in train for c in clip.classes})
    assert e["sha256"] == checkpoint.sha256(tiny_prototypes["folder"] / e["file"])
    assert e["trunk_state_sha256"] == P.trunk_sha256(method.model) and e["build"]["cpu_minutes"] >= 0
    # violin: every training player of that class, on the 1-fps grid, through the model's own visual stack
    reader, feats = ClipReader(tiny_corpus), []
    for clip in train:
        meta = json.loads(clip.sidecar.read_text())
        times = [float(t) for t in range(int(np.ceil(meta["duration"])))]
        for j, p in enumerate(meta["players"]):
            if p["class"] == "violin":
                feats.append(P.trunk_features(method, player_crops(reader, clip, times, j, 64)[None])[0])
    expected = torch.cat(feats).mean(0)  # (D, h, w)
    protos = P.load("protos-tiny")
    assert protos.crops["violin"] == e["crops_per_class"]["violin"] == sum(len(f) for f in feats)
    torch.testing.assert_close(protos.maps["tiny-64"][protos.classes.index("violin")], expected, rtol=2e-3, atol=2e-3)


def test_guidance_by_name(tiny_prototypes, monkeypatch):
    """Guidance for named classes: the method's K copies of each prototype; other names, other stems; the
    stems follow the names' order."""
    monkeypatch.setenv("AVSEP_WEIGHTS", str(tiny_prototypes["folder"]))
    method = tiny_prototypes["method"]
    assert P.known_classes(method) == ("flute", "piano", "trumpet", "violin")
    g = P.guidance_for(["violin", "Flute"], method)
    assert g.shape == (2, method.frames_per_source, 16, 16, 16) and torch.equal(g[0, 0], g[0, -1])
    mixture = torch.randn(1, dsp.SAMPLE_RATE * 2, generator=torch.Generator().manual_seed(0)) * 0.1
    est = method.separate(_batch(mixture, features=g[None]))
    swapped = method.separate(_batch(mixture, features=P.guidance_for(["flute", "violin"], method)[None]))
    assert torch.equal(est, swapped.flip(1)) and not torch.equal(est[0, 0], est[0, 1])


def test_unknown_names_and_foreign_trunks_are_refused(tiny_corpus, tiny_prototypes, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("AVSEP_WEIGHTS", str(tiny_prototypes["folder"]))
    method = tiny_prototypes["method"]
    assert P.parse_names(" violin, Acoustic Guitar,,") == ["violin", "acoustic_guitar"]
    assert P.check_names(["violin", "Violin", "flute"], P.known_classes(method)) == ["violin", "flute"]
    with pytest.raises(AvsepError) as err:
        P.check_names(["violin", "kazoo"], P.known_classes(method))
    assert str(err.value) == "unknown instrument 'kazoo'; known: flute, piano, trumpet, violin"
    with pytest.raises(AvsepError, match="unknown instrument 'kazoo'; known: flute, piano"):
        P.guidance_for(["kazoo"], method)
    with pytest.raises(AvsepError, match="name at least one"):
        P.parse_names(" , ")
    # another tiny model (another trunk): the shipped file is not its own and is refused by name too
    from avsep_cli.models.tiny import TinyNet

    torch.manual_seed(1)
    other = MaskMethod(TinyNet(), "tiny", frame_size=64)
    with pytest.raises(AvsepError, match="no class prototypes ship for the visual trunk of tiny"):
        P.guidance_for(["violin"], other)
    with pytest.raises(AvsepError, match="made with another visual trunk"):
        P.guidance_for(["violin"], other, "protos-tiny")
    # sha256 checked like every shipped file
    folder = tiny_prototypes["folder"]
    bad = tmp_path / "w"
    bad.mkdir()
    for f in folder.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    data = bytearray((bad / "protos-tiny.safetensors").read_bytes())
    data[-1] ^= 1
    (bad / "protos-tiny.safetensors").write_bytes(bytes(data))
    with pytest.raises(AvsepError, match="sha256"):
        P.load("protos-tiny", folder=bad)
    # the CLI: verify and list include the file; bad arguments are one line, exit 2
    rc, out, _ = run(capsys, "weights", "verify")
    assert rc == 0 and "protos-tiny" in out
    rc, _, err = run(capsys, "weights", "prototypes", "--root", tiny_corpus, "--trunk", "no-such-trunk")
    assert_one_error(rc, err, "no-such-trunk")
    rc, _, err = run(capsys, "weights", "prototypes", "--root", tiny_corpus, "--trunk", folder / "protos-tiny.safetensors")
    assert_one_error(rc, err, "no avsep model metadata")


def test_visual_trunk_prototypes_serve_every_separator_of_that_trunk(tiny_corpus, tmp_path, monkeypatch):
    """Built from visual-trunk weights, one file holds a map per view; a separator whose frozen trunk holds
    those weights finds it by the trunk's hash, and its guidance is the mean of its own trunk's features."""
    from avsep_cli.models.ialcms import IALCMS
    from avsep_cli.models.trunk_classifier import TrunkClassifier

    folder = tmp_path / "weights"
    monkeypatch.setenv("AVSEP_WEIGHTS", str(folder))
    torch.manual_seed(0)
    cls = TrunkClassifier(num_classes=4)
    registry.export(checkpoint.save(tmp_path / "t.pt", checkpoint.model_state("visual-trunk", {"num_classes": 4, "frame_size": 224}, cls)),
                    "trunk-test", "visual-trunk")
    views = ["resnet18-128", "resnet18-dilated-64", "resnet18-levels-128"]
    tensors, meta = P.build(tiny_corpus, P.trunk_source("trunk-test", views), per_class=2)
    e = P.export(tensors, meta, "protos-trunk")
    assert e["views"] == views and set(e["crops_per_class"].values()) == {2}
    assert tensors["resnet18-128"].shape == (4, 512, 4, 4) and tensors["resnet18-dilated-64"].shape == (4, 512, 4, 4)
    assert tensors["resnet18-levels-128"].shape == (4, 1024, 8, 8)  # DeepLabv3+: both trunk levels packed
    shipped = registry.resolve("trunk-test").data["state_dict"]
    ial = IALCMS(ngf=1, dim=8, blocks=1, frame_size=128, visual_head="mlp")
    ial.visual.trunk.load_state_dict({k.removeprefix("trunk."): v for k, v in shipped.items() if k.startswith("trunk.")})
    method = IALCMSMethod(ial, frame_size=128)
    assert P.view_of(ial) == P.View("resnet18", 128)
    g = P.guidance_for(["piano"], method)  # found by the trunk's hash
    assert g.shape == (1, 3, 512, 4, 4)
    torch.testing.assert_close(g[0, 0], tensors["resnet18-128"][1].float())
    with pytest.raises(AvsepError, match="hold no resnet18-64 maps"):
        P.guidance_for(["piano"], IALCMSMethod(_with_trunk(IALCMS(ngf=1, dim=8, blocks=1, frame_size=64, visual_head="mlp"), ial),
                                               frame_size=64))
    deeplab = _with_trunk(IALCMS(ngf=1, dim=8, blocks=1, frame_size=128), ial)  # the same trunk weights, dilated
    assert P.view_of(deeplab) == P.View("resnet18-levels", 128)
    g = P.guidance_for(["piano"], IALCMSMethod(deeplab, frame_size=128))
    assert g.shape == (1, 3, 1024, 8, 8)
    torch.testing.assert_close(g[0, 0], tensors["resnet18-levels-128"][1].float())


def _with_trunk(model, donor):
    model.visual.trunk.load_state_dict(donor.visual.trunk.state_dict())
    return model


@pytest.mark.skipif(not any(e.get("method") == "prototypes" for e in registry.entries()), reason="no shipped prototypes")
def test_shipped_prototypes_fit_every_shipped_separator():
    e = next(e for e in registry.entries() if e.get("method") == "prototypes")
    trunk = registry.entry(e["trunk"])
    assert e["trunk_sha256"] == trunk["sha256"] and len(e["classes"]) == trunk["config"]["num_classes"]
    for name in ("avpc", "sop", "ialcms"):
        method = get_method(name)
        g = P.guidance_for(e["classes"][:2], method)
        assert g.shape[:2] == (2, method.frames_per_source) and torch.isfinite(g).all(), name


# --- avsep separate --instruments ----------------------------------------------------------------------


def _separate(capsys, monkeypatch, folder, tiny_weights, media_path, out, *extra):
    monkeypatch.setenv("AVSEP_WEIGHTS", str(folder))
    return run(capsys, "separate", media_path, "-o", out, "--method", "tiny", "--weights", tiny_weights,
               "--sample-rate", "model", *extra)


def test_instruments_on_an_audio_file(capsys, monkeypatch, tiny_prototypes, tiny_weights, tmp_path):
    """An audio file has no picture: each named instrument is separated by its prototype, over the whole input."""
    import mediagen as mg
    import soundfile as sf

    wav = tmp_path / "duet.wav"
    mg.make_media(wav, seconds=3.0, video=False)
    out = tmp_path / "stems"
    rc, stdout, err = _separate(capsys, monkeypatch, tiny_prototypes["folder"], tiny_weights, wav, out,
                                "--instruments", "violin, Flute", "--residual")
    assert rc == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(i["cls"], i["guidance"]) for i in manifest["identities"]] == [("violin", "name"), ("flute", "name")]
    assert manifest["detector"] is None
    a, b, mix = (sf.read(out / f)[0] for f in ("violin_1.wav", "flute_1.wav", "residual.wav"))
    assert len(a) == len(b) == round(3.0 * dsp.SAMPLE_RATE) and np.abs(a - b).max() > 1e-4  # names steer
    # without names, an audio file is still refused: there is nothing to see
    rc, _, err = _separate(capsys, monkeypatch, tiny_prototypes["folder"], tiny_weights, wav, tmp_path / "o2")
    assert_one_error(rc, err, "has no video stream")


def test_unknown_instrument_is_one_line_listing_the_known(capsys, monkeypatch, tiny_prototypes, tiny_weights, tmp_path):
    import mediagen as mg

    wav = tmp_path / "a.wav"
    mg.make_media(wav, seconds=2.0, video=False)
    rc, _, err = _separate(capsys, monkeypatch, tiny_prototypes["folder"], tiny_weights, wav, tmp_path / "o",
                           "--instruments", "violin,kazoo")
    assert_one_error(rc, err, "unknown instrument 'kazoo'; known: flute, piano, trumpet, violin")
    assert not (tmp_path / "o").exists()


def test_a_named_class_the_detector_missed_is_forced(capsys, monkeypatch, tiny_prototypes, tiny_weights, tmp_path):
    """The picture shows a violin and a cello; named: violin and flute. The violin is guided by its crops, the
    flute (not found) by its prototype over the whole video with a warning, and the unnamed cello is left out."""
    import mediagen as mg

    video = tmp_path / "duet.mp4"
    mg.make_media(video, seconds=3.0)
    boxes = tmp_path / "boxes.json"
    n = 12
    boxes.write_text(json.dumps({"fps": 4, "players": [{"class": "violin", "boxes": [[10, 20, 70, 100]] * n},
                                                       {"class": "cello", "boxes": [[80, 20, 140, 100]] * n}]}))
    out = tmp_path / "stems"
    rc, _, err = _separate(capsys, monkeypatch, tiny_prototypes["folder"], tiny_weights, video, out,
                           "--boxes", boxes, "--instruments", "violin,flute", "--guide", "crops")
    assert rc == 0, err
    assert err.count("flute: not found in the picture") == 1
    manifest = json.loads((out / "manifest.json").read_text())
    got = [(i["cls"], i["guidance"], i["start"], i["end"]) for i in manifest["identities"]]
    assert got == [("violin", "crops", 0.0, 3.0), ("flute", "name", 0.0, 3.0)]
    assert sorted(p.name for p in out.iterdir()) == ["flute_1.wav", "manifest.json", "violin_1.wav"]


def test_tracked_players_are_guided_by_the_name_of_their_track(capsys, monkeypatch, tiny_prototypes, tiny_weights,
                                                              tmp_path):
    """`--guide auto` (the default) and `name`: a tracked
    player whose class is the only one of its kind is guided by its class prototype (its span and boxes stay its track's); two violins keep their crops (one
    prototype would give them the same stem), and so does a class the prototypes do not know; `--guide crops`
    is the papers' guidance. Without prototypes for the trunk, auto is crops and name one line."""
    import mediagen as mg
    import soundfile as sf

    video = tmp_path / "quartet.mp4"
    mg.make_media(video, seconds=3.0)
    n = 12
    players = [("violin", [4, 10, 40, 60]), ("trumpet", [44, 10, 80, 60]), ("violin", [84, 10, 120, 60]),
               ("cello", [4, 64, 40, 116])]
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"fps": 4, "players": [{"class": c, "boxes": [b] * n} for c, b in players]}))
    stems, kinds = {}, {}
    for guide in ("auto", "name", "crops"):
        out = tmp_path / guide
        extra = () if guide == "auto" else ("--guide", guide)
        # own masks: with joint masks every stem would depend on the trumpet's guidance too
        rc, _, err = _separate(capsys, monkeypatch, tiny_prototypes["folder"], tiny_weights, video, out,
                               "--boxes", boxes, "--masks", "own", *extra)
        assert rc == 0, err
        ids = json.loads((out / "manifest.json").read_text())["identities"]
        kinds[guide] = {i["name"]: i["guidance"] for i in ids}
        assert all(len(i["boxes"]) == n for i in ids)  # every player keeps its track's boxes
        stems[guide] = {i["name"]: sf.read(out / i["file"])[0] for i in ids}
        shared = "violin: 2 players share the class; each is guided by its crops"
        assert err.count(shared) == (guide != "crops") and err.count("cello: no class prototype") == (guide != "crops")
    assert kinds["auto"] == kinds["name"] == {"violin_1": "crops", "violin_2": "crops", "trumpet_1": "name",
                                              "cello_1": "crops"}
    assert set(kinds["crops"].values()) == {"crops"}
    np.testing.assert_array_equal(stems["auto"]["trumpet_1"], stems["name"]["trumpet_1"])
    assert np.abs(stems["name"]["trumpet_1"] - stems["crops"]["trumpet_1"]).max() > 1e-4  # the prototype steers
    for name in ("violin_1", "violin_2", "cello_1"):
        np.testing.assert_array_equal(stems["name"][name], stems["crops"][name])

    # a method trained on crops (IAL-CMS: `guidance = "crops"`) is guided by name under auto too
    monkeypatch.setattr(MaskMethod, "guidance", "crops", raising=False)
    for guide, want in (("auto", {"crops", "name"}), ("name", {"crops", "name"}), ("crops", {"crops"})):
        rc, _, err = _separate(capsys, monkeypatch, tiny_prototypes["folder"], tiny_weights, video,
                               tmp_path / f"{guide}-crops-method", "--boxes", boxes, "--guide", guide)
        assert rc == 0, err
        ids = json.loads((tmp_path / f"{guide}-crops-method" / "manifest.json").read_text())["identities"]
        assert {i["guidance"] for i in ids} == want
    monkeypatch.undo()

    empty = tmp_path / "no-prototypes"
    empty.mkdir()
    rc, _, err = _separate(capsys, monkeypatch, empty, tiny_weights, video, tmp_path / "auto2", "--boxes", boxes)
    assert rc == 0, err
    ids = json.loads((tmp_path / "auto2" / "manifest.json").read_text())["identities"]
    assert {i["guidance"] for i in ids} == {"crops"}
    rc, _, err = _separate(capsys, monkeypatch, empty, tiny_weights, video, tmp_path / "name2", "--boxes", boxes,
                           "--guide", "name")
    assert_one_error(rc, err, "no class prototypes ship for the visual trunk")
    assert not (tmp_path / "name2").exists()


def test_proto_guidance_trains_sources_on_their_class_prototype(tiny_corpus, tmp_path, monkeypatch, capsys):
    """`--option proto_guidance=P` (AVPC, Sound-of-Pixels): each training source is guided by its class'
    prototype (of the run's own trunk) instead of its frames' cached features with probability P."""
    import shutil

    from avsep_cli.cli import main
    from avsep_cli.datasets import MixSeparate
    from avsep_cli.features import TrunkFeatureStore
    from avsep_cli.training.run import class_prototypes

    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    monkeypatch.setenv("AVSEP_WEIGHTS", str(tmp_path / "weights"))
    common = ["train", "--method", "avpc", "--preset", "cpu", "--root", str(root), "--epochs", "1", "--steps-per-epoch",
              "1", "--batch-size", "2", "--val-num", "0", "--cache-features"]
    assert main([*common, "--run", str(tmp_path / "r0")]) == 0
    # no prototypes for this trunk yet: one line
    rc = main([*common, "--run", str(tmp_path / "r1"), "--init-from", str(tmp_path / "r0"), "--option", "proto_guidance=0.5"])
    assert rc == 2 and "no class prototypes" in capsys.readouterr().err
    assert main(["weights", "prototypes", "--root", str(root), "--trunk", str(tmp_path / "r0" / "last.pt"), "-o", "protos-r0",
                 "--per-class", "2"]) == 0
    model = registry.build(registry.resolve(str(tmp_path / "r0" / "last.pt")))
    store = TrunkFeatureStore(root, model.frame_net.trunk, "resnet18")
    protos = class_prototypes(model, "r0")
    assert set(protos) >= {"violin", "flute"} and all(p.shape == (512, 7, 7) for p in protos.values())
    got = {}
    for share in (0.0, 0.5, 1.0):
        ds = MixSeparate(root, "train", mix=2, length=8, features=store, partners="any", prototypes=protos, proto_share=share)
        ds.set_epoch(0)
        kinds = []
        for i in range(len(ds)):
            item = ds[i]
            for j, cls in enumerate(item["labels"].tolist()):
                proto = protos[ds.classes[cls]].expand(3, -1, -1, -1)
                kinds.append(bool(torch.equal(item["feats"][j], proto)))
        got[share] = kinds
    assert not any(got[0.0]) and all(got[1.0]) and 0 < sum(got[0.5]) < len(got[0.5])
    # the run itself: prototypes of its trunk (--init-from r0) found and used, an out-of-range share refused
    assert main([*common, "--run", str(tmp_path / "r2"), "--init-from", str(tmp_path / "r0"),
                 "--option", "proto_guidance=0.5"]) == 0
    assert checkpoint.load(tmp_path / "r2" / "last.pt")["config"]["options"]["proto_guidance"] == 0.5
    rc = main([*common, "--run", str(tmp_path / "r3"), "--option", "proto_guidance=2"])
    assert rc == 2 and "expected a share in [0, 1]" in capsys.readouterr().err
