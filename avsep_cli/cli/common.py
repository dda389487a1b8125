"""What every subcommand shares: logging set-up, device choice, progress bars and common options.

Subcommand modules import their option definitions from here so that `--device`, `--force` and the
like read and behave the same everywhere, and their numeric options' range checks (`bounded`), so that
every out-of-range value is refused at parse time in the same one line.
"""

from __future__ import annotations

import logging
import math
from enum import Enum
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


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


class Masks(str, Enum):
    own = "own"
    joint = "joint"


MASKS_HELP = ("own: each player's mask as its method gives it (the papers; AVPC and Sound-of-Pixels threshold "
              "theirs at 0.5), or joint: the soft masks of the players heard together shared out by the Wiener "
              "rule, so the stems add up to the mixture (not in the papers; README, Joint masks).")

PRECISION_HELP = ("fp32 (default), or bf16: the networks run under bfloat16 autocast, the signal path (STFT, "
                  "masks, iSTFT) in float32; faster on CPUs with AVX512-BF16/AMX (see README, Inference precision).")


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
    """A rich progress bar on stderr, silent with -q and when stderr is not a terminal (there a transient bar
    leaves only a blank line, which would come before an error's one line)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=transient,
        disable=verbosity() < 0 or not stderr.is_terminal,
    )


def optional_path(value: Optional[str]):
    from pathlib import Path

    return Path(value) if value else None


# --- numeric option ranges ---------------------------------------------------------------------------

SEED_MAX = 2**32 - 1  # np.random.seed takes 32 bits; numpy's default_rng refuses negative seeds


class OptionValueError(typer.BadParameter):
    """An option value outside its range. The message is the whole error (`--conf 2: expected ...`):
    click's "Invalid value for '--conf':" prefix would only repeat the option name."""

    def format_message(self) -> str:
        return self.message


def bounded(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
            multiple_of: int | None = None):
    """A Typer option callback refusing, at parse time, a value that is not finite, not within lo..hi
    (an open end excludes its bound; None: unbounded) or not a multiple of `multiple_of`. A value of
    None (an optional option not given) passes. click's FloatRange lets nan through, hence this."""

    def check(ctx, param, value):  # untyped: Typer passes (context, parameter, value) by position
        if value is None:
            return value
        ok = ((isinstance(value, int) or math.isfinite(value))  # isfinite overflows on ints beyond floats
              and (lo is None or (value > lo if lo_open else value >= lo))
              and (hi is None or (value < hi if hi_open else value <= hi))
              and (multiple_of is None or value % multiple_of == 0))
        if not ok:
            noun = "an integer" if isinstance(value, int) else "a number"
            if multiple_of is not None:
                noun = f"a multiple of {multiple_of}"
            raise OptionValueError(f"{option_name(param)} {_num(value)}: expected {noun} "
                                   f"{_interval(lo, hi, lo_open, hi_open)}")
        return value

    return check


def samples_or_seconds(min_seconds: float, max_seconds: float):
    """A Typer callback for a duration given as a sample count at the models' rate ('65535') or in seconds
    ('10s'): finite and within min_seconds..max_seconds. The text itself is passed on unchanged."""

    def check(ctx, param, value):
        if value is None:
            return value
        from avsep_cli.dsp import SAMPLE_RATE as rate

        lo, hi = int(math.ceil(min_seconds * rate)), int(max_seconds * rate)
        text = value.strip().lower()
        try:
            samples = float(text[:-1]) * rate if text.endswith("s") else int(text)
        except ValueError:
            samples = None
        if samples is None or not math.isfinite(samples) or not lo <= round(samples) <= hi:
            raise OptionValueError(f"{option_name(param)} {value}: expected a sample count ({lo} to {hi}) "
                                   f"or seconds ({_num(min_seconds)}s to {_num(max_seconds)}s)")
        return value

    return check


def option_name(param) -> str:
    """The name a user knows a click parameter by: its first long option (`--detect-fps`)."""
    opts = list(getattr(param, "opts", None) or [])
    return next((o for o in opts if o.startswith("--")), opts[0] if opts else str(getattr(param, "name", "value")))


def _interval(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_num(hi)}"
    return "(finite)"


def _num(x) -> str:
    """2.0 -> '2', 0.25 -> '0.25', nan -> 'nan', 4294967295 -> '4294967295'."""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x) if isinstance(x, int) else f"{x:g}"
