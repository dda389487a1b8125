"""The visual front end on a corpus split: detector mAP50, player recall and class accuracy at the pipeline's
operating point, the visual trunk's top-1 on held-out families, and the CPU cost of detecting one minute
of video.

- detector: every 4th frame (2 per second) of each clip of the split through `detection.Detector` as
  `avsep separate` builds it (the shipped detector with the classifier its manifest entry names, or
  `--detector FILE [--classifier NAME|FILE|none]`), at `--conf` (default 0.05: `separate`'s default --conf
  0.1 halved, the boxes its tracker receives) for mAP50 (each box scored for its first class, and for
  every class: `visual_eval.detector_metrics`), and at the tracker's threshold (0.1) for recall
  and class accuracy (`visual_eval.detector_metrics`);
- classifier: the pipeline's crop (10 % padding) of every player at 3 times per clip
  (`visual_eval.classifier_accuracy`), with a confusion-matrix PNG;
- players (`--players`): every clip of the split through `avsep separate`'s pipeline with this detector
  (`Separator.find_players`: tracks over the whole clip, each named by its votes, no audio separated),
  each true player matched to the output identity on its boxes: player recall and class accuracy as a
  user gets them (`visual_eval.pipeline_players`);
- cost: process CPU seconds of `Detector.detect` on the split's frames (at `separate`'s 4 detection
  frames per second), scaled to one minute of video, with one thread (`--threads`).

    python benchmarks/bench_visual.py --root corpus [--split test] [--out DIR] [--threads 1] [--players]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch


def _fmt(x: float, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.1f} %" if pct else f"{x:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="corpus (avsep data synth)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--detector", default="auto", help="shipped name or file (auto: the shipped default)")
    ap.add_argument("--classifier", default="auto",
                    help="shipped trunk name or file naming the boxes; auto: what the detector's entry names; none")
    ap.add_argument("--conf", type=float, default=0.05, help="detector threshold for mAP50 (default 0.05)")
    ap.add_argument("--op-conf", type=float, default=0.1, help="operating point: the tracker's threshold")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--players", action="store_true", help="also per player through the whole pipeline (tracks)")
    ap.add_argument("--out", default="bench-visual", help="folder for the JSON and the confusion PNG")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from avsep_cli import registry
    from avsep_cli.classifier import CropClassifier
    from avsep_cli.detection import Detector
    from avsep_cli.visual_eval import classifier_accuracy, confusion_png, detector_metrics

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    det_name = args.detector
    if det_name == "auto":
        det_name = registry.default_for("detector")["name"]
    if args.classifier == "auto":
        classifier = CropClassifier.for_detector(det_name)
    else:
        classifier = None if args.classifier == "none" else CropClassifier.load(args.classifier)
    cls_name = classifier.name if classifier is not None else None
    path, sha = registry.shipped_file(det_name, "detector")
    det = Detector(path, conf=args.conf, sha256=sha, classifier=classifier)

    cpu0 = time.process_time()
    dm = detector_metrics(det, args.root, args.split, every=4, conf=args.op_conf)
    cpu = time.process_time() - cpu0
    # every 4th frame at 8 fps = 2 frames per second of video; separate detects at 4 per second
    cpu_per_min = cpu / dm["frames"] * 4 * 60
    result = {"detector": det.info(), "split": args.split, "detector_metrics": dm,
              "detect_cpu_s_per_video_minute": round(cpu_per_min, 1), "threads": args.threads}
    print(f"detector {det_name} (+ classifier {cls_name}) on {dm['frames']} {args.split} frames: "
          f"mAP50 {dm['map50']:.3f} (every box scored for every class: {dm['map50_all_classes']:.3f}), recall {100 * dm['recall']:.1f} %, class accuracy {100 * dm['class_acc']:.1f} % "
          f"(conf >= {args.op_conf}); {cpu_per_min:.1f} CPU-s per minute of video at 4 detections/s, "
          f"{args.threads} thread(s)")
    if classifier is not None:
        ca = classifier_accuracy(classifier, args.root, args.split)
        result["classifier_metrics"] = ca
        png = confusion_png(ca, out / f"confusion-{args.split}.png",
                            f"{cls_name}: {args.split} split (held-out families), top-1 {ca['top1']:.3f}")
        print(f"classifier {cls_name}: top-1 {100 * ca['top1']:.1f} % on {ca['n']} crops "
              f"(mean over classes {100 * ca['mean_class_top1']:.1f} %); confusion matrix {png}")
    if args.players:
        from avsep_cli.separator import Separator
        from avsep_cli.visual_eval import pipeline_players

        pm = pipeline_players(Separator("sop", detector=det), args.root, args.split)  # find_players: no audio
        result["pipeline_players"] = pm
        print(f"through the pipeline (tracks, as avsep separate names them): {pm['players']} players, recall "
              f"{100 * pm['recall']:.1f} %, class accuracy of found {100 * pm['class_acc']:.1f} %")
    print()
    pp = result.get("pipeline_players", {}).get("per_class", {})
    print("| class | players (frames) | AP50 | AP50, all classes scored | recall | class accuracy of found | "
          "trunk top-1 (crops) |" + (" players (clips) | recall, tracks | class accuracy, tracks |" if pp else ""))
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if pp else ""))
    for c, v in dm["per_class"].items():
        top1 = result.get("classifier_metrics", {}).get("per_class", {}).get(c, {})
        row = (f"| {c} | {v['players']} | {_fmt(v['ap50'])} | {_fmt(v['ap50_all_classes'])} | {_fmt(v['recall'], True)} | "
               f"{_fmt(v['class_acc'], True)} | {_fmt(top1.get('top1', float('nan')), True)} ({top1.get('n', 0)}) |")
        if pp:
            t = pp.get(c, {"players": 0, "recall": float("nan"), "class_acc": float("nan")})
            row += f" {t['players']} | {_fmt(t['recall'], True)} | {_fmt(t['class_acc'], True)} |"
        print(row)
    (out / f"visual-{args.split}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
