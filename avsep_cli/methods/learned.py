"""Learned methods, loaded from checkpoints made by `avsep train` (and, later, from shipped weights)."""

from __future__ import annotations

from avsep_cli.methods import register


def _mask_method(name: str):
    def factory(weights, device):
        from avsep_cli.training.systems import method_from_checkpoint

        return method_from_checkpoint(weights, name, device)

    return factory


register("tiny", _mask_method("tiny"), learned=True)
