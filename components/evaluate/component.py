"""evaluate: the held-out split's metrics as KFP Metrics/ClassificationMetrics, plots as HTML, to MLflow."""

from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.base import fer_component


@fer_component()
def evaluate(dataset: Input[Dataset], model: Input[Model], train_config: dict, evaluate_config: dict,
             mlflow_run_id: str, mlflow_tracking_uri: str, s3_endpoint_url: str, metrics: Output[Metrics],
             confusion: Output[ClassificationMetrics], plots: Output[HTML]) -> float:
    """Returns the held-out mean class accuracy (train_config: the device and loader workers only)."""
    from components.kfp_io import announce, plots_html, step_config, use_endpoints
    from fer_core.evaluation.evaluate import HEADLINE, headline_metrics
    from fer_core.steps import evaluate_step

    use_endpoints(s3_endpoint_url=s3_endpoint_url, mlflow_tracking_uri=mlflow_tracking_uri)
    result = evaluate_step(model.path, dataset.path, step_config(train=train_config, evaluate=evaluate_config),
                           run_id=mlflow_run_id, tracking_uri=mlflow_tracking_uri or None)
    headline = headline_metrics(result)
    for key, value in headline.items():
        metrics.log_metric(key, value)
    confusion.log_confusion_matrix(list(result["per_class_recall"]),
                                   [list(map(int, row)) for row in result["confusion_matrix"]])
    with open(plots.path, "w", encoding="utf-8") as handle:
        handle.write(plots_html(model.path, result, run_id=mlflow_run_id))
    split = result["split"]
    announce(", ".join(f"{split} {label} {headline[f'{split}_{key}']:.3f}" for key, label in HEADLINE
                       if f"{split}_{key}" in headline))
    return float(result["mean_class_accuracy"])
