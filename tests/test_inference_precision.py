"""Inference precision (`--precision bf16` of `avsep eval` / `avsep separate`, `Separator(precision=...)`):
the networks' convolutions run in bfloat16 while the signal path and the masks stay float32, and the
results stay close to float32's (what bf16 rounding moves, not more)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from avsep_cli import dsp, layout
from avsep_cli.errors import AvsepError
from avsep_cli.methods import MixBatch, get_method
from clihelp import run

pytestmark = pytest.mark.usefixtures("no_shipped_weights")  # tests pass their own weights (tiny_weights)


def _snr(ref, est) -> float:
    ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - est) ** 2), 1e-30)))


def _methods(tiny_weights, precision: str):
    """The tiny mask net (from its checkpoint, as the CLI loads it) and a small random IAL-CMS (seed 0)."""
    from avsep_cli.models.ialcms import IALCMS
    from avsep_cli.training.systems import IALCMSMethod

    torch.manual_seed(0)
    ialcms = IALCMSMethod(IALCMS(ngf=2, dim=16, blocks=1, frame_size=32), frame_size=32, precision=precision)
    return get_method("tiny", weights=str(tiny_weights), precision=precision), ialcms


LENGTH = 16383  # 64 STFT frames: IAL-CMS's deepest maps 2 frames wide (see the fallback test)


def _batch(method, length: int = LENGTH) -> MixBatch:
    g = torch.Generator().manual_seed(1)
    size = method.frame_size
    return MixBatch(mixture=torch.randn(2, length, generator=g) * 0.1, stems=torch.zeros(2, 2, 0),
                    classes=[["a", "b"]] * 2,
                    frames=torch.randint(0, 255, (2, 2, method.frames_per_source, 3, size, size), dtype=torch.uint8,
                                         generator=g))


def _run(method, soft: bool = False, length: int = LENGTH):
    """-> (masks, estimates, dtypes the method's convolutions gave out)."""
    seen = set()
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.add(out.dtype))
             for m in method.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert hooks, "the method's net has convolutions"
    if soft:
        method.binary = False  # the mask net's sigmoid itself, not its 0.5 threshold
    batch = _batch(method, length)
    try:
        return method.masks(batch), method.separate(batch), seen
    finally:
        for h in hooks:
            h.remove()


def test_bf16_runs_the_convolutions_in_bf16_and_keeps_the_signal_path_float32(tiny_weights):
    for fp32, bf16 in zip(_methods(tiny_weights, "fp32"), _methods(tiny_weights, "bf16")):
        assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
        m32, e32, seen32 = _run(fp32)
        m16, e16, seen16 = _run(bf16)
        assert seen32 == {torch.float32} and seen16 == {torch.bfloat16}, (fp32.name, seen32, seen16)
        for t in (m32, e32, m16, e16):
            assert t.dtype == torch.float32 and torch.isfinite(t).all()
        assert m16.shape == m32.shape and e16.shape == e32.shape
        # the masks are what separate applies, in bf16 too
        torch.testing.assert_close(dsp.masked_waveforms(_batch(bf16).mixture, m16, "linear"), e16, rtol=0, atol=1e-5)
        # close to float32: bf16 rounding (8 mantissa bits) moves the estimates, a little
        snr = _snr(e32.numpy(), e16.numpy())
        assert 20 < snr < 120, (fp32.name, snr)  # tiny's binary masks flip a few bins near 0.5: ~28 dB; IAL-CMS ~60 dB


def test_bf16_soft_masks_differ_from_fp32_by_rounding_only(tiny_weights):
    """The mask values themselves (tiny: sigmoid before the threshold; IAL-CMS: its soft masks): nonzero
    differences (the net did run in bf16) of the size of bf16 rounding (relative L2 below 2 %)."""
    for fp32, bf16 in zip(_methods(tiny_weights, "fp32"), _methods(tiny_weights, "bf16")):
        m32, m16 = _run(fp32, soft=True)[0].double(), _run(bf16, soft=True)[0].double()
        rel = float((m16 - m32).norm() / m32.norm())
        assert 1e-5 < rel < 0.02, (fp32.name, rel)


def test_ialcms_short_mixtures_fall_back_to_fp32(tiny_weights):
    """At most 32 STFT frames (< 8192 samples) IAL-CMS's deepest maps are one frame wide, where oneDNN's bf16
    convolutions give garbage: such calls run in float32 (the same numbers as fp32), longer ones in bf16."""
    fp32, bf16 = _methods(tiny_weights, "fp32")[1], _methods(tiny_weights, "bf16")[1]
    m32, e32, _ = _run(fp32, length=8191)
    m16, e16, seen = _run(bf16, length=8191)
    assert seen == {torch.float32}
    torch.testing.assert_close(m16, m32, rtol=0, atol=0)
    torch.testing.assert_close(e16, e32, rtol=0, atol=0)
    assert _run(bf16, length=8192)[2] == {torch.bfloat16}  # 33 frames


def test_unknown_precision_is_refused_by_the_library(tiny_weights):
    from avsep_cli.separator import Separator

    with pytest.raises(AvsepError, match="unknown precision 'fp16': expected fp32 or bf16"):
        get_method("tiny", weights=str(tiny_weights), precision="fp16")
    with pytest.raises(AvsepError, match="unknown precision"):
        get_method("mixture", precision="half")
    with pytest.raises(AvsepError, match="unknown precision"):
        Separator("tiny", tiny_weights, None, precision="bf15")


def test_eval_bf16_through_the_cli(tiny_corpus, tiny_weights, tmp_path, capsys):
    scores = {}
    for p in ("fp32", "bf16"):
        j = tmp_path / f"{p}.json"
        rc, out, err = run(capsys, "eval", "-m", "tiny", "--weights", tiny_weights, "--data", tiny_corpus, "--num", "4",
                           "--no-duets", "--precision", p, "--json", j)
        assert rc == 0, err
        data = json.loads(j.read_text())
        assert data["setup"]["precision"] == p
        scores[p] = [s["sdr"] for s in data["methods"]["tiny"]["sources"]]
    assert len(scores["bf16"]) == len(scores["fp32"]) == 8
    assert all(s is not None and np.isfinite(s) for s in scores["bf16"] + scores["fp32"])
    diff = np.abs(np.subtract(scores["bf16"], scores["fp32"]))
    assert diff.max() < 0.5 and diff.max() > 0, diff  # bf16 rounding moves SDR, a little


def test_separate_bf16_through_the_cli(capsys, tiny_corpus, tiny_weights, tmp_path):
    duet = layout.open_corpus(tiny_corpus).clips(kind="duet")[0]
    stems = {}
    for p in ("fp32", "bf16"):
        out = tmp_path / p
        extra = ["--precision", p] if p == "bf16" else []  # fp32 is the default
        rc, _, err = run(capsys, "separate", duet.video, "-o", out, "--method", "tiny", "--weights", tiny_weights,
                         "--boxes", duet.sidecar, "--sample-rate", "model", "--bits", "32", *extra)
        assert rc == 0, err
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["precision"] == p
        stems[p] = {i["cls"]: sf.read(out / i["file"])[0] for i in manifest["identities"]}
    assert sorted(stems["bf16"]) == sorted(stems["fp32"]) == sorted(duet.classes)
    for cls, ref in stems["fp32"].items():
        est = stems["bf16"][cls]
        assert est.shape == ref.shape and np.isfinite(est).all() and np.abs(est).max() > 0
        assert 20 < _snr(ref, est) < 120, cls
