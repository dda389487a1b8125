"""The weights registry: shipped weights by name, checked by sha256, loaded without pickle.

`weights/manifest.json` lists every shipped file: name, method, the model's name and config, parameter
count, dtype, sha256, the corpus recipe and seed it was trained on, training time and its test-split
metrics. Separator weights are safetensors files (state dict only, fp16 where that loses nothing
measurable; the model's name and config are in the manifest and repeated in the file's metadata), so
loading never unpickles anything. The detector stays an ultralytics `.pt`, whose sha256 is checked
before ultralytics opens it. Class prototypes (`avsep_cli.prototypes`, method "prototypes") are plain
safetensors files of named tensors, written by `export_tensors` and read, sha256-checked, by
`resolve_tensors`.

`resolve(spec)` takes a shipped name or a path: a `.safetensors` file (config from its metadata) or a
training checkpoint from `avsep train` (loaded with `weights_only=True`, its content checksum verified;
see `avsep_cli.checkpoint`); weights that do not fit the model they name are refused in one line. The
folder is `weights/` at the top of the source tree, or `$AVSEP_WEIGHTS`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from avsep_cli import checkpoint
from avsep_cli.errors import AvsepError
from avsep_cli.fsio import atomic_path

MANIFEST = "manifest.json"


def weights_dir() -> Path:
    return Path(os.environ.get("AVSEP_WEIGHTS") or Path(__file__).resolve().parents[1] / "weights")


def manifest(folder: Path | None = None) -> dict:
    """The manifest ({"weights": [...]}); an empty one when the folder has none."""
    path = (folder or weights_dir()) / MANIFEST
    if not path.is_file():
        return {"weights": []}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AvsepError(f"cannot read the weights manifest {path}: {e}") from None


def entries(folder: Path | None = None) -> list[dict]:
    return list(manifest(folder).get("weights", []))


def entry(name: str, folder: Path | None = None) -> dict:
    for e in entries(folder):
        if e["name"] == name:
            return e
    known = ", ".join(e["name"] for e in entries(folder)) or "none shipped"
    raise AvsepError(f"no shipped weights named {name!r} (known: {known})")


def default_for(method: str, folder: Path | None = None) -> dict | None:
    """The shipped weights `avsep separate --method METHOD` uses when --weights is not given."""
    for e in entries(folder):
        if e.get("method") == method and e.get("default"):
            return e
    return None


def verify_file(e: dict, folder: Path | None = None) -> Path:
    """The path of a shipped file whose sha256 matches the manifest; AvsepError otherwise."""
    path = (folder or weights_dir()) / e["file"]
    if not path.is_file():
        raise AvsepError(f"shipped weights {e['name']!r} are missing: {path}")
    checkpoint.verify_sha256(path, e["sha256"], f"shipped weights {e['name']!r}:")
    return path


@dataclass
class Resolved:
    """What a weights spec names: the model data (for separators) and where it came from."""

    name: str
    path: Path
    sha256: str
    data: dict  # {"model_name", "model_args", "state_dict"}
    shipped: bool


TRUNK_PREFIXES = ("frame_net.trunk.", "visual.trunk.")  # where AVPC/SoP and IAL-CMS keep the shared trunk


def _read_safetensors(path: Path, folder: Path | None = None) -> dict:
    """Model data from a safetensors file; a file saved without its frozen trunk (metadata `trunk`,
    `trunk_prefix`) gets it back from the shipped trunk of that name (sha256-checked)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file for the user
        raise AvsepError(f"cannot load weights {path}: {str(e).splitlines()[0]}") from None
    if "model_name" not in meta or "model_args" not in meta:
        raise AvsepError(f"{path} has no avsep model metadata (model_name, model_args)")
    if meta.get("trunk"):
        trunk = _read_safetensors(verify_file(entry(meta["trunk"], folder), folder), folder)["state_dict"]
        state.update({meta["trunk_prefix"] + k.removeprefix("trunk."): v for k, v in trunk.items() if k.startswith("trunk.")})
    return {"model_name": meta["model_name"], "model_args": json.loads(meta["model_args"]),
            "state_dict": {k: v.float() if v.is_floating_point() else v for k, v in state.items()}}


