"""Score separation methods on fixed, seeded test mixtures with BSS Eval (SDR, SIR, SAR).

`avsep eval --mix 2 --method NAME --data ROOT` builds N-source test mixtures from solo clips of different
classes (same seed, same mixtures), also scores the corpus' duet clips against their stems, and prints
mean, median and 95% CI per metric and per class. `--method all` compares every registered method in one
run. The protocol is written down in docs/evaluation.md. `--protocol sop|avpc` scores instead as the
Sound-of-Pixels or AVPC code does (`avsep_cli.protocols`), for numbers beside their published tables.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from avsep_cli import evaluate
from avsep_cli.cli import common
from avsep_cli.errors import AvsepError
from avsep_cli.methods import available, get_method, with_masks


class Protocol(str, Enum):
    avsep = "avsep"
    sop = "sop"
    avpc = "avpc"


def eval_(
    method: str = typer.Option(..., "--method", "-m", help="Method names (comma-separated), or 'all': the reference methods and every method with shipped weights."),
    mix: int = typer.Option(2, "--mix", callback=common.bounded(2), help="Sources per test mixture (2 or 3; at most the corpus' number of classes)."),
    data: Path = typer.Option(..., "--data", help="Corpus or MUSIC root."),
    split: str = typer.Option("test", "--split", help="Split to score (train, val or test)."),
    num: int = typer.Option(200, "--num", callback=common.bounded(1), help="Number of synthetic test mixtures."),
    seed: int = typer.Option(0, "--seed", callback=common.bounded(0, common.SEED_MAX), help="Seed of the test mixtures."),
    window: str = typer.Option("65535", "--window", callback=common.samples_or_seconds(1, 3600), help="Window: samples (65535) or seconds (10s), 1 s to 1 hour."),
    duets: bool = typer.Option(True, "--duets/--no-duets", help="Also score the corpus' duet clips."),
    protocol: Protocol = typer.Option(Protocol.avsep, "--protocol", help="avsep (ours), or sop / avpc: score exactly as Sound-of-Pixels' / AVPC's calc_metrics (their pairing, windows, 65,280 scored samples, averaging); see docs/evaluation.md."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write every figure as JSON."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write every per-source figure as CSV."),
    md_path: Optional[Path] = typer.Option(None, "--markdown", help="Write the summary as a Markdown table (the README's results)."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Folder for spectrogram PNGs."),
    plots_num: int = typer.Option(4, "--plots-num", callback=common.bounded(0), help="How many mixtures to plot per method."),
    batch_size: int = typer.Option(8, "--batch-size", callback=common.bounded(1), help="Mixtures per batch."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Weights of a learned method: a shipped name or a file (default: its shipped weights)."),
    precision: common.Precision = typer.Option(common.Precision.fp32, "--precision", help=common.PRECISION_HELP + " Reference methods run no network."),
    cycles: Optional[int] = typer.Option(None, "--cycles", callback=common.bounded(0), help="AVPC: predictive-coding cycles at test time (default: as trained)."),
    masks: common.Masks = typer.Option(common.Masks.own, "--masks", help=common.MASKS_HELP + " Default own, for figures beside the papers' (avsep separate's default is joint); joint rows are named NAME+joint."),
    force: bool = common.ForceOption,
    device: str = common.DeviceOption,
) -> None:
    dev = common.resolve_device(device)
    if method == "all" and weights is not None:
        raise AvsepError("--method all scores the shipped weights; --weights goes with one learned method")
    names = available(shipped_only=True) if method == "all" else [m.strip() for m in method.split(",")]
    methods = [get_method(n, weights=weights, device=dev, precision=precision.value) for n in names]  # unknown names fail here, before any work
    if cycles is not None:
        if cycles < 0:
            raise AvsepError("--cycles must be 0 or more")
        for m in methods:
            if not hasattr(getattr(m, "model", None), "test_cycles"):
                raise AvsepError(f"--cycles applies to AVPC only, not --method {m.name}")
            m.model.test_cycles = cycles
            m.name = f"{m.name}-c{cycles}"
    methods = [with_masks(m, masks.value) for m in methods]
    win = evaluate.parse_window(window)
    if num < 1 or batch_size < 1:
        raise AvsepError("--num and --batch-size must be at least 1")
    outputs = [p for p in (json_path, csv_path, md_path) if p is not None]
    for p in outputs:
        from avsep_cli.fsio import prepare_output_dir, refuse_existing

        prepare_output_dir(p.parent if str(p.parent) else Path("."))
        refuse_existing([p], force)
    if protocol != Protocol.avsep:
        return _reference_protocol(protocol.value, methods, data=data, mix=mix, split=split, num=num, seed=seed,
                                   win=win, json_path=json_path, csv_path=csv_path, md_path=md_path, plots=plots,
                                   batch_size=batch_size, dev=dev, precision=precision.value)
    items = evaluate.build_test_set(data, mix=mix, split=split, num=num, seed=seed, window=win, duets=duets)

    reports = []
    with common.progress() as bar:
        for m in methods:
            task = bar.add_task(f"eval {m.name}", total=len(items))
            report, kept = evaluate.evaluate(m, items, window=win, batch_size=batch_size, device=dev,
                                             on_batch=lambda n, t=task: bar.advance(t, n), keep=plots_num if plots else 0)
            reports.append(report)
            if plots:
                evaluate.write_plots(plots, m.name, kept)

    setup = {"data": str(data), "split": split, "mix": mix, "num": num, "seed": seed, "window": win,
             "duets": duets, "precision": precision.value, "masks": masks.value, "items": [i.key for i in items]}
    _print_tables(reports, setup)
    if json_path:
        evaluate.write_json(json_path, evaluate.report_json(reports, setup))
    if csv_path:
        evaluate.write_csv(csv_path, reports)
    if md_path:
        evaluate.write_text(md_path, evaluate.report_markdown(reports, setup))


def _fmt(s: dict) -> str:
    if not s["n"]:
        return "-"
    return f"{s['mean']:.2f} ±{(s['ci_high'] - s['ci_low']) / 2:.2f}"


def _print_tables(reports: list, setup: dict) -> None:
    from rich.console import Console

    out = Console(width=max(Console().width, 132))
    for kind, title in (("mix", f"{setup['mix']}-mix test mixtures"), ("duet", "corpus duet clips")):
        if not any(s.kind == kind for r in reports for s in r.scores):
            continue
        t = Table(title=f"{title} ({setup['split']} split, seed {setup['seed']}): mean ±95% CI half-width")
        for col in ("method", "params", "n", "SDR", "SDR med", "SIR", "SAR", "SDRi", "skipped", "s / 6-s clip"):
            t.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
        for r in reports:
            sm = r.summary(kind)
            t.add_row(r.method, f"{r.params / 1e6:.2f} M" if r.params else "-", str(sm["sdr"]["n"]), _fmt(sm["sdr"]), f"{sm['sdr']['median']:.2f}" if sm["sdr"]["n"] else "-",
                      _fmt(sm["sir"]), _fmt(sm["sar"]), _fmt(sm["sdri"]),
                      f"{r.skipped_clips} clips / {r.skipped_sources} src", f"{r.seconds_per_clip:.3f}")
        out.print(t)
    per_class = {r.method: r.per_class("mix") for r in reports}
    classes = sorted({c for pc in per_class.values() for c in pc})
    if classes:
        t = Table(title="mean SDR per class (test mixtures)")
        t.add_column("class")
        for r in reports:
            t.add_column(r.method, justify="right")
        for c in classes:
            t.add_row(c, *[(f"{per_class[r.method][c]['sdr_mean']:.2f}" if per_class[r.method].get(c, {}).get("n") else "-")
                           for r in reports])
        out.print(t)


def _reference_protocol(name: str, methods: list, *, data: Path, mix: int, split: str, num: int, seed: int, win: int,
                        json_path, csv_path, md_path, plots, batch_size: int, dev, precision: str = "fp32") -> None:
    """`--protocol sop|avpc`: their test mixtures and their scoring (avsep_cli.protocols); synthetic
    mixtures only (the references score no duets)."""
    import csv

    from avsep_cli import protocols
    from avsep_cli.fsio import atomic_path

    if win != protocols.WINDOW:
        raise AvsepError(f"--protocol {name} uses the references' window of {protocols.WINDOW} samples; drop --window")
    if plots is not None:
        raise AvsepError(f"--plots goes with --protocol avsep, not --protocol {name}")
    items = protocols.build_test_set(data, name, mix=mix, split=split, num=num, seed=seed)
    reports = []
    with common.progress() as bar:
        for m in methods:
            task = bar.add_task(f"eval {m.name} ({name} protocol)", total=len(items))
            reports.append(protocols.evaluate(m, items, name, batch_size=batch_size, device=dev,
                                              on_batch=lambda n, t=task: bar.advance(t, n)))
    setup = {"data": str(data), "split": split, "mix": mix, "num": num, "seed": seed, "protocol": name,
             "precision": precision, "items": [i.key for i in items]}
    rows = [(r.method, r.summary()) for r in reports]
    t = Table(title=f"{mix}-mix, {name} protocol ({split} split, {len(items)} mixtures, seed {seed}): "
                    "per-mixture means averaged per batch, then over batches")
    for col in ("method", "scored", "skipped", "SDR_mix", "SDR", "SIR", "SAR", "SDRi", "SDR (plain mean)"):
        t.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    f = lambda x: "-" if x != x else f"{x:.2f}"  # noqa: E731  (NaN: nothing scored)
    for method, sm in rows:
        t.add_row(method, str(sm["valid"]), str(sm["skipped"]), f(sm["sdr_mixture"]), f(sm["sdr"]), f(sm["sir"]),
                  f(sm["sar"]), f(sm["sdri"]), f(sm["plain"]["sdr"]))
    from rich.console import Console

    Console(width=max(Console().width, 132)).print(t)
    if json_path:
        evaluate.write_json(json_path, protocols.report_json(reports, setup))
    if csv_path:
        fields = ["method"] + list(protocols.MixtureScore.__dataclass_fields__)
        with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            for r in reports:
                for s in r.scores:
                    w.writerow({"method": r.method, **s.__dict__})
    if md_path:
        lines = [f"<!-- avsep eval --protocol {name} --mix {mix} --num {num} --seed {seed}: {split} split, "
                 f"{len(items)} mixtures -->", "| method | SDR_mix | SDR | SIR | SAR | SDRi | scored / skipped |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for method, sm in rows:
            lines.append(f"| {method} | {f(sm['sdr_mixture'])} | {f(sm['sdr'])} | {f(sm['sir'])} | {f(sm['sar'])} "
                         f"| {f(sm['sdri'])} | {sm['valid']} / {sm['skipped']} |")
        evaluate.write_text(md_path, "\n".join(lines) + "\n")
