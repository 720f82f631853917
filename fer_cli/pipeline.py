"""`fer pipeline compile | run | submit`."""

from __future__ import annotations

import json
import time

import click

from fer_cli.common import config_options, fail, with_shortcuts

from fer_core.data.formats import READERS

FORMATS = sorted(READERS)


def require_digests_option(func):
    return click.option("--require-digests", is_flag=True,
                        help="Refuse to compile when a component image is pinned by tag only (releases).")(func)


@click.group()
def pipeline() -> None:
    """Compile, run locally, or submit the Kubeflow pipeline."""


@pipeline.command()
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False),
              help="Where the package goes (YAML).")
@require_digests_option
@config_options
def compile(out_file, require_digests, config) -> None:  # noqa: A001 - the CLI contract's name
    """Compile the pipeline to a KFP v2 YAML package (GPU, tolerations and secrets included); the
    config (--params/--set) becomes the package's default parameters. Images are pinned by digest
    where k8s/ pins them (docs/deploy.md); a note names those pinned by tag only."""
    try:
        from pipelines.runner import compile_pipeline   # defines the components: reads k8s/'s image digests

        click.echo(f"compiled {compile_pipeline(out_file, config, require_digests=require_digests)}")
    except ValueError as exc:
        fail(str(exc), code=2)
    _note_unpinned()


def _note_unpinned() -> None:
    from pipelines.runner import unpinned_images

    if unpinned := unpinned_images():
        click.echo(f"note: images pinned by tag, not digest: {', '.join(unpinned)} (pin a pushed release in "
                   "k8s/base/kustomization.yaml, see docs/deploy.md; --require-digests refuses this)", err=True)


def data_options(func):
    """The dataset and the run's registry/deploy switches, shown in this order in --help."""
    options = [
        click.option("--source", default=None,
                     help="Raw dataset: a folder or s3://bucket/prefix (default: the demo's synthetic set)."),
        click.option("--format", "data_format", type=click.Choice(FORMATS), default="rafdb", show_default=True,
                     help="The dataset's public format."),
        click.option("--dvc-repo", default=None, help="Or take the dataset from this DVC repo (path or git URL)..."),
        click.option("--dvc-rev", default=None, help="...at this git revision (default: HEAD)..."),
        click.option("--dvc-path", default=None, help="...and this path inside the repo."),
        click.option("--experiment", default="fer", show_default=True, help="MLflow experiment."),
        click.option("--model-name", default=None, help="Registered model; the same as --set registry.model_name=NAME."),
        click.option("--floor", type=float, default=None,
                     help="Quality gate floor; the same as --set registry.floor=VALUE."),
        click.option("--deploy/--no-deploy", default=True, show_default=True,
                     help="Package a new champion for TorchServe."),
    ]
    for option in reversed(options):  # click lists the last-applied decorator first
        func = option(func)
    return func


def _with_registry(config, model_name, floor):
    """--model-name/--floor are shortcuts for the registry section: one carrier for each value."""
    return with_shortcuts(config, {"registry.model_name": model_name, "registry.floor": floor})


def _data_arguments(source, dvc_repo, dvc_rev, dvc_path, *, local: bool) -> dict:
    """The dataset parameters; a local run without any falls back to the demo's data repo."""
    from fer_core.home import fer_home

    if dvc_repo:
        if not dvc_path:
            raise click.UsageError("--dvc-repo needs --dvc-path (the dataset's folder inside the repo)")
        return {"dvc_repo": dvc_repo, "dvc_rev": dvc_rev or "", "dvc_path": dvc_path, "source": ""}
    if source:
        return {"source": source}
    demo_repo = fer_home() / "data-repo"
    if local and (demo_repo / "rafdb.dvc").is_file():
        return {"dvc_repo": str(demo_repo), "dvc_rev": "", "dvc_path": "rafdb", "source": ""}
    raise click.UsageError("give the dataset: --source DIR|s3://bucket/prefix or --dvc-repo REPO --dvc-path PATH "
                           "[--dvc-rev REV]" + (" (or run `fer demo` once for the synthetic one)" if local else ""))


