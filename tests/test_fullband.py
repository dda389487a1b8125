"""Full-band outputs of `avsep separate` (`avsep_cli.outputs`): the models' masks applied at the input's own
rate and channels. Stems plus the residual give back the input (44.1 and 48 kHz, mono and stereo); the two
time-frequency grids line up in seconds and Hz at integer and non-integer rate ratios; identity masks give
back the input; the band above 5.5 kHz follows the documented rule; spans gate the stems; WAV/FLAC at
16/24/32 bits round-trip through soundfile; `--video` copies the video stream and carries the full-band
stem; `--sample-rate model` keeps the 11025 Hz mono output; the input-rate decoder keeps every channel.
Tiny random-weight models and clips of a few seconds keep every test at a few seconds."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import soundfile as sf
import torch

import mediagen as mg
from avsep_cli import dsp, media, outputs
from avsep_cli.methods import MixBatch
from avsep_cli.separator import Separator
from clihelp import assert_one_error, run

pytestmark = pytest.mark.usefixtures("no_shipped_weights")  # tests pass their own weights (tiny_weights)

PLAYERS = ("violin", "cello")


def boxes(seconds: float, players=PLAYERS, until: float | None = None) -> dict:
    """Injected boxes: each player at a fixed place (the first one only until `until` seconds)."""
    fps, n = 4.0, int(np.ceil(seconds * 4.0))
    return {"fps": fps, "players": [{"class": c, "boxes": [[10.0 + 70 * k, 20.0, 70.0 + 70 * k, 100.0]
                                                           if until is None or k > 0 or i < until * fps else None
                                                           for i in range(n)]}
                                    for k, c in enumerate(players)]}


def make_clip(path, sr: int, channels: int, seconds: float = 4.0):
    """An mp4 (AAC) with `channels` channels at `sr`: a chirp, a sine and some noise above 5.5 kHz."""
    wav = mg.source_audio(seconds, sr)
    hiss = 0.02 * np.random.default_rng(sr).standard_normal(wav.shape[1]).astype(np.float32)
    wav = (wav + hiss)[:channels] if channels == 2 else (wav.mean(0, keepdims=True) + hiss)
    frames = (mg.pattern_frame(i) for i in range(int(seconds * 8)))
    return media.write_video(path, frames, 8.0, audio=wav, sr=sr)


def decoded(path) -> np.ndarray:
    """(C, n) float32: the input as the full-band path reads it (every channel, its own rate)."""
    return np.concatenate(list(media.iter_audio(path, None, channels="all")), axis=-1)


def snr(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - est) ** 2), 1e-30)))


class ConstantMasks:
    """Every identity's mask is `value` everywhere (a test method that applies masks like the real ones)."""

    name, frames_per_source, frame_gap, frame_size, segment = "constant", 1, 3.0, 32, 16384

    def __init__(self, value: float):
        self.value = value

    def separate(self, batch: MixBatch) -> torch.Tensor:
        b, s = batch.frames.shape[:2]
        return self.value * batch.mixture[:, None].expand(b, s, -1)

    def masks(self, batch: MixBatch, soft: bool = False) -> torch.Tensor:
        b, s = batch.frames.shape[:2]
        return torch.full((b, s, dsp.N_FREQ, 1 + batch.mixture.shape[-1] // dsp.HOP), self.value)

    def own_rule(self, masks: torch.Tensor) -> torch.Tensor:
        return masks


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("fullband")
    return {(sr, c): make_clip(d / f"clip{sr}-{c}.mp4", sr, c) for sr in (44100, 48000) for c in (1, 2)}


# --- reconstruction ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sr, channels", [(44100, 1), (44100, 2), (48000, 1), (48000, 2)])
def test_stems_plus_residual_equal_the_input(tiny_weights, clips, sr, channels):
    video = clips[(sr, channels)]
    sep = Separator("tiny", tiny_weights, None, residual=True)
    result = sep.separate_file(video, boxes=boxes(4.0), sample_rate="input", bits=32)
    x = decoded(video)
    assert result.sample_rate == sr and result.channels == channels and x.shape == (channels, round(4.0 * sr))
    total = result.residual.astype(np.float64)
    for wav in result.stems.values():
        assert wav.shape == x.shape and wav.dtype == np.float32
        assert np.sqrt(np.mean(wav**2)) > 1e-3 * np.sqrt(np.mean(x**2))  # not trivially zero
        total += wav
    np.testing.assert_allclose(total, x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("sr", [44100, 48000, 22050, 16000])
def test_identity_masks_give_back_the_input(tiny_weights, tmp_path, sr):
    """All-ones masks (one identity, over the whole clip) give back every channel of the input, band above
    5.5 kHz included; two identities at 0.5 get half of it each: the input-rate windows, STFTs and
    overlap-add cover every sample at integer (44.1k/11.025k = 4, 22.05k: 2) and non-integer (48k:
    4.354, 16k: 1.451) rate ratios."""
    video = make_clip(tmp_path / "c.mp4", sr, 2, seconds=3.3)
    x = decoded(video)
    sep = Separator("tiny", tiny_weights, None, full_length=True, residual=True)
    sep.method, sep.segment = ConstantMasks(1.0), ConstantMasks.segment  # windows of 1.5 s, hop 0.74 s
    one = sep.separate_file(video, boxes=boxes(3.3, PLAYERS[:1]), sample_rate="input", bits=32)
    np.testing.assert_allclose(one.stems["violin_1"], x, rtol=0, atol=2e-5)
    sep.method = ConstantMasks(0.5)
    two = sep.separate_file(video, boxes=boxes(3.3), sample_rate="input", bits=32)
    for wav in two.stems.values():
        np.testing.assert_allclose(wav, x / 2, rtol=0, atol=2e-5)
    assert np.abs(two.residual).max() < 2e-5


# --- grid alignment ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sr", [44100, 48000, 22050, 16000])
def test_masks_are_regridded_by_seconds_and_hz(sr):
    """A mask that is a smooth function of (seconds, Hz), sampled on the model grid of a window starting at
    an odd sample, and regridded onto the input-rate grid of a window starting elsewhere, equals the same
    function at the input-rate frames' centre times and bins' frequencies (up to linear interpolation)."""
    grid = dsp.ScaledGrid.at(sr)
    r = sr / dsp.SAMPLE_RATE
    assert grid.win == round(dsp.N_FFT * r) and grid.hop == round(dsp.HOP * r) and grid.n_fft >= grid.win

    def g(t, f):  # t seconds (T,), f Hz (F,) -> (F, T)
        return 0.5 + 0.3 * np.cos(2 * np.pi * f[:, None] / 2500) * np.sin(2 * np.pi * (t[None] - 0.2) / 0.9)

    s0, T = 33075 + 17, 1 + dsp.SEGMENT // dsp.HOP  # a window 3 s (and 17 samples) in
    model = g((s0 + dsp.HOP * np.arange(T)) / dsp.SAMPLE_RATE, np.arange(dsp.N_FREQ) * dsp.SAMPLE_RATE / dsp.N_FFT)
    n0 = int(np.floor(s0 * r)) - grid.hop
    n_frames = 1 + int(np.ceil((s0 + dsp.SEGMENT) * r + grid.hop - n0)) // grid.hop
    pos = grid.frame_positions(n0, n_frames, s0)
    high = torch.full((T,), 0.25)
    out = grid.regrid(torch.from_numpy(model)[None], high[None], pos)[0].numpy()  # (F, T')
    assert out.shape == (grid.n_freq, n_frames)
    t = (n0 + grid.hop * np.arange(n_frames)) / sr
    f = np.arange(grid.n_freq) * sr / grid.n_fft
    inside = (pos.numpy() >= 0) & (pos.numpy() <= T - 1)
    low = f <= dsp.SAMPLE_RATE / 2
    assert pos[0] < 0 and pos[-1] > T - 1 and inside.sum() >= T - 3  # the frames cover the model window
    np.testing.assert_allclose(out[np.ix_(low, inside)], g(t[inside], f[low]), atol=2e-3)
    assert np.all(out[~low] == 0.25)
    # misplaced by one hop in time or by 1 % in frequency, the same comparison fails
    assert np.abs(out[np.ix_(low, inside)] - g(t[inside] + grid.hop / sr, f[low])).max() > 2e-2
    assert np.abs(out[np.ix_(low, inside)] - g(t[inside], f[low] * 1.01)).max() > 2e-2


def test_full_band_stems_agree_with_the_model_rate_stems(tiny_weights, clips):
    """At 48 kHz (a non-integer ratio), the full-band stems, downmixed and brought to 11025 Hz, are the
    model-rate stems of the same masks (a misaligned grid, off by a hop or a window, scores near 0 dB)."""
    video = clips[(48000, 2)]
    sep = Separator("tiny", tiny_weights, None)
    model = sep.separate_file(video, boxes=boxes(4.0))
    full = sep.separate_file(video, boxes=boxes(4.0), sample_rate="input")
    for name, wav in model.stems.items():
        down = dsp.resample(torch.from_numpy(full.stems[name].mean(0)).double(), 48000).numpy()
        assert snr(wav, down[: len(wav)]) > 15, name


# --- the band above the models' Nyquist -----------------------------------------------------------------


def test_high_band_gains_are_energy_weighted_shares_summing_to_at_most_one():
    rng = np.random.default_rng(0)
    t = np.arange(dsp.SEGMENT) / dsp.SAMPLE_RATE
    window = (np.sin(2 * np.pi * 4500 * t) + 0.01 * rng.standard_normal(dsp.SEGMENT)).astype(np.float32)
    T = 1 + dsp.SEGMENT // dsp.HOP
    hz = torch.arange(dsp.N_FREQ) * dsp.SAMPLE_RATE / dsp.N_FFT
    near = ((hz - 4500).abs() < 200).float()[None, :, None].expand(1, -1, T)  # the bins of the 4.5 kHz tone
    masks = torch.cat([near, 1 - near])  # (2, 512, T): stem 0 takes the tone, stem 1 the rest of the band
    g = outputs.high_band_gains(window, masks)
    assert g.shape == (2, T) and torch.all(g[0, 2:-2] > 0.99) and torch.all(g[1, 2:-2] < 0.01)
    both = outputs.high_band_gains(window, torch.ones(2, dsp.N_FREQ, T))  # both claim everything: half each
    torch.testing.assert_close(both, torch.full((2, T), 0.5))
    soft = outputs.high_band_gains(window, torch.full((2, dsp.N_FREQ, T), 0.3))  # sums to 0.6: kept as is
    torch.testing.assert_close(soft, torch.full((2, T), 0.3))
    low_only = torch.zeros(1, dsp.N_FREQ, T)
    low_only[:, hz < 4000] = 1
    assert outputs.high_band_gains(window, low_only).abs().max() == 0  # the rule reads 4-5.5 kHz only


# --- gating, formats, videos, the CLI ----------------------------------------------------------------------


def test_spans_gate_the_full_band_stems(tiny_weights, clips):
    sr = 48000
    result = Separator("tiny", tiny_weights, None, residual=True).separate_file(
        clips[(sr, 2)], boxes=boxes(4.0, until=2.0), sample_rate="input")
    first = next(i for i in result.identities if i.cls == PLAYERS[0])
    assert abs(first.end - 2.0) <= 0.25
    wav = result.stems[first.name]
    cut = int((first.end + 0.06) * sr)
    assert np.abs(wav[:, cut:]).max() == 0 and np.abs(wav[:, : cut - 2 * 4800]).max() > 0


@pytest.mark.parametrize("fmt, bits, subtype, step", [("wav", 16, "PCM_16", 2**-15), ("wav", 24, "PCM_24", 2**-23),
                                                      ("wav", 32, "FLOAT", 0.0), ("flac", 16, "PCM_16", 2**-15),
                                                      ("flac", 24, "PCM_24", 2**-23)])
def test_formats_and_bit_depths_round_trip(tmp_path, fmt, bits, subtype, step):
    rng = np.random.default_rng(bits)
    x = np.clip(0.3 * rng.standard_normal((2, 5000)), -0.99, 0.99).astype(np.float32)
    x[0, :3] = [1.7, -1.4, 0.5]  # out of range: PCM clips, float keeps
    path = tmp_path / f"s.{fmt}"
    with media.WavWriter(path, 48000, channels=2, bits=bits) as w:
        w.write(x[:, :1234])
        w.write(x[:, 1234:])
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (fmt.upper(), subtype, 48000, 2, 5000)
    back = sf.read(str(path), dtype="float32", always_2d=True)[0].T
    expect = x if bits == 32 else np.clip(x, -1.0, 1.0)
    np.testing.assert_allclose(back, expect, rtol=0, atol=step)


def test_cli_full_band_flac_24_with_video_and_manifest(capsys, tiny_weights, clips, tmp_path):
    video = clips[(48000, 2)]
    bx = tmp_path / "boxes.json"
    bx.write_text(json.dumps(boxes(4.0)))
    out = tmp_path / "stems"
    rc, stdout, err = run(capsys, "separate", video, "-o", out, "--method", "tiny", "--weights", tiny_weights,
                          "--boxes", bx, "--format", "flac", "--bits", "24", "--residual", "--video")
    assert rc == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["sample_rate"], manifest["channels"], manifest["format"], manifest["bits"]) == (48000, 2, "flac", 24)
    assert manifest["high_band"]["band_hz"] == [4000.0, 5512.5] and "4000-5512.5 Hz" in manifest["high_band"]["rule"]
    assert manifest["residual"] == "residual.flac"
    assert sorted(manifest["files"]) == sorted([f"{c}_1.{e}" for c in PLAYERS for e in ("flac", "mp4")] + ["residual.flac"])
    x = decoded(video)
    parts = [sf.read(str(out / f), dtype="float64", always_2d=True)[0].T for f in manifest["files"] if f.endswith(".flac")]
    assert all(sf.info(str(out / f)).subtype == "PCM_24" for f in manifest["files"] if f.endswith(".flac"))
    np.testing.assert_allclose(sum(parts), x, rtol=0, atol=3 * 2**-23 + 1e-6)  # three 24-bit roundings
    assert "48000 Hz, 2 channel(s), 24-bit flac" in stdout
    for c in PLAYERS:  # the video stream copied packet for packet; the stem as AAC at 48 kHz stereo
        solo = out / f"{c}_1.mp4"
        info = media.probe(solo)
        assert (info.sample_rate, info.channels, info.has_video) == (48000, 2, True)
        with av.open(str(video)) as a, av.open(str(solo)) as b:
            assert b.streams.video[0].codec_context.name == a.streams.video[0].codec_context.name
            pa = [bytes(p) for p in a.demux(a.streams.video[0]) if p.size]
            pb = [bytes(p) for p in b.demux(b.streams.video[0]) if p.size]
        assert pa == pb


def test_cli_model_rate_keeps_11025_hz_mono(capsys, tiny_weights, clips, tmp_path):
    bx = tmp_path / "boxes.json"
    bx.write_text(json.dumps(boxes(4.0)))
    out = tmp_path / "stems"
    rc, _, err = run(capsys, "separate", clips[(48000, 2)], "-o", out, "--method", "tiny", "--weights", tiny_weights,
                     "--boxes", bx, "--sample-rate", "model")
    assert rc == 0, err
    for c in PLAYERS:
        info = sf.info(str(out / f"{c}_1.wav"))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (11025, 1, "PCM_16", 4 * 11025)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sample_rate"] == 11025 and manifest["channels"] == 1 and manifest["high_band"] is None


def test_flac_with_float_bits_is_refused_in_one_line(capsys, tiny_weights, clips, tmp_path):
    rc, _, err = run(capsys, "separate", clips[(48000, 2)], "-o", tmp_path / "o", "--method", "tiny",
                     "--weights", tiny_weights, "--format", "flac", "--bits", "32")
    assert_one_error(rc, err, "FLAC has no 32-bit float")
    assert not (tmp_path / "o").exists()
    rc, _, err = run(capsys, "separate", clips[(48000, 2)], "--bits", "20")
    assert_one_error(rc, err, "'--bits'")


# --- the methods' masks and the input-rate decoder ----------------------------------------------------------


def test_masks_are_what_separate_applies(tiny_weights):
    """MaskMethod (tiny: binary masks) and IALCMSMethod (soft mel masks): applying `masks` to the
    mixture's STFT gives `separate`'s estimates."""
    from avsep_cli.methods import get_method
    from avsep_cli.models.ialcms import IALCMS
    from avsep_cli.training.systems import IALCMSMethod

    torch.manual_seed(0)
    ialcms = IALCMSMethod(IALCMS(ngf=2, dim=16, blocks=1, frame_size=32), frame_size=32)
    for method in (get_method("tiny", weights=str(tiny_weights)), ialcms):
        size, L = method.frame_size, 8191
        batch = MixBatch(mixture=torch.randn(2, L) * 0.1, stems=torch.zeros(2, 2, 0), classes=[["a", "b"]] * 2,
                         frames=torch.randint(0, 255, (2, 2, method.frames_per_source, 3, size, size), dtype=torch.uint8))
        masks = method.masks(batch)
        assert masks.shape == (2, 2, dsp.N_FREQ, 1 + L // dsp.HOP) and 0 <= masks.min() and masks.max() <= 1
        torch.testing.assert_close(dsp.masked_waveforms(batch.mixture, masks, "linear"), method.separate(batch),
                                   rtol=0, atol=1e-5)


def test_iter_audio_at_the_input_rate_keeps_every_channel(tmp_path):
    wav = mg.source_audio(3.0, 44100)
    path = tmp_path / "a.wav"
    sf.write(str(path), wav.T, 44100, subtype="FLOAT")
    chunks = list(media.iter_audio(path, None, channels="all", chunk_seconds=0.7))
    assert all(c.shape[0] == 2 for c in chunks) and chunks[0].shape[1] == round(0.7 * 44100)
    np.testing.assert_array_equal(np.concatenate(chunks, axis=-1), wav)
    part = np.concatenate(list(media.iter_audio(path, None, channels="all", start=1.0, duration=1.5)), axis=-1)
    np.testing.assert_array_equal(part, wav[:, 44100 : 44100 + round(1.5 * 44100)])
    mono = media.load_audio(path, None)
    np.testing.assert_allclose(mono, wav.mean(0), atol=1e-7)  # the downmix is (L + R) / 2 at the same rate
    half = np.concatenate(list(media.iter_audio(path, 22050, channels="all")), axis=-1)
    np.testing.assert_allclose(half.mean(0), media.load_audio(path, 22050), atol=1e-6)  # resampled per channel
