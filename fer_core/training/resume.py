"""Resume state as a typed object: where a run is (epoch, batch, step), what it has selected so far, and
the checks that a checkpoint may continue this run.

The checkpoint (checkpoints/last.pt, training/checkpoint.py) stores `RunState.saved()` beside the
model, optimiser and scheduler state_dicts and every rank's RNG and running sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer_core.config import Config
from fer_core.training.checkpoint import CHECKPOINT_FORMAT

# Keys a resumed run may change without invalidating its checkpoint (they do not change the maths).
RESUME_MAY_CHANGE = frozenset({
    "train.epochs", "train.workers", "train.early_stopping_patience", "train.checkpoint_every_steps",
    "train.cache_images_mb", "train.device", "train.data_path", "train.device_cache_mb", "train.compile",
    "train.compile_mode", "train.compile_backend", "train.sync_every_steps",
})


class ResumeError(ValueError):
    """A checkpoint that cannot continue this run (different settings or format)."""


def new_sums() -> dict[str, float]:
    """The running sums of an epoch's train metrics on one rank."""
    return {"loss": 0.0, "correct": 0, "seen": 0}


@dataclass
class RunState:
    """Where a run is and what it has selected; `saved()` is what a checkpoint keeps of it."""

    epoch: int = 0                 # epochs completed
    batch: int = 0                 # batches completed in the current epoch
    global_step: int = 0
    best_metric: float = -math.inf
    best_epoch: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    stale_epochs: int = 0          # epochs since the best one (early stopping)
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    stopped_early: bool = False
    sums: dict[str, float] = field(default_factory=new_sums)   # this rank's; saved per rank, not here

    SAVED = ("epoch", "batch", "global_step", "best_metric", "best_epoch", "best_metrics", "stale_epochs",
             "history", "finished", "stopped_early")

    def saved(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.SAVED}

    def restore(self, checkpoint: dict[str, Any]) -> None:
        for key in self.SAVED:
            setattr(self, key, checkpoint[key])

    def end_epoch(self, entry: dict[str, Any], metric: str, patience: int, epochs: int) -> bool:
        """Record a finished epoch's entry; returns whether it is the best so far on `metric`."""
        self.history.append(entry)
        improved = entry[metric] > self.best_metric
        if improved:
            self.best_metric, self.best_epoch, self.stale_epochs = entry[metric], entry["epoch"], 0
            self.best_metrics = {key: value for key, value in entry.items() if key.startswith("val_")}
        else:
            self.stale_epochs += 1
        self.stopped_early = patience > 0 and self.stale_epochs >= patience
        self.epoch, self.batch, self.sums = entry["epoch"], 0, new_sums()
        self.finished = self.epoch >= epochs or self.stopped_early
        return improved


def check_resumable(checkpoint: dict[str, Any], config: Config, path: Path) -> None:
    """ResumeError unless CHECKPOINT was written by this format with the same maths-changing settings."""
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ResumeError(f"{path}: checkpoint format {checkpoint.get('format')!r}, this code writes "
                          f"{CHECKPOINT_FORMAT}; start a new run (--no-resume or another --out)")
    saved = {f"{section}.{key}": value for section, values in checkpoint["config"].items()
             for key, value in values.items()}
    now = config.flat()
    changed = [key for key in sorted(set(saved) | set(now))
               if (key.split(".")[0] in ("model", "weights", "train") or key == "data.num_classes")
               and key not in RESUME_MAY_CHANGE and saved.get(key) != now.get(key)]
    if changed:
        detail = ", ".join(f"{key}: {saved.get(key)!r} -> {now.get(key)!r}" for key in changed[:5])
        raise ResumeError(f"{path} was written with other settings ({detail}); resume with the same "
                          "settings, or start over with --no-resume or another --out")
