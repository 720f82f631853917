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

from fer_core.data.faces import DetectorError, FaceError, FaceSettings
from fer_core.data.faces import align as align_face
from fer_core.data.faces import detect as detect_faces
from fer_core.data.images import ImageDecodeError, decode_image
from fer_core.evaluation.trust import REVIEW_FILE, ReviewRule
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


def load_review_rule(model_dir: str | Path) -> ReviewRule | None:
    """The review rule packaged with the model (review.json), or None for a model evaluated before it
    existed (its answers then say `review: null`)."""
    path = Path(model_dir) / REVIEW_FILE
    if not path.is_file():
        return None
    try:
        return ReviewRule.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


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


@dataclass(frozen=True)
class FacePolicy:
    """How a request's image becomes crops: serve.faces, serve.max_faces and the model's FaceSettings."""

    mode: str = "auto"            # auto | required | off
    max_faces: int = 8
    settings: FaceSettings = field(default_factory=FaceSettings)
    threads: int = 1              # the detector's threads (serve.torch_threads; 0 = its default)

    def __post_init__(self) -> None:
        if self.mode not in FACE_MODES:
            raise ValueError(f"serve.faces {self.mode!r} is not one of {', '.join(FACE_MODES)}")
        if not 1 <= int(self.max_faces) <= 64:
            raise ValueError(f"serve.max_faces must lie in [1, 64], got {self.max_faces}")


FACE_MODES = ("auto", "required", "off")


def face_policy(meta: dict[str, Any], mode: str = "auto", max_faces: int = 8, threads: int = 1) -> FacePolicy:
    """The policy for a model: its meta.json `faces` record says how its training crops were made (a
    model from before the face step gets the standard template at 100 px)."""
    record = meta.get("faces")
    settings = FaceSettings.from_dict(record) if record else FaceSettings()
    return FacePolicy(mode=mode, max_faces=int(max_faces), settings=settings, threads=int(threads))


@dataclass
class PreparedBatch:
    """The crops of a batch's decodable items, stacked, plus the error answer of every other item.

    An item gives one row per face found (largest first, up to max_faces), or one row of the whole
    image when no face was found (auto) or detection is off."""

    size: int
    tensor: torch.Tensor | None = None
    indices: list[int] = field(default_factory=list)      # batch position of each row of `tensor`
    faces: list[dict[str, Any]] = field(default_factory=list)  # each row's face: box, landmarks, score, detected
    found: dict[int, int] = field(default_factory=dict)   # batch position -> faces the detector found
    errors: dict[int, dict[str, Any]] = field(default_factory=dict)


def image_crops(image: Image.Image, policy: FacePolicy) -> tuple[list[tuple[Image.Image, dict[str, Any]]], int]:
    """The crops to classify for one decoded image, each with its face record, and the number of faces
    found. Raises FaceRequestError (a 422 answer) when serve.faces=required finds none or the detector fails."""
    width, height = image.size
    crops: list[tuple[Image.Image, dict[str, Any]]] = []
    found = 0
    if policy.mode != "off":
        try:
            faces = detect_faces(image, policy.settings, policy.threads)
        except DetectorError as exc:
            raise FaceRequestError(str(exc), "FaceDetectionFailed") from None
        found = len(faces)
        for face in faces[:policy.max_faces]:
            try:
                crop = align_face(image, face.landmarks, policy.settings)
            except FaceError:  # degenerate landmarks: nothing to align, the face is skipped
                continue
            crops.append((crop, {"detected": True, **face.to_json(width, height)}))
    if not crops:
        if policy.mode == "required":
            raise FaceRequestError(f"no face found in the {width}x{height} image (serve.faces=required; detector "
                                   f"{policy.settings.detector}, score >= {policy.settings.min_score})", "NoFace")
        crops.append((image, {"detected": False, "box": [0, 0, width, height], "landmarks": None, "score": None}))
    return crops, found


