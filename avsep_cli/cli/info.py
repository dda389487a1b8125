"""Print the parameter count of each part of a method's model, without loading any weights.

`avsep info --method avpc|sop|ialcms [--preset paper|cpu] [--json]`: frame net (frozen trunk and trained
head), sound net, total; for IAL-CMS the visual encoder (trunk, head), audio encoder, interaction module,
mask decoder, the separator's total and the IAL critic trained beside it. The models are built on
PyTorch's meta device, so nothing is allocated or read.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.console import Console
from rich.table import Table

from avsep_cli.errors import AvsepError


def info(
    method: str = typer.Option(..., "--method", "-m", help="avpc, sop or ialcms."),
    preset: str = typer.Option("paper", "--preset", help="paper or cpu."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    if preset not in ("paper", "cpu"):
        raise AvsepError(f"--preset {preset}: expected paper or cpu")
    if method == "avpc":
        from avsep_cli.models.avpc import AVPCConfig, parameter_counts

        cfg = AVPCConfig.preset(preset)
    elif method == "sop":
        from avsep_cli.models.sop import SoPConfig, parameter_counts

        cfg = SoPConfig.preset(preset)
    elif method == "ialcms":
        from functools import partial

        from avsep_cli.models.ialcms import IALCMSConfig
        from avsep_cli.models.ialcms import parameter_counts as ial_counts

        cfg = IALCMSConfig.preset(preset)
        parameter_counts = partial(ial_counts, critic_preset=preset)
    else:
        raise AvsepError(f"unknown --method {method}: expected avpc, sop or ialcms")
    counts = parameter_counts(cfg)
    if as_json:
        typer.echo(json.dumps({"method": method, "preset": preset, "config": asdict(cfg), "parameters": counts}, indent=1))
        return
    t = Table(title=f"{method} ({preset} preset): parameters")
    t.add_column("part")
    t.add_column("parameters", justify="right")
    for part, n in counts.items():
        t.add_row(part, f"{n:,}")
    Console().print(t)
