#!/usr/bin/env python3
"""Create the S3 bucket of an ``s3://bucket/prefix`` model registry if it does not exist (idempotent).

The compose file's ``minio`` profile runs it once before the backend starts; it reads ``MODEL_REGISTRY`` and boto3's
standard ``AWS_*`` variables (``AWS_ENDPOINT_URL`` for MinIO or another S3-compatible store):

    python ensure_bucket.py [s3://bucket/prefix]     # default: $MODEL_REGISTRY
"""

from __future__ import annotations

import os
import sys
import time
from urllib.parse import urlparse

ATTEMPTS = 30  # the store may still be starting: retry for about a minute


def bucket_of(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"expected s3://bucket[/prefix], got {uri!r}")
    return parsed.netloc


def ensure_bucket(uri: str, attempts: int = ATTEMPTS, delay_s: float = 2.0) -> bool:
    """True when the bucket was created, False when it already existed."""
    import boto3
    import botocore.exceptions

    bucket = bucket_of(uri)
    client = boto3.client("s3")
    for attempt in range(1, attempts + 1):
        try:
            client.head_bucket(Bucket=bucket)
            return False
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            client.create_bucket(Bucket=bucket)
            return True
        except botocore.exceptions.EndpointConnectionError:
            if attempt == attempts:
                raise
            time.sleep(delay_s)
    return False


def main(argv: list[str]) -> int:
    uri = argv[1] if len(argv) > 1 else os.environ.get("MODEL_REGISTRY", "")
    if not uri.startswith("s3://"):
        print(f"MODEL_REGISTRY is {uri or 'unset'}, not an s3:// registry: nothing to create")
        return 0
    try:
        created = ensure_bucket(uri)
    except Exception as exc:  # botocore raises many types; the message is what the operator needs
        print(f"cannot create the bucket of {uri}: {exc}", file=sys.stderr)
        return 1
    print(f"bucket {bucket_of(uri)} {'created' if created else 'already exists'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
