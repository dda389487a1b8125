"""Which SoundFonts play the same recordings? Renders the same notes (several pitches across each class's
range, two velocities, dry) with every pair of installed fonts and prints, per class and pair, the median
over notes of the peak normalised cross-correlation of the waveforms (after aligning, +-50 ms) and of the
log-spectrograms, and of the GCC-PHAT (phase transform) correlation; "shared" is the fraction of notes whose waveform or GCC-PHAT peak reaches 0.8, which decides (>= 0.3). Waveform correlation near 1 means one recording (lossy SF3 coding, other envelopes and
filters keep it high); different recordings of one instrument stay below ~0.3 (their phases differ),
while their log-spectrograms still correlate (same pitch, same kind of instrument).

    python scripts/font_overlap.py [--sr 22050] [--classes a,b]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avsep_cli.corpus import classes as C  # noqa: E402
from avsep_cli.corpus import sources as S  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sr", type=int, default=22050)
    ap.add_argument("--classes", default=",".join(sorted(C.CLASSES)))
    a = ap.parse_args(argv)
    fonts = C.find_fonts(include_kits=True)
    print("fonts:", ", ".join(f"{f.key} ({f.path.name}, {f.licence})" for f in fonts))
    print(f"{'class':16s} {'pair':28s} {'wave':>6s} {'phat':>6s} {'spec':>6s} {'shared':>6s}  same recording?")
    for cls in a.classes.split(","):
        for (ka, kb), m in S.font_overlap(cls, fonts, a.sr).items():
            print(f"{cls:16s} {ka + '/' + kb:28s} {m['wave']:6.3f} {m['phat']:6.3f} {m['spec']:6.3f} {m['shared']:6.2f}  {'SAME' if m['same'] else '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
