"""`avsep train` as a library call: build the method's system and data, then run the shared trainer.

A run lives in one folder: `config.json` (the final config), `last.pt` (every epoch, and on Ctrl-C),
`best.pt` (best validation SDR), `metrics.jsonl` / `metrics.csv` / `curves.png`. `--resume RUN` reads the
config and `last.pt` back (checksum-verified, and checked to fit the run's model) and continues exactly
where the run stopped, down to the running loss of an epoch interrupted half-way.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from avsep_cli import evaluate
from avsep_cli.errors import AvsepError
from avsep_cli.training.config import TrainConfig
from avsep_cli.training.trainer import Trainer, dist_info, init_distributed, seed_everything

log = logging.getLogger("avsep")

METHODS = ("tiny", "avpc", "sop", "visual-trunk", "avpc-rcop", "ialcms", "audio-tagger")

# Per-method training defaults, as the authors' code trains each method (docs/fidelity.md). An "epoch" is
# --steps-per-epoch steps of --batch-size mixtures: the references' epochs are 806 iterations at batch 64
# (AVPC) and the LR drops are in those epochs; pass --batch-size 64 --steps-per-epoch 806 to match them.
METHOD_DEFAULTS = {
    "tiny": {"lr": {"default": 1e-3}},
    # AVPC (avpc/main.py 438-450, arguments.py 66-113): AdamW betas (0.9, 0.999), weight decay 1e-2 except on
    # the rates a, b; sound net lr 1e-3, frame head 1e-4; 100 epochs, LR x0.1 at 40 and 80; no clipping, fp32
    "avpc": {"lr": {"sound_net": 1e-3, "frame_net": 1e-4, "default": 1e-3}, "optimizer": "adamw", "weight_decay": 1e-2,
             "no_decay": ("sound_net.a", "sound_net.b"), "epochs": 100, "lr_steps": (40, 80), "grad_clip": 0.0,
             "amp": False},
    # Sound-of-Pixels (main.py 436-442, train_MUSIC.sh): SGD momentum 0.9, weight decay 1e-4; U-Net, synthesizer
    # and frame head 1e-3, the trunk trained at 1e-4; 100 epochs, LR x0.1 at 40 and 80
    "sop": {"lr": {"sound_net": 1e-3, "frame_net.trunk": 1e-4, "frame_net": 1e-3, "default": 1e-3}, "optimizer": "sgd",
            "weight_decay": 1e-4, "momentum": 0.9, "epochs": 100, "lr_steps": (40, 80), "grad_clip": 0.0, "amp": False},
    # RCoP stage 1 (avpc_rcop/main.py 685-701, arguments.py 113-128): SGD momentum 0.9, weight decay 1e-4 except on
    # the rates; sound net and SimSiam head 1e-3, frame head 1e-4; 40 epochs, LR x0.1 at 20 and 30; no SDR to validate
    "avpc-rcop": {"lr": {"avpc.sound_net": 1e-3, "avpc.frame_net": 1e-4, "head": 1e-3, "default": 1e-3},
                  "optimizer": "sgd", "weight_decay": 1e-4, "momentum": 0.9, "val_num": 0,
                  "no_decay": ("avpc.sound_net.a", "avpc.sound_net.b"), "epochs": 40, "lr_steps": (20, 30),
                  "grad_clip": 0.0, "amp": False},
    # trunk pre-training on the corpus pictures (our substitute for ImageNet): AdamW, cosine-free steps
    "visual-trunk": {"lr": {"default": 1e-3}, "optimizer": "adamw", "weight_decay": 1e-4, "monitor": "acc"},
    # the audio tagger (ours, naming.py): AdamW, picks best.pt by the val mixtures' top-n recall
    "audio-tagger": {"lr": {"default": 1e-3}, "optimizer": "adamw", "weight_decay": 1e-4, "monitor": "recall"},
    # IAL-CMS separator (GeometricGANwAVC.yaml): Adam betas (0.9, 0.999), visual side 1e-3, audio side (encoder,
    # AV module, decoder) 1e-4, no weight decay, no LR schedule; the critic's own Adam lives in IALOptions
    "ialcms": {"lr": {"visual": 1e-3, "default": 1e-4}, "optimizer": "adam", "weight_decay": 0.0, "betas": (0.9, 0.999),
               "grad_clip": 0.0, "amp": False},
}

# Mix-and-Separate data and targets of the mask methods (TrainConfig.options), the references' by default:
# target rule (systems.MaskTargets), source levels and frame augmentation (datasets), mix partners, mean mixing
MASK_OPTIONS = {
    "avpc": {"target": "avpc", "levels": "avpc", "augment": "reference", "partners": "any", "mean": True,
             "proto_guidance": 0.0},
    "sop": {"target": "sop", "levels": "uniform", "augment": "reference", "partners": "any", "mean": True,
            "proto_guidance": 0.0},
    "tiny": {"target": "dominant", "levels": "db", "augment": "scale", "partners": "classes", "mean": False,
             "proto_guidance": 0.0},
}
# proto_guidance (ours, not the papers'; 0 = off): the share of training sources guided by their class'
# prototype (the mean trunk feature of the train split's crops, `avsep weights prototypes`) instead of their
# own frames' features, as `avsep separate --guide auto` guides them; needs --cache-features and prototypes
# made with the run's trunk
LEGACY_MASK_OPTIONS = MASK_OPTIONS["tiny"]  # how avsep trained before issue 16 (legacy networks)


def mask_options(cfg: TrainConfig) -> dict:
    """The Mix-and-Separate options of a mask method's run: the method's reference defaults (legacy networks:
    avsep's old recipe), overridden by cfg.options; unknown keys are refused."""
    base = LEGACY_MASK_OPTIONS if cfg.model.get("legacy") else MASK_OPTIONS.get(cfg.method, LEGACY_MASK_OPTIONS)
    unknown = set(cfg.options) - set(base)
    if unknown:
        raise AvsepError(f"unknown options for --method {cfg.method}: {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(base))})")
    return {**base, **cfg.options}


def model_config(method: str, preset: str, overrides: dict) -> dict:
    """The model config dict of a method at a preset (paper|cpu), with explicit overrides."""
    if method == "tiny":
        from avsep_cli.models.tiny import TinyConfig

        return {**asdict(TinyConfig()), **overrides}
    if method in ("avpc", "avpc-rcop"):
        from avsep_cli.models.avpc import AVPCConfig

        return {**asdict(AVPCConfig.preset(preset)), **overrides}
    if method == "sop":
        from avsep_cli.models.sop import SoPConfig

        return {**asdict(SoPConfig.preset(preset)), **overrides}
    if method == "visual-trunk":
        return {"num_classes": 15, "frame_size": 224, **overrides}
    if method == "audio-tagger":
        from avsep_cli.models.audio_tagger import AudioTaggerConfig

        return {**asdict(AudioTaggerConfig.preset(preset)), **overrides}
    if method == "ialcms":
        from avsep_cli.models.ialcms import IALCMSConfig

        return {**asdict(IALCMSConfig.preset(preset)), **overrides}
    raise AvsepError(f"unknown training method {method!r}; available: {', '.join(METHODS)}")


def build_system(cfg: TrainConfig, visual_weights: str | None = None):
    """The system (model + loss) and the training dataset of a method."""
    from avsep_cli import checkpoint
    from avsep_cli.datasets import MixSeparate
    from avsep_cli.training.systems import MaskSystem

    if cfg.method not in METHODS:
        raise AvsepError(f"unknown training method {cfg.method!r}; available: {', '.join(METHODS)}")
    cfg.model = model_config(cfg.method, cfg.preset, cfg.model)
    if cfg.cache_features:  # features computed once by the frozen trunk in eval mode: say so in the config
        if cfg.method in ("avpc", "avpc-rcop") and cfg.model.get("trunk_bn_train"):
            log.info("--cache-features: the trunk's BatchNorm stays in eval mode (trunk_bn_train=False)")
            cfg.model["trunk_bn_train"] = False
        if cfg.method == "sop" and cfg.model.get("train_trunk"):
            log.info("--cache-features: the trunk is frozen (train_trunk=False; the reference trains it at lr 1e-4)")
            cfg.model["train_trunk"] = False
    checkpoint._load_builtin_models()
    model = checkpoint.MODELS[cfg.method](**cfg.model)
    if visual_weights is not None and (hasattr(model, "frame_net") or cfg.method in ("ialcms", "visual-trunk")):
        from avsep_cli.models.resnet import load_trunk_weights

        trunk = {"ialcms": lambda: model.visual.trunk, "visual-trunk": lambda: model.trunk}.get(
            cfg.method, lambda: model.frame_net.trunk)()
        log.info("visual trunk from %s", load_trunk_weights(trunk, visual_weights))
    from avsep_cli.training.systems import FIXED_SEGMENT

    if cfg.method == "visual-trunk":
        from avsep_cli.training.systems import ClassifierSystem

        data = classification_data(cfg.root, "train", length=max(cfg.batch_size * max(cfg.steps_per_epoch, 1), 64),
                                   seed=cfg.train_seed, frame_size=cfg.model["frame_size"])
        if cfg.model["num_classes"] != len(data.classes):
            cfg.model["num_classes"] = len(data.classes)
            model = checkpoint.MODELS[cfg.method](**cfg.model)
        return ClassifierSystem(model, cfg.method, cfg.model), data
    if cfg.method == "audio-tagger":
        from avsep_cli.datasets import AudioTagging
        from avsep_cli.training.systems import TaggerSystem

        data = AudioTagging(cfg.root, "train", length=max(cfg.batch_size * max(cfg.steps_per_epoch, 1), 64),
                            seed=cfg.train_seed, segment=cfg.segment, max_sources=max(cfg.mix, 1))
        if cfg.model["num_classes"] != len(data.classes) or list(cfg.model["classes"]) != data.classes:
            cfg.model.update(num_classes=len(data.classes), classes=list(data.classes))
            model = checkpoint.MODELS[cfg.method](**cfg.model)
        return TaggerSystem(model, cfg.method, cfg.model), data
    if cfg.method == "avpc-rcop":
        from avsep_cli.datasets import RCoPPairs
        from avsep_cli.training.systems import RCoPSystem

        if visual_weights is not None:
            from avsep_cli.models.resnet import load_trunk_weights

            load_trunk_weights(model.avpc.frame_net.trunk, visual_weights)
        data = RCoPPairs(cfg.root, "train", length=max(cfg.batch_size * max(cfg.steps_per_epoch, 1), 64), seed=cfg.train_seed,
                         frame_size=cfg.model["frame_size"])
        return RCoPSystem(model, cfg.method, cfg.model), data
    if cfg.method == "ialcms":
        return _build_ialcms(cfg, model)
    if cfg.method in FIXED_SEGMENT and cfg.segment != FIXED_SEGMENT[cfg.method]:
        raise AvsepError(f"--method {cfg.method} works on {FIXED_SEGMENT[cfg.method]}-sample windows (256 STFT frames); "
                         f"--segment {cfg.segment} does not fit its 7 down-sampling levels")
    cfg.options = mask_options(cfg)
    system = MaskSystem(model, cfg.method, cfg.model, target=cfg.options["target"])
    length = max(cfg.batch_size * max(cfg.steps_per_epoch, 1), 64)
    store = None
    if cfg.cache_features:
        if not hasattr(model, "frame_net"):
            raise AvsepError(f"--cache-features needs a frozen visual trunk; --method {cfg.method} has none")
        from avsep_cli.features import TrunkFeatureStore

        trunk = model.frame_net.trunk
        store = TrunkFeatureStore(cfg.root, trunk, "resnet18-dilated" if cfg.method == "sop" else "resnet18",
                                  cfg.model["frame_size"])
    o = cfg.options
    p = float(o.get("proto_guidance", 0.0))
    if not 0.0 <= p <= 1.0:
        raise AvsepError(f"--option proto_guidance={o['proto_guidance']}: expected a share in [0, 1]")
    if p > 0 and store is None:
        raise AvsepError("--option proto_guidance needs --cache-features: prototypes are trunk features")
    # the prototypes themselves are set by `train` once the trunk holds its final weights (--init-from, --resume)
    data = MixSeparate(cfg.root, "train", mix=cfg.mix, length=length, seed=cfg.train_seed, segment=cfg.segment,
                       frame_size=cfg.model["frame_size"], features=store, levels=o["levels"], augment=o["augment"],
                       partners=o["partners"], mean=o["mean"], proto_share=p)
    return system, data


def class_prototypes(model, name: str) -> dict[str, torch.Tensor]:
    """class -> (C, h, w) prototype of `model`'s trunk in its view (proto_guidance), in the cached features'
    layout: the shipped file made with the same trunk weights (`prototypes.for_method`). `name`: what the
    trunk is called in messages."""
    from types import SimpleNamespace

    from avsep_cli import prototypes

    protos = prototypes.for_method(SimpleNamespace(model=model, name=name))
    key = prototypes.view_of(model).key
    if key not in protos.maps:
        raise AvsepError(f"prototypes {protos.name!r} hold no {key} maps (they have {', '.join(protos.maps)})")
    return {c: m.float() for c, m in zip(protos.classes, protos.maps[key])}


def _build_ialcms(cfg: TrainConfig, model):
    """IAL-CMS: the two-optimiser system and a mixture-of-mixtures (unsupervised) or Mix-and-Separate
    (supervised) training set."""
    from avsep_cli.datasets import MixSeparate, MixtureOfMixtures
    from avsep_cli.models.ialcms_critic import CriticConfig
    from avsep_cli.training.ialcms import IALCMSSystem, IALOptions

    if cfg.options.get("supervised") and "ial" not in cfg.options:
        cfg.options = {**cfg.options, "ial": False}  # the reference's supervised configuration (OnlySep): no IAL
    try:
        opts = IALOptions.from_dict(cfg.options)
    except TypeError as e:
        raise AvsepError(f"bad IAL-CMS training options {cfg.options}: {e}") from None
    cfg.options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()}
    critic_args = asdict(CriticConfig.preset(opts.critic_preset or cfg.preset))
    system = IALCMSSystem(model, cfg.method, cfg.model, opts, critic_args, grad_clip=cfg.grad_clip)
    length = max(cfg.batch_size * max(cfg.steps_per_epoch, 1), 64)
    size = cfg.model["frame_size"]
    store = None
    if cfg.cache_features:  # frames (supervised) or fixed player crops (unsupervised), trunk run once
        from avsep_cli.features import TrunkFeatureStore

        # the DeepLabv3+ head's two maps are packed into one (1024, S/16, S/16) map per crop: 8x the mlp head's
        # cache on disk (128 KB per crop at 128 px, 400 KB at 224, float16), read one batch at a time; the
        # legacy encoder has only the mlp head's trunk
        cached = getattr(model.visual, "cached_trunk", None)
        trunk, kind = cached() if cached else (model.visual.trunk, "resnet18")
        store = TrunkFeatureStore(cfg.root, trunk, kind, size)
    legacy = bool(cfg.model.get("legacy"))
    if opts.supervised:  # solo clips of different classes, x U(0.5, 1.5), summed (the reference's solo set)
        data = MixSeparate(cfg.root, "train", mix=cfg.mix, length=length, seed=cfg.train_seed, segment=cfg.segment,
                           frame_size=size, features=store, levels="db" if legacy else "uniform")
    else:  # every item itself a mixture: synthetic duets of two solos of different classes (the reference)
        data = MixtureOfMixtures(cfg.root, "train", length=length, seed=cfg.train_seed, segment=cfg.segment,
                                 frame_size=size, crop_size=size, features=store, items=opts.items,
                                 levels="db" if legacy else "uniform")
    return system, data