def resolve(spec: str | Path, expect_model: str | None = None, folder: Path | None = None) -> Resolved:
    """A shipped name or a file path -> the model data, sha256-checked for shipped names."""
    path = Path(spec)
    shipped = not path.exists() and str(spec) in {e["name"] for e in entries(folder)}
    if shipped:
        e = entry(str(spec), folder)
        path = verify_file(e, folder)
        data, sha = _read_safetensors(path, folder), e["sha256"]
    elif not path.exists():
        raise AvsepError(f"weights not found: {spec} (not a file, and no shipped weights have that name)")
    elif path.suffix == ".safetensors":
        data, sha = _read_safetensors(path, folder), checkpoint.sha256(path)
    else:
        data, sha = checkpoint.load(path, warn=False), checkpoint.sha256(path)
    if expect_model is not None and data.get("model_name") != expect_model:
        raise AvsepError(f"{spec} holds a {data.get('model_name')!r} model, not {expect_model!r}")
    return Resolved(str(spec) if shipped else path.name, path, sha, data, shipped)


def export(ckpt: str | Path, name: str, method: str, *, folder: Path | None = None, fp16: bool = True,
           default: bool = False, extra: dict | None = None, trunk: str | None = None) -> dict:
    """Write `name.safetensors` from a training checkpoint and add (or replace) its manifest entry.
    With `trunk` (the name of shipped `visual-trunk` weights), the frozen trunk is left out of the file
    and restored from that one at load time; it must hold exactly those weights."""
    data = checkpoint.load(ckpt, warn=False)
    model = checkpoint.build_model(data, ckpt)
    checkpoint.warn_unverified(data, ckpt)
    return write_model(model, data["model_name"], data["model_args"], name, method, folder=folder, fp16=fp16,
                       default=default, extra=extra, trunk=trunk, source=ckpt)


def write_model(model: torch.nn.Module, model_name: str, model_args: dict, name: str, method: str, *,
                folder: Path | None = None, fp16: bool = True, default: bool = False, extra: dict | None = None,
                trunk: str | None = None, source: str | Path = "the model") -> dict:
    """Write a built model as `name.safetensors` (its config in the metadata) and add its manifest entry."""
    from safetensors.torch import save_file

    folder = folder or weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    ckpt, data = source, {"model_name": model_name, "model_args": model_args}
    cast = lambda v: (v.half() if fp16 and v.is_floating_point() else v).contiguous()  # noqa: E731
    state = {k: cast(v) for k, v in model.state_dict().items()}
    meta = {"model_name": data["model_name"], "model_args": json.dumps(data["model_args"], sort_keys=True)}
    if trunk:
        shared = _read_safetensors(verify_file(entry(trunk, folder), folder), folder)["state_dict"]
        prefix = next((p for p in TRUNK_PREFIXES if any(k.startswith(p) for k in state)), None)
        if prefix is None:
            raise AvsepError(f"{ckpt}: a {data['model_name']!r} model has no visual trunk to share")
        for k in [k for k in state if k.startswith(prefix)]:
            ref = shared.get("trunk." + k[len(prefix):])
            if ref is None or not torch.equal(cast(ref), state[k]):
                raise AvsepError(f"{ckpt}: its trunk differs from shipped {trunk!r} at {k}; export it without --trunk")
            del state[k]
        meta.update(trunk=trunk, trunk_prefix=prefix)
    target = folder / f"{name}.safetensors"
    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata=meta)
        tmp.chmod(0o644)  # safetensors re-creates the file private; shipped weights are world-readable
    e = {"name": name, "method": method, "file": target.name, "model_name": data["model_name"],
         "config": data["model_args"], "parameters": sum(p.numel() for p in model.parameters()),
         "dtype": "float16" if fp16 else "float32", "sha256": checkpoint.sha256(target), "default": default,
         **({"trunk": trunk} if trunk else {}), **(extra or {})}
    write_entry(e, folder)
    return e


