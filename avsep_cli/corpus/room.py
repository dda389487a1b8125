"""The room a clip is recorded in: synthetic impulse responses, loudness normalisation, a noise floor.

SoundFont notes are dry and their levels differ by 15 dB between instruments (xylophone ~-43 dBFS), so
every stem is reverberated with an impulse response of one per-clip room (a direct path, a few early
reflections and an exponentially decaying noise tail whose RT60 and direct-to-reverberant ratio are
drawn per clip; each player gets its own tail, as it stands elsewhere in the room), then normalised to
a gated RMS level so that no class is recognisable from loudness alone. Convolution is an FFT
convolution (~10 ms for six seconds).

Stereo clips (`stereo_reverb_tails`, `place`): each player's direct sound is panned with an equal-power
law by where the player stands in the picture, while its reverberation comes from one independent tail
per channel (same room: decay, absorption and direct-to-reverberant ratio) and reaches both channels with
equal power, as a diffuse field reaches both microphones of a spaced pair. The channels then differ in
level by where the player is and decorrelate in the reverb.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve


def impulse_response(rng: np.random.Generator, sr: int, rt60: float, drr_db: float,
                     cutoff_hz: float | None = None) -> np.ndarray:
    """(L,) float32 room impulse response, L = 1.2 * rt60 seconds; direct path first, peak 1. The tail's
    absorption low-pass is at `cutoff_hz` (None: drawn from 2.5-7 kHz)."""
    n = max(int(1.2 * rt60 * sr), 64)
    t = np.arange(n) / sr
    # Late reverb: noise with a 60 dB decay over rt60, darkened by a one-pole low-pass (air absorption).
    tail = rng.standard_normal(n) * np.exp(-6.908 * t / rt60)
    a = np.exp(-2 * np.pi * (rng.uniform(2500, 7000) if cutoff_hz is None else cutoff_hz) / sr)
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
    """RMS over the 50 ms frames within `gate_db` of the loudest one, so rests do not count. x: (T,) or
    (C, T) (then per channel: a centre-panned stereo copy of a mono signal has the mono's value)."""
    hop = max(1, int(frame * sr))
    n = x.shape[-1] // hop
    if n == 0:
        return float(np.sqrt(np.mean(x.astype(np.float64) ** 2) + 1e-20))
    if x.ndim == 2:  # (C, T): a frame's energy is the mean over its channels
        e = np.mean(x[:, : n * hop].astype(np.float64).reshape(x.shape[0], n, hop) ** 2, axis=(0, 2))
    else:
        e = np.mean(x[: n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1)
    keep = e >= e.max() * 10 ** (-gate_db / 10)
    return float(np.sqrt(np.mean(e[keep]) + 1e-20))


def normalise(x: np.ndarray, sr: int, target_db: float) -> np.ndarray:
    """Scale `x` ((T,) or (C, T)) so its gated RMS is `target_db` dBFS."""
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



def stereo_reverb_tails(rng: np.random.Generator, sr: int, rt60: float, drr_db: float) -> np.ndarray:
    """(2, L) float32: the reverberant parts (no direct path: sample 0 is 0) of one room's impulse
    responses at two microphones: independent noise tails and early reflections, one absorption
    low-pass, each scaled to `drr_db` below a unit direct path."""
    cutoff = float(rng.uniform(2500, 7000))
    irs = np.stack([impulse_response(rng, sr, rt60, drr_db, cutoff_hz=cutoff) for _ in range(2)])
    irs[:, 0] = 0.0
    return irs


def equal_power(pan: float) -> tuple[float, float]:
    """(left, right) gains of an equal-power pan law: pan -1 is hard left, 0 centre (both 1/sqrt 2), +1
    hard right; left**2 + right**2 == 1 everywhere."""
    theta = (float(np.clip(pan, -1.0, 1.0)) + 1.0) * np.pi / 4
    return float(np.cos(theta)), float(np.sin(theta))


def pan_from_boxes(boxes: np.ndarray, width: float) -> float:
    """A player's stereo position from its boxes ((T, 4) x0, y0, x1, y1 pixels in a frame `width` wide):
    the mean horizontal centre of its non-empty boxes, mapped from [0, width] to [-1, 1] (the picture's
    left edge is hard left, as for a microphone pair framing the stage like the camera)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    seen = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    if not seen.any():
        return 0.0
    cx = float(np.mean((b[seen, 0] + b[seen, 2]) / 2))
    return float(np.clip(2.0 * cx / float(width) - 1.0, -1.0, 1.0))


def place(dry: np.ndarray, reverb: np.ndarray, pan: float) -> np.ndarray:
    """(2, T) stereo stem of a player at `pan`: its (T,) `dry` sound times sqrt(2) * `equal_power(pan)`
    (at pan 0 each channel has the mono level, and the total power does not depend on the pan) plus
    `reverb` (2, T) (the dry sound through `stereo_reverb_tails`), each channel rescaled to the mean
    power of the two, so that the reverb carries no level difference of its own."""
    rev = np.asarray(reverb, np.float64)
    power = np.sum(rev ** 2, axis=1)
    rev = rev * np.sqrt(power.mean() / np.maximum(power, 1e-30))[:, None]
    gains = np.sqrt(2.0) * np.asarray(equal_power(pan))
    return (gains[:, None] * np.asarray(dry, np.float64)[None] + rev).astype(np.float32)


def mic_colour(x: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A microphone and its placement, drawn per player: a high-pass (20-150 Hz, 2nd order), a spectral
    tilt (a first-order shelf, -4..+4 dB towards the top), and one or two resonant peaks or dips (200 Hz -
    8 kHz, +-6 dB). x: (T,) or (C, T) (the same colouring on every channel). Returns (coloured float32,
    parameters for the sidecar). Apply to the dry sound before the room."""
    from scipy.signal import butter, sosfilt

    hp = float(rng.uniform(20, 150))
    tilt = float(rng.uniform(-4, 4))
    peaks = [(float(np.exp(rng.uniform(np.log(200), np.log(8000)))), float(rng.uniform(0.7, 3.0)),
              float(rng.uniform(-6, 6))) for _ in range(int(rng.integers(1, 3)))]
    sos = [butter(2, hp / (sr / 2), "highpass", output="sos")[0]]
    # tilt: high shelf at 1.5 kHz (RBJ cookbook, S = 1)
    a, w = 10 ** (tilt / 40), 2 * np.pi * 1500 / sr
    al = np.sin(w) / 2 * np.sqrt(2)
    c, sa = np.cos(w), 2 * np.sqrt(a) * al
    b0, b1, b2 = a * ((a + 1) + (a - 1) * c + sa), -2 * a * ((a - 1) + (a + 1) * c), a * ((a + 1) + (a - 1) * c - sa)
    a0, a1, a2 = (a + 1) - (a - 1) * c + sa, 2 * ((a - 1) - (a + 1) * c), (a + 1) - (a - 1) * c - sa
    sos.append(np.array([b0, b1, b2, a0, a1, a2]) / a0)
    for f0, q, g in peaks:
        f0 = min(f0, 0.45 * sr)
        a, w = 10 ** (g / 40), 2 * np.pi * f0 / sr
        al = np.sin(w) / (2 * q)
        row = np.array([1 + al * a, -2 * np.cos(w), 1 - al * a, 1 + al / a, -2 * np.cos(w), 1 - al / a])
        sos.append(row / row[3])
    y = sosfilt(np.stack(sos), np.asarray(x, np.float64), axis=-1).astype(np.float32)
    return y, {"highpass_hz": round(hp, 1), "tilt_db": round(tilt, 2),
               "peaks": [[round(f, 1), round(q, 2), round(g, 2)] for f, q, g in peaks]}
