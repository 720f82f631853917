"""The cluster's no-mesh edge (k8s/base/torchserve-edge.conf.template) as the pod runs it: the template
rendered the way the nginx image renders it (envsubst of the set variables only), served by Debian's
nginx, in front of a real TorchServe started with the shipped k8s/base/torchserve.properties (ports
moved to free loopback ones). Token required, 413, each curl form, the management route only for the
management token, TorchServe's own APIs on loopback with nothing fetched from outside its store."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, wait_for_http
from tests.serving.conftest import good_images, run_dir  # noqa: F401 - fixtures shared with the serving tests

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "k8s" / "base" / "torchserve-edge.conf.template"
PROPERTIES = REPO / "k8s" / "base" / "torchserve.properties"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
INFERENCE_TOKEN, MANAGEMENT_TOKEN = "b1f6c0c2d9e84e2f", "7a3d5e0f11c24b9e"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs Debian's nginx-light)"),
    pytest.mark.skipif(shutil.which("envsubst") is None, reason="envsubst (gettext-base) is not installed"),
]


def render_template(values: dict[str, str]) -> str:
    """What the nginx image's 20-envsubst-on-templates.sh does: envsubst limited to the variables set."""
    names = " ".join(f"${{{name}}}" for name in values)
    done = subprocess.run(["envsubst", names], input=TEMPLATE.read_text(encoding="utf-8"), capture_output=True,
                          text=True, env={"PATH": os.environ["PATH"], **values}, timeout=30, check=True)
    return done.stdout


def container_env(name: str) -> dict[str, str]:
    """A container's plain environment in k8s/base/torchserve.yaml (the Secret's values aside)."""
    from tests.k8s.manifests import one, render

    pod = one(render("base"), "Deployment", "torchserve")["spec"]["template"]["spec"]
    container = next(c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == name)
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def deployment_values() -> dict[str, str]:
    return container_env("edge")


