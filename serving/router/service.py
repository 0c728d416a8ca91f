"""What the router does, between the web layer (``serving.router.app``) and its state.

- **Configs.** A pushed ``RoutingConfig`` is checked against the region catalogue and the
  version in force, its thresholds are completed with the router's defaults, and it replaces
  the config in force atomically; the replaced one is kept for one rollback. Re-pushing the
  exact config in force is accepted as a no-op, so a client may retry a push whose answer it
  lost. Each process caches the config in force and reloads it when the store's generation
  changes, so a probe batch costs one small read for it.
- **Probes.** A batch is accepted whole or rejected whole (with every reason). Accepted probes
  are folded into each user's smoothed measurements in the order given, then ``decide`` runs
  once per user.
- **Switchover intents.** A decision to switch writes, in the same transaction as the user's
  route, a ``SwitchoverIntent``: id ``<user_id>#<n>`` for the user's n-th switchover (so a
  re-run cannot duplicate it), ``from_region``, ``to_region``, ``reason``/``code``, the config
  version, the ``resources`` pre-allocated at the target, ``created_at``, ``status`` and a
  ``steps`` journal. The migration executor (freeze → copy → verify → start → redirect →
  release) is meant to consume them through the store alone: list ``intents("pending")``
  oldest first; claim one with ``transition_intent(id, "pending", "executing", now)`` (only one
  claimer wins); after each completed step call ``transition_intent(id, "executing",
  "executing", now, step=<name>)`` so a restarted executor skips what is journaled; finish with
  ``"done"`` (then release the capacity at ``from_region``) or ``"failed"``
  (``serving.router.migration_intents.execute_intents`` does all this).
- **Routes flip at the redirect.** Recording an intent does not move the user: they stay where
  they are until the migration's ``redirect`` step, which flips the user's route in the
  migration journal (``MigrationJournal.route``) in the same transaction that journals the
  step. The journal is read only for users with a switchover in flight (``pending_intent`` set),
  in one query per probe batch, so the hot path costs nothing more for everybody else; once
  the intent is closed the route is settled from it (``done``: the journal's region, ``failed``:
  where the user stayed) and ``pending_intent`` cleared. No second switchover is decided while
  one is in flight. ``GET /v1/routes/{user}`` answers the journal's region whenever the
  journal knows the user.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core.regions import load_regions
from core.settings import Settings
from serving.router.decide import Verdict, decide, observe
from serving.router.migration_journal import MigrationJournal, SessionRoute
from serving.router.models import (
    OPEN_INTENT_STATUSES,
    Allocation,
    ConfigPushed,
    ConfigRolledBack,
    ConfigSummary,
    Decision,
    IntentStatus,
    Policy,
    Probe,
    ProbeResult,
    RouteState,
    RouteView,
    RoutingConfig,
    StoredConfig,
    SwitchoverIntent,
    Thresholds,
)
from serving.router.store import RouterStore, StaleVersionError

ErrorItem = dict[str, object]


class RequestRejectedError(Exception):
    """A request refused for its content; ``errors`` follow FastAPI's {loc, msg, type} shape."""

    def __init__(self, errors: list[ErrorItem]) -> None:
        super().__init__("; ".join(f"{e['type']}: {e['msg']}" for e in errors))
        self.errors = errors


class ConfigRejectedError(RequestRejectedError):
    """A config push refused; the config in force is unchanged."""


class ProbesRejectedError(RequestRejectedError):
    """A probe batch refused as a whole; nothing of it was applied."""


@dataclass(frozen=True)
class ActiveConfig:
    """The config in force as one process caches it, indexed by user."""

    generation: int
    stored: StoredConfig | None
    policy: Policy
    allocations: dict[str, Allocation] = field(default_factory=dict)

    @property
    def version(self) -> int | None:
        """Version in force; None before the first push."""
        return self.stored.config.version if self.stored else None


@dataclass(frozen=True)
class InFlight:
    """A user's switchover intent that is not closed yet."""

    intent_id: str
    status: IntentStatus


