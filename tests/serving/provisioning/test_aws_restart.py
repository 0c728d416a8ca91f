"""Kill the aws provider mid-batch (SIGKILL, in a child process), re-run, and count what is left.

The child kills itself right after its N-th EC2 call returns, so EC2 did the work but the
provider never heard back: the moment a duplicate or an orphan would be born. After the
re-run, every reservation must hold exactly one interface, one instance and one attached data
volume, and nothing else may carry the managed tag; after a killed release and its re-run,
nothing managed may be left at all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from serving.provisioning.aws_tags import as_dict
from serving.provisioning.provider import ProvisionRequest, ResourceSpec
from tests.serving.provisioning.aws_batch_child import KILL_ENV, request_to_json
from tests.serving.provisioning.aws_moto import REGIONS, MotoEc2

REPO_ROOT = Path(__file__).resolve().parents[3]
BATCH = [
    ProvisionRequest(
        reservation_id=f"res-{i}",
        idempotency_key=f"key-{i}",
        user_id=f"user-{i}",
        region=region,
        spec=ResourceSpec(1, 2, 3000 + 1000 * i, 100),
        expires_at=datetime(2026, 1, 5, 15, 0, tzinfo=UTC),
    )
    for i, region in enumerate(("aws-eu-west-1", "aws-eu-west-1", "aws-us-east-1"))
]


def run_child(action: str, kill_after: int | None) -> subprocess.CompletedProcess[str]:
    """Run the batch in a child process, SIGKILLed after ``kill_after`` EC2 calls."""
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    if kill_after is not None:
        env[KILL_ENV] = str(kill_after)
    return subprocess.run(
        [sys.executable, "-m", "tests.serving.provisioning.aws_batch_child", action],
        input=json.dumps([request_to_json(r) for r in BATCH]),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
        check=False,
    )


def kill_repeatedly(action: str, kill_points: tuple[int, ...]) -> list[str]:
    """One child per kill point, each of which must die by SIGKILL (not finish, not fail).

    Returns, per child, the EC2 operation it died right after.
    """
    died_after = []
    for kill_after in kill_points:
        child = run_child(action, kill_after)
        assert child.returncode == -signal.SIGKILL, child.stderr
        died_after.append(child.stderr.splitlines()[-1])
    return died_after


def managed_by_reservation(moto_ec2: MotoEc2) -> dict[str, Counter[str]]:
    """What carries the managed tag, counted per reservation and kind (terminated excluded)."""
    held: dict[str, Counter[str]] = {}
    for region in REGIONS:
        found = moto_ec2.managed(region)
        alive = [i for i in found["instances"] if i["State"]["Name"] != "terminated"]
        for described in alive + found["volumes"] + found["interfaces"]:
            tags = as_dict(described.get("Tags") or described.get("TagSet"))
            held.setdefault(tags["prewarm:reservation"], Counter())[tags["prewarm:kind"]] += 1
    return held


@pytest.mark.slow
def test_a_killed_provisioning_batch_rerun_leaves_one_set_per_reservation(
    moto_ec2: MotoEc2,
) -> None:
    # A run starts with 3 look-ups, then creates what is missing: the interface, the instance,
    # the volume, then waits for the volume (1 call) and attaches it. These points die right
    # after each of those steps in turn.
    died_after = kill_repeatedly("provision", (4, 4, 4, 5))

    assert died_after == ["CreateNetworkInterface", "RunInstances", "CreateVolume", "AttachVolume"]

    rerun = moto_ec2.provider()  # a new process would know as little
    for request in BATCH:
        resources = rerun.provision(request)
        assert sorted(r.kind for r in resources) == ["compute", "network", "storage"]

    one_set = Counter({"compute": 1, "storage": 1, "network": 1, "root": 1})
    assert managed_by_reservation(moto_ec2) == {r.reservation_id: one_set for r in BATCH}
    for region in REGIONS:
        found = moto_ec2.managed(region)
        interfaces = {i["NetworkInterfaceId"] for i in found["interfaces"]}
        for instance in found["instances"]:
            assert instance["NetworkInterfaces"][0]["NetworkInterfaceId"] in interfaces
        for volume in found["volumes"]:
            assert [a["State"] for a in volume["Attachments"]] == ["attached"]


@pytest.mark.slow
def test_a_killed_release_rerun_leaves_nothing_behind(moto_ec2: MotoEc2) -> None:
    provider = moto_ec2.provider()
    for request in BATCH:
        provider.provision(request)

    # A release looks in both regions (6 calls), then detaches the volume (7), waits for it,
    # deletes it, terminates the instance (9 on the re-run) and deletes the interface.
    died_after = kill_repeatedly("release", (7, 9))
    assert died_after == ["DetachVolume", "TerminateInstances"]

    rerun = moto_ec2.provider()
    released = sum(rerun.release(request.reservation_id) for request in BATCH)

    assert 0 < released < 3 * len(BATCH)  # the killed runs released part of res-0 already
    assert managed_by_reservation(moto_ec2) == {}
    assert sum(rerun.release(request.reservation_id) for request in BATCH) == 0
    assert moto_ec2.provider().inventory() == []
