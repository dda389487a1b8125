"""The write stage of `avsep separate`: separated windows become stems in files (or arrays), with the
residual, the manifest, a solo video and a plot per instrument.

The separator hands over, window by window, what the method made of each identity; `Stems` turns that
into finished samples at the output rate (`OutputOptions.sample_rate`):

- "model": the methods' own estimates at 11025 Hz mono, merged by the separator's overlap-add;
- "input" (full band, the CLI's default): each window's masks (S, 512, T), computed at 11025 Hz, are
  applied to the STFT of every channel of the input at its own rate (`FullBand`). The two grids are
  aligned in seconds (`dsp.ScaledGrid`: window and hop times sr / 11025; masks interpolated in time by
  frame-centre seconds and in frequency by Hz). The band above the models' Nyquist (5512.5 Hz), which no
  model hears, is shared per frame by `high_band_gains`: each stem gets the energy-weighted mean of its
  mask over the top modelled band (4-5.5 kHz), the shares scaled to sum to at most 1 and the rest left
  to the residual. Windows are merged with the same triangle weights at the input's rate.

Then each stem is kept over its identity's span (`gates`, in seconds) and the residual is the input
minus the sum of the stems, so stems + residual == input up to the file format (exactly, to float
precision, with 32-bit float). Files are WAV or FLAC at 16 or 24 bits, or 32-bit float WAV, streamed in
blocks through `media.WavWriter` into the run's staging folder (`fsio.OutputFolder`, committed with the
manifest). Memory does not grow with the length of the video.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from avsep_cli import dsp, fsio, media
from avsep_cli.errors import AvsepError, OutputError

SAMPLE_RATES = ("input", "model")
FORMATS = ("wav", "flac")
BITS = (16, 24, 32)
HIGH_BAND_HZ = (4000.0, dsp.SAMPLE_RATE / 2)  # the top modelled band, whose shares go to the band above
HIGH_BAND_RULE = ("above 5512.5 Hz each stem gets, per frame, its energy-weighted mean mask over 4000-5512.5 Hz; "
                  "shares scaled to sum to at most 1, the rest goes to the residual")


@dataclass(frozen=True)
class OutputOptions:
    """What a run writes and how. `sample_rate`: "input" (the input's rate and channels, full band) or
    "model" (11025 Hz mono, what the models hear); `format`: wav or flac; `bits`: 16, 24 (PCM) or 32
    (float, WAV only); `residual`, `video` (the input's video stream copied, with one stem as its sound),
    `plots` (a spectrogram/mask PNG per stem)."""

    sample_rate: str = "model"
    format: str = "wav"
    bits: int = 16
    residual: bool = False
    video: bool = False
    plots: bool = False

    def __post_init__(self):
        if self.sample_rate not in SAMPLE_RATES:
            raise AvsepError(f"sample rate must be input or model, not {self.sample_rate!r}")
        if self.format not in FORMATS:
            raise AvsepError(f"format must be wav or flac, not {self.format!r}")
        if self.bits not in BITS:
            raise AvsepError(f"bits must be 16, 24 or 32, not {self.bits!r}")
        media.sound_subtype(self.format, self.bits)  # flac has no 32-bit float

    @property
    def full_band(self) -> bool:
        return self.sample_rate == "input"

    def file(self, name: str) -> str:
        return f"{name}.{self.format}"

    def planned(self, names: list[str]) -> list[str]:
        """The files a run with these identities will write (what --force must be given to replace)."""
        return ([self.file(n) for n in names] + ([self.file("residual")] if self.residual else [])
                + ([f"{n}.mp4" for n in names] if self.video else []))


# --- the two renderings ------------------------------------------------------------------------------


class ModelRate:
    """The methods' estimates (S, L) per window, merged by the separator's overlap-add `ola` (which also
    cuts the windows): 11025 Hz mono, as the models hear it."""

    wants_masks = False

    def __init__(self, ola):
        self.ola = ola
        self.rate, self.channels = dsp.SAMPLE_RATE, 1
        self.mix = np.zeros(0, np.float32)  # mixture samples not yet popped

    def feed(self, chunk: np.ndarray) -> None:
        self.mix = np.concatenate([self.mix, chunk.astype(np.float32)])

    def add(self, s0: int, window: np.ndarray, est: np.ndarray) -> None:
        self.ola.add(s0, est)  # (S, L)

    def pop(self, upto: int, final: bool) -> tuple[np.ndarray, np.ndarray]:
        """-> mixture (1, n) and stems (S, 1, n) before model sample `upto` (all that is left with `final`)."""
        stems = self.ola.pop(self.ola.total if final else upto)  # (S, n)
        n = stems.shape[1]
        mix, self.mix = self.mix[:n], self.mix[n:]
        return mix[None], stems[:, None]

    def close(self) -> None:
        pass


def high_band_gains(window: np.ndarray, masks: torch.Tensor, band: tuple[float, float] = HIGH_BAND_HZ) -> torch.Tensor:
    """The gain of each stem per model frame for the band above 5512.5 Hz: its mask's mean over `band`,
    weighted by the mixture's energy there, so a stem that takes 70 % of the top band's energy takes 70 %
    of the band above. window (L,) at 11025 Hz, masks (S, 512, T) -> (S, T), scaled so that the gains of
    the S stems sum to at most 1 in every frame."""
    lo = math.ceil(band[0] * dsp.N_FFT / dsp.SAMPLE_RATE - 1e-9)  # the model bins within the band
    hi = min(dsp.N_FREQ - 1, math.floor(band[1] * dsp.N_FFT / dsp.SAMPLE_RATE + 1e-9))
    spec = dsp.stft(torch.from_numpy(np.ascontiguousarray(window)).float())[lo : hi + 1]  # (b, T): bins in the band
    energy = spec.real.pow(2) + spec.imag.pow(2)
    share = (masks[:, lo : hi + 1] * energy).sum(1) / energy.sum(0).clamp_min(dsp.EPS)  # (S, T)
    return share / share.sum(0).clamp_min(1.0)


class FullBand:
    """Masks (S, 512, T) per model window applied to the STFT of every channel of the input at its own
    rate: a model window [s0, s0 + L) at 11025 Hz becomes the input-rate window of the same seconds, one
    hop wider on each side, whose STFT (`dsp.ScaledGrid`) gets the masks regridded in time and frequency
    (`high_band_gains` above 5512.5 Hz); the masked STFTs are inverted and merged with triangle weights.
    The input's own samples are decoded here, in step with the windows, and dropped once written."""

    wants_masks = True

    def __init__(self, path: Path, rate: int, segment: int, n_stems: int, duration: float,
                 audio_stream: int | None, timer, high_band: tuple[float, float] = HIGH_BAND_HZ):
        self.grid = dsp.ScaledGrid.at(rate)
        self.rate, self.r, self.L = rate, rate / dsp.SAMPLE_RATE, segment
        self.pad = self.grid.hop  # one hop of context each side: edge frames keep their neighbours
        self.timer, self.high_band = timer, high_band
        self.audio = media.iter_audio(path, None, chunk_seconds=10.0, duration=duration, audio_stream=audio_stream,
                                      channels="all")
        self.buf, self.buf0 = None, 0  # decoded (C, n) input samples from index buf0
        self.total, self.done = 0, False
        self._pull(1)  # the first chunk tells the channel count
        self.channels = self.buf.shape[0]
        self.sum = dsp.WeightedSum((n_stems, self.channels), np.float32)  # (S, C, n)
        self.popped = 0

    def _pull(self, upto: float) -> None:
        """Decode input samples until `upto` are in (or the input ends)."""
        while not self.done and self.total < upto:
            with self.timer("decode audio"):
                x = next(self.audio, None)
            if x is None:
                self.done = True
                if self.buf is None:
                    self.buf = np.zeros((1, 0), np.float32)
                break
            self.buf = x if self.buf is None else np.concatenate([self.buf, x], axis=1)
            self.total += x.shape[1]

    def feed(self, chunk: np.ndarray) -> None:
        """The mixture at the models' rate: nothing to do here (the input's samples come with the windows)."""

    def add(self, s0: int, window: np.ndarray, masks: np.ndarray) -> None:
        """Model window at sample s0 (L,) and its masks (S, 512, T) -> the stems' input-rate samples."""
        n0 = max(0, math.floor(s0 * self.r) - self.pad)
        n1 = math.ceil((s0 + self.L) * self.r) + self.pad
        self._pull(n1)
        n1 = min(n1, self.total)
        if n1 - n0 < 2:
            return
        assert n0 >= self.buf0, "a window reaches back before the samples already written"
        with self.timer("full band"):
            masks = torch.from_numpy(masks).float()  # (S, 512, T)
            x = torch.from_numpy(self.buf[:, n0 - self.buf0 : n1 - self.buf0])  # (C, n)
            spec = self.grid.stft(x)  # (C, F, T')
            high = high_band_gains(window, masks, self.high_band)  # (S, T)
            masked = self.grid.apply(spec, masks, high, self.grid.frame_positions(n0, spec.shape[-1], s0))  # (S, C, F, T')
            est = self.grid.istft(masked, n1 - n0)  # (S, C, n)
            self.sum.add(n0, est.numpy(), dsp.triangle(n1 - n0).astype(np.float32))

    def pop(self, upto: int, final: bool) -> tuple[np.ndarray, np.ndarray]:
        """-> input (C, n) and stems (S, C, n) up to where no later window reaches, given that none starts
        before model sample `upto` (everything that is left with `final`)."""
        if final:
            self._pull(math.inf)
            end = self.total
        else:  # a window at s0 >= upto starts at floor(s0 * r) - pad or later
            end = min(self.total, max(self.popped, math.floor(upto * self.r) - self.pad - 1))
        stems = self.sum.pop(end)  # (S, C, n)
        mix = self.buf[:, self.popped - self.buf0 : end - self.buf0]
        self.buf, self.buf0, self.popped = self.buf[:, end - self.buf0 :], end, end
        return mix.astype(np.float64), stems

    def close(self) -> None:
        self.audio.close()  # the input's decoder, if it did not reach the end


# --- gating, residual, files -------------------------------------------------------------------------------


class Stems:
    """The write stage as the separator drives it: `feed` the models' mixture chunks, `add` each separated
    window (estimates (S, L), or masks (S, 512, T) when `wants_masks`), `settle` what no later window
    touches; each settled block is gated to the identities' spans (`gates(n0, n, rate) -> (S, n)`), the
    residual added, and written (or kept, without an output folder, for `arrays`). A context manager: the
    files are complete when it exits without an error."""

    def __init__(self, render, names: list[str], gates: Callable[[int, int, int], np.ndarray], options: OutputOptions,
                 out: fsio.OutputFolder | None):
        self.render, self.names, self.gates, self.options, self.out = render, names, gates, options, out
        self.wants_masks = render.wants_masks
        self.rate, self.channels = render.rate, render.channels
        self.parts = names + (["residual"] if options.residual else [])
        self.chunks: dict[str, list[np.ndarray]] = {n: [] for n in self.parts}
        self.n0 = 0
        self._stack = contextlib.ExitStack()
        self.writers: dict[str, media.WavWriter] = {}

    def __enter__(self) -> "Stems":
        if self.out is not None:
            for n in self.parts:
                f = self.options.file(n)
                self.writers[n] = self._stack.enter_context(
                    media.WavWriter(self.out.stage(f), self.rate, self.out.path / f, self.channels, self.options.bits))
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._stack.__exit__(*exc)
        finally:
            self.render.close()

    def feed(self, chunk: np.ndarray) -> None:
        self.render.feed(chunk)

    def add(self, s0: int, window: np.ndarray, result: np.ndarray) -> None:
        self.render.add(s0, window, result)

    def settle(self, upto: int, final: bool = False) -> None:
        """Write what is finished before model sample `upto` (everything with `final`)."""
        mix, stems = self.render.pop(upto, final)  # (C, n), (S, C, n)
        n = mix.shape[-1]
        if not n:
            return
        stems = stems * self.gates(self.n0, n, self.rate)[:, None, :]
        self.n0 += n
        parts = dict(zip(self.names, stems))
        if self.options.residual:
            parts["residual"] = mix - stems.sum(0)
        for name, wav in parts.items():
            wav = wav.astype(np.float32)
            if name in self.writers:
                self.writers[name].write(wav)  # PCM clips to [-1, 1], float does not
            else:
                self.chunks[name].append(wav if self.options.bits == 32 else np.clip(wav, -1.0, 1.0))

    def arrays(self) -> dict[str, np.ndarray]:
        """name -> the whole stem (and "residual"): (C, n) float32 at the input's rate, (n,) at the model's."""
        out = {}
        for name, parts in self.chunks.items():
            wav = np.concatenate(parts, axis=-1) if parts else np.zeros((self.channels, 0), np.float32)
            out[name] = wav[0] if not self.options.full_band else wav
        return out


def open_stems(path: Path, info, options: OutputOptions, names: list[str], gates, out, ola, segment: int,
               duration: float, timer) -> Stems:
    """The write stage for one run: model-rate or full-band rendering as `options` asks."""
    if options.full_band:
        rate = info.sample_rate or dsp.SAMPLE_RATE  # a stream that declares no rate decodes at 11025 Hz (media)
        render = FullBand(path, rate, segment, len(names), duration, info.audio_stream, timer)
    else:
        render = ModelRate(ola)
    return Stems(render, names, gates, options, out)


# --- videos, plots, manifest ---------------------------------------------------------------------------


def solo_videos(path: Path, out: fsio.OutputFolder, identities) -> None:
    """Per identity, `<name>.mp4`: the input's video stream copied as it is (no re-encode) with the
    identity's stem (read back from the staging folder in blocks) as its only sound, AAC at the stem's
    rate and channels."""
    for ident in identities:
        media.mux_audio(path, out.stage(ident.file), None, out.stage(f"{ident.name}.mp4"))


def plots(out: fsio.OutputFolder, result, segment: int) -> None:
    """One PNG per identity: mixture, stem and effective mask at 11025 Hz over one window in its span."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sr, L = dsp.SAMPLE_RATE, segment
    spec = lambda wav: dsp.LOG.warp(dsp.stft(torch.from_numpy(wav).float()).abs())  # noqa: E731  (256, T)
    for ident in result.identities:
        start = max(0.0, (ident.start + ident.end) / 2 - L / sr / 2)
        mix = media.load_audio(result.input, sr, start=start, duration=L / sr, audio_stream=result.audio_stream)
        stem = media.read_audio_file(out.stage(ident.file), sr=sr)[int(start * sr) : int(start * sr) + L]
        stem = np.pad(stem, (0, len(mix) - len(stem)))
        m, e = spec(mix), spec(stem)
        fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
        db = dict(vmin=-10, vmax=4, cmap="magma", origin="lower", aspect="auto")
        axes[0].imshow(dsp.log_magnitude(m).numpy(), **db)
        axes[1].imshow(dsp.log_magnitude(e).numpy(), **db)
        axes[2].imshow((e / m.clamp_min(1e-8)).clamp(0, 1).numpy(), vmin=0, vmax=1, cmap="gray", origin="lower", aspect="auto")
        for ax, title in zip(axes, ("mixture", ident.name, "mask")):
            ax.set_title(f"{title} ({start:.1f}-{start + L / sr:.1f} s)", fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        try:
            fig.savefig(out.stage(f"{ident.name}.png"), dpi=80)
        except OSError as e:
            raise OutputError(fsio.describe_write_error(e, out.path / f"{ident.name}.png")) from None
        finally:
            plt.close(fig)


def audio_fields(options: OutputOptions, rate: int, channels: int) -> dict:
    """The manifest's description of the written audio."""
    return {
        "sample_rate": rate,
        "channels": channels,
        "model_sample_rate": dsp.SAMPLE_RATE,
        "format": options.format,
        "bits": options.bits,
        "sample_format": "float" if options.bits == 32 else "pcm",
        "high_band": ({"rule": HIGH_BAND_RULE, "band_hz": list(HIGH_BAND_HZ)}
                      if options.full_band and rate > dsp.SAMPLE_RATE else None),
        "residual": options.file("residual") if options.residual else None,
    }


def write_manifest(out: fsio.OutputFolder, manifest: dict) -> None:
    """manifest.json, listing every other file of the run (what a later --force replaces)."""
    manifest["files"] = [n for n in out.names if n != "manifest.json"]
    try:
        out.stage("manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    except OSError as e:
        raise OutputError(fsio.describe_write_error(e, out.path / "manifest.json")) from None


def manifest_files(manifest: dict) -> list[str]:
    """The file names an earlier run's manifest lists (what `--force` replaces as a whole)."""
    if isinstance(manifest.get("files"), list):
        return manifest["files"]
    names = []  # manifests before "files": what they imply
    for ident in manifest.get("identities", []):
        if ident.get("file"):
            stem = Path(ident["file"]).stem
            names += [ident["file"], f"{stem}.mp4", f"{stem}.png"]
    if manifest.get("residual"):
        names.append(manifest["residual"])
    return names
