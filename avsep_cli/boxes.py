"""Check a known-boxes file (`avsep separate --boxes`) before anything reads it.

The file is a corpus sidecar or {"fps": f, "players": [{"class": name, "boxes": [[x1, y1, x2, y2] | null,
...]}]}: one box per frame at `fps` (default 8), null where the player is not visible. `validate_boxes`
refuses anything else with one line naming the file, the player and the frame, so that a malformed box
is a user error (exit 2) and not a failed reshape deep in the separator.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from avsep_cli.errors import AvsepError

BOX = "null or [x1, y1, x2, y2]: 4 finite numbers with x2 > x1 and y2 > y1"


def validate_boxes(data: dict, source: str | Path | dict) -> None:
    """Raise AvsepError unless `data` (the parsed JSON of `source`) is a valid boxes document."""
    where = "boxes" if isinstance(source, dict) else str(source)
    if not isinstance(data, dict):
        raise AvsepError(f"{where}: expected a JSON object with 'players' (and 'fps'), not {_short(data)}")
    if "fps" in data and not (_number(data["fps"]) and data["fps"] > 0):
        raise AvsepError(f"{where}: fps {_short(data['fps'])}: expected a finite number > 0")
    players = data.get("players")
    if not isinstance(players, list):
        raise AvsepError(f"{where}: 'players' must be a list of {{class, boxes}}, not {_short(players)}")
    for i, player in enumerate(players):
        if not isinstance(player, dict):
            raise AvsepError(f"{where}: players[{i}]: expected an object with 'class' and 'boxes', not {_short(player)}")
        cls = player.get("class")
        if not isinstance(cls, str) or not cls:
            raise AvsepError(f"{where}: players[{i}]: 'class' must be a non-empty string, not {_short(cls)}")
        boxes = player.get("boxes")
        if not isinstance(boxes, list):
            raise AvsepError(f"{where}: players[{i}] ({cls}): 'boxes' must be a list (one box per frame), "
                             f"not {_short(boxes)}")
        for j, box in enumerate(boxes):
            if box is not None and not _valid_box(box):
                raise AvsepError(f"{where}: players[{i}] ({cls}) frame {j}: box {_short(box)}: expected {BOX}")


def _valid_box(box) -> bool:
    if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
        return False
    x1, y1, x2, y2 = box
    return x2 > x1 and y2 > y1


def _number(v) -> bool:
    """A finite int or float that fits a float64; JSON true/false are not numbers here (bool is an int)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:  # an integer literal beyond float64
        return False


def _short(value, limit: int = 60) -> str:
    """`value` as compact JSON on one line, cut to `limit` characters."""
    try:
        text = json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
