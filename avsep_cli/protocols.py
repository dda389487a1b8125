"""The references' evaluation as an option of `avsep eval` (`--protocol sop|avpc`).

Sound-of-Pixels (main.py `calc_metrics`/`evaluate`, dataset/music.py) and AVPC (avpc/utils.py
`calc_metrics`, avpc/test.py `evaluate`, avpc/dataset/music.py) score differently from `avsep eval`'s own
protocol (`avsep_cli.evaluate`, the default, unchanged). This module re-computes their numbers from the
facts of their code (docs/evaluation.md lists each with file and line), written anew here:

* test mixtures: their pairing (a shuffled solo list; mixture i starts from entry i and draws its partners
  with Python's `random` seeded by i) and their window per clip (Sound-of-Pixels: centred on the clip's
  middle frame, zero-padded; AVPC: a seeded 20-s chunk and second), on a clip tiled when it is shorter
  than the window; their source scaling (Sound-of-Pixels: each source / N, the mixture their sum; AVPC:
  min-max normalised sources, the mixture their mean);
* scoring: the masks applied to the mixture STFT and inverted by iSTFT without a length, i.e. 65,280 of
  the 65,535 samples; estimates clipped to [-1, 1]; the mixture's SDR from its own STFT -> iSTFT round
  trip (clipped too); a mixture skipped when any reference or estimate has sum |x| <= 1e-5; BSS Eval
  without permutation; SDR/SIR/SAR averaged over the sources of a mixture, then over the valid mixtures
  of a batch (a batch without one counts 0), then over batches, unweighted (Sound-of-Pixels 32 mixtures
  per batch, AVPC 30).

Shapes: B mixtures, S sources, L samples, F = 512 bins, T frames.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from avsep_cli import dsp, metrics
from avsep_cli.errors import AvsepError
from avsep_cli.layout import Clip, open_corpus

log = logging.getLogger("avsep")

PROTOCOLS = ("avsep", "sop", "avpc")
WINDOW = 65535  # their audLen (SoP arguments.py 61, AVPC arguments_test.py 84)
SCORED = dsp.HOP * (WINDOW // dsp.HOP)  # 65280: librosa.istft of 256 centred frames, no length given
SILENT_SUM = 1e-5  # a source counts when np.sum(np.abs(x)) > 1e-5 (reference and estimate alike)
FPS = 8  # their frame rate (frameRate 8): SoP's clip centre is a frame index at this rate
CHUNK_SECONDS = 20  # AVPC's audio files are 20-s chunks of a video


@dataclass(frozen=True)
class Rules:
    """What differs between the two references' test code."""

    name: str
    batch: int  # mixtures per averaged batch: SoP batch_size_per_gpu 32 x 1 GPU; AVPC batch_size_val_test 30
    dup: int  # test list repeated: SoP 1 (none), AVPC dup_testset 10
    window: str  # "centre" (SoP music.py 43, 61) or "chunk" (AVPC music.py 49-63)
    distinct_partner: bool  # AVPC redraws a partner with the first clip's file name (music.py 33-41)
    normalise: bool  # AVPC min-max normalises each source (music.py 89-100)
    divide_references: bool  # SoP scores sources / N (base.py 188); AVPC the undivided sources


RULES = {
    "sop": Rules("sop", batch=32, dup=1, window="centre", distinct_partner=False, normalise=False, divide_references=True),
    "avpc": Rules("avpc", batch=30, dup=10, window="chunk", distinct_partner=True, normalise=True,
                  divide_references=False),
}


def rules(name: str) -> Rules:
    if name not in RULES:
        raise AvsepError(f"--protocol {name}: expected one of {', '.join(PROTOCOLS)}")
    return RULES[name]


# --- test mixtures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefItem:
    """One test mixture of a reference protocol: its clips, the window start of each (samples at 11025 Hz,
    negative where Sound-of-Pixels pads the front with zeros) and their classes. `kind`, `root` and
    `clips` as `evaluate.TestItem`, so that `evaluate._frames_for` takes the pictures."""

    key: str
    index: int  # the dataset index (their __getitem__ argument, also the pairing seed)
    clips: tuple[Clip, ...]
    offsets: tuple[int, ...]
    classes: tuple[str, ...]
    root: str = ""
    kind: str = "mix"


def test_list(solos: list[Clip], seed: int) -> list[Clip]:
    """Their index csv: the solo clips in a shuffled order (SoP scripts/create_index_files.py 43 shuffles
    before writing val.csv). Ours: sorted by (class, id), then shuffled by `random.Random(seed)`."""
    out = sorted(solos, key=lambda c: (c.classes, c.id))
    random.Random(seed).shuffle(out)
    return out


