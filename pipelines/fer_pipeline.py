"""The DAG: ingest -> validate -> (stop | class_weights -> train -> evaluate -> register -> deploy).

Cluster settings live here and only here: the GPU request, node selector and toleration of the train
step; S3 / MLflow / TorchServe credentials from Kubernetes Secrets as env; the pod label that lets
pipeline pods reach the TorchServe management API; retries and caching per step. The local runner
ignores the Kubernetes settings; `fer pipeline compile` writes them into the package.
"""


import os
import re
from pathlib import Path
from typing import Any  # no `from __future__ import annotations`: KFP reads the real types

from kfp import dsl, kubernetes

from components.class_weights import class_weights
from components.deploy import deploy
from components.evaluate import evaluate
from components.ingest import ingest
from components.register import register
from components.stop_invalid_data import stop_invalid_data
from components.train import train
from components.validate import validate
from fer_core import cluster
from fer_core.config import Config

PIPELINE_NAME = "fer-train-and-serve"


# The config sections the pipeline carries, one parameter each (`<section>_config`); each component
# gets only the sections it reads, so a change to `train.lr` leaves the cached validate and
# class-weights results valid. (`synth` is the demo generator's, not the pipeline's.)
CONFIG_SECTIONS = ("data", "validate", "weights", "model", "train", "evaluate", "registry", "serve")


