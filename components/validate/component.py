"""validate: the Great Expectations suite on a prepared Dataset; report as HTML + JSON artifacts."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from components.base import fer_component


@fer_component()
def validate(dataset: Input[Dataset], validate_config: dict, report: Output[HTML],
             report_json: Output[Artifact]) -> bool:
    """Always writes the report; returns False when a critical check failed (the DAG then stops).

    One plain return value: the local runner resolves a condition on a task's `Output` only."""
    import shutil

    from components.kfp_io import announce, step_config, use_endpoints
    from fer_core.steps import validate_step
    from fer_core.validation.report import failure_summary

    use_endpoints()

    result = validate_step(dataset.path, report_json.path, step_config(validate=validate_config))
    shutil.copyfile(result.report_html, report.path)
    report_json.metadata.update({"success": result.success, "failures": len(result.failures),
                                 "warnings": len(result.warnings)})
    message = (f"dataset valid ({len(result.warnings)} warning(s): see the report)" if result.success
               else failure_summary(report_json.path))
    announce(message)
    return bool(result.success)
