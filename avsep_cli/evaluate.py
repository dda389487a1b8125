"""Evaluation under the field's protocol: fixed, seeded test mixtures scored with BSS Eval.

Test mixtures are N solo clips of different classes, each cut to an aligned window (65535 samples or
10 s) at a seeded start and summed; the same seed always gives the same mixtures, so two runs give
identical numbers. The corpus' duet clips are scored too, against their ground-truth stems. Every
per-source figure is kept (JSON/CSV); the summary gives mean, median and a 95% confidence interval per
metric and per class. Unreadable clips, and test items whose reference audio has NaN or inf samples (a
data problem), are skipped with a warning and counted; an estimate with NaN or inf samples (a method's
failure) is scored as invalid, counted, and warned about once per method. Neither is fatal mid-run.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from avsep_cli import dsp, media, metrics
from avsep_cli.errors import AvsepError
from avsep_cli.layout import Clip, open_corpus
from avsep_cli.methods import Method, MixBatch

log = logging.getLogger("avsep")

METRICS = ("sdr", "sir", "sar")


@dataclass(frozen=True)
class TestItem:
    """One scored mixture: which clips, from where, and whether it is a synthetic mix or a real duet."""

    key: str
    kind: str  # "mix" (N solos summed) or "duet" (a corpus duet against its stems)
    clips: tuple[Clip, ...]
    starts: tuple[float, ...]  # seconds, one per clip (duets: one)
    classes: tuple[str, ...]
    root: str = ""  # the corpus root (where its decode cache lives)


def parse_window(text: str) -> int:
    """'65535' (samples) or '10s' (seconds) -> samples at 11025 Hz."""
    t = text.strip().lower()
    try:
        if t.endswith("s"):
            return int(round(float(t[:-1]) * dsp.SAMPLE_RATE))
        n = int(t)
    except ValueError:
        raise AvsepError(f"--window {text}: expected a sample count (65535) or seconds (10s)") from None
    if n < dsp.SAMPLE_RATE:
        raise AvsepError(f"--window {text}: at least 1 s ({dsp.SAMPLE_RATE} samples) is needed")
    return n


def build_test_set(root: str | Path, *, mix: int, split: str = "test", num: int = 200, seed: int = 0,
                   window: int = dsp.SEGMENT, duets: bool = True) -> list[TestItem]:
    """The fixed list of test mixtures for (root, split, mix, num, seed, window). Pure function of its
    arguments and the corpus' file list: clips are sorted before any random choice."""
    corpus = open_corpus(root)
    solos = sorted(corpus.clips(split=split, kind="solo"), key=lambda c: (c.classes, c.id))
    by_class: dict[str, list[Clip]] = {}
    for c in solos:
        by_class.setdefault(c.classes[0], []).append(c)
    if mix < 2:
        raise AvsepError(f"--mix {mix}: a test mixture needs at least 2 sources")
    if len(by_class) < mix:
        raise AvsepError(
            f"--mix {mix} needs solo clips of at least {mix} different classes in split {split!r}; "
            f"{root} has {len(by_class)} ({', '.join(sorted(by_class)) or 'none'})"
        )
    rng = np.random.default_rng(seed)
    classes = sorted(by_class)
    items: list[TestItem] = []
    for i in range(num):
        chosen = sorted(rng.choice(len(classes), size=mix, replace=False).tolist())
        clips = tuple(by_class[classes[k]][rng.integers(len(by_class[classes[k]]))] for k in chosen)
        starts = tuple(float(rng.random()) for _ in clips)  # a fraction of the free room, resolved on load
        items.append(TestItem(f"mix{mix}-{i:04d}", "mix", clips, starts, tuple(c.classes[0] for c in clips), str(root)))
    if duets:
        for c in sorted(corpus.clips(split=split, kind="duet"), key=lambda c: c.id):
            if len(c.stems) >= 2:
                items.append(TestItem(f"duet-{c.id}", "duet", (c,), (0.0,), tuple(c.classes), str(root)))
    return items


def _load_window(path: Path, start_frac: float, window: int, reader: Callable) -> tuple[np.ndarray, float]:
    """Read `window` samples at a start chosen by `start_frac` within the file's free room (zero-padded
    when the file is shorter than the window). Returns (audio, start seconds)."""
    full = reader(path)
    room = max(0, len(full) - window)
    start = int(math.floor(start_frac * room))
    out = np.zeros(window, dtype=np.float32)
    seg = full[start : start + window]
    out[: len(seg)] = seg
    return out, start / dsp.SAMPLE_RATE


