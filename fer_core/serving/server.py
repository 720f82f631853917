"""Start, stop and inspect a local TorchServe with our config.properties (token auth on, loopback only).

Clients talk to TorchServe itself: its inference API on serve.address:serve.inference_port checks the
inference key, refuses bodies over serve.max_request_bytes with 413 (Netty, before the body is read)
and hands the handler the raw image for the request forms TorchServe's own docs use (`curl -T`,
`--data-binary` with a binary Content-Type, `-F data=@`). The management and metrics APIs are on their
own ports on the same address (loopback by default). No proxy of our own sits in front of it; on a
cluster the mesh or a mature proxy does (docs/deploy.md).

We launch TorchServe's Java frontend ourselves instead of `torchserve --start`: that launcher keeps one
pid file for the whole machine (`$TMP/.model_server.pid`) and writes key_file.json wherever it is
called from. Here everything (pid file, config, key file, logs, extracted models) lives in
FER_HOME/torchserve, so a test server and a user's server never see each other's state.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from string import Template
from typing import Any

import psutil

from fer_core.config import ServeConfig
from fer_core.home import fer_home
from fer_core.io import atomic_write_text
from fer_core.serving.client import KEY_FILE, Registration, ServeError, TorchServeClient, read_keys

CONFIG_TEMPLATE = Path(__file__).with_name("config.properties")
JAVA_MAIN = "org.pytorch.serve.ModelServer"
PID_FILE = "torchserve.pid"
# Left by versions before 2026-12-06, which put a proxy of their own (fer_core.serving.gateway) in front
# of TorchServe: `fer serve stop|start` still end such a leftover, which that version of this code started.
OLD_GATEWAY_PID_FILE = "gateway.pid"
OLD_GATEWAY_MODULE = "fer_core.serving.gateway"
DEFAULT_START_TIMEOUT = 180.0
# TorchServe's backend workers listen on Unix sockets in Java's tmpdir (FER_HOME/torchserve/tmp here),
# named .ts.sock.<port> from its initial_worker_port, 9000; a socket path holds at most 107 bytes
WORKER_SOCKET = ".ts.sock.9000"
MAX_SOCKET_PATH_BYTES = 107


_SERVE_FIELDS = frozenset(f.name for f in fields(ServeConfig))


@dataclass(frozen=True)
class ServerSettings:
    """Where the server listens and keeps its state: the serve.* config (`serve`; its fields, ports and
    limits are declared once, in ServeConfig, and read here as attributes: `settings.inference_port`),
    and the home and model store folders."""

    home: Path
    model_store: Path
    serve: ServeConfig = field(default_factory=ServeConfig)

    def __getattr__(self, name: str) -> Any:
        # only called for names the dataclass lacks: the serve config's settings
        if name != "serve" and name in _SERVE_FIELDS:
            return getattr(self.serve, name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @classmethod
    def from_config(cls, serve: ServeConfig, home: Path | None = None, model_store: Path | None = None,
                    **overrides: Any) -> "ServerSettings":
        """SERVE with the given overrides (None = keep the config's)."""
        home = Path(home) if home else fer_home() / "torchserve"
        given = {key: value for key, value in overrides.items() if value is not None}
        unknown = set(given) - _SERVE_FIELDS
        if unknown:
            raise TypeError(f"unknown server setting(s): {', '.join(sorted(unknown))}")
        return cls(home=home.resolve(), model_store=Path(model_store or fer_home() / "model_store").resolve(),
                   serve=replace(serve, **given))

    @property
    def inference_url(self) -> str:
        return f"http://{self.address}:{self.inference_port}"

    @property
    def management_url(self) -> str:
        return f"http://{self.address}:{self.management_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}:{self.metrics_port}"

    @property
    def key_file(self) -> Path:
        return self.home / KEY_FILE

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def pid_file(self) -> Path:
        return self.home / PID_FILE

    @property
    def config_file(self) -> Path:
        return self.home / "config.properties"

    def running_config(self) -> dict[str, str]:
        """The config.properties the server was started with ({} before any start)."""
        try:
            text = self.config_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        return dict(re.findall(r"^(\w+)=(\S+)$", text, re.MULTILINE))


def render_config(settings: ServerSettings) -> str:
    """config.properties from the template (models are registered after the start, with the
    environment's workers and batching: `start_server`)."""
    template = Template(CONFIG_TEMPLATE.read_text(encoding="utf-8"))
    text = template.substitute(
        address=settings.address, inference_port=settings.inference_port,
        management_port=settings.management_port, metrics_port=settings.metrics_port,
        grpc_inference_port=settings.grpc_inference_port, grpc_management_port=settings.grpc_management_port,
        model_store=settings.model_store, home=settings.home, workers=settings.workers,
        max_request_bytes=settings.max_request_bytes, token_expiration_min=settings.token_expiration_min,
        response_timeout_s=settings.response_timeout_s, job_queue_size=settings.job_queue_size,
    )
    # An empty value (no models to load at start) is left out rather than handed to TorchServe.
    return "".join(line for line in text.splitlines(keepends=True) if not line.rstrip().endswith("="))


def _java_command(settings: ServerSettings) -> list[str]:
    """What `torchserve --start --ncs` runs, minus its machine-wide pid file; token auth never disabled."""
    import ts

    ts_home = Path(ts.__file__).resolve().parent.parent
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else "java"
    return [
        java, f"-Dmodel_server_home={ts_home}", f"-Djava.io.tmpdir={settings.home / 'tmp'}",
        "-XX:+UseSerialGC", "-Xmx1g",
        "-cp", f".:{ts_home / 'ts' / 'frontend' / '*'}", JAVA_MAIN,
        "--python", sys.executable, "-f", str(settings.config_file), "-s", str(settings.model_store), "-ncs",
    ]


def _pid_running(pid_file: Path, marker: str) -> int | None:
    """The pid in `pid_file` if that process is alive and its command line holds `marker`, else None."""
    try:
        pid = int(pid_file.read_text().strip())
        process = psutil.Process(pid)
        if marker in process.cmdline() and process.status() != psutil.STATUS_ZOMBIE:
            return pid
    except (FileNotFoundError, ValueError, psutil.Error):
        pass
    return None


def _running_pid(settings: ServerSettings) -> int | None:
    """TorchServe's frontend, if ours runs."""
    return _pid_running(settings.pid_file, JAVA_MAIN)


def _old_gateway_pid(settings: ServerSettings) -> int | None:
    return _pid_running(settings.home / OLD_GATEWAY_PID_FILE, OLD_GATEWAY_MODULE)


def _child_env(**extra: str) -> dict[str, str]:
    """The environment of TorchServe and its workers: ours, with this package importable (the
    handler imports fer_core), plus `extra`."""
    package_root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, **extra,
            "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}


def _stop_pid(pid: int | None, timeout: float) -> None:
    """SIGTERM a process and its children; SIGKILL whatever is left after `timeout`."""
    if not pid or pid == os.getpid():  # psutil.Process(None) is this very process
        return
    try:
        parent = psutil.Process(pid)
        family = [parent, *parent.children(recursive=True)]
        parent.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs([parent], timeout=timeout)
        for process in alive:
            process.kill()
        # Workers normally exit with the frontend; any left over are ours to end.
        _, leftovers = psutil.wait_procs(family[1:], timeout=10)
        for process in leftovers:
            process.kill()
    except psutil.NoSuchProcess:
        pass


def client_for(settings: ServerSettings, timeout: float = 60.0) -> TorchServeClient:
    return TorchServeClient(settings.inference_url, settings.management_url, read_keys(settings.key_file),
                            timeout=timeout, key_file=settings.key_file)


def _log_tail(settings: ServerSettings, lines: int = 40) -> str:
    chunks = []
    for name in ("ts_stdout.log", "ts_log.log"):
        path = settings.log_dir / name
        if path.is_file():
            chunks.append(f"--- {path} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(chunks)


def start_server(settings: ServerSettings, load_models: list[str] | None = None,
                 timeout: float = DEFAULT_START_TIMEOUT) -> dict[str, Any]:
    """Start TorchServe unless ours already runs; return once /ping answers Healthy and every model
    loaded at start has a READY worker (ServeError, with the logs' tail, when it does not come up).

    Idempotent: a running server is reported ({"started": False, ...}), never started twice.
    """
    pid = _running_pid(settings)
    if pid is not None:
        return {"started": False, "pid": pid, **server_status(settings)}
    _check_socket_path(settings)
    for name in load_models or []:
        if not (settings.model_store / name).is_file():
            raise ServeError(f"{settings.model_store / name}: no such model archive in the model store")
    settings.model_store.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    (settings.home / "tmp").mkdir(parents=True, exist_ok=True)
    settings.key_file.unlink(missing_ok=True)  # a stale key file must not pass for a fresh one
    _stop_old_gateway(settings)  # it would hold serve.inference_port
    atomic_write_text(settings.config_file, render_config(settings))
    env = _child_env(LOG_LOCATION=str(settings.log_dir), METRICS_LOCATION=str(settings.log_dir))
    with open(settings.log_dir / "ts_stdout.log", "ab") as log:
        process = subprocess.Popen(_java_command(settings), cwd=settings.home, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    atomic_write_text(settings.pid_file, f"{process.pid}\n")
    started = time.monotonic()
    try:
        wait_healthy(settings, process, timeout)
        if load_models:
            from fer_core.serving.package import read_mar_manifest

            client = client_for(settings, timeout=max(timeout, 60.0))
            registration = Registration.from_serve(settings.serve)
            for name in load_models:  # this environment's workers and batching, not the archive's
                try:
                    client.register(name, registration)
                except ServeError as exc:
                    raise ServeError(f"{name}: no ready worker: registering it failed: {exc}\n"
                                     f"{_log_tail(settings)}") from None
            names = sorted({read_mar_manifest(settings.model_store / name)["model"]["modelName"]
                            for name in load_models})
            wait_workers_ready(settings, process, max(timeout - (time.monotonic() - started), 1.0), names)
    except BaseException:
        stop_server(settings)
        raise
    return {"started": True, "pid": process.pid, **server_status(settings)}


def _check_socket_path(settings: ServerSettings) -> None:
    """A FER_HOME too deep for the workers' Unix sockets fails before anything starts, saying so: TorchServe
    itself would start, then lose every worker to `OSError: AF_UNIX path too long` in model_log.log."""
    socket_path = settings.home / "tmp" / WORKER_SOCKET
    size = len(os.fsencode(socket_path))
    if size > MAX_SOCKET_PATH_BYTES:
        raise ServeError(f"{socket_path}: TorchServe's worker socket would have a {size}-byte path, and a Unix "
                         f"socket path holds at most {MAX_SOCKET_PATH_BYTES}: set FER_HOME to a shorter folder "
                         f"(its server folder is {settings.home})")


def _stop_old_gateway(settings: ServerSettings) -> bool:
    gateway = _old_gateway_pid(settings)
    if gateway is not None:
        _stop_pid(gateway, timeout=10)
    (settings.home / OLD_GATEWAY_PID_FILE).unlink(missing_ok=True)
    return gateway is not None


def wait_workers_ready(settings: ServerSettings, process: subprocess.Popen | None, timeout: float,
                       names: list[str] | None = None) -> None:
    """Wait until each model in `names` (default: every registered one) has a READY worker: /ping
    Healthy alone can come before the first worker has loaded its model, and a request then would
    wait or fail; a model that never registered is waited for too."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServeError(f"TorchServe exited with code {process.returncode} while loading models\n"
                             f"{_log_tail(settings)}")
        status = server_status(settings)
        models = status.get("models") or {}
        wanted = names or list(models)
        if wanted and all(any(v["ready_workers"] > 0 for v in models.get(name, [])) for name in wanted):
            return
        time.sleep(0.5)
    raise ServeError(f"TorchServe has no ready worker after {timeout:.0f}s (models: {status.get('models')}, "
                     f"error: {status.get('error')})\n{_log_tail(settings)}")


def wait_healthy(settings: ServerSettings, process: subprocess.Popen, timeout: float) -> None:
    """Poll /ping (with the inference key) until Healthy; fail early if TorchServe died (a port taken,
    Java missing) with the logs' tail."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServeError(f"TorchServe exited with code {process.returncode} while starting (is one of ports "
                             f"{settings.inference_port}, {settings.management_port}, {settings.metrics_port} on "
                             f"{settings.address} taken?)\n{_log_tail(settings)}")
        if settings.key_file.is_file():
            try:
                if client_for(settings, timeout=5).ping().get("status") == "Healthy":
                    return
            except (ServeError, OSError) as exc:
                last = str(exc)
            except Exception as exc:  # requests' connection errors while Java binds its ports
                last = repr(exc)
        time.sleep(0.5)
    raise ServeError(f"TorchServe not healthy after {timeout:.0f}s (last: {last})\n{_log_tail(settings)}")


def stop_server(settings: ServerSettings, timeout: float = 60.0) -> bool:
    """Stop our TorchServe and its Python workers; True if it was running."""
    pid = _running_pid(settings)
    old_gateway = _stop_old_gateway(settings)
    if pid is None:
        settings.pid_file.unlink(missing_ok=True)
        return old_gateway
    _stop_pid(pid, timeout)
    settings.pid_file.unlink(missing_ok=True)
    settings.key_file.unlink(missing_ok=True)
    return True


def server_status(settings: ServerSettings) -> dict[str, Any]:
    """Running or not, health, and the registered models with their versions and ready workers."""
    pid = _running_pid(settings)
    status: dict[str, Any] = {"running": pid is not None, "pid": pid, "inference_url": settings.inference_url,
                              "management_url": settings.management_url, "metrics_url": settings.metrics_url,
                              "home": str(settings.home), "model_store": str(settings.model_store)}
    if pid is None:
        return status
    # where the running server really listens (it may have been started with other ports than asked now)
    running = settings.running_config()
    for key, name in (("inference_url", "inference_address"), ("management_url", "management_address"),
                      ("metrics_url", "metrics_address")):
        status[key] = running.get(name) or status[key]
    try:
        client = client_for(settings, timeout=10)
        status["health"] = client.ping().get("status")
        models = client._management("GET", "/models").get("models", [])
        status["models"] = {}
        for entry in models:
            versions = client.list_versions(entry["modelName"])
            status["models"][entry["modelName"]] = [
                {"version": str(v["modelVersion"]),
                 "ready_workers": sum(w.get("status") == "READY" for w in v.get("workers", []))}
                for v in versions
            ]
    except Exception as exc:  # a status report should say what failed, not crash
        status["error"] = str(exc)
    return status
