"""class_weights: per-class loss weights from the train split's counts (docs/method.md section 4)."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from components.base import fer_component


@fer_component()
def class_weights(dataset: Input[Dataset], config: dict, weights: Output[Artifact], metrics: Output[Metrics]) -> None:
    """weights.json + class_weights.png in the `weights` artifact; each weight as a KFP metric."""
    from fer_core.config import from_dict
    from fer_core.pipeline_io import announce, use_endpoints
    from fer_core.steps import class_weights_step

    use_endpoints()

    result = class_weights_step(dataset.path, f"{weights.path}/weights.json", from_dict(config))
    weights.metadata.update({"scheme": result["scheme"]})
    for name, value in result["weights"].items():
        metrics.log_metric(f"weight_{name}", round(value, 6))
    announce(f"{result['scheme']}: " + ", ".join(f"{name} {value:.2f}" for name, value in result["weights"].items()))
