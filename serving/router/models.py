"""What the router is told, what it keeps and what it answers.

Pydantic models for what crosses the API (validated on the way in); plain dataclasses for the
per-user records read and written on every probe batch (``RouteState``, ``RegionStats``,
``Decision``), where validation would only re-check what the router wrote itself.

Three families live here:

- the **routing config** an admin pushes (``RoutingConfig``: a version, thresholds and one
  ``Allocation`` per user, taken from the placement plan contract);
- the **probes** a client reports (``Probe``) and the per-user ``Decision`` the router answers;
- the **state** the router persists (``RouteState`` per user with its smoothed ``RegionStats``,
  ``SwitchoverIntent`` per decided migration, ``Rejection`` per refused request).

Schema rules (types, bounds, duplicates) are checked here; rules that need the region catalogue
or the config in force are checked by ``serving.router.service``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from core.settings import Settings

RESOURCES: tuple[str, ...] = ("cpu_cores", "ram_gb", "storage_iops", "network_mbps")
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"

UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
RegionCode = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Milliseconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]

IntentStatus = Literal["pending", "executing", "done", "failed"]
OPEN_INTENT_STATUSES: frozenset[str] = frozenset({"pending", "executing"})

# Per-user records and probe answers are encoded on every probe batch: msgspec's C encoder and
# typed decoder (datetimes included) keep that off the router's latency.
_ENCODER = msgspec.json.Encoder()


class Resources(BaseModel):
    """Capacity held for one user: CPU cores, RAM GiB, storage IOPS, network Mbps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_cores: Amount
    ram_gb: Amount
    storage_iops: Amount
    network_mbps: Amount


class Allocation(Resources):
    """One user's pre-allocation, from one row of the placement plan."""

    user_id: UserId
    region: RegionCode = Field(description="Pre-allocated region (the plan's chosen region).")
    current_region: RegionCode = Field(description="Region the plan saw the user served from.")
    expected_latency_ms: Milliseconds | None = Field(
        None, description="Predicted round trip at the pre-allocated region (the plan's figure)."
    )
    window_start: AwareDatetime | None = None
    window_end: AwareDatetime | None = None

    @model_validator(mode="after")
    def _window_in_order(self) -> Allocation:
        if self.window_start and self.window_end and self.window_end <= self.window_start:
            raise PydanticCustomError("window_order", "window_end must be after window_start")
        return self

    def resources(self) -> Resources:
        """The capacity part of the allocation."""
        return Resources(**{name: getattr(self, name) for name in RESOURCES})


