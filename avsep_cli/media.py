"""All media input and output: probing, streamed decoding of audio and frames, and writing WAV/FLAC
files and videos. Everything is read with PyAV (FFmpeg), plain audio files included, so one decoder
and one downmix serve every input; plain audio files are written with soundfile.

Decoding is streamed so that a long video never sits in memory: audio arrives in chunks through
FFmpeg's resampler and frames are picked one at a time by timestamp. Audio is made mono by FFmpeg's
layout-aware downmix (`_Downmix`) for the models, or kept with all its channels at its own rate
(`channels="all"`, for full-band outputs), from the audio stream the caller names (`audio_stream`, as in
ffmpeg's `-map 0:a:N`) or else the first. Every time given to or returned
by this module is in seconds from the file's common origin, the earliest start of its audio and video
streams, so audio and frames decoded separately stay in sync even when one stream starts late. Every
problem with an input file becomes a one-line `MediaError` naming the file; every problem writing an
output becomes an `OutputError`; writes are atomic (see `fsio.atomic_path`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import av
import numpy as np
import soundfile as sf

from avsep_cli import fsio
from avsep_cli.errors import MediaError, OutputError

SAMPLE_RATE = 11025
DEFAULT_FPS = 8.0

log = logging.getLogger("avsep.media")

# A frame whose timestamp is within this of a target time counts as "at" it (pts are rounded to the
# stream time base, e.g. 1/12800 s).
_EPS = 1e-6
# Decoding forward is cheaper than seeking for gaps shorter than this (seconds) in `frames_at`.
_SEEK_GAP = 2.0
# Audio before this start (seconds) is decoded and dropped rather than seeked over: counting decoded
# samples is exact, while a seek relies on packet timestamps (1 ms steps in Matroska/WebM).
_AUDIO_SEEK_AFTER = 60.0
_AUDIO_PREROLL = 0.5
# Decoded audio past the stream's declared end, up to this long (seconds), is codec padding (AAC
# fills its last frame) and is dropped; more than that means the declared end was wrong.
_PADDING_MAX = 0.25
# A stream that ends this much before its declared end is reported as truncated.
_TRUNCATION_TOLERANCE = 1.0

_DEFAULT_ACODEC = {".mp4": "aac", ".m4v": "aac", ".mov": "aac", ".mkv": "flac", ".webm": "libopus", ".avi": "pcm_s16le"}
_DEFAULT_VCODEC = {".webm": "libvpx-vp9", ".avi": "mpeg4"}
_OPUS_RATES = (48000, 24000, 16000, 12000, 8000)
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_PCM_SUBTYPES = {"PCM_16", "PCM_24", "PCM_32", "PCM_S8", "PCM_U8"}


@dataclass(frozen=True)
class MediaInfo:
    """What `probe` learns from a file's header. `duration` runs from the common origin to the end of
    the longest stream; `audio_start` / `video_start` are each stream's start after the origin. The
    audio fields describe the audio stream that decoding uses, `audio_stream` (its index among the
    file's `audio_streams` audio streams, as in ffmpeg's `-map 0:a:N`). `warnings` holds one line per
    thing a user should hear about (several audio streams and none chosen): shown once by the caller."""

    path: Path
    duration: float
    has_audio: bool
    has_video: bool
    sample_rate: int | None
    channels: int | None
    fps: float | None
    width: int | None
    height: int | None
    audio_start: float
    video_start: float
    audio_streams: int = 0
    audio_stream: int | None = None
    channel_layout: str | None = None  # as the file declares it: "stereo", "5.1(side)", "6 channels" (no positions)
    warnings: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------- probing


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    """Open `path` for reading, turning every way it can fail into one `MediaError` line."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, not a media file")
    try:
        return av.open(str(path), mode="r")
    except PermissionError:
        raise MediaError(f"{path}: permission denied") from None
    except av.error.InvalidDataError:
        raise MediaError(f"{path}: not a media file FFmpeg can read, or truncated/corrupt") from None
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"{path}: cannot open: {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _streams(
    container, path: Path, audio_stream: int | None = None
) -> tuple[av.audio.stream.AudioStream | None, av.video.stream.VideoStream | None]:
    """Audio stream `audio_stream` (index among the audio streams; None: the first) and the first real
    video stream (cover art is not video). An index the file does not have is a `MediaError`."""
    streams = container.streams.audio
    n = len(streams)
    if audio_stream is None:
        audio = streams[0] if n else None
    elif isinstance(audio_stream, int) and not isinstance(audio_stream, bool) and 0 <= audio_stream < n:
        audio = streams[audio_stream]
    else:
        have = "no audio stream" if n == 0 else "1 audio stream (0)" if n == 1 else f"{n} audio streams (0 to {n - 1})"
        raise MediaError(f"{path}: has no audio stream {audio_stream}; it has {have}")
    video = None
    for s in container.streams.video:
        if not (s.disposition & av.stream.Disposition.attached_pic):
            video = s
            break
    return audio, video


def _stream_start(stream) -> float | None:
    if stream is None or stream.start_time is None:
        return None
    return float(stream.start_time * stream.time_base)


