"""Decode a video into what the models see: mono 11025 Hz audio (WAV) and frames at a chosen rate.

To be written with the media module.
"""
from __future__ import annotations

from pathlib import Path

import typer

from avsep_cli.cli import common


def extract(video: Path = typer.Argument(..., help="Input video.")) -> None:
    raise common.not_yet("avsep data extract", 2, "foundation")
