"""Log a run folder's model (RUN/model.safetensors + meta.json, model.pt2 beside) as an MLflow pyfunc.

Models-from-code (fer_core/tracking/pyfunc_model.py is the model's code) with fer_core as its code
path: loading the registered model unpickles nothing.
"""

from __future__ import annotations

import importlib.metadata
import json
import warnings
from pathlib import Path

import numpy as np

from fer_core.tracking.runs import client


FER_CORE = Path(__file__).resolve().parents[1]
EXAMPLE_BATCH = 2  # torch.export specialises batch 0/1; the example uses 2 as export does


def pip_requirements() -> list[str]:
    """Pinned from this environment (no resolution at log time, so no network)."""
    pins = []
    for package in ("torch", "numpy", "mlflow", "safetensors", "PyYAML"):
        version = importlib.metadata.version(package).split("+")[0]  # drop local tags like +cu130
        pins.append(f"{package}=={version}")
    return pins


def log_fer_model(run_id: str, run_dir: str | Path, *, artifact_path: str = "fer_model") -> str:
    """Log RUN/model.safetensors + RUN/meta.json (+ model.pt2) as pyfunc model `artifact_path` of run `run_id`.

    Returns the logged model's URI (MLflow 3: models:/m-<id>; runs:/<run_id>/<artifact_path> resolves
    to the same model). Signature: x float32[-1,3,S,S] -> probabilities float32[-1,K], uncertainty
    float32[-1], inferred from a real prediction on a batch of 2 zeros (also the input example).
    """
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import Model, infer_signature

    from fer_core.model.export import PROGRAM_FILE
    from fer_core.model.export import WEIGHTS_FILE as MODEL_FILE
    from fer_core.serving.inference import META_FILE
    from fer_core.tracking import pyfunc_model
    from fer_core.evaluation.trust import REVIEW_FILE
    from fer_core.tracking.pyfunc_model import (META_ARTIFACT, MODEL_ARTIFACT, PROGRAM_ARTIFACT, REVIEW_ARTIFACT,
                                                FERPyfuncModel)

    run_dir = Path(run_dir)
    for name in (MODEL_FILE, META_FILE):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} missing: log_fer_model needs a finished run folder "
                                    "(fer train writes model.safetensors and meta.json)")
    meta = json.loads((run_dir / META_FILE).read_text(encoding="utf-8"))
    size = int(meta["image_size"])
    example = np.zeros((EXAMPLE_BATCH, 3, size, size), dtype=np.float32)
    artifacts = {MODEL_ARTIFACT: str(run_dir / MODEL_FILE), META_ARTIFACT: str(run_dir / META_FILE)}
    if (run_dir / PROGRAM_FILE).is_file():
        artifacts[PROGRAM_ARTIFACT] = str(run_dir / PROGRAM_FILE)
    if (run_dir / REVIEW_FILE).is_file():  # written by evaluation: travels with the model to TorchServe
        artifacts[REVIEW_ARTIFACT] = str(run_dir / REVIEW_FILE)

    # a throw-away instance predicts the example, for the signature
    probe = FERPyfuncModel()
    probe.load_context(mlflow.pyfunc.PythonModelContext(artifacts=artifacts, model_config=None))
    signature = infer_signature(example, probe.predict(None, example))

    # The logged model belongs to the run's experiment: created explicitly, because Model.log would
    # otherwise put it in the fluent "current" experiment (and its artifacts under ./mlruns).
    run = client().get_run(run_id)
    logged = mlflow.initialize_logged_model(name=artifact_path, source_run_id=run_id,
                                            experiment_id=run.info.experiment_id, params=dict(run.data.params))
    with warnings.catch_warnings():
        # the signature is explicit (tensor-based), so predict needs no type hints
        warnings.filterwarnings("ignore", message=".*type hints.*", category=UserWarning)
        info = Model.log(
            artifact_path=None,  # deprecated in MLflow 3 (`name` replaces it) but still positional here
            name=artifact_path,
            flavor=mlflow.pyfunc,
            run_id=run_id,       # explicit: no fluent active run needed
            model_id=logged.model_id,
            python_model=str(Path(pyfunc_model.__file__)),  # models-from-code: no pickle
            code_paths=[str(FER_CORE)],
            artifacts=artifacts,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            metadata={"class_names": meta["class_names"], "image_size": size},
        )
    return info.model_uri
