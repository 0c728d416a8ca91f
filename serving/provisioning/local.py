"""The ``local`` provider: a simulated cloud whose state persists in its own SQLite database.

It behaves like a small, honest cloud so the manager, the reconciler and the closed-loop
evaluation can be exercised without one:

- Capacity per region is the catalogue's ``capacity_*`` columns (vCPU, RAM GB, storage IOPS,
  network Gbps); a request that does not fit raises :class:`CapacityError` and creates nothing.
- New capacity is ``provisioning`` for ``cold_boot_seconds`` (a VM or container has to boot
  and the application to warm up), then ``warm``. Scaling a warm reservation to its full
  allocation makes it ``active``; the added capacity is ready ``scale_up_seconds`` later.
- Every call is idempotent on the idempotency key (a partial unique index over resources not
  yet released), and every call is one transaction, so a process killed mid-call leaves either
  all or none of a reservation's resources.
- Each reservation is three resources: compute (CPU cores, RAM), storage (IOPS) and network
  (Mbps), tagged with the reservation, the user, the key and the expiry.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)

from core.regions import Region, RegionCatalogue, load_regions
from core.settings import Settings
from serving.provisioning.clock import Clock, system_clock
from serving.provisioning.db import (
    SPEC_COLUMNS,
    UTCDateTime,
    make_engine,
    spec_columns,
    spec_of,
    spec_values,
    sqlite_url,
)
from serving.provisioning.provider import (
    CapacityError,
    Kind,
    ProviderError,
    ProviderResource,
    ProvisionRequest,
    ResourceSpec,
)

MBPS_PER_GBPS = 1000.0

metadata = MetaData()

resources = Table(
    "local_resources",
    metadata,
    Column("resource_id", String(64), primary_key=True),
    Column("idempotency_key", String(512), nullable=False),
    Column("reservation_id", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("region", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("target_state", String(16), nullable=False),
    *spec_columns(),
    Column("created_at", UTCDateTime, nullable=False),
    Column("booted_at", UTCDateTime, nullable=False),
    Column("ready_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("released_at", UTCDateTime, nullable=True),
    Column("tags", Text, nullable=False),
    Index("ix_local_resources_reservation", "reservation_id"),
    Index("ix_local_resources_region_live", "region", "released_at"),
)
Index(  # one live resource per key and kind: the idempotency guarantee
    "ux_local_resources_live_key_kind",
    resources.c.idempotency_key,
    resources.c.kind,
    unique=True,
    sqlite_where=resources.c.released_at.is_(None),
    postgresql_where=resources.c.released_at.is_(None),
)



def split_by_kind(spec: ResourceSpec) -> dict[Kind, ResourceSpec]:
    """The part of a reservation's capacity each kind of resource carries."""
    return {
        "compute": ResourceSpec(spec.cpu_cores, spec.ram_gb, 0.0, 0.0),
        "storage": ResourceSpec(0.0, 0.0, spec.storage_iops, 0.0),
        "network": ResourceSpec(0.0, 0.0, 0.0, spec.network_mbps),
    }


