"""Test media with known content, written with PyAV directly (not with `avsep_cli.media`, so the
decoders are checked against an independent writer).

Audio is stereo with different content per channel (a chirp left, a sine right) so that mixing to
mono and resampling are both exercised. Each video frame carries its own index as an 8-bit barcode
of black/white stripes across its top half, which survives lossy coding and resizing, so a test can
tell exactly which source frame a decoder returned.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

VCODEC = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}
ACODEC = {".mp4": "aac", ".mov": "aac", ".mkv": "flac", ".webm": "libopus", ".avi": "pcm_s16le"}
BITS = 8


def source_audio(seconds: float, sr: int = 48000) -> np.ndarray:
    """(2, n) float32: left a 150→2500 Hz linear chirp, right a 440 Hz sine plus its third harmonic."""
    t = np.arange(int(round(seconds * sr))) / sr
    f0, f1 = 150.0, 2500.0
    left = 0.4 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t**2))
    right = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1320 * t)
    return np.stack([left, right]).astype(np.float32)


def pattern_frame(i: int, w: int = 160, h: int = 120) -> np.ndarray:
    """HxWx3 uint8 frame whose top half encodes `i` (mod 256) as BITS stripes, MSB first; the bottom
    half is a colour ramp so the picture is not flat."""
    img = np.zeros((h, w, 3), np.uint8)
    stripe = w // BITS
    for b in range(BITS):
        if (i >> (BITS - 1 - b)) & 1:
            img[: h // 2, b * stripe : (b + 1) * stripe] = 255
    img[h // 2 :, :, 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
    img[h // 2 :, :, 2] = (i * 37) % 256
    return img


def frame_index(img: np.ndarray) -> int:
    """Read back the index `pattern_frame` drew (works on resized frames too)."""
    h, w = img.shape[:2]
    stripe = w / BITS
    top = img[: h // 2].mean(axis=2)
    value = 0
    for b in range(BITS):
        lo, hi = int(b * stripe + stripe * 0.25), int((b + 1) * stripe - stripe * 0.25)
        value = (value << 1) | int(top[h // 8 : h * 3 // 8, lo:hi].mean() > 128)
    return value


def make_media(
    path: str | Path,
    *,
    seconds: float = 3.0,
    fps: float = 25.0,
    size: tuple[int, int] = (160, 120),
    video: bool = True,
    audio: bool = True,
    sr: int = 48000,
    audio_offset: float = 0.0,
    frame_times: list[float] | None = None,
) -> dict:
    """Write a test file by suffix (.mp4 .mov .mkv .webm .avi, or .wav/.flac/.m4a for audio only).

    `frame_times` gives explicit (variable-rate) frame timestamps instead of k / fps; `audio_offset`
    makes the audio stream start that many seconds after the video. Returns what was written:
    {"audio": (2, n) float32 at `sr`, "frame_times": list of seconds}.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    wav = source_audio(seconds, sr) if audio else None
    vfr = frame_times is not None
    if not vfr:
        frame_times = [k / fps for k in range(int(round(seconds * fps)))] if video else []
    tb = Fraction(1, 1000) if vfr else 1 / Fraction(fps).limit_denominator(1000)
    with av.open(str(path), "w") as out:
        vs = None
        if video:
            vs = out.add_stream(VCODEC[suffix], rate=Fraction(fps).limit_denominator(1000))
            vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
            vs.codec_context.time_base = tb  # milliseconds for irregular times; 1/fps keeps AVI constant-rate
            if VCODEC[suffix] == "libx264":
                vs.options = {"crf": "18", "preset": "veryfast"}
            elif VCODEC[suffix] == "libvpx-vp9":
                vs.options = {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}
            else:
                vs.bit_rate = 2_000_000
        aus = None
        if audio:
            codec = ACODEC.get(suffix, {".wav": "pcm_s16le", ".flac": "flac", ".m4a": "aac"}.get(suffix))
            aus = out.add_stream(codec, rate=sr, layout="stereo")
            if codec in ("aac", "libopus"):
                aus.bit_rate = 192000
        a_pos = 0
        a_start = int(round(audio_offset * sr))

        def audio_until(t: float) -> None:
            nonlocal a_pos
            end = wav.shape[1] if t == float("inf") else min(wav.shape[1], int(round((t - audio_offset) * sr)))
            while a_pos < end:
                n = min(1024, end - a_pos)
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wav[:, a_pos : a_pos + n]), format="fltp", layout="stereo")
                frame.sample_rate = sr
                frame.time_base = Fraction(1, sr)
                frame.pts = a_start + a_pos
                out.mux(aus.encode(frame))
                a_pos += n

        for k, t in enumerate(frame_times):
            frame = av.VideoFrame.from_ndarray(pattern_frame(k, *size), format="rgb24")
            frame.time_base = tb
            frame.pts = int(round(t / tb))
            out.mux(vs.encode(frame))
            if aus is not None:
                audio_until(t)
        if vs is not None:
            out.mux(vs.encode(None))
        if aus is not None:
            audio_until(float("inf"))
            out.mux(aus.encode(None))
    return {"audio": wav, "frame_times": list(frame_times)}


