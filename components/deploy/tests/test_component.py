"""The deploy component's body: the champion packaged and published to a model store folder (no
running TorchServe: serving is tested in tests/serving/, the hot swap in tests/pipeline/)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from kfp import dsl

from components.conftest import artifact, sections
from components.deploy import deploy
from components.register import register


def test_body_publishes_the_champion_as_a_mar(trained, tmp_path):
    params = sections()
    register.python_func(model=trained["model"], registry_config=params["registry_config"],
                         mlflow_run_id=trained["run_id"], mlflow_tracking_uri=trained["tracking_uri"],
                         s3_endpoint_url="", decision=artifact(dsl.Markdown, tmp_path, "decision"))
    mar = artifact(dsl.Model, tmp_path, "mar")
    store = tmp_path / "store"
    published = deploy.python_func(registry_config=params["registry_config"], serve_config=params["serve_config"],
                                   mlflow_tracking_uri=trained["tracking_uri"], s3_endpoint_url="",
                                   model_store=str(store), torchserve_management_url="", torchserve_key_file="",
                                   torchserve_deployment="", mar=mar)
    assert Path(published).parent == store and Path(published).suffix == ".mar"
    with zipfile.ZipFile(published) as archive:
        assert "model.safetensors" in archive.namelist()
    assert mar.metadata["deployed"] is False  # published only: no server was named


def test_body_refuses_a_management_url_without_a_token(trained, tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHSERVE_MANAGEMENT_TOKEN", raising=False)
    params = sections()
    with pytest.raises(ValueError, match="management token"):
        deploy.python_func(registry_config=params["registry_config"], serve_config=params["serve_config"],
                           mlflow_tracking_uri=trained["tracking_uri"], s3_endpoint_url="",
                           model_store=str(tmp_path / "store"), torchserve_management_url="http://127.0.0.1:9",
                           torchserve_key_file="", torchserve_deployment="", mar=artifact(dsl.Model, tmp_path, "mar"))
