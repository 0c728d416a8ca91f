"""The local provider: a simulated cloud with capacity, boot delays and idempotent calls."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from core.regions import RegionCatalogue, load_regions
from core.settings import Settings
from serving.provisioning.clock import ManualClock
from serving.provisioning.local import LocalProvider
from serving.provisioning.provider import (
    KINDS,
    CapacityError,
    Provider,
    ProviderError,
    ProvisionRequest,
    ResourceSpec,
)
from tests.serving.provisioning.conftest import T0, with_provisioning, write_regions

WARM = ResourceSpec(cpu_cores=2, ram_gb=8, storage_iops=1000, network_mbps=50)


def request(key: str, spec: ResourceSpec = WARM, region: str = "aws-us-east-1") -> ProvisionRequest:
    return ProvisionRequest(
        reservation_id=f"res-{key}",
        idempotency_key=key,
        user_id=f"user-{key}",
        region=region,
        spec=spec,
        expires_at=T0 + timedelta(hours=3),
    )


@pytest.fixture
def provider(settings: Settings, clock: ManualClock) -> LocalProvider:
    configured = with_provisioning(settings, cold_boot_seconds=90, scale_up_seconds=20)
    return LocalProvider.from_settings(configured, clock)


def test_it_is_a_provider(provider: LocalProvider) -> None:
    assert isinstance(provider, Provider)


def test_a_reservation_is_one_resource_per_kind_booting_then_warm(
    provider: LocalProvider, clock: ManualClock
) -> None:
    created = provider.provision(request("k1"))

    assert sorted(r.kind for r in created) == sorted(KINDS)
    assert {r.state for r in created} == {"provisioning"}
    assert {r.ready_at for r in created} == {T0 + timedelta(seconds=90)}
    assert {r.tags["prewarm:reservation"] for r in created} == {"res-k1"}
    compute = next(r for r in created if r.kind == "compute")
    assert (compute.spec.cpu_cores, compute.spec.ram_gb) == (2, 8)

    clock.set(T0 + timedelta(seconds=89))
    assert {r.state for r in provider.inventory()} == {"provisioning"}
    clock.set(T0 + timedelta(seconds=90))
    assert {r.state for r in provider.inventory()} == {"warm"}


def test_provision_is_idempotent_on_the_key(provider: LocalProvider, clock: ManualClock) -> None:
    first = provider.provision(request("k1"))
    clock.set(T0 + timedelta(minutes=10))
    again = provider.provision(request("k1"))

    assert {r.resource_id for r in again} == {r.resource_id for r in first}
    assert len(provider.inventory()) == len(KINDS)


def test_state_persists_across_instances(settings: Settings, clock: ManualClock) -> None:
    LocalProvider.from_settings(settings, clock).provision(request("k1"))
    reopened = LocalProvider.from_settings(settings, clock)

    assert {r.reservation_id for r in reopened.inventory()} == {"res-k1"}
    assert (settings.serving_dir / "local_cloud.sqlite").is_file()


def test_capacity_is_enforced_and_a_refusal_creates_nothing(
    tmp_path: Path, settings: Settings, clock: ManualClock
) -> None:
    small = settings.model_copy(update={"regions_file": write_regions(tmp_path / "r.csv", 5)})
    provider = LocalProvider.from_settings(small, clock)
    provider.provision(request("k1", ResourceSpec(3, 8, 100, 10)))

    with pytest.raises(
        CapacityError, match=r"cpu_cores 3 in use \+ 3 requested exceeds capacity 5"
    ):
        provider.provision(request("k2", ResourceSpec(3, 8, 100, 10)))
    assert {r.reservation_id for r in provider.inventory()} == {"res-k1"}

    provider.provision(request("k3", ResourceSpec(3, 8, 100, 10), region="aws-eu-west-1"))
    assert provider.release("res-k1") == len(KINDS)
    provider.provision(request("k2", ResourceSpec(3, 8, 100, 10)))
    assert provider.usage("aws-us-east-1").cpu_cores == 3


def test_network_capacity_is_in_gbps(provider: LocalProvider) -> None:
    region = provider.catalogue["aws-us-east-1"]
    too_much = ResourceSpec(1, 1, 1, region.capacity_network_gbps * 1000 + 1)
    with pytest.raises(CapacityError, match="network_mbps"):
        provider.provision(request("k1", too_much))


def test_scale_makes_it_active_at_full_size_after_the_scale_up_delay(
    provider: LocalProvider, clock: ManualClock
) -> None:
    provider.provision(request("k1"))
    clock.set(T0 + timedelta(minutes=5))
    full = WARM.scaled(4)

    scaled = provider.scale("res-k1", full)

    assert {r.state for r in scaled} == {"active"}
    assert {r.ready_at for r in scaled} == {clock() + timedelta(seconds=20)}
    assert provider.usage("aws-us-east-1") == full
    assert provider.scale("res-k1", full) == scaled  # idempotent: no new delay


def test_scale_refuses_growth_the_region_cannot_hold(
    tmp_path: Path, settings: Settings, clock: ManualClock
) -> None:
    small = settings.model_copy(update={"regions_file": write_regions(tmp_path / "r.csv", 10)})
    provider = LocalProvider.from_settings(small, clock)
    provider.provision(request("k1", ResourceSpec(2, 8, 100, 10)))

    with pytest.raises(CapacityError):
        provider.scale("res-k1", ResourceSpec(12, 32, 400, 40))
    assert provider.usage("aws-us-east-1").cpu_cores == 2
    with pytest.raises(ProviderError, match="no resources"):
        provider.scale("res-unknown", WARM)


def test_release_counts_once(provider: LocalProvider) -> None:
    provider.provision(request("k1"))

    assert provider.release("res-k1") == len(KINDS)
    assert provider.release("res-k1") == 0
    assert provider.inventory() == []


def test_a_released_key_can_be_provisioned_afresh(provider: LocalProvider) -> None:
    first = provider.provision(request("k1"))
    provider.release("res-k1")
    second = provider.provision(request("k1"))

    assert not {r.resource_id for r in first} & {r.resource_id for r in second}
    assert len(provider.inventory()) == len(KINDS)


def test_a_region_outside_its_catalogue_is_a_provider_error(
    settings: Settings, clock: ManualClock
) -> None:
    regions = load_regions(settings.regions_file)
    only_aws = RegionCatalogue(tuple(r for r in regions if r.provider == "aws"))
    provider = LocalProvider(
        LocalProvider.from_settings(settings, clock).engine, only_aws, 90, 20, clock
    )
    gcp = next(r.code for r in regions if r.provider == "gcp")

    with pytest.raises(ProviderError, match="unknown region"):
        provider.provision(request("k1", region=gcp))
