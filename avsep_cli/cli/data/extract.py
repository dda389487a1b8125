"""Decode a video into what the models see: mono 11025 Hz audio (WAV) and frames at a chosen rate.

`avsep data extract VIDEO -o DIR` writes `DIR/<stem>.wav` (mono, 11025 Hz, 16-bit) and, unless
--no-frames, `DIR/<stem>_frames/000000.jpg ...` sampled at --fps by timestamp. Existing outputs are
refused without --force. Nothing is put in place until everything has decoded, so a failure leaves
no partial output.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from pathlib import Path

import typer

from avsep_cli import fsio, media
from avsep_cli.cli import common
from avsep_cli.errors import OutputError


def extract(
    video: Path = typer.Argument(..., help="Input video (any container FFmpeg reads)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder."),
    fps: float = typer.Option(media.DEFAULT_FPS, "--fps", callback=common.bounded(0, 240, lo_open=True), help="Frames per second to extract (above 0, up to 240)."),
    frames: bool = typer.Option(True, "--frames/--no-frames", help="Also write JPEG frames."),
    force: bool = common.ForceOption,
) -> None:
    info = media.probe(video)
    media.require(info, audio=True, video=frames, min_duration=1.0)
    out = fsio.prepare_output_dir(output)
    wav_path = out / f"{video.stem}.wav"
    frames_dir = out / f"{video.stem}_frames"
    fsio.refuse_existing([wav_path, frames_dir] if frames else [wav_path], force)

    wav = media.load_audio(video, media.SAMPLE_RATE)
    n_frames = 0
    staged = None
    try:
        if frames:
            staged, n_frames = _frames_to_staging(video, out, frames_dir.name, fps, info.duration)
        media.write_wav(wav_path, wav, media.SAMPLE_RATE)
        if staged is not None:
            _replace_dir(staged, frames_dir)
            staged = None
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
    common.log.info("%s: %.2f s of audio, %d frames at %g fps", video, len(wav) / media.SAMPLE_RATE, n_frames, fps)
    typer.echo(f"wrote {wav_path}" + (f" and {n_frames} frames in {frames_dir}" if frames else ""))


def _frames_to_staging(video: Path, out: Path, name: str, fps: float, duration: float) -> tuple[Path, int]:
    """Write JPEG frames into a hidden folder beside the final one; returns (folder, count)."""
    from PIL import Image

    staged = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".part", dir=out))
    n = 0
    try:
        with common.progress() as bar:
            task = bar.add_task("frames", total=max(1, math.ceil(duration * fps)))
            for _, rgb in media.iter_frames(video, fps):
                Image.fromarray(rgb).save(staged / f"{n:06d}.jpg", quality=92)
                n += 1
                bar.advance(task)
    except OSError as e:
        shutil.rmtree(staged, ignore_errors=True)
        raise OutputError(f"cannot write frames to {out}: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged, n


def _replace_dir(staged: Path, target: Path) -> None:
    """Rename `staged` onto `target`, moving an old `target` aside first (a folder cannot be renamed
    onto a non-empty one) and deleting it only once the new one is in place."""
    old = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.rmdir(old)
        os.replace(target, old)
    try:
        os.replace(staged, target)
    except OSError as e:
        if old is not None:
            with contextlib.suppress(OSError):
                os.replace(old, target)
        raise OutputError(f"cannot write {target}: {e.strerror or e}") from None
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
