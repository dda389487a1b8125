"""Generate the offline audio-visual instrument corpus (real scores, SoundFont instruments, moving instrument pictures) in the MUSIC layout, with exact ground-truth stems, boxes and splits.

Deterministic for a seed, parallel over processes, resumable (finished clips are skipped). The tiny
preset needs only the pip packages and libfluidsynth3; `scripts/install-assets.sh` installs the
SoundFonts and picture packages that the larger presets use. See docs/corpus.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from avsep_cli.cli import common
from avsep_cli.errors import AvsepError


def synth(
    output: Path = typer.Option(..., "--output", "-o", help="Corpus root (created; resumed if it holds the same recipe)."),
    size: str = typer.Option("default", "--size", help="tiny (20 clips), small (180) or default (1,260)."),
    seed: int = typer.Option(0, "--seed", callback=common.bounded(0, common.SEED_MAX), help="Corpus seed: the same seed gives the same corpus."),
    workers: int = typer.Option(2, "--workers", "-j", callback=common.bounded(1), help="Worker processes."),
    soundfont: Optional[List[Path]] = typer.Option(None, "--soundfont", help="SoundFont(s) to use (repeatable); default: every known font found."),
    assets: Optional[Path] = typer.Option(None, "--assets", help="npm assets prefix with @iconify-json sets (default $AVSEP_ASSETS or /opt/avsep-assets)."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Comma-separated classes instead of the preset's."),
    solos: Optional[int] = typer.Option(None, "--solos", callback=common.bounded(0), help="Solo clips per class instead of the preset's."),
    duets: Optional[int] = typer.Option(None, "--duets", callback=common.bounded(0), help="Duet clips instead of the preset's."),
    duration: float = typer.Option(6.0, "--duration", callback=common.bounded(1, 60), help="Clip length in seconds (1 to 60)."),
    sample_rate: Optional[int] = typer.Option(None, "--sample-rate", callback=common.bounded(11025, 96000), help="Audio rate in Hz, 11025 to 96000 (default 22050); FluidSynth renders at this rate."),
    stereo: bool = typer.Option(False, "--stereo", help="Stereo audio: each player's direct sound panned by where it stands in the picture, room reverb per channel."),
    split: Optional[List[str]] = typer.Option(None, "--split", help="Render only the clips of this split (train, val, test; repeatable); the clips are those of the full corpus."),
    kind: Optional[List[str]] = typer.Option(None, "--kind", help="Render only solo or duet clips (repeatable)."),
    licence: Optional[List[str]] = typer.Option(None, "--licence", help="Use only pictures under these licences (repeatable, e.g. CC0-1.0, MIT); procedural drawings always qualify."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Cache for parsed scores and rasterised pictures (default ~/.cache/avsep/corpus)."),
) -> None:
    from avsep_cli.corpus import classes as C
    from avsep_cli.corpus import generate as G
    from avsep_cli.corpus import pictures as P

    cls_list = [c.strip() for c in classes.split(",") if c.strip()] if classes is not None else None
    if cls_list is not None:
        C.check_classes(cls_list)
    assets_dir = assets if assets is not None else P.default_assets_dir()
    if assets is not None and not assets.is_dir():
        raise AvsepError(f"--assets {assets}: no such folder")

    def warn_missing(_plan) -> None:
        """After the options are checked (an error stays one line): one warning line, details with -v."""
        missing = ([] if soundfont else C.missing_fonts()) + P.missing_assets(assets_dir)
        if missing:
            common.log.warning("%d optional asset(s) missing (SoundFonts, picture sets); the corpus uses what is "
                               "present plus procedural drawings. -v lists them; install them all with: "
                               "sudo bash scripts/install-assets.sh", len(missing))
            for line in missing:
                common.log.info("  %s", line)
    with common.progress() as bar:
        task = bar.add_task("synth", total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        plan = G.generate(output, workers=workers, progress=report, size=size, seed=seed, classes=cls_list,
                          soundfonts=soundfont or None, assets=assets_dir, cache_dir=cache,
                          licences=licence or None, solos_per_class=solos, duets=duets, duration=duration,
                          sample_rate=sample_rate, stereo=stereo, only_splits=split or None, only_kinds=kind or None,
                          on_plan=warn_missing)
    n = len(plan.clips)
    if common.verbosity() >= 0:
        common.stderr.print(f"{output}: {n} clips ({sum(c['kind'] == 'solo' for c in plan.clips)} solo, "
                            f"{sum(c['kind'] == 'duet' for c in plan.clips)} duet), classes: "
                            f"{', '.join(plan.recipe['classes'])}", highlight=False)
