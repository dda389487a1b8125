"""Ship a training run's checkpoint as weights: `weights/NAME.safetensors` and its manifest entry, with the
corpus recipe and the run's figures (steps, mixtures seen, CPU- and wall-minutes, the best validation SDR
and where it came) read from the run folder, so that no number in the manifest is typed by hand.

    python scripts/ship_run.py ~/avsep-runs/r18/avpc --name avpc-broad-e84 --method avpc \
        --trunk visual-trunk-broad-ft --command "scripts/campaign.sh avpc" [--default] [--note TEXT]

RUN is an `avsep train --run` folder (an RCoP run's stage 1 in RUN/rcop is counted); --checkpoint picks
best.pt (default: the epoch with the best validation SDR) or last.pt. --average-from EPOCH ships instead the
mean of the run's kept epoch weights from that epoch on (`RUN/epochs/eNNN.pt`, `avsep train --keep-every`;
stochastic weight averaging), with those of every --also RUN2: runs of the same recipe from the same
weights with other --data-seed, whose steps and CPU-minutes are added to the figures. --trunk leaves the frozen visual
trunk out of the file (it must equal those shipped weights). --weights-dir writes elsewhere than the
package's weights/ (as $AVSEP_WEIGHTS does). The test-split metrics come later, from `avsep eval --json`
through scripts/results_to_manifest.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from plot_curves import read_run  # noqa: E402


def training_info(run: Path, checkpoint_name: str, command: str, note: str | None) -> dict:
    """The manifest's `training` and `corpus` blocks for `run`, from its config.json, metrics.jsonl and its
    corpus."""
    from avsep_cli.layout import open_corpus

    cfg = json.loads((run / "config.json").read_text())
    r = read_run(run)
    rows, totals, pre = r["epochs"], r["end"], r["stage1"]
    key = f"val_{cfg.get('monitor', 'sdr')}"  # what picked best.pt: SDR for separators (the audio tagger: recall)
    val = [x for x in rows if x.get(key) is not None]
    at = max(val, key=lambda x: x[key]) if checkpoint_name == "best.pt" and val else rows[-1]
    offset = pre["cpu_min"] if pre else 0.0
    training = {
        "batch_size": cfg["batch_size"], "preset": cfg.get("preset"), "precision": cfg.get("precision", "fp32"),
        "channels_last": cfg.get("channels_last", False), "mix": cfg.get("mix", 2),
        "steps": totals["steps"], "samples_seen": totals["seen"], "cpu_minutes": totals["cpu_min"],
        "wall_minutes": round((pre.get("wall_min", 0.0) if pre else 0.0) + rows[-1].get("wall_min", 0.0), 1),
        "best_val_sdr": totals["best_val_sdr"], "val_num": cfg.get("val_num"),
        "checkpoint": checkpoint_name, "checkpoint_epoch": at["epoch"] + 1, "checkpoint_step": at["step"],
        "cpu_minutes_at_checkpoint": round(offset + at["cpu_min"], 1), "command": command,
        # the learning curve, one [CPU-minutes, mixtures seen, val SDR] per validated epoch: a later segment's
        # lineage curve (scripts/plot_curves.py LABEL=weights:NAME) outlives the run folder
        "curve": [[round(c, 2), n, v] for c, n, v in zip(r["cpu_min"], r["seen"], r["val_sdr"])],
        **({"rcop_stage": {"cpu_minutes": round(offset, 1), "steps": pre["step"]}} if pre else {}),
        **({} if key == "val_sdr" else {f"best_{key}": max((x[key] for x in val), default=None),
                                         f"curve_{key}": [[x["cpu_min"], x["step"] * cfg["batch_size"], x[key]] for x in val]}),
        **({"note": note} if note else {}),
    }
    own_stage1 = pre and Path(cfg.get("init_from") or "").resolve().parent == (run / "rcop").resolve()
    if own_stage1:  # stage 2 started from this run's own RCoP stage (campaign.sh after an interrupted stage
        # 1): that stage is in the run's figures already (CPU-minutes), not a parent to add again
        training["cpu_minutes_total"] = totals["cpu_min"]
        training["steps_total"] = totals["steps"] + pre["step"]
        training["samples_seen_total"] = totals["seen"] + pre["step"] * cfg["batch_size"]
    elif cfg.get("init_from"):
        training["init_from"] = parent_info(Path(cfg["init_from"]))
        before = training["init_from"].get("cpu_minutes_total")
        if before is not None:  # the whole lineage's compute, segment after segment
            training["cpu_minutes_total"] = round(before + totals["cpu_min"], 1)
            training["steps_total"] = training["init_from"]["steps_total"] + totals["steps"]
            training["samples_seen_total"] = training["init_from"]["samples_seen_total"] + totals["seen"]
    root = Path(cfg.get("root", ""))
    if not (root / "corpus.json").is_file():  # real MUSIC: no recipe to record
        return {"training": training}
    recipe = json.loads((root / "corpus.json").read_text())
    corpus = {k: recipe.get(k) for k in ("version", "size", "seed")}
    corpus["clips"] = len(open_corpus(root).clips())
    corpus["command"] = f"avsep data synth -o corpus --size {recipe.get('size')} --seed {recipe.get('seed')} --workers 2"
    return {"training": training, "corpus": corpus}


def kept_epochs(run: Path, start: int) -> list[Path]:
    """RUN/epochs/eNNN.pt from epoch `start` on, in epoch order."""
    files = sorted((p for p in (run / "epochs").glob("e*.pt") if p.stem[1:].isdigit()), key=lambda p: int(p.stem[1:]))
    files = [p for p in files if int(p.stem[1:]) >= start]
    if not files:
        raise ValueError(f"{run}: no kept epoch weights from epoch {start} on in {run / 'epochs'} "
                         "(avsep train --keep-every)")
    return files


def average_info(info: dict, runs: list[Path], start: int) -> tuple[dict, list[Path]]:
    """The figures of `training_info(runs[0], "last.pt", ...)` for the mean of the kept epochs of `runs`:
    every run's steps, mixtures and CPU-minutes added (runs side by side: the longest wall time), the lineage
    totals redone, and which epochs were averaged."""
    t = info["training"]
    cfgs = [json.loads((r / "config.json").read_text()) for r in runs]
    same = ("method", "model", "options", "init_from", "batch_size", "preset", "mix")
    for r, c in zip(runs[1:], cfgs[1:]):
        bad = [k for k in same if c.get(k) != cfgs[0].get(k)]
        if bad:
            raise ValueError(f"{r} is not the recipe of {runs[0]} ({', '.join(bad)} differ)")
    kept = [kept_epochs(r, start) for r in runs]
    for r in runs[1:]:
        other = read_run(r)
        end = other["end"]
        t["steps"] += end["steps"]
        t["samples_seen"] += end["seen"]
        t["cpu_minutes"] = round(t["cpu_minutes"] + end["cpu_min"], 1)
        t["wall_minutes"] = max(t["wall_minutes"], round(other["epochs"][-1].get("wall_min", 0.0), 1))
        if end["best_val_sdr"] is not None and (t["best_val_sdr"] is None or end["best_val_sdr"] > t["best_val_sdr"]):
            t["best_val_sdr"] = end["best_val_sdr"]
    parent = t.get("init_from", {})
    if parent.get("cpu_minutes_total") is not None:
        t["cpu_minutes_total"] = round(parent["cpu_minutes_total"] + t["cpu_minutes"], 1)
        t["steps_total"] = parent["steps_total"] + t["steps"]
        t["samples_seen_total"] = parent["samples_seen_total"] + t["samples_seen"]
    for k in ("checkpoint_epoch", "checkpoint_step", "cpu_minutes_at_checkpoint"):
        t.pop(k, None)
    t["checkpoint"] = "average"
    files = [f for fs in kept for f in fs]
    t["averaged"] = {"from_epoch": start, "checkpoints": len(files),
                     "runs": [{"data_seed": c.get("data_seed"), "epochs": [int(f.stem[1:]) for f in fs]}
                              for fs, c in zip(kept, cfgs)]}
    return info, files


def parent_info(src: Path) -> dict:
    """What a run continued from (`--init-from`): shipped weights (their manifest entry, so the figures
    accumulate over segments) or another run's checkpoint (its folder's figures)."""
    from avsep_cli import checkpoint, registry

    info = {"path": str(src)}
    if src.suffix == ".safetensors" or not src.exists():  # a shipped file, or a shipped name
        folder = src.parent if src.exists() else None
        e = next((e for e in registry.entries(folder) if e.get("name") == src.stem), None)
        if e is not None:
            t = e.get("training", {})
            info = {"name": e["name"], "sha256": e["sha256"]}  # not the local path: name and hash identify it
            info.update(cpu_minutes_total=t.get("cpu_minutes_total", t.get("cpu_minutes")),
                        steps_total=t.get("steps_total", t.get("steps")),
                        samples_seen_total=t.get("samples_seen_total", t.get("samples_seen")))
            return {k: v for k, v in info.items() if v is not None}
    run = src if src.is_dir() else src.parent
    if (run / "metrics.jsonl").is_file():
        end = read_run(run)["end"]
        info.update(cpu_minutes_total=end["cpu_min"], steps_total=end["steps"], samples_seen_total=end["seen"])
    if src.is_file():
        info["sha256"] = checkpoint.sha256(src)
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="the run folder (avsep train --run)")
    ap.add_argument("--name", required=True, help="registry name: weights/NAME.safetensors")
    ap.add_argument("--method", required=True, help="avpc, avpc-rcop, sop, ialcms or ialcms-supervised")
    ap.add_argument("--command", required=True, help="the command that trained it, recorded as it is")
    ap.add_argument("--checkpoint", default="best.pt", choices=("best.pt", "last.pt"))
    ap.add_argument("--average-from", type=int, metavar="EPOCH",
                    help="ship the mean of RUN/epochs/eNNN.pt from this epoch on (avsep train --keep-every)")
    ap.add_argument("--also", type=Path, action="append", default=[], metavar="RUN2",
                    help="with --average-from: another run of the same recipe whose kept epochs join the mean")
    ap.add_argument("--trunk", help="shipped visual-trunk weights the model's frozen trunk equals (left out)")
    ap.add_argument("--default", action="store_true", help="make it its method's default")
    ap.add_argument("--note", help="free text recorded with the training figures")
    ap.add_argument("--weights-dir", type=Path, help="registry folder (default: the package's weights/)")
    args = ap.parse_args(argv)

    from avsep_cli import registry
    from avsep_cli.errors import AvsepError

    run = args.run.expanduser()
    try:
        if args.also and args.average_from is None:
            raise ValueError("--also joins runs' kept epochs into a mean: give --average-from EPOCH too")
        if args.average_from is None:
            info = training_info(run, args.checkpoint, args.command, args.note)
            e = registry.export(run / args.checkpoint, args.name, args.method, folder=args.weights_dir,
                                default=args.default, extra=info, trunk=args.trunk)
        else:
            from average_weights import average

            from avsep_cli import checkpoint

            info, files = average_info(training_info(run, "last.pt", args.command, args.note),
                                       [run, *(r.expanduser() for r in args.also)], args.average_from)
            with tempfile.TemporaryDirectory() as tmp:
                mean = checkpoint.save(Path(tmp) / "mean.pt", average([str(f) for f in files]))
                e = registry.export(mean, args.name, args.method, folder=args.weights_dir, default=args.default,
                                    extra=info, trunk=args.trunk)
    except (ValueError, OSError, KeyError, json.JSONDecodeError, AvsepError) as err:
        print(f"ship_run: {err}", file=sys.stderr)
        return 2
    t = e["training"]
    print(f"{e['name']}: {e['parameters']:,} parameters, sha256 {e['sha256'][:12]}; {t['steps']:,} steps, "
          f"{t['samples_seen']:,} mixtures, {t['cpu_minutes']} CPU-min, "
          + next((f"best {k[5:].replace('_', ' ')} {v}" for k, v in t.items() if k.startswith("best_val_") and v is not None),
                 "no validation")
          + (f"; with its parents {t['steps_total']:,} steps, {t['cpu_minutes_total']} CPU-min"
             if "cpu_minutes_total" in t else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