def _timing(container, audio, video) -> tuple[float, float, dict]:
    """(origin, duration from origin, {stream index: declared end in absolute seconds}). The origin is
    the earliest start of all audio streams and `video`, so it does not depend on which audio stream is
    decoded; the duration and ends are those of `audio` and `video`."""
    starts = [_stream_start(s) for s in (*container.streams.audio, video)]
    starts = [t for t in starts if t is not None]
    origin = min(starts) if starts else 0.0
    container_end = None
    if container.duration is not None:
        c_start = container.start_time / av.time_base if container.start_time is not None else origin
        container_end = c_start + container.duration / av.time_base
    ends = {}
    for s in (audio, video):
        if s is None:
            continue
        if s.duration is not None:
            ends[s.index] = (_stream_start(s) or 0.0) + float(s.duration * s.time_base)
        elif container_end is not None:
            ends[s.index] = container_end
    if ends:
        duration = max(ends.values()) - origin
    elif container_end is not None:
        duration = container_end - origin
    else:
        duration = 0.0
    return origin, max(duration, 0.0), ends


def _several_audio_streams(path: Path, count: int) -> str:
    """The one line for a file with `count` > 1 audio streams decoded without choosing one."""
    return (f"{path} has {count} audio streams; using the first (audio stream 0); "
            f"choose another with --audio-stream N (0 to {count - 1})")


def probe(path: str | os.PathLike, *, audio_stream: int | None = None) -> MediaInfo:
    """Read a file's header: streams, duration, rates and sizes, for audio stream `audio_stream`
    (None: the first; with several, `warnings` says so). Raises `MediaError` for anything that is not
    a readable audio/video file, and for an audio stream index the file does not have."""
    path = Path(path)
    with _open(path) as c:
        audio, video = _streams(c, path, audio_stream)
        if audio is None and video is None:
            raise MediaError(f"{path}: has no audio or video stream")
        n_audio = len(c.streams.audio)
        warnings = (_several_audio_streams(path, n_audio),) if audio_stream is None and n_audio > 1 else ()
        origin, duration, _ = _timing(c, audio, video)
        fps = None
        if video is not None:
            rate = video.average_rate or video.guessed_rate or video.base_rate
            fps = float(rate) if rate else None
        return MediaInfo(
            path=path,
            duration=duration,
            has_audio=audio is not None,
            has_video=video is not None,
            sample_rate=audio.codec_context.sample_rate if audio is not None else None,
            channels=audio.codec_context.layout.nb_channels if audio is not None else None,
            fps=fps,
            width=video.codec_context.width if video is not None else None,
            height=video.codec_context.height if video is not None else None,
            audio_start=(_stream_start(audio) or origin) - origin if audio is not None else 0.0,
            video_start=(_stream_start(video) or origin) - origin if video is not None else 0.0,
            audio_streams=n_audio,
            audio_stream=None if audio is None else audio_stream or 0,
            channel_layout=audio.codec_context.layout.name if audio is not None else None,
            warnings=warnings,
        )


def require(info: MediaInfo, *, audio: bool = True, video: bool = False, min_duration: float = 1.0) -> None:
    """Raise `MediaError` if `info` lacks a stream the caller needs or is shorter than `min_duration`."""
    if audio and not info.has_audio:
        raise MediaError(f"{info.path} has no audio stream")
    if video and not info.has_video:
        raise MediaError(f"{info.path} has no video stream (frames are needed)")
    if info.duration < min_duration:
        raise MediaError(f"{info.path} is {info.duration:.2f} s long; at least {min_duration:.1f} s is needed")


# --------------------------------------------------------------------------------------------- audio


