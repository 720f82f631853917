"""fer_core: the library behind the FER pipeline.

Layers (imports point down only):
    adapters  - versioning (DVC), validation (Great Expectations), tracking (MLflow), serving (TorchServe)
    engine    - training, evaluation
    core      - labels, config, data (formats, ingest, dataset, transforms), model, losses, class_weights

Importing this package does no work: no file reads, no heavy imports.
"""

__version__ = "0.1.0"
