"""Timbre sources of the offline corpus: SoundFonts, our own instrument models, and sources derived from
the fonts' notes, so that a class sounds like more than two or three sample sets.

A `Source` is one timbre: a font's recording set (``kind="font"``; fonts that share recordings are one
source), a physical/spectral model written here (``kind="model"``, keys ``pm-*``), or a source derived
from a font's notes (``kind="derived"``): ``additive-<font>`` resynthesises harmonic spectra measured
from that font's notes with our own envelopes, vibrato and noise, ``warp-<font>`` plays the font's
samples transposed (rendered k semitones away and resampled back: the formants move by 2**(k/12)) and
through a random spectral-envelope warp. A derived source belongs to its font's *group*: the split
logic holds out whole groups, so a font held out for test takes its derived sources with it.

Every model renders a mono line from `render.perform` events in tens of milliseconds (numpy / scipy
`lfilter`): per-note wavetable oscillators (a single-cycle table from the model's spectrum, read with
a continuous phase: pitch glides, vibrato and level-dependent brightness by cross-fading a soft and a
loud table), Karplus-Strong waveguides for plucked strings, modal banks for bars, membranes and struck
strings, and noise parts (breath, bow, hammer, snare wires) — then a body filter (a few resonant
biquads) per model. Everything random comes from the `rng` passed in, so a stem is a function of
(source, class, events, rng state).

``python -m avsep_cli.corpus.sources --report`` prints a per-class table: the sources, the smallest
distance between two sources' average log-mel envelopes of matched notes, and how well a nearest-centroid
classifier on MFCC-like features tells the sources apart on held-out notes. ``--overlap`` prints the
font-overlap table (which fonts share recordings; also ``scripts/font_overlap.py``).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import lfilter, resample_poly, sosfilt

from avsep_cli.corpus import classes as C
from avsep_cli.corpus.render import NoteEvent, Renderer


@dataclass(frozen=True)
class Source:
    key: str          # sample-set id recorded in sidecars: "fluidr3", "pm-bowed", "additive-fluidr3", ...
    group: str        # split unit: a derived source shares its origin font's group; a model is its own
    kind: str         # "font" | "model" | "derived"
    licence: str
    description: str


# ----------------------------------------------------------------------------------- font rendering

_RENDERERS: dict[int, Renderer] = {}


def _renderer(sr: int) -> Renderer:
    if sr not in _RENDERERS:
        _RENDERERS[sr] = Renderer(sr)
    return _RENDERERS[sr]


def _font(fonts: list[C.Font], key: str) -> C.Font | None:
    for f in fonts:
        if f.key == key:
            return f
    return None


def render_font(font: C.Font, cls: str, program: int, bank: int, events, duration: float, sr: int) -> np.ndarray:
    b, p = C.preset(font, cls, program, bank)
    if font.key in C.KIT_FONTS:  # a kit font's drums sit on a melodic preset: play it on the drum channel
        return _renderer(sr).render_on(font.path, b, p, tuple(events), duration, drums=True)
    return _renderer(sr).render(font.path, b, p, tuple(events), duration)


def _test_pitches(cls: str, n: int = 5) -> list[int]:
    spec = C.CLASSES[cls]
    if spec.bank == 128:
        return [36, 38, 42, 46, 45, 47, 50, 49, 51][:max(n, 5)]
    return [int(round(v)) for v in np.linspace(spec.low + 2, spec.high - 2, n)]


def _note_events(pitch: int, vel: int, dur: float = 0.8) -> tuple[NoteEvent, ...]:
    return (NoteEvent(0.0, dur, int(pitch), int(vel)),)


def _stft_db(x: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """(frames, bins) log magnitude in dB, floored at 80 dB below the peak."""
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None] + hop * np.arange(n)[:, None]
    mag = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft), axis=1))
    db = 20 * np.log10(mag + 1e-9)
    return np.maximum(db, db.max() - 80.0)


def _xcorr_peak(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, int]:
    """(peak |normalised cross-correlation| within +-max_lag samples, its lag)."""
    n = len(a) + len(b)
    nfft = 1 << (n - 1).bit_length()
    c = np.fft.irfft(np.fft.rfft(a, nfft) * np.conj(np.fft.rfft(b, nfft)), nfft)
    c = np.concatenate([c[-max_lag:], c[: max_lag + 1]])
    k = int(np.argmax(np.abs(c)))
    norm = np.sqrt(np.sum(a * a) * np.sum(b * b)) + 1e-20
    return float(abs(c[k]) / norm), k - max_lag


def _phat_peak(a: np.ndarray, b: np.ndarray, max_lag: int) -> float:
    """Peak of the phase-transform cross-correlation (GCC-PHAT) within +-max_lag over the bins where both
    signals are within 50 dB of their peaks: 1 for one recording (whatever the envelopes or EQ), near 0
    for two recordings, even of near-sinusoidal notes whose plain correlation is high."""
    n = len(a) + len(b)
    nfft = 1 << (n - 1).bit_length()
    fa, fb = np.fft.rfft(a, nfft), np.fft.rfft(b, nfft)
    ma, mb = np.abs(fa), np.abs(fb)
    keep = (ma > ma.max() * 10 ** (-50 / 20)) & (mb > mb.max() * 10 ** (-50 / 20))
    if keep.sum() < 8:
        return 0.0
    cross = np.where(keep, fa * np.conj(fb) / (ma * mb + 1e-30), 0)
    c = np.fft.irfft(cross, nfft)
    c = np.concatenate([c[-max_lag:], c[: max_lag + 1]])
    return float(np.max(np.abs(c)) * nfft / (2 * keep.sum()))


def font_overlap(cls: str, fonts: list[C.Font], sr: int = 22050, threshold: float = 0.8) -> dict:
    """{(font a, font b): {"wave", "spec", "same"}} for every pair of `fonts` that play `cls`: medians over
    notes (5 pitches across the range or 9 kit pieces, velocities 64 and 112, every program of the class)
    of the peak normalised waveform cross-correlation (+-50 ms) and of the correlation of the aligned
    log-spectrograms, and of the GCC-PHAT peak ("phat"); "shared" = the fraction of notes whose GCC-PHAT
