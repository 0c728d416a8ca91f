"""The aws provider against a moto EC2 server on loopback (never real AWS)."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from core.regions import load_regions
from core.settings import get_settings
from serving.provisioning.aws_tags import as_dict
from serving.provisioning.clock import ManualClock
from serving.provisioning.ledger import Ledger
from serving.provisioning.manager import PreAllocationManager
from serving.provisioning.provider import (
    CapacityError,
    ProviderError,
    ProvisionRequest,
    ResourceSpec,
)
from serving.provisioning.reconcile import REREQUESTED
from tests.serving.provisioning.aws_moto import MotoEc2
from tests.serving.provisioning.conftest import T0, plan_frame

EXPIRES = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
WARM_SPEC = ResourceSpec(cpu_cores=1, ram_gb=2, storage_iops=3000, network_mbps=100)
FULL_SPEC = ResourceSpec(cpu_cores=4, ram_gb=8, storage_iops=6000, network_mbps=2000)


def request(
    reservation: str = "res-1", region: str = "aws-eu-west-1", spec: ResourceSpec = WARM_SPEC
) -> ProvisionRequest:
    """A warm hold for ``user-<reservation>``."""
    return ProvisionRequest(
        reservation_id=reservation,
        idempotency_key=f"key-{reservation}",
        user_id=f"user-{reservation}",
        region=region,
        spec=spec,
        expires_at=EXPIRES,
    )


def by_kind(described: list[dict], kind: str) -> list[dict]:
    """Described EC2 resources whose prewarm:kind tag is ``kind``."""
    return [
        d for d in described if as_dict(d.get("Tags") or d.get("TagSet"))["prewarm:kind"] == kind
    ]


def test_provision_creates_a_tagged_instance_volume_and_interface(moto_ec2: MotoEc2) -> None:
    resources = moto_ec2.provider().provision(request())

    assert sorted(r.kind for r in resources) == ["compute", "network", "storage"]
    assert {(r.reservation_id, r.user_id, r.region, r.state) for r in resources} == {
        ("res-1", "user-res-1", "aws-eu-west-1", "warm")
    }
    held = moto_ec2.managed("eu-west-1")
    [instance] = held["instances"]
    [volume] = by_kind(held["volumes"], "storage")
    [interface] = held["interfaces"]
    placement = moto_ec2.placements["eu-west-1"]
    assert instance["InstanceType"] == "t3.small"  # cheapest with 2 GiB
    assert instance["ImageId"] == placement["image_id"]
    assert instance["NetworkInterfaces"][0]["NetworkInterfaceId"] == interface["NetworkInterfaceId"]
    assert interface["SubnetId"] == placement["subnet_id"]
    assert [g["GroupId"] for g in interface["Groups"]] == [placement["security_group_id"]]
    assert (volume["VolumeType"], volume["Iops"], volume["Throughput"]) == ("gp3", 3000, 125)
    assert volume["AvailabilityZone"] == interface["AvailabilityZone"]
    assert [(a["InstanceId"], a["Device"]) for a in volume["Attachments"]] == [
        (instance["InstanceId"], "/dev/sdf")
    ]
    for described in (instance, volume, interface):
        tags = as_dict(described.get("Tags") or described.get("TagSet"))
        assert tags["prewarm:managed"] == "true"
        assert tags["prewarm:reservation"] == "res-1"
        assert tags["prewarm:user"] == "user-res-1"
        assert datetime.fromisoformat(tags["prewarm:expires-at"]) == EXPIRES
    assert moto_ec2.managed("us-east-1") == {"instances": [], "volumes": [], "interfaces": []}


def test_provisioning_twice_with_the_same_key_creates_nothing_new(moto_ec2: MotoEc2) -> None:
    first = moto_ec2.provider().provision(request())
    again = moto_ec2.provider().provision(request())  # a fresh process: no memory of the first

    assert sorted(r.resource_id for r in again) == sorted(r.resource_id for r in first)
    held = moto_ec2.managed("eu-west-1")
    assert len(held["instances"]) == 1
    assert len(by_kind(held["volumes"], "storage")) == 1
    assert len(held["interfaces"]) == 1


def test_release_deletes_all_three_and_is_a_no_op_the_second_time(moto_ec2: MotoEc2) -> None:
    provider = moto_ec2.provider()
    provider.provision(request())

    assert provider.release("res-1") == 3
    held = moto_ec2.managed("eu-west-1")
    assert [i["State"]["Name"] for i in held["instances"]] == ["terminated"]
    assert held["volumes"] == []
    assert held["interfaces"] == []
    assert provider.release("res-1") == 0
    assert moto_ec2.provider().release("res-1") == 0
    assert moto_ec2.provider().release("never-provisioned") == 0
    assert provider.inventory() == []


def test_inventory_lists_every_managed_resource_across_regions(moto_ec2: MotoEc2) -> None:
    provider = moto_ec2.provider()
    provider.provision(request("res-eu", "aws-eu-west-1"))
    provider.provision(request("res-us", "aws-us-east-1"))
    unmanaged = moto_ec2.client("us-east-1").run_instances(
        ImageId=moto_ec2.placements["us-east-1"]["image_id"], MinCount=1, MaxCount=1
    )["Instances"][0]["InstanceId"]

    inventory = moto_ec2.provider().inventory()

    assert sorted((r.reservation_id, r.region, r.kind) for r in inventory) == [
        ("res-eu", "aws-eu-west-1", "compute"),
        ("res-eu", "aws-eu-west-1", "network"),
        ("res-eu", "aws-eu-west-1", "storage"),
        ("res-us", "aws-us-east-1", "compute"),
        ("res-us", "aws-us-east-1", "network"),
        ("res-us", "aws-us-east-1", "storage"),
    ]
    assert unmanaged not in {r.resource_id for r in inventory}
    compute = {r.reservation_id: r.spec for r in inventory if r.kind == "compute"}
    assert compute["res-us"] == ResourceSpec(1, 2, 0, 0)  # the share compute carries


@pytest.mark.parametrize(
    ("region", "message"),
    [
        (next(r.code for r in load_regions() if r.provider == "gcp"), "not an aws one"),
        ("aws-ap-south-1", "not in settings.aws.regions"),
        ("nowhere-1", "unknown region"),
    ],
)
def test_a_region_the_provider_cannot_act_in_raises_provider_error(
    moto_ec2: MotoEc2, region: str, message: str
) -> None:
    with pytest.raises(ProviderError, match=message):
        moto_ec2.provider().provision(request(region=region))

    assert moto_ec2.provider().inventory() == []


def test_a_spec_no_instance_type_covers_creates_nothing(moto_ec2: MotoEc2) -> None:
    with pytest.raises(CapacityError):
        moto_ec2.provider().provision(request(spec=ResourceSpec(512, 4096, 3000, 100)))

    assert moto_ec2.provider().inventory() == []


def test_an_ec2_error_becomes_a_provider_error(
    moto_ec2: MotoEc2, monkeypatch: pytest.MonkeyPatch
) -> None:
    placements = {**moto_ec2.placements}
    placements["eu-west-1"] = {**placements["eu-west-1"], "subnet_id": "subnet-0000000000"}
    monkeypatch.setenv("PREWARM_AWS__PLACEMENTS", json.dumps(placements))
    get_settings.cache_clear()

    with pytest.raises(ProviderError, match="CreateNetworkInterface failed: InvalidSubnetID"):
        moto_ec2.provider().provision(request())

    assert moto_ec2.provider().inventory() == []


def test_scale_resizes_in_place_and_takes_the_reservation_into_use(moto_ec2: MotoEc2) -> None:
    provider = moto_ec2.provider()
    warm = provider.provision(request())

    scaled = provider.scale("res-1", FULL_SPEC)

    assert sorted(r.resource_id for r in scaled) == sorted(r.resource_id for r in warm)
    assert {r.state for r in scaled} == {"active"}
    held = moto_ec2.managed("eu-west-1")
    [instance] = held["instances"]
    [volume] = by_kind(held["volumes"], "storage")
    assert instance["InstanceType"] == "c6in.xlarge"  # 2 Gbps sustained needs the "n" family
    assert instance["State"]["Name"] in ("pending", "running")
    assert (volume["Iops"], volume["Throughput"]) == (6000, 188)
    assert as_dict(instance["Tags"])["prewarm:cpu-cores"] == "4"
    with pytest.raises(ProviderError, match="holds no instance"):
        provider.scale("never-provisioned", FULL_SPEC)


def test_warm_instances_can_be_kept_stopped_until_used(
    moto_ec2: MotoEc2, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREWARM_AWS__WARM_STATE", "stopped")
    get_settings.cache_clear()
    provider = moto_ec2.provider()

    resources = provider.provision(request())
    [instance] = moto_ec2.managed("eu-west-1")["instances"]
    assert instance["State"]["Name"] in ("stopping", "stopped")
    assert {r.state for r in resources} == {"warm"}

    provider.scale("res-1", WARM_SPEC.scaled(2))  # same type: only started
    [instance] = moto_ec2.managed("eu-west-1")["instances"]
    assert instance["State"]["Name"] in ("pending", "running")
    assert instance["InstanceType"] == "t3.medium"


def test_a_released_reservation_is_not_provisioned_again(moto_ec2: MotoEc2) -> None:
    provider = moto_ec2.provider()
    provider.provision(request())
    provider.release("res-1")

    with pytest.raises(ProviderError, match="was released"):
        provider.provision(request())

    assert provider.inventory() == []


def test_ec2_calls_retry_adaptively_up_to_the_configured_attempts(
    moto_ec2: MotoEc2, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as closed:  # a port nothing listens on: every attempt fails
        closed.bind(("127.0.0.1", 0))
        dead_endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setenv("PREWARM_AWS__ENDPOINT_URL", dead_endpoint)
    monkeypatch.setenv("PREWARM_AWS__MAX_ATTEMPTS", "2")
    monkeypatch.setenv("PREWARM_AWS__REGIONS", '["eu-west-1"]')
    get_settings.cache_clear()
    provider = moto_ec2.provider()
    client = provider.client("eu-west-1")
    attempts = []
    client.meta.events.register("before-send.ec2", lambda **_: attempts.append(1))

    with pytest.raises(ProviderError, match="Could not connect"):
        provider.inventory()

    assert client.meta.config.retries["mode"] == "adaptive"
    assert len(attempts) == 2


def test_an_instance_lost_outside_prewarm_is_replaced_only_on_a_re_request(
    moto_ec2: MotoEc2,
) -> None:
    provider = moto_ec2.provider()
    first = {r.kind: r.resource_id for r in provider.provision(request())}
    ec2 = moto_ec2.client("eu-west-1")
    ec2.terminate_instances(InstanceIds=[first["compute"]])  # lost: not prewarm's doing

    with pytest.raises(ProviderError, match="released or its instance died"):
        provider.provision(request())  # a first request never resurrects a key
    replaced = {r.kind: r.resource_id for r in provider.provision(replace(request(), attempt=1))}
    again = {r.kind: r.resource_id for r in provider.provision(replace(request(), attempt=1))}

    assert replaced["compute"] != first["compute"]
    assert replaced["network"] == first["network"]
    assert replaced["storage"] == first["storage"]
    assert again == replaced
    held = moto_ec2.managed("eu-west-1")
    alive = [i["InstanceId"] for i in held["instances"] if i["State"]["Name"] != "terminated"]
    assert alive == [replaced["compute"]]
    [volume] = by_kind(held["volumes"], "storage")
    assert [a["InstanceId"] for a in volume["Attachments"]] == [replaced["compute"]]


def test_the_reconciler_replaces_a_warm_hold_the_cloud_lost(moto_ec2: MotoEc2) -> None:
    settings = get_settings()
    clock = ManualClock(T0)
    manager = PreAllocationManager(Ledger.from_settings(settings), moto_ec2.provider(), settings)
    [rid] = manager.request_batch(plan_frame(1), T0).outcomes["reservation_id"]
    manager.reconcile(clock())
    [lost] = [r.resource_id for r in manager.provider.inventory() if r.kind == "compute"]
    moto_ec2.client("us-east-1").terminate_instances(InstanceIds=[lost])

    report = manager.reconcile(clock())
    second = manager.reconcile(clock())

    assert report.missing_rerequested == [rid]
    assert report.errors == {}
    computes = [r for r in manager.provider.inventory() if r.kind == "compute"]
    assert [r.reservation_id for r in computes] == [rid]
    assert computes[0].resource_id != lost
    assert manager.ledger.count_journal(rid, REREQUESTED) == 1
    assert manager.ledger.get(rid).state in {"provisioning", "warm"}
    assert second.as_dict()["missing_rerequested"] == 0
    manager.ledger.dispose()
