"""Music-like test signals made from numbers alone: harmonic notes with envelopes at 11025 Hz.

Used where a test needs sources that behave like instruments (sparse in time-frequency, harmonic,
with onsets) without depending on the corpus generator.
"""

from __future__ import annotations

import numpy as np


def harmonic_notes(
    seed: int,
    seconds: float = 6.0,
    sr: int = 11025,
    midi_range: tuple[int, int] = (48, 72),
    n_harmonics: int = 10,
    rolloff: float = 1.0,
    note_seconds: tuple[float, float] = (0.2, 0.7),
    vibrato: float = 0.0,
) -> np.ndarray:
    """A monophonic line of random notes: harmonics with amplitude k^-rolloff, attack/decay envelopes,
    short rests, optional vibrato (fraction of f0). Returns float32 (L,) with peak 0.5."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    out = np.zeros(n, dtype=np.float64)
    t0 = 0
    while t0 < n:
        dur = int(rng.uniform(*note_seconds) * sr)
        if rng.random() < 0.15:  # a rest
            t0 += dur // 2
            continue
        f0 = 440.0 * 2 ** ((rng.integers(*midi_range) - 69) / 12)
        t = np.arange(min(dur, n - t0)) / sr
        phase = 2 * np.pi * f0 * (t + vibrato * np.sin(2 * np.pi * 5.0 * t) / (2 * np.pi * 5.0))
        env = np.minimum(1.0, t / 0.02) * np.exp(-t * rng.uniform(1.0, 4.0))
        note = sum(k ** -rolloff * np.sin(k * phase + rng.uniform(0, 2 * np.pi)) for k in range(1, n_harmonics + 1) if k * f0 < sr / 2)
        out[t0 : t0 + len(t)] += env * note * rng.uniform(0.5, 1.0)
        t0 += dur
    return (0.5 * out / (np.abs(out).max() + 1e-12)).astype(np.float32)


def chirp(seconds: float, sr: int, f_start: float = 100.0, f_end: float = 3000.0) -> np.ndarray:
    """A linear sine sweep, float32 (L,), amplitude 0.5."""
    t = np.arange(int(round(seconds * sr))) / sr
    k = (f_end - f_start) / seconds
    return (0.5 * np.sin(2 * np.pi * (f_start * t + 0.5 * k * t**2))).astype(np.float32)
