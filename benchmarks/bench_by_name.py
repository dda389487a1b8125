"""Separation by instrument name against separation by picture, per shipped separator, on the corpus' test
duets.

Every duet clip of the split is one item: its first 65535 samples (11,025 Hz mono; `avsep eval`'s duet
item), both players' stems scored with BSS Eval against their ground truth (`evaluate.evaluate`). Each
separator runs through the method API, guided four ways:

- names:    the two correct class names -> their class prototypes (`avsep_cli.prototypes`, the shipped file
            made for the method's trunk) as `MixBatch.features`;
- crops:    the true crops (the clip's sidecar boxes; 3 frames 3 s apart, square, padding 0.1), as `avsep eval`;
- swapped:  control, the two names exchanged (each stem asked for the other instrument): SDR drops when the
            prototypes steer the separation;
- pooled:   (with --pooled) the design alternative to maps: each prototype averaged over space, broadcast;
- detector: (with --detector) the whole clip through `Separator` with the shipped detector (tracking, crops,
            overlap-add), each player matched to the identity whose boxes overlap its own most
            (`evaluate.match_identities`), scored on the same window; a player with no track is counted
            as missed and left out of the mean.

    python benchmarks/bench_by_name.py --root corpus [--methods avpc,sop,ialcms] [--detector] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from avsep_cli import dsp, metrics, prototypes
from avsep_cli.evaluate import build_test_set, evaluate, load_item, match_identities
from avsep_cli.methods import MixBatch, available, get_method
from avsep_cli.methods.learned import MODEL_OF


class ByName:
    """A method guided by class names: each source's class prototype in place of its pictures."""

    frames_per_source = 0  # evaluate() then builds no pictures

    def __init__(self, method, label: str, swap: bool = False, pooled: bool = False):
        self.inner, self.model, self.name, self.swap, self.pooled = method, method.model, label, swap, pooled
        self.protos = prototypes.for_method(method)

    def separate(self, batch: MixBatch) -> torch.Tensor:
        names = [c[::-1] if self.swap else c for c in batch.classes]
        feats = torch.stack([self.protos.guidance(n, self.inner) for n in names])  # (B, S, K, C, h, w)
        if self.pooled:  # the design alternative: one vector per class, broadcast over the map
            feats = feats.mean(dim=(-2, -1), keepdim=True).expand_as(feats).contiguous()
        batch.features = feats
        return self.inner.separate(batch)


def detector_scores(name: str, weights: str, items, window: int) -> list[float]:
    """SDR per (duet, player) of the end-to-end pipeline with the shipped detector; NaN where missed."""
    from avsep_cli.errors import AvsepError
    from avsep_cli.separator import Separator

    sep = Separator(MODEL_OF[name], weights)
    out = []
    for it in items:
        clip = it.clips[0]
        mix, refs, _ = load_item(it, window)
        try:
            result = sep.separate_file(clip.video)
        except AvsepError:  # e.g. IAL-CMS refuses a video where nothing is detected
            out += [math.nan] * len(it.classes)
            continue
        owner = match_identities(result.identities, json.loads(clip.sidecar.read_text()))
        est = np.zeros_like(refs, dtype=np.float64)
        for s, cls in enumerate(it.classes):
            if cls in owner:
                stem = np.asarray(result.stems[owner[cls]], np.float64)[:window]
                est[s, : len(stem)] = stem
        res = metrics.bss_eval(torch.from_numpy(refs[None].astype(np.float64)), torch.from_numpy(est[None]))
        for s, cls in enumerate(it.classes):
            ok = cls in owner and bool(res.valid[0, s])
            out.append(float(res.sdr[0, s]) if ok else math.nan)
    return out


def summary(values) -> dict:
    v = torch.tensor([x for x in values if x is not None and math.isfinite(x)], dtype=torch.float64)
    s = metrics.summarize(v)
    return {"mean": round(s.mean, 2), "ci": [round(s.ci_low, 2), round(s.ci_high, 2)], "n": s.n}


