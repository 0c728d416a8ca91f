"""Snapshot the router's measurements into a feedback batch (see ``serving.feedback``).

The router keeps, per user, smoothed (EWMA) measurements towards each region it was probed
against, and a switchover intent per decided migration. An export writes:

- one row per (user, region) for every user whose measurements or switchover count changed
  since the previous export (the user's complete snapshot, so the serving region's row is
  always there when it was measured);
- the switchover intents closed (``done`` or ``failed``) since the previous export.

Nothing is written when nothing changed. The users considered are every user with a route in
the router's store (everyone who was probed, in a config or not) and those of the switchover
intents.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core.settings import Settings
from serving.feedback import (
    MEASUREMENTS_FILE,
    SWITCHOVERS_FILE,
    feedback_dir,
    incoming_dir,
)
from serving.router.models import RouteState, SwitchoverIntent
from serving.router.store import RouterStore, open_store

STATE_FILE = "export_state.json"
CLOSED_STATUSES: tuple[str, ...] = ("done", "failed")
_UTC = pa.timestamp("us", tz="UTC")
MEASUREMENT_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("region", pa.string()),
        pa.field("serving_region", pa.string()),
        pa.field("latency_ms", pa.float64()),
        pa.field("samples", pa.int64()),
        pa.field("last_at", _UTC),
        pa.field("throughput_mbps", pa.float64()),
        pa.field("cpu_utilisation", pa.float64()),
        pa.field("switches", pa.int64()),
        pa.field("exported_at", _UTC),
    ]
)
SWITCHOVER_SCHEMA = pa.schema(
    [
        pa.field("intent_id", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("from_region", pa.string()),
        pa.field("to_region", pa.string()),
        pa.field("code", pa.string()),
        pa.field("status", pa.string()),
        pa.field("config_version", pa.int64()),
        pa.field("created_at", _UTC),
        pa.field("updated_at", _UTC),
        pa.field("exported_at", _UTC),
    ]
)


def export_router_feedback(
    settings: Settings, now: datetime, store: RouterStore | None = None
) -> Path | None:
    """Write what the router measured since the last export as a batch; None if nothing changed.

    ``store`` defaults to the router store the settings name (opened and closed here). Safe to
    kill at any point: the batch appears whole or not at all, and the record of what was
    exported is updated only after it appeared (a killed export is simply done again).
    """
    owned = store is None
    store = store if store is not None else open_store(settings)
    try:
        state = _read_state(settings)
        closed_since = _parse_time(state.get("intents_closed_through"))
        intents = _closed_intents(store, closed_since, settings.feedback.max_intents_per_export)
        routes = store.routes(sorted(_known_users(store, intents)))
    finally:
        if owned:
            store.close()
    seen = {user: _fingerprint(route) for user, route in routes.items()}
    changed = [routes[u] for u in sorted(seen) if state.get("users", {}).get(u) != seen[u]]
    if not changed and not intents:
        return None
    measurements = _measurement_table(changed, now)
    switchovers = _switchover_table(intents, now)
    folder = _write_batch(settings, now, measurements, switchovers)
    closed_through = max((i.updated_at for i in intents), default=closed_since)
    _write_state(settings, {**state.get("users", {}), **seen}, closed_through)
    return folder


def _known_users(store: RouterStore, intents: Iterable[SwitchoverIntent]) -> set[str]:
    """Every user with a stored route, and the users of the given intents."""
    return set(store.route_user_ids()) | {intent.user_id for intent in intents}


def _closed_intents(
    store: RouterStore, since: datetime | None, limit: int
) -> list[SwitchoverIntent]:
    """Intents closed after ``since`` (all closed ones when None), oldest change first."""
    closed = [i for status in CLOSED_STATUSES for i in store.intents(status, limit=limit)]
    if since is not None:
        closed = [i for i in closed if i.updated_at > since]
    return sorted(closed, key=lambda i: (i.updated_at, i.intent_id))


def _fingerprint(route: RouteState) -> str:
    """What identifies a user's snapshot: serving region, switches, samples and times per region."""
    stats = {r: [s.samples, s.last_at.timestamp()] for r, s in sorted(route.stats.items())}
    return json.dumps([route.region, route.switches, stats], separators=(",", ":"))


def _measurement_table(routes: list[RouteState], now: datetime) -> pa.Table:
    rows = [
        {
            "user_id": route.user_id,
            "region": region,
            "serving_region": route.region,
            "latency_ms": stats.latency_ms,
            "samples": stats.samples,
            "last_at": stats.last_at,
            "throughput_mbps": stats.throughput_mbps,
            "cpu_utilisation": stats.cpu_utilisation,
            "switches": route.switches,
            "exported_at": now,
        }
        for route in routes
        for region, stats in sorted(route.stats.items())
    ]
    return pa.Table.from_pylist(rows, schema=MEASUREMENT_SCHEMA)


def _switchover_table(intents: list[SwitchoverIntent], now: datetime) -> pa.Table:
    rows = [
        {
            **intent.model_dump(include=set(SWITCHOVER_SCHEMA.names) - {"exported_at"}),
            "exported_at": now,
        }
        for intent in intents
    ]
    return pa.Table.from_pylist(rows, schema=SWITCHOVER_SCHEMA)


def _write_batch(
    settings: Settings, now: datetime, measurements: pa.Table, switchovers: pa.Table
) -> Path:
    """Write both tables into a hidden folder, then rename it to its unique batch name."""
    digest = hashlib.sha256()
    for table in (measurements, switchovers):
        digest.update(table.drop_columns(["exported_at"]).to_string(show_metadata=False).encode())
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{stamp}-{digest.hexdigest()[:12]}"
    incoming = incoming_dir(settings)
    for leftover in incoming.glob(".*.tmp"):  # what a killed export left behind
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = incoming / f".{name}.tmp"
    tmp.mkdir(parents=True)
    pq.write_table(measurements, tmp / MEASUREMENTS_FILE)
    pq.write_table(switchovers, tmp / SWITCHOVERS_FILE)
    final = incoming / name
    if final.exists():  # the same content exported at the same moment: already there
        shutil.rmtree(tmp)
        return final
    os.replace(tmp, final)
    return final


def _read_state(settings: Settings) -> dict:
    path = feedback_dir(settings) / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _write_state(settings: Settings, users: dict[str, str], closed: datetime | None) -> None:
    path = feedback_dir(settings) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    data = {"users": users, "intents_closed_through": closed.isoformat() if closed else None}
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
