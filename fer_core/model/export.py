"""A trained FERNet as files: its weights (model.safetensors) and a torch.export program (model.pt2).

What serving and the Model Registry load is the **weights**, through safetensors (tensors only, no
pickle, nothing in the file can run) into a network built by this project's own code from meta.json's
`model` section (`load_inference_model`). Loading a .pt2 is not safe in general: torch.export.load
unpickles entries an edited archive marks that way (weights_only=False), so an archive from a store
could run code. The program stays an artifact for those who want it (no Python class of ours is needed
to run it; dynamic batch dim); `load_exported` opens it only after its bytes match the sha256 recorded
in meta.json by the run that wrote it.

Both forward x[B,3,H,W] -> (logits[B,K], uncertainty[B]) in eval mode (BatchNorm/Dropout frozen).
"""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fer_core.io import atomic_write_bytes, sha256_file
from fer_core.model.network import FERNet

WEIGHTS_FILE = "model.safetensors"
PROGRAM_FILE = "model.pt2"
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


def save_weights(model: FERNet, path: str | os.PathLike) -> Path:
    """The model's state dict as safetensors (CPU, contiguous), written atomically."""
    from safetensors.torch import save

    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    path = Path(path)
    atomic_write_bytes(path, save(tensors))
    return path


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """{"name", "sha256", "bytes"} of a model file, as meta.json's `files` section records it."""
    path = Path(path)
    return {"name": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def write_model_files(model: FERNet, run_dir: str | os.PathLike, meta: dict[str, Any], image_size: int,
                      program: bool = True) -> dict[str, Any]:
    """RUN/model.safetensors (+ model.pt2) and RUN/meta.json with their sha256 in meta["files"].

    `meta` must hold what `load_inference_model` needs (class_names, num_classes, model, ...). Returns
    the meta.json that was written. The files are written before meta.json, each atomically.
    """
    from fer_core.io import write_json

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    files = {"weights": file_record(save_weights(model, run_dir / WEIGHTS_FILE))}
    if program:
        files["program"] = file_record(export_model(model.eval(), run_dir / PROGRAM_FILE, image_size))
    meta = {**meta, "files": files}
    write_json(run_dir / "meta.json", meta)
    return meta


def load_inference_model(weights_path: str | os.PathLike, meta: dict[str, Any],
                         device: str | torch.device = "cpu") -> InferenceModel:
    """model.safetensors -> FERNet built from meta["model"] (this project's code), eval mode, on `device`.

    Tensors only: safetensors cannot carry code. The state dict must match the built network exactly
    (no silent strict=False); when meta records the file's sha256, the bytes must match it.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from fer_core.config import ModelConfig
    from fer_core.model.network import build_model

    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"model weights not found: {weights_path}")
    expected = ((meta.get("files") or {}).get("weights") or {}).get("sha256")
    if expected and sha256_file(weights_path) != expected:
        raise ValueError(f"{weights_path}: sha256 differs from meta.json's record; refusing to load")
    spec = meta.get("model")
    if not isinstance(spec, dict):
        raise ValueError(f"meta.json has no `model` section to build the network for {weights_path}")
    known = {field.name for field in ModelConfig.__dataclass_fields__.values()}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ValueError(f"meta.json model section has unknown key(s) {', '.join(unknown)}; "
                         "the run was written by another version of the code")
    model = build_model(ModelConfig(**spec), int(meta["num_classes"]))
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{weights_path}: not a safetensors file: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{weights_path}: weights do not fit the network of meta.json: {exc}") from None
    return InferenceModel(model).eval().to(device)


def load_exported(path: str | os.PathLike, sha256: str | None = None) -> nn.Module:
    """Load a .pt2 written by `export_model`, only when its bytes match `sha256` (meta.json's record).

    torch.export.load can unpickle (see the module docstring), so an unverified archive is refused.
    The module is already frozen in eval mode; torch's unlifted program refuses `.eval()`/`.train()`
    (NotImplementedError), so callers must not call them. `.to(device)` moves its weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    if not sha256:
        raise ValueError(f"{path}: no recorded sha256 to check it against; a .pt2 can run code when "
                         "loaded, so only a program whose hash its run recorded is opened")
    actual = sha256_file(path)
    if actual != sha256:
        raise ValueError(f"{path}: sha256 {actual[:12]}... differs from the recorded {sha256[:12]}...; "
                         "refusing to load an altered program")
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # a truncated or foreign file: say which one
        raise ValueError(f"{path}: not a torch.export program (.pt2): {exc}") from exc
    return program.module()
