"""Golden equivalence with the authors' code: each fixture in `../shared/reference/golden/` (tensors the
reference implementations computed, with their state dicts under their own parameter names) is loaded
through the name maps of `avsep_cli.models.reference_names` into our modules, which must give the same
outputs within the fixture's tolerance, in eval and, where stored, train mode (running statistics
included). The folder's README says how each fixture was made. A missing folder fails, never skips:
set AVSEP_GOLDEN to its path when it is elsewhere.

Tolerances (README, "Observed tolerance"): forward outputs scaled max |ours - ref| / max |ref| <= 1e-4;
gradients and near-zero losses 1e-3; binary targets exact.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from avsep_cli import dsp
from avsep_cli.models import reference_names as R

GOLDEN = Path(os.environ.get("AVSEP_GOLDEN") or Path(__file__).resolve().parents[2] / "shared" / "reference" / "golden")
FWD, GRAD = 1e-4, 1e-3


def load(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = GOLDEN / f"{name}.safetensors"
    if not path.is_file():
        pytest.fail(f"golden fixture {path} is missing: the golden tests need ../shared/reference/golden "
                    "(or AVSEP_GOLDEN=folder)", pytrace=False)
    return load_file(str(path))


def state(g: dict, prefix: str = "state.") -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in g.items() if k.startswith(prefix)}


def fill(module: torch.nn.Module, ref_state: dict, name_map: dict, keep: tuple[str, ...] = ()) -> None:
    """Every reference tensor into `module` through the name map (fails on anything unmapped or misshapen;
    our tensors under the prefixes `keep`, e.g. a trunk the fixture does not hold, keep their values)."""
    module.load_state_dict(R.translate(ref_state, name_map, module.state_dict(), "golden state", keep))


def close(ours: torch.Tensor, ref: torch.Tensor, what: str, tol: float = FWD) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} vs reference {tuple(ref.shape)}"
    diff = (ours.detach().float() - ref).abs().max().item()
    scale = max(ref.abs().max().item(), 1e-12)
    assert diff / scale <= tol, f"{what}: max abs diff {diff:.3g}, scaled {diff / scale:.3g} > {tol:g}"


def flips(ours_logits: torch.Tensor, ref_logits: torch.Tensor) -> float:
    return ((ours_logits > 0) != (ref_logits > 0)).float().mean().item()


def test_golden_folder_is_there():
    assert GOLDEN.is_dir(), f"golden fixtures not found at {GOLDEN} (set AVSEP_GOLDEN)"
    assert len(list(GOLDEN.glob("*.safetensors"))) == 10


# --- AVPC -----------------------------------------------------------------------------------------------


def _pcnet(g):
    from avsep_cli.models.avpc import PCNet

    torch.manual_seed(0)
    net = PCNet(ngf=16, visual_channels=16, cycles=4)
    fill(net, state(g), R.avpc_sound(4))
    return net


def test_avpc_pcnet_eval_matches_the_reference():
    g = load("avpc_pcnet_ngf16")
    net = _pcnet(g).eval()
    x, v = g["in.log_mag_mix"], g["in.feat_map_frames"]
    calls = []
    hook = net.down[8].register_forward_hook(lambda m, i, o: calls.append(o.detach()))
    with torch.no_grad():
        logits = net(x, v)
    hook.remove()
    close(torch.stack(calls), g["out.eval_c4.vis_pred_conv"], "visual predictions (initial pass, cycles 1-4)")
    close(logits, g["out.eval_c4.logits"], "eval logits, 4 cycles")
    assert flips(logits, g["out.eval_c4.logits"]) == 0
    with torch.no_grad():
        c6 = net(x, v, cycles=6)
    close(c6, g["out.eval_c6.logits"], "eval logits, 6 test cycles (5 and 6 reuse cycle 4's norms)")
    close(F.adaptive_avg_pool2d(logits, 64), g["out.rcop_eval_c4.feat_simsiam"], "RCoP input (64 x 64 pool)")


def test_avpc_pcnet_train_mode_and_running_statistics_match():
    g = load("avpc_pcnet_ngf16")
    net = _pcnet(g).train()
    with torch.no_grad():
        logits = net(g["in.log_mag_mix"], g["in.feat_map_frames"])
    close(logits, g["out.train.logits"], "train logits")
    ours, names = net.state_dict(), R.avpc_sound(4)
    stats = {k.removeprefix("out.train.running."): v for k, v in g.items() if k.startswith("out.train.running.")}
    assert len(stats) == 2 * (8 + 7 + 28 + 24)
    for k, ref in stats.items():
        close(ours[names[k]], ref, f"running statistic {k}")


def test_avpc_frame_head_matches_in_eval_and_train_mode():
    from avsep_cli.models.avpc import FrameNet

    g = load("avpc_framehead")
    feats = g["in.trunk_features"].view(2, 3, 512, 7, 7)  # clip-major rows: (B, K, C, h, w)
    head_map = {k: v.removeprefix("head.") for k, v in R.avpc_frame(with_trunk=False).items()}
    for mode in ("eval", "train"):
        net = FrameNet(16)
        fill(net.head, state(g), head_map)
        net.train(mode == "train")
        with torch.no_grad():
            vmap = net.from_features(feats)
        close(vmap, g[f"out.{mode}.visual_map"], f"{mode} visual map")
        if mode == "train":
            for s in ("running_mean", "running_var"):
                close(net.head[1].state_dict()[s], g[f"out.train.running.fc.1.{s}"], f"head BN {s}")
        fill(net.head, state(g), head_map)  # reload: a train-mode pass moves the running statistics
        with torch.no_grad():
            close(net.head(g["in.trunk_features"]), g[f"out.{mode}.per_frame"], f"{mode} per-frame head output")


def test_avpc_rcop_simsiam_head_and_loss_match():
    from avsep_cli.models.avpc import SimSiamHead, rcop_loss

    g = load("avpc_rcop_simsiam")
    for mode in ("eval", "train"):
        head = SimSiamHead(4096, 64, 16)
        fill(head, state(g), R.simsiam())
        head.train(mode == "train")
        x1 = g["in.x1"].clone().requires_grad_(True)
        x2 = g["in.x2"].clone().requires_grad_(True)
        z1, p1 = head(x1)
        z2, p2 = head(x2)
        loss = rcop_loss(p1, z1, p2, z2)
        loss.backward()
        for k, v in (("z1", z1), ("z2", z2), ("p1", p1), ("p2", p2)):
            close(v, g[f"out.{mode}.{k}"], f"{mode} {k}")
        close(loss.reshape(1), g[f"out.{mode}.loss"], f"{mode} loss", GRAD)
        close(x1.grad, g[f"out.{mode}.grad_x1"], f"{mode} d loss / d x1", GRAD)
        close(x2.grad, g[f"out.{mode}.grad_x2"], f"{mode} d loss / d x2", GRAD)
    p, z = g["in.dist.p"].clone().requires_grad_(True), g["in.dist.z"].clone().requires_grad_(True)
    d = -F.cosine_similarity(p, z.detach(), dim=-1).mean()  # rcop_loss's Dist
    d.backward()
    close(d.reshape(1), g["out.dist.simplified"], "Dist")
    close(d.reshape(1), g["out.dist.original"], "Dist (original form)")
    close(p.grad, g["out.dist.grad_p"], "d Dist / d p", GRAD)
    assert z.grad is None and not g["out.dist.grad_z"].any()


# --- the signal path of AVPC and Sound-of-Pixels -----------------------------------------------------------


def test_log_warp_grid_and_unwarp_match_both_align_corners():
    g = load("dsp_avpc_sop")
    grid = dsp._reference_grid(256, 256, True, "cpu", torch.float32)
    assert torch.equal(grid, g["out.grid_warp"])
    for ac in (0, 1):
        w = dsp.GridWarp(bool(ac))
        close(w.warp(g["in.mag_mix"] + dsp.EPS), g[f"out.warp_ac{ac}.mag_mix"], f"warp, align_corners={bool(ac)}")
        close(w.unwarp(g["in.mask_log"]), g[f"out.unwarp_ac{ac}.mask"], f"unwarp, align_corners={bool(ac)}")
    # the fixed-matrix LOG warp is the align_corners=True one (time identity)
    close(dsp.LOG.warp(g["in.mag_mix"] + dsp.EPS), g["out.warp_ac1.mag_mix"], "LOG.warp")
    close(dsp.LOG.unwarp(g["in.mask_log"]), g["out.unwarp_ac1.mask"], "LOG.unwarp")
    assert dsp.log_warp(True) is dsp.LOG and isinstance(dsp.log_warp(False), dsp.GridWarp)


def test_avpc_and_sop_targets_loss_weight_and_levels_match():
    from avsep_cli.training.systems import MaskTargets

    g = load("dsp_avpc_sop")
    # both mixtures are (a0 + a1) / 2 here: the contributions are in.mags / 2 (exact: a power of two)
    mix, contrib = g["in.mag_mix"][:, 0], g["in.mags"][:, 0][None] / 2  # (1, 512, 256), (1, 2, 512, 256)
    tgt, weight = MaskTargets("avpc", align_corners=False)(contrib, mix)
    assert torch.equal(tgt, g["out.avpc.gt_masks"][:, 0][None])
    close(weight, g["out.avpc.weight"][:, 0], "AVPC loss weight")
    close(dsp.GridWarp(False).warp(g["in.mags"]), g["out.avpc.mags_w"], "AVPC warped sources")
    for ac in (0, 1):  # the published (PyTorch 0.4) Sound-of-Pixels grid is align_corners=True
        tgt, weight = MaskTargets("sop", align_corners=bool(ac))(contrib, mix)
        assert torch.equal(tgt, g[f"out.sop_ac{ac}.gt_masks"][:, 0][None])
        close(weight, g["out.sop_ac1.weight" if ac else "out.avpc.weight"][:, 0], f"SoP loss weight, align {bool(ac)}")
    assert not torch.equal(MaskTargets("avpc", False)(contrib, mix)[0], MaskTargets("sop", False)(contrib, mix)[0])
    dominant = MaskTargets("dominant", True)(contrib, mix)[0]
    assert torch.equal(dominant.sum(1), torch.ones_like(dominant[:, 0]))  # legacy: exactly one source per bin
    close(dsp.minmax_normalize(g["in.wav_segment"]), g["out.avpc.wav_norm_segment"], "AVPC level normalisation")


# --- Sound-of-Pixels ------------------------------------------------------------------------------------------


def test_sop_unet_frame_head_and_synthesizer_match():
    from avsep_cli.models.sop import SoundOfPixels

    g = load("sop_unet_ngf8_head_synth")
    torch.manual_seed(0)
    m = SoundOfPixels(ngf=8, k=32, train_trunk=False)
    ref = state(g)
    name_map = (R.prefixed(R.sop_unet(), "net_sound.", "sound_net.")
                | R.prefixed(R.sop_frame(with_trunk=False), "net_frame.", "frame_net.")
                | R.prefixed(R.sop_synthesizer(), "net_synthesizer.", ""))
    fill(m, ref, name_map, keep=("frame_net.trunk.",))
    m.eval()
    feats = g["in.trunk_features"].view(2, 3, 512, 14, 14)
    with torch.no_grad():
        maps = m.sound_net(g["in.log_mag_mix"])  # (2, 32, 256, 256)
        pooled = m.frame_net.pooled(feats)
        visual = m.frame_net.from_features(feats)
    close(maps[..., ::8, ::8], g["out.eval.feat_sound_sub8"], "U-Net maps (every 8th row and column)")
    close(pooled, g["out.eval.visual_pooled"], "visual vector before the sigmoid")
    close(visual, g["out.eval.visual"], "visual vector")
    sets = [[0, 1], [1, 0]]  # source n of item b is guided by frame set sets[n][b] (A = clip 0, B = clip 1)
    with torch.no_grad():
        logits = torch.stack([torch.cat([m.synthesize(maps[b:b + 1], visual[sets[n][b]][None]) for b in range(2)])
                              for n in range(2)])
    close(logits, g["out.eval.logits"], "mask logits")
    # the same through the model's per-source path: frames of the sources, the U-Net once per mixture
    src_feats = torch.stack([feats[[sets[0][b], sets[1][b]]] for b in range(2)])  # (B, N, K, 512, 14, 14)
    with torch.no_grad():
        via = m.forward_sources(g["in.log_mag_mix"], src_feats, feats=True)  # (B, N, 256, 256)
    close(via.transpose(0, 1)[:, :, None], g["out.eval.logits"], "mask logits via forward_sources")


# --- IAL-CMS ----------------------------------------------------------------------------------------------


def _slots(valid: torch.Tensor, per_object: torch.Tensor) -> torch.Tensor:
    """(N, ...) rows of the present objects -> (B, S, ...) with zero-filled empty slots (organize_batch)."""
    out = per_object.new_zeros(*valid.shape, *per_object.shape[1:])
    out[valid.bool()] = per_object
    return out


def test_ialcms_signal_path_and_mask_head_match():
    from avsep_cli.models.ialcms import IALCMS, mask_from_scores
    from avsep_cli.training.ialcms import signal_path

    g = load("ialcms_signal_maskhead")
    torch.manual_seed(0)
    m = IALCMS(ngf=4, dim=32, blocks=1, frame_size=32).eval()
    ref = state(g)
    fill(m, ref, {"scale": "mask_scale", "bias": "mask_bias"} | R.prefixed(R._bn("bn0", "bn_in"), "", "audio."),
         keep=("visual.", "audio.stem", "audio.stages", "av.", "decoder."))
    mix, valid = g["in.mixed_mixture"], g["in.valid_nums"]
    sp = signal_path(m)
    spec, mel, logmag = sp.features(mix)
    close(spec.abs(), g["out.stft_mag"], "|STFT|")
    where = g["out.stft_mag"] > 1e-3 * g["out.stft_mag"].max()  # phase is meaningless where |STFT| ~ 0
    dphase = torch.remainder(spec.angle() - g["out.phase"] + torch.pi, 2 * torch.pi) - torch.pi
    assert dphase[where].abs().max() < 1e-3, "phase"
    close(mel, g["out.mel_mag"], "log-grid ('mel') magnitude")
    with torch.no_grad():
        ref_in = m.audio.bn_in(torch.log(g["out.mel_mag"] + 1e-8).unsqueeze(1))
        ours_in = m.audio.bn_in(logmag)
    close(ref_in, g["out.eval.bn0_out"], "bn0(log(mag + 1e-8)) of the reference magnitude")
    # our STFT (FFT) and the reference's (nnAudio, a convolution) differ by rounding (~1e-7) in bins some
    # 170 dB below the peak, which the log magnifies: compare the input within 80 dB of the peak
    audible = g["out.mel_mag"].unsqueeze(1) > 1e-4 * g["out.mel_mag"].max()
    assert audible.float().mean() > 0.9
    close(ours_in[audible], g["out.eval.bn0_out"][audible], "bn0(log(mag + 1e-8)) of our magnitude (audible bins)")
    score = g["in.score_map"]  # (3, 1, 256, 64) present objects in slot order
    mix_index = valid.bool().nonzero()[:, 0]
    # the reference stores the score after its +0.5 (the "IRM bias"); empty slots score 0
    close((_slots(valid, score[:, 0]) * m.mask_scale + m.mask_bias + 0.5).detach(), g["out.eval.est_score_map"],
          "score map")
    mask = mask_from_scores(score[:, 0], m.mask_scale, m.mask_bias, "relu").detach()  # (3, 256, 64)
    close(_slots(valid, mask), g["out.eval.est_mel_mask"] * (valid[..., None, None] > 0), "mask relu(s x + b + 0.5)")
    empty = ~valid.bool()
    assert torch.allclose(g["out.eval.est_mel_mask"][empty], F.relu(m.mask_bias + 0.5).detach())  # what an empty slot gets
    close(_slots(valid, mel[mix_index] * mask), g["out.eval.est_mel_mag"] * (valid[..., None, None] > 0), "masked magnitude")
    waves = sp.waves(spec[mix_index], mask, mix.shape[-1])  # (3, L)
    close(_slots(valid, waves), g["out.eval.est_components"] * (valid[..., None] > 0), "separated waveforms")


def test_ialcms_av_module_matches_in_eval_and_train_mode():
    from avsep_cli.models.ialcms import AVModule

    g = load("ialcms_avmodule_d64")
    valid = g["in.valid_nums"].bool()
    mix_index = valid.nonzero()[:, 0]
    for mode in ("eval", "train"):
        av = AVModule(64, 64)
        fill(av, state(g), R.ialcms_avmodule())
        av.train(mode == "train")
        with torch.no_grad():
            out = av(g["in.fa_mix"][mix_index], g["in.fv_common_valid"])
        o = f"out.{mode}."
        close(_slots(valid, out["fa"]), g[o + "visual_related_srcs_fa"], f"{mode} fused audio fa")
        close(_slots(valid, out["f_av_c"]), g[o + "visual_related_srcs_fa_com"], f"{mode} f_av^c")
        close(_slots(valid, out["cos"]), g[o + "cos_map"], f"{mode} cosine map")
        close(_slots(valid, out["attention"]), g[o + "sound_localization"], f"{mode} sound localisation")
        close(out["v"], g[o + "sp_att_fv_com_valid"], f"{mode} attended visual vector")
        close(_slots(valid, out["channel_weight"][..., 0, 0]), g[o + "channel_attention_weight"], f"{mode} channel weights")
        close(out["att_fa"], g[o + "visual_related_srcs_att_fa_valid"], f"{mode} att_fa")
        close(_slots(valid, out["att_fa"].mean((2, 3))), g[o + "visual_related_srcs_att_fa_pooled"], f"{mode} pooled att_fa")
        close(out["f_con"], g[o + "av_context_feature"], f"{mode} f_con")
        close(_slots(valid, out["f_con"]), g[o + "consistent_feature"], f"{mode} consistent feature")
        close(out["y"], g[o + "y"], f"{mode} decoder input y")
        fa_mean = g["in.fa_mix"].mean((-1, -2))[:, None].expand(-1, 2, -1)
        close(fa_mean, g[o + "contrast_fa_mix"], "pooled mixture feature")


def test_ialcms_decoder_level_with_adain_matches():
    from avsep_cli.models.ialcms import UpLevel, encoder_stage

    g = load("ialcms_decoder_adain")
    valid = g["in.valid_nums"].bool()
    mix_index = valid.nonzero()[:, 0]
    ref = state(g)
    for mode in ("eval", "train"):
        stage, level = encoder_stage(16, 32, blocks=2), UpLevel(96, 32, 128)
        fill(stage, {k: v for k, v in ref.items() if k.startswith("down.")}, R.ialcms_stage(2))
        fill(level, {k: v for k, v in ref.items() if not k.startswith("down.")}, R.ialcms_up_level())
        stage.train(mode == "train")
        level.train(mode == "train")
        with torch.no_grad():
            enc = stage(g["in.x"])
            y = torch.cat([g["in.x"][mix_index], level(g["in.sub_y"], g["in.av_context_feature"])], 1)
        close(enc, g[f"out.{mode}.encoder_out"], f"{mode} encoder stage")
        close(level.style_w(g["in.av_context_feature"]).detach(), g[f"out.{mode}.adain_w"], "AdaIN scales")
        close(level.style_b(g["in.av_context_feature"]).detach(), g[f"out.{mode}.adain_b"], "AdaIN shifts")
        close(y, g[f"out.{mode}.y"], f"{mode} level output [skip, up]")


def test_ialcms_critic_matches_with_spectral_norm_in_eval_and_train_mode():
    from avsep_cli.models.ialcms_critic import PairCritic

    g = load("ialcms_critic_ndf4")
    for mode in ("eval", "train"):
        critic = PairCritic(ndf=4, max_channels=1024)
        fill(critic, state(g), R.ialcms_critic(6, 4))
        critic.train(mode == "train")
        pairs = g["in.pairs"]  # (2, 2, 256, 256)
        with torch.no_grad():
            codes = critic.encode(pairs.flatten(0, 1))
            fill(critic, state(g), R.ialcms_critic(6, 4))  # reload: a train-mode pass moves u and v
            feat = critic.features(pairs[:, 0], pairs[:, 1])
            fill(critic, state(g), R.ialcms_critic(6, 4))
            score = critic(pairs[:, 0], pairs[:, 1])
        close(codes, g[f"out.{mode}.component_feature"], f"{mode} component codes")
        close(feat, g[f"out.{mode}.pair_feature"], f"{mode} pair features")
        close(score[:, None], g[f"out.{mode}.pair_score"], f"{mode} pair scores")


def test_ialcms_losses_match():
    from avsep_cli.training.ialcms import av_contrast, generator_loss, hinge_critic_loss, si_snr, sisnr_loss

    g = load("ialcms_losses")
    est = g["in.sep.est_components"].clone().requires_grad_(True)  # (B, NumMix, Objects, L)
    mixtures = g["in.sep.mixtures"]
    est_mix = (est * g["in.sep.components_valid_nums"][..., None]).sum(2)
    loss = sisnr_loss(mixtures, est_mix, 30.0)
    loss.backward()
    close(loss.reshape(1), g["out.sep.loss"], "L_sep", GRAD)
    close(est.grad, g["out.sep.grad_est_components"], "d L_sep / d estimates", GRAD)
    with torch.no_grad():
        close(si_snr(mixtures, est_mix, 30.0), g["out.sep.sisnr_cap30"], "SI-SNR, 30 dB cap")
        close(si_snr(mixtures, est_mix, None), g["out.sep.sisnr_nocap"], "SI-SNR, no cap")
    valid = g["in.avc.components_valid_nums"].flatten().bool()
    fv = g["in.avc.dropout_common_fv"].clone().requires_grad_(True)
    fa = g["in.avc.visual_related_srcs_fa_com"].clone().requires_grad_(True)
    l_av = av_contrast(fv.flatten(0, 2)[valid], fa.flatten(0, 2)[valid], 0.3, 6)
    l_av.backward()
    close(l_av.reshape(1), g["out.avc.loss"], "L_av", GRAD)
    close(fv.grad, g["out.avc.grad_dropout_common_fv"], "d L_av / d visual maps", GRAD)
    close(fa.grad, g["out.avc.grad_visual_related_srcs_fa_com"], "d L_av / d f_av^c", GRAD)
    ind, dep = g["in.gan.independent_pair_score"], g["in.gan.dependent_pair_score"]
    close(hinge_critic_loss(ind, dep, g["in.gan.w_weight"].pow(2).sum()).reshape(1), g["out.gan.c_loss"], "critic loss", GRAD)
    close(generator_loss(ind, dep).reshape(1), g["out.gan.g_loss"], "L_G", GRAD)
    close(generator_loss(ind, dep).reshape(1), g["out.gan.est_dist_d"], "estimated distance", GRAD)