class LocalProvider:
    """A simulated cloud with per-region capacity and boot delays, persisted in SQLite."""

    name = "local"

    def __init__(
        self,
        engine: Engine,
        catalogue: RegionCatalogue,
        cold_boot_seconds: float,
        scale_up_seconds: float,
        clock: Clock = system_clock,
    ) -> None:
        self.engine = engine
        self.catalogue = catalogue
        self.cold_boot = timedelta(seconds=cold_boot_seconds)
        self.scale_up = timedelta(seconds=scale_up_seconds)
        self.clock = clock
        metadata.create_all(engine)

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock = system_clock) -> LocalProvider:
        """The local cloud of this PREWARM_HOME (or ``provisioning.local_cloud_url``)."""
        config = settings.provisioning
        url = config.local_cloud_url or sqlite_url(settings.serving_dir / "local_cloud.sqlite")
        return cls(
            make_engine(url, config.lock_timeout_seconds),
            load_regions(settings.regions_file),
            config.cold_boot_seconds,
            config.scale_up_seconds,
            clock,
        )

    def dispose(self) -> None:
        """Close the engine's pooled connections."""
        self.engine.dispose()

    def provision(self, request: ProvisionRequest) -> list[ProviderResource]:
        """Create the reservation's three resources, or return those its key already holds."""
        now = self.clock()
        with self.engine.begin() as conn:
            held = self._live(conn, resources.c.idempotency_key == request.idempotency_key)
            if held:
                return held
            region = self._region(request.region)
            self._check_capacity(conn, region, request.spec)
            ready_at = now + self.cold_boot
            tags = {
                "prewarm:reservation": request.reservation_id,
                "prewarm:user": request.user_id,
                "prewarm:idempotency_key": request.idempotency_key,
                "prewarm:expires_at": request.expires_at.isoformat(),
            }
            rows = [
                {
                    "resource_id": f"local-{kind}-{uuid.uuid4().hex[:16]}",
                    "idempotency_key": request.idempotency_key,
                    "reservation_id": request.reservation_id,
                    "user_id": request.user_id,
                    "region": request.region,
                    "kind": kind,
                    "target_state": "warm" if request.warm else "active",
                    **spec_values(part),
                    "created_at": now,
                    "booted_at": ready_at,
                    "ready_at": ready_at,
                    "expires_at": request.expires_at,
                    "released_at": None,
                    "tags": json.dumps(tags, sort_keys=True),
                }
                for kind, part in split_by_kind(request.spec).items()
            ]
            conn.execute(insert(resources), rows)
            return self._live(conn, resources.c.reservation_id == request.reservation_id)

    def scale(self, reservation_id: str, spec: ResourceSpec) -> list[ProviderResource]:
        """Resize the reservation to ``spec`` and make it active; the growth is ready later."""
        now = self.clock()
        with self.engine.begin() as conn:
            held = self._live(conn, resources.c.reservation_id == reservation_id)
            if not held:
                raise ProviderError(f"reservation {reservation_id}: no resources to scale")
            current = _total(r.spec for r in held)
            if current == spec and all(r.state == "active" for r in held):
                return held
            growth = ResourceSpec(
                *(max(0.0, getattr(spec, c) - getattr(current, c)) for c in SPEC_COLUMNS)
            )
            self._check_capacity(conn, self._region(held[0].region), growth)
            parts = split_by_kind(spec)
            for resource in held:
                grows = any(
                    getattr(parts[resource.kind], c) > getattr(resource.spec, c)
                    for c in SPEC_COLUMNS
                )
                booted = resource.ready_at or now
                ready_at = max(now, booted) + self.scale_up if grows else max(now, booted)
                conn.execute(
                    update(resources)
                    .where(resources.c.resource_id == resource.resource_id)
                    .values(
                        target_state="active",
                        ready_at=ready_at,
                        **spec_values(parts[resource.kind]),
                    )
                )
            return self._live(conn, resources.c.reservation_id == reservation_id)

    def release(self, reservation_id: str) -> int:
        """Release every live resource of the reservation; how many were released now."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(resources)
                .where(
                    resources.c.reservation_id == reservation_id,
                    resources.c.released_at.is_(None),
                )
                .values(released_at=self.clock())
            )
            return int(result.rowcount)

    def inventory(self) -> list[ProviderResource]:
        """Every resource not released, in every region."""
        with self.engine.begin() as conn:
            return self._live(conn, resources.c.released_at.is_(None))

    def usage(self, region: str) -> ResourceSpec:
        """Capacity held in ``region`` by resources not released."""
        with self.engine.begin() as conn:
            return self._usage(conn, region)

    # -- internals ---------------------------------------------------------------------------

    def _region(self, code: str) -> Region:
        try:
            return self.catalogue[code]
        except KeyError as error:
            raise ProviderError(str(error)) from None

    def _check_capacity(self, conn: Connection, region: Region, extra: ResourceSpec) -> None:
        used = self._usage(conn, region.code)
        limits = {
            "cpu_cores": region.capacity_vcpu,
            "ram_gb": region.capacity_ram_gb,
            "storage_iops": region.capacity_storage_iops,
            "network_mbps": region.capacity_network_gbps * MBPS_PER_GBPS,
        }
        for column, limit in limits.items():
            wanted = getattr(used, column) + getattr(extra, column)
            if wanted > limit:
                raise CapacityError(
                    f"region {region.code}: {column} {getattr(used, column):g} in use + "
                    f"{getattr(extra, column):g} requested exceeds capacity {limit:g}"
                )

    @staticmethod
    def _usage(conn: Connection, region: str) -> ResourceSpec:
        row = conn.execute(
            select(*(func.coalesce(func.sum(resources.c[c]), 0.0) for c in SPEC_COLUMNS)).where(
                resources.c.region == region, resources.c.released_at.is_(None)
            )
        ).one()
        return ResourceSpec(*(float(v) for v in row))

    def _live(self, conn: Connection, condition: Any) -> list[ProviderResource]:
        query = (
            select(resources)
            .where(condition, resources.c.released_at.is_(None))
            .order_by(resources.c.reservation_id, resources.c.kind)
        )
        now = self.clock()
        return [_to_resource(row, now) for row in conn.execute(query)]


def _total(specs: Any) -> ResourceSpec:
    specs = list(specs)
    return ResourceSpec(*(sum(getattr(s, c) for s in specs) for c in SPEC_COLUMNS))


def _to_resource(row: Any, now: datetime) -> ProviderResource:
    state = "provisioning" if now < row.booted_at else row.target_state
    return ProviderResource(
        resource_id=row.resource_id,
        reservation_id=row.reservation_id,
        user_id=row.user_id,
        region=row.region,
        kind=row.kind,
        state=state,
        spec=spec_of(row),
        ready_at=row.ready_at,
        tags=json.loads(row.tags),
    )
