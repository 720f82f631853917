"""`MLflowCallback`: the training engine's events -> params, tags, metrics and artifacts of one MLflow run.

It writes to the run named by `run_id` through `MlflowClient` (never the fluent active run: the engine
may train in another thread than the one that started the run). It neither starts nor ends the run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag

from fer_core.tracking.runs import client
from fer_core.training.callbacks import TrainContext, TrainResult

MAX_BATCH = 100                    # MLflow's log_batch limit on params (and a sane chunk for metrics)
MAX_PARAM_CHARS = 6000             # MLflow's param value limit
RUN_FILES = ("history.json", "meta.json", "weights.json", "config.json")


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1e-3}} -> {'train.lr': 1e-3} (any depth)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _param_text(value: Any) -> str:
    text = "None" if value is None else json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return text[:MAX_PARAM_CHARS]


def _now_ms() -> int:
    return int(time.time() * 1000)


class MLflowCallback:
    """Log one training run to the MLflow run `run_id`; see the module docstring.

    `log_every_steps` > 0 also logs the running train loss about every that many optimiser steps: the
    loop reports steps only when it reads its figures (train.sync_every_steps, checkpoints, an epoch's
    end), so each log lands on the first reported step at or after a multiple of `log_every_steps`.
    """

    def __init__(self, run_id: str, *, log_every_steps: int = 0) -> None:
        self.run_id = run_id
        self.log_every_steps = log_every_steps
        self._logged_period = -1
        self.client = client()

    # ------------------------------------------------------------------------------------ helpers
    def _log_params(self, params: dict[str, Any], resumed: bool) -> None:
        texts = {key: _param_text(value) for key, value in params.items()}
        if resumed:
            # params of a run are immutable: keep the first values, tag what a resume changed
            logged = self.client.get_run(self.run_id).data.params
            changed = {key: value for key, value in texts.items() if key in logged and logged[key] != value}
            texts = {key: value for key, value in texts.items() if key not in logged}
            self._log_tags({f"resume_changed.{key}": f"{logged[key]} -> {value}" for key, value in changed.items()})
        items = [Param(key, value) for key, value in texts.items()]
        for start in range(0, len(items), MAX_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + MAX_BATCH], synchronous=True)

    def _log_tags(self, tags: dict[str, Any]) -> None:
        items = [RunTag(key, str(value)) for key, value in tags.items()]
        for start in range(0, len(items), MAX_BATCH):
            self.client.log_batch(self.run_id, tags=items[start:start + MAX_BATCH], synchronous=True)

    def _log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        timestamp = _now_ms()
        items = [Metric(key, float(value), timestamp, step) for key, value in metrics.items()
                 if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))]
        for start in range(0, len(items), MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=items[start:start + MAX_BATCH], synchronous=True)

    # ------------------------------------------------------------------------------------- events
    def on_train_start(self, context: TrainContext) -> None:
        weights = dict(zip(context.class_names, context.class_weights))
        counts = dict(zip(context.class_names, context.train_counts))
        params = flatten(context.config)
        params.update({f"class_weight.{name}": round(float(value), 6) for name, value in weights.items()})
        params.update({f"train_count.{name}": int(value) for name, value in counts.items()})
        params.update({"data.num_train": context.num_train, "data.num_val": context.num_val})
        self._log_params(params, context.resumed)
        self._log_tags({
            "device": context.device, "world_size": context.world_size, "num_parameters": context.num_parameters,
            "resumed": str(context.resumed).lower(), "start_epoch": context.start_epoch,
            "run_dir": str(context.run_dir), "data_dir": str(context.data_dir),
        })
        # the weights themselves go once, as the run folder's weights.json (on_train_end), which also
        # records where they came from (the class-weights step's file or the weights.* settings)

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        if self.log_every_steps > 0 and step // self.log_every_steps > self._logged_period:
            self._logged_period = step // self.log_every_steps
            if self._logged_period > 0:
                self._log_metrics(metrics, step)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self._log_metrics({key: value for key, value in metrics.items() if key != "epoch"}, epoch)

    def on_checkpoint(self, path: Path) -> None:
        # checkpoints stay in the run folder (they are large and only needed to resume)
        return None

    def on_train_end(self, result: TrainResult) -> None:
        best = {f"best_{key}": value for key, value in result.best_metrics.items()}
        self._log_metrics({"best_epoch": result.best_epoch, **best}, result.best_epoch)
        self._log_tags({"best_epoch": result.best_epoch, "epochs_completed": result.epochs_completed,
                        "stopped_early": str(result.stopped_early).lower()})
        for name in RUN_FILES:
            path = Path(result.run_dir) / name
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
