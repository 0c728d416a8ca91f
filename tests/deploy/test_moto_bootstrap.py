"""deploy/moto_bootstrap.py (the local stack's moto-init step) against a moto server on loopback,
and the ``aws`` provider reading the placements file it writes."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from core.settings import Settings, get_settings
from serving.provisioning.aws import AwsProvider, read_placements_file
from serving.provisioning.provider import ProviderError, ProvisionRequest, ResourceSpec
from tests.deploy.conftest import load_deploy_script
from tests.serving.provisioning.aws_moto import FAKE_CREDENTIALS, REGIONS, shared_session


def _load_script() -> ModuleType:
    return load_deploy_script("moto_bootstrap")


@pytest.fixture
def environ(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The moto-init container's environment, in an AWS account of this test's own."""
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MOTO_ACCOUNT_ID", str(random.randrange(2 * 10**11, 3 * 10**11)))
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    return {
        "PREWARM_AWS__ENDPOINT_URL": moto_server,
        "PREWARM_AWS__REGIONS": json.dumps(list(REGIONS)),
        "PREWARM_AWS__PLACEMENTS_FILE": str(tmp_path / "shared" / "aws-placements.json"),
    }


def test_it_writes_one_placement_per_region_and_finds_them_again(
    environ: dict[str, str], moto_server: str
) -> None:
    script = _load_script()
    target = Path(environ["PREWARM_AWS__PLACEMENTS_FILE"])

    assert script.main(environ) == 0
    first = json.loads(target.read_text())
    assert script.main(environ) == 0

    assert json.loads(target.read_text()) == first
    assert set(first) == set(REGIONS)
    for region, placement in first.items():
        ec2 = shared_session().client("ec2", region_name=region, endpoint_url=moto_server)
        [subnet] = ec2.describe_subnets(SubnetIds=[placement["subnet_id"]])["Subnets"]
        [group] = ec2.describe_security_groups(GroupIds=[placement["security_group_id"]])[
            "SecurityGroups"
        ]
        assert group["VpcId"] == subnet["VpcId"]
        tagged = ec2.describe_vpcs(Filters=[{"Name": "tag:prewarm:bootstrap", "Values": ["true"]}])
        assert len(tagged["Vpcs"]) == 1


def test_the_provider_launches_with_the_placements_of_the_file(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _load_script().main(environ) == 0
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PREWARM_AWS__PLACEMENTS", raising=False)
    get_settings.cache_clear()
    provider = AwsProvider(Settings(), session=shared_session())

    resources = provider.provision(
        ProvisionRequest(
            reservation_id="res-file",
            idempotency_key="key-res-file",
            user_id="user-file",
            region="aws-eu-west-1",
            spec=ResourceSpec(cpu_cores=1, ram_gb=2, storage_iops=3000, network_mbps=100),
            expires_at=datetime(2026, 1, 5, 15, 0, tzinfo=UTC),
        )
    )

    assert sorted(r.kind for r in resources) == ["compute", "network", "storage"]
    assert provider.release("res-file") == 3


def test_it_refuses_to_run_without_a_moto_endpoint(tmp_path: Path) -> None:
    environ = {"PREWARM_AWS__PLACEMENTS_FILE": str(tmp_path / "p.json")}
    assert _load_script().main(environ) == 2
    assert not (tmp_path / "p.json").exists()


def test_a_broken_placements_file_is_a_clear_provider_error(tmp_path: Path) -> None:
    broken = tmp_path / "placements.json"
    broken.write_text('{"eu-west-1": {"image_id": "ami-1"}}')  # no subnet, no group
    with pytest.raises(ProviderError, match=r"placements\.json"):
        read_placements_file(broken)
    assert read_placements_file(tmp_path / "not-yet-written.json") == {}
