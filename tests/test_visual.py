"""The visual front end: crops of rendered stills for the trunk, the class-agnostic export, the detector that
a classifier names, and the metrics of visual_eval on real corpus media."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from avsep_cli import visual_eval
from avsep_cli.classifier import CropClassifier
from avsep_cli.datasets import CACHE_DIR
from avsep_cli.detection import Detector, export_yolo_dataset
from avsep_cli.layout import open_corpus


def test_iou_and_average_precision():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 20]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    got = visual_eval.iou(a, b)
    assert got.shape == (2, 3)
    assert np.allclose(got[0], [1.0, 50 / 150, 0.0]) and np.isclose(got[1, 0], 0.5)
    assert visual_eval.average_precision(np.array([0.9, 0.8]), np.array([True, True]), 2) == pytest.approx(1.0)
    assert visual_eval.average_precision(np.array([0.9]), np.array([True]), 2) == pytest.approx(0.5, abs=0.01)
    # a false positive ranked first costs precision at every recall
    worse = visual_eval.average_precision(np.array([0.9, 0.8, 0.7]), np.array([False, True, True]), 2)
    assert 0.5 < worse < 0.8
    assert np.isnan(visual_eval.average_precision(np.zeros(0), np.zeros(0, bool), 0))


def test_picture_crops_come_from_their_split_and_are_seeded(tiny_corpus):
    from avsep_cli.datasets import PictureCrops

    recipe = json.loads((tiny_corpus / "corpus.json").read_text())
    for split in ("train", "val"):
        ds = PictureCrops(tiny_corpus, split, length=6, seed=1, frame_size=64, stills=96)
        for cls, pics in ds.sampler.pics.items():
            assert sorted(p.key for p in pics) == sorted(recipe["pictures"][cls][split])
        a, b = ds[3], ds[3]
        assert a["image"].shape == (3, 64, 64) and a["image"].dtype == torch.uint8
        assert torch.equal(a["image"], b["image"]) and int(a["label"]) == int(b["label"])
        assert 0 <= int(a["label"]) < len(ds.classes)
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["image"], a["image"])  # a new epoch draws new stills
    fams = recipe["picture_families"]
    assert not set(fams["train"]) & set(fams["val"])


def test_class_agnostic_export_with_rendered_stills(tiny_corpus, tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root, ignore=shutil.ignore_patterns(CACHE_DIR))
    ds = export_yolo_dataset(root, every=24, agnostic=True, stills=5)
    assert ds.classes == ("instrument",) and ds.dir.name == "every24-agnostic-stills5"
    stills = sorted((ds.dir / "labels" / "train").glob("still*.txt"))
    assert len(stills) == 5 and (ds.dir / "images" / "train" / "still000000.jpg").is_file()
    rows = [line.split() for f in (ds.dir / "labels").rglob("*.txt") for line in f.read_text().splitlines()]
    assert rows and {r[0] for r in rows} == {"0"}
    assert all(0 < float(r[3]) <= 1 and 0 < float(r[4]) <= 1 for r in rows)
    # 1-3 players per still, each with a box
    assert all(1 <= len(f.read_text().splitlines()) <= 3 for f in stills)


@pytest.fixture(scope="module")
def agnostic_weights(tmp_path_factory):
    """Random-weight YOLOv8n with the one class our shipped detector has: "instrument"."""
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    model.names = {0: "instrument"}
    path = tmp_path_factory.mktemp("agnostic") / "instrument.pt"
    torch.save({"model": model, "train_args": {"imgsz": 64, "task": "detect"}}, path)
    return path


def _classifier(classes, size=32):
    from avsep_cli.models.trunk_classifier import TrunkClassifier

    torch.manual_seed(0)
    return CropClassifier(TrunkClassifier(num_classes=len(classes), frame_size=size), classes, name="random")


def test_a_class_agnostic_detector_needs_a_classifier_and_takes_its_names(agnostic_weights, tiny_corpus):
    from avsep_cli.errors import AvsepError
    from avsep_cli.media import frames_at

    with pytest.raises(AvsepError, match="knows none of our classes"):
        Detector(agnostic_weights)
    classes = open_corpus(tiny_corpus).classes
    clf = _classifier(classes)
    det = Detector(agnostic_weights, conf=0.0, classes=classes, classifier=clf)
    assert det.mapping == {"instrument": "(classifier)"} and det.info()["classifier"]["weights"] == "random"
    frames = frames_at(open_corpus(tiny_corpus).clips(kind="duet")[0].video, [0.0, 1.0])
    detailed = det.detect(frames)
    plain = det(frames)
    assert any(len(b) for b, _ in detailed)
    for (boxes, probs), out, frame in zip(detailed, plain, frames):
        assert probs.shape == (len(boxes), len(classes)) and np.allclose(probs.sum(1), 1, atol=1e-4)
        assert np.allclose(probs, clf(frame, boxes), atol=1e-5)  # the crops of the boxes, classified
        assert np.array_equal(out[:, 5], probs.argmax(1)) and np.array_equal(out[:, 4], boxes[:, 4])
    with pytest.raises(AvsepError, match="not the detector's"):
        Detector(agnostic_weights, classes=classes[:2], classifier=clf)


class _TruthDetector:
    """Hands out queued (boxes, probabilities) per frame: the sidecar boxes, named right or wrong."""

    def __init__(self, classes):
        self.classes = list(classes)
        self.queue: list = []

    def detect(self, frames):
        out, self.queue = self.queue[: len(frames)], self.queue[len(frames):]
        return out


def test_detector_metrics_on_corpus_frames(tiny_corpus, monkeypatch):
    from avsep_cli.datasets import FPS, ClipReader

    corpus = open_corpus(tiny_corpus)
    classes = list(corpus.classes)
    reader = ClipReader(tiny_corpus)
    for wrong in (False, True):
        det = _TruthDetector(classes)
        for clip in corpus.clips(split="test"):
            n = max(len(p["boxes"]) for p in reader.meta(clip)["players"])
            times = [i / FPS for i in range(0, n, 4)]
            for k in range(len(times)):
                rows, probs = [], []
                for cls, bx in reader.boxes(clip, times):
                    j = classes.index(cls)
                    rows.append([*bx[k], 0.9, j])
                    p = np.full(len(classes), 0.01)
                    p[(j + 1) % len(classes) if wrong else j] = 1.0
                    probs.append(p / p.sum())
                det.queue.append((np.array(rows, np.float32), np.array(probs, np.float32)))
        m = visual_eval.detector_metrics(det, tiny_corpus, "test", every=4, conf=0.1)
        assert not det.queue and m["frames"] > 0
        assert m["recall"] == pytest.approx(1.0)
        if wrong:
            assert m["class_acc"] == 0.0 and m["map50"] == 0.0
            # scored for every class, each box also finds its player under the true class, below the wrong name
            assert 0.0 < m["map50_all_classes"] < 1.0
        else:
            assert m["class_acc"] == 1.0 and m["map50"] == pytest.approx(1.0)
            assert m["map50_all_classes"] == pytest.approx(1.0)
            assert all(v["ap50"] == pytest.approx(1.0) for v in m["per_class"].values() if v["players"])


class _TruthSeparator:
    """`find_players` as the pipeline's: identities tracked on each player's true boxes, named right, wrong
    (the next class), or missing for the second player of a clip."""

    def __init__(self, classes, mode):
        self.classes, self.mode = list(classes), mode

    def find_players(self, path):
        from avsep_cli.separator import Identity

        side = json.loads(path.with_suffix(".json").read_text())
        idents = []
        for k, p in enumerate(side["players"]):
            if self.mode == "miss" and k == 1:
                continue
            cls = self.classes[(self.classes.index(p["class"]) + 1) % len(self.classes)] if self.mode == "wrong" else p["class"]
            boxes = [{"t": f / side["fps"], "box": b} for f, b in enumerate(p["boxes"]) if f % 2 == 0]
            idents.append(Identity(f"{cls}_{k + 1}", cls, k, 0.9, 0.0, 1.0, boxes))
        return idents


def test_pipeline_players_counts_found_and_named_players(tiny_corpus):
    corpus = open_corpus(tiny_corpus)
    clips = [c for c in corpus.clips(split="test") if c.sidecar is not None]
    assert all(c.sidecar == c.video.with_suffix(".json") for c in clips)
    players = sum(len(json.loads(c.sidecar.read_text())["players"]) for c in clips)
    duet_players = sum(len(json.loads(c.sidecar.read_text())["players"]) > 1 for c in clips)
    assert duet_players > 0
    for mode in ("right", "wrong", "miss"):
        m = visual_eval.pipeline_players(_TruthSeparator(corpus.classes, mode), tiny_corpus, "test")
        assert m["players"] == players == sum(v["players"] for v in m["per_class"].values())
        if mode == "miss":
            assert m["recall"] == pytest.approx(1 - duet_players / players) and m["class_acc"] == 1.0
        else:
            assert m["recall"] == 1.0 and m["class_acc"] == (1.0 if mode == "right" else 0.0)


def test_classifier_accuracy_counts_every_visible_player(tiny_corpus, tmp_path):
    classes = open_corpus(tiny_corpus).classes
    clf = _classifier(classes)
    res = visual_eval.classifier_accuracy(clf, tiny_corpus, "test", frames=2)
    conf = np.array(res["confusion"])
    assert conf.shape == (len(classes), len(classes)) and conf.sum() == res["n"] > 0
    assert res["top1"] == pytest.approx(np.trace(conf) / conf.sum())
    png = visual_eval.confusion_png(res, tmp_path / "c.png")
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
