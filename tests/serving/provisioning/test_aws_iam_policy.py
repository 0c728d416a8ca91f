"""The IAM policy shipped with the aws provider allows exactly what the provider does."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from core.settings import get_settings
from serving.provisioning import aws
from serving.provisioning.aws import AwsProvider
from serving.provisioning.provider import ProvisionRequest, ResourceSpec
from tests.serving.provisioning.aws_moto import MotoEc2

POLICY = Path(aws.__file__).with_name("iam_policy.json")
OWN_RESOURCES = ("instance/*", "volume/*", "network-interface/*")
MANAGED_CONDITIONS = {
    "aws:RequestTag/prewarm:managed",
    "aws:ResourceTag/prewarm:managed",
    "ec2:CreateAction",
}


def statements() -> list[dict[str, Any]]:
    """The policy's statements, with Action and Resource always as lists."""
    policy = json.loads(POLICY.read_text())
    assert policy["Version"] == "2012-10-17"
    listed = []
    for statement in policy["Statement"]:
        as_list = {k: [v] if isinstance(v, str) else v for k, v in statement.items()}
        listed.append({**statement, "Action": as_list["Action"], "Resource": as_list["Resource"]})
    return listed


def request(reservation: str, region: str) -> ProvisionRequest:
    return ProvisionRequest(
        reservation_id=reservation,
        idempotency_key=f"key-{reservation}",
        user_id="user-1",
        region=region,
        spec=ResourceSpec(1, 2, 3000, 100),
        expires_at=datetime(2026, 1, 5, 15, 0, tzinfo=UTC),
    )


def test_the_policy_allows_exactly_the_ec2_actions_the_provider_calls(moto_ec2: MotoEc2) -> None:
    called: set[str] = set()
    session = boto3.session.Session()
    session.events.register("before-call.ec2", lambda model, **_: called.add(f"ec2:{model.name}"))
    settings = get_settings()
    stopped = settings.model_copy(
        update={"aws": settings.aws.model_copy(update={"warm_state": "stopped"})}
    )
    running_warm = AwsProvider(settings, session=session)
    stopped_warm = AwsProvider(stopped, session=session)

    # Every path: warm running and warm stopped, a resize (stop, modify, start) and a plain
    # start, a repeated provision, the inventory, and releases.
    running_warm.provision(request("res-run", "aws-eu-west-1"))
    stopped_warm.provision(request("res-stop", "aws-us-east-1"))
    running_warm.provision(request("res-run", "aws-eu-west-1"))
    running_warm.scale("res-run", ResourceSpec(4, 8, 6000, 2000))
    stopped_warm.scale("res-stop", ResourceSpec(1, 2, 3000, 100))
    assert len(running_warm.inventory()) == 6
    assert running_warm.release("res-run") == 3
    assert stopped_warm.release("res-stop") == 3

    allowed = {action for statement in statements() for action in statement["Action"]}
    assert called == allowed


def test_the_policy_touches_only_resources_tagged_managed() -> None:
    for statement in statements():
        assert statement["Effect"] == "Allow"
        assert all(action.startswith("ec2:") for action in statement["Action"])
        if all(action.startswith("ec2:Describe") for action in statement["Action"]):
            assert statement["Resource"] == ["*"]  # Describe* has no resource-level permissions
            continue
        assert "*" not in statement["Resource"]
        own = [r for r in statement["Resource"] if r.endswith(OWN_RESOURCES)]
        if own:  # anything the provider creates, changes or deletes must carry its tag
            keys = {key for test in statement.get("Condition", {}).values() for key in test}
            assert keys & MANAGED_CONDITIONS, statement["Sid"]
