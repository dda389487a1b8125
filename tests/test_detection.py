"""The detector: the corpus exported as a YOLO dataset (labels equal to the sidecar boxes), class names of
other label sets (Open Images V7, LVIS) mapped to ours, weights checked and loaded with one-line errors,
and a tiny YOLO trained from its yaml through `avsep train --method detector` whose weights then detect
in RGB frames of any size. Nothing here may reach the network: every socket is refused and recorded."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from avsep_cli.datasets import CACHE_DIR
from avsep_cli.detection import Detector, default_classes, export_yolo_dataset, map_class_names
from avsep_cli.errors import AvsepError
from avsep_cli.layout import open_corpus
from clihelp import assert_one_error, run


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Refuse (and record) every name lookup and connection attempt."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network access in a test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse(*a))
    yield attempts
    assert not attempts, f"network access attempted: {attempts}"


def oiv7_names() -> dict[int, str]:
    """Open Images V7's 601 class names, from the dataset yaml that ships with ultralytics."""
    from ultralytics.utils import ROOT

    return yaml.safe_load((ROOT / "cfg" / "datasets" / "open-images-v7.yaml").read_text())["names"]


# --------------------------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def exported(tiny_corpus, tmp_path_factory):
    return export_yolo_dataset(tiny_corpus, tmp_path_factory.mktemp("yolo") / "every8", every=8)


def test_export_labels_are_the_sidecar_boxes(exported, tiny_corpus):
    corpus = open_corpus(tiny_corpus)
    assert exported.classes == corpus.classes
    data = yaml.safe_load(exported.data_yaml.read_text())
    assert data["names"] == dict(enumerate(corpus.classes))
    for split in ("train", "val", "test"):
        assert Path(data[split]).is_absolute() and Path(data[split]).is_dir()
    assert sum(exported.images.values()) == len(corpus.clips()) * 6  # 48 frames, every 8th
    checked = 0
    for clip in corpus.clips():
        meta = json.loads(clip.sidecar.read_text())
        size = meta["frame_size"]
        for i in (0, 24, 40):
            img = exported.dir / "images" / clip.split / f"{clip.id}_{i:03d}.jpg"
            assert img.is_file()
            rows = np.loadtxt(exported.dir / "labels" / clip.split / f"{clip.id}_{i:03d}.txt", ndmin=2)
            expected = []
            for p in meta["players"]:
                x0, y0, x1, y1 = p["boxes"][i]
                expected.append([corpus.classes.index(p["class"]), (x0 + x1) / 2 / size, (y0 + y1) / 2 / size,
                                 (x1 - x0) / size, (y1 - y0) / size])
            assert np.allclose(rows, expected, atol=1e-5), (clip.id, i)
            checked += 1
    assert checked == 3 * len(corpus.clips())
    # the corpus' own YOLO labels (3 frames per clip, written by the generator) agree where frames meet
    clip = corpus.clips(kind="duet")[0]
    own = np.loadtxt(clip.video.with_name(f"{clip.id}.labels") / "000024.txt", ndmin=2)
    assert np.allclose(np.loadtxt(exported.dir / "labels" / clip.split / f"{clip.id}_024.txt", ndmin=2), own)


def test_export_is_reused_until_forced(exported, tiny_corpus):
    stamp = exported.data_yaml.stat().st_mtime_ns
    again = export_yolo_dataset(tiny_corpus, exported.dir, every=8)
    assert again.data_yaml.stat().st_mtime_ns == stamp and again.images == exported.images
    forced = export_yolo_dataset(tiny_corpus, exported.dir, every=8, force=True)
    assert forced.images == exported.images and not exported.dir.with_name("every8.part").exists()


def test_export_rejects_a_bad_step(tmp_path):
    with pytest.raises(AvsepError, match="--every 0"):
        export_yolo_dataset(tmp_path, every=0)


# --------------------------------------------------------------------------------------------- class names


def test_open_images_names_map_to_ours():
    names = oiv7_names()
    classes = default_classes()
    mapping, ignored = map_class_names(names, classes)
    got = {names[k]: classes[v] for k, v in mapping.items()}
    assert got == {"Accordion": "accordion", "Banjo": "banjo", "Cello": "cello", "Drum": "drum", "Flute": "flute",
                   "Guitar": "acoustic_guitar", "Harp": "harp", "Harpsichord": "piano", "Musical keyboard": "piano",
                   "Piano": "piano", "Saxophone": "saxophone", "Trombone": "trombone", "Trumpet": "trumpet",
                   "Violin": "violin"}
    assert set(ignored) == {"French horn", "Harmonica", "Maracas", "Musical instrument", "Oboe",
                            "Organ (Musical Instrument)"}
    assert list(ignored) == sorted(ignored)