def _decode(container, stream, path: Path) -> Iterator:
    """Decoded frames of `stream`; a decoder or demuxer failure becomes a `MediaError`."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
            frames = packet.decode()
        except StopIteration:
            return
        except av.error.FFmpegError as e:
            raise MediaError(f"{path}: decoding failed (truncated or corrupt file?): {_reason(e)}") from None
        yield from frames


def _expected_end(declared_end: float | None, origin: float, start: float, duration: float | None) -> float | None:
    """Where decoding should get to (absolute seconds): the declared end, or the requested end if sooner."""
    if declared_end is None:
        return None
    return declared_end if duration is None else min(declared_end, origin + start + duration)


def _check_complete(path: Path, kind: str, reached: float, expected_end: float | None) -> None:
    """Raise if a stream hit end-of-file well before `expected_end` (both absolute seconds)."""
    if expected_end is not None and reached < expected_end - _TRUNCATION_TOLERANCE:
        raise MediaError(
            f"{path}: {kind} ends at {reached:.2f} s, before {expected_end:.2f} s (truncated or corrupt file?)"
        )


def _known_layout(layout: av.AudioLayout) -> av.AudioLayout | None:
    """`layout`, or for channels without positions (a WAV without a channel mask) FFmpeg's default
    layout for that many channels ("6 channels" -> 5.1, as ffmpeg guesses); None if there is none."""
    if all(ch.name != "NONE" for ch in layout.channels):
        return layout
    try:
        return av.AudioLayout(f"{layout.nb_channels}c")
    except ValueError:
        return None


class _Downmix:
    """Decoded audio frames -> (n,) float32 mono at the frame's own rate, one array per frame.

    More than two channels go through FFmpeg's own layout-aware downmix, libswresample's matrix to
    stereo (what `ffmpeg -ac 2` does: centre and surrounds at -3 dB into left and right, LFE dropped, no
    normalisation for float output), and then left and right are averaged, so that mono comes out as it
    is and stereo exactly as (L + R) / 2, as always. Equivalently: FFmpeg's mono matrix (`-ac 1`) scaled
    by 1/sqrt(2), the gain that keeps stereo where it was; a centre-only 5.1 mix lands 3.01 dB below the
    same signal in mono (channel averaging put it 15.56 dB below). Channels without positions get
    FFmpeg's default layout for their count; a count without one is averaged. Rematrixing at the input
    rate holds back no samples, so the timing of the output is the timing of the frames.

    Samples are read from packed float frames only: PyAV 18 miscounts the planes of a planar frame with
    8 or more channels (a 7.1 track) and crashes the interpreter reading them."""

    def __init__(self):
        self.key = None  # (format, layout, rate) the converters below were made for
        self.to_float = self.to_stereo = self.relabel = None
        self.channels = 0

    def __call__(self, frame) -> Iterator[np.ndarray]:
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if key != self.key:  # the first frame, or a layout change mid-stream (broadcast 2.0 <-> 5.1)
            layout = frame.layout
            self.key, self.channels, known = key, layout.nb_channels, _known_layout(layout)
            rematrix = self.channels > 1 and known is not None and known.name != "stereo"
            self.relabel = known if rematrix and known is not layout else None
            self.to_stereo = av.AudioResampler(format="flt", layout="stereo") if rematrix else None
            # A known layout goes straight into the rematrix; anything else is first read as it is.
            self.to_float = None if rematrix and self.relabel is None else av.AudioResampler(format="flt")
        for f in [frame] if self.to_float is None else self.to_float.resample(frame):
            if self.relabel is not None:  # positions were unknown: the same samples, default layout
                sr, f = f.sample_rate, av.AudioFrame.from_ndarray(f.to_ndarray(), format="flt", layout=self.relabel)
                f.sample_rate = sr
            if self.to_stereo is None:
                x = f.to_ndarray().reshape(-1, self.channels).T  # packed (1, n * C) -> (C, n)
            else:
                out = [g.to_ndarray() for g in self.to_stereo.resample(f)]
                if not out:
                    continue
                x = np.concatenate(out, axis=1).reshape(-1, 2).T  # (2, n)
            yield x.mean(axis=0, dtype=np.float32)


class _Channels:
    """Decoded audio frames -> (C, n) float32 at the frame's own rate, every channel as it is (no downmix):
    what `iter_audio(channels="all")` gives, for outputs at the input's own rate and channel count. Read
    from packed float frames only, like `_Downmix` (PyAV 18 and planar frames of 8 or more channels). The
    channel count may not change mid-stream (a broadcast 2.0 <-> 5.1 switch): that is a `MediaError`."""

    def __init__(self, path: Path):
        self.path = path
        self.key = None
        self.to_float = None
        self.channels: int | None = None

    def __call__(self, frame) -> Iterator[np.ndarray]:
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if key != self.key:
            n = frame.layout.nb_channels
            if self.channels is not None and n != self.channels:
                raise MediaError(f"{self.path}: the audio changes from {self.channels} to {n} channels mid-stream; "
                                 "only a mono downmix can follow it (the models' rate: --sample-rate model)")
            self.key, self.channels = key, n
            self.to_float = None if frame.format.name == "flt" else av.AudioResampler(format="flt")
        for f in [frame] if self.to_float is None else self.to_float.resample(frame):
            yield np.ascontiguousarray(f.to_ndarray().reshape(-1, self.channels).T)  # packed (1, n * C) -> (C, n)


def iter_audio(
    path: str | os.PathLike,
    sr: int | None = SAMPLE_RATE,
    *,
    chunk_seconds: float = 30.0,
    start: float = 0.0,
    duration: float | None = None,
    audio_stream: int | None = None,
    channels: str = "mono",
) -> Iterator[np.ndarray]:
    """Decode audio stream `audio_stream` (index among the file's audio streams, as in ffmpeg's
    `-map 0:a:N`; None: the first) as float32 chunks of `chunk_seconds` (the last one shorter) at rate
    `sr` (None: the stream's own rate): mono (n,) chunks, or with `channels="all"` every channel as it is,
    (C, n) chunks.

    Mono is FFmpeg's layout-aware downmix (see `_Downmix`: mono as is, stereo as (L + R) / 2, the centre
    of 5.1 at -3 dB). Sample 0 is at `start` seconds after the common origin,
    so a stream that starts late is preceded by zeros. Output samples sit on the grid k / sr from the origin whatever
    `start` is, so windows cut from the same file line up with each other, and with the same file decoded
    at another rate. Codec padding past the
    stream's declared end (AAC fills its last frame) is dropped. With `duration` the output
    stops after round(duration * sr) samples (sooner if the file ends first; `load_audio` pads).
    Raises `MediaError` if the stream cannot be decoded to where it should end, or if the file has
    no audio stream `audio_stream`. Says nothing about a file with several audio streams: `probe`
    puts that in `MediaInfo.warnings`, for the caller to show once.
    """
    if channels not in ("mono", "all"):
        raise ValueError(f"channels must be 'mono' or 'all', not {channels!r}")
    path = Path(path)
    with _open(path) as c:
        audio, video = _streams(c, path, audio_stream)
        if audio is None:
            raise MediaError(f"{path} has no audio stream")
        origin, _, ends = _timing(c, audio, video)
        in_sr = audio.codec_context.sample_rate or sr or SAMPLE_RATE
        sr = sr or in_sr
        chunk = max(1, int(round(chunk_seconds * sr)))
        limit = None if duration is None else max(0, int(round(duration * sr)))
        # Input and output samples coincide every `grid` input samples (1/gcd(in_sr, sr) seconds).
        # Starting the resampler on such a point puts its output on the k / sr grid.
        grid = in_sr // math.gcd(in_sr, sr)
        seeked = start > _AUDIO_SEEK_AFTER
        if seeked:
            # Land early enough to reach a grid point before `start` and to let the decoder warm up
            # (AAC overlaps frames); what comes before is dropped below.
            back = _AUDIO_PREROLL + grid / in_sr
            try:
                c.seek(int((origin + start - back) / audio.time_base), stream=audio, backward=True)
            except av.error.FFmpegError:
                c.seek(0, stream=audio)  # unseekable: decode from the top and drop
        convert = _Downmix() if channels == "mono" else _Channels(path)
        resampler = None  # (format, layout, AudioResampler or None), made for the first frame (its channels)
        target = int(math.floor(start * in_sr + 1e-6))  # `start` in input samples from the origin
        drop_in = None  # input samples to drop (> 0) or zeros to insert (< 0); set by the first frame
        drop_out = 0  # output samples before `start`; set by the first frame
        declared_end = ends.get(audio.index)
        cap = None if declared_end is None else max(0, int(round((declared_end - origin - start) * sr)))
        tail: list[np.ndarray] = []  # output past `cap`, held until it is known to be padding or not
        n_tail = 0
        passed = 0  # samples passed on by `gate`
        pending: list[np.ndarray] = []
        n_pending = 0
        emitted = 0
        reached = origin

        def gate(x: np.ndarray) -> Iterator[np.ndarray]:  # x: (n,) or (C, n), as every array below
            nonlocal cap, n_tail, passed
            if cap is not None:
                room = max(0, cap - passed)
                if x.shape[-1] > room:
                    tail.append(x[..., room:])
                    n_tail += x.shape[-1] - room
                    x = x[..., :room]
                if n_tail > _PADDING_MAX * sr:  # real audio past the declared end: keep it all
                    x = np.concatenate([x, *tail], axis=-1)
                    tail.clear()
                    cap = None
            passed += x.shape[-1]
            yield from take(x)

        def take(x: np.ndarray) -> Iterator[np.ndarray]:
            nonlocal n_pending, emitted
            if limit is not None:
                x = x[..., : max(0, limit - emitted - n_pending)]
            if x.shape[-1]:
                pending.append(x)
                n_pending += x.shape[-1]
            while n_pending >= chunk:
                buf = np.concatenate(pending, axis=-1)
                pending[:] = [buf[..., chunk:]] if buf.shape[-1] > chunk else []
                n_pending = buf.shape[-1] - chunk
                emitted += chunk
                yield buf[..., :chunk]

        def resample(x: np.ndarray | None) -> Iterator[np.ndarray]:
            nonlocal drop_out, resampler
            if resampler is None and x is not None:
                if channels == "mono":
                    resampler = ("fltp", "mono", av.AudioResampler(format="fltp", layout="mono", rate=sr))
                elif sr != in_sr:  # packed float in and out (see _Channels)
                    n = x.shape[0]
                    layout = "mono" if n == 1 else "stereo" if n == 2 else f"{n}c"
                    resampler = ("flt", layout, av.AudioResampler(format="flt", layout=layout, rate=sr))
                else:  # every channel at its own rate: nothing to resample
                    resampler = (None, None, None)
            if resampler is None or resampler[2] is None:
                outs = [] if x is None else [x]
            else:
                fmt, layout, r = resampler
                frame = None
                if x is not None:
                    data = x[None] if x.ndim == 1 else np.ascontiguousarray(x.T).reshape(1, -1)  # (1, n) or packed (1, n * C)
                    frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
                    frame.sample_rate = in_sr
                outs = [f.to_ndarray()[0] if fmt == "fltp" else f.to_ndarray().reshape(-1, f.layout.nb_channels).T
                        for f in r.resample(frame)]
            for y in outs:
                if drop_out > 0:
                    cut = min(drop_out, y.shape[-1])
                    y, drop_out = y[..., cut:], drop_out - cut
                yield from gate(y)

        done = False
        for frame in _decode(c, audio, path):
            if frame.time is not None:
                reached = frame.time + frame.samples / frame.sample_rate
            if frame.sample_rate != in_sr:
                raise MediaError(f"{path}: audio frames at {frame.sample_rate} Hz in a {in_sr} Hz stream "
                                 "(the rate changes mid-stream)")
            for x in convert(frame):  # (n,) mono or (C, n)
                if drop_in is None:
                    first = frame.time if frame.time is not None else origin
                    p = int(round((first - origin) * in_sr))  # first decoded sample, from the origin
                    if seeked:  # start on real samples only: the first grid point after p
                        q = -(-p // grid) * grid
                        q = q if q <= target else (target // grid) * grid
                    else:  # everything from the stream's start goes through, as in a full decode
                        q = (min(p, target) // grid) * grid
                    drop_in = q - p
                    drop_out = int(round(start * sr)) - q * sr // in_sr
                    if drop_in < 0:
                        x = np.concatenate([np.zeros(x.shape[:-1] + (-drop_in,), np.float32), x], axis=-1)
                        drop_in = 0
                if drop_in > 0:
                    cut = min(drop_in, x.shape[-1])
                    x, drop_in = x[..., cut:], drop_in - cut
                if x.shape[-1]:
                    yield from resample(x)
            if limit is not None and emitted + n_pending >= limit:
                done = True
                break
        if not done:
            yield from resample(None)
            _check_complete(path, "audio", reached, _expected_end(ends.get(audio.index), origin, start, duration))
        if n_pending:
            emitted += n_pending
            yield np.concatenate(pending, axis=-1)


def load_audio(
    path: str | os.PathLike,
    sr: int = SAMPLE_RATE,
    *,
    start: float = 0.0,
    duration: float | None = None,
    audio_stream: int | None = None,
) -> np.ndarray:
    """The whole of `iter_audio` as one float32 array; exactly round(duration * sr) samples when
    `duration` is given (zero-padded if the file ends first)."""
    parts = list(iter_audio(path, sr, start=start, duration=duration, audio_stream=audio_stream))
    wav = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if duration is not None:
        n = max(0, int(round(duration * sr)))
        wav = np.pad(wav[:n], (0, max(0, n - len(wav))))
    return wav.astype(np.float32, copy=False)


def read_audio_file(path: str | os.PathLike, sr: int = SAMPLE_RATE, *, audio_stream: int | None = None) -> np.ndarray:
    """Read an audio file (e.g. a ground-truth stem: WAV, FLAC, or anything FFmpeg reads) as float32
    mono at rate `sr`. It is `load_audio` from the start of the file: the same decoder, downmix and
    resampler as for videos, so a multichannel WAV with a channel mask, or one without (FFmpeg's
    default layout for its channel count), is downmixed like a film's 5.1 track."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, not an audio file")
    return load_audio(path, sr, audio_stream=audio_stream)


