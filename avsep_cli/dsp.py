"""The signal path every method shares: STFT, frequency warps, masks, iSTFT and resampling.

Conventions follow AVPC and Sound-of-Pixels: mono audio at 11025 Hz, a Hann-window STFT of 1022 samples
with hop 256 (512 frequency bins; a 65535-sample window gives 256 frames), magnitudes warped onto a
256-bin log-frequency grid for the mask networks and masks warped back onto the linear 512-bin grid
before they are applied to the mixture STFT, whose phase is kept. IAL-CMS uses the same machinery with
a 256-bin mel grid. Every function is batched over leading dimensions and runs on whatever device its
input lives on. Shapes: B batch (any leading dims), S sources, L samples, F frequency bins, T frames.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

SAMPLE_RATE = 11025
N_FFT = 1022
HOP = 256
N_FREQ = N_FFT // 2 + 1  # 512 linear bins
N_WARP = 256  # bins of the log and mel grids
SEGMENT = 65535  # training window in samples (~5.94 s): 256 STFT frames
EPS = 1e-10


# --- STFT -------------------------------------------------------------------------------------------


def _window(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.hann_window(N_FFT, device=device, dtype=dtype)


def stft(wav: torch.Tensor) -> torch.Tensor:
    """(..., L) real -> (..., F=512, T) complex, T = 1 + L // 256 (centred frames)."""
    lead = wav.shape[:-1]
    spec = torch.stft(
        wav.reshape(-1, wav.shape[-1]),
        n_fft=N_FFT,
        hop_length=HOP,
        window=_window(wav.device, wav.dtype),
        center=True,
        return_complex=True,
    )  # (B, F, T)
    return spec.reshape(*lead, *spec.shape[-2:])


def istft(spec: torch.Tensor, length: int) -> torch.Tensor:
    """(..., F=512, T) complex -> (..., L=length) real."""
    lead = spec.shape[:-2]
    real_dtype = spec.real.dtype
    wav = torch.istft(
        spec.reshape(-1, *spec.shape[-2:]),
        n_fft=N_FFT,
        hop_length=HOP,
        window=_window(spec.device, real_dtype),
        center=True,
        length=length,
    )  # (B, L)
    return wav.reshape(*lead, length)


