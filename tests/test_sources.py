"""Timbre sources of the synthetic corpus (`avsep_cli/corpus/sources.py`): every model renders every class
deterministically, non-silent, finite, at the right length and level; derived sources share their font's
group; `sources_for` gives >= 5 sources per class with the installed fonts and still works with TimGM6mb
alone or no font (CI has only pretty_midi's TimGM6mb); fonts of reserved packages are refused."""

from __future__ import annotations

import numpy as np
import pytest

from avsep_cli.corpus import classes as C
from avsep_cli.corpus import room
from avsep_cli.corpus import sources as S
from avsep_cli.corpus.render import perform

SR = 22050
NOTES = [(0.5 * i, 0.5 + 0.5 * (i % 3 == 0), 60 + (5 * i) % 12) for i in range(24)]
TIM = C.timgm6mb_path()


def _events(cls: str):
    return perform(NOTES, cls, 3.0, np.random.default_rng(1), tempo_bpm=110, start_q=0.0).events


def _render(src, cls, seed, fonts, dur=3.0):
    spec = C.CLASSES[cls]
    return S.render(src, cls, spec.programs[0], spec.bank, _events(cls), dur, SR, np.random.default_rng(seed), fonts)


@pytest.mark.parametrize("cls", sorted(C.CLASSES))
def test_model_renders_every_class_deterministically(cls):
    (src,) = [s for s in S.sources_for(cls, []) if s.kind == "model"]
    a, b, c = (_render(src, cls, seed, []) for seed in (0, 0, 1))
    assert a.dtype == np.float32 and a.shape == (int(round(3.0 * SR)),)
    assert np.isfinite(a).all()
    assert np.array_equal(a, b), "same seed, same stem"
    assert not np.array_equal(a, c), "another player (seed) sounds different"
    peak, rms = float(np.abs(a).max()), float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))
    assert 0.1 <= peak <= 1.0 and rms > 1e-3


@pytest.mark.skipif(TIM is None, reason="pretty_midi's TimGM6mb is not installed")
@pytest.mark.parametrize("cls", ["violin", "piano", "drum", "banjo"])
def test_font_and_derived_sources_render_with_timgm6mb(cls):
    fonts = C.find_fonts([TIM])
    srcs = S.sources_for(cls, fonts)
    assert {s.kind for s in srcs} == {"font", "model", "derived"}
    assert len(srcs) >= (3 if cls == "drum" else 4)
    for s in srcs:
        x = _render(s, cls, 3, fonts)
        assert x.shape == (int(round(3.0 * SR)),) and np.isfinite(x).all()
        assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 1e-4, s.key
        assert np.array_equal(x, _render(s, cls, 3, fonts)), s.key
        f = S.font_for(s, cls, fonts)
        assert (f is None) == (s.kind == "model")
        if f is not None:  # the plan records one font per player: it renders the same
            assert np.array_equal(x, _render(s, cls, 3, [f])), s.key


def test_groups_of_derived_sources_are_their_fonts():
    fonts = C.find_fonts([TIM]) if TIM else []
    for cls in C.CLASSES:
        srcs = S.sources_for(cls, fonts)
        keys = [s.key for s in srcs]
        assert len(keys) == len(set(keys))
        for s in srcs:
            if s.kind == "derived":
                assert s.key.split("-", 1)[1] == s.group and s.group in keys
            else:
                assert s.group == s.key


def test_models_only_without_fonts():
    for cls in C.CLASSES:
        srcs = S.sources_for(cls, [])
        assert [s.kind for s in srcs] == ["model"]


def test_at_least_five_sources_per_class_with_all_fonts():
    # The enumeration depends on the fonts' keys only (files are read when rendering), so the full set of
    # known fonts is described here whether or not the Debian packages are installed (CI hides them).
    fonts = [C.Font(k, TIM or C.Path("/x.sf2"), "test", "test")
             for k in ("avl-blackpearl", "avl-redzeppelin", "fluidr3", "musescore", "sfgmbank", "timgm6mb")]
    for cls in C.CLASSES:
        srcs = S.sources_for(cls, fonts)
        assert len(srcs) >= 5, (cls, [s.key for s in srcs])
        # fonts sharing recordings are one source
        sets = {C.sample_set(cls, f.key) for f in fonts if C.plays(f, cls)}
        assert sorted(s.key for s in srcs if s.kind == "font") == sorted(sets)


def test_shared_recordings_map():
    assert C.sample_set("trumpet", "musescore") == "fluidr3"
    assert C.sample_set("cello", "musescore") == "musescore"   # measured: different recordings
    assert C.sample_set("piano", "musescore") == "musescore"
    assert C.sample_set("violin", "sfgmbank") == "timgm6mb"
    assert C.sample_set("flute", "sfgmbank") == "sfgmbank"


def test_kit_fonts_play_only_drums():
    kit = C.Font("avl-blackpearl", TIM or C.Path("/x.sf2"), "CC-BY-SA-3.0", "test")
    assert C.plays(kit, "drum") and not C.plays(kit, "violin")
    assert S.sources_for("violin", [kit]) == S.sources_for("violin", [])


def test_mic_colour_is_deterministic_and_keeps_shape():
    x = np.random.default_rng(0).standard_normal((2, SR)).astype(np.float32)
    a, pa = room.mic_colour(x, SR, np.random.default_rng(5))
    b, pb = room.mic_colour(x, SR, np.random.default_rng(5))
    assert a.shape == x.shape and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b) and pa == pb
    assert 20 <= pa["highpass_hz"] <= 150 and 1 <= len(pa["peaks"]) <= 2


def test_timbre_report_tells_sources_apart():
    fonts = C.find_fonts([TIM]) if TIM else []
    rep = S.timbre_report(["violin"], fonts, SR, n_notes=6)
    r = rep["violin"]
    assert len(r["sources"]) >= (4 if TIM else 1)
    if TIM:
        assert r["min_pair"][2] > 0.5 and r["accuracy"] > r["chance"]
