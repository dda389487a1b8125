"""Error types shared by the library and the CLI.

The CLI turns an `AvsepError` into one line on stderr and exit code 2 (bad input or usage); any other
exception is an internal error (exit code 1). Library code raises the most specific subclass so that
callers of the Python API can catch what they care about.
"""

import contextlib


class AvsepError(Exception):
    """Bad input or usage: the user can fix it. Exit code 2."""

    exit_code = 2


class MediaError(AvsepError):
    """A file that is missing, unreadable, not media, truncated, or lacks a needed stream."""


class OutputError(AvsepError):
    """An output that cannot be written or that exists already (without --force)."""



class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every clean-up runs; the CLI exits 143 (128 + SIGTERM)."""

    exit_code = 143


def stopped(e: KeyboardInterrupt) -> int:
    """Say in one line that the run was stopped by Ctrl-C or SIGTERM; -> the exit code (130 or 143)."""
    import sys

    terminated = isinstance(e, Terminated)
    print(f"avsep: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
    return 143 if terminated else 130


_received: list[int] = []  # signals seen by `on_signal` in this process
_deferred: list[bool] = []  # non-empty inside `deferred_signals`


def on_signal(signum, frame) -> None:
    """The handler of SIGINT and SIGTERM (see avsep_cli.__main__): remember the signal, then raise
    KeyboardInterrupt or `Terminated` so that clean-up runs (inside `deferred_signals`: only remember)."""
    import signal

    _received.append(signum)
    if not _deferred:
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def deferred_signals():
    """Signals only remembered while the body runs, raised when it ends (`check_signals`): for imports of
    extensions whose C++ cannot carry a Python exception (a KeyboardInterrupt raised inside torch's
    pybind11 start-up ends the process with `terminate called ...` and SIGABRT, not with our one line)."""
    _deferred.append(True)
    try:
        yield
    finally:
        _deferred.pop()
    check_signals()


def worker_pool(processes: int):
    """A fork `multiprocessing.Pool` whose workers leave SIGINT and SIGTERM to the parent. Ours are forked
    with `on_signal` installed, and a pool stops its workers with SIGTERM when it closes: raising
    `Terminated` there printed a traceback per worker, and one raised while holding the task queue's lock
    could hang the close. The workers take SIGTERM's default action (end at once) and ignore SIGINT (Ctrl-C
    reaches the whole process group; the parent alone handles it, then closes the pool)."""
    import multiprocessing as mp

    return mp.get_context("fork").Pool(processes, initializer=_quiet_worker)


def _quiet_worker() -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def quiet_signal_unraisable() -> None:
    """Install a `sys.unraisablehook` that stays silent about `on_signal`'s exception where Python could not
    raise it (it arrived inside a weakref callback or `__del__`, e.g. an import's module-lock clean-up, and
    Python would print "Exception ignored in ..." with a traceback): the signal is remembered and
    `check_signals` raises it again. Every other unraisable exception goes to the previous hook."""
    import sys

    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _received:
            return
        previous(unraisable)

    sys.unraisablehook = hook


def check_signals() -> None:
    """Raise again for a signal whose exception third-party code swallowed (a bare `except:` around an
    optional import): called before outputs are committed, so a stopped run never commits them."""
    import signal

    if _received:
        raise Terminated() if signal.SIGTERM in _received else KeyboardInterrupt()
