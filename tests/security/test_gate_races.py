"""The quality gate converges whatever the interleaving (issue "Nothing lost, nothing executed", item 3).

One real MLflow tracking server (sqlite behind it); several register steps as separate processes at
once, each a different training run with its own validation score, one of them retried. The better
model must end as champion, the retry must not register a second version, and a champion with no
recorded metric stops the gate instead of being replaced for free.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
import requests
from mlflow import MlflowClient

from tests.conftest import free_port

pytestmark = pytest.mark.integration

NAME = "fer-race"
METRIC = "val_mean_class_accuracy"

# One register step: a training run (with an artifact to register), then the gate. Run as a process.
STEP = textwrap.dedent("""
    import sys, tempfile, pathlib
    import mlflow
    from mlflow import MlflowClient
    from fer_core import tracking

    uri, run_id, source, value = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    tracking.configure(uri)
    decision = tracking.register_and_gate(source, "%s", metric_name="%s", metric_value=value, floor=0.5,
                                          run_id=run_id)
    print(decision.version, decision.promoted)
""" % (NAME, METRIC))


@pytest.fixture(autouse=True)
def restore_tracking_uri():
    """These tests point fer_core.tracking at a server that stops with the module: put back what was set."""
    import mlflow

    from fer_core.tracking import runs

    saved = (runs._configured_uri, mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    yield
    runs._configured_uri = saved[0]
    mlflow.set_tracking_uri(saved[1])
    mlflow.set_registry_uri(saved[2])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
               "--default-artifact-root", (home / "artifacts").as_uri(), "--workers", "2"]
    log = open(home / "server.log", "wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=home,
                              env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def make_runs(url: str, count: int) -> list[tuple[str, str]]:
    """Training runs, each with a logged model: [(run_id, models:/<model id>)]."""
    import mlflow

    mlflow.set_tracking_uri(url)
    client = MlflowClient(url)
    experiment = client.create_experiment(f"race-{time.time_ns()}")
    runs = []
    for _ in range(count):
        run = client.create_run(experiment)
        model = mlflow.initialize_logged_model(name="fer_model", source_run_id=run.info.run_id,
                                               experiment_id=experiment)
        mlflow.finalize_logged_model(model.model_id, "READY")
        runs.append((run.info.run_id, f"models:/{model.model_id}"))
    return runs


def gate_at_once(url: str, jobs: list[tuple[tuple[str, str], float]]) -> list[str]:
    processes = [subprocess.Popen([sys.executable, "-c", STEP, url, run_id, source, str(value)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for (run_id, source), value in jobs]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        outputs.append(out.strip())
    return outputs


def test_concurrent_gates_crown_the_best_and_a_retry_registers_nothing(mlflow_server):
    values = [0.55, 0.60, 0.58, 0.52]
    runs = make_runs(mlflow_server, len(values))
    run_ids = [run_id for run_id, _ in runs]
    # all four at once, and run 1 (the best) retried at the same time
    jobs = list(zip(runs, values)) + [(runs[1], values[1])]
    gate_at_once(mlflow_server, jobs)

    client = MlflowClient(mlflow_server)
    versions = client.search_model_versions(f"name='{NAME}'")
    by_run = {}
    for version in versions:
        by_run.setdefault(version.tags.get("fer.run_id"), []).append(version.version)
    assert sorted(by_run) == sorted(run_ids)
    assert all(len(found) == 1 for found in by_run.values()), by_run  # one version per training run
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert champion.tags["fer.run_id"] == run_ids[1] and float(champion.tags["gate.value"]) == 0.60

    # a later, worse run cannot take it, in either order with a better one
    more = make_runs(mlflow_server, 2)
    gate_at_once(mlflow_server, [(more[0], 0.57), (more[1], 0.65)])
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert champion.tags["fer.run_id"] == more[1][0]
    # whoever crowned it recorded what it replaced: a rollback returns to the champion before it (the
    # 0.60 version, or the 0.57 one if that gate crowned it for a moment in between)
    from fer_core import tracking

    tracking.configure(mlflow_server)
    restored = tracking.rollback_champion(NAME)
    assert client.get_model_version(NAME, restored).tags["fer.run_id"] in (run_ids[1], more[0][0])
    # a manual choice holds against versions that already exist: a later, worse gate leaves it alone
    [(late, late_uri)] = make_runs(mlflow_server, 1)
    gate_at_once(mlflow_server, [((late, late_uri), 0.56)])
    assert client.get_model_version_by_alias(NAME, "champion").version == restored


def test_a_champion_without_a_recorded_metric_is_an_error(mlflow_server):
    from fer_core import tracking

    tracking.configure(mlflow_server)
    client = MlflowClient(mlflow_server)
    name = f"fer-nometric-{time.time_ns()}"
    [(first, first_uri), (second, second_uri)] = make_runs(mlflow_server, 2)
    import mlflow

    version = mlflow.register_model(first_uri, name)  # registered by hand: no gate tags, no run metrics
    client.set_registered_model_alias(name, "champion", version.version)
    with pytest.raises(ValueError, match="no recorded val_mean_class_accuracy"):
        tracking.register_and_gate(second_uri, name, metric_name=METRIC, metric_value=0.9, floor=0.5,
                                   run_id=second)
    assert client.get_model_version_by_alias(name, "champion").version == version.version
