"""A moto EC2 server on loopback for the ``aws`` provider's tests (fixtures used via conftest).

moto runs in SERVER mode: a real HTTP endpoint on 127.0.0.1 that boto3 reaches through
``endpoint_url``, so the provider under test (and any child process it runs in) talks HTTP
exactly as it would to AWS. Never real AWS: the credentials are fake and the endpoint local.

Each test gets an AWS account of its own (moto's ``MOTO_ACCOUNT_ID``, read by the server, which
runs in this process, on every request): a fresh, empty EC2 without resetting the server.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from core.settings import Settings, get_settings
from serving.provisioning.aws import AwsProvider

REGIONS = ("us-east-1", "eu-west-1")
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
IMAGE_ID = "ami-0abcdef1234567890"
"""Any well-formed id will do: moto does not validate images unless asked to."""
_accounts = itertools.count(100_000_000_000)
_session: boto3.session.Session | None = None


def shared_session() -> boto3.session.Session:
    """One boto3 session for all tests: it parses EC2's large API model once, not per test."""
    global _session
    if _session is None:
        _session = boto3.session.Session()
    return _session


@dataclass(frozen=True)
class MotoEc2:
    """The moto server of one test: its endpoint and, per region, a VPC subnet and group."""

    endpoint_url: str
    account_id: str
    placements: dict[str, dict[str, str]]

    def provider(self, settings: Settings | None = None) -> AwsProvider:
        """A new provider (no memory of earlier ones) configured for this server."""
        return AwsProvider(settings, session=shared_session())

    def client(self, region: str) -> Any:
        """A plain EC2 client on the moto server, to look at what the provider did."""
        return shared_session().client("ec2", region_name=region, endpoint_url=self.endpoint_url)

    def managed(self, region: str) -> dict[str, list[dict]]:
        """Every resource tagged ``prewarm:managed=true`` in ``region``, by EC2 collection."""
        ec2 = self.client(region)
        managed = [{"Name": "tag:prewarm:managed", "Values": ["true"]}]
        return {
            "instances": [
                i
                for r in ec2.describe_instances(Filters=managed)["Reservations"]
                for i in r["Instances"]
            ],
            "volumes": ec2.describe_volumes(Filters=managed)["Volumes"],
            "interfaces": ec2.describe_network_interfaces(Filters=managed)["NetworkInterfaces"],
        }


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """One moto server for the session, on a free loopback port; yields its URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def moto_ec2(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> MotoEc2:
    """An empty moto EC2 with a VPC, subnet and security group per region, and the provider's
    settings (``PREWARM_AWS__*``) and fake credentials pointing at it."""
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    account_id = str(next(_accounts))
    monkeypatch.setenv("MOTO_ACCOUNT_ID", account_id)
    # Loading moto's catalogue of public AMIs into every new account is most of its set-up time;
    # the provider never looks images up (moto does not validate ImageId by default).
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    placements = {}
    for region in REGIONS:
        ec2 = shared_session().client("ec2", region_name=region, endpoint_url=moto_server)
        vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(
            GroupName="prewarm-warm", Description="prewarm reservations", VpcId=vpc
        )["GroupId"]
        placements[region] = {
            "image_id": IMAGE_ID,
            "subnet_id": subnet,
            "security_group_id": group,
        }
    monkeypatch.setenv("PREWARM_AWS__ENDPOINT_URL", moto_server)
    monkeypatch.setenv("PREWARM_AWS__REGIONS", json.dumps(list(REGIONS)))
    monkeypatch.setenv("PREWARM_AWS__PLACEMENTS", json.dumps(placements))
    monkeypatch.setenv("PREWARM_AWS__WAITER_DELAY_SECONDS", "0.2")
    get_settings.cache_clear()
    return MotoEc2(endpoint_url=moto_server, account_id=account_id, placements=placements)
