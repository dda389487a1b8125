"""Pictures: the reserved-set guard, picture families, drawing keys, discovery from a fake asset folder.

Runs with no asset installed (AVSEP_ASSETS an empty folder): the icon sets used here are small fake
icons.json files written into a temporary folder, and rasterising is replaced by a PIL stand-in.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from avsep_cli.corpus import drawings
from avsep_cli.corpus import pictures as P

ROOT = Path(__file__).resolve().parents[1]


def mk(key: str, cls: str = "violin") -> P.Picture:
    return P.Picture(cls, key, "x", "MIT", None)


def _npm_sets() -> list[str]:
    text = (ROOT / P.INSTALL_SCRIPT).read_text()
    m = re.search(r"^NPM_SETS=\(([^)]*)\)", text, re.MULTILINE)
    assert m, "NPM_SETS not found in the install script"
    return m.group(1).split()


def test_no_allowed_or_installed_set_is_reserved_or_a_variant_of_one():
    used = set(P.ICONIFY_ALLOW) | set(P.ICONIFY_SETS) | set(P.TINTED) | set(_npm_sets())
    assert not used & P.RESERVED_ICON_SETS
    assert not used & P.RESERVED_VARIANTS
    assert not [s for s in used if P.is_reserved(s)]
    for s in ("fa6-solid", "fa7-solid", "la", "ic", "icon-park-twotone", "streamline-ultimate", "ph-bold",
              "material-symbols-light", "lucide-lab", "fluent-mdl2"):
        assert P.is_reserved(s), s
    assert not P.is_reserved("fluent-emoji") and not P.is_reserved("streamline-emojis")


def test_sets_are_consistent_and_licences_allowed():
    assert set(P.ICONIFY_ALLOW) <= set(P.ICONIFY_SETS)
    assert P.TINTED <= set(P.ICONIFY_SETS)
    assert set(_npm_sets()) == set(P.ICONIFY_SETS)
    for name, (lic, credit) in P.ICONIFY_SETS.items():
        assert not P.licence_refused(lic), name
        assert credit
    for allow in P.ICONIFY_ALLOW.values():
        assert set(allow.values()) <= set(P.CLASSES)
    assert P.licence_refused("CC-BY-NC-SA-4.0") and P.licence_refused("CC-BY-NC-4.0")
    assert P.licence_refused("GPL-2.0-or-later") and P.licence_refused("LGPL-3.0")
    assert not P.licence_refused("CC-BY-4.0") and not P.licence_refused("CC-BY-SA-4.0")


def _fake_set(assets: Path, name: str, icons: dict[str, str]) -> None:
    d = assets / "node_modules" / "@iconify-json" / name
    d.mkdir(parents=True)
    data = {"prefix": name, "width": 32, "height": 32, "info": {"license": {"spdx": "MIT"}},
            "icons": {k: {"body": body} for k, body in icons.items()}}
    (d / "icons.json").write_text(json.dumps(data))


@pytest.fixture
def fake_raster(monkeypatch):
    """Rasterising without rsvg-convert or cairosvg: a small opaque square per SVG."""
    from PIL import Image

    def rasterise(svg: bytes, out: Path) -> bool:
        img = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
        img.paste((200, 40, 40, 255), (4, 4, 28, 28))
        img.save(out, format="PNG")
        return True

    monkeypatch.setattr(P, "_can_rasterise", lambda: True)
    monkeypatch.setattr(P, "_rasterise_svg", rasterise)


RECT = '<rect x="4" y="4" width="24" height="24" fill="currentColor"/>'


def test_discover_reads_an_allowed_set_and_only_its_allowed_names(tmp_path, fake_raster):
    assets = tmp_path / "assets"
    _fake_set(assets, "twemoji", {"violin": RECT, "guitar": RECT, "drum": RECT})
    pics = P.discover(assets, tmp_path / "cache", system=False)
    keys = {p.key: p for ps in pics.values() for p in ps if not P.is_procedural(p)}
    assert set(keys) == {"twemoji:violin", "twemoji:drum"}  # "guitar" is not allowed (electric)
    assert keys["twemoji:violin"].cls == "violin" and keys["twemoji:violin"].licence == "CC-BY-4.0"
    assert keys["twemoji:violin"].path.is_file()
    assert P.load_rgba(keys["twemoji:violin"], 40).shape == (40, 40, 4)
    assert "Twemoji, Twitter Inc. and other contributors (@iconify-json/twemoji), CC-BY-4.0" in P.credits(
        list(keys.values()))
    only_mit = P.discover(assets, tmp_path / "cache", {"MIT"}, system=False)
    assert all(P.is_procedural(p) for ps in only_mit.values() for p in ps)


def test_discover_ignores_a_reserved_set_even_when_installed_and_allowed(tmp_path, fake_raster, monkeypatch):
    assets = tmp_path / "assets"
    for name in ("fa6-solid", "la", "ph-bold"):
        _fake_set(assets, name, {"drum": RECT, "guitar": RECT})
        monkeypatch.setitem(P.ICONIFY_SETS, name, ("MIT", name))
        monkeypatch.setitem(P.ICONIFY_ALLOW, name, {"drum": "drum", "guitar": "acoustic_guitar"})
    _fake_set(assets, "nimbus", {"drums": RECT})
    pics = P.discover(assets, tmp_path / "cache", system=False)
    real = [p.key for ps in pics.values() for p in ps if not P.is_procedural(p)]
    assert real == ["nimbus:drums"]


def test_families_group_renders_versions_and_artists():
    f = P.family
    assert f(mk("fluent-emoji:violin")) == f(mk("fluent-emoji-flat:violin")) == f(
        mk("fluent-emoji-high-contrast:violin")) == "fluent-emoji"
    assert f(mk("noto:violin")) == f(mk("noto-color-emoji-font:violin")) == "noto"
    assert f(mk("noto-v1:violin")) == "noto-v1" and f(mk("noto-v1:saxophone")) == "noto"
    assert f(mk("emojione:violin")) == f(mk("emojione-monotone:violin")) != f(mk("emojione-v1:violin"))
    assert f(mk("bx:bxs-piano")) == f(mk("bxs:piano")) == f(mk("boxicons:piano")) == "boxicons"
    assert f(mk("streamline-cyber:guitar")) == f(mk("streamline-cyber-color:guitar"))
    assert f(mk("streamline-cyber:guitar")) != f(mk("streamline-emojis:violin"))
    assert f(mk("twemoji:violin")) == "twemoji"
    assert f(mk("openclipart:cello_ganson")) == f(mk("openclipart:trumpet_b_flat_colour_ganso")) == "openclipart-ganson"
    assert f(mk("openclipart:cello_mo_01")) == f(mk("openclipart:harp_mo_01")) == "openclipart-mo"
    assert f(mk("openclipart:africandrum_benji_park2")) == "openclipart-benji_park"
    assert f(mk("openclipart:guitar_jarno_vasamaa1")) == f(mk("openclipart:drums_jarno_vasamaa_"))
    assert f(mk("openclipart:guitar_ganson")) != f(mk("openclipart:guitar_profile_philippe__01"))
    assert f(mk("drawing:violin:sketch:3")) == f(mk("drawing:cello:sketch:0")) == "drawing-sketch"
    assert f(mk("drawing:violin:2")) == "drawing-flat"
    assert P.is_procedural(mk("drawing:violin:flat:1")) and not P.is_procedural(mk("noto:violin"))


def test_artwork_groups_join_one_design_within_a_family():
    g = P.artwork_group
    assert g(mk("qlementine-icons:trumpet-16")) == g(mk("qlementine-icons:trumpet-24"))
    assert g(mk("boxicons:piano-grand")) == g(mk("boxicons:piano-grand-filled")) != g(mk("boxicons:piano"))
    assert g(mk("bxs:piano")) == g(mk("boxicons:piano-filled"))
    assert g(mk("ri:piano-fill")) == g(mk("ri:piano-line"))
    assert g(mk("streamline-kameleon-color:harp")) == g(mk("streamline-kameleon-color:harp-duo"))
    assert g(mk("emojione:violin")) == g(mk("emojione-monotone:violin")) != g(mk("emojione-v1:violin"))
    assert g(mk("fluent-emoji-high-contrast:violin")) == g(mk("fluent-emoji:violin"))
    assert g(mk("noto-v1:saxophone")) == g(mk("noto:saxophone"))
    assert g(mk("openclipart:violin_colour_ganson")) == g(mk("openclipart:violin_ganson"))
    assert g(mk("drawing:violin:flat:1")) == g(mk("drawing:violin:1")) != g(mk("drawing:violin:outline:1"))
    for key in ("noto:violin", "twemoji:drum", "openclipart:cello_ganson", "drawing:cello:pixel:2"):
        assert g(mk(key)).split(":")[0] in (P.family(mk(key)), "openclipart", "drawing")


def test_drawing_keys_round_trip_through_load_rgba():
    styles = P.drawing_styles()
    assert styles == tuple(getattr(drawings, "STYLES", ("flat",))) and "flat" in styles
    pics = P.drawing_pictures()
    assert set(pics) == set(P.CLASSES)
    for cls, ps in pics.items():
        assert len(ps) == len(styles) * drawings.N_VARIANTS
        assert len({p.key for p in ps}) == len(ps)
        assert all(p.path is None and p.cls == cls and p.source == P.DRAWING_SOURCE for p in ps)
    for style in styles:
        pic = P.Picture("violin", f"drawing:violin:{style}:1", P.DRAWING_SOURCE, P.DRAWING_LICENCE, None)
        assert P._drawing_key(pic.key) == ("violin", style, 1)
        a = P.load_rgba(pic, 48)
        assert a.shape == (48, 48, 4) and a.dtype == np.uint8 and a[..., 3].max() > 0
    old = P.load_rgba(mk("drawing:violin:1"), 48)  # the older three-part key: the flat style
    assert np.array_equal(old, P.load_rgba(mk("drawing:violin:flat:1"), 48))


def test_family_summary_counts_families_real_families_and_designs():
    pics = {
        "violin": [mk("fluent-emoji:violin"), mk("fluent-emoji-flat:violin"), mk("emojione-v1:violin"),
                   mk("openclipart:violin_ganson"), mk("openclipart:violin_colour_ganson"),
                   mk("drawing:violin:flat:0"), mk("drawing:violin:flat:1"), mk("drawing:violin:pixel:0")],
        "tuba": [mk("game-icons:tuba", "tuba")],
    }
    s = P.family_summary(pics)
    assert s["violin"] == {"pictures": 8, "families": 5, "real_families": 3, "designs": 6, "real_designs": 3}
    assert s["tuba"]["families"] == s["tuba"]["real_families"] == 1
    assert "violin" in P.format_family_summary(s)


def test_discover_with_an_empty_assets_folder_gives_the_drawings(tmp_path):
    pics = P.discover(tmp_path / "empty", tmp_path / "cache", system=False)
    assert set(pics) == set(P.CLASSES)
    assert all(P.is_procedural(p) for ps in pics.values() for p in ps)
    assert all(len(ps) == len(P.drawing_styles()) * drawings.N_VARIANTS for ps in pics.values())
