"""The `avsep` command-line interface: one Typer app, one module per subcommand.

The CLI only parses arguments, calls the library and writes results; all work lives in the library
modules. `main()` is the console-script entry point and owns the exit-code contract: 0 ok, 2 bad input
or usage (one line on stderr), 1 internal error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Optional

import typer

from avsep_cli import __version__
from avsep_cli.cli import common, data, eval as eval_cmd, info, separate, train, weights
from avsep_cli.errors import AvsepError, stopped

try:  # newer Typer releases ship their own copy of click as typer._click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # older ones run on click itself
    from click.exceptions import ClickException, UsageError

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
    command = typer.main.get_command(app)
    try:
        # Not click's standalone mode: it prints usage errors as a boxed panel and turns Ctrl-C into a silent
        # exit 130; here each outcome is the one line of the contract.
        with command.make_context("avsep", args) as ctx:
            command.invoke(ctx)
        return 0
    except typer.Exit as e:  # --help, --version, or a command's own typer.Exit(code)
        return e.exit_code
    except UsageError as e:
        return _usage_error(e, command, args)
    except ClickException as e:  # not a usage error (e.g. a typer.FileText that cannot be opened)
        print(f"avsep: error: {' '.join(e.format_message().split())}", file=sys.stderr)
        return e.exit_code
    except typer.Abort:  # click's stand-in for an interrupted prompt
        return stopped(KeyboardInterrupt())
    except BrokenPipeError as e:
        if not _stdout_gone():  # another pipe (e.g. to FFmpeg) broke: a real error
            return _internal_error(e)
        # `avsep ... | head`: the reader of our output is gone, so say nothing more (as click does)
        with contextlib.suppress(OSError, ValueError):  # and no flush error at exit either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except AvsepError as e:
        print(f"avsep: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM as errors.Terminated (see avsep_cli.__main__)
        return stopped(e)
    except Exception as e:  # noqa: BLE001 - the last line of defence: exit 1, one line unless -vv
        return _internal_error(e)


def _internal_error(e: Exception) -> int:
    if common.verbosity() >= 2:
        logging.getLogger("avsep").exception("internal error")
    print(f"avsep: internal error: {type(e).__name__}: {e} (run with -vv for the traceback)", file=sys.stderr)
    return 1


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll reports POLLERR on such a write end)."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no real stdout (captured)
        return False


def _usage_error(e: UsageError, command, args: list[str]) -> int:
    """A usage error as one line naming the subcommand, e.g. `avsep: error: separate: missing argument
    'VIDEO' (see avsep separate --help)`; exit code 2."""
    if type(e).__name__ == "NoArgsIsHelpError":  # `avsep` or `avsep data` alone: the help is the answer
        text = e.format_message().strip()  # empty where Typer's rich help has been printed already
        if text:
            print(text)
        return 2
    path = e.ctx.command_path if e.ctx is not None else _command_path(command, args)
    where = path.partition(" ")[2]
    param = getattr(e, "param", None)
    if type(e).__name__ == "MissingParameter" and getattr(param, "param_type_name", "") == "argument":
        msg = f"missing argument '{param.name.upper()}'"  # as the docs write it: avsep separate VIDEO
    else:
        msg = " ".join(e.format_message().split()).rstrip(".")
        msg = msg[:1].lower() + msg[1:]
    print(f"avsep: error: {where + ': ' if where else ''}{msg} (see {path} --help)", file=sys.stderr)
    return 2


def _command_path(command, args: list[str]) -> str:
    """`avsep data synth` for ['-v', 'data', 'synth', '-o', ...]: for parser errors that come without a
    context. Only the root group's flags (-v, -q) can come before a subcommand name."""
    path = ["avsep"]
    for a in args:
        sub = getattr(command, "commands", {}).get(a) if not a.startswith("-") else None
        if sub is None:
            if a.startswith("-") and hasattr(command, "commands"):
                continue
            break
        path.append(a)
        command = sub
    return " ".join(path)
