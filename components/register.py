"""register: log the model to MLflow, register it, alias candidate; champion only through the gate."""

from kfp.dsl import Input, Markdown, Model, Output

from components.base import fer_component


@fer_component()
def register(model: Input[Model], config: dict, mlflow_run_id: str, mlflow_tracking_uri: str, model_name: str,
             gate_floor: float, s3_endpoint_url: str, decision: Output[Markdown]) -> bool:
    """The version always gets alias `candidate`; `champion` moves only if it beats the champion.
    Returns whether it became champion (the version and reason are in `decision` and in MLflow)."""
    from fer_core.config import from_dict
    from fer_core.pipeline_io import announce, decision_markdown, use_endpoints
    from fer_core.steps import register_step

    use_endpoints(s3_endpoint_url=s3_endpoint_url, mlflow_tracking_uri=mlflow_tracking_uri)
    result = register_step(model.path, from_dict(config), run_id=mlflow_run_id,
                           tracking_uri=mlflow_tracking_uri or None, model_name=model_name, floor=gate_floor)
    with open(decision.path, "w", encoding="utf-8") as handle:
        handle.write(decision_markdown(result))
    announce(result["reason"])
    return bool(result["promoted"])
