"""The registered model as an MLflow pyfunc: RUN/model.safetensors + RUN/meta.json behind `predict`.

Logged with MLflow's models-from-code: this file itself is the model's code (it ends with
`mlflow.models.set_model`), fer_core travels as the model's code path, and the weights load through
safetensors into the network fer_core builds. Nothing is unpickled when the model loads (no
cloudpickled python_model.pkl, no torch.export.load of model.pt2, which stays an artifact).

Input: a float32 batch x[N,3,H,W], already normalised as meta.json says (mean/std, image_size), as a
numpy array. Output: {"probabilities": float32[N,K] (softmax of the logits, class order of
meta.json's class_names), "uncertainty": float32[N]}. Image decoding and resizing stay in serving
(`fer_core.serving.inference`); this flavour is for batch scoring and for checking a registry version.

Importing this module builds one (empty) FERPyfuncModel and hands it to `mlflow.models.set_model`,
as models-from-code requires; the weights load in `load_context`.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow.pyfunc
import numpy as np

MODEL_ARTIFACT = "weights"   # key in `artifacts` -> model.safetensors
META_ARTIFACT = "meta"       # key in `artifacts` -> meta.json
PROGRAM_ARTIFACT = "program"  # key in `artifacts` -> model.pt2 (kept for users; never loaded here)
REVIEW_ARTIFACT = "review"    # key in `artifacts` -> review.json (the served review rule; packaged into the .mar)


class FERPyfuncModel(mlflow.pyfunc.PythonModel):
    """Loads the safetensors weights into FERNet once per process; predicts on CPU."""

    # The tensor signature is given explicitly at log time; without this MLflow inspects predict's type
    # hints at class creation (and warns that there are none, through a filter callers cannot silence).
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from fer_core.model.export import load_inference_model

        with open(context.artifacts[META_ARTIFACT], encoding="utf-8") as handle:
            self.meta = json.load(handle)
        self.module = load_inference_model(context.artifacts[MODEL_ARTIFACT], self.meta)
        self.image_size = int(self.meta["image_size"])

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        import torch

        batch = _as_batch(model_input)
        expected = (3, self.image_size, self.image_size)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise ValueError(f"input must be a float32 batch [N,{','.join(map(str, expected))}] normalised as "
                             f"meta.json says; got shape {tuple(batch.shape)}")
        with torch.no_grad():
            logits, uncertainty = self.module(torch.from_numpy(batch))
        return {
            "probabilities": torch.softmax(logits.float(), dim=1).numpy().astype(np.float32),
            "uncertainty": uncertainty.float().numpy().astype(np.float32),
        }


def _as_batch(model_input: Any) -> np.ndarray:
    """numpy array (or a one-entry dict of one, as MLflow passes named tensors) -> contiguous float32."""
    if isinstance(model_input, dict):
        if len(model_input) != 1:
            raise ValueError(f"expected one input tensor, got {sorted(model_input)}")
        model_input = next(iter(model_input.values()))
    return np.ascontiguousarray(np.asarray(model_input, dtype=np.float32))


mlflow.models.set_model(FERPyfuncModel())
