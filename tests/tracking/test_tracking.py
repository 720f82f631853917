"""MLflowCallback, run context and data inputs against a real sqlite MLflow store."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fer_core import tracking
from fer_core.labels import CLASS_NAMES_7
from fer_core.training.callbacks import Callback, TrainContext, TrainResult
from fer_core.versioning import file_sha256
from tests.tracking.conftest import tiny_config


def new_run(name: str = "tests") -> str:
    experiment_id = tracking.ensure_experiment(f"{name}-{uuid.uuid4().hex[:8]}")
    return tracking.client().create_run(experiment_id).info.run_id


def context(run_dir: Path, resumed: bool = False, epochs: int = 2) -> TrainContext:
    config = tiny_config().override({"train.epochs": epochs})
    return TrainContext(
        config=config.to_dict(), run_dir=run_dir, data_dir=run_dir / "data", class_names=list(CLASS_NAMES_7),
        train_counts=[10, 40, 5, 8, 3, 2, 6], class_weights=[0.5, 0.1, 1.0, 0.6, 1.6, 2.5, 0.8], num_train=74,
        num_val=14, device="cpu", world_size=1, start_epoch=1 if resumed else 0, resumed=resumed,
        num_parameters=12345)


def epoch_metrics(epoch: int) -> dict[str, float]:
    return {"epoch": epoch, "train_loss": 2.0 / epoch, "val_mean_class_accuracy": 0.2 * epoch, "lr_0": 1e-3}


def test_experiment_artifacts_live_under_fer_home(fer_home):
    name = f"exp-{uuid.uuid4().hex[:8]}"
    experiment_id = tracking.ensure_experiment(name)
    assert tracking.ensure_experiment(name) == experiment_id  # idempotent
    location = tracking.client().get_experiment(experiment_id).artifact_location
    assert location.startswith((fer_home / "mlartifacts").as_uri())


def test_callback_logs_params_metrics_and_artifacts_from_another_thread(run_folder):
    run_id = new_run()
    callback = tracking.MLflowCallback(run_id)
    assert isinstance(callback, Callback)
    result = TrainResult(run_dir=run_folder, best_epoch=2, best_metrics={"val_mean_class_accuracy": 0.4},
                         epochs_completed=2, stopped_early=False)

    def engine() -> None:  # the engine may run in a thread with no fluent active run
        callback.on_train_start(context(run_folder))
        for epoch in (1, 2):
            callback.on_epoch_end(epoch, epoch_metrics(epoch))
        callback.on_checkpoint(run_folder / "checkpoints" / "last.pt")
        callback.on_train_end(result)

    thread = threading.Thread(target=engine)
    thread.start()
    thread.join()

    client = MlflowClient()
    run = client.get_run(run_id)
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["train.lr"] == "0.0002" and params["train.image_size"] == "32" and params["model.arch"] == "resnet18"
    assert params["registry.gate_metric"] == "val_mean_class_accuracy"
    assert params["class_weight.disgust"] == "2.5" and params["train_count.happy"] == "40"
    assert (tags["device"], tags["world_size"], tags["num_parameters"]) == ("cpu", "1", "12345")
    assert tags["resumed"] == "false"
    history = client.get_metric_history(run_id, "val_mean_class_accuracy")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 0.2), (2, 0.4)]
    assert "epoch" not in metrics and metrics["lr_0"] == 1e-3
    assert metrics["best_val_mean_class_accuracy"] == 0.4 and metrics["best_epoch"] == 2
    artifacts = {item.path for item in client.list_artifacts(run_id)}
    assert {"history.json", "meta.json", "config.json"} <= artifacts
    # the weights are logged once, with the run folder's weights.json (params carry them too)
    assert "class_weights.json" not in artifacts


def test_step_losses_land_on_the_first_reported_step_of_each_period():
    """The loop reports steps only when it reads its figures (every train.sync_every_steps, at
    checkpoints and epoch ends): log_every_steps=10 with reports at 4, 8, 12, ... logs at 12 and 20."""
    run_id = new_run()
    callback = tracking.MLflowCallback(run_id, log_every_steps=10)
    for step in (4, 8, 12, 16, 20, 24, 27):
        callback.on_step_end(step, {"train_loss_running": step / 100})
    history = MlflowClient().get_metric_history(run_id, "train_loss_running")
    assert [(m.step, m.value) for m in history] == [(12, 0.12), (20, 0.2)]


def test_resumed_run_keeps_its_params_and_tags_what_changed(run_folder):
    run_id = new_run()
    tracking.MLflowCallback(run_id).on_train_start(context(run_folder, epochs=2))
    tracking.MLflowCallback(run_id).on_train_start(context(run_folder, resumed=True, epochs=5))  # no error
    run = MlflowClient().get_run(run_id)
    assert run.data.params["train.epochs"] == "2"
    assert run.data.tags["resume_changed.train.epochs"] == "2 -> 5" and run.data.tags["resumed"] == "true"


def test_run_context_tags_git_commit_and_versions(tmp_path):
    repo = tmp_path / "code"
    repo.mkdir()
    for args in (["init", "-q"], ["config", "user.name", "t"], ["config", "user.email", "t@fer.invalid"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    (repo / "a.txt").write_text("a")
    subprocess.run(["git", "-C", str(repo), "add", "a.txt"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "a"], check=True)
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()

    run_id = new_run()
    tracking.log_run_context(run_id, repo_dir=repo)
    tags = MlflowClient().get_run(run_id).data.tags
    assert tags["mlflow.source.git.commit"] == commit and tags["git.dirty"] == "false"
    assert tags["version.torch"].startswith("2.") and tags["version.mlflow"] == "3.17.2"

    other = new_run()
    tracking.log_run_context(other, repo_dir=tmp_path / "not-a-repo")  # no error outside git
    assert "mlflow.source.git.commit" not in MlflowClient().get_run(other).data.tags


def test_data_version_is_recorded_as_a_training_input(tmp_path):
    data = tmp_path / "prepared"
    data.mkdir()
    (data / "manifest.csv").write_text("path,label,label_name,split,source_id,sha256,width,height\n"
                                       "images/a.png,1,happy,train,a.jpg,00ff,32,32\n"
                                       "images/b.png,0,neutral,val,b.jpg,ff00,32,32\n")
    digest = file_sha256(data / "manifest.csv")
    run_id = new_run()
    returned = tracking.log_data_version(run_id, data, name="rafdb-synth", dvc_rev="abc123", dvc_md5="d41d.dir",
                                         source="s3://bucket/raw")
    assert returned == digest
    run = MlflowClient().get_run(run_id)
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "rafdb-synth"
    assert dataset_input.dataset.digest == digest[: tracking.runs.MLFLOW_DIGEST_CHARS]
    assert json.loads(dataset_input.dataset.source)["uri"] == "s3://bucket/raw"
    assert {tag.key: tag.value for tag in dataset_input.tags}["mlflow.data.context"] == "training"
    tags = run.data.tags
    assert (tags["data.digest"], tags["data.dvc_rev"], tags["data.dvc_md5"]) == (digest, "abc123", "d41d.dir")


def test_log_artifacts_dir_uploads_a_folder_and_says_when_missing(tmp_path):
    report = tmp_path / "validation"
    report.mkdir()
    (report / "report.json").write_text("{}")
    run_id = new_run()
    tracking.log_artifacts_dir(run_id, report, "validation")
    assert [item.path for item in MlflowClient().list_artifacts(run_id, "validation")] == ["validation/report.json"]
    with pytest.raises(FileNotFoundError, match="nope"):
        tracking.log_artifacts_dir(run_id, tmp_path / "nope")
