"""The class-weights component: its body through `.python_func`, and after ingest on the local runner."""

from __future__ import annotations

import json

from kfp import dsl

from components.class_weights import class_weights
from components.conftest import artifact, sections
from components.ingest import ingest
from fer_core.config import Config


def test_body_writes_the_weights_the_train_step_reads(prepared, tmp_path):
    params = sections(Config().override({"weights.scheme": "inverse", "weights.max_weight": 100.0}))
    weights, metrics = artifact(dsl.Artifact, tmp_path, "weights"), artifact(dsl.Metrics, tmp_path, "metrics")
    class_weights.python_func(dataset=dsl.Dataset(name="dataset", uri=str(prepared)), data_config=params["data_config"],
                              weights_config=params["weights_config"], weights=weights, metrics=metrics)
    report = json.loads((tmp_path / "weights" / "weights.json").read_text())
    assert report["scheme"] == "inverse" and set(report["weights"]) == set(report["class_names"])
    assert metrics.metadata == {f"weight_{name}": round(value, 6) for name, value in report["weights"].items()}
    assert json.loads((tmp_path / "metrics").read_text()) == metrics.metadata  # the file KFP's cache checks
    assert (tmp_path / "weights" / "weights.png").is_file()  # the bar plot beside weights.json
    assert (tmp_path / "weights" / "class_distribution.png").is_file()


def test_task_after_ingest_on_the_local_runner(raw_folder, local_runner):
    params = sections()

    @dsl.pipeline
    def ingest_then_weights():
        data = ingest(source=str(raw_folder), data_format="imagefolder", dvc_repo="", dvc_rev="", dvc_path="",
                      source_fingerprint="", data_config=params["data_config"], s3_endpoint_url="")
        class_weights(dataset=data.outputs["dataset"], data_config=params["data_config"],
                      weights_config=params["weights_config"])

    ingest_then_weights()
    (weights_json,) = local_runner.glob("*/class-weights/weights/weights.json")
    assert json.loads(weights_json.read_text())["scheme"] == params["weights_config"]["scheme"]
