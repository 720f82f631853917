"""stop_invalid_data: ends the run with the validation failure (the report is already an artifact)."""

from kfp.dsl import Artifact, Input

from components.base import fer_component


@fer_component()
def stop_invalid_data(report_json: Input[Artifact]) -> None:
    """Fail the run on purpose, naming each failed check: training never starts on invalid data."""
    from fer_core.validation.report import failure_summary

    raise RuntimeError(failure_summary(report_json.path))