# --------------------------------------------------------------------------------------------- frames


def _video_stream(c, path: Path):
    _, video = _streams(c, path)
    if video is None:
        raise MediaError(f"{path} has no video stream (frames are needed)")
    video.thread_type = "AUTO"
    return video


def _rgb(frame, size: tuple[int, int] | None) -> np.ndarray:
    if size is None:
        return frame.to_ndarray(format="rgb24")
    w, h = size
    return frame.reformat(width=int(w), height=int(h), format="rgb24", interpolation="AREA").to_ndarray()


def _frame_time(frame, prev_time: float | None, step: float) -> float:
    if frame.time is not None:
        return float(frame.time)
    return 0.0 if prev_time is None else prev_time + step


def iter_frames(
    path: str | os.PathLike,
    fps: float = DEFAULT_FPS,
    *,
    start: float = 0.0,
    duration: float | None = None,
    size: tuple[int, int] | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (t, HxWx3 uint8 RGB) for t = start + k / fps: the latest decoded frame whose timestamp is
    at or before t, so variable-frame-rate video is sampled by time. Before the first frame the first
    frame is used. Without `duration` it stops at the end of the video; with it, exactly the times
    below start + duration are yielded, holding the last frame if the video ends first. `size=(w, h)`
    resizes. Holds at most two decoded frames.
    """
    if fps <= 0:
        raise ValueError("fps must be positive")
    path = Path(path)
    n_max = None if duration is None else int(math.ceil(duration * fps - 1e-9))
    with _open(path) as c:
        video = _video_stream(c, path)
        audio, _ = _streams(c, path)
        origin, _, ends = _timing(c, audio, video)
        step = 1.0 / float(video.average_rate or video.guessed_rate or 25)
        if start > 0:
            try:
                c.seek(int((origin + start) / video.time_base), stream=video, backward=True)
            except av.error.FFmpegError:
                c.seek(0, stream=video)
        k = 0
        held = None  # [time from origin, VideoFrame, its RGB once converted]: the frame times map to

        def emit_until(limit: float) -> Iterator[tuple[float, np.ndarray]]:
            """Yield `held` for every target time before `limit`."""
            nonlocal k
            while n_max is None or k < n_max:
                t = start + k / fps
                if t + _EPS >= limit:
                    return
                if held[2] is None:
                    held[2] = _rgb(held[1], size)
                yield t, held[2]
                k += 1

        last = None
        for frame in _decode(c, video, path):
            ft = _frame_time(frame, None if last is None else last + origin, step) - origin
            last = ft
            if held is None:
                held = [ft, frame, None]
            yield from emit_until(ft)
            if n_max is not None and k >= n_max:
                return
            if held[1] is not frame:
                held = [ft, frame, None]
        if held is None:
            return
        _check_complete(path, "video", held[0] + origin, _expected_end(ends.get(video.index), origin, start, duration))
        if duration is None:  # the last frame lasts its own duration
            yield from emit_until(held[0] + (float(held[1].duration * video.time_base) if held[1].duration else step))
        else:
            yield from emit_until(math.inf)


def frames_at(path: str | os.PathLike, times: Sequence[float], size: tuple[int, int] | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 frames at `times` (seconds from the origin, any order): for each, the latest
    frame at or before it. Seeks to the keyframe before each time unless it is a short way ahead."""
    path = Path(path)
    times = [float(t) for t in times]
    if not times:
        raise ValueError("frames_at needs at least one time")
    order = sorted(range(len(times)), key=times.__getitem__)
    out: list[np.ndarray | None] = [None] * len(times)
    with _open(path) as c:
        video = _video_stream(c, path)
        audio, _ = _streams(c, path)
        origin, _, ends = _timing(c, audio, video)
        step = 1.0 / float(video.average_rate or video.guessed_rate or 25)
        frames = None
        prev = cur = None  # (time from origin, VideoFrame)
        exhausted = False
        for i in order:
            t = times[i]
            if frames is None or (cur is not None and t - cur[0] > _SEEK_GAP):
                try:
                    c.seek(int((origin + max(t, 0.0)) / video.time_base), stream=video, backward=True)
                except av.error.FFmpegError:
                    c.seek(0, stream=video)
                frames = _decode(c, video, path)
                prev = cur = None
                exhausted = False
            # Advance until the newest decoded frame is after t (or the stream ends).
            while not exhausted and (cur is None or cur[0] <= t + _EPS):
                try:
                    frame = next(frames)
                except StopIteration:
                    exhausted = True
                    break
                prev, cur = cur, (_frame_time(frame, cur[0] + origin if cur else None, step) - origin, frame)
            if cur is None:
                raise MediaError(f"{path}: no video frame could be decoded")
            if exhausted:  # times past the declared end get the last frame; short of it means truncation
                _check_complete(path, "video", cur[0] + origin, _expected_end(ends.get(video.index), origin, t, 0.0))
            if cur[0] <= t + _EPS or prev is None:
                chosen = cur[1]
            else:
                chosen = prev[1]
            out[i] = _rgb(chosen, size)
    return np.stack(out)


# --------------------------------------------------------------------------------------------- writing


def _as_channels(wav: np.ndarray) -> np.ndarray:
    """(n,) or (c, n) float → (c, n) float32."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        return wav[None]
    if wav.ndim == 2 and wav.shape[0] <= 16:
        return wav
    raise ValueError(f"audio must have shape (n,) or (channels, n); got {wav.shape}")


def _clip(wav: np.ndarray, path: Path) -> np.ndarray:
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    if peak > 1.0:
        log.warning("%s: audio peaks at %.2f and was clipped to [-1, 1]", path, peak)
        return np.clip(wav, -1.0, 1.0)
    return wav


def _write_sound(path: Path, wav: np.ndarray, sr: int, fmt: str, subtype: str | None) -> Path:
    x = _as_channels(wav)
    if subtype is None:
        subtype = sf.default_subtype(fmt)
    if subtype.upper() in _PCM_SUBTYPES or fmt == "FLAC":
        x = _clip(x, path)
    if not sf.check_format(fmt, subtype):
        raise ValueError(f"soundfile cannot write {fmt} with subtype {subtype}")
    try:
        with fsio.atomic_path(path) as tmp:
            sf.write(str(tmp), x.T, int(sr), subtype=subtype, format=fmt)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {_reason(e)}") from None
    except sf.LibsndfileError as e:
        raise OutputError(f"cannot write {path}: {e}") from None
    return path


def write_wav(path: str | os.PathLike, wav: np.ndarray, sr: int = SAMPLE_RATE, *, subtype: str = "PCM_16") -> Path:
    """Write (n,) or (c, n) float audio as WAV, atomically; PCM subtypes clip to [-1, 1] (with a
    warning when that changes anything). `subtype`: PCM_16, PCM_24 or FLOAT."""
    if subtype not in ("PCM_16", "PCM_24", "FLOAT"):
        raise ValueError(f"write_wav subtype must be PCM_16, PCM_24 or FLOAT, not {subtype!r}")
    return _write_sound(Path(path), wav, sr, "WAV", subtype)


def write_audio(path: str | os.PathLike, wav: np.ndarray, sr: int, *, subtype: str | None = None) -> Path:
    """Write audio in the format named by the suffix (.wav, .flac, .ogg ...), atomically; `subtype`
    defaults to soundfile's for that format (PCM_16 for WAV and FLAC)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").upper()
    if fmt not in sf.available_formats():
        raise OutputError(f"cannot write {path}: unknown audio format {path.suffix!r}")
    return _write_sound(path, wav, sr, fmt, subtype)


def _audio_rate(codec: str, sr: int) -> int:
    """The rate to encode `sr` audio at: its own where the codec has it, else the next one up (the encoder
    resamples the frames)."""
    rates = _OPUS_RATES if codec in ("libopus", "opus") else _AAC_RATES if codec == "aac" else None
    if rates is None or sr in rates:
        return sr
    return min((r for r in rates if r >= sr), default=max(rates))


def _add_audio_stream(out, codec: str, sr: int, channels: int):
    rate = _audio_rate(codec, sr)
    stream = out.add_stream(codec, rate=rate, layout="mono" if channels == 1 else "stereo" if channels == 2 else f"{channels}c")
    if codec == "aac":
        stream.bit_rate = 96000 * channels
    elif codec in ("libopus", "opus"):
        stream.bit_rate = 128000 * channels
    return stream


class _AudioFeeder:
    """Feeds float audio to an encoder piecewise, so it can be interleaved with video: a (c, n) array, or an
    open `soundfile.SoundFile` read in blocks (a stem of any length stays out of memory; its samples are
    clipped to [-1, 1] on the way, with one warning)."""

    def __init__(self, out, stream, source, sr: int, pts0: int = 0, shown: Path | None = None):
        self.out, self.stream, self.source, self.sr = out, stream, source, sr
        array = isinstance(source, np.ndarray)
        self.channels, self.total = (source.shape[0], source.shape[1]) if array else (source.channels, source.frames)
        self.read = self._slice if array else self._read
        self.layout = "mono" if self.channels == 1 else "stereo" if self.channels == 2 else f"{self.channels}c"
        self.pos = 0
        self.pts0 = pts0
        self.shown, self.peak = shown, 0.0

    def _slice(self, n: int) -> np.ndarray:
        return self.source[:, self.pos : self.pos + n]

    def _read(self, n: int) -> np.ndarray:
        x = self.source.read(n, dtype="float32", always_2d=True).T  # (c, n)
        self.peak = max(self.peak, float(np.max(np.abs(x))) if x.size else 0.0)
        return np.clip(x, -1.0, 1.0)

    def until(self, t: float) -> None:
        """Encode the samples before time `t` (seconds of audio)."""
        end = self.total if math.isinf(t) else min(self.total, int(round(t * self.sr)))
        while self.pos < end:
            x = self.read(min(end - self.pos, 4096))
            if not x.shape[1]:  # the file holds fewer samples than its header said
                self.total = self.pos
                break
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout=self.layout)
            frame.sample_rate = self.sr
            frame.pts = self.pts0 + self.pos
            frame.time_base = Fraction(1, self.sr)
            self.out.mux(self.stream.encode(frame))
            self.pos += x.shape[1]

    def finish(self) -> None:
        self.until(math.inf)
        self.out.mux(self.stream.encode(None))
        if self.peak > 1.0:
            log.warning("%s: audio peaks at %.2f and was clipped to [-1, 1]", self.shown, self.peak)


