"""The signal path every method shares: STFT, frequency warps, masks, iSTFT and resampling.

Conventions follow AVPC and Sound-of-Pixels: mono audio at 11025 Hz, a Hann-window STFT of 1022 samples
with hop 256 (512 frequency bins; a 65535-sample window gives 256 frames), magnitudes warped onto a
256-bin log-frequency grid for the mask networks and masks warped back onto the linear 512-bin grid
before they are applied to the mixture STFT, whose phase is kept. IAL-CMS uses the same machinery with
a 256-bin mel grid. `ScaledGrid` is the same grid at another sample rate, aligned in seconds, for
applying those masks to the input at its own rate (full-band outputs); `triangle` and `WeightedSum` are
the streamed overlap-add (NumPy) that merges separated windows. Every function is batched over leading
dimensions and runs on whatever device its input lives on. Shapes: B batch (any leading dims), S
sources, C channels, L samples, F frequency bins, T frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
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


# --- the references' warp as they compute it (bilinear grid sampling) ----------------------------------


def _reference_grid(n_rows: int, n_frames: int, warp: bool, device, dtype) -> torch.Tensor:
    """(1, n_rows, T, 2) sampling grid of the references' `warpgrid` (AVPC, Sound-of-Pixels and IAL-CMS share
    it): [..., 0] time, linspace(-1, 1, T); [..., 1] frequency. warp=True: row y in linspace(-1, 1, n_rows)
    reads the linear axis at (21^((y + 1) / 2) - 11) / 10 (the log grid); warp=False: the inverse map,
    log(10 y + 11) / log(21) x 2 - 1 (made in float64, used in float32 as the references do)."""
    x = torch.linspace(-1, 1, n_frames, dtype=torch.float64)
    y = torch.linspace(-1, 1, n_rows, dtype=torch.float64)
    gy = (torch.pow(21.0, (y + 1) / 2) - 11) / 10 if warp else torch.log(y * 10 + 11) / math.log(21) * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(x[None, :], gy[:, None]), dim=-1)  # (n_rows, T, 2)
    return grid.to(torch.float32).to(device=device, dtype=dtype)[None]


class GridWarp:
    """The log-frequency warp exactly as the references compute it: `F.grid_sample` (bilinear, zero padding)
    on their grid, with their `align_corners`. AVPC passes False (avpc/main.py 210, utils.py 426): then the
    time axis is resampled too (frame i reads position i T/(T-1) - 1/2) and the edge rows and frames are
    partly zero. align_corners=True (Sound-of-Pixels as published on PyTorch 0.4, IAL-CMS) is `LOG`:
    time identity, the same bilinear weights in frequency."""

    def __init__(self, align_corners: bool, n_in: int = N_FREQ, n_out: int = N_WARP):
        self.align_corners, self.n_in, self.n_out = align_corners, n_in, n_out

    def _sample(self, x: torch.Tensor, rows: int, warp: bool) -> torch.Tensor:
        lead, (f, t) = x.shape[:-2], x.shape[-2:]
        grid = _reference_grid(rows, t, warp, x.device, x.dtype).expand(int(np.prod(lead)) if lead else 1, -1, -1, -1)
        y = torch.nn.functional.grid_sample(x.reshape(-1, 1, f, t), grid, mode="bilinear", padding_mode="zeros",
                                            align_corners=self.align_corners)  # (B, 1, rows, T)
        return y.reshape(*lead, rows, t)

    def warp(self, x: torch.Tensor) -> torch.Tensor:
        """(..., F=512, T) -> (..., 256, T)."""
        return self._sample(x, self.n_out, True)

    def unwarp(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 256, T) -> (..., F=512, T)."""
        return self._sample(x, self.n_in, False)


def log_warp(align_corners: bool) -> FrequencyWarp | GridWarp:
    """The log grid with the references' align_corners: True is `LOG` (a fixed matrix, time identity);
    False is AVPC's grid sampling."""
    return LOG if align_corners else GridWarp(False)


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


def threshold_mask(source_mags: torch.Tensor, mix_mag: torch.Tensor) -> torch.Tensor:
    """(..., S, F, T) source magnitudes and the mixture's (..., F, T) -> (..., S, F, T) binary masks
    source > 0.5 x mixture (float 0/1): the references' Mix-and-Separate target. What is passed decides the
    rule: AVPC gives undivided sources against the mean mixture, i.e. |S_n| > |sum S| / (2N) (avpc/main.py
    226); Sound-of-Pixels sources / N against their sum, i.e. |S_n| > |sum S| / 2 (main.py 62). Unlike the
    dominant-source mask, 0, 1 or several sources may be on in one bin."""
    return (source_mags > 0.5 * mix_mag.unsqueeze(-3)).to(source_mags.dtype)


