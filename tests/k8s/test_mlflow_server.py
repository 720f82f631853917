"""The MLflow server exactly as k8s/base/mlflow.yaml starts it, run here for real.

The Deployment's shell script is taken from the rendered manifest; only what needs a cluster is
swapped (PostgreSQL -> sqlite files, s3://fer-mlflow-artifacts -> a folder, the listen address ->
a free loopback port). It proves the command line works with mlflow 3.17 (basic auth, allowed hosts,
health probe without credentials) - an earlier version of it did not start at all.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from fer_core import cluster
from tests.k8s.manifests import needs_kubectl, one, render

pytestmark = [needs_kubectl, pytest.mark.integration, pytest.mark.slow]


def _swap(script: str, pattern: str, replacement: str) -> str:
    """Replace exactly one match, so a changed manifest fails here loudly instead of running half-swapped."""
    new, count = re.subn(pattern, lambda _: replacement, script)
    assert count == 1, f"expected one match of {pattern!r} in the MLflow script, found {count}"
    return new


def test_mlflow_server_command_of_the_manifest_runs_with_auth_and_host_checks(tmp_path):
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs Flask-WTF "
                                            "(pip install -e '.[cluster]')")
    from tests.conftest import free_port, wait_for_http

    pod = one(render("base"), "Deployment", cluster.MLFLOW_SERVICE)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["sh", "-c"]
    script = container["args"][0]
    port = free_port()
    script = _swap(script, r"postgresql://\$\{POSTGRES_USER\}:\$\{POSTGRES_PASSWORD\}@postgres:5432/mlflow_auth",
                   f"sqlite:///{tmp_path}/auth.db")
    script = _swap(script, r"postgresql://\$\{POSTGRES_USER\}:\$\{POSTGRES_PASSWORD\}@postgres:5432/mlflow\b",
                   f"sqlite:///{tmp_path}/mlflow.db")
    script = _swap(script, rf"s3://{cluster.MLFLOW_ARTIFACTS_BUCKET}", str(tmp_path / "artifacts"))
    script = _swap(script, r"--host 0\.0\.0\.0 --port 5000", f"--host 127.0.0.1 --port {port}")
    script = _swap(script, r"/tmp/basic_auth\.ini", str(tmp_path / "basic_auth.ini"))
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.pop("HOME")
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(tmp_path / "basic_auth.ini")
    user, password = "fer-pipeline", "a-password-of-24-chars!!"
    env.update({"MLFLOW_AUTH_ADMIN_USERNAME": user, "MLFLOW_AUTH_ADMIN_PASSWORD": password,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-csrf-key", "POSTGRES_USER": "unused",
                "POSTGRES_PASSWORD": "unused", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    log = tmp_path / "mlflow.log"
    with open(log, "wb") as handle:
        server = subprocess.Popen(["sh", "-c", script], cwd=tmp_path, env={**os.environ, **env}, stdout=handle,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    search = f"{base}/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        wait_for_http(f"{base}/health", timeout=120, alive=lambda: server.poll() is None,
                      log=lambda: log.read_text(errors="replace")[-3000:])
        # The kubelet probes with the pod IP as Host and no credentials.
        assert requests.get(f"{base}/health", headers={"Host": "10.1.2.3:5000"}, timeout=10).status_code == 200
        assert requests.get(search, timeout=10).status_code == 401
        assert requests.get(search, auth=(user, "wrong-password-123"), timeout=10).status_code == 401
        in_cluster = {"Host": f"{cluster.MLFLOW_SERVICE}.{cluster.NAMESPACE}.svc.cluster.local:5000"}
        assert requests.get(search, auth=(user, password), headers=in_cluster, timeout=10).status_code == 200
        assert requests.get(search, auth=(user, password), timeout=10).status_code == 200  # port-forward
        foreign = requests.get(search, auth=(user, password), headers={"Host": "evil.example"}, timeout=10)
        assert foreign.status_code == 403  # DNS rebinding guard
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        time.sleep(1)  # MLflow's job runner children leave on SIGTERM of the group; do not race them
