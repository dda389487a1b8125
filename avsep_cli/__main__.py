"""`python -m avsep_cli` and the `avsep` console script.

Signals are set up before anything heavy is imported (torch takes seconds): SIGTERM raises
`Terminated`, a KeyboardInterrupt, so a terminated run cleans up like an interrupted one (temporary
files and staged outputs removed) and says so in one line, and Ctrl-C during start-up is the same one
line instead of a traceback.
"""

import signal
import sys

from avsep_cli.errors import Terminated, stopped


def _terminate(signum, frame):
    raise Terminated()


def main() -> int:
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _terminate)
    try:
        from avsep_cli.cli import main as cli_main
    except KeyboardInterrupt as e:
        return stopped(e)
    try:
        return cli_main()
    except KeyboardInterrupt as e:  # one arriving after cli_main's own handlers (while it returns)
        return stopped(e)


if __name__ == "__main__":
    sys.exit(main())
