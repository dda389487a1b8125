"""Training IAL-CMS as the authors' code trains it: the losses, the memory bank of separated elements and the
two-optimiser system (`LightningModule/AdversarialTrainLightingModule.py`, `AVSeparator.py`,
`Critics/`; golden tests of the losses in tests/test_golden.py).

Signal path (`SignalPath`): mixture STFT (1022/256) -> |STFT| on the 256-bin log grid (the code's "mel";
`freq_scale="mel"` is the paper's HTK mel) -> log(mag + 1e-8) -> the CMS net gives one mask per object ->
the separated element's grid magnitude is mag * mask (what the critic and the memory bank see) -> the mask
is resampled to the linear grid, applied to the mixture STFT with its phase and inverted.

Losses: L_sep = -mean zero-mean SI-SNR with a 30 dB cap of each clip's mixture against the sum of its
objects' waveforms (`sep_loss="snr"`: the paper's Eq. 13, plain SNR); L_av (`av_contrast`: the maximum
over positions of the cosine between each object's visual map and its audio-visual feature, InfoNCE with
temperature 0.3, the 6 hardest negatives left out); Independency Adversarial Learning: dependent pairs P
(every separated element with a random other element of the same input mixture) and independent pairs Q
(every element with one drawn from a FIFO memory bank of 1000 elements that starts as random noise; with
`both_from_bank`, both from the bank, as the paper's text); critic hinge loss L_D = ||w||^2 + mean relu(1 -
D(Q)) + mean relu(1 + D(P)) and separator loss L_G = mean D(Q) - mean D(P). Pairs are drawn, and the
batch's elements enqueued, each time the critic looks at a batch (twice on separator steps, as there).

`IALCMSSystem` alternates like the authors' code: the critic every step (on a no-grad separation), the
separator every `separator_every`-th step (3; supervised training too, the OnlySep configuration),
minimising L_sep + lambda_ial L_G + lambda_av L_av with the trainer's optimiser (Adam; visual side lr 1e-3,
the rest 1e-4); the critic minimises L_D with its own Adam (lr 1e-4, betas (0, 0.9), weight decay 1e-3).
Both lambdas warm up as the authors ran them: lambda_ial starts at 0.01 / 10^3 and grows x10 after batches
8k, 16k and 24k; lambda_av starts at 0.05 / 10^3 and grows x10 after separator steps 4k, 8k and 12k
(`lambda_ial_steps`, `lambda_av_steps`; empty lists: constant). The logged `loss` is L_sep + lambda_ial
(L_G + L_D) + lambda_av L_av.

Unsupervised (default, `MixtureOfMixtures`): every item is itself a mixture (a synthetic duet of two solo
clips of different classes, or a real duet) and the model separates the sum of two items; the only audio
targets are the two items' mixtures; the system reads exactly `UNSUPERVISED_KEYS` of a batch, never stems.
Supervised (`MixSeparate`, the OnlySep configuration): each source's waveform against its solo clip; no IAL.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from avsep_cli import dsp
from avsep_cli.training.systems import System

UNSUPERVISED_KEYS = ("mixture", "clip_mixtures", "crops", "object_clip", "object_valid")


@dataclass
class IALOptions:
    """Training options of IAL-CMS (TrainConfig.options); the defaults are the authors' code's."""

    supervised: bool = False  # train against ground-truth stems (MixSeparate) instead of each item's mixture
    items: str = "synthetic"  # unsupervised items: synthetic duets (code), real "duets", or "both" (datasets.MixtureOfMixtures)
    ial: bool = True  # Independency Adversarial Learning (critic + L_G); False: the "L_sep (+ L_av)" ablations
    lambda_ial: float = 0.01  # final weight of L_G (+ L_D in the logged total) (paper, code)
    lambda_av: float = 0.05  # final weight of L_av (paper, code)
    lambda_ial_steps: tuple = (8000, 16000, 24000)  # batches after which lambda_ial grows x10 (the authors' runs)
    lambda_av_steps: tuple = (4000, 8000, 12000)  # separator steps after which lambda_av grows x10
    sep_loss: str = "sisnr"  # zero-mean SI-SNR, capped (code); "snr": the paper's Eq. 13
    max_sisnr: float = 30.0  # the SI-SNR cap in dB (code: max_sisnr 30)
    tau: float = 1e-3  # Eq. 13 (sep_loss "snr"): SNR saturates at 30 dB
    temperature: float = 0.3  # L_av temperature (code)
    drop_hardest: int = 6  # L_av: hardest negatives left out per anchor (code; at least one kept here)
    separator_every: int = 3  # separator step every 3rd batch, critic every batch (code, also OnlySep)
    bank_size: int = 1000  # FIFO memory bank of separated elements (paper, code)
    both_from_bank: bool = False  # Q pairs with both elements from the bank (paper text) or one (code)
    critic_lr: float = 1e-4  # critic Adam (code)
    critic_betas: tuple = (0.0, 0.9)
    critic_weight_decay: float = 1e-3
    critic_preset: str = ""  # critic widths: paper|cpu; "" follows the run's --preset

    @classmethod
    def from_dict(cls, d: dict) -> "IALOptions":
        d = dict(d)
        for k in ("critic_betas", "lambda_ial_steps", "lambda_av_steps"):
            if k in d:
                d[k] = tuple(d[k])
        if d.get("sep_loss", "sisnr") not in ("sisnr", "snr"):
            raise TypeError(f"sep_loss {d['sep_loss']!r}: expected sisnr or snr")
        return cls(**d)


def warmed_up(final: float, steps, t: int) -> float:
    """The authors' lambda warm-up: final / 10^(number of `steps` >= t) at batch (or separator step) t, i.e.
    x10 after each step in `steps`, `final` once all have passed."""
    return final / 10 ** sum(1 for s in steps if int(s) >= t)


# --- losses ---------------------------------------------------------------------------------------------


def snr_loss(target: torch.Tensor, estimate: torch.Tensor, tau: float = 1e-3, eps: float = 1e-8) -> torch.Tensor:
    """The paper's Eq. 13 (`sep_loss="snr"`): mean over (...) of -10 log10(||A||^2 / (||A - A_hat||^2 + tau
    ||A||^2)) for waveforms (..., L); tau = 1e-3 caps the SNR at 30 dB. `eps` keeps a silent target finite."""
    power = target.pow(2).sum(-1)
    err = (target - estimate).pow(2).sum(-1)
    return (-10 * torch.log10((power + eps) / (err + tau * power + eps))).mean()


sep_loss = snr_loss  # the name before issue 16


def si_snr(target: torch.Tensor, estimate: torch.Tensor, max_db: float | None = 30.0) -> torch.Tensor:
    """The reference's `cal_video_sisnr` (utils.py 521-557): zero-mean SI-SNR in dB of (..., L) waveforms ->
    (...). The projection of the estimate on the target is the signal; with `max_db` the noise energy is
    floored by 10^(-max_db / 10) x the signal energy, so the value saturates at max_db."""
    eps = 1e-8
    t = target - target.mean(-1, keepdim=True)
    e = estimate - estimate.mean(-1, keepdim=True)
    energy = t.pow(2).sum(-1, keepdim=True) + eps
    proj = (e * t).sum(-1, keepdim=True) * t / (energy + eps)  # (..., L): the reference adds eps twice
    noise = e - proj
    p_energy, n_energy = proj.pow(2).sum(-1), noise.pow(2).sum(-1)
    if max_db is None:
        ratio = p_energy / (n_energy + eps)
    else:
        ratio = p_energy / (n_energy + 10 ** (-max_db / 10) * p_energy + eps)
    return 10 * torch.log10(ratio + eps)


def sisnr_loss(target: torch.Tensor, estimate: torch.Tensor, max_db: float | None = 30.0) -> torch.Tensor:
    """L_sep as the authors' code computes it (AVSeparator.sep_loss, sep_loss_type wav, max_sisnr 30):
    -mean SI-SNR of (..., L) waveforms."""
    return -si_snr(target, estimate, max_db).mean()


def av_contrast(fv: torch.Tensor, f_av_c: torch.Tensor, temperature: float = 0.3, drop_hardest: int = 6) -> torch.Tensor:
    """L_av as the authors' code computes it (AVSeparator.contrastive_loss, "fusion", 161-188): fv (N, D, h, w)
    the objects' visual maps, f_av_c (N, D) their audio-visual features; sim[i, j] = max over positions of
    cos(fv_i, f_av_c_j); the loss of a row is -log(e_ii / (e_ii + sum of its negatives)) with e = exp(sim /
    t), the `drop_hardest` largest negatives left out (utils.py cal_Semantic_Tolerence_DML), averaged over
    rows, for rows and columns, halved. The reference needs N >= drop_hardest + 1 objects; here at least one
    negative is always kept, and fewer than 2 objects give 0."""
    n = fv.shape[0]
    if n < 2:
        return f_av_c.sum() * 0.0
    # F.cosine_similarity's terms (each side over its norm clamped at 1e-8) as one product of the unit
    # vectors, not a broadcast (N, N, D, h, w) tensor
    unit_v, unit_av = F.normalize(fv, dim=1, eps=1e-8), F.normalize(f_av_c, dim=1, eps=1e-8)
    sim = torch.einsum("idhw,jd->ijhw", unit_v, unit_av).amax(dim=(-1, -2))  # (N, N)
    k = max(0, min(drop_hardest, n - 2))

    def rows(c: torch.Tensor) -> torch.Tensor:
        score = torch.exp(c / temperature)
        eye = torch.eye(n, dtype=torch.bool, device=c.device)
        neg = ~eye
        if k:
            top = (score * neg).topk(k, dim=1).indices
            neg = neg & ~torch.zeros_like(neg).scatter_(1, top, True)
        neg_score = (score * neg).sum(1, keepdim=True)
        loss = (eye * -torch.log(score / (score + neg_score + 1e-8) + 1e-8)).sum(1) / (1e-8 + 1)
        return loss.mean()

    return 0.5 * (rows(sim) + rows(sim.t()))


def hinge_critic_loss(independent: torch.Tensor, dependent: torch.Tensor, w_penalty: torch.Tensor,
                      c: float = 1.0) -> torch.Tensor:
    """The critic's Geometric-GAN hinge loss (GeometricGan.py 41-44): ||w||^2 + C (mean relu(1 - D(Q)) +
    mean relu(1 + D(P)))."""
    return w_penalty + c * (F.relu(1 - independent).mean() + F.relu(1 + dependent).mean())


def generator_loss(independent: torch.Tensor, dependent: torch.Tensor) -> torch.Tensor:
    """L_G = mean D(Q) - mean D(P) (GeometricGan.py 56): the separator makes its dependent pairs look
    independent."""
    return independent.mean() - dependent.mean()


def info_nce(f_av_c: torch.Tensor, f_v_c: torch.Tensor, valid: torch.Tensor | None = None,
             temperature: float = 0.3, drop_hardest: int = 0) -> torch.Tensor:
    """InfoNCE over the valid objects: f_av_c, f_v_c (N, D) unit vectors; object n's audio-visual feature
    and its own visual feature are the positive pair, the other objects' the negatives; symmetric (audio ->
    visual and visual -> audio). `drop_hardest` ignores that many of the most similar negatives per anchor,
    always keeping at least one. Fewer than 2 valid objects: 0."""
    if valid is not None:
        f_av_c, f_v_c = f_av_c[valid], f_v_c[valid]
    n = f_av_c.shape[0]
    if n < 2:
        return f_av_c.sum() * 0.0
    logits = f_av_c @ f_v_c.t() / temperature  # (N, N)
    target = torch.arange(n, device=logits.device)
    k = min(drop_hardest, n - 2)
    losses = []
    for lg in (logits, logits.t()):
        if k > 0:
            eye = torch.eye(n, dtype=torch.bool, device=lg.device)
            neg = lg.detach().masked_fill(eye, float("-inf"))
            hard = neg.topk(k, dim=1).indices  # (N, k)
            drop = torch.zeros_like(eye).scatter_(1, hard, True)
            lg = lg.masked_fill(drop, float("-inf"))
        losses.append(F.cross_entropy(lg, target))
    return sum(losses) / 2


def critic_loss(critic, p: tuple[torch.Tensor, torch.Tensor], q: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Hinge loss (Geometric GAN): mean relu(1 - D(Q)) + mean relu(1 + D(P)) + ||w||^2."""
    return F.relu(1 - critic(*q)).mean() + F.relu(1 + critic(*p)).mean() + critic.w_penalty()


