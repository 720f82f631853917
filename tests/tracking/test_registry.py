"""The pyfunc model round trip through the registry, and the quality gate's alias moves."""

from __future__ import annotations

import uuid

import mlflow.pyfunc
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from fer_core import tracking
from fer_core.model.export import InferenceModel, load_exported
from fer_core.serving.inference import load_meta
from fer_core.serving.package import resolve_registry
from tests.tracking.conftest import SIZE

METRIC = "val_mean_class_accuracy"


@pytest.fixture(scope="module")
def logged_model(tracking_uri, run_folder, tmp_path_factory):
    """One logged model for the module. Module-scoped fixtures run before the per-test FER_HOME
    fixture, so this one sets its own home (else the artifacts would land in ./.fer)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FER_HOME", str(tmp_path_factory.mktemp("registry_home")))
        tracking.configure(tracking_uri)
        experiment_id = tracking.ensure_experiment(f"registry-tests-{uuid.uuid4().hex[:6]}")
        run_id = tracking.client().create_run(experiment_id).info.run_id
        return run_id, tracking.log_fer_model(run_id, run_folder)


def test_champion_predicts_what_the_run_model_predicts(logged_model, run_folder, tiny_model, tracking_uri, tmp_path):
    run_id, model_uri = logged_model
    name = f"fer-{uuid.uuid4().hex[:6]}"
    decision = tracking.register_and_gate(model_uri, name, metric_name=METRIC, metric_value=0.5, floor=0.1)
    assert decision.promoted and decision.version == "1"

    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    out = loaded.predict(x.numpy())
    torch.set_num_threads(1)
    with torch.no_grad():
        logits, uncertainty = InferenceModel(tiny_model)(x)
        recorded = load_meta(run_folder / "meta.json")["files"]["program"]["sha256"]
        program_logits, _ = load_exported(run_folder / "model.pt2", recorded)(x)
    assert out["probabilities"].shape == (3, 7) and out["uncertainty"].shape == (3,)
    np.testing.assert_allclose(out["probabilities"], torch.softmax(logits, 1).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["probabilities"], torch.softmax(program_logits, 1).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["uncertainty"], uncertainty.numpy(), rtol=1e-4, atol=1e-6)

    signature = loaded.metadata.signature
    assert list(signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 3, SIZE, SIZE]
    assert {spec["name"] for spec in signature.outputs.to_dict()} == {"probabilities", "uncertainty"}
    with pytest.raises(Exception, match="3,32,32|shape"):
        loaded.predict(np.zeros((1, 3, SIZE + 1, SIZE + 1), np.float32))
    # the same run id logged it, and runs:/ resolves to it too
    assert MlflowClient().get_model_version(name, "1").run_id == run_id
    # serving's resolver finds exactly one folder with model.safetensors + meta.json in the version's artifacts
    source = resolve_registry(f"models:/{name}@champion", tmp_path / "dl", tracking_uri=tracking_uri)
    assert source.model_version == "1" and source.model_path.is_file() and source.meta_path.is_file()


def test_gate_moves_champion_only_for_a_better_model_above_the_floor(logged_model):
    _, model_uri = logged_model
    name = f"fer-{uuid.uuid4().hex[:6]}"
    client = MlflowClient()
    gate = lambda value, floor=0.3: tracking.register_and_gate(  # noqa: E731
        model_uri, name, metric_name=METRIC, metric_value=value, floor=floor)

    first = gate(0.5)
    assert (first.version, first.promoted, first.previous_champion) == ("1", True, None)

    worse = gate(0.4)
    assert not worse.promoted and "does not beat champion v1" in worse.reason
    assert (worse.previous_champion, worse.previous_value) == ("1", 0.5)
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "candidate").version) == "2"
    tags = client.get_model_version(name, "2").tags
    assert (tags["gate.promoted"], tags["gate.metric"], float(tags["gate.value"])) == ("false", METRIC, 0.4)
    assert tags["gate.reason"] == worse.reason
    assert "candidate only" in client.get_model_version(name, "2").description

    assert not gate(0.5).promoted  # a tie does not move the champion

    better = gate(0.6)
    assert better.promoted and better.version == "4" and better.previous_champion == "1"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "4"

    blocked = gate(0.9, floor=0.95)
    assert not blocked.promoted and "below the floor" in blocked.reason
    assert str(client.get_model_version_by_alias(name, "champion").version) == "4"
    assert str(client.get_model_version_by_alias(name, "candidate").version) == "5"

    assert tracking.rollback_champion(name) == "1"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert tracking.set_champion(name, 4, reason="hotfix") == "1"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "4"


def test_floor_blocks_the_very_first_version(logged_model):
    _, model_uri = logged_model
    name = f"fer-{uuid.uuid4().hex[:6]}"
    decision = tracking.register_and_gate(model_uri, name, metric_name=METRIC, metric_value=0.2, floor=0.5)
    assert not decision.promoted and "below the floor" in decision.reason
    with pytest.raises(Exception):
        MlflowClient().get_model_version_by_alias(name, "champion")
    with pytest.raises(ValueError, match="no champion"):
        tracking.rollback_champion(name)


def test_logged_model_lives_in_the_run_experiment_under_fer_home(logged_model, tracking_uri):
    run_id, model_uri = logged_model
    client = MlflowClient()
    run = client.get_run(run_id)
    model = client.get_logged_model(model_uri.split("/")[-1])
    assert model.experiment_id == run.info.experiment_id and model.source_run_id == run_id
    assert str(model.status).endswith("READY")
    assert model.artifact_location.startswith(client.get_experiment(run.info.experiment_id).artifact_location)
    assert "mlruns" not in model.artifact_location
    assert "registry_home" in model.artifact_location  # the tmp home, never the repo's ./.fer


PORTABLE_LOAD = r'''
import importlib.util, json, sys
repo = sys.argv[1]
# a Python without the project: no repo folder on the path, no editable-install finder
# (the venv's own site-packages may live inside the repo folder: those stay)
sys.path[:] = [p for p in sys.path if p and (not p.startswith(repo) or p.startswith(sys.prefix))]
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
assert importlib.util.find_spec("fer_core") is None, "the project is still importable"
import mlflow.pyfunc
import numpy as np
model = mlflow.pyfunc.load_model(sys.argv[2])
size = int(model.metadata.metadata["image_size"])           # the size the model says it wants
out = model.predict(np.zeros((2, 3, size, size), dtype=np.float32))
import fer_core
print(json.dumps({"size": size, "shape": list(out["probabilities"].shape), "fer_core": fer_core.__file__,
                  "from_repo": sorted(m for m, mod in sys.modules.items()
                                      if (getattr(mod, "__file__", None) or "").startswith(repo)
                                      and not mod.__file__.startswith(sys.prefix))}))
'''


def test_the_champion_loads_where_the_project_is_not_installed(logged_model, tracking_uri, tmp_path):
    """`mlflow.pyfunc.load_model("models:/NAME@champion")` in a Python whose import path excludes the
    project: the model carries fer_core as its code path and predicts at the size its metadata gives."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    _, model_uri = logged_model
    name = f"fer-{uuid.uuid4().hex[:6]}"
    tracking.register_and_gate(model_uri, name, metric_name=METRIC, metric_value=0.5, floor=0.1)
    repo = str(Path(__file__).resolve().parents[2])
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    done = subprocess.run([sys.executable, "-c", PORTABLE_LOAD, repo, f"models:/{name}@champion"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["size"] == SIZE and report["shape"] == [2, 7]
    assert "/code/fer_core/" in report["fer_core"] and not report["fer_core"].startswith(repo), report
    assert not report["from_repo"], report