peak or waveform correlation reaches `threshold` (one recording: 0.95-1.0; two recordings of a
near-sinusoidal note such as piano, xylophone or tuba reach 0.6-0.7 in waveform, 0.35-0.65 in PHAT);
"same" = at least 30 % of the notes shared (fonts that share only part of the range count as one set)."""
    spec = C.CLASSES[cls]
    fl = [f for f in fonts if C.plays(f, cls)]
    notes = [(prog, p, v) for prog in spec.programs for p in _test_pitches(cls) for v in (64, 112)]
    audio = {f.key: [render_font(f, cls, prog, spec.bank, _note_events(p, v), 1.2, sr) for prog, p, v in notes]
             for f in fl}
    out = {}
    for fa, fb in itertools.combinations(fl, 2):
        waves, specs, phats = [], [], []
        for xa, xb in zip(audio[fa.key], audio[fb.key]):
            if not (np.any(xa) and np.any(xb)):
                continue
            w, lag = _xcorr_peak(xa.astype(np.float64), xb.astype(np.float64), int(0.05 * sr))
            xb2 = np.roll(xb, lag)
            sa, sb = _stft_db(xa), _stft_db(xb2)
            sa, sb = sa - sa.mean(), sb - sb.mean()
            specs.append(float(np.sum(sa * sb) / np.sqrt(np.sum(sa * sa) * np.sum(sb * sb) + 1e-20)))
            waves.append(w)
            phats.append(_phat_peak(xa.astype(np.float64), xb.astype(np.float64), int(0.05 * sr)))
        shared = float(np.mean((np.array(phats) >= threshold) | (np.array(waves) >= threshold))) if phats else 0.0
        out[(fa.key, fb.key)] = {"wave": float(np.median(waves)) if waves else 0.0,
                                 "phat": float(np.median(phats)) if phats else 0.0,
                                 "spec": float(np.median(specs)) if specs else 0.0,
                                 "shared": shared, "same": shared >= 0.3, "n": len(waves)}
    return out


# ------------------------------------------------------------------------------------------ helpers

_TABLE = 2048
_TWO_PI = 2 * np.pi


def _hz(pitch: float) -> float:
    return 440.0 * 2 ** ((pitch - 69) / 12)


def _table(amps: np.ndarray, phases: np.ndarray | None = None) -> np.ndarray:
    """(_TABLE + 1,) single-cycle wave with harmonic amplitudes `amps` (k = 1..K), peak-free phases."""
    k = np.arange(1, len(amps) + 1)
    if phases is None:
        phases = 0.5 * np.pi * k * k / len(amps)  # Schroeder-like phases: low crest factor
    spec = np.zeros(_TABLE // 2 + 1, complex)
    spec[k] = amps * np.exp(1j * phases) * (_TABLE / 2)
    t = np.fft.irfft(spec, _TABLE)
    return np.append(t, t[0])


def _read(table: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Wavetable lookup with linear interpolation; `phase` in cycles."""
    x = (phase % 1.0) * _TABLE
    i = x.astype(np.int64)
    f = x - i
    return table[i] * (1 - f) + table[i + 1] * f


def _biquad_peak(f0: float, q: float, gain_db: float, sr: int) -> np.ndarray:
    """One peaking-EQ second-order section (RBJ cookbook) as an sos row."""
    f0 = min(f0, 0.45 * sr)
    a = 10 ** (gain_db / 40)
    w = _TWO_PI * f0 / sr
    al = np.sin(w) / (2 * q)
    b = [1 + al * a, -2 * np.cos(w), 1 - al * a]
    d = [1 + al / a, -2 * np.cos(w), 1 - al / a]
    return np.array(b + d) / d[0]


def _body(x: np.ndarray, peaks, sr: int, rng: np.random.Generator, jitter: float = 0.08) -> np.ndarray:
    """x through peaking filters [(Hz, Q, dB), ...], each centre moved by up to +-`jitter` (one body)."""
    if not peaks:
        return x
    sos = np.stack([_biquad_peak(f * (1 + rng.uniform(-jitter, jitter)), q, g, sr) for f, q, g in peaks])
    return sosfilt(sos, x)


