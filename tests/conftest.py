"""Test set-up shared by every test file: tests import helper modules from this folder, and nothing
may touch the user's config folders (ultralytics writes its settings on first import)."""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="avsep-yolo-cfg-"))
os.environ.setdefault("YOLO_OFFLINE", "1")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """The tiny corpus (20 clips), generated once per test session with TimGM6mb and our procedural
    drawings only, so it does not depend on which asset packages the machine has."""
    from avsep_cli.corpus import classes as C
    from avsep_cli.corpus import generate as G

    root = tmp_path_factory.mktemp("tiny-corpus") / "corpus"
    G.generate(root, workers=2, seed=0, cache_dir=tmp_path_factory.mktemp("synth-cache"), size="tiny",
               soundfonts=[C.timgm6mb_path()], licences=["drawings-only"], assets=None)
    return root


@pytest.fixture
def no_shipped_weights(tmp_path, monkeypatch):
    """For tests that pass their own weights: shipped defaults must not stand in for missing ones."""
    monkeypatch.setenv("AVSEP_WEIGHTS", str(tmp_path / "no-weights"))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A random-weight tiny separator checkpoint (seed 0): drives every CLI path cheaply."""
    import torch

    from avsep_cli import checkpoint
    from avsep_cli.models.tiny import TinyNet, config_dict

    torch.manual_seed(0)
    m = TinyNet()
    return checkpoint.save(tmp_path_factory.mktemp("w") / "tiny.pt", checkpoint.model_state("tiny", config_dict(m), m))
