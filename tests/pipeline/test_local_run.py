"""The whole pipeline on the local Kubeflow runner (real subprocess components), with a real MLflow on
sqlite and a real git + DVC repo whose remote is moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest
from mlflow import MlflowClient

from fer_cli.console import step_console
from fer_core.config import Config
from fer_core.home import default_tracking_uri
from fer_core.versioning import add_and_push, init_repo
from pipelines.runner import local_arguments, run_local
from tests.data.fixtures import rafdb_rows, write_imagefolder, write_rafdb
from tests.docs import doc_block

TINY = {
    "data.image_size": 32, "train.image_size": 32, "train.batch_size": 8, "train.epochs": 1,
    "train.max_steps_per_epoch": 2, "train.workers": 0, "train.device": "cpu", "train.checkpoint_every_steps": 0,
    "train.early_stopping_patience": 0, "evaluate.batch_size": 32, "model.head_pool": 1,
    "validate.max_rejected_share": 0.5,
    # a 2-step model is near chance: the default floor (0.5) would rightly keep it from becoming champion
    "registry.floor": 0.0,
}
MODEL = "fer-e2e"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def dvc_dataset(tmp_path, s3_env):
    """A RAF-DB-format dataset pushed with DVC to S3, then a fresh clone of the repo (empty cache)."""
    boto3.client("s3").create_bucket(Bucket="fer-data")
    repo = tmp_path / "data-repo"
    repo.mkdir()
    _git(repo, "init", "--quiet")
    _git(repo, "config", "user.email", "tests@fer.invalid")
    _git(repo, "config", "user.name", "FER tests")
    init_repo(repo, remote_url="s3://fer-data/dvc")
    write_rafdb(repo / "rafdb", rafdb_rows(per_class_train=10, per_class_test=3))
    version = add_and_push(repo, repo / "rafdb", message="tiny RAF-DB")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
    assert not (clone / "rafdb").exists()  # the data itself is only on the S3 remote
    return clone, version


def _task_dirs(root: Path) -> dict[str, Path]:
    (run_root,) = [path for path in root.iterdir() if path.is_dir() and not path.name.startswith(".")]
    return {path.name: path for path in run_root.iterdir() if path.is_dir()}


def test_pipeline_end_to_end_then_a_worse_model_stays_candidate(dvc_dataset, tmp_path):
    clone, version = dvc_dataset
    config = Config().override({**TINY, "registry.model_name": MODEL})
    store = tmp_path / "model_store"
    arguments = local_arguments(config, dvc_repo=str(clone), dvc_rev=version.rev, dvc_path="rafdb",
                                data_format="rafdb", experiment="e2e", model_store=str(store))
    terminal = io.StringIO()  # what a person sees when the output goes to a pipe or a file
    with step_console(tmp_path / "run1.log", terminal=terminal) as console:
        root = run_local(arguments, tmp_path / "root1")
    tasks = _task_dirs(root)
    assert {"ingest", "validate", "class-weights", "train", "evaluate", "register", "deploy"} <= set(tasks)
    assert "stop-invalid-data" not in tasks
    # the Model artifact carries what evaluate, register and deploy read, not the resume state
    trained = tasks["train"] / "model"
    assert {"best.pt", "model.safetensors", "meta.json"} <= {p.name for p in trained.iterdir()}
    assert not (trained / "checkpoints").exists()
    # the evaluation page (Kubeflow HTML artifact) says which run it is and what each plot shows
    page = (tasks["evaluate"] / "plots").read_text(encoding="utf-8")
    assert "<style>" in page and "MLflow run <code>" in page and "Confusion matrix: rows are true classes" in page
    assert "test_confusion_matrix.png" not in page  # captions are words, not file paths
    # the console: one line per step with its time and figures, the epochs, nothing else; no ANSI in a pipe
    shown = terminal.getvalue()
    assert "\x1b[" not in shown and len(shown.splitlines()) < 30, shown
    assert [task for task, status, _ in console.finished if status == "SUCCESS"] == \
        ["ingest", "validate", "class-weights", "train", "evaluate", "register", "deploy"]
    assert re.search(r"^  (✓|ok) ingest +\d+\.\d s  \d+ images, 0 rejected", shown, re.M), shown
    assert re.search(r"^  (✓|ok) train +\d+\.\d s  best epoch \d+: val accuracy 0\.\d{3}", shown, re.M), shown
    assert re.search(r"^      epoch 1/1: train loss", shown, re.M), shown
    assert re.search(r"^  (✓|ok) evaluate .* test mean class accuracy 0\.\d{3}", shown, re.M), shown
    log = (tmp_path / "run1.log").read_text(encoding="utf-8")
    assert "executor_input" in log and "\x1b[" not in log and len(log.splitlines()) > 10 * len(shown.splitlines())

    client = MlflowClient(default_tracking_uri(), default_tracking_uri())
    first = client.get_model_version_by_alias(MODEL, "champion")
    assert str(first.version) == "1"
    assert set(first.aliases) == {"candidate", "champion"}
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    # a run that says what it is: its name, description and source; the experiment is a model-training one
    assert re.fullmatch(r"resnet18-cbam-mix-rafdb@[0-9a-f]{7}-\d{8}-\d{4}", run.info.run_name), run.info.run_name
    assert "CBAM" in run.data.tags["mlflow.note.content"] and version.rev in run.data.tags["mlflow.note.content"]
    assert run.data.tags["mlflow.source.name"] == "fer-train-and-serve/train"
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    registered = client.get_registered_model(MODEL)
    assert "facial expression" in registered.description.lower() and registered.tags["task"] == "facial-expression-recognition"
    assert first.description.startswith("Quality gate: champion")
    assert run.data.params["train.image_size"] == "32"
    assert "class_weight.neutral" in run.data.params
    assert "val_mean_class_accuracy" in run.data.metrics and "test_mean_class_accuracy" in run.data.metrics
    # which answers to trust: both signals' error AUROC on val and test, the review rule on the version,
    # and inside the packaged archive
    for key in ("val_error_auroc_uncertainty", "val_error_auroc_confidence", "test_error_auroc_uncertainty",
                "test_error_auroc_confidence", "test_aurc_confidence", "test_accuracy_at_90_confidence"):
        assert key in run.data.metrics, key
    assert first.tags["review_signal"] in ("uncertainty", "confidence", "combined")
    assert float(first.tags["review_threshold"]) == run.data.metrics["review_threshold"]
    assert "risk-coverage" in page.lower() or "Which answers to trust" in page
    assert run.data.tags["data.dvc_rev"] == version.rev
    (dataset_input,) = run.inputs.dataset_inputs
    manifest_sha256 = hashlib.sha256((tasks["ingest"] / "dataset" / "manifest.csv").read_bytes()).hexdigest()
    assert run.data.tags["data.digest"] == manifest_sha256
    assert manifest_sha256.startswith(dataset_input.dataset.digest)
    artifacts = {item.path for item in client.list_artifacts(first.run_id)}
    assert {"validation", "class_weights", "plots", "evaluation"} <= artifacts
    # MLflow 3: the model is a LoggedModel linked to the run, and the registered version points at it
    assert first.source.startswith("models:/m-")
    assert client.get_logged_model(first.source.removeprefix("models:/")).source_run_id == first.run_id
    # the champion was packaged for TorchServe into the model store
    assert sorted(path.name for path in store.glob("*.mar")) == ["fer-1.mar"]
    with zipfile.ZipFile(store / "fer-1.mar") as archive:
        assert json.loads(archive.read("review.json"))["signal"] == first.tags["review_signal"]

    # a second run with another learning rate, whose model cannot pass the gate (floor above any
    # accuracy but a perfect one): ingest, validate and class weights come from KFP's cache (each step gets only the config
    # sections it reads), train reruns, and the new version is only a candidate
    arguments = local_arguments(config.override({"train.lr": config.train.lr / 2, "registry.floor": 1.0}),
                                dvc_repo=str(clone), dvc_rev=version.rev, dvc_path="rafdb", data_format="rafdb",
                                experiment="e2e", model_store=str(store))
    terminal = io.StringIO()
    with step_console(tmp_path / "run2.log", terminal=terminal) as console:
        root = run_local(arguments, tmp_path / "root1")
    status = {task: state for task, state, _ in console.finished}
    assert {task: status.get(task) for task in ("ingest", "validate", "class-weights", "train")} == {
        "ingest": "CACHED", "validate": "CACHED", "class-weights": "CACHED", "train": "SUCCESS"}, status
    assert re.search(r"^  (↺|cached) validate .*from the cache", terminal.getvalue(), re.M), terminal.getvalue()
    assert "deploy" not in status
    second = client.get_model_version(MODEL, "2")
    assert set(second.aliases) == {"candidate"}
    assert second.tags["gate.promoted"] == "false"
    assert "floor" in second.tags["gate.reason"]
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(MODEL, "candidate").version) == "2"
    assert sorted(path.name for path in store.glob("*.mar")) == ["fer-1.mar"]
    with zipfile.ZipFile(store / "fer-1.mar") as archive:
        assert json.loads(archive.read("review.json"))["signal"] == first.tags["review_signal"]

    # docs/pipeline.md's snippets, as written but for the model name, version and tracking URI
    use = doc_block("docs/pipeline.md", "## Use the champion", "python")
    use = use.replace('"http://mlflow.fer.svc.cluster.local:5000"', repr(default_tracking_uri()))
    use = use.replace("fer-cbam-resnet", MODEL) + "\nprint(out['probabilities'].shape, out['uncertainty'].shape)\n"
    done = subprocess.run([sys.executable, "-c", use], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "(2, 7) (2,)", done.stderr[-2000:]
    promote = doc_block("docs/pipeline.md", "## Promote, inspect, roll back", "python", gap=".*?")
    promote = promote.replace("fer-cbam-resnet", MODEL).replace('"7"', '"2"')
    done = subprocess.run([sys.executable, "-c", promote], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": default_tracking_uri()})
    assert done.returncode == 0, done.stderr[-2000:]
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"  # promoted to 2, rolled back
    assert client.get_model_version(MODEL, "2").tags.get("gate.manual")  # the hand promotion was recorded

    _run_the_serving_docs_block(tmp_path)


def _run_the_serving_docs_block(tmp_path: Path) -> None:
    """docs/serving.md's "Operating it" block, typed in a folder whose .fer is this test's home, against
    the registry above: package the champion, start TorchServe, status, deploy another version, stop.
    As written but for the model name and the deployed version (version 2, packaged first); free ports
    come from $FER_PARAMS so a server already running on 8080 is left alone."""
    import yaml

    from fer_core.config import load_config
    from tests.conftest import free_port

    block = doc_block("docs/serving.md", "## Operating it")
    assert "fer serve deploy .fer/model_store/fer-4.mar" in block
    block = block.replace("fer-cbam-resnet", MODEL).replace("fer-4.mar", "fer-2.mar")
    user = tmp_path / "user"
    user.mkdir()
    (user / ".fer").symlink_to(Path(os.environ["FER_HOME"]), target_is_directory=True)
    params = load_config().to_dict()
    params["serve"].update({key: free_port() for key in ("inference_port", "management_port", "metrics_port",
                                                         "grpc_inference_port", "grpc_management_port")})
    (user / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    env = {**os.environ, "FER_PARAMS": str(user / "params.yaml"), "MLFLOW_TRACKING_URI": default_tracking_uri(),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    fer = [str(Path(sys.executable).parent / "fer")]
    subprocess.run([*fer, "serve", "package", "--model-uri", f"models:/{MODEL}/2"], cwd=user, env=env, check=True,
                   capture_output=True, timeout=300)
    try:
        done = subprocess.run(["bash", "-e", "-c", block], cwd=user, env=env, capture_output=True, text=True,
                              timeout=600)
    finally:
        subprocess.run([*fer, "serve", "stop"], cwd=user, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (user / ".fer" / "model_store" / "fer-1.mar").is_file()          # the champion, packaged
    decoder, answers, text = json.JSONDecoder(), [], done.stdout
    for start in [match.start() for match in re.finditer(r"^\{", text, re.M)]:
        answers.append(decoder.raw_decode(text, start)[0])
    packaged, started, status, deployed = answers                           # one JSON answer per command
    assert packaged["mar"].endswith("fer-1.mar") and started["started"] is True
    (versions,) = started["models"].values()                               # start loads the newest .mar:
    assert [v["version"] for v in versions] == ["1"] and versions[0]["ready_workers"] >= 1, started  # fer-1
    assert status["running"] is True
    assert deployed["model_version"] == "2" and deployed["mar"].endswith("fer-2.mar"), deployed
    assert done.stdout.rstrip().endswith("stopped")


def test_invalid_data_stops_at_validate_with_the_report(tmp_path):
    # the test split lacks "fear" and "anger": a critical validation failure
    layout = {"train": {name: 4 for name in ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")},
              "test": {name: 2 for name in ("neutral", "happy", "sad", "surprise", "disgust")}}
    source = write_imagefolder(tmp_path / "folder", layout)
    config = Config().override({**TINY, "data.val_fraction": 0.25, "registry.model_name": MODEL})
    arguments = local_arguments(config, source=str(source), data_format="imagefolder", experiment="e2e-invalid",
                                model_store=str(tmp_path / "store"))
    terminal = io.StringIO()
    with pytest.raises(RuntimeError, match="stop-invalid-data"):
        with step_console(tmp_path / "run.log", terminal=terminal):
            run_local(arguments, tmp_path / "root")
    # the console names the failed step and shows its last lines, which say which check failed
    shown = terminal.getvalue()
    assert re.search(r"^  (✗|FAILED) stop-invalid-data", shown, re.M), shown
    assert "last lines of stop-invalid-data" in shown and "RuntimeError" in shown, shown
    tasks = _task_dirs(tmp_path / "root")
    assert "train" not in tasks and "class-weights" not in tasks
    report = json.loads((tasks["validate"] / "report_json" / "report.json").read_text())
    assert report["success"] is False
    failed = [check["name"] for check in report["checks"] if not check["success"] and check["severity"] == "critical"]
    assert failed
    assert (tasks["validate"] / "report").read_text().lstrip().lower().startswith(("<!doctype", "<html"))
    client = MlflowClient(default_tracking_uri(), default_tracking_uri())
    assert client.search_registered_models() == []
