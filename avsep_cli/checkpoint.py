"""Checkpoints as plain data, and the small model registry that rebuilds a model from one.

A model checkpoint is `{"model_name", "model_args", "state_dict", "versions"}` (plus, for training runs,
optimiser/scheduler/RNG state and the run's position) holding only tensors, numbers, strings, lists and
dicts, so it loads with `torch.load(..., weights_only=True)`. The class is found by name in `MODELS`;
no class object is ever pickled. `sha256` is what the weights registry checks before loading.

Every checkpoint `save` writes carries `"checksum": {"scheme", "sha256"}`: the sha256 of a canonical
serialisation of everything else in it (every tensor's dtype, shape and bytes; every plain value; dict
keys sorted), so it is independent of the zip container and of the device the tensors were on. `load`
checks it, so one flipped byte in an optimiser moment is refused instead of trained on. Checkpoints
written before checksums existed load with a warning (their content cannot be verified). `load` also
refuses, in one line naming the file, anything that is empty, truncated, not a torch file, or not an
avsep checkpoint dict; `load_weights` refuses a state dict that does not fit the model it is meant for.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch

from avsep_cli import __version__
from avsep_cli.errors import AvsepError
from avsep_cli.fsio import atomic_path

log = logging.getLogger("avsep")

CHECKSUM_KEY = "checksum"
CHECKSUM_SCHEME = "avsep-canonical-sha256/1"  # bump with any change to _feed: another hashing is not corruption
MODEL_KEYS = {"model_name": str, "model_args": dict, "state_dict": dict}

# name -> callable(**model_args) -> nn.Module; model modules register themselves on import
MODELS: dict[str, Callable[..., torch.nn.Module]] = {}
# name -> config values that rebuild the model older weights were trained with: fields added to a model's
# config after weights were shipped get them when a file's model_args do not name them (issue 16: the
# faithful networks became the default; the weights shipped before were made by the legacy ones)
LEGACY_ARGS: dict[str, dict] = {}


def register_model(name: str, legacy_args: dict | None = None):
    def deco(factory):
        MODELS[name] = factory
        if legacy_args:
            LEGACY_ARGS[name] = dict(legacy_args)
        return factory

    return deco


def complete_args(name: str, args: dict) -> dict:
    """`args` with the legacy values of the fields it lacks (see LEGACY_ARGS): model_args written before a
    field existed rebuild the model they were trained with; args that name the field keep their value."""
    return {**LEGACY_ARGS.get(name, {}), **args}


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


def content_sha256(data: dict) -> str:
    """sha256 over a canonical serialisation of `data` without its checksum entry: the same digest before
    `torch.save` and after `torch.load`, whatever device the tensors were on."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in data.items() if k != CHECKSUM_KEY})
    return h.hexdigest()


def _feed(h, obj: Any) -> None:
    """Type-tagged, length-prefixed bytes of `obj` into `h`. Tuples hash as lists (pickling keeps them,
    JSON-like configs may not); dict entries are taken in key order (str(key) within a key type)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{list(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for k, v in sorted(obj.items(), key=lambda kv: (type(kv[0]).__name__, str(kv[0]))):
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}:".encode())
        for v in obj:
            _feed(h, v)
    elif obj is None:
        h.update(b"N;")
    elif isinstance(obj, bool):
        h.update(b"B1;" if obj else b"B0;")
    elif isinstance(obj, int):
        h.update(f"I{obj};".encode())
    elif isinstance(obj, float):
        h.update(f"F{obj.hex()};".encode())
    elif isinstance(obj, bytes):
        h.update(f"Y{len(obj)}:".encode() + obj)
    elif isinstance(obj, (str, torch.dtype, torch.device)):
        b = str(obj).encode()
        tag = "S" if isinstance(obj, str) else "P" if isinstance(obj, torch.dtype) else "V"
        h.update(f"{tag}{len(b)}:".encode() + b)
    else:
        raise TypeError(f"a checkpoint holds plain data only, not {type(obj).__name__}")


def save(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write a checkpoint atomically (a crash mid-write never leaves a truncated file), with the checksum
    of its content inside."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**data, CHECKSUM_KEY: {"scheme": CHECKSUM_SCHEME, "sha256": content_sha256(data)}}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return path


def error_detail(e: BaseException) -> str:
    """The first sentence of an exception's message (torch's are long), or its type when it has none."""
    lines = str(e).strip().splitlines()
    first = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return first[:160] or type(e).__name__


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu", expected_sha256: str | None = None,
         warn: bool = True) -> dict:
    """Load a checkpoint with weights_only=True, checking its file sha256 first when one is given, then
    that it is an avsep checkpoint dict whose content checksum holds. One AvsepError line otherwise.
    A checkpoint without a checksum (older avsep) loads with a warning; with `warn=False` the caller
    gives it (`warn_unverified`) once its own checks pass, so a refused file gets one line only."""
    path = Path(path)
    if not path.is_file():
        raise AvsepError(f"checkpoint not found: {path}")
    if expected_sha256 is not None:
        verify_sha256(path, expected_sha256, "checkpoint")
    if path.stat().st_size == 0:
        raise AvsepError(f"checkpoint {path} is empty (0 bytes): not a checkpoint")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise AvsepError(f"cannot load checkpoint {path}: {_why_unreadable(path, e)}") from None
    if not isinstance(data, dict):
        raise AvsepError(f"{path} is not an avsep checkpoint: it holds a {type(data).__name__}, not a checkpoint dict")
    if CHECKSUM_KEY in data:
        verify_content(data, path)
    missing = [k for k, t in MODEL_KEYS.items() if not isinstance(data.get(k), t)]
    if missing:
        raise AvsepError(f"{path} is not an avsep checkpoint: no {', '.join(missing)} in it")
    if warn:
        warn_unverified(data, path)
    return data


def _why_unreadable(path: Path, e: Exception) -> str:
    """Why torch.load failed, from the file's zip structure (torch.save writes a zip archive whose last
    record, the end of its central directory, sits in the final 64 KiB) and the error's first sentence."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(0, size - (1 << 16) - 22))
        tail = f.read()
    if head != b"PK\x03\x04":
        return "not a torch file"
    if b"PK\x05\x06" not in tail:
        return "truncated (the zip archive has no end record)"
    return f"damaged, or not plain data that loads with weights_only=True ({error_detail(e)})"


