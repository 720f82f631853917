"""Load backbone weights (ImageNet / MS-Celeb-1M ResNet state_dicts, or our own runs) explicitly.

One function, `load_backbone_weights`, and a `LoadReport` that lists what was loaded, what the model has
that the file lacks (missing), what the file has that the model lacks (unexpected) and what both have in
different shapes. Loading never hides a mismatch behind `strict=False`: matched tensors are copied into a
full copy of the model's own state_dict, which is then loaded strictly; the report is logged and
returned; a file that matches nothing raises. Nothing is downloaded from the internet: a URI is fetched
from the project's own stores (S3, MLflow) only.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

KEY_MAPS = ("", "torchvision")
# torchvision ResNet keys that exist in our trunk (its `fc.*` is ImageNet's classifier, never ours).
TORCHVISION_TRUNK_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
BACKBONE_PREFIX = "backbone."
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class WeightLoadError(ValueError):
    """A weights file that cannot be used; the message names the source."""


@dataclass
class LoadReport:
    """What `load_backbone_weights` did; `summary()` is the one line that gets logged."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.source}: loaded {len(self.loaded)} tensors",
                 f"missing {len(self.missing)}{_sample(self.missing)}",
                 f"unexpected {len(self.unexpected)}{_sample(self.unexpected)}",
                 f"shape mismatch {len(self.shape_mismatch)}"
                 + _sample([f"{k} file{list(a)} vs model{list(b)}" for k, a, b in self.shape_mismatch])]
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "loaded": self.loaded, "missing": self.missing,
                "unexpected": self.unexpected,
                "shape_mismatch": [[k, list(a), list(b)] for k, a, b in self.shape_mismatch]}


def _sample(keys: list[str], limit: int = 4) -> str:
    if not keys:
        return ""
    more = f", ... +{len(keys) - limit}" if len(keys) > limit else ""
    return f" ({', '.join(keys[:limit])}{more})"


def resolve_source(source: str, dst_dir: str | os.PathLike) -> Path:
    """A local weights file for `source`: a path, file://, or s3:// / runs:/ / models:/ (via MLflow).

    MLflow is imported here only, so the model package imports no MLOps package.
    """
    if not source:
        raise WeightLoadError("no weights source given (model.pretrained is empty)")
    if source.startswith("file://"):
        path = Path(source[len("file://"):])
    elif "://" in source or source.startswith(("runs:/", "models:/")):
        import mlflow.artifacts  # lazy: only a remote source needs it

        try:
            path = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst_dir)))
        except Exception as exc:
            raise WeightLoadError(f"could not fetch weights from {source}: {exc}") from exc
    else:
        path = Path(source)
    if path.is_dir():
        candidates = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
        if len(candidates) != 1:
            raise WeightLoadError(
                f"{source} is a folder with {len(candidates)} weight files ({', '.join(p.name for p in candidates)}); "
                "point model.pretrained at one file"
            )
        path = candidates[0]
    if not path.is_file():
        raise WeightLoadError(f"weights file not found: {source}")
    return path


def read_state_dict(path: Path, source: str) -> dict[str, Tensor]:
    """torch.load(weights_only=True); unwraps {'state_dict': ...} / {'model': ...} checkpoints."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightLoadError(f"{source}: not a loadable weights file (torch.load weights_only=True): {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise WeightLoadError(f"{source}: expected a state_dict (a mapping of names to tensors), got {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise WeightLoadError(f"{source}: holds no tensors")
    return tensors


def map_keys(state_dict: Mapping[str, Tensor], key_map: str) -> tuple[dict[str, Tensor], list[str]]:
    """Rename file keys to our model's keys; returns (mapped, dropped file keys).

    "" (identity) expects our own FERNet keys; "torchvision" maps conv1/bn1/layer1..4 under
    `backbone.` and drops the rest (e.g. ImageNet's `fc.*`). A DDP `module.` prefix is stripped first.
    """
    if key_map not in KEY_MAPS:
        raise WeightLoadError(f"unknown model.pretrained_key_map {key_map!r}; expected one of {KEY_MAPS}")
    mapped: dict[str, Tensor] = {}
    dropped: list[str] = []
    for key, value in state_dict.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if key_map == "torchvision":
            if not name.startswith(TORCHVISION_TRUNK_PREFIXES):
                dropped.append(key)
                continue
            name = BACKBONE_PREFIX + name
        mapped[name] = value
    return mapped, dropped


def load_backbone_weights(model: nn.Module, source: str, key_map: str = "") -> LoadReport:
    """Copy every matching tensor of `source` into `model` and report the rest.

    Raises WeightLoadError when nothing matched (wrong file or wrong key_map), so a typo never trains
    from scratch by accident.
    """
    with tempfile.TemporaryDirectory(prefix="fer-weights-") as tmp:
        path = resolve_source(source, tmp)
        file_state = read_state_dict(path, source)
    mapped, dropped = map_keys(file_state, key_map)
    own = model.state_dict()
    report = LoadReport(source=source, unexpected=list(dropped))
    merged = dict(own)
    for name, value in mapped.items():
        if name not in own:
            report.unexpected.append(name)
        elif tuple(value.shape) != tuple(own[name].shape):
            report.shape_mismatch.append((name, tuple(value.shape), tuple(own[name].shape)))
        else:
            merged[name] = value.to(dtype=own[name].dtype)
            report.loaded.append(name)
    report.missing = [name for name in own if name not in mapped]
    if not report.loaded:
        raise WeightLoadError(
            f"no tensor of {source} matches the model (key_map={key_map!r}): {report.summary()}; "
            "check model.pretrained_key_map ('torchvision' for torchvision/MS-Celeb ResNet files)"
        )
    model.load_state_dict(merged, strict=True)
    logger.info("backbone weights %s", report.summary())
    return report