@pipeline.command()
@data_options
@click.option("--model-store", default=None, help="Where the .mar goes (default $FER_HOME/model_store; s3:// allowed).")
@click.option("--torchserve/--no-torchserve", "use_torchserve", default=True, show_default=True,
              help="Load a new champion into the local TorchServe when one runs (fer serve start).")
@click.option("--pipeline-root", type=click.Path(file_okay=False), default=None,
              help="Where the local runner keeps task artifacts (default $FER_HOME/pipeline_root).")
@click.option("--cache/--no-cache", default=True, show_default=True,
              help="Reuse a cacheable step's earlier outputs when its inputs are unchanged (KFP's local cache): "
                   "a change to train.* reruns train and what follows, not ingest, validate or class weights.")
@click.option("--runner", type=click.Choice(["subprocess", "docker"]), default="subprocess", show_default=True,
              help="subprocess: every step in this environment; docker: every step in its image (`make images` "
                   "builds them), through $DOCKER_HOST or podman's Docker-compatible API.")
@click.option("--verbose", "-v", is_flag=True,
              help="Show everything the local runner writes (the full log is saved either way).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (for scripts).")
@config_options
def run(source, data_format, dvc_repo, dvc_rev, dvc_path, experiment, model_name, floor, deploy, model_store,
        use_torchserve, pipeline_root, cache, runner, verbose, as_json, config) -> None:
    """Run the whole pipeline on the local Kubeflow runner (embedded defaults).

    Shows one line per step with its duration and figures, and the training's epochs; the full log
    goes to $FER_HOME/logs/pipeline-<time>.log (its path is printed)."""
    summary = run_local_pipeline(_with_registry(config, model_name, floor),
                                 _data_arguments(source, dvc_repo, dvc_rev, dvc_path, local=True),
                                 data_format=data_format, experiment=experiment, deploy=deploy,
                                 model_store=model_store, use_torchserve=use_torchserve, pipeline_root=pipeline_root,
                                 cache=cache, verbose=verbose, runner=runner)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary)


def print_summary(summary: dict) -> None:
    """The run's outcome in a few lines: the registered version, the gate, the figures, where things are."""
    click.echo(f"registered model {summary['model_name']} version {summary.get('registered_version')} "
               f"(aliases: {', '.join(summary.get('aliases') or []) or 'none'}; champion: version "
               f"{summary.get('champion_version')})")
    if summary.get("gate"):
        click.echo(f"quality gate: {summary['gate']}")
    for key, value in (summary.get("metrics") or {}).items():
        click.echo(f"  {key:<32} {value}")
    click.echo(f"MLflow run {summary.get('mlflow_run_id')} in {summary.get('tracking_uri')}")
    click.echo(f"artifacts: {summary['pipeline_root']}")
    click.echo(f"full log:  {summary['log']}")


