"""Kubeflow Pipelines v2 components: one per pipeline step, thin wrappers over `fer_core.steps`.

Every component runs in the project's image (`fer_core.cluster.COMPONENT_IMAGE`); nothing is
pip-installed at run time (`install_kfp_package=False`: the image already holds kfp and fer_core).
Bodies import inside the function because KFP ships each function's source on its own.
"""

from components.class_weights import class_weights
from components.deploy import deploy
from components.evaluate import evaluate
from components.ingest import ingest
from components.register import register
from components.stop import stop_invalid_data
from components.train import train
from components.validate import validate

__all__ = ["class_weights", "deploy", "evaluate", "ingest", "register", "stop_invalid_data", "train", "validate"]
