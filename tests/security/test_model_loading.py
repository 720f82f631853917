"""Nothing in a model artifact runs when it is loaded (issue "Nothing lost, nothing executed", item 2).

A planted .pt2 whose pickle would create a marker file, and a planted pickle posing as weights: the
TorchServe handler, the local predictor, the packaged .mar and the MLflow pyfunc load the safetensors
weights into our own network and never open them; an altered .pt2 is refused before it is opened.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest

from fer_core.model.export import load_exported, load_inference_model
from fer_core.serving.inference import LocalPredictor, load_meta
from tests.serving.conftest import encode, face_array, make_run


class Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_pt2(original: Path, marker: Path) -> bytes:
    """The real archive with every weight entry and a new data.pkl replaced by a code-running pickle."""
    payload = pickle.dumps(Payload(marker))
    out = io.BytesIO()
    with zipfile.ZipFile(original) as source, zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if "weight" in name or name.endswith(".pkl"):
                data = payload
            target.writestr(name, data)
        target.writestr("archive/data.pkl", payload)
    return out.getvalue()


@pytest.fixture
def planted(tmp_path):
    marker = tmp_path / "PWNED"
    run = make_run(tmp_path / "run", seed=3)
    (run / "model.pt2").write_bytes(malicious_pt2(run / "model.pt2", marker))
    return run, marker


def test_the_payload_really_runs_code_when_unpickled(tmp_path):
    marker = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()  # so its absence below means something


def test_local_predictor_and_handler_never_open_the_program(planted):
    from PIL import Image

    run, marker = planted
    from fer_core.serving.handler import FerHandler
    from tests.serving.test_handler import make_context

    answers = LocalPredictor(run).predict([encode(Image.fromarray(face_array()))])
    assert "label" in answers[0]
    FerHandler().initialize(make_context(run))  # TorchServe's worker path
    assert not marker.exists()


def test_altered_program_is_refused_before_it_is_opened(planted):
    run, marker = planted
    recorded = load_meta(run / "meta.json")["files"]["program"]["sha256"]
    with pytest.raises(ValueError, match="differs from the recorded"):
        load_exported(run / "model.pt2", recorded)
    assert not marker.exists()


def test_a_pickle_posing_as_weights_is_refused_without_running(tmp_path):
    marker = tmp_path / "PWNED"
    run = make_run(tmp_path / "run", seed=4)
    meta = load_meta(run / "meta.json")
    (run / "model.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError, match="sha256 differs"):
        load_inference_model(run / "model.safetensors", meta)
    # without the recorded hash it still only parses tensors
    meta.pop("files")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_inference_model(run / "model.safetensors", meta)
    assert not marker.exists()


def test_registered_model_loads_without_unpickling(planted, tmp_path, fer_home):
    """The MLflow pyfunc is models-from-code: no python_model.pkl; the planted .pt2 rides along unopened."""
    import mlflow
    import mlflow.pyfunc
    import numpy as np
    from mlflow import MlflowClient

    from fer_core.tracking.model import log_fer_model

    run, marker = planted
    from fer_core import tracking as fer_tracking

    tracking = fer_tracking.configure(f"sqlite:///{fer_home / 'mlflow.db'}")
    client = MlflowClient(tracking)
    experiment = client.create_experiment("safety", artifact_location=(fer_home / "artifacts").as_uri())
    mlflow_run = client.create_run(experiment)
    uri = log_fer_model(mlflow_run.info.run_id, run)
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "dl")))
    assert not list(local.rglob("*.pkl")), sorted(p.name for p in local.rglob("*"))
    model = mlflow.pyfunc.load_model(str(local))
    size = load_meta(run / "meta.json")["image_size"]
    out = model.predict(np.zeros((1, 3, size, size), dtype=np.float32))
    assert out["probabilities"].shape == (1, 7)
    assert not marker.exists()
    shutil.rmtree(local)
