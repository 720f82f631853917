"""The container tier (`make test-containers`, after `make images`): the images built from docker/ run what
the manifests and the pipeline ask of them.

- the component image: `fer --help`, as the non-root user of the Dockerfile, built from this checkout;
- the TorchServe image: started as the Deployment in k8s/base starts it (its user, read-only root
  filesystem, dropped capabilities, the volumes it mounts; the register-models initContainer run in the
  component image first), it serves a model's .mar and answers a prediction;
- the pipeline on Kubeflow's DockerRunner (`fer pipeline run --runner docker`): every step in the
  component image, with DVC on moto's S3 and MLflow on sqlite, ends with a registered champion.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fer_core import cluster
from tests.conftest import free_port, wait_for_http
from tests.k8s.manifests import containers, one, render
from tests.k8s.test_edge import _properties_with, container_env
from tests.pipeline.test_local_run import TINY, dvc_dataset  # noqa: F401 - the end-to-end test's dataset
from tests.serving.conftest import good_images, run_dir  # noqa: F401 - fixtures shared with the serving tests

REPO = Path(__file__).resolve().parents[2]
COMPONENT = f"{cluster.IMAGE_REPOSITORY}:{cluster.IMAGE_TAG}"
TORCHSERVE = cluster.TORCHSERVE_IMAGE
ENGINE = os.environ.get("FER_CONTAINER_ENGINE") or shutil.which("podman") or shutil.which("docker")

pytestmark = pytest.mark.container


def engine(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    assert ENGINE, "no container engine: `make images` installs podman (docker/scripts/podman-setup.sh)"
    done = subprocess.run([ENGINE, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{ENGINE} {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    for image in (COMPONENT, TORCHSERVE):
        if engine("image", "inspect", image, check=False).returncode != 0:
            pytest.fail(f"{image} is not built: run `make images` (the container tier tests the built images)")


def test_the_component_image_runs_fer_as_its_non_root_user_and_holds_this_checkouts_code():
    done = engine("run", "--rm", COMPONENT, "fer", "--help")
    assert "pipeline" in done.stdout and "serve" in done.stdout
    assert engine("run", "--rm", COMPONENT, "id", "-u").stdout.strip() == "10001"
    label = json.loads(engine("image", "inspect", COMPONENT).stdout)[0]["Labels"][cluster.SOURCE_LABEL]
    assert label == cluster.source_digest(), "the image is older than this checkout's code: run `make images`"
    versions = engine("run", "--rm", COMPONENT, "python", "-c",
                      "import importlib.metadata as m; print(m.version('torch'), m.version('kfp'), m.version('mlflow'))")
    # torch from PyTorch's CPU index says 2.14.1+cpu
    assert [version.split("+")[0] for version in versions.stdout.split()] == ["2.14.1", "2.17.3", "3.17.2"]
    assert engine("run", "--rm", COMPONENT, "git", "--version").stdout.startswith("git version")  # DVC needs it


def _pod_spec() -> dict:
    return one(render("base"), "Deployment", "torchserve")["spec"]["template"]["spec"]


def _security_args(pod: dict, container: dict) -> list[str]:
    """podman/docker run flags for what the manifest's securityContext asks."""
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    args = ["--user", f"{context['runAsUser']}:{context['runAsGroup']}"]
    if context.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if context.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    args += [f"--cap-drop={cap}" for cap in context.get("capabilities", {}).get("drop", [])]
    if context.get("fsGroup"):
        args += ["--group-add", str(context["fsGroup"])]
    return args


def _env_args(name: str) -> list[str]:
    return [arg for key, value in container_env(name).items() for arg in ("-e", f"{key}={value}")]


def _mount_args(container: dict, volumes: dict[str, Path]) -> list[str]:
    args = []
    for mount in container.get("volumeMounts", []):
        mode = "ro" if mount.get("readOnly") else "rw"
        args += ["-v", f"{volumes[mount['name']]}:{mount['mountPath']}:{mode}"]
    return args


