"""Datasets and the shared trainer: mixing, fixed evaluation sets, the unsupervised batch contract,
exact resume, Ctrl-C, distributed training on gloo, and the `tiny` method end to end through the CLI."""

from __future__ import annotations

import dataclasses

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from avsep_cli import checkpoint, evaluate
from avsep_cli.cli import main
from avsep_cli.datasets import MixSeparate, MixtureOfMixtures, RCoPPairs
from avsep_cli.errors import AvsepError
from avsep_cli.training.config import TrainConfig
from avsep_cli.training.run import train

SEG = 8191  # 32 STFT frames: keeps CPU tests fast
AVSEP = [sys.executable, "-m", "avsep_cli"]


def small_cfg(root: Path, **kw) -> TrainConfig:
    base = dict(method="tiny", root=str(root), epochs=2, batch_size=2, steps_per_epoch=2, segment=SEG, val_num=0,
                model={"channels": 8, "visual_dim": 8, "frame_size": 32})
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("mix", [2, 3, 4])
def test_mix_and_separate_items(tiny_corpus, mix):
    ds = MixSeparate(tiny_corpus, "train", mix=mix, length=6, segment=SEG, frame_size=64)
    for i in range(len(ds)):
        item = ds[i]
        assert item["stems"].shape == (mix, SEG) and item["frames"].shape == (mix, 3, 3, 64, 64)
        assert item["frames"].dtype == torch.uint8
        torch.testing.assert_close(item["mixture"], item["stems"].sum(0))
        assert len(set(item["labels"].tolist())) == mix  # classes in a mixture are distinct
        assert (item["stems"].abs().amax(-1) > 0).all()
    # a pure function of (seed, epoch, index)
    again = MixSeparate(tiny_corpus, "train", mix=mix, length=6, segment=SEG, frame_size=64)
    assert torch.equal(again[3]["mixture"], ds[3]["mixture"])
    ds.set_epoch(1)
    assert not torch.equal(again[3]["mixture"], ds[3]["mixture"])


def test_fixed_evaluation_set_is_identical_across_runs(tiny_corpus):
    a = evaluate.build_test_set(tiny_corpus, mix=2, split="test", num=10, seed=3)
    b = evaluate.build_test_set(tiny_corpus, mix=2, split="test", num=10, seed=3)
    c = evaluate.build_test_set(tiny_corpus, mix=2, split="test", num=10, seed=4)
    assert a == b and a != c
    for it in a:
        if it.kind == "mix":
            assert len(set(it.classes)) == 2
    m1, r1, _ = evaluate.load_item(a[0], SEG)
    m2, r2, _ = evaluate.load_item(b[0], SEG)
    assert np.array_equal(m1, m2) and np.array_equal(r1, r2)
    np.testing.assert_allclose(m1, r1.sum(0), atol=1e-6)


def test_mixture_of_mixtures_carries_no_stems_into_training(tiny_corpus):
    ds = MixtureOfMixtures(tiny_corpus, "train", length=8, segment=SEG, crop_size=64)
    for i in range(len(ds)):
        item = ds[i]
        assert not any("stem" in k for k in item), sorted(item)  # only the two clips' own mixtures
        torch.testing.assert_close(item["mixture"], item["clip_mixtures"].sum(0))
        valid = item["object_valid"]
        assert 2 <= int(valid.sum()) <= 4
        assert set(item["object_clip"][valid].tolist()) == {0, 1}  # objects of both clips
        assert (item["crops"][valid].float().std(dim=(1, 2, 3, 4)) > 1).all()  # real pictures, not blanks
    ev = MixtureOfMixtures(tiny_corpus, "train", length=8, segment=SEG, crop_size=64, with_eval_stems=True)[0]
    assert "eval_stems" in ev  # stems exist only under eval_ keys, for scoring


def _tag_clips(ds) -> dict[int, object]:
    """Replace every clip's audio by a pure tone of its own (an integer number of cycles per window, so the
    tones are orthogonal whatever the start): the targets then say which clips they hold. -> bin -> clip."""
    clips = sorted(ds.corpus.clips(split="train"), key=lambda c: c.id)
    bins = {c.id: 8 + 3 * i for i, c in enumerate(clips)}
    n = 4 * SEG
    t = np.arange(n)
    ds.reader.audio = lambda clip: (0.5 * np.sin(2 * np.pi * bins[clip.id] * t / SEG)).astype(np.float32)
    return {bins[c.id]: c for c in clips}


