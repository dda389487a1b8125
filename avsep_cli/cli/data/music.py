"""Organise downloaded MUSIC videos into the corpus layout.

Arrives with issue 5.
"""

from __future__ import annotations

from pathlib import Path

import typer

from avsep_cli.cli import common


def music(output: Path = typer.Option(..., "--output", "-o", help="Output root.")) -> None:
    raise common.not_yet("avsep data music", 5, "datasets, mixing and the shared training core")
