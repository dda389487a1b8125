"""Learned methods, loaded from shipped weights (by name) or from files made by `avsep train`.

Each method name says which model its weights must hold: the RCoP-pre-trained AVPC and the supervised
IAL-CMS are the same models as AVPC and IAL-CMS, trained differently, so they have names of their own
(their own shipped defaults and rows in the results table).
"""

from __future__ import annotations

from avsep_cli.methods import register

MODEL_OF = {"tiny": "tiny", "avpc": "avpc", "avpc-rcop": "avpc", "sop": "sop", "ialcms": "ialcms",
            "ialcms-supervised": "ialcms"}


def _learned(name: str):
    def factory(weights, device, precision: str = "fp32"):
        from avsep_cli.training.systems import method_from_checkpoint

        return method_from_checkpoint(weights, MODEL_OF[name], device, label=name, precision=precision)

    return factory


for _name in MODEL_OF:
    register(_name, _learned(_name), learned=True)
