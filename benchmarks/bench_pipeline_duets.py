"""End-to-end separation quality: `Separator` (shipped detector, tracking, crops, a separator) on every
duet clip of a corpus split, scored against the clip's ground-truth stems.

Each ground-truth player is matched to the output identity whose tracked boxes overlap its true boxes
most; its stem is scored (BSS Eval SDR) against its own reference and against the other player's. A clip
passes when both stems are closer to their own reference and at least 3 dB (the demo test's criterion).
This is what a user with a video gets; `avsep eval` scores the separators alone, with the true boxes.

    python benchmarks/bench_pipeline_duets.py --root corpus [--method avpc] [--weights NAME|PATH] [--true-boxes]
        [--guide auto|crops|name] [--naming auto|visual|audio-visual] [--tagger NAME|PATH] [--masks joint|own] [--split test] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from avsep_cli.evaluate import match_identities, score_clip_stems
from avsep_cli.layout import open_corpus
from avsep_cli.separator import Separator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="corpus folder (avsep data synth)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--method", default="avpc")
    ap.add_argument("--weights", default=None, help="shipped name or checkpoint (default: the method's shipped default)")
    ap.add_argument("--detect-imgsz", type=int, default=None)
    ap.add_argument("--guide", default="auto", choices=("auto", "crops", "name"),
                    help="what guides each player: its crops, the class prototype of its track's name, or auto "
                         "(Separator's default: name where the weights' trunk has class prototypes, else crops)")
    ap.add_argument("--naming", default="auto", choices=("auto", "visual", "audio-visual"),
                    help="how players are named: the picture alone, or picture and sound (Separator's default: auto)")
    ap.add_argument("--masks", default="joint", choices=("joint", "own"),
                    help="joint: the players' soft masks shared out by the Wiener rule (avsep separate's default); own: each player's")
    ap.add_argument("--tagger", default=None, help="audio tagger weights for --naming (default: the shipped one)")
    ap.add_argument("--true-boxes", action="store_true", help="the clips' true boxes instead of the detector")
    ap.add_argument("--json", default=None, help="write every row here")
    args = ap.parse_args()

    sep = Separator(args.method, args.weights, detect_imgsz=args.detect_imgsz, guide=args.guide, naming=args.naming,
                    tagger=args.tagger, masks=args.masks)
    clips = open_corpus(args.root).clips(split=args.split, kind="duet")
    rows, t0 = [], time.perf_counter()
    for clip in clips:
        result = sep.separate_file(clip.video, boxes=clip.sidecar if args.true_boxes else None)
        owner = match_identities(result.identities, json.loads(clip.sidecar.read_text()))
        for r in score_clip_stems(clip, result.stems, owner):
            rows.append(r)
            print(f"{r['clip']} {r['class']:>12}  own {r['sdr_own']:6.2f} dB  other {r['sdr_other']:6.2f} dB"
                  + ("" if r["found"] else "  (no track)"), flush=True)
    own = np.array([r["sdr_own"] for r in rows])
    other = np.array([r["sdr_other"] for r in rows])
    ok = np.isfinite(own) & (own > other) & (own >= 3.0)
    passing = sorted({r["clip"] for r in rows} - {r["clip"] for r, good in zip(rows, ok) if not good})
    print(f"{args.method} ({sep.weights_name}, guided by {args.guide}): {len(clips)} duet clips ({args.split}), {len(rows)} players, "
          f"{np.isfinite(own).sum()} tracked; mean SDR own {np.nanmean(own):.2f} dB, other {np.nanmean(other):.2f} dB; "
          f"closer to own {(np.isfinite(own) & (own > other)).sum()}/{len(rows)}; clips passing the demo "
          f"criterion: {len(passing)}/{len(clips)} {passing}; {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"method": args.method, "weights": sep.weights_name, "split": args.split, "guide": args.guide,
                       "naming": args.naming, "masks": args.masks, "tagger": sep.tagger.name if sep.tagger else None, "rows": rows,
                       "passing_clips": passing}, f, indent=1)


if __name__ == "__main__":
    main()
