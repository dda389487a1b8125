"""Separate the sound of each visible instrument in a video into its own WAV file.

`avsep separate VIDEO -o DIR` decodes the video, finds and tracks the instruments, runs the chosen
method over the audio guided by each instrument's crops and writes one WAV per instrument plus a
manifest. The detection/separation pipeline arrives with issue 8; until then this command checks its
input and output exactly as it will and then says what is missing.
"""

from __future__ import annotations

from pathlib import Path

import typer

from avsep_cli import fsio, media
from avsep_cli.cli import common


def separate(
    video: Path = typer.Argument(..., help="Input video (any container FFmpeg reads)."),
    output: Path = typer.Option(Path("stems"), "--output", "-o", help="Output folder."),
    method: str = typer.Option("avpc", "--method", "-m", help="avpc, ialcms or sop."),
    force: bool = common.ForceOption,
    device: str = common.DeviceOption,
) -> None:
    info = media.probe(video)
    media.require(info, audio=True, video=True, min_duration=1.0)
    common.resolve_device(device)
    out = fsio.prepare_output_dir(output)
    fsio.refuse_existing([out / "manifest.json"], force)
    raise common.not_yet(f"separation with --method {method}", 8, "detection and the separate pipeline")
