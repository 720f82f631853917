"""The train component's body (the session's tiny tracked training, components/conftest.py); its run on
the local Kubeflow runner is the pipeline's (tests/pipeline/test_local_run.py: train needs ingest,
validate and class weights before it)."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient


def test_body_trains_tracks_and_hands_on_only_what_later_steps_read(trained):
    run_dir = Path(trained["model"].path)
    assert {"best.pt", "model.safetensors", "meta.json", "weights.json", "mlflow_run.json"} <= {
        path.name for path in run_dir.iterdir()}
    assert not (run_dir / "checkpoints").exists()  # the resume state is the step's own
    assert trained["model"].metadata["mlflow_run_id"] == trained["run_id"]
    assert 0.0 <= trained["val_mean_class_accuracy"] == trained["metrics"].metadata["val_mean_class_accuracy"]
    run = MlflowClient(trained["tracking_uri"]).get_run(trained["run_id"])
    assert run.data.params["train.image_size"] == "32" and run.data.tags["fer.orchestrator"] == "kubeflow"