def make_validation(cfg: TrainConfig, system, device: torch.device) -> Callable[[], dict] | None:
    """Validation SDR on the fixed, seeded val mixtures `avsep eval --split val` would score."""
    if cfg.val_num <= 0:
        return None
    if cfg.method == "visual-trunk":
        return _classification_validation(cfg, system, device)
    if cfg.method == "audio-tagger":
        return _tagger_validation(cfg, system, device)
    from avsep_cli.training.systems import FIXED_SEGMENT, IALCMSMethod, MaskMethod

    try:
        items = evaluate.build_test_set(cfg.root, mix=cfg.mix, split="val", num=cfg.val_num, seed=cfg.seed,
                                        window=cfg.segment, duets=False)
    except AvsepError as e:
        log.warning("no validation: %s", e)
        return None

    def validate() -> dict:
        if cfg.method == "ialcms":
            method = IALCMSMethod(system.model, cfg.method, frame_size=cfg.model["frame_size"])
        else:
            method = MaskMethod(system.model, cfg.method, frame_size=cfg.model.get("frame_size", 224),
                                segment=FIXED_SEGMENT.get(cfg.method))
        report, _ = evaluate.evaluate(method, items, window=cfg.segment, batch_size=cfg.batch_size, device=device)
        system.model.train()
        sm = report.summary("mix")
        return {"sdr": sm["sdr"]["mean"] if sm["sdr"]["n"] else float("nan"), "sir": sm["sir"]["mean"], "sar": sm["sar"]["mean"]}

    return validate


