"""How well the pipeline names the players of a corpus split's duet clips: by the picture alone, and by
picture and sound (`avsep_cli.naming`) at several audio weights. This is how `naming.AUDIO_WEIGHT` was
chosen (on val); the separators are not run, so it is quick.

Each clip is scanned as `Separator` scans it (shipped detector, crop classifier, tracking); each true
player is matched to the track whose boxes overlap its true boxes most (`evaluate.match_identities`); the
clip's audio is tagged once. Per weight: players whose track has their true class, and clips with both
players named right (weight 0: tracking's own vote, what naming "visual" gives).

    python benchmarks/bench_naming.py --root corpus [--split val] [--tagger NAME|PATH] [--weights 0,0.5,1,2]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from avsep_cli import dsp, media, naming
from avsep_cli.evaluate import match_identities
from avsep_cli.layout import open_corpus
from avsep_cli.separator import CropStore, Separator, _Timer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="corpus folder (avsep data synth)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--tagger", default=None, help="audio tagger weights (default: the shipped one)")
    ap.add_argument("--weights", default="0,0.25,0.5,1,2,4", help="audio weights to score, comma-separated")
    ap.add_argument("--json", default=None, help="write each clip's evidence and the table here")
    args = ap.parse_args()
    weights = [float(w) for w in args.weights.split(",")]

    sep = Separator("avpc", naming="visual")  # the scan only: the separator is never run
    tagger = naming.AudioTagger.load(args.tagger) if args.tagger else naming.AudioTagger.shipped()
    if tagger is None:
        raise SystemExit("no audio tagger shipped: pass --tagger")
    classes = list(sep.detector.classes)
    t0, clips = time.perf_counter(), []
    for clip in open_corpus(args.root).clips(split=args.split, kind="duet"):
        info = media.probe(clip.video)
        store = CropStore()
        try:
            tracks, _ = sep._scan(clip.video, info.duration, sep.detector, store, _Timer(), lambda s, f: None)
        finally:
            store.close()
        tracks = [t for t in tracks if t.class_probs is not None]
        ids = sep._identities(tracks, classes)
        owner = match_identities(ids, json.loads(clip.sidecar.read_text()))  # true class -> identity name
        span = naming.tracks_span(tracks, sep.detect_fps) if tracks else (0.0, info.duration)
        audio = naming.heard(tagger, media.iter_audio(clip.video, dsp.SAMPLE_RATE, duration=info.duration), span, classes)
        # true class -> the index of the track matched to that player (None: not tracked)
        truth = {cls: next((k for k, i in enumerate(ids) if i.name == owner.get(cls)), None) for cls in clip.classes}
        clips.append({"clip": clip.id, "truth": truth, "picture": naming.picture_probs([t.class_probs for t in tracks],
                                                                                      len(classes)).tolist(),
                      "names": [t.cls for t in tracks], "audio": audio.tolist()})
    table = []
    for w in weights:
        right = both = players = 0
        for c in clips:
            names = naming.assign(np.array(c["picture"]), np.array(c["audio"]), weight=w, names=c["names"]) \
                if c["picture"] else []
            ok = [k is not None and classes[names[k]] == cls for cls, k in c["truth"].items()]
            right, players, both = right + sum(ok), players + len(ok), both + all(ok)
        table.append({"weight": w, "players_right": right, "players": players, "clips_both_right": both,
                      "clips": len(clips)})
        print(f"weight {w:5.2f}: players named right {right}/{players}, clips with both right {both}/{len(clips)}")
    print(f"{args.split}: {len(clips)} duet clips, tagger {tagger.name}; {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"split": args.split, "tagger": tagger.name, "classes": classes, "table": table, "clips": clips}, f,
                      indent=1)


if __name__ == "__main__":
    main()
