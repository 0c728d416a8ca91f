"""What holding capacity costs per hour, at a region's catalogue prices.

Compute (vCPU-hours and GB-hours of memory) and provisioned storage IOPS are billed for as
long as they are held, so a warm reservation costs its share of them every hour. Network
bandwidth is billed per GB actually sent (egress), and a warm reservation sends nothing, so
it adds no hourly price here; its traffic is paid for when the user is served.
"""

from __future__ import annotations

from core.regions import Region
from serving.provisioning.provider import ResourceSpec


def hourly_usd(region: Region, spec: ResourceSpec) -> float:
    """USD per hour of holding ``spec`` in ``region`` (compute, memory, storage IOPS)."""
    return (
        spec.cpu_cores * region.vcpu_hour_usd
        + spec.ram_gb * region.ram_gb_hour_usd
        + spec.storage_iops * region.iops_hour_usd
    )
