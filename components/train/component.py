"""train: the CBAM-ResNet with uncertainty mixing and the class-weighted loss, tracked in MLflow."""

from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.base import fer_gpu_component


@fer_gpu_component()
def train(dataset: Input[Dataset], validation_report: Input[Artifact], weights: Input[Artifact], data_config: dict,
          model_config: dict, train_config: dict, weights_config: dict, evaluate_config: dict, experiment: str,
          mlflow_tracking_uri: str, s3_endpoint_url: str, model: Output[Model],
          metrics: Output[Metrics]) -> NamedTuple("TrainOutputs", mlflow_run_id=str, val_mean_class_accuracy=float):
    """Writes the run folder (best.pt, model.safetensors, model.pt2, meta.json, history) as the Model artifact.
    The loss's class weights are the class-weights step's weights.json. The resume state (checkpoints/:
    weights, optimiser and RNG state, ~3x the model's size) is this step's own and is removed once
    training finished: later steps get only what they read."""
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from components.kfp_io import announce, step_config, use_endpoints
    from fer_core.steps import train_step

    use_endpoints(s3_endpoint_url=s3_endpoint_url, mlflow_tracking_uri=mlflow_tracking_uri)
    config = step_config(data=data_config, model=model_config, train=train_config, weights=weights_config,
                         evaluate=evaluate_config)
    result, run_id = train_step(dataset.path, model.path, config, experiment=experiment,
                                tracking_uri=mlflow_tracking_uri or None, report_dir=validation_report.path,
                                weights_dir=weights.path, tags={"fer.orchestrator": "kubeflow"})
    shutil.rmtree(Path(model.path) / "checkpoints", ignore_errors=True)
    model.metadata.update({"mlflow_run_id": run_id, "best_epoch": result.best_epoch, "framework": "pytorch"})
    for key, value in result.best_metrics.items():
        metrics.log_metric(key, float(value))
    best = result.best_metrics
    announce(f"best epoch {result.best_epoch}: val accuracy {best.get('val_accuracy', float('nan')):.3f}, mean class "
             f"accuracy {best.get('val_mean_class_accuracy', float('nan')):.3f}; MLflow run {run_id}")
    return namedtuple("TrainOutputs", ["mlflow_run_id", "val_mean_class_accuracy"])(
        run_id, float(result.best_metrics["val_mean_class_accuracy"]))
