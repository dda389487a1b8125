"""The `avsep` command-line interface: one Typer app, one module per subcommand.

The CLI only parses arguments, calls the library and writes results; all work lives in the library
modules. `main()` is the console-script entry point and owns the exit-code contract: 0 ok, 2 bad input
or usage (one line on stderr), 1 internal error.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional

import typer

from avsep_cli import __version__
from avsep_cli.cli import common, data, eval as eval_cmd, info, separate, train, weights
from avsep_cli.errors import AvsepError

app = typer.Typer(
    name="avsep",
    help="Separate the sound of each visible instrument in a video (AVPC, IAL-CMS, Sound-of-Pixels).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"avsep {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-v info, -vv debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors; no progress bars."),
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    common.setup_logging(verbose, quiet)


app.command("separate", help=separate.__doc__.split("\n\n")[0])(separate.separate)
app.command("train", help=train.__doc__.split("\n\n")[0])(train.train)
app.command("eval", help=eval_cmd.__doc__.split("\n\n")[0])(eval_cmd.eval_)
app.command("info", help=info.__doc__.split("\n\n")[0])(info.info)
app.add_typer(data.app, name="data")
app.add_typer(weights.app, name="weights")


def main(argv: Optional[list[str]] = None) -> int:
    """Run the CLI and return its exit code (never raises, never prints a traceback unless -vv)."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        app(args=args, prog_name="avsep")  # standalone mode: Typer prints usage errors and exits 2
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except AvsepError as e:
        print(f"avsep: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("avsep: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: exit 1, one line unless -vv
        if common.verbosity() >= 2:
            logging.getLogger("avsep").exception("internal error")
        print(f"avsep: internal error: {type(e).__name__}: {e} (run with -vv for the traceback)", file=sys.stderr)
        return 1
