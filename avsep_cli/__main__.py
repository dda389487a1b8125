"""`python -m avsep_cli` and the `avsep` console script.

Signals are set up before anything heavy is imported (torch takes seconds): SIGTERM raises
`Terminated`, a KeyboardInterrupt, so a terminated run cleans up like an interrupted one (temporary
files and staged outputs removed) and says so in one line, and Ctrl-C during start-up is the same one
line instead of a traceback.
"""

import os
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

        code = cli_main()
    except KeyboardInterrupt as e:  # during start-up, or after cli_main's own handlers (while it returns)
        code = stopped(e)
    # The run is over (outputs committed or cleaned up): a signal now must not turn it into a crash in the
    # interpreter's shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if code in (130, 143):
        # Everything is cleaned up by now. A KeyboardInterrupt that went through code run by the C API (an
        # extension's import) leaves CPython's "unhandled KeyboardInterrupt" flag set even though it was
        # caught, and CPython then ends the process by SIGINT instead of this code (143 would become -2).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