JOINT_POWER = 2.0  # the Wiener rule; on the val split (README, Joint masks) powers 3 and 4 were within 0.2 dB of
# it for every separator, power 1 0.3-0.6 dB below
JOINT_FLOOR = 1e-6  # a mask below it counts as this: all-zero bins are shared equally, never 0/0


def joint_masks(masks: torch.Tensor, power: float = JOINT_POWER) -> torch.Tensor:
    """(..., S, F, T) soft masks of the S sources of one mixture, each estimated on its own -> masks that share
    the mixture out among them: m_s^p / sum_j m_j^p in every bin. With p = 2 this is the Wiener rule on the
    magnitude estimates m_s |X| (each source's share of the estimated power); the estimates then add up
    to the mixture. Not in the papers: `--masks joint` (see README, Joint masks)."""
    c = masks.float().clamp_min(JOINT_FLOOR) ** power
    return c / c.sum(dim=-3, keepdim=True)


def minmax_normalize(wav: torch.Tensor) -> torch.Tensor:
    """(..., L) -> (..., L) in [-1, 1]: AVPC's per-source level normalisation (avpc/dataset/music.py 89-99,
    without the training-time gain U(0.5, 1.5)): ((a - min) / (max - min + 1e-3) - 0.5) x 2, clipped."""
    lo, hi = wav.amin(-1, keepdim=True), wav.amax(-1, keepdim=True)
    return (((wav - lo) / (hi - lo + 1e-3) - 0.5) * 2).clamp(-1, 1)


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


# --- the same grid at another rate (full-band outputs) ---------------------------------------------------


