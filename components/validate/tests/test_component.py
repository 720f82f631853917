"""The validate component: its body through `.python_func`, and after ingest on the local Kubeflow runner."""


import shutil

from kfp import dsl

from components.conftest import artifact, sections
from components.ingest import ingest
from components.validate import validate


def test_body_passes_a_good_dataset_and_fails_a_broken_one(prepared, tmp_path):
    params = sections()["validate_config"]
    report, report_json = artifact(dsl.HTML, tmp_path, "report"), artifact(dsl.Artifact, tmp_path, "report_json")
    assert validate.python_func(dataset=dsl.Dataset(name="dataset", uri=str(prepared)), validate_config=params,
                                report=report, report_json=report_json) is True
    assert report_json.metadata["failures"] == 0 and (tmp_path / "report").read_text().startswith("<")

    broken = tmp_path / "broken"
    shutil.copytree(prepared, broken)
    lines = (broken / "manifest.csv").read_text().splitlines()
    (broken / "manifest.csv").write_text("\n".join(line for line in lines if ",test," not in line) + "\n")
    again = tmp_path / "again"
    report, report_json = artifact(dsl.HTML, again, "report"), artifact(dsl.Artifact, again, "report_json")
    assert validate.python_func(dataset=dsl.Dataset(name="dataset", uri=str(broken)), validate_config=params,
                                report=report, report_json=report_json) is False
    assert report_json.metadata["failures"] >= 1


def test_task_after_ingest_on_the_local_runner(raw_folder, local_runner):
    params = sections()

    @dsl.pipeline
    def ingest_then_validate() -> bool:
        data = ingest(source=str(raw_folder), data_format="imagefolder", dvc_repo="", dvc_rev="", dvc_path="",
                      source_fingerprint="", data_config=params["data_config"], s3_endpoint_url="")
        return validate(dataset=data.outputs["dataset"], validate_config=params["validate_config"]).outputs["Output"]

    assert ingest_then_validate().output is True
