"""class_weights: per-class loss weights from the train split's counts (docs/method.md section 4)."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from components.base import fer_component


@fer_component()
def class_weights(dataset: Input[Dataset], data_config: dict, weights_config: dict, weights: Output[Artifact],
                  metrics: Output[Metrics]) -> None:
    """weights.json (what the train step's loss uses) + weights.png + class_distribution.png in the
    `weights` artifact; each weight as a KFP metric."""
    from components.kfp_io import announce, step_config, use_endpoints
    from fer_core.steps import class_weights_step

    use_endpoints()

    result = class_weights_step(dataset.path, f"{weights.path}/weights.json",
                                step_config(data=data_config, weights=weights_config))
    import json

    weights.metadata.update({"scheme": result["scheme"]})
    for name, value in result["weights"].items():
        metrics.log_metric(f"weight_{name}", round(value, 6))
    # the figures as a file too: KFP's local cache reuses a result only when every output's file exists
    with open(metrics.path, "w", encoding="utf-8") as handle:
        json.dump(dict(metrics.metadata), handle)
    announce(f"{result['scheme']}: " + ", ".join(f"{name} {value:.2f}" for name, value in result["weights"].items()))
