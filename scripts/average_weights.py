"""Average the weights of several checkpoints of one model (the same run at different epochs: a
stochastic-weight-averaging style ensemble in one network) into a new checkpoint.

Every floating tensor is the plain mean of the inputs' (BatchNorm running statistics included); one that is
equal in every input (a frozen trunk) is kept bit for bit, not recomputed; integer tensors (BatchNorm's step
counters) come from the first input. The inputs must be the same model with the
same config: shipped weights by name (sha256-checked) or files (training checkpoints, safetensors).

    python scripts/average_weights.py visual-trunk-broad runs/trunk-broad128/best.pt \
        runs/trunk-broad128/last.pt -o runs/trunk-avg.pt

The result is a plain avsep checkpoint (model_name, model_args, state_dict, checksum) that `avsep weights
add` ships and every `--weights`/`--classifier` option reads.
"""

from __future__ import annotations

import argparse

import torch

from avsep_cli import checkpoint, registry
from avsep_cli.errors import AvsepError


def average(specs: list[str]) -> dict:
    """The mean of the models named by `specs` -> {"model_name", "model_args", "state_dict"}."""
    if len(specs) < 2:
        raise AvsepError("give two or more checkpoints to average")
    models = [registry.resolve(s).data for s in specs]
    first = models[0]
    for spec, m in zip(specs[1:], models[1:]):
        if m["model_name"] != first["model_name"] or m["model_args"] != first["model_args"]:
            raise AvsepError(f"{spec} is not the same model as {specs[0]} (name or config differs)")
        if set(m["state_dict"]) != set(first["state_dict"]):
            raise AvsepError(f"{spec} has other tensors than {specs[0]}")
    state = {}
    for k, v in first["state_dict"].items():
        if v.is_floating_point() and not all(torch.equal(m["state_dict"][k], v) for m in models[1:]):
            state[k] = torch.stack([m["state_dict"][k].float() for m in models]).mean(0)
        else:  # a frozen part (e.g. the visual trunk) stays bit for bit: its sha256 finds its prototype file
            state[k] = v
    return {"model_name": first["model_name"], "model_args": first["model_args"], "state_dict": state}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="checkpoints: shipped names or files")
    ap.add_argument("-o", "--output", required=True, help="the averaged checkpoint (.pt)")
    args = ap.parse_args()
    try:
        path = checkpoint.save(args.output, average(args.inputs))
    except AvsepError as e:
        raise SystemExit(f"average_weights: error: {e}") from None
    print(f"{path}: the mean of {len(args.inputs)} checkpoints")


if __name__ == "__main__":
    main()
