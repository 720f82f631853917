"""The local home folder: all state of the embedded defaults lives under it.

Default `.fer/` in the current directory (the repo when run via make); override with FER_HOME.
"""

from __future__ import annotations

import os
from pathlib import Path


def fer_home() -> Path:
    return Path(os.environ.get("FER_HOME", ".fer")).resolve()


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else sqlite under the home folder."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{fer_home() / 'mlflow.db'}"


def default_artifact_root() -> str:
    return (fer_home() / "mlartifacts").as_uri()


def quiet_third_parties() -> None:
    """Turn off telemetry of the MLOps packages for this process and its children."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
