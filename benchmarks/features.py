"""Feature pipeline: validation, aggregation, materialisation and online retrieval.

1,000 simulated users × 2 days of 5-minute telemetry go through the great-expectations gate
and the hourly aggregation, are materialised, and are read back one user per request from
the SQLite and the Redis online stores. The reference measured in the same run is the bare
round trip of each store (a primary-key SELECT on the same SQLite file, a Redis PING), so the
ratio says what Feast's retrieval costs on top of the store itself.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

USERS = 1_000
DAYS = 2
SEED = 11
REDIS_URL = "redis://127.0.0.1:6379"


def run(users: int = USERS, days: int = DAYS) -> dict[str, Any]:
    """Measure the pipeline on SQLite and Redis; figures per store plus the gate's rate."""
    from core.io import read_telemetry
    from features.validation import validate_frame
    from simulation.world import simulate

    with tempfile.TemporaryDirectory(prefix="prewarm-bench-features-") as tmp:
        simulate(users=users, days=days, seed=SEED, out=Path(tmp) / "telemetry")
        telemetry = read_telemetry(Path(tmp) / "telemetry")
        started = time.perf_counter()
        _, _, report = validate_frame(telemetry)
        validation_s = time.perf_counter() - started
        sqlite_figures = _sqlite(telemetry, Path(tmp) / "sqlite-home")
        redis_figures = _redis(telemetry, Path(tmp) / "redis-home")
    return {
        "users": users,
        "telemetry_rows": len(telemetry),
        "validation_rows_per_s": round(len(telemetry) / validation_s),
        "validation_rows_quarantined": report.rows_quarantined,
        "online_p50_ms": sqlite_figures["online_p50_ms"],
        "online_p99_ms": sqlite_figures["online_p99_ms"],
        "sqlite": sqlite_figures,
        "redis": redis_figures,
    }


def _settings(home: Path, **feast: Any):
    from core.settings import FeastSettings, Settings

    return Settings(home=home, feast=FeastSettings(**feast))


def _sqlite(telemetry, home: Path) -> dict[str, Any]:
    from features.store import benchmark_online

    figures = benchmark_online(telemetry, _settings(home))
    database = next(home.rglob("online_store.db"), None) or next(home.rglob("*.db"))
    figures["store_round_trip_p50_ms"] = _sqlite_round_trip_ms(database)
    return _rounded(figures)


def _sqlite_round_trip_ms(database: Path, repeats: int = 1_000) -> float:
    """p50 of a primary-key lookup on the online store's own SQLite file."""
    connection = sqlite3.connect(database)
    table = connection.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '%user_resources'"
    ).fetchone()[0]
    keys = [row[0] for row in connection.execute(f'SELECT entity_key FROM "{table}" LIMIT 1000')]
    timings = []
    for i in range(repeats):
        started = time.perf_counter()
        connection.execute(
            f'SELECT * FROM "{table}" WHERE entity_key = ?', (keys[i % len(keys)],)
        ).fetchall()
        timings.append((time.perf_counter() - started) * 1000)
    connection.close()
    return statistics.median(timings)


def _redis(telemetry, home: Path) -> dict[str, Any]:
    import redis

    from features.store import benchmark_online

    project = f"bench_{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        figures = benchmark_online(
            telemetry, _settings(home, online_store="redis", project=project)
        )
        timings = []
        for _ in range(1_000):
            started = time.perf_counter()
            client.ping()
            timings.append((time.perf_counter() - started) * 1000)
        figures["store_round_trip_p50_ms"] = statistics.median(timings)
    finally:
        for key in client.scan_iter(match=f"*{project}".encode(), count=1_000):
            client.delete(key)
    return _rounded(figures)


def _rounded(figures: dict[str, Any]) -> dict[str, Any]:
    out = {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
    out["feast_overhead_ratio_p50"] = round(
        figures["online_p50_ms"] / figures["store_round_trip_p50_ms"], 1
    )
    return out