class Thresholds(BaseModel):
    """Switchover thresholds; a field left out takes the router's default from settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_threshold_ms: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Default: settings.latency_slo_ms."
    )
    ewma_alpha: float | None = Field(
        None, gt=0, le=1, description="Weight of a new probe in the smoothed latency."
    )
    hysteresis_ms: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="Margin around the threshold."
    )
    cooldown_s: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="Least time between two switchovers."
    )
    min_samples: int | None = Field(
        None, ge=1, le=1_000, description="Probes before a region's latency is trusted."
    )

    def filled(self, settings: Settings) -> Thresholds:
        """These thresholds with every missing field set to the router's default."""
        router = settings.router
        return Thresholds(
            latency_threshold_ms=_first(self.latency_threshold_ms, settings.latency_slo_ms),
            ewma_alpha=_first(self.ewma_alpha, router.ewma_alpha),
            hysteresis_ms=_first(self.hysteresis_ms, router.hysteresis_ms),
            cooldown_s=_first(self.cooldown_s, router.cooldown_s),
            min_samples=_first(self.min_samples, router.min_samples),
        )

    def policy(self, settings: Settings) -> Policy:
        """The complete rule parameters ``decide`` works with."""
        full = self.filled(settings)
        return Policy(
            latency_threshold_ms=float(full.latency_threshold_ms),  # type: ignore[arg-type]
            ewma_alpha=float(full.ewma_alpha),  # type: ignore[arg-type]
            hysteresis_ms=float(full.hysteresis_ms),  # type: ignore[arg-type]
            cooldown_s=float(full.cooldown_s),  # type: ignore[arg-type]
            min_samples=int(full.min_samples),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Policy:
    """The parameters of the switchover rule, all set (see ``serving.router.decide``)."""

    latency_threshold_ms: float
    ewma_alpha: float
    hysteresis_ms: float
    cooldown_s: float
    min_samples: int


class RoutingConfig(BaseModel):
    """A versioned routing config: thresholds plus each user's pre-allocated region and capacity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1, le=2**63 - 1, description="Must exceed the version in force.")
    thresholds: Thresholds = Thresholds()
    users: list[Allocation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _users_unique(self) -> RoutingConfig:
        counts = Counter(a.user_id for a in self.users)
        duplicates = sorted(user for user, n in counts.items() if n > 1)
        if duplicates:
            shown = ", ".join(duplicates[:10]) + (" …" if len(duplicates) > 10 else "")
            raise PydanticCustomError(
                "duplicate_users", "duplicate user_id(s): {shown}", {"shown": shown}
            )
        return self


class StoredConfig(BaseModel):
    """A config as the router keeps it: thresholds filled in, with the time it was pushed."""

    config: RoutingConfig
    pushed_at: AwareDatetime


class Probe(BaseModel):
    """One measurement between a user's device and a region."""

    model_config = ConfigDict(extra="forbid")

    user_id: UserId
    region: RegionCode
    latency_ms: Milliseconds = Field(description="Measured round trip.")
    throughput_mbps: Amount | None = None
    cpu_utilisation: float | None = Field(None, ge=0, le=1, description="Share of CPU busy.")
    measured_at: AwareDatetime | None = Field(None, description="Default: when it arrives.")


class ProbeBatch(BaseModel):
    """Probes of any number of users; applied in the order given."""

    model_config = ConfigDict(extra="forbid")

    probes: list[Probe] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class RegionStats:
    """Smoothed (EWMA) measurements of one user towards one region."""

    latency_ms: float
    samples: int
    last_at: datetime
    throughput_mbps: float | None = None
    cpu_utilisation: float | None = None

    def to_list(self) -> list:
        """Compact JSON form: [latency_ms, samples, last_at (epoch s), throughput, cpu]."""
        return [self.latency_ms, self.samples, self.last_at.timestamp(), self.throughput_mbps,
                self.cpu_utilisation]  # fmt: skip

    @classmethod
    def from_list(cls, item: list) -> RegionStats:
        """Inverse of ``to_list``."""
        latency, samples, last_at, throughput, cpu = item
        return cls(latency, samples, datetime.fromtimestamp(last_at, UTC), throughput, cpu)


@dataclass(slots=True)
class RouteState:
    """Where one user connects now, why, and what the router has measured for them.

    A plain dataclass rather than a pydantic model: the router reads and writes one per user
    per probe batch, and only ever reads back what it wrote itself. Mutable: the service
    updates the fresh copy it loaded for a batch, then saves it.
    """

    user_id: str
    region: str | None  # None: not known yet
    reason: str
    since: datetime
    config_version: int | None = None
    last_switch_at: datetime | None = None
    switches: int = 0
    pending_intent: str | None = None
    stats: dict[str, RegionStats] = dataclass_field(default_factory=dict)

    def to_json(self) -> bytes:
        """The stored form (JSON)."""
        return _ENCODER.encode(_StoredRoute(
            self.user_id, self.region, self.reason, self.since, self.config_version,
            self.last_switch_at, self.switches, self.pending_intent,
            {region: s.to_list() for region, s in self.stats.items()},
        ))  # fmt: skip

    @classmethod
    def from_json(cls, text: str | bytes) -> RouteState:
        """Inverse of ``to_json``."""
        data = _ROUTE_DECODER.decode(text)
        return cls(
            data.user_id, data.region, data.reason, data.since, data.config_version,
            data.last_switch_at, data.switches, data.pending_intent,
            {region: RegionStats.from_list(item) for region, item in data.stats.items()},
        )  # fmt: skip


class _StoredRoute(msgspec.Struct):
    """The stored JSON form of a ``RouteState`` (``stats`` as ``RegionStats.to_list`` lists)."""

    user_id: str
    region: str | None
    reason: str
    since: datetime
    config_version: int | None
    last_switch_at: datetime | None
    switches: int
    pending_intent: str | None
    stats: dict[str, list]


_ROUTE_DECODER = msgspec.json.Decoder(_StoredRoute)


class SwitchoverIntent(BaseModel):
    """A decided migration of one user's session, for the migration executor to carry out.

    Lifecycle: ``pending`` (recorded with the decision) → ``executing`` (claimed by the
    executor) → ``done`` or ``failed``. ``steps`` journals the executor's completed steps
    (freeze, copy, verify, start, redirect, release) so that a restarted executor resumes.
    """

    intent_id: str = Field(description="'<user_id>#<n>': the user's n-th switchover.")
    user_id: str
    from_region: str | None
    to_region: str
    reason: str
    code: str
    config_version: int | None
    resources: Resources = Field(description="Capacity pre-allocated at the target.")
    created_at: datetime
    updated_at: datetime
    status: IntentStatus = "pending"
    steps: list[str] = Field(default_factory=list)


class Rejection(BaseModel):
    """A refused request, kept with its reason so that nothing is lost silently."""

    at: datetime
    endpoint: str
    reason: str
    detail: str
    body: str
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """The routing decision for one user of a probe batch.

    ``region``: where the user connects after this decision; ``code``: the machine-readable
    reason (see ``serving.router.decide``).
    """

    user_id: str
    action: Literal["stay", "switch"]
    code: str
    region: str | None
    reason: str
    from_region: str | None = None
    intent_id: str | None = None


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Answer to a probe batch: one decision per user, in first-seen order."""

    config_version: int | None
    probes: int
    decisions: list[Decision]

    def to_json(self) -> bytes:
        """The answer's JSON (encoded directly: a batch can hold thousands of decisions)."""
        return _ENCODER.encode(
            {"config_version": self.config_version, "probes": self.probes,
             "decisions": self.decisions}
        )  # fmt: skip


DECISION_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclass_fields(Decision))


class RouteView(BaseModel):
    """Answer to GET /v1/routes/{user_id}."""

    user_id: str
    region: str | None
    reason: str
    since: datetime | None
    config_version: int | None
    preallocated_region: str | None
    pending_switchover: SwitchoverIntent | None
    measurements: dict[str, RegionStats] = Field(
        description="Smoothed (EWMA) probes per region: latency_ms, samples, last_at, "
        "throughput_mbps, cpu_utilisation."
    )


class ConfigPushed(BaseModel):
    """Answer to a config push."""

    version: int
    previous_version: int | None
    users: int
    unchanged: bool = Field(description="True when this exact config was already in force.")


class ConfigSummary(BaseModel):
    """The config in force, summarised (GET /v1/config)."""

    version: int
    previous_version: int | None
    pushed_at: datetime
    users: int
    thresholds: Thresholds


class ConfigRolledBack(BaseModel):
    """Answer to a rollback."""

    version: int = Field(description="The version now in force.")
    rolled_back_version: int


class Health(BaseModel):
    """Answer to GET /healthz."""

    status: Literal["ok"]
    state: str
    config_version: int | None


class Problem(BaseModel):
    """An error answer."""

    detail: str


def _first(value, default):
    return default if value is None else value
