"""Synthetic-corpus pictures and scenes: boxes are tight and correct, layout, determinism, motion that
follows loudness, picture discovery without assets, the licence filter, and drawings that differ by
class."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from avsep_cli.corpus import drawings, pictures, scene

S = 224
FLAT = (255, 0, 255)  # no drawing below uses pure magenta


def _render(pics, seed, n=24, **kw):
    return scene.render_scene_detailed(pics, n, 8.0, S, np.random.default_rng(seed), **kw)


def test_box_is_tight_around_the_drawn_instrument():
    pic = drawings.draw("trumpet", 0, S)
    sc = _render([pic], 3, occlusion_prob=0.0, body_prob=0.0, background=FLAT, degrade=False)
    assert sc.frames.shape == (24, S, S, 3) and sc.frames.dtype == np.uint8
    assert sc.boxes.shape == (1, 24, 4) and sc.boxes.dtype == np.float32
    for t in range(24):
        x0, y0, x1, y1 = sc.boxes[0, t].astype(int)
        assert 0 <= x0 < x1 <= S and 0 <= y0 < y1 <= S
        changed = np.any(sc.frames[t].astype(int) != FLAT, axis=-1)
        # Outside the box (beyond the 1-3 px anti-aliased fringe, alpha <= ALPHA_THRESHOLD: thin parts seen at
        # a slant) the background is untouched.
        outside = np.ones((S, S), bool)
        outside[max(y0 - 3, 0):y1 + 3, max(x0 - 3, 0):x1 + 3] = False
        assert not changed[outside].any()
        # Each edge of the box touches drawn pixels: the box is not larger than the drawing.
        assert changed[y0, x0:x1].any() and changed[y1 - 1, x0:x1].any()
        assert changed[y0:y1, x0].any() and changed[y0:y1, x1 - 1].any()
        # And the drawing fills a fair part of its box (a trumpet is not a thin line).
        assert changed[y0:y1, x0:x1].mean() > 0.15


def test_boxes_stay_in_frame_and_duets_do_not_overlap():
    overlaps = []
    for seed in range(6):
        pics = [drawings.draw("violin", seed, S), drawings.draw("tuba", seed, S)]
        sc = _render(pics, seed, layout="columns")
        b = sc.boxes
        assert sc.visible.all()
        assert (b[..., 0] >= 0).all() and (b[..., 2] <= S).all() and (b[..., 0] < b[..., 2]).all()
        assert (b[..., 1] >= 0).all() and (b[..., 3] <= S).all() and (b[..., 1] < b[..., 3]).all()
        ix = np.clip(np.minimum(b[0, :, 2], b[1, :, 2]) - np.maximum(b[0, :, 0], b[1, :, 0]), 0, None)
        iy = np.clip(np.minimum(b[0, :, 3], b[1, :, 3]) - np.maximum(b[0, :, 1], b[1, :, 1]), 0, None)
        inter = ix * iy
        area = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
        overlaps.append(inter / (area[0] + area[1] - inter))
        # The two players sit in their own halves of the frame.
        centres = (b[:, :, 0] + b[:, :, 2]) / 2
        left = sc.info["order"][0]
        assert (centres[left] < S / 2).all() and (centres[1 - left] > S / 2).all()
    assert float(np.mean(overlaps)) < 0.02


def test_same_seed_same_clip_different_seed_different_clip():
    pics = [drawings.draw("cello", 1, S), drawings.draw("flute", 2, S)]
    a, b, c = _render(pics, 7), _render(pics, 7), _render(pics, 8)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.frames, c.frames)
    f1, b1 = scene.render_scene(pics, 10, 8.0, S, np.random.default_rng(1))
    f2, b2 = scene.render_scene(pics, 10, 8.0, S, np.random.default_rng(1))
    assert np.array_equal(f1, f2) and np.array_equal(b1, b2)


def test_instruments_move_and_their_motion_follows_loudness():
    pic = drawings.draw("saxophone", 3, S)
    n = 48
    step = np.r_[np.zeros(n // 2), np.ones(n // 2)]  # silent, then loud
    raised = []
    for seed in range(5):
        sc = _render([pic], seed, n=n, envelopes=[step], occlusion_prob=0.0, body_prob=0.0, background=FLAT,
                     degrade=False, layout="columns", scale="medium")
        cx = (sc.boxes[0, :, 0] + sc.boxes[0, :, 2]) / 2
        cy = (sc.boxes[0, :, 1] + sc.boxes[0, :, 3]) / 2
        assert np.ptp(cx) > 1.0 or np.ptp(cy) > 1.0
        assert len({tuple(b) for b in sc.boxes[0]}) > n // 2  # boxes change over time
        # Image y grows downwards: loud playing lifts the instrument (compare settled parts).
        raised.append(cy[4:n // 2].mean() - cy[n // 2 + 4:].mean())
    assert np.mean(raised) > 2.0 and sum(r > 0 for r in raised) >= 4


def test_occluder_is_reported_and_boxes_keep_the_instrument_extent():
    pic = drawings.draw("drum", 1, S)
    seen = False
    for seed in range(8):
        sc = _render([pic], seed, n=24, occlusion_prob=1.0, body_prob=0.0, background=FLAT, layout="columns")
        t0, t1 = sc.info["occluder"]["frames"]
        assert (sc.occluded[:, :t0] == 0).all() and (sc.occluded[:, t1:] == 0).all()
        assert (sc.occluded >= 0).all() and (sc.occluded <= 1).all()
        assert sc.visible.all()
        seen |= bool((sc.occluded > 0.01).any())
    assert seen


def test_discover_without_assets_gives_drawings_for_every_class(tmp_path):
    found = pictures.discover(None, tmp_path / "cache", system=False)
    assert set(found) == set(pictures.CLASSES)
    for cls, pics in found.items():
        assert len(pics) >= 6
        assert all(p.path is None and p.cls == cls and p.key.startswith("drawing:") for p in pics)
        assert [p.key for p in pics] == sorted(p.key for p in pics)
    a = pictures.load_rgba(found["tuba"][0], 96)
    assert a.shape == (96, 96, 4) and a.dtype == np.uint8
    assert np.array_equal(a, pictures.load_rgba(found["tuba"][0], 96))
    assert (a[:2, :, 3] == 0).all() and (a[:, :2, 3] == 0).all()  # transparent margin
    assert a[..., 3].max() == 255


def _fake_iconify(root, name, icons):
    d = root / "node_modules" / "@iconify-json" / name
    d.mkdir(parents=True)
    d.joinpath("icons.json").write_text(json.dumps({"prefix": name, "width": 16, "height": 16, "icons": icons}))


def test_licence_filter_and_cached_rasters(tmp_path):
    # `make test` installs rsvg-convert (Debian librsvg2-bin) through scripts/system-deps.sh
    assert pictures._can_rasterise(), "no SVG rasteriser: run scripts/system-deps.sh"
    violin = {"violin": {"body": '<rect x="4" y="2" width="8" height="12" fill="#a52"/>'}}
    _fake_iconify(tmp_path / "assets", "fluent-emoji-flat", violin)   # MIT
    _fake_iconify(tmp_path / "assets", "twemoji", violin)             # CC-BY-4.0
    cache = tmp_path / "cache"
    allp = pictures.discover(tmp_path / "assets", cache, system=False)
    keys = {p.key: p for p in allp["violin"]}
    assert {"fluent-emoji-flat:violin", "twemoji:violin"} <= set(keys)
    assert keys["twemoji:violin"].licence == "CC-BY-4.0" and keys["fluent-emoji-flat:violin"].licence == "MIT"
    img = pictures.load_rgba(keys["twemoji:violin"], 64)
    ys, xs = np.nonzero(img[..., 3] > 128)
    # A 8x12 rectangle fitted into 64 px with a 4% margin: height ~59 px, width ~2/3 of that.
    assert 55 <= ys.max() - ys.min() + 1 <= 60 and 35 <= xs.max() - xs.min() + 1 <= 42
    n_files = len(list(cache.glob("*.png")))
    filtered = pictures.discover(tmp_path / "assets", cache, licences={"MIT", "CC0-1.0"}, system=False)
    assert len(list(cache.glob("*.png"))) == n_files  # cached: nothing rasterised again
    got = [p for ps in filtered.values() for p in ps]
    assert {p.key for p in got if p.path is not None} == {"fluent-emoji-flat:violin"}
    assert all(p.licence in {"MIT", "CC0-1.0"} for p in got)
    assert all(len(filtered[c]) >= 6 for c in pictures.CLASSES)  # drawings are always kept


def test_missing_assets_names_the_install_command(tmp_path):
    lines = pictures.missing_assets(tmp_path)
    npm = [ln for ln in lines if "@iconify-json/" in ln]
    assert len(npm) == len(pictures.ICONIFY_SETS)
    assert all(f"npm install --prefix {tmp_path}" in ln and "install-assets.sh" in ln for ln in npm)


def test_drawings_differ_by_class_and_by_variant():
    feats, labels = [], []
    for cls in pictures.CLASSES:
        variants = [drawings.draw(cls, v, 64) for v in range(drawings.N_VARIANTS)]
        assert len({v.tobytes() for v in variants}) == drawings.N_VARIANTS
        assert np.array_equal(variants[0], drawings.draw(cls, 0, 64))
        for v in variants:
            im = Image.fromarray(v).convert("RGBa").resize((16, 16), Image.BILINEAR)
            feats.append(np.asarray(im, np.float32).ravel() / 255)
            labels.append(cls)
    x, y = np.array(feats), np.array(labels)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    # Even a 1-nearest-neighbour on 16x16 thumbnails tells the classes apart (chance: 1/15).
    assert (y[d.argmin(1)] == y).mean() > 0.75


def test_artwork_groups_join_renders_of_one_design():
    mk = lambda key: pictures.Picture("violin", key, "x", "MIT", None)
    assert pictures.artwork_group(mk("fluent-emoji:violin")) == pictures.artwork_group(mk("fluent-emoji-flat:violin"))
    assert pictures.artwork_group(mk("noto:violin")) == pictures.artwork_group(mk("noto-color-emoji-font:violin"))
    assert pictures.artwork_group(mk("noto-v1:violin")) != pictures.artwork_group(mk("noto:violin"))
    assert pictures.artwork_group(mk("drawing:violin:1")) != pictures.artwork_group(mk("drawing:violin:2"))


def test_stereo_placement_pans_the_direct_sound_by_the_box_and_keeps_the_reverb_even():
    from avsep_cli.corpus import room

    for pan in (-1.0, -0.3, 0.0, 0.5, 1.0):
        gl, gr = room.equal_power(pan)
        assert abs(gl ** 2 + gr ** 2 - 1) < 1e-12
    assert np.allclose(room.equal_power(-1), (1, 0)) and np.allclose(room.equal_power(1), (0, 1))
    assert np.allclose(room.equal_power(0), (2 ** -0.5, 2 ** -0.5))
    # The pan is where the box is: left edge -1, centre 0, right edge +1; frames with no box are ignored.
    boxes = np.array([[0, 10, 40, 50], [0, 10, 40, 50], [5, 5, 5, 5]], np.float32)  # centre x = 20
    assert abs(room.pan_from_boxes(boxes, S) - (2 * 20 / S - 1)) < 1e-9
    assert room.pan_from_boxes(np.zeros((3, 4)), S) == 0.0
    sc = _render([drawings.draw("violin", 0, S), drawings.draw("flute", 0, S)], 5, layout="columns")
    pans = [room.pan_from_boxes(b, S) for b in sc.boxes]
    left = sc.info["order"][0]  # the picture shown in the left column
    assert pans[left] < 0 < pans[1 - left]
    # place: at pan 0 each channel carries the dry sound at its mono level; the total power of the direct
    # sound does not depend on the pan; an uneven reverb is brought to equal power in both channels.
    rng = np.random.default_rng(0)
    dry = rng.standard_normal(4000).astype(np.float32)
    silent = np.zeros((2, 4000), np.float32)
    assert np.allclose(room.place(dry, silent, 0.0), np.stack([dry, dry]), atol=1e-6)
    for pan in (-0.7, 0.4):
        x = room.place(dry, silent, pan).astype(np.float64)
        assert abs(np.sum(x ** 2) - 2 * np.sum(dry.astype(np.float64) ** 2)) < 1e-3 * np.sum(x ** 2)
        assert (np.sum(x[0] ** 2) > np.sum(x[1] ** 2)) == (pan < 0)
    rev = np.stack([rng.standard_normal(4000), 3 * rng.standard_normal(4000)]).astype(np.float32)
    x = room.place(np.zeros(4000, np.float32), rev, 0.8).astype(np.float64)
    assert abs(np.sum(x[0] ** 2) / np.sum(x[1] ** 2) - 1) < 1e-6
    # Stereo tails: no direct path, independent channels, one room.
    tails = room.stereo_reverb_tails(np.random.default_rng(1), 44100, 0.5, 3.0)
    assert tails.shape[0] == 2 and (tails[:, 0] == 0).all()
    assert abs(np.corrcoef(tails)[0, 1]) < 0.2
    assert np.allclose(np.sum(tails.astype(np.float64) ** 2, axis=1), 10 ** (-3.0 / 10), rtol=0.05)


# ---------------------------------------------------------------- scene variety (issue 15)

def _alpha_boxes(sc_clean):
    """Boxes recomputed from a clean rendering on a flat background: pixels that differ from FLAT."""
    out = []
    for f in sc_clean.frames:
        ch = np.any(f.astype(int) != FLAT, axis=-1)
        ys, xs = np.nonzero(ch)
        out.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else None)
    return out


def test_degradations_and_backgrounds_leave_the_boxes_exact():
    pic = drawings.draw("trumpet", 2, S, "shaded")
    all_on = {k: 1.0 for k in scene.DEGRADATIONS}
    for seed in range(3):
        kw = {"occlusion_prob": 0.0, "body_prob": 0.0, "layout": "free"}
        clean = _render([pic], seed, n=8, background=FLAT, degrade=False, **kw)
        noisy = _render([pic], seed, n=8, background=FLAT, degrade=all_on, **kw)
        textured = _render([pic], seed, n=8, degrade=all_on, **kw)
        assert np.array_equal(clean.boxes, noisy.boxes) and np.array_equal(clean.boxes, textured.boxes)
        assert np.array_equal(clean.visible, textured.visible)
        assert not np.array_equal(clean.frames, noisy.frames)
        for t, bb in enumerate(_alpha_boxes(clean)):
            if clean.visible[0, t]:
                # The box is the drawn extent, up to the 1-3 px anti-aliased fringe below the alpha threshold.
                assert np.abs(np.array(bb) - clean.boxes[0, t]).max() <= 3


def test_same_seed_same_clip_with_all_options():
    pics = [drawings.draw("violin", 1, S, "sketch"), drawings.draw("drum", 2, S, "neon"),
            drawings.draw("harp", 3, S, "pixel")]
    kw = {"degrade": {k: 1.0 for k in scene.DEGRADATIONS}, "layout": "free", "out_of_frame_prob": 0.5}
    a, b = _render(pics, 11, n=6, **kw), _render(pics, 11, n=6, **kw)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.boxes, b.boxes) and a.info == b.info


def test_three_players_give_three_boxes_left_to_right():
    pics = [drawings.draw(c, 0, S) for c in ("cello", "trumpet", "accordion")]
    for seed in range(4):
        for layout in ("columns", "free"):
            sc = _render(pics, seed, n=6, layout=layout, out_of_frame_prob=0.0)
            assert sc.boxes.shape == (3, 6, 4) and sc.visible.all()
            cx = [(sc.boxes[p, :, 0] + sc.boxes[p, :, 2]).mean() / 2 for p in sc.info["order"]]
            assert cx == sorted(cx)
    f, b = scene.render_scene(pics, 1, 8.0, S, np.random.default_rng(0))  # a still
    assert f.shape == (1, S, S, 3) and b.shape == (3, 1, 4)


def test_players_cut_by_the_frame_have_clipped_boxes_and_right_visibility():
    pic = drawings.draw("tuba", 0, S)
    cut = 0
    for seed in range(12):
        sc = _render([pic], seed, n=8, layout="free", out_of_frame_prob=1.0, occlusion_prob=0.0, body_prob=0.0,
                     background=FLAT, degrade=False)
        assert sc.info["out_of_frame"] == [0]
        b = sc.boxes[0]
        assert (b[:, :2] >= 0).all() and (b[:, 2:] <= S).all()
        for t in range(8):
            drawn = np.any(sc.frames[t].astype(int) != FLAT, axis=-1).any()
            assert sc.visible[0, t] == drawn or not sc.visible[0, t]
            if sc.visible[0, t]:
                assert b[t, 0] < b[t, 2] and b[t, 1] < b[t, 3]
            else:
                assert (b[t] == 0).all()
        cut += int(((b[:, 0] == 0) | (b[:, 2] == S) | (b[:, 3] == S)).any())
    assert cut >= 10


def test_scales_range_from_small_to_filling_the_frame():
    pic = drawings.draw("saxophone", 1, S)
    size = {}
    for band in ("small", "medium", "large"):
        sides = []
        for seed in range(4):
            sc = _render([pic], seed, n=4, scale=band, layout="free", out_of_frame_prob=0.0)
            sides.append(np.maximum(sc.boxes[0, :, 2] - sc.boxes[0, :, 0], sc.boxes[0, :, 3] - sc.boxes[0, :, 1]).mean())
        size[band] = np.mean(sides)
    assert size["small"] < 0.45 * S < size["medium"] < size["large"]
    assert size["large"] > 0.8 * S


def test_each_background_kind_and_degradation_can_be_forced_and_changes_the_frame():
    pic = drawings.draw("banjo", 0, S)
    kinds = set()
    for kind in scene.BACKGROUND_KINDS:
        sc = _render([pic], 3, n=2, background_kinds=[kind], degrade=False)
        assert sc.info["background"] == kind
        kinds.add(sc.frames[0].tobytes())
        assert sc.frames[0].std() > 2  # not a blank frame
    assert len(kinds) == len(scene.BACKGROUND_KINDS)
    off = _render([pic], 4, n=3, degrade=False)
    assert off.info["degradations"] == {}
    for name in scene.DEGRADATIONS:
        only = {k: float(k == name) for k in scene.DEGRADATIONS}
        if name == "motion_blur":
            only["defocus"] = 0.0
        sc = _render([pic], 4, n=3, degrade=only)
        assert list(sc.info["degradations"]) == [name]
        assert np.array_equal(sc.boxes, off.boxes)
        assert np.abs(sc.frames.astype(int) - off.frames).mean() > 0.3, name


def test_six_second_clip_renders_every_frame_and_box():
    """A 6-s duet at 8 fps: 48 frames and each player's box in every frame (how fast: benchmarks/bench_synth.py)."""
    pics = [drawings.draw("violin", 0, S), drawings.draw("tuba", 0, S)]
    for seed in range(2):
        frames, boxes = scene.render_scene(pics, 48, 8.0, S, np.random.default_rng(seed))
        assert frames.shape == (48, S, S, 3) and frames.dtype == np.uint8 and boxes.shape == (2, 48, 4)
        assert np.isfinite(boxes).all() and frames.std() > 1
