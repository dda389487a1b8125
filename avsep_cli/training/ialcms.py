"""Training IAL-CMS: the losses, the memory bank of separated elements and the two-optimiser system.

Signal path (`separate`): mixture STFT (1022/256) -> 256-bin mel magnitude (`dsp.MEL.warp`) -> log ->
the CMS net gives one mel ratio mask per object -> the separated element's mel magnitude is mel * mask
(what the critic and the memory bank see) -> the mask is warped back to the linear grid (`dsp.MEL.unwarp`),
applied to the mixture STFT with its phase and inverted -> one waveform per object.

Losses: L_sep (Eq. 13, waveform SNR capped at 30 dB by tau), the InfoNCE L_av between f_av^c and f_v^c,
and Independency Adversarial Learning: dependent pairs P (the two objects of one clip, i.e. one video's
mixture: duets) and independent pairs Q (an element of P with an element of another mixture drawn from a
FIFO memory bank, or both from the bank); critic hinge loss L_D and separator loss L_G.

`IALCMSSystem` alternates like the authors' code: the critic every step, the separator every
`separator_every`-th step (every step when IAL is off, or idle: supervised training on solo clips). The separator minimises
L_sep + lambda1 L_G + lambda2 L_av with the trainer's optimiser (Adam; visual head lr 1e-3, the rest 1e-4);
the critic minimises L_D with its own Adam (lr 1e-4, betas (0, 0.9), weight decay 1e-3). The logged `loss`
is the paper's total L = L_sep + lambda1 (L_G + L_D) + lambda2 L_av; L_D's gradient only ever moves the
critic (in the paper's sum it is the critic's term), L_G's only the separator.

Unsupervised (default, `MixtureOfMixtures`): the targets are the two clips' own mixtures, the estimate of a
clip is the sum of its objects' waveforms; the system reads exactly `UNSUPERVISED_KEYS` of a batch, never
stems. Supervised (`MixSeparate`): each source's waveform against its ground-truth stem; those mixtures are
built from solo clips, one object per clip, so they hold no dependent pairs and IAL stays idle.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from avsep_cli import dsp
from avsep_cli.training.systems import System

UNSUPERVISED_KEYS = ("mixture", "clip_mixtures", "crops", "object_clip", "object_valid")


@dataclass
class IALOptions:
    """Training options of IAL-CMS (TrainConfig.options); the defaults are the paper's / authors' code."""

    supervised: bool = False  # train against ground-truth stems (MixSeparate) instead of each clip's mixture
    ial: bool = True  # Independency Adversarial Learning (critic + L_G); False: the "L_sep (+ L_av)" ablations
    lambda_ial: float = 0.01  # lambda1, weight of L_G + L_D (paper)
    lambda_av: float = 0.05  # lambda2, weight of L_av (paper)
    tau: float = 1e-3  # Eq. 13: SNR saturates at 30 dB (paper)
    temperature: float = 0.3  # InfoNCE temperature (authors' code)
    drop_hardest: int = 6  # InfoNCE: hardest negatives ignored per anchor (authors' code; at least one kept)
    separator_every: int = 3  # separator step every 3rd step, critic every step (authors' code)
    bank_size: int = 1000  # FIFO memory bank of separated mel spectra (paper)
    both_from_bank: bool = False  # Q pairs with both elements from the bank (paper text) or one (authors' default)
    critic_lr: float = 1e-4  # critic Adam (authors' code)
    critic_betas: tuple = (0.0, 0.9)
    critic_weight_decay: float = 1e-3
    critic_preset: str = ""  # critic widths: paper|cpu; "" follows the run's --preset

    @classmethod
    def from_dict(cls, d: dict) -> "IALOptions":
        d = dict(d)
        if "critic_betas" in d:
            d["critic_betas"] = tuple(d["critic_betas"])
        return cls(**d)


# --- losses ---------------------------------------------------------------------------------------------


def sep_loss(target: torch.Tensor, estimate: torch.Tensor, tau: float = 1e-3, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 13: mean over (...) of -10 log10(||A||^2 / (||A - A_hat||^2 + tau ||A||^2)) for waveforms
    (..., L); tau = 1e-3 caps the SNR at 30 dB. `eps` keeps a silent target finite (then the loss asks for a
    silent estimate)."""
    power = target.pow(2).sum(-1)
    err = (target - estimate).pow(2).sum(-1)
    return (-10 * torch.log10((power + eps) / (err + tau * power + eps))).mean()


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
    """FIFO bank of separated elements (mel magnitudes (256, T)), each tagged with the id of the mixture it
    was separated from. `sample` draws uniformly (with replacement) among elements of other mixtures."""

    def __init__(self, size: int = 1000):
        self.size = size
        self.items: deque[torch.Tensor] = deque(maxlen=size)
        self.ids: deque[int] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self.items)

    def push(self, elems: torch.Tensor, ids) -> None:
        """elems (N, F, T), ids (N,) ints; the oldest fall out beyond `size`."""
        for e, i in zip(elems.detach(), [int(i) for i in ids]):
            self.items.append(e.clone())
            self.ids.append(i)

    def sample(self, n: int, exclude_ids=(), generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[int]] | None:
        """n elements (n, F, T) and their mixture ids, none from `exclude_ids`; None if no element qualifies."""
        excl = {int(i) for i in exclude_ids}
        allowed = [j for j, i in enumerate(self.ids) if i not in excl]
        if not allowed or n <= 0:
            return None
        pick = torch.randint(len(allowed), (n,), generator=generator).tolist()
        idx = [allowed[p] for p in pick]
        return torch.stack([self.items[j] for j in idx]), [self.ids[j] for j in idx]

    def state_dict(self) -> dict:
        return {"size": self.size, "ids": list(self.ids),
                "items": torch.stack(list(self.items)) if self.items else torch.zeros(0)}

    def load_state_dict(self, st: dict) -> None:
        self.size = int(st["size"])
        self.items, self.ids = deque(maxlen=self.size), deque(maxlen=self.size)
        if st["ids"]:
            self.push(st["items"], st["ids"])


