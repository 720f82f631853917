"""Create S3 buckets on the in-cluster MinIO if they are missing (the minio-buckets Job).

Why a script and not `mc`: the component image already has boto3, so the Job pulls nothing else.
MinIO may still be starting when the Job runs, so the first calls retry for a while.
Usage: python s3_buckets.py BUCKET [BUCKET ...]   (endpoint and keys from the AWS_* environment)
"""

from __future__ import annotations

import sys
import time

import boto3
from botocore.exceptions import ClientError, EndpointConnectionError


def wait_for_s3(client, attempts: int = 30, delay_s: float = 2.0) -> None:
    """Block until the endpoint answers; MinIO's pod may come up after this Job's."""
    for attempt in range(1, attempts + 1):
        try:
            client.list_buckets()
            return
        except EndpointConnectionError as exc:
            print(f"S3 not reachable yet ({attempt}/{attempts}): {exc}", flush=True)
            time.sleep(delay_s)
    raise SystemExit(f"S3 endpoint {client.meta.endpoint_url} did not answer after {attempts} tries")


def ensure_bucket(client, bucket: str) -> bool:
    """Create `bucket` unless it exists; True when it was created."""
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise SystemExit(f"bucket {bucket}: cannot check it: {exc}") from None
    client.create_bucket(Bucket=bucket)
    return True


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: s3_buckets.py BUCKET [BUCKET ...]", file=sys.stderr)
        return 2
    client = boto3.client("s3")
    wait_for_s3(client)
    for bucket in argv:
        print(f"{bucket}: {'created' if ensure_bucket(client, bucket) else 'exists'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
