"""The stop component: it fails the run, naming each failed check (body and local runner)."""

from __future__ import annotations

import json

import pytest
from kfp import dsl

from components.stop_invalid_data import stop_invalid_data


def _report(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps({"success": False, "checks": [
        {"name": "splits_present", "severity": "critical", "success": False,
         "message": "split(s) missing from manifest.csv: test", "examples": []}]}))
    return dsl.Artifact(name="report_json", uri=str(folder))


def test_body_fails_naming_the_check(tmp_path):
    with pytest.raises(RuntimeError, match="splits_present"):
        stop_invalid_data.python_func(report_json=_report(tmp_path / "report_json"))


def test_task_on_the_local_runner_fails_the_run(tmp_path, local_runner):
    @dsl.pipeline
    def always_invalid():
        stop_invalid_data(report_json=dsl.importer(artifact_uri=str(_report(tmp_path / "report_json").uri),
                                                   artifact_class=dsl.Artifact).output)

    with pytest.raises(RuntimeError, match="stop-invalid-data"):
        always_invalid()
