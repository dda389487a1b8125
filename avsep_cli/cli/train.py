"""Train a separation model on a corpus in the MUSIC layout (ours or the real MUSIC dataset).

`avsep train --method NAME --root ROOT` runs the shared trainer: progress bar, one summary line per epoch,
checkpoints every epoch and the best by validation SDR in `--run DIR`; `--resume DIR` continues a run
exactly; Ctrl-C saves a checkpoint first. Under `torchrun --nproc_per_node K` it trains with
DistributedDataParallel (IAL-CMS, with its two alternating optimisers, trains in one process). Methods: tiny
(a test model), avpc, sop, visual-trunk and ialcms (unsupervised on mixtures of mixtures by default,
`--supervised` on Mix-and-Separate; `--no-*` switches for the paper's ablations), audio-tagger (which
classes sound in mixtures of 1 to `--mix` solos; it helps name the players) and detector (an
ultralytics YOLO trained from its architecture yaml on the corpus boxes; `--model`, `--imgsz`, `--every`;
its mAP50 on the test split is printed and saved in RUN/detector.json).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from avsep_cli.cli import common
from avsep_cli.errors import AvsepError


DETECTOR = "detector"  # trained by ultralytics (training/detector.py), not by the shared trainer


def train(
    method: Optional[str] = typer.Option(None, "--method", "-m", help="tiny, avpc, sop, visual-trunk, ialcms, audio-tagger or detector."),
    dataset: str = typer.Option("synth", "--dataset", help="synth (our corpus) or music (MUSIC in our layout)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Data root (corpus or organised MUSIC)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", callback=common.bounded(1), help="Epochs (default 10, detector 30; with --resume: extend the run to this many)."),
    batch_size: int = typer.Option(8, "--batch-size", callback=common.bounded(1), help="Mixtures per step (per process under torchrun); detector: images per batch."),
    steps_per_epoch: int = typer.Option(100, "--steps-per-epoch", callback=common.bounded(1), help="Optimiser steps per epoch."),
    mix: int = typer.Option(2, "--mix", callback=common.bounded(2, 4), help="Sources per training mixture (2, 3 or 4); audio-tagger: up to this many (1 to --mix)."),
    run: Optional[Path] = typer.Option(None, "--run", "--run-dir", help="Run folder (default runs/<method>); under torchrun write --run-dir, since torchrun's own parser reads --run as its --run-path."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder."),
    seed: int = typer.Option(0, "--seed", callback=common.bounded(0, common.SEED_MAX), help="Seed of everything random."),
    data_seed: Optional[int] = typer.Option(None, "--data-seed", callback=common.bounded(0, common.SEED_MAX), help="Seed of the training mixtures and batch order only (default: --seed); the validation set and the initialisation keep --seed. A later segment started with --init-from from a run of the same --seed takes a new one, else it sees that run's mixtures again, epoch for epoch."),
    val_num: int = typer.Option(32, "--val-num", callback=common.bounded(0), help="Validation mixtures (0: no validation)."),
    num_workers: int = typer.Option(0, "--num-workers", callback=common.bounded(0), help="Data-loading worker processes (0: in the main process)."),
    segment: int = typer.Option(65535, "--segment", callback=common.bounded(1024, 2**20), help="Samples per training window (1024 to 1048576)."),
    max_minutes: float = typer.Option(0.0, "--max-minutes", callback=common.bounded(0), help="Stop at the first epoch end after this many minutes (0: no limit)."),
    model: Optional[str] = typer.Option(None, "--model", help="Detector: ultralytics architecture yaml, trained from scratch (default yolov8n.yaml; also yolo11n.yaml, ...)."),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", callback=common.bounded(32, 4096, multiple_of=32), help="Detector: input size in pixels, a multiple of 32 up to 4096 (default 224, the corpus' frame size)."),
    every: Optional[int] = typer.Option(None, "--every", callback=common.bounded(1), help="Detector: train on every N-th frame of each clip at 8 fps (default 4)."),
    frame_size: Optional[int] = typer.Option(None, "--frame-size", callback=common.bounded(32, 1024, multiple_of=32), help="visual-trunk: crop side in pixels the trunk trains (and later classifies) at, a multiple of 32 up to 1024 (default 224)."),
    stills: Optional[int] = typer.Option(None, "--stills", callback=common.bounded(0, 1_000_000), help="Detector: this many more training images of 1-3 players rendered from the corpus' train pictures (default 0)."),
    agnostic: Optional[bool] = typer.Option(None, "--agnostic/--per-class", help="Detector: one class, instrument (a classifier names them; the shipped detector), or our 15 classes (default)."),
    max_cpu_minutes: Optional[float] = typer.Option(None, "--max-cpu-minutes", callback=common.bounded(0), help="Stop before an epoch would take the run past this much process CPU time, all threads and resumes counted (0 or absent: no limit; with --resume: replaces the run's own)."),
    keep_every: Optional[int] = typer.Option(None, "--keep-every", callback=common.bounded(0), help="Keep the model weights after every N-th epoch in RUN/epochs/eNNN.pt, to average them later (scripts/average_weights.py); 0 or absent: none (with --resume: from now on)."),
    cache_features: bool = typer.Option(False, "--cache-features", help="Cache the frozen trunk's features per frame (much faster on CPU; no frame augmentation)."),
    rcop: bool = typer.Option(False, "--rcop", help="AVPC: RCoP self-supervised pre-training first (stage 1 in RUN/rcop), then Mix-and-Separate from it."),
    rcop_epochs: Optional[int] = typer.Option(None, "--rcop-epochs", callback=common.bounded(1), help="Epochs of the RCoP stage (default 40, the reference's)."),
    lr_steps: Optional[str] = typer.Option(None, "--lr-steps", help="Epochs after which every LR is multiplied by 0.1, comma-separated (default: the method's reference schedule, AVPC and Sound-of-Pixels 40,80 of 100; '' for none). With --resume: re-plans the run's drops (one moved before its position applies at once)."),
    rcop_lr_steps: Optional[str] = typer.Option(None, "--rcop-lr-steps", help="LR drop epochs of the RCoP stage (default 20,30 of 40)."),
    option: list[str] = typer.Option([], "--option", help="A training option KEY=VALUE of the method (repeatable; see docs/fidelity.md), e.g. target=dominant, sep_loss=snr, items=duets."),
    model_option: list[str] = typer.Option([], "--model-option", help="A model config field KEY=VALUE (repeatable; see docs/fidelity.md), e.g. align_corners=true, freq_scale=mel."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from other weights, fresh optimiser: a run folder (its best.pt), a checkpoint, or shipped weights by name or .safetensors file (e.g. a 2-mix run for --mix 3, or the weights a campaign segment shipped)."),
    preset: str = typer.Option("paper", "--preset", help="Model preset: paper or cpu (smaller, for CPU training)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 (default, as the references train) or bf16: the networks under bfloat16 autocast, signal path and losses in float32 (about 2x the steps per CPU-second on CPUs with AVX512-BF16/AMX; see docs/fidelity.md)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="Weights and activations in channels-last (NHWC) layout: faster convolutions on CPU, same computation."),
    visual_weights: Optional[Path] = typer.Option(None, "--visual-weights", help="ResNet-18 weights for the visual trunk: a torchvision state dict, a visual-trunk run's checkpoint, or shipped visual-trunk weights by name (e.g. visual-trunk-broad)."),
    supervised: bool = typer.Option(False, "--supervised", help="IAL-CMS: train on ground-truth stems (Mix-and-Separate) instead of each clip's own mixture."),
    no_spatial_attention: bool = typer.Option(False, "--no-spatial-attention", help="IAL-CMS ablation: no audio-to-visual spatial attention."),
    no_channel_attention: bool = typer.Option(False, "--no-channel-attention", help="IAL-CMS ablation: no visual-to-audio channel attention."),
    no_adain: bool = typer.Option(False, "--no-adain", help="IAL-CMS ablation: BatchNorm instead of AdaIN in the mask decoder."),
    no_av_contrast: bool = typer.Option(False, "--no-av-contrast", help="IAL-CMS ablation: no InfoNCE loss L_av."),
    no_ial: bool = typer.Option(False, "--no-ial", help="IAL-CMS ablation: no independency adversarial learning (critic, L_G)."),
    device: str = common.DeviceOption,
) -> None:
    from avsep_cli.training.config import TrainConfig
    from avsep_cli.training.run import METHOD_DEFAULTS, METHODS
    from avsep_cli.training.run import train as run_training
    from avsep_cli.training.trainer import Interrupted

    dev = common.resolve_device(device)
    detector_opts = [f for f, v in (("--model", model), ("--imgsz", imgsz), ("--every", every), ("--stills", stills),
                                    ("--agnostic", agnostic)) if v is not None]
    if detector_opts and (method != DETECTOR or resume is not None):
        raise AvsepError(f"{', '.join(detector_opts)}: detector options; use them with --method detector"
                         + (" (a resumed run keeps its own)" if resume is not None else ""))
    speed_opts = [f for f, on in (("--precision", precision is not None), ("--channels-last", channels_last)) if on]
    if speed_opts and (resume is not None or method == DETECTOR):
        raise AvsepError(f"{', '.join(speed_opts)}: " + ("a resumed run keeps the precision and layout of its config.json"
                                                         if resume is not None else "not available for --method detector"))
    if data_seed is not None and (resume is not None or method == DETECTOR):
        raise AvsepError("--data-seed: " + ("a resumed run keeps the data seed of its config.json" if resume is not None
                                            else "not available for --method detector (it takes --seed)"))
    if precision not in (None, "fp32", "bf16"):
        raise AvsepError(f"--precision {precision}: expected fp32 or bf16")
    if resume is not None:
        from avsep_cli.training.detector import is_detector_run

        if is_detector_run(resume):
            if max_cpu_minutes is not None:
                raise AvsepError("--max-cpu-minutes cannot change a resumed detector run (it keeps its own)")
            return _train_detector(None, resume, dev, epochs)
    if resume is None and method == DETECTOR:
        if root is None:
            raise AvsepError("--root is required: the corpus (avsep data synth) with its boxes")
        unused = [f for f, on in (("--dataset music", dataset != "synth"), ("--rcop", rcop), ("--init-from", init_from),
                                  ("--visual-weights", visual_weights), ("--cache-features", cache_features),
                                  ("--frame-size", frame_size is not None),
                                  ("--keep-every", keep_every is not None)) if on]
        if unused:
            raise AvsepError(f"{', '.join(unused)}: not available for --method detector")
        from avsep_cli.training.detector import DetectorConfig

        cfg = DetectorConfig(root=str(root), batch_size=batch_size, max_minutes=max_minutes,
                             max_cpu_minutes=max_cpu_minutes or 0.0, seed=seed, num_workers=num_workers)
        for key, value in (("epochs", epochs), ("model", model), ("imgsz", imgsz), ("every", every), ("stills", stills),
                           ("agnostic", agnostic)):
            if value is not None:
                setattr(cfg, key, value)
        return _train_detector(cfg, run or Path("runs") / DETECTOR, dev, None)
    if resume is None:
        if method is None:
            raise AvsepError("--method is required (or --resume RUN)")
        if method not in METHODS:
            raise AvsepError(f"unknown --method {method}; available: {', '.join((*METHODS, DETECTOR))}")
        if dataset not in ("synth", "music"):
            raise AvsepError(f"--dataset {dataset}: expected synth or music")
        if root is None:
            raise AvsepError("--root is required: the corpus (avsep data synth) or organised MUSIC folder")
        if preset not in ("paper", "cpu"):
            raise AvsepError(f"--preset {preset}: expected paper or cpu")
        if rcop and method != "avpc":
            raise AvsepError("--rcop is AVPC's self-supervised pre-training: use it with --method avpc")
        ial_flags = {"--supervised": supervised, "--no-spatial-attention": no_spatial_attention,
                     "--no-channel-attention": no_channel_attention, "--no-adain": no_adain,
                     "--no-av-contrast": no_av_contrast, "--no-ial": no_ial}
        used = [f for f, on in ial_flags.items() if on]
        if used and method != "ialcms":
            raise AvsepError(f"{', '.join(used)}: IAL-CMS options; use them with --method ialcms")
        model_overrides = {k: False for k, on in (("spatial_attention", no_spatial_attention),
                                                  ("channel_attention", no_channel_attention), ("adain", no_adain),
                                                  ("av_contrast", no_av_contrast)) if on}
        if method == "audio-tagger":
            visual = [f for f, on in (("--visual-weights", visual_weights), ("--cache-features", cache_features)) if on]
            if visual:
                raise AvsepError(f"{', '.join(visual)}: the audio tagger has no visual trunk")
        if frame_size is not None:
            if method != "visual-trunk":
                raise AvsepError("--frame-size: a visual-trunk option (the separators' frame size is their preset's)")
            model_overrides["frame_size"] = frame_size
        options = {**({"supervised": True} if supervised else {}), **({"ial": False} if no_ial else {}),
                   **_key_values(option, "--option")}
        model_overrides.update(_key_values(model_option, "--model-option"))
        defaults = METHOD_DEFAULTS[method]
        steps = _epochs_list(lr_steps, "--lr-steps")
        base = dict(dataset=dataset, root=str(root), batch_size=batch_size, steps_per_epoch=steps_per_epoch, mix=mix,
                    seed=seed, data_seed=data_seed, val_num=val_num, num_workers=num_workers, segment=segment, preset=preset,
                    cache_features=cache_features, max_minutes=max_minutes,
                    max_cpu_minutes=max_cpu_minutes or 0.0, precision=precision or "fp32", channels_last=channels_last,
                    keep_every=keep_every or 0)
        run_dir = run or Path("runs") / (method + ("-rcop" if rcop else ""))
        stages = []
        if rcop:  # stage 1: RCoP pre-training in RUN/rcop; stage 2 starts from its weights
            r = METHOD_DEFAULTS["avpc-rcop"]
            rsteps = _epochs_list(rcop_lr_steps, "--rcop-lr-steps")
            stages.append((TrainConfig(**{**base, **r, "method": "avpc-rcop", "epochs": rcop_epochs or r["epochs"],
                                          "model": dict(model_overrides),
                                          **({"lr_steps": rsteps} if rsteps is not None else {})}), run_dir / "rcop"))
            init_from = run_dir / "rcop" / "last.pt"
        stages.append((TrainConfig(**{**base, **defaults, "method": method, "epochs": epochs or defaults.get("epochs", 10),
                                      "init_from": str(init_from or ""), "model": model_overrides, "options": options,
                                      **({"lr_steps": steps} if steps is not None else {})}), run_dir))
    else:
        if rcop:
            raise AvsepError("--rcop starts a new two-stage run; to continue one stage, --resume its folder")
        stages = [(None, resume)]
        run_dir = resume
        # a resumed run may re-plan its LR drops and its method's *_steps schedules (e.g. to fit a new machine)
        replan = {"lr_steps": _epochs_list(lr_steps, "--lr-steps"), "schedule_options": _key_values(option, "--option")}

    with common.progress(transient=True) as bar:
        task = bar.add_task("train", total=None)

        def on_step(step: int, total: int, row: dict) -> None:
            if step < 0:  # end of an epoch: one summary line
                val = "".join(f"  val {k[4:].upper()} {v:.3f}" for k, v in row.items() if k.startswith("val_"))
                common.stderr.print(f"epoch {row['epoch'] + 1}: loss {row.get('train_loss', float('nan')):.4f}{val}  "
                                    f"data {row['data_fraction'] * 100:.1f}% of step time")
                return
            bar.update(task, completed=step, total=total, description=f"train loss {row['loss']:.4f}")

        try:
            for cfg, folder in stages:
                if len(stages) > 1:
                    common.stderr.print(f"stage {cfg.method}: {folder}")
                run_training(cfg, folder, device=dev, resume=resume is not None, on_step=on_step,
                             visual_weights=str(visual_weights) if visual_weights else None,
                             epochs=epochs if resume is not None else None,
                             max_cpu_minutes=max_cpu_minutes if resume is not None else None,
                             keep_every=keep_every if resume is not None else None,
                             **(replan if resume is not None else {}))
        except Interrupted as e:
            common.stderr.print(f"avsep: {e}", highlight=False)
            raise typer.Exit(143 if e.terminated else 130)
    common.stderr.print(f"run saved in {run_dir}")


def _key_values(items: list[str], flag: str) -> dict:
    """KEY=VALUE strings -> a dict; values are read as JSON when they parse (true, 3, [1, 2], "x"), else kept
    as strings."""
    import json

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise AvsepError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _epochs_list(text: Optional[str], flag: str) -> Optional[tuple]:
    """'40,80' -> (40, 80); '' -> (); None -> None (the method's default)."""
    if text is None:
        return None
    try:
        steps = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise AvsepError(f"{flag} {text!r}: expected epochs as comma-separated integers, e.g. 40,80") from None
    if any(x < 1 for x in steps) or list(steps) != sorted(set(steps)):
        raise AvsepError(f"{flag} {text!r}: expected increasing positive epochs")
    return steps


def _train_detector(cfg, run_dir: Path, dev, epochs: Optional[int]) -> None:
    """`--method detector` (or `--resume` of a detector run): export, train, test, one line per epoch."""
    from avsep_cli.training.detector import WEIGHTS, train_detector

    if cfg is None and epochs is not None:
        raise AvsepError("--epochs cannot change a resumed detector run (ultralytics continues its own schedule)")
    with common.progress(transient=True) as bar:
        task = bar.add_task("export frames and boxes", total=None)

        def on_export(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        def on_step(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, description=f"train loss {loss:.4f}")

        def on_epoch(row: dict) -> None:
            terms = " ".join(f"{k.removesuffix('_loss')} {v:.3f}" for k, v in row["losses"].items())
            common.stderr.print(f"epoch {row['epoch']}/{row['epochs']}: loss {row['loss']:.4f} ({terms})  "
                                f"val mAP50 {row['val_map50']:.3f} "
                                f"mAP50-95 {row['val_map50_95']:.3f}  {row['minutes']:.1f} min "
                                f"({row['cpu_minutes']:.1f} CPU-min)")

        info = train_detector(cfg, run_dir, dev, resume=cfg is None, verbose=common.verbosity() >= 1,
                              on_epoch=on_epoch, on_step=on_step, on_export=on_export)
    test = info["test"]
    if test:
        common.stderr.print(f"test split ({info['images'].get('test', 0)} frames): mAP50 {test['map50']:.3f}  "
                            f"mAP50-95 {test['map50_95']:.3f}")
    else:
        common.stderr.print("no test clips: the detector was not tested")
    common.stderr.print(f"detector saved in {run_dir / WEIGHTS} (sha256 {info['sha256'][:12]}…; metrics in "
                        f"{run_dir / 'detector.json'})")
