"""The steps of one pipeline run, on plain folders: what the Kubeflow components (components/), the
DVC stages (dvc.yaml, through the `fer` CLI) and the pipeline benchmark all call.

Each step takes a resolved `Config`, reads the folders the previous steps wrote, and writes its own;
the MLflow run of a pipeline run is created by `train_step` and continued by `evaluate_step` and
`register_step` through its run id, so the steps can run in separate processes (or pods).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

from fer_core.config import Config
from fer_core.data import prepared
from fer_core.io import read_json, write_json


@contextlib.contextmanager
def _mlflow_run(run_id: str, tracking_uri: str | None) -> Iterator[Any]:
    """An MlflowClient on the tracking URI for one step's share of a pipeline run; any error marks the
    run FAILED (the run spans train, evaluate and register, each possibly in its own process)."""
    from mlflow import MlflowClient

    from fer_core import tracking

    uri = tracking.configure(tracking_uri)
    client = MlflowClient(uri, uri)
    try:
        yield client
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise


# ------------------------------------------------------------------------------------------- ingest

def ingest_step(out_dir: str | Path, config: Config, *, source: str = "", fmt: str = "rafdb", dvc_repo: str = "",
                dvc_rev: str = "", dvc_path: str = "", progress: bool = False) -> dict[str, Any]:
    """Raw data (a folder, s3://bucket/prefix, or `dvc_path` of a DVC repo at `dvc_rev`) -> prepared dataset.

    Writes OUT/data_version.json (manifest digest, DVC repo/rev/md5, source) for tracking. A synthetic
    set's truth sidecar (synth_truth.csv) is carried into OUT so evaluation can score the uncertainty.
    """
    from fer_core.data.ingest import ingest
    from fer_core.versioning import fetch_dataset

    out = Path(out_dir)
    version: dict[str, Any] = {"source": source, "format": fmt}
    with tempfile.TemporaryDirectory(prefix="fer-dvc-") as work:
        if dvc_repo:
            if not dvc_path:
                raise ValueError("a DVC source needs the dataset's path inside the repo (dvc_path)")
            fetched = fetch_dataset(dvc_repo, dvc_path, dvc_rev or None, Path(work) / "raw")
            raw: str = str(Path(work) / "raw")
            version.update(source=f"{dvc_repo}:{dvc_path}@{fetched.rev}", dvc_repo=dvc_repo, dvc_path=dvc_path,
                           dvc_rev=fetched.rev, dvc_md5=fetched.md5)
        elif source:
            raw = source
        else:
            raise ValueError("no dataset source: give a folder, an s3:// URI, or a DVC repo + path")
        summary = ingest(fmt, raw, out, config.data, progress=progress)
        truth = Path(raw) / prepared.TRUTH
        if not raw.startswith("s3://") and truth.is_file():
            shutil.copyfile(truth, out / prepared.TRUTH)
    version.update(prepared.dataset_version(out))
    write_json(out / prepared.DATA_VERSION, version)
    summary["data_version"] = version
    return summary


# ----------------------------------------------------------------------------------------- validate

def validate_step(data_dir: str | Path, report_dir: str | Path | None, config: Config, *, check_images: bool = True,
                  image_workers: int = 2):
    """Great Expectations suite on DATA; report.json + report.html + Data Docs in REPORT_DIR (default
    DATA/validation). Returns the result without raising, so the report is always written;
    `fer_core.validation.report.failure_summary` names the failed checks."""
    from fer_core.validation import validate_dataset

    return validate_dataset(data_dir, config.validate, report_dir, check_images=check_images,
                            image_workers=image_workers)


# ------------------------------------------------------------------------------------- class weights

def class_weights_step(data_dir: str | Path, out_file: str | Path, config: Config, *,
                       plot: bool = True) -> dict[str, Any]:
    """OUT_FILE (weights.json: scheme, counts and weight per class, as in RUN/weights.json) from the train
    split's counts; unless `plot` is False, a bar plot beside it (same name, .png) and the class
    distribution of every split (class_distribution.png)."""
    from fer_core.training.class_weights import compute_class_weights, weights_report

    data_dir, out_file = Path(data_dir), Path(out_file)
    names = prepared.read_class_names(data_dir, config.data.num_classes)
    per_split = prepared.split_counts(data_dir, len(names))
    counts = per_split.get("train", [0] * len(names))
    weights = compute_class_weights(counts, config.weights.scheme, config.weights.beta, config.weights.max_weight)
    result = weights_report(config.weights.scheme, config.weights.beta, config.weights.max_weight, names, counts,
                            weights.tolist())
    write_json(out_file, result)
    if plot:
        from fer_core.evaluation import plots

        plots.plot_per_class_bars(result["weights"], out_file.with_suffix(".png"), ylabel="weight",
                                  title=f"Class weights ({config.weights.scheme})", reference=1.0,
                                  reference_label="1 = unweighted")
        plots.plot_class_distribution({split: dict(zip(names, values)) for split, values in per_split.items()},
                                      out_file.with_name("class_distribution.png"))
    return result


# -------------------------------------------------------------------------------------------- train

RUN_TRACKING = "mlflow_run.json"  # RUN/mlflow_run.json: the MLflow run a tracked training went to


def tracking_on(tracking_uri: str | None = None, experiment: str | None = None) -> bool:
    """Tracking is on when a tracking URI is set (argument or MLFLOW_TRACKING_URI) or an experiment named."""
    return bool(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or experiment)


def tracked_run(run_dir: str | Path) -> tuple[str, str]:
    """(run id, tracking URI) of the MLflow run a tracked `train_step` recorded in RUN; ("", "") when
    the training was not tracked."""
    path = Path(run_dir) / RUN_TRACKING
    if not path.is_file():
        return "", ""
    record = read_json(path)
    return str(record.get("run_id", "")), str(record.get("tracking_uri", ""))


def train_step(data_dir: str | Path, run_dir: str | Path, config: Config, *, experiment: str = "",
               run_name: str = "", tracking_uri: str | None = None, report_dir: str | Path | None = None,
               weights_dir: str | Path | None = None, tags: dict[str, str] | None = None,
               weights_file: str | Path | None = None, resume: bool = True) -> tuple[Any, str]:
    """Train; returns (result, MLflow run id, "" when tracking is off).

    The class weights are the class-weights step's: `weights_file`, else WEIGHTS_DIR/weights.json, else
    computed from the train split. With tracking on (`tracking_on`), every param, metric and artifact
    goes to a new MLflow run in `experiment` (default "fer"), recorded in RUN/mlflow_run.json; the run
    is left open (status RUNNING) for evaluate and register, which end it.
    """
    from fer_core.training.engine import train

    data_dir, run_dir = Path(data_dir), Path(run_dir)
    # this step's own record of an earlier tracked training in RUN must not send a later evaluation to
    # that run: it is written again below when this training is tracked
    (run_dir / RUN_TRACKING).unlink(missing_ok=True)
    # the class weights are the class-weights step's artifact when there is one (what the DAG shows)
    if weights_file is None and weights_dir and (Path(weights_dir) / "weights.json").is_file():
        weights_file = Path(weights_dir) / "weights.json"
    # under torchrun every rank runs this; rank 0 alone tracks (the engine calls callbacks there only)
    if not tracking_on(tracking_uri, experiment) or int(os.environ.get("RANK", "0")) != 0:
        return train(config, data_dir, run_dir, weights_file=weights_file, resume=resume), ""

    from mlflow import MlflowClient

    from fer_core import tracking
    from fer_core.tracking.runs import run_description
    from fer_core.tracking.runs import run_name as default_run_name

    experiment = experiment or "fer"
    uri = tracking.configure(tracking_uri)
    experiment_id = tracking.ensure_experiment(experiment)
    version = prepared.read_data_version(data_dir)
    data_name = prepared.data_name(data_dir, version)
    data_rev = str(version.get("dvc_rev") or "")
    tags = dict(tags or {})
    kubeflow = tags.get("fer.orchestrator") == "kubeflow"
    source = "the fer pipeline on Kubeflow" if kubeflow else "`fer` (training step)"
    tags.setdefault("mlflow.note.content", run_description(config, data_name, data_rev, source))
    tags.setdefault("mlflow.source.name", "fer-train-and-serve/train" if kubeflow else "fer train")
    tags.setdefault("mlflow.source.type", "JOB")
    run_id = MlflowClient(uri, uri).create_run(experiment_id, run_name=run_name or default_run_name(config, data_name, data_rev),
                                               tags=tags).info.run_id
    with _mlflow_run(run_id, uri):
        tracking.log_run_context(run_id)
        tracking.log_data_version(run_id, data_dir, name=data_name,
                                  dvc_rev=version.get("dvc_rev"), dvc_md5=version.get("dvc_md5"),
                                  source=version.get("source"))
        if report_dir and Path(report_dir).is_dir():
            # the report itself; Great Expectations' Data Docs site (data_docs/, ~4 MB of static assets)
            # stays with the validate step's artifact and the DVC report folder
            for item in sorted(Path(report_dir).iterdir()):
                if item.is_file():
                    tracking.log_artifacts_dir(run_id, item, "validation")
        if weights_dir and Path(weights_dir).is_dir():
            tracking.log_artifacts_dir(run_id, weights_dir, "class_weights")
        result = train(config, data_dir, run_dir, callbacks=[tracking.MLflowCallback(run_id)],
                       weights_file=weights_file, resume=resume)
        write_json(run_dir / RUN_TRACKING, {"run_id": run_id, "experiment": experiment, "tracking_uri": uri})
    return result, run_id


# ----------------------------------------------------------------------------------------- evaluate

def evaluate_step(run_dir: str | Path, data_dir: str | Path, config: Config, *, run_id: str = "",
                  tracking_uri: str | None = None, split: str | None = None,
                  truth_csv: str | Path | None = None) -> dict[str, Any]:
    """Metrics on the held-out split (`split`, default config.evaluate.split) into RUN/metrics.json and
    plots; logged to MLflow run `run_id`, else to the run a tracked training recorded in
    RUN/mlflow_run.json (on the tracking server it recorded, unless `tracking_uri` is given)."""
    from fer_core.evaluation.evaluate import evaluate_run

    run_dir = Path(run_dir)
    metrics = evaluate_run(run_dir, data_dir, split=split or config.evaluate.split, config=config,
                           truth_csv=truth_csv)
    if not run_id:
        run_id, recorded_uri = tracked_run(run_dir)
        tracking_uri = tracking_uri or recorded_uri or None
    if run_id:
        from fer_core import tracking

        with _mlflow_run(run_id, tracking_uri) as client:
            from fer_core.evaluation.evaluate import headline_metrics

            for key, value in headline_metrics(metrics).items():
                client.log_metric(run_id, key, value)
            client.log_artifact(run_id, metrics["metrics_path"], "evaluation")
            if (run_dir / "review.json").is_file():
                client.log_artifact(run_id, str(run_dir / "review.json"), "evaluation")
            tracking.log_artifacts_dir(run_id, run_dir / "plots", "plots")
    return metrics


# ----------------------------------------------------------------------------------------- register

def review_tags(run_dir: Path) -> dict[str, str]:
    """The registered version's tags for the review rule evaluation chose (RUN/review.json): signal,
    threshold, target and the validation figures behind them; {} for a run not evaluated yet."""
    from fer_core.evaluation.trust import REVIEW_FILE, ReviewRule

    path = run_dir / REVIEW_FILE
    if not path.is_file():
        return {}
    rule = ReviewRule.from_dict(read_json(path))
    tags = {"review_signal": rule.signal, "review_threshold": repr(rule.threshold),
            "review_target_flagged": repr(rule.target_flagged)}
    for key in ("flagged_share", "accuracy_all", "accuracy_unflagged"):
        if rule.validation.get(key) is not None:
            tags[f"review_val_{key}"] = f"{rule.validation[key]:.4f}"
    return tags


def register_step(run_dir: str | Path, config: Config, *, run_id: str, tracking_uri: str | None = None,
                  model_name: str = "", floor: float | None = None) -> dict[str, Any]:
    """Log the model (pyfunc with signature + example) to the run, register it, apply the quality gate
    (alias candidate always; champion only when it beats the champion on the gate metric and the floor)."""
    from fer_core import tracking

    run_dir = Path(run_dir)
    meta = read_json(run_dir / "meta.json")
    metric = config.registry.gate_metric
    if metric not in meta.get("val_metrics", {}):
        raise ValueError(f"{run_dir}/meta.json has no validation metric {metric!r} for the quality gate")
    value = float(meta["val_metrics"][metric])
    name = model_name or config.registry.model_name
    with _mlflow_run(run_id, tracking_uri) as client:
        # idempotent per training run: a retry reuses the version (and model) this run registered
        existing = tracking.find_version_for_run(name, run_id)
        model_uri = existing.source if existing is not None else tracking.log_fer_model(run_id, run_dir)
        decision = tracking.register_and_gate(model_uri, name, metric_name=metric, metric_value=value,
                                              floor=config.registry.floor if floor is None else floor,
                                              run_id=run_id)
        review = review_tags(run_dir)
        for key, tag in review.items():  # the served review rule, readable beside the gate's tags
            client.set_model_version_tag(name, decision.version, key, tag)
    client.set_terminated(run_id, "FINISHED")
    out = asdict(decision)
    out["review"] = review
    out.update(model_uri=model_uri, run_id=run_id, metric=metric, value=value)
    return out


# ------------------------------------------------------------------------------------------- deploy

def deploy_step(model_uri: str, config: Config, *, out_dir: str | Path, tracking_uri: str | None = None,
                model_store: str = "", management_url: str = "", token: str = "", key_file: str = "",
                k8s_deployment: str = "", k8s_namespace: str = "") -> dict[str, Any]:
    """Package MODEL_URI (e.g. models:/NAME@champion) as a .mar, publish it to the model store (folder
    or s3://), then either swap a running TorchServe to it through its management API (`management_url`)
    or roll the cluster's TorchServe Deployment, whose pods load the store when they start
    (`k8s_deployment`). Both keep answering requests throughout.

    The management token: `token`, else $TORCHSERVE_MANAGEMENT_TOKEN (the cluster's Secret), else a
    local server's `key_file` (renewed when TorchServe refuses an expired key)."""
    from fer_core.home import fer_home
    from fer_core.serving.client import Registration, deploy_model
    from fer_core.serving.package import build_mar, publish_mar, resolve_registry

    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="fer-deploy-") as work:
        source = resolve_registry(model_uri, Path(work) / "model", tracking_uri=tracking_uri)
        mar = build_mar(source, out, config.serve)
    store = model_store or str(fer_home() / "model_store")
    published = publish_mar(mar, store)
    result: dict[str, Any] = {"model_uri": model_uri, "model_version": source.model_version, "mar": str(mar),
                              "published": published, "deployed": False}
    if management_url:
        if store.startswith("s3://"):
            raise ValueError("a TorchServe reached by management URL loads from its own model store folder; "
                             "give a local model store, or let the cluster's TorchServe poll the S3 store")
        token = token or os.environ.get("TORCHSERVE_MANAGEMENT_TOKEN", "")
        if not token and not key_file:
            raise ValueError("deploying to TorchServe needs its management token "
                             "(TORCHSERVE_MANAGEMENT_TOKEN or the key file from `fer serve start`)")
        result["deployment"] = deploy_model(published, management_url, token, config.serve.model_name,
                                            registration=Registration.from_serve(config.serve),
                                            key_file=None if token else key_file)
        result["deployed"] = True
    elif k8s_deployment:
        from fer_core.cluster import NAMESPACE
        from fer_core.serving.rollout import rollout_restart

        result["restarted_at"] = rollout_restart(k8s_namespace or NAMESPACE, k8s_deployment)
        result["deployed"] = True
    return result
