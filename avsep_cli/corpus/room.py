"""The room a clip is recorded in: synthetic impulse responses, loudness normalisation, a noise floor.

SoundFont notes are dry and their levels differ by 15 dB between instruments (xylophone ~-43 dBFS), so
every stem is reverberated with an impulse response of one per-clip room (a direct path, a few early
reflections and an exponentially decaying noise tail whose RT60 and direct-to-reverberant ratio are
drawn per clip; each player gets its own tail, as it stands elsewhere in the room), then normalised to
a gated RMS level so that no class is recognisable from loudness alone. Convolution is an FFT
convolution (~10 ms for six seconds).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve


def impulse_response(rng: np.random.Generator, sr: int, rt60: float, drr_db: float) -> np.ndarray:
    """(L,) float32 room impulse response, L = 1.2 * rt60 seconds; direct path first, peak 1."""
    n = max(int(1.2 * rt60 * sr), 64)
    t = np.arange(n) / sr
    # Late reverb: noise with a 60 dB decay over rt60, darkened by a one-pole low-pass (air absorption).
    tail = rng.standard_normal(n) * np.exp(-6.908 * t / rt60)
    a = np.exp(-2 * np.pi * rng.uniform(2500, 7000) / sr)
    from scipy.signal import lfilter

    tail = lfilter([1 - a], [1, -a], tail)
    onset = int(rng.uniform(0.004, 0.012) * sr)       # first reflection delay
    tail[:onset] = 0.0
    for _ in range(int(rng.integers(3, 7))):           # discrete early reflections
        k = int(rng.uniform(0.004, 0.04) * sr)
        if k < n:
            tail[k] += rng.uniform(0.2, 0.6) * rng.choice([-1.0, 1.0])
    # Scale the reverberant part to the requested direct-to-reverberant energy ratio.
    tail *= np.sqrt(10 ** (-drr_db / 10) / max(float(np.sum(tail ** 2)), 1e-12))
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverberate(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """(T,) -> (T,): convolved and cut to the input length (the tail past the clip end is dropped)."""
    return fftconvolve(x.astype(np.float64), ir.astype(np.float64))[: len(x)].astype(np.float32)


def gated_rms(x: np.ndarray, sr: int, frame: float = 0.05, gate_db: float = 30.0) -> float:
    """RMS over the 50 ms frames within `gate_db` of the loudest one, so rests do not count."""
    hop = max(1, int(frame * sr))
    n = len(x) // hop
    if n == 0:
        return float(np.sqrt(np.mean(x.astype(np.float64) ** 2) + 1e-20))
    e = np.mean(x[: n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1)
    keep = e >= e.max() * 10 ** (-gate_db / 10)
    return float(np.sqrt(np.mean(e[keep]) + 1e-20))


def normalise(x: np.ndarray, sr: int, target_db: float) -> np.ndarray:
    """Scale `x` so its gated RMS is `target_db` dBFS."""
    return (x * (10 ** (target_db / 20) / gated_rms(x, sr))).astype(np.float32)


def envelope(x: np.ndarray, sr: int, fps: float, n_frames: int) -> np.ndarray:
    """(n_frames,) loudness per video frame in [0, 1] (RMS over each frame's span, max-normalised)."""
    hop = sr / fps
    out = np.zeros(n_frames, np.float32)
    for i in range(n_frames):
        a, b = int(i * hop), int((i + 1) * hop)
        seg = x[a:b]
        out[i] = float(np.sqrt(np.mean(seg.astype(np.float64) ** 2))) if len(seg) else 0.0
    m = out.max()
    return out / m if m > 0 else out
