"""Separation metrics: BSS Eval v3 source measures (SDR, SIR, SAR), SI-SDR, SDR improvement, summaries.

The field reports `bss_eval_sources` (Vincent et al. 2006, 512-tap time-invariant distortion filter) as
computed by `mir_eval.separation`, which is deprecated in mir_eval 0.8 and slow (it re-solves the
least-squares projection for every estimate/reference pair and re-projects onto all references for
every pair). This module computes the same numbers (agreement with mir_eval 0.8.2 within 0.01 dB; see
tests/test_metrics.py for what is measured) by sharing work and using the structure of the problem. Per
clip, the correlations of the references with each other and with every estimate are computed once by FFT. The
Gram matrix G of the F delays of all S references is block Toeplitz (in delay-major order its S x S
blocks are R[m]_ij = r_ij[m]) and each reference's own Gram block is Toeplitz, so the projection energies
d^T G^-1 d of all estimates (d: correlations of an estimate with the delayed references) are read off a
factorisation of G^-1 without ever forming G or rebuilding the projected signals:

* CPU tensors and the NumPy drop-in: block Levinson-Whittle recursions (`_block_levinson`), O(S^3 F^2)
  arithmetic per clip instead of the O(S^3 F^3) of a dense factorisation, vectorised in NumPy over all
  clips of a batch and over the per-reference problems, so that the Python loop over its steps is
  shared. Each step handles q delays (K = q*S square blocks): K = 16 for a single clip, 8 for batches
  (`_levinson_block`, measured). Every clip's result is then checked (`_levinson_energies`): the
  prediction-error covariances must stay positive definite, and a residual check (G x - d by FFT) gives
  a first-order error estimate that must be negligible against every energy difference the ratios are
  made of. A clip failing either (steady pure tones: G numerically singular) is recomputed by the dense
  path; the choice is per clip and automatic. Even a single clip is faster this way than densely.
* CUDA tensors, and the fallback: the explicit Gram matrix, one Cholesky factorisation of (S*F)^2 per clip
  and one of F^2 per reference (`_dense_energies`), which is what GPUs do fast.

On the 2-core development machine (benchmarks/bench_metrics.py: 2 sources x 65535 samples, quiet machine)
this takes ~8.7 ms per clip in batches of 16 and ~12.4 ms for single clips through the drop-in, with default
or single threads, whether or not the permutation is searched (all pairs are computed either way). Against
mir_eval in the same mode: ~17x and ~12x without permutation (mir_eval ~150 ms per clip; `avsep eval`'s
mode, `--no-permutation`), ~36x and ~25x with it (mir_eval ~320 ms: it decomposes all S^2 pairs then).

`bss_eval_sources` is the NumPy drop-in for mir_eval; `bss_eval` is the batched torch API (CPU or CUDA,
float64 inside) that marks silent sources, and signals with NaN or inf samples, as skipped instead of
raising; `si_sdr`, `sdr_improvement` and `summarize` are the helpers evaluation scripts need. Shapes that
cannot be meant (more sources than samples, more than MAX_SOURCES sources, too few samples for the
filter) raise `BssEvalError` before any work, in every entry point.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from avsep_cli.errors import AvsepError

# mir_eval's limit, checked the same way (read at call time, so it can be raised like
# mir_eval.separation.MAX_SOURCES). Cost grows as S^3 per clip: measured on the 2-core development machine
# at 65535 samples, 0.1 s for 8 sources, 0.4 s for 16, 3.4 s for 32 (extrapolated: a minute or two at 100).
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
# Levinson path checks (see `_levinson_energies`): the estimated error of every projection energy must be below
# _LEVINSON_TOL times each energy difference a ratio is computed from (1e-4: below 0.0005 dB), differences below
# _LEVINSON_REL_FLOOR * ||e||^2 (ratios beyond 100 dB) counting as that floor; prediction-error covariances must
# keep eigenvalues above _LEVINSON_PD_FLOOR times the largest eigenvalue of R[0].
_LEVINSON_TOL = 1e-4
_LEVINSON_REL_FLOOR = 1e-10
_LEVINSON_PD_FLOOR = 1e-13


class BssEvalError(AvsepError, ValueError):
    """Input BSS Eval cannot score (a shape that cannot be meant, too many sources, NaN or inf samples
    where the drop-in needs finite ones). A ValueError, as mir_eval raises, and an AvsepError, so that the
    CLI reports it in one line."""


@dataclass
class BssResult:
    """Batched bss_eval output; every tensor is (B, S) and indexed by *reference* source j.

    sdr/sir/sar are in dB (float64, NaN exactly where `valid` is False, never inf); perm[b, j] is the
    estimate matched to reference j; valid[b, j] is False where reference j or its estimate is silent, where
    that estimate has a NaN or inf sample, and for every source of a clip with such a sample in any of its
    references (every reference enters every projection of its clip).
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


def _sum_sq(x: torch.Tensor) -> torch.Tensor:
    """Sum of squares over the last axis, (..., L) -> (...). On CPU by NumPy's einsum: no (..., L) temporary
    and no thread start-up, several times faster than torch for batches of clips."""
    if x.device.type == "cpu":
        xn = x.detach().numpy()
        return torch.from_numpy(np.asarray(np.einsum("...l,...l->...", xn, xn)))
    return (x * x).sum(-1)


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
    """Fallback of `_quad_energy` for Gram matrices that are not numerically positive definite. Clips
    with a NaN/inf input get NaN energies without reaching LAPACK (whose LU reports bad pivots on NaN
    depending on the thread count)."""
    finite = torch.isfinite(gram).all(-1).all(-1) & torch.isfinite(rhs).all(-1).all(-1)  # (B,)
    x = torch.full_like(rhs, torch.nan)
    if bool(finite.any()):
        g, r = gram[finite], rhs[finite]
        xf, info = torch.linalg.solve_ex(g, r)
        singular = info != 0
        if bool(singular.any()):
            xf[singular] = torch.linalg.pinv(g[singular], hermitian=True) @ r[singular]
        x[finite] = xf
    return (x * rhs).sum(-2)


