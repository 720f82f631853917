"""Export a trained FERNet as a torch.export program (.pt2): x[B,3,H,W] -> (logits[B,K], uncertainty[B]).

The program is what serving and the Model Registry load: no Python class of ours is needed to run it,
the batch dimension is dynamic (min 1) so TorchServe can batch any number of requests, and BatchNorm /
Dropout are frozen in eval mode at export time.
"""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from fer_core.io import atomic_write_bytes
from fer_core.model.network import FERNet

MAX_EXPORT_BATCH = 4096  # upper bound torch.export records for the dynamic batch dim


class InferenceModel(nn.Module):
    """Wraps FERNet so that forward returns (logits, uncertainty): what is exported and served."""

    def __init__(self, model: FERNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.predict(x)


def export_program(model: FERNet, image_size: int) -> torch.export.ExportedProgram:
    """Trace a CPU, eval-mode copy of `model` (the caller's model keeps its device and mode)."""
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    wrapped = InferenceModel(copy.deepcopy(model).to("cpu")).eval()
    # Batch 2 as the example: torch.export specialises on sizes 0 and 1, a 2 keeps the dim symbolic.
    example = torch.zeros(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    with torch.no_grad():
        return torch.export.export(wrapped, (example,), dynamic_shapes={"x": {0: batch}})


def export_model(model: FERNet, path: str | os.PathLike, image_size: int) -> Path:
    """Export `model` to `path` (.pt2) atomically; returns the path."""
    path = Path(path)
    program = export_program(model, image_size)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_exported(path: str | os.PathLike) -> nn.Module:
    """Load a .pt2 written by `export_model`; the module's forward(x) -> (logits, uncertainty).

    The module is already frozen in eval mode; torch's unlifted program refuses `.eval()`/`.train()`
    (NotImplementedError), so callers must not call them. `.to(device)` moves its weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # a truncated or foreign file: say which one
        raise ValueError(f"{path}: not a torch.export program (.pt2): {exc}") from exc
    return program.module()
