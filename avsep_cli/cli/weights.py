"""List, describe, verify and add the model weights shipped in `weights/`, and build the class prototypes
that separation by instrument name uses (see `avsep_cli.registry`, `avsep_cli.prototypes`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from avsep_cli.cli import common
from avsep_cli.errors import AvsepError

app = typer.Typer(help=__doc__.split("(")[0].strip() + ".", no_args_is_help=True)


def _console():
    from rich.console import Console

    return Console()


@app.command("list")
def list_() -> None:
    """List the shipped weights."""
    from rich.table import Table

    from avsep_cli import registry

    rows = registry.entries()
    if not rows:
        _console().print(f"no shipped weights in {registry.weights_dir()}", highlight=False)
        return
    t = Table("name", "method", "default", "parameters", "dtype", "2-mix SDR", "sha256")
    for e in rows:
        sdr = e.get("metrics", {}).get("mix2", {}).get("sdr")
        t.add_row(e["name"], e["method"], "yes" if e.get("default") else "", f"{e['parameters']:,}" if 'parameters' in e else '',
                  e.get("dtype", ""), "" if sdr is None else f"{sdr:.2f}", e["sha256"][:12])
    _console().print(t)


@app.command("info")
def info(name: str = typer.Argument(..., help="Weight name (see avsep weights list).")) -> None:
    """Show one weight file's manifest entry (JSON)."""
    from avsep_cli import registry

    typer.echo(json.dumps(registry.entry(name), indent=1, sort_keys=True))


@app.command("verify")
def verify() -> None:
    """Recompute every shipped file's sha256; exit 2 on the first mismatch or missing file."""
    from avsep_cli import registry

    rows = registry.entries()
    if not rows:
        raise AvsepError(f"no shipped weights to verify in {registry.weights_dir()}")
    for e in rows:
        registry.verify_file(e)
        _console().print(f"ok  {e['name']}  {e['sha256'][:12]}", highlight=False)
    _console().print(f"{len(rows)} file(s) verified", highlight=False)


@app.command("add")
def add(
    checkpoint: Path = typer.Argument(..., help="A training checkpoint (RUN/best.pt)."),
    name: str = typer.Option(..., "--name", help="Name in the registry (file NAME.safetensors)."),
    method: str = typer.Option(..., "--method", help="Method it serves: avpc, avpc-rcop, sop, ialcms, ialcms-supervised or detector."),
    fp32: bool = typer.Option(False, "--fp32", help="Keep float32 (default: float16)."),
    default: bool = typer.Option(False, "--default", help="Make it the default for its method."),
    info_json: Optional[Path] = typer.Option(None, "--info", help="JSON merged into the entry (corpus recipe, training time, metrics)."),
    trunk: Optional[str] = typer.Option(None, "--trunk", help="Leave out the frozen visual trunk: it is the shipped visual-trunk weights of this name."),
) -> None:
    """Export a checkpoint to weights/ as safetensors and record it in the manifest."""
    from avsep_cli import registry

    extra = _read_info(info_json)
    if method == "detector":  # an ultralytics file, kept as it is
        e = registry.add_file(checkpoint, name, method, default=default, extra=extra)
    else:
        e = registry.export(checkpoint, name, method, fp16=not fp32, default=default, extra=extra, trunk=trunk)
    params = f"{e['parameters']:,} parameters  " if "parameters" in e else ""
    _console().print(f"{registry.weights_dir() / e['file']}  {params}sha256 {e['sha256'][:12]}", highlight=False)


