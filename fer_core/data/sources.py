"""Where a raw dataset comes from: a local folder or `s3://bucket/prefix`.

An S3 source is copied into a temporary folder beside the output (same disk, so the prepared dataset
never competes with /tmp for space) and read by the very same format readers as a local folder; the
copy is removed when ingest ends, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Iterator


class SourceError(Exception):
    """A source that cannot be read as a dataset (missing root, label file, bucket...): the user's to fix."""


def is_s3(source: str) -> bool:
    return str(source).startswith("s3://")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> ("bucket", "a/b/"); the prefix ends in "/" so `a/b` never matches `a/bc`."""
    if not is_s3(uri):
        raise SourceError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise SourceError(f"s3 URI has no bucket: {uri!r} (expected s3://bucket/prefix)")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def s3_client():
    """A boto3 S3 client configured only from the usual AWS_* variables (AWS_ENDPOINT_URL for MinIO/moto)."""
    import boto3  # imported here: local ingest never needs it

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def _relative_key(key: str, prefix: str, uri: str) -> PurePosixPath | None:
    """The object's path below the prefix; None for folder markers; an error for keys escaping the folder."""
    relative = key[len(prefix):]
    if not relative or relative.endswith("/"):
        return None
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise SourceError(f"refusing S3 object {key!r} under {uri}: its name would escape the download folder")
    return path


def download_s3(uri: str, dest: Path, *, threads: int = 8) -> int:
    """Copy every object under `uri` into `dest`, keeping the key layout; returns the number of files."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_s3_uri(uri)
    client = s3_client()
    try:
        jobs: list[tuple[str, Path]] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                relative = _relative_key(entry["Key"], prefix, uri)
                if relative is not None:
                    jobs.append((entry["Key"], dest.joinpath(*relative.parts)))
        if not jobs:
            raise SourceError(f"no objects under {uri} (check the bucket and prefix)")

        def fetch(job: tuple[str, Path]) -> None:
            key, target = job
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))

        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(fetch, jobs))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        raise SourceError(f"cannot read {uri}: S3 said {code}: {exc}") from None
    except BotoCoreError as exc:
        raise SourceError(f"cannot read {uri}: {exc}") from None
    return len(jobs)


@contextlib.contextmanager
def open_source(source: str | os.PathLike, out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a local folder holding the raw dataset: the folder itself, or a temporary S3 copy."""
    text = str(source)
    if not is_s3(text):
        root = Path(text).expanduser()
        if not root.exists():
            raise SourceError(f"source folder not found: {root}")
        if not root.is_dir():
            raise SourceError(f"source is not a folder: {root}")
        if not os.access(root, os.R_OK | os.X_OK):
            raise SourceError(f"source folder is not readable: {root}")
        yield root.resolve()
        return
    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.src-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.src-", dir=out.parent))
    try:
        download_s3(text, tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
