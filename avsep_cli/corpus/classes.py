"""The instrument classes of the offline corpus: how each one sounds and which SoundFont samples it uses.

Each class names its General MIDI program(s) and bank, the pitch range its notes are transposed into,
and, per known SoundFont, the *sample set* it plays: FluidR3_GM and MuseScore_General share the
recordings of most instruments, as do csound's sf_GMbank and TimGM6mb (measured by
``scripts/font_overlap.py``; see ``SHARED``), so two fonts can be one sample set. The test split holds out a sample
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
    "sf_GMbank.sf2": ("sfgmbank", "public-domain", "Debian csound-soundfont"),
    "Black_Pearl_4_LV2.sf2": ("avl-blackpearl", "CC-BY-SA-3.0", "Debian avldrums.lv2-soundfont"),
    "Red_Zeppelin_4_LV2.sf2": ("avl-redzeppelin", "CC-BY-SA-3.0", "Debian avldrums.lv2-soundfont"),
}

# Fonts that hold one drum kit only, as preset (bank 0, program 0) and the GM key map: they play the
# "drum" class and nothing else (`plays`).
KIT_FONTS: dict[str, tuple[int, int]] = {"avl-blackpearl": (0, 0), "avl-redzeppelin": (0, 0)}

# Where the Debian asset packages are looked for: $AVSEP_SYSTEM_ROOT (default /) + /usr/share/...; CI points
# it at an empty folder to prove that the tests pass on a machine without the optional assets.
SYSTEM_ROOT = Path(os.environ.get("AVSEP_SYSTEM_ROOT") or "/")

# Where the fonts are looked for when --soundfont is not given (first found per key wins).
FONT_SEARCH: tuple[Path, ...] = (
    SYSTEM_ROOT / "usr/share/sounds/sf2/FluidR3_GM.sf2",
    SYSTEM_ROOT / "usr/share/sounds/sf3/MuseScore_General_Lite.sf3",
    SYSTEM_ROOT / "usr/share/sounds/sf3/MuseScore_General.sf3",
    SYSTEM_ROOT / "usr/share/sounds/sf2/sf_GMbank.sf2",
)
# Drum-kit fonts, found only with find_fonts(include_kits=True).
KIT_SEARCH: tuple[Path, ...] = (
    SYSTEM_ROOT / "usr/share/sounds/sf2/Black_Pearl_4_LV2.sf2",
    SYSTEM_ROOT / "usr/share/sounds/sf2/Red_Zeppelin_4_LV2.sf2",
)

# Fonts that play a class with the recordings of another font: {class: {font key: the sample set it
# plays}}. Measured by `scripts/font_overlap.py` (peak waveform cross-correlation of the same notes;
# the table is in docs/corpus.md). A pair counts as one set when a third or more of its test notes
# correlate at >= 0.8 (waveform or GCC-PHAT), or, as for clarinet, every note sits far above the level of
# two different recordings. FluidR3 and MuseScore share all but cello and piano (violin: the notes up to
# ~A5); csound's sf_GMbank and TimGM6mb share all but flute, saxophone and trumpet.
_FM = ("accordion", "acoustic_guitar", "banjo", "clarinet", "drum", "flute", "harp", "saxophone", "trombone",
       "trumpet", "tuba", "violin", "xylophone")
_ST = ("accordion", "acoustic_guitar", "banjo", "cello", "clarinet", "drum", "harp", "piano", "trombone", "tuba",
       "violin", "xylophone")
SHARED: dict[str, dict[str, str]] = {c: {} for c in CLASSES}
for _c in _FM:
    SHARED[_c]["musescore"] = "fluidr3"
for _c in _ST:
    SHARED[_c]["sfgmbank"] = "timgm6mb"
# The two AVL kits (one maker) share 3 of 10 test hits (cymbals, measured): one set, to be safe.
SHARED["drum"]["avl-redzeppelin"] = "avl-blackpearl"

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


def plays(font: Font, cls: str) -> bool:
    """Whether `font` has a preset for `cls` (drum-kit fonts play only the drum class)."""
    return font.key not in KIT_FONTS or CLASSES[cls].bank == 128


def preset(font: Font, cls: str, program: int, bank: int) -> tuple[int, int]:
    """(bank, program) to select in `font` for a class's GM (bank, program)."""
    return KIT_FONTS.get(font.key, (bank, program))


def sample_set(cls: str, font_key: str) -> str:
    """The sample set `cls` plays in the font `font_key` (equal strings = same recordings)."""
    return SHARED.get(cls, {}).get(font_key, font_key)


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


def find_fonts(paths: list[Path] | None = None, include_kits: bool = False) -> list[Font]:
    """The fonts to use: `paths` if given (each checked), else every known font on this machine (the
    drum-kit-only fonts too with `include_kits`; they play only the drum class, see `plays`). The search
    looks only at the known fonts' own paths (`FONT_SEARCH`, `KIT_SEARCH`, TimGM6mb)."""
    if paths:
        fonts = [font_from_path(p) for p in paths]
    else:
        search = FONT_SEARCH + (KIT_SEARCH if include_kits else ())
        fonts = [font_from_path(p) for p in search if p.is_file()]
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
