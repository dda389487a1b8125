"""IAL-CMS: the CMS separator's shapes and ablation switches, the spectrally normalised critic, the memory
bank, the losses and the two-optimiser system (each step moves only its own network; the unsupervised path
reads no stems), exact resume, and `avsep train/eval/info --method ialcms` end to end on the tiny corpus.

Everything runs on tiny configurations (4-16 channels, 32-px crops, 8 STFT frames) to stay cheap."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict

import pytest
import torch

from avsep_cli import checkpoint
from avsep_cli.cli import main
from avsep_cli.models.ialcms import IALCMS, IALCMSConfig, parameter_counts
from avsep_cli.models.ialcms_critic import CriticConfig, PairCritic, build_critic
from avsep_cli.training.config import TrainConfig
from avsep_cli.training.ialcms import (UNSUPERVISED_KEYS, IALCMSSystem, IALOptions, MemoryBank, critic_loss,
                                       info_nce, sep_loss, separate, separator_adv_loss)

TINY = {"ngf": 4, "dim": 32, "blocks": 1, "frame_size": 32}
CRITIC = {"ndf": 4, "max_channels": 8, "legacy": False}
L = 2047  # 8 STFT frames
SEG = 4095  # 16 STFT frames for the corpus runs


def model(**kw) -> IALCMS:
    return IALCMS(**{**TINY, **kw})


def mom_batch(b: int = 2, duet: bool = True, seed: int = 0, length: int = L) -> dict:
    """A mixture-of-mixtures batch like `MixtureOfMixtures` gives: clip 0 of each item is a duet (objects 0
    and 1) when `duet`, else a solo; clip 1 a solo (object 2); slot 3 is padding."""
    g = torch.Generator().manual_seed(seed)
    clip_mixes = torch.randn(b, 2, length, generator=g) * 0.1
    valid = torch.tensor([True, duet, True, False]).repeat(b, 1)
    crops = torch.randint(0, 256, (b, 4, 1, 3, 32, 32), dtype=torch.uint8, generator=g)
    crops[~valid] = 0
    return {"mixture": clip_mixes.sum(1), "clip_mixtures": clip_mixes, "crops": crops,
            "object_clip": torch.tensor([0, 0, 1, 0]).repeat(b, 1), "object_valid": valid,
            "labels": torch.tensor([0, 1, 2, -1]).repeat(b, 1)}


def system(opts: IALOptions | None = None, **model_kw) -> IALCMSSystem:
    torch.manual_seed(0)
    m = model(**model_kw)
    return IALCMSSystem(m, "ialcms", asdict(m.config), opts or IALOptions(), CRITIC)


def separator_optimizer(sys_: IALCMSSystem, lr: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.Adam([p for p in sys_.model.parameters() if p.requires_grad], lr=lr)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in module.named_parameters()}


def changed(before: dict, module: torch.nn.Module) -> set[str]:
    return {k for k, p in module.named_parameters() if not torch.equal(before[k], p.detach())}


# --- the separator --------------------------------------------------------------------------------------


@pytest.mark.parametrize("objects_per_clip", [1, 2])
def test_separator_shapes_with_one_and_two_objects_per_clip(objects_per_clip):
    torch.manual_seed(0)
    m = model()
    b = 2
    n = b * objects_per_clip
    mix_index = torch.arange(b).repeat_interleave(objects_per_clip)
    for t in (8, 37):  # 37 frames: not a multiple of 32, padded and cropped inside
        out = m(torch.randn(b, 1, 256, t), torch.randint(0, 256, (n, 2, 3, 32, 32), dtype=torch.uint8), mix_index)
        assert out["mask"].shape == (n, 1, 256, t)
        assert out["f_av_c"].shape == (n, 32) and out["fv"].shape == (n, 32, 4, 4)  # 32-px crops, stride 8
        assert float(out["mask"].detach().min()) >= 0  # relu(s x + b + 0.5): unbounded above, as the reference
        torch.testing.assert_close(out["f_av_c"].norm(dim=-1), torch.ones(n))
        torch.testing.assert_close(out["fv"].norm(dim=1), torch.ones(n, 4, 4))  # L2-normalised per position
    # the signal path: one mel element and one waveform per object
    batch = mom_batch(duet=objects_per_clip == 2)
    sys_ = system()
    inp = sys_._inputs(batch)
    res = separate(sys_.model, inp["mixture"], inp["crops"], inp["mix_index"])
    n_obj = int(batch["object_valid"].sum())
    assert res["elems"].shape == (n_obj, 256, 8) and res["waves"].shape == (n_obj, L)


def test_bf16_channels_last_decoder_stays_bf16_and_channels_last_and_agrees_with_fp32():
    """Under bf16 autocast with channels-last weights the decoder's convolutions get bf16 inputs (the
    attention scalars do not promote the AV module's output to float32) in channels-last layout past the
    innermost level (AdaIN's instance norm keeps the layout), and the masks agree with fp32's to bf16
    rounding. 64 frames: oneDNN's bf16 3x3 convolutions misbehave on maps one frame wide (systems.py)."""
    from avsep_cli.models.ialcms import UpLevel

    torch.manual_seed(0)
    m32 = model().train()
    m16 = model().train()
    m16.load_state_dict(m32.state_dict())
    m16.to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 256, 64)
    crops, mix_index = torch.randint(0, 256, (4, 2, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 0, 1, 1])
    seen = []  # (dtype, channels-last) of each decoder convolution's input, innermost level first
    convs = [lv.conv for lv in reversed(m16.decoder.levels) if isinstance(lv, UpLevel)] + [m16.decoder.head]
    hooks = [c.register_forward_pre_hook(lambda mod, a: seen.append(
        (a[0].dtype, a[0].is_contiguous(memory_format=torch.channels_last) and not a[0].is_contiguous()))) for c in convs]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mask16 = m16(x, crops, mix_index)["mask"].float()
    for h in hooks:
        h.remove()
    mask32 = m32(x, crops, mix_index)["mask"]
    assert [d for d, _ in seen] == [torch.bfloat16] * 5 and [cl for _, cl in seen][1:] == [True] * 4
    err = float(((mask16 - mask32).abs().max() / mask32.abs().max()).detach())
    assert 0 < err < 0.05, err