def test_other_label_sets_and_exact_names():
    classes = ("flute", "piano", "trumpet", "violin")
    mapping, ignored = map_class_names(["violin/fiddle", "cornet/horn/trumpet", "bass horn/sousaphone/tuba", "person",
                                        "Computer keyboard", "keyboard", "PIANO", "cymbal"], classes)
    assert mapping == {0: 3, 1: 2, 6: 1}  # tuba is not one of these four classes
    assert ignored == ("bass horn/sousaphone/tuba", "cymbal")


# --------------------------------------------------------------------------------------------- weights


@pytest.fixture(scope="module")
def fake_oiv7(tmp_path_factory):
    """Random-weight YOLOv8n weights with Open Images V7's 601 class names: an OIV7 detector's interface."""
    from ultralytics.nn.tasks import DetectionModel

    names = oiv7_names()
    model = DetectionModel("yolov8n.yaml", nc=len(names), verbose=False)
    model.names = names
    path = tmp_path_factory.mktemp("oiv7") / "oiv7-random.pt"
    torch.save({"model": model, "train_args": {"imgsz": 64, "task": "detect"}}, path)
    return path


def test_open_images_weights_load_with_their_mapping(fake_oiv7):
    det = Detector(fake_oiv7, conf=0.0)
    assert det.classes == default_classes() and det.imgsz == 64
    assert det.mapping["Guitar"] == "acoustic_guitar" and "Oboe" in det.ignored
    info = det.info()
    assert info["sha256"] == det.sha256 and info["ignored"] == list(det.ignored)
    out = det(np.zeros((2, 120, 200, 3), np.uint8))
    assert len(out) == 2 and all(o.ndim == 2 and o.shape[1] == 6 and o.dtype == np.float32 for o in out)


def test_boxes_of_two_model_classes_for_one_of_ours_are_merged(fake_oiv7):
    det = Detector(fake_oiv7)
    idx = {v: k for k, v in oiv7_names().items()}
    boxes = SimpleNamespace(
        xyxy=torch.tensor([[10., 10., 50., 60.], [11., 10., 50., 61.], [100., 20., 140., 90.], [0., 0., 9., 9.]]),
        conf=torch.tensor([0.9, 0.8, 0.7, 0.6]),
        cls=torch.tensor([idx["Piano"], idx["Musical keyboard"], idx["Violin"], idx["Oboe"]], dtype=torch.float32))
    got = det._ours(boxes)
    classes = default_classes()
    assert got.shape == (2, 6)
    assert [classes[int(c)] for c in got[:, 5]] == ["piano", "violin"] and np.allclose(got[:, 4], [0.9, 0.7])


def test_weights_errors_are_one_line(fake_oiv7, tmp_path, capsys):
    with pytest.raises(AvsepError, match="fails its sha256 check"):
        Detector(fake_oiv7, sha256="0" * 64)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(AvsepError, match="cannot load detector weights"):
        Detector(bad)
    with pytest.raises(AvsepError, match="not found"):
        Detector(tmp_path / "missing" / "det.pt")
    with pytest.raises(AvsepError, match="cannot download it offline"):
        Detector("yolov8m-oiv7.pt")  # an ultralytics asset name: offline it fails at once, no download attempt


def test_a_model_without_our_classes_is_refused(tmp_path):
    from ultralytics.nn.tasks import DetectionModel

    path = tmp_path / "coco.pt"
    torch.save({"model": DetectionModel("yolov8n.yaml", verbose=False), "train_args": {"imgsz": 64}}, path)
    with pytest.raises(AvsepError, match="knows none of our classes"):
        Detector(path)


# --------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory):
    """A yolov8n from its yaml, one epoch at 64 pixels on a private copy of the tiny corpus, via the CLI."""
    from avsep_cli.cli import main

    base = tmp_path_factory.mktemp("detector")
    root = base / "corpus"
    shutil.copytree(tiny_corpus, root, ignore=shutil.ignore_patterns(CACHE_DIR))
    run_dir = base / "run"
    threads = torch.get_num_threads()
    rc = main(["train", "--method", "detector", "--root", str(root), "--run", str(run_dir), "--epochs", "1",
               "--batch-size", "8", "--imgsz", "64", "--every", "12", "--device", "cpu", "--seed", "3"])
    assert rc == 0
    assert torch.get_num_threads() == threads  # ultralytics' thread setting did not leak out
    return root, run_dir


