"""Server settings, config.properties and the Java command, without starting Java."""

from __future__ import annotations

import json

import pytest

from fer_core.config import ServeConfig, load_config
from fer_core.serving.client import ServeError, read_keys
from fer_core.serving.server import (
    MAX_SOCKET_PATH_BYTES, ServerSettings, _java_command, render_config, server_status, start_server, stop_server,
)


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_defaults_from_config(fer_home):
    settings = ServerSettings.from_config(load_config("params.yaml").serve)
    assert settings.home == fer_home / "torchserve"
    assert settings.model_store == fer_home / "model_store"
    assert (settings.inference_port, settings.management_port, settings.metrics_port) == (8080, 8081, 8082)
    assert settings.key_file == fer_home / "torchserve" / "key_file.json"
    assert settings.log_dir == fer_home / "torchserve" / "logs"


def test_config_properties(tmp_path):
    serve = ServeConfig(max_request_bytes=12345, token_expiration_min=15, workers=2)
    settings = ServerSettings.from_config(serve, home=tmp_path / "ts", model_store=tmp_path / "store",
                                          inference_port=9001, management_port=None)
    props = properties(render_config(settings))
    # clients talk to TorchServe itself: its inference API on serve.address:serve.inference_port
    assert props["inference_address"] == "http://127.0.0.1:9001"
    assert props["management_address"] == "http://127.0.0.1:8081"
    assert props["metrics_address"] == "http://127.0.0.1:8082"
    # gRPC on its own configurable ports, bound to the same loopback address
    assert (props["grpc_inference_address"], props["grpc_inference_port"]) == ("127.0.0.1", "7070")
    assert (props["grpc_management_address"], props["grpc_management_port"]) == ("127.0.0.1", "7071")
    assert props["disable_token_authorization"] == "false"
    assert props["enable_model_api"] == "true"
    assert props["install_py_dep_per_model"] == "false"
    assert props["metrics_mode"] == "prometheus"
    assert props["max_request_size"] == "12345"
    assert props["token_expiration_min"] == "15"
    assert props["default_workers_per_model"] == "2"
    assert props["model_store"] == str(tmp_path / "store")
    assert "load_models" not in props  # archives are registered after the start, with serve.* batching
    assert props["job_queue_size"] == "1000" and props["default_response_timeout"] == "120"
    assert props["disable_system_metrics"] == "true" and props["async_logging"] == "true"


def test_java_command_keeps_token_auth(tmp_path):
    settings = ServerSettings.from_config(ServeConfig(), home=tmp_path, model_store=tmp_path / "store")
    command = _java_command(settings)
    assert "-ncs" in command
    assert not any("disable-token" in part for part in command)
    assert command[command.index("-f") + 1] == str(tmp_path / "config.properties")


def test_stop_and_status_when_not_running(tmp_path):
    settings = ServerSettings.from_config(ServeConfig(), home=tmp_path, model_store=tmp_path / "store")
    settings.home.mkdir(exist_ok=True)
    settings.pid_file.write_text("999999999\n")  # a stale pid file
    assert server_status(settings)["running"] is False
    assert stop_server(settings) is False
    assert not settings.pid_file.exists()


def test_key_file(tmp_path):
    with pytest.raises(ServeError, match="fer serve start"):
        read_keys(tmp_path / "key_file.json")
    (tmp_path / "key_file.json").write_text(json.dumps({
        "management": {"key": "m", "expiration time": "x"}, "inference": {"key": "i", "expiration time": "x"},
        "API": {"key": "a"}}))
    keys = read_keys(tmp_path / "key_file.json")
    assert (keys.inference, keys.management, keys.api) == ("i", "m", "a")
    (tmp_path / "key_file.json").write_text("{}")
    with pytest.raises(ServeError, match="not a TorchServe key file"):
        read_keys(tmp_path / "key_file.json")


def test_a_home_too_deep_for_the_worker_sockets_is_refused_before_anything_starts(tmp_path):
    """TorchServe's workers listen on FER_HOME/torchserve/tmp/.ts.sock.9000: past 107 bytes the bind fails
    inside each worker (seen under a deeper pytest folder); the start says so first and creates nothing."""
    deep = tmp_path / ("d" * (MAX_SOCKET_PATH_BYTES + 1 - len(str(tmp_path / "d/ts/tmp/.ts.sock.9000"))))
    fits = ServerSettings.from_config(ServeConfig(), home=deep / "ts", model_store=tmp_path / "store")
    too_deep = ServerSettings.from_config(ServeConfig(), home=deep / "tsx", model_store=tmp_path / "store")
    assert len(str(fits.home / "tmp/.ts.sock.9000")) == MAX_SOCKET_PATH_BYTES  # the longest that binds
    with pytest.raises(ServeError, match=r"108-byte path.*at most 107: set FER_HOME to a shorter folder"):
        start_server(too_deep, timeout=5)
    assert not deep.exists() and not (tmp_path / "store").exists()           # nothing written