def _sources(target: torch.Tensor, by_bin: dict) -> list:
    spec = torch.fft.rfft(target.double()).abs()
    return [by_bin[int(k)] for k in (spec > 0.1 * spec.max()).nonzero()[:, 0]]


def test_unsupervised_targets_are_always_mixtures_never_single_sources(tiny_corpus):
    """Deliver 3 of issue 16: with every clip tagged by its own tone, each training target (an item's own
    mixture) holds two solo clips of different classes (synthetic duets, the reference's default), and the
    four solos of an example are of four classes; real duets hold two players; no target is ever a single
    source."""
    ds = MixtureOfMixtures(tiny_corpus, "train", length=10, segment=SEG, crop_size=64)
    by_bin = _tag_clips(ds)
    n_classes = len({c.classes[0] for c in by_bin.values() if c.kind == "solo"})
    for i in range(len(ds)):
        item = ds[i]
        classes = []
        for ci in range(2):
            src = _sources(item["clip_mixtures"][ci], by_bin)
            assert len(src) == 2 and all(c.kind == "solo" for c in src), [c.id for c in src]
            assert src[0].classes[0] != src[1].classes[0]
            classes += [c.classes[0] for c in src]
            assert int((item["object_valid"] & (item["object_clip"] == ci)).sum()) == 2  # one crop per solo
        assert len(set(classes)) == min(4, n_classes)
    duets = MixtureOfMixtures(tiny_corpus, "train", length=6, segment=SEG, crop_size=64, items="duets")
    by_bin = _tag_clips(duets)
    for i in range(len(duets)):
        item = duets[i]
        for ci in range(2):
            (clip,) = _sources(item["clip_mixtures"][ci], by_bin)
            assert clip.kind == "duet" and len(clip.classes) == 2
    with pytest.raises(ValueError):
        MixtureOfMixtures(tiny_corpus, "train", length=2, segment=SEG, items="solos")


def test_reference_levels_partners_and_mean_mixing(tiny_corpus):
    """AVPC's levels: min-max normalised to [-1, 1], x U(0.5, 1.5), clipped; mixtures are the mean of the
    sources (each stem the source's contribution); partners drawn from any solo clip."""
    ds = MixSeparate(tiny_corpus, "train", mix=2, length=20, segment=SEG, frame_size=64, levels="avpc",
                     partners="any", mean=True, augment="reference")
    peaks = []
    for i in range(len(ds)):
        item = ds[i]
        torch.testing.assert_close(item["mixture"], item["stems"].sum(0))
        peaks += (item["stems"].abs().amax(-1) * 2).tolist()  # contributions are sources / 2
        assert item["frames"].shape == (2, 3, 3, 64, 64)
    assert max(peaks) <= 1.0 + 1e-6 and min(peaks) >= 0.45  # |source| reaches at least 0.5 x its normalised peak
    ev = MixSeparate(tiny_corpus, "train", mix=2, length=2, segment=SEG, frame_size=64, levels="avpc", train=False, mean=True)
    for i in range(len(ev)):  # at evaluation: normalised only, every source reaches [-1, 1]
        assert torch.allclose(ev[i]["stems"].abs().amax(-1) * 2, torch.ones(2), atol=1e-3)


def test_rcop_pairs_share_one_source(tiny_corpus):
    ds = RCoPPairs(tiny_corpus, "train", length=4, segment=SEG, frame_size=64)
    item = ds[0]
    src = item["source"]
    r1, r2 = item["mix1"] - src, item["mix2"] - src
    assert r1.abs().max() > 0 and r2.abs().max() > 0 and not torch.allclose(r1, r2)
    assert item["frames"].shape == (3, 3, 64, 64)


def _weights(run: Path) -> dict:
    return torch.load(run / "last.pt", weights_only=True)["state_dict"]


