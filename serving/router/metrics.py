"""The router's Prometheus metrics, in a registry of its own (one per app instance)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, values

from serving.router.models import ProbeResult


class RouterMetrics:
    """Counters and gauges served at GET /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.probes = _Counter(
            "prewarm_router_probes",
            "Probes received, by outcome (accepted, rejected) and rejection reason.",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.decisions = _Counter(
            "prewarm_router_decisions",
            "Routing decisions, by action (stay, switch) and reason code.",
            ["action", "code"],
            registry=self.registry,
        )
        self.switchovers = _Counter(
            "prewarm_router_switchovers",
            "Switchover intents recorded, by the rule that fired.",
            ["code"],
            registry=self.registry,
        )
        self.config_version = _Gauge(
            "prewarm_router_config_version",
            "Version of the routing config in force (0: none).",
            registry=self.registry,
        )
        self.config_pushes = _Counter(
            "prewarm_router_config_pushes",
            "Config pushes, by outcome (accepted, unchanged, rejected) and reason.",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.rollbacks = _Counter(
            "prewarm_router_config_rollbacks",
            "Config rollbacks, by outcome (accepted, rejected).",
            ["outcome"],
            registry=self.registry,
        )

    def count_result(self, result: ProbeResult) -> None:
        """Count an accepted batch: its probes, decisions and switchovers."""
        self.probes.labels("accepted", "ok").inc(result.probes)
        for (action, code), n in Tally((d.action, d.code) for d in result.decisions).items():
            self.decisions.labels(action, code).inc(n)
            if action == "switch":
                self.switchovers.labels(code).inc(n)

    def count_rejected_probes(self, reasons: list[str]) -> None:
        """Count rejected probes, one reason each."""
        for reason, n in Tally(reasons).items():
            self.probes.labels("rejected", reason).inc(n)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _Counter(Counter):
    """A Counter whose values (its labelled children's too) live in this object."""

    def _metric_init(self) -> None:
        with _in_process_values():
            super()._metric_init()


class _Gauge(Gauge):
    """A Gauge whose values live in this object."""

    def _metric_init(self) -> None:
        with _in_process_values():
            super()._metric_init()


@contextmanager
def _in_process_values() -> Iterator[None]:
    """Metrics initialised here keep their values in memory, whatever the environment says.

    Importing Feast sets PROMETHEUS_MULTIPROC_DIR, which switches prometheus_client to values
    shared by metric name across every registry of the process; each app's metrics must be
    its own (and tests create many apps in one process).
    """
    shared = values.ValueClass
    values.ValueClass = values.MutexValue
    try:
        yield
    finally:
        values.ValueClass = shared
