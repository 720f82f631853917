"""Packaging: reproducible .mar from a run folder or a real MLflow registry version; publishing."""

from __future__ import annotations

import json
import zipfile

import boto3
import pytest
import yaml
from click.testing import CliRunner

from fer_cli.main import cli
from fer_core.config import ServeConfig
from fer_core.serving.package import (
    PackageError,
    build_mar,
    publish_mar,
    read_mar_manifest,
    resolve_registry,
    resolve_run,
)


@pytest.fixture(scope="module")
def mar_pair(run_dir, tmp_path_factory):
    """The same run packaged twice, into two stores."""
    serve = ServeConfig(batch_size=4, max_batch_delay_ms=15, workers=2, max_image_pixels=123456)
    source = resolve_run(run_dir)
    first = build_mar(source, tmp_path_factory.mktemp("store1"), serve)
    second = build_mar(source, tmp_path_factory.mktemp("store2"), serve)
    return source, first, second


def test_mar_is_reproducible(mar_pair):
    _, first, second = mar_pair
    assert first.read_bytes() == second.read_bytes()


def test_mar_contents(mar_pair, run_dir):
    source, mar, _ = mar_pair
    assert source.model_version.startswith("run-") and len(source.model_version) == 16
    assert mar.name == f"fer-{source.model_version}.mar"
    with zipfile.ZipFile(mar) as archive:
        names = set(archive.namelist())
        assert names == {"MAR-INF/MANIFEST.json", "handler.py", "meta.json", "model-config.yaml", "model.safetensors"}
        assert archive.read("model.safetensors") == (run_dir / "model.safetensors").read_bytes()
        model_config = yaml.safe_load(archive.read("model-config.yaml"))
    # workers and batching are the environment's, set at registration: the archive freezes none of them
    assert set(model_config) == {"handler", "responseTimeout"}
    assert model_config["handler"] == {"max_image_pixels": 123456, "torch_threads": 1, "faces": "auto", "max_faces": 8}
    manifest = read_mar_manifest(mar)["model"]
    assert manifest["modelName"] == "fer" and manifest["modelVersion"] == source.model_version
    assert manifest["serializedFile"] == "model.safetensors" and manifest["handler"] == "handler.py"


def test_other_weights_other_version(run_dir, run_dir_b):
    assert resolve_run(run_dir).model_version != resolve_run(run_dir_b).model_version
    assert resolve_run(run_dir).model_version == resolve_run(run_dir).model_version


def test_run_without_model_is_named(tmp_path):
    (tmp_path / "meta.json").write_text("{}")
    with pytest.raises(PackageError, match="model.safetensors missing"):
        resolve_run(tmp_path)
    with pytest.raises(PackageError, match="run folder not found"):
        resolve_run(tmp_path / "nope")


def test_registry_champion_is_packaged(run_dir, tmp_path, fer_home):
    """A real MLflow (sqlite) registry: artifacts under fer_model, alias champion -> version 1."""
    from mlflow import MlflowClient

    tracking = f"sqlite:///{fer_home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    experiment = client.create_experiment("serve-test", artifact_location=(fer_home / "artifacts").as_uri())
    run = client.create_run(experiment)
    client.log_artifact(run.info.run_id, str(run_dir / "model.safetensors"), "fer_model")
    client.log_artifact(run.info.run_id, str(run_dir / "meta.json"), "fer_model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("fer-test")
    version = client.create_model_version("fer-test", f"{run.info.artifact_uri}/fer_model", run.info.run_id)
    client.set_registered_model_alias("fer-test", "champion", version.version)

    source = resolve_registry("models:/fer-test@champion", tmp_path / "download", tracking)
    assert source.model_version == "1"
    assert source.model_path.read_bytes() == (run_dir / "model.safetensors").read_bytes()
    mar = build_mar(source, tmp_path / "store", ServeConfig())
    assert mar.name == "fer-1.mar"
    assert read_mar_manifest(mar)["model"]["modelVersion"] == "1"
    with pytest.raises(PackageError, match="no such registered model alias"):
        resolve_registry("models:/fer-test@nope", tmp_path / "d2", tracking)
    with pytest.raises(PackageError, match="must look like"):
        resolve_registry("runs:/abc/fer_model", tmp_path / "d3", tracking)


def test_publish_local_and_s3(mar_pair, tmp_path, s3_env):
    _, mar, _ = mar_pair
    local = publish_mar(mar, tmp_path / "store")
    assert (tmp_path / "store" / mar.name).read_bytes() == mar.read_bytes() and local.endswith(mar.name)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models")
    assert publish_mar(mar, "s3://models/fer/prod") == f"s3://models/fer/prod/{mar.name}"
    body = s3.get_object(Bucket="models", Key=f"fer/prod/{mar.name}")["Body"].read()
    assert body == mar.read_bytes()
    with pytest.raises(PackageError, match="only a local folder or s3"):
        publish_mar(mar, "gs://bucket/x")


def test_cli_package_run(run_dir, tmp_path):
    result = CliRunner().invoke(cli, ["serve", "package", "--run", str(run_dir), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["model_version"] == resolve_run(run_dir).model_version
    assert (tmp_path / f"fer-{report['model_version']}.mar").is_file()
    both = CliRunner().invoke(cli, ["serve", "package", "--run", str(run_dir), "--model-uri", "models:/x@y"])
    assert both.exit_code != 0 and "exactly one" in both.output


def test_the_review_rule_is_packaged_when_the_run_has_one(run_dir, tmp_path):
    import json
    import shutil

    from fer_core.config import ServeConfig

    model = tmp_path / "evaluated"
    shutil.copytree(run_dir, model)
    rule = {"signal": "uncertainty", "threshold": 1.5, "target_flagged": 0.2}
    (model / "review.json").write_text(json.dumps(rule))
    mar = build_mar(resolve_run(model), tmp_path / "store", ServeConfig())
    with zipfile.ZipFile(mar) as archive:
        assert json.loads(archive.read("review.json")) == rule
    (model / "review.json").write_text('{"signal": "uncertainty"}')
    with pytest.raises(ValueError, match="malformed"):
        build_mar(resolve_run(model), tmp_path / "store2", ServeConfig())
