"""The serving path without TorchServe: request bytes -> batch tensor -> model -> JSON answers.

The TorchServe handler (handler.py) is a thin shell around these functions, and `LocalPredictor` runs
the very same path in-process, so tests and the benchmark compare REST answers against exactly what
the handler computes, with the same batching.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image

from fer_core.data.images import ImageDecodeError, decode_image
from fer_core.model.export import WEIGHTS_FILE as MODEL_FILE  # what is served: tensors only

logger = logging.getLogger(__name__)


META_FILE = "meta.json"
DEFAULT_MAX_IMAGE_PIXELS = 20_000_000
REQUIRED_META_KEYS = ("class_names", "num_classes", "image_size", "mean", "std", "model")


def load_meta(path: str | Path) -> dict[str, Any]:
    """meta.json of a run, checked for the keys serving needs (a clear error beats a KeyError later)."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: meta.json missing; a served model needs it next to {MODEL_FILE}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: must hold a JSON object")
    missing = [key for key in REQUIRED_META_KEYS if key not in meta]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
    names = meta["class_names"]
    if not isinstance(names, list) or not names or len(set(names)) != len(names):
        raise ValueError(f"{path}: class_names must be a non-empty list of distinct names, got {names!r}")
    return meta


def build_eval_transform(meta: dict[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """The evaluation transform (RGB PIL image -> normalised [3,H,W] float tensor).

    Uses training's own `fer_core.data.transforms.eval_transform`, so serving preprocesses exactly as
    evaluation does; meta.json's mean/std must agree with it (a mismatch means the run and this code
    disagree, which would silently shift every prediction).
    """
    from fer_core.data import transforms

    transform = transforms.eval_transform(int(meta["image_size"]))
    expected = [float(v) for v in (*transforms.IMAGENET_MEAN, *transforms.IMAGENET_STD)]
    given = [float(v) for v in (*meta["mean"], *meta["std"])]
    if len(given) != len(expected) or any(abs(a - b) > 1e-6 for a, b in zip(expected, given)):
        raise ValueError(
            f"meta.json mean/std {given} differ from the evaluation transform's {expected}; "
            "re-export the run with the current code"
        )
    return transform


def load_model(path: str | Path, meta: dict[str, Any], device: torch.device) -> torch.nn.Module:
    """RUN/model.safetensors + meta.json -> the network built by our code, eval mode, on `device`.

    Never torch.export.load or pickle: an archive from a store cannot run code here.
    """
    from fer_core.model.export import load_inference_model

    return load_inference_model(path, meta, device)


def error_body(code: int, message: str, kind: str = "InvalidImage") -> dict[str, Any]:
    """TorchServe's own error shape ({code, type, message}), so clients parse one kind of error."""
    return {"code": code, "type": kind, "message": message}


def request_bytes(item: Any) -> bytes:
    """The image bytes of one TorchServe request: a raw body ("body"/"data") or one multipart field.

    TorchServe hands text bodies over as str and JSON bodies as parsed objects; neither is an image.
    """
    if isinstance(item, dict):
        for key in ("data", "body"):
            if key in item:
                item = item[key]
                break
        else:
            values = list(item.values())
            if len(values) != 1:
                raise ImageDecodeError(f"expected one image per request, got fields {sorted(map(str, item))}")
            item = values[0]
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if item is None:
        raise ImageDecodeError("empty input (no request body)")
    if isinstance(item, str):
        if not item:
            raise ImageDecodeError("empty input (0 bytes)")
        raise ImageDecodeError("not an image: the request body is text; send the raw image bytes")
    raise ImageDecodeError(
        f"not an image: the request body was parsed as {type(item).__name__} (JSON?); "
        "send the raw image bytes (Content-Type: application/octet-stream or image/*)"
    )


@dataclass
class PreparedBatch:
    """The decodable items of a batch, stacked, plus the error answer of every other item."""

    size: int
    tensor: torch.Tensor | None = None
    indices: list[int] = field(default_factory=list)  # batch position of each row of `tensor`
    errors: dict[int, dict[str, Any]] = field(default_factory=dict)


def prepare_batch(items: Sequence[Any], transform: Callable[[Image.Image], torch.Tensor],
                  max_image_pixels: int) -> PreparedBatch:
    """Decode every item on its own: a bad one becomes a 400 answer, the others still run."""
    batch = PreparedBatch(size=len(items))
    rows = []
    for index, item in enumerate(items):
        try:
            image = decode_image(request_bytes(item), max_pixels=max_image_pixels)
        except ImageDecodeError as exc:
            batch.errors[index] = error_body(400, str(exc))
            continue
        rows.append(transform(image))
        batch.indices.append(index)
    if rows:
        batch.tensor = torch.stack(rows)
    return batch


def run_model(model: torch.nn.Module, batch: PreparedBatch,
              device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(probabilities [N,K], uncertainty [N]) on CPU for the decodable rows, or (None, None)."""
    if batch.tensor is None:
        return None, None
    with torch.inference_mode():
        logits, uncertainty = model(batch.tensor.to(device))
        probabilities = torch.softmax(logits.float(), dim=1)
    return probabilities.cpu(), uncertainty.float().reshape(-1).cpu()


def build_answers(batch: PreparedBatch, probabilities: torch.Tensor | None, uncertainty: torch.Tensor | None,
                  class_names: Sequence[str], model_name: str, model_version: str) -> list[dict[str, Any]]:
    """One JSON answer per item, in batch order: a prediction or the item's error."""
    answers: list[dict[str, Any]] = [{} for _ in range(batch.size)]
    for row, index in enumerate(batch.indices):
        probs = probabilities[row].tolist()
        best = max(range(len(probs)), key=probs.__getitem__)
        answers[index] = {
            "label": class_names[best],
            "probabilities": dict(zip(class_names, probs)),
            "uncertainty": float(uncertainty[row]),
            "model_name": model_name,
            "model_version": model_version,
        }
    for index, error in batch.errors.items():
        answers[index] = error
    return answers


class LocalPredictor:
    """The handler's path in-process (no TorchServe): same decoding, transform, model and answers."""

    def __init__(self, model_dir: str | Path, *, model_name: str = "fer", model_version: str = "local",
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, device: str = "cpu") -> None:
        model_dir = Path(model_dir)
        self.device = torch.device(device)
        self.meta = load_meta(model_dir / META_FILE)
        self.model = load_model(model_dir / MODEL_FILE, self.meta, self.device)
        self.transform = build_eval_transform(self.meta)
        self.class_names = list(self.meta["class_names"])
        self.model_name, self.model_version = model_name, model_version
        self.max_image_pixels = max_image_pixels

    def predict(self, images: Sequence[bytes]) -> list[dict[str, Any]]:
        batch = prepare_batch(list(images), self.transform, self.max_image_pixels)
        probabilities, uncertainty = run_model(self.model, batch, self.device)
        return build_answers(batch, probabilities, uncertainty, self.class_names, self.model_name,
                             self.model_version)
