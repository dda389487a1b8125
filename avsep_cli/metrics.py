"""Separation metrics: BSS Eval v3 source measures (SDR, SIR, SAR), SI-SDR, SDR improvement, summaries.

The field reports `bss_eval_sources` (Vincent et al. 2006, 512-tap time-invariant distortion filter) as
computed by `mir_eval.separation`, which is deprecated in mir_eval 0.8 and slow (it re-solves the
least-squares projection for every estimate/reference pair and re-projects onto all references for
every pair). This module computes the same numbers (agreement with mir_eval 0.8.2 well within 0.01 dB,
see tests/test_metrics.py) by sharing work: per clip, the reference auto/cross-correlations are computed
once by FFT, the (S*F)x(S*F) block-Toeplitz Gram matrix of all delayed references is factorised once
(Cholesky), and every estimate is projected through that factor at once; the per-reference Gram blocks
(for the "filtered true source" part) are factorised once each and shared by all estimates. Energies are
read off the triangular solves (||L^-1 d||^2 is the energy of the projection) instead of rebuilding the
projected signals. `bss_eval_sources` is the NumPy drop-in for mir_eval; `bss_eval` is the batched
torch API (CPU or CUDA, float64 inside) that marks silent sources as skipped instead of raising;
`si_sdr`, `sdr_improvement` and `summarize` are the helpers evaluation scripts need.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

# mir_eval's limit (brute-force permutation search and memory grow fast with the number of sources).
MAX_SOURCES = 100
# Default filter length of bss_eval_sources (taps of the allowed time-invariant distortion filter).
FILTER_LEN = 512
# Batched API: a source whose mean-square amplitude is at or below this counts as silent (-100 dBFS).
SILENCE_THRESHOLD = 1e-10
# Batched API: energy ratios are clamped to [_DEN_FLOOR, 1/_DEN_FLOOR], i.e. +-300 dB, instead of becoming
# +-inf; double precision cannot resolve residual energies much below that anyway.
_DEN_FLOOR = 1e-30
# Brute-force permutation search (like mir_eval) up to this many sources; beyond it a linear assignment
# finds the same maximum of the mean SIR (ties may then resolve differently).
_BRUTE_FORCE_MAX = 8


@dataclass
class BssResult:
    """Batched bss_eval output; every tensor is (B, S) and indexed by *reference* source j.

    sdr/sir/sar are in dB (float64, NaN exactly where `valid` is False, never inf); perm[b, j] is the
    estimate matched to reference j; valid[b, j] is False where reference j or its estimate is silent.
    """

    sdr: torch.Tensor
    sir: torch.Tensor
    sar: torch.Tensor
    perm: torch.Tensor
    valid: torch.Tensor


@dataclass
class Summary:
    """Mean, median and 95% confidence interval of the mean over the valid entries (n of them)."""

    mean: float
    median: float
    ci_low: float
    ci_high: float
    n: int


# ----------------------------------------------------------------------------------------------------
# Core: energies of the projections of every estimate onto the delayed references
# ----------------------------------------------------------------------------------------------------


def _fft_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n. Any length >= n makes the FFT correlations exact linear ones (mir_eval
    uses the next power of two); a 5-smooth length is up to 2x shorter and as fast per sample."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _quad_energy(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """diag(rhs^T gram^-1 rhs) per batch item: the energy of each least-squares projection.

    gram (N, K, K) symmetric PSD, rhs (N, K, M) -> (N, M). Cholesky first (energy = ||L^-1 rhs||^2, a sum
    of squares, never negative); items whose Gram is not numerically positive definite fall back to LU
    (what mir_eval uses) and, if singular, to a least-squares solve (mir_eval's fallback too).
    """
    chol, info = torch.linalg.cholesky_ex(gram)
    w = torch.linalg.solve_triangular(chol, rhs, upper=False)
    energy = (w * w).sum(-2)
    bad = info != 0
    if bool(bad.any()):
        energy[bad] = _lu_energy(gram[bad], rhs[bad])
    return energy


def _lu_energy(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Fallback of `_quad_energy` for Gram matrices that are not numerically positive definite."""
    x, info = torch.linalg.solve_ex(gram, rhs)
    singular = info != 0
    if bool(singular.any()):
        x[singular] = torch.linalg.pinv(gram[singular], hermitian=True) @ rhs[singular]
    return (x * rhs).sum(-2)


def _gram_and_rhs(ref: torch.Tensor, est: torch.Tensor, flen: int, use_numpy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Gram matrix of the delayed references and its right-hand sides, as mir_eval's `_project` builds them.

    ref (B, S, L), est (B, M, L) float64 -> gram (B, S*F, S*F), d (B, S*F, M), source-major (index i*F + a).
    G[(i, a), (j, c)] = <s_i delayed by a, s_j delayed by c> = r_ij[c - a] with r_ij[k] = sum_t s_i[t+k] s_j[t];
    D[(i, a), m] = <s_i delayed by a, e_m> = (s_i correlated with e_m)[-a]. Like mir_eval, signals are
    zero-padded and correlated by FFT of length >= L + F - 1, so circular lags -(F-1)..F-1 are exact
    linear ones. On CPU the FFTs and the Toeplitz fill run in NumPy (single-threaded pocketfft), which
    is as fast as torch's and does not stall when the cores are shared; on CUDA they run in torch.
    """
    bsz, n_src, n_smp = ref.shape
    n_est = est.shape[1]
    n_fft = _fft_len(n_smp + flen - 1)
    lags = np.concatenate([np.arange(n_fft - flen + 1, n_fft), np.arange(flen)])  # k = -(F-1)..F-1
    neg = (-np.arange(flen)) % n_fft  # k = 0, -1, ..., -(F-1)
    if use_numpy:
        r, e = ref.detach().numpy(), est.detach().numpy()
        rf = np.fft.rfft(r, n=n_fft)  # (B, S, n_fft//2+1)
        ef = np.fft.rfft(e, n=n_fft)  # (B, M, n_fft//2+1)
        rr = np.fft.irfft(rf[:, :, None] * rf[:, None].conj(), n=n_fft)[..., lags]  # (B, S, S, 2F-1)
        # Toeplitz block T[a, c] = rr[F-1-a+c]: the row-reversed Hankel window view, then one copy.
        hankel = np.lib.stride_tricks.sliding_window_view(rr, flen, axis=-1)  # [..., q, c] = rr[..., q+c]
        gram = np.ascontiguousarray(hankel[..., ::-1, :].transpose(0, 1, 3, 2, 4))  # (B, S, F, S, F)
        xc = np.fft.irfft(rf[:, :, None] * ef[:, None].conj(), n=n_fft)[..., neg]  # (B, S, M, F)
        d = np.ascontiguousarray(xc.transpose(0, 1, 3, 2)).reshape(bsz, n_src * flen, n_est)
        return torch.from_numpy(gram).view(bsz, n_src * flen, n_src * flen), torch.from_numpy(d)
    dev = ref.device
    rf = torch.fft.rfft(ref, n=n_fft)
    ef = torch.fft.rfft(est, n=n_fft)
    rr = torch.fft.irfft(rf[:, :, None] * rf[:, None].conj(), n=n_fft)[..., torch.from_numpy(lags).to(dev)]
    gram = torch.empty(bsz, n_src, flen, n_src, flen, dtype=ref.dtype, device=dev)
    gram.copy_(rr.unfold(-1, flen, 1).flip(-2).permute(0, 1, 3, 2, 4))  # same Toeplitz fill as above
    xc = torch.fft.irfft(rf[:, :, None] * ef[:, None].conj(), n=n_fft)[..., torch.from_numpy(neg).to(dev)]
    d = xc.permute(0, 1, 3, 2).reshape(bsz, n_src * flen, n_est)
    return gram.view(bsz, n_src * flen, n_src * flen), d


def _pairwise_energies(
    ref: torch.Tensor, est: torch.Tensor, flen: int, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Energies behind bss_eval_sources for every (estimate m, reference j) pair of every clip.

    `backend` ("numpy" or "torch") forces how the Gram matrix is built; by default NumPy on CPU, torch on
    CUDA (tests use it to check the CUDA code path's arithmetic on CPU).

    ref (B, S, L), est (B, M, L), float64, silent references already zeroed. Returns
      p_one (B, M, S): ||P_j e_m||^2, projection of e_m onto the F delays of reference j (= s_true + e_spat),
      p_all (B, M):    ||P e_m||^2, projection onto the delays of all references (= s_true + e_spat + e_interf),
      e_tot (B, M):    ||e_m||^2.
    mir_eval's decomposition then gives |e_interf|^2 = p_all - p_one and |e_artif|^2 = e_tot - p_all, and
    |e_interf + e_artif|^2 = e_tot - p_one (Pythagoras: the projections are nested orthogonal ones).
    """
    bsz, n_src, _ = ref.shape
    n_est = est.shape[1]
    use_numpy = ref.device.type == "cpu" if backend is None else backend == "numpy"
    gram, d = _gram_and_rhs(ref, est, flen, use_numpy)  # (B, S*F, S*F), (B, S*F, M)
    # A silent (zeroed) reference has all-zero rows and columns; an identity diagonal block keeps the
    # matrix positive definite without changing any projection (its D rows are zero, so are its filters).
    silent = (ref == 0).all(-1)  # (B, S)
    if bool(silent.any()):
        blocks = gram.view(bsz, n_src, flen, n_src, flen)
        eye = torch.eye(flen, dtype=ref.dtype, device=ref.device)
        for j in range(n_src):
            blocks[:, j, :, j, :] += silent[:, j, None, None] * eye

    # One Cholesky of the full Gram matrix per clip serves all estimates; its leading F x F block is the
    # Cholesky factor of reference 0's own Gram block, so w[:F] gives the reference-0 projection for free.
    chol, info = torch.linalg.cholesky_ex(gram)
    w = torch.linalg.solve_triangular(chol, d, upper=False)  # (B, S*F, M)
    p_all = (w * w).sum(-2)  # (B, M)
    p_first = (w[:, :flen] * w[:, :flen]).sum(-2)  # (B, M)
    bad = info != 0
    if bool(bad.any()):
        p_all[bad] = _lu_energy(gram[bad], d[bad])
        p_first[bad] = _quad_energy(gram[bad, :flen, :flen], d[bad, :flen])
    if n_src == 1:
        # One source: the "all references" projection is the single-reference one; reuse it so that
        # e_interf is exactly zero (SIR = inf), as in mir_eval where both come from identical arithmetic.
        p_one = p_all[:, :, None].clone()
    else:
        blocks = gram.view(bsz, n_src, flen, n_src, flen)
        diag = torch.stack([blocks[:, j, :, j, :] for j in range(1, n_src)], 1)  # (B, S-1, F, F)
        d_rest = d[:, flen:].reshape(bsz * (n_src - 1), flen, n_est)
        p_rest = _quad_energy(diag.reshape(-1, flen, flen), d_rest).view(bsz, n_src - 1, n_est)
        p_one = torch.cat([p_first[:, None], p_rest], 1).transpose(1, 2)  # (B, M, S)
    e_tot = (est * est).sum(-1)
    return p_one, p_all, e_tot


def _ratios(p_one, p_all, e_tot, cap: bool):
    """SDR, SIR, SAR (B, M, S) in dB from the projection energies (see `_pairwise_energies`)."""
    p_all_ = p_all[:, :, None].expand_as(p_one)
    e_tot_ = e_tot[:, :, None].expand_as(p_one)
    interf = (p_all_ - p_one).clamp_min(0.0)
    pairs = ((p_one, e_tot_ - p_one), (p_one, interf), (p_all_, e_tot_ - p_all_))
    out = []
    for num, den in pairs:
        # Rounding can make a difference of energies slightly negative when it is ~0 (a near-perfect
        # estimate); treat it as 0. mir_eval returns inf for a zero denominator; the batched API caps.
        ratio = num / den.clamp_min(0.0)
        if cap:
            ratio = ratio.clamp(_DEN_FLOOR, 1.0 / _DEN_FLOOR)  # +-300 dB; NaN stays NaN
        out.append(10.0 * torch.log10(ratio))
    return out


def _best_perm(sir: torch.Tensor) -> tuple[int, ...]:
    """Permutation maximising the mean SIR; sir (M=S, S) indexed [estimate, reference].

    Same order of candidates and first-maximum tie-break as mir_eval; NaN pairs (silent) are left out
    of the mean. popt[j] is the estimate assigned to reference j.
    """
    n = sir.shape[0]
    s = sir.detach().cpu().numpy()
    if n <= _BRUTE_FORCE_MAX:
        perms = list(itertools.permutations(range(n)))
        idx = np.array(perms)
        vals = s[idx, np.arange(n)[None, :]]  # (n!, n)
        finite = ~np.isnan(vals)
        cnt = finite.sum(1)
        with np.errstate(invalid="ignore"):
            mean = np.where(finite, vals, 0.0).sum(1) / np.maximum(cnt, 1)
        mean[cnt == 0] = -np.inf
        if np.all(cnt == 0):
            return tuple(range(n))
        return perms[int(np.argmax(mean))]
    from scipy.optimize import linear_sum_assignment

    cost = np.where(np.isnan(s), 0.0, s)
    cost = np.where(np.isinf(cost), np.sign(cost) * 1e300, cost)
    rows, cols = linear_sum_assignment(cost, maximize=True)
    popt = np.empty(n, dtype=int)
    popt[cols] = rows
    return tuple(int(v) for v in popt)


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------


def bss_eval(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    *,
    compute_permutation: bool = False,
    filter_len: int = FILTER_LEN,
    silence_threshold: float = SILENCE_THRESHOLD,
    max_chunk: int | None = None,
) -> BssResult:
    """BSS Eval v3 source metrics for a batch of clips, on the tensors' device.

    reference, estimate: (B, S, L) (or (S, L), treated as B=1). Returns a `BssResult` of (B, S) tensors.
    Silent sources (mean square <= `silence_threshold`) are skipped: a silent reference is removed from the
    projection subspace of its clip (it spans nothing) and its entry is invalid; a silent estimate makes
    its entry invalid. Invalid entries are NaN; valid ones are finite (clamped to +-300 dB).
    With `compute_permutation` the estimates are matched to references by maximum mean SIR (mir_eval's
    rule, invalid pairs left out); otherwise estimate j is scored against reference j.
    `max_chunk` bounds how many clips are processed at once; the default keeps the working set (FFT
    correlations ~ chunk * S^2 * L * 24 bytes, Gram matrix and its factor ~ chunk * (S*F)^2 * 16 bytes)
    to a few hundred MB.
    """
    if reference.shape != estimate.shape:
        raise ValueError(f"reference shape {tuple(reference.shape)} != estimate shape {tuple(estimate.shape)}")
    if reference.ndim == 2:
        reference, estimate = reference[None], estimate[None]
    if reference.ndim != 3:
        raise ValueError(f"expected (B, S, L) tensors, got {reference.ndim} dimensions")
    bsz, n_src, n_smp = reference.shape
    dev = reference.device
    ref = reference.to(torch.float64)
    est = estimate.to(dtype=torch.float64, device=dev)
    ref_ok = (ref * ref).mean(-1) > silence_threshold  # (B, S)
    est_ok = (est * est).mean(-1) > silence_threshold
    ref = ref * ref_ok[..., None]  # zero silent references so they drop out of the Gram matrix exactly
    if max_chunk is None:
        max_chunk = max(1, int(4_000_000 // max(1, n_src * n_src * n_smp)))

    pairs = []
    for s in range(0, bsz, max_chunk):
        r, e = ref[s : s + max_chunk], est[s : s + max_chunk]
        p_one, p_all, e_tot = _pairwise_energies(r, e, filter_len)
        pairs.append(torch.stack(_ratios(p_one, p_all, e_tot, cap=True)))  # (3, b, M, S)
    sdr, sir, sar = torch.cat(pairs, 1).unbind(0)  # each (B, M=S, S) [estimate, reference]
    pair_ok = est_ok[:, :, None] & ref_ok[:, None, :]
    sdr, sir, sar = (torch.where(pair_ok, v, torch.nan) for v in (sdr, sir, sar))

    if compute_permutation:
        perm = torch.tensor([_best_perm(sir[b]) for b in range(bsz)], dtype=torch.long, device=dev).view(bsz, n_src)
    else:
        perm = torch.arange(n_src, device=dev).expand(bsz, n_src).clone()
    cols = torch.arange(n_src, device=dev).expand(bsz, n_src)
    rows = torch.arange(bsz, device=dev)[:, None]
    pick = lambda v: v[rows, perm, cols]  # noqa: E731  (B, S): value of estimate perm[b, j] vs reference j
    return BssResult(sdr=pick(sdr), sir=pick(sir), sar=pick(sar), perm=perm, valid=pick(pair_ok))


def bss_eval_sources(reference_sources, estimated_sources, compute_permutation: bool = True):
    """Drop-in for `mir_eval.separation.bss_eval_sources` (same inputs, outputs and semantics).

    reference_sources, estimated_sources: arrays (nsrc, nsampl), or 1-D for one source.
    Returns (sdr, sir, sar, perm), NumPy arrays of shape (nsrc,): perm[j] is the estimate matched to
    reference j (by maximum mean SIR; arange(nsrc) when compute_permutation is False).
    Raises ValueError, like mir_eval, on mismatched shapes, more than 2 dimensions, more than
    MAX_SOURCES sources, and any all-zero reference or estimate (the batched `bss_eval` reports those as
    skipped instead). Empty inputs warn and return empty arrays. A zero denominator gives inf (as mir_eval,
    e.g. the SIR of a single source). Ratios above ~150 dB (estimate equal to a filtered reference) are
    rounding noise here and in mir_eval alike: there mir_eval reports ~300 dB and this function may
    report inf, since residual energies are read off as differences of projection energies.
    """
    # contiguous copies: torch cannot wrap views with negative strides (e.g. est[::-1])
    ref = np.ascontiguousarray(reference_sources, dtype=np.float64)
    est = np.ascontiguousarray(estimated_sources, dtype=np.float64)
    if est.ndim == 1:
        est = est[np.newaxis, :]
    if ref.ndim == 1:
        ref = ref[np.newaxis, :]
    if ref.shape != est.shape:
        raise ValueError(
            f"The shape of estimated sources and the true sources should match. reference_sources.shape = "
            f"{ref.shape}, estimated_sources.shape = {est.shape}"
        )
    if ref.ndim > 2:
        raise ValueError(f"Sources must be (nsrc, nsampl); got {ref.ndim} dimensions")
    if ref.size == 0:
        warnings.warn("reference_sources is empty; sdr, sir, sar and perm will be empty arrays", stacklevel=2)
        return np.array([]), np.array([]), np.array([]), np.array([])
    for name, x in (("reference", ref), ("estimated", est)):
        if np.any(np.all(x == 0, axis=1)):
            raise ValueError(f"All the {name} sources should be non-silent (not all zeros)")
    if ref.shape[0] > MAX_SOURCES:
        raise ValueError(f"{ref.shape[0]} sources is more than MAX_SOURCES = {MAX_SOURCES}")

    n_src = ref.shape[0]
    rt, et = torch.from_numpy(ref)[None], torch.from_numpy(est)[None]
    p_one, p_all, e_tot = _pairwise_energies(rt, et, FILTER_LEN)
    sdr, sir, sar = (v[0].numpy() for v in _ratios(p_one, p_all, e_tot, cap=False))  # (M, S)
    if compute_permutation:
        popt = np.asarray(_best_perm(torch.from_numpy(sir)))
    else:
        popt = np.arange(n_src)
    idx = (popt, np.arange(n_src))
    return sdr[idx], sir[idx], sar[idx], popt


def si_sdr(reference: torch.Tensor, estimate: torch.Tensor, *, zero_mean: bool = False) -> torch.Tensor:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), (..., L) -> (...), computed in float64.

    10 log10(|a s|^2 / |a s - e|^2) with a = <e, s>/|s|^2. NaN where the reference or the estimate is
    silent (mean square <= SILENCE_THRESHOLD); capped at 300 dB like `bss_eval`. `zero_mean` subtracts
    each signal's mean first (some papers do; the default does not).
    """
    s = reference.to(torch.float64)
    e = estimate.to(dtype=torch.float64, device=s.device)
    if zero_mean:
        s = s - s.mean(-1, keepdim=True)
        e = e - e.mean(-1, keepdim=True)
    ss = (s * s).sum(-1)
    alpha = (e * s).sum(-1) / ss.clamp_min(torch.finfo(torch.float64).tiny)
    target = alpha[..., None] * s
    num = (target * target).sum(-1)
    den = ((e - target) ** 2).sum(-1)
    val = 10.0 * torch.log10((num / den).clamp(_DEN_FLOOR, 1.0 / _DEN_FLOOR))
    ok = ((s * s).mean(-1) > SILENCE_THRESHOLD) & ((e * e).mean(-1) > SILENCE_THRESHOLD)
    return torch.where(ok, val, torch.nan)


def sdr_improvement(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    mixture: torch.Tensor,
    *,
    filter_len: int = FILTER_LEN,
    silence_threshold: float = SILENCE_THRESHOLD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SDRi per source: SDR(estimate_j vs reference j) - SDR(mixture vs reference j), in dB.

    reference, estimate: (B, S, L); mixture: (B, L). Estimates are scored in the given order (no
    permutation). The mixture is projected through the same factorised Gram matrices as the estimates
    (one extra "estimate" per clip). Returns (sdri (B, S), valid (B, S)); sdri is NaN where invalid
    (silent reference, estimate or mixture).
    """
    if reference.shape != estimate.shape:
        raise ValueError(f"reference shape {tuple(reference.shape)} != estimate shape {tuple(estimate.shape)}")
    if mixture.shape != reference.shape[:1] + reference.shape[2:]:
        raise ValueError(f"mixture shape {tuple(mixture.shape)} should be (B, L) = {(reference.shape[0], reference.shape[2])}")
    bsz, n_src, _ = reference.shape
    ref = reference.to(torch.float64)
    est = torch.cat([estimate.to(ref), mixture.to(ref)[:, None]], 1)  # (B, S+1, L): mixture is the last
    ref_ok = (ref * ref).mean(-1) > silence_threshold
    est_ok = (est * est).mean(-1) > silence_threshold
    ref = ref * ref_ok[..., None]
    p_one, p_all, e_tot = _pairwise_energies(ref, est, filter_len)
    sdr = _ratios(p_one, p_all, e_tot, cap=True)[0]  # (B, S+1, S)
    j = torch.arange(n_src, device=ref.device)
    gain = sdr[:, j, j] - sdr[:, n_src, :]
    valid = ref_ok & est_ok[:, :n_src] & est_ok[:, n_src : n_src + 1]
    return torch.where(valid, gain, torch.nan), valid


def summarize(values, valid=None, *, n_boot: int = 2000, seed: int = 0) -> Summary:
    """Mean, median and 95% CI of the mean over the valid, finite entries of `values` (any shape).

    The CI is a percentile bootstrap of the mean (n_boot resamples, fixed seed, so it is reproducible).
    Entries where `valid` is False, and any NaN or inf, are ignored. With no entries all fields are NaN.
    """
    v = torch.as_tensor(values).detach().to("cpu", torch.float64).reshape(-1).numpy()
    keep = np.isfinite(v)
    if valid is not None:
        keep &= torch.as_tensor(valid).detach().to("cpu").reshape(-1).numpy().astype(bool)
    v = v[keep]
    if v.size == 0:
        return Summary(math.nan, math.nan, math.nan, math.nan, 0)
    rng = np.random.default_rng(seed)
    step = max(1, 2_000_000 // v.size)  # resamples per draw, to bound memory for large inputs
    means = np.concatenate(
        [v[rng.integers(0, v.size, size=(min(step, n_boot - k), v.size))].mean(1) for k in range(0, n_boot, step)]
    )
    lo, hi = np.percentile(means, [2.5, 97.5])
    return Summary(float(v.mean()), float(np.median(v)), float(lo), float(hi), int(v.size))
