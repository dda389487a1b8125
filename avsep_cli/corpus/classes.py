"""The instrument classes of the offline corpus: how each one sounds and which SoundFont samples it uses.

Each class names its General MIDI program(s) and bank, the pitch range its notes are transposed into,
and, per known SoundFont, the *sample set* it plays: FluidR3_GM and MuseScore_General share the
recordings of several instruments (trumpet, tuba, xylophone, banjo, bagpipe, violin; measured in
``shared/reference/corpus.md``), so two fonts can be one sample set. The test split holds out a sample
set, never just a file name. Classes the offline material cannot show or sound credibly are listed in
``LEFT_OUT`` with the reason, so the documentation table is generated from the same facts the
generator uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from avsep_cli.errors import AvsepError


@dataclass(frozen=True)
class InstrumentClass:
    name: str
    programs: tuple[int, ...]   # GM programs (0-based); one is drawn per clip
    bank: int                   # 0 for melodic programs, 128 for the GM percussion kit
    low: int                    # playable MIDI range the score is transposed into (inclusive)
    high: int
    sustained: bool             # bowed/blown: legato articulation makes sense
    in_music11: bool            # one of the MUSIC dataset's 11 classes


CLASSES: dict[str, InstrumentClass] = {c.name: c for c in (
    InstrumentClass("accordion", (21,), 0, 53, 89, True, True),
    InstrumentClass("acoustic_guitar", (24, 25), 0, 40, 76, False, True),
    InstrumentClass("cello", (42,), 0, 36, 72, True, True),
    InstrumentClass("clarinet", (71,), 0, 50, 84, True, True),
    InstrumentClass("flute", (73,), 0, 60, 93, True, True),
    InstrumentClass("saxophone", (65, 66), 0, 46, 78, True, True),
    InstrumentClass("trumpet", (56,), 0, 55, 82, True, True),
    InstrumentClass("tuba", (58,), 0, 31, 58, True, True),
    InstrumentClass("violin", (40,), 0, 55, 91, True, True),
    InstrumentClass("xylophone", (13,), 0, 65, 96, False, True),
    InstrumentClass("piano", (0,), 0, 36, 84, False, False),
    InstrumentClass("drum", (0,), 128, 35, 81, False, False),
    InstrumentClass("harp", (46,), 0, 36, 88, False, False),
    InstrumentClass("banjo", (105,), 0, 50, 79, False, False),
    InstrumentClass("trombone", (57,), 0, 40, 70, True, False),
)}

# Classes considered and not used, with the reason (the same as the table in docs/corpus.md); the
# unknown-class error quotes it.
LEFT_OUT: dict[str, str] = {
    "erhu": "MUSIC-11 class, but General MIDI has no erhu: the nearest program, fiddle (110), is the "
            "violin sample in two of the three fonts, and no picture package has an erhu.",
    "bagpipe": "GM program 109 exists, but only one usable picture and no drawing; not a MUSIC class.",
    "french_horn": "GM program 60 exists, but only two pictures and no drawing; not a MUSIC class.",
    "bassoon": "GM program 70 exists, but only one picture and no drawing; not a MUSIC class.",
    "maracas": "8 pictures, but GM has only a single kit note for it: too little timbre to learn from a score.",
}

# Known SoundFonts: file name -> (key, licence, where it comes from). Keys name sample sets below.
KNOWN_FONTS: dict[str, tuple[str, str, str]] = {
    "FluidR3_GM.sf2": ("fluidr3", "MIT", "Debian fluid-soundfont-gm"),
    "MuseScore_General_Lite.sf3": ("musescore", "MIT", "Debian musescore-general-soundfont-small"),
    "MuseScore_General.sf3": ("musescore", "MIT", "Debian musescore-general-soundfont-small/-hq"),
    "MuseScore_General-Lite.sf3": ("musescore", "MIT", "Debian musescore-general-soundfont-small"),
    "TimGM6mb.sf2": ("timgm6mb", "GPL-2.0", "bundled in pip pretty_midi"),
}

# Where the Debian asset packages are looked for: $AVSEP_SYSTEM_ROOT (default /) + /usr/share/...; CI points
# it at an empty folder to prove that the tests pass on a machine without the optional assets.
SYSTEM_ROOT = Path(os.environ.get("AVSEP_SYSTEM_ROOT") or "/")

# Where the fonts are looked for when --soundfont is not given (first found per key wins).
FONT_SEARCH: tuple[Path, ...] = (
    SYSTEM_ROOT / "usr/share/sounds/sf2/FluidR3_GM.sf2",
    SYSTEM_ROOT / "usr/share/sounds/sf3/MuseScore_General_Lite.sf3",
    SYSTEM_ROOT / "usr/share/sounds/sf3/MuseScore_General.sf3",
)

# FluidR3 and MuseScore play these classes with the same recordings (corpus.md): one sample set.
SHARED_FLUIDR3_MUSESCORE = frozenset({"trumpet", "tuba", "xylophone", "banjo", "violin"})

# When a class has two or more sample sets, the test split gets the first of these that the class has
# (and that is not its only set): MuseScore's own recordings where they differ from FluidR3's, else
# TimGM6mb's. The remaining sets are train/val.
TEST_SET_PREFERENCE = ("musescore", "timgm6mb", "fluidr3")


@dataclass(frozen=True)
class Font:
    key: str          # "fluidr3", "musescore", "timgm6mb", or the file stem of an unknown font
    path: Path
    licence: str
    origin: str


def sample_set(cls: str, font_key: str) -> str:
    """The sample set `cls` plays in the font `font_key` (equal strings = same recordings)."""
    if font_key == "musescore" and cls in SHARED_FLUIDR3_MUSESCORE:
        return "fluidr3"
    return font_key


def check_classes(names: list[str]) -> list[str]:
    """Validate class names (unknown -> one clear error); returns them sorted and de-duplicated."""
    bad = [n for n in names if n not in CLASSES]
    if bad:
        why = "; ".join(f"{n}: {LEFT_OUT[n]}" for n in bad if n in LEFT_OUT)
        raise AvsepError(f"unknown instrument class {', '.join(repr(b) for b in bad)} "
                         f"(known: {', '.join(sorted(CLASSES))}){'; ' + why if why else ''}")
    if not names:
        raise AvsepError("no instrument classes given")
    return sorted(set(names))


def is_soundfont(path: Path) -> bool:
    """True for a RIFF file of form type 'sfbk' (SF2, and SF3 which keeps the SF2 container)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return len(head) == 12 and head[:4] == b"RIFF" and head[8:12] == b"sfbk"


