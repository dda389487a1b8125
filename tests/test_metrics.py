"""Tests for avsep_cli.metrics: agreement with mir_eval.separation.bss_eval_sources (the reference
implementation the field reports) to within 0.01 dB, the batched torch API against the NumPy drop-in,
silent-source handling, SI-SDR, SDR improvement and the summary helper. The block Levinson path (the
default on CPU) is also pinned on its own, without its dense fallback, against the dense path and
mir_eval: random, music-like and near-singular inputs, 1 to 3 sources, 1 s to 10 s, several block sizes
and filter lengths, and the per-clip fallback where its check rejects a clip.

mir_eval is slow (about 0.5 s per 2-source 6-s clip, several seconds for 3 sources), so each reference
result is computed once per module and the cases are chosen to cover random and music-like signals,
2 and 3 sources, 1,100 samples / 1 s / 6 s (65535) / 10 s at 11025 Hz, permuted estimates and both settings of
compute_permutation, plus numerically awkward inputs (nearly singular Gram matrices, near-perfect
estimates), without repeating work.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from avsep_cli import metrics
from signals import harmonic_notes

import mir_eval.separation as mir_sep  # noqa: E402  (test dependency: the reference implementation)

SR = 11025
# The promise (README, docs/evaluation.md): agreement with mir_eval 0.8.2 within 0.01 dB. Measured on the cases
# below (the worst is near-perfect-2src-1s, ~80-90 dB ratios): 7.4e-6 dB; on 1,100-sample windows of 2-source
# music, 4.5e-5 dB. Where a reference is practically silent (~-145 dBFS) the Gram matrix is numerically
# singular and ratios around 95 dB differ by up to 1.5 dB between the two, both being rounding noise there.
TOL_DB = 0.01


# ---------------------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------------------


def noise_bursts(seed: int, n: int) -> np.ndarray:
    """Drum-like source: decaying, slightly low-passed noise bursts at random onsets, peak 0.5."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n)
    for onset in rng.integers(0, n, size=max(1, n // 2500)):
        m = min(3000, n - onset)
        t = np.arange(m) / SR
        burst = rng.standard_normal(m) * np.exp(-t * rng.uniform(20, 60))
        k = int(rng.integers(1, 6))
        out[onset : onset + m] += np.convolve(burst, np.ones(k) / k, "same")
    return 0.5 * out / np.abs(out).max()


def music_sources(seed: int, n_src: int, n: int) -> np.ndarray:
    """(S, n) music-like references: harmonic note lines, the second source noise bursts."""
    srcs = []
    for j in range(n_src):
        if j == 1:
            srcs.append(noise_bursts(seed + 100, n))
        else:
            line = harmonic_notes(seed + j, seconds=n / SR + 0.1, midi_range=(45 + 7 * j, 76 + 5 * j), vibrato=0.003)
            srcs.append(line[:n].astype(np.float64))
    return np.stack(srcs)


def masked_estimates(refs: np.ndarray, kind: str) -> np.ndarray:
    """Realistic estimates: an STFT ratio or binary mask (n_fft 1022, hop 256) applied to the mixture."""
    window = torch.hann_window(1022, dtype=torch.float64)
    spec = torch.stft(torch.from_numpy(refs), 1022, 256, window=window, return_complex=True)  # (S, 512, T)
    mag = spec.abs() + 1e-8
    if kind == "ratio":
        mask = mag / mag.sum(0)
    else:
        mask = (mag == mag.max(0, keepdim=True).values).to(torch.float64)
    est = torch.istft(mask * spec.sum(0), 1022, 256, window=window, length=refs.shape[1])
    return est.numpy()


def random_case(seed: int, n_src: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """White-noise references; estimates = leaky mixing + additive noise."""
    rng = np.random.default_rng(seed)
    refs = rng.standard_normal((n_src, n))
    mix = np.eye(n_src) + 0.3 * rng.random((n_src, n_src))
    return refs, mix @ refs + 0.2 * rng.standard_normal((n_src, n))


def hard_case(kind: str, seed: int, n_src: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Numerically awkward inputs: steady pure tones (a nearly singular Gram matrix: each reference spans
    only two dimensions of its 512 delays) and a near-perfect estimate (~80-90 dB: tiny residuals)."""
    rng = np.random.default_rng(seed)
    if kind == "sines":
        t = np.arange(n) / SR
        refs = np.stack([np.sin(2 * np.pi * (440 + 220 * j) * t + j) for j in range(n_src)])
        mix = np.eye(n_src) + 0.25 * rng.random((n_src, n_src))
        return refs, mix @ refs + 0.01 * rng.standard_normal((n_src, n))
    refs = rng.standard_normal((n_src, n))
    return refs, refs + 1e-4 * rng.standard_normal((n_src, n))


# name -> (kind, seed, n_src, n_samples, estimate order, compute_permutation)
CASES = {
    "random-2src-1s": ("random", 0, 2, SR, (0, 1), True),
    "random-3src-1s-permuted": ("random", 1, 3, SR, (2, 0, 1), True),
    "music-2src-6s-ratio": ("ratio", 2, 2, 65535, (0, 1), True),
    "music-2src-6s-binary-permuted": ("binary", 3, 2, 65535, (1, 0), True),
    "music-3src-1s-binary-permuted": ("binary", 4, 3, SR, (1, 2, 0), True),
    "music-2src-10s-ratio": ("ratio", 5, 2, 10 * SR, (0, 1), True),
    "music-3src-6s-ratio-noperm": ("ratio", 6, 3, 65535, (0, 1, 2), False),
    "pure-sines-2src-1s": ("sines", 8, 2, SR, (0, 1), True),
    "near-perfect-2src-1s": ("nearperfect", 9, 2, SR, (1, 0), True),
    "music-2src-1100-samples-ratio": ("ratio", 10, 2, 1100, (0, 1), True),  # a short (framewise) window
}


def make_case(name: str) -> tuple[np.ndarray, np.ndarray, bool]:
    kind, seed, n_src, n, order, perm = CASES[name]
    if kind == "random":
        refs, est = random_case(seed, n_src, n)
    elif kind in ("sines", "nearperfect"):
        refs, est = hard_case(kind, seed, n_src, n)
    else:
        refs = music_sources(seed, n_src, n)
        est = masked_estimates(refs, kind)
    return refs, est[list(order)], perm


_MIR_CACHE: dict[str, tuple] = {}


def mir_eval_result(name: str):
    """mir_eval's answer for a case, computed once per test session."""
    if name not in _MIR_CACHE:
        refs, est, perm = make_case(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mir_eval.separation is deprecated in 0.8
            _MIR_CACHE[name] = mir_sep.bss_eval_sources(refs, est, compute_permutation=perm)
    return _MIR_CACHE[name]


# ---------------------------------------------------------------------------------------------------
# Agreement with mir_eval
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_matches_mir_eval(name):
    refs, est, perm = make_case(name)
    ours = metrics.bss_eval_sources(refs, est, compute_permutation=perm)
    theirs = mir_eval_result(name)
    for label, a, b in zip(("sdr", "sir", "sar"), ours[:3], theirs[:3]):
        assert a.shape == b.shape == (refs.shape[0],)
        assert np.all(np.isfinite(a)), label
        np.testing.assert_allclose(a, b, rtol=0, atol=TOL_DB, err_msg=label)
    np.testing.assert_array_equal(ours[3], theirs[3])


@pytest.mark.parametrize("name", ["random-3src-1s-permuted", "music-2src-6s-binary-permuted", "music-3src-1s-binary-permuted"])
def test_permutation_recovered(name):
    """Estimates were shuffled by `order`; perm[j] must point at the estimate made for reference j."""
    refs, est, _ = make_case(name)
    order = CASES[name][4]
    _, _, _, perm = metrics.bss_eval_sources(refs, est)
    np.testing.assert_array_equal(np.asarray(order)[perm], np.arange(refs.shape[0]))


def test_single_source_1d_matches_mir_eval():
    """1-D inputs are one source; its SIR is +inf in both (no other reference to interfere)."""
    rng = np.random.default_rng(7)
    ref = rng.standard_normal(SR)
    est = np.convolve(ref, [1.0, 0.4, -0.2], "same") + 0.3 * rng.standard_normal(SR)
    ours = metrics.bss_eval_sources(ref, est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = mir_sep.bss_eval_sources(ref, est)
    assert ours[1][0] == np.inf and theirs[1][0] == np.inf
    for a, b in zip((ours[0], ours[2]), (theirs[0], theirs[2])):
        np.testing.assert_allclose(a, b, rtol=0, atol=TOL_DB)
    np.testing.assert_array_equal(ours[3], [0])


def test_noperm_scores_given_order():
    """compute_permutation=False scores estimate j against reference j even when that is the wrong match."""
    refs, est, _ = make_case("random-2src-1s")
    swapped = est[::-1]
    sdr_perm, _, _, perm = metrics.bss_eval_sources(refs, swapped)
    sdr_fixed, _, _, fixed = metrics.bss_eval_sources(refs, swapped, compute_permutation=False)
    np.testing.assert_array_equal(perm, [1, 0])
    np.testing.assert_array_equal(fixed, [0, 1])
    assert np.all(sdr_fixed < 0) and np.all(sdr_perm > 5)


# ---------------------------------------------------------------------------------------------------
# Input validation and silent sources
# ---------------------------------------------------------------------------------------------------


def test_compat_validation_errors():
    rng = np.random.default_rng(0)
    refs = rng.standard_normal((2, 1000))
    with pytest.raises(ValueError):
        metrics.bss_eval_sources(refs, refs[:, :999])
    with pytest.raises(ValueError):
        metrics.bss_eval_sources(refs[None], refs[None])
    silent_ref = refs.copy()
    silent_ref[1] = 0
    silent_est = refs.copy()
    silent_est[0] = 0
    for r, e in ((silent_ref, refs), (refs, silent_est)):
        with pytest.raises(ValueError):
            metrics.bss_eval_sources(r, e)
        with warnings.catch_warnings(), pytest.raises(ValueError):  # mir_eval raises here too
            warnings.simplefilter("ignore")
            mir_sep.bss_eval_sources(r, e)
    with pytest.warns(UserWarning):
        out = metrics.bss_eval_sources(np.zeros((0, 0)), np.zeros((0, 0)))
    assert all(o.size == 0 for o in out)
    with pytest.raises(ValueError):
        metrics.bss_eval(torch.zeros(1, 2, 100), torch.zeros(1, 2, 99))


def _record(fn):
    """(exception type or None, [(category, message)] of the warnings fn raised), mir_eval's own notice
    that mir_eval.separation is deprecated (a FutureWarning on every call, about mir_eval itself) left out."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn()
            raised = None
        except ValueError:  # BssEvalError is one; anything else fails the test
            raised = ValueError
    return raised, [(w.category, str(w.message)) for w in caught
                    if not (w.category is FutureWarning and "Deprecated as of mir_eval" in str(w.message))]


def _warning_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    refs, est = random_case(15, 2, 2000)
    silent = refs.copy()
    silent[1] = 0.0
    return {
        "two-sources": (refs, est),
        "one-source-1d": (refs[0], est[0]),  # SIR = inf, no divide-by-zero warning in either
        "perfect-estimate": (refs, refs.copy()),
        "empty-0x0": (np.zeros((0, 0)), np.zeros((0, 0))),
        "empty-2x0": (np.zeros((2, 0)), np.zeros((2, 0))),
        "empty-1d": (np.zeros(0), np.zeros(0)),
        "silent-reference": (silent, est),
        "silent-estimate": (refs, silent),
    }


@pytest.mark.parametrize("name", list(_warning_cases()))
def test_warnings_match_mir_eval(name):
    """Same warnings as mir_eval for the same input: same count, categories and messages (empty inputs: one
    UserWarning for reference_sources and one for estimated_sources), and an error exactly where it raises."""
    refs, est = _warning_cases()[name]
    theirs = _record(lambda: mir_sep.bss_eval_sources(refs, est))
    ours = _record(lambda: metrics.bss_eval_sources(refs, est))
    assert ours == theirs
    if name.startswith("empty"):
        assert [c for c, _ in ours[1]] == [UserWarning, UserWarning]


def test_nonfinite_samples():
    """The drop-in raises on NaN/inf samples, naming the argument and the source. The batched API marks an
    estimate with an inf sample invalid (the other entries of its clip unchanged), and every entry of a clip
    whose reference has a NaN sample (it enters every projection of the clip); other clips are unaffected."""
    refs, est = random_case(14, 2, SR)
    bad_est, bad_ref = est.copy(), refs.copy()
    bad_est[0, 10] = np.inf
    bad_ref[1, 20] = np.nan
    with pytest.raises(metrics.BssEvalError, match=r"estimated source\(s\) \[0\] have NaN or inf"):
        metrics.bss_eval_sources(refs, bad_est)
    with pytest.raises(ValueError, match=r"reference source\(s\) \[1\] have NaN or inf"):
        metrics.bss_eval_sources(bad_ref, est)

    ref_t = torch.from_numpy(np.stack([refs, bad_ref, refs]))
    est_t = torch.from_numpy(np.stack([bad_est, est, est]))
    clean = metrics.bss_eval_sources(refs, est, compute_permutation=False)
    for perm in (False, True):
        res = metrics.bss_eval(ref_t, est_t, compute_permutation=perm)
        assert res.valid.tolist() == [[False, True], [False, False], [True, True]]
        vals = torch.stack([res.sdr, res.sir, res.sar])  # (3, B, S)
        assert torch.isnan(vals[:, ~res.valid]).all() and torch.isfinite(vals[:, res.valid]).all()
        for k in range(3):
            np.testing.assert_allclose(vals[k, 2].numpy(), clean[k], rtol=0, atol=1e-8)
            np.testing.assert_allclose(vals[k, 0, 1].item(), clean[k][1], rtol=0, atol=1e-8)
    mix_t = ref_t.sum(1)
    sdri, ok = metrics.sdr_improvement(ref_t, est_t, mix_t)
    assert ok.tolist() == [[False, True], [False, False], [True, True]] and torch.isfinite(sdri[ok]).all()
    si = metrics.si_sdr(ref_t, est_t)
    assert torch.isnan(si[0, 0]) and torch.isnan(si[1, 1]) and torch.isfinite(si[2]).all()
    s = metrics.summarize(res.sdr, res.valid)
    assert s.n == 3 and np.isfinite([s.mean, s.median, s.ci_low, s.ci_high]).all()


def _no_work(*args, **kwargs):
    raise AssertionError("BSS Eval started computing on input it should have rejected")


def test_too_many_sources_are_rejected_before_any_work(monkeypatch):
    """More than MAX_SOURCES (100, mir_eval's limit) sources: a ValueError naming the limit in every entry point,
    as mir_eval raises, before any correlation is computed; the limit is read at call time (mir_eval's
    MAX_SOURCES can be raised the same way) and S = MAX_SOURCES itself is accepted."""
    rng = np.random.default_rng(16)
    n = 100 * 512 + 2  # enough samples for 101 sources, so that the limit is what fails
    refs = rng.standard_normal((101, n))
    est = refs + 0.1 * rng.standard_normal((101, n))
    with warnings.catch_warnings(), pytest.raises(ValueError, match="MAX_SOURCES = 100"):
        warnings.simplefilter("ignore")
        mir_sep.bss_eval_sources(refs, est)
    with monkeypatch.context() as m:
        m.setattr(metrics, "_pairwise_energies", _no_work)
        with pytest.raises(metrics.BssEvalError, match="101 sources is more than MAX_SOURCES = 100"):
            metrics.bss_eval_sources(refs, est)
        ref_t, est_t = torch.from_numpy(refs)[None], torch.from_numpy(est)[None]
        with pytest.raises(metrics.BssEvalError, match="MAX_SOURCES = 100"):
            metrics.bss_eval(ref_t, est_t)
        with pytest.raises(metrics.BssEvalError, match="MAX_SOURCES = 100"):
            metrics.sdr_improvement(ref_t, est_t, ref_t.sum(1))
    monkeypatch.setattr(metrics, "MAX_SOURCES", 2)
    small_ref, small_est = random_case(17, 3, 2000)
    with pytest.raises(metrics.BssEvalError, match="3 sources is more than MAX_SOURCES = 2"):
        metrics.bss_eval(torch.from_numpy(small_ref)[None], torch.from_numpy(small_est)[None])
    assert metrics.bss_eval(torch.from_numpy(small_ref[:2])[None], torch.from_numpy(small_est[:2])[None]).valid.all()


def test_implausible_shapes_are_rejected_before_any_work(monkeypatch):
    """A (2, 8000, 1) array (channels last) would be read as 2 clips of 8000 one-sample sources and run out of
    memory; it, a transposed (nsampl, nsrc) array, and signals too short for the 512-tap filter
    (L < (S-1)*512 + 2: the filtered references span every signal) fail at once with one line, as BssEvalError:
    a ValueError (what mir_eval raises) and an AvsepError (one line in the CLI)."""
    from avsep_cli.errors import AvsepError

    rng = np.random.default_rng(18)
    with monkeypatch.context() as m:
        m.setattr(metrics, "_pairwise_energies", _no_work)
        x = torch.from_numpy(rng.standard_normal((2, 8000, 1)))
        msg = r"\(2, 8000, 1\) read as \(B, S, L\) gives 8000 sources of 1 sample each"
        with pytest.raises(metrics.BssEvalError, match=msg) as e:
            metrics.bss_eval(x, x + 1.0)
        assert isinstance(e.value, AvsepError) and isinstance(e.value, ValueError) and "\n" not in str(e.value)
        refs = rng.standard_normal((2, 1025))
        with pytest.raises(metrics.BssEvalError, match="transposed"):
            metrics.bss_eval_sources(refs.T, refs.T + 0.1)  # (1025, 2): 1025 sources of 2 samples
        with pytest.raises(metrics.BssEvalError, match=r"1025 samples are too few .* 3 sources .* = 1026"):
            metrics.bss_eval(torch.from_numpy(rng.standard_normal((1, 3, 1025))), torch.ones(1, 3, 1025))
        with pytest.raises(metrics.BssEvalError, match="= 514"):
            metrics.bss_eval_sources(refs[:, :513], refs[:, :513] + 0.1)
        with pytest.raises(ValueError, match="3 dimensions"):
            metrics.bss_eval_sources(x.numpy(), x.numpy())
        with pytest.raises(metrics.BssEvalError, match="too few"):
            metrics.sdr_improvement(torch.ones(1, 2, 100), torch.ones(1, 2, 100), torch.ones(1, 100))
    with warnings.catch_warnings(), pytest.raises(ValueError):  # mir_eval rejects it too, less clearly
        warnings.simplefilter("ignore")
        mir_sep.bss_eval_sources(x.numpy(), x.numpy() + 1.0)
    sdr, _, _, _ = metrics.bss_eval_sources(refs[:, :514], refs[:, :514] + 0.1 * rng.standard_normal((2, 514)))
    assert np.isfinite(sdr).all()  # the shortest accepted length for 2 sources


def test_batched_silent_reference_is_skipped():
    """A silent reference drops out of its clip: its entry is invalid (NaN), the others are scored
    against the remaining references exactly like the compat API on the reduced set, and summaries
    see no NaN or inf."""
    refs, est = random_case(11, 3, SR)
    refs[1] = 0.0
    res = metrics.bss_eval(torch.from_numpy(refs)[None], torch.from_numpy(est)[None])
    np.testing.assert_array_equal(res.valid[0].numpy(), [True, False, True])
    assert torch.isnan(res.sdr[0, 1]) and torch.isnan(res.sir[0, 1]) and torch.isnan(res.sar[0, 1])
    keep = [0, 2]
    sdr, sir, sar, _ = metrics.bss_eval_sources(refs[keep], est[keep], compute_permutation=False)
    np.testing.assert_allclose(res.sdr[0, keep].numpy(), sdr, atol=1e-8)
    np.testing.assert_allclose(res.sir[0, keep].numpy(), sir, atol=1e-8)
    np.testing.assert_allclose(res.sar[0, keep].numpy(), sar, atol=1e-8)
    s = metrics.summarize(res.sdr, res.valid)
    assert s.n == 2 and np.isfinite([s.mean, s.median, s.ci_low, s.ci_high]).all()
    assert s.mean == pytest.approx(sdr.mean())


def test_batched_silent_estimate_is_skipped():
    refs, est = random_case(12, 2, SR)
    full = metrics.bss_eval_sources(refs, est, compute_permutation=False)
    est[1] = 1e-7  # mean square 1e-14: below the silence threshold, but not all zeros
    res = metrics.bss_eval(torch.from_numpy(refs)[None], torch.from_numpy(est)[None], compute_permutation=True)
    np.testing.assert_array_equal(res.valid[0].numpy(), [True, False])
    np.testing.assert_array_equal(res.perm[0].numpy(), [0, 1])
    assert res.sdr[0, 0].item() == pytest.approx(full[0][0], abs=1e-8)
    assert not torch.isinf(torch.stack([res.sdr, res.sir, res.sar])).any()
    s = metrics.summarize(res.sar, res.valid)
    assert s.n == 1 and s.mean == pytest.approx(full[2][0], abs=1e-8)


def test_batched_perfect_estimate_is_finite():
    """Estimate == reference: the compat API may say inf (like mir_eval on a zero residual); the batched
    API caps at 300 dB so that means stay finite."""
    refs, _ = random_case(13, 2, SR)
    res = metrics.bss_eval(torch.from_numpy(refs)[None], torch.from_numpy(refs)[None])
    vals = torch.stack([res.sdr, res.sir, res.sar])
    assert torch.isfinite(vals).all() and (vals > 100).all() and (vals <= 300).all()


# ---------------------------------------------------------------------------------------------------
# Batched API
# ---------------------------------------------------------------------------------------------------


def test_batched_equals_compat_per_clip():
    clips = [random_case(20, 2, SR), random_case(21, 2, SR)]
    refs = music_sources(22, 2, SR)
    clips.append((refs, masked_estimates(refs, "binary")[::-1].copy()))
    ref_t = torch.from_numpy(np.stack([c[0] for c in clips]))
    est_t = torch.from_numpy(np.stack([c[1] for c in clips]))
    res = metrics.bss_eval(ref_t, est_t, compute_permutation=True)
    res_chunked = metrics.bss_eval(ref_t.float(), est_t.float(), compute_permutation=True, max_chunk=1)
    assert res.sdr.shape == res.perm.shape == res.valid.shape == (3, 2)
    assert res.valid.all()
    for b, (r, e) in enumerate(clips):
        sdr, sir, sar, perm = metrics.bss_eval_sources(r, e)
        np.testing.assert_allclose(res.sdr[b].numpy(), sdr, rtol=0, atol=1e-9)
        np.testing.assert_allclose(res.sir[b].numpy(), sir, rtol=0, atol=1e-9)
        np.testing.assert_allclose(res.sar[b].numpy(), sar, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(res.perm[b].numpy(), perm)
    # float32 inputs are promoted to float64 inside; chunking does not change anything beyond rounding
    np.testing.assert_allclose(res_chunked.sdr.numpy(), res.sdr.numpy(), atol=1e-4)
    np.testing.assert_array_equal(res_chunked.perm.numpy(), res.perm.numpy())
    assert res.perm[2].tolist() == [1, 0]


def test_torch_and_numpy_gram_paths_agree():
    """On CPU the correlations are computed with NumPy FFTs and the energies by the Levinson recursions; on
    CUDA with torch FFTs and the dense Cholesky. Every combination gives the same energies (checked here on
    CPU, so the CUDA path's arithmetic is covered without a GPU)."""
    refs = music_sources(50, 3, SR)
    est = torch.from_numpy(masked_estimates(refs, "ratio"))[None]
    ref = torch.from_numpy(refs)[None]
    a = metrics._pairwise_energies(ref, est, 512, backend="numpy")  # the CPU default: Levinson
    for backend, method in (("torch", "dense"), ("numpy", "dense"), ("torch", "levinson")):
        b = metrics._pairwise_energies(ref, est, 512, backend=backend, method=method)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-9, atol=0, msg=f"{backend}/{method}")


# ---------------------------------------------------------------------------------------------------
# The Levinson path (the default on CPU) against the dense path and mir_eval
# ---------------------------------------------------------------------------------------------------


def near_singular_case(seed: int, n_src: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Steady tones with white noise 60 dB down: each reference's 512 delays nearly span only two dimensions
    (the Gram matrix's eigenvalues spread over ~6 orders of magnitude), yet the projections are well posed.
    Estimates: leaky mixing plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    refs = np.stack([np.sin(2 * np.pi * (440 + 220 * j) * t + j) for j in range(n_src)])
    refs += 1e-3 * rng.standard_normal((n_src, n))
    mix = np.eye(n_src) + 0.25 * rng.random((n_src, n_src))
    return refs, mix @ refs + 0.01 * rng.standard_normal((n_src, n))


def levinson_case(kind: str, seed: int, n_src: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    if kind == "random":
        return random_case(seed, n_src, n)
    if kind == "music":
        # with one source a ratio mask returns the reference itself; mask a mixture with an interferer instead
        refs = music_sources(seed, max(n_src, 2), n)
        return refs[:n_src], masked_estimates(refs, "ratio")[:n_src]
    return near_singular_case(seed, n_src, n)


def levinson_and_dense(refs: np.ndarray, est: np.ndarray, flen: int = 512):
    """(p_one, p_all, ok) of the Levinson recursions alone, (p_one, p_all) of the dense path, e_tot; NumPy."""
    ref_t, est_t = torch.from_numpy(refs)[None], torch.from_numpy(est)[None]
    rr, xc = metrics._correlations(ref_t, est_t, flen, use_numpy=True)
    silent = np.zeros((1, refs.shape[0]), dtype=bool)
    e_tot = (est * est).sum(-1)[None]
    lev = metrics._levinson_energies(rr, xc, silent, e_tot)
    dense = metrics._dense_energies(torch.from_numpy(rr), torch.from_numpy(xc), torch.from_numpy(silent))
    return lev, tuple(v.numpy() for v in dense), e_tot


def ratios_db(p_one, p_all, e_tot) -> np.ndarray:
    """(3, M, S): SDR, SIR, SAR in dB for every (estimate, reference) pair of the first clip."""
    vals = metrics._ratios(*(torch.as_tensor(v) for v in (p_one, p_all, e_tot)), cap=False)
    return np.stack([v[0].numpy() for v in vals])


LEVINSON_KINDS = ["random", "music", "near-singular"]


@pytest.mark.parametrize("kind", LEVINSON_KINDS)
@pytest.mark.parametrize("n_src", [1, 2, 3])
def test_levinson_matches_dense(kind, n_src):
    """The recursions accept the clip (no fallback) and give the dense path's energies to ~1e-11 of the
    estimate energy, i.e. the same SDR/SIR/SAR to 1e-6 dB. Lengths 1 s, 6 s (65535 samples) and 10 s rotate
    over the (kind, S) combinations, so that every kind and every S is tried at every length."""
    n = (SR, 65535, 10 * SR)[(LEVINSON_KINDS.index(kind) + n_src) % 3]
    refs, est = levinson_case(kind, 70 + n_src, n_src, n)
    (p_one, p_all, ok), (d_one, d_all), e_tot = levinson_and_dense(refs, est)
    assert ok.tolist() == [True]
    atol = 1e-11 * e_tot.max()
    np.testing.assert_allclose(p_all, d_all, rtol=0, atol=atol)
    np.testing.assert_allclose(p_one, d_one, rtol=0, atol=atol)
    lev_db, dense_db = ratios_db(p_one, p_all, e_tot), ratios_db(d_one, d_all, e_tot)
    if n_src == 1:  # SIR is +inf in both (no interference)
        assert np.all(np.isposinf(lev_db[1])) and np.all(np.isposinf(dense_db[1]))
        lev_db, dense_db = lev_db[[0, 2]], dense_db[[0, 2]]
    assert np.all(np.isfinite(lev_db))
    np.testing.assert_allclose(lev_db, dense_db, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_levinson_path_matches_mir_eval(name):
    """The recursions alone reproduce mir_eval on every agreement case; on steady pure tones (a numerically
    singular Gram matrix) their check rejects the clip instead, which the dense path then handles
    (test_matches_mir_eval covers that result)."""
    refs, est, perm = make_case(name)
    (p_one, p_all, ok), _, e_tot = levinson_and_dense(refs, est)
    if CASES[name][0] == "sines":
        assert ok.tolist() == [False]
        return
    assert ok.tolist() == [True]
    sdr, sir, sar = ratios_db(p_one, p_all, e_tot)  # (M, S) each
    popt = np.asarray(metrics._best_perm(torch.from_numpy(sir))) if perm else np.arange(refs.shape[0])
    theirs = mir_eval_result(name)
    idx = (popt, np.arange(refs.shape[0]))
    for label, a, b in zip(("sdr", "sir", "sar"), (sdr[idx], sir[idx], sar[idx]), theirs[:3]):
        np.testing.assert_allclose(a, b, rtol=0, atol=TOL_DB, err_msg=label)
    np.testing.assert_array_equal(popt, theirs[3])


def test_levinson_rejected_clip_falls_back_to_dense():
    """In a batch, only the clip whose Gram matrix is numerically singular (pure tones) is rejected; its
    energies then come from the dense path, the other clips keep the Levinson values."""
    clips = [hard_case("sines", 8, 2, SR), random_case(80, 2, SR), near_singular_case(81, 2, SR)]
    ref = torch.from_numpy(np.stack([c[0] for c in clips]))
    est = torch.from_numpy(np.stack([c[1] for c in clips]))
    rr, xc = metrics._correlations(ref, est, 512, use_numpy=True)
    e_tot = (est * est).sum(-1).numpy()
    p_one, p_all, ok = metrics._levinson_energies(rr, xc, np.zeros((3, 2), dtype=bool), e_tot)
    assert ok.tolist() == [False, True, True]
    got = metrics._pairwise_energies(ref, est, 512)  # default on CPU: Levinson, with the fallback
    dense = metrics._pairwise_energies(ref, est, 512, method="dense")
    np.testing.assert_allclose(got[0][0].numpy(), dense[0][0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(got[1][0].numpy(), dense[1][0].numpy(), rtol=1e-12)
    np.testing.assert_array_equal(got[0][1:].numpy(), p_one[1:])
    np.testing.assert_array_equal(got[1][1:].numpy(), p_all[1:])
    np.testing.assert_allclose(got[1][1:].numpy(), dense[1][1:].numpy(), rtol=0, atol=1e-11 * e_tot.max())


def test_levinson_singular_and_nan_clips_fall_back_quietly():
    """An exactly singular Gram matrix (two identical references) and a NaN sample make the recursions break
    down; that must neither raise nor warn, the clip is rejected and the dense path's values are returned
    (NaN where the dense path gives NaN), and the other clips are unaffected."""
    rng = np.random.default_rng(85)
    ref = rng.standard_normal((3, 2, 3000))
    est = ref + 0.1 * rng.standard_normal((3, 2, 3000))
    ref[1, 1] = ref[1, 0]
    ref[2, 0, 100] = np.nan
    ref_t, est_t = torch.from_numpy(ref), torch.from_numpy(est)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rr, xc = metrics._correlations(ref_t, est_t, 512, use_numpy=True)
        ok = metrics._levinson_energies(rr, xc, np.zeros((3, 2), dtype=bool), (est * est).sum(-1))[2]
        got = metrics._pairwise_energies(ref_t, est_t, 512)
    dense = metrics._pairwise_energies(ref_t, est_t, 512, method="dense")
    assert ok.tolist() == [True, False, False]
    for a, b in zip(got[:2], dense[:2]):
        np.testing.assert_allclose(a[1:].numpy(), b[1:].numpy(), rtol=1e-12)  # NaN == NaN here
        np.testing.assert_allclose(a[0].numpy(), b[0].numpy(), rtol=1e-9)
    assert np.isnan(got[1][2].numpy()).all() and np.isfinite(got[1][:2].numpy()).all()


def test_levinson_silent_reference():
    """A silent (zeroed) reference gets an identity block, as in the dense path: the recursions accept the
    clip and the energies match the dense path's."""
    refs, est = random_case(84, 3, SR)
    refs[1] = 0.0
    silent = np.array([[False, True, False]])
    rr, xc = metrics._correlations(torch.from_numpy(refs)[None], torch.from_numpy(est)[None], 512, use_numpy=True)
    e_tot = (est * est).sum(-1)[None]
    p_one, p_all, ok = metrics._levinson_energies(rr, xc, silent, e_tot)
    d_one, d_all = metrics._dense_energies(torch.from_numpy(rr), torch.from_numpy(xc), torch.from_numpy(silent))
    assert ok.tolist() == [True]
    np.testing.assert_allclose(p_all, d_all.numpy(), rtol=0, atol=1e-11 * e_tot.max())
    np.testing.assert_allclose(p_one, d_one.numpy(), rtol=0, atol=1e-11 * e_tot.max())
    assert np.all(p_one[0, :, 1] == 0)  # nothing projects onto a silent reference


def test_levinson_block_size_does_not_matter():
    """Grouping q delays per recursion step (blocks of q*S) changes the arithmetic, not the result."""
    refs = music_sources(82, 3, SR)
    est = masked_estimates(refs, "binary")
    rr, xc = metrics._correlations(torch.from_numpy(refs)[None], torch.from_numpy(est)[None], 512, use_numpy=True)
    _, (_, d_all), e_tot = levinson_and_dense(refs, est)
    w = 1.0 / np.sqrt(rr[:, [0, 1, 2], [0, 1, 2], 511])  # the scaling `_levinson_energies` applies
    rr = rr * w[:, :, None, None] * w[:, None, :, None]
    xc = xc * w[:, :, None, None]
    for q in (1, 2, 4, 8, 16):
        [(x, energy, ratio)] = metrics._block_levinson((rr, xc, q))
        assert x.shape == (1, 512, 3, 3) and ratio[0] > 0
        p_all = (energy - metrics._toeplitz_residual(rr, xc, x)).sum(-1)
        np.testing.assert_allclose(p_all, d_all, rtol=0, atol=1e-11 * e_tot.max(), err_msg=f"q={q}")


@pytest.mark.parametrize("flen", [1, 7, 100, 511])
def test_levinson_other_filter_lengths(flen):
    """Filter lengths that are odd or prime (the block size falls back to a divisor of F, down to 1)."""
    q = metrics._levinson_block(1, 2, flen)
    assert flen % q == 0 and 1 <= q <= 8
    refs, est = random_case(83, 2, 3000)
    (p_one, p_all, ok), (d_one, d_all), e_tot = levinson_and_dense(refs, est, flen)
    assert ok.tolist() == [True]
    np.testing.assert_allclose(p_all, d_all, rtol=0, atol=1e-12 * e_tot.max())
    np.testing.assert_allclose(p_one, d_one, rtol=0, atol=1e-12 * e_tot.max())


def test_sdr_improvement():
    refs, est = random_case(30, 2, SR)
    mix = refs.sum(0)
    ref_t, est_t = torch.from_numpy(refs)[None], torch.from_numpy(est)[None]
    sdri, valid = metrics.sdr_improvement(ref_t, est_t, torch.from_numpy(mix)[None])
    sdr_est = metrics.bss_eval_sources(refs, est, compute_permutation=False)[0]
    sdr_mix = metrics.bss_eval_sources(refs, np.stack([mix, mix]), compute_permutation=False)[0]
    assert valid.all()
    np.testing.assert_allclose(sdri[0].numpy(), sdr_est - sdr_mix, atol=1e-8)
    assert (sdri > 0).all()  # the leaky-mixing estimates are better than the mixture itself


# ---------------------------------------------------------------------------------------------------
# SI-SDR and summaries
# ---------------------------------------------------------------------------------------------------


def test_si_sdr_known_value_and_scale_invariance():
    rng = np.random.default_rng(40)
    s = rng.standard_normal((2, 3, 4000))
    noise = rng.standard_normal((2, 3, 4000))
    noise -= (noise * s).sum(-1, keepdims=True) / (s * s).sum(-1, keepdims=True) * s  # orthogonal to s
    est = 0.7 * s + 0.1 * noise
    expected = 10 * np.log10((0.7**2 * (s * s).sum(-1)) / (0.01 * (noise * noise).sum(-1)))
    got = metrics.si_sdr(torch.from_numpy(s), torch.from_numpy(est))
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-9)
    scaled = metrics.si_sdr(torch.from_numpy(s), torch.from_numpy(5.0 * est))
    np.testing.assert_allclose(scaled.numpy(), expected, atol=1e-9)
    silent = torch.from_numpy(s).clone()
    silent[0, 1] = 0
    out = metrics.si_sdr(silent, torch.from_numpy(est))
    assert torch.isnan(out[0, 1]) and torch.isfinite(out[1]).all()
    assert torch.isfinite(metrics.si_sdr(torch.from_numpy(s), torch.from_numpy(s))).all()


def test_summarize():
    vals = torch.tensor([[1.0, 2.0, 3.0], [4.0, float("nan"), 100.0]])
    valid = torch.tensor([[True, True, True], [True, False, False]])
    s = metrics.summarize(vals, valid)
    assert s.n == 4 and s.mean == pytest.approx(2.5) and s.median == pytest.approx(2.5)
    assert 1.0 <= s.ci_low <= s.mean <= s.ci_high <= 4.0
    assert metrics.summarize(vals, valid) == s  # fixed seed: reproducible
    s_inf = metrics.summarize(torch.tensor([1.0, float("inf"), 3.0]))
    assert s_inf.n == 2 and s_inf.mean == pytest.approx(2.0)
    empty = metrics.summarize(torch.tensor([float("nan")]))
    assert empty.n == 0 and np.isnan(empty.mean)
    rng = np.random.default_rng(0)
    big = rng.normal(5.0, 2.0, size=4000)
    sb = metrics.summarize(big)
    half = 1.96 * big.std(ddof=1) / np.sqrt(big.size)  # bootstrap CI ~ normal-approximation CI
    assert sb.ci_low == pytest.approx(big.mean() - half, abs=0.02)
    assert sb.ci_high == pytest.approx(big.mean() + half, abs=0.02)