def classification_data(root, split: str, **kw):
    """The visual trunk's data: crops of stills rendered from the split's pictures (`PictureCrops`) for a
    corpus whose recipe holds picture families out; the corpus' own frames for older corpora."""
    import json

    from avsep_cli.datasets import FrameClassification, PictureCrops

    try:
        recipe = json.loads((Path(root) / "corpus.json").read_text())
    except (OSError, ValueError):
        recipe = {}
    return (PictureCrops if "picture_families" in recipe else FrameClassification)(root, split, **kw)


def _fixed_items(make: Callable[[], torch.utils.data.Dataset]) -> list | None:
    """The items of a fixed validation set, built once (None, with a warning, where the split has none)."""
    try:
        data = make()
    except AvsepError as e:
        log.warning("no validation: %s", e)
        return None
    return [data[i] for i in range(len(data))]


def _batches(items: list, size: int):
    from avsep_cli.training.trainer import collate

    for b in range(0, len(items), size):
        yield collate(items[b : b + size])


def _classification_validation(cfg: TrainConfig, system, device: torch.device) -> Callable[[], dict] | None:
    """Accuracy on a fixed set of val pictures (val_num x 8 of them)."""
    items = _fixed_items(lambda: classification_data(cfg.root, "val", length=cfg.val_num * 8, seed=cfg.seed,
                                                     frame_size=cfg.model["frame_size"], train=False))
    if items is None:
        return None

    @torch.no_grad()
    def validate() -> dict:
        system.model.eval()
        correct = 0
        for batch in _batches(items, cfg.batch_size):
            logits = system.model(batch["image"].to(device))
            correct += int((logits.argmax(-1).cpu() == batch["label"]).sum())
        system.model.train()
        return {"acc": correct / len(items)}

    return validate


