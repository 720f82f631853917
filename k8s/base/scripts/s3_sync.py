"""Copy the objects under s3://BUCKET/PREFIX into a local folder (TorchServe's model store, a dataset).

Why: TorchServe loads .mar files from a local model store, and `fer train` reads a local prepared
dataset; an initContainer runs this before the main container starts. Each file lands through a
temporary name and one rename, so a half-downloaded file is never seen. Objects already present with
the same size are skipped (a restarted pod does not download everything again).
Usage: python s3_sync.py s3://BUCKET[/PREFIX] DEST [--suffix .mar] [--allow-empty]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import boto3
from botocore.exceptions import ClientError


def parse_s3_url(url: str) -> tuple[str, str]:
    """('bucket', 'prefix/') from s3://bucket/prefix; a clear error for anything else."""
    if not url.startswith("s3://") or len(url) <= len("s3://"):
        raise SystemExit(f"source {url!r} must look like s3://bucket[/prefix]")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def sync(client, bucket: str, prefix: str, dest: Path, suffix: str = "") -> tuple[int, int]:
    """Download every object under prefix (ending in suffix) to dest; (downloaded, skipped)."""
    dest.mkdir(parents=True, exist_ok=True)
    downloaded = skipped = 0
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        objects = [obj for page in pages for obj in page.get("Contents", [])]
    except ClientError as exc:
        raise SystemExit(f"s3://{bucket}/{prefix}: cannot list: {exc}") from None
    for obj in objects:
        key = obj["Key"]
        relative = key[len(prefix):]
        if not relative or key.endswith("/") or not relative.endswith(suffix):
            continue
        target = (dest / relative).resolve()
        if dest.resolve() not in target.parents:
            raise SystemExit(f"s3://{bucket}/{key}: key escapes the destination folder; refusing")
        if target.exists() and target.stat().st_size == obj["Size"]:
            skipped += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        client.download_file(bucket, key, str(partial))
        os.replace(partial, target)
        downloaded += 1
    return downloaded, skipped


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="s3://bucket[/prefix]")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--suffix", default="", help="only keys ending in this (e.g. .mar)")
    parser.add_argument("--allow-empty", action="store_true", help="succeed when nothing matches")
    args = parser.parse_args(argv)
    bucket, prefix = parse_s3_url(args.source)
    downloaded, skipped = sync(boto3.client("s3"), bucket, prefix, args.dest, args.suffix)
    print(f"s3://{bucket}/{prefix} -> {args.dest}: {downloaded} downloaded, {skipped} already there", flush=True)
    if downloaded + skipped == 0 and not args.allow_empty:
        print(f"error: nothing under s3://{bucket}/{prefix} matches {args.suffix!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
