"""Give the local stack's moto server what a real AWS account already has: a VPC, a subnet
and a security group per region, and write them as the ``aws`` provider's placements file.

The compose stack's ``moto-init`` step (profile ``local``) runs this once moto is healthy; the
Celery workers read the file through ``PREWARM_AWS__PLACEMENTS_FILE``. Idempotent: what a
previous run created is found again by its ``prewarm:bootstrap`` tag and kept, so the file
always names the same resources. Never point it at real AWS: it is for moto only, and refuses
to run without an endpoint override.

Environment: ``PREWARM_AWS__ENDPOINT_URL`` (the moto server), ``PREWARM_AWS__REGIONS`` (JSON
list), ``PREWARM_AWS__PLACEMENTS_FILE`` (where to write), ``MOTO_IMAGE_ID`` (the AMI to name;
moto does not check it); credentials from ``AWS_*`` when set, placeholders otherwise.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import boto3

TAG = "prewarm:bootstrap"
DEFAULT_IMAGE_ID = "ami-0abcdef1234567890"
VPC_CIDR = "10.40.0.0/16"
SUBNET_CIDR = "10.40.1.0/24"
GROUP_NAME = "prewarm-warm"


def _tagged(kind: str) -> list[dict]:
    return [{"ResourceType": kind, "Tags": [{"Key": TAG, "Value": "true"}]}]


def _filters(**values: str) -> list[dict]:
    """EC2 filters: our bootstrap tag plus ``name=value`` pairs (``vpc_id`` → ``vpc-id``)."""
    pairs = [(f"tag:{TAG}", "true")] + [(k.replace("_", "-"), v) for k, v in values.items()]
    return [{"Name": name, "Values": [value]} for name, value in pairs]


def _vpc(ec2) -> str:
    found = ec2.describe_vpcs(Filters=_filters())["Vpcs"]
    if found:
        return found[0]["VpcId"]
    return ec2.create_vpc(CidrBlock=VPC_CIDR, TagSpecifications=_tagged("vpc"))["Vpc"]["VpcId"]


def _subnet(ec2, vpc: str) -> str:
    found = ec2.describe_subnets(Filters=_filters(vpc_id=vpc))["Subnets"]
    if found:
        return found[0]["SubnetId"]
    created = ec2.create_subnet(
        VpcId=vpc, CidrBlock=SUBNET_CIDR, TagSpecifications=_tagged("subnet")
    )
    return created["Subnet"]["SubnetId"]


def _security_group(ec2, vpc: str) -> str:
    found = ec2.describe_security_groups(Filters=_filters(vpc_id=vpc, group_name=GROUP_NAME))
    if found["SecurityGroups"]:
        return found["SecurityGroups"][0]["GroupId"]
    created = ec2.create_security_group(
        GroupName=GROUP_NAME,
        Description="prewarm warm reservations",
        VpcId=vpc,
        TagSpecifications=_tagged("security-group"),
    )
    return created["GroupId"]


def ensure_placement(ec2, image_id: str) -> dict[str, str]:
    """The region's VPC, subnet and security group (created unless tagged ones exist)."""
    vpc = _vpc(ec2)
    return {
        "image_id": image_id,
        "subnet_id": _subnet(ec2, vpc),
        "security_group_id": _security_group(ec2, vpc),
    }


def write_atomically(path: Path, placements: Mapping[str, Mapping[str, str]]) -> None:
    """Write the placements file so that a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(placements, indent=1, sort_keys=True))
    os.replace(partial, path)


def main(environ: Mapping[str, str] = os.environ) -> int:
    """Bootstrap every region in ``PREWARM_AWS__REGIONS``; 0 on success, 2 on bad set-up."""
    endpoint = environ.get("PREWARM_AWS__ENDPOINT_URL")
    target = environ.get("PREWARM_AWS__PLACEMENTS_FILE")
    if not endpoint or not target:
        print(
            "moto_bootstrap: set PREWARM_AWS__ENDPOINT_URL (the moto server; never real AWS) "
            "and PREWARM_AWS__PLACEMENTS_FILE",
            file=sys.stderr,
        )
        return 2
    regions = json.loads(environ.get("PREWARM_AWS__REGIONS", '["us-east-1", "eu-west-1"]'))
    image_id = environ.get("MOTO_IMAGE_ID", DEFAULT_IMAGE_ID)
    # moto accepts any credentials; without any in the environment, boto3 still needs some to
    # sign with, so placeholder ones are used (the endpoint is never real AWS, see above).
    session = boto3.session.Session(
        aws_access_key_id=environ.get("AWS_ACCESS_KEY_ID", "moto"),
        aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY", "moto"),
        aws_session_token=environ.get("AWS_SESSION_TOKEN"),
    )
    placements = {
        region: ensure_placement(
            session.client("ec2", region_name=region, endpoint_url=endpoint), image_id
        )
        for region in regions
    }
    write_atomically(Path(target), placements)
    print(f"moto_bootstrap: placements for {', '.join(regions)} written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