def partners(index: int, n_list: int, mix: int, names: list[str], rule: Rules) -> list[int]:
    """List indices of mixture `index`: itself, then mix-1 partners drawn after random.seed(index)
    (SoP music.py 26-30; AVPC music.py 30-43, which redraws while the partner's file name equals the first's).
    Partners may repeat each other, and may share the first clip's class, as in both references."""
    rng = random.Random(index)
    out = [index]
    for _ in range(1, mix):
        while True:
            k = rng.randint(0, n_list - 1)
            if not rule.distinct_partner or names[k] != names[index]:
                break
        out.append(k)
    return out


def tile(audio: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Both references repeat a clip shorter than the window (SoP base.py 152-154, AVPC base.py 121-123)."""
    if len(audio) < window:
        audio = np.tile(audio, int(window / len(audio)) + 1)
    return audio


def centre_offset(n_samples: int, window: int = WINDOW) -> int:
    """Sound-of-Pixels' window start (may be negative): the clip's middle frame count_frames // 2 at 8 fps
    (music.py 43), its audio centre at (frame - 0.5) / 8 s (music.py 61), the window centred there
    (base.py 166-171). count_frames here: whole frames of the clip's audio duration at 8 fps."""
    count_frames = int(n_samples / dsp.SAMPLE_RATE * FPS)
    centre = int((count_frames // 2 - 0.5) / FPS * dsp.SAMPLE_RATE)
    return centre - window // 2


def centre_window(audio: np.ndarray, offset: int, window: int = WINDOW) -> np.ndarray:
    """SoP base.py 164-171: out[half - (c - start) : half + (end - c)] = audio[start:end] with half = window // 2,
    c = offset + half, start = max(0, c - half), end = min(len, c + half); the rest zeros (the last sample
    always: 2 * half = window - 1)."""
    half = window // 2
    c = offset + half
    start, end = max(0, c - half), min(len(audio), c + half)
    out = np.zeros(window, dtype=np.float32)
    out[half - (c - start) : half + (end - c)] = audio[start:end]
    return out


def chunk_offset(index: int, n: int, n_samples: int, window: int = WINDOW) -> int:
    """AVPC's window start for source n of mixture `index` (music.py 49-57): after random.seed(index + n),
    chunk = randint(0, count_chunks - 2) (never the last 20-s chunk), then second = randint(10, 13) in chunk
    0, else randint(0, 13); the window starts at chunk * 20 + second. count_chunks = ceil(duration / 20 s).
    Their code needs 2 chunks or more (randint(0, -1) raises); a shorter clip draws chunk 0 (the same random
    numbers), and a start past the clip's last full window is moved back to it (our 6-s corpus: always)."""
    rng = random.Random(index + n)
    count_chunks = max(1, math.ceil(n_samples / (CHUNK_SECONDS * dsp.SAMPLE_RATE)))
    chunk = rng.randint(0, max(0, count_chunks - 2))
    second = rng.randint(10, 20 - 6 - 1) if chunk == 0 else rng.randint(0, 20 - 6 - 1)
    start = int((chunk * CHUNK_SECONDS + second) * dsp.SAMPLE_RATE)
    return min(start, max(0, n_samples - window))


def normalise(audio: np.ndarray) -> np.ndarray:
    """AVPC music.py 89-100 (test stage, no random gain): min-max onto about [-1, 1], then clipped. Not
    zero-mean: an asymmetric waveform keeps an offset, which its reference then has too."""
    x = audio.astype(np.float32) - audio.min()
    x /= x.max() + 1e-3
    return np.clip((x - 0.5) * 2, -1, 1)


def build_test_set(root: str | Path, protocol: str, *, mix: int, split: str = "test", num: int = 200,
                   seed: int = 0) -> list[RefItem]:
    """The reference protocol's test mixtures on a corpus: its shuffled solo list (x10 for AVPC), cut to
    the first `num` entries (their num_val / num_test, applied before pairing, so partners come from the
    cut list too); mixture i = entry i and its drawn partners, each with its window start."""
    from avsep_cli.datasets import ClipReader

    rule = rules(protocol)
    if mix < 2:
        raise AvsepError(f"--mix {mix}: a test mixture needs at least 2 sources")
    corpus = open_corpus(root)
    solos = test_list(corpus.clips(split=split, kind="solo"), seed)
    if not solos:
        raise AvsepError(f"{root} has no solo clips in split {split!r}")
    entries = (solos * rule.dup)[:num]
    if rule.distinct_partner and len({c.id for c in entries}) < 2:
        raise AvsepError(f"--protocol {protocol} needs at least 2 different solo clips in the first --num entries")
    reader = ClipReader(Path(root))
    names = [c.id for c in entries]
    items = []
    for i in range(len(entries)):
        clips = tuple(entries[k] for k in partners(i, len(entries), mix, names, rule))
        offsets = []
        for n, clip in enumerate(clips):
            length = len(tile(reader.audio(clip)))
            offsets.append(centre_offset(length) if rule.window == "centre" else chunk_offset(i, n, length))
        items.append(RefItem(f"{protocol}{mix}-{i:04d}", i, clips, tuple(offsets), tuple(c.classes[0] for c in clips),
                             str(root)))
    return items


def load_item(item: RefItem, rule: Rules, reader) -> tuple[np.ndarray, np.ndarray]:
    """-> mixture (L=65535,), references (S, L) as their dataset returns them (mag_mix's signal, audios)."""
    n = len(item.clips)
    srcs = []
    for clip, off in zip(item.clips, item.offsets):
        audio = tile(np.asarray(reader.audio(clip), dtype=np.float32))
        x = centre_window(audio, off) if rule.window == "centre" else audio[off : off + WINDOW]
        srcs.append(normalise(x) if rule.normalise else np.clip(x, -1, 1))  # SoP base.py 177-178 clips
    refs = np.stack(srcs)  # (S, L)
    if rule.divide_references:
        refs = refs / n  # SoP base.py 188: the sources are divided, the mixture is their sum
        return refs.sum(0), refs
    return refs.sum(0) / n, refs  # AVPC base.py 158: mixture = mean; audios stay undivided


# --- scoring ------------------------------------------------------------------------------------------


def reconstruct(mixture: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Their `istft_reconstruction` (utils.py: librosa.istft without a length, then np.clip(-1, 1)).

    mixture (B, L) and linear masks (B, S, F, T) -> estimates (B, S, SCORED), mixture round trip (B, SCORED),
    float64. |mix| * mask with the mixture's phase is mask * STFT(mix)."""
    spec = dsp.stft(mixture.to(torch.float64))  # (B, F, T)
    n_out = dsp.HOP * (spec.shape[-1] - 1)  # librosa's length for centred frames: 65280 for T = 256
    est = dsp.istft(masks.to(spec.device, torch.float64) * spec[:, None], n_out).clamp(-1, 1)
    mix = dsp.istft(spec, n_out).clamp(-1, 1)
    return est, mix


@dataclass
class MixtureScore:
    """One test mixture under a reference protocol: the means over its sources (NaN when skipped)."""

    item: str
    batch: int
    classes: str
    clips: str
    valid: bool
    sdr_mixture: float
    sdr: float
    sir: float
    sar: float


def score(refs: torch.Tensor, est: torch.Tensor, mix: torch.Tensor) -> dict[str, torch.Tensor]:
    """Their calc_metrics loop body for a batch. refs (B, S, L0 >= L), est (B, S, L), mix (B, L) ->
    {"valid": (B,), "sdr_mixture", "sdr", "sir", "sar": (B,) means over sources, NaN where not valid}.

    References are cut to the estimates' length (audios[n][j, 0:L]); a mixture is valid when every
    reference and every estimate has sum |x| > 1e-5; BSS Eval without permutation, the mixture's SDR
    with the round-trip mixture as every estimate. NaN or inf anywhere also makes a mixture invalid (their
    mir_eval call would give NaN or fail)."""
    n_smp = est.shape[-1]
    ref = refs[..., :n_smp].to(torch.float64)
    est = est.to(torch.float64)
    loud = lambda x: (x.abs().sum(-1) > SILENT_SUM).all(-1)  # noqa: E731  (B, S, L) -> (B,); NaN fails
    valid = loud(ref) & loud(est)
    # silence_threshold 0: mir_eval scores any non-zero signal; the 1e-5 rule above already decided
    res = metrics.bss_eval(ref, est, silence_threshold=0.0)
    res_mix = metrics.bss_eval(ref, mix[:, None].expand_as(est).to(torch.float64), silence_threshold=0.0)
    valid &= res.valid.all(-1) & res_mix.valid.all(-1)
    out = {"valid": valid}
    for k, v in (("sdr_mixture", res_mix.sdr), ("sdr", res.sdr), ("sir", res.sir), ("sar", res.sar)):
        out[k] = torch.where(valid, v.mean(-1), torch.nan)
    return out


KEYS = ("sdr_mixture", "sdr", "sir", "sar")


def average(scores: list[MixtureScore]) -> dict:
    """Their meters: per batch, the mean over its valid mixtures (0.0 when none: AverageMeter.average()
    of an empty meter); then the unweighted mean of the batch means. Also, for comparison, the plain mean
    over valid mixtures and the counts."""
    batches: dict[int, list[MixtureScore]] = {}
    for s in scores:
        batches.setdefault(s.batch, []).append(s)
    per_batch = {k: [] for k in KEYS}
    for rows in batches.values():
        ok = [r for r in rows if r.valid]
        for k in KEYS:
            per_batch[k].append(float(np.mean([getattr(r, k) for r in ok])) if ok else 0.0)
    ok = [s for s in scores if s.valid]
    out = {k: (float(np.mean(per_batch[k])) if per_batch[k] else math.nan) for k in KEYS}
    out["sdri"] = out["sdr"] - out["sdr_mixture"]
    out["plain"] = {k: (float(np.mean([getattr(s, k) for s in ok])) if ok else math.nan) for k in KEYS}
    out.update(mixtures=len(scores), valid=len(ok), skipped=len(scores) - len(ok), batches=len(batches))
    return out


@dataclass
class ProtocolReport:
    method: str
    protocol: str
    scores: list[MixtureScore] = field(default_factory=list)
    seconds: float = 0.0
    params: int | None = None

    def summary(self) -> dict:
        return average(self.scores)


def estimate(method, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """-> estimates (B, S, SCORED), mixture round trip (B, SCORED). Masking methods: their masks through
    `reconstruct`, as the references' calc_metrics does; others (the mixture, the oracles): the waveforms
    `separate` gives, cut to the scored length and clipped, beside the same mixture round trip."""
    masks = getattr(method, "masks", None)
    if masks is not None:
        return reconstruct(batch.mixture, masks(batch))
    est = method.separate(batch).to(torch.float64)
    zero = torch.zeros(*batch.stems.shape[:2], dsp.N_FREQ, 1 + batch.mixture.shape[-1] // dsp.HOP, dtype=torch.float64)
    _, mix = reconstruct(batch.mixture, zero)
    return est[..., : mix.shape[-1]].clamp(-1, 1), mix


def evaluate(method, items: list[RefItem], protocol: str, *, batch_size: int = 8,
             device: torch.device = torch.device("cpu"), on_batch: Callable[[int], None] | None = None) -> ProtocolReport:
    """Score `method` on `items` under `protocol`. `batch_size` is how many mixtures run at once (memory);
    the averaging batches are the protocol's own (32 or 30 consecutive mixtures), whatever it is."""
    from avsep_cli.datasets import ClipReader
    from avsep_cli.evaluate import _frames_for
    from avsep_cli.methods import MixBatch

    rule = rules(protocol)
    model = getattr(method, "model", None)
    report = ProtocolReport(method.name, protocol, params=sum(p.numel() for p in model.parameters()) if model is not None else None)
    readers: dict[str, ClipReader] = {}
    for b0 in range(0, len(items), batch_size):
        chunk = items[b0 : b0 + batch_size]
        rows = []
        for it in chunk:
            reader = readers.setdefault(it.root, ClipReader(Path(it.root)))
            try:
                mix, refs = load_item(it, rule, reader)
            except AvsepError as e:  # SoP loads zeros for an unreadable clip (music.py 65-69): skipped, in its batch
                log.warning("%s: %s (scored as silent, so skipped)", it.key, e)
                mix, refs = np.zeros(WINDOW, np.float32), np.zeros((len(it.clips), WINDOW), np.float32)
            starts = [off / dsp.SAMPLE_RATE for off in it.offsets]
            rows.append((it, mix, refs, starts))
        mixture = torch.from_numpy(np.stack([r[1] for r in rows]).astype(np.float32)).to(device)  # (B, L)
        stems = torch.from_numpy(np.stack([r[2] for r in rows]).astype(np.float32)).to(device)  # (B, S, L)
        batch = MixBatch(mixture=mixture, stems=stems, classes=[list(r[0].classes) for r in rows])
        if method.frames_per_source:
            batch.frames = _frames_for(method, rows, WINDOW)
        t0 = time.perf_counter()
        with torch.no_grad():
            est, mix_rt = estimate(method, batch)
        report.seconds += time.perf_counter() - t0
        res = score(stems.cpu(), est.cpu(), mix_rt.cpu())
        for bi, (it, *_rest) in enumerate(rows):
            report.scores.append(MixtureScore(
                item=it.key, batch=it.index // rule.batch, classes="+".join(it.classes),
                clips="+".join(c.id for c in it.clips), valid=bool(res["valid"][bi]),
                **{k: float(res[k][bi]) for k in KEYS}))
        if on_batch:
            on_batch(len(chunk))
    return report


def report_json(reports: list[ProtocolReport], setup: dict) -> dict:
    """Deterministic JSON (no timings); NaN (skipped mixtures) as null."""
    clean = lambda d: {k: (None if isinstance(v, float) and not math.isfinite(v) else  # noqa: E731
                           round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}
    out = {}
    for r in reports:
        sm = r.summary()
        plain = sm.pop("plain")
        out[r.method] = {"summary": clean(sm), "plain_mean": clean(plain), "mixtures": [clean(asdict(s)) for s in r.scores]}
    return {"setup": setup, "methods": out}