def config_parameters(config: Config) -> dict[str, dict]:
    """The resolved config as the pipeline's section parameters. A KFP struct holds no nulls, so unset
    keys are left out (components read them back with their defaults)."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items() if item is not None}
        return value

    whole = config.to_dict()
    return {f"{section}_config": strip(whole[section]) for section in CONFIG_SECTIONS}


_DEFAULTS = config_parameters(Config())

# Defaults of the pipeline parameters for a cluster (a local run passes its own, see runner.py).
CLUSTER_DEFAULTS: dict[str, Any] = {
    "mlflow_tracking_uri": cluster.MLFLOW_URI_IN_CLUSTER,
    "s3_endpoint_url": cluster.S3_ENDPOINT_IN_CLUSTER,
    "model_store": f"s3://{cluster.MODEL_STORE_BUCKET}",   # TorchServe pods load every .mar there at start
    "torchserve_management_url": "",
    "torchserve_deployment": cluster.TORCHSERVE_SERVICE,   # rolled by the deploy step
}

# Steps that may retry (network, object store, API servers) and whether KFP may reuse a cached result.
# A cached result is keyed on the step's inputs: ingest's are the source, a DVC revision (the local run
# resolves a branch, tag or HEAD to its commit) and source_fingerprint (the fer_core code and a local
# folder's files); an S3 prefix whose objects changed needs a run without the cache (`--no-cache` on
# `fer pipeline run` and `fer pipeline submit`).
RETRIES = {"ingest": 3, "register": 3, "deploy": 3}
CACHING = {"ingest": True, "validate": True, "class-weights": True, "train": False, "evaluate": False,
           "register": False, "deploy": False, "stop-invalid-data": False}


def _secrets(task: dsl.PipelineTask, *, s3: bool = False, mlflow: bool = False, torchserve: bool = False) -> None:
    if s3:
        kubernetes.use_secret_as_env(task, cluster.S3_SECRET, {key: key for key in cluster.S3_SECRET_KEYS})
    if mlflow:
        kubernetes.use_secret_as_env(task, cluster.MLFLOW_SECRET, {key: key for key in cluster.MLFLOW_SECRET_KEYS})
    if torchserve:
        kubernetes.use_secret_as_env(task, cluster.TORCHSERVE_TOKEN_SECRET, {"management-token": "TORCHSERVE_MANAGEMENT_TOKEN"})


# What the Kubeflow UI shows on each node of the run graph (the task names stay the step names).
DISPLAY_NAMES = {"ingest": "Ingest dataset", "validate": "Validate (Great Expectations)",
                 "stop-invalid-data": "Stop: dataset invalid", "class-weights": "Class weights",
                 "train": "Train CBAM-ResNet (GPU)", "evaluate": "Evaluate on the test split",
                 "register": "Register + quality gate", "deploy": "Deploy champion to TorchServe"}


def _step(task: dsl.PipelineTask, name: str, *, cpu: str = "1", memory: str = "2Gi") -> dsl.PipelineTask:
    task.set_display_name(DISPLAY_NAMES[name])
    task.set_caching_options(CACHING[name])
    if name in RETRIES:
        task.set_retry(num_retries=RETRIES[name], backoff_duration="30s", backoff_factor=2.0)
    task.set_cpu_request(cpu).set_memory_request(memory).set_memory_limit(memory)
    kubernetes.add_pod_label(task, *cluster.PIPELINE_POD_LABEL)
    return task


def _gpu(task: dsl.PipelineTask) -> dsl.PipelineTask:
    task.set_accelerator_type(cluster.GPU_RESOURCE).set_accelerator_limit(1)
    kubernetes.add_node_selector(task, *cluster.GPU_NODE_LABEL)
    kubernetes.add_toleration(task, key=cluster.GPU_TOLERATION_KEY, operator="Exists", effect="NoSchedule")
    return task


@dsl.pipeline(name=PIPELINE_NAME,
              description="FER: versioned data -> validated -> CBAM-ResNet with uncertainty mixing -> "
                          "MLflow registry (quality gate) -> TorchServe.")
def fer_pipeline(
    source: str = "",
    data_format: str = "rafdb",
    dvc_repo: str = "",
    dvc_rev: str = "",
    dvc_path: str = "",
    source_fingerprint: str = "",
    data_config: dict = _DEFAULTS["data_config"],
    validate_config: dict = _DEFAULTS["validate_config"],
    weights_config: dict = _DEFAULTS["weights_config"],
    model_config: dict = _DEFAULTS["model_config"],
    train_config: dict = _DEFAULTS["train_config"],
    evaluate_config: dict = _DEFAULTS["evaluate_config"],
    registry_config: dict = _DEFAULTS["registry_config"],
    serve_config: dict = _DEFAULTS["serve_config"],
    experiment: str = "fer",
    deploy_model: bool = True,
    mlflow_tracking_uri: str = CLUSTER_DEFAULTS["mlflow_tracking_uri"],
    s3_endpoint_url: str = CLUSTER_DEFAULTS["s3_endpoint_url"],
    model_store: str = CLUSTER_DEFAULTS["model_store"],
    torchserve_management_url: str = CLUSTER_DEFAULTS["torchserve_management_url"],
    torchserve_key_file: str = "",
    torchserve_deployment: str = CLUSTER_DEFAULTS["torchserve_deployment"],
) -> None:
    """Versioned data to a served model: ingest, validate, class weights, train, evaluate, register
    (quality gate), deploy.

    Args:
        source: The raw dataset, a folder or s3://bucket/prefix (leave empty when using dvc_repo).
        data_format: The dataset's public format: rafdb, affectnet, fer2013, ferplus or imagefolder.
        dvc_repo: A DVC data repo (path or git URL) holding the dataset, instead of source.
        dvc_rev: The git revision of dvc_repo (commit, tag or branch; empty = HEAD).
        dvc_path: The dataset's folder inside dvc_repo.
        source_fingerprint: A digest of the fer_core code and of a local source folder's listing, set by
            `fer pipeline run`: changed code or a changed folder is ingested again, not taken from the cache.
        data_config: params.yaml's data section (image size, val split, decode limits); ingest, class weights, train.
        validate_config: The validate section (Great Expectations thresholds); validate.
        weights_config: The weights section (scheme, beta, max_weight); class weights, train.
        model_config: The model section (CBAM-ResNet, stem, heads, mixing); train.
        train_config: The train section (epochs, batch, learning rates, augmentation, device); train, evaluate.
        evaluate_config: The evaluate section (split, batch size, calibration bins); train, evaluate.
        registry_config: The registry section (model_name, gate_metric, floor); register, deploy.
        serve_config: The serve section (TorchServe batching, workers, limits); deploy.
        experiment: The MLflow experiment the training run goes to.
        deploy_model: Package and load a new champion into TorchServe (false: register only).
        mlflow_tracking_uri: The MLflow tracking and registry server.
        s3_endpoint_url: The S3 endpoint (MinIO in the cluster; empty = AWS's default).
        model_store: Where the .mar goes: a folder or s3://bucket/prefix TorchServe loads from.
        torchserve_management_url: A running TorchServe's management API to hot-swap the new champion into
            (local runs); empty in the cluster, where torchserve_deployment is rolled instead.
        torchserve_key_file: A local TorchServe's key_file.json (its management key, renewed when it expires).
        torchserve_deployment: The Kubernetes Deployment of TorchServe to roll onto the new model store.
    """
    ingested = _step(ingest(source=source, data_format=data_format, dvc_repo=dvc_repo, dvc_rev=dvc_rev,
                            dvc_path=dvc_path, source_fingerprint=source_fingerprint, data_config=data_config,
                            s3_endpoint_url=s3_endpoint_url), "ingest",
                     cpu="2", memory="4Gi")
    _secrets(ingested, s3=True)
    checked = _step(validate(dataset=ingested.outputs["dataset"], validate_config=validate_config), "validate", memory="4Gi")

    with dsl.If(checked.outputs["Output"] == False, name="data-invalid"):  # noqa: E712 - a KFP condition
        _step(stop_invalid_data(report_json=checked.outputs["report_json"]), "stop-invalid-data", memory="256Mi")

    with dsl.If(checked.outputs["Output"] == True, name="data-valid"):  # noqa: E712
        weights = _step(class_weights(dataset=ingested.outputs["dataset"], data_config=data_config,
                                       weights_config=weights_config), "class-weights")
        trained = _step(train(dataset=ingested.outputs["dataset"], validation_report=checked.outputs["report_json"],
                              weights=weights.outputs["weights"], data_config=data_config,
                              model_config=model_config, train_config=train_config, weights_config=weights_config,
                              evaluate_config=evaluate_config, experiment=experiment,
                              mlflow_tracking_uri=mlflow_tracking_uri, s3_endpoint_url=s3_endpoint_url),
                        "train", cpu="4", memory="16Gi")
        _gpu(trained)
        _secrets(trained, s3=True, mlflow=True)
        evaluated = _step(evaluate(dataset=ingested.outputs["dataset"], model=trained.outputs["model"],
                                   train_config=train_config, evaluate_config=evaluate_config,
                                   mlflow_run_id=trained.outputs["mlflow_run_id"],
                                   mlflow_tracking_uri=mlflow_tracking_uri, s3_endpoint_url=s3_endpoint_url),
                          "evaluate", cpu="2", memory="8Gi")
        _secrets(evaluated, s3=True, mlflow=True)
        registered = _step(register(model=trained.outputs["model"], registry_config=registry_config,
                                    mlflow_run_id=trained.outputs["mlflow_run_id"],
                                    mlflow_tracking_uri=mlflow_tracking_uri, s3_endpoint_url=s3_endpoint_url),
                           "register")
        registered.after(evaluated)
        _secrets(registered, s3=True, mlflow=True)
        with dsl.If(registered.outputs["Output"] == True, name="new-champion"):  # noqa: E712
            with dsl.If(deploy_model == True, name="deploy-on"):  # noqa: E712 - the run's deploy switch
                deployed = _step(deploy(registry_config=registry_config, serve_config=serve_config,
                                        mlflow_tracking_uri=mlflow_tracking_uri, s3_endpoint_url=s3_endpoint_url,
                                        model_store=model_store, torchserve_management_url=torchserve_management_url,
                                        torchserve_key_file=torchserve_key_file,
                                        torchserve_deployment=torchserve_deployment), "deploy")
                _secrets(deployed, s3=True, mlflow=True, torchserve=True)


def compile_package(out_file: str | os.PathLike, config: Config | None = None) -> Path:
    """The KFP v2 package (IR YAML with the Kubernetes platform spec) at OUT_FILE; its config section
    parameters default to `config` (else params.yaml / $FER_PARAMS as `load_config` finds them)."""
    from kfp import compiler

    from fer_core.config import load_config

    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    defaults = pipeline_arguments(config if config is not None else load_config())
    compiler.Compiler().compile(fer_pipeline, str(out), pipeline_parameters=defaults)
    _restore_integers(out, defaults)
    return out


def _restore_integers(package: Path, defaults: dict[str, Any]) -> None:
    """KFP stores a dict parameter as a protobuf Struct, whose numbers are all doubles, so the package
    would read `epochs: 60.0`. Write back as integers the values the config holds as integers (the
    same number to KFP; the config parser turns 60.0 back into 60 either way), in the YAML and in the
    header comment that lists the inputs."""
    import yaml

    text = package.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    leading = next((n for n, line in enumerate(lines) if not line.startswith("#")), len(lines))
    header = "".join(lines[:leading])   # KFP's comment block at the top; a '#' inside the YAML is not header
    documents = list(yaml.safe_load_all(text[len(header):]))
    parameters = documents[0]["root"]["inputDefinitions"]["parameters"]
    for name, value in defaults.items():
        compiled = parameters.get(name, {}).get("defaultValue")
        if not (isinstance(value, dict) and isinstance(compiled, dict)):
            continue
        for key, number in compiled.items():
            original = value.get(key)
            if isinstance(original, int) and not isinstance(original, bool) and number == original:
                compiled[key] = original
        header = re.sub(rf"^(#\s+{re.escape(name)}: dict \[Default: ).*\]$",
                        lambda match: f"{match.group(1)}{dict(sorted(compiled.items()))!r}]", header, flags=re.M)
    with package.open("w", encoding="utf-8") as handle:
        handle.write(header)
        yaml.safe_dump_all(documents, handle, sort_keys=True)


def pipeline_arguments(config: Config, **arguments: Any) -> dict[str, Any]:
    """The run's parameters: the resolved config's sections plus the given ones (None values dropped)."""
    out: dict[str, Any] = dict(config_parameters(config))
    out.update({key: value for key, value in arguments.items() if value is not None})
    return out



if __name__ == "__main__":  # python -m pipelines.fer_pipeline [OUT.yaml]: the package with params.yaml's defaults
    import sys

    print(compile_package(sys.argv[1] if len(sys.argv) > 1 else "fer_pipeline.yaml"))