@pytest.mark.parametrize("head", ["deeplab", "mlp"])
def test_the_trunk_is_frozen_and_the_visual_head_learns(head):
    m = model(visual_head=head).train()
    assert not m.visual.trunk.training and all(not p.requires_grad for p in m.visual.trunk.parameters())
    out = m(torch.randn(2, 1, 256, 8), torch.randint(0, 256, (2, 1, 3, 32, 32), dtype=torch.uint8))
    (out["mask"].mean() + out["fv"].sum()).backward()
    learned = m.visual.head if head == "deeplab" else m.visual.proj
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learned.parameters())
    assert all(p.grad is None for p in m.visual.trunk.parameters())
    assert out["fv"].shape[-2:] == ((4, 4) if head == "deeplab" else (1, 1))  # stride 8 vs 32


def _reference_deeplab_parameters(branch: int = 256, out: int = 512, reduced: int = 48, low: int = 128,
                                  high: int = 512, rates: int = 4) -> int:
    """Trainable parameters of the authors' Deeplabv3plus at one decoder conv, written from its layer
    definitions (`DeepLab/ASPP.py`, `deeplabv3plus.py`; the backbone is frozen): ASPP branches (1x1 then 3x3
    convs without bias, BatchNorm), the pooling branch (1x1 conv without bias, BatchNorm), conv1 (5 branches ->
    out, no bias) + bn1; reduce_block (1x1 conv with bias, BatchNorm); decoder (3x3 conv with bias, BatchNorm)."""
    bn = lambda c: 2 * c  # noqa: E731 - weight and bias
    aspp = high * branch + (rates - 1) * 9 * high * branch + rates * bn(branch)
    aspp += high * branch + bn(branch) + (rates + 1) * branch * out + bn(out)
    reduce = low * reduced + reduced + bn(reduced)
    decoder = 9 * (out + reduced) * out + out + bn(out)
    return aspp + reduce + decoder


