"""`avsep train --method detector`: an ultralytics YOLO detector trained from its architecture yaml on the
corpus boxes.

No pretrained weights are used or fetched (`pretrained=False`; AMP off, since ultralytics' AMP check
downloads a model; plots off, since they need a downloaded font). The corpus is exported once as a YOLO
dataset (`detection.export_yolo_dataset`), ultralytics trains in `RUN/ultralytics/` (its own
`weights/last.pt`, `best.pt`, `results.csv`), and the run folder gets `config.json`, `detector.pt` (the
best weights by validation fitness) and `detector.json` (its sha256, classes, input size, and mAP50 /
mAP50-95 on the val and test splits). `--resume RUN` continues an interrupted run from its `last.pt`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

from avsep_cli.errors import AvsepError
from avsep_cli.fsio import atomic_path

METHOD = "detector"
YOLO_RUN = "ultralytics"   # ultralytics' own run folder inside ours
WEIGHTS = "detector.pt"
INFO = "detector.json"


@dataclass
class DetectorConfig:
    method: str = METHOD
    root: str = ""
    model: str = "yolov8n.yaml"   # the smallest YOLOv8 (3.2 M parameters): trains on a 2-core CPU
    imgsz: int = 224              # the corpus' frame size: no resampling of the 224 x 224 frames
    epochs: int = 30
    batch_size: int = 8           # images per batch (the CLI's --batch-size default)
    nbs: int = 16                 # images per optimiser step (ultralytics' 64 makes 4x fewer steps in a CPU budget)
    warmup_epochs: float = 1.0    # ultralytics' 3 would be most of a short CPU run
    close_mosaic: int = 2         # last epochs without mosaic augmentation (ultralytics: 10)
    every: int = 4                # every 4th frame (2 per second): neighbouring frames are near copies
    stills: int = 0               # more training images rendered from the train pictures (corpus.stills)
    agnostic: bool = False        # one class, "instrument": a classifier names the boxes (classifier.py)
    max_minutes: float = 0.0      # stop at the first epoch end after this many minutes (0: no limit)
    max_cpu_minutes: float = 0.0  # stop when another epoch like the last would pass this process CPU time (0: no limit)
    patience: int = 100           # ultralytics' early stop after this many epochs without val progress
    seed: int = 0
    num_workers: int = 0          # data-loading processes (0: in the training process)

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> "DetectorConfig":
        d = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def is_detector_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds a detector run (its config.json names the method)."""
    try:
        return json.loads((Path(run_dir) / "config.json").read_text()).get("method") == METHOD
    except (OSError, ValueError, AttributeError):
        return False


