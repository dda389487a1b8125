"""Safe output handling: atomic writes and output-folder checks.

Every file avsep writes goes to a temporary name in the destination folder and is renamed into place
only when it is complete, so an interrupted run never leaves a half-written output. The checks here
turn the usual output problems (unwritable folder, existing files without --force) into one clear
`OutputError`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from avsep_cli.errors import OutputError


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