def _smooth_size(n: int) -> int:
    """The smallest 2-3-5-smooth integer >= n: an FFT size without large prime factors."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


@dataclass(frozen=True)
class ScaledGrid:
    """The models' STFT grid (Hann window of 1022 samples, hop 256 at 11025 Hz) at rate `sr`, scaled in
    seconds: window and hop times sr / 11025, rounded. The FFT size is the next 2-3-5-smooth number at or
    above the window (the window zero-padded to it): sizes with a large prime factor (4088 = 8 x 7 x 73 at
    44.1 kHz) take 3-5 times longer. Frequencies are matched to the model's bins by Hz, frames by the
    seconds of their centres, so neither needs to fall on the model's grid."""

    sr: int
    win: int
    hop: int
    n_fft: int

    @staticmethod
    @lru_cache(maxsize=None)
    def at(sr: int) -> "ScaledGrid":
        r = sr / SAMPLE_RATE
        win = max(16, int(round(N_FFT * r)))
        return ScaledGrid(int(sr), win, max(4, int(round(HOP * r))), _smooth_size(win))

    @property
    def n_freq(self) -> int:
        return self.n_fft // 2 + 1

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        """(..., n) real -> (..., F, T) complex, T = 1 + n // hop (centred frames: frame k at sample k * hop)."""
        lead = wav.shape[:-1]
        spec = torch.stft(wav.reshape(-1, wav.shape[-1]), n_fft=self.n_fft, hop_length=self.hop, win_length=self.win,
                          window=_hann(self.win, wav.device, wav.dtype), center=True,
                          return_complex=True)  # (B, F, T)
        return spec.reshape(*lead, *spec.shape[-2:])

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(..., F, T) complex -> (..., length) real."""
        lead = spec.shape[:-2]
        wav = torch.istft(spec.reshape(-1, *spec.shape[-2:]), n_fft=self.n_fft, hop_length=self.hop,
                          win_length=self.win, window=_hann(self.win, spec.device, spec.real.dtype),
                          center=True, length=length)  # (B, length)
        return wav.reshape(*lead, length)

    def frame_positions(self, n0: int, n_frames: int, s0: int) -> torch.Tensor:
        """(n_frames,) float64: where the centres of this grid's frames of a window starting at sample n0 fall
        on the model frames of a model window starting at sample s0 (same seconds; fractional, unclamped)."""
        centres = (n0 + self.hop * torch.arange(n_frames, dtype=torch.float64)) / self.sr  # seconds
        return (centres - s0 / SAMPLE_RATE) * SAMPLE_RATE / HOP

    def _regrid(self, masks: torch.Tensor, high: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = _lerp(torch.cat([masks, high.unsqueeze(-2)], dim=-2), frames, dim=-1)  # (..., 513, T')
        low = _lerp(t[..., :N_FREQ, :], _freq_positions(self), dim=-2)  # (..., lo, T'): the bins up to 5512.5 Hz
        return low, t[..., N_FREQ:, :]  # and (..., 1, T') for the bins above

    def regrid(self, masks: torch.Tensor, high: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Masks on the model grid (..., 512, T) and one gain per model frame for the band above the model's
        Nyquist (..., T) -> masks (..., F, T') on this grid: linear interpolation in time at `frames` (T',)
        model-frame positions (`frame_positions`, clamped to the window) and in frequency by Hz below
        5512.5 Hz; bins above it take `high`."""
        low, top = self._regrid(masks, high, frames)
        return torch.cat([low, top.expand(*top.shape[:-2], self.n_freq - low.shape[-2], top.shape[-1])], dim=-2)

    def apply(self, spec: torch.Tensor, masks: torch.Tensor, high: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """spec (C, F, T') on this grid times `regrid(masks (S, 512, T), high (S, T), frames)` -> (S, C, F, T'),
        without building the regridded masks above 5512.5 Hz (one gain per frame there)."""
        low, top = self._regrid(masks, high, frames)  # (S, lo, T'), (S, 1, T')
        lo = low.shape[-2]
        return torch.cat([spec[:, :lo] * low.unsqueeze(1), spec[:, lo:] * top.unsqueeze(1)], dim=-2)


@lru_cache(maxsize=16)
def _hann(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.hann_window(n, device=device, dtype=dtype)


@lru_cache(maxsize=None)
def _freq_positions(grid: ScaledGrid) -> torch.Tensor:
    """(lo,) float64: the model-bin position (Hz / (11025 / 1022)) of each of the grid's bins up to the
    model's Nyquist (5512.5 Hz)."""
    hz = torch.arange(grid.n_freq, dtype=torch.float64) * grid.sr / grid.n_fft
    return (hz[hz <= SAMPLE_RATE / 2 + 1e-9] * N_FFT / SAMPLE_RATE).clamp(max=N_FREQ - 1)


def _lerp(x: torch.Tensor, pos: torch.Tensor, dim: int) -> torch.Tensor:
    """`x` sampled at fractional positions `pos` (P,) along `dim` (linear, clamped to the ends)."""
    n = x.shape[dim]
    pos = pos.clamp(0, n - 1)
    lo = pos.floor().long().clamp(max=n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    shape = [1] * x.dim()
    shape[dim] = -1
    w = (pos - lo).to(x.dtype).view(shape).to(x.device)
    return x.index_select(dim, lo.to(x.device)) * (1 - w) + x.index_select(dim, hi.to(x.device)) * w


# --- streaming overlap-add (numpy) -----------------------------------------------------------------------


def triangle(length: int) -> np.ndarray:
    """(L,) weights min(n + 1, L - n): positive everywhere, so the normalised sum is defined at the edges."""
    n = np.arange(length)
    return np.minimum(n + 1, length - n).astype(np.float64)


class WeightedSum:
    """A streamed weighted overlap-add of estimates at any sample offsets: `add(start, est, w)` accumulates
    est (*shape, n) times the weights w (n,) and the weights; `pop(upto)` returns the samples before `upto`
    as (*shape, m), divided by their summed weights (0 where nothing was added), and forgets them. Adds
    may not reach back before what was popped."""

    def __init__(self, shape: tuple[int, ...] | int, dtype=np.float64):
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.dtype = dtype
        self.acc = np.zeros((*self.shape, 0), dtype)  # weighted sums of samples start .. start + len
        self.wsum = np.zeros(0, dtype)
        self.start = 0

    def _grow(self, end: int) -> None:
        need = end - self.start
        if need > self.wsum.shape[0]:
            cap = max(need, 2 * self.wsum.shape[0])  # doubling: adds stay linear in the samples
            acc = np.zeros((*self.shape, cap), self.dtype)
            wsum = np.zeros(cap, self.dtype)
            n = self.wsum.shape[0]
            acc[..., :n], wsum[:n] = self.acc, self.wsum
            self.acc, self.wsum = acc, wsum

    def add(self, start: int, est: np.ndarray, w: np.ndarray) -> None:
        if start < self.start:
            raise ValueError(f"an estimate at {start} reaches back before the samples already popped ({self.start})")
        n = est.shape[-1]
        self._grow(start + n)
        off = start - self.start
        self.acc[..., off : off + n] += est * w
        self.wsum[off : off + n] += w

    def pop(self, upto: int) -> np.ndarray:
        n = max(0, upto - self.start)
        self._grow(upto)
        out = self.acc[..., :n] / np.maximum(self.wsum[:n], 1e-12)
        self.acc, self.wsum = self.acc[..., n:], self.wsum[n:]
        self.start += n
        return out