def train_detector(cfg: DetectorConfig | None, run_dir: str | Path, device="cpu", *, resume: bool = False,
                   verbose: bool = False, on_epoch: Callable[[dict], None] | None = None,
                   on_step: Callable[[int, int, float], None] | None = None,
                   on_export: Callable[[int, int], None] | None = None) -> dict:
    """Train (or with `resume`, continue) a detector run in `run_dir` and evaluate it on the test split.

    `on_export(done, total)` follows the dataset export (clips), `on_step(batch, batches, loss)` the
    batches of an epoch, and `on_epoch(row)` gets one dict per epoch: epoch (1-based), epochs, loss (the
    epoch's mean), losses (its terms by name: box_loss, cls_loss, ...), val_map50, val_map50_95, minutes
    and cpu_minutes (wall and process CPU time since the start). Returns what `detector.json` holds."""
    from ultralytics import YOLO

    from avsep_cli import checkpoint
    from avsep_cli.detection import export_yolo_dataset, ultralytics_device, ultralytics_session

    run_dir = Path(run_dir).resolve()
    if resume:
        if not is_detector_run(run_dir):
            raise AvsepError(f"--resume {run_dir}: not a detector run (no config.json with method detector)")
        cfg = DetectorConfig.load(run_dir / "config.json")
        last = run_dir / YOLO_RUN / "weights" / "last.pt"
        if not last.is_file():
            raise AvsepError(f"--resume {run_dir}: no {last.relative_to(run_dir)} to continue from")
    elif cfg is None:
        raise AvsepError("a detector run needs a config (or resume=True)")
    if not cfg.model.endswith((".yaml", ".yml")):
        raise AvsepError(f"--model {cfg.model}: expected an ultralytics architecture yaml such as yolov8n.yaml or "
                         f"yolo11n.yaml (the detector is trained from scratch; no pretrained weights)")
    if cfg.imgsz < 32 or cfg.imgsz % 32:
        raise AvsepError(f"--imgsz {cfg.imgsz}: expected a multiple of 32 (YOLO's largest stride)")
    data = export_yolo_dataset(cfg.root, every=cfg.every, progress=on_export, agnostic=cfg.agnostic, stills=cfg.stills)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        cfg.save(run_dir / "config.json")

    t0, cpu0 = time.monotonic(), time.process_time()
    state = {"ended": False, "val": {}, "cpu": 0.0}

    def epoch_end(trainer) -> None:
        m = trainer.metrics or {}
        val = {"val_map50": float(m.get("metrics/mAP50(B)", float("nan"))),
               "val_map50_95": float(m.get("metrics/mAP50-95(B)", float("nan")))}
        if state["ended"]:  # ultralytics' final validation of best.pt, after the last epoch
            state["val"] = val
            return
        losses = _losses(trainer)
        row = {"epoch": trainer.epoch + 1, "epochs": trainer.epochs, "loss": sum(losses.values()), "losses": losses,
               **val, "minutes": (time.monotonic() - t0) / 60, "cpu_minutes": (time.process_time() - cpu0) / 60}
        if on_epoch:
            on_epoch(row)
        last_epoch_cpu, state["cpu"] = row["cpu_minutes"] - state["cpu"], row["cpu_minutes"]
        if cfg.max_minutes and row["minutes"] >= cfg.max_minutes:
            trainer.stop = True
        if cfg.max_cpu_minutes and row["cpu_minutes"] + last_epoch_cpu > cfg.max_cpu_minutes:
            trainer.stop = True
        state["ended"] = bool(trainer.stop)

    def batch_end(trainer) -> None:
        state["batch"] = state.get("batch", 0) + 1
        if on_step:
            on_step(state["batch"], len(trainer.train_loader), sum(_losses(trainer).values()))

    def epoch_start(trainer) -> None:
        state["batch"] = 0

    callbacks = {"on_fit_epoch_end": epoch_end, "on_train_batch_end": batch_end, "on_train_epoch_start": epoch_start}
    dev = ultralytics_device(device)
    args = dict(data=str(data.data_yaml), imgsz=cfg.imgsz, batch=cfg.batch_size, device=dev, workers=cfg.num_workers,
                plots=False, verbose=verbose)
    with ultralytics_session(verbose=verbose):
        try:
            if resume:
                model = YOLO(str(last))
                for event, fn in callbacks.items():
                    model.add_callback(event, fn)
                model.train(resume=str(last), **{k: v for k, v in args.items() if k not in ("imgsz", "verbose")})
            else:
                model = YOLO(cfg.model, task="detect")  # built from the yaml: random weights
                for event, fn in callbacks.items():
                    model.add_callback(event, fn)
                model.train(epochs=cfg.epochs, pretrained=False, amp=False, seed=cfg.seed, deterministic=False,
                            patience=cfg.patience, nbs=cfg.nbs, warmup_epochs=cfg.warmup_epochs,
                            close_mosaic=cfg.close_mosaic, project=str(run_dir), name=YOLO_RUN, exist_ok=True, **args)
        except (FileNotFoundError, SyntaxError) as e:  # ultralytics' errors for an unknown yaml / bad data
            raise AvsepError(f"detector training: {str(e).strip().splitlines()[0]}") from None
        except AssertionError as e:
            if resume and "nothing to resume" in str(e):  # last.pt of a finished run has no optimiser state
                raise AvsepError(f"--resume {run_dir}: the run finished its epochs; nothing to resume") from None
            raise
        best = run_dir / YOLO_RUN / "weights" / "best.pt"
        if not best.is_file():
            raise AvsepError(f"detector training ended without {best}")
        with atomic_path(run_dir / WEIGHTS) as tmp:
            shutil.copyfile(best, tmp)
        test = {}
        if "test" in data.images and data.images["test"]:
            tm = YOLO(str(run_dir / WEIGHTS)).val(data=str(data.data_yaml), split="test", imgsz=cfg.imgsz,
                                                  batch=cfg.batch_size, device=dev, workers=cfg.num_workers,
                                                  plots=False, verbose=verbose, project=str(run_dir),
                                                  name="test", exist_ok=True)
            with contextlib.suppress(OSError):
                (run_dir / "test").rmdir()  # ultralytics' save folder of the test run: empty with plots off
            test = {"map50": float(tm.box.map50), "map50_95": float(tm.box.map),
                    "per_class_ap50": {data.classes[int(c)]: float(ap)
                                       for c, ap in zip(tm.box.ap_class_index, tm.box.ap50)}}
    info = {
        "weights": WEIGHTS,
        "sha256": checkpoint.sha256(run_dir / WEIGHTS),
        "model": cfg.model,
        "classes": list(data.classes),
        "imgsz": cfg.imgsz,
        "val": {"map50": state["val"].get("val_map50"), "map50_95": state["val"].get("val_map50_95")},
        "test": test,
        "images": data.images,
        "dataset": str(data.dir),
        "minutes": round((time.monotonic() - t0) / 60, 2),
        "cpu_minutes": round((time.process_time() - cpu0) / 60, 2),
        "versions": {**checkpoint.versions(), "ultralytics": _ultralytics_version()},
    }
    with atomic_path(run_dir / INFO) as tmp:
        tmp.write_text(json.dumps(info, indent=1) + "\n")
    return info


def _losses(trainer) -> dict[str, float]:
    """The running means of the epoch's loss terms, e.g. {"box_loss": 1.2, "cls_loss": 3.4, "dfl_loss": 1.1}."""
    if trainer.tloss is None:
        return {}
    return {k.split("/", 1)[1]: float(v) for k, v in trainer.label_loss_items(trainer.tloss, prefix="train").items()}


def _ultralytics_version() -> str:
    import ultralytics

    return ultralytics.__version__
