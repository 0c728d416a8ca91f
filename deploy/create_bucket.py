"""Create the S3 bucket that MLflow keeps its artifacts in (the compose stack's ``s3-init`` step).

Idempotent, so it runs on every ``docker compose up``: a bucket that already exists is kept as
it is. The endpoint and bucket come from ``S3_ENDPOINT_URL`` and ``S3_BUCKET``; credentials and
region the usual boto3 way (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``), never from this file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

_MISSING_CODES = {"404", "NoSuchBucket", "NotFound"}


def ensure_bucket(client, bucket: str) -> bool:
    """Create ``bucket`` unless it exists; True when this call created it."""
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in _MISSING_CODES:
            raise
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as exc:
        # Another s3-init created it between our two calls.
        if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise
        return False
    return True


def main(environ: Mapping[str, str] = os.environ) -> int:
    """Ensure the configured bucket exists; exit code 2 when the configuration is missing."""
    missing = [name for name in ("S3_ENDPOINT_URL", "S3_BUCKET") if not environ.get(name)]
    if missing:
        print(f"create_bucket: set {', '.join(missing)}", file=sys.stderr)
        return 2
    endpoint, bucket = environ["S3_ENDPOINT_URL"], environ["S3_BUCKET"]
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(retries={"mode": "standard", "max_attempts": 10}),
    )
    created = ensure_bucket(client, bucket)
    print(f"bucket s3://{bucket} at {endpoint}: {'created' if created else 'already there'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
