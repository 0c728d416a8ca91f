"""Hourly panels built from telemetry frames and dataset folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.io import write_telemetry_part
from core.regions import load_regions
from core.schema import RESOURCE_COLUMNS, conform
from core.settings import get_settings
from training.panel import panel_from_telemetry

T0 = pd.Timestamp("2026-01-05 08:00", tz="UTC")
EAST, WEST = "aws-us-east-1", "aws-us-west-2"


def rows(
    user: str, hour: int, region: str | None, cpu: np.ndarray, role: str = "analyst"
) -> pd.DataFrame:
    """Twelve 5-minute telemetry rows of ``user`` in hour ``hour`` after T0, at ``region``."""
    steps = len(cpu)
    catalogue = load_regions()
    lat, lon = (catalogue[region].lat, catalogue[region].lon) if region else (np.nan, np.nan)
    return pd.DataFrame(
        {
            "user_id": user,
            "event_timestamp": T0 + pd.Timedelta(hours=hour) + pd.to_timedelta(
                np.arange(steps) * 5, unit="min"
            ),
            "role": role,
            "app": "ide",
            "session_active": True,
            "data_access_count": 1,
            "lat": lat,
            "lon": lon,
            "geo_source": "gps" if region else None,
            "client_ip": pd.Series([None] * steps, dtype="string"),
            "serving_region": EAST,
            "latency_ms": 10.0,
            "cpu_cores": cpu,
            "ram_gb": 2.0,
            "storage_iops": 100.0,
            "network_mbps": 5.0,
        }
    )


def two_users() -> pd.DataFrame:
    """u1: hours 0, 1 and 3 (none in hour 2), moving east -> west in hour 1; u2: no position."""
    cpu = np.arange(1.0, 13.0)
    frames = [
        rows("u1", 0, EAST, cpu),
        pd.concat([rows("u1", 1, EAST, cpu[:6]), rows("u1", 1, WEST, cpu[6:])]).assign(
            event_timestamp=T0 + pd.Timedelta(hours=1) + pd.to_timedelta(np.arange(12) * 5, "min")
        ),
        rows("u1", 3, WEST, cpu),
        *(rows("u2", hour, None, np.full(12, 2.0), role="sales") for hour in range(4)),
    ]
    return conform(pd.concat(frames, ignore_index=True))


def test_hourly_means_sit_on_a_regular_grid_of_hour_starts() -> None:
    panel = panel_from_telemetry(two_users())
    assert panel.series_ids == ("u1", "u2")
    assert list(panel.times) == [T0 + pd.Timedelta(hours=h) for h in range(4)]
    assert panel.values.dtype == np.float32
    assert panel.values.shape == (2, 4, len(RESOURCE_COLUMNS))
    cpu = RESOURCE_COLUMNS.index("cpu_cores")
    assert panel.values[0, 0, cpu] == pytest.approx(6.5)  # mean of 1..12
    assert np.isnan(panel.values[0, 2]).all()  # no telemetry: missing, not zero
    np.testing.assert_allclose(panel.values[1, :, cpu], 2.0)


def test_region_is_the_catalogue_index_of_the_last_position_of_the_hour() -> None:
    panel = panel_from_telemetry(two_users())
    catalogue = load_regions()
    east, west = catalogue.index(EAST), catalogue.index(WEST)
    assert panel.region is not None and panel.region.dtype == np.int16
    assert panel.region[0].tolist() == [east, west, -1, west]
    assert panel.region[1].tolist() == [-1, -1, -1, -1]  # no position


def test_sources_without_any_position_have_no_region() -> None:
    frame = two_users()
    frame[["lat", "lon"]] = np.nan
    frame["geo_source"] = pd.Series([None] * len(frame), dtype="string")
    assert panel_from_telemetry(frame).region is None


def test_static_holds_role_and_home_region_per_series() -> None:
    static = panel_from_telemetry(two_users()).static
    assert list(static.index) == ["u1", "u2"]
    assert static.loc["u1", "role"] == "analyst" and static.loc["u2", "role"] == "sales"
    assert static.loc["u2", "home_region"] == EAST  # no position: the usual serving region


def test_a_dataset_folder_read_in_user_batches_gives_the_same_panel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = two_users()
    write_telemetry_part(frame[frame["user_id"] == "u2"], tmp_path / "ds", 0)
    write_telemetry_part(frame[frame["user_id"] == "u1"], tmp_path / "ds", 1)
    monkeypatch.setenv("PREWARM_BACKTEST__USERS_PER_BATCH", "1")
    get_settings.cache_clear()

    from_disk = panel_from_telemetry(tmp_path / "ds")
    in_memory = panel_from_telemetry(frame)
    assert from_disk.series_ids == in_memory.series_ids
    assert from_disk.times.equals(in_memory.times)
    np.testing.assert_array_equal(from_disk.values, in_memory.values)
    np.testing.assert_array_equal(from_disk.region, in_memory.region)
    pd.testing.assert_frame_equal(from_disk.static, in_memory.static)


def test_head_and_window_slice_hours_of_every_series() -> None:
    panel = panel_from_telemetry(two_users())
    head = panel.head(2)
    assert head.n_hours == 2 and head.times[-1] == T0 + pd.Timedelta(hours=1)
    np.testing.assert_array_equal(head.values, panel.values[:, :2])
    window = panel.window(1, 3)
    assert list(window.times) == list(panel.times[1:3])
    np.testing.assert_array_equal(window.region, panel.region[:, 1:3])
    with pytest.raises(ValueError, match="outside"):
        panel.window(2, 9)


def test_an_empty_source_is_refused() -> None:
    with pytest.raises(ValueError, match="no rows"):
        panel_from_telemetry(two_users().iloc[:0])
