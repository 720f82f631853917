"""The model: CBAM-ResNet trunk + uncertainty heads (docs/method.md sections 1-2). Imports no MLOps package."""

from fer_core.model.network import FERNet, build_model, count_parameters, uncertainty_from_logvar

__all__ = ["FERNet", "build_model", "count_parameters", "uncertainty_from_logvar"]