def _bandnoise(n: int, lo: float, hi: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """White noise band-passed to [lo, hi] Hz by two one-pole filters (cheap, gentle slopes)."""
    x = rng.standard_normal(n)
    a = np.exp(-_TWO_PI * min(hi, 0.45 * sr) / sr)
    x = lfilter([1 - a], [1, -a], x)
    b = np.exp(-_TWO_PI * lo / sr)
    return lfilter([1, -1], [1, -b], x)


def _adsr(n: int, n_on: int, sr: int, attack: float, decay: float, sustain: float, release: float) -> np.ndarray:
    """(n,) envelope: linear attack, exponential decay to `sustain`, exponential release after n_on."""
    t = np.arange(n) / sr
    env = np.where(t < attack, t / max(attack, 1e-4),
                   sustain + (1 - sustain) * np.exp(-np.maximum(t - attack, 0) / max(decay, 1e-4)))
    if n_on < n:
        env[n_on:] = env[n_on - 1 if n_on > 0 else 0] * np.exp(-(t[n_on:] - t[n_on]) / max(release, 1e-4) * 3)
    return env


def _spans(events, n: int, sr: int, tail: float):
    """(event, start sample, samples while held, total samples incl. `tail` s) for events inside n."""
    for e in events:
        a = int(round(e.start * sr))
        if a >= n:
            continue
        on = max(1, int(round(e.duration * sr)))
        tot = min(n - a, on + int(tail * sr))
        yield e, a, min(on, tot), tot


def _vel(e) -> float:
    return float(np.clip(e.velocity, 1, 127)) / 127.0


def _vibrato(n: int, sr: int, rate: float, depth_semi: float, delay: float, rng) -> np.ndarray:
    """(n,) pitch offset in semitones: delayed sinusoidal vibrato with a little rate wander."""
    t = np.arange(n) / sr
    ramp = np.clip((t - delay) / 0.25, 0, 1)
    wob = rate * (1 + 0.05 * np.sin(_TWO_PI * 0.7 * t + rng.uniform(0, 6)))
    return depth_semi * ramp * np.sin(np.cumsum(_TWO_PI * wob / sr) + rng.uniform(0, 6))


# ------------------------------------------------------------------------------ sustained: tables

def _sustained(events, n: int, sr: int, rng, *, spectrum, attack: float, release: float, vib_rate: float,
               vib_depth: float, scoop: float = 0.0, bright_attack: float = 0.0, detune_cents: float = 0.0,
               tremolo: float = 0.0) -> np.ndarray:
    """Monophonic-ish line of wavetable notes. `spectrum(f0, level)` -> harmonic amplitudes; the soft
    (level 0.2) and loud (level 1) tables are cross-faded by the note's velocity and envelope (brighter
    when louder, as brass and reeds are). `detune_cents` > 0 adds a second, detuned voice (accordion
    reeds)."""
    out = np.zeros(n)
    for e, a, on, tot in _spans(events, n, sr, release * 1.5):
        f0 = _hz(e.pitch)
        kmax = max(1, int(0.45 * sr / (f0 * 2 ** (max(vib_depth, 0.1) / 12))))
        v = _vel(e)
        soft, loud = (_table(np.asarray(spectrum(f0, lv))[:kmax]) for lv in (0.2, 1.0))
        env = _adsr(tot, on, sr, attack * (1.3 - 0.6 * v), 0.3, 0.85, release)
        semis = _vibrato(tot, sr, vib_rate * rng.uniform(0.9, 1.1), vib_depth * rng.uniform(0.6, 1.4),
                         0.15 + 0.2 * rng.random(), rng)
        if scoop:
            semis = semis - scoop * v * np.exp(-np.arange(tot) / (0.04 * sr))
        freq = f0 * 2 ** (semis / 12) * (1 + 0.0015 * rng.standard_normal())
        ph = np.cumsum(freq / sr) + rng.random()
        level = np.clip(v * (0.35 + 0.65 * env) + bright_attack * np.exp(-np.arange(tot) / (0.06 * sr)), 0, 1)
        y = _read(soft, ph) * (1 - level) + _read(loud, ph) * level
        if detune_cents:
            ph2 = np.cumsum(freq * 2 ** (detune_cents / 1200) / sr) + rng.random()
            y = 0.6 * y + 0.6 * (_read(soft, ph2) * (1 - level) + _read(loud, ph2) * level)
        if tremolo:
            y *= 1 + tremolo * np.sin(_TWO_PI * rng.uniform(4, 7) * np.arange(tot) / sr)
        out[a:a + tot] += y * env * (0.25 + 0.75 * v)
    return out


def _noise_part(events, n: int, sr: int, rng, lo: float, hi: float, level: float, attack: float, release: float,
                chiff: float = 0.0) -> np.ndarray:
    """Breath / bow noise following the notes' envelopes, with an optional onset burst (`chiff`)."""
    env = np.zeros(n)
    for e, a, on, tot in _spans(events, n, sr, release):
        t = np.arange(tot) / sr
        en = _adsr(tot, on, sr, attack, 0.2, 0.7, release) * (0.3 + 0.7 * _vel(e))
        env[a:a + tot] = np.maximum(env[a:a + tot], en + chiff * np.exp(-t / 0.03) * (t < 0.2))
    return level * _bandnoise(n, lo, hi, sr, rng) * env


def _spec_bowed(f0: float, level: float) -> np.ndarray:
    k = np.arange(1, 80)
    return (1.0 / k) * np.exp(-k * f0 / (2500 + 5000 * level))


def _spec_clarinet(f0: float, level: float) -> np.ndarray:
    k = np.arange(1, 80)
    odd = np.where(k % 2 == 1, 1.0, 0.08 + 0.25 * (k * f0 > 1600))   # even partials weak below the cutoff
    return odd / k ** (1.6 - 0.7 * level) * np.exp(-k * f0 / (2000 + 3000 * level))


def _spec_sax(f0: float, level: float) -> np.ndarray:
    k = np.arange(1, 80)
    return 1.0 / k ** (1.3 - 0.6 * level) * np.exp(-k * f0 / (2500 + 5500 * level))


def _spec_brass(f0: float, level: float) -> np.ndarray:
    k = np.arange(1, 80)
    # brightness grows strongly with level (nonlinear propagation in the bore)
    return k ** (0.6 * level) * np.exp(-k * f0 / (350 + 2600 * level ** 2)) * (1 - 0.6 * np.exp(-k))


def _spec_flute(f0: float, level: float) -> np.ndarray:
    k = np.arange(1, 12)
    return np.array([1.0, 0.25 + 0.3 * level, 0.08 + 0.2 * level, 0.05 + 0.05 * level] + [0.02 * level] * 7)[: len(k)]


def _spec_reed_free(f0: float, level: float) -> np.ndarray:
    k = np.arange(1, 80)
    return 1.0 / k ** (0.9 - 0.3 * level) * np.exp(-k * f0 / 6000) * (1 + 0.5 * np.cos(k * 0.7))


# ------------------------------------------------------------------------------ percussive models

def _ks_note(f0: float, n: int, on: int, sr: int, rng, v: float, *, decay_s: float, bright: float,
             pluck_pos: float, disp: float = 0.0) -> np.ndarray:
    """Extended Karplus-Strong string: noise burst (pluck position comb, velocity low-pass), a loop with
    a 2-tap damping filter, linear-interpolation fractional delay and an optional dispersion allpass;
    damped at note-off."""
    p = sr / f0
    ad = (1 - disp) / (1 + disp) if disp else 0.0   # first-order allpass coefficient; its delay ~ (1-ad)/(1+ad)
    apd = (1 - ad) / (1 + ad) if disp else 0.0
    d = p - 0.5 - apd                                # loop delay left for the line (damping filter: 0.5)
    N = max(2, int(d))
    fr = d - N
    g = 10 ** (-3 / (decay_s * f0))                  # -60 dB after decay_s
    burst = rng.uniform(-1, 1, N + 2)
    c = np.exp(-_TWO_PI * (800 + 7000 * bright * v) / sr)
    burst = lfilter([1 - c], [1, -c], burst)
    m = max(1, int(pluck_pos * N))
    burst[m:] -= burst[:-m].copy()
    x = np.zeros(n)
    x[: len(burst)] = burst[:n]
    # loop: H = g * 0.5 (1 + z^-1) * ((1 - fr) + fr z^-1) * z^-N, times an allpass (ad + z^-1)/(1 + ad z^-1)
    damp = 0.5 * np.convolve([1, 1], [1 - fr, fr]) * g
    if disp:
        num_f = np.convolve(damp, [ad, 1])
        den_f = np.array([1.0, ad])
    else:
        num_f, den_f = damp, np.array([1.0])
    a = np.zeros(N + len(num_f))
    a[: len(den_f)] += den_f
    a[N:N + len(num_f)] -= num_f
    y = lfilter(den_f, a, x)
    if on < n:  # damp at release
        y[on:] *= np.exp(-np.arange(n - on) / (0.08 * sr))
    return y


def _pluck_line(events, n, sr, rng, *, decay, bright, pos, disp, body, tail=1.2, decay_pitch=0.0):
    out = np.zeros(n)
    pos_j = pos * rng.uniform(0.8, 1.25)
    for e, a, on, tot in _spans(events, n, sr, tail):
        f0 = _hz(e.pitch)
        dec = decay * (_hz(60) / f0) ** decay_pitch
        out[a:a + tot] += _ks_note(f0, tot, on + int(0.15 * sr), sr, rng, _vel(e), decay_s=dec, bright=bright,
                                   pluck_pos=pos_j, disp=disp) * (0.3 + 0.7 * _vel(e))
    return _body(out, body, sr, rng)


def _modes(f0: float, ratios, decays, amps, n: int, sr: int, rng) -> np.ndarray:
    """Sum of exponentially decaying sinusoids (a modal bank) for n samples."""
    t = np.arange(n) / sr
    out = np.zeros(n)
    for r, d, am in zip(ratios, decays, amps):
        f = f0 * r
        if f >= 0.45 * sr:
            continue
        out += am * np.sin(_TWO_PI * f * t + rng.uniform(0, 6)) * np.exp(-t / d)
    return out


def _xylophone(events, n, sr, rng):
    out = np.zeros(n)
    hard = rng.uniform(0.4, 1.0)  # mallet hardness of this player
    for e, a, on, tot in _spans(events, n, sr, 1.0):
        f0, v = _hz(e.pitch), _vel(e)
        tot = min(tot, int(1.2 * sr))
        d1 = 0.5 * (_hz(72) / f0) ** 0.7
        y = _modes(f0, (1.0, 3.0, 6.1, 9.8), (d1, d1 * 0.3, d1 * 0.12, d1 * 0.06),
                   (1.0, 0.5 * hard * v, 0.25 * hard * v, 0.1 * hard * v), tot, sr, rng)
        k = min(tot, int(0.004 * sr))
        y[:k] += rng.standard_normal(k) * 0.3 * hard * v * np.linspace(1, 0, k)
        out[a:a + tot] += y * (0.3 + 0.7 * v)
    return _body(out, [(_hz(78), 2.0, 4.0)], sr, rng, 0.2)


def _piano_note(pitch: int, v: float, tot: int, sr: int, rng, pos: float) -> np.ndarray:
    f0 = _hz(pitch)
    t = (np.arange(tot) / sr).astype(np.float32)
    B = 1e-4 * 2 ** ((pitch - 60) / 18)              # inharmonicity grows up the keyboard
    k = np.arange(1, int(min(18, 0.45 * sr / f0)) + 1)
    fk = k * f0 * np.sqrt(1 + B * k * k)
    k, fk = k[fk < 0.45 * sr], fk[fk < 0.45 * sr]
    amp = np.abs(np.sin(np.pi * k * pos)) / k ** (1.4 - 0.8 * v)
    d = 3.0 * (_hz(48) / f0) ** 0.6 / (1 + 0.15 * k)
    beat = rng.uniform(0.3, 1.5) / 1200 * fk           # unison detuning -> beating, per partial
    y = np.zeros(tot, np.float32)
    for i in range(len(k)):
        env = 0.7 * np.exp(-t / (0.25 * d[i])) + 0.3 * np.exp(-t / d[i])
        y += (amp[i] * np.sin(np.float32(_TWO_PI * fk[i]) * t + rng.uniform(0, 6))
              * (env * (0.75 + 0.25 * np.cos(np.float32(_TWO_PI * beat[i]) * t))))
    m = min(tot, int(0.01 * sr))
    y[:m] += rng.standard_normal(m).astype(np.float32) * 0.2 * v * np.linspace(1, 0, m, dtype=np.float32)
    return y


def _piano(events, n, sr, rng):
    """Struck strings; one note template per (key, velocity step) and player, cut at its note-off."""
    out = np.zeros(n)
    pos = 1 / rng.uniform(7, 9)                          # hammer strike point
    spans = list(_spans(events, n, sr, 0.3))
    need: dict = {}
    for e, a, on, tot in spans:
        key = (e.pitch, int(round(_vel(e) * 4)))
        need[key] = max(need.get(key, 0), min(tot, on + int(0.3 * sr), int(3.0 * sr)))
    tmpl = {key: _piano_note(key[0], key[1] / 4, L, sr, rng, pos) for key, L in sorted(need.items())}
    for e, a, on, tot in spans:
        key = (e.pitch, int(round(_vel(e) * 4)))
        y = tmpl[key][: min(tot, len(tmpl[key]))].astype(np.float64)
        if on < len(y):
            y[on:] *= np.exp(-np.arange(len(y) - on) / (0.06 * sr))
        out[a:a + len(y)] += y * (0.2 + 0.8 * _vel(e))
    return _body(out, [(90, 1.5, 3.0), (250, 1.0, 2.0), (2500, 0.8, -3.0)], sr, rng)


def _drums(events, n, sr, rng):
    """Acoustic kit from membrane modes (circular-membrane ratios), plate modes and noise, by GM key."""
    out = np.zeros(n)
    tune = rng.uniform(0.85, 1.18)
    snare_f = rng.uniform(170, 240) * tune
    mem = (1.0, 1.59, 2.14, 2.30, 2.65, 2.92)
    for e, a, on, tot in _spans(events, n, sr, 1.5):
        v, p = _vel(e), e.pitch
        if p in (35, 36):
            tot = min(tot, int(0.6 * sr))
            t = np.arange(tot) / sr
            f = 45 * tune + 90 * np.exp(-t / 0.03)
            y = np.sin(_TWO_PI * np.cumsum(f) / sr) * np.exp(-t / 0.25)
            y += 0.3 * _bandnoise(tot, 1000, 5000, sr, rng) * np.exp(-t / 0.004)
        elif p in (38, 40, 37, 39):
            tot = min(tot, int(0.5 * sr))
            t = np.arange(tot) / sr
            y = _modes(snare_f, mem, (0.08, 0.05, 0.04, 0.04, 0.03, 0.03), (1, .6, .4, .3, .2, .2), tot, sr, rng)
            y += rng.uniform(0.8, 1.6) * _bandnoise(tot, 1500, 9000, sr, rng) * np.exp(-t / rng.uniform(0.08, 0.16))
        elif p in (41, 43, 45, 47, 48, 50):
            tot = min(tot, int(0.9 * sr))
            t = np.arange(tot) / sr
            f0 = (80 + (p - 41) * 14) * tune
            y = _modes(f0, mem[:4], (0.35, 0.15, 0.1, 0.08), (1, .5, .3, .2), tot, sr, rng)
            y += 0.2 * _bandnoise(tot, 400, 4000, sr, rng) * np.exp(-t / 0.01)
        else:  # cymbals: many inharmonic plate modes + high noise; closed hat short, open/crash/ride long
            d = {42: 0.05, 44: 0.07, 46: 0.5, 49: 1.4, 57: 1.4, 51: 1.0, 59: 1.0}.get(p, 0.6)
            tot = min(tot, int(min(1.5, 3 * d) * sr))
            t = np.arange(tot) / sr
            base = (330 if p in (42, 44, 46) else 250) * tune
            ratios = (1.0, 1.48, 1.83, 2.47, 3.1, 3.72, 4.6, 5.3)
            y = 0.3 * _modes(base * 8, ratios, [d] * 8, [1] * 8, tot, sr, rng)
            y = np.sign(y) * np.abs(y) ** 0.7 * 0.5
            y += _bandnoise(tot, 5000 if p in (42, 44, 46) else 3000, 11000, sr, rng) * np.exp(-t / d)
        out[a:a + tot] += y * (0.2 + 0.8 * v)
    return out


# --------------------------------------------------------------------------------- model registry

def _m_bowed(cls):
    cello = cls == "cello"
    body = ([(110, 2.0, 6.0), (220, 2.5, 4.0), (600, 1.5, 3.0), (1500, 1.2, 3.0), (3500, 1.0, -6.0)] if cello else
            [(290, 3.0, 6.0), (480, 2.0, 4.0), (1100, 1.5, -3.0), (2800, 1.2, 6.0), (5500, 1.0, -6.0)])

    def f(ev, n, sr, rng):
        y = _sustained(ev, n, sr, rng, spectrum=_spec_bowed, attack=0.08, release=0.15,
                       vib_rate=rng.uniform(4.8, 6.5), vib_depth=rng.uniform(0.08, 0.3), scoop=0.15)
        y = y + _noise_part(ev, n, sr, rng, 1500, 7000, rng.uniform(0.02, 0.06), 0.05, 0.1, chiff=1.5)
        return _body(y, body, sr, rng)
    return f


def _m_reed(cls):
    sax = cls == "saxophone"

    def f(ev, n, sr, rng):
        y = _sustained(ev, n, sr, rng, spectrum=_spec_sax if sax else _spec_clarinet, attack=0.04, release=0.08,
                       vib_rate=rng.uniform(4.5, 6.0), vib_depth=rng.uniform(0.05, 0.2) if sax else 0.02,
                       scoop=0.3 if sax else 0.0, bright_attack=0.2)
        y = y + _noise_part(ev, n, sr, rng, 2000, 9000, rng.uniform(0.01, 0.03), 0.03, 0.05, chiff=1.0)
        return _body(y, [(550, 2.0, 5.0), (1500, 2.0, 4.0), (3000, 2, -3)] if sax else
                     [(1500, 1.5, 3.0), (2900, 2.0, 3.0)], sr, rng)
    return f


def _m_brass(cls):
    bell = {"trumpet": 1300.0, "trombone": 600.0, "tuba": 250.0}[cls]

    def f(ev, n, sr, rng):
        y = _sustained(ev, n, sr, rng, spectrum=_spec_brass, attack=0.05, release=0.1,
                       vib_rate=rng.uniform(4.5, 6.0), vib_depth=rng.uniform(0.0, 0.08), scoop=0.5, bright_attack=0.35)
        y = y + _noise_part(ev, n, sr, rng, 500, 4000, 0.01, 0.02, 0.05, chiff=0.8)
        return _body(y, [(bell, 1.2, 6.0), (bell * 2.5, 1.5, 2.0)], sr, rng)
    return f


def _m_flute(cls):
    def f(ev, n, sr, rng):
        y = _sustained(ev, n, sr, rng, spectrum=_spec_flute, attack=0.07, release=0.1,
                       vib_rate=rng.uniform(4.5, 5.5), vib_depth=rng.uniform(0.05, 0.15), tremolo=0.05)
        y = y + _noise_part(ev, n, sr, rng, 800, 8000, rng.uniform(0.03, 0.08), 0.05, 0.08, chiff=2.0)
        return y
    return f


def _m_accordion(cls):
    def f(ev, n, sr, rng):
        y = _sustained(ev, n, sr, rng, spectrum=_spec_reed_free, attack=0.03, release=0.06, vib_rate=5.0,
                       vib_depth=0.0, detune_cents=rng.uniform(6, 18), tremolo=rng.uniform(0.0, 0.08))
        return _body(y, [(900, 1.5, 3.0), (2500, 1.5, 4.0)], sr, rng)
    return f


def _m_pluck(cls):
    cfg = {"acoustic_guitar": dict(decay=2.5, bright=0.5, pos=0.18, disp=0.0, decay_pitch=0.5,
                                   body=[(100, 2.0, 8.0), (200, 3.0, 5.0), (400, 2.0, 3.0), (3000, 1.0, -4.0)]),
           "banjo": dict(decay=0.9, bright=0.95, pos=0.1, disp=0.15, decay_pitch=0.3,
                         body=[(400, 2.0, 6.0), (1300, 1.5, 6.0), (3000, 1.5, 3.0)]),
           "harp": dict(decay=4.0, bright=0.25, pos=0.5, disp=0.0, decay_pitch=0.6,
                        body=[(150, 1.5, 5.0), (420, 1.5, 3.0)])}[cls]

    def f(ev, n, sr, rng):
        return _pluck_line(ev, n, sr, rng, tail=1.5 if cls == "harp" else 0.8, **cfg)
    return f


_BRASS = "lip reed: level-dependent brightness, onset scoop, bell resonance"
_MODELS = {  # class -> (source key, description, factory)
    "violin": ("pm-bowed", "bowed string: sawtooth-like source with vibrato, bow noise, violin body formants", _m_bowed),
    "cello": ("pm-bowed", "bowed string: sawtooth-like source with vibrato, bow noise, cello body formants", _m_bowed),
    "clarinet": ("pm-reed", "single reed, cylindrical bore: odd harmonics, breath noise", _m_reed),
    "saxophone": ("pm-reed", "single reed, conical bore: all harmonics, pitch scoop, formants", _m_reed),
    "trumpet": ("pm-brass", _BRASS, _m_brass),
    "trombone": ("pm-brass", _BRASS, _m_brass),
    "tuba": ("pm-brass", _BRASS, _m_brass),
    "flute": ("pm-flute", "air jet: near-sinusoid, breath noise and onset chiff", _m_flute),
    "accordion": ("pm-freereed", "free reeds: two detuned voices (musette), bellows tremolo", _m_accordion),
    "acoustic_guitar": ("pm-pluck", "extended Karplus-Strong string, guitar body resonances", _m_pluck),
    "banjo": ("pm-pluck", "extended Karplus-Strong with dispersion, bright membrane body", _m_pluck),
    "harp": ("pm-pluck", "extended Karplus-Strong, soft mid-string pluck, long decay", _m_pluck),
    "xylophone": ("pm-modal", "modal bar (tuned 1:3:6 partials), mallet click, resonator", lambda c: _xylophone),
    "piano": ("pm-struck", "struck strings: inharmonic partials, unison beating, two-stage decay", lambda c: _piano),
    "drum": ("pm-membrane", "membrane and plate modes with noise (kick, snare wires, toms, cymbals)", lambda c: _drums),
}
MODEL_LICENCE = "MIT (this project)"


# ------------------------------------------------------------------------- derived: additive, warp

@functools.lru_cache(maxsize=256)
def _measured(font_path: str, font_key: str, cls: str, program: int, bank: int, sr: int):
    """Harmonic amplitude envelopes measured from a font: (pitches (P,), freqs (P, K), amps (P, 2, K) for
    velocity 64 / 112, decay rates (P, K) in 1/s). Cached per process."""
    font = C.Font(font_key, Path(font_path), "", "")
    pitches = _test_pitches(cls, 6)
    K = 40
    freqs = np.zeros((len(pitches), K))
    amps = np.zeros((len(pitches), 2, K))
    rates = np.zeros((len(pitches), K))
    for i, p in enumerate(pitches):
        f0 = _hz(p)
        freqs[i] = f0 * np.arange(1, K + 1)
        for j, v in enumerate((64, 112)):
            x = render_font(font, cls, program, bank, _note_events(p, v, 1.0), 1.0, sr).astype(np.float64)
            segs = []
            for t0 in (0.08, 0.5):
                a, b = int(t0 * sr), int((t0 + 0.2) * sr)
                spec = np.abs(np.fft.rfft(x[a:b] * np.hanning(b - a), 8192))
                bins = np.round(freqs[i] * 8192 / sr).astype(int)
                ok = bins < len(spec) - 3
                h = np.zeros(K)
                h[ok] = [spec[max(0, q - 3):q + 4].max() for q in bins[ok]]
                segs.append(h)
            amps[i, j] = segs[0] / (segs[0].max() + 1e-12)
            if j == 1:
                rates[i] = np.log((segs[0] + 1e-9) / (segs[1] + 1e-9)) / 0.42
    return np.array(pitches), freqs, amps, np.clip(rates, 0.0, 40.0)


def _additive(font: C.Font, cls: str, program: int, bank: int, events, n: int, sr: int, rng) -> np.ndarray:
    """Harmonic resynthesis with the spectral envelope (amplitude against frequency, so formants stay put)
    measured from `font`'s notes; sustained classes get our envelopes and vibrato, plucked/struck ones
    per-partial exponential decays measured from the font."""
    pitches, freqs, amps, rates = _measured(str(font.path), font.key, cls, program, bank, sr)
    spec = C.CLASSES[cls]
    warp = rng.uniform(0.93, 1.07)  # a small random scaling of the envelope's frequency axis
    out = np.zeros(n)
    for e, a, on, tot in _spans(events, n, sr, 0.15 if spec.sustained else 1.0):
        f0, v = _hz(e.pitch), _vel(e)
        i = int(np.argmin(np.abs(pitches - e.pitch)))
        fk = f0 * np.arange(1, freqs.shape[1] + 1)
        lv = np.interp(fk / warp, freqs[i], np.log(amps[i, 1] + 1e-4))
        ls = np.interp(fk / warp, freqs[i], np.log(amps[i, 0] + 1e-4))
        kmax = int(np.sum(fk < 0.45 * sr))
        if spec.sustained:
            lam = v
            h = np.exp(ls * (1 - lam) + lv * lam)[:kmax]
            y = _sustained((NoteEvent(0.0, e.duration, e.pitch, e.velocity),), tot, sr, rng,
                           spectrum=lambda f, lev, h=h: h, attack=0.05, release=0.1,
                           vib_rate=rng.uniform(4.5, 6), vib_depth=rng.uniform(0.0, 0.15))
        else:
            tot = min(tot, int(2.5 * sr))
            t = np.arange(tot) / sr
            r = np.interp(fk, freqs[i], rates[i])[:kmax]
            h = np.exp(lv)[:kmax] * (0.5 + 0.5 * v)
            ph = rng.uniform(0, 6, kmax)
            y = np.zeros(tot)
            for k in range(kmax):
                if h[k] > 1e-3:
                    y += h[k] * np.sin(_TWO_PI * fk[k] * t + ph[k]) * np.exp(-r[k] * t)
            y *= np.minimum(1.0, t / 0.002)
            if on < tot:
                y[on:] *= np.exp(-np.arange(tot - on) / (0.1 * sr))
            y *= 0.3 + 0.7 * v
        out[a:a + tot] += y[: min(tot, n - a)]
    return out


def _warp(font: C.Font, cls: str, program: int, bank: int, events, duration: float, sr: int, rng) -> np.ndarray:
    """The font's samples transposed: played `s` semitones away (2-5, either way), with the timing
    compressed by r = 2**(s/12), then resampled by r, so pitch and timing come back while the formants
    move by 1/r; then a random spectral-envelope warp (tilt and two peaks)."""
    from fractions import Fraction

    s = int(rng.integers(2, 6)) * int(rng.choice([-1, 1]))
    r = 2 ** (s / 12)
    fr = Fraction(r).limit_denominator(24)
    r = fr.numerator / fr.denominator
    drums = C.CLASSES[cls].bank == 128
    ev = tuple(NoteEvent(e.start / r, e.duration / r, e.pitch if drums else int(np.clip(e.pitch + s, 0, 127)),
                         e.velocity) for e in events)
    n = int(round(duration * sr))
    x = render_font(font, cls, program, bank, ev, duration / r + 0.05, sr).astype(np.float64)
    y = resample_poly(x, fr.numerator, fr.denominator)[:n]
    y = np.pad(y, (0, n - len(y)))
    peaks = [(float(np.exp(rng.uniform(np.log(300), np.log(5000)))), rng.uniform(0.7, 2.5), rng.uniform(-8, 8))
             for _ in range(2)]
    return _body(y, peaks + [(rng.uniform(3000, 8000), 0.5, rng.uniform(-6, 4))], sr, rng, 0.0)


# ------------------------------------------------------------------------------------- public API

def _font_sets(cls: str, fonts: list[C.Font]) -> dict[str, C.Font]:
    """{sample set: the font that plays it} for the fonts that play `cls` (a set's own font preferred)."""
    sets: dict[str, C.Font] = {}
    for f in sorted(fonts, key=lambda f: f.key):
        if not C.plays(f, cls):
            continue
        k = C.sample_set(cls, f.key)
        if k not in sets or f.key == k:
            sets[k] = f
    return sets


def font_for(source: Source, cls: str, fonts: list[C.Font]) -> C.Font | None:
    """The font whose samples `source` plays for `cls` (its recording set's own font preferred), or None
    for a model. `render(source, ..., fonts=[font_for(...)])` gives the same sound as with all fonts."""
    if source.kind == "model":
        return None
    return _font_sets(cls, fonts).get(source.group)


def sources_for(cls: str, fonts: list[C.Font]) -> list[Source]:
    """The distinct timbre sources of `cls` with these fonts: one per recording set (fonts sharing
    recordings are one source), our model, and per recording set an ``additive-`` (not for drums) and a
    ``warp-`` source. Sorted by key; with no font, the model alone."""
    spec = C.CLASSES[cls]
    out = []
    for k, f in _font_sets(cls, fonts).items():
        out.append(Source(k, k, "font", f.licence, f"{f.path.name} ({f.origin})"))
        if spec.bank != 128:
            out.append(Source(f"additive-{k}", k, "derived", f.licence,
                              f"harmonic resynthesis with spectral envelopes measured from {f.path.name}"))
        out.append(Source(f"warp-{k}", k, "derived", f.licence,
                          f"{f.path.name} transposed 2-5 semitones and resampled back (formants move), random EQ"))
    key, desc, _ = _MODELS[cls]
    out.append(Source(key, key, "model", MODEL_LICENCE, desc))
    return sorted(out, key=lambda s: s.key)


def render(source: Source, cls: str, program: int, bank: int, events, duration: float, sr: int,
           rng: np.random.Generator, fonts: list[C.Font]) -> np.ndarray:
    """(round(duration * sr),) float32 dry mono: `events` (render.perform(...).events) played by `source`.
    Models and derived sources draw their per-player variation from `rng`; font sources ignore it. The
    level is not normalised (room.normalise does it), but models peak near 0.1-1."""
    n = int(round(duration * sr))
    if source.kind == "model":
        y = _MODELS[cls][2](cls)(tuple(events), n, sr, rng)
        pk = float(np.max(np.abs(y))) if len(y) else 0.0
        y = y * (0.5 / pk) if pk > 0 else y
    else:
        origin = source.group
        font = _font_sets(cls, fonts).get(origin)
        if font is None:
            raise ValueError(f"source {source.key!r}: no font among {[f.key for f in fonts]} plays set {origin!r}")
        if source.kind == "font":
            y = render_font(font, cls, program, bank, tuple(events), duration, sr)
        elif source.key.startswith("additive-"):
            y = _additive(font, cls, program, bank, tuple(events), n, sr, rng)
            pk = float(np.max(np.abs(y))) if len(y) else 0.0
            y = y * (0.3 / pk) if pk > 0 else y
        else:
            y = _warp(font, cls, program, bank, tuple(events), duration, sr, rng)
    y = np.asarray(y, np.float64)[:n]
    y = np.nan_to_num(np.pad(y, (0, n - len(y))))
    return y.astype(np.float32)


# ------------------------------------------------------------------------------- distinctness report

def _mel_fb(sr: int, n_fft: int, n_mels: int = 40) -> np.ndarray:
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    inv = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    pts = inv(np.linspace(mel(50), mel(min(8000, sr / 2)), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1 / sr)
    fb = np.zeros((n_mels, len(bins)))
    for i in range(n_mels):
        lo, c, hi = pts[i], pts[i + 1], pts[i + 2]
        fb[i] = np.clip(np.minimum((bins - lo) / (c - lo), (hi - bins) / (hi - c)), 0, None)
    return fb


def _features(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(average log-mel envelope in dB (40,), MFCC-like vector: mean and std of 13 cepstra + delta)."""
    n_fft, hop = 1024, 256
    mag = 10 ** (_stft_db(x.astype(np.float64), n_fft, hop) / 20)
    fb = _mel_fb(sr, n_fft)
    lm = 10 * np.log10(mag ** 2 @ fb.T + 1e-10)
    e = lm.max(1)
    lm = lm[e > e.max() - 40]                       # frames that sound
    env = lm.mean(0) - lm.mean()
    k = np.arange(40)
    dct = np.cos(np.pi / 40 * (k[None] + 0.5) * np.arange(13)[:, None])
    cep = (lm - lm.mean()) @ dct.T
    d = np.diff(cep, axis=0) if len(cep) > 1 else np.zeros((1, 13))
    return env, np.concatenate([cep.mean(0), cep.std(0), np.abs(d).mean(0)])


def timbre_report(classes: list[str], fonts: list[C.Font], sr: int = 22050, n_notes: int = 12) -> dict:
    """Per class: its sources, the distance (mean RMS dB difference of average log-mel envelopes of matched
    notes) between every pair of sources, and the held-out accuracy of a nearest-centroid classifier on
    MFCC-like features telling the sources apart (train on even, test on odd notes; each note a fresh
    player rng). {cls: {"sources": [...], "pairs": {(a, b): dB}, "min_pair": (a, b, dB), "accuracy",
    "chance"}}."""
    out = {}
    for cls in classes:
        spec = C.CLASSES[cls]
        srcs = sources_for(cls, fonts)
        prog = spec.programs[0]
        pitches = (_test_pitches(cls, n_notes) * 2)[:n_notes] if spec.bank == 128 else \
            [int(p) for p in np.linspace(spec.low, spec.high, n_notes).round()]
        envs, feats = {}, {}
        for s in srcs:
            envs[s.key], feats[s.key] = [], []
            for i, p in enumerate(pitches):
                ev = (NoteEvent(0.05, 0.6, p, 60 + 40 * (i % 2)), NoteEvent(0.8, 0.3, p, 90))
                x = render(s, cls, prog, spec.bank, ev, 1.4, sr, np.random.default_rng([7, i]), fonts)
                e, f = _features(x, sr)
                envs[s.key].append(e)
                feats[s.key].append(f)
        pairs = {}
        for a, b in itertools.combinations([s.key for s in srcs], 2):
            pairs[(a, b)] = float(np.mean([np.sqrt(np.mean((x - y) ** 2)) for x, y in zip(envs[a], envs[b])]))
        X = {k: np.array(v) for k, v in feats.items()}
        allf = np.concatenate(list(X.values()))
        mu, sd = allf.mean(0), allf.std(0) + 1e-6
        cents = {k: ((v[0::2] - mu) / sd).mean(0) for k, v in X.items()}
        keys = list(cents)
        right = total = 0
        for k, v in X.items():
            for f in (v[1::2] - mu) / sd:
                pred = keys[int(np.argmin([np.sum((f - cents[q]) ** 2) for q in keys]))]
                right += pred == k
                total += 1
        mp = min(pairs.items(), key=lambda kv: kv[1]) if pairs else None
        out[cls] = {"sources": [s.key for s in srcs], "pairs": pairs,
                    "min_pair": (mp[0][0], mp[0][1], mp[1]) if mp else None,
                    "accuracy": right / max(total, 1), "chance": 1 / max(len(srcs), 1)}
    return out


def _main(argv=None) -> int:
    import argparse
    import time

    ap = argparse.ArgumentParser(prog="python -m avsep_cli.corpus.sources")
    ap.add_argument("--report", action="store_true", help="per-class table of sources and their distinctness")
    ap.add_argument("--overlap", action="store_true", help="which fonts share recordings")
    ap.add_argument("--speed", action="store_true", help="model synthesis time of a 6 s stem per class")
    ap.add_argument("--classes", default=",".join(sorted(C.CLASSES)))
    ap.add_argument("--sr", type=int, default=22050)
    a = ap.parse_args(argv)
    fonts = C.find_fonts(include_kits=True)
    classes = a.classes.split(",")
    if a.overlap:
        for cls in classes:
            for (ka, kb), m in font_overlap(cls, fonts, a.sr).items():
                print(f"{cls:16s} {ka + '/' + kb:32s} wave {m['wave']:.3f} phat {m['phat']:.3f} "
                      f"spec {m['spec']:.3f} shared {m['shared']:.2f} {'SAME' if m['same'] else '-'}")
    if a.speed:
        from avsep_cli.corpus.render import perform
        for cls in classes:
            spec = C.CLASSES[cls]
            r = np.random.default_rng(0)
            notes = [(0.5 * i, 0.5, int(60 + r.integers(-7, 8))) for i in range(40)]
            ev = perform(notes, cls, 6.0, r).events
            m = [s for s in sources_for(cls, []) if s.kind == "model"][0]
            ts = []
            for k in range(3):
                t = time.perf_counter()
                render(m, cls, spec.programs[0], spec.bank, ev, 6.0, a.sr, np.random.default_rng(k), [])
                ts.append(time.perf_counter() - t)
            print(f"{cls:16s} {m.key:12s} {1000 * min(ts):6.1f} ms  ({len(ev)} notes, 6 s at {a.sr} Hz)")
    if a.report:
        rep = timbre_report(classes, fonts, a.sr)
        print(f"{'class':16s} {'n':>2s} {'acc':>5s} {'chance':>6s}  {'closest pair (dB)':40s} sources")
        for cls, r in rep.items():
            mp = r["min_pair"]
            mps = f"{mp[0]}/{mp[1]} {mp[2]:.1f}" if mp else "-"
            print(f"{cls:16s} {len(r['sources']):2d} {r['accuracy']:5.2f} {r['chance']:6.2f}  {mps:40s} "
                  f"{', '.join(r['sources'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