@app.command("import")
def import_(
    files: list[Path] = typer.Argument(..., help="The reference's checkpoint files (AVPC: frame and sound .pth; Sound-of-Pixels: frame, sound, synthesizer; IAL-CMS: the Lightning .ckpt)."),
    kind: str = typer.Option(..., "--from", help="Whose checkpoints: avpc, sop or ialcms."),
    name: str = typer.Option(..., "--output", "-o", help="Registry name, file NAME.safetensors."),
    fp32: bool = typer.Option(False, "--fp32", help="Keep float32 (default: float16)."),
    frame_size: Optional[int] = typer.Option(None, "--frame-size", callback=common.bounded(32, 1024, multiple_of=32), help="Frame (or crop) size the model was trained on, a multiple of 32 up to 1024 (default 224)."),
) -> None:
    """Import the authors' checkpoints (read with weights_only=True; names mapped and every shape checked)
    as avsep weights and record them in the manifest."""
    from avsep_cli import reference_import, registry

    e = reference_import.import_files(kind, files, name, fp16=not fp32, frame_size=frame_size)
    _console().print(f"{registry.weights_dir() / e['file']}  {e['parameters']:,} parameters  sha256 {e['sha256'][:12]}",
                     highlight=False)


def _read_info(path: Optional[Path]) -> dict:
    """The --info JSON merged into a manifest entry ({} without one)."""
    if path is None:
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AvsepError(f"cannot read {path}: {e}") from None


@app.command("prototypes")
def prototypes(
    root: Path = typer.Option(..., "--root", help="Corpus with player boxes (avsep data synth) whose crops are averaged."),
    trunk: str = typer.Option("visual-trunk", "--trunk", help="Shipped visual-trunk weights, or separator weights (name or file) whose own trunk is used."),
    name: Optional[str] = typer.Option(None, "--output", "-o", help="Registry name, file NAME.safetensors (default: prototypes-TRUNK)."),
    split: str = typer.Option("train", "--split", help="Corpus split the crops come from."),
    per_class: int = typer.Option(256, "--per-class", callback=common.bounded(1), help="At most this many crops per class (a seeded draw)."),
    view: list[str] = typer.Option([], "--view", help="Trunk views to store (repeatable; default for visual-trunk weights: resnet18-224, resnet18-dilated-224, resnet18-128, i.e. AVPC, Sound-of-Pixels and IAL-CMS with its mlp head; IAL-CMS with its DeepLabv3+ head: resnet18-levels-224)."),
    seed: int = typer.Option(0, "--seed", callback=common.bounded(0, common.SEED_MAX), help="Seed of the draw of crops."),
    info_json: Optional[Path] = typer.Option(None, "--info", help="JSON merged into the entry (corpus recipe, notes)."),
) -> None:
    """Build the per-class visual prototypes (mean trunk features of the training crops) that separation
    by instrument name uses, and record them in the manifest."""
    import time

    from avsep_cli import prototypes as P
    from avsep_cli.layout import open_corpus

    extra = _read_info(info_json)
    corpus = open_corpus(root)
    source = P.trunk_source(trunk, view or None)
    name = name or f"prototypes-{Path(source.name).stem}"
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with common.progress() as bar:
        task = bar.add_task("crops", total=None)
        tensors, meta = P.build(root, source, split=split, per_class=per_class, seed=seed,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    cpu, wall = (time.process_time() - cpu0) / 60, (time.perf_counter() - wall0) / 60
    recipe = corpus.recipe or {}
    command = (f"avsep weights prototypes --root {root} --trunk {trunk} -o {name} --split {split} --per-class {per_class} "
               f"--seed {seed}" + "".join(f" --view {v}" for v in view))
    info = {"corpus": {k: recipe[k] for k in ("size", "seed") if k in recipe},
            "build": {"command": command, "cpu_minutes": round(cpu, 2), "wall_minutes": round(wall, 2)}, **extra}
    e = P.export(tensors, meta, name, extra=info)
    from avsep_cli import registry

    path = registry.weights_dir() / e["file"]
    counts = e["crops_per_class"].values()
    _console().print(f"{path}  {path.stat().st_size / 1e6:.2f} MB  {len(e['classes'])} classes, {min(counts)}-{max(counts)} "
                     f"crops each, views {', '.join(e['views'])}  sha256 {e['sha256'][:12]}  {cpu:.1f} CPU-min",
                     highlight=False)
