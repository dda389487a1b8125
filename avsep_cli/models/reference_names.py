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


# --- IAL-CMS ----------------------------------------------------------------------------------------------


def _lin(ref: str, ours: str) -> dict[str, str]:
    return {f"{ref}.{k}": f"{ours}.{k}" for k in ("weight", "bias")}


def ialcms_avmodule() -> dict[str, str]:
    """AVModule (sep_mlp, a_common_mlp, weight_mlp, sigmoid) -> our AVModule (fuse, phi_a, channel_mlp,
    att_w / att_b)."""
    m = {"sigmoid.w": "att_w", "sigmoid.b": "att_b"}
    for ref, ours, convs, bns in (("sep_mlp", "fuse", (0, 3), (2, 5)), ("a_common_mlp", "phi_a", (0, 3), (2,)),
                                  ("weight_mlp", "channel_mlp", (0, 3), (2,))):
        for i in convs:
            m.update(_lin(f"{ref}.{i}", f"{ours}.{i}"))
        for i in bns:
            m.update(_bn(f"{ref}.{i}", f"{ours}.{i}"))
    return m


def ialcms_stage(blocks: int = 2, ref: str = "down", ours: str = "") -> dict[str, str]:
    """`_make_encoder_block` (BasicBlocks conv1/bn1/conv2/bn2, downsample.0/.1 on the first) -> our
    `encoder_stage` (same names)."""
    p = f"{ours}." if ours else ""
    m = {}
    for j in range(blocks):
        for c in ("conv1", "conv2"):
            m[f"{ref}.{j}.{c}.weight"] = f"{p}{j}.{c}.weight"
        for b in ("bn1", "bn2"):
            m.update(_bn(f"{ref}.{j}.{b}", f"{p}{j}.{b}"))
    m[f"{ref}.0.downsample.0.weight"] = f"{p}0.downsample.0.weight"
    m.update(_bn(f"{ref}.0.downsample.1", f"{p}0.downsample.1"))
    return m


def ialcms_up_level(ref: str = "", ours: str = "", adain: bool = True) -> dict[str, str]:
    """A non-outermost UnetBlock's up path (up.1 conv, up.3 BatchNorm, style_mlp_w.0 / style_mlp_b.0) -> our
    UpLevel (conv, bn, style_w, style_b)."""
    r, o = (f"{ref}." if ref else ""), (f"{ours}." if ours else "")
    m = {f"{r}up.1.weight": f"{o}conv.weight"}
    m.update(_bn(f"{r}up.3", f"{o}bn"))
    if adain:
        m.update(_lin(f"{r}style_mlp_w.0", f"{o}style_w"))
        m.update(_lin(f"{r}style_mlp_b.0", f"{o}style_b"))
    return m


def ialcms_critic(layers: int, ndf: int, max_channels: int = 1024) -> dict[str, str]:
    """LatePairCriticsModel (g's modules named 'initial:1-ndf:conv', 'pyramidL:in-out:conv'; h.0, h.2 with
    spectral norm: weight_orig, weight_u, weight_v; w; b) -> our PairCritic (g.{2i}, h, w, b)."""
    sn = ("weight_orig", "weight_u", "weight_v")
    m = {"w.weight": "w.weight", "b": "b"}
    cin = 1
    for i in range(layers):
        cout = min(ndf * 2**i, max_channels)
        name = f"initial:{cin}-{cout}:conv" if i == 0 else f"pyramid{i}:{cin}-{cout}:conv"
        m.update({f"g.{name}.{k}": f"g.{2 * i}.{k}" for k in sn})
        cin = cout
    for i in (0, 2):
        m.update({f"h.{i}.{k}": f"h.{i}.{k}" for k in (*sn, "bias")})
    return m


def ialcms_backbone(ours: str = "visual.trunk", ref: str = "visualNet.basenet.backbone") -> dict[str, str]:
    """ResNet18Pretrained (torchvision resnet18's children regrouped: `layer1` = conv1, bn1, relu; `layer2` =
    maxpool, layer1; `layer3`-`layer5` = layer2-layer4) -> our ResNet18Trunk."""
    out = {}
    for r, o in resnet_trunk(ours, "features").items():
        i, rest = r[len("features."):].split(".", 1)
        i = int(i)  # torchvision children index: 0 conv1, 1 bn1, 4-7 layer1-4
        out[f"{ref}." + (f"layer1.{i}.{rest}" if i < 2 else f"layer2.1.{rest}" if i == 4 else f"layer{i - 2}.{rest}")] = o
    return out


