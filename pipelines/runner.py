"""Compile the pipeline, run it on the local Kubeflow runner, or submit it to a Kubeflow Pipelines host."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from fer_core import cluster
from fer_core.config import Config
from fer_core.home import default_tracking_uri, fer_home
from pipelines.fer_pipeline import PIPELINE_NAME, config_parameter, fer_pipeline

log = logging.getLogger(__name__)


def compile_pipeline(out_file: str | os.PathLike, config: Config | None = None) -> Path:
    """The KFP v2 package (IR YAML with the Kubernetes platform spec) at OUT_FILE; with `config`, its
    values (the `config` struct, model name, gate floor) are the package's parameter defaults."""
    from kfp import compiler

    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    defaults = pipeline_arguments(config) if config is not None else None
    compiler.Compiler().compile(fer_pipeline, str(out), pipeline_parameters=defaults)
    return out


def pipeline_arguments(config: Config, **arguments: Any) -> dict[str, Any]:
    """The run's parameters: the whole resolved config plus the given ones (None values dropped)."""
    out = {"config": config_parameter(config), "model_name": config.registry.model_name,
           "gate_floor": float(config.registry.floor)}
    out.update({key: value for key, value in arguments.items() if value is not None})
    return out


def local_arguments(config: Config, **arguments: Any) -> dict[str, Any]:
    """Embedded defaults: MLflow on sqlite under the home folder, a local model store, no S3 endpoint."""
    defaults = {"mlflow_tracking_uri": default_tracking_uri(), "s3_endpoint_url": os.environ.get("AWS_ENDPOINT_URL", ""),
                "model_store": str(fer_home() / "model_store"), "torchserve_management_url": "",
                "torchserve_key_file": "", "torchserve_deployment": ""}
    defaults.update({key: value for key, value in arguments.items() if value is not None})
    return pipeline_arguments(config, **defaults)


def run_local(arguments: dict[str, Any], pipeline_root: str | os.PathLike | None = None) -> Path:
    """Run the whole DAG with `kfp.local.SubprocessRunner(use_venv=False)`: every component is a
    subprocess of this interpreter's environment (nothing installed). Raises RuntimeError when a task
    fails; returns the pipeline root holding every task's artifacts."""
    from kfp import local

    # Expected on the local runner: resource/GPU settings and the image name only matter on a cluster.
    warnings.filterwarnings("ignore", message=r"Task '.*': settings .* have no effect in the current local runner")
    warnings.filterwarnings("ignore", message=r"You may be attemping to run a task that uses custom or non-Python")
    root = Path(pipeline_root or fer_home() / "pipeline_root").resolve()
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    fer_pipeline(**arguments)
    return root


def submit(host: str, arguments: dict[str, Any], *, package: str | os.PathLike, experiment: str = "fer",
           run_name: str | None = None, namespace: str | None = None, existing_token: str | None = None,
           service_account: str | None = cluster.PIPELINE_SERVICE_ACCOUNT) -> dict[str, str]:
    """Compile to PACKAGE and create a run on the KFP host; returns run id and URL."""
    import kfp

    compile_pipeline(package)
    client = kfp.Client(host=host, namespace=namespace, existing_token=existing_token)
    result = client.create_run_from_pipeline_package(
        str(package), arguments=arguments, run_name=run_name or f"{PIPELINE_NAME}", experiment_name=experiment,
        namespace=namespace, service_account=service_account)
    run_id = result.run_id
    return {"run_id": run_id, "url": f"{host.rstrip('/')}/#/runs/details/{run_id}"}
