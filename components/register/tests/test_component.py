"""The register component's body on the session's tiny training; its local-runner run is the pipeline's
(tests/pipeline/test_local_run.py, which also shows a worse model staying candidate)."""

from __future__ import annotations

from kfp import dsl
from mlflow import MlflowClient

from components.conftest import artifact, sections
from components.register import register


def test_body_registers_under_the_registry_sections_name(trained, tmp_path):
    params = sections()
    decision = artifact(dsl.Markdown, tmp_path, "decision")
    promoted = register.python_func(model=trained["model"], registry_config=params["registry_config"],
                                    mlflow_run_id=trained["run_id"], mlflow_tracking_uri=trained["tracking_uri"],
                                    s3_endpoint_url="", decision=decision)
    client = MlflowClient(trained["tracking_uri"], trained["tracking_uri"])
    version = client.get_model_version_by_alias("fer-components", "candidate")
    assert version.run_id == trained["run_id"]
    assert promoted is ("champion" in version.aliases)  # floor 0.0 and no champion before: promoted
    assert promoted is True
    assert f"`fer-components` version {version.version}" in (tmp_path / "decision").read_text()
    assert client.get_run(trained["run_id"]).info.status == "FINISHED"
