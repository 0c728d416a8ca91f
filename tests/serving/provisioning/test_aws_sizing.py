"""Instance type choice and gp3 volume shape of the aws provider (no EC2 needed)."""

from __future__ import annotations

import pytest

from core.settings import Settings
from serving.provisioning.aws_sizing import VolumeShape, choose_instance_type, volume_shape
from serving.provisioning.provider import CapacityError, ResourceSpec

AWS = Settings().aws


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (ResourceSpec(0.5, 0.25, 0, 10), "t3.nano"),  # the smallest warm hold
        (ResourceSpec(1, 2, 3000, 100), "t3.small"),  # t3.micro has 1 GiB only
        (ResourceSpec(2, 16, 0, 100), "r6i.large"),  # memory-heavy: cheaper than t3.xlarge
        (ResourceSpec(2, 4, 0, 3000), "c6in.large"),  # bandwidth-heavy: 3.125 Gbps baseline
        (ResourceSpec(4, 8, 0, 2000), "c6in.xlarge"),  # c6i/m6i.xlarge sustain 1.56 Gbps only
        (ResourceSpec(64, 256, 0, 10_000), "m6i.16xlarge"),
    ],
)
def test_the_cheapest_type_covering_cpu_ram_and_baseline_bandwidth_is_chosen(
    spec: ResourceSpec, expected: str
) -> None:
    chosen = choose_instance_type(spec, AWS.instance_types)

    assert chosen.name == expected
    cheaper = [t for t in AWS.instance_types if t.usd_per_hour < chosen.usd_per_hour]
    assert all(
        t.vcpu < spec.cpu_cores
        or t.memory_gib < spec.ram_gb
        or t.network_gbps * 1000 < spec.network_mbps
        for t in cheaper
    )


def test_a_spec_no_type_covers_is_a_capacity_error() -> None:
    with pytest.raises(CapacityError, match="no instance type covers 65 vCPU"):
        choose_instance_type(ResourceSpec(65, 8, 0, 0), AWS.instance_types)
    with pytest.raises(CapacityError, match="200000 Mbps"):
        choose_instance_type(ResourceSpec(2, 4, 0, 200_000), AWS.instance_types)


@pytest.mark.parametrize(
    ("iops", "expected"),
    [
        (0, VolumeShape(size_gib=20, iops=3000, throughput_mibps=125)),  # gp3's free baseline
        (3000.2, VolumeShape(size_gib=20, iops=3001, throughput_mibps=125)),
        (6000, VolumeShape(size_gib=20, iops=6000, throughput_mibps=188)),  # 32 KiB per I/O
        (16_000, VolumeShape(size_gib=32, iops=16_000, throughput_mibps=500)),  # 500 IOPS/GiB
    ],
)
def test_gp3_volume_shape_follows_the_iops(iops: float, expected: VolumeShape) -> None:
    assert volume_shape(iops, AWS) == expected


def test_gp3_volume_never_shrinks_and_refuses_iops_above_the_maximum() -> None:
    assert volume_shape(3000, AWS, min_size_gib=100).size_gib == 100
    with pytest.raises(CapacityError, match="exceeds the gp3 maximum of 16000"):
        volume_shape(16_001, AWS)


def test_gp3_throughput_stays_within_its_rules() -> None:
    big_io = AWS.model_copy(update={"io_size_kib": 1024.0})

    shape = volume_shape(4000, big_io)

    assert shape.throughput_mibps == 1000  # capped by gp3's maximum, not 4000 MiB/s
    assert shape.throughput_mibps <= shape.iops * AWS.gp3_max_mibps_per_iops
