"""Downmix to mono in avsep_cli.media: FFmpeg's layout-aware matrix for more than two channels, the
plain (L + R) / 2 for stereo, on files written by tests/mediagen.py (PyAV) and soundfile.

The measured rule (FFmpeg 8 / libswresample 6 through PyAV 18): mono = the average of FFmpeg's stereo
downmix, i.e. 0.5 FL + 0.5 FR + 0.7071 FC + 0.3536 (BL + BR or SL + SR), LFE dropped. A centre-only
5.1 mix therefore decodes 3.01 dB below the same signal in mono (channel averaging gave -15.56 dB),
and an L = R stereo file exactly at the mono level.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

import mediagen as mg
from avsep_cli import media

SR = 48000
AMP = 10 ** (-6 / 20)  # a -6 dBFS peak tone
CENTRE_DB = 20 * np.log10(np.sqrt(0.5))  # -3.01 dB: FC enters each side at 1/sqrt(2); L, R then averaged


def level_db(wav: np.ndarray, ref: np.ndarray) -> float:
    """RMS level of `wav` relative to `ref`, away from the edges (resampler and codec start-up)."""
    a, b = wav[2000:-2000], ref[2000:-2000]
    return float(10 * np.log10(np.mean(a.astype(np.float64) ** 2) / np.mean(b.astype(np.float64) ** 2)))


def amplitudes(wav: np.ndarray, freqs: list[float], sr: int) -> np.ndarray:
    """Amplitude of each `freqs` component of `wav` (one least-squares fit of all sines and cosines)."""
    t = np.arange(len(wav)) / sr
    basis = np.concatenate([[np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)] for f in freqs]).T
    coef, *_ = np.linalg.lstsq(basis, wav.astype(np.float64), rcond=None)
    return np.hypot(coef[0::2], coef[1::2])


@pytest.fixture(scope="module")
def tone_files(tmp_path_factory):
    """The same 440 Hz tone as mono, as L = R stereo, and in the centre channel only of 5.1 files."""
    d = tmp_path_factory.mktemp("downmix")
    x = mg.tone(440, 2.0, SR, AMP)
    z = np.zeros_like(x)
    centre = np.stack([z, z, x, z, z, z])
    files = {
        "mono": mg.make_layout_audio(d / "mono.wav", x[None], "mono"),
        "stereo": mg.make_layout_audio(d / "stereo.wav", np.stack([x, x]), "stereo"),
        "5.1 wav": mg.make_layout_audio(d / "c51.wav", centre, "5.1"),  # WAVEFORMATEXTENSIBLE channel mask
        "5.1(side) flac": mg.make_layout_audio(d / "c51.flac", centre, "5.1(side)"),
        "5.1 aac": mg.make_layout_audio(d / "c51.m4a", centre, "5.1"),
    }
    sf.write(d / "c51_nomask.wav", centre.T, SR, subtype="FLOAT")  # 6 channels, positions unknown
    files["6 channels wav"] = d / "c51_nomask.wav"
    return files


@pytest.mark.parametrize("name", ["5.1 wav", "5.1(side) flac", "5.1 aac", "6 channels wav"])
def test_centre_only_5_1_is_3db_below_mono(tone_files, name):
    mono = media.load_audio(tone_files["mono"])
    got = media.load_audio(tone_files[name])
    assert len(got) == len(mono)
    assert level_db(got, mono) == pytest.approx(CENTRE_DB, abs=0.05), name  # was -15.56 dB (mean of 6)
    if name != "5.1 aac":  # lossless: the same samples, in the same place, at 1/sqrt(2)
        np.testing.assert_allclose(got, np.sqrt(0.5) * mono, atol=2e-5)
        np.testing.assert_allclose(media.read_audio_file(tone_files[name]), got, atol=1e-6)


def test_stereo_level_is_unchanged(tone_files, tmp_path):
    mono = media.load_audio(tone_files["mono"])
    same = media.load_audio(tone_files["stereo"])
    assert level_db(same, mono) == pytest.approx(0.0, abs=0.01)
    np.testing.assert_allclose(same, mono, atol=1e-6)
    stereo = mg.source_audio(1.0, SR)  # different content left and right
    p = mg.make_layout_audio(tmp_path / "lr.flac", stereo, "stereo")
    np.testing.assert_allclose(media.load_audio(p, SR), stereo.mean(0), atol=1e-4)  # (L + R) / 2, as always


GAINS_5_1 = {"FL": 0.5, "FR": 0.5, "FC": 0.7071, "LFE": 0.0, "BL": 0.3536, "BR": 0.3536}
GAINS_7_1 = {**GAINS_5_1, "SL": 0.3536, "SR": 0.3536}


@pytest.mark.parametrize(("layout", "ext", "gains"), [
    ("5.1", ".flac", GAINS_5_1),
    ("5.1(side)", ".flac", {"FL": 0.5, "FR": 0.5, "FC": 0.7071, "LFE": 0.0, "SL": 0.3536, "SR": 0.3536}),
    ("7.1", ".flac", GAINS_7_1),
    ("7.1", ".m4a", GAINS_7_1),  # AAC decodes to planar float: 8 planes crashed PyAV when read directly
])
def test_downmix_matrix_per_channel(tmp_path, layout, ext, gains):
    """Each channel carries its own frequency; the decoded amplitude of each is the matrix entry."""
    freqs = [300.0 + 100 * k for k in range(len(gains))]
    wav = np.stack([mg.tone(f, 1.0, SR, 0.25) for f in freqs])
    got = media.load_audio(mg.make_layout_audio(tmp_path / f"m{ext}", wav, layout), SR)
    measured = dict(zip(gains, amplitudes(got[2048:-2048], freqs, SR) / 0.25))
    assert measured == pytest.approx(gains, abs=2e-3 if ext == ".flac" else 1e-2)


def test_unknown_layout_gets_the_default_one(tone_files, tmp_path):
    """A WAV without a channel mask (what soundfile writes) decodes like the same channels as 5.1."""
    info = media.probe(tone_files["6 channels wav"])
    assert (info.channels, info.channel_layout) == (6, "6 channels")
    np.testing.assert_allclose(media.load_audio(tone_files["6 channels wav"]), media.load_audio(tone_files["5.1 wav"]), atol=1e-6)
    # Nine channels have no default layout: they are averaged.
    nine = np.stack([mg.tone(440, 0.5, SR, 0.09 * (k + 1)) for k in range(9)])
    sf.write(tmp_path / "nine.wav", nine.T, SR, subtype="FLOAT")
    np.testing.assert_allclose(media.read_audio_file(tmp_path / "nine.wav", SR), nine.mean(0), atol=1e-6)


def test_layout_change_mid_stream(tmp_path):
    """An ADTS stream that switches from stereo to 5.1 (as broadcast AAC does): each part is downmixed
    by its own layout (channel averaging took the 5.1 part as six equal channels)."""
    x = mg.tone(440, 1.0, SR, AMP)
    z = np.zeros_like(x)
    parts = [mg.make_layout_audio(tmp_path / "a.aac", np.stack([x, x]), "stereo"),
             mg.make_layout_audio(tmp_path / "b.aac", np.stack([z, z, x, z, z, z]), "5.1")]
    joined = tmp_path / "joined.aac"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    got = media.load_audio(joined, SR)
    first, second = got[SR // 8 : SR * 7 // 8], got[SR + SR // 4 : SR * 7 // 4]
    assert level_db(second, first) == pytest.approx(CENTRE_DB, abs=0.1)
    assert level_db(first, x[: len(first)]) == pytest.approx(0.0, abs=0.1)


def test_downmix_keeps_timing_of_windows_and_seeks(tone_files, monkeypatch):
    """Windows of a 5.1 file are the same samples as the full decode (the rematrix holds nothing back)."""
    path = tone_files["5.1(side) flac"]
    full = media.load_audio(path)
    n = int(0.5 * media.SAMPLE_RATE)
    win = media.load_audio(path, start=0.7, duration=0.5)
    k = round(0.7 * media.SAMPLE_RATE)
    np.testing.assert_allclose(win, full[k : k + n], atol=1e-6)
    monkeypatch.setattr(media, "_AUDIO_SEEK_AFTER", 0.0)  # take the seeking path at a short start
    np.testing.assert_allclose(media.load_audio(path, start=0.7, duration=0.5), full[k : k + n], atol=1e-5)
    chunks = list(media.iter_audio(path, chunk_seconds=0.3))
    np.testing.assert_array_equal(np.concatenate(chunks), full)
