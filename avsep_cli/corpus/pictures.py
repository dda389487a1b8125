"""Pictures of instruments for the offline corpus: find them on this machine, rasterise, cache, load.

The synthetic videos show each playing instrument as a picture that moves like a player. The pictures
come from freely licensed packages installed on the machine (never from the repository): Debian's
openclipart SVGs and Noto Color Emoji font, and the npm iconify emoji/icon sets installed under an
assets folder (``scripts/install-assets.sh``). Which image stands for which class is an explicit
allow list written after looking at every candidate (most "guitar" emoji are electric guitars, for
example, so they are not acoustic guitars). SVGs are rasterised once into a cache folder as RGBA PNGs;
black silhouette sets are tinted with a colour drawn from the image key so that colour does not give
the class away. Every class also gets procedural drawings (``drawings.py``), so the corpus can be built
with no asset package installed at all.

Splits hold out whole picture *families* (family(): an icon set with its renders and versions, one
openclipart artist, one drawing style); artwork_group() joins renders of one design within a family.
Icon sets reserved for an independent evaluation, and versions of them, are never used (is_reserved()).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from avsep_cli.corpus import drawings
from avsep_cli.corpus.classes import SYSTEM_ROOT

CLASSES = (
    "accordion", "acoustic_guitar", "cello", "clarinet", "flute", "saxophone", "trumpet", "tuba",
    "violin", "xylophone", "piano", "drum", "harp", "banjo", "trombone",
)

# Longest side of the cached rasters; load_rgba resamples them to the requested size.
RASTER = 256
DEFAULT_ASSETS = Path("/opt/avsep-assets")
OPENCLIPART_DIR = SYSTEM_ROOT / "usr/share/openclipart/svg/recreation/music"
NOTO_FONT = SYSTEM_ROOT / "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
DRAWING_SOURCE = "avsep procedural drawing"
DRAWING_LICENCE = "MIT"  # the project's own licence

# Icon sets kept for an independent evaluation: never used here, whatever is installed. Sets that are
# versions or variants of the same artwork (other Font Awesome versions and Line Awesome, Icons8's
# line redraw of Font Awesome's icon list; the other IconPark and Material Symbols variants and Google's
# Material Icons "ic", whose piano is the Material Symbols one; the mono versions of the reserved
# Streamline colour sets; Lucide Lab; Fluent MDL2; every Phosphor weight) would leak them, so they are
# refused as well. is_reserved() is the guard; discover() applies it.
RESERVED_ICON_SETS = frozenset({
    "fa6-solid", "lucide", "mingcute", "ph", "fluent", "hugeicons", "tabler", "icon-park", "material-symbols",
    "streamline-ultimate-color", "streamline-freehand-color", "arcticons",
})
RESERVED_VARIANTS = frozenset({
    "fa", "fa-solid", "fa-regular", "fa-brands", "fa6-regular", "fa6-brands", "fa7-solid", "fa7-regular",
    "fa7-brands", "la", "icon-park-outline", "icon-park-solid", "icon-park-twotone", "material-symbols-light",
    "ic", "streamline-ultimate", "streamline-freehand", "lucide-lab", "fluent-mdl2",
})
RESERVED_PREFIXES = ("ph-",)  # Phosphor weights published as separate sets
# Licences never used: non-commercial Creative Commons and the GPL family (e.g. cbi, ps, wordpress).
_REFUSED_LICENCE = re.compile(r"(^|-)NC(-|$)|^(A|L)?GPL", re.IGNORECASE)


def is_reserved(set_name: str) -> bool:
    """True for an icon set kept for the independent evaluation, or a version/variant of one."""
    return (set_name in RESERVED_ICON_SETS or set_name in RESERVED_VARIANTS
            or set_name.startswith(RESERVED_PREFIXES))


def licence_refused(licence: str) -> bool:
    """True for licences this corpus never uses (CC-BY-NC*, GPL/LGPL/AGPL)."""
    return bool(_REFUSED_LICENCE.search(licence))


# npm package -> (licence, upstream credit line for the attribution file). Licence and author from each
# set's icons.json (info.license.spdx, info.author).
ICONIFY_SETS = {
    "fluent-emoji": ("MIT", "Fluent Emoji, Microsoft Corporation"),
    "fluent-emoji-flat": ("MIT", "Fluent Emoji Flat, Microsoft Corporation"),
    "fluent-emoji-high-contrast": ("MIT", "Fluent Emoji High Contrast, Microsoft Corporation"),
    "noto": ("Apache-2.0", "Noto Emoji, Google Inc."),
    "noto-v1": ("Apache-2.0", "Noto Emoji v1, Google Inc."),
    "fxemoji": ("Apache-2.0", "Firefox OS Emoji, Mozilla"),
    "mdi": ("Apache-2.0", "Material Design Icons, Pictogrammers"),
    "twemoji": ("CC-BY-4.0", "Twemoji, Twitter Inc. and other contributors"),
    "openmoji": ("CC-BY-SA-4.0", "OpenMoji, the open-source emoji project"),
    "game-icons": ("CC-BY-3.0", "game-icons.net, Lorc, Delapouite and contributors"),
    "emojione": ("CC-BY-4.0", "Emoji One (Colored) 2, Emoji One"),
    "emojione-monotone": ("CC-BY-4.0", "Emoji One (Monotone) 2, Emoji One"),
    "emojione-v1": ("CC-BY-SA-4.0", "Emoji One v1, Emoji One"),
    "streamline-emojis": ("CC-BY-4.0", "Streamline Emojis, Streamline (streamlinehq.com)"),
    "streamline-cyber": ("CC-BY-4.0", "Cyber free icons, Streamline (streamlinehq.com)"),
    "streamline-cyber-color": ("CC-BY-4.0", "Cyber color icons, Streamline (streamlinehq.com)"),
    "streamline-kameleon-color": ("CC-BY-4.0", "Kameleon color icons, Streamline (streamlinehq.com)"),
    "streamline-stickies-color": ("CC-BY-4.0", "Stickies color icons, Streamline (streamlinehq.com)"),
    "codicon": ("CC-BY-4.0", "Codicons, Microsoft Corporation"),
    "si-glyph": ("CC-BY-SA-4.0", "SmartIcons Glyph, SmartIcons"),
    "dinkie-icons": ("MIT", "Dinkie Icons, atelierAnchor"),
    "qlementine-icons": ("MIT", "Qlementine Icons, Olivier Cléro"),
    "nimbus": ("MIT", "Nimbus, Linkedstore S.A."),
    "f7": ("MIT", "Framework7 Icons, Vladimir Kharlampidi"),
    "tdesign": ("MIT", "TDesign Icons, TDesign (Tencent)"),
    "boxicons": ("MIT", "Boxicons, Boxicons"),
    "bxs": ("MIT", "BoxIcons v2 Solid, Boxicons"),
    "gg": ("MIT", "css.gg, Astrit"),
    "pixelarticons": ("MIT", "Pixelarticons, Gerrit Halfmann"),
    "wpf": ("MIT", "Icons8 Windows 8 Icons, Icons8"),
    "ri": ("Apache-2.0", "Remix Icon, Remix Design"),
    "pinhead": ("CC0-1.0", "Pinhead Map Icons, Quincy Morgan"),
    "picon": ("OFL-1.1", "Pico-icon, Picon Contributors"),
    "whh": ("OFL-1.1", "WebHostingHub Glyphs, WebHostingHub"),
}
# Sets of one-colour silhouettes (fill="currentColor"): tinted per image.
TINTED = {"game-icons", "mdi", "fluent-emoji-high-contrast", "emojione-monotone", "streamline-cyber", "codicon",
          "si-glyph", "dinkie-icons", "qlementine-icons", "nimbus", "f7", "tdesign", "boxicons", "bxs", "gg",
          "pixelarticons", "wpf", "ri", "pinhead", "picon", "whh"}

# Allow list, written after looking at every candidate rasterised on a contact sheet. Names not listed
# here are not used. Refused after looking: the "guitar" emoji of every emoji set and openclipart
# electric_guitar/guitar_jarno_vasamaa2 (electric guitars), game-icons "guitar" (electric-like
# headstock), openmoji and game-icons "flute" (recorders), openclipart oboe (looks like a clarinet but
# is not one), tpt_cubf (cubist, unreadable), the two trumpet mutes, war_drum (ornaments, not drums),
# cello_mo_02 (same drawing as cello_mo_01), bass guitar, mountain dulcimer, French horn, maracas and
# the jazz-band scenes (several instruments in one picture). The emoji flutes kept are wooden
# side-blown flutes (fife, bansuri), not concert flutes.
# Refused in the wider sets (issue 15): electric guitars (emojione/emojione-monotone/fluent-emoji-high-
# contrast/streamline-emojis/dinkie-icons/picon "guitar", picon electricguitar), f7 "guitars" (three
# guitars), headstocks or scrolls alone (game-icons guitar-head, every qlementine guitar-*/ukulele/banjo/
# violin/cello: they show only the head), picon "sax" (unreadable zig-zag), UI accordion widgets
# (griddy-icons component-accordion, vaadin accordion-menu, iconmind accordion-*), storage/oil drums
# (temaki, pinhead storage-drum, every oil-drum), game-icons tambourine, qlementine drum-brushes,
# fontaudio drumpad, Streamline drum-stick (a chicken leg), mdi glass-flute, game-icons pan-flute,
# mdi bugle, whh trumpet and game-icons bugle-call (valveless bugles), game-icons trumpet-flag (the
# banner hides the trumpet), game-icons viola (a flower), french-horn, qlementine synthesizer (knobs
# dominate: a synth, not a piano), file-icons fiddle and every jsfiddle (logos). Viola is accepted as
# violin where one is drawn (none is, so far). Not installable as single npm packages (only in the
# @iconify/json bundle): iconmind (guitar, drum, piano, trumpet, violin accepted on sight) and at-icons
# (piano). Licence-refused: cbi (CC-BY-NC-SA), ps (CC-BY-NC), wordpress (GPL).
EMOJI_NAMES = {
    "accordion": "accordion", "banjo": "banjo", "drum": "drum", "long-drum": "drum", "flute": "flute",
    "musical-keyboard": "piano", "saxophone": "saxophone", "trumpet": "trumpet", "violin": "violin",
    "harp": "harp", "trombone": "trombone",
}
_EMOJIONE = {"drum": "drum", "musical-keyboard": "piano", "saxophone": "saxophone", "trumpet": "trumpet",
             "violin": "violin"}
_CYBER = {"guitar": "acoustic_guitar", "drum-2": "drum", "piano-1": "piano", "piano-3": "piano"}
ICONIFY_ALLOW: dict[str, dict[str, str]] = {
    "fluent-emoji": dict(EMOJI_NAMES),
    "fluent-emoji-flat": dict(EMOJI_NAMES),
    "fluent-emoji-high-contrast": dict(EMOJI_NAMES),
    "noto": dict(EMOJI_NAMES),
    "noto-v1": dict(EMOJI_NAMES),
    "twemoji": dict(EMOJI_NAMES),
    "openmoji": {k: v for k, v in EMOJI_NAMES.items() if k != "flute"},
    "fxemoji": {"musicalkeyboard": "piano", "saxophone": "saxophone", "trumpet": "trumpet", "violin": "violin"},
    "mdi": {"guitar-acoustic": "acoustic_guitar", "piano": "piano", "saxophone": "saxophone",
            "trumpet": "trumpet", "violin": "violin"},
    "game-icons": {
        "accordion": "accordion", "banjo": "banjo", "clarinet": "clarinet", "drum": "drum",
        "drum-kit": "drum", "djembe": "drum", "grand-piano": "piano", "piano-keys": "piano",
        "musical-keyboard": "piano", "harp": "harp", "saxophone": "saxophone", "trombone": "trombone",
        "trumpet": "trumpet", "tuba": "tuba", "violin": "violin", "xylophone": "xylophone",
    },
    "emojione": dict(_EMOJIONE),
    "emojione-monotone": dict(_EMOJIONE),
    # v1 art differs from v2: its guitar is an acoustic one (sound hole); it has no drum.
    "emojione-v1": {"guitar": "acoustic_guitar", "musical-keyboard": "piano", "saxophone": "saxophone",
                    "trumpet": "trumpet", "violin": "violin"},
    "streamline-emojis": {"musical-keyboard": "piano", "saxophone": "saxophone", "trumpet": "trumpet",
                          "violin": "violin"},
    "streamline-cyber": dict(_CYBER),
    "streamline-cyber-color": dict(_CYBER),
    "streamline-kameleon-color": {"drum": "drum", "drum-duo": "drum", "harp": "harp", "harp-duo": "harp"},
    "streamline-stickies-color": {"instruments-piano": "piano", "instruments-piano-duo": "piano"},
    "codicon": {"piano": "piano"},
    "si-glyph": {"guitar": "acoustic_guitar", "drum": "drum", "piano": "piano", "trumpet": "trumpet"},
    "dinkie-icons": {"accordion": "accordion", "banjo": "banjo", "musical-keyboard": "piano",
                     "musical-keyboard-filled": "piano", "saxophone": "saxophone", "saxophone-filled": "saxophone",
                     "trumpet": "trumpet", "violin": "violin"},
    "qlementine-icons": {
        "accordion-16": "accordion", "bongos-16": "drum", "bongos-24": "drum", "drumkit-16": "drum",
        "drumkit-24": "drum", "snare-16": "drum", "snare-24": "drum", "harp-16": "harp", "piano-16": "piano",
        "piano-24": "piano", "saxophone-16": "saxophone", "saxophone-24": "saxophone",
        "trombone-16": "trombone", "trumpet-16": "trumpet", "trumpet-24": "trumpet", "tuba-16": "tuba",
    },
    "nimbus": {"accordion": "accordion", "guitar": "acoustic_guitar", "drums": "drum"},
    "f7": {"piano": "piano"},
    "tdesign": {"guitar": "acoustic_guitar", "guitar-filled": "acoustic_guitar", "piano": "piano",
                "piano-filled": "piano"},
    "boxicons": {"piano": "piano", "piano-filled": "piano", "piano-alt": "piano", "piano-alt-filled": "piano",
                 "piano-grand": "piano", "piano-grand-filled": "piano"},
    "bxs": {"piano": "piano"},
    "gg": {"piano": "piano"},
    "pixelarticons": {"drum": "drum", "keyboard-music": "piano", "keyboard-music-sharp": "piano"},
    "wpf": {"guitar": "acoustic_guitar", "cornet": "trumpet", "herald-trumpet": "trumpet"},
    "ri": {"piano-fill": "piano", "piano-line": "piano", "piano-grand-fill": "piano", "piano-grand-line": "piano"},
    "pinhead": {"piano-keys": "piano", "trumpet": "trumpet"},
    "picon": {"drums": "drum", "piano": "piano"},
    "whh": {"guitar": "acoustic_guitar", "piano": "piano", "violin": "violin"},
}
OPENCLIPART_ALLOW = {
    "cello_ganson.svg": "cello", "cello_mo_01.svg": "cello",
    "africandrum_benji_park1.svg": "drum", "africandrum_benji_park2.svg": "drum",
    "africandrum_benji_park_.svg": "drum", "derbouk_jurgen_01.svg": "drum", "djambf_ganson.svg": "drum",
    "drums_jarno_vasamaa_.svg": "drum",
    "flute_ganson.svg": "flute",
    "guitar_ganson.svg": "acoustic_guitar", "guitar_jarno_vasamaa1.svg": "acoustic_guitar",
    "guitar_profile_philippe__01.svg": "acoustic_guitar",
    "harp1_ganson.svg": "harp", "harp2_ganson.svg": "harp", "harp3_ganson.svg": "harp", "harp_mo_01.svg": "harp",
    "piano_geraint_luff_01.svg": "piano", "piano_keys_jonathan_diet_01.svg": "piano",
    "saxophone_jarno_vasamaa_.svg": "saxophone",
    "tenor_trombone_ganson.svg": "trombone",
    "trumpet_b_flat__ganson.svg": "trumpet", "trumpet_b_flat_colour_ganso.svg": "trumpet",
    "trumpet_herald__ganson.svg": "trumpet", "trumpet_pocket__ganson.svg": "trumpet",
    "trumpet_pocket_colour_ganso.svg": "trumpet",
    "violin_colour_ganson.svg": "violin", "violin_ganson.svg": "violin", "violin_mo_01.svg": "violin",
    "xylophone_ganson.svg": "xylophone",
}
# Noto Color Emoji font code points; used only for images the @iconify-json/noto set does not already
# give (same artwork: a second copy would leak between train and test splits made by image).
NOTO_FONT_ALLOW = {
    "accordion": (0x1FA97, "accordion"), "banjo": (0x1FA95, "banjo"), "drum": (0x1F941, "drum"),
    "long-drum": (0x1FA98, "drum"), "flute": (0x1FA88, "flute"), "musical-keyboard": (0x1F3B9, "piano"),
    "saxophone": (0x1F3B7, "saxophone"), "trumpet": (0x1F3BA, "trumpet"), "violin": (0x1F3BB, "violin"),
}

APT_PACKAGES = {
    "openclipart-svg": OPENCLIPART_DIR,
    "fonts-noto-color-emoji": NOTO_FONT,
}
INSTALL_SCRIPT = "scripts/install-assets.sh"


@dataclass(frozen=True)
class Picture:
    cls: str           # our class name
    key: str           # stable unique id, e.g. "fluent-emoji-flat:violin" or "drawing:cello:3"
    source: str        # package or source name
    licence: str       # SPDX-like id: "CC0-1.0", "MIT", "Apache-2.0", "OFL-1.1", "CC-BY-4.0", ...
    path: Path | None  # cached RGBA PNG; None for procedural drawings (drawn on demand)


def default_assets_dir() -> Path:
    """The npm assets prefix: $AVSEP_ASSETS, else /opt/avsep-assets."""
    return Path(os.environ.get("AVSEP_ASSETS") or DEFAULT_ASSETS)


def _iconify_json(assets_dir: Path | None, name: str) -> Path | None:
    if assets_dir is None:
        return None
    for p in (assets_dir / "node_modules" / "@iconify-json" / name / "icons.json",
              assets_dir / "@iconify-json" / name / "icons.json"):
        if p.is_file():
            return p
    return None


def _tint(key: str) -> str:
    # A colour drawn from the key, not the class: mid to dark, saturated enough to read on most
    # backgrounds. Shape: "#rrggbb".
    h = hashlib.sha1(key.encode()).digest()
    hue, sat, val = h[0] / 255.0, 0.45 + 0.5 * h[1] / 255.0, 0.3 + 0.45 * h[2] / 255.0
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    r, g, b = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return "#%02x%02x%02x" % (int(r * 255), int(g * 255), int(b * 255))


def _iconify_svg(data: dict, name: str, tint: str | None) -> bytes | None:
    icon = data["icons"].get(name)
    if icon is None:
        return None
    left, top = icon.get("left", data.get("left", 0)), icon.get("top", data.get("top", 0))
    w, h = icon.get("width", data.get("width", 16)), icon.get("height", data.get("height", 16))
    body = icon["body"]
    if tint:
        body = body.replace("currentColor", tint)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
           f'viewBox="{left} {top} {w} {h}" width="{w}" height="{h}">{body}</svg>')
    return svg.encode()


def _rasterise_svg(svg: bytes, out: Path) -> bool:
    """SVG bytes -> RGBA PNG whose longest side is RASTER. rsvg-convert if present, else cairosvg."""
    tmp = out.with_name(f"{out.name}.{os.getpid()}.part")  # per process: workers may share a cache
    exe = shutil.which("rsvg-convert")
    try:
        if exe:
            subprocess.run([exe, "-w", str(RASTER), "-h", str(RASTER), "--keep-aspect-ratio", "-f", "png",
                            "-o", str(tmp)], input=svg, check=True, capture_output=True, timeout=60)
        else:
            import cairosvg  # optional: the "data" extra
            cairosvg.svg2png(bytestring=svg, write_to=str(tmp), output_width=RASTER)
    except Exception:
        tmp.unlink(missing_ok=True)
        return False
    os.replace(tmp, out)
    return True


def _can_rasterise() -> bool:
    if shutil.which("rsvg-convert"):
        return True
    try:
        import cairosvg  # noqa: F401
        return True
    except Exception:
        return False


def _render_emoji_font(codepoint: int, out: Path) -> bool:
    from PIL import Image, ImageDraw, ImageFont
    try:
        # Noto Color Emoji is a bitmap font: FreeType loads it only at its strike size, 109.
        font = ImageFont.truetype(str(NOTO_FONT), 109)
        img = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
        ImageDraw.Draw(img).text((8, 8), chr(codepoint), font=font, embedded_color=True)
    except Exception:
        return False
    if img.getbbox() is None:
        return False
    tmp = out.with_name(f"{out.name}.{os.getpid()}.part")
    img.save(tmp, format="PNG")
    os.replace(tmp, out)
    return True


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)


def _cached(cache_dir: Path, key: str, content: bytes) -> Path:
    # The content hash in the name means a changed source file (or tint) is rasterised again.
    digest = hashlib.sha1(content + str(RASTER).encode()).hexdigest()[:12]
    return cache_dir / f"{_safe(key)}-{digest}.png"


def drawing_styles() -> tuple[str, ...]:
    """The procedural drawing styles (``drawings.STYLES``; just "flat" for a drawings module without styles)."""
    return tuple(getattr(drawings, "STYLES", ("flat",)))


def drawing_pictures() -> dict[str, list[Picture]]:
    """The procedural drawings, always available: one per (class, style, variant), key
    ``drawing:<class>:<style>:<variant>``."""
    return {c: [Picture(c, f"drawing:{c}:{st}:{v}", DRAWING_SOURCE, DRAWING_LICENCE, None)
                for st in drawing_styles() for v in range(drawings.N_VARIANTS)] for c in CLASSES}


def _drawing_key(key: str) -> tuple[str, str, int]:
    """"drawing:cls:style:v" (or the older "drawing:cls:v", style flat) -> (cls, style, variant)."""
    parts = key.split(":")
    if len(parts) == 4:
        return parts[1], parts[2], int(parts[3])
    if len(parts) == 3:
        return parts[1], "flat", int(parts[2])
    raise ValueError(f"not a drawing key: {key!r}")


def discover(assets_dir: Path | None, cache_dir: Path, licences: set[str] | None = None,
             *, system: bool = True) -> dict[str, list[Picture]]:
    """All usable pictures per class, sorted by key.

    assets_dir: npm prefix holding node_modules/@iconify-json/* (None: none). system: also use the
    Debian paths (openclipart, Noto Color Emoji font). Images are rasterised into cache_dir once.
    licences: keep only images under these licences; procedural drawings are always kept (they are
    the project's own). Sources that are absent or fail to render are skipped silently; see
    missing_assets() for what could be added.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    found: list[Picture] = []

    def want(lic: str) -> bool:
        return licences is None or lic in licences

    raster_ok = _can_rasterise()
    noto_names: set[str] = set()
    for set_name, allow in ICONIFY_ALLOW.items():
        lic, _ = ICONIFY_SETS[set_name]
        if is_reserved(set_name) or licence_refused(lic):  # never, even if an allow list names one
            continue
        js = _iconify_json(assets_dir, set_name)
        if js is None:
            continue
        data = json.loads(js.read_text())
        if not (want(lic) and raster_ok):
            continue
        if set_name == "noto":
            noto_names = {n for n in allow if n in data["icons"]}
        for name, cls in sorted(allow.items()):
            key = f"{set_name}:{name}"
            svg = _iconify_svg(data, name, _tint(key) if set_name in TINTED else None)
            if svg is None:
                continue
            out = _cached(cache_dir, key, svg)
            if out.is_file() or _rasterise_svg(svg, out):
                found.append(Picture(cls, key, f"@iconify-json/{set_name}", lic, out))

    if system and OPENCLIPART_DIR.is_dir() and want("CC0-1.0") and raster_ok:
        for fname, cls in sorted(OPENCLIPART_ALLOW.items()):
            src = OPENCLIPART_DIR / fname
            if not src.is_file():
                continue
            key = f"openclipart:{src.stem}"
            svg = src.read_bytes()
            out = _cached(cache_dir, key, svg)
            if out.is_file() or _rasterise_svg(svg, out):
                found.append(Picture(cls, key, "openclipart-svg", "CC0-1.0", out))

    if system and NOTO_FONT.is_file() and want("OFL-1.1"):
        for name, (cp, cls) in sorted(NOTO_FONT_ALLOW.items()):
            if name in noto_names:
                continue
            key = f"noto-color-emoji-font:{name}"
            out = _cached(cache_dir, key, f"{cp:x}:{NOTO_FONT.stat().st_size}".encode())
            if out.is_file() or _render_emoji_font(cp, out):
                found.append(Picture(cls, key, "fonts-noto-color-emoji", "OFL-1.1", out))

    result = drawing_pictures()
    for pic in found:
        result[pic.cls].append(pic)
    return {c: sorted(pics, key=lambda p: p.key) for c, pics in result.items()}


def missing_assets(assets_dir: Path | None) -> list[str]:
    """One line per absent picture source, with the command that installs it."""
    lines = []
    for pkg, path in APT_PACKAGES.items():
        if not path.exists():
            lines.append(f"Debian package {pkg} is missing ({path}): apt-get install -y {pkg}  "
                         f"(or run {INSTALL_SCRIPT})")
    if not _can_rasterise():
        lines.append("no SVG rasteriser (rsvg-convert or cairosvg): apt-get install -y librsvg2-bin  "
                     f"(or pip install cairosvg; or run {INSTALL_SCRIPT})")
    prefix = assets_dir if assets_dir is not None else default_assets_dir()
    for set_name in ICONIFY_SETS:
        if _iconify_json(prefix, set_name) is None:
            lines.append(f"npm icon set @iconify-json/{set_name} is missing in {prefix}: "
                         f"npm install --prefix {prefix} @iconify-json/{set_name}  (or run {INSTALL_SCRIPT})")
    return lines


# Same artwork under two keys (a colour and an outline version, a 3D and a flat render of one design):
# key -> the key of its group. Split train/test by family(), or at least artwork_group(), not by key.
_SAME_ARTWORK = {
    "openclipart:trumpet_b_flat_colour_ganso": "openclipart:trumpet_b_flat__ganson",
    "openclipart:trumpet_pocket_colour_ganso": "openclipart:trumpet_pocket__ganson",
    "openclipart:violin_colour_ganson": "openclipart:violin_ganson",
    # Noto's saxophone is the v1 drawing kept (looked at side by side); its other instruments were redrawn.
    "noto-v1:saxophone": "noto:saxophone",
    # Boxicons v2 solid piano and the v3 filled piano: one design, two versions.
    "bxs:piano": "boxicons:piano",
}

# Icon set -> its artwork family: sets that are renders or versions of one design are one family
# (decided by looking at them side by side). Sets not listed are a family of their own.
SET_FAMILY = {
    "fluent-emoji": "fluent-emoji", "fluent-emoji-flat": "fluent-emoji", "fluent-emoji-high-contrast": "fluent-emoji",
    "noto": "noto", "noto-color-emoji-font": "noto",  # noto-v1: mostly other drawings, own family
    "emojione": "emojione", "emojione-monotone": "emojione",  # v2 art; emojione-v1 differs: own family
    "boxicons": "boxicons", "bx": "boxicons", "bxs": "boxicons", "bxl": "boxicons",
    "streamline-cyber": "streamline-cyber", "streamline-cyber-color": "streamline-cyber",
}
# Per picture, where one picture of a set is another family's drawing.
_KEY_FAMILY = {"noto-v1:saxophone": "noto"}
# openclipart artist from the file name (names are truncated: "ganso" is ganson).
_OPENCLIPART_ARTISTS = (
    (re.compile(r"_gans(on|o)$"), "ganson"), (re.compile(r"_mo_\d+$"), "mo"),
    (re.compile(r"jarno_vasamaa"), "jarno_vasamaa"), (re.compile(r"benji_park"), "benji_park"),
    (re.compile(r"jurgen"), "jurgen"), (re.compile(r"philippe"), "philippe"),
    (re.compile(r"geraint_luff"), "geraint_luff"), (re.compile(r"jonathan_diet"), "jonathan_diet"),
)
# Suffixes that name a render of one design within a set (size, weight, fill, colour variant).
_VARIANT_SUFFIX = re.compile(r"-(16|24|filled|fill|line|duo|sharp)$")


def openclipart_artist(stem: str) -> str:
    """The artist of an openclipart file (stem, no .svg); the stem itself when not known."""
    for rx, artist in _OPENCLIPART_ARTISTS:
        if rx.search(stem):
            return artist
    return stem


def is_procedural(pic: Picture) -> bool:
    return pic.key.startswith("drawing:")


def family(pic: Picture) -> str:
    """The picture family a split holds out as a whole: one independent artwork family. Renders and
    versions of one design are one family (the three Fluent emoji renders; the Noto set and the Noto
    font; Emoji One v2 colour and monotone; Boxicons v2 and v3; Streamline Cyber mono and colour); each
    openclipart artist is one; each procedural drawing style is one, ``drawing-<style>``."""
    src, _, name = pic.key.partition(":")
    if src == "drawing":
        return f"drawing-{_drawing_key(pic.key)[1]}"
    if src == "openclipart":
        return f"openclipart-{openclipart_artist(name)}"
    if pic.key in _KEY_FAMILY:
        return _KEY_FAMILY[pic.key]
    return SET_FAMILY.get(src, src)


def artwork_group(pic: Picture) -> str:
    """A key shared by pictures of one design, within a family: renders of one emoji across the Fluent
    sets, the Noto set and font, Emoji One colour and monotone; an icon's sizes, weights and filled/line
    or colour variants (qlementine -16/-24, -filled, -fill/-line, -duo); openclipart colour/outline pairs.
    Procedural drawings: one group per (class, style, variant)."""
    if pic.key in _SAME_ARTWORK:
        return _SAME_ARTWORK[pic.key]
    src, _, name = pic.key.partition(":")
    if src == "drawing":
        cls, style, v = _drawing_key(pic.key)
        return f"drawing:{cls}:{style}:{v}"
    if src == "openclipart":
        return pic.key
    fam = family(pic)
    if src in ("fluent-emoji", "fluent-emoji-flat", "fluent-emoji-high-contrast"):
        fam = "fluent"  # group names kept from before the families
    return f"{fam}:{_VARIANT_SUFFIX.sub('', name)}"


def family_summary(pics: dict[str, list[Picture]]) -> dict[str, dict]:
    """Per class: pictures, families, real_families (non-procedural), designs (artwork groups) and
    real_designs."""
    out = {}
    for cls, ps in pics.items():
        real = [p for p in ps if not is_procedural(p)]
        out[cls] = {
            "pictures": len(ps),
            "families": len({family(p) for p in ps}),
            "real_families": len({family(p) for p in real}),
            "designs": len({artwork_group(p) for p in ps}),
            "real_designs": len({artwork_group(p) for p in real}),
        }
    return out


def format_family_summary(summary: dict[str, dict]) -> str:
    """The family_summary table as aligned text."""
    cols = ("pictures", "families", "real_families", "designs", "real_designs")
    lines = ["class            " + " ".join(f"{c:>13}" for c in cols)]
    for cls, row in summary.items():
        lines.append(f"{cls:<16} " + " ".join(f"{row[c]:>13}" for c in cols))
    return "\n".join(lines)


def credits(pictures: list[Picture]) -> list[str]:
    """Attribution lines for the sources used by `pictures` (CC-BY sets require one)."""
    lines = set()
    for p in pictures:
        if p.source.startswith("@iconify-json/"):
            name = p.source.split("/", 1)[1]
            lines.add(f"{ICONIFY_SETS[name][1]} ({p.source}), {p.licence}")
        elif p.source == "openclipart-svg":
            lines.add("Openclipart (Debian openclipart-svg), CC0-1.0")
        elif p.source == "fonts-noto-color-emoji":
            lines.add("Noto Color Emoji font, Google Inc. (Debian fonts-noto-color-emoji), OFL-1.1")
        else:
            lines.add(f"{p.source}, {p.licence}")
    return sorted(lines)


@lru_cache(maxsize=256)
def _load_cached(path: str | None, key: str, size: int, margin: float) -> np.ndarray:
    # Kept in memory: a generator draws the same few hundred pictures again and again.
    from PIL import Image
    if path is None:
        cls, style, variant = _drawing_key(key)
        if hasattr(drawings, "STYLES"):
            img = Image.fromarray(drawings.draw(cls, variant, size, style=style))
        elif style == "flat":
            img = Image.fromarray(drawings.draw(cls, variant, size))
        else:
            raise KeyError(f"drawing style {style!r} needs a drawings module with STYLES")
    else:
        img = Image.open(path).convert("RGBA")
    out = _fit(img, size, margin)
    out.flags.writeable = False
    return out


def _fit(img, size: int, margin: float) -> np.ndarray:
    """Crop an RGBA PIL image to its visible pixels and centre it in a (size, size) square."""
    from PIL import Image
    a = np.asarray(img.getchannel("A"))
    ys, xs = np.nonzero(a > 8)
    if len(xs):
        img = img.crop((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    inner = max(1, int(round(size * (1 - 2 * margin))))
    w, h = img.size
    k = inner / max(w, h)
    nw, nh = max(1, int(round(w * k))), max(1, int(round(h * k)))
    # Premultiply before resampling so transparent pixels' colours do not bleed into the edges.
    img = img.convert("RGBa").resize((nw, nh), Image.LANCZOS).convert("RGBA")
    out = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    out.paste(img, ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(out)


def load_rgba(pic: Picture, size: int, margin: float = 0.04) -> np.ndarray:
    """(size, size, 4) uint8: the instrument fitted into the square with a transparent margin."""
    path = None if pic.path is None else str(pic.path)
    return _load_cached(path, pic.key, int(size), float(margin)).copy()