def _tagger_validation(cfg: TrainConfig, system, device: torch.device) -> Callable[[], dict] | None:
    """Top-n recall and exact-set accuracy on fixed val mixtures of 1 to `mix` solos (val_num x 4 of them)."""
    from avsep_cli.datasets import AudioTagging
    from avsep_cli.models.audio_tagger import tagger_input
    from avsep_cli.training.systems import top_n_recall

    items = _fixed_items(lambda: AudioTagging(cfg.root, "val", length=cfg.val_num * 4, seed=cfg.seed,
                                              segment=cfg.segment, max_sources=max(cfg.mix, 1), train=False))
    if items is None:
        return None

    @torch.no_grad()
    def validate() -> dict:
        system.model.eval()
        logits, target = [], []
        for batch in _batches(items, cfg.batch_size):
            logits.append(system.model(tagger_input(batch["mixture"]).to(device)).float().cpu())
            target.append(batch["target"])
        system.model.train()
        lg, tg = torch.cat(logits), torch.cat(target)
        n = tg.sum(1).long()
        top = lg.argsort(dim=1, descending=True)
        exact = [set(top[i, : n[i]].tolist()) == set(tg[i].nonzero().flatten().tolist()) for i in range(len(tg))]
        return {"recall": float(top_n_recall(lg, tg)), "exact": sum(exact) / len(exact)}

    return validate