def ialcms_deeplab(ours: str = "visual.head", ref: str = "visualNet.basenet", rates: int = 4) -> dict[str, str]:
    """Deeplabv3plus's trained part (ASPP: aspp1-4 `.model.0` conv, `.model.1` BN, global_avg_pool.1 conv, .2
    BN, conv1, bn1; reduce_block.0 conv, .2 BN; decoder.0 conv, .2 BN) -> our DeepLabV3PlusHead (aspp.branches,
    aspp.pool, aspp.project, reduce, fuse). One decoder conv (the paper's `decoder.num: 1`)."""
    m = {}
    for i in range(rates):
        m[f"{ref}.aspp.aspp{i + 1}.model.0.weight"] = f"{ours}.aspp.branches.{i}.0.weight"
        m.update(_bn(f"{ref}.aspp.aspp{i + 1}.model.1", f"{ours}.aspp.branches.{i}.1"))
    m[f"{ref}.aspp.global_avg_pool.1.weight"] = f"{ours}.aspp.pool.1.weight"
    m.update(_bn(f"{ref}.aspp.global_avg_pool.2", f"{ours}.aspp.pool.2"))
    m[f"{ref}.aspp.conv1.weight"] = f"{ours}.aspp.project.0.weight"
    m.update(_bn(f"{ref}.aspp.bn1", f"{ours}.aspp.project.1"))
    for r, o in (("reduce_block", "reduce"), ("decoder", "fuse")):
        m.update(_lin(f"{ref}.{r}.0", f"{ours}.{o}.0"))
        m.update(_bn(f"{ref}.{r}.2", f"{ours}.{o}.2"))
    return m


def ialcms_separator(blocks: int = 2, adain: bool = True, visual_head: str = "deeplab") -> dict[str, str]:
    """AVSeparator -> our IALCMS: the audio side (`separator_w_v`: bn0, the nested UnetBlocks with their
    encoders and the AV module, scale, bias), the visual common-space MLP and, for the DeepLabv3+ head,
    `visualNet.basenet` (the frozen backbone and the head). With `visual_head="mlp"` the visual side is the
    MLP only (our trunk and projection have no reference counterpart)."""
    s = "separator_w_v."
    m = _bn(s + "bn0", "audio.bn_in")
    m[s + "unet_block.down.0.weight"] = "audio.stem.0.weight"
    m.update(_bn(s + "unet_block.down.1", "audio.stem.1"))
    for k in range(1, 5):
        pre = s + "unet_block." + "submodule." * k
        m.update(ialcms_stage(blocks, pre + "down", f"audio.stages.{k - 1}"))
        m.update(ialcms_up_level(pre.rstrip("."), f"decoder.levels.{k}", adain))
    m.update(prefixed(ialcms_avmodule(), s + "unet_block." + "submodule." * 5 + "avmodule.", "av."))
    m.update(_lin(s + "unet_block.up.1", "decoder.head"))
    m.update({s + "scale": "mask_scale", s + "bias": "mask_bias"})
    m.update(_lin("visualNet.common_space_mlp.0", "visual.common.0"))
    m.update(_bn("visualNet.common_space_mlp.2", "visual.common.2"))
    m.update(_lin("visualNet.common_space_mlp.3", "visual.common.3"))
    if visual_head == "deeplab":
        m.update(ialcms_backbone())
        m.update(ialcms_deeplab())
    return m


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
              and tuple(ref_state[k].shape) != tuple(own_state[name_map[k]].shape)
              and not ref_state[k].numel() == own_state[name_map[k]].numel() == 1]  # a scalar as () or (1,)
    problems = [f"{label} {_few(keys)}" for label, keys in (
        ("unknown keys", unknown), ("missing keys", missing), ("keys with no place in our model", not_ours),
        ("our tensors without a reference value", unfilled)) if keys]
    if shapes:
        problems.append(shapes[0] + (f" (and {len(shapes) - 1} more shapes differ)" if len(shapes) > 1 else ""))
    if problems:
        raise AvsepError(f"{what} does not fit: {'; '.join(problems)}")
    out = dict(own_state)
    for k, v in ref_state.items():
        out[name_map[k]] = v.to(own_state[name_map[k]].dtype).reshape(own_state[name_map[k]].shape)
    return out


def _few(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" (and {len(items) - n} more)" if len(items) > n else "")
