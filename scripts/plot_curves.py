"""All learning curves in one PNG: validation SDR against CPU-minutes and against training mixtures seen,
one line per run folder (`avsep train --run DIR`), read from each run's `metrics.jsonl` and `config.json`.

A run with an RCoP stage (`DIR/rcop`, written by `avsep train --rcop`) is drawn from the end of that
stage: its CPU-minutes start where stage 1's ended (stage 1 has no separation, so no validation SDR).

    python scripts/plot_curves.py avpc=~/avsep-runs/r18/avpc sop=~/avsep-runs/r18/sop -o curves.png \
        [--table]

`LABEL=weights:NAME` draws shipped weights' whole lineage instead of a run folder: the segments it was
trained in (`avsep train --init-from` of the previous segment's weights, recorded by scripts/ship_run.py),
each from its manifest entry's curve, offset by the CPU-minutes and mixtures of the segments before it; a
segment shipped before the manifest kept curves is drawn as one point, its best epoch.

`--table` also prints, per run, the best validation SDR, the CPU-minutes, steps and mixtures seen at its
end (the figures the README's training tables quote).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_run(folder: Path) -> dict:
    """A run folder -> {"cpu_min": [...], "seen": [...], "val_sdr": [...], "end": {...}, "epochs": [...],
    "stage1": {...} or None}: one point per validated epoch; `end` holds the totals at the run's last epoch
    (RCoP stage included); `epochs` the run's epoch rows, `stage1` the RCoP stage's last one."""
    rows = _epochs(folder)
    if not rows:
        raise ValueError(f"{folder}: no epochs in metrics.jsonl")
    batch = json.loads((folder / "config.json").read_text())["batch_size"]
    stage = folder / "rcop"
    offset, pre_steps, stage1 = 0.0, 0, None
    if (stage / "metrics.jsonl").exists():
        pre = _epochs(stage)
        if pre:
            stage1 = pre[-1]
            offset, pre_steps = stage1["cpu_min"], stage1["step"]
    val = [r for r in rows if r.get("val_sdr") is not None]
    last = rows[-1]
    return {
        "cpu_min": [offset + r["cpu_min"] for r in val],
        "seen": [r["step"] * batch for r in val],
        "val_sdr": [r["val_sdr"] for r in val],
        "end": {"cpu_min": round(offset + last["cpu_min"], 1), "steps": last["step"], "pre_steps": pre_steps,
                "seen": last["step"] * batch, "best_val_sdr": max((r["val_sdr"] for r in val), default=None)},
        "epochs": rows, "stage1": stage1,
    }


def read_lineage(name: str, folder: Path | None = None) -> dict:
    """Shipped weights NAME and their parents (`training.init_from`, by name) -> read_run's curve and `end`,
    the segments laid end to end on CPU-minutes and mixtures seen."""
    from avsep_cli import registry

    chain, seen_names = [], set()
    while name and name not in seen_names:
        seen_names.add(name)
        t = registry.entry(name, folder).get("training", {})
        missing = [k for k in ("cpu_minutes", "steps", "samples_seen", "batch_size", "best_val_sdr") if k not in t]
        if missing:
            raise ValueError(f"weights {name!r}: no {', '.join(missing)} in the manifest (no curve to draw)")
        chain.insert(0, t)
        name = t.get("init_from", {}).get("name")
    out = {"cpu_min": [], "seen": [], "val_sdr": []}
    cpu0 = seen0 = steps0 = 0
    for t in chain:
        points = t.get("curve") or [[t.get("cpu_minutes_at_checkpoint", t.get("cpu_minutes_at_best")),
                                     t.get("checkpoint_step", t.get("best_step")) * t["batch_size"], t["best_val_sdr"]]]
        for c, n, v in points:
            out["cpu_min"].append(round(cpu0 + c, 2))
            out["seen"].append(seen0 + n)
            out["val_sdr"].append(v)
        cpu0, seen0, steps0 = cpu0 + t["cpu_minutes"], seen0 + t["samples_seen"], steps0 + t["steps"]
    out["end"] = {"cpu_min": round(cpu0, 1), "steps": steps0, "pre_steps": 0, "seen": seen0,
                  "best_val_sdr": max(out["val_sdr"], default=None)}
    return out


def _epochs(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    if not path.exists():
        raise ValueError(f"{folder}: no metrics.jsonl (not a run folder)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # a resumed run may repeat an epoch it had logged before it was stopped: keep the last of each
    last = {r["epoch"]: r for r in rows if r.get("type") == "epoch"}
    return [last[k] for k in sorted(last)]


def plot(runs: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for label, r in runs.items():
        a.plot(r["cpu_min"], r["val_sdr"], ".-", label=label)
        b.plot(r["seen"], r["val_sdr"], ".-", label=label)
    a.set_xlabel("CPU-minutes (all threads, resumes and RCoP stage counted)")
    b.set_xlabel("training mixtures seen")
    a.set_ylabel("validation SDR (dB)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    a.legend(fontsize=8)
    fig.tight_layout()
    tmp = out.with_name(out.name + ".part")
    fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR (or RUN_DIR: its folder name is the label), or "
                    "LABEL=weights:NAME (shipped weights' lineage)")
    ap.add_argument("-o", "--out", required=True, help="PNG to write")
    ap.add_argument("--table", action="store_true", help="print the totals of every run")
    args = ap.parse_args(argv)
    from avsep_cli.errors import AvsepError

    runs = {}
    try:
        for spec in args.runs:
            label, _, path = spec.rpartition("=")
            if path.startswith("weights:"):
                runs[label or path[8:]] = read_lineage(path[8:])
                continue
            folder = Path(path).expanduser()
            runs[label or folder.name] = read_run(folder)
    except (ValueError, OSError, KeyError, json.JSONDecodeError, AvsepError) as e:
        print(f"plot_curves: {e}", file=sys.stderr)
        return 2
    plot(runs, Path(args.out))
    if args.table:
        print("| run | best val SDR | CPU-min | steps | mixtures seen |")
        print("|---|---:|---:|---:|---:|")
        for label, r in runs.items():
            e = r["end"]
            best = "-" if e["best_val_sdr"] is None else f"{e['best_val_sdr']:.2f}"
            steps = f"{e['pre_steps']:,} + {e['steps']:,}" if e["pre_steps"] else f"{e['steps']:,}"
            print(f"| {label} | {best} | {e['cpu_min']} | {steps} | {e['seen']:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
