"""List, describe and verify the model weights shipped in `weights/`.

The weights registry and the shipped weights arrive with issue 9.
"""

from __future__ import annotations

import typer

from avsep_cli.cli import common

app = typer.Typer(help=__doc__.split("\n\n")[0], no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """List the shipped weights."""
    raise common.not_yet("avsep weights list", 9, "shipped weights and the results table")


@app.command("info")
def info(name: str = typer.Argument(..., help="Weight name.")) -> None:
    """Show one weight file's manifest entry."""
    raise common.not_yet("avsep weights info", 9, "shipped weights and the results table")


@app.command("verify")
def verify() -> None:
    """Recompute every shipped weight's sha256 and fail on a mismatch."""
    raise common.not_yet("avsep weights verify", 9, "shipped weights and the results table")
