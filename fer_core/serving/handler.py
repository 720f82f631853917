"""TorchServe handler for the exported FER model: image bytes in, every face's label, probabilities and
uncertainty out (the face step of fer_core.data.faces, as the training crops were made).

Thin on purpose: it subclasses TorchServe's BaseHandler and overrides only what differs (loading
model.safetensors into the network meta.json describes, never a pickle or a .pt2; decoding any image
mode; per-item errors in a batch); the work is
in fer_core.serving.inference, which LocalPredictor also runs in-process, so a served prediction
equals an in-process one on the same bytes.

TorchServe answers a whole batch with one status unless a handler sets a status per request
(`context.set_response_status(code, phrase, idx=i)`); that is how one bad image in a batch gets its own
4xx while the other requests of the batch are answered normally.

TorchServe loads this file as a top-level module and takes its one class as the entry point, so this
module defines exactly one class and no module-level `handle`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from ts.torch_handler.base_handler import BaseHandler

from fer_core.serving import inference

logger = logging.getLogger(__name__)


class FerHandler(BaseHandler):
    """Serves model.safetensors + meta.json: x[B,3,H,W] -> (logits[B,K], uncertainty[B])."""

    def initialize(self, context) -> None:
        properties = context.system_properties
        model_dir = Path(properties["model_dir"])
        self.context = context
        self.manifest = context.manifest
        gpu_id = properties.get("gpu_id")
        use_cuda = torch.cuda.is_available() and gpu_id is not None
        self.device = torch.device(f"cuda:{gpu_id}" if use_cuda else "cpu")
        serialized = self.manifest["model"].get("serializedFile", inference.MODEL_FILE)
        self.model_pt_path = str(model_dir / serialized)
        self.meta = inference.load_meta(model_dir / inference.META_FILE)
        self.model = inference.load_model(self.model_pt_path, self.meta, self.device)
        self.class_names = list(self.meta["class_names"])
        self.transform = inference.build_eval_transform(self.meta)
        self.review = inference.load_review_rule(model_dir)
        handler_config = (getattr(context, "model_yaml_config", None) or {}).get("handler") or {}
        threads = int(handler_config.get("torch_threads", 0))
        if threads > 0:
            # One worker = one process; on a shared CPU, OpenMP teams larger than the cores a worker
            # really gets spin at barriers (measured: 2 threads 50x slower than 1 on a busy 2-core host).
            torch.set_num_threads(threads)
        self.max_image_pixels = int(handler_config.get("max_image_pixels", inference.DEFAULT_MAX_IMAGE_PIXELS))
        # the face step follows the model's meta.json (how its training crops were made)
        self.policy = inference.face_policy(self.meta, str(handler_config.get("faces", "auto")),
                                            int(handler_config.get("max_faces", 8)), threads)
        self.model_name = self.manifest["model"].get("modelName") or getattr(context, "model_name", "")
        self.model_version = str(self.manifest["model"].get("modelVersion", ""))
        self._warm_up(int(properties.get("batch_size") or 1))
        self.initialized = True
        logger.info("loaded %s version %s from %s (%d classes, %spx input)", self.model_name,
                    self.model_version, self.model_pt_path, len(self.class_names), self.meta["image_size"])

    def _warm_up(self, batch_size: int) -> None:
        """Run every batch size once at load: the first call at a new shape pays one-off kernel setup
        (hundreds of ms), which would otherwise land on the first real requests of each size."""
        size = int(self.meta["image_size"])
        with torch.inference_mode():
            for rows in range(1, max(1, batch_size) + 1):
                self.model(torch.zeros(rows, 3, size, size, device=self.device))

    def preprocess(self, data: list[Any]) -> inference.PreparedBatch:
        return inference.prepare_batch(data, self.transform, self.max_image_pixels, self.policy)

    def inference(self, data: inference.PreparedBatch, *args, **kwargs):
        probabilities, uncertainty = inference.run_model(self.model, data, self.device)
        return data, probabilities, uncertainty

    def explain_handle(self, data_preprocess: inference.PreparedBatch, raw_data) -> list[dict[str, Any]]:
        """/explanations/NAME: this model has no explainer (TorchServe's default needs Captum set up and
        failed with an AttributeError, 503). Every request gets a clear 404 instead."""
        message = ("explanations are not served for this model; POST the image to /predictions/"
                   f"{self.model_name} (its `uncertainty` is the model's own per-image trust)")
        answers = []
        for index in range(data_preprocess.size):
            self.context.set_response_status(404, message, idx=index)
            answers.append(inference.error_body(404, message, kind="NotSupported"))
        return answers

    def postprocess(self, data) -> list[dict[str, Any]]:
        batch, probabilities, uncertainty = data
        answers = inference.build_answers(batch, probabilities, uncertainty, self.class_names,
                                          self.model_name, self.model_version, self.review)
        for index, error in batch.errors.items():
            self.context.set_response_status(error["code"], error["message"], idx=index)
        return answers
