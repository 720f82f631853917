"""Shared fixtures: an isolated home folder, a real S3 endpoint (moto's server on 127.0.0.1); helpers
for tests that start servers (a free port, waiting for an answer)."""

from __future__ import annotations

import os
import socket
import time
from typing import Callable

import pytest
import requests


MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def _forget_mlflow_uris() -> None:
    """mlflow.set_tracking_uri/set_registry_uri (what fer_core.tracking.configure calls) keep the URI in
    module globals and export it as MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI for subprocesses: one test's
    store must not become the next test's (or its subprocesses') default."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    from fer_core.tracking import runs

    tracking_utils._tracking_uri = None
    registry_utils._registry_uri = None
    runs._configured_uri = None


@pytest.fixture(autouse=True)
def fer_home(tmp_path, monkeypatch):
    """Every test gets its own FER_HOME and no MLflow URI from another test; nothing leaks into the
    repo's .fer/."""
    home = tmp_path / "fer_home"
    home.mkdir()
    monkeypatch.setenv("FER_HOME", str(home))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    saved = {name: os.environ.pop(name, None) for name in MLFLOW_URI_VARIABLES}
    _forget_mlflow_uris()
    yield home
    for name, value in saved.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value
    _forget_mlflow_uris()


def wait_for_http(url: str, *, timeout: float, alive: Callable[[], bool], log: Callable[[], str],
                  status: int | None = 200, headers: dict[str, str] | None = None) -> None:
    """Poll URL until it answers STATUS (None: any answer) while the server lives (ALIVE); an
    AssertionError with the server's LOG when it exits first or TIMEOUT seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        assert alive(), f"the server exited before {url} answered:\n{log()}"
        assert time.monotonic() < deadline, f"{url} did not answer {status or 'at all'} in {timeout:.0f} s:\n{log()}"
        try:
            answer = requests.get(url, headers=headers, timeout=5)
            if status is None or answer.status_code == status:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The usual AWS variables pointing boto3 (and DVC) at the moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return s3_server


def one_torch_thread():
    """Two cores are shared by every engineer's tests: one torch thread each keeps them polite and fast.
    Model and training tests use it as an autouse fixture (their conftest.py)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
