"""Family-held-out splits: tested over the recipe (the assignment functions and a planned corpus), not
over rendered clips."""

from __future__ import annotations

import itertools

import pytest

from avsep_cli.corpus import splits

CLASSES = ["violin", "cello", "flute", "piano", "trumpet", "tuba"]


def _families():
    """A realistic shape: emoji-like sets with many classes, icon sets with a few, single-class families
    (one artist), and drawing styles that draw every class."""
    fams = {
        "fluent-emoji": {"violin", "flute", "piano", "trumpet"},
        "noto": {"violin", "flute", "piano", "trumpet"},
        "twemoji": {"violin", "flute", "piano", "trumpet"},
        "openmoji": {"violin", "piano", "trumpet"},
        "game-icons": {"violin", "piano", "trumpet", "tuba"},
        "qlementine-icons": {"violin", "cello", "piano", "trumpet", "tuba"},
        "mdi": {"violin", "piano", "trumpet"},
        "openclipart-ganson": {"cello", "violin", "flute", "trumpet"},
        "openclipart-mo": {"cello", "violin"},
        "dinkie-icons": {"violin", "trumpet"},
        "iconmind": {"flute", "piano", "trumpet"},
    }
    for style in ("flat", "outline", "silhouette", "shaded", "sketch", "pixel", "woodcut", "neon", "lowpoly", "cartoon"):
        fams[f"drawing-{style}"] = set(CLASSES)
    return fams


def _is_drawing(f: str) -> bool:
    return f.startswith("drawing")


def test_every_family_is_on_one_side_and_the_assignment_is_stable():
    fams = _families()
    a = splits.assign_picture_families(fams, _is_drawing)
    assert set(a) == set(fams) and set(a.values()) <= set(splits.SPLITS)
    # the same names in another order give the same assignment: it depends on the names alone
    b = splits.assign_picture_families(dict(reversed(list(fams.items()))), _is_drawing)
    assert a == b
    by = splits.by_split(a)
    for x, y in itertools.combinations(splits.SPLITS, 2):
        assert not set(by[x]) & set(by[y])


def test_held_out_splits_have_real_and_drawn_families_of_every_class_that_has_enough():
    fams = _families()
    a = splits.assign_picture_families(fams, _is_drawing)
    drawn = {s: [f for f in fams if _is_drawing(f) and a[f] == s] for s in splits.SPLITS}
    assert len(drawn["test"]) == 2 and len(drawn["val"]) >= 1 and len(drawn["train"]) >= 6
    for c in CLASSES:
        real = [f for f in fams if not _is_drawing(f) and c in fams[f]]
        got = {s: [f for f in real if a[f] == s] for s in splits.SPLITS}
        assert got["train"], f"{c}: no real family left to train on"
        if len(real) >= 2:
            assert got["test"], f"{c}: {len(real)} real families but none held out for test"


def test_a_class_with_one_real_family_keeps_it_for_training():
    fams = {"only-cello-artist": {"cello"}, "emoji": {"violin"}, "icons": {"violin"}, "drawing-flat": {"cello", "violin"}}
    a = splits.assign_picture_families(fams, _is_drawing)
    assert a["only-cello-artist"] == "train"
    assert sorted(a[f] for f in ("emoji", "icons")) == ["test", "train"]


@pytest.mark.parametrize("groups, test_font", [
    ({"fluidr3": "font", "musescore": "font", "timgm6mb": "font", "pm-a": "model", "pm-b": "model", "add": "model"},
     "musescore"),
    ({"fluidr3": "font", "timgm6mb": "font", "pm-a": "model", "pm-b": "model"}, "timgm6mb"),
    ({"timgm6mb": "font", "pm-a": "model", "pm-b": "model", "pm-c": "model"}, None),
])
def test_sample_groups_hold_out_a_recorded_set_and_a_model(groups, test_font):
    a = splits.assign_sample_groups(groups, prefer_test=("musescore", "timgm6mb", "fluidr3"))
    by = splits.by_split(a)
    fonts_test = [g for g in by["test"] if groups[g] == "font"]
    assert fonts_test == ([test_font] if test_font else [])
    models = [g for g in groups if groups[g] == "model"]
    assert len([g for g in by["test"] if groups[g] == "model"]) == 1
    assert len([g for g in by["val"] if groups[g] == "model"]) == (1 if len(models) >= 3 else 0)
    assert any(groups[g] == "font" for g in by["train"]), "training keeps a recorded set"
    assert any(groups[g] == "model" for g in by["train"])


def test_planned_corpus_holds_out_whole_families_and_sample_groups(tmp_path):
    """The recipe of the tiny preset (planned, not rendered): no picture family and no sample-set group of a
    class is on two sides, and every clip draws only from its own split's pictures and sound."""
    from avsep_cli.corpus import generate
    from avsep_cli.corpus.pictures import family

    pl = generate.plan(tmp_path / "c", size="tiny", seed=3, cache_dir=tmp_path / "cache")
    r = pl.recipe
    fam_sides = {f: s for s, fs in r["picture_families"].items() for f in fs}
    assert len(fam_sides) == sum(len(v) for v in r["picture_families"].values()), "a family on two sides"
    assert r["picture_families"]["test"] and r["picture_families"]["val"]
    key_side = {}
    for c, by in r["pictures"].items():
        for s, keys in by.items():
            for k in keys:
                key_side.setdefault((c, k), set()).add(s)
    for clip in pl.clips:
        for p in clip["players"]:
            assert fam_sides[family(_pic(p))] == clip["split"], (clip["id"], p["picture"]["key"])
            assert clip["split"] in key_side[(p["class"], p["picture"]["key"])]
            side = r["sample_sets"][p["class"]]["split"]
            own = [g for g, s in side.items() if s == clip["split"]]
            allowed = own or [g for g, s in side.items() if s == "train"]  # val without a group of its own
            assert p["sample_group"] in allowed, (clip["id"], p["sample_group"], side)


def _pic(player):
    from avsep_cli.corpus.pictures import Picture

    pic = player["picture"]
    return Picture(player["class"], pic["key"], pic["source"], pic["licence"], None)
