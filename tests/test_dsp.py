"""The shared signal path: STFT round trip, frequency warps, masks and resampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avsep_cli import dsp
from signals import chirp, harmonic_notes

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def snr_db(ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10((ref**2).sum(-1) / ((ref - est) ** 2).sum(-1))


def two_sources(seed: int) -> torch.Tensor:
    """(2, L) float64: a low, bright line and a higher, softer line with vibrato."""
    a = harmonic_notes(seed, midi_range=(40, 60), n_harmonics=12, rolloff=1.0)
    b = harmonic_notes(100 + seed, midi_range=(60, 84), n_harmonics=6, rolloff=1.5, vibrato=0.01)
    return torch.from_numpy(np.stack([a, b])).double()


def test_stft_shapes_match_the_papers():
    spec = dsp.stft(torch.zeros(2, 3, dsp.SEGMENT))
    assert spec.shape == (2, 3, 512, 256) and spec.is_complex()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale,bins", [("linear", 512), ("log", 256), ("mel", 256)])
def test_unit_mask_returns_the_input(device, dtype, scale, bins):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 20000, generator=gen, dtype=dtype).to(device)
    x[1] = torch.from_numpy(chirp(20000 / 11025, 11025)).to(device, dtype)
    frames = 1 + x.shape[-1] // dsp.HOP
    y = dsp.masked_waveforms(x, torch.ones(3, 1, bins, frames, dtype=dtype, device=device), scale)
    assert y.shape == (3, 1, 20000)
    assert snr_db(x, y[:, 0]).min() >= 60.0


@pytest.mark.parametrize("scale", ["log", "mel"])
def test_warp_is_interpolation_and_monotone(scale):
    warp = dsp.warp_for(scale)
    fwd, inv = warp._fwd, warp._inv
    assert fwd.shape == (256, 512) and inv.shape == (512, 256)
    assert torch.allclose(fwd.sum(1), torch.ones(256, dtype=fwd.dtype))
    assert torch.allclose(inv.sum(1), torch.ones(512, dtype=inv.dtype))
    centre = lambda m: (m * torch.arange(m.shape[1], dtype=m.dtype)).sum(1)  # noqa: E731
    assert (centre(fwd).diff() > 0).all() and (centre(inv).diff() >= 0).all()
    # spans DC to Nyquist
    assert centre(fwd)[0] == 0 and abs(centre(fwd)[-1] - 511) < 1e-9
    # a constant survives both ways; a smooth low-frequency shape survives warp -> unwarp
    ones = torch.ones(512, 4, dtype=torch.float64)
    assert torch.allclose(warp.unwarp(warp.warp(ones)), ones)
    smooth = torch.cos(torch.linspace(0, np.pi, 512, dtype=torch.float64))[:, None]
    back = warp.unwarp(warp.warp(smooth))
    assert (back - smooth).abs().max() < 0.02


@pytest.mark.parametrize("seed", range(4))
def test_log_grid_ibm_is_within_1db_of_linear_ibm(seed):
    src = two_sources(seed)
    mix = src.sum(0)
    mags = dsp.stft(src).abs()  # (2, 512, T)
    lin = dsp.masked_waveforms(mix, dsp.ideal_binary_mask(mags), "linear")
    # the AVPC mask path: decide on the 256-bin log grid, warp back, binarise at 0.5
    log_mask = dsp.LOG.unwarp(dsp.ideal_binary_mask(dsp.LOG.warp(mags)))
    log = dsp.masked_waveforms(mix, (log_mask > 0.5).double(), "linear")
    sdr_lin, sdr_log = snr_db(src, lin), snr_db(src, log)
    assert sdr_lin.min() > 10.0  # the oracle really separates
    assert (sdr_lin - sdr_log).max() <= 1.0, (sdr_lin, sdr_log)
    # and warping the soft mask back directly (no binarising) is just as close
    soft = dsp.masked_waveforms(mix, dsp.ideal_binary_mask(dsp.LOG.warp(mags)), "log")
    assert (sdr_lin - snr_db(src, soft)).max() <= 1.0


def test_ideal_masks():
    mags = torch.rand(2, 3, 512, 10)
    ibm = dsp.ideal_binary_mask(mags)
    assert torch.equal(ibm.sum(-3), torch.ones(2, 512, 10))
    assert torch.equal(ibm.argmax(-3), mags.argmax(-3))
    irm = dsp.ideal_ratio_mask(torch.cat([mags, torch.zeros(2, 3, 1, 10)], dim=-2))
    assert torch.allclose(irm.sum(-3), torch.ones(2, 513, 10))
    assert torch.isfinite(irm).all()


def test_magphase_recombines():
    spec = dsp.stft(torch.randn(2, 5000))
    spec[..., 3] = 0  # silent frame: phase must stay finite
    mag, phase = dsp.magphase(spec)
    assert torch.isfinite(phase.abs()).all()
    assert torch.allclose(mag * phase, spec, atol=1e-6)


@pytest.mark.parametrize("orig_sr", [8000, 22050, 44100, 48000])
def test_resample_keeps_pitch_and_duration(orig_sr):
    t = torch.arange(2 * orig_sr, dtype=torch.float64) / orig_sr
    y = dsp.resample(torch.sin(2 * np.pi * 440.0 * t)[None], orig_sr)  # (1, L')
    assert abs(y.shape[-1] - 2 * dsp.SAMPLE_RATE) <= 1
    spectrum = torch.fft.rfft(y[0, 1000:-1000] * torch.hann_window(y.shape[-1] - 2000, dtype=y.dtype))
    peak_hz = spectrum.abs().argmax().item() * dsp.SAMPLE_RATE / (y.shape[-1] - 2000)
    assert abs(peak_hz - 440.0) < 2.0
    ref = torch.sin(2 * np.pi * 440.0 * torch.arange(y.shape[-1], dtype=torch.float64) / dsp.SAMPLE_RATE)
    assert snr_db(ref[1000:-1000], y[0, 1000:-1000]) > 40.0
