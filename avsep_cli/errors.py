"""Error types shared by the library and the CLI.

The CLI turns an `AvsepError` into one line on stderr and exit code 2 (bad input or usage); any other
exception is an internal error (exit code 1). Library code raises the most specific subclass so that
callers of the Python API can catch what they care about.
"""


class AvsepError(Exception):
    """Bad input or usage: the user can fix it. Exit code 2."""

    exit_code = 2


class MediaError(AvsepError):
    """A file that is missing, unreadable, not media, truncated, or lacks a needed stream."""


class OutputError(AvsepError):
    """An output that cannot be written or that exists already (without --force)."""

