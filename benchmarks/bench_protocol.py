"""The effect of each difference between a reference protocol (`avsep eval --protocol sop|avpc`) and ours,
one at a time, on the reference protocol's own test mixtures (docs/evaluation.md, "Measured effects").

The method runs once per mixture; the masks it gives are then scored with the reference's rules, and again
with one rule replaced by ours:

- clip:    estimates and the mixture round trip not clipped to [-1, 1];
- length:  all 65,535 samples scored (iSTFT to the window's length) instead of their 65,280;
- mixture: the mixture's SDR from the mixture itself, not from its STFT -> iSTFT round trip (SDR_mix and SDRi);
- silence: our rule (a source whose reference or estimate has mean square <= 1e-10 is skipped alone)
           instead of theirs (sum |x| <= 1e-5 in any source skips the mixture);
- average: the mean over every valid source (ours) instead of per mixture, per batch, then over batches.

    python benchmarks/bench_protocol.py --root corpus --method sop --protocol sop --num 64 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from avsep_cli import dsp, metrics, protocols
from avsep_cli.datasets import ClipReader
from avsep_cli.evaluate import _frames_for
from avsep_cli.methods import MixBatch, get_method


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--method", default="sop")
    ap.add_argument("--protocol", default="sop", choices=["sop", "avpc"])
    ap.add_argument("--split", default="test")
    ap.add_argument("--num", type=int, default=64)
    ap.add_argument("--mix", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--json")
    a = ap.parse_args()

    rule = protocols.rules(a.protocol)
    method = get_method(a.method)
    items = protocols.build_test_set(a.root, a.protocol, mix=a.mix, split=a.split, num=a.num)
    reader = ClipReader(a.root)
    refs_all, est_full, mix_all = [], [], []
    t0 = time.perf_counter()
    for b0 in range(0, len(items), a.batch_size):
        chunk = items[b0 : b0 + a.batch_size]
        rows = []
        for it in chunk:
            mix, refs = protocols.load_item(it, rule, reader)
            rows.append((it, mix, refs, [o / dsp.SAMPLE_RATE for o in it.offsets]))
        mixture = torch.from_numpy(np.stack([r[1] for r in rows]).astype(np.float32))  # (B, L)
        stems = torch.from_numpy(np.stack([r[2] for r in rows]).astype(np.float32))  # (B, S, L)
        batch = MixBatch(mixture=mixture, stems=stems, classes=[list(r[0].classes) for r in rows])
        if method.frames_per_source:
            batch.frames = _frames_for(method, rows, protocols.WINDOW)
        with torch.no_grad():
            masks = method.masks(batch).double()  # (B, S, F, T)
        spec = dsp.stft(mixture.double())  # (B, F, T)
        est_full.append(dsp.istft(masks * spec[:, None], protocols.WINDOW))  # (B, S, 65535), unclipped
        refs_all.append(stems.double())
        mix_all.append(mixture.double())
    refs, est, mix = torch.cat(refs_all), torch.cat(est_full), torch.cat(mix_all)
    seconds = time.perf_counter() - t0
    n = protocols.SCORED
    batch_of = [it.index // rule.batch for it in items]

    def theirs(est_s, mix_s, refs_s=refs) -> dict:
        res = protocols.score(refs_s, est_s, mix_s)
        rows = [protocols.MixtureScore(it.key, batch_of[i], "", "", bool(res["valid"][i]),
                                       **{k: float(res[k][i]) for k in protocols.KEYS}) for i, it in enumerate(items)]
        sm = protocols.average(rows)
        return {k: sm[k] for k in ("sdr_mixture", "sdr", "sir", "sar", "sdri", "valid", "skipped")} | {"plain": sm["plain"]}

    rt = dsp.istft(dsp.stft(mix), protocols.WINDOW)  # (B, 65535) round trip
    out = {"setup": vars(a) | {"mixtures": len(items)}, "seconds": round(seconds, 1)}
    out["reference"] = theirs(est[..., :n].clamp(-1, 1), rt[..., :n].clamp(-1, 1))
    out["clip"] = theirs(est[..., :n], rt[..., :n])
    out["length"] = theirs(est.clamp(-1, 1), rt.clamp(-1, 1), refs)
    out["mixture"] = theirs(est[..., :n].clamp(-1, 1), mix[..., :n])
    # ours: per-source silence and skipping, mean over valid sources (scoring the reference's clipped estimates)
    e, r = est[..., :n].clamp(-1, 1), refs[..., :n]
    res = metrics.bss_eval(r, e)
    sdri, ok = metrics.sdr_improvement(r, e, rt[..., :n].clamp(-1, 1))
    valid = res.valid & ok
    out["silence+average"] = {k: float(getattr(res, k)[valid].mean()) for k in ("sdr", "sir", "sar")} | {
        "sdri": float(sdri[valid].mean()), "sources": int(valid.sum()), "skipped_sources": int((~valid).sum())}
    ref = out["reference"]
    out["average"] = {"sdr": ref["plain"]["sdr"], "sir": ref["plain"]["sir"], "sar": ref["plain"]["sar"]}
    for k, v in out.items():
        if isinstance(v, dict) and "sdr" in v and k != "setup":
            d = {m: (round(v[m], 3) if isinstance(v[m], float) and math.isfinite(v[m]) else v[m]) for m in v if m != "plain"}
            print(f"{k:16s} {d}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
