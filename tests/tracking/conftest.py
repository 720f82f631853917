"""A real MLflow store (sqlite in a tmp dir, shared by this folder's tests: its schema migration costs
seconds) and a real run folder with a tiny exported model (32x32 input, random weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fer_core.config import Config
from fer_core.labels import CLASS_NAMES_7
from fer_core.model import build_model
from fer_core.model.export import write_model_files
from fer_core.training.engine import make_meta

SIZE = 32


def tiny_config() -> Config:
    return Config().override({"train.image_size": SIZE, "model.head_pool": 1, "train.epochs": 2})


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def mlflow_store(tracking_uri, monkeypatch):
    """Every test talks to the shared sqlite store; artifacts land under the test's own FER_HOME."""
    from fer_core import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return tracking.configure(tracking_uri)


@pytest.fixture(scope="session")
def tiny_model():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = tiny_config()
    model = build_model(config.model, num_classes=len(CLASS_NAMES_7)).train()
    with torch.no_grad():  # non-default BatchNorm statistics, so eval mode matters
        for _ in range(2):
            model.predict(torch.randn(4, 3, SIZE, SIZE) * 2 + 1)
    torch.set_num_threads(previous)
    return model.eval()


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory, tiny_model) -> Path:
    """RUN/model.safetensors, model.pt2, meta.json, history.json, config.json as `fer train` writes them."""
    run_dir = tmp_path_factory.mktemp("run")
    config = tiny_config()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    best = {"val_loss": 1.5, "val_accuracy": 0.4, "val_mean_class_accuracy": 0.35, "val_macro_f1": 0.3}
    meta = make_meta(config, CLASS_NAMES_7, 2, best, [1.0] * len(CLASS_NAMES_7))
    write_model_files(tiny_model, run_dir, meta, SIZE)
    torch.set_num_threads(previous)
    history = [{"epoch": 1, "train_loss": 2.0, **{k: v - 0.1 for k, v in best.items()}},
               {"epoch": 2, "train_loss": 1.8, **best}]
    (run_dir / "history.json").write_text(json.dumps(history))
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    return run_dir
