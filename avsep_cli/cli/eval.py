"""Score a separation method on fixed, seeded test mixtures with BSS Eval (SDR, SIR, SAR).

Arrives with issue 4.
"""

from __future__ import annotations

from typing import Optional

import typer

from avsep_cli.cli import common


def eval_(
    method: str = typer.Option(..., "--method", "-m", help="mixture, oracle-ibm, oracle-irm, ... or all."),
    mix: int = typer.Option(2, "--mix", help="Sources per test mixture (2 or 3)."),
    data: Optional[str] = typer.Option(None, "--data", help="Corpus or MUSIC root."),
    device: str = common.DeviceOption,
) -> None:
    raise common.not_yet("avsep eval", 4, "evaluation metrics and avsep eval")
