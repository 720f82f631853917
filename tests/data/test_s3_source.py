"""s3:// sources against a real S3 endpoint (moto's server): same bytes as the local ingest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import boto3
import pytest

from fer_core.config import DataConfig
from fer_core.data.ingest import ingest
from fer_core.data.sources import SourceError, parse_s3_uri
from tests.data.fixtures import rafdb_rows, write_rafdb

CONFIG = DataConfig(image_size=24, workers=1, val_fraction=0.25)


def upload(folder: Path, bucket: str, prefix: str) -> int:
    client = boto3.client("s3")  # endpoint from AWS_ENDPOINT_URL, set by s3_env
    client.create_bucket(Bucket=bucket)
    files = [path for path in sorted(folder.rglob("*")) if path.is_file()]
    for path in files:
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return len(files)


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "dataset.json"}


@pytest.mark.integration
def test_s3_source_matches_local_source(tmp_path, s3_env):
    root = write_rafdb(tmp_path / "raf", rafdb_rows(per_class_train=2, per_class_test=1))
    (root / "Image" / "aligned" / "train_00002_aligned.jpg").write_bytes(b"")
    upload(root, "datasets", "rafdb/v1")
    # a sibling prefix that starts with the same letters must not leak into the download
    boto3.client("s3").put_object(Bucket="datasets", Key="rafdb/v10/EmoLabel/list_patition_label.txt", Body=b"x 1\n")

    local, remote = tmp_path / "local", tmp_path / "out" / "remote"
    ingest("rafdb", root, local, CONFIG, progress=False)
    summary = ingest("rafdb", "s3://datasets/rafdb/v1/", remote, CONFIG, progress=False)

    assert summary["source"] == "s3://datasets/rafdb/v1/" and summary["num_errors"] == 1
    assert digest(remote) == digest(local)
    assert sorted(p.name for p in remote.parent.iterdir()) == ["remote"]  # the download folder is gone


@pytest.mark.integration
def test_s3_errors_are_source_errors(tmp_path, s3_env):
    work = tmp_path / "work"
    boto3.client("s3").create_bucket(Bucket="empty")
    with pytest.raises(SourceError, match="no objects under s3://empty/nothing"):
        ingest("rafdb", "s3://empty/nothing", work / "out", CONFIG, progress=False)
    with pytest.raises(SourceError, match="NoSuchBucket"):
        ingest("rafdb", "s3://no-such-bucket/x", work / "out", CONFIG, progress=False)
    assert list(work.iterdir()) == []  # neither a download folder nor an output is left


def test_parse_s3_uri():
    assert parse_s3_uri("s3://bucket/a/b/") == ("bucket", "a/b/")
    assert parse_s3_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(SourceError, match="no bucket"):
        parse_s3_uri("s3:///prefix")
