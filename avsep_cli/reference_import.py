"""Loading the authors' checkpoints: `avsep weights import --from avpc|sop|ialcms FILE... -o NAME`.

The references save plain state dicts (AVPC: `frame_best.pth` and `sound_best.pth`; Sound-of-Pixels:
`frame_*.pth`, `sound_*.pth`, `synthesizer_*.pth`) or, for IAL-CMS, a PyTorch Lightning `.ckpt` whose
`state_dict` holds the whole module. Every file is read with `torch.load(weights_only=True)` (no code
runs), each network recognised by its keys (or the `net_frame.` / `net_sound.` / `net_synthesizer.`
prefixes of the reference's NetWrapper), the configuration read off the tensor shapes, the names mapped
(`models/reference_names.py`), every shape checked, and the model written as our safetensors with a
manifest entry (`registry.write_model`). Anything that does not fit (a key with no place, a tensor of ours
the files do not provide, a shape that differs) is one AvsepError line: exit 2.

IAL-CMS: the critic's tensors are not part of the separator and are left out; the visual side
(`visualNet.basenet.*`: the frozen ResNet-18 backbone and the DeepLabv3+ head, then the common-space MLP)
loads into our `visual_head="deeplab"` encoder. A file without `visualNet.basenet.*` (made by avsep's
earlier import, not by the authors) gives the `mlp` head, whose trunk and projection keep their values.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from avsep_cli import checkpoint, registry
from avsep_cli.errors import AvsepError
from avsep_cli.models import reference_names as R

KINDS = ("avpc", "sop", "ialcms")


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A reference checkpoint file -> its flat state dict (a Lightning .ckpt's `state_dict`; `module.`
    prefixes of DataParallel removed); plain data only."""
    path = Path(path)
    if not path.is_file():
        raise AvsepError(f"reference checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise AvsepError(f"cannot read reference checkpoint {path} with weights_only=True: "
                         f"{checkpoint.error_detail(e)}") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise AvsepError(f"{path} is not a state dict (a dict of tensors, or a Lightning checkpoint holding one)")
    return {k.removeprefix("module."): v for k, v in data.items()}


def _role(keys: list[str], kind: str) -> str:
    if kind == "avpc":
        if any(k.startswith(("DownConvs.", "UpConvs.", "a0.", "b0.")) for k in keys):
            return "net_sound"
        if any(k.startswith(("fc.", "features.")) for k in keys):
            return "net_frame"
    elif kind == "sop":
        if any(k.startswith(("unet_block.", "bn0.")) for k in keys):
            return "net_sound"
        if any(k.startswith(("fc.", "features.")) for k in keys):
            return "net_frame"
        if set(keys) <= {"scale", "bias"}:
            return "net_synthesizer"
    return ""


def gather(kind: str, files: list[Path]) -> dict[str, torch.Tensor]:
    """All files' tensors under one naming: AVPC / Sound-of-Pixels as the NetWrapper names them
    (`net_sound.`, `net_frame.`, `net_synthesizer.`), IAL-CMS as the AVSeparator (`separator_w_v.`,
    `visualNet.`), the critic left out."""
    out: dict[str, torch.Tensor] = {}
    for f in files:
        state = read_state(f)
        keys = list(state)
        if kind == "ialcms":
            for k, v in state.items():
                m = re.search(r"(?:^|\.)((?:separator_w_v|visualNet)\..*)$", k)
                if m:
                    out[m.group(1)] = v
                elif "critic" not in k:
                    out[k] = v  # reported as unknown below
            continue
        if any(k.startswith(("net_sound.", "net_frame.", "net_synthesizer.")) for k in keys):
            out.update(state)
            continue
        role = _role(keys, kind)
        if not role:
            raise AvsepError(f"{f}: not a {kind} network's state dict (keys like {', '.join(keys[:3])})")
        out.update({f"{role}.{k}": v for k, v in state.items()})
    return out