def tone(freq: float, seconds: float, sr: int = 48000, amplitude: float = 0.5) -> np.ndarray:
    """(n,) float32 sine of `freq` Hz and peak `amplitude`."""
    t = np.arange(int(round(seconds * sr))) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


_AUDIO_CODEC = {".wav": "pcm_f32le", ".flac": "flac", ".mkv": "flac", ".m4a": "aac", ".mp4": "aac", ".aac": "aac"}


def _write_audio_stream(out, wav: np.ndarray, sr: int, layout: str, codec: str):
    """Add an audio stream for `wav` ((channels, n) float32) to `out`; -> (stream, frames to encode)."""
    stream = out.add_stream(codec, rate=sr, layout=layout)
    if codec == "aac":
        stream.bit_rate = 128000 * wav.shape[0]
    frames = []
    for pos in range(0, wav.shape[1], 1024):
        # Packed: PyAV 18 cannot build planar frames of 8 or more channels.
        packed = np.ascontiguousarray(wav[:, pos : pos + 1024].T).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(packed, format="flt", layout=layout)
        frame.sample_rate = sr
        frame.time_base = Fraction(1, sr)
        frame.pts = pos
        frames.append(frame)
    return stream, frames


def make_layout_audio(path: str | Path, wav: np.ndarray, layout: str, sr: int = 48000) -> Path:
    """Write (channels, n) float audio with an explicit FFmpeg channel layout ("5.1", "5.1(side)",
    "7.1", "stereo", "mono"), audio only, codec by suffix (.wav float PCM with a WAVEFORMATEXTENSIBLE
    channel mask, .flac, .mkv FLAC, .m4a/.mp4 AAC, .aac raw ADTS, whose files can be concatenated into
    one stream that changes layout). A WAV without a channel mask is what soundfile writes for more
    than two channels."""
    path = Path(path)
    wav = np.asarray(wav, np.float32)
    assert av.AudioLayout(layout).nb_channels == wav.shape[0], (layout, wav.shape)
    with av.open(str(path), "w") as out:
        stream, frames = _write_audio_stream(out, wav, sr, layout, _AUDIO_CODEC[path.suffix.lower()])
        for frame in frames:
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def make_multi_audio(
    path: str | Path, freqs: tuple[float, ...] = (440.0, 880.0), *, seconds: float = 2.0, sr: int = 48000, video: bool = False
) -> list[np.ndarray]:
    """A file (.mkv: FLAC; .mp4: AAC) with one mono audio stream per frequency in `freqs`, stream k a
    sine of freqs[k] Hz at 0.5 peak, optionally after a `pattern_frame` video stream at 25 fps.
    Returns the (n,) sources in stream order."""
    path = Path(path)
    sources = [tone(f, seconds, sr) for f in freqs]
    codec = _AUDIO_CODEC[path.suffix.lower()]
    with av.open(str(path), "w") as out:
        vs = None
        if video:
            vs = out.add_stream(VCODEC[path.suffix.lower()], rate=25)
            vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
        streams = [_write_audio_stream(out, s[None], sr, "mono", codec) for s in sources]
        if vs is not None:
            for k in range(round(seconds * 25)):
                frame = av.VideoFrame.from_ndarray(pattern_frame(k), format="rgb24")
                frame.pts = k
                frame.time_base = Fraction(1, 25)
                out.mux(vs.encode(frame))
            out.mux(vs.encode(None))
        for stream, frames in streams:
            for frame in frames:
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
    return sources
