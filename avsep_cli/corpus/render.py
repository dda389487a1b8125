"""Play note lists with SoundFonts: a score window becomes a performance, the performance becomes audio.

`perform` turns notes in quarter notes into timed MIDI events with a human touch: a tempo with slow
drift, per-note timing jitter, a velocity curve with accents, and an articulation (legato, normal,
staccato) that scales note lengths; drums map the rhythm of the line onto kit pieces. `Renderer` plays
the events through FluidSynth (pip ``pyfluidsynth`` on Debian ``libfluidsynth3``) at about 2000x real
time; every clip gets a fresh synthesiser (a reused one leaks state between clips) while one
long-lived synthesiser per SoundFont and worker process keeps the decoded samples cached, so the
output depends only on the events. FluidSynth's own
reverb and chorus are off: the room is added later, per clip (``room.py``).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avsep_cli.corpus.classes import CLASSES
from avsep_cli.errors import AvsepError

DRUM_CHANNEL = 9
MELODY_CHANNEL = 0


@dataclass(frozen=True)
class NoteEvent:
    start: float     # seconds
    duration: float  # seconds
    pitch: int       # MIDI note (kit piece for drums)
    velocity: int    # 1..127


def fit_range(notes: list[tuple[float, float, int]], low: int, high: int, rng: np.random.Generator):
    """Transpose a line by whole octaves (plus a random shift of up to a fourth) so its median sits in
    the middle of [low, high]; notes still outside fold back by octaves. Returns (notes, semitones)."""
    pitches = np.array([n[2] for n in notes])
    centre = (low + high) / 2 + rng.uniform(-3, 3)
    shift = int(round(centre - np.median(pitches)))
    octave = 12 * int(round(shift / 12))
    shift = octave + int(np.clip(shift - octave, -5, 5))
    out = []
    for a, b, p in notes:
        q = p + shift
        while q < low:
            q += 12
        while q > high:
            q -= 12
        out.append((a, b, max(q, low)))
    return out, shift


# Kit pieces (GM percussion key map): kick, snare, closed hat, open hat, low/mid/high tom, crash, ride.
_KICK, _SNARE, _HAT, _OPEN_HAT, _TOMS, _CRASH, _RIDE = 36, 38, 42, 46, (45, 47, 50), 49, 51


def _drum_pitch(onset_q: float, pitch: int, low: int, rng: np.random.Generator) -> int:
    beat = onset_q % 2.0
    if abs(beat) < 1e-3:
        return _KICK
    if abs(beat - 1.0) < 1e-3:
        return _SNARE
    r = rng.random()
    if r < 0.55:
        return _HAT if rng.random() < 0.8 else _OPEN_HAT
    if r < 0.85:
        return _TOMS[min(2, max(0, (pitch - low) // 8))]
    return _RIDE


@dataclass(frozen=True)
class Performance:
    events: tuple[NoteEvent, ...]
    tempo_bpm: float
    articulation: str
    velocity: int
    transpose: int


def perform(notes: list[tuple[float, float, int]], cls: str, duration: float, rng: np.random.Generator,
            *, tempo_bpm: float | None = None, start_q: float | None = None) -> Performance:
    """Timed events for `duration` seconds of the line `notes` (quarters) played by class `cls`.

    The window starts at `start_q` (a random note onset when None) and the line loops when it is
    shorter than the window. Everything random comes from `rng`.
    """
    spec = CLASSES[cls]
    if not notes:
        raise ValueError("empty note list")
    tempo = float(tempo_bpm if tempo_bpm is not None else rng.uniform(76, 140))
    drift = rng.uniform(-0.06, 0.06)           # relative tempo change over the clip
    sustained = spec.sustained
    artic = str(rng.choice(["legato", "normal", "staccato"], p=[0.45, 0.4, 0.15] if sustained else [0.2, 0.6, 0.2]))
    gate = {"legato": 0.98, "normal": 0.82, "staccato": 0.45}[artic]
    base_vel = int(rng.integers(60, 110))
    crescendo = rng.uniform(-18, 18)
    if spec.bank == 128:
        fitted, shift = list(notes), 0
    else:
        fitted, shift = fit_range(list(notes), spec.low, spec.high, rng)
    length_q = max(a + b for a, b, _ in fitted)
    onsets = [a for a, _, _ in fitted]
    if start_q is None:
        start_q = float(onsets[int(rng.integers(0, max(1, len(onsets) - 4)))])
    # Quarter -> seconds with linear tempo drift: dt/dq = 60 / (tempo * (1 + drift * t/duration)),
    # approximated per note (the drift is small).
    events: list[NoteEvent] = []
    q0, loop = start_q, 0
    sec_per_q = 60.0 / tempo
    while True:
        done = False
        for a, b, p in fitted:
            if loop == 0 and a < q0 - 1e-6:
                continue
            q = a + loop * length_q - q0
            frac = min(1.0, max(0.0, q * sec_per_q / duration))
            local = 60.0 / (tempo * (1.0 + drift * frac))
            start = q * local + rng.normal(0, 0.008)
            if start >= duration:
                done = True
                break
            dur = max(0.04, b * local * gate * rng.uniform(0.9, 1.05))
            vel = base_vel + crescendo * frac + rng.normal(0, 6) + (10 if abs(a % 4) < 1e-3 else 0)
            pitch = _drum_pitch(a, p, min(n[2] for n in fitted), rng) if spec.bank == 128 else p
            events.append(NoteEvent(max(0.0, start), dur, int(pitch), int(np.clip(round(vel), 25, 127))))
        if done:
            break
        loop += 1
        if loop > 50:
            break
    return Performance(tuple(events), tempo, artic, base_vel, shift)


class Renderer:
    """Plays event lists with FluidSynth, one fresh synthesiser per clip.

    A reused FluidSynth synthesiser is not stateless: its voice objects and 64-sample block position
    carry over, so a clip's samples would depend (by up to -12 dB) on what the process rendered
    before, and clips would differ with the number of workers. A fresh synthesiser per clip costs
    ~15 ms when samples are loaded on demand (``synth.dynamic-sample-loading``) and stay in
    FluidSynth's process-wide sample cache: one long-lived "holder" synthesiser per SoundFont keeps
    every preset used so far selected, so its samples (decoded once, seconds for SF3) are never freed.
    """

    def __init__(self, sr: int):
        self.sr = int(sr)
        self._holders: dict[str, list] = {}  # font path -> [synth, sfid, {(bank, program): channel}]

    def _settings(self) -> dict:
        # Our own room comes later; FluidSynth's effects would be baked into every stem.
        return {"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.dynamic-sample-loading": 1}

    def _new(self, font: Path):
        try:
            import fluidsynth
        except ImportError as e:
            raise AvsepError(f"FluidSynth is not available ({e}): apt-get install -y libfluidsynth3 "
                             "and pip install pyfluidsynth") from None
        fs = fluidsynth.Synth(gain=0.5, samplerate=float(self.sr), **self._settings())
        sfid = fs.sfload(str(font))
        if sfid < 0:
            fs.delete()
            raise AvsepError(f"FluidSynth cannot load the SoundFont {font}")
        return fs, sfid

    def _hold(self, font: Path, bank: int, program: int) -> None:
        key = str(font)
        if key not in self._holders:
            fs, sfid = self._new(font)
            self._holders[key] = [fs, sfid, {}]
        fs, sfid, held = self._holders[key]
        if (bank, program) not in held and len(held) < 250:
            held[(bank, program)] = chan = len(held)
            fs.program_select(chan, sfid, bank, program)

    def _write(self, fs, n: int) -> np.ndarray:
        """n mono float32 samples (mean of FluidSynth's stereo float output)."""
        import fluidsynth

        left = np.zeros(n, np.float32)
        right = np.zeros(n, np.float32)
        if n:
            fluidsynth._fl.fluid_synth_write_float(
                ctypes.c_void_p(fs.synth), ctypes.c_int(n),
                left.ctypes.data_as(ctypes.c_void_p), 0, 1, right.ctypes.data_as(ctypes.c_void_p), 0, 1)
        return 0.5 * (left + right)

    def render(self, font: Path, bank: int, program: int, events: tuple[NoteEvent, ...], duration: float) -> np.ndarray:
        """(round(duration * sr),) float32: the events played with `program` of `font`."""
        return self.render_on(font, bank, program, events, duration, drums=bank == 128)

    def render_on(self, font: Path, bank: int, program: int, events: tuple[NoteEvent, ...], duration: float,
                  drums: bool) -> np.ndarray:
        """As `render`, on the drum channel when `drums` (a drum-kit font keeps its kit in bank 0)."""
        self._hold(font, bank, program)
        fs, sfid = self._new(font)
        try:
            chan = DRUM_CHANNEL if drums else MELODY_CHANNEL
            fs.program_select(chan, sfid, bank, program)
            n_total = int(round(duration * self.sr))
            # Offs before ons at equal times, so a repeated pitch is re-struck.
            timeline = []
            for e in events:
                timeline.append((int(round(e.start * self.sr)), 1, e.pitch, e.velocity))
                timeline.append((int(round((e.start + e.duration) * self.sr)), 0, e.pitch, 0))
            timeline.sort()
            chunks, cur = [], 0
            for t, kind, pitch, vel in timeline:
                t = min(t, n_total)
                if t > cur:
                    chunks.append(self._write(fs, t - cur))
                    cur = t
                if kind:
                    fs.noteon(chan, pitch, vel)
                else:
                    fs.noteoff(chan, pitch)
            if n_total > cur:
                chunks.append(self._write(fs, n_total - cur))
        finally:
            fs.delete()
        out = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return out[:n_total].astype(np.float32)