def _correlations(ref: torch.Tensor, est: torch.Tensor, flen: int, use_numpy: bool):
    """The correlations BSS Eval's Gram matrix and right-hand sides are made of.

    ref (B, S, L), est (B, M, L) float64 -> rr (B, S, S, 2F-1), xc (B, S, M, F); NumPy arrays with
    `use_numpy`, otherwise torch tensors on the inputs' device:
      rr[b, i, j, F-1+k] = r_ij[k] = sum_t s_i[t+k] s_j[t]       (k = -(F-1)..F-1),
      xc[b, i, m, a]     = <s_i delayed by a, e_m>                 (a = 0..F-1).
    These are exact linear correlations, as mir_eval computes them (by FFT of the zero-padded signals).
    torch (CUDA): one FFT of length >= L + F - 1 per signal and one inverse per pair (only the pairs
    i <= j of the references: r_ji[k] = r_ij[-k]). NumPy (CPU): only 2F-1 lags are needed, so the inverse
    transforms are made short by overlap-save (`_overlap_save_correlations`, FFT length 4096 for F = 512):
    about the same arithmetic forward, 1/20 of it backward, about 40% faster in all (single-threaded
    pocketfft, which also does not stall when the cores are shared).
    """
    bsz, n_src, n_smp = ref.shape
    n_est = est.shape[1]
    if use_numpy:
        ref_np, est_np = ref.detach().numpy(), est.detach().numpy()
        rr = np.empty((bsz, n_src, n_src, 2 * flen - 1))
        xc = np.empty((bsz, n_src, n_est, flen))
        # One clip at a time: the working arrays (~ 1.3 (S+M) L complex values) then stay a few MB, are
        # reused from the heap from one clip to the next instead of being page-faulted in afresh, and
        # mostly stay in cache (measured 25-50% faster than whole batches).
        for b in range(bsz):
            rr[b], xc[b] = _overlap_save_correlations(ref_np[b], est_np[b], flen)
        return rr, xc
    n_fft = _fft_len(n_smp + flen - 1)
    lags = np.concatenate([np.arange(n_fft - flen + 1, n_fft), np.arange(flen)])  # k = -(F-1)..F-1
    neg = (-np.arange(flen)) % n_fft  # k = 0, -1, ..., -(F-1): xc[a] = (s_i correlated with e_m)[-a]
    iu, ju = np.triu_indices(n_src)
    dev = ref.device
    rf = torch.fft.rfft(ref, n=n_fft)
    ef = torch.fft.rfft(est, n=n_fft)
    iu_t, ju_t = torch.from_numpy(iu).to(dev), torch.from_numpy(ju).to(dev)
    pairs = torch.fft.irfft(rf[:, iu_t] * rf[:, ju_t].conj(), n=n_fft)[..., torch.from_numpy(lags).to(dev)]
    rr = torch.empty(bsz, n_src, n_src, 2 * flen - 1, dtype=ref.dtype, device=dev)
    rr[:, iu_t, ju_t] = pairs
    rr[:, ju_t, iu_t] = pairs.flip(-1)
    xc = torch.fft.irfft(rf[:, :, None] * ef[:, None].conj(), n=n_fft)[..., torch.from_numpy(neg).to(dev)]
    return rr, xc


