"""Compile the pipeline, run it on the local Kubeflow runner, or submit it to a Kubeflow Pipelines host."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

from fer_core import cluster
from fer_core.config import Config
from fer_core.home import default_tracking_uri, fer_home
from pipelines.fer_pipeline import PIPELINE_NAME, compile_package, fer_pipeline, pipeline_arguments  # noqa: F401

log = logging.getLogger(__name__)


def compile_pipeline(out_file: str | os.PathLike, config: Config | None = None, *,
                     require_digests: bool = False) -> Path:
    """The KFP v2 package at OUT_FILE (`fer_pipeline.compile_package`); `require_digests`: refuse (ValueError
    naming them) images pinned by tag only; see `unpinned_images`."""
    if require_digests:
        check_digests()
    return compile_package(out_file, config)


def check_digests() -> None:
    """ValueError naming the component images pinned by tag only (`--require-digests`)."""
    if unpinned := unpinned_images():
        raise ValueError(f"images pinned by tag, not digest: {', '.join(unpinned)}; add each one's "
                         "`digest: sha256:...` to its entry in k8s/base/kustomization.yaml (CUDA image: "
                         "k8s/overlays/gpu/kustomization.yaml), see docs/deploy.md")


def unpinned_images() -> list[str]:
    """The component images (fer_core.cluster.component_images) that name a tag but no digest."""
    return sorted({image for image in cluster.component_images() if "@sha256:" not in image})


def local_arguments(config: Config, **arguments: Any) -> dict[str, Any]:
    """Embedded defaults: MLflow on sqlite under the home folder, a local model store, no S3 endpoint."""
    defaults = {"mlflow_tracking_uri": default_tracking_uri(), "s3_endpoint_url": os.environ.get("AWS_ENDPOINT_URL", ""),
                "model_store": str(fer_home() / "model_store"), "torchserve_management_url": "",
                "torchserve_key_file": "", "torchserve_deployment": ""}
    defaults.update({key: value for key, value in arguments.items() if value is not None})
    return pipeline_arguments(config, **defaults)


def source_fingerprint(source: str) -> str:
    """The ingest step's cache key for what its arguments alone cannot say: a digest of the fer_core code
    (a changed ingest or validation must not reuse old results) and, for a local folder, of its listing
    (relative names, sizes, modification times)."""
    import hashlib

    import fer_core
    from fer_core.io import digest_tree

    digest = hashlib.sha256()
    package = Path(fer_core.__file__).parent
    digest_tree(digest, package, relative_to=package, keep=lambda path: path.suffix in (".py", ".txt", ".properties"))
    root = Path(source) if source and "://" not in source else None
    if root is None or not root.is_dir():
        return digest.hexdigest()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def run_local(arguments: dict[str, Any], pipeline_root: str | os.PathLike | None = None, *,
              cache: bool = True, runner: str = "subprocess") -> Path:
    """Run the whole DAG on Kubeflow's local runner: `subprocess` (`kfp.local.SubprocessRunner(use_venv=False)`,
    every component a subprocess of this interpreter's environment, nothing installed) or `docker`
    (`kfp.local.DockerRunner`, every component in its image: `docker_runner`). With `cache`, a step marked
    cacheable (fer_pipeline.CACHING) whose inputs are unchanged reuses its earlier outputs (KFP's local
    cache under PIPELINE_ROOT/.kfp_cache). Raises RuntimeError when a task fails; returns the pipeline
    root holding every task's artifacts."""
    from kfp import local

    # Expected on the local runner: resource/GPU settings and the image name only matter on a cluster.
    warnings.filterwarnings("ignore", message=r"Task '.*': settings .* have no effect in the current local runner")
    warnings.filterwarnings("ignore", message=r"You may be attemping to run a task that uses custom or non-Python")
    root = Path(pipeline_root or fer_home() / "pipeline_root").resolve()
    root.mkdir(parents=True, exist_ok=True)
    if not arguments.get("source_fingerprint"):
        arguments = {**arguments, "source_fingerprint": source_fingerprint(str(arguments.get("source") or ""))}
    if arguments.get("dvc_repo"):   # a branch, a tag or HEAD moves: the cache is keyed on the commit
        from fer_core.versioning import resolve_revision

        arguments = {**arguments, "dvc_rev": resolve_revision(str(arguments["dvc_repo"]),
                                                              str(arguments.get("dvc_rev") or ""))}
    if runner == "docker":
        task_runner = docker_runner(arguments, root)
    elif runner == "subprocess":
        task_runner = local.SubprocessRunner(use_venv=False)
    else:
        raise ValueError(f"runner must be subprocess or docker, not {runner!r}")
    local.init(runner=task_runner, pipeline_root=str(root), raise_on_error=True, enable_caching=cache)
    with _cache_hits_shown():
        fer_pipeline(**arguments)
    return root


# What a step in a container needs from this process's environment (the subprocess runner passes all of it).
CONTAINER_ENVIRONMENT = re.compile(r"(FER_HOME|AWS_[A-Z_]+|MLFLOW_[A-Z_]+|DVC_[A-Z_]+|GX_[A-Z_]+|DO_NOT_TRACK)")


