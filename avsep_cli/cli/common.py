"""What every subcommand shares: logging set-up, device choice, progress bars and common options.

Subcommand modules import their option definitions from here so that `--device`, `--force` and the
like read and behave the same everywhere.
"""

from __future__ import annotations

import logging
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from avsep_cli.errors import AvsepError

stderr = Console(stderr=True)
log = logging.getLogger("avsep")

_state = {"verbosity": 0}

DeviceOption = typer.Option("auto", "--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")
ForceOption = typer.Option(False, "--force", help="Overwrite existing outputs.")


def setup_logging(verbose: int, quiet: bool) -> None:
    """-v: INFO (stage timings), -vv: DEBUG; -q: only errors; default: warnings."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    _state["verbosity"] = -1 if quiet else verbose
    handler = RichHandler(console=stderr, show_time=False, show_path=False, markup=False)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    log.setLevel(level)


def verbosity() -> int:
    return _state["verbosity"]


def resolve_device(name: str):
    """Map --device to a torch.device, refusing CUDA where there is none."""
    import torch

    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AvsepError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise AvsepError(f"--device {name}: not a valid CUDA device name") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise AvsepError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise AvsepError(f"--device {name}: expected auto, cpu, cuda or cuda:N")


def progress(transient: bool = True) -> Progress:
    """A rich progress bar on stderr, silent with -q."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=transient,
        disable=verbosity() < 0,
    )


def optional_path(value: Optional[str]):
    from pathlib import Path

    return Path(value) if value else None
