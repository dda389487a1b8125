"""Checkpoint integrity: the content checksum inside every checkpoint, and one-line refusals of files that
are corrupt, empty, truncated, not checkpoints, or for another model, wherever a checkpoint is loaded
(`avsep train --resume`, `avsep eval --weights`, `avsep separate --weights`)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from avsep_cli import checkpoint
from avsep_cli.models.tiny import TinyNet
from avsep_cli.training.config import TrainConfig
from avsep_cli.training.run import train
from clihelp import assert_one_error, run

SEG = 8191  # 32 STFT frames: keeps CPU tests fast
MODEL = {"channels": 8, "visual_dim": 8, "frame_size": 32}


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory) -> Path:
    """A finished one-epoch tiny run (two steps); tests work on copies of it."""
    folder = tmp_path_factory.mktemp("ckpt") / "run"
    cfg = TrainConfig(method="tiny", root=str(tiny_corpus), epochs=1, batch_size=2, steps_per_epoch=2, segment=SEG,
                      val_num=0, model=dict(MODEL))
    train(cfg, folder, device=torch.device("cpu"))
    return folder


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _flip_byte_of(path: Path, tensor: torch.Tensor, out: Path | None = None) -> None:
    """Flip bits of one byte inside `tensor`'s stored data (the high byte of its first float32: sign and
    exponent, e.g. an Adam moment of 8e-05 becomes a large negative number)."""
    raw = bytearray(path.read_bytes())
    at = raw.find(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    assert at > 0
    raw[at + 3] ^= 0xC7
    (out or path).write_bytes(bytes(raw))


def _resume(capsys, folder: Path) -> tuple[int, str]:
    rc, _, err = run(capsys, "train", "--resume", folder, "--epochs", 2, "--device", "cpu")
    return rc, err


def test_checkpoints_carry_a_checksum_of_their_content(trained):
    data = torch.load(trained / "last.pt", weights_only=True)  # plain data, checksum included
    mark = data["checksum"]
    assert mark == {"scheme": checkpoint.CHECKSUM_SCHEME, "sha256": checkpoint.content_sha256(data)}
    changed = {**data, "epoch": data["epoch"] + 1}
    assert checkpoint.content_sha256(changed) != mark["sha256"]


def test_resume_refuses_a_flipped_byte(run_copy, capsys):
    ck = torch.load(run_copy / "last.pt", weights_only=True)
    _flip_byte_of(run_copy / "last.pt", ck["optimizer"]["state"][0]["exp_avg"])
    before = _snapshot(run_copy)
    rc, err = _resume(capsys, run_copy)
    assert_one_error(rc, err, "fails its checksum")
    assert str(run_copy / "last.pt") in err
    assert _snapshot(run_copy) == before  # nothing trained, nothing rewritten


def test_resume_refuses_an_empty_checkpoint(run_copy, capsys):
    (run_copy / "last.pt").write_bytes(b"")
    rc, err = _resume(capsys, run_copy)
    assert_one_error(rc, err, "is empty")


def test_resume_refuses_a_truncated_checkpoint(run_copy, capsys):
    path = run_copy / "last.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    rc, err = _resume(capsys, run_copy)
    assert_one_error(rc, err, "truncated")


@pytest.mark.parametrize("content", [torch.zeros(3), [1, 2, 3], {"weights": torch.zeros(2)}],
                         ids=["tensor", "list", "other-dict"])
def test_resume_refuses_a_torch_file_that_is_not_a_checkpoint(run_copy, capsys, content):
    torch.save(content, run_copy / "last.pt")
    rc, err = _resume(capsys, run_copy)
    assert_one_error(rc, err, "is not an avsep checkpoint")


def _other_shapes(data: dict) -> dict:
    other = TinyNet(**{**MODEL, "channels": 16})
    return {**data, "model_args": {**MODEL, "channels": 16}, "state_dict": other.state_dict()}


@pytest.mark.parametrize("change,phrase", [
    (lambda d: {**d, "model_name": "avpc"}, "holds a 'avpc' model, not 'tiny'"),
    (_other_shapes, "does not fit this run's 'tiny' model"),
    (lambda d: {**d, "state_dict": {k: v for k, v in d["state_dict"].items() if k != "out.bias"}}, "missing keys out.bias"),
    (lambda d: {**d, "state_dict": {**d["state_dict"], "head.weight": torch.zeros(2)}}, "unexpected keys head.weight"),
    (lambda d: {k: d[k] for k in ("model_name", "model_args", "state_dict")}, "not a training checkpoint"),
], ids=["other-method", "other-shapes", "missing-key", "unexpected-key", "weights-only"])
def test_resume_refuses_a_checkpoint_of_another_model(run_copy, capsys, change, phrase):
    data = torch.load(run_copy / "last.pt", weights_only=True)
    checkpoint.save(run_copy / "last.pt", change(data))  # a valid checksum: the fit check must catch it
    rc, err = _resume(capsys, run_copy)
    assert_one_error(rc, err, phrase)
    assert str(run_copy / "last.pt") in err


def test_checkpoint_without_checksum_loads_with_a_warning(run_copy, caplog):
    """Checkpoints written before checksums existed still resume; the warning says they are unverified."""
    data = torch.load(run_copy / "last.pt", weights_only=True)
    del data["checksum"], data["epoch_sums"], data["epoch_steps"]
    torch.save(data, run_copy / "last.pt")
    with caplog.at_level(logging.WARNING, logger="avsep"):
        hist = train(None, run_copy, device=torch.device("cpu"), resume=True, epochs=2)
    assert len(hist) == 2
    assert any("has no checksum" in r.getMessage() for r in caplog.records)


def _corrupt(kind: str, good: Path, bad: Path) -> None:
    if kind == "flipped-byte":
        _flip_byte_of(good, torch.load(good, weights_only=True)["state_dict"]["out.weight"], bad)
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "not-a-checkpoint":
        torch.save([1, 2, 3], bad)
    else:  # weights that do not fit the model config recorded beside them
        data = torch.load(good, weights_only=True)
        checkpoint.save(bad, {**data, "model_args": {**MODEL, "channels": 16}})


PHRASES = {"flipped-byte": "fails its checksum", "empty": "is empty", "not-a-checkpoint": "is not an avsep checkpoint",
           "inconsistent": "does not fit a 'tiny' model"}


@pytest.mark.parametrize("kind", list(PHRASES))
def test_eval_weights_refuses_a_bad_checkpoint(trained, tiny_corpus, tmp_path, capsys, kind):
    bad = tmp_path / "bad.pt"
    _corrupt(kind, trained / "last.pt", bad)
    out = tmp_path / "eval.json"
    rc, _, err = run(capsys, "eval", "--method", "tiny", "--weights", bad, "--data", tiny_corpus, "--num", 1,
                     "--json", out, "--device", "cpu")
    assert_one_error(rc, err, PHRASES[kind])
    assert str(bad) in err and not out.exists()


def test_separate_weights_refuses_a_corrupted_checkpoint(trained, tiny_corpus, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    _corrupt("flipped-byte", trained / "last.pt", bad)
    video = min((tiny_corpus / "duet").rglob("*.mp4"))
    rc, _, err = run(capsys, "separate", video, "--method", "tiny", "--weights", bad, "-o", tmp_path / "stems",
                     "--device", "cpu")
    assert_one_error(rc, err, "fails its checksum")
    assert not (tmp_path / "stems").exists()