def docker_runner(arguments: dict[str, Any], pipeline_root: Path):
    """`kfp.local.DockerRunner` for this run: each step in its component image (the images `fer images
    build` made; checked to be built from this checkout's code) on the host's network, so MLflow, S3 and
    TorchServe on 127.0.0.1 are reached as in the subprocess run; the home folder and the dataset's local
    folders mounted at their own paths (KFP mounts the pipeline root itself); run as this process's user,
    so what the steps write stays this user's. The Docker API is $DOCKER_HOST, else podman's
    (`podman_api`)."""
    from docker.types import Mount
    from kfp import local

    check_images_current([cluster.component_images()[0]])
    folders = {fer_home()}
    for key in ("source", "dvc_repo", "model_store"):
        value = str(arguments.get(key) or "")
        if value and "://" not in value and Path(value).exists():
            folders.add(Path(value).resolve())
    folders = {folder for folder in folders if not any(other in folder.parents for other in folders)}
    folders -= {pipeline_root}
    environment = {key: value for key, value in os.environ.items() if CONTAINER_ENVIRONMENT.fullmatch(key)}
    environment["FER_HOME"] = str(fer_home())   # the mounted home, set or not in this environment
    return local.DockerRunner(network_mode="host", user=f"{os.getuid()}:{os.getgid()}", environment=environment,
                              mounts=[Mount(target=str(folder), source=str(folder), type="bind")
                                      for folder in sorted(folders)])


def check_images_current(images: list[str]) -> None:
    """RuntimeError unless each image exists and was built from this checkout's code (the label `fer images
    build` writes, fer_core.cluster.SOURCE_LABEL): a step must not run yesterday's code."""
    import docker

    client = docker.from_env()
    try:
        expected = cluster.source_digest()
        for image in images:
            try:
                labels = client.images.get(image).labels or {}
            except docker.errors.ImageNotFound:
                raise RuntimeError(f"image {image} is not built here: run `make images` first") from None
            if labels.get(cluster.SOURCE_LABEL) != expected:
                raise RuntimeError(f"image {image} was built from other code than this checkout's "
                                   f"({cluster.SOURCE_LABEL}={labels.get(cluster.SOURCE_LABEL)!r}, the checkout's {expected}): "
                                   "run `make images` again")
    finally:
        client.close()


@contextlib.contextmanager
def podman_api() -> Iterator[None]:
    """$DOCKER_HOST for the block: as given, or a Docker engine's default socket when one answers, else
    podman's Docker-compatible API (`podman system service`) on a socket in a new temporary folder,
    stopped and removed after."""
    import subprocess
    import time

    import docker

    if os.environ.get("DOCKER_HOST"):
        yield
        return
    try:
        docker.from_env().ping()
        engine = True
    except docker.errors.DockerException:
        engine = False
    if engine:
        yield
        return
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="fer-podman-"))   # a short path: a unix socket's is at most 107 bytes
    socket = folder / "podman.sock"
    log = folder / "podman-service.log"
    with open(log, "wb") as handle:
        service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket}"],
                                   stdout=handle, stderr=subprocess.STDOUT)
    os.environ["DOCKER_HOST"] = f"unix://{socket}"
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"podman's API did not start: {log.read_text(errors='replace')[-500:]}")
            time.sleep(0.2)
        yield
    finally:
        del os.environ["DOCKER_HOST"]
        service.terminate()
        service.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


class _CacheHit(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "cache hit" in record.getMessage()


@contextlib.contextmanager
def _cache_hits_shown() -> Iterator[None]:
    """KFP's local runner reports a cache hit on the root logger at INFO, which shows nothing by default;
    this passes those lines (and only those) to stdout for the block, where the console shows them."""
    root_logger = logging.getLogger()
    handler = logging.StreamHandler(sys.stdout)
    handler.setLevel(logging.INFO)
    handler.addFilter(_CacheHit())
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = root_logger.level
    quiet = [(item, item.level) for item in root_logger.handlers]
    for item, item_level in quiet:          # the root's own handlers keep showing what they showed
        item.setLevel(max(item_level, level))
    root_logger.addHandler(handler)
    root_logger.setLevel(min(level, logging.INFO))
    try:
        yield
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(level)
        for item, item_level in quiet:
            item.setLevel(item_level)


def submit(host: str, arguments: dict[str, Any], *, package: str | os.PathLike, experiment: str = "fer",
           run_name: str | None = None, namespace: str | None = None, existing_token: str | None = None,
           service_account: str | None = cluster.PIPELINE_SERVICE_ACCOUNT, cache: bool = True,
           require_digests: bool = False) -> dict[str, str]:
    """Compile to PACKAGE and create a run on the KFP host; returns run id and URL. `cache=False` runs
    every step afresh (KFP's enable_caching=False), e.g. after the objects under an S3 prefix changed."""
    import kfp

    compile_pipeline(package, require_digests=require_digests)
    client = kfp.Client(host=host, namespace=namespace, existing_token=existing_token)
    result = client.create_run_from_pipeline_package(
        str(package), arguments=arguments, run_name=run_name or f"{PIPELINE_NAME}", experiment_name=experiment,
        namespace=namespace, service_account=service_account, enable_caching=None if cache else False)
    run_id = result.run_id
    return {"run_id": run_id, "url": f"{host.rstrip('/')}/#/runs/details/{run_id}"}
