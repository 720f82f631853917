"""Where runs go and what a run records besides training: URIs, experiments, code and data versions.

Every function takes an explicit `run_id` and talks through `MlflowClient`, never the fluent active
run, so the training engine may call it from any thread.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_GIT_COMMIT

from fer_core.home import default_artifact_root, default_tracking_uri

# Versions recorded on every run (tag `version.<package>`): what decides whether a run reproduces.
TRACKED_PACKAGES = ("fer-mlops", "torch", "torchvision", "numpy", "mlflow", "dvc", "great-expectations")
# MLflow's dataset table holds digests of at most 36 characters (String(36) in its SQL schema).
MLFLOW_DIGEST_CHARS = 32

# The MLflow UI opens an experiment by its kind; without the tag MLflow 3 guesses (often GenAI).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
EXPERIMENT_NOTE = ("Facial expression recognition: CBAM-ResNet with class-weighted loss and uncertainty "
                   "mixing, trained by the fer pipeline (Kubeflow) or `fer train`. Each run records its "
                   "config as params, the data version (DVC rev, manifest digest) as tags and dataset "
                   "input, per-epoch metrics, and the model it logged to the registry.")

_configured_uri: str | None = None


def configure(tracking_uri: str | None = None) -> str:
    """Point tracking and the model registry at `tracking_uri` (default: `default_tracking_uri()`)."""
    global _configured_uri
    uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _configured_uri = uri
    return uri


def client() -> MlflowClient:
    """A client on the configured URI (configures the default one on first use)."""
    uri = _configured_uri or configure()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def ensure_experiment(name: str) -> str:
    """The id of experiment `name`, created if missing.

    On a local store (sqlite/file) its artifacts go under the home folder (`default_artifact_root()`),
    never into the current directory; on a tracking server the server decides.
    """
    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise MlflowException(f"experiment {name!r} is deleted; restore it (mlflow experiments restore "
                                  f"--experiment-id {experiment.experiment_id}) or pick another name")
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # made before the kind was set, or by someone else
            mlflow_client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment.experiment_id
    location = default_artifact_root() if _is_local_store(_configured_uri or "") else None
    tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, "mlflow.note.content": EXPERIMENT_NOTE}
    try:
        return mlflow_client.create_experiment(name, artifact_location=location, tags=tags)
    except MlflowException:
        # another process created it between our look-up and create
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def run_name(config: Any, data_name: str, data_rev: str = "") -> str:
    """A run's name that says what it is: method variant, data and its version, time
    (e.g. `resnet18-cbam-mix-rafdb@3f2a9c1-20261202-1430`), instead of MLflow's random words."""
    import time

    model = config.model
    variant = model.arch + ("-cbam" if model.cbam else "") + ("-mix" if model.mixing else "")
    data = data_name + (f"@{data_rev[:7]}" if data_rev else "")
    return f"{variant}-{data}-{time.strftime('%Y%m%d-%H%M')}"


def run_description(config: Any, data_name: str, data_rev: str, source: str) -> str:
    """The run's description (MLflow's `mlflow.note.content`, shown at the top of the run page)."""
    model, train, weights = config.model, config.train, config.weights
    parts = [f"**{model.arch}**" + (" + CBAM" if model.cbam else "") + (" + uncertainty mixing" if model.mixing else ""),
             f"class weights `{weights.scheme}`" + (f" (clipped at {weights.max_weight})" if weights.max_weight else ""),
             f"{train.epochs} epochs at {train.image_size} px, batch {train.batch_size}"]
    data = f"`{data_name}`" + (f" at DVC revision `{data_rev}`" if data_rev else "")
    return f"{', '.join(parts)}; data {data}. Started by {source}."


def _git_commit(repo_dir: Path) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(repo_dir), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def _git_dirty(repo_dir: Path) -> bool | None:
    try:
        result = subprocess.run(["git", "-C", str(repo_dir), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bool(result.stdout.strip()) if result.returncode == 0 else None


def package_versions(packages: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def log_run_context(run_id: str, *, repo_dir: str | Path | None = None) -> dict[str, str]:
    """Tag the run with the code's git commit (when `repo_dir`, default this package's checkout, is
    one; no error otherwise) and the versions of the packages that decide the result. Returns the tags."""
    repo_dir = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parents[2]
    tags = {f"version.{name}": value for name, value in package_versions().items()}
    commit = _git_commit(repo_dir)
    if commit:
        tags[MLFLOW_GIT_COMMIT] = commit
        dirty = _git_dirty(repo_dir)
        if dirty is not None:
            tags["git.dirty"] = str(dirty).lower()
    mlflow_client = client()
    for key, value in tags.items():
        mlflow_client.set_tag(run_id, key, value)
    return tags


def log_data_version(run_id: str, data_dir: str | Path, *, name: str, dvc_rev: str | None = None,
                     dvc_md5: str | None = None, source: str | None = None) -> str:
    """Record the prepared dataset DATA/manifest.csv as the run's training input; returns its digest.

    The digest is the sha256 of manifest.csv (it lists every image's sha256, so it pins the images
    too). The full digest goes to tag `data.digest`; MLflow's dataset entity keeps its first 32 hex
    characters (its schema allows 36). `source` (e.g. the DVC repo URL or an s3:// prefix) defaults to
    the local folder; the DVC revision and out md5, when known, go to tags data.dvc_rev / data.dvc_md5.
    """
    import pandas as pd

    from fer_core.data.prepared import dataset_version, manifest_path

    data_dir = Path(data_dir).resolve()
    version = dataset_version(data_dir)
    digest = version["manifest_sha256"]
    frame = pd.read_csv(manifest_path(data_dir))  # MLflow's dataset entity takes a DataFrame
    dataset = _dataset_from_pandas(frame, source or str(data_dir), name, digest[:MLFLOW_DIGEST_CHARS])
    with warnings.catch_warnings():
        # schema inference hints about integer columns: the manifest's ints never hold missing values
        warnings.simplefilter("ignore", UserWarning)
        entity = dataset._to_mlflow_entity()
    tags = [InputTag(key=MLFLOW_DATASET_CONTEXT, value="training")]
    if dvc_rev:
        tags.append(InputTag(key="dvc_rev", value=dvc_rev))
    mlflow_client = client()
    mlflow_client.log_inputs(run_id, datasets=[DatasetInput(dataset=entity, tags=tags)])
    run_tags = {"data.digest": digest, "data.name": name, "data.path": str(data_dir), "data.rows": str(len(frame)),
                "data.dvc_rev": dvc_rev or "", "data.dvc_md5": dvc_md5 or "", "data.source": source or str(data_dir)}
    for key, value in run_tags.items():
        mlflow_client.set_tag(run_id, key, value)
    return digest


def _dataset_from_pandas(frame: Any, source: str, name: str, digest: str) -> Any:
    import mlflow.data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # see log_data_version
        try:
            return mlflow.data.from_pandas(frame, source=source, name=name, digest=digest)
        except MlflowException:
            # a source MLflow has no resolver for (e.g. a git URL of a DVC repo): keep it in the tags only
            return mlflow.data.from_pandas(frame, name=name, digest=digest)


def log_artifacts_dir(run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    """Upload a file or a folder (validation report, plots, metrics.json) to the run's artifacts."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"cannot log {path} to MLflow run {run_id}: it does not exist")
    mlflow_client = client()
    if path.is_dir():
        mlflow_client.log_artifacts(run_id, str(path), artifact_path)
    else:
        mlflow_client.log_artifact(run_id, str(path), artifact_path)

