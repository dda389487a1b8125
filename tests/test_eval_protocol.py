"""`avsep eval --protocol sop|avpc`: each rule of the references' calc_metrics and test set, pinned on real
signals (avsep_cli.protocols), and the option through the CLI with a tiny random-weight model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from avsep_cli import dsp, metrics, protocols
from avsep_cli.protocols import MixtureScore
from clihelp import assert_one_error, run

SR = dsp.SAMPLE_RATE


def tone(f0: float, n: int = protocols.WINDOW, amp: float = 0.4, seed: int = 0) -> np.ndarray:
    """A decaying harmonic tone with a little noise: a real, non-stationary source."""
    t = np.arange(n) / SR
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    x = x * np.exp(-((t % 1.5) * 2)) + 0.01 * rng.standard_normal(n)
    return (amp * x / np.abs(x).max()).astype(np.float32)


def test_scored_length_is_their_istft_length_and_identity_masks_give_the_mixture_back():
    mix = torch.from_numpy(tone(220.0) + tone(330.0, seed=1))[None]  # (1, 65535)
    spec = dsp.stft(mix)
    assert spec.shape[-1] == 256  # 1 + 65535 // 256 centred frames
    est, rt = protocols.reconstruct(mix, torch.ones(1, 2, dsp.N_FREQ, 256))
    assert protocols.SCORED == 65280 and est.shape == (1, 2, 65280) and rt.shape == (1, 65280)
    # the round trip is the mixture's first 65,280 samples (no shift), not its centre or its end
    assert torch.allclose(rt[0], mix[0, :65280].double(), atol=1e-6)
    assert torch.allclose(est[0, 0], rt[0]) and torch.allclose(est[0, 1], rt[0])


def test_estimates_and_the_mixture_round_trip_are_clipped_to_one():
    loud = torch.from_numpy(3.0 * tone(220.0))[None]  # peaks at 1.2
    assert loud.abs().max() > 1.1
    est, rt = protocols.reconstruct(loud, torch.ones(1, 1, dsp.N_FREQ, 256))
    assert est.abs().max() == 1.0 and rt.abs().max() == 1.0
    inside = loud[0, :65280].abs() < 0.99  # unclipped samples keep their value
    assert torch.allclose(rt[0][inside], loud[0, :65280][inside].double(), atol=1e-6)
    assert int((rt[0].abs() == 1.0).sum()) == int((loud[0, :65280].abs() >= 1.0).sum())


def _batch(scale_ref1: float = 1.0, scale_est1: float = 1.0):
    s1, s2 = tone(220.0), tone(440.0, seed=3)
    refs = torch.from_numpy(np.stack([s1 * scale_ref1, s2]))[None].double()  # (1, 2, 65535)
    mix = refs.sum(1).float()
    # an imperfect separation: each estimate keeps a little of the other source
    est = torch.stack([refs[0, 0] * 0.9 + 0.1 * refs[0, 1], refs[0, 1] * 0.8 + 0.2 * refs[0, 0]])[None]
    est = est[..., :65280] * torch.tensor([scale_est1, 1.0], dtype=torch.float64)[None, :, None]
    _, rt = protocols.reconstruct(mix, torch.ones(1, 1, dsp.N_FREQ, 256))
    return refs, est, rt


def test_scores_are_mir_eval_bss_eval_sources_means_over_sources_without_permutation():
    refs, est, rt = _batch()
    res = protocols.score(refs, est, rt)
    g = refs[0, :, :65280].numpy()
    sdr, sir, sar, _ = metrics.bss_eval_sources(g, est[0].numpy(), False)  # mir_eval's drop-in
    sdr_mix, _, _, _ = metrics.bss_eval_sources(g, np.stack([rt[0].numpy()] * 2), False)
    assert bool(res["valid"][0])
    for key, ref in (("sdr", sdr), ("sir", sir), ("sar", sar), ("sdr_mixture", sdr_mix)):
        assert math.isclose(float(res[key][0]), float(ref.mean()), abs_tol=1e-6), key
    # the mixture SDR is that of the STFT -> iSTFT round trip, not of the raw mixture
    raw = refs[0].sum(0)[:65280].numpy()
    sdr_raw, _, _, _ = metrics.bss_eval_sources(g, np.stack([raw] * 2), False)
    assert float(res["sdr_mixture"][0]) != pytest.approx(float(sdr_raw.mean()), abs=1e-9)


def test_silence_rule_is_the_sum_of_magnitudes_not_our_mean_square():
    # sum |x| of ~2e-4: loud enough for their rule (> 1e-5), silent for ours (mean square <= 1e-10)
    tiny = 2e-4 / float(np.abs(tone(220.0)[:65280]).sum())
    refs, est, rt = _batch(scale_ref1=tiny)
    assert float(refs[0, 0, :65280].abs().sum()) > protocols.SILENT_SUM
    assert not bool(metrics.bss_eval(refs[..., :65280], est).valid[0, 0])  # ours: skipped
    assert bool(protocols.score(refs, est, rt)["valid"][0])  # theirs: scored
    # below 1e-5 in one reference, or in one estimate: the whole mixture is skipped (NaN, not 0)
    for kw in ({"scale_ref1": tiny / 100}, {"scale_est1": 1e-9}):
        res = protocols.score(*_batch(**kw))
        assert not bool(res["valid"][0]) and all(math.isnan(float(res[k][0])) for k in protocols.KEYS)


def _row(batch: int, sdr: float, valid: bool = True) -> MixtureScore:
    v = sdr if valid else math.nan
    return MixtureScore("x", batch, "a+b", "1+2", valid, sdr_mixture=0.0 if valid else math.nan, sdr=v, sir=v, sar=v)


def test_averaging_is_per_mixture_then_per_batch_then_over_batches_unweighted():
    scores = [_row(0, 1.0), _row(0, 2.0), _row(0, 3.0), _row(0, 99.0, valid=False), _row(1, 10.0)]
    sm = protocols.average(scores)
    assert sm["sdr"] == pytest.approx((2.0 + 10.0) / 2)  # batch means 2 and 10, equal weight
    assert sm["plain"]["sdr"] == pytest.approx(16.0 / 4)  # what a mean over mixtures would say
    assert (sm["mixtures"], sm["valid"], sm["skipped"], sm["batches"]) == (5, 4, 1, 2)
    # a batch with no valid mixture counts as 0 dB (their empty AverageMeter averages to 0.)
    sm = protocols.average([_row(0, 6.0), _row(1, 5.0, valid=False)])
    assert sm["sdr"] == pytest.approx(3.0) and sm["plain"]["sdr"] == pytest.approx(6.0)


def test_sop_window_is_centred_on_the_middle_frame_with_zeros_in_front():
    ramp = np.arange(1, 66151, dtype=np.float32)  # a 6-s clip: 48 frames at 8 fps
    off = protocols.centre_offset(len(ramp))
    # frame 24 - 0.5 at 8 fps = 2.9375 s = sample 32385; the window is centred there: 32385 - 32767
    assert off == -382
    win = protocols.centre_window(ramp, off)
    assert win.shape == (65535,)
    assert (win[:382] == 0).all() and win[382] == 1.0 and win[65533] == 65152.0 and win[65534] == 0.0
    # a long clip: the window lies inside it, centred on its middle frame
    long = np.arange(SR * 60, dtype=np.float32)
    off = protocols.centre_offset(len(long))
    assert off == int((240 - 0.5) / 8 * SR) - 32767
    assert np.array_equal(protocols.centre_window(long, off)[:-1], long[off : off + 65534])


def test_short_clips_are_tiled_to_the_window():
    short = tone(220.0, n=20000)
    tiled = protocols.tile(short)
    assert len(tiled) == 20000 * 4 and np.array_equal(tiled[20000:40000], short)
    assert protocols.tile(tone(220.0, n=70000)).shape == (70000,)


def test_avpc_window_is_a_seeded_chunk_and_second_and_short_clips_use_their_last_window():
    n = SR * 95  # five 20-s chunks: chunks 0..3 may be drawn
    offs = {protocols.chunk_offset(i, s, n) for i in range(40) for s in range(2)}
    for off in offs:
        sec, rem = divmod(off, SR)
        assert rem == 0 and (10 <= sec <= 13 or (20 <= sec <= 73 and sec % 20 <= 13))
    assert max(offs) >= 60 * SR  # the fourth chunk is drawn, the fifth (last) never
    assert protocols.chunk_offset(7, 1, n) == protocols.chunk_offset(7, 1, n)  # seeded by index + n
    assert protocols.chunk_offset(3, 0, 66150) == 66150 - 65535


def test_avpc_normalisation_is_min_max_and_keeps_an_offset():
    x = tone(220.0) ** 2 - 0.05  # an asymmetric waveform
    y = protocols.normalise(x)
    r = float(x.max() - x.min())
    assert y.min() == pytest.approx(-1.0) and y.max() == pytest.approx((r / (r + 1e-3) - 0.5) * 2, abs=1e-6)
    assert abs(float(y.mean())) > 0.1  # not zero-mean


def test_test_sets_follow_their_pairing(tiny_corpus):
    from avsep_cli.layout import open_corpus

    solos = open_corpus(tiny_corpus).clips(split="train", kind="solo")
    sop = protocols.build_test_set(tiny_corpus, "sop", mix=2, split="train", num=5)
    assert len(sop) == min(5, len(solos))
    ordered = protocols.test_list(solos, 0)
    first5 = {c.id for c in ordered[:5]}
    for i, it in enumerate(sop):
        assert it.clips[0].id == ordered[i].id and {c.id for c in it.clips} <= first5  # partners from the cut list
    assert [it.clips for it in sop] == [it.clips for it in protocols.build_test_set(tiny_corpus, "sop", mix=2, split="train", num=5)]
    big = protocols.build_test_set(tiny_corpus, "avpc", mix=3, split="train", num=200)
    assert len(big) == min(200, 10 * len(solos))  # the list repeated 10 times, then cut
    assert all(it.clips[n].id != it.clips[0].id for it in big for n in (1, 2))  # never the first clip again
    # Sound-of-Pixels may draw the first clip itself (random.randint over the whole cut list)
    many = [protocols.partners(i, 4, 2, list("abcd"), protocols.RULES["sop"]) for i in range(40)]
    assert any(p[0] == p[1] for p in many)


@pytest.mark.parametrize("protocol", ["sop", "avpc"])
def test_sources_and_mixture_are_scaled_as_their_datasets_do(tiny_corpus, protocol):
    from avsep_cli.datasets import ClipReader

    item = protocols.build_test_set(tiny_corpus, protocol, mix=2, split="train", num=2)[0]
    rule = protocols.RULES[protocol]
    mix, refs = protocols.load_item(item, rule, ClipReader(tiny_corpus))
    assert refs.shape == (2, 65535) and mix.shape == (65535,)
    if protocol == "sop":
        assert np.allclose(mix, refs.sum(0)) and np.abs(refs).max() <= 0.5  # sources / 2, summed
    else:
        assert np.allclose(mix, refs.mean(0)) and refs.min() == pytest.approx(-1.0)  # normalised, mean


def test_cli_protocol_sop_with_a_tiny_model(tiny_corpus, tiny_weights, tmp_path, capsys, no_shipped_weights):
    j = tmp_path / "sop.json"
    rc, out, err = run(capsys, "eval", "-m", "tiny", "--weights", tiny_weights, "--data", tiny_corpus, "--split",
                       "train", "--num", "4", "--protocol", "sop", "--json", j, "--batch-size", "3")
    assert rc == 0, err
    assert "sop protocol" in out and "SDR_mix" in out
    data = json.loads(j.read_text())
    assert data["setup"]["protocol"] == "sop" and len(data["setup"]["items"]) == 4
    m = data["methods"]["tiny"]
    rows = [r for r in m["mixtures"] if r["valid"]]
    assert len(m["mixtures"]) == 4 and m["summary"]["valid"] == len(rows) > 0
    # 4 mixtures are one averaging batch of 32 (whatever --batch-size): the mean of the mixture means
    assert m["summary"]["batches"] == 1
    assert m["summary"]["sdr"] == pytest.approx(np.mean([r["sdr"] for r in rows]), abs=1e-3)
    assert m["summary"]["sdri"] == pytest.approx(m["summary"]["sdr"] - m["summary"]["sdr_mixture"], abs=1e-3)


def test_cli_default_protocol_is_ours(tiny_corpus, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    base = ["eval", "-m", "mixture", "--data", tiny_corpus, "--num", "2", "--no-duets"]
    assert run(capsys, *base, "--json", a)[0] == 0
    assert run(capsys, *base, "--protocol", "avsep", "--json", b)[0] == 0
    assert a.read_bytes() == b.read_bytes() and "protocol" not in json.loads(a.read_text())["setup"]


@pytest.mark.parametrize(("extra", "phrase"), [
    (["--window", "10s"], "window of 65535 samples"),
    (["--plots", "png"], "--plots goes with --protocol avsep"),
])
def test_cli_reference_protocol_refuses_what_it_cannot_honour(tiny_corpus, capsys, extra, phrase):
    rc, _, err = run(capsys, "eval", "-m", "mixture", "--data", tiny_corpus, "--protocol", "avpc", *extra)
    assert rc == 2 and err.count("\n") == 1 and phrase in err


def test_bad_protocol_is_one_line_exit_2(capsys):
    rc, _, err = run(capsys, "eval", "-m", "mixture", "--data", "nowhere", "--protocol", "mir_eval")
    assert_one_error(rc, err, "'--protocol'")
