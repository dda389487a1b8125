"""Generate the offline audio-visual instrument corpus in the layout of the MUSIC dataset.

Arrives with issue 3.
"""

from __future__ import annotations

from pathlib import Path

import typer

from avsep_cli.cli import common


def synth(output: Path = typer.Option(..., "--output", "-o", help="Corpus root.")) -> None:
    raise common.not_yet("avsep data synth", 3, "offline audio-visual instrument corpus")
