"""The demo's client stand-in: the world's last hour as probes to the current and target regions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from core.latency import LatencyModel, great_circle_km
from core.regions import load_regions
from core.settings import get_settings
from prewarm.demo_probes import build_probes

END = datetime(2026, 1, 19, tzinfo=UTC)


def _telemetry(folder: Path, catalogue) -> Path:
    """Three users, 5-minute intervals over two hours; one interval has no position."""
    near, far = catalogue.regions[0], catalogue.regions[-1]
    stamps = [END - timedelta(minutes=5 * k) for k in range(1, 25)]
    rows = []
    for user, (lat, lon) in {"u1": (near.lat, near.lon), "u2": (far.lat, far.lon),
                             "u3": (near.lat, near.lon)}.items():  # fmt: skip
        for stamp in stamps:
            rows.append({"user_id": user, "event_timestamp": stamp, "lat": lat, "lon": lon})
    rows[0]["lat"] = np.nan  # u1's last interval: no GPS fix, no IP position
    folder.mkdir()
    pd.DataFrame(rows).to_parquet(folder / "part-0.parquet")
    return folder


def test_probes_cover_the_last_hour_of_configured_users_towards_both_regions(
    tmp_path: Path,
) -> None:
    settings = get_settings()
    catalogue = load_regions(settings.regions_file)
    near, far = catalogue.regions[0].code, catalogue.regions[-1].code
    config = {"users": [
        {"user_id": "u1", "current_region": near, "region": far},  # pre-allocated elsewhere
        {"user_id": "u2", "current_region": far, "region": far},  # stays
    ]}  # u3 is not in the config: its client is not asked  # fmt: skip
    probes = build_probes(_telemetry(tmp_path / "t", catalogue), config, END, settings, hours=1)

    per_user = pd.DataFrame(probes).groupby(["user_id", "region"]).size().to_dict()
    # 12 intervals in the hour; u1 lost one to the missing position.
    assert per_user == {("u1", near): 11, ("u1", far): 11, ("u2", far): 12}
    stamps = [pd.Timestamp(p["measured_at"]) for p in probes]
    assert stamps == sorted(stamps)
    assert all(END - timedelta(hours=1) <= s < END for s in stamps)
    # Latency follows distance: u1 (at the near region) measures the far one as slower, by at
    # least the physical floor of the distance between them.
    u1 = pd.DataFrame([p for p in probes if p["user_id"] == "u1"])
    a, b = catalogue[near], catalogue[far]
    floor = LatencyModel(settings.latency).floor_ms(great_circle_km(a.lat, a.lon, b.lat, b.lon))
    gap = u1[u1.region == far].latency_ms.min() - u1[u1.region == near].latency_ms.max()
    assert gap > float(floor) * 0.5