def add_file(path: str | Path, name: str, method: str, *, folder: Path | None = None, default: bool = False,
             extra: dict | None = None) -> dict:
    """Copy a file that stays in its own format (the ultralytics detector) and record its sha256."""
    import shutil

    folder = folder or weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}{Path(path).suffix}"
    with atomic_path(target) as tmp:
        shutil.copyfile(path, tmp)
    e = {"name": name, "method": method, "file": target.name, "sha256": checkpoint.sha256(target),
         "default": default, **(extra or {})}
    write_entry(e, folder)
    return e


def shipped_file(spec: str, method: str) -> tuple[Path, str | None]:
    """A shipped name or a path -> (path, the manifest's sha256 or None), for files that are not
    separators (the detector): whoever loads the file checks the hash, once, just before loading."""
    if not Path(spec).exists() and any(e["name"] == spec for e in entries()):
        e = entry(spec)
        if e.get("method") != method:
            raise AvsepError(f"shipped weights {spec!r} are for {e.get('method')}, not {method}")
        path = weights_dir() / e["file"]
        if not path.is_file():
            raise AvsepError(f"shipped weights {spec!r} are missing: {path}")
        return path, e["sha256"]
    return Path(spec), None


@dataclass
class ResolvedTensors:
    """A file of named tensors that is not a model (class prototypes): its tensors and string metadata."""

    name: str
    path: Path
    sha256: str
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    shipped: bool


def export_tensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str], name: str, method: str, *,
                   folder: Path | None = None, extra: dict | None = None) -> dict:
    """Write `name.safetensors` (tensors as given, plus string metadata) and add (or replace) its manifest
    entry under `method`; `extra` goes into the entry (what the file holds, how it was made)."""
    from safetensors.torch import save_file

    folder = folder or weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.safetensors"
    with atomic_path(target) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        tmp.chmod(0o644)  # safetensors re-creates the file private; shipped weights are world-readable
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in tensors.values() if v.is_floating_point()})
    e = {"name": name, "method": method, "file": target.name, "sha256": checkpoint.sha256(target),
         "dtype": ",".join(dtypes), "default": False, **(extra or {})}
    write_entry(e, folder)
    return e


def resolve_tensors(spec: str | Path, method: str, folder: Path | None = None) -> ResolvedTensors:
    """A shipped name of `method` (sha256-checked) or a .safetensors path -> its tensors and metadata."""
    from safetensors import safe_open

    path = Path(spec)
    shipped = not path.exists() and str(spec) in {e["name"] for e in entries(folder)}
    if shipped:
        e = entry(str(spec), folder)
        if e.get("method") != method:
            raise AvsepError(f"shipped weights {spec!r} are for {e.get('method')}, not {method}")
        path, sha = verify_file(e, folder), e["sha256"]
    elif not path.is_file():
        raise AvsepError(f"{method} not found: {spec} (not a file, and no shipped {method} have that name)")
    else:
        sha = checkpoint.sha256(path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file for the user
        raise AvsepError(f"cannot load {method} {path}: {str(e).splitlines()[0]}") from None
    return ResolvedTensors(str(spec) if shipped else path.name, path, sha, tensors, meta, shipped)


def write_entry(e: dict, folder: Path | None = None) -> None:
    """Add or replace one manifest entry (by name); at most one default per method."""
    folder = folder or weights_dir()
    m = manifest(folder)
    rows = [r for r in m.get("weights", []) if r["name"] != e["name"]]
    if e.get("default"):
        for r in rows:
            if r.get("method") == e.get("method"):
                r["default"] = False
    m["weights"] = sorted(rows + [e], key=lambda r: r["name"])
    with atomic_path(folder / MANIFEST) as tmp:
        tmp.write_text(json.dumps(m, indent=1, sort_keys=True) + "\n")


def build(resolved: Resolved, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The model of resolved weights; weights that do not fit the model they name are one AvsepError line.
    A training checkpoint without a checksum (older avsep) is built with a warning."""
    model = checkpoint.build_model(resolved.data, resolved.path)
    warn_unverified(resolved)
    return model.to(device)


def warn_unverified(resolved: Resolved) -> None:
    """Warn about a training checkpoint without a checksum (older avsep); shipped names are sha256-checked
    against the manifest and .safetensors files have no content checksum to check."""
    if not resolved.shipped and resolved.path.suffix != ".safetensors":
        checkpoint.warn_unverified(resolved.data, resolved.path)