def _count(state: dict, pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def config_of(kind: str, state: dict[str, torch.Tensor], frame_size: int | None = None) -> dict:
    """Our model config read off the reference tensors' shapes."""
    try:
        if kind == "avpc":
            first = state["net_sound.DownConvs.7.conv2d.weight"]  # (ngf, 1, 3, 3)
            return {"ngf": int(first.shape[0]), "visual_channels": int(state["net_sound.DownConvs.0.weight"].shape[0]),
                    "cycles": _count(state, r"net_sound\.BNUp_step\.(\d+)\.weight") // 7, "frame_size": frame_size or 224}
        if kind == "sop":
            return {"ngf": int(state["net_sound.unet_block.model.0.weight"].shape[0]),
                    "k": int(state["net_synthesizer.scale"].shape[0]), "frame_size": frame_size or 224}
        s = "separator_w_v.unet_block."
        ngf = int(state[s + "down.0.weight"].shape[0])
        blocks = _count(state, re.escape(s + "submodule.down.") + r"(\d+)\.conv1\.weight")
        adain = any(k.startswith(s + "submodule.style_mlp_w") for k in state)
        head = "deeplab" if any(k.startswith("visualNet.basenet.") for k in state) else "mlp"
        return {"ngf": ngf, "dim": 8 * ngf, "blocks": blocks, "frame_size": frame_size or 224, "adain": adain,
                "visual_head": head}
    except KeyError as e:
        raise AvsepError(f"the files hold no {e.args[0]}: not a complete {kind} model") from None


def name_map(kind: str, cfg: dict) -> dict[str, str]:
    if kind == "avpc":
        return (R.prefixed(R.avpc_sound(cfg["cycles"]), "net_sound.", "sound_net.")
                | R.prefixed(R.avpc_frame(), "net_frame.", "frame_net."))
    if kind == "sop":
        return (R.prefixed(R.sop_unet(), "net_sound.", "sound_net.") | R.prefixed(R.sop_frame(), "net_frame.", "frame_net.")
                | R.prefixed(R.sop_synthesizer(), "net_synthesizer.", ""))
    return R.ialcms_separator(cfg["blocks"], cfg.get("adain", True), cfg.get("visual_head", "deeplab"))


def build(kind: str, files: list[Path], frame_size: int | None = None) -> tuple[torch.nn.Module, str, dict]:
    """The reference checkpoint files of one method -> (our model holding their weights, model name, args)."""
    if kind not in KINDS:
        raise AvsepError(f"--from {kind}: expected one of {', '.join(KINDS)}")
    state = gather(kind, [Path(f) for f in files])
    cfg = config_of(kind, state, frame_size)
    checkpoint._load_builtin_models()
    try:
        model = checkpoint.MODELS[kind](**cfg)
    except (TypeError, ValueError) as e:
        raise AvsepError(f"the files' shapes give a {kind} configuration avsep cannot build ({e})") from None
    # the mlp head's trunk and projection have no reference counterpart (see module doc)
    keep = ("visual.trunk.", "visual.proj.") if kind == "ialcms" and cfg["visual_head"] == "mlp" else ()
    own = model.state_dict()
    mapped = R.translate(state, name_map(kind, cfg), own, f"the {kind} reference checkpoint", keep=keep)
    model.load_state_dict(mapped)
    return model, kind, checkpoint.model_state(kind, cfg, model)["model_args"]


def import_files(kind: str, files: list[Path], name: str, *, folder: Path | None = None, fp16: bool = True,
                 frame_size: int | None = None) -> dict:
    """Build the model from the reference's files and write it as shipped-style weights `name`."""
    model, model_name, args = build(kind, files, frame_size)
    extra = {"source": {"kind": f"{kind} reference checkpoint", "files": [
        {"name": Path(f).name, "sha256": checkpoint.sha256(f)} for f in files]}}
    method = {"avpc": "avpc", "sop": "sop", "ialcms": "ialcms"}[kind]
    return registry.write_model(model, model_name, args, name, method, folder=folder, fp16=fp16, extra=extra,
                                source=", ".join(str(f) for f in files))
