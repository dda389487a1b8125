"""Checkpoints as plain data, and the small model registry that rebuilds a model from one.

A model checkpoint is `{"model_name", "model_args", "state_dict", "versions"}` (plus, for training runs,
optimiser/scheduler/RNG state and the run's position) holding only tensors, numbers, strings, lists and
dicts, so it loads with `torch.load(..., weights_only=True)`. The class is found by name in `MODELS`;
no class object is ever pickled. `sha256` is what the weights registry checks before loading.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import torch

from avsep_cli import __version__
from avsep_cli.errors import AvsepError
from avsep_cli.fsio import atomic_path

# name -> callable(**model_args) -> nn.Module; model modules register themselves on import
MODELS: dict[str, Callable[..., torch.nn.Module]] = {}


def register_model(name: str):
    def deco(factory):
        MODELS[name] = factory
        return factory

    return deco


def versions() -> dict[str, str]:
    return {"avsep": __version__, "torch": torch.__version__.split("+")[0]}


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, what: str) -> str:
    """The file's sha256, which must be `expected`; one AvsepError line naming `what` otherwise."""
    got = sha256(path)
    if got != expected.lower():
        raise AvsepError(f"{what} {path} fails its sha256 check (expected {expected[:12]}…, got {got[:12]}…): "
                         "the file is corrupt or was modified")
    return got


def save(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write a checkpoint atomically (a crash mid-write never leaves a truncated file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return path


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu", expected_sha256: str | None = None) -> dict:
    """Load a checkpoint with weights_only=True, checking its sha256 first when one is given."""
    path = Path(path)
    if not path.is_file():
        raise AvsepError(f"checkpoint not found: {path}")
    if expected_sha256 is not None:
        verify_sha256(path, expected_sha256, "checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise AvsepError(f"cannot load checkpoint {path}: {str(e).splitlines()[0]}") from None


def model_state(name: str, args: dict, model: torch.nn.Module) -> dict:
    """The plain-data description of a model."""
    return {"model_name": name, "model_args": args, "state_dict": model.state_dict(), "versions": versions()}


def build_model(data: dict) -> torch.nn.Module:
    """Rebuild a model from `model_state(...)` data (or a training checkpoint holding it)."""
    _load_builtin_models()
    name = data.get("model_name")
    if name not in MODELS:
        raise AvsepError(f"checkpoint holds unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    model = MODELS[name](**data["model_args"])
    model.load_state_dict(data["state_dict"])
    return model


def _load_builtin_models() -> None:
    from avsep_cli.models import avpc, ialcms, sop, tiny, trunk_classifier  # noqa: F401  (register on import)