class RouterService:
    """Configs, probes and routes of the Dynamic Connection Router, on one store."""

    def __init__(
        self,
        store: RouterStore,
        settings: Settings,
        clock: Callable[[], datetime],
        journal: MigrationJournal | None = None,
    ) -> None:
        """``journal``: where migrations flip routes; None when no executor ever runs."""
        self.store = store
        self.journal = journal
        self.settings = settings
        self.clock = clock
        self.regions = frozenset(region.code for region in load_regions(settings.regions_file))
        self._default_policy = Thresholds().policy(settings)
        self._active: ActiveConfig | None = None

    def active(self) -> ActiveConfig:
        """The config in force, reloaded only when the store says it changed."""
        generation = self.store.generation()
        if self._active is None or self._active.generation != generation:
            stored = self.store.current_config()
            if stored is None:
                self._active = ActiveConfig(generation, None, self._default_policy)
            else:
                self._active = ActiveConfig(
                    generation,
                    stored,
                    stored.config.thresholds.policy(self.settings),
                    {a.user_id: a for a in stored.config.users},
                )
        return self._active

    def push_config(self, config: RoutingConfig) -> ConfigPushed:
        """Validate ``config`` and put it in force; raises ConfigRejectedError, changing nothing."""
        current = self.store.current_config()
        filled = config.model_copy(update={"thresholds": config.thresholds.filled(self.settings)})
        if current is not None and current.config == filled:
            previous = self.store.previous_config()
            return ConfigPushed(
                version=filled.version,
                previous_version=previous.config.version if previous else None,
                users=len(filled.users),
                unchanged=True,
            )
        errors = self.config_errors(config, current.config.version if current else None)
        if errors:
            raise ConfigRejectedError(errors)
        try:
            self.store.put_config(filled, self.clock())
        except StaleVersionError as exc:
            raise ConfigRejectedError([_stale(exc)]) from exc
        return ConfigPushed(
            version=filled.version,
            previous_version=current.config.version if current else None,
            users=len(filled.users),
            unchanged=False,
        )

    def config_errors(self, config: RoutingConfig, in_force: int | None) -> list[ErrorItem]:
        """What makes ``config`` inconsistent with the catalogue or the version in force."""
        errors: list[ErrorItem] = []
        if in_force is not None and config.version <= in_force:
            errors.append(_stale(StaleVersionError(config.version, in_force)))
        for i, allocation in enumerate(config.users):
            for name in ("region", "current_region"):
                code = getattr(allocation, name)
                if code not in self.regions:
                    errors.append(_error(("users", i, name), f"unknown region {code!r}",
                                         "unknown_region"))  # fmt: skip
        return errors

    def rollback(self) -> ConfigRolledBack:
        """Put the previous config back in force; raises NoPreviousConfigError."""
        current = self.store.current_config()
        restored = self.store.rollback_config()
        return ConfigRolledBack(
            version=restored.config.version,
            rolled_back_version=current.config.version if current else restored.config.version,
        )

    def config_summary(self) -> ConfigSummary | None:
        """The config in force, summarised; None before the first push."""
        active = self.active()
        if active.stored is None:
            return None
        previous = self.store.previous_config()
        return ConfigSummary(
            version=active.stored.config.version,
            previous_version=previous.config.version if previous else None,
            pushed_at=active.stored.pushed_at,
            users=len(active.allocations),
            thresholds=active.stored.config.thresholds,
        )

    def handle_probes(self, probes: Sequence[Probe]) -> ProbeResult:
        """Apply a probe batch and decide for each user in it; raises ProbesRejectedError."""
        now = self.clock()
        errors = self.probe_errors(probes, now)
        if errors:
            raise ProbesRejectedError(errors)
        active = self.active()
        by_user: dict[str, list[Probe]] = {}
        for probe in probes:
            by_user.setdefault(probe.user_id, []).append(probe)
        stored = self.store.routes(list(by_user))
        in_flight = self.follow_migrations(list(stored.values()))
        routes: list[RouteState] = []
        intents: list[SwitchoverIntent] = []
        decisions: list[Decision] = []
        for user_id, user_probes in by_user.items():
            allocation = active.allocations.get(user_id)
            route = self._observed(stored.get(user_id), user_id, user_probes, active, now)
            if user_id in in_flight:
                routes.append(route)
                decisions.append(_in_flight_decision(route, in_flight[user_id]))
                continue
            verdict = decide(route, allocation, active.policy, now)
            intent = None
            if verdict.switch and allocation is not None:
                route, intent = _switch(route, allocation, verdict, active.version, now)
                intents.append(intent)
            routes.append(route)
            decisions.append(_decision(route, verdict, intent))
        self.store.save(routes, intents)
        return ProbeResult(config_version=active.version, probes=len(probes), decisions=decisions)

    def probe_errors(self, probes: Sequence[Probe], now: datetime) -> list[ErrorItem]:
        """What makes a schema-valid probe batch unusable (every reason, not just the first)."""
        errors: list[ErrorItem] = []
        limit = self.settings.router.max_probes_per_batch
        if len(probes) > limit:
            errors.append(_error(("probes",), f"{len(probes)} probes > {limit} per batch",
                                 "batch_too_large"))  # fmt: skip
        max_latency = self.settings.validation.max_latency_ms
        latest = now + timedelta(minutes=self.settings.validation.future_tolerance_minutes)
        for i, probe in enumerate(probes):
            if probe.region not in self.regions:
                errors.append(_error(("probes", i, "region"), f"unknown region {probe.region!r}",
                                     "unknown_region"))  # fmt: skip
            if probe.latency_ms > max_latency:
                errors.append(_error(("probes", i, "latency_ms"),
                                     f"{probe.latency_ms} ms > {max_latency:g} ms is implausible",
                                     "implausible_latency"))  # fmt: skip
            if probe.measured_at is not None and probe.measured_at > latest:
                errors.append(_error(("probes", i, "measured_at"),
                                     f"{probe.measured_at.isoformat()} is in the future",
                                     "future_timestamp"))  # fmt: skip
        return errors

    def follow_migrations(self, routes: list[RouteState]) -> dict[str, InFlight]:
        """Bring routes with a switchover in flight up to date, in place; those still open.

        Nothing is read when no route has a ``pending_intent``; else the intents' statuses, and
        only for intents the executor has claimed or closed, those intents and the journal's
        routes (one query each).
        """
        waiting = [route for route in routes if route.pending_intent]
        if not waiting:
            return {}
        statuses = self.store.intent_statuses([r.pending_intent for r in waiting])
        moved = [r for r in waiting if statuses.get(r.pending_intent, "pending") != "pending"]
        intents = self.store.intents_by_id([r.pending_intent for r in moved]) if moved else {}
        journaled = (
            self.journal.routes([r.user_id for r in moved]) if self.journal and moved else {}
        )
        still_open: dict[str, InFlight] = {}
        for route in waiting:
            intent_id = route.pending_intent
            if intent_id not in statuses:  # the intent is gone: nothing is in flight
                route.pending_intent = None
                continue
            _follow(route, intents.get(intent_id), journaled.get(route.user_id))
            if statuses[intent_id] in OPEN_INTENT_STATUSES:
                still_open[route.user_id] = InFlight(intent_id, statuses[intent_id])
        return still_open

    def route(self, user_id: str) -> RouteView | None:
        """Where ``user_id`` connects now; None for a user the router knows nothing of.

        The journal's route when the journal knows the user (it flips exactly at a migration's
        redirect), else the router's own.
        """
        active = self.active()
        allocation = active.allocations.get(user_id)
        route = self.store.routes([user_id]).get(user_id)
        if route is None and allocation is None:
            return None
        if route is None:
            route = _initial_route(user_id, allocation, active.version, self.clock())
            since = None
        else:
            since = route.since
        in_flight = self.follow_migrations([route]).get(user_id)
        pending = self.store.intent(in_flight.intent_id) if in_flight else None
        journaled = self.journal.route(user_id) if self.journal else None
        region = route.region
        if journaled is not None and journaled.region != route.region:
            region, since = journaled.region, journaled.since
        return RouteView(
            user_id=user_id,
            region=region,
            reason=route.reason,
            since=since,
            config_version=route.config_version,
            preallocated_region=allocation.region if allocation else None,
            pending_switchover=pending,
            measurements=route.stats,
        )

    def _observed(
        self,
        route: RouteState | None,
        user_id: str,
        probes: list[Probe],
        active: ActiveConfig,
        now: datetime,
    ) -> RouteState:
        """The user's route (the plan's current region when new) with ``probes`` folded in."""
        allocation = active.allocations.get(user_id)
        if route is None or (route.region is None and allocation is not None):
            route = _initial_route(user_id, allocation, active.version, now, route)
        stats = dict(route.stats)
        alpha = active.policy.ewma_alpha
        for probe in probes:
            stats[probe.region] = observe(
                stats.get(probe.region), probe, alpha, probe.measured_at or now
            )
        route.stats = stats
        route.config_version = active.version
        return route