def timgm6mb_path() -> Path | None:
    try:
        import pretty_midi
    except Exception:
        return None
    p = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    return p if p.is_file() else None


def font_from_path(path: Path) -> Font:
    """Check a user-given SoundFont and name it; an unknown font is its own sample set."""
    path = Path(path)
    if not path.exists():
        raise AvsepError(f"--soundfont {path}: no such file")
    if not path.is_file() or not is_soundfont(path):
        raise AvsepError(f"--soundfont {path}: not a SoundFont (expected an SF2/SF3 RIFF 'sfbk' file)")
    if path.name in KNOWN_FONTS:
        key, lic, origin = KNOWN_FONTS[path.name]
        return Font(key, path.resolve(), lic, origin)
    return Font(path.stem, path.resolve(), "unknown", "user-supplied")


def find_fonts(paths: list[Path] | None = None) -> list[Font]:
    """The fonts to use: `paths` if given (each checked), else every known font on this machine."""
    if paths:
        fonts = [font_from_path(p) for p in paths]
    else:
        fonts = [font_from_path(p) for p in FONT_SEARCH if p.is_file()]
        tim = timgm6mb_path()
        if tim is not None:
            fonts.append(font_from_path(tim))
    seen: dict[str, Font] = {}
    for f in fonts:
        seen.setdefault(f.key, f)
    if not seen:
        raise AvsepError("no SoundFont found: pip install pretty_midi (bundles TimGM6mb.sf2), or "
                         "apt-get install -y fluid-soundfont-gm musescore-general-soundfont-small, "
                         "or pass --soundfont PATH")
    return sorted(seen.values(), key=lambda f: f.key)


def missing_fonts() -> list[str]:
    """One line per known font absent from this machine, with the command that installs it."""
    lines = []
    if not FONT_SEARCH[0].is_file():
        lines.append("SoundFont FluidR3_GM (MIT) is missing: apt-get install -y fluid-soundfont-gm")
    if not any(p.is_file() for p in FONT_SEARCH[1:]):
        lines.append("SoundFont MuseScore_General_Lite (MIT) is missing: "
                     "apt-get install -y musescore-general-soundfont-small")
    if timgm6mb_path() is None:
        lines.append("SoundFont TimGM6mb (GPL-2) is missing: pip install pretty_midi")
    return lines


def held_out_sets(cls: str, fonts: list[Font]) -> tuple[list[str], str | None]:
    """(sample sets of `cls` among `fonts`, the one held out for test or None when there is only one)."""
    sets = sorted({sample_set(cls, f.key) for f in fonts})
    if len(sets) < 2:
        return sets, None
    for pref in TEST_SET_PREFERENCE:
        if pref in sets:
            return sets, pref
    return sets, sets[-1]