def load_item(item: TestItem, window: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """-> mixture (L,), references (S, L), window start (s) per clip. Solo clips supply their own audio
    track as the source (as in MUSIC, where a solo video's sound is the source); duets supply their
    mixture track and their ground-truth stems. Audio comes from the decode cache when there is one."""
    from avsep_cli.datasets import ClipReader

    reader = ClipReader(Path(item.root))
    track = {c.video: c for c in item.clips}
    if item.kind == "mix":
        refs, starts = [], []
        for clip, frac in zip(item.clips, item.starts):
            audio, s = _load_window(clip.video, frac, window, lambda p: reader.audio(track[p]))
            refs.append(audio)
            starts.append(s)
        refs_a = np.stack(refs)
        return refs_a.sum(0), refs_a, starts
    clip = item.clips[0]
    mix, _ = _load_window(clip.video, 0.0, window, lambda p: reader.audio(track[p]))
    refs = np.stack([_load_window(clip.stems[c], 0.0, window, media.read_audio_file)[0] for c in item.classes])
    return mix, refs, [0.0]


@dataclass
class SourceScore:
    item: str
    kind: str
    source: int
    cls: str
    clip: str
    sdr: float | None
    sir: float | None
    sar: float | None
    si_sdr: float | None
    sdr_mixture: float | None
    valid: bool


@dataclass
class MethodReport:
    method: str
    scores: list[SourceScore] = field(default_factory=list)
    skipped_clips: int = 0
    skipped_sources: int = 0  # invalid sources: silent reference or estimate, or a non-finite estimate
    nonfinite_estimates: int = 0  # estimates with NaN or inf samples (also counted in skipped_sources)
    seconds: float = 0.0
    audio_seconds: float = 0.0
    params: int | None = None  # learned methods: parameter count of the model (frozen trunk included)

    @property
    def seconds_per_clip(self) -> float:
        """Inference time (separation, not scoring) per 6 s of audio."""
        return self.seconds / max(self.audio_seconds, 1e-9) * 6.0

    def summary(self, kind: str | None = None) -> dict:
        """Mean, median, 95% CI per metric over valid sources (optionally one kind: mix or duet)."""
        rows = [s for s in self.scores if s.valid and (kind is None or s.kind == kind)]
        cols = {m: [getattr(s, m) for s in rows] for m in METRICS + ("si_sdr",)}
        cols["sdri"] = [s.sdr - s.sdr_mixture for s in rows if s.sdr is not None and s.sdr_mixture is not None]
        return {m: _summary(v) for m, v in cols.items()}

    def per_class(self, kind: str = "mix") -> dict[str, dict]:
        classes = sorted({s.cls for s in self.scores if s.kind == kind})
        res = {}
        for c in classes:
            vals = [s.sdr for s in self.scores if s.valid and s.kind == kind and s.cls == c and s.sdr is not None]
            res[c] = {"n": len(vals), "sdr_mean": float(np.mean(vals)) if vals else None}
        return res


def _summary(values: list[float | None]) -> dict:
    """metrics.summarize as plain JSON-able numbers (None where there is nothing to summarise); None
    entries are left out, as summarize leaves out NaN and inf."""
    sm = asdict(metrics.summarize(torch.tensor([v for v in values if v is not None], dtype=torch.float64)))
    return {k: (v if k == "n" else _round(v)) for k, v in sm.items()}


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def evaluate(method: Method, items: list[TestItem], *, window: int, batch_size: int = 8,
             device: torch.device = torch.device("cpu"), on_batch: Callable[[int], None] | None = None,
             keep: int = 0) -> tuple[MethodReport, list[dict]]:
    """Run `method` over `items` in batches and score every source. Returns the report and, for the
    first `keep` items, the signals needed for plots."""
    model = getattr(method, "model", None)
    report = MethodReport(method.name, params=sum(p.numel() for p in model.parameters()) if model is not None else None)
    kept: list[dict] = []
    for b0 in range(0, len(items), batch_size):
        chunk = items[b0 : b0 + batch_size]
        loaded = []
        for it in chunk:
            try:
                row = (it, *load_item(it, window))
                _check_references(it, row[2])
                loaded.append(row)
            except AvsepError as e:  # unreadable clip or NaN/inf reference audio: count it, go on
                log.warning("skipping %s: %s", it.key, e)
                report.skipped_clips += 1
        # items of one batch must share their source count (mix items do; duets have 2)
        groups: dict[int, list] = {}
        for row in loaded:
            groups.setdefault(row[2].shape[0], []).append(row)
        for rows in groups.values():
            mixture = torch.from_numpy(np.stack([r[1] for r in rows])).to(device)  # (B, L)
            stems = torch.from_numpy(np.stack([r[2] for r in rows])).to(device)  # (B, S, L)
            batch = MixBatch(mixture=mixture, stems=stems, classes=[list(r[0].classes) for r in rows])
            if method.frames_per_source:
                batch.frames = _frames_for(method, rows, window)
            t0 = time.perf_counter()
            with torch.no_grad():
                est = method.separate(batch).to(torch.float64)
            report.seconds += time.perf_counter() - t0
            report.audio_seconds += len(rows) * window / dsp.SAMPLE_RATE
            ref = stems.to(torch.float64)
            # NaN/inf in an estimate: bss_eval, sdr_improvement and si_sdr mark that entry invalid
            report.nonfinite_estimates += int((~torch.isfinite(est).all(-1)).sum())
            res = metrics.bss_eval(ref, est)
            sdri, sdri_ok = metrics.sdr_improvement(ref, est, mixture.to(torch.float64))
            si = metrics.si_sdr(ref, est)
            # a source counts when every figure of it is a number (the summaries rely on it)
            valid = (res.valid & sdri_ok & torch.isfinite(si)).cpu()
            for bi, r in enumerate(rows):
                it = r[0]
                for s in range(ref.shape[1]):
                    ok = bool(valid[bi, s])
                    report.skipped_sources += 0 if ok else 1
                    clip = it.clips[s if it.kind == "mix" else 0]
                    report.scores.append(SourceScore(
                        item=it.key, kind=it.kind, source=s, cls=it.classes[s], clip=str(clip.id),
                        sdr=_round(res.sdr[bi, s].item()) if ok else None,
                        sir=_round(res.sir[bi, s].item()) if ok else None,
                        sar=_round(res.sar[bi, s].item()) if ok else None,
                        si_sdr=_round(si[bi, s].item()) if ok else None,
                        sdr_mixture=_round((res.sdr[bi, s] - sdri[bi, s]).item()) if ok else None,
                        valid=ok,
                    ))
                if len(kept) < keep:
                    kept.append({"key": it.key, "mixture": mixture[bi].cpu(), "stems": stems[bi].cpu(),
                                 "estimates": est[bi].float().cpu(), "classes": list(it.classes)})
        if on_batch:
            on_batch(len(chunk))
    if report.nonfinite_estimates:
        # short, so that the log handler keeps it on one line; the count is also in the JSON and the table
        log.warning("%s: %d estimate(s) with NaN/inf samples scored as invalid", method.name, report.nonfinite_estimates)
    return report, kept


def _check_references(item: TestItem, refs: np.ndarray) -> None:
    """Raise AvsepError when a reference window (S, L) has NaN or inf samples: a data problem (a broken
    stem or decode cache), so the item is skipped and counted like an unreadable clip, not scored."""
    bad = [item.classes[s] for s in range(refs.shape[0]) if not np.isfinite(refs[s]).all()]
    if bad:
        raise AvsepError(f"reference of {', '.join(bad)} has NaN/inf samples")


def _frames_for(method: Method, rows: list, window: int) -> torch.Tensor:
    """(B, S, K, 3, H, W) uint8 pictures of each source, K per source at times centred on the window
    (AVPC: 3 frames 3 s apart). A solo source shows its own clip's frames; a duet source shows the square
    crop around its player's box, since both players share one frame. A method guided by player crops in
    training (`guidance = "crops"`: IAL-CMS, as its reference's TestDataset.py 97) gets crops for solo
    sources too."""
    from avsep_cli.datasets import ClipReader, augment_frames, square_crop

    k, gap, size = method.frames_per_source, getattr(method, "frame_gap", 3.0), getattr(method, "frame_size", 224)
    centre = window / dsp.SAMPLE_RATE / 2
    out = []
    for it, _mix, _refs, starts in rows:
        reader = ClipReader(Path(it.root))
        per_source = []
        for s in range(len(it.classes)):
            clip = it.clips[s] if it.kind == "mix" else it.clips[0]
            t0 = starts[s] if it.kind == "mix" else 0.0
            times = [max(0.0, t0 + centre + (j - (k - 1) / 2) * gap) for j in range(k)]
            frames = reader.frames(clip, times)  # (K, H, W, 3), from the decode cache when there is one
            if it.kind == "duet" or getattr(method, "guidance", "frames") == "crops":
                boxes = dict(reader.boxes(clip, times)).get(it.classes[s])
                if boxes is not None:
                    frames = np.stack([square_crop(f, b, size) for f, b in zip(frames, boxes)])
            t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
            per_source.append(augment_frames(t, np.random.default_rng(0), size, train=False))
        out.append(torch.stack(per_source))
    return torch.stack(out)


# --- reports -----------------------------------------------------------------------------------------


def report_json(reports: list[MethodReport], setup: dict) -> dict:
    """Deterministic JSON (no timings): the same inputs give byte-identical files."""
    return {
        "setup": setup,
        "methods": {
            r.method: {
                "summary": {"mix": r.summary("mix"), "duet": r.summary("duet")},
                "per_class": r.per_class("mix"),
                "skipped_clips": r.skipped_clips,
                "skipped_sources": r.skipped_sources,
                "nonfinite_estimates": r.nonfinite_estimates,
                "sources": [asdict(s) for s in r.scores],
            }
            for r in reports
        },
    }


def report_markdown(reports: list[MethodReport], setup: dict) -> str:
    """The README's results table: one row per method, mean SDR [95% CI], SIR, SAR on the test mixtures,
    the same on the duet clips, parameters and inference time per 6-s clip."""
    head = (f"{setup['mix']}-mix, {setup['split']} split, {setup['num']} mixtures (seed {setup['seed']})"
            + (" and the corpus duet clips" if setup.get("duets") else ""))
    lines = [f"<!-- avsep eval --mix {setup['mix']} --num {setup['num']} --seed {setup['seed']}: {head} -->",
             "| method | params | SDR [95% CI] | SIR | SAR | duets SDR | duets SIR | duets SAR | s / 6-s clip |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(sm: dict, m: str) -> str:
        return f"{sm[m]['mean']:.2f}" if sm[m]["n"] else "-"

    for r in reports:
        mix, duet = r.summary("mix"), r.summary("duet")
        sdr = f"{mix['sdr']['mean']:.2f} [{mix['sdr']['ci_low']:.2f}, {mix['sdr']['ci_high']:.2f}]" if mix["sdr"]["n"] else "-"
        params = f"{r.params / 1e6:.2f} M" if r.params else "-"
        lines.append(f"| {r.method} | {params} | {sdr} | {cell(mix, 'sir')} | {cell(mix, 'sar')} | {cell(duet, 'sdr')} "
                     f"| {cell(duet, 'sir')} | {cell(duet, 'sar')} | {r.seconds_per_clip:.2f} |")
    return "\n".join(lines) + "\n"


def write_text(path: Path, text: str) -> None:
    from avsep_cli.fsio import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: dict) -> None:
    from avsep_cli.fsio import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def write_csv(path: Path, reports: list[MethodReport]) -> None:
    from avsep_cli.fsio import atomic_path

    fields = ["method"] + list(SourceScore.__dataclass_fields__)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in reports:
            for s in r.scores:
                w.writerow({"method": r.method, **asdict(s)})


def write_plots(folder: Path, method: str, kept: Iterable[dict]) -> list[Path]:
    """One PNG per kept mixture: the mixture, each estimate and each reference (log magnitude on the log
    grid), and each estimate's effective mask |estimate| / |mixture| on the same grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avsep_cli.fsio import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    spec = lambda wav: dsp.LOG.warp(dsp.stft(wav.float()).abs())  # noqa: E731  (F=256, T)
    paths = []
    for k in kept:
        S = k["stems"].shape[0]
        fig, axes = plt.subplots(3, S + 1, figsize=(3 * (S + 1), 7), squeeze=False)
        mix = spec(k["mixture"])

        def show(ax, img, title, **kw):
            ax.imshow(img.numpy(), origin="lower", aspect="auto", **kw)
            ax.set_title(title, fontsize=8)
            ax.axis("off")

        db = dict(vmin=-10, vmax=4, cmap="magma")
        show(axes[0, 0], dsp.log_magnitude(mix), "mixture", **db)
        axes[1, 0].axis("off")
        axes[2, 0].axis("off")
        for s in range(S):
            est = spec(k["estimates"][s])
            show(axes[0, s + 1], dsp.log_magnitude(est), f"estimate: {k['classes'][s]}", **db)
            show(axes[1, s + 1], dsp.log_magnitude(spec(k["stems"][s])), f"reference: {k['classes'][s]}", **db)
            show(axes[2, s + 1], (est / mix.clamp_min(1e-8)).clamp(0, 1), f"mask: {k['classes'][s]}", vmin=0, vmax=1, cmap="gray")
        fig.suptitle(f"{method} — {k['key']}", fontsize=9)
        fig.tight_layout()
        path = folder / f"{method}_{k['key']}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


# --- end to end: a `Separator`'s output on a corpus clip ---------------------------------------------


def box_iou(a, b) -> float:
    """IoU of two x0, y0, x1, y1 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_players(identities, sidecar: dict, min_iou: float = 0.5) -> list[tuple[float, object]]:
    """Per player of `sidecar` (in its order): (mean IoU, identity) of the output identity whose tracked
    boxes overlap that player's true boxes most (mean IoU over the identity's sightings, at least
    `min_iou`), or (0.0, None). `identities` are `separator.Identity`s (or dicts with name and boxes, as in
    manifest.json)."""
    fps, out = float(sidecar["fps"]), []
    for p in sidecar["players"]:
        n, best = len(p["boxes"]), (0.0, None)
        for ident in identities:
            boxes = ident["boxes"] if isinstance(ident, dict) else ident.boxes
            if not boxes:  # guided by name or by the whole frame: no sightings
                continue
            ov = float(np.mean([box_iou(b["box"], p["boxes"][min(n - 1, int(b["t"] * fps))]) for b in boxes]))
            if ov >= min_iou and ov > best[0]:
                best = (ov, ident)
        out.append(best)
    return out


def match_identities(identities, sidecar: dict, min_iou: float = 0.5) -> dict[str, str]:
    """Ground-truth player class -> name of the output identity that `match_players` gives that player
    (the best-overlapping one where two players share a class)."""
    best: dict[str, tuple[float, str]] = {}
    for p, (ov, ident) in zip(sidecar["players"], match_players(identities, sidecar, min_iou)):
        if ident is not None and ov > best.get(p["class"], (0.0, ""))[0]:
            best[p["class"]] = (ov, ident["name"] if isinstance(ident, dict) else ident.name)
    return {cls: name for cls, (_, name) in best.items()}


def score_clip_stems(clip: Clip, stems: dict[str, np.ndarray], owner: dict[str, str]) -> list[dict]:
    """Per ground-truth player of a duet `clip`: BSS Eval SDR of the stem `owner[class]` names (from
    `stems`, name -> waveform at dsp.SAMPLE_RATE) against its own reference and against the other player's.
    A player without an output identity gets NaNs and found=False."""
    refs = {c: media.read_audio_file(p, sr=dsp.SAMPLE_RATE) for c, p in clip.stems.items()}
    rows = []
    for cls in clip.classes:
        row = {"clip": clip.id, "class": cls, "found": cls in owner, "stem": owner.get(cls),
               "sdr_own": math.nan, "sdr_other": math.nan}
        if cls in owner:
            est = np.asarray(stems[owner[cls]], np.float64)
            for key, ref_cls in (("sdr_own", cls), ("sdr_other", next(c for c in clip.classes if c != cls))):
                ref = refs[ref_cls]
                n = min(len(ref), len(est))
                res = metrics.bss_eval(torch.from_numpy(ref[None, None, :n].astype(np.float64)),
                                       torch.from_numpy(est[None, None, :n]))
                row[key] = float(res.sdr[0, 0])
        rows.append(row)
    return rows
