"""Decode a corpus once into the cache training reads: audio at 11025 Hz and frames at 8 fps.

Writes ROOT/.avsep-cache/<video path without suffix>.audio.npy (float32 mono) and .frames.npy ((N, PX,
PX, 3) uint8, square) for every clip, over `--workers` processes. Resumable: clips whose cache is newer
than their video and has the requested size are skipped (`--force` redoes them). Clips that cannot be
decoded are reported at the end (exit 2) after all others are cached.
"""

from __future__ import annotations

from pathlib import Path

import typer

from avsep_cli import cache
from avsep_cli.cli import common
from avsep_cli.errors import AvsepError


def index(
    root: Path = typer.Argument(..., help="Corpus root (synthetic corpus or MUSIC layout)."),
    workers: int = typer.Option(2, "--workers", "-j", callback=common.bounded(1), help="Worker processes."),
    size: int = typer.Option(cache.DEFAULT_SIZE, "--size", callback=common.bounded(16, 1024), help="Side of the square cached frames, in pixels (16 to 1024)."),
    force: bool = common.ForceOption,
) -> None:
    with common.progress() as bar:
        task = bar.add_task("index", total=None)
        res = cache.build_cache(root, workers=workers, size=size, force=force,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    if common.verbosity() >= 0:
        common.stderr.print(f"{root}: {res.decoded} clips decoded, {res.skipped} up to date, "
                            f"{len(res.failed)} failed; cache {res.bytes / 1e6:.1f} MB in {root / cache.CACHE_DIR}",
                            highlight=False, soft_wrap=True)
    if res.failed:
        for clip, err in res.failed[1:]:
            common.log.warning("not cached: %s", err)
        clip, err = res.failed[0]
        more = f" (and {len(res.failed) - 1} more, listed above)" if len(res.failed) > 1 else ""
        raise AvsepError(f"could not decode {err}{more}; those clips are not cached")
