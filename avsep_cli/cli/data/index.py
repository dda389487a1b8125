"""Decode a corpus once into the cache training reads (audio, frames, trunk features).

Arrives with issue 5.
"""

from __future__ import annotations

from pathlib import Path

import typer

from avsep_cli.cli import common


def index(root: Path = typer.Argument(..., help="Corpus root.")) -> None:
    raise common.not_yet("avsep data index", 5, "datasets, mixing and the shared training core")
