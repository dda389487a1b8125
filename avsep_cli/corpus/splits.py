"""What each split of the corpus holds out: whole picture families and whole sample-set groups.

A model that has seen one emoji set's violin has seen most of what another violin from that set looks
like, so holding out single designs measures little. Here the unit of a split is a *family*: a picture
family is one artwork family (an icon set, its renders and versions together; one openclipart artist;
one style of the procedural drawings) and a sample-set group is one set of recordings with everything
derived from it (a SoundFont's samples, the additive models measured from them, their warped copies),
or one of our own synthesis models. A family is on one side only, for every class it draws: test
measures what a user meets (pictures from artists and sound from instruments never seen in training),
val holds out other families, so that model selection measures generalisation too.

The assignment depends on the names alone (a stable hash orders them), never on the seed or on which
clips exist, so every corpus made from the same assets has the same splits, and `docs/corpus.md` can
list them. Pure functions: tested over the recipe, not over a generated corpus.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Callable, Iterable, Mapping

SPLITS = ("train", "val", "test")
# Fraction of the families held out for each split (per class, at least one where the class has enough).
HOLD_OUT = {"test": 0.2, "val": 0.15}


def _order(name: str, salt: str) -> str:
    return hashlib.sha1(f"{salt}:{name}".encode()).hexdigest()


def _take(n: int, frac: float, at_least: int) -> int:
    """How many of n families a split takes: frac of them, at least one once there are `at_least`."""
    return max(1, round(frac * n)) if n >= at_least else 0


def assign_picture_families(classes_of: Mapping[str, Iterable[str]],
                            procedural: Callable[[str], bool]) -> dict[str, str]:
    """family -> "train" | "val" | "test".

    classes_of[family]: the classes the family has pictures of. Procedural drawing styles and real
    artwork families are split separately, so that every held-out split has both kinds:
    - drawing styles (shared by every class): a fifth to test, 15 % to val (one each from 3 styles up);
    - real families, in a fixed hash order: a family goes to test (then val) when one of its classes
      still needs a held-out family there (a fifth of the class' real families for test, at least one
      from 2 up; 15 % for val, at least one from 3 up) and every class it has keeps at least one real
      family in train. Everything else trains.
    """
    fams = {f: frozenset(cs) for f, cs in classes_of.items()}
    out: dict[str, str] = {}
    proc = sorted((f for f in fams if procedural(f)), key=lambda f: _order(f, "drawing"))
    k_test, k_val = _take(len(proc), HOLD_OUT["test"], 3), _take(len(proc), HOLD_OUT["val"], 3)
    for i, f in enumerate(proc):
        out[f] = "test" if i < k_test else "val" if i < k_test + k_val else "train"
    real = sorted((f for f in fams if not procedural(f)), key=lambda f: _order(f, "family"))
    n_real = Counter(c for f in real for c in fams[f])
    need = {"test": {c: _take(n, HOLD_OUT["test"], 2) for c, n in n_real.items()},
            "val": {c: _take(n, HOLD_OUT["val"], 3) for c, n in n_real.items()}}
    have = {s: Counter() for s in need}
    in_train = Counter(n_real)
    for f in real:
        cls = fams[f]
        out[f] = "train"
        if not all(in_train[c] > 1 for c in cls):
            continue
        for s in ("test", "val"):
            if any(have[s][c] < need[s][c] for c in cls):
                out[f] = s
                for c in cls:
                    have[s][c] += 1
                    in_train[c] -= 1
                break
    return out


def assign_sample_groups(groups: Mapping[str, str], prefer_test: Iterable[str] = ()) -> dict[str, str]:
    """Sample-set groups of one class -> "train" | "val" | "test".

    groups[group]: its kind, "font" (recordings, with what is derived from them) or "model" (our own
    synthesis). Test holds out one recorded group when the class has two or more (the first of
    `prefer_test` it has, else the last by hash order) and one synthesis model when it has two or more;
    val holds out another synthesis model when three or more are left; the rest train.
    """
    fonts = sorted((g for g, k in groups.items() if k == "font"), key=lambda g: _order(g, "font"))
    models = sorted((g for g, k in groups.items() if k != "font"), key=lambda g: _order(g, "model"))
    out = {g: "train" for g in groups}
    if len(fonts) >= 2:
        held = next((p for p in prefer_test if p in fonts), fonts[-1])
        out[held] = "test"
    if len(models) >= 2:
        out[models[0]] = "test"
    if len(models) >= 3:
        out[models[1]] = "val"
    return out


def by_split(assignment: Mapping[str, str]) -> dict[str, list[str]]:
    """{"train": [...], "val": [...], "test": [...]}: the names of each split, sorted."""
    return {s: sorted(k for k, v in assignment.items() if v == s) for s in SPLITS}