def _init_from(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Load the weights of another run (its best.pt, else last.pt), a checkpoint file or shipped weights (a
    .safetensors file or a shipped name, sha256-checked) into `model`."""
    from avsep_cli import checkpoint, registry

    src = Path(cfg.init_from)
    if src.is_dir():
        src = src / "best.pt" if (src / "best.pt").exists() else src / "last.pt"
    resolved = registry.resolve(src)
    data = resolved.data  # shipped weights are float16 on disk, loaded as float32
    if data.get("model_name") == "avpc-rcop" and cfg.method == "avpc":  # RCoP stage 1 -> stage 2
        data = {"model_name": "avpc", "model_args": data["model_args"],
                "state_dict": {k[5:]: v for k, v in data["state_dict"].items() if k.startswith("avpc.")}}
    if data.get("model_name") != cfg.method:
        raise AvsepError(f"--init-from {cfg.init_from}: holds a {data.get('model_name')!r} model, not {cfg.method!r}")
    if data["model_args"] != cfg.model:
        raise AvsepError(f"--init-from {cfg.init_from}: its model config differs from this run's ({data['model_args']} vs {cfg.model})")
    checkpoint.load_weights(model, data["state_dict"], src, f"this run's {cfg.method!r} model")
    registry.warn_unverified(resolved)
    log.info("initialised from %s", src)


def train(cfg: TrainConfig | None, run_dir: Path, *, device: torch.device, resume: bool = False,
          epochs: int | None = None, max_cpu_minutes: float | None = None, keep_every: int | None = None,
          on_step: Callable | None = None, visual_weights: str | None = None, lr_steps: tuple | None = None,
          schedule_options: dict | None = None) -> list[dict]:
    """Train `cfg.method`; with `resume`, continue the run in `run_dir` from its last checkpoint (its own
    config, optionally with more `epochs`, another CPU budget `max_cpu_minutes`, epoch weights kept from now
    on every `keep_every` epochs, or its schedules re-planned:
    `lr_steps`, the epochs of its LR drops, and `schedule_options`, the method's `*_steps` options such as
    IAL-CMS's lambda warm-ups; a milestone moved before the run's position takes effect at once)."""
    run_dir = Path(run_dir)
    init_distributed(device)
    rank, _ = dist_info()
    if resume:
        last = run_dir / "last.pt"
        if not last.exists():
            raise AvsepError(f"--resume {run_dir}: no last.pt in that folder")
        cfg = TrainConfig.load(run_dir / "config.json")
        if cfg.model:  # a run made before a model field existed resumes with the network it was made with
            from avsep_cli import checkpoint

            checkpoint._load_builtin_models()
            cfg.model = checkpoint.complete_args(cfg.method, cfg.model)
        if epochs is not None:
            cfg.epochs = epochs
        if max_cpu_minutes is not None:
            cfg.max_cpu_minutes = max_cpu_minutes
        if keep_every is not None:
            cfg.keep_every = keep_every
        if lr_steps is not None:
            cfg.lr_steps = tuple(int(e) for e in lr_steps)
        if schedule_options:
            bad = sorted(k for k in schedule_options if not (k.endswith("_steps") and k in cfg.options))
            if bad:
                raise AvsepError(f"--option {', '.join(bad)}: a resumed run keeps its options; only its schedules "
                                 f"({', '.join(k for k in cfg.options if k.endswith('_steps')) or 'none'}) may change")
            cfg.options = {**cfg.options, **schedule_options}
    elif lr_steps is not None or schedule_options:
        raise AvsepError("lr_steps and schedule_options re-plan a resumed run; a new run takes them in its config")
    elif (run_dir / "last.pt").exists():
        raise AvsepError(f"run folder {run_dir} already holds a run; use --resume {run_dir} or another --run")
    seed_everything(cfg.seed)
    system, data = build_system(cfg, visual_weights)
    if cfg.init_from and not resume:
        _init_from(system.model, cfg)
    trainer = Trainer(system, cfg, data, device, run_dir, on_step=on_step)
    if resume:  # before config.json is rewritten: a checkpoint that is refused leaves the run as it was
        trainer.resume(run_dir / "last.pt")
    if getattr(data, "proto_share", 0.0) > 0:  # the trunk's final weights are in: its prototypes
        data.prototypes = class_prototypes(system.model, visual_weights or cfg.init_from or str(run_dir))
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.json")
    validate = make_validation(cfg, system, device) if rank == 0 else None
    return trainer.fit(validate)
