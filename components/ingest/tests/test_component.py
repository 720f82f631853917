"""The ingest component: its body through `.python_func`, and as a task on the local Kubeflow runner."""

from __future__ import annotations

import hashlib

from kfp import dsl

from components.conftest import artifact, sections
from components.ingest import ingest


def test_body_writes_the_prepared_dataset_and_its_version(raw_folder, tmp_path):
    dataset, summary = artifact(dsl.Dataset, tmp_path, "dataset"), artifact(dsl.Markdown, tmp_path, "summary")
    count = ingest.python_func(source=str(raw_folder), data_format="imagefolder", dvc_repo="", dvc_rev="",
                               dvc_path="", source_fingerprint="", data_config=sections()["data_config"],
                               s3_endpoint_url="", dataset=dataset, summary=summary)
    manifest = tmp_path / "dataset" / "manifest.csv"
    assert count == 7 * 8 == len(manifest.read_text().splitlines()) - 1
    assert dataset.metadata["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert (tmp_path / "dataset" / "data_version.json").is_file()
    assert "- images: 56" in (tmp_path / "summary").read_text()


def test_task_on_the_local_runner(raw_folder, local_runner):
    task = ingest(source=str(raw_folder), data_format="imagefolder", dvc_repo="", dvc_rev="", dvc_path="",
                  source_fingerprint="", data_config=sections()["data_config"], s3_endpoint_url="")
    assert task.outputs["Output"] == 56
    assert (local_runner / task.outputs["dataset"].path).joinpath("manifest.csv").is_file()
