"""The authors' parameter names mapped onto ours: how their state dicts load into our modules.

One map per reference network, reference name -> our name (relative to the module it belongs to), built
for a given configuration so that every entry is exact (`avsep weights import` and the golden tests in
tests/test_golden.py both use these, so the import is tested against the reference's own tensors).
`translate` applies a map and says, in one line, what does not fit: reference tensors left unmapped,
our tensors left unfilled, or a shape that differs. Counters (`num_batches_tracked`) are optional on
both sides: a reference file may omit them, ours keep their values then.

References: AVPC `avpc/models/{audio_net,vision_net}.py` and `avpc_rcop/models/simsiam_net.py` (MIT);
Sound-of-Pixels `models/{audio_net,vision_net,synthesizer_net}.py` (MIT); IAL-CMS (no licence: names
only, read from its checkpoints' keys).
"""

from __future__ import annotations

import torch

from avsep_cli.errors import AvsepError

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
OPTIONAL = ("num_batches_tracked",)


def _bn(ref: str, ours: str) -> dict[str, str]:
    return {f"{ref}.{k}": f"{ours}.{k}" for k in BN}


# --- the shared ResNet-18 trunk -------------------------------------------------------------------------


def resnet_trunk(ours: str = "trunk", ref: str = "features") -> dict[str, str]:
    """torchvision resnet18 `children()[:-2]` as the references wrap it (`features.0` conv1, `.1` bn1,
    `.4`-`.7` layer1-4) -> our `ResNet18Trunk` (`stem.0`, `stem.1`, `layer1`-`layer4`)."""
    from avsep_cli.models.resnet import ResNet18Trunk

    with torch.device("meta"):
        names = ResNet18Trunk().state_dict().keys()
    out = {}
    for n in names:
        head, rest = n.split(".", 1)
        if head == "stem":
            i, rest2 = rest.split(".", 1)
            out[f"{ref}.{i}.{rest2}"] = f"{ours}.{n}"
        else:
            out[f"{ref}.{3 + int(head[-1])}.{rest}"] = f"{ours}.{n}"
    return out


# --- AVPC -------------------------------------------------------------------------------------------------


def avpc_sound(cycles: int = 4) -> dict[str, str]:
    """PCNetLR (index 0 = the visual end) -> our PCNet (layer l = 1..7 from the spectrogram side): the
    reference's representation j is our layer 7 - j."""
    m = {}
    m.update(_bn("BNDown.7", "bn_in"))
    for j in range(7):
        m.update(_bn(f"BNDown.{j}", f"bn_down.0.{6 - j}"))
        m.update(_bn(f"BNUp.{j}", f"bn_up.0.{6 - j}"))
        m[f"a0.{j}"] = f"a.{6 - j}"
        m[f"b0.{j}"] = f"b.{6 - j}"
    for t in range(cycles):
        for j in range(7):
            m.update(_bn(f"BNUp_step.{7 * t + j}", f"bn_up.{t + 1}.{6 - j}"))
        for j in range(6):  # layers 7..2: the spectrogram-side layer has no norm in the cycles
            m.update(_bn(f"BNDown_step.{6 * t + j}", f"bn_down.{t + 1}.{6 - j}"))
    m["DownConvs.0.weight"] = "down.8.weight"
    m["UpConvs.0.weight"] = "up.8.weight"
    for i in range(1, 8):
        m[f"DownConvs.{i}.conv2d.weight"] = f"down.{8 - i}.conv.weight"
        m[f"UpConvs.{i}.convtrans2d.weight"] = f"up.{8 - i}.conv.weight"
    return m


def avpc_frame(with_trunk: bool = True) -> dict[str, str]:
    """ResNetFC: `fc.0` conv, `fc.1` BatchNorm (+ `features.*`, the trunk) -> our FrameNet."""
    m = {f"fc.0.{k}": f"head.0.{k}" for k in ("weight", "bias")}
    m.update(_bn("fc.1", "head.1"))
    if with_trunk:
        m.update(resnet_trunk())
    return m


def simsiam(ours: str = "") -> dict[str, str]:
    """RCoP's SimSiam (projector layer1-3, predictor layer1-2) -> our SimSiamHead."""
    p = f"{ours}." if ours else ""
    m = {}
    for i in range(3):
        m.update({f"projector.layer{i + 1}.0.{k}": f"{p}projector.{i}.0.{k}" for k in ("weight", "bias")})
        m.update(_bn(f"projector.layer{i + 1}.1", f"{p}projector.{i}.1"))
    m.update({f"predictor.layer1.0.{k}": f"{p}predictor.0.0.{k}" for k in ("weight", "bias")})
    m.update(_bn("predictor.layer1.1", f"{p}predictor.0.1"))
    m.update({f"predictor.layer2.{k}": f"{p}predictor.1.{k}" for k in ("weight", "bias")})
    return m