class Edge:
    """nginx with a rendered template, on free ports; stopped by close()."""

    def __init__(self, folder: Path, values: dict[str, str]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o777)  # nginx's workers (nobody, when the test runs as root) write temp files here
        (folder / "edge.conf").write_text(render_template(values), encoding="utf-8")
        user = "user root;" if os.geteuid() == 0 else ""
        (folder / "nginx.conf").write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/edge.conf;
}}
""", encoding="utf-8")
        self.process = subprocess.Popen([NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf")],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def _wait_for(url: str, status: int, timeout: float, process: subprocess.Popen, log: Path) -> None:
    wait_for_http(url, status=status, timeout=timeout, alive=lambda: process.poll() is None,
                  log=lambda: log.read_text(errors="replace")[-3000:])


def _properties_with(text: str, changes: dict[str, str]) -> str:
    for key, value in changes.items():
        text, count = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.M)
        assert count == 1, key
    return text


@pytest.fixture(scope="module")
def pod(tmp_path_factory, run_dir):
    """TorchServe with the shipped cluster config and the test model, the edge in front of it."""
    from fer_core.config import ServeConfig
    from fer_core.serving.package import build_mar, resolve_run

    folder = tmp_path_factory.mktemp("pod")
    port = {name: free_port() for name in ("inference", "management", "metrics", "grpc_i", "grpc_m", "edge_i", "edge_m")}
    store, work = folder / "model-store", folder / "work"
    work.mkdir()
    build_mar(resolve_run(run_dir), store, ServeConfig())
    shipped = folder / "configmap.properties"
    shipped.write_text(_properties_with(PROPERTIES.read_text(encoding="utf-8"), {
        "inference_address": f"http://127.0.0.1:{port['inference']}",
        "management_address": f"http://127.0.0.1:{port['management']}",
        "metrics_address": f"http://127.0.0.1:{port['metrics']}",
        "grpc_inference_port": str(port["grpc_i"]), "grpc_management_port": str(port["grpc_m"]),
        "model_store": str(store),
        "allowed_urls": f"file://{store}/[^/]+\\\\.mar"}), encoding="utf-8")
    # the initContainer register-models, as the Deployment runs it, writes the config TorchServe starts with
    config = folder / "config.properties"
    registration = container_env("register-models")
    subprocess.run([sys.executable, str(REPO / "k8s/base/scripts/torchserve_models.py"), str(shipped), str(store),
                    str(config)], check=True, env={**os.environ, **registration}, capture_output=True, timeout=60)
    log = folder / "torchserve.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "wb") as handle:
        torchserve = subprocess.Popen(
            [str(Path(sys.executable).parent / "torchserve"), "--start", "--foreground", "--ts-config", str(config),
             "--model-store", str(store)], cwd=work, stdout=handle, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    values = {**deployment_values(), "FER_INFERENCE_TOKEN": INFERENCE_TOKEN, "FER_MANAGEMENT_TOKEN": MANAGEMENT_TOKEN,
              "FER_EDGE_INFERENCE_PORT": f"127.0.0.1:{port['edge_i']}",
              "FER_EDGE_MANAGEMENT_PORT": f"127.0.0.1:{port['edge_m']}",
              "FER_TORCHSERVE_INFERENCE": f"127.0.0.1:{port['inference']}",
              "FER_TORCHSERVE_MANAGEMENT": f"127.0.0.1:{port['management']}"}
    edge = Edge(folder / "edge", values)
    try:
        _wait_for(f"http://127.0.0.1:{port['metrics']}/metrics", 200, 120, torchserve, log)
        _wait_for(f"http://127.0.0.1:{port['edge_i']}/healthz", 200, 120, torchserve, log)
        yield {"inference": f"http://127.0.0.1:{port['edge_i']}", "management": f"http://127.0.0.1:{port['edge_m']}",
               "torchserve": f"http://127.0.0.1:{port['inference']}", "folder": folder, "store": store,
               "max_body": int(values["FER_MAX_BODY_BYTES"]), "registration": registration}
    finally:
        edge.close()
        os.killpg(torchserve.pid, signal.SIGTERM)
        try:
            torchserve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(torchserve.pid, signal.SIGKILL)
            torchserve.wait(timeout=10)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def curl(url: str, *args: str) -> tuple[int, str]:
    done = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args, url], capture_output=True, text=True,
                          timeout=120)
    body, status = done.stdout.rsplit("\n", 1)
    return int(status), body


def test_the_token_is_required_and_each_route_takes_only_its_own(pod, good_images):
    url = f"{pod['inference']}/predictions/fer"
    image = good_images["rgb_jpeg"]
    for headers in ({}, bearer("wrong"), bearer(MANAGEMENT_TOKEN), {"Authorization": INFERENCE_TOKEN}):
        answer = requests.post(url, data=image, headers=headers, timeout=30)
        assert answer.status_code == 401 and answer.json()["type"] == "Unauthorized", headers
    assert requests.post(url, data=image, headers=bearer(INFERENCE_TOKEN), timeout=60).status_code == 200
    models = f"{pod['management']}/models"
    assert requests.get(models, headers=bearer(INFERENCE_TOKEN), timeout=30).status_code == 401
    assert requests.get(models, timeout=30).status_code == 401
    answer = requests.get(models, headers=bearer(MANAGEMENT_TOKEN), timeout=30)
    assert answer.status_code == 200 and [m["modelName"] for m in answer.json()["models"]] == ["fer"]
    # the probe's path needs no token and tells nothing but TorchServe's health
    assert requests.get(f"{pod['inference']}/healthz", timeout=30).json() == {"status": "Healthy"}


def test_each_curl_form_and_a_form_labelled_body_reach_the_handler_as_the_image(pod, good_images, tmp_path):
    url = f"{pod['inference']}/predictions/fer"
    face = tmp_path / "face.jpg"
    face.write_bytes(good_images["rgb_jpeg"])
    auth = ["-H", f"Authorization: Bearer {INFERENCE_TOKEN}"]
    answers = {}
    for name, args in {"-T": ["-T", str(face)],
                       "octet-stream": ["-H", "Content-Type: application/octet-stream", "--data-binary", f"@{face}"],
                       "-F data=@": ["-F", f"data=@{face}"],
                       "bare --data-binary (a form)": ["--data-binary", f"@{face}"]}.items():
        status, body = curl(url, *auth, *args)
        assert status == 200, (name, body)
        answers[name] = json.loads(body)
    assert len({json.dumps(answer["probabilities"], sort_keys=True) for answer in answers.values()}) == 1


def test_a_40_mb_body_gets_413_and_the_pod_keeps_serving(pod, good_images, tmp_path):
    url = f"{pod['inference']}/predictions/fer"
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40 << 20))
    auth = ["-H", f"Authorization: Bearer {INFERENCE_TOKEN}"]
    for args in (["-T", str(big)], ["-H", "Content-Type: application/octet-stream", "--data-binary", f"@{big}"]):
        status, body = curl(url, *auth, *args)
        assert status == 413 and json.loads(body)["type"] == "PayloadTooLarge", body
    answer = requests.post(url, data=good_images["rgb_png"], headers=bearer(INFERENCE_TOKEN), timeout=60)
    assert answer.status_code == 200


def test_torchserve_itself_is_closed_to_the_outside_and_fetches_nothing_from_outside_its_store(pod):
    shipped = dict(line.split("=", 1) for line in PROPERTIES.read_text().splitlines()
                   if line and not line.startswith("#"))
    for key in ("inference_address", "management_address"):
        assert shipped[key].startswith("http://127.0.0.1:"), key  # only the pod's own containers
    assert shipped["grpc_inference_address"] == shipped["grpc_management_address"] == "127.0.0.1"
    management = f"{pod['management']}/models"
    remote = requests.post(f"{management}?url=https://203.0.113.9/evil.mar", headers=bearer(MANAGEMENT_TOKEN),
                           timeout=30)
    assert 400 <= remote.status_code < 500 and "allowed" in remote.json()["message"].lower(), remote.text


@pytest.mark.parametrize("inference, management, management_open", [
    ("REPLACE_ME", "REPLACE_ME", False), ("", MANAGEMENT_TOKEN, True), (INFERENCE_TOKEN, INFERENCE_TOKEN, False)])
def test_unfilled_or_shared_tokens_open_nothing(tmp_path, inference, management, management_open):
    """The Secret's template placeholder, an empty token, or one token for both routes: that route answers
    503, never open (an open route here goes on to a TorchServe that is not there: 502)."""
    port = {name: free_port() for name in ("edge_i", "edge_m")}
    values = {**deployment_values(), "FER_INFERENCE_TOKEN": inference, "FER_MANAGEMENT_TOKEN": management,
              "FER_EDGE_INFERENCE_PORT": f"127.0.0.1:{port['edge_i']}",
              "FER_EDGE_MANAGEMENT_PORT": f"127.0.0.1:{port['edge_m']}",
              "FER_TORCHSERVE_INFERENCE": "127.0.0.1:9", "FER_TORCHSERVE_MANAGEMENT": "127.0.0.1:9"}
    edge = Edge(tmp_path / "edge", values)
    try:
        wait_for_http(f"http://127.0.0.1:{port['edge_m']}/", status=None, timeout=30,
                      alive=lambda: edge.process.poll() is None, log=lambda: edge.process.stdout.read().decode())
        answer = requests.get(f"http://127.0.0.1:{port['edge_m']}/models", headers=bearer(management), timeout=10)
        if management_open:
            assert answer.status_code == 502
        else:
            assert answer.status_code == 503 and answer.json()["type"] == "EdgeNotConfigured"
        if inference in ("", "REPLACE_ME"):
            answer = requests.post(f"http://127.0.0.1:{port['edge_i']}/predictions/fer", data=b"x",
                                   headers=bearer(inference), timeout=10)
            assert answer.status_code == 503
    finally:
        edge.close()


def test_the_pod_registers_its_archives_with_the_environments_workers_and_batching(pod):
    """The archive freezes none: register-models wrote them into TorchServe's start config from the
    Deployment's environment (FER_WORKERS, FER_BATCH_SIZE, FER_MAX_BATCH_DELAY_MS)."""
    [described] = requests.get(f"{pod['management']}/models/fer", headers=bearer(MANAGEMENT_TOKEN), timeout=30).json()
    registration = pod["registration"]
    assert (described["minWorkers"], described["batchSize"], described["maxBatchDelay"]) == (
        int(registration["FER_WORKERS"]), int(registration["FER_BATCH_SIZE"]), int(registration["FER_MAX_BATCH_DELAY_MS"]))
