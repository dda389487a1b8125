"""Files with several audio streams in avsep_cli.media: `audio_stream=N` picks the N-th (as ffmpeg's
`-map 0:a:N`), `probe` counts them and warns once when none was chosen, and an index the file does
not have is one `MediaError` line. Files are written by tests/mediagen.py (PyAV)."""

from __future__ import annotations

import logging
from fractions import Fraction

import av
import numpy as np
import pytest

import mediagen as mg
from avsep_cli import media
from avsep_cli.errors import MediaError

SR = media.SAMPLE_RATE


def peak_hz(wav: np.ndarray, sr: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.fft.rfftfreq(len(wav), 1 / sr)[np.argmax(spectrum)])


@pytest.fixture(scope="module")
def two_streams(tmp_path_factory):
    """{ext: path} for files with a video stream, audio stream 0 at 440 Hz and audio stream 1 at 880 Hz."""
    d = tmp_path_factory.mktemp("streams")
    out = {}
    for ext in (".mkv", ".mp4"):
        mg.make_multi_audio(d / f"two{ext}", (440.0, 880.0), video=True)
        out[ext] = d / f"two{ext}"
    return out


@pytest.mark.parametrize("ext", [".mkv", ".mp4"])
def test_audio_stream_selects_the_stream(two_streams, ext):
    path = two_streams[ext]
    assert peak_hz(media.load_audio(path)) == pytest.approx(440, abs=3)  # the first, as before
    assert peak_hz(media.load_audio(path, audio_stream=0)) == pytest.approx(440, abs=3)
    second = media.load_audio(path, audio_stream=1)
    assert peak_hz(second) == pytest.approx(880, abs=3)
    assert len(second) == 2 * SR
    np.testing.assert_array_equal(np.concatenate(list(media.iter_audio(path, chunk_seconds=0.5, audio_stream=1))), second)
    window = media.load_audio(path, start=0.5, duration=1.0, audio_stream=1)
    np.testing.assert_array_equal(window, second[SR // 2 : SR // 2 + SR])
    assert peak_hz(media.read_audio_file(path, audio_stream=1)) == pytest.approx(880, abs=3)


def test_probe_counts_streams_and_warns_once(two_streams, tmp_path, caplog):
    path = two_streams[".mkv"]
    with caplog.at_level(logging.DEBUG, logger="avsep.media"):
        info = media.probe(path)
        media.load_audio(path)  # the decoders stay silent: the warning is the caller's to show, once
        list(media.iter_audio(path))
    assert not caplog.records
    assert (info.audio_streams, info.audio_stream) == (2, 0)
    assert info.warnings == (
        f"{path} has 2 audio streams; using the first (audio stream 0); choose another with --audio-stream N (0 to 1)",
    )
    chosen = media.probe(path, audio_stream=1)
    assert (chosen.audio_streams, chosen.audio_stream, chosen.warnings) == (2, 1, ())
    assert (chosen.sample_rate, chosen.channels, chosen.channel_layout) == (48000, 1, "mono")
    assert media.probe(path, audio_stream=0).warnings == ()  # chosen explicitly: nothing to say
    one = tmp_path / "one.mkv"
    mg.make_media(one, seconds=1.0)
    assert media.probe(one).warnings == ()


def test_audio_stream_out_of_range_is_one_line(two_streams, tmp_path):
    path = two_streams[".mkv"]
    calls = {
        "probe": lambda n: media.probe(path, audio_stream=n),
        "load_audio": lambda n: media.load_audio(path, audio_stream=n),
        "iter_audio": lambda n: next(media.iter_audio(path, audio_stream=n)),
        "read_audio_file": lambda n: media.read_audio_file(path, audio_stream=n),
    }
    for name, call in calls.items():
        for n in (5, 2, -1):
            with pytest.raises(MediaError) as e:
                call(n)
            assert str(e.value) == f"{path}: has no audio stream {n}; it has 2 audio streams (0 to 1)", name
    silent = tmp_path / "silent.mp4"
    mg.make_media(silent, seconds=1.0, audio=False)
    with pytest.raises(MediaError, match=r"silent\.mp4: has no audio stream 0; it has no audio stream$"):
        media.probe(silent, audio_stream=0)
    assert media.probe(silent).audio_streams == 0 and media.probe(silent).audio_stream is None


def test_origin_does_not_depend_on_the_chosen_stream(tmp_path):
    """Audio stream 1 starts 0.5 s after the video: its audio is preceded by silence, and frames keep
    their times whichever audio stream is decoded (the origin spans all audio streams)."""
    path = tmp_path / "late.mkv"
    sr = 48000
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
        streams = [out.add_stream("flac", rate=sr, layout="mono") for _ in range(2)]
        for k in range(50):
            frame = av.VideoFrame.from_ndarray(mg.pattern_frame(k), format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, 25)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        for stream, (freq, offset) in zip(streams, [(440.0, 0.0), (880.0, 0.5)]):
            x = mg.tone(freq, 1.5, sr)
            for pos in range(0, len(x), 1024):
                f = av.AudioFrame.from_ndarray(x[None, pos : pos + 1024], format="fltp", layout="mono")
                f.sample_rate, f.time_base, f.pts = sr, Fraction(1, sr), int(offset * sr) + pos
                out.mux(stream.encode(f))
            out.mux(stream.encode(None))
    info0, info1 = media.probe(path, audio_stream=0), media.probe(path, audio_stream=1)
    assert info0.audio_start == pytest.approx(0.0, abs=1e-3) and info1.audio_start == pytest.approx(0.5, abs=1e-3)
    late = media.load_audio(path, audio_stream=1, duration=2.0)
    onset = np.argmax(np.abs(late) > 0.05) / SR
    assert onset == pytest.approx(0.5, abs=0.01)
    assert mg.frame_index(media.frames_at(path, [1.0])[0]) == 25
