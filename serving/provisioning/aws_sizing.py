"""How the ``aws`` provider sizes a reservation: an instance type and a gp3 volume shape.

The instance type is the cheapest one of ``settings.aws.instance_types`` whose vCPUs, memory
and *baseline* network bandwidth all cover the spec ("up to" burst bandwidth is not counted:
it runs out). The data volume is gp3, whose IOPS and throughput are provisioned apart from its
size, within gp3's rules (a free baseline, a maximum, at most so many IOPS per GiB and so much
throughput per IOPS).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from core.settings import AwsInstanceType, AwsSettings
from serving.provisioning.provider import CapacityError, ResourceSpec


@dataclass(frozen=True)
class VolumeShape:
    """A gp3 volume: size (GiB), provisioned IOPS and throughput (MiB/s)."""

    size_gib: int
    iops: int
    throughput_mibps: int


def choose_instance_type(spec: ResourceSpec, types: Sequence[AwsInstanceType]) -> AwsInstanceType:
    """The cheapest type covering the spec's CPU cores, RAM and network bandwidth.

    Raises CapacityError when no type in the table is big enough.
    """
    covering = [
        t
        for t in types
        if t.vcpu >= spec.cpu_cores
        and t.memory_gib >= spec.ram_gb
        and t.network_gbps * 1000.0 >= spec.network_mbps
    ]
    if not covering:
        raise CapacityError(
            f"no instance type covers {spec.cpu_cores:g} vCPU, {spec.ram_gb:g} GiB and "
            f"{spec.network_mbps:g} Mbps (largest known: "
            f"{max(types, key=lambda t: t.vcpu).name if types else 'none'})"
        )
    return min(covering, key=lambda t: (t.usd_per_hour, t.vcpu, t.memory_gib, t.name))


def volume_shape(storage_iops: float, aws: AwsSettings, min_size_gib: int = 0) -> VolumeShape:
    """The gp3 volume providing ``storage_iops`` (never below gp3's free baseline).

    Throughput follows the IOPS at ``aws.io_size_kib`` per I/O; the size grows when gp3's
    IOPS-per-GiB rule needs it and never shrinks below ``min_size_gib`` (EBS cannot shrink).
    Raises CapacityError above gp3's maximum IOPS.
    """
    iops = max(aws.gp3_baseline_iops, math.ceil(storage_iops))
    if iops > aws.gp3_max_iops:
        raise CapacityError(
            f"{storage_iops:g} IOPS exceeds the gp3 maximum of {aws.gp3_max_iops} per volume"
        )
    wanted = math.ceil(iops * aws.io_size_kib / 1024.0)
    allowed = min(aws.gp3_max_throughput_mibps, math.floor(iops * aws.gp3_max_mibps_per_iops))
    throughput = max(aws.gp3_baseline_throughput_mibps, min(wanted, allowed))
    size = max(aws.volume_size_gib, min_size_gib, math.ceil(iops / aws.gp3_max_iops_per_gib))
    return VolumeShape(size_gib=size, iops=iops, throughput_mibps=throughput)
