"""Separate the sound of each visible instrument in a video into its own audio file.

`avsep separate VIDEO -o DIR` decodes the video, detects and tracks the instruments, runs the chosen
method over the audio in overlapping windows guided by each instrument's crops, and writes
`<class>_<k>.wav` (or .flac) per instrument plus `manifest.json` (see `avsep_cli.separator`): by default
at the input's own rate and channels (the models' masks applied to the full band, `avsep_cli.outputs`),
or with `--sample-rate model` at the models' 11,025 Hz mono. `-v` prints the time spent in each stage.
"""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from avsep_cli.cli import common


class Rate(str, Enum):
    input = "input"
    model = "model"


class Format(str, Enum):
    wav = "wav"
    flac = "flac"


class Guide(str, Enum):
    auto = "auto"
    crops = "crops"
    name = "name"


class Naming(str, Enum):
    auto = "auto"
    visual = "visual"
    audio_visual = "audio-visual"


class Bits(str, Enum):  # a choice, not a number: 16 and 24 are PCM, 32 is float
    pcm16 = "16"
    pcm24 = "24"
    float32 = "32"


def separate(
    video: Path = typer.Argument(..., help="Input video (any container FFmpeg reads), or an audio file with --instruments."),
    output: Path = typer.Option(Path("stems"), "--output", "-o", help="Output folder."),
    method: str = typer.Option("avpc", "--method", "-m", help="avpc, sop or ialcms."),
    weights: Optional[str] = typer.Option(None, "--weights", "-w", help="Shipped weights name (avsep weights list) or a checkpoint/.safetensors file; default: the method's shipped weights."),
    detector: Optional[str] = typer.Option(None, "--detector", help="Shipped detector name or weights file: ours (avsep train --method detector) or any ultralytics model (e.g. Open Images V7); default: the shipped detector."),
    instruments: Optional[str] = typer.Option(None, "--instruments", "-i", help="Separate only these classes, e.g. violin,cello: each guided by its tracked players' crops, or by its class prototype where none is seen or the input is audio only."),
    guide: Guide = typer.Option(Guide.auto, "--guide", help="What guides each tracked player: crops (its own crops, as the papers do), name (the class prototype of the name its track was given; players who share a class keep their crops) or auto (name where the weights' trunk has class prototypes, as every shipped separator's has; else crops)."),
    naming: Naming = typer.Option(Naming.auto, "--naming", help="How tracked players are named: visual (the crop classifier's vote), audio-visual (the classifier's probabilities weighed against the audio tagger's: which classes sound) or auto (audio-visual where an audio tagger is shipped or given)."),
    tagger: Optional[str] = typer.Option(None, "--tagger", help="Audio tagger weights for --naming (shipped name or file; default: the shipped tagger)."),
    masks: common.Masks = typer.Option(common.Masks.joint, "--masks", help=common.MASKS_HELP),
    boxes: Optional[Path] = typer.Option(None, "--boxes", help="Known boxes instead of the detector (a corpus sidecar JSON or {fps, players: [{class, boxes}]})."),
    conf: float = typer.Option(0.1, "--conf", callback=common.bounded(0, 1), help="Detection confidence threshold, 0 to 1 (tracks also take boxes down to half of it)."),
    detect_fps: float = typer.Option(4.0, "--detect-fps", callback=common.bounded(1, 240), help="Frames per second given to the detector and tracker, 1 to 240 (the guidance crops are taken at 1 fps)."),
    min_duration: float = typer.Option(1.0, "--min-duration", callback=common.bounded(0), help="Drop tracks shorter than this (seconds)."),
    detect_imgsz: Optional[int] = typer.Option(None, "--detect-imgsz", callback=common.bounded(32, 4096, multiple_of=32), help="Detector input size in pixels, a multiple of 32 up to 4096 (default: its training size); raise it for high-resolution video with small instruments."),
    on_empty: str = typer.Option("auto", "--on-empty", help="Nothing detected: whole-frame (one object) or error (auto: whole-frame for avpc/sop, error for ialcms)."),
    full_length: bool = typer.Option(False, "--full-length", help="Write each stem over the whole video, not only where its instrument is visible."),
    residual: bool = typer.Option(False, "--residual", help="Also write residual.wav (mixture minus the stems)."),
    sample_rate: Rate = typer.Option(Rate.input, "--sample-rate", help="input: stems at the input's own rate and channels (full band, stems + residual = input); model: 11025 Hz mono, what the models hear."),
    audio_format: Format = typer.Option(Format.wav, "--format", help="Stem file format."),
    bits: Bits = typer.Option(Bits.pcm16, "--bits", help="16 or 24-bit PCM, or 32-bit float (WAV only; no clipping, exact reconstruction)."),
    with_video: bool = typer.Option(False, "--video", help="Also write <class>_<k>.mp4: the input's video stream (copied, not re-encoded) with only that instrument's sound."),
    plots: bool = typer.Option(False, "--plots", help="Also write a spectrogram/mask PNG per instrument."),
    audio_stream: Optional[int] = typer.Option(None, "--audio-stream", callback=common.bounded(0), help="Which audio stream to separate, 0-based as in ffmpeg's -map 0:a:N (default: the first, with a warning when there are several)."),
    batch_windows: int = typer.Option(4, "--batch-windows", callback=common.bounded(1), help="Windows per model call."),
    precision: common.Precision = typer.Option(common.Precision.fp32, "--precision", help=common.PRECISION_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print the time spent in each stage."),
    force: bool = common.ForceOption,
    device: str = common.DeviceOption,
) -> None:
    from rich.console import Console

    from avsep_cli import media
    from avsep_cli.outputs import OutputOptions
    from avsep_cli.separator import Separator

    t0 = time.perf_counter()
    OutputOptions(sample_rate.value, audio_format.value, int(bits.value))  # --format flac --bits 32: one line, now
    names = None
    if instruments is not None:
        from avsep_cli.prototypes import parse_names

        names = parse_names(instruments)
    info = media.probe(video, audio_stream=audio_stream)
    media.require(info, audio=True, video=names is None, min_duration=1.0)
    dev = common.resolve_device(device)
    sep = Separator(method, weights, detector or "auto", device=dev, conf=conf, detect_fps=detect_fps,
                    min_duration=min_duration, on_empty=on_empty, full_length=full_length, residual=residual,
                    batch_windows=batch_windows, detect_imgsz=detect_imgsz, precision=precision.value,
                    guide=guide.value, naming=naming.value, tagger=tagger, masks=masks.value)
    with common.progress() as bar:
        task = bar.add_task("scan", total=2.0)
        steps = {"scan": 0.0, "separate": 1.0}
        result = sep.separate_file(video, output, boxes=boxes, force=force, video=with_video, plots=plots,
                                   audio_stream=audio_stream, sample_rate=sample_rate.value,
                                   format=audio_format.value, bits=int(bits.value), instruments=names,
                                   on_progress=lambda stage, frac: bar.update(task, completed=steps[stage] + frac,
                                                                              description=stage))
    out = Console()  # warnings went to the log (stderr) once, as they happened
    for r in result.naming.get("renamed", []):
        out.print(f"track {r['track']}: named {r['name']} by picture and sound (the picture alone: {r['picture']})",
                  highlight=False)
    for ident in result.identities:
        out.print(f"{output / ident.file}  {ident.cls} (track {ident.track_id}, "
                  f"{ident.start:.1f}-{ident.end:.1f} s, conf {ident.mean_conf:.2f})", highlight=False)
    kind = "32-bit float" if bits.value == "32" else f"{bits.value}-bit"
    out.print(f"{len(result.identities)} stem(s) ({result.sample_rate} Hz, {result.channels} channel(s), {kind} "
              f"{audio_format.value}) and manifest.json in {output}", highlight=False)
    if verbose or common.verbosity() > 0:
        total = time.perf_counter() - t0
        for stage, secs in result.timings.items():
            out.print(f"  {stage:<14} {secs:8.2f} s", highlight=False)
        out.print(f"  {'total':<14} {total:8.2f} s for {info.duration:.1f} s of video", highlight=False)
