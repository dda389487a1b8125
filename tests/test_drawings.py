"""Procedural drawings: every style draws every class, deterministically, and the styles differ (their speed:
`benchmarks/bench_synth.py`, not asserted here)."""

from __future__ import annotations

import numpy as np
import pytest

from avsep_cli.corpus import drawings, pictures


def test_every_style_draws_every_class():
    assert len(drawings.STYLES) >= 10 and drawings.STYLES[0] == "flat"
    for style in drawings.STYLES:
        for cls in pictures.CLASSES:
            a = drawings.draw(cls, 1, 224, style)
            assert a.shape == (224, 224, 4) and a.dtype == np.uint8
            assert (a[..., 3] > 24).mean() > 0.01, (cls, style)  # something is drawn
            assert (a[..., 3] == 0).mean() > 0.1  # a transparent background around it


def test_deterministic_and_varied():
    for style in drawings.STYLES:
        a = drawings.draw("trumpet", 2, 96, style)
        assert np.array_equal(a, drawings.draw("trumpet", 2, 96, style))
        assert not np.array_equal(a, drawings.draw("trumpet", 3, 96, style))


def test_styles_look_different():
    # Mean colour and coverage of the same class differ between the styles (not one look recoloured).
    feats = {}
    for style in drawings.STYLES:
        arr = np.stack([drawings.draw(c, v, 64, style) for c in ("violin", "tuba", "piano") for v in range(2)])
        a = arr[..., 3] / 255.0
        feats[style] = np.array([a.mean(), *(arr[..., :3] * a[..., None]).sum((0, 1, 2)) / a.sum() / 255])
    keys = list(feats)
    for i, s in enumerate(keys):
        for t in keys[i + 1:]:
            assert np.abs(feats[s] - feats[t]).max() > 0.01, (s, t)


def test_unknown_style_and_class_raise():
    with pytest.raises(KeyError):
        drawings.draw("violin", 0, 64, "oil-painting")
    with pytest.raises(KeyError):
        drawings.draw("kazoo", 0, 64)
