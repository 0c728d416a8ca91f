"""Provision or release a batch with the aws provider in a child process that a test kills.

Run as ``python -m tests.serving.provisioning.aws_batch_child provision|release`` with the batch
(a JSON list of ProvisionRequest fields) on stdin. With ``KILL_AFTER_EC2_CALLS=N`` in the
environment the process SIGKILLs itself right after the N-th EC2 API call returns: the call took
effect in EC2, but the provider never saw its answer, the worst moment to die. Each call's name
goes to stderr as it returns, so the last line names the call the process died after.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import boto3

from serving.provisioning.aws import AwsProvider
from serving.provisioning.provider import ProvisionRequest, ResourceSpec

KILL_ENV = "KILL_AFTER_EC2_CALLS"


def request_to_json(request: ProvisionRequest) -> dict[str, Any]:
    """A request as JSON-ready fields."""
    return {
        "reservation_id": request.reservation_id,
        "idempotency_key": request.idempotency_key,
        "user_id": request.user_id,
        "region": request.region,
        "spec": [
            request.spec.cpu_cores,
            request.spec.ram_gb,
            request.spec.storage_iops,
            request.spec.network_mbps,
        ],
        "expires_at": request.expires_at.isoformat(),
        "warm": request.warm,
    }


def request_from_json(fields: dict[str, Any]) -> ProvisionRequest:
    """The inverse of :func:`request_to_json`."""
    return ProvisionRequest(
        reservation_id=fields["reservation_id"],
        idempotency_key=fields["idempotency_key"],
        user_id=fields["user_id"],
        region=fields["region"],
        spec=ResourceSpec(*fields["spec"]),
        expires_at=datetime.fromisoformat(fields["expires_at"]),
        warm=fields["warm"],
    )


def _killer(limit: int) -> Callable[..., None]:
    """An after-call hook that names each call on stderr and dies after the ``limit``-th."""
    calls = 0

    def count(model: Any, **_: Any) -> None:
        nonlocal calls
        calls += 1
        print(model.name, file=sys.stderr, flush=True)
        if calls >= limit:
            os.kill(os.getpid(), signal.SIGKILL)

    return count


def main(action: str) -> None:
    """Provision (or release) every reservation of the batch read from stdin, in order."""
    batch = [request_from_json(fields) for fields in json.load(sys.stdin)]
    session = boto3.session.Session()
    limit = int(os.environ.get(KILL_ENV, "0"))
    if limit > 0:
        session.events.register("after-call.ec2", _killer(limit))
    provider = AwsProvider(session=session)
    for request in batch:
        if action == "provision":
            provider.provision(request)
        else:
            provider.release(request.reservation_id)


if __name__ == "__main__":
    main(sys.argv[1])