def test_resume_continues_exactly(tiny_corpus, tmp_path):
    dev = torch.device("cpu")
    train(small_cfg(tiny_corpus), tmp_path / "straight", device=dev)
    train(small_cfg(tiny_corpus, epochs=1), tmp_path / "split", device=dev)
    train(None, tmp_path / "split", device=dev, resume=True, epochs=2)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ck = checkpoint.load(tmp_path / "split" / "last.pt")  # plain data: weights_only=True
    assert ck["epoch"] == 2 and ck["model_name"] == "tiny"
    assert (tmp_path / "split" / "config.json").exists() and (tmp_path / "split" / "curves.png").exists()
    assert len((tmp_path / "split" / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_mid_epoch_reports_the_whole_epochs_train_loss(tiny_corpus, tmp_path):
    """Ctrl-C half-way through an epoch, then --resume: the epoch's train_loss is the mean over all its
    steps (the partial sums travel in the checkpoint), as in a run that was never interrupted."""
    from avsep_cli.training.trainer import Interrupted

    dev = torch.device("cpu")
    cfg = {"epochs": 1, "steps_per_epoch": 4}
    straight = train(small_cfg(tiny_corpus, **cfg), tmp_path / "straight", device=dev)

    def ctrl_c_after_two_steps(step: int, total: int, row: dict) -> None:
        if step == 2:  # the trainer's own SIGINT handler: stop at this step boundary
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        train(small_cfg(tiny_corpus, **cfg), tmp_path / "split", device=dev, on_step=ctrl_c_after_two_steps)
    ck = checkpoint.load(tmp_path / "split" / "last.pt")
    assert (ck["epoch"], ck["step_in_epoch"], ck["epoch_steps"]) == (0, 2, 2)
    assert ck["cpu_min"] > 0 and ck["wall_min"] > 0  # the two steps' time travels too
    resumed = train(None, tmp_path / "split", device=dev, resume=True)
    assert len(straight) == len(resumed) == 1
    # the epoch's CPU time counts the steps before the interruption, not only those after it
    assert resumed[0]["cpu_min"] > ck["cpu_min"] and resumed[0]["wall_min"] > ck["wall_min"]
    assert abs(resumed[0]["train_loss"] - straight[0]["train_loss"]) < 1e-6, (resumed[0], straight[0])
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_one_training_step_lowers_the_loss_on_its_batch(tiny_corpus):
    from avsep_cli.training.run import build_system
    from avsep_cli.training.trainer import Trainer, collate, seed_everything

    seed_everything(0)
    cfg = small_cfg(tiny_corpus, lr={"default": 3e-3}, grad_clip=0.0)
    system, data = build_system(cfg)
    trainer = Trainer(system, cfg, data, torch.device("cpu"), Path("unused"))
    batch = collate([data[i] for i in range(4)])
    first = trainer.train_step(batch)["loss"]
    for _ in range(4):
        trainer.train_step(batch)
    system.model.train()
    with torch.no_grad():
        after = float(system.training_step(batch)["loss"])
    assert after < first


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_leaves_a_loadable_checkpoint(tiny_corpus, tmp_path, sig, code):
    run = tmp_path / "run"
    cmd = AVSEP + ["train", "--method", "tiny", "--root", str(tiny_corpus), "--run", str(run), "--epochs", "50",
                   "--steps-per-epoch", "30", "--batch-size", "2", "--segment", str(SEG), "--val-num", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "config.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3.0)  # some steps into the first epoch
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "checkpoint saved" in err and ("terminated" if sig == signal.SIGTERM else "interrupted") in err
    ck = checkpoint.load(run / "last.pt")
    assert ck["epoch"] * 30 + ck["step_in_epoch"] > 0
    # and the run continues from it
    assert main(["train", "--resume", str(run), "--epochs", str(ck["epoch"] + 1)]) == 0


def test_distributed_gloo_matches_single_process(tiny_corpus, tmp_path):
    common = ["--method", "tiny", "--root", str(tiny_corpus), "--epochs", "1", "--steps-per-epoch", "1",
              "--segment", str(SEG), "--val-num", "0", "--device", "cpu"]
    assert main(["train", *common, "--batch-size", "4", "--run", str(tmp_path / "single")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    proc = subprocess.run(torchrun + ["-m", "avsep_cli", "train", *common, "--batch-size", "2", "--run-dir",
                                      str(tmp_path / "ddp")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    l1 = json.loads((tmp_path / "single" / "metrics.jsonl").read_text())["train_loss"]
    l2 = json.loads((tmp_path / "ddp" / "metrics.jsonl").read_text())["train_loss"]
    assert abs(l1 - l2) < 1e-5 * max(1.0, abs(l1))
    # Weights after the AdamW step. Its first update is lr * g / (|g| + eps), about lr * sign(g), so a
    # gradient that is ~0 and differs in its last bits (summed in another order across processes) can
    # move its weight by up to 2 lr differently. Everything else must agree: a DDP without gradient
    # averaging (each rank on half the batch) changes most weights.
    a, b = _weights(tmp_path / "single"), _weights(tmp_path / "ddp")
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert diff.max() <= 2e-3 + 1e-6
    assert (diff > 1e-5).float().mean() < 0.01, (diff > 1e-5).float().mean()


def test_train_tiny_end_to_end_and_load_in_eval(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--method", "tiny", "--root", str(tiny_corpus), "--run", str(run), "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch-size", "2", "--segment", str(SEG), "--val-num", "2"]) == 0
    err = capsys.readouterr().err
    assert "epoch 1: loss" in err and "val SDR" in err and "data" in err
    assert (run / "best.pt").exists()
    out = tmp_path / "eval.json"
    assert main(["eval", "--method", "tiny", "--weights", str(run / "best.pt"), "--data", str(tiny_corpus), "--num", "2",
                 "--window", "1s", "--json", str(out)]) == 0
    import json

    data = json.loads(out.read_text())
    assert len(data["methods"]["tiny"]["sources"]) >= 4


def test_kept_epoch_weights_average_into_a_model_eval_runs(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--steps-per-epoch", "1", "--batch-size", "2", "--segment", str(SEG), "--val-num", "0"]
    assert main(["train", "--method", "tiny", "--root", str(tiny_corpus), "--run", str(run), "--epochs", "3",
                 "--keep-every", "2", *common]) == 0
    assert sorted(p.name for p in (run / "epochs").iterdir()) == ["e002.pt"]
    # a resume may keep them from now on at another interval
    assert main(["train", "--resume", str(run), "--epochs", "4", "--keep-every", "1"]) == 0
    kept = sorted((run / "epochs").iterdir())
    assert [p.name for p in kept] == ["e002.pt", "e004.pt"]
    e4 = checkpoint.load(kept[1])
    assert "optimizer" not in e4 and e4["epoch"] == 4
    last = checkpoint.load(run / "last.pt")
    assert all(torch.equal(last["state_dict"][k], v) for k, v in e4["state_dict"].items())  # the weights after epoch 4
    e2 = checkpoint.load(kept[0])["state_dict"]
    assert any(not torch.equal(e2[k], v) for k, v in e4["state_dict"].items() if v.is_floating_point())
    avg = tmp_path / "avg.pt"
    r = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / "average_weights.py"),
                        *map(str, kept), "-o", str(avg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert main(["eval", "--method", "tiny", "--weights", str(avg), "--data", str(tiny_corpus), "--num", "2",
                 "--window", "1s", "--no-duets"]) == 0


def test_curriculum_init_from_a_two_mix_run(tiny_corpus, tmp_path, capsys):
    common = ["--method", "tiny", "--root", str(tiny_corpus), "--epochs", "1", "--steps-per-epoch", "1",
              "--batch-size", "2", "--segment", str(SEG), "--val-num", "0"]
    assert main(["train", *common, "--run", str(tmp_path / "mix2"), "--seed", "1"]) == 0
    assert main(["train", *common, "--run", str(tmp_path / "mix3"), "--mix", "3", "--init-from", str(tmp_path / "mix2")]) == 0
    assert main(["train", *common, "--run", str(tmp_path / "fresh"), "--mix", "3"]) == 0
    src, cur, fresh = (_weights(tmp_path / r) for r in ("mix2", "mix3", "fresh"))
    dist = lambda a, b: sum(float((a[k] - b[k]).abs().sum()) for k in a)  # noqa: E731
    assert dist(cur, src) < 0.1 * dist(fresh, src)  # one step away from the 2-mix weights
    assert main(["train", *common, "--run", str(tmp_path / "bad"), "--init-from", str(tmp_path / "nothing")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "weights not found:" in err and "(not a file, and no shipped weights have that name)" in err


def test_data_seed_draws_new_training_mixtures_and_keeps_the_rest(tiny_corpus, tmp_path, capsys):
    from avsep_cli.training.run import build_system
    from avsep_cli.training.trainer import epoch_batches

    def first_item(cfg):
        _, data = build_system(cfg)
        data.set_epoch(0)
        return data[0]

    plain, again, other = (small_cfg(tiny_corpus, seed=0, **kw) for kw in ({}, {"data_seed": 0}, {"data_seed": 7}))
    assert plain.train_seed == again.train_seed == 0 and other.train_seed == 7 and other.seed == 0
    a, b, c = first_item(plain), first_item(again), first_item(other)
    assert torch.equal(a["mixture"], b["mixture"]) and not torch.equal(a["mixture"], c["mixture"])
    assert epoch_batches(64, 2, 0, 0, 4) != epoch_batches(64, 2, 7, 0, 4)
    # a config.json written before the field existed reads as data_seed None: the training seed is --seed
    d = {k: v for k, v in dataclasses.asdict(small_cfg(tiny_corpus, seed=3)).items() if k != "data_seed"}
    assert TrainConfig.from_dict(d).train_seed == 3
    common = ["--method", "tiny", "--root", str(tiny_corpus), "--epochs", "1", "--steps-per-epoch", "1",
              "--batch-size", "2", "--segment", str(SEG), "--val-num", "0"]
    assert main(["train", *common, "--run", str(tmp_path / "r"), "--data-seed", "5"]) == 0
    assert TrainConfig.load(tmp_path / "r" / "config.json").data_seed == 5
    assert main(["train", "--resume", str(tmp_path / "r"), "--data-seed", "6", "--epochs", "2"]) == 2
    assert "a resumed run keeps the data seed of its config.json" in " ".join(capsys.readouterr().err.split())


def test_train_bad_input(tmp_path, capsys):
    assert main(["train", "--method", "tiny", "--root", str(tmp_path)]) == 2
    assert "not a corpus" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no last.pt" in capsys.readouterr().err


def test_time_budget_stops_at_an_epoch_end(tiny_corpus, tmp_path):
    hist = train(small_cfg(tiny_corpus, epochs=5, max_minutes=1e-4), tmp_path / "budget", device=torch.device("cpu"))
    assert len(hist) == 1 and checkpoint.load(tmp_path / "budget" / "last.pt")["epoch"] == 1


def test_cpu_budget_counts_process_time_across_resumes(tiny_corpus, tmp_path):
    hist = train(small_cfg(tiny_corpus, epochs=1), tmp_path / "a", device=torch.device("cpu"))
    hist = train(None, tmp_path / "a", device=torch.device("cpu"), resume=True, epochs=2)
    assert len(hist) == 2 and 0 < hist[0]["cpu_min"] < hist[1]["cpu_min"] and hist[1]["wall_min"] > 0
    # a budget one epoch cannot fit twice into: one epoch runs, and a resumed run has nothing left
    hist = train(small_cfg(tiny_corpus, epochs=5, max_cpu_minutes=1e-4), tmp_path / "b", device=torch.device("cpu"))
    assert len(hist) == 1
    hist = train(None, tmp_path / "b", device=torch.device("cpu"), resume=True, epochs=6)
    assert len(hist) == 1 and checkpoint.load(tmp_path / "b" / "last.pt")["epoch"] == 1
    # a resume may replace the budget (0: none): the run then goes on to its epochs, and keeps the new one
    hist = train(None, tmp_path / "b", device=torch.device("cpu"), resume=True, epochs=3, max_cpu_minutes=0.0)
    assert len(hist) == 3 and checkpoint.load(tmp_path / "b" / "last.pt")["epoch"] == 3
    assert TrainConfig.load(tmp_path / "b" / "config.json").max_cpu_minutes == 0.0


def test_a_resume_re_plans_the_lr_drops(tiny_corpus, tmp_path):
    """--resume RUN --lr-steps: a run sized for one machine re-planned for another. A drop moved before the
    run's position applies at once; a re-planned run then trains as one started with that plan."""
    dev = torch.device("cpu")
    lr0 = 1e-3
    train(small_cfg(tiny_corpus, epochs=3, lr_steps=(2,)), tmp_path / "straight", device=dev)
    train(small_cfg(tiny_corpus, epochs=1, lr_steps=(5,)), tmp_path / "re", device=dev)
    hist = train(None, tmp_path / "re", device=dev, resume=True, epochs=3, lr_steps=(2,))
    assert [round(h["lr"] / lr0, 6) for h in hist] == [1.0, 1.0, 0.1]
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "re")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert TrainConfig.load(tmp_path / "re" / "config.json").lr_steps == (2,)
    # a drop moved to an epoch already passed: the LR falls at the resume, not never
    train(small_cfg(tiny_corpus, epochs=2, lr_steps=(5,)), tmp_path / "late", device=dev)
    hist = train(None, tmp_path / "late", device=dev, resume=True, epochs=3, lr_steps=(1,))
    assert [round(h["lr"] / lr0, 6) for h in hist] == [1.0, 1.0, 0.1]
    with pytest.raises(AvsepError, match="only its schedules"):  # options other than schedules stay
        train(None, tmp_path / "late", device=dev, resume=True, epochs=4, schedule_options={"target": "ibm"})
    # the same through the CLI: a second drop added
    assert main(["train", "--resume", str(tmp_path / "late"), "--epochs", "4", "--lr-steps", "1,3"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "late" / "metrics.jsonl").read_text().splitlines()]
    assert [round(r["lr"] / lr0, 6) for r in rows if r.get("type") == "epoch"] == [1.0, 1.0, 0.1, 0.01]


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_and_fp32_steps_agree_on_a_tiny_model(tiny_corpus, channels_last):
    """One training step from the same weights on the same batch: under --precision bf16 the network's
    convolutions really run in bfloat16 (the loss differs from fp32's), yet the loss agrees with fp32's to
    bf16 rounding and the weights move the same way."""
    from avsep_cli.training.run import build_system
    from avsep_cli.training.trainer import Trainer, collate, seed_everything

    def step(precision: str):
        seed_everything(0)
        cfg = small_cfg(tiny_corpus, grad_clip=0.0, precision=precision, channels_last=channels_last)
        system, data = build_system(cfg)
        trainer = Trainer(system, cfg, data, torch.device("cpu"), Path("unused"))
        before = {k: v.detach().clone() for k, v in system.model.named_parameters()}
        dtypes = set()
        hooks = [m.register_forward_hook(lambda m, i, o: dtypes.add(o.dtype))
                 for m in system.model.modules() if isinstance(m, torch.nn.Conv2d)]
        loss = trainer.train_step(collate([data[i] for i in range(4)]))["loss"]
        for h in hooks:
            h.remove()
        delta = torch.cat([(p.detach() - before[k]).flatten() for k, p in system.model.named_parameters()])
        return loss, delta, dtypes

    loss32, d32, t32 = step("fp32")
    loss16, d16, t16 = step("bf16")
    assert t32 == {torch.float32} and t16 == {torch.bfloat16}
    assert loss16 != loss32 and abs(loss16 - loss32) <= 2e-2 * abs(loss32), (loss16, loss32)
    assert torch.nn.functional.cosine_similarity(d16, d32, dim=0) > 0.99


def test_precision_is_recorded_and_a_bf16_run_resumes_exactly(tiny_corpus, tmp_path):
    dev = torch.device("cpu")
    kw = {"precision": "bf16", "channels_last": True}
    train(small_cfg(tiny_corpus, **kw), tmp_path / "straight", device=dev)
    train(small_cfg(tiny_corpus, epochs=1, **kw), tmp_path / "split", device=dev)
    cfg = TrainConfig.load(tmp_path / "split" / "config.json")
    assert (cfg.precision, cfg.channels_last) == ("bf16", True)
    train(None, tmp_path / "split", device=dev, resume=True, epochs=2)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert checkpoint.load(tmp_path / "split" / "last.pt")["config"]["precision"] == "bf16"
    train(small_cfg(tiny_corpus), tmp_path / "fp32", device=dev)
    fp32 = _weights(tmp_path / "fp32")
    assert any(not torch.equal(a[k], fp32[k]) for k in a)  # bf16 trained differently from fp32


def test_train_precision_options_are_checked(tiny_corpus, tmp_path, capsys):
    base = ["train", "--method", "tiny", "--root", str(tiny_corpus), "--run", str(tmp_path / "r")]
    assert main(base + ["--precision", "fp16"]) == 2
    assert "--precision fp16: expected fp32 or bf16" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "r"), "--precision", "bf16"]) == 2
    assert "a resumed run keeps the precision" in capsys.readouterr().err
    det = tmp_path / "det"
    det.mkdir()
    (det / "config.json").write_text('{"method": "detector"}')
    assert main(["train", "--resume", str(det), "--max-cpu-minutes", "30"]) == 2
    assert "--max-cpu-minutes cannot change a resumed detector run" in capsys.readouterr().err