def test_deeplab_head_has_the_reference_parameter_count_and_a_28x28_map():
    from avsep_cli.models.deeplab import DeepLabV3PlusHead

    assert _reference_deeplab_parameters() == 7_048_336  # the reference's "7.05 M trainable"
    counts = parameter_counts(IALCMSConfig.preset("paper"))
    assert counts["visual encoder (DeepLabv3+ head)"] == 7_048_336
    assert counts["visual encoder (common-space MLP)"] == 526_336  # the reference's common_space_mlp at 512
    head = DeepLabV3PlusHead()
    assert sum(p.numel() for p in head.parameters() if p.requires_grad) == _reference_deeplab_parameters()
    # the paper's crop: a 28 x 28 map (OS-16 trunk: 14 x 14 high-level, 28 x 28 low-level)
    m = IALCMS(ngf=4, dim=32, blocks=1, frame_size=224).eval()
    low, high = m.visual.trunk.levels(torch.zeros(1, 3, 224, 224))
    assert low.shape == (1, 128, 28, 28) and high.shape == (1, 512, 14, 14)
    with torch.no_grad():
        fv = m.visual(torch.randint(0, 256, (2, 3, 3, 224, 224), dtype=torch.uint8))
    assert fv.shape == (2, 32, 28, 28)
    torch.testing.assert_close(fv.norm(dim=1), torch.ones(2, 28, 28))
    with pytest.raises(ValueError, match="multiple of 16"):
        IALCMS(ngf=4, dim=32, blocks=1, frame_size=200)


def test_named_mlp_head_and_old_configs_build_the_previous_head():
    from avsep_cli import checkpoint

    assert IALCMSConfig().visual_head == "deeplab" and IALCMSConfig.preset("cpu").visual_head == "deeplab"
    mlp = model(visual_head="mlp")
    assert not hasattr(mlp.visual, "head") and mlp.visual.proj.weight.shape == (32, 512, 1, 1)
    assert mlp.visual.trunk.layer4[0].conv1.stride == (2, 2)  # the plain trunk: 7 x 7 maps at 224 px
    # weights written after issue 16 but before this field (legacy=False, no visual_head) keep their head
    args = {k: v for k, v in asdict(mlp.config).items() if k != "visual_head"}
    rebuilt = checkpoint.MODELS["ialcms"](**checkpoint.complete_args("ialcms", args))
    assert rebuilt.config.visual_head == "mlp" and rebuilt.state_dict().keys() == mlp.state_dict().keys()
    assert any(k.startswith("visual.head.aspp.") for k in model().state_dict())
    with pytest.raises(ValueError, match="visual_head"):
        model(visual_head="aspp")


@pytest.mark.parametrize("spatial,channel,adain,av", list(itertools.product([True, False], repeat=4)))
def test_every_ablation_combination_builds_and_trains(spatial, channel, adain, av):
    sys_ = system(spatial_attention=spatial, channel_attention=channel, adain=adain, av_contrast=av)
    has_adain = any(getattr(mod, "adain", False) for mod in sys_.model.decoder.levels)
    assert has_adain == adain
    opt = separator_optimizer(sys_)
    losses = sys_.manual_step(mom_batch(), 0, opt)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in losses.values())
    assert ("av" in losses and float(losses["av"]) > 0) == av
    assert "d" in losses and "g" in losses  # a duet in each item: dependent pairs, so IAL ran


def test_switches_change_the_output():
    torch.manual_seed(0)
    # 96-px crops: a 3x3 visual map, so attention pooling differs from max pooling
    x, crops = torch.randn(2, 1, 256, 8), torch.randint(0, 256, (2, 1, 3, 96, 96), dtype=torch.uint8)
    full = model().eval()
    masks = {}
    for flag in ("spatial_attention", "channel_attention", "adain"):
        other = model(**{flag: False}).eval()
        other.load_state_dict(full.state_dict(), strict=False)  # shared weights where the layers exist
        masks[flag] = other(x, crops)["mask"]
    base = full(x, crops)["mask"]
    for flag, m in masks.items():
        assert not torch.allclose(m, base), flag