def magphase(spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Complex (..., F, T) -> magnitude (..., F, T) and unit-modulus phase (..., F, T) complex."""
    mag = spec.abs()
    phase = spec / mag.clamp_min(EPS)
    phase = torch.where(mag > EPS, phase, torch.ones_like(phase))
    return mag, phase


def log_magnitude(mag: torch.Tensor) -> torch.Tensor:
    """The networks' input scale: log of the magnitude, floored so silence stays finite."""
    return torch.log(mag.clamp_min(EPS))


# --- frequency warps -----------------------------------------------------------------------------------


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _grid_positions(kind: str, n_in: int, n_out: int, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each warped bin samples the linear axis (in linear-bin units, float64, (n_out,)), and where
    each linear bin sits on the warped axis (in warped-bin units, (n_in,)). Both grids span DC to Nyquist,
    so the two interpolations are inverse to each other wherever the warped grid is the finer one."""
    k = torch.arange(n_in, dtype=torch.float64)
    i = torch.arange(n_out, dtype=torch.float64)
    if kind == "log":
        # the field's log grid (Sound-of-Pixels, AVPC): warped fraction u in [0, 1] reads the linear axis
        # at fraction (21^u - 1) / 20, i.e. log(f + f_c) with f_c = 1/20 of Nyquist (~276 Hz): log-spaced
        # above a few hundred Hz, close to linear below, so low bins are not wasted on DC.
        fwd = (n_in - 1) * (torch.pow(21.0, i / (n_out - 1)) - 1.0) / 20.0
        inv = (n_out - 1) * torch.log1p(20.0 * k / (n_in - 1)) / math.log(21.0)
    elif kind == "mel":
        bin_hz = sample_rate / (2.0 * (n_in - 1))
        mel_max = _hz_to_mel(torch.tensor((n_in - 1) * bin_hz, dtype=torch.float64))
        mel_i = i / (n_out - 1) * mel_max
        fwd = 700.0 * (torch.pow(10.0, mel_i / 2595.0) - 1.0) / bin_hz
        inv = _hz_to_mel(k * bin_hz) / mel_max * (n_out - 1)
    else:
        raise ValueError(f"unknown frequency scale {kind!r}: expected 'log' or 'mel'")
    return fwd.clamp(0, n_in - 1), inv.clamp(0, n_out - 1)


def _interp_matrix(pos: torch.Tensor, n_src: int) -> torch.Tensor:
    """Linear interpolation at fractional positions `pos` (n_dst,) of a length-n_src axis as a dense
    (n_dst, n_src) matrix: the 1-D equivalent of bilinear grid sampling with an identity time axis."""
    lo = pos.floor().clamp(0, n_src - 1)
    w = pos - lo
    lo = lo.long()
    hi = (lo + 1).clamp(max=n_src - 1)
    m = torch.zeros(pos.numel(), n_src, dtype=torch.float64)
    rows = torch.arange(pos.numel())
    m.index_put_((rows, lo), 1.0 - w, accumulate=True)
    m.index_put_((rows, hi), w, accumulate=True)
    return m


@lru_cache(maxsize=None)
def _warp_matrices(kind: str, n_in: int, n_out: int, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    fwd_pos, inv_pos = _grid_positions(kind, n_in, n_out, sample_rate)
    return _interp_matrix(fwd_pos, n_in), _interp_matrix(inv_pos, n_out)  # (n_out, n_in), (n_in, n_out)


class FrequencyWarp:
    """A fixed resampling of the frequency axis between the linear STFT grid (512 bins) and a warped
    grid (256 bins, log or mel spaced). `warp` maps spectrograms onto the warped grid (the networks'
    view); `unwarp` maps masks predicted on the warped grid back to the linear grid (the mask path)."""

    def __init__(self, kind: str = "log", n_in: int = N_FREQ, n_out: int = N_WARP, sample_rate: int = SAMPLE_RATE):
        self.kind, self.n_in, self.n_out, self.sample_rate = kind, n_in, n_out, sample_rate
        self._fwd, self._inv = _warp_matrices(kind, n_in, n_out, sample_rate)

    def warp(self, x: torch.Tensor) -> torch.Tensor:
        """(..., F=512, T) -> (..., 256, T)."""
        return torch.matmul(self._fwd.to(x.device, x.dtype), x)

    def unwarp(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 256, T) -> (..., F=512, T)."""
        return torch.matmul(self._inv.to(x.device, x.dtype), x)


LOG = FrequencyWarp("log")
MEL = FrequencyWarp("mel")


def warp_for(scale: str) -> FrequencyWarp | None:
    """The warp of a mask scale name: 'log', 'mel' or 'linear' (None: no warp)."""
    if scale == "linear":
        return None
    return {"log": LOG, "mel": MEL}[scale]


# --- masks ----------------------------------------------------------------------------------------------


def apply_mask(mix_spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mixture STFT (..., F, T) complex times a real mask (..., F, T): magnitude scaled, phase kept."""
    return mix_spec * mask.to(mix_spec.real.dtype)


def ideal_binary_mask(source_mags: torch.Tensor) -> torch.Tensor:
    """(..., S, F, T) source magnitudes -> (..., S, F, T) one-hot masks of the dominant source per bin
    (the Mix-and-Separate training target of AVPC/Sound-of-Pixels)."""
    winner = source_mags.argmax(dim=-3, keepdim=True)
    return torch.zeros_like(source_mags).scatter_(-3, winner, 1.0)


def ideal_ratio_mask(source_mags: torch.Tensor) -> torch.Tensor:
    """(..., S, F, T) -> (..., S, F, T) magnitude ratios, summing to 1 wherever any source is non-zero."""
    total = source_mags.sum(dim=-3, keepdim=True)
    return torch.where(total > EPS, source_mags / total.clamp_min(EPS), torch.full_like(source_mags, 1.0 / source_mags.shape[-3]))


def masked_waveforms(mix_wav: torch.Tensor, masks: torch.Tensor, scale: str = "linear") -> torch.Tensor:
    """Apply S masks to a mixture and return waveforms.

    mix_wav (..., L); masks (..., S, F', T) on the `scale` grid ('linear': F'=512, 'log'/'mel': F'=256,
    warped back before use) -> (..., S, L).
    """
    spec = stft(mix_wav).unsqueeze(-3)  # (..., 1, F, T)
    warp = warp_for(scale)
    lin = masks if warp is None else warp.unwarp(masks)  # (..., S, F, T)
    return istft(apply_mask(spec, lin), mix_wav.shape[-1])


# --- resampling -------------------------------------------------------------------------------------


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int = SAMPLE_RATE) -> torch.Tensor:
    """(..., L) at orig_sr -> (..., L') at new_sr (band-limited sinc interpolation)."""
    if int(orig_sr) == int(new_sr):
        return wav
    import torchaudio.functional as AF

    return AF.resample(wav, int(orig_sr), int(new_sr))
