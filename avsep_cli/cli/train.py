"""Train a model (visual trunk, AVPC, Sound-of-Pixels, IAL-CMS or the detector) on a corpus.

The shared trainer arrives with issue 5 and the methods with issues 6-8.
"""

from __future__ import annotations

from typing import Optional

import typer

from avsep_cli.cli import common


def train(
    method: str = typer.Option(..., "--method", "-m", help="tiny, visual-trunk, avpc, sop, ialcms or detector."),
    dataset: str = typer.Option("synth", "--dataset", help="synth (our corpus) or music (the MUSIC dataset)."),
    root: Optional[str] = typer.Option(None, "--root", help="Data root."),
    device: str = common.DeviceOption,
) -> None:
    common.resolve_device(device)
    raise common.not_yet(f"training --method {method}", 5, "datasets, mixing and the shared training core")