def warn_unverified(data: dict, path: str | os.PathLike) -> None:
    """Older checkpoints have no checksum: they are accepted (runs and weights made before checksums keep
    working), with a warning that their content could not be verified."""
    if CHECKSUM_KEY not in data:
        log.warning("checkpoint %s has no checksum (written before avsep checkpoints carried one): "
                    "loaded without verifying its content", path)


def verify_content(data: dict, path: str | os.PathLike) -> None:
    """Check a loaded checkpoint's content checksum."""
    mark = data.get(CHECKSUM_KEY)
    if not isinstance(mark, dict) or mark.get("scheme") != CHECKSUM_SCHEME or not isinstance(mark.get("sha256"), str):
        raise AvsepError(f"checkpoint {path} fails its checksum: unknown or damaged checksum entry "
                         "(the file is corrupt or was written by a newer avsep)")
    try:
        got = content_sha256(data)
    except TypeError as e:
        raise AvsepError(f"checkpoint {path} fails its checksum: {e}") from None
    if got != mark["sha256"]:
        raise AvsepError(f"checkpoint {path} fails its checksum (content sha256 {got[:12]}…, recorded "
                         f"{mark['sha256'][:12]}…): the file is corrupt or was modified")



def model_state(name: str, args: dict, model: torch.nn.Module) -> dict:
    """The plain-data description of a model. A model with a config dataclass records all of it, so a
    later field's legacy default (LEGACY_ARGS) never applies to weights written now."""
    from dataclasses import asdict, is_dataclass

    cfg = getattr(model, "config", None)
    full = {**asdict(cfg), **args} if is_dataclass(cfg) else args
    return {"model_name": name, "model_args": full, "state_dict": model.state_dict(), "versions": versions()}


def check_model_name(data: dict, path: str | os.PathLike, expected: str) -> None:
    if data.get("model_name") != expected:
        raise AvsepError(f"checkpoint {path} holds a {data.get('model_name')!r} model, not {expected!r}")


def load_weights(model: torch.nn.Module, state: dict, path: str | os.PathLike, what: str = "the model") -> None:
    """`model.load_state_dict(state)`, or one AvsepError line naming the file and what does not fit:
    missing or unexpected keys, or the first tensor whose shape differs."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and _shape(state[k]) != _shape(own[k])]
    problems = [f"{label} {_few(keys)}" for label, keys in (("missing keys", missing), ("unexpected keys", unexpected))
                if keys]
    if shapes:
        k = shapes[0]
        more = f" (and {len(shapes) - 1} more tensors)" if len(shapes) > 1 else ""
        problems.append(f"{k} is {_shape(state[k])} in the file, {_shape(own[k])} in the model{more}")
    if problems:
        raise AvsepError(f"checkpoint {path} does not fit {what}: {'; '.join(problems)}")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as e:
        raise AvsepError(f"checkpoint {path} does not fit {what}: {error_detail(e)}") from None


def _shape(v: Any) -> tuple | str:
    return tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__


def _few(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" (and {len(items) - n} more)" if len(items) > n else "")


def build_model(data: dict, source: str | os.PathLike | None = None) -> torch.nn.Module:
    """Rebuild a model from `model_state(...)` data (or a training checkpoint holding it); `source` names
    the file in errors."""
    _load_builtin_models()
    name = data.get("model_name")
    where = f"checkpoint {source} holds" if source is not None else "checkpoint holds"
    if name not in MODELS:
        raise AvsepError(f"{where} unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    try:
        model = MODELS[name](**complete_args(name, data["model_args"]))
    except (TypeError, ValueError, KeyError) as e:
        raise AvsepError(f"{where} a {name!r} model whose config cannot be built ({error_detail(e)})") from None
    load_weights(model, data["state_dict"], source if source is not None else "(in memory)", f"a {name!r} model")
    return model


def _load_builtin_models() -> None:
    from avsep_cli.models import audio_tagger, avpc, ialcms, sop, tiny, trunk_classifier  # noqa: F401  (register on import)
