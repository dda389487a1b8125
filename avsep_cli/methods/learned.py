"""Learned methods, loaded from checkpoints made by `avsep train` (and, later, from shipped weights)."""

from __future__ import annotations

from avsep_cli.methods import register


def _mask_method(name: str):
    def factory(weights, device):
        from avsep_cli.training.systems import method_from_checkpoint

        return method_from_checkpoint(weights, name, device)

    return factory


for _name in ("tiny", "avpc", "sop", "ialcms"):
    register(_name, _mask_method(_name), learned=True)