def test_cli_trains_a_detector_from_its_yaml(trained, capsys):
    root, run_dir = trained
    info = json.loads((run_dir / "detector.json").read_text())
    assert info["classes"] == list(open_corpus(root).classes) and info["imgsz"] == 64
    assert info["model"] == "yolov8n.yaml" and info["images"]["train"] > 0
    assert 0.0 <= info["test"]["map50"] <= 1.0 and 0.0 <= info["test"]["map50_95"] <= info["test"]["map50"]
    assert set(info["test"]["per_class_ap50"]) <= set(info["classes"])
    from avsep_cli.checkpoint import sha256

    assert sha256(run_dir / "detector.pt") == info["sha256"]
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["method"] == "detector" and cfg["epochs"] == 1 and cfg["every"] == 12
    assert (root / CACHE_DIR / "yolo" / "every12" / "data.yaml").is_file()
    assert not list(run_dir.rglob("*.png"))  # plots off: no font was needed


def test_trained_weights_detect_in_rgb_frames(trained, monkeypatch):
    root, run_dir = trained
    info = json.loads((run_dir / "detector.json").read_text())
    det = Detector(run_dir / "detector.pt", conf=0.001, sha256=info["sha256"])
    assert det.imgsz == 64 and set(det.mapping.values()) == set(info["classes"])
    seen = []
    predict = det.model.predict
    monkeypatch.setattr(det.model, "predict", lambda imgs, **kw: (seen.extend(imgs), predict(imgs, **kw))[1])
    from avsep_cli.media import frames_at

    clip = open_corpus(root).clips(kind="duet")[0]
    frames = frames_at(clip.video, [0.0, 1.0, 2.0, 3.0, 4.0])  # (5, 224, 224, 3) RGB
    det.batch = 2  # three predict calls
    out = det(frames)
    assert len(out) == 5 and np.array_equal(seen[0], frames[0][..., ::-1])  # ultralytics got BGR
    ours = {default_classes().index(c) for c in info["classes"]}
    for o in out:
        assert o.dtype == np.float32 and o.ndim == 2 and o.shape[1] == 6
        assert set(o[:, 5].astype(int)) <= ours
        assert (o[:, :4] >= 0).all() and (o[:, [0, 2]] <= 224).all() and (o[:, [1, 3]] <= 224).all()
    wide = det(np.ascontiguousarray(frames[:1, :100]))  # a 100 x 224 frame: boxes in its own pixels
    assert wide[0].shape[1] == 6 and (wide[0][:, [1, 3]] <= 100).all()
    assert det(frames[:0]) == []


def test_an_interrupted_run_resumes_and_a_finished_one_says_so(trained, tmp_path, capsys):
    from avsep_cli.training.detector import DetectorConfig, train_detector

    root, finished = trained
    rc, _, err = run(capsys, "train", "--resume", finished)
    assert_one_error(rc, err, "nothing to resume")

    def interrupt(row):
        raise KeyboardInterrupt  # Ctrl-C after epoch 1 of 2 (last.pt is saved before this callback)

    cfg = DetectorConfig(root=str(root), epochs=2, imgsz=64, every=12, seed=3)
    with pytest.raises(KeyboardInterrupt):
        train_detector(cfg, tmp_path / "run", on_epoch=interrupt)
    assert not (tmp_path / "run" / "detector.pt").exists()
    epochs = []
    info = train_detector(None, tmp_path / "run", resume=True, on_epoch=lambda row: epochs.append(row["epoch"]))
    assert epochs == [2] and (tmp_path / "run" / "detector.pt").is_file() and "map50" in info["test"]


def test_detector_options_belong_to_the_detector(capsys, tiny_corpus):
    rc, _, err = run(capsys, "train", "--method", "tiny", "--root", tiny_corpus, "--imgsz", "64")
    assert_one_error(rc, err, "--imgsz: detector options")
    rc, _, err = run(capsys, "train", "--method", "detector", "--root", tiny_corpus, "--model", "yolov8n.pt")
    assert_one_error(rc, err, "architecture yaml")
    rc, _, err = run(capsys, "train", "--method", "detector", "--root", tiny_corpus, "--imgsz", "100")
    assert_one_error(rc, err, "multiple of 32")
    rc, _, err = run(capsys, "train", "--method", "detector")
    assert_one_error(rc, err, "--root is required")