def _container_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if not suffix:
        raise OutputError(f"cannot write {path}: no file suffix to choose a container (.mp4, .mkv, ...)")
    return suffix


def _open_output(tmp: Path, path: Path):
    try:
        return av.open(str(tmp), mode="w")
    except ValueError:
        raise OutputError(f"cannot write {path}: FFmpeg has no muxer for {path.suffix!r}") from None
    except (av.error.FFmpegError, OSError) as e:
        raise OutputError(f"cannot write {path}: {_reason(e)}") from None


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    audio: np.ndarray | None = None,
    sr: int = SAMPLE_RATE,
    vcodec: str | None = None,
    acodec: str | None = None,
    crf: int = 18,
    pix_fmt: str = "yuv420p",
    preset: str = "medium",
) -> Path:
    """Encode HxWx3 uint8 RGB `frames` at a constant `fps` (and optional (n,) or (c, n) float `audio`
    at rate `sr`) into the container named by the suffix, atomically; frames are consumed one at a
    time. Codecs default by container: video libx264 (webm libvpx-vp9, avi mpeg4); audio aac for
    mp4/mov (flac allowed), flac for mkv, libopus for webm, pcm_s16le for avi."""
    path = Path(path)
    suffix = _container_suffix(path)
    vcodec = vcodec or _DEFAULT_VCODEC.get(suffix, "libx264")
    wav = None
    if audio is not None:
        wav = _clip(_as_channels(audio), path)
        acodec = acodec or _DEFAULT_ACODEC.get(suffix, "aac")
    rate = Fraction(fps).limit_denominator(100000)
    try:
        with fsio.atomic_path(path) as tmp, _open_output(tmp, path) as out:
            vstream = None
            feeder = None
            n = 0
            for img in frames:
                img = np.asarray(img)
                if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                    raise ValueError(f"frames must be HxWx3 uint8; got {img.shape} {img.dtype}")
                if vstream is None:
                    h, w = img.shape[:2]
                    if pix_fmt in ("yuv420p", "yuv422p", "nv12") and (w % 2 or h % 2):
                        raise ValueError(f"{pix_fmt} needs even frame sizes; got {w}x{h}")
                    vstream = out.add_stream(vcodec, rate=rate)
                    vstream.width, vstream.height, vstream.pix_fmt = w, h, pix_fmt
                    vstream.options = _video_options(vcodec, crf, preset)
                    if vcodec == "mpeg4":
                        vstream.bit_rate = max(1_000_000, w * h * 30)
                    if wav is not None:
                        feeder = _AudioFeeder(out, _add_audio_stream(out, acodec, sr, wav.shape[0]), wav, sr)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = n
                frame.time_base = 1 / rate
                out.mux(vstream.encode(frame))
                n += 1
                if feeder is not None:
                    feeder.until(n / rate)
            if vstream is None:
                raise ValueError("write_video needs at least one frame")
            out.mux(vstream.encode(None))
            if feeder is not None:
                feeder.finish()
    except OSError as e:
        raise OutputError(f"cannot write {path}: {_reason(e)}") from None
    return path