# --- the signal path ------------------------------------------------------------------------------------


def mel_features(mixture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, L) -> STFT (B, 512, T) complex, mel magnitude (B, 256, T), log-mel (B, 1, 256, T)."""
    spec = dsp.stft(mixture)
    mel = dsp.MEL.warp(spec.abs())
    return spec, mel, dsp.log_magnitude(mel).unsqueeze(1)


def separate(model, mixture: torch.Tensor, crops: torch.Tensor, mix_index: torch.Tensor) -> dict[str, torch.Tensor]:
    """mixture (B, L); crops (N, K, 3, H, W) uint8, or their trunk features (N, K, 512, h, w) float32 (cached
    crops, or class prototypes: separation by name); mix_index (N,) -> the model's outputs plus `elems`
    (N, 256, T) separated mel magnitudes and `waves` (N, L) waveforms (mel mask -> linear grid -> iSTFT)."""
    spec, mel, logmel = mel_features(mixture)
    out = dict(model(logmel, crops, mix_index))
    mask = out["mask"][:, 0]  # (N, 256, T)
    out["elems"] = mel[mix_index] * mask
    lin = dsp.MEL.unwarp(mask)  # (N, 512, T)
    out["waves"] = dsp.istft(dsp.apply_mask(spec[mix_index], lin), mixture.shape[-1])
    return out


def linear_masks(model, mixture: torch.Tensor, crops: torch.Tensor, mix_index: torch.Tensor) -> torch.Tensor:
    """The masks of `separate` without applying them: mixture (B, L), crops (N, K, ...) and mix_index (N,)
    as there -> (N, 512, T) soft masks on the linear grid (the mel masks warped back)."""
    _, _, logmel = mel_features(mixture)
    return dsp.MEL.unwarp(model(logmel, crops, mix_index)["mask"][:, 0])  # (N, 256, T) -> (N, 512, T)


# --- the system -----------------------------------------------------------------------------------------


class IALCMSSystem(System):
    """Separator (the trainer's model and optimiser) plus the critic (own optimiser); `manual_step` is
    called by the trainer in place of its own backward/step."""

    def __init__(self, model, model_name: str, model_args: dict, options: IALOptions, critic_args: dict,
                 grad_clip: float = 0.0):
        super().__init__(model, model_name, model_args)
        from avsep_cli.models.ialcms_critic import PairCritic

        self.opts, self.grad_clip = options, grad_clip
        self.critic = PairCritic(**critic_args)
        self.critic_args = critic_args
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=options.critic_lr,
                                                 betas=tuple(options.critic_betas), weight_decay=options.critic_weight_decay)
        self.bank = MemoryBank(options.bank_size)
        self.next_id = 0  # mixture ids for the bank: one per item ever seen (saved for exact resume)
        self.av_contrast = bool(model_args.get("av_contrast", True))

    def to(self, device: torch.device) -> "IALCMSSystem":
        self.model.to(device)
        self.critic.to(device)  # in place: the critic optimiser keeps its parameters
        return self

    # -- batches --
    def _inputs(self, batch) -> dict:
        """The flat object list of a batch: crops (N, K, 3, H, W), mix_index (N,), and the targets."""
        if self.opts.supervised:
            mixture, stems = batch["mixture"], batch["stems"]
            frames = batch["feats"] if "feats" in batch else batch["frames"]  # pictures or cached features
            b, s = stems.shape[:2]
            mix_index = torch.arange(b, device=mixture.device).repeat_interleave(s)
            # each source is its own (solo) clip: group ids unique per object, so no dependent pairs
            return {"mixture": mixture, "crops": frames.flatten(0, 1), "mix_index": mix_index,
                    "group": torch.arange(b * s, device=mixture.device), "stems": stems}
        mixture, clip_mixes, crops, obj_clip, valid = (batch[k] for k in UNSUPERVISED_KEYS)
        bi, oi = valid.nonzero(as_tuple=True)  # valid objects only: padded slots never reach the network
        return {"mixture": mixture, "crops": crops[bi, oi], "mix_index": bi, "group": bi * 2 + obj_clip[bi, oi],
                "clip_mixtures": clip_mixes, "clip_of": obj_clip[bi, oi]}

    def _sep_loss(self, inp: dict, waves: torch.Tensor) -> torch.Tensor:
        if self.opts.supervised:
            b, s = inp["stems"].shape[:2]
            return sep_loss(inp["stems"], waves.view(b, s, -1), self.opts.tau)
        clip_mixes = inp["clip_mixtures"]  # (B, 2, L)
        est = torch.zeros_like(clip_mixes).index_put((inp["mix_index"], inp["clip_of"]), waves, accumulate=True)
        return sep_loss(clip_mixes, est, self.opts.tau)

    # -- IAL pairs --
    @staticmethod
    def dependent_pairs(group: torch.Tensor) -> list[tuple[int, int]]:
        """Index pairs of objects separated from the same clip (video): clips with exactly 2 objects."""
        by: dict[int, list[int]] = {}
        for i, g in enumerate(group.tolist()):
            by.setdefault(g, []).append(i)
        return [(v[0], v[1]) for v in by.values() if len(v) == 2]

    def pairs(self, elems: torch.Tensor, group: torch.Tensor, elem_mix_ids: list[int]):
        """P and Q as ((n, F, T), (n, F, T)) tuples from this batch's elements (grad kept on the batch
        side) and the bank: Q pairs the first element of each dependent pair with a bank element of another
        mixture than its own (or, with `both_from_bank`, two bank elements of two other mixtures). None when
        the batch holds no dependent pair or the bank no element of another mixture."""
        dep = self.dependent_pairs(group)
        if not dep:
            return None
        p = (elems[[i for i, _ in dep]], elems[[j for _, j in dep]])
        firsts, seconds = [], []
        for i, _ in dep:
            own = {elem_mix_ids[i]}
            a = self.bank.sample(1, own)
            if a is None:
                return None
            if self.opts.both_from_bank:
                b = self.bank.sample(1, own | set(a[1]))
                if b is None:
                    return None
                firsts.append(a[0])
                seconds.append(b[0])
            else:
                seconds.append(a[0])
        q1 = torch.cat(seconds).to(elems.device)
        q = (torch.cat(firsts).to(elems.device), q1) if self.opts.both_from_bank else (p[0], q1)
        return p, q

    # -- steps --
    def forward_losses(self, batch) -> dict:
        """Separator forward and its losses (no step). Returns the tensors the steps need."""
        inp = self._inputs(batch)
        out = separate(self.forward_model, inp["mixture"], inp["crops"], inp["mix_index"])
        l_sep = self._sep_loss(inp, out["waves"])
        l_av = (info_nce(out["f_av_c"], out["f_v_c"], None, self.opts.temperature, self.opts.drop_hardest)
                if self.av_contrast else l_sep.new_zeros(()))
        return {"inp": inp, "out": out, "sep": l_sep, "av": l_av}

    def critic_step(self, p, q) -> torch.Tensor:
        """One critic update on detached pairs; only the critic's parameters move."""
        self.critic.train()
        p = tuple(x.detach() for x in p)
        q = tuple(x.detach() for x in q)
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss = critic_loss(self.critic, p, q)
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

    def manual_step(self, batch, step: int, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        """One training step: critic update (every step), separator update (every `separator_every`-th)."""
        o = self.opts
        # supervised batches are solo clips: no dependent pairs, IAL idle, so nothing to alternate with
        sep_now = (not o.ial) or o.supervised or step % o.separator_every == 0
        self.model.train()
        with torch.set_grad_enabled(sep_now):
            f = self.forward_losses(batch)
        losses = {"sep": f["sep"].detach(), "av": f["av"].detach()}
        l_adv = f["sep"].new_zeros(())
        if o.ial:
            inp, elems = f["inp"], f["out"]["elems"]
            b = inp["mixture"].shape[0]
            ids = list(range(self.next_id, self.next_id + b))
            self.next_id += b
            elem_ids = [ids[i] for i in inp["mix_index"].tolist()]
            self.bank.push(elems.detach(), elem_ids)
            pq = self.pairs(elems, inp["group"], elem_ids)
            if pq is not None:
                losses["d"] = self.critic_step(*pq)
                self.critic.train()
                if sep_now:
                    l_adv = separator_adv_loss(self.critic, *pq)
                else:
                    with torch.no_grad():
                        l_adv = separator_adv_loss(self.critic, *pq)
                losses["g"] = l_adv.detach()
        if sep_now:
            sep_total = f["sep"] + o.lambda_ial * l_adv + (o.lambda_av * f["av"] if self.av_contrast else 0.0)
            self.separator_step(optimizer, sep_total)
        losses["loss"] = (losses["sep"] + o.lambda_ial * (losses.get("g", 0.0) + losses.get("d", 0.0))
                          + (o.lambda_av * losses["av"] if self.av_contrast else 0.0))
        return losses

    def training_step(self, batch) -> dict[str, torch.Tensor]:
        """The separator's objective without IAL's critic (L_sep + lambda2 L_av): for callers outside the
        trainer's manual path (e.g. a loss check)."""
        f = self.forward_losses(batch)
        loss = f["sep"] + (self.opts.lambda_av * f["av"] if self.av_contrast else 0.0)
        return {"loss": loss, "sep": f["sep"], "av": f["av"]}

    # -- checkpoints --
    def extra_state(self) -> dict:
        return {"critic_args": self.critic_args, "critic": self.critic.state_dict(),
                "critic_optimizer": self.critic_optimizer.state_dict(), "bank": self.bank.state_dict(),
                "next_id": self.next_id, "options": {k: (list(v) if isinstance(v, tuple) else v)
                                                     for k, v in asdict(self.opts).items()}}

    def load_extra_state(self, st: dict) -> None:
        self.critic.load_state_dict(st["critic"])
        self.critic_optimizer.load_state_dict(st["critic_optimizer"])
        self.bank.load_state_dict(st["bank"])
        self.next_id = int(st["next_id"])
