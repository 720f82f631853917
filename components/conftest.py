"""Fixtures for the component tests (components/<name>/tests/): a small raw dataset, its prepared form,
the local Kubeflow runner, and one tiny tracked training shared by the train/evaluate/register/deploy
tests. Every component is tested twice: its body through `.python_func` with artifacts on local paths,
and as a task on the local runner (`kfp.local.SubprocessRunner`), alone or in a two-step pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from kfp import dsl

from fer_core.config import Config
from pipelines.fer_pipeline import config_parameters
from tests.conftest import fer_home  # noqa: F401 - the same isolated home folder as tests/
from tests.data.fixtures import write_imagefolder

CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")
TINY = {"data.image_size": 32, "train.image_size": 32, "train.batch_size": 8, "train.epochs": 1,
        "train.max_steps_per_epoch": 2, "train.workers": 0, "train.device": "cpu",
        "train.checkpoint_every_steps": 0, "train.early_stopping_patience": 0, "evaluate.batch_size": 32,
        "model.head_pool": 1, "registry.floor": 0.0, "registry.model_name": "fer-components"}


def sections(config: Config | None = None) -> dict[str, dict]:
    """The pipeline's config section parameters (data_config, ...) of CONFIG (default: the tiny one)."""
    return config_parameters(config or Config().override(TINY))


def artifact(kind, folder: Path, name: str):
    """An output artifact on a local path, as KFP's executor hands one to a component body."""
    folder.mkdir(parents=True, exist_ok=True)
    return kind(name=name, uri=str(folder / name))


@pytest.fixture(scope="session")
def raw_folder(tmp_path_factory) -> Path:
    layout = {"train": {name: 6 for name in CLASSES}, "test": {name: 2 for name in CLASSES}}
    return write_imagefolder(tmp_path_factory.mktemp("raw") / "folder", layout)


@pytest.fixture(scope="session")
def prepared(raw_folder, tmp_path_factory) -> Path:
    from fer_core.steps import ingest_step

    out = tmp_path_factory.mktemp("prepared") / "dataset"
    ingest_step(out, Config().override({**TINY, "data.val_fraction": 0.25}), source=str(raw_folder),
                fmt="imagefolder")
    return out


@pytest.fixture
def local_runner(tmp_path):
    """KFP's local runner in this interpreter's environment; artifacts under tmp_path/root."""
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    return tmp_path / "root"


@pytest.fixture(scope="session")
def trained(prepared, tmp_path_factory):
    """One tiny training through the train component's body, tracked in its own sqlite store:
    (model artifact, MLflow run id, tracking URI, home folder)."""
    from components.train import train

    work = tmp_path_factory.mktemp("trained")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FER_HOME", str(work / "home"))
        # the body exports the tracking URI (use_endpoints, mlflow): undone when the fixture is built
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_REGISTRY_URI", uri)
        model = artifact(dsl.Model, work, "model")
        metrics = artifact(dsl.Metrics, work, "metrics")
        weights = artifact(dsl.Artifact, work, "weights")
        report = artifact(dsl.Artifact, work, "report")
        params = sections()
        outputs = train.python_func(
            dataset=dsl.Dataset(name="dataset", uri=str(prepared)), validation_report=report, weights=weights,
            data_config=params["data_config"], model_config=params["model_config"],
            train_config=params["train_config"], weights_config=params["weights_config"],
            evaluate_config=params["evaluate_config"], experiment="components", mlflow_tracking_uri=uri,
            s3_endpoint_url="", model=model, metrics=metrics)
    return {"model": model, "metrics": metrics, "run_id": outputs.mlflow_run_id,
            "val_mean_class_accuracy": outputs.val_mean_class_accuracy, "tracking_uri": uri,
            "home": work / "home"}