def separator_adv_loss(critic, p: tuple[torch.Tensor, torch.Tensor], q: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """L_G = mean D(Q) - mean D(P): the separator makes its dependent pairs look independent."""
    return critic(*q).mean() - critic(*p).mean()


# --- memory bank ----------------------------------------------------------------------------------------


class MemoryBank:
    """The reference's FIFO bank (PairSampleModule.py Memorybank): `size` slots of separated elements (F, T),
    filled with standard normal noise at first (the reference's randn start, made on the first push, when
    the element shape is known), overwritten in a ring; `sample` draws slots uniformly, noise included."""

    def __init__(self, size: int = 1000):
        self.size, self.idx = size, 0
        self.items: torch.Tensor | None = None  # (size, F, T)

    def __len__(self) -> int:
        return 0 if self.items is None else self.size

    def ensure(self, like: torch.Tensor) -> None:
        """Start the bank as noise shaped like the elements `like` (N, F, T), if not yet (or shaped otherwise)."""
        if self.items is None or self.items.shape[1:] != like.shape[1:]:
            self.items = torch.randn(self.size, *like.shape[1:], device=like.device, dtype=like.dtype)
            self.idx = 0

    def push(self, elems: torch.Tensor) -> None:
        """elems (N, F, T); the oldest are overwritten beyond `size`."""
        elems = elems.detach()
        self.ensure(elems)
        for e in elems:
            self.items[self.idx] = e
            self.idx = (self.idx + 1) % self.size

    def sample(self, n: int) -> torch.Tensor:
        """(n, F, T) uniformly drawn slots (with replacement)."""
        return self.items[torch.randint(self.size, (n,))]

    def state_dict(self) -> dict:
        return {"size": self.size, "idx": self.idx, "items": self.items if self.items is not None else torch.zeros(0)}

    def load_state_dict(self, st: dict) -> None:
        self.size, self.idx = int(st["size"]), int(st.get("idx", 0))
        self.items = st["items"] if st["items"].numel() else None


# --- the signal path ------------------------------------------------------------------------------------


class SignalPath:
    """What an IAL-CMS net sees and how its masks become waveforms (StftMelModule): |STFT| (1022/256)
    resampled onto the 256-bin grid of `scale` ("log": the reference's grid, bilinear with align_corners
    True; "mel": the paper's HTK mel), the net's input log(mag + 1e-8) (legacy nets: log(max(mag, 1e-10)));
    a mask on that grid is resampled back to the linear bins, applied to the mixture STFT with its phase
    and inverted."""

    def __init__(self, scale: str = "log", legacy: bool = False):
        self.warp, self.legacy = dsp.warp_for(scale), legacy

    def features(self, mixture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, L) -> STFT (B, 512, T) complex, grid magnitude (B, 256, T), log magnitude (B, 1, 256, T)."""
        spec = dsp.stft(mixture)
        mag = self.warp.warp(spec.abs())
        log = dsp.log_magnitude(mag) if self.legacy else torch.log(mag + 1e-8)
        return spec, mag, log.unsqueeze(1)

    def linear(self, mask: torch.Tensor) -> torch.Tensor:
        """(N, 256, T) -> (N, 512, T)."""
        return self.warp.unwarp(mask)

    def waves(self, spec: torch.Tensor, mask: torch.Tensor, length: int) -> torch.Tensor:
        """Mixture STFT rows (N, 512, T) and masks (N, 256, T) -> (N, length) waveforms."""
        return dsp.istft(dsp.apply_mask(spec, self.linear(mask)), length)


def signal_path(model) -> SignalPath:
    cfg = getattr(model.module if hasattr(model, "module") else model, "config", None)
    return SignalPath(getattr(cfg, "freq_scale", "mel"), bool(getattr(cfg, "legacy", True)))


def mel_features(mixture: torch.Tensor, model=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, L) -> STFT (B, 512, T) complex, grid magnitude (B, 256, T), log magnitude (B, 1, 256, T) of
    `model`'s signal path (None: the legacy mel path)."""
    return (signal_path(model) if model is not None else SignalPath("mel", True)).features(mixture)


def separate(model, mixture: torch.Tensor, crops: torch.Tensor, mix_index: torch.Tensor,
             autocast=contextlib.nullcontext) -> dict[str, torch.Tensor]:
    """mixture (B, L); crops (N, K, 3, H, W) uint8, or their trunk features (N, K, 512, h, w) float32 (cached
    crops, or class prototypes: separation by name); mix_index (N,) -> the model's outputs plus `elems`
    (N, 256, T) separated grid magnitudes (what the critic and the bank see) and `waves` (N, L) waveforms.
    The net runs in `autocast()` (e.g. bf16), its outputs come back float32 for the signal path and losses."""
    sp = signal_path(model)
    spec, mag, logmag = sp.features(mixture)
    with autocast():
        out = dict(model(logmag, crops, mix_index))
    out = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in out.items()}
    mask = out["mask"][:, 0]  # (N, 256, T)
    out["elems"] = mag[mix_index] * mask
    out["waves"] = sp.waves(spec[mix_index], mask, mixture.shape[-1])
    return out


