"""`fer pipeline submit` sends the compiled package to a KFP host: a local stand-in for the KFP v2beta1
REST API records what the real client sends (no cluster runs here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from fer_cli.main import cli
from fer_core import cluster
from tests.docs import doc_blocks


class _KFP(BaseHTTPRequestHandler):
    requests: list = []

    def _send(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's name
        self.requests.append(("GET", self.path, None))
        if self.path.startswith("/apis/v2beta1/healthz"):
            self._send({"multi_user": False})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            self._send({"experiments": [], "total_size": 0})
        elif self.path.startswith("/apis/v2beta1/runs/run-456"):
            self._send({"run_id": "run-456", "state": "SUCCEEDED", "experiment_id": "exp-123"})
        else:
            self._send({"error": "not found"}, 404)

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.requests.append(("POST", self.path, body))
        if self.path == "/apis/v2beta1/experiments":
            self._send({"experiment_id": "exp-123", "display_name": body.get("display_name")})
        elif self.path == "/apis/v2beta1/runs":
            self._send({"run_id": "run-456", "display_name": body.get("display_name"), "state": "PENDING",
                        "experiment_id": body.get("experiment_id")})
        else:
            self._send({"error": "not found"}, 404)

    def log_message(self, *args):
        pass


@pytest.fixture
def kfp_host():
    _KFP.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KFP)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _KFP.requests
    server.shutdown()


def test_submit_sends_the_package_with_parameters(kfp_host, tmp_path):
    host, requests = kfp_host
    package = tmp_path / "fer.yaml"
    result = CliRunner().invoke(cli, ["pipeline", "submit", "--host", host, "--source", "s3://fer-data/rafdb",
                                      "--experiment", "fer-test", "--run-name", "nightly", "--package", str(package),
                                      "--set", "train.epochs=3"])
    assert result.exit_code == 0, result.output
    assert "run id: run-456" in result.output
    assert f"{host}/#/runs/details/run-456" in result.output
    assert package.is_file()
    posts = {path: body for method, path, body in requests if method == "POST"}
    assert posts["/apis/v2beta1/experiments"]["display_name"] == "fer-test"
    run = posts["/apis/v2beta1/runs"]
    assert run["display_name"] == "nightly"
    assert run["experiment_id"] == "exp-123"
    assert run["service_account"] == cluster.PIPELINE_SERVICE_ACCOUNT
    # with a Kubernetes platform spec the client sends both specs together
    spec = run["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "fer-train-and-serve"
    assert "kubernetes" in run["pipeline_spec"]["platform_spec"]["platforms"]
    params = run["runtime_config"]["parameters"]
    assert params["source"] == "s3://fer-data/rafdb"
    assert params["train_config"]["epochs"] == 3
    # the cluster defaults travel with the package
    assert spec["root"]["inputDefinitions"]["parameters"]["mlflow_tracking_uri"][
        "defaultValue"] == cluster.MLFLOW_URI_IN_CLUSTER


def test_submit_without_a_dataset_is_a_usage_error(kfp_host):
    host, requests = kfp_host
    result = CliRunner().invoke(cli, ["pipeline", "submit", "--host", host])
    assert result.exit_code == 2
    assert "--source" in result.output
    assert not [r for r in requests if r[0] == "POST"]


def test_submit_to_an_unreachable_host_fails_clearly(tmp_path):
    result = CliRunner().invoke(cli, ["pipeline", "submit", "--host", "http://127.0.0.1:9", "--source", "s3://b/p",
                                      "--package", str(tmp_path / "p.yaml")])
    assert result.exit_code == 1
    assert "submitting to http://127.0.0.1:9 failed" in result.output


ROOT = Path(__file__).resolve().parents[2]
DOC_HOST = "https://kfp.example.com"


def test_the_documented_compile_and_submit_commands_run_as_written(kfp_host, tmp_path):
    """docs/pipeline.md's compile + submit block, typed in a checkout (only the host differs)."""
    host, requests = kfp_host
    block = next(block for block in doc_blocks("docs/pipeline.md", "bash") if "fer pipeline submit" in block)
    assert DOC_HOST in block
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    env = {key: value for key, value in os.environ.items() if key != "FER_PARAMS"}
    result = subprocess.run(["bash", "-e", "-c", block.replace(DOC_HOST, host)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "fer-pipeline.yaml").is_file() and "run id: run-456" in result.stdout
    run = next(body for method, path, body in requests if method == "POST" and path == "/apis/v2beta1/runs")
    assert run["display_name"] == "rafdb-v3" and run["runtime_config"]["parameters"]["train_config"]["epochs"] == 60


def test_the_documented_kfp_client_snippet_runs_as_written(kfp_host, monkeypatch):
    """docs/pipeline.md's `kfp.Client` example, from the repository root (only the host differs)."""
    host, requests = kfp_host
    snippet = next(block for block in doc_blocks("docs/pipeline.md", "python") if "create_run_from_pipeline_func" in block)
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(snippet.replace(DOC_HOST, host), "docs/pipeline.md", "exec"), namespace)  # noqa: S102
    assert namespace["run"].run_id == "run-456"
    run = next(body for method, path, body in requests if method == "POST" and path == "/apis/v2beta1/runs")
    assert run["service_account"] == cluster.PIPELINE_SERVICE_ACCOUNT
    assert run["runtime_config"]["parameters"]["source"] == "s3://fer-data/rafdb"
    assert ("GET", "/apis/v2beta1/runs/run-456", None) in requests      # it waited for the run