def _initial_route(
    user_id: str,
    allocation: Allocation | None,
    version: int | None,
    now: datetime,
    known: RouteState | None = None,
) -> RouteState:
    """Where a user starts: the plan's current region, or unknown without a pre-allocation."""
    if allocation is None:
        region, reason = None, "not known: no pre-allocation and no switchover yet"
    else:
        region, reason = allocation.current_region, "the placement plan's current region"
    return RouteState(
        user_id=user_id,
        region=region,
        reason=reason,
        since=now,
        config_version=version,
        stats=known.stats if known else {},
    )


def _switch(
    route: RouteState,
    allocation: Allocation,
    verdict: Verdict,
    version: int | None,
    now: datetime,
) -> tuple[RouteState, SwitchoverIntent]:
    """Record the switchover intent on ``route``; the user moves only at the redirect."""
    number = route.switches + 1
    intent = SwitchoverIntent(
        intent_id=f"{route.user_id}#{number}",
        user_id=route.user_id,
        from_region=route.region,
        to_region=allocation.region,
        reason=verdict.reason,
        code=verdict.code,
        config_version=version,
        resources=allocation.resources(),
        created_at=now,
        updated_at=now,
    )
    route.last_switch_at = now
    route.switches = number
    route.pending_intent = intent.intent_id
    return route, intent