def linear_masks(model, mixture: torch.Tensor, crops: torch.Tensor, mix_index: torch.Tensor,
                 autocast=contextlib.nullcontext) -> torch.Tensor:
    """The masks of `separate` without applying them: mixture (B, L), crops (N, K, ...) and mix_index (N,)
    as there -> (N, 512, T) float32 masks on the linear grid; the net runs in `autocast()`."""
    sp = signal_path(model)
    _, _, logmag = sp.features(mixture)
    with autocast():
        mask = model(logmag, crops, mix_index)["mask"][:, 0]  # (N, 256, T)
    return sp.linear(mask.float())  # (N, 512, T)


# --- the system -----------------------------------------------------------------------------------------


class IALCMSSystem(System):
    """Separator (the trainer's model and optimiser) plus the critic (own optimiser); `manual_step` is
    called by the trainer in place of its own backward/step."""

    def __init__(self, model, model_name: str, model_args: dict, options: IALOptions, critic_args: dict,
                 grad_clip: float = 0.0):
        super().__init__(model, model_name, model_args)
        from avsep_cli.models.ialcms_critic import build_critic

        self.opts, self.grad_clip = options, grad_clip
        self.critic = build_critic(critic_args)
        self.critic_args = critic_args
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=options.critic_lr,
                                                 betas=tuple(options.critic_betas), weight_decay=options.critic_weight_decay)
        self.bank = MemoryBank(options.bank_size)
        self.sep_steps = 0  # separator steps so far (lambda_av's warm-up counts these)
        self.av_contrast = bool(model_args.get("av_contrast", True))
        self.legacy = bool(getattr(getattr(model, "config", None), "legacy", False))

    def networks(self) -> list[torch.nn.Module]:
        return [self.model, self.critic]

    def to(self, device: torch.device) -> "IALCMSSystem":
        self.model.to(device)
        self.critic.to(device)  # in place: the critic optimiser keeps its parameters
        return self

    # -- batches --
    def _inputs(self, batch) -> dict:
        """The flat object list of a batch: crops (N, K, 3, H, W), mix_index (N,) (the input mixture of each
        object), and the targets: the items' own mixtures (unsupervised) or the stems (supervised)."""
        if self.opts.supervised:
            mixture, stems = batch["mixture"], batch["stems"]
            frames = batch["feats"] if "feats" in batch else batch["frames"]  # pictures or cached features
            b, s = stems.shape[:2]
            return {"mixture": mixture, "crops": frames.flatten(0, 1),
                    "mix_index": torch.arange(b, device=mixture.device).repeat_interleave(s), "stems": stems}
        mixture, clip_mixes, crops, obj_clip, valid = (batch[k] for k in UNSUPERVISED_KEYS)
        bi, oi = valid.nonzero(as_tuple=True)  # valid objects only: padded slots never reach the network
        return {"mixture": mixture, "crops": crops[bi, oi], "mix_index": bi, "clip_mixtures": clip_mixes,
                "clip_of": obj_clip[bi, oi]}

    def _sep_loss(self, inp: dict, waves: torch.Tensor) -> torch.Tensor:
        if self.opts.supervised:
            b, s = inp["stems"].shape[:2]
            target, est = inp["stems"], waves.view(b, s, -1)
        else:
            target = inp["clip_mixtures"]  # (B, 2, L): each item's mixture, estimated by the sum of its objects
            est = torch.zeros_like(target).index_put((inp["mix_index"], inp["clip_of"]), waves, accumulate=True)
        if self.opts.sep_loss == "snr":
            return snr_loss(target, est, self.opts.tau)
        return sisnr_loss(target, est, self.opts.max_sisnr)

    def _av_loss(self, out: dict) -> torch.Tensor:
        if self.legacy:
            return info_nce(out["f_av_c"], out["f_v_c"], None, self.opts.temperature, self.opts.drop_hardest)
        return av_contrast(out["fv"], out["f_av_c"], self.opts.temperature, self.opts.drop_hardest)

    # -- IAL pairs --
    @staticmethod
    def partners(mix_index: torch.Tensor) -> torch.Tensor:
        """(N,) -> (N,): for every element a random other element separated from the same input mixture
        (PairSampleModule.py 58-69); an element alone in its mixture is its own partner (no such pair there)."""
        out = torch.arange(mix_index.numel(), device=mix_index.device)
        for m in mix_index.unique().tolist():
            idx = (mix_index == m).nonzero()[:, 0]
            k = idx.numel()
            if k > 1:
                r = torch.randint(k - 1, (k,), device=idx.device)
                r = r + (r >= torch.arange(k, device=idx.device)).long()  # skip itself
                out[idx] = idx[r]
        return out

    def pairs(self, elems: torch.Tensor, mix_index: torch.Tensor):
        """P and Q as ((n, F, T), (n, F, T)) tuples: P every element with a random other element of its input
        mixture, Q every element with a bank element (drawn before the element is enqueued), or two bank
        elements with `both_from_bank`. The batch's elements are enqueued. None when no mixture holds two."""
        part = self.partners(mix_index)
        has = part != torch.arange(part.numel(), device=part.device)
        if not has.any():
            return None
        firsts, seconds = [], []
        self.bank.ensure(elems)
        for e in elems:
            a = self.bank.sample(1)
            firsts.append(self.bank.sample(1) if self.opts.both_from_bank else e[None])
            seconds.append(a)
            self.bank.push(e[None])
        q = (torch.cat(firsts).to(elems.device), torch.cat(seconds).to(elems.device))
        p = (elems[has], elems[part[has]])
        return p, q

    # -- steps --
    def forward_losses(self, batch, lambda_av: float = 1.0) -> dict:
        """Separator forward and its losses (no step). Returns the tensors the steps need."""
        inp = self._inputs(batch)
        out = separate(self.forward_model, inp["mixture"], inp["crops"], inp["mix_index"], self.autocast)
        l_sep = self._sep_loss(inp, out["waves"])
        l_av = self._av_loss(out) if self.av_contrast else l_sep.new_zeros(())
        return {"inp": inp, "out": out, "sep": l_sep, "av": l_av}

    def critic_step(self, p, q) -> torch.Tensor:
        """One critic update on detached pairs; only the critic's parameters move."""
        self.critic.train()
        p = tuple(x.detach() for x in p)
        q = tuple(x.detach() for x in q)
        self.critic_optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            d_q, d_p = self.critic(*q), self.critic(*p)
        loss = hinge_critic_loss(d_q.float(), d_p.float(), self.critic.w_penalty())
        loss.backward()
        self.critic_optimizer.step()
        return loss.detach()

    def separator_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One separator update on `loss`; gradients go to the separator's parameters only (the critic,
        part of L_G's graph, gets none)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        optimizer.step()

    def lambdas(self, step: int) -> tuple[float, float]:
        o = self.opts
        return warmed_up(o.lambda_ial, o.lambda_ial_steps, step), warmed_up(o.lambda_av, o.lambda_av_steps, self.sep_steps)

    def manual_step(self, batch, step: int, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        """One training step: critic update on a no-grad separation (every step, with IAL), separator update
        (every `separator_every`-th) on a second forward, as the reference does."""
        o = self.opts
        lam_ial, lam_av = self.lambdas(step)
        sep_now = step % o.separator_every == 0
        self.model.train()
        losses: dict[str, torch.Tensor] = {}
        if o.ial:
            with torch.no_grad():
                f = self.forward_losses(batch)
            pq = self.pairs(f["out"]["elems"], f["inp"]["mix_index"])
            if pq is not None:
                losses["d"] = self.critic_step(*pq)
            losses.update(sep=f["sep"].detach(), av=f["av"].detach())
        if sep_now:
            f = self.forward_losses(batch)
            total = f["sep"] + (lam_av * f["av"] if self.av_contrast else 0.0)
            losses.update(sep=f["sep"].detach(), av=f["av"].detach())
            if o.ial:
                pq = self.pairs(f["out"]["elems"], f["inp"]["mix_index"])
                if pq is not None:
                    self.critic.train()
                    with self.autocast():
                        d_q, d_p = self.critic(*pq[1]), self.critic(*pq[0])
                    l_g = generator_loss(d_q.float(), d_p.float())
                    total = total + lam_ial * l_g
                    losses["g"] = l_g.detach()
            self.separator_step(optimizer, total)
            self.sep_steps += 1
        elif not o.ial:
            with torch.no_grad():
                f = self.forward_losses(batch)
            losses.update(sep=f["sep"].detach(), av=f["av"].detach())
        losses["loss"] = (losses["sep"] + lam_ial * (losses.get("g", 0.0) + losses.get("d", 0.0))
                          + (lam_av * losses["av"] if self.av_contrast else 0.0))
        losses["lambda_ial"], losses["lambda_av"] = torch.tensor(lam_ial), torch.tensor(lam_av)
        return losses

    def training_step(self, batch) -> dict[str, torch.Tensor]:
        """The separator's objective without IAL's critic (L_sep + lambda_av L_av, final lambda): for callers
        outside the trainer's manual path (e.g. a loss check)."""
        f = self.forward_losses(batch)
        loss = f["sep"] + (self.opts.lambda_av * f["av"] if self.av_contrast else 0.0)
        return {"loss": loss, "sep": f["sep"], "av": f["av"]}

    # -- checkpoints --
    def extra_state(self) -> dict:
        return {"critic_args": self.critic_args, "critic": self.critic.state_dict(),
                "critic_optimizer": self.critic_optimizer.state_dict(), "bank": self.bank.state_dict(),
                "sep_steps": self.sep_steps, "options": {k: (list(v) if isinstance(v, tuple) else v)
                                                         for k, v in asdict(self.opts).items()}}

    def load_extra_state(self, st: dict) -> None:
        self.critic.load_state_dict(st["critic"])
        self.critic_optimizer.load_state_dict(st["critic_optimizer"])
        self.bank.load_state_dict(st["bank"])
        self.sep_steps = int(st.get("sep_steps", 0))
