"""Safe output handling: atomic writes, all-or-nothing output folders and output-folder checks.

Every file avsep writes goes to a temporary name in the destination folder and is renamed into place
only when it is complete, so an interrupted run never leaves a half-written output; a run that writes
several files (stems and their manifest) stages them all in an `OutputFolder` and moves them into place
together. The checks here turn the usual output problems (unwritable folder, full disk, existing files
without --force, a folder in use by another run) into one clear `OutputError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from avsep_cli.errors import OutputError, check_signals


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target` (same suffix, so writers infer the format); on success
    rename it onto `target`, on any exception delete it."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".part{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and check that files can be written into it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output path is not a folder: {path}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".avsep-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"cannot write to output folder {path}: {e.strerror or e}") from None
    return path


def refuse_existing(paths: list[Path], force: bool) -> None:
    """Raise if any of `paths` exists and `force` is not set."""
    if force:
        return
    existing = [p for p in paths if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputError(f"output exists: {existing[0]}{more}; use --force to overwrite")


def describe_write_error(e: BaseException, where: str | os.PathLike, what: str = "") -> str:
    """One line for a failed write: the OS reason, or for libsndfile's opaque "System error." the disk
    state (it loses errno), e.g. "no space left on device"."""
    reason = getattr(e, "strerror", None)
    if not reason:
        try:
            free = shutil.disk_usage(Path(where) if Path(where).is_dir() else Path(where).parent).free
        except OSError:
            free = None
        reason = "no space left on device" if free is not None and free < 1 << 20 else (str(e) or type(e).__name__)
    return f"cannot write {what}{where}: {reason}"


class OutputFolder:
    """The outputs of one run in one folder, all together or not at all.

    Entering locks the folder (`flock` on the folder itself: a second run into it fails at once with one
    line; a killed run leaves no stale lock) and makes a hidden staging folder inside it; files are written
    to `stage(name)`; `commit()` moves them into place with SIGINT/SIGTERM held back, the file named
    `last` (the manifest) after all others, and with `force` deletes the files an earlier run listed in
    `last` that this run does not write. Leaving without `commit()` (an error, a signal) deletes the
    staging folder, and the folder itself when this run created it and it is still empty.
    """

    STAGING = ".avsep-staging-"

    def __init__(self, path: str | os.PathLike, *, force: bool = False, last: str = "manifest.json",
                 listed=None):
        self.path, self.force, self.last = Path(path), force, last
        self.listed = listed or (lambda manifest: [])  # manifest dict -> file names it lists
        self.created = False
        self.staging: Path | None = None
        self._fd: int | None = None
        self.names: list[str] = []

    def __enter__(self) -> "OutputFolder":
        self.created = not self.path.exists()
        prepare_output_dir(self.path)
        try:
            self._lock()
            for old in self.path.glob(self.STAGING + "*"):  # left by a killed run (we hold the lock)
                shutil.rmtree(old, ignore_errors=True)
            self.staging = Path(tempfile.mkdtemp(prefix=self.STAGING, dir=self.path))
        except BaseException:
            self._close(remove=True)
            raise
        return self

    def _lock(self) -> None:
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # another run holds the folder (it may have created it in the same instant as we did, and not yet
            # staged anything in it): it is theirs, so leave it in place
            self.created = False
            raise OutputError(f"output folder {self.path} is in use by another avsep run; wait for it or "
                              "choose another folder") from None

    def stage(self, name: str) -> Path:
        """Where to write output `name` (a plain file name) before the commit."""
        if name not in self.names:
            self.names.append(name)
        return self.staging / name

    def refuse_existing(self, names: list[str]) -> None:
        refuse_existing([self.path / n for n in names], self.force)

    def commit(self) -> list[Path]:
        """Move every staged file into place; returns their final paths."""
        check_signals()  # a Ctrl-C that third-party code swallowed still stops the run here
        staged = [n for n in self.names if (self.staging / n).exists()]
        order = [n for n in staged if n != self.last] + [n for n in staged if n == self.last]
        with held_signals():
            stale = self._stale(set(staged)) if self.force else []
            for n in stale:
                with contextlib.suppress(FileNotFoundError):
                    (self.path / n).unlink()
            for n in order:
                os.replace(self.staging / n, self.path / n)
        return [self.path / n for n in order]

    def _stale(self, written: set[str]) -> list[str]:
        import json

        try:
            old = json.loads((self.path / self.last).read_text())
            listed = self.listed(old)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return []
        return [n for n in listed if isinstance(n, str) and "/" not in n and n not in written and n != self.last]

    def __exit__(self, *exc) -> None:
        self._close(remove=True)

    def _close(self, remove: bool) -> None:
        if remove and self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        if remove and self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if still empty
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for a few renames, then deliver them (main thread only)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