@pytest.fixture(scope="module")
def served(tmp_path_factory, run_dir):
    """The TorchServe pod of k8s/base in containers: its volumes as folders (emptyDirs group-owned by the
    pod's fsGroup, as Kubernetes gives them), register-models in the component image, then TorchServe."""
    from fer_core.config import ServeConfig
    from fer_core.serving.package import build_mar, resolve_run

    pod = _pod_spec()
    by_name = {container["name"]: container for _, container in containers(pod)}
    group = pod["securityContext"]["fsGroup"]
    folder = tmp_path_factory.mktemp("pod")
    volumes = {name: folder / name for name in ("model-store", "work", "tmp", "config")}
    for path in volumes.values():
        path.mkdir()
    build_mar(resolve_run(run_dir), volumes["model-store"], ServeConfig())
    for name in ("model-store", "work", "tmp"):
        for path in [volumes[name], *volumes[name].rglob("*")]:
            os.chown(path, -1, group)
            os.chmod(path, 0o2775 if path.is_dir() else 0o664)
    volumes["scripts"] = REPO / "k8s" / "base" / "scripts"
    # the ConfigMap's file, with free host ports (the containers share the host's network here)
    port = {name: free_port() for name in ("inference", "management", "metrics", "grpc_i", "grpc_m")}
    (volumes["config"] / "config.properties").write_text(_properties_with(
        (REPO / "k8s/base/torchserve.properties").read_text(encoding="utf-8"), {
            "inference_address": f"http://127.0.0.1:{port['inference']}",
            "management_address": f"http://127.0.0.1:{port['management']}",
            "metrics_address": f"http://127.0.0.1:{port['metrics']}",
            "grpc_inference_port": str(port["grpc_i"]), "grpc_management_port": str(port["grpc_m"])}),
        encoding="utf-8")
    init = by_name["register-models"]
    engine("run", "--rm", "--network", "host", *_security_args(pod, init), *_mount_args(init, volumes),
           *_env_args("register-models"), COMPONENT, *init["command"], timeout=120)
    main = by_name["torchserve"]
    name = f"fer-test-torchserve-{os.getpid()}"
    engine("run", "-d", "--name", name, "--network", "host", *_security_args(pod, main), *_mount_args(main, volumes),
           "-w", main["workingDir"], *_env_args("torchserve"), TORCHSERVE, *main["args"])
    try:
        wait_for_http(f"http://127.0.0.1:{port['inference']}/ping", timeout=240,
                      alive=lambda: json.loads(engine("inspect", name).stdout)[0]["State"]["Running"],
                      log=lambda: engine("logs", name, check=False).stdout[-3000:])
        yield {"name": name, "inference": f"http://127.0.0.1:{port['inference']}", "volumes": volumes}
    finally:
        engine("rm", "-f", name, check=False)


def test_the_torchserve_image_serves_a_model_as_the_deployment_runs_it(served, good_images, tmp_path):
    face = tmp_path / "face.jpg"
    face.write_bytes(good_images["rgb_jpeg"])
    done = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-T", str(face),
                           f"{served['inference']}/predictions/fer"], capture_output=True, text=True, timeout=120)
    body, status = done.stdout.rsplit("\n", 1)
    assert status == "200", body
    answer = json.loads(body)
    assert answer["label"] in answer["probabilities"] and "review" in answer
    assert abs(sum(answer["probabilities"].values()) - 1) < 1e-3
    # it runs as the manifest's user, cannot write its root filesystem, writes its work folder
    assert engine("exec", served["name"], "id", "-u").stdout.strip() == str(_pod_spec()["securityContext"]["runAsUser"])
    assert engine("exec", served["name"], "touch", "/opt/venv/x", check=False).returncode != 0
    assert (served["volumes"]["work"] / "logs").is_dir()


def test_the_torchserve_image_stops_within_seconds_of_a_stop_signal(served):
    """tini as PID 1 passes SIGTERM to TorchServe and its Java frontend: a pod ends cleanly, not at the
    grace period's SIGKILL (PID 1 without a handler ignores SIGTERM)."""
    started = time.monotonic()
    engine("stop", "-t", "30", served["name"], timeout=60)
    assert time.monotonic() - started < 10
    assert json.loads(engine("inspect", served["name"]).stdout)[0]["State"]["ExitCode"] in (0, 143)


def test_the_pipeline_runs_each_step_in_its_image_and_registers_a_champion(tmp_path, dvc_dataset):
    """`fer pipeline run --runner docker`, a tiny profile, the dataset from a DVC repo on moto's S3."""
    clone, version = dvc_dataset
    sets = [arg for key, value in {**TINY, "registry.model_name": "fer-docker"}.items() for arg in ("--set", f"{key}={value}")]
    done = subprocess.run([str(Path(sys.executable).parent / "fer"), "pipeline", "run", "--runner", "docker",
                           "--dvc-repo", str(clone), "--dvc-rev", version.rev, "--dvc-path", "rafdb",
                           "--no-torchserve", "--json", *sets],
                          capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["registered_version"] and "champion" in summary["aliases"]
    log = Path(summary["log"]).read_text(errors="replace")
    assert f"Found image '{COMPONENT}'" in log   # KFP's DockerRunner started the steps in the image