def table(report: dict) -> str:
    """The Markdown table of a report: mean SDR [95% CI] per guidance, SIR of names and crops."""
    rows = report["methods"]
    pooled = any("pooled" in r for r in rows.values())
    det = any("detector" in r for r in rows.values())
    head = (["method", "names SDR", "crops SDR", "swapped names SDR"] + (["pooled names SDR"] if pooled else [])
            + (["detector SDR (players found)"] if det else []) + ["names SIR", "crops SIR"])
    cell = lambda s: f"{s['mean']:.2f} [{s['ci'][0]:.2f}, {s['ci'][1]:.2f}]"  # noqa: E731
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        c = [name, cell(r["names"]["sdr"]), cell(r["crops"]["sdr"]), f"{r['swapped']['sdr']['mean']:.2f}"]
        c += [f"{r['pooled']['sdr']['mean']:.2f}"] if pooled else []
        if det:
            d = r.get("detector")
            c.append(f"{cell(d['sdr'])} ({d['players'] - d['missed']}/{d['players']})" if d else "-")
        c += [f"{r['names']['sir']['mean']:.2f}", f"{r['crops']['sir']['mean']:.2f}"]
        lines.append("| " + " | ".join(c) + " |")
    mix = next(iter(rows.values()))["mixture_sdr"]["mean"]
    lines.append(f"\n{report['duets']} duets ({report['split']}), {2 * report['duets']} stems, first {report['window']} samples "
                 f"at {dsp.SAMPLE_RATE} Hz; the unseparated mixture scores {mix:.2f} dB SDR.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="corpus folder (avsep data synth)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every shipped learned separator)")
    ap.add_argument("--window", type=int, default=dsp.SEGMENT)
    ap.add_argument("--detector", action="store_true", help="also run the end-to-end pipeline with the shipped detector")
    ap.add_argument("--pooled", action="store_true", help="also guide by spatially pooled prototypes (vectors)")
    ap.add_argument("--json", default=None, help="write every figure here")
    args = ap.parse_args()

    items = build_test_set(args.root, mix=2, split=args.split, num=0, duets=True)
    names = args.methods.split(",") if args.methods else [m for m in available(shipped_only=True) if m in MODEL_OF]
    report = {"root": args.root, "split": args.split, "window": args.window, "duets": len(items), "methods": {}}
    print(f"{len(items)} duet clips ({args.split}), window {args.window} samples at {dsp.SAMPLE_RATE} Hz", flush=True)
    for name in names:
        t0 = time.perf_counter()
        method = get_method(name)
        row = {"weights": method.weights_name, "prototypes": prototypes.for_method(method).name}
        per = {}
        conds = [("names", ByName(method, name)), ("crops", method), ("swapped", ByName(method, name, swap=True))]
        for cond, m in conds + ([("pooled", ByName(method, name, pooled=True))] if args.pooled else []):
            rep, _ = evaluate(m, items, window=args.window)
            per[cond] = rep.scores
            row[cond] = {k: summary([getattr(s, k) for s in rep.scores if s.valid]) for k in ("sdr", "sir", "sar")}
        row["mixture_sdr"] = summary([s.sdr_mixture for s in per["crops"] if s.valid])
        row["sources"] = [{"item": a.item, "class": a.cls, **{c: getattr(p, "sdr") for c, p in
                           (("names", a), ("crops", b), ("swapped", w))}}
                          for a, b, w in zip(per["names"], per["crops"], per["swapped"])]
        if args.detector:
            d = detector_scores(name, method.weights_name, items, args.window)
            row["detector"] = {"sdr": summary(d), "missed": int(sum(not math.isfinite(x) for x in d)), "players": len(d)}
            for r, x in zip(row["sources"], d):
                r["detector"] = None if not math.isfinite(x) else x
        row["seconds"] = round(time.perf_counter() - t0, 1)
        report["methods"][name] = row
        print(f"{name}: {row['seconds']} s", flush=True)
    print(table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