def _video_options(vcodec: str, crf: int, preset: str = "medium") -> dict[str, str]:
    if vcodec in ("libx264", "libx265"):
        return {"crf": str(crf), "preset": preset}
    if vcodec in ("libvpx-vp9", "libvpx"):
        return {"crf": str(crf), "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}
    return {}


def mux_audio(
    video_path: str | os.PathLike, audio, sr: int | None, out_path: str | os.PathLike, *, acodec: str | None = None
) -> Path:
    """Copy `video_path`'s video stream (packets, no re-encode) into `out_path` with `audio` as its only
    audio, atomically: (n,) or (c, n) float at rate `sr`, or the path of a sound file (WAV, FLAC: read in
    blocks at its own rate and channel count, `sr` unused), sample 0 at the common origin. The audio codec
    follows the container (aac for mp4/mov at the audio's own rate, flac for mkv, opus for webm)."""
    video_path, out_path = Path(video_path), Path(out_path)
    suffix = _container_suffix(out_path)
    acodec = acodec or _DEFAULT_ACODEC.get(suffix, "aac")
    with contextlib.ExitStack() as stack:
        if isinstance(audio, (str, os.PathLike)):
            try:
                source = stack.enter_context(sf.SoundFile(str(audio)))
            except (OSError, sf.SoundFileError, RuntimeError) as e:
                raise MediaError(f"{audio}: cannot read: {e}") from None
            sr, channels = source.samplerate, source.channels
        else:
            source = _clip(_as_channels(audio), out_path)
            channels = source.shape[0]
        c = stack.enter_context(_open(video_path))
        in_audio, in_video = _streams(c, video_path)
        if in_video is None:
            raise MediaError(f"{video_path} has no video stream (frames are needed)")
        origin, _, _ = _timing(c, in_audio, in_video)
        try:
            with fsio.atomic_path(out_path) as tmp, _open_output(tmp, out_path) as out:
                try:
                    vstream = out.add_stream_from_template(in_video)
                except ValueError as e:
                    raise OutputError(f"cannot write {out_path}: {e}") from None
                astream = _add_audio_stream(out, acodec, sr, channels)
                feeder = _AudioFeeder(out, astream, source, sr, pts0=int(round(origin * sr)), shown=out_path)
                for packet in c.demux(in_video):
                    if packet.dts is None and packet.pts is None:
                        continue  # the demuxer's end-of-stream flush packet
                    t = float((packet.pts if packet.pts is not None else packet.dts) * in_video.time_base)
                    feeder.until(t - origin + 0.5)
                    packet.stream = vstream
                    out.mux(packet)
                feeder.finish()
        except av.error.FFmpegError as e:
            raise MediaError(f"{video_path}: cannot copy the video stream: {_reason(e)}") from None
        except OSError as e:
            raise OutputError(f"cannot write {out_path}: {_reason(e)}") from None
    return out_path


SUBTYPES = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}  # bits -> soundfile subtype (32: IEEE float)


