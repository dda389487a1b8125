"""Joint masks (`--masks joint`, `dsp.joint_masks`, `methods.JointMasks`, the separator's windows): the soft
masks of the sources heard together are shared out by the Wiener rule, so the estimates add up to the
mixture; `own` keeps each method's rule (AVPC's and Sound-of-Pixels' 0.5 threshold). Real tiny models on
the tiny corpus and constant-mask methods whose right answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avsep_cli import dsp, layout, media
from avsep_cli.cli import main
from avsep_cli.errors import AvsepError
from avsep_cli.methods import JointMasks, MixBatch, get_method, with_masks
from avsep_cli.separator import Separator
from clihelp import assert_one_error, run

pytestmark = pytest.mark.usefixtures("no_shipped_weights")


def test_joint_masks_are_the_wiener_rule():
    torch.manual_seed(0)
    m = torch.rand(2, 3, 8, 5)  # (B, S, F, T)
    j = dsp.joint_masks(m)
    torch.testing.assert_close(j.sum(1), torch.ones(2, 8, 5))  # a partition of the mixture in every bin
    torch.testing.assert_close(j, m**2 / (m**2).sum(1, keepdim=True), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dsp.joint_masks(0.3 * m), j, rtol=1e-5, atol=1e-6)  # only the ratios count
    assert torch.equal(dsp.joint_masks(torch.zeros(1, 2, 4, 4)), torch.full((1, 2, 4, 4), 0.5))  # nobody: equal shares
    loud = torch.tensor([0.9, 0.3]).view(1, 2, 1, 1).expand(1, 2, 4, 4)
    torch.testing.assert_close(dsp.joint_masks(loud)[0, :, 0, 0], torch.tensor([0.9, 0.1]))  # 0.81 / 0.90, 0.09 / 0.90


def _batch(method, length: int, seed: int = 0) -> MixBatch:
    g = torch.Generator().manual_seed(seed)
    size = method.frame_size
    return MixBatch(mixture=torch.randn(2, length, generator=g) * 0.1, stems=torch.zeros(2, 2, 0), classes=[["a", "b"]] * 2,
                    frames=torch.randint(0, 255, (2, 2, method.frames_per_source, 3, size, size), dtype=torch.uint8, generator=g))


@pytest.mark.parametrize("length", [8191, 2 * dsp.SEGMENT + 1000])  # one window; three segments, the last one short
def test_joint_estimates_add_up_to_the_mixture(tiny_weights, length):
    """The tiny model (binary masks of its own): joint estimates sum to the mixture, over any length
    (cut in the method's segments as its own `separate` cuts it); its own estimates do not."""
    own = get_method("tiny", weights=str(tiny_weights))
    joint = with_masks(own, "joint")
    assert isinstance(joint, JointMasks) and joint.name == "tiny+joint" and joint.frame_size == own.frame_size
    batch = _batch(own, length)
    est = joint.separate(batch)
    assert est.shape == (2, 2, length)
    torch.testing.assert_close(est.sum(1), batch.mixture, rtol=0, atol=1e-4)
    assert (own.separate(batch).sum(1) - batch.mixture).abs().max() > 1e-2
    assert with_masks(own, "own") is own
    mixture = get_method("mixture")
    assert with_masks(mixture, "joint") is mixture  # reference methods have no masks: left as they are


class ThresholdedConstant:
    """Soft masks: 0.9 for the first player (violin), 0.3 for any other; like AVPC, its own rule thresholds
    them at 0.5 (1 and 0)."""

    name, frames_per_source, frame_gap, frame_size, segment, binary = "constant", 1, 3.0, 32, 16384, True

    def masks(self, batch: MixBatch, soft: bool = False) -> torch.Tensor:
        b, s = batch.frames.shape[:2]
        value = torch.tensor([[0.9 if c == "violin" else 0.3 for c in row] for row in batch.classes])  # (B, S)
        m = value[:, :, None, None].expand(b, s, dsp.N_FREQ, 1 + batch.mixture.shape[-1] // dsp.HOP).clone()
        return m if soft else self.own_rule(m)

    def own_rule(self, masks: torch.Tensor) -> torch.Tensor:
        return (masks > 0.5).float()

    def separate(self, batch: MixBatch) -> torch.Tensor:
        return dsp.masked_waveforms(batch.mixture, self.masks(batch))


def _boxes(seconds: float, until: float | None = None) -> dict:
    """violin on the left (until `until` seconds), cello on the right, at 4 fps."""
    return {"fps": 4.0, "players": [{"class": c, "boxes": [[10.0 + 70 * k, 20.0, 70.0 + 70 * k, 100.0]
                                                          if until is None or k or i < until * 4 else None
                                                          for i in range(int(np.ceil(seconds * 4)))]}
                                    for k, c in enumerate(("violin", "cello"))]}


@pytest.fixture(scope="module")
def clip(tiny_corpus):
    return layout.open_corpus(tiny_corpus).clips(kind="duet")[0].video


def _run(tiny_weights, clip, masks: str, rate: str, until=None):
    sep = Separator("tiny", tiny_weights, None, masks=masks, residual=True)
    sep.method, sep.segment = ThresholdedConstant(), ThresholdedConstant.segment
    return sep.separate_file(clip, boxes=_boxes(media.probe(clip).duration, until), sample_rate=rate, bits=32)


@pytest.mark.parametrize("rate", ["model", "input"])
def test_separator_shares_the_mixture_among_the_players_heard_together(tiny_weights, clip, rate):
    """Two players over the whole clip: joint gives the violin 0.9 and the cello 0.1 of the mixture (the
    Wiener rule on 0.9 and 0.3), summing to it; own gives the thresholded masks, 1 and 0. At the models'
    rate and full band alike."""
    own, joint = (_run(tiny_weights, clip, m, rate) for m in ("own", "joint"))
    x = joint.stems["violin_1"] + joint.stems["cello_1"] + joint.residual
    scale = np.abs(x).max()
    np.testing.assert_allclose(joint.stems["violin_1"], 0.9 * x, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(joint.stems["cello_1"], 0.1 * x, rtol=0, atol=1e-4 * scale)
    assert np.abs(joint.residual).max() < 1e-4 * scale
    np.testing.assert_allclose(own.stems["violin_1"], x, rtol=0, atol=1e-4 * scale)
    assert np.abs(own.stems["cello_1"]).max() < 1e-4 * scale


def test_a_player_heard_alone_keeps_its_own_mask(tiny_weights, clip):
    """The violin leaves at 1 s: in the windows where only the cello is seen, the cello's own rule (0.3 ->
    0) stands, as with `own`; it is not handed the whole mixture."""
    joint = _run(tiny_weights, clip, "joint", "model", until=1.0)
    mixture = media.load_audio(clip, dsp.SAMPLE_RATE, duration=media.probe(clip).duration)
    cello = joint.stems["cello_1"]
    alone = slice(int(2.6 * dsp.SAMPLE_RATE), len(mixture))  # after the last window the violin touches
    assert np.abs(mixture[alone]).max() > 1e-3 and np.abs(cello[alone]).max() < 1e-6
    shared = slice(0, int(0.5 * dsp.SAMPLE_RATE))
    np.testing.assert_allclose(cello[shared], 0.1 * mixture[shared], rtol=0, atol=1e-4 * np.abs(mixture).max())


def test_cli_masks_option_and_manifest(capsys, tiny_weights, tiny_corpus, tmp_path):
    duet = layout.open_corpus(tiny_corpus).clips(kind="duet")[0]
    base = ["separate", str(duet.video), "--method", "tiny", "--weights", str(tiny_weights), "--boxes", str(duet.sidecar)]
    for mode in ("own", "joint"):
        assert main([*base, "-o", str(tmp_path / mode), "--masks", mode]) == 0
        assert json.loads((tmp_path / mode / "manifest.json").read_text())["masks"] == mode
    assert main([*base, "-o", str(tmp_path / "default")]) == 0
    assert json.loads((tmp_path / "default" / "manifest.json").read_text())["masks"] == "joint"
    capsys.readouterr()
    assert_one_error(*run(capsys, *base, "-o", tmp_path / "bad", "--masks", "wiener")[::2], "--masks")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(AvsepError, match="--masks must be own or joint"):  # the library says the same
        Separator("tiny", tiny_weights, None, masks="wiener")
    with pytest.raises(AvsepError, match="--masks must be own or joint"):
        with_masks(get_method("tiny", weights=str(tiny_weights)), "both")


def test_eval_joint_rows(capsys, tiny_weights, tiny_corpus, tmp_path):
    """`avsep eval --masks joint`: learned rows are NAME+joint, reference rows unchanged, and the setup says so."""
    j = tmp_path / "e.json"
    code = main(["eval", "--method", "tiny,mixture", "--weights", str(tiny_weights), "--data", str(tiny_corpus),
                 "--num", "3", "--no-duets", "--masks", "joint", "--json", str(j)])
    assert code == 0
    data = json.loads(j.read_text())
    assert sorted(data["methods"]) == ["mixture", "tiny+joint"] and data["setup"]["masks"] == "joint"
    assert all(s["valid"] for s in data["methods"]["tiny+joint"]["sources"])