def _follow(
    route: RouteState, intent: SwitchoverIntent | None, journaled: SessionRoute | None
) -> None:
    """Move ``route`` where the journal says the user is; settle it once its intent closed."""
    if journaled is not None and journaled.region != route.region:
        route.region, route.since = journaled.region, journaled.since
        route.reason = (
            intent.reason
            if intent is not None and journaled.region == intent.to_region
            else f"moved by migration {journaled.migration_id}"
        )
    if intent is None or intent.status in OPEN_INTENT_STATUSES:
        return
    route.pending_intent = None
    if intent.status == "failed":
        why = intent.steps[-1] if intent.steps else "no reason recorded"
        route.reason = f"stayed: switchover {intent.intent_id} to {intent.to_region} failed ({why})"


def _decision(route: RouteState, verdict: Verdict, intent: SwitchoverIntent | None) -> Decision:
    """``region``: where the user connects after this decision (a switch: once redirected)."""
    return Decision(
        user_id=route.user_id,
        action="switch" if intent else "stay",
        code=verdict.code,
        region=intent.to_region if intent else route.region,
        from_region=intent.from_region if intent else None,
        reason=verdict.reason,
        intent_id=intent.intent_id if intent else None,
    )


def _in_flight_decision(route: RouteState, in_flight: InFlight) -> Decision:
    """Stay: a user with a switchover in flight gets no second one until it closes."""
    return Decision(
        user_id=route.user_id,
        action="stay",
        code="switchover_in_flight",
        region=route.region,
        reason=f"switchover {in_flight.intent_id} is {in_flight.status}",
        intent_id=in_flight.intent_id,
    )


def _error(loc: tuple[str | int, ...], msg: str, kind: str) -> ErrorItem:
    return {"loc": ["body", *loc], "msg": msg, "type": kind}


def _stale(exc: StaleVersionError) -> ErrorItem:
    return _error(("version",), str(exc), "stale_version")