def _overlap_save_correlations(ref: np.ndarray, est: np.ndarray, flen: int) -> tuple[np.ndarray, np.ndarray]:
    """`_correlations` of one clip in NumPy: ref (S, L), est (M, L) -> rr (S, S, 2F-1), xc (S, M, F).

    The references are cut into blocks of C samples and every signal into the segments
    [bC - (F-1), (b+1)C + F - 1) around them; block b of s_i against segment b of a signal p, correlated
    by FFT of length C + 2F - 2 (no wrap-around at lags -(F-1)..F-1) and summed over b, gives the exact
    linear correlation of s_i and p at those lags.
    """
    n_src, n_smp = ref.shape
    n_c = max(4096, 1 << (4 * (flen - 1)).bit_length())  # FFT length; blocks C = n_c - 2(F-1) >= n_c / 2
    n_c = min(n_c, _fft_len(n_smp + 2 * (flen - 1)))  # short clips: one block
    blk = n_c - 2 * (flen - 1)
    n_blk = -(-n_smp // blk)
    sig = np.zeros((n_src + est.shape[0], n_blk * blk + 2 * (flen - 1)))  # references then estimates, padded
    sig[:n_src, flen - 1 : flen - 1 + n_smp] = ref
    sig[n_src:, flen - 1 : flen - 1 + n_smp] = est
    seg = np.lib.stride_tricks.sliding_window_view(sig, n_c, axis=-1)[:, ::blk]  # (S+M, n_blk, n_c)
    blocks = sig[:n_src, flen - 1 : flen - 1 + n_blk * blk].reshape(n_src, n_blk, blk)
    seg_f = np.fft.rfft(seg, axis=-1)
    blk_f = np.fft.rfft(blocks, n=n_c, axis=-1)
    np.conjugate(blk_f, out=blk_f)
    # c[i, p, k'] = sum_t sig_p[t + k' - (F-1)] s_i[t]: every signal p against reference i at lag k' - (F-1)
    c = np.fft.irfft(np.einsum("pnf,inf->ipf", seg_f, blk_f), n=n_c)
    rr = c[:, :n_src, : 2 * flen - 1].transpose(1, 0, 2)  # [i, j] = r_ij
    xc = c[:, n_src:, flen - 1 : 2 * flen - 1]  # lags 0..F-1 of e_m against s_i
    return rr, xc


def _dense_energies(rr: torch.Tensor, xc: torch.Tensor, silent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Projection energies from the explicit Gram matrix, as mir_eval's `_project` builds it (the dense path).

    rr (B, S, S, 2F-1), xc (B, S, M, F) from `_correlations` (torch), silent (B, S) bool -> p_one (B, M, S),
    p_all (B, M) (see `_pairwise_energies`). The Gram matrix is source-major (index i*F + a):
    G[(i, a), (j, c)] = r_ij[c - a], D[(i, a), m] = xc[i, m, a]. One Cholesky factorisation of the full
    (S*F)^2 matrix per clip serves all estimates; its leading F x F block is the factor of reference 0's
    own Gram block, so the reference-0 projection comes for free; the other references' blocks are
    factorised separately. Used on CUDA and for clips the Levinson path rejects.
    """
    bsz, n_src, _, n_lag = rr.shape
    flen = (n_lag + 1) // 2
    n_est = xc.shape[2]
    # Toeplitz block T[a, c] = rr[F-1-a+c]: the row-reversed Hankel window view, then one copy.
    gram = torch.empty(bsz, n_src, flen, n_src, flen, dtype=rr.dtype, device=rr.device)
    gram.copy_(rr.unfold(-1, flen, 1).flip(-2).permute(0, 1, 3, 2, 4))
    d = xc.permute(0, 1, 3, 2).reshape(bsz, n_src * flen, n_est)
    # A silent (zeroed) reference has all-zero rows and columns; an identity diagonal block keeps the
    # matrix positive definite without changing any projection (its D rows are zero, so are its filters).
    if bool(silent.any()):
        eye = torch.eye(flen, dtype=rr.dtype, device=rr.device)
        for j in range(n_src):
            gram[:, j, :, j, :] += silent[:, j, None, None] * eye
    gram = gram.view(bsz, n_src * flen, n_src * flen)

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
        return p_all[:, :, None].clone(), p_all
    blocks = gram.view(bsz, n_src, flen, n_src, flen)
    diag = torch.stack([blocks[:, j, :, j, :] for j in range(1, n_src)], 1)  # (B, S-1, F, F)
    d_rest = d[:, flen:].reshape(bsz * (n_src - 1), flen, n_est)
    p_rest = _quad_energy(diag.reshape(-1, flen, flen), d_rest).view(bsz, n_src - 1, n_est)
    return torch.cat([p_first[:, None], p_rest], 1).transpose(1, 2), p_all  # (B, M, S), (B, M)


def _levinson_block(n_problems: int, n_src: int, flen: int) -> int:
    """Delays per Levinson step (q) for a batch of problems with S sources: F/q steps on K = q*S square blocks.

    Larger blocks cost more arithmetic (O(q S^3 F^2) in all) but fewer steps, i.e. fewer Python-level NumPy
    calls (about 20 per step, each looping over the problems). Measured on the 2-core development machine
    (F = 512, 2 sources, 3 problems per clip): K = 8 is fastest from 2 clips per call on, K = 16 for a
    single clip. q must divide F.
    """
    want = max(1, (16 if n_problems <= 3 else 8) // n_src)
    while flen % want:
        want -= 1
    return want


def _block_levinson(*groups):
    """Block Levinson-Whittle recursions for the Gram systems G x = d of independent problems.

    Each group is (rr (P, S, S, 2F-1), xc (P, S, M, F), q) as from `_correlations` (any scaling), all with
    the same F, M and block size K = q*S, so that the groups share every NumPy call (a group with fewer
    block steps drops out of the batch when it is done). In delay-major order (index a*S + i) G is block
    Toeplitz: block (a, c) = R[c-a], R[m]_ij = r_ij[m], R[-m] = R[m]^T. Grouping q consecutive delays gives
    the same structure with K x K blocks Rq[m]_{(u,i),(v,j)} = r_ij[m q + v - u] and N = F/q block steps.

    For n = 0..N-1 the recursion keeps the forward and backward predictors f_n, b_n ((n+1) blocks of
    K x K) of the leading (n+1)-block section G_{n+1}: G_{n+1} f_n = [Pf_n; 0; ...], f_n[0] = I and
    G_{n+1} b_n = [...; 0; Pb_n], b_n[n] = I, with Pf, Pb the forward/backward prediction-error
    covariances (Schur complements, positive definite iff G is). With Delta_n = sum_c R[n+1-c]^T f_n[c],
        f_{n+1} = [f_n; 0] - [0; b_n] Pb^-1 Delta,   Pf <- Pf - Delta^T Pb^-1 Delta,
        b_{n+1} = [0; b_n] - [f_n; 0] Pf^-1 Delta^T, Pb <- Pb - Delta Pf^-1 Delta^T.
    Since G_{n+1}^-1 = [G_n^-1 0; 0 0] + b_n Pb_n^-1 b_n^T (the block LDL^T factorisation of G^-1), the
    right-hand sides ride along: e_n = b_n^T d (K x M) is the innovation of d at step n, the energy
    d^T G^-1 d = sum_n e_n^T Pb_n^-1 e_n and x_{n+1} = [x_n; 0] + b_n Pb_n^-1 e_n.
    O(S^3 q F^2) arithmetic per problem, against O(S^3 F^3) for a dense factorisation.

    Returns, per group, x (P, F, S, M) (the delay-major solution), energy (P, M, S) (the energy split by
    the source of the rows it is accumulated on; their sum is d^T G^-1 d) and ratio (P,): the smallest
    eigenvalue of the last prediction-error covariances (the smallest ones: they never grow) and, along
    the way, their smallest diagonal entry, relative to the largest eigenvalue of R[0]; not positive (or
    NaN) means that G is not numerically positive definite.
    """
    k = groups[0][2] * groups[0][0].shape[1]
    n_est = groups[0][1].shape[2]
    flen = groups[0][1].shape[3]
    steps = [flen // q for _, _, q in groups]
    order = sorted(range(len(groups)), key=lambda g: -steps[g])  # longest first: active problems lead
    nb = max(steps)
    r0s, qts, dts = [], [], []
    for g in order:
        rr, xc, q = groups[g]
        n_prob, n_src = rr.shape[:2]
        ng = steps[g]
        assert q * n_src == k and xc.shape[2] == n_est and ng * q == flen
        u = np.arange(q)
        # R[0] (P, K, K): [(u, i), (v, j)] = r_ij[v - u]
        r0 = rr[:, :, :, flen - 1 + u[None, :] - u[:, None]]  # (P, S, S, q, q) [i, j, u, v]
        r0s.append(r0.transpose(0, 3, 1, 4, 2).reshape(n_prob, k, k))
        # qt[p, (u,i), t, (v,j)] = R[ng-t']_{(v,j),(u,i)} = r_ji[(ng-t') q + u - v], t = t' + N - ng for t' = 1..ng-1,
        # so that Delta_n = sum_{c<=n} R[n+1-c]^T f_n[c] is one matrix product with the contiguous window
        # t >= N-1-n; the leading t are unused (zeros).
        lag = flen - 1 + (ng - np.arange(1, ng))[:, None, None] * q + u[None, :, None] - u[None, None, :]  # [t', u, v]
        qt = np.zeros((n_prob, k, nb, k))
        qt[:, :, nb - ng + 1 :, :] = rr[:, :, :, lag].transpose(0, 4, 2, 3, 5, 1).reshape(n_prob, k, ng - 1, k)
        qts.append(qt)
        # dt[p, m, c, (u,i)] = d[(c q + u, i), m]: the right-hand sides, laid out so that e_n^T is one product
        dt = np.zeros((n_prob, n_est, nb, k))
        dt[:, :, :ng] = xc.reshape(n_prob, n_src, n_est, ng, q).transpose(0, 2, 3, 4, 1).reshape(n_prob, n_est, ng, k)
        dts.append(dt)
    r0, qt, dt = (np.concatenate(a) for a in (r0s, qts, dts))
    n_prob = r0.shape[0]
    active = np.array([sum(groups[g][0].shape[0] for g in order if steps[g] > n) for n in range(nb + 1)])

    eye = np.eye(k)
    # fx[p, c] = [f_n[c] | x_n[c-1]]: f_{n+1} = [f_n; 0] + [0; b_n] Kf and x_{n+1} = [x_n; 0] + b_n g are then
    # one product [0; b_n] [Kf | g] added to the same rows (x is stored one block down)
    fx = np.zeros((n_prob, nb + 1, k, k + n_est))
    fx[:, 0, :, :k] = eye
    bbuf = np.zeros((n_prob, nb, k, k))  # b_n[c] at N-1-n+c: [0; b_n] needs no copy when the order grows
    bbuf[:, nb - 1] = eye
    pfb = np.stack([r0, r0], 1)  # (P, 2, K, K): Pf, Pb
    energy = np.zeros((n_prob, n_est, k))
    kg = np.zeros((n_prob, k, k + n_est))  # [Kf | g] (Kf = 0 in the last step)
    dmin = np.full(n_prob, np.inf)
    broken = np.zeros(n_prob, dtype=bool)
    # products of the growing windows go to buffers allocated once (not ~2 temporaries of up to a few MB per step)
    prod = np.empty((n_prob, nb * k, k + n_est))
    tmp = np.empty((n_prob, nb * k, k))
    with np.errstate(all="ignore"):  # a problem going wrong must not warn: the checks reject it
        for n in range(nb):
            a, a2 = active[n], active[n + 1]  # problems still solving at this step, and still growing after it
            bw = bbuf[:a, nb - 1 - n :].reshape(a, (n + 1) * k, k)
            e_t = dt[:a, :, : n + 1].reshape(a, n_est, (n + 1) * k) @ bw  # (a, M, K): e_n^T
            try:
                inv = np.linalg.inv(pfb[:a])  # Pf^-1, Pb^-1 (symmetric)
            except np.linalg.LinAlgError:  # exactly singular: that problem is lost, the others go on
                for p in range(a):
                    try:
                        np.linalg.inv(pfb[p])
                    except np.linalg.LinAlgError:
                        pfb[p] = eye
                        broken[p] = True
                inv = np.linalg.inv(pfb[:a])
            g_t = e_t @ inv[:, 1]  # (a, M, K): (Pb^-1 e_n)^T
            energy[:a] += e_t * g_t
            kg[:a, :, k:] = g_t.transpose(0, 2, 1)
            if a2 > 0:
                fw = fx[:a2, : n + 1, :, :k].reshape(a2, (n + 1) * k, k)
                delta = qt[:a2, :, nb - 1 - n :].reshape(a2, k, (n + 1) * k) @ fw  # (a2, K, K)
                kg[:a2, :, :k] = -(inv[:a2, 1] @ delta)
                kg[a2:a, :, :k] = 0.0  # problems in their last step only add to x
                kb = -(inv[:a2, 0] @ delta.transpose(0, 2, 1))
                np.matmul(fw, kb, out=tmp[:a2, : (n + 1) * k])  # [f_n; 0] Kb, before f changes
            else:
                kg[:a, :, :k] = 0.0
            fx[:a, 1 : n + 2] += np.matmul(bw, kg[:a], out=prod[:a, : (n + 1) * k]).reshape(a, n + 1, k, k + n_est)
            if a2 == 0:
                break
            bbuf[:a2, nb - 2 - n : nb - 1] += tmp[:a2, : (n + 1) * k].reshape(a2, n + 1, k, k)
            pfb[:a2, 0] += delta.transpose(0, 2, 1) @ kg[:a2, :, :k]
            pfb[:a2, 1] += delta @ kb
            dmin[:a2] = np.minimum(dmin[:a2], pfb[:a2].diagonal(0, -2, -1).min((1, 2)))
    finite = np.isfinite(pfb).all((1, 2, 3)) & np.isfinite(r0).all((1, 2))  # NaN/inf: eigvalsh would raise
    ratio = np.full(n_prob, np.nan)
    scale = np.linalg.eigvalsh(r0[finite])[:, -1]
    lam = np.linalg.eigvalsh(0.5 * (pfb[finite] + pfb[finite].transpose(0, 1, 3, 2)))[..., 0].min(1)
    ratio[finite] = np.minimum(lam, dmin[finite]) / scale
    ratio[broken] = -np.inf
    out, start = [None] * len(groups), 0
    for g in order:
        rr, xc, q = groups[g]
        n_prob, n_src = rr.shape[:2]
        sl = slice(start, start + n_prob)
        start += n_prob
        x_g = fx[sl, 1 : steps[g] + 1, :, k:].reshape(n_prob, flen, n_src, n_est)
        e_g = energy[sl].reshape(n_prob, n_est, q, n_src).sum(2)
        out[g] = (x_g, e_g, ratio[sl])
    return out


def _toeplitz_residual(rr: np.ndarray, xc: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x^T (G x - d) per source row, for the systems of `_block_levinson` (the first-order error of its energies).

    rr (P, S, S, 2F-1), xc (P, S, M, F), x (P, F, S, M) -> (P, M, S). (G x)_i[a] = sum_j sum_k r_ij[k] x_j[a+k]
    is a convolution of x_j with the lag-reversed r_ij, done by FFT of length >= 3F-2 (exact, no wrap).
    If x = x_true + dx, then d^T x - x^T (G x - d) = d^T x_true - dx^T G dx: subtracting this term from
    the Levinson energy removes its first-order error, and its size is the error estimate.
    """
    flen = xc.shape[-1]
    n_fft = _fft_len(3 * flen - 2)
    xs = x.transpose(0, 2, 3, 1)  # (P, S, M, F)
    hf = np.fft.rfft(rr[..., ::-1], n=n_fft)  # (P, S, S, nf): H[u] = r[F-1-u]
    xf = np.fft.rfft(xs, n=n_fft)  # (P, S, M, nf)
    yf = np.einsum("pijf,pjmf->pimf", hf, xf)
    resid = np.fft.irfft(yf, n=n_fft)[..., flen - 1 : 2 * flen - 1] - xc  # (P, S, M, F)
    return np.einsum("psmf,psmf->pms", xs, resid)


def _levinson_energies(rr: np.ndarray, xc: np.ndarray, silent: np.ndarray, e_tot: np.ndarray):
    """Projection energies by block Levinson recursions (the fast path on CPU), with an error check per clip.

    rr (B, S, S, 2F-1), xc (B, S, M, F), silent (B, S) bool, e_tot (B, M) -> p_one (B, M, S), p_all (B, M),
    ok (B,) bool. Per clip one block recursion (S x S blocks) for the projection onto all references and
    S scalar ones for the per-reference projections; with q delays per step for the former and q*S for the
    latter, all have K x K blocks and run as one batch (the scalar ones finish after F/(q*S) steps).

    Checks (a clip fails if any fails; its energies are then computed by `_dense_energies` instead):
      * the prediction-error covariances stay positive definite: their diagonal at every step, and the
        smallest eigenvalue of the last ones (the smallest: they never grow), above _LEVINSON_PD_FLOOR
        times the largest eigenvalue of R[0] (otherwise G is numerically singular, e.g. pure tones);
      * the first-order error estimate |x^T (G x - d)| (see `_toeplitz_residual`) of the energies stays
        below _LEVINSON_TOL times each energy difference the ratios are made of (|e_interf|^2,
        |e_artif|^2, |e_interf + e_artif|^2 of every estimate/reference pair), or below _LEVINSON_TOL *
        _LEVINSON_REL_FLOOR * ||e||^2 where that difference is smaller (ratios beyond 100 dB, which no
        float64 computation resolves better).
    The reported energies include the first-order correction.
    """
    bsz, n_src, _, n_lag = rr.shape
    flen = (n_lag + 1) // 2
    rr = rr.copy()
    bi, ji = np.nonzero(silent)
    rr[bi, ji, ji, flen - 1] = 1.0  # identity block for a silent reference, as in the dense path
    # Scale every reference to unit energy (R[0] gets a unit diagonal): projections do not change, and the
    # recursion does not see sources of very different levels.
    w = 1.0 / np.sqrt(rr[:, np.arange(n_src), np.arange(n_src), flen - 1])  # (B, S)
    rr = rr * w[:, :, None, None] * w[:, None, :, None]
    xc = xc * w[:, :, None, None]
    q = _levinson_block(bsz * (1 + n_src) if n_src > 1 else bsz, n_src, flen)
    if n_src == 1:
        results = _block_levinson((rr, xc, q))
    else:
        # per-reference projections: B*S scalar Toeplitz systems (S = 1) with the same M right-hand sides.
        # Grouped by K = q*S delays they share the recursion with the full systems (F/K steps instead of F/q).
        idx = np.arange(n_src)
        r1 = rr[:, idx, idx].reshape(bsz * n_src, 1, 1, n_lag)
        x1c = xc.reshape(bsz * n_src, 1, -1, flen)
        if flen % (q * n_src) == 0:
            results = _block_levinson((rr, xc, q), (r1, x1c, q * n_src))
        else:
            results = _block_levinson((rr, xc, q)) + _block_levinson((r1, x1c, _levinson_block(bsz * n_src, 1, flen)))
    x, energy, ratio = results[0]
    corr = _toeplitz_residual(rr, xc, x)  # (B, M, S)
    p_all = (energy - corr).sum(-1)
    err_all = np.abs(corr.sum(-1))
    if n_src == 1:
        p_one, err_one = p_all[:, :, None].copy(), err_all[:, :, None]
        err_all = np.zeros_like(err_all)  # the same energy on both sides of |e_interf|^2 = p_all - p_one
    else:
        x1, energy1, ratio1 = results[1]
        corr1 = _toeplitz_residual(r1, x1c, x1)  # (B*S, M, 1)
        p_one = (energy1 - corr1).reshape(bsz, n_src, -1).transpose(0, 2, 1)  # (B, M, S)
        err_one = np.abs(corr1).reshape(bsz, n_src, -1).transpose(0, 2, 1)
        ratio = np.minimum(ratio, ratio1.reshape(bsz, n_src).min(1))
    e_tot_ = e_tot[:, :, None]
    p_all_ = p_all[:, :, None]
    dens = np.minimum(e_tot_ - p_one, e_tot_ - p_all_)
    if n_src > 1:  # with one source |e_interf|^2 is exactly 0, not a difference of two estimates
        dens = np.minimum(dens, p_all_ - p_one)
    allowed = _LEVINSON_TOL * np.maximum(dens, _LEVINSON_REL_FLOOR * e_tot_)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN or overflowing energies: rejected
        ok = (ratio > _LEVINSON_PD_FLOOR) & ((err_all[:, :, None] + err_one) <= allowed).all((1, 2))
    return p_one, p_all, ok


def _pairwise_energies(
    ref: torch.Tensor, est: torch.Tensor, flen: int, backend: str | None = None, method: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Energies behind bss_eval_sources for every (estimate m, reference j) pair of every clip.

    ref (B, S, L), est (B, M, L), float64, silent references already zeroed. Returns
      p_one (B, M, S): ||P_j e_m||^2, projection of e_m onto the F delays of reference j (= s_true + e_spat),
      p_all (B, M):    ||P e_m||^2, projection onto the delays of all references (= s_true + e_spat + e_interf),
      e_tot (B, M):    ||e_m||^2.
    mir_eval's decomposition then gives |e_interf|^2 = p_all - p_one and |e_artif|^2 = e_tot - p_all, and
    |e_interf + e_artif|^2 = e_tot - p_one (Pythagoras: the projections are nested orthogonal ones).

    `method`: "levinson" (block Levinson recursions in NumPy, clips failing its checks redone densely),
    "dense" (Cholesky of the explicit Gram matrix), or None: Levinson on CPU, dense on CUDA.
    `backend` ("numpy" or "torch") forces how the correlations are computed; by default NumPy on CPU,
    torch on CUDA (tests use it to check the CUDA code path's arithmetic on CPU).
    """
    use_numpy = ref.device.type == "cpu" if backend is None else backend == "numpy"
    if method is None:
        method = "levinson" if ref.device.type == "cpu" else "dense"
    rr, xc = _correlations(ref, est, flen, use_numpy)
    silent = _sum_sq(ref) == 0  # (B, S): all-zero references
    e_tot = _sum_sq(est)
    if method == "dense":
        if use_numpy:
            rr, xc = torch.from_numpy(rr), torch.from_numpy(xc)
        p_one, p_all = _dense_energies(rr, xc, silent)
        return p_one, p_all, e_tot
    if method != "levinson":
        raise ValueError(f"unknown method {method!r}")
    rr_np = rr if use_numpy else rr.cpu().numpy()
    xc_np = xc if use_numpy else xc.cpu().numpy()
    p_one, p_all, ok = _levinson_energies(rr_np, xc_np, silent.cpu().numpy(), e_tot.cpu().numpy())
    p_one, p_all = torch.from_numpy(p_one).to(ref.device), torch.from_numpy(p_all).to(ref.device)
    bad = torch.from_numpy(~ok).to(ref.device)
    if bool(bad.any()):
        rr_t, xc_t = torch.from_numpy(rr_np), torch.from_numpy(xc_np)
        idx = torch.from_numpy(np.flatnonzero(~ok))
        p_one[bad], p_all[bad] = (v.to(ref.device) for v in _dense_energies(rr_t[idx], xc_t[idx], silent.cpu()[idx]))
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
# Input checks
# ----------------------------------------------------------------------------------------------------


def _check_sizes(shape: tuple, n_src: int, n_smp: int, flen: int, layout: str) -> None:
    """Reject, before anything is allocated, shapes that cannot be meant; `layout` names the expected axes.

    More sources than samples is a transposed array or a channel axis (a (2, 8000, 1) array read as 8000
    sources of 1 sample would need terabytes); more than MAX_SOURCES sources is mir_eval's limit; and with
    L <= (S-1)*F + 1 samples the F delays of the S references span every signal of that length, so every
    estimate is "perfect" and the ratios mean nothing (the Gram matrix is singular besides).
    """
    if flen < 1:
        raise BssEvalError(f"filter_len must be at least 1, got {flen}")
    if n_src > n_smp:
        raise BssEvalError(
            f"shape {tuple(shape)} read as {layout} gives {n_src} sources of {n_smp} sample{'s' * (n_smp != 1)} each; "
            "samples go on the last axis (is the array transposed, or does it have a channel axis?)"
        )
    if n_src > MAX_SOURCES:
        raise BssEvalError(
            f"{n_src} sources is more than MAX_SOURCES = {MAX_SOURCES} (mir_eval's limit: the cost grows as the cube "
            "of the number of sources); set avsep_cli.metrics.MAX_SOURCES to override"
        )
    need = (n_src - 1) * flen + 2
    if n_smp < need:
        raise BssEvalError(
            f"{n_smp} samples are too few to score {n_src} sources with a {flen}-tap distortion filter: at least "
            f"(S-1)*{flen}+2 = {need} are needed (with fewer, the filtered references span every signal)"
        )


def _zero_nonfinite(x: torch.Tensor, ss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, N, L) and its sums of squares ss (B, N) -> x with every signal that has a NaN or inf sample zeroed
    (so that nothing non-finite reaches the FFTs and solvers), its sums of squares, and which signals were
    finite (B, N) bool. A finite sum of squares proves its signal finite, so the exact check (a full pass
    over x) runs only when some sum is not."""
    if bool(torch.isfinite(ss).all()):
        return x, ss, torch.ones_like(ss, dtype=torch.bool)
    fin = torch.isfinite(x).all(-1)
    x = torch.where(fin[..., None], x, 0.0)
    return x, _sum_sq(x), fin


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
    its entry invalid. An estimate with a NaN or inf sample makes its entry invalid too (a method's failure,
    scored as nothing); a reference with one makes every entry of its clip invalid, since every reference
    enters every projection of the clip (a data problem: callers should check their references). Invalid
    entries are NaN; valid ones are finite (clamped to +-300 dB). Raises `BssEvalError` (a ValueError) on
    mismatched shapes and on shapes that cannot be meant (see `_check_sizes`: S > L, S > MAX_SOURCES,
    L < (S-1)*filter_len + 2), before any work.
    With `compute_permutation` the estimates are matched to references by maximum mean SIR (mir_eval's
    rule, invalid pairs left out); otherwise estimate j is scored against reference j.
    `max_chunk` bounds how many clips are processed at once (the batch is split into equal chunks); the
    default keeps the working set to about 200 MB: FFT correlations ~ chunk * S^2 * L * 24 bytes, plus on
    CUDA (dense path) the Gram matrix and its factor ~ chunk * (S*F)^2 * 16 bytes. On CPU larger chunks
    amortise the Levinson recursion's per-step overhead over more clips.
    """
    if reference.shape != estimate.shape:
        raise BssEvalError(f"reference shape {tuple(reference.shape)} != estimate shape {tuple(estimate.shape)}")
    if reference.ndim == 2:
        reference, estimate = reference[None], estimate[None]
    if reference.ndim != 3:
        raise BssEvalError(f"expected (B, S, L) tensors, got {reference.ndim} dimensions")
    bsz, n_src, n_smp = reference.shape
    _check_sizes(reference.shape, n_src, n_smp, filter_len, "(B, S, L)")
    dev = reference.device
    if bsz == 0:
        empty = torch.empty(0, n_src, dtype=torch.float64, device=dev)
        return BssResult(empty, empty.clone(), empty.clone(), torch.empty(0, n_src, dtype=torch.long, device=dev),
                         torch.empty(0, n_src, dtype=torch.bool, device=dev))
    ref = reference.to(torch.float64)
    est = estimate.to(dtype=torch.float64, device=dev)
    ref, ref_ss, ref_fin = _zero_nonfinite(ref, _sum_sq(ref))
    est, est_ss, est_fin = _zero_nonfinite(est, _sum_sq(est))
    ref_ok = (ref_ss / n_smp > silence_threshold) & ref_fin.all(-1, keepdim=True)  # (B, S)
    est_ok = (est_ss / n_smp > silence_threshold) & est_fin
    if not bool(ref_ok.all()):
        ref = ref * ref_ok[..., None]  # zero silent references so they drop out of the Gram matrix exactly
    if max_chunk is None:
        budget = 8_000_000 if dev.type == "cpu" else 4_000_000  # the dense path also holds Gram matrices
        max_chunk = max(1, int(budget // max(1, n_src * n_src * n_smp)))
    n_chunks = -(-bsz // max_chunk)
    chunk = -(-bsz // n_chunks)  # equal chunks: a remainder of one clip would run the recursion alone

    pairs = []
    for s in range(0, bsz, chunk):
        r, e = ref[s : s + chunk], est[s : s + chunk]
        p_one, p_all, e_tot = _pairwise_energies(r, e, filter_len)
        pairs.append(torch.stack(_ratios(p_one, p_all, e_tot, cap=True)))  # (3, b, M, S)
    sdr, sir, sar = torch.cat(pairs, 1).unbind(0)  # each (B, M=S, S) [estimate, reference]
    # valid means finite: this also catches finite samples so large that their energies overflow
    pair_ok = est_ok[:, :, None] & ref_ok[:, None, :] & torch.isfinite(sdr) & torch.isfinite(sir) & torch.isfinite(sar)
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
    Raises `BssEvalError` (a ValueError, as mir_eval raises) on mismatched shapes, more than 2 dimensions,
    more than MAX_SOURCES sources, and any all-zero reference or estimate (the batched `bss_eval` reports
    those as skipped instead), like mir_eval; and, where mir_eval 0.8 returns NaN or runs into garbage or
    out of memory, on NaN or inf samples, on more sources than samples (a transposed array) and on fewer
    than (nsrc-1)*512+2 samples (the filtered references would span every signal). Empty inputs warn
    twice, once for each argument, and return empty arrays, as in mir_eval (which also warns that it is
    deprecated: that FutureWarning is its own). A zero denominator gives inf (as mir_eval, e.g. the SIR of
    a single source). Ratios above ~90 dB are rounding noise here and in mir_eval alike and may differ by
    a dB or more (e.g. beside a practically silent reference, or for an estimate equal to a filtered
    reference, where mir_eval reports ~300 dB and this function may report inf, since residual energies
    are read off as differences of projection energies).
    """
    # contiguous copies: torch cannot wrap views with negative strides (e.g. est[::-1])
    ref = np.ascontiguousarray(reference_sources, dtype=np.float64)
    est = np.ascontiguousarray(estimated_sources, dtype=np.float64)
    if est.ndim == 1:
        est = est[np.newaxis, :]
    if ref.ndim == 1:
        ref = ref[np.newaxis, :]
    if ref.shape != est.shape:
        raise BssEvalError(
            f"The shape of estimated sources and the true sources should match. reference_sources.shape = "
            f"{ref.shape}, estimated_sources.shape = {est.shape}"
        )
    if ref.ndim > 2:
        raise BssEvalError(f"Sources must be (nsrc, nsampl); got {ref.ndim} dimensions")
    if ref.size == 0:
        # mir_eval's validate warns for each argument (UserWarning), then returns empty arrays
        for name in ("reference_sources", "estimated_sources"):
            warnings.warn(
                f"{name} is empty, should be of size (nsrc, nsample).  sdr, sir, sar, and perm will all be empty "
                "np.ndarrays",
                stacklevel=2,
            )
        return np.array([]), np.array([]), np.array([]), np.array([])
    _check_sizes(ref.shape, ref.shape[0], ref.shape[1], FILTER_LEN, "(nsrc, nsampl)")
    for name, x in (("reference", ref), ("estimated", est)):
        bad = np.flatnonzero(~np.isfinite(x).all(1))
        if bad.size:
            raise BssEvalError(f"{name} source(s) {bad.tolist()} have NaN or inf samples; BSS Eval needs finite signals")
    for name, x in (("reference", ref), ("estimated", est)):
        if np.any(np.all(x == 0, axis=1)):
            raise BssEvalError(f"All the {name} sources should be non-silent (not all zeros)")

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
    silent (mean square <= SILENCE_THRESHOLD) or has a NaN or inf sample; capped at 300 dB like `bss_eval`.
    `zero_mean` subtracts each signal's mean first (some papers do; the default does not).
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
    ok &= torch.isfinite(s).all(-1) & torch.isfinite(e).all(-1)
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
    (silent reference, estimate or mixture; NaN or inf samples as in `bss_eval`: in the estimate or the
    mixture, that entry; in any reference, the whole clip). Shapes are checked as in `bss_eval`.
    """
    if reference.shape != estimate.shape:
        raise BssEvalError(f"reference shape {tuple(reference.shape)} != estimate shape {tuple(estimate.shape)}")
    if reference.ndim != 3:
        raise BssEvalError(f"expected (B, S, L) tensors, got {reference.ndim} dimensions")
    if mixture.shape != reference.shape[:1] + reference.shape[2:]:
        raise BssEvalError(f"mixture shape {tuple(mixture.shape)} should be (B, L) = {(reference.shape[0], reference.shape[2])}")
    bsz, n_src, n_smp = reference.shape
    _check_sizes(reference.shape, n_src, n_smp, filter_len, "(B, S, L)")
    ref = reference.to(torch.float64)
    est = torch.cat([estimate.to(ref), mixture.to(ref)[:, None]], 1)  # (B, S+1, L): mixture is the last
    if bsz == 0:
        empty = torch.empty(0, n_src, dtype=ref.dtype, device=ref.device)
        return empty, torch.empty(0, n_src, dtype=torch.bool, device=ref.device)
    ref, ref_ss, ref_fin = _zero_nonfinite(ref, _sum_sq(ref))
    est, est_ss, est_fin = _zero_nonfinite(est, _sum_sq(est))
    ref_ok = (ref_ss / n_smp > silence_threshold) & ref_fin.all(-1, keepdim=True)
    est_ok = (est_ss / n_smp > silence_threshold) & est_fin
    if not bool(ref_ok.all()):
        ref = ref * ref_ok[..., None]
    p_one, p_all, e_tot = _pairwise_energies(ref, est, filter_len)
    sdr = _ratios(p_one, p_all, e_tot, cap=True)[0]  # (B, S+1, S)
    j = torch.arange(n_src, device=ref.device)
    gain = sdr[:, j, j] - sdr[:, n_src, :]
    valid = ref_ok & est_ok[:, :n_src] & est_ok[:, n_src : n_src + 1] & torch.isfinite(gain)
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
