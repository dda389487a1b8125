"""Print the parameter count of each part of a method's model without loading any weights.

Arrives with issue 6 (AVPC, Sound-of-Pixels) and issue 7 (IAL-CMS).
"""

from __future__ import annotations

import typer

from avsep_cli.cli import common


def info(
    method: str = typer.Option(..., "--method", "-m", help="avpc, sop or ialcms."),
    preset: str = typer.Option("paper", "--preset", help="paper or cpu."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    raise common.not_yet(f"avsep info --method {method}", 6, "AVPC (with RCoP) and the Sound-of-Pixels baseline")