# --- Sound-of-Pixels --------------------------------------------------------------------------------------


def sop_unet(levels: int = 7) -> dict[str, str]:
    """Unet's nested UnetBlocks (`unet_block.model.1.model.3. ...`, one `.model.3` per level deeper) -> our
    UNet7 (`downs[d]`, `ups[d]`, level d = 0 outermost). Outermost: model.0 down conv, model.4 up conv
    (with bias); middle: model.1 down conv, .2 its BN, .6 up conv, .7 its BN; innermost: model.1 down
    conv, .4 up conv, .5 its BN."""
    m = _bn("bn0", "bn_in")
    for d in range(levels):
        pre = "unet_block.model." if d == 0 else "unet_block.model.1." + "model.3." * (d - 1) + "model."
        if d == 0:
            m[f"{pre}0.weight"] = "downs.0.0.weight"
            m[f"{pre}4.weight"] = "ups.0.0.weight"
            m[f"{pre}4.bias"] = "ups.0.0.bias"
        elif d == levels - 1:
            m[f"{pre}1.weight"] = f"downs.{d}.0.weight"
            m[f"{pre}4.weight"] = f"ups.{d}.0.weight"
            m.update(_bn(f"{pre}5", f"ups.{d}.1"))
        else:
            m[f"{pre}1.weight"] = f"downs.{d}.0.weight"
            m.update(_bn(f"{pre}2", f"downs.{d}.1"))
            m[f"{pre}6.weight"] = f"ups.{d}.0.weight"
            m.update(_bn(f"{pre}7", f"ups.{d}.1"))
    return m


def sop_frame(with_trunk: bool = True) -> dict[str, str]:
    """ResnetDilated: `fc` conv (+ `features.*`) -> our SoPFrameNet."""
    m = {f"fc.{k}": f"head.{k}" for k in ("weight", "bias")}
    if with_trunk:
        m.update(resnet_trunk())
    return m


def sop_synthesizer() -> dict[str, str]:
    return {"scale": "scale", "bias": "bias"}


# --- applying a map ---------------------------------------------------------------------------------------


def prefixed(m: dict[str, str], ref: str, ours: str) -> dict[str, str]:
    """The map with `ref` prepended to its reference names and `ours` to ours (either may be '')."""
    return {ref + k: ours + v for k, v in m.items()}


def translate(ref_state: dict[str, torch.Tensor], name_map: dict[str, str], own_state: dict[str, torch.Tensor],
              what: str = "reference state", keep: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Reference tensors renamed to ours through `name_map`, every shape checked against `own_state`; the
    result holds every tensor of `own_state` (counters the reference omits keep ours, and so do our tensors
    under the prefixes `keep`). One AvsepError line when a reference tensor has no place, one of ours gets
    no value, or a shape differs."""
    unknown = [k for k in ref_state if k not in name_map]
    missing = [k for k, v in name_map.items() if k not in ref_state and not k.endswith(OPTIONAL) and v in own_state]
    not_ours = sorted({v for k, v in name_map.items() if k in ref_state and v not in own_state})
    targets = set(name_map.values())
    unfilled = [k for k in own_state if k not in targets and not k.endswith(OPTIONAL) and not k.startswith(keep or ("\0",))]
    shapes = [f"{k} is {tuple(ref_state[k].shape)}, ours {name_map[k]} {tuple(own_state[name_map[k]].shape)}"
              for k in ref_state if k in name_map and name_map[k] in own_state
              and tuple(ref_state[k].shape) != tuple(own_state[name_map[k]].shape)]
    problems = [f"{label} {_few(keys)}" for label, keys in (
        ("unknown keys", unknown), ("missing keys", missing), ("keys with no place in our model", not_ours),
        ("our tensors without a reference value", unfilled)) if keys]
    if shapes:
        problems.append(shapes[0] + (f" (and {len(shapes) - 1} more shapes differ)" if len(shapes) > 1 else ""))
    if problems:
        raise AvsepError(f"{what} does not fit: {'; '.join(problems)}")
    out = dict(own_state)
    for k, v in ref_state.items():
        out[name_map[k]] = v.to(own_state[name_map[k]].dtype)
    return out


def _few(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" (and {len(items) - n} more)" if len(items) > n else "")