class FaceRequestError(ValueError):
    """A request the face step cannot answer: a 422 with `kind` as its type."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def prepare_batch(items: Sequence[Any], transform: Callable[[Image.Image], torch.Tensor],
                  max_image_pixels: int, policy: FacePolicy | None = None) -> PreparedBatch:
    """Decode every item on its own and crop its faces: a bad one becomes a 4xx answer, the others still
    run. `policy` None: the whole image is one crop (serve.faces=off)."""
    policy = policy or FacePolicy(mode="off")
    batch = PreparedBatch(size=len(items))
    rows = []
    for index, item in enumerate(items):
        try:
            image = decode_image(request_bytes(item), max_pixels=max_image_pixels)
        except ImageDecodeError as exc:
            batch.errors[index] = error_body(400, str(exc))
            continue
        try:
            crops, found = image_crops(image, policy)
        except FaceRequestError as exc:
            batch.errors[index] = error_body(422, str(exc), exc.kind)
            continue
        batch.found[index] = found
        for crop, face in crops:
            rows.append(transform(crop))
            batch.indices.append(index)
            batch.faces.append(face)
    if rows:
        batch.tensor = torch.stack(rows)
    return batch


def run_model(model: torch.nn.Module, batch: PreparedBatch,
              device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(probabilities [N,K], uncertainty [N]) on CPU for the rows of the batch, or (None, None)."""
    if batch.tensor is None:
        return None, None
    with torch.inference_mode():
        logits, uncertainty = model(batch.tensor.to(device))
        probabilities = torch.softmax(logits.float(), dim=1)
    return probabilities.cpu(), uncertainty.float().reshape(-1).cpu()


def build_answers(batch: PreparedBatch, probabilities: torch.Tensor | None, uncertainty: torch.Tensor | None,
                  class_names: Sequence[str], model_name: str, model_version: str,
                  review: ReviewRule | None = None) -> list[dict[str, Any]]:
    """One JSON answer per item, in batch order: its faces, largest first, each with its prediction and
    its review flag (`review`: the model's rule says a person should look at this answer; None without a
    rule); the first face's answer also at the top level; or the item's error."""
    answers: list[dict[str, Any]] = [{} for _ in range(batch.size)]
    flags = None
    if review is not None and probabilities is not None:
        flags = review.flags(probabilities.max(dim=1).values.double().numpy(), uncertainty.double().numpy())
    for row, index in enumerate(batch.indices):
        probs = probabilities[row].tolist()
        best = max(range(len(probs)), key=probs.__getitem__)
        face = {**batch.faces[row], "label": class_names[best], "probabilities": dict(zip(class_names, probs)),
                "uncertainty": float(uncertainty[row]), "review": None if flags is None else bool(flags[row])}
        answer = answers[index]
        if not answer:
            answer.update({"label": face["label"], "probabilities": face["probabilities"],
                           "uncertainty": face["uncertainty"], "review": face["review"], "faces": [],
                           "faces_found": batch.found.get(index, 0), "model_name": model_name,
                           "model_version": model_version})
        answer["faces"].append(face)
    for index, error in batch.errors.items():
        answers[index] = error
    return answers


class LocalPredictor:
    """The handler's path in-process (no TorchServe): same decoding, face step, transform, model and answers."""

    def __init__(self, model_dir: str | Path, *, model_name: str = "fer", model_version: str = "local",
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, device: str = "cpu", faces: str = "auto",
                 max_faces: int = 8, threads: int = 1) -> None:
        model_dir = Path(model_dir)
        self.device = torch.device(device)
        self.meta = load_meta(model_dir / META_FILE)
        self.model = load_model(model_dir / MODEL_FILE, self.meta, self.device)
        self.transform = build_eval_transform(self.meta)
        self.policy = face_policy(self.meta, faces, max_faces, threads)
        self.review = load_review_rule(model_dir)
        self.class_names = list(self.meta["class_names"])
        self.model_name, self.model_version = model_name, model_version
        self.max_image_pixels = max_image_pixels

    def crops(self, image: bytes) -> list[tuple[Image.Image, dict[str, Any]]]:
        """The crops the model would see for one request body, with their face records (for parity checks
        and pictures); ImageDecodeError / FaceRequestError as the answer's 4xx would say."""
        return image_crops(decode_image(request_bytes(image), max_pixels=self.max_image_pixels), self.policy)[0]

    def predict(self, images: Sequence[bytes]) -> list[dict[str, Any]]:
        batch = prepare_batch(list(images), self.transform, self.max_image_pixels, self.policy)
        probabilities, uncertainty = run_model(self.model, batch, self.device)
        return build_answers(batch, probabilities, uncertainty, self.class_names, self.model_name,
                             self.model_version, self.review)
