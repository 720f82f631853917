"""What the training engine tells the outside world (MLflow, progress UIs, tests) while it runs.

A callback is any object with these methods (a Protocol, so no base class to inherit); the engine calls
them on rank 0 only. `on_step_end(step, metrics)` is optional: the engine calls it when present.
An exception raised in a callback stops training (the last checkpoint stays, so the run resumes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class TrainContext:
    """Facts of a run known before the first step (what a tracker logs as params/tags)."""

    config: dict[str, Any]             # Config.to_dict()
    run_dir: Path
    data_dir: Path
    class_names: list[str]
    train_counts: list[int]
    class_weights: list[float]
    num_train: int
    num_val: int
    device: str
    world_size: int
    start_epoch: int                   # 0 unless resumed
    resumed: bool
    num_parameters: int

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (paths as strings), e.g. for tags or a params file."""
        return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}


@dataclass
class TrainResult:
    """What `train` returns: where things are and how the best epoch scored."""

    run_dir: Path
    best_epoch: int
    best_metrics: dict[str, float]
    epochs_completed: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    best_path: Path | None = None
    model_path: Path | None = None     # RUN/model.safetensors (None when export was skipped; model.pt2 beside it)


@runtime_checkable
class Callback(Protocol):
    def on_train_start(self, context: TrainContext) -> None: ...

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def on_checkpoint(self, path: Path) -> None: ...

    def on_train_end(self, result: TrainResult) -> None: ...


class CallbackList:
    """Fan one event out to every callback, in order."""

    def __init__(self, callbacks: tuple[Any, ...] | list[Any], enabled: bool = True) -> None:
        self.callbacks = list(callbacks) if enabled else []

    def on_train_start(self, context: TrainContext) -> None:
        for callback in self.callbacks:
            callback.on_train_start(context)

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        for callback in self.callbacks:
            hook = getattr(callback, "on_step_end", None)
            if hook is not None:
                hook(step, metrics)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, metrics)

    def on_checkpoint(self, path: Path) -> None:
        for callback in self.callbacks:
            callback.on_checkpoint(path)

    def on_train_end(self, result: TrainResult) -> None:
        for callback in self.callbacks:
            callback.on_train_end(result)
