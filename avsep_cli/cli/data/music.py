"""Organise downloaded MUSIC videos (files named by their YouTube id) into the corpus layout, with the papers' splits.

`--json` takes MUSIC's lists (MUSIC_solo_videos.json, MUSIC_duet_videos.json, repeatable); `--videos` is
the download folder (any of .mp4/.mkv/.webm, searched recursively). Each found video is linked (default)
or copied to ROOT/solo/<class>/<id>.<ext> or ROOT/duet/<a>+<b>/<id>.<ext>; per JSON key the first listed
video is val, the second test, the rest train (ROOT/splits/*.csv). Videos that are missing are counted
per key and listed in ROOT/missing.txt; they never make the command fail. `--index-csv` reads and
validates Sound-of-Pixels/AVPC index CSVs (audio + JPEG frame folders) and reports them; it does not
import them. See docs/corpus.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from avsep_cli import music as M
from avsep_cli.cli import common
from avsep_cli.errors import AvsepError


def music(
    json_files: Optional[List[Path]] = typer.Option(None, "--json", help="A MUSIC JSON list (repeatable)."),
    videos: Optional[Path] = typer.Option(None, "--videos", help="Folder of downloaded videos named <youtube id>.<ext>."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output root (the MUSIC layout is written here)."),
    copy: bool = typer.Option(False, "--copy/--link", help="Copy the videos instead of symlinking them (default: link)."),
    index_csv: Optional[List[Path]] = typer.Option(None, "--index-csv", help="A Sound-of-Pixels/AVPC index CSV to read and validate (repeatable)."),
    force: bool = common.ForceOption,
) -> None:
    if not json_files and not index_csv:
        raise AvsepError("nothing to do: give --json MUSIC lists (with --videos and -o) or --index-csv files")
    if json_files:
        if videos is None or output is None:
            raise AvsepError("--json needs --videos DIR and -o ROOT")
    checks = [(p, M.check_index_rows(M.read_index_csv(p), p)) for p in index_csv or []]  # all parsed before any write
    if json_files:
        res = M.organise(json_files, videos, output, copy=copy, force=force)
        _print_organised(res)
    for path, chk in checks:
        _print_index(path, chk)


def _print_organised(res: M.OrganiseResult) -> None:
    if common.verbosity() < 0:
        return
    table = Table(title=f"MUSIC layout in {res.root}", title_justify="left")
    for col in ("key", "folder", "listed", "found", "missing"):
        table.add_column(col, justify="right" if col in ("listed", "found", "missing") else "left")
    for r in res.reports:
        table.add_row(r.key, r.folder, str(r.listed), str(r.found), str(len(r.missing)))
    common.stderr.print(table)
    s = res.splits
    where = f", ids in {res.root / 'missing.txt'}" if res.missing else ""
    common.stderr.print(f"{len(res.placed)} clips (train {s['train']}, val {s['val']}, test {s['test']}); "
                        f"{res.missing} listed videos missing{where}", highlight=False, soft_wrap=True)


def _print_index(path: Path, chk: M.IndexCheck) -> None:
    if common.verbosity() < 0:
        return
    labels = ", ".join(f"{k} {v}" for k, v in chk.labels.items())
    common.stderr.print(f"{path}: {chk.rows} rows, {len(chk.labels)} classes ({labels}); "
                        f"audio missing {len(chk.audio_missing)}, frame folders missing {len(chk.frames_missing)}, "
                        f"frame folders short of n_frames {len(chk.frames_short)} (validated only, not imported)",
                        highlight=False, soft_wrap=True)
