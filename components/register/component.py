"""register: log the model to MLflow, register it, alias candidate; champion only through the gate."""

from kfp.dsl import Input, Markdown, Model, Output

from components.base import fer_component


@fer_component()
def register(model: Input[Model], registry_config: dict, mlflow_run_id: str, mlflow_tracking_uri: str,
             s3_endpoint_url: str, decision: Output[Markdown]) -> bool:
    """Registers the model as registry_config's model_name. The version always gets alias `candidate`;
    `champion` moves only if it beats the champion and the floor (registry_config's floor and
    gate_metric). Returns whether it became champion (the version and reason are in `decision` and in
    MLflow)."""
    from components.kfp_io import announce, decision_markdown, review_summary, step_config, use_endpoints
    from fer_core.steps import register_step

    use_endpoints(s3_endpoint_url=s3_endpoint_url, mlflow_tracking_uri=mlflow_tracking_uri)
    result = register_step(model.path, step_config(registry=registry_config), run_id=mlflow_run_id,
                           tracking_uri=mlflow_tracking_uri or None)
    with open(decision.path, "w", encoding="utf-8") as handle:
        handle.write(decision_markdown(result))
    review = review_summary(result.get("review") or {})
    announce(result["reason"] + (f"; {review}" if review else ""))
    return bool(result["promoted"])
