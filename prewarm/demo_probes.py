"""The demo's stand-in for users' clients: the world's last hour, replayed as router probes.

In production every client measures its round trip to its serving region and to the region
pre-allocated for it, and reports both to the router. The demo has no clients, so it replays
the simulated world instead: for each user of the routing config in force, each telemetry
interval of the world's last hour becomes one probe towards the current region and one towards
the pre-allocated region, their latencies drawn from the same physical latency model the world
uses (distance from the user's position at that interval, seeded jitter). The router decides,
migrates through its executor, and exports what it measured for ``feedback_collect``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from core.latency import LatencyModel, great_circle_km
from core.regions import load_regions
from core.settings import Settings

BATCH_PROBES = 2_000
# The regions' load when the probes are drawn: half their capacity (the latency model's
# reference point, where congestion adds exactly ``latency.congestion_ms``).
PROBE_UTILISATION = 0.5


@dataclass(frozen=True)
class ProbeReplay:
    """What the replay sent and what the router answered."""

    probes: int
    users: int
    switch_decisions: int


def latest_routing_config(settings: Settings) -> Path | None:
    """The newest routing config a ``predict_and_provision`` run wrote, if any."""
    found = sorted(
        (settings.serving_dir / "plans").glob("*/routing_config.json"),
        key=lambda path: path.stat().st_mtime,
    )
    return found[-1] if found else None


def build_probes(
    telemetry: Path,
    config: dict,
    end: datetime,
    settings: Settings,
    hours: float = 1.0,
) -> list[dict]:
    """Probes of the config's users over the ``hours`` before ``end``, in time order."""
    users = {a["user_id"]: a for a in config["users"]}
    if not users:
        return []
    start = pd.Timestamp(end) - timedelta(hours=hours)
    table = ds.dataset(telemetry, format="parquet").to_table(
        columns=["user_id", "event_timestamp", "lat", "lon"],
        filter=(ds.field("event_timestamp") >= start) & (ds.field("event_timestamp") < end),
    )
    rows = table.to_pandas()
    # Intervals without a position (no GPS fix, no geolocatable IP) give no probe.
    known = rows["lat"].notna() & rows["lon"].notna()
    rows = rows[known & rows["user_id"].isin(users)].sort_values(["event_timestamp", "user_id"])
    if rows.empty:
        return []
    catalogue = load_regions(settings.regions_file)
    model = LatencyModel(settings.latency)
    rng = np.random.default_rng(settings.demo.seed)
    region_lat = np.array([r.lat for r in catalogue])
    region_lon = np.array([r.lon for r in catalogue])
    current = rows["user_id"].map(lambda u: users[u]["current_region"]).to_numpy()
    target = rows["user_id"].map(lambda u: users[u]["region"]).to_numpy()
    probes: list[dict] = []
    # Every interval probes the current region, and the pre-allocated one where it differs.
    for codes, wanted in ((current, np.ones(len(rows), bool)), (target, target != current)):
        index = catalogue.indices(codes)
        distance = great_circle_km(rows["lat"].to_numpy(), rows["lon"].to_numpy(),
                                   region_lat[index], region_lon[index])  # fmt: skip
        latency = model.sample_ms(distance, PROBE_UTILISATION, rng)
        for user, region, stamp, ms in zip(
            rows["user_id"][wanted], codes[wanted], rows["event_timestamp"][wanted],
            latency[wanted], strict=True,
        ):  # fmt: skip
            probes.append({"user_id": user, "region": str(region),
                           "latency_ms": round(float(ms), 3),
                           "measured_at": pd.Timestamp(stamp).isoformat()})  # fmt: skip
    probes.sort(key=lambda p: (p["measured_at"], p["user_id"], p["region"]))
    return probes


def replay_probes(url: str, probes: list[dict]) -> ProbeReplay:
    """POST ``probes`` to the router in batches; count the switchovers it decided."""
    switches = 0
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for first in range(0, len(probes), BATCH_PROBES):
            response = client.post(
                "/v1/probes", json={"probes": probes[first : first + BATCH_PROBES]}
            )
            response.raise_for_status()
            decisions = response.json()["decisions"]
            switches += sum(1 for d in decisions if d["action"] == "switch")
    return ProbeReplay(len(probes), len({p["user_id"] for p in probes}), switches)
