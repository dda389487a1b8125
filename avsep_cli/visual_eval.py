"""How well the visual front end sees: the detector's boxes and the classifier's names on a corpus split.

Ground truth is the corpus' own: every player's box in every frame (sidecars). Frames are decoded from
the clips' mp4 files, as the pipeline sees them.

- `classifier_accuracy`: the visual trunk's top-1 on the pipeline's crop (10 % padding) of every
  player at `frames` times of each clip, per class, with the confusion matrix.
- `detector_metrics`: mAP50 (COCO's 101-point interpolated AP, averaged over the classes that have
  players) two ways when a classifier names the boxes: `map50`, each box one detection of its most
  probable class, scored by detector confidence times that probability (what the pipeline keeps); and
  `map50_all_classes`, each box a detection of every class it gives probability >= 0.001, scored by
  confidence times that class' probability (how two-stage detectors are scored, and ultralytics'
  multi-label validation: a wrong first name can still find the player further down that class' list).
  Without a classifier both are the detector's own classes. And at an operating point (boxes with
  confidence >= `conf`, the tracker's threshold in `avsep separate`): player recall (a player is found
  when a box overlaps it at IoU >= 0.5) and the class accuracy of the found players, per class.
- `pipeline_players`: the same, per player rather than per frame, as `avsep separate` delivers them:
  tracks over the whole clip, each named by its votes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avsep_cli.errors import AvsepError

IOU = 0.5


def _clips(root: Path, split: str):
    from avsep_cli.datasets import ClipReader
    from avsep_cli.layout import open_corpus

    corpus = open_corpus(root)
    clips = [c for c in corpus.clips(split=split) if c.sidecar is not None]
    if not clips:
        raise AvsepError(f"{root}: no {split} clips with boxes (a corpus made by `avsep data synth`)")
    return corpus, clips, ClipReader(root)


def _times(reader, clip, n: int) -> list[float]:
    dur = float(reader.meta(clip).get("duration", 6.0))
    return [dur * (k + 0.5) / n for k in range(n)]


def classifier_accuracy(classifier, root, split: str = "test", frames: int = 3, progress=None) -> dict:
    """{"classes", "per_class": {cls: {"n", "top1"}}, "top1", "mean_class_top1", "confusion": [[...]]}."""
    from avsep_cli.datasets import square_crop
    from avsep_cli.classifier import CROP_PAD

    root = Path(root)
    corpus, clips, reader = _clips(root, split)
    classes = list(classifier.classes)
    index = {c: i for i, c in enumerate(classes)}
    conf = np.zeros((len(classes), len(classes)), np.int64)  # rows: true class, columns: predicted
    for n, clip in enumerate(clips):
        times = _times(reader, clip, frames)
        imgs = reader.frames(clip, times)
        crops, labels = [], []
        for cls, bx in reader.boxes(clip, times):
            for k in range(len(times)):
                b = bx[k]
                if b[2] - b[0] < 4 or b[3] - b[1] < 4 or cls not in index:
                    continue
                crops.append(square_crop(imgs[k], b, classifier.size, pad=CROP_PAD))
                labels.append(index[cls])
        if crops:
            pred = classifier.probs_of_crops(np.stack(crops)).argmax(1)
            for t, p in zip(labels, pred):
                conf[t, p] += 1
        if progress:
            progress(n + 1, len(clips))
    per = {c: {"n": int(conf[i].sum()), "top1": float(conf[i, i] / conf[i].sum()) if conf[i].sum() else float("nan")}
           for i, c in enumerate(classes)}
    have = [v["top1"] for v in per.values() if v["n"]]
    return {"split": split, "classes": classes, "per_class": per, "n": int(conf.sum()),
            "top1": float(np.trace(conf) / max(1, conf.sum())), "mean_class_top1": float(np.mean(have)) if have else float("nan"),
            "confusion": conf.tolist()}


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) boxes x0 y0 x1 y1 -> (N, M) intersection over union."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def average_precision(scores: np.ndarray, hits: np.ndarray, n_true: int) -> float:
    """COCO's 101-point interpolated AP: the mean over recall levels r = 0, 0.01, ..., 1 of the best
    precision at a recall >= r (0 where r is never reached), for detections (score, whether it matched a
    new true box) against n_true boxes."""
    if n_true == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    h = np.asarray(hits, bool)[order]
    if not len(h):
        return 0.0
    tp, fp = np.cumsum(h), np.cumsum(~h)
    recall, precision = tp / n_true, tp / (tp + fp)
    envelope = np.flip(np.maximum.accumulate(np.flip(precision)))
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(np.mean(np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0)))


MIN_PROB = 1e-3  # classes below this probability are not scored for a box (as a detector's score threshold)


def _match(dets: dict, score: np.ndarray, cls: np.ndarray, ov: np.ndarray, gt_cls: np.ndarray) -> None:
    """One frame's detections (score, class, (D, G) IoU with the true boxes) into `dets[class]` as (score, hit):
    best score first, each matching the best-overlapping unmatched true box of its class at IoU >= 0.5."""
    taken = np.zeros(len(gt_cls), bool)
    for d in np.argsort(-np.asarray(score), kind="stable"):
        cand = np.where((gt_cls == cls[d]) & ~taken & (ov[d] >= IOU))[0] if len(gt_cls) else []
        hit = len(cand) > 0
        if hit:
            taken[cand[np.argmax(ov[d, cand])]] = True
        dets[int(cls[d])].append((float(score[d]), hit))


def _ap(dets: list[tuple[float, bool]], n_true: int) -> float:
    return average_precision(np.array([d[0] for d in dets]), np.array([d[1] for d in dets], bool), int(n_true))


def detector_metrics(detector, root, split: str = "test", every: int = 4, conf: float = 0.1, progress=None) -> dict:
    """mAP50 and the operating point of `detector` (a detection.Detector) on every `every`-th frame."""
    from avsep_cli.datasets import FPS

    root = Path(root)
    corpus, clips, reader = _clips(root, split)
    classes = list(detector.classes)
    index = {c: i for i, c in enumerate(classes)}
    dets: dict[int, list[tuple[float, bool]]] = {i: [] for i in range(len(classes))}
    dets_all: dict[int, list[tuple[float, bool]]] = {i: [] for i in range(len(classes))}
    n_true = np.zeros(len(classes), np.int64)
    found = np.zeros(len(classes), np.int64)
    right = np.zeros(len(classes), np.int64)
    frames_n = 0
    for n, clip in enumerate(clips):
        players = reader.meta(clip).get("players") or []
        n_frames = max((len(p["boxes"]) for p in players), default=0)
        times = [i / FPS for i in range(0, n_frames, every)]
        if not times:
            continue
        imgs = reader.frames(clip, times)
        truth = reader.boxes(clip, times)
        out = detector.detect(imgs)
        for k, (boxes, probs) in enumerate(out):
            frames_n += 1
            gt = [(index[c], bx[k]) for c, bx in truth if c in index and bx[k][2] - bx[k][0] >= 1 and bx[k][3] - bx[k][1] >= 1]
            gt_cls = np.array([g[0] for g in gt], np.int64)
            gt_box = np.array([g[1] for g in gt], np.float64).reshape(-1, 4)
            for c in gt_cls:
                n_true[c] += 1
            if probs is not None and len(boxes):
                pred_cls = probs.argmax(1)
                score = boxes[:, 4] * probs[np.arange(len(probs)), pred_cls]
            else:
                pred_cls = boxes[:, 5].astype(np.int64)
                score = boxes[:, 4]
            ov = iou(boxes[:, :4], gt_box) if len(boxes) and len(gt_box) else np.zeros((len(boxes), len(gt_box)))
            _match(dets, score, pred_cls, ov, gt_cls)
            if probs is not None and len(boxes):
                # every class a box gives probability >= MIN_PROB, scored conf x probability
                d_idx, c_idx = np.nonzero(probs >= MIN_PROB)
                _match(dets_all, boxes[d_idx, 4] * probs[d_idx, c_idx], c_idx, ov[d_idx], gt_cls)
            else:
                _match(dets_all, score, pred_cls, ov, gt_cls)
            # operating point: boxes above conf, any class, matched to players one to one by IoU
            keep = np.where(boxes[:, 4] >= conf)[0] if len(boxes) else np.zeros(0, np.int64)
            used: set[int] = set()
            for g in np.argsort(-(ov[keep].max(0) if len(keep) else np.zeros(len(gt_box)))):
                if not len(keep):
                    break
                cand = [d for d in keep if d not in used and ov[d, g] >= IOU]
                if not cand:
                    continue
                d = max(cand, key=lambda j: ov[j, g])
                used.add(d)
                found[gt_cls[g]] += 1
                right[gt_cls[g]] += int(pred_cls[d] == gt_cls[g])
        if progress:
            progress(n + 1, len(clips))
    per = {}
    for i, c in enumerate(classes):
        per[c] = {"players": int(n_true[i]), "ap50": _ap(dets[i], n_true[i]),
                  "ap50_all_classes": _ap(dets_all[i], n_true[i]),
                  "recall": float(found[i] / n_true[i]) if n_true[i] else float("nan"),
                  "class_acc": float(right[i] / found[i]) if found[i] else float("nan")}
    aps = [v["ap50"] for v in per.values() if v["players"]]
    aps_all = [v["ap50_all_classes"] for v in per.values() if v["players"]]
    return {"split": split, "frames": frames_n, "conf": conf, "map50": float(np.mean(aps)) if aps else float("nan"),
            "map50_all_classes": float(np.mean(aps_all)) if aps_all else float("nan"),
            "recall": float(found.sum() / max(1, n_true.sum())),
            "class_acc": float(right.sum() / max(1, found.sum())), "per_class": per}


def pipeline_players(separator, root, split: str = "test", progress=None) -> dict:
    """Players as `avsep separate` finds and names them: every clip of the split through
    `separator.find_players` (a `separator.Separator`: detection at its rate, tracking, each track named
    by its summed votes); each true player matched to the output identity whose tracked boxes overlap it
    most (mean IoU >= 0.5, `evaluate.match_players`). -> {"players", "recall", "class_acc", "per_class":
    {cls: {"players", "recall", "class_acc"}}}: recall, the share of players with an identity; class_acc,
    the share of those whose identity has the player's class."""
    from collections import Counter

    from avsep_cli.evaluate import match_players

    corpus, clips, reader = _clips(Path(root), split)
    n_true, found, right = Counter(), Counter(), Counter()
    for n, clip in enumerate(clips):
        side = reader.meta(clip)
        for p, (_, ident) in zip(side["players"], match_players(separator.find_players(clip.video), side)):
            c = p["class"]
            n_true[c] += 1
            found[c] += ident is not None
            right[c] += ident is not None and ident.cls == c
        if progress:
            progress(n + 1, len(clips))
    per = {c: {"players": n_true[c], "recall": found[c] / n_true[c] if n_true[c] else float("nan"),
               "class_acc": right[c] / found[c] if found[c] else float("nan")} for c in corpus.classes}
    total, hit = sum(n_true.values()), sum(found.values())
    return {"split": split, "players": total, "recall": hit / max(1, total),
            "class_acc": sum(right.values()) / max(1, hit), "per_class": per}


def confusion_png(result: dict, path: str | Path, title: str = "") -> Path:
    """The confusion matrix of `classifier_accuracy` as a PNG (rows: true class, normalised per row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(result["confusion"], np.float64)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    names = result["classes"]
    fig, ax = plt.subplots(figsize=(8.5, 7.5), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            if m[i, j]:
                ax.text(j, i, f"{norm[i, j]:.2f}".lstrip("0") if norm[i, j] < 1 else "1", ha="center", va="center",
                        fontsize=6, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"visual trunk, {result['split']} split: top-1 {result['top1']:.3f}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".part.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
