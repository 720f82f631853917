"""Class weights from the TRAIN split counts (docs/method.md section 4): small classes cost more when missed.

Every scheme is normalised so that the count-weighted mean weight is 1,
`sum_c n_c * w_c / sum_c n_c == 1`, which keeps the loss on the scale of plain cross entropy, so the
learning rate means the same thing with or without weighting.

`max_weight` clip: clip, then renormalise, repeated until both hold: no weight above `max_weight` AND a
count-weighted mean of 1 (clipped classes sit exactly at `max_weight`, the others keep their ratios and
are scaled up to restore the mean). That is possible only if max_weight >= 1 (a weight vector capped
below 1 cannot average 1), so a smaller value is an error.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import torch

SCHEMES = ("inverse", "sqrt_inverse", "effective_number", "none")


def raw_class_weights(counts: Sequence[int], scheme: str, beta: float = 0.999) -> list[float]:
    """The unnormalised weight of each class (proportional to the formula of `scheme`)."""
    if scheme == "inverse":
        return [1.0 / n for n in counts]
    if scheme == "sqrt_inverse":
        return [1.0 / math.sqrt(n) for n in counts]
    if scheme == "effective_number":
        if not 0.0 < beta < 1.0:
            raise ValueError(f"weights.beta must be in (0, 1) for effective_number, got {beta}")
        return [(1.0 - beta) / (1.0 - beta ** n) for n in counts]
    if scheme == "none":
        return [1.0 for _ in counts]
    raise ValueError(f"unknown class weight scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")


def _normalise(raw: list[float], counts: Sequence[int]) -> list[float]:
    scale = sum(counts) / sum(n * w for n, w in zip(counts, raw))
    return [w * scale for w in raw]


def _clip(weights: list[float], counts: Sequence[int], max_weight: float) -> list[float]:
    """Water-filling: cap at max_weight, rescale the uncapped classes to keep the count-weighted mean 1."""
    total = sum(counts)
    capped: set[int] = set()
    while True:
        free = [c for c in range(len(weights)) if c not in capped]
        budget = total - max_weight * sum(counts[c] for c in capped)
        free_mass = sum(counts[c] * weights[c] for c in free)
        scale = budget / free_mass if free_mass > 0 else 0.0
        newly = {c for c in free if weights[c] * scale > max_weight}
        if not newly:
            return [max_weight if c in capped else weights[c] * scale for c in range(len(weights))]
        capped |= newly


def compute_class_weights(counts: Sequence[int], scheme: str, beta: float = 0.999,
                          max_weight: float | None = None) -> torch.Tensor:
    """float32 [K] weights from per-class train counts; see the module docstring for the invariants."""
    counts = list(counts)
    if not counts:
        raise ValueError("class counts are empty: the train split has no classes")
    for index, n in enumerate(counts):
        if isinstance(n, bool) or int(n) != n or n < 0:
            raise ValueError(f"class {index}: count must be a non-negative integer, got {n!r}")
        if n == 0:
            raise ValueError(
                f"class {index} has 0 training samples: its weight would be infinite; "
                "fix the dataset (validation flags empty classes) or drop the class"
            )
    counts = [int(n) for n in counts]
    weights = _normalise(raw_class_weights(counts, scheme, beta), counts)
    if max_weight is not None:
        if max_weight < 1.0:
            raise ValueError(
                f"weights.max_weight={max_weight} < 1: weights capped below 1 cannot have a count-weighted "
                "mean of 1; use a value >= 1 or null"
            )
        weights = _clip(weights, counts, float(max_weight))
    return torch.tensor(weights, dtype=torch.float32)


def weights_report(scheme: str, beta: float, max_weight: float | None, class_names: Sequence[str],
                   counts: Sequence[int], weights: Sequence[float]) -> dict:
    """The weights.json every writer shares (the run folder, `fer data weights`, the pipeline step)."""
    names = list(class_names)
    return {"scheme": scheme, "beta": beta, "max_weight": max_weight, "class_names": names,
            "counts": dict(zip(names, (int(n) for n in counts))),
            "weights": dict(zip(names, (float(w) for w in weights)))}


def read_class_weights(path: str | os.PathLike, class_names: Sequence[str],
                       counts: Sequence[int] | None = None) -> tuple[list[float], dict]:
    """The weights in a weights.json (`fer data weights`, the pipeline's class-weights step), in
    `class_names` order, and the whole file. Errors name the file and the class: a file for other
    classes, a missing class, or a weight that is not a positive finite number; with `counts` (the
    train split's), a file that records other counts was made from other data."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such class-weights file (write one with `fer data weights`)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a class-weights JSON file ({exc})") from None
    weights = report.get("weights") if isinstance(report, dict) else None
    if not isinstance(weights, dict):
        raise ValueError(f"{path}: no \"weights\" object (class name -> weight)")
    names = list(class_names)
    unknown = sorted(set(weights) - set(names))
    missing = [name for name in names if name not in weights]
    if unknown or missing:
        raise ValueError(f"{path}: its classes do not match the dataset's {names}"
                         + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
    out = []
    for name in names:
        value = weights[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{path}: weight of {name!r} is {value!r}; a positive finite number is needed")
        out.append(float(value))
    recorded = report.get("counts")
    if counts is not None and isinstance(recorded, dict) and recorded:
        differ = [name for name, n in zip(names, counts) if name in recorded and recorded[name] != n]
        if differ:
            name = differ[0]
            raise ValueError(f"{path}: made from other data ({name}: {recorded[name]} train images, this "
                             f"dataset has {counts[names.index(name)]}); recompute it with `fer data weights`")
    return out, report