def test_parameter_counts_and_info(capsys):
    paper = parameter_counts(IALCMSConfig.preset("paper"), "paper")
    assert paper["visual encoder (trunk)"] == 11_176_512
    cpu = parameter_counts(IALCMSConfig.preset("cpu"), "cpu")
    assert cpu["audio encoder"] < paper["audio encoder"] / 10 and cpu["IAL critic"] < paper["IAL critic"] / 10
    assert main(["info", "--method", "ialcms", "--preset", "cpu", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parameters"] == cpu and data["config"]["ngf"] == 16


# --- the critic -----------------------------------------------------------------------------------------


def test_spectral_norm_on_every_critic_layer_but_w():
    critic = build_critic(asdict(CriticConfig.preset("cpu")))
    assert isinstance(critic, PairCritic)
    layers = [m for m in critic.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == critic.layers + 3  # 6 convs, 2 MLP layers, w
    for m in layers[:-1]:  # the reference's spectral norm (weight_orig, weight_u, weight_v), convs without bias
        assert hasattr(m, "weight_orig") and hasattr(m, "weight_u"), m
        assert m.bias is None or isinstance(m, torch.nn.Linear)
    assert critic.w is layers[-1] and not hasattr(critic.w, "weight_orig") and critic.w.bias is None
    assert critic.b.shape == (1,)
    assert critic(torch.rand(3, 256, 5), torch.rand(3, 256, 5)).shape == (3,)  # any frame count
    torch.testing.assert_close(critic.w_penalty(), critic.w.weight.pow(2).sum())  # w is free: the penalty bounds it
    legacy = build_critic({"ndf": 4, "max_channels": 8, "hidden": 8})  # critic args saved before issue 16
    assert type(legacy).__name__ == "LegacyPairCritic"


def test_critic_hinge_step_lowers_it_and_penalises_w():
    torch.manual_seed(0)
    sys_ = system()
    p = (torch.rand(4, 256, 8), torch.rand(4, 256, 8))
    q = (torch.rand(4, 256, 8) * 3, torch.rand(4, 256, 8))
    sys_.critic.eval()
    with torch.no_grad():
        before = float(critic_loss(sys_.critic, p, q))
    sys_.critic_step(p, q)
    sys_.critic.eval()
    with torch.no_grad():
        after = float(critic_loss(sys_.critic, p, q))
    assert after < before
    assert before >= float(sys_.critic.w_penalty().detach())  # hinge terms are >= 0


# --- the memory bank ------------------------------------------------------------------------------------


def test_memory_bank_starts_as_noise_and_is_a_ring():
    torch.manual_seed(0)
    bank = MemoryBank(size=5)
    bank.push(torch.arange(3.0).view(3, 1, 1).expand(3, 2, 2))
    assert len(bank) == 5 and bank.idx == 3
    assert [float(e[0, 0]) for e in bank.items[:3]] == [0.0, 1.0, 2.0]
    assert not torch.equal(bank.items[3], torch.zeros(2, 2))  # still the random start (the reference's randn)
    bank.push(torch.arange(3.0, 7.0).view(4, 1, 1).expand(4, 2, 2))
    assert [float(e[0, 0]) for e in bank.items] == [5.0, 6.0, 2.0, 3.0, 4.0]  # the oldest overwritten
    assert bank.sample(7).shape == (7, 2, 2)
    again = MemoryBank(size=1)
    again.load_state_dict(bank.state_dict())
    assert again.idx == bank.idx and torch.equal(again.items, bank.items)


def test_pairs_are_every_element_with_another_of_its_input_mixture_and_with_the_bank():
    torch.manual_seed(0)
    for both in (False, True):
        sys_ = system(IALOptions(both_from_bank=both))
        elems = torch.stack([torch.full((256, 8), float(i)) for i in range(6)])  # value = element index
        mix_index = torch.tensor([0, 0, 0, 1, 1, 2])  # element 5 is alone in its input mixture
        for _ in range(10):
            p, q = sys_.pairs(elems, mix_index)
            firsts, seconds = p[0][:, 0, 0].long(), p[1][:, 0, 0].long()
            assert firsts.tolist() == [0, 1, 2, 3, 4]  # every element that has a partner
            assert (firsts != seconds).all() and (mix_index[firsts] == mix_index[seconds]).all()
            assert q[0].shape == q[1].shape == (6, 256, 8)
            if not both:
                torch.testing.assert_close(q[0], elems)  # each element with a bank element
        assert len(sys_.bank) == sys_.opts.bank_size  # the batch's elements were enqueued
    assert system().pairs(elems[:2], torch.tensor([0, 1])) is None  # one element per mixture: no dependent pair


# --- losses ---------------------------------------------------------------------------------------------


def test_sep_loss_is_eq13_and_saturates_at_30_db():
    a = torch.randn(3, 1000)
    assert float(sep_loss(a, a)) == pytest.approx(-30.0, abs=1e-3)  # perfect estimate: the 30 dB cap
    assert float(sep_loss(a, torch.zeros_like(a))) == pytest.approx(10 * torch.log10(torch.tensor(1.001)).item(), abs=1e-4)
    half = float(sep_loss(a, a / 2))  # error power 1/4: -10 log10(1 / (0.25 + 0.001))
    assert half == pytest.approx(-10 * torch.log10(torch.tensor(1 / 0.251)).item(), abs=1e-3)
    assert torch.isfinite(sep_loss(torch.zeros(2, 100), torch.randn(2, 100)))


def test_info_nce_uses_valid_objects_and_prefers_matching_pairs():
    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    aligned = float(info_nce(v, v, temperature=0.3))
    shuffled = float(info_nce(v, v.roll(1, 0), temperature=0.3))
    assert aligned < shuffled
    valid = torch.tensor([True, True, False, True, False])
    torch.testing.assert_close(info_nce(v, v, valid), info_nce(v[valid], v[valid]))
    assert float(info_nce(v[:1], v[:1])) == 0.0
    assert torch.isfinite(info_nce(v, v.roll(1, 0), drop_hardest=6))  # capped: one negative always kept


def test_one_step_lowers_sep_and_info_nce_on_a_fixed_batch():
    batch = mom_batch()
    for key in ("sep", "av"):
        sys_ = system(IALOptions(ial=False))
        opt = separator_optimizer(sys_, lr=1e-4)  # the reference's audio-side LR
        before = float(sys_.forward_losses(batch)[key].detach())
        sys_.separator_step(opt, sys_.forward_losses(batch)[key])
        after = float(sys_.forward_losses(batch)[key].detach())
        assert after < before, key


# --- the system -----------------------------------------------------------------------------------------


def test_critic_and_separator_steps_update_only_their_own_parameters():
    sys_ = system()
    opt = separator_optimizer(sys_)
    batch = mom_batch()
    sys_.manual_step(batch, 0, opt)  # fills the bank: pairs exist from now on
    # a critic-only step (step 1 of 3): the separator's parameters stay put
    sep0, cr0 = snapshot(sys_.model), snapshot(sys_.critic)
    losses = sys_.manual_step(batch, 1, opt)
    assert "d" in losses and changed(cr0, sys_.critic) and not changed(sep0, sys_.model)
    # the separator's update through L_G (which runs through the critic) leaves the critic alone
    sep0, cr0 = snapshot(sys_.model), snapshot(sys_.critic)
    sys_.critic_optimizer.zero_grad(set_to_none=True)
    f = sys_.forward_losses(batch)
    pq = sys_.pairs(f["out"]["elems"], f["inp"]["mix_index"])
    sys_.separator_step(opt, f["sep"] + separator_adv_loss(sys_.critic, *pq))
    assert not changed(cr0, sys_.critic) and changed(sep0, sys_.model)
    assert all(p.grad is None for p in sys_.critic.parameters())
    # and a critic step leaves the separator alone
    sep0 = snapshot(sys_.model)
    sys_.critic_step(*pq)
    assert not changed(sep0, sys_.model)


def test_a_batch_without_two_objects_in_any_mixture_leaves_ial_idle():
    batch = mom_batch(duet=False)
    batch["object_valid"][:, 2] = False  # one object per input mixture
    sys_ = system()
    losses = sys_.manual_step(batch, 0, separator_optimizer(sys_))
    assert "d" not in losses and "g" not in losses


class RecordingDict(dict):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.read: set[str] = set()

    def __getitem__(self, k):
        self.read.add(k)
        return super().__getitem__(k)

    def get(self, k, default=None):
        self.read.add(k)
        return super().get(k, default)


def test_unsupervised_path_never_reads_stems():
    batch = mom_batch()
    batch["eval_stems"] = torch.randn(2, 4, L)  # what MixtureOfMixtures adds for scoring
    batch["stems"] = torch.randn(2, 4, L)  # a trap: must not be read either
    rec = RecordingDict(batch)
    sys_ = system()
    sys_.manual_step(rec, 0, separator_optimizer(sys_))
    assert rec.read == set(UNSUPERVISED_KEYS)
    rec.read.clear()
    sys_.training_step(rec)
    assert rec.read == set(UNSUPERVISED_KEYS)


def test_supervised_path_scores_each_source_against_its_stem():
    from avsep_cli.training.ialcms import sisnr_loss

    g = torch.Generator().manual_seed(0)
    stems = torch.randn(2, 2, L, generator=g) * 0.1
    batch = {"mixture": stems.sum(1), "stems": stems,
             "frames": torch.randint(0, 256, (2, 2, 1, 3, 32, 32), dtype=torch.uint8, generator=g)}
    sys_ = system(IALOptions(supervised=True, ial=False))
    f = sys_.forward_losses(batch)
    torch.testing.assert_close(f["sep"], sisnr_loss(stems, f["out"]["waves"].view(2, 2, L)))
    paper = system(IALOptions(supervised=True, ial=False, sep_loss="snr"))  # the paper's Eq. 13
    fp = paper.forward_losses(batch)
    torch.testing.assert_close(fp["sep"], sep_loss(stems, fp["out"]["waves"].view(2, 2, L)))
    opt = separator_optimizer(sys_)
    moved = []
    for step in range(4):  # the reference's supervised configuration steps the separator every 3rd batch too
        sep0 = snapshot(sys_.model)
        losses = sys_.manual_step(batch, step, opt)
        assert "d" not in losses
        moved.append(bool(changed(sep0, sys_.model)))
    assert moved == [True, False, False, True]


def test_lambdas_warm_up_as_the_authors_ran_them():
    from avsep_cli.training.ialcms import warmed_up

    o = IALOptions()
    assert [warmed_up(o.lambda_ial, o.lambda_ial_steps, t) for t in (0, 8000, 8001, 16001, 24001)] == \
        pytest.approx([1e-5, 1e-5, 1e-4, 1e-3, 1e-2])
    assert warmed_up(o.lambda_av, o.lambda_av_steps, 0) == pytest.approx(5e-5)
    assert warmed_up(o.lambda_av, (), 0) == o.lambda_av  # no steps: constant
    sys_ = system()
    losses = sys_.manual_step(mom_batch(), 0, separator_optimizer(sys_))
    assert float(losses["lambda_ial"]) == pytest.approx(1e-5) and float(losses["lambda_av"]) == pytest.approx(5e-5)
    assert sys_.sep_steps == 1


def test_separator_steps_every_third_step_critic_every_step():
    sys_ = system()
    opt = separator_optimizer(sys_)
    batch = mom_batch()
    moved = []
    for step in range(4):
        sep0, cr0 = snapshot(sys_.model), snapshot(sys_.critic)
        sys_.manual_step(batch, step, opt)
        moved.append((bool(changed(sep0, sys_.model)), bool(changed(cr0, sys_.critic))))
    assert moved == [(True, True), (False, True), (False, True), (True, True)]


# --- training runs --------------------------------------------------------------------------------------


def small_cfg(root, **kw) -> TrainConfig:
    from avsep_cli.training.run import METHOD_DEFAULTS

    base = dict(method="ialcms", root=str(root), epochs=2, batch_size=2, steps_per_epoch=2, segment=SEG, val_num=0,
                model=dict(TINY), options={"critic_preset": "cpu"}, **METHOD_DEFAULTS["ialcms"])
    base.update(kw)
    return TrainConfig(**base)


def test_channels_last_lays_out_the_critic_too_and_bf16_steps_agree_with_fp32():
    """--channels-last puts the critic's weights in channels-last layout as well as the separator's (the
    critic runs on every step), and two bf16 channels-last steps give the critic and separator losses of
    fp32's to bf16 rounding (64 frames: see the decoder test above)."""
    from pathlib import Path

    from avsep_cli.training.trainer import Trainer

    def steps(precision: str, channels_last: bool) -> tuple[list[dict], IALCMSSystem]:
        sys_ = system()
        cfg = small_cfg("unused", precision=precision, channels_last=channels_last)
        trainer = Trainer(sys_, cfg, [], torch.device("cpu"), Path("unused"))
        torch.manual_seed(1)  # the same pairs and bank draws
        return [trainer.train_step(mom_batch(length=16383)) for _ in range(2)], sys_

    l32, _ = steps("fp32", False)
    l16, sys16 = steps("bf16", True)
    convs = [p for p in sys16.critic.parameters() if p.dim() == 4 and p.shape[1] > 1]  # 1 channel: either layout
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs)
    for a, b in zip(l32, l16):
        for k in ("d", "sep"):
            assert a[k] != b[k] and abs(a[k] - b[k]) <= 2e-2 * abs(a[k]), (k, a[k], b[k])


def _straight_and_split(tiny_corpus, tmp_path, dev) -> None:
    from avsep_cli.training.run import train

    train(small_cfg(tiny_corpus), tmp_path / "straight", device=dev)
    train(small_cfg(tiny_corpus, epochs=1), tmp_path / "split", device=dev)
    train(None, tmp_path / "split", device=dev, resume=True, epochs=2)


def test_resume_continues_exactly_with_the_critic_and_bank(tiny_corpus, tmp_path):
    dev = torch.device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one reduction order for both runs (a loaded machine gave few-ulp differences)
    try:
        _straight_and_split(tiny_corpus, tmp_path, dev)
    finally:
        torch.set_num_threads(threads)

    a, b = (checkpoint.load(tmp_path / r / "last.pt") for r in ("straight", "split"))
    # the same up to float rounding (full-suite runs on a loaded machine have shown a few-ulp differences
    # after 4 steps, never more), the bank's bookkeeping exactly
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=1e-5, atol=1e-7, msg=k)
    for k in a["extra"]["critic"]:
        torch.testing.assert_close(a["extra"]["critic"][k], b["extra"]["critic"][k], rtol=1e-5, atol=1e-7, msg=k)
    assert a["extra"]["bank"]["idx"] == b["extra"]["bank"]["idx"] and a["extra"]["sep_steps"] == b["extra"]["sep_steps"] == 2
    torch.testing.assert_close(a["extra"]["bank"]["items"], b["extra"]["bank"]["items"], rtol=1e-5, atol=1e-7)
    assert a["extra"]["critic_optimizer"]["state"]  # the critic's Adam moments are saved


def test_train_ialcms_end_to_end_and_load_in_eval(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--method", "ialcms", "--root", str(tiny_corpus), "--run", str(run), "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch-size", "2", "--preset", "cpu", "--segment", str(SEG),
                 "--val-num", "2"]) == 0
    err = capsys.readouterr().err
    assert "epoch 1: loss" in err and "val SDR" in err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["ngf"] == 16 and cfg["options"]["ial"] is True and cfg["options"]["supervised"] is False
    out = tmp_path / "eval.json"
    assert main(["eval", "--method", "ialcms", "--weights", str(run / "best.pt"), "--data", str(tiny_corpus),
                 "--num", "2", "--window", "1s", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert len(data["methods"]["ialcms"]["sources"]) >= 4


def test_cli_switches_reach_the_config(tiny_corpus, tmp_path):
    run = tmp_path / "abl"
    assert main(["train", "--method", "ialcms", "--root", str(tiny_corpus), "--run", str(run), "--epochs", "1",
                 "--steps-per-epoch", "1", "--batch-size", "2", "--preset", "cpu", "--segment", str(SEG),
                 "--val-num", "0", "--supervised", "--no-spatial-attention", "--no-channel-attention", "--no-adain",
                 "--no-av-contrast", "--no-ial"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert {k: cfg["model"][k] for k in ("spatial_attention", "channel_attention", "adain", "av_contrast")} == \
        dict.fromkeys(("spatial_attention", "channel_attention", "adain", "av_contrast"), False)
    assert cfg["options"]["supervised"] is True and cfg["options"]["ial"] is False
    assert main(["train", "--method", "tiny", "--root", str(tiny_corpus), "--run", str(tmp_path / "t"),
                 "--no-ial"]) == 2


@pytest.mark.parametrize("head", ["deeplab", "mlp"])
def test_cached_crop_features_match_the_trunk_and_train(tiny_corpus, tmp_path, head):
    """The cache keeps what the head reads: the plain trunk's last map (mlp), or both DeepLabv3+ levels
    packed into one (1024, 8, 8) map per 128-px crop; either separates as the crops do, and trains."""
    import shutil

    from avsep_cli.datasets import MixtureOfMixtures
    from avsep_cli.features import TrunkFeatureStore
    from avsep_cli.models.deeplab import PackedTrunk, unpack_levels
    from avsep_cli.models.frames import normalize

    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    model = IALCMS(**{**asdict(IALCMSConfig.preset("cpu")), "visual_head": head})
    extractor = PackedTrunk(model.visual.trunk) if head == "deeplab" else model.visual.trunk
    shape = (1024, 8, 8) if head == "deeplab" else (512, 4, 4)
    store = TrunkFeatureStore(root, extractor, "resnet18-levels" if head == "deeplab" else "resnet18", 128)
    cached = MixtureOfMixtures(root, "train", length=2, crop_size=128, features=store, train=False)[1]
    plain = MixtureOfMixtures(root, "train", length=2, crop_size=128, train=False)[1]
    v = plain["object_valid"]
    assert cached["crops"].shape == (4, 3, *shape) and cached["crops"].dtype == torch.float32
    assert torch.equal(cached["object_valid"], v) and torch.equal(cached["clip_mixtures"], plain["clip_mixtures"])
    with torch.no_grad():
        direct = extractor(normalize(plain["crops"][v].flatten(0, 1))).view(-1, 3, *shape)
    torch.testing.assert_close(cached["crops"][v], direct, rtol=2e-3, atol=2e-3)  # stored as float16
    assert (cached["crops"][~v] == 0).all()
    if head == "deeplab":  # the packing is exact: the trunk's two maps come back
        low, high = model.visual.trunk.levels(normalize(plain["crops"][v][:1, 0]))
        got_low, got_high = unpack_levels(direct[:1, 0])
        assert low.shape == (1, 128, 16, 16) and high.shape == (1, 512, 8, 8)
        torch.testing.assert_close(got_low, low, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got_high, high, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the visual encoder takes either
        torch.testing.assert_close(model.visual(cached["crops"][v]), model.visual(plain["crops"][v]), rtol=1e-2, atol=1e-2)
    run = tmp_path / "run"
    assert main(["train", "--method", "ialcms", "--preset", "cpu", "--root", str(root), "--run", str(run), "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch-size", "2", "--segment", str(SEG), "--val-num", "0",
                 "--cache-features", "--model-option", f"visual_head={head}"]) == 0
    saved = checkpoint.load(run / "last.pt")
    assert saved["config"]["cache_features"] is True and saved["model_args"]["visual_head"] == head