def run_local_pipeline(config, data: dict, *, data_format="rafdb", experiment="fer", deploy=True, model_store=None,
                       use_torchserve=True, pipeline_root=None, cache=True, verbose=False, runner="subprocess") -> dict:
    """The local run and what it produced (registered version, gate decision, metrics, log file)."""
    import contextlib
    import os

    if runner == "docker":
        # The images `fer images build` tagged (a digest pinned in k8s/ names a pushed image, which the local
        # engine may not hold); the train step runs in the CPU image, unless the environment names others.
        from fer_core import cluster

        for variable in ("FER_COMPONENT_IMAGE", "FER_COMPONENT_IMAGE_GPU"):
            os.environ.setdefault(variable, f"{cluster.IMAGE_REPOSITORY}:{cluster.IMAGE_TAG}")
    from fer_cli.console import new_log_path, step_console
    from fer_core.serving.server import ServerSettings, server_status
    from fer_core.tracking.registry import newest_version_summary
    from pipelines.runner import local_arguments, run_local

    serving = {}
    if deploy and use_torchserve:
        settings = ServerSettings.from_config(config.serve)
        if server_status(settings)["pid"] is not None:  # deploys need TorchServe's management API
            serving = {"torchserve_management_url": settings.management_url,
                       "torchserve_key_file": str(settings.key_file), "model_store": str(settings.model_store)}
    arguments = local_arguments(config, data_format=data_format, experiment=experiment, deploy_model=deploy,
                                **data, **serving,
                                **({"model_store": model_store} if model_store else {}))
    log_path = new_log_path("pipeline")
    click.echo(f"full log: {log_path}" + ("" if verbose else " (--verbose shows it here)"))
    started = time.monotonic()
    if runner == "docker":
        from pipelines.runner import podman_api

        api = podman_api()
    else:
        api = contextlib.nullcontext()
    try:
        with api, step_console(log_path, verbose=verbose):
            root = run_local(arguments, pipeline_root, cache=cache, runner=runner)
    except RuntimeError as exc:
        fail(f"the pipeline failed: {str(exc).splitlines()[0] if str(exc) else exc!r}\nfull log: {log_path}")
    click.echo(f"pipeline finished in {(time.monotonic() - started) / 60:.1f} min")
    return {"pipeline_root": str(root), "log": str(log_path),
            **newest_version_summary(config.registry.model_name, arguments["mlflow_tracking_uri"])}


@pipeline.command()
@click.option("--host", required=True, help="Kubeflow Pipelines API, e.g. http://localhost:8888 or the KFP UI URL.")
@data_options
@click.option("--run-name", default=None, help="Run name (default: the pipeline's name).")
@click.option("--namespace", default=None, help="Kubeflow profile namespace (multi-user installs).")
@click.option("--token", default=None, envvar="KFP_TOKEN", help="Bearer token for the KFP API ($KFP_TOKEN).")
@click.option("--package", "package_file", type=click.Path(dir_okay=False), default="fer-pipeline.yaml",
              show_default=True, help="Where the compiled package is written before upload.")
@click.option("--cache/--no-cache", default=True, show_default=True,
              help="Let KFP reuse a cacheable step's earlier outputs; --no-cache after the data under an "
                   "s3:// prefix changed.")
@require_digests_option
@config_options
def submit(host, source, data_format, dvc_repo, dvc_rev, dvc_path, experiment, model_name, floor, deploy, run_name,
           namespace, token, package_file, cache, require_digests, config) -> None:
    """Compile and submit the pipeline to a Kubeflow Pipelines host; prints the run id and URL.

    The cluster defaults apply (MLflow, MinIO and the model store inside the cluster, see
    docs/deploy.md); the dataset must be reachable from the cluster (s3:// or a DVC git URL).
    """
    try:
        from pipelines.runner import check_digests, pipeline_arguments, submit as submit_run

        if require_digests:
            check_digests()
    except ValueError as exc:   # an image unpinned (--require-digests) or a malformed digest in k8s/
        fail(str(exc), code=2)
    data = _data_arguments(source, dvc_repo, dvc_rev, dvc_path, local=False)
    arguments = pipeline_arguments(_with_registry(config, model_name, floor), data_format=data_format,
                                   experiment=experiment, deploy_model=deploy, **data)
    try:
        result = submit_run(host, arguments, package=package_file, experiment=experiment, run_name=run_name,
                            namespace=namespace, existing_token=token, cache=cache,
                            require_digests=require_digests)
    except Exception as exc:  # noqa: BLE001 - the API client raises many kinds; the user needs the message
        fail(f"submitting to {host} failed: {exc}")
    _note_unpinned()
    click.echo(f"run id: {result['run_id']}")
    click.echo(f"run URL: {result['url']}")
