"""Test tiers, one marker each, so a quick run can leave the long ones out (`make test-fast`):

- code:        units of the library, the CLI and the pipeline definition (default)
- data:        dataset formats, ingest, validation, the synthetic benchmark (tests/data/)
- behaviour:   the model learns, keeps its answer under a flip, recognizes clear faces (tests/behaviour/)
- integration: real services and runners: MLflow stores, moto's S3, DVC, TorchServe, the Kubeflow local
               runner, subprocess trainings (the paths below, and tests already marked `integration`)
- container:   the images built from docker/, run (tests/containers/); needs `make images` first

`make test` runs every tier but container; `make test-containers` builds the images and runs that one
(CI runs it as its own stage, .ci/run); `make test-fast` runs code and data without the tests marked `slow`.
"""

from __future__ import annotations

import pytest

INTEGRATION_PATHS = (
    "tests/pipeline/", "tests/versioning/", "tests/tracking/", "tests/serving/test_torchserve.py",
    "tests/serving/test_package.py", "tests/k8s/test_edge.py", "tests/k8s/test_mlflow_server.py",
    "tests/k8s/test_s3_scripts.py", "tests/security/test_gate_races.py", "tests/security/test_model_loading.py",
    "tests/data/test_s3_source.py", "tests/model/test_weights.py",
)
# component tests on the local runner, or on the shared tracked training (MLflow)
INTEGRATION_FIXTURES = {"local_runner", "trained", "s3_server", "s3_env"}


def pytest_configure(config: pytest.Config) -> None:
    for tier in ("code", "data", "container"):
        config.addinivalue_line("markers", f"{tier}: test tier (see the repository's conftest.py)")


def _tier(item: pytest.Item) -> str:
    path = item.nodeid.split("::")[0]
    if item.get_closest_marker("container") or path.startswith("tests/containers/"):
        return "container"
    if item.get_closest_marker("integration") or path.startswith(INTEGRATION_PATHS) \
            or INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
        return "integration"
    if item.get_closest_marker("behaviour") or path.startswith("tests/behaviour/"):
        return "behaviour"
    if path.startswith("tests/data/"):
        return "data"
    return "code"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = _tier(item)
        if not item.get_closest_marker(tier):
            item.add_marker(getattr(pytest.mark, tier))
