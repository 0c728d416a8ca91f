"""The one interface every provider (``local``, ``aws``) implements.

A *reservation* is what the ledger tracks for one user in one region; a provider realises it
as up to three resources, one per :data:`KINDS` entry (compute, storage, network), each tagged
with the reservation id, the user and the expiry so that the provider's own inventory can be
reconciled with the ledger. Every call is idempotent on the reservation's idempotency key:
calling :meth:`Provider.provision` twice with the same request returns the same resources and
creates nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

Kind = Literal["compute", "storage", "network"]
KINDS: tuple[Kind, ...] = ("compute", "storage", "network")

ResourceState = Literal["provisioning", "warm", "active", "released", "failed"]


@dataclass(frozen=True)
class ResourceSpec:
    """Capacity of one reservation: CPU cores, RAM GiB, storage IOPS, network Mbps."""

    cpu_cores: float
    ram_gb: float
    storage_iops: float
    network_mbps: float

    def __post_init__(self) -> None:
        for name in ("cpu_cores", "ram_gb", "storage_iops", "network_mbps"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")

    def scaled(self, factor: float) -> ResourceSpec:
        """The same shape, every dimension multiplied by ``factor``."""
        return ResourceSpec(
            self.cpu_cores * factor,
            self.ram_gb * factor,
            self.storage_iops * factor,
            self.network_mbps * factor,
        )


@dataclass(frozen=True)
class ProvisionRequest:
    """What the manager asks a provider to hold warm (or start) for one reservation."""

    reservation_id: str
    idempotency_key: str
    user_id: str
    region: str
    spec: ResourceSpec
    expires_at: datetime
    warm: bool = True
    attempt: int = 0
    """0 for the first request; n for the reconciler's n-th re-request of a reservation whose
    resources the provider lost, so that a cloud API that deduplicates creation by token (EC2's
    ``ClientToken``) creates replacements instead of answering with the lost originals."""


@dataclass(frozen=True)
class ProviderResource:
    """One resource as the provider sees it (its inventory is the truth for reconciliation)."""

    resource_id: str
    reservation_id: str
    user_id: str
    region: str
    kind: Kind
    state: ResourceState
    spec: ResourceSpec
    ready_at: datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)


class ProviderError(RuntimeError):
    """A provider could not do what was asked (capacity, quota, API error after retries)."""


class CapacityError(ProviderError):
    """The region has no room for the requested capacity."""


@runtime_checkable
class Provider(Protocol):
    """Where warm capacity actually lives; the ledger's counterpart."""

    name: str

    def provision(self, request: ProvisionRequest) -> list[ProviderResource]:
        """Create (or find, when the idempotency key was seen) the reservation's resources."""
        ...

    def scale(self, reservation_id: str, spec: ResourceSpec) -> list[ProviderResource]:
        """Resize a held reservation to ``spec`` (warm -> full allocation when it is used)."""
        ...

    def release(self, reservation_id: str) -> int:
        """Delete the reservation's resources; returns how many were released now (0 if none)."""
        ...

    def inventory(self) -> list[ProviderResource]:
        """Every resource the provider holds that is not released, across all regions."""
        ...
