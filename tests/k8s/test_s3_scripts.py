"""The boto3 scripts the manifests run (bucket Job, model-store and dataset sync) against real S3 (moto)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import boto3
import pytest

from fer_core import cluster

SCRIPTS = Path(__file__).resolve().parents[2] / "k8s" / "base" / "scripts"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"k8s_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def s3(s3_env):
    return boto3.client("s3", endpoint_url=s3_env)


def test_bucket_script_creates_missing_buckets_once(s3, capsys):
    buckets = load("s3_buckets")
    names = [cluster.DATA_BUCKET, cluster.MODEL_STORE_BUCKET, cluster.MLFLOW_ARTIFACTS_BUCKET]
    s3.create_bucket(Bucket=cluster.DATA_BUCKET)
    assert buckets.main(names) == 0
    assert capsys.readouterr().out.splitlines() == [f"{cluster.DATA_BUCKET}: exists",
                                                    f"{cluster.MODEL_STORE_BUCKET}: created",
                                                    f"{cluster.MLFLOW_ARTIFACTS_BUCKET}: created"]
    assert set(names) <= {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert buckets.main(names) == 0  # idempotent: a re-run Job changes nothing
    assert all(line.endswith("exists") for line in capsys.readouterr().out.splitlines())


def test_sync_copies_only_matching_objects_and_skips_what_is_there(s3, tmp_path, capsys):
    sync = load("s3_sync")
    bucket = "sync-models"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="fer.mar", Body=b"archive-1")
    s3.put_object(Bucket=bucket, Key="old/fer-2.mar", Body=b"archive-2")
    s3.put_object(Bucket=bucket, Key="notes.txt", Body=b"not a model")
    store = tmp_path / "model-store"
    assert sync.main([f"s3://{bucket}", str(store), "--suffix", ".mar"]) == 0
    assert sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()) == ["fer.mar", "old/fer-2.mar"]
    assert (store / "fer.mar").read_bytes() == b"archive-1"
    assert "2 downloaded, 0 already there" in capsys.readouterr().out
    s3.put_object(Bucket=bucket, Key="fer.mar", Body=b"archive-1-retrained")  # new size: fetched again
    assert sync.main([f"s3://{bucket}", str(store), "--suffix", ".mar"]) == 0
    assert "1 downloaded, 1 already there" in capsys.readouterr().out
    assert (store / "fer.mar").read_bytes() == b"archive-1-retrained"
    assert not list(store.rglob(".*.partial"))


def test_sync_of_a_prefix_keeps_the_layout_below_it(s3, tmp_path):
    sync = load("s3_sync")
    s3.create_bucket(Bucket="sync-data")
    s3.put_object(Bucket="sync-data", Key="prepared/manifest.csv", Body=b"path,label\n")
    s3.put_object(Bucket="sync-data", Key="prepared/images/a.png", Body=b"png")
    s3.put_object(Bucket="sync-data", Key="prepared-other/x.csv", Body=b"other dataset")
    assert sync.main(["s3://sync-data/prepared", str(tmp_path / "data")]) == 0
    assert sorted(p.relative_to(tmp_path / "data").as_posix() for p in (tmp_path / "data").rglob("*")
                  if p.is_file()) == ["images/a.png", "manifest.csv"]


def test_sync_fails_clearly_on_empty_source_and_bad_urls(s3, tmp_path, capsys):
    sync = load("s3_sync")
    s3.create_bucket(Bucket="sync-empty")
    assert sync.main(["s3://sync-empty", str(tmp_path / "a")]) == 1
    assert "nothing under s3://sync-empty/" in capsys.readouterr().err
    assert sync.main(["s3://sync-empty", str(tmp_path / "b"), "--allow-empty"]) == 0  # first deploy: no model yet
    with pytest.raises(SystemExit, match="must look like s3://bucket"):
        sync.main(["/local/path", str(tmp_path / "c")])
    with pytest.raises(SystemExit, match="s3://no-such-bucket/: cannot list"):
        sync.main(["s3://no-such-bucket", str(tmp_path / "d")])


def _archive(path: Path, name: str, version: str) -> Path:
    import json
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": name, "modelVersion": version}}))
    return path


def test_register_models_writes_each_archive_with_the_environments_settings(tmp_path, monkeypatch):
    import json
    import os

    models = load("torchserve_models")
    store = tmp_path / "store"
    store.mkdir()
    _archive(store / "fer-3.mar", "fer", "3")
    newer = _archive(store / "fer-4.mar", "fer", "4")
    os.utime(newer, (2_000_000_000, 2_000_000_000))
    base = "model_store=/m\nload_models=all\nallowed_urls=file:///m/[^/]+\\\\.mar\n"
    monkeypatch.setenv("FER_WORKERS", "2")
    monkeypatch.setenv("FER_BATCH_SIZE", "8")
    monkeypatch.setenv("FER_MAX_BATCH_DELAY_MS", "20")
    text = models.render(base, store)
    lines = dict(line.split("=", 1) for line in text.splitlines())
    assert lines["load_models"] == "fer-3.mar,fer-4.mar" and lines["model_store"] == "/m"
    written = json.loads(lines["models"])["fer"]
    assert written["4"] == {"marName": "fer-4.mar", "minWorkers": 2, "maxWorkers": 2, "batchSize": 8,
                            "maxBatchDelay": 20, "defaultVersion": True}
    assert written["3"]["defaultVersion"] is False
    assert "load_models" not in models.render(base, tmp_path)  # an empty store: TorchServe starts empty
    monkeypatch.setenv("FER_BATCH_SIZE", "0")
    with pytest.raises(SystemExit, match=r"FER_BATCH_SIZE='0'.*\[1, 1024\]"):
        models.render(base, store)
    monkeypatch.setenv("FER_BATCH_SIZE", "8")
    (store / "broken.mar").write_bytes(b"not a zip")
    with pytest.raises(SystemExit, match="broken.mar: not a model archive"):
        models.render(base, store)