def sound_subtype(fmt: str, bits: int) -> str:
    """The soundfile subtype of `bits` (16, 24 or 32 = float) in `fmt` ("wav" or "flac"); FLAC has no
    float samples, so flac with 32 bits is an `OutputError`."""
    fmt = fmt.lower()
    if fmt not in ("wav", "flac") or bits not in SUBTYPES:
        raise OutputError(f"cannot write {fmt} audio with {bits} bits: expected wav or flac with 16, 24 or 32 bits")
    if fmt == "flac" and bits == 32:
        raise OutputError("FLAC has no 32-bit float samples: use --bits 16 or 24 with --format flac, or --format wav")
    return SUBTYPES[bits]


class WavWriter:
    """A streamed WAV or FLAC writer (by the suffix of `shown`, else of `path`; WAV without one):
    `channels` channels at rate `sr`, 16- or 24-bit PCM or 32-bit float (`bits`). Every failure (a full
    disk, a vanished folder) is one `OutputError` naming `shown` (the file's final name) and the cause.
    `write` takes (n,) or (C, n) float samples; PCM clips them to [-1, 1], float writes them as they are."""

    def __init__(self, path: str | os.PathLike, sr: int, shown: str | os.PathLike | None = None, channels: int = 1,
                 bits: int = 16):
        self.path, self.shown = Path(path), Path(shown or path)
        fmt = "flac" if (self.shown.suffix or self.path.suffix).lower() == ".flac" else "wav"
        subtype = sound_subtype(fmt, bits)
        self.clip = subtype != "FLOAT"
        self.f = self._guard(lambda: sf.SoundFile(self.path, "w", int(sr), int(channels), subtype, format=fmt.upper()))

    def _guard(self, op):
        try:
            return op()
        except (OSError, sf.SoundFileError, RuntimeError) as e:  # libsndfile reports ENOSPC as "System error."
            raise OutputError(fsio.describe_write_error(e, self.shown)) from None

    def write(self, samples: np.ndarray) -> None:
        x = np.asarray(samples, dtype=np.float32)
        x = np.clip(x, -1.0, 1.0) if self.clip else x
        x = x.T if x.ndim == 2 else x  # (C, n) -> soundfile's (n, C)
        self._guard(lambda: self.f.write(x))

    def close(self) -> None:
        self._guard(self.f.close)

    def __enter__(self) -> "WavWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            with contextlib.suppress(Exception):
                self.f.close()
