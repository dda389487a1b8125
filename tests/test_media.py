"""Tests for avsep_cli.media on real files written by tests/mediagen.py (PyAV, independent of media)."""

from __future__ import annotations

import hashlib
import logging
import math
import os

import av
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import correlate, resample_poly

import mediagen as mg
from avsep_cli import media
from avsep_cli.errors import MediaError, OutputError

SR = media.SAMPLE_RATE
SRC_SR = 48000
FORMATS = [".mp4", ".mkv", ".webm", ".mov", ".avi"]
LOSSLESS_AUDIO = {".mkv", ".avi"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One 3 s, 160x120, 25 fps file per container, with its known source audio."""
    d = tmp_path_factory.mktemp("media")
    return {ext: (d / f"clip{ext}", mg.make_media(d / f"clip{ext}")) for ext in FORMATS}


def reference(stereo: np.ndarray, sr: int = SRC_SR) -> np.ndarray:
    """What decoding should give: the channel mean resampled to 11025 Hz (by scipy, not FFmpeg)."""
    return resample_poly(stereo.mean(axis=0), SR, sr).astype(np.float32)


def best_lag(x: np.ndarray, ref: np.ndarray, max_lag: int) -> tuple[int, float]:
    """(lag, correlation) maximising corr(x[n + lag], ref[n]) over |lag| <= max_lag."""
    n = min(len(x), len(ref)) - 2 * max_lag
    xc = correlate(x[max_lag : max_lag + n], ref[max_lag : max_lag + n], mode="full")
    mid = n - 1
    window = xc[mid - max_lag : mid + max_lag + 1]
    lag = int(np.argmax(window)) - max_lag
    a = x[max_lag + lag : max_lag + lag + n]
    b = ref[max_lag : max_lag + n]
    return lag, float(np.corrcoef(a, b)[0, 1])


def expected_index(times: list[float], t: float) -> int:
    """The rule iter_frames promises: the latest frame at or before t (the first one before it)."""
    return max([j for j, ft in enumerate(times) if ft <= t + 1e-6], default=0)


# ----------------------------------------------------------------------------------------- probe


@pytest.mark.parametrize("ext", FORMATS)
def test_probe_reports_streams(files, ext):
    path, _ = files[ext]
    info = media.probe(path)
    assert info.path == path
    assert info.has_audio and info.has_video
    assert abs(info.duration - 3.0) < 0.05
    assert (info.sample_rate, info.channels) == (SRC_SR, 2)
    assert info.fps == pytest.approx(25.0)
    assert (info.width, info.height) == (160, 120)
    assert abs(info.audio_start) < 0.03 and abs(info.video_start) < 0.03
    layout = "2 channels" if ext == ".avi" else "stereo"  # AVI PCM carries no channel positions
    assert (info.audio_streams, info.audio_stream, info.channel_layout, info.warnings) == (1, 0, layout, ())


def test_probe_errors_name_the_file(tmp_path, files):
    cases = {}
    cases["no such file"] = tmp_path / "missing.mp4"
    cases["is a folder"] = tmp_path
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    cases["not a media file"] = junk
    cut = tmp_path / "cut.mp4"  # moov atom is at the end, so half a file has none
    data = files[".mp4"][0].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    cases["truncated"] = cut
    srt = tmp_path / "subs.srt"
    srt.write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n\n")
    cases["has no audio or video stream"] = srt
    for phrase, path in cases.items():
        with pytest.raises(MediaError) as e:
            media.probe(path)
        msg = str(e.value)
        assert phrase in msg and str(path) in msg and "\n" not in msg


def test_require_messages(tmp_path):
    info = media.MediaInfo(tmp_path / "a.mp4", 0.5, False, True, None, None, 25.0, 64, 48, 0.0, 0.0)
    with pytest.raises(MediaError, match="has no audio stream"):
        media.require(info, audio=True)
    with pytest.raises(MediaError, match=r"is 0\.50 s long; at least 1\.0 s is needed"):
        media.require(info, audio=False, video=True)
    no_video = media.MediaInfo(tmp_path / "a.wav", 2.0, True, False, SR, 1, None, None, None, 0.0, 0.0)
    with pytest.raises(MediaError, match=r"has no video stream \(frames are needed\)"):
        media.require(no_video, audio=True, video=True)
    media.require(no_video, audio=True, video=False, min_duration=1.0)


# ----------------------------------------------------------------------------------------- audio


@pytest.mark.parametrize("ext", FORMATS)
def test_audio_matches_source(files, ext):
    path, src = files[ext]
    wav = media.load_audio(path, duration=3.0)
    assert wav.dtype == np.float32 and wav.shape == (3 * SR,)
    ref = reference(src["audio"])
    lag, corr = best_lag(wav, ref, max_lag=int(0.02 * SR))
    assert corr >= 0.99, (ext, lag, corr)
    assert abs(lag) <= 1, f"{ext}: audio is {lag} samples out of place"  # AAC/Opus priming is removed
    assert len(media.load_audio(path)) == 3 * SR  # codec padding past the end (AAC) is dropped
    if ext in LOSSLESS_AUDIO:
        assert np.corrcoef(wav[100:-100], ref[100 : len(wav) - 100])[0, 1] > 0.9999


def test_iter_audio_chunks_concatenate_to_load_audio(files):
    path, _ = files[".mp4"]
    chunks = list(media.iter_audio(path, chunk_seconds=0.7))
    step = round(0.7 * SR)
    assert len(chunks) == math.ceil(sum(map(len, chunks)) / step) > 3
    assert all(len(c) == step for c in chunks[:-1]) and 0 < len(chunks[-1]) <= step
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), media.load_audio(path))


def test_load_audio_window_and_padding(files):
    path, src = files[".mkv"]
    full = media.load_audio(path)
    part = media.load_audio(path, start=1.0, duration=1.5)
    assert part.shape == (round(1.5 * SR),)
    np.testing.assert_array_equal(part, full[SR : SR + len(part)])  # short starts decode through: exact
    tail = media.load_audio(path, start=2.5, duration=2.0)  # runs past the end: zero-padded
    assert tail.shape == (2 * SR,)
    assert np.abs(tail[: SR // 2 - 50]).max() > 0.1 and not tail[SR // 2 + 50 :].any()
    other_rate = media.load_audio(path, sr=16000, duration=3.0)
    assert other_rate.shape == (48000,)
    assert best_lag(other_rate, resample_poly(src["audio"].mean(0), 1, 3), 20)[1] > 0.999


@pytest.mark.parametrize("ext", FORMATS)
def test_load_audio_after_a_seek(files, monkeypatch, ext):
    """Far starts seek instead of decoding through; the window must land in the same place (to the
    container's timestamp precision: exact in mp4/mov/avi and for FLAC in Matroska; WebM/Opus
    packets carry 1 ms timestamps)."""
    path, _ = files[ext]
    full = media.load_audio(path)
    monkeypatch.setattr(media, "_AUDIO_SEEK_AFTER", 0.0)
    part = media.load_audio(path, start=1.7, duration=1.0)
    assert part.shape == (SR,)
    ref = full[int(1.7 * SR) - 20 : int(2.7 * SR) + 20]
    lag, corr = best_lag(np.concatenate([np.zeros(20, np.float32), part, np.zeros(20, np.float32)]), ref, 15)
    assert corr > 0.99
    assert abs(lag) <= (0 if ext in {".mp4", ".mov", ".avi", ".mkv"} else int(0.001 * SR) + 1), lag


@pytest.mark.parametrize("ext", [".mkv", ".mp4"])
def test_late_audio_stream_is_preceded_by_silence(tmp_path, ext):
    path = tmp_path / f"late{ext}"
    src = mg.make_media(path, audio_offset=0.5)
    info = media.probe(path)
    # mp4 stores the offset as an edit list in milliseconds, minus the AAC priming it keeps
    assert abs(info.audio_start - 0.5) < (0.001 if ext == ".mkv" else 0.03)
    assert info.video_start == 0.0 and abs(info.duration - 3.5) < 0.05
    wav = media.load_audio(path, duration=3.5)
    assert np.abs(wav[: int(0.47 * SR)]).max() < 0.01
    # Where the file really puts the audio, to the source sample: exactly 0.5 s in mkv; in mp4 the
    # edit list is in milliseconds, which moves it by up to 1 ms.
    at_src_rate = media.load_audio(path, sr=SRC_SR, duration=3.5)
    shift, corr = best_lag(at_src_rate, np.pad(src["audio"].mean(0), (SRC_SR // 2, 0)), int(0.03 * SRC_SR))
    assert corr > 0.99 and abs(shift) <= (0 if ext == ".mkv" else SRC_SR // 1000)
    # 0.5 s is 5512.5 output samples: pad at the source rate, then resample.
    ref = reference(np.pad(src["audio"], ((0, 0), (SRC_SR // 2 + shift, 0))))
    lag, corr = best_lag(wav, ref, max_lag=int(0.03 * SR))
    assert corr >= 0.99 and lag == 0
    # Starting inside the silence keeps the same timeline.
    late = media.load_audio(path, start=0.25, duration=1.0)
    assert np.abs(late[: int(0.22 * SR)]).max() < 0.01
    assert np.corrcoef(late[int(0.3 * SR) :], wav[int(0.55 * SR) : int(1.25 * SR)])[0, 1] > 0.99
    # Frames share the origin: the first frame is still frame 0 at t = 0.
    t0, img = next(media.iter_frames(path))
    assert t0 == 0.0 and mg.frame_index(img) == 0


def test_truncated_file_raises_while_decoding(tmp_path, files):
    data = files[".mkv"][0].read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    assert media.probe(cut).duration == pytest.approx(3.0, abs=0.05)  # the header still claims 3 s
    with pytest.raises(MediaError, match="truncated"):
        media.load_audio(cut)
    with pytest.raises(MediaError, match="truncated"):
        list(media.iter_frames(cut))
    with pytest.raises(MediaError, match="truncated"):
        media.frames_at(cut, [2.8])
    # What was requested lies before the cut: fine.
    assert len(media.load_audio(cut, duration=0.5)) == SR // 2


def test_truncated_faststart_mp4_raises(tmp_path, files):
    """An mp4 with its index up front opens fine when cut; decoding must notice."""
    src = files[".mp4"][0]
    fast = tmp_path / "fast.mp4"
    with av.open(str(src)) as c, av.open(str(fast), "w", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in c.streams}
        for packet in c.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    media.probe(cut)
    with pytest.raises(MediaError, match=str(cut)):
        media.load_audio(cut)
    with pytest.raises(MediaError, match="truncated"):
        list(media.iter_frames(cut))


# ---------------------------------------------------------------------------------------- frames


@pytest.mark.parametrize("ext", FORMATS)
def test_iter_frames_picks_by_timestamp(files, ext):
    path, src = files[ext]
    out = list(media.iter_frames(path, fps=8.0))
    times = [t for t, _ in out]
    assert abs(len(out) - 3.0 * 8) <= 1
    assert all(b > a for a, b in zip(times, times[1:]))
    assert times == pytest.approx([k / 8 for k in range(len(out))])
    for t, img in out:
        assert img.shape == (120, 160, 3) and img.dtype == np.uint8
        assert mg.frame_index(img) == expected_index(src["frame_times"], t)


def test_iter_frames_window_and_resize(files):
    path, src = files[".mp4"]
    out = list(media.iter_frames(path, fps=10.0, start=1.05, duration=1.0, size=(80, 60)))
    assert [round(t, 6) for t, _ in out] == [round(1.05 + k / 10, 6) for k in range(10)]
    for t, img in out:
        assert img.shape == (60, 80, 3)
        assert mg.frame_index(img) == expected_index(src["frame_times"], t)
    # A window past the end holds the last frame so the count matches the duration.
    held = list(media.iter_frames(path, fps=4.0, start=2.5, duration=1.5))
    assert len(held) == 6
    assert {mg.frame_index(img) for t, img in held if t >= 3.0} == {74}


@pytest.mark.parametrize("ext", [".mkv", ".mp4"])
def test_variable_frame_rate_is_sampled_by_time(tmp_path, ext):
    times = [0.0, 0.04, 0.3, 0.31, 0.32, 0.9, 1.0, 1.45, 2.0, 2.5, 2.9, 3.0, 3.3]
    path = tmp_path / f"vfr{ext}"
    mg.make_media(path, frame_times=times, audio=False)
    out = list(media.iter_frames(path, fps=8.0))
    assert len(out) >= 26  # up to at least the last frame's time (3.3 s)
    for t, img in out:
        assert mg.frame_index(img) == expected_index(times, t), t
    picks = media.frames_at(path, [0.31, 1.2, 0.0, 3.0, 0.299])
    assert [mg.frame_index(f) for f in picks] == [expected_index(times, t) for t in [0.31, 1.2, 0.0, 3.0, 0.299]]


@pytest.mark.parametrize("ext", [".mp4", ".webm"])
def test_frames_at_unsorted_times(files, ext):
    path, src = files[ext]
    times = [2.0, 0.5, 1.23, 0.0, 2.96, 0.5, 0.1]
    frames = media.frames_at(path, times)
    assert frames.shape == (len(times), 120, 160, 3) and frames.dtype == np.uint8
    assert [mg.frame_index(f) for f in frames] == [expected_index(src["frame_times"], t) for t in times]
    small = media.frames_at(path, [1.0], size=(32, 24))
    assert small.shape == (1, 24, 32, 3) and mg.frame_index(small[0]) == 25


def test_frames_need_a_video_stream(tmp_path):
    wav = tmp_path / "a.wav"
    mg.make_media(wav, video=False)
    with pytest.raises(MediaError, match="has no video stream"):
        list(media.iter_frames(wav))
    with pytest.raises(MediaError, match="has no video stream"):
        media.frames_at(wav, [0.0])
    info = media.probe(wav)
    assert info.has_audio and not info.has_video and abs(info.duration - 3.0) < 0.01


# --------------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("ext", FORMATS)
def test_write_video_round_trip(tmp_path, ext):
    stereo = mg.source_audio(3.0, 44100)
    path = media.write_video(tmp_path / f"w{ext}", (mg.pattern_frame(k) for k in range(75)), 25.0, audio=stereo, sr=44100)
    assert os.listdir(tmp_path) == [f"w{ext}"]
    info = media.probe(path)
    assert info.has_audio and info.has_video and (info.width, info.height) == (160, 120)
    assert info.fps == pytest.approx(25.0) and abs(info.duration - 3.0) < 0.05
    wav = media.load_audio(path, duration=3.0)
    lag, corr = best_lag(wav, reference(stereo, 44100), int(0.02 * SR))
    assert corr >= 0.99 and abs(lag) <= 1
    frames = list(media.iter_frames(path, fps=25.0))
    assert len(frames) == 75 and [mg.frame_index(f) for _, f in frames] == list(range(75))


def test_write_video_mono_low_rate_audio_and_codecs(tmp_path):
    mono = reference(mg.source_audio(2.0))  # 11025 Hz mono: opus only takes 48 kHz, so it is resampled
    frames = [mg.pattern_frame(k, 64, 48) for k in range(16)]
    for name, kw in [("o.webm", {}), ("f.mp4", {"acodec": "flac"}), ("v.mkv", {"vcodec": "libvpx-vp9"})]:
        path = media.write_video(tmp_path / name, iter(frames), 8.0, audio=mono, sr=SR, **kw)
        info = media.probe(path)
        assert info.channels == 1 and info.fps == pytest.approx(8.0)
        wav = media.load_audio(path, duration=2.0)
        lag, corr = best_lag(wav, mono, int(0.02 * SR))
        assert corr >= 0.99 and abs(lag) <= 1, (name, lag, corr)
        if name == "f.mp4":
            assert np.max(np.abs(wav - mono)) < 1e-3  # lossless apart from 16-bit rounding
    silent = media.write_video(tmp_path / "silent.mp4", iter(frames), 8.0)
    assert not media.probe(silent).has_audio


def test_write_video_failure_leaves_nothing(tmp_path):
    def frames():
        yield mg.pattern_frame(0)
        yield mg.pattern_frame(1)
        raise RuntimeError("generator broke")

    with pytest.raises(RuntimeError):
        media.write_video(tmp_path / "x.mp4", frames(), 25.0)
    with pytest.raises(ValueError, match="even"):
        media.write_video(tmp_path / "odd.mp4", [np.zeros((5, 7, 3), np.uint8)], 25.0)
    assert os.listdir(tmp_path) == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        media.write_video(blocker / "x.mp4", [mg.pattern_frame(0)], 25.0)


def packet_digest(path) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    with av.open(str(path)) as c:
        for p in c.demux(c.streams.video[0]):
            if p.size:
                h.update(bytes(p))
                n += 1
    return n, h.hexdigest()


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_mux_audio_replaces_audio_and_copies_video(files, tmp_path, ext):
    src_path, src = files[".mp4"]
    t = np.arange(3 * SR) / SR
    new = (0.5 * np.sin(2 * np.pi * 330 * t) * np.sin(2 * np.pi * 0.7 * t)).astype(np.float32)
    out = media.mux_audio(src_path, new, SR, tmp_path / f"solo{ext}")
    assert os.listdir(tmp_path) == [f"solo{ext}"]
    info = media.probe(out)
    assert info.has_video and info.has_audio and info.channels == 1 and info.sample_rate == SR
    assert abs(info.duration - 3.0) < 0.05
    wav = media.load_audio(out, duration=3.0)
    lag, corr = best_lag(wav, new, int(0.02 * SR))
    assert corr >= 0.99 and abs(lag) <= 1
    assert packet_digest(out) == packet_digest(src_path)  # video packets copied byte for byte
    frames = list(media.iter_frames(out, fps=25.0))
    assert [mg.frame_index(f) for _, f in frames] == list(range(75))


def test_write_wav_round_trip_and_clipping(tmp_path, caplog):
    rng = np.random.default_rng(1)
    mono = (0.5 * rng.standard_normal(5000)).clip(-0.9, 0.9).astype(np.float32)
    p = media.write_wav(tmp_path / "m.wav", mono)
    data, sr = sf.read(p, dtype="float32")
    assert sr == SR and sf.info(p).subtype == "PCM_16" and np.max(np.abs(data - mono)) <= 1 / 32767
    stereo = np.stack([mono, -mono])
    p = media.write_wav(tmp_path / "s.wav", stereo, 22050, subtype="FLOAT")
    data, sr = sf.read(p, dtype="float32", always_2d=True)
    assert sr == 22050 and data.shape == (5000, 2) and np.array_equal(data.T, stereo)
    loud = np.array([0.0, 1.5, -2.0, 0.25], np.float32)
    with caplog.at_level(logging.WARNING, logger="avsep"):
        p = media.write_wav(tmp_path / "loud.wav", loud, subtype="PCM_24")
    assert "clipped" in caplog.text
    data, _ = sf.read(p, dtype="float32")
    assert data[1] == pytest.approx(1.0, abs=1e-6) and data[2] == -1.0 and data[3] == pytest.approx(0.25, abs=1e-6)
    assert sorted(os.listdir(tmp_path)) == ["loud.wav", "m.wav", "s.wav"]


def test_write_wav_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.wav"
    target_before = media.write_wav(target, np.zeros(100, np.float32)).read_bytes()
    real_write = sf.write

    def write_then_fail(file, data, *a, **k):
        real_write(file, data[: len(data) // 2], *a, **k)  # a half-written temp file exists now
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sf, "write", write_then_fail)
    with pytest.raises(OutputError, match="No space left"):
        media.write_wav(target, np.ones(1000, np.float32) * 0.1)
    with pytest.raises(OutputError):
        media.write_wav(tmp_path / "new.wav", np.ones(1000, np.float32) * 0.1)
    assert os.listdir(tmp_path) == ["out.wav"] and target.read_bytes() == target_before


def test_write_audio_and_read_audio_file(tmp_path):
    stereo = mg.source_audio(2.0, 44100)
    flac = media.write_audio(tmp_path / "stem.flac", stereo, 44100, subtype="PCM_24")
    assert sf.info(flac).format == "FLAC" and sf.info(flac).channels == 2
    wav = media.write_audio(tmp_path / "stem.wav", stereo, 44100, subtype="FLOAT")
    for p in (flac, wav):
        got = media.read_audio_file(p)
        assert got.dtype == np.float32 and abs(len(got) - 2 * SR) <= 1
        lag, corr = best_lag(got, reference(stereo, 44100), 10)
        assert lag == 0 and corr > 0.999
    same_rate = media.read_audio_file(wav, sr=44100)
    np.testing.assert_allclose(same_rate, stereo.mean(0), atol=1e-6)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(MediaError, match="not a media file FFmpeg can read"):  # read by FFmpeg, like videos
        media.read_audio_file(junk)
    with pytest.raises(MediaError, match="no such file"):
        media.read_audio_file(tmp_path / "nope.flac")
    with pytest.raises(OutputError, match="unknown audio format"):
        media.write_audio(tmp_path / "x.xyz", stereo, 44100)
