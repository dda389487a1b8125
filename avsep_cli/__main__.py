"""`python -m avsep_cli` and the `avsep` console script.

Signals are set up before anything heavy is imported (torch takes seconds): SIGTERM raises
`Terminated`, a KeyboardInterrupt, so a terminated run cleans up like an interrupted one (temporary
files and staged outputs removed) and says so in one line, and Ctrl-C during start-up is the same one
line instead of a traceback (one that arrives while the CLI's imports load torch is held until they
end: an exception raised inside torch's C++ start-up aborts the process). Both are also remembered
(`errors.on_signal`), so one whose exception third-party code swallows (a bare `except:` around an
optional import) still stops the run, before its outputs are committed (`errors.check_signals`).
"""

import os
import signal
import sys

from avsep_cli.errors import check_signals, deferred_signals, on_signal, quiet_signal_unraisable, stopped


def main() -> int:
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where SIGINT is ignored (nohup &)
        signal.signal(signal.SIGINT, on_signal)
    quiet_signal_unraisable()  # a signal that lands in a weakref callback: no "Exception ignored" traceback
    try:
        with deferred_signals():  # the CLI's imports load torch, whose C++ start-up cannot be interrupted
            from avsep_cli.cli import main as cli_main

        code = cli_main()
        if code not in (130, 143):
            check_signals()  # one that third-party code swallowed while the command ran
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
