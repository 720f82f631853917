"""The evaluate component's body on the session's tiny training; its local-runner run is the pipeline's
(tests/pipeline/test_local_run.py)."""

from __future__ import annotations

from kfp import dsl
from mlflow import MlflowClient

from components.conftest import artifact, sections
from components.evaluate import evaluate


def test_body_scores_the_test_split_into_kfp_and_mlflow(trained, prepared, tmp_path):
    params = sections()
    metrics, confusion = artifact(dsl.Metrics, tmp_path, "metrics"), artifact(dsl.ClassificationMetrics, tmp_path, "c")
    plots = artifact(dsl.HTML, tmp_path, "plots")
    value = evaluate.python_func(dataset=dsl.Dataset(name="dataset", uri=str(prepared)), model=trained["model"],
                                 train_config=params["train_config"], evaluate_config=params["evaluate_config"],
                                 mlflow_run_id=trained["run_id"], mlflow_tracking_uri=trained["tracking_uri"],
                                 s3_endpoint_url="", metrics=metrics, confusion=confusion, plots=plots)
    assert value == metrics.metadata["test_mean_class_accuracy"]
    matrix = confusion.metadata["confusionMatrix"]["rows"]
    assert sum(sum(row["row"]) for row in matrix) == 14  # the test split's 2 images per class
    assert "Evaluation on the test split" in (tmp_path / "plots").read_text()
    run = MlflowClient(trained["tracking_uri"]).get_run(trained["run_id"])
    assert run.data.metrics["test_mean_class_accuracy"] == value
