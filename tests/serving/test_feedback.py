"""The feedback loop without Airflow: export, ingest, realised error and drift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from core.settings import FeedbackSettings, Settings
from serving.feedback import MEASUREMENTS_FILE, done_dir, find_feedback_batches, quarantine_dir
from serving.feedback_drift import decide_drift, record_drift_decision
from serving.feedback_error import demand_error, realised_error, reservation_error
from serving.feedback_export import export_router_feedback
from serving.feedback_ingest import ingest_feedback_batches
from serving.provisioning.ledger import Budget, Ledger, NewReservation, idempotency_key
from serving.provisioning.provider import ResourceSpec
from serving.router.models import Probe
from serving.router.service import RouterService
from serving.router.sqlite_store import SqliteRouterStore
from tests.serving.router.conftest import EAST, WEST, allocation, config

NOW = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)


def probe(user: str, region: str, latency: float, at: datetime) -> Probe:
    return Probe(
        user_id=user, region=region, latency_ms=latency, throughput_mbps=80.0,
        cpu_utilisation=0.4, measured_at=at,
    )  # fmt: skip


def router_with_probes(settings: Settings, probes: list[Probe]) -> RouterService:
    """A router on SQLite under the test's home with a config for u1 and u2 and some probes."""
    store = SqliteRouterStore(settings.serving_dir / settings.router.sqlite_file, 10)
    service = RouterService(store, settings, clock=lambda: NOW)
    service.push_config(config(1, allocation("u1"), allocation("u2")))
    service.handle_probes(probes)
    return service


@pytest.fixture
def settings(isolated_home: Path) -> Settings:
    return Settings(home=isolated_home)


def test_export_writes_only_what_changed(settings: Settings) -> None:
    at = NOW - timedelta(minutes=5)
    service = router_with_probes(
        settings,
        [
            probe("u1", WEST, 30.0, at),
            probe("u1", EAST, 90.0, at),
            probe("u2", WEST, 200.0, at),
        ],
    )
    assert find_feedback_batches(settings) == []
    (settings.serving_dir / "feedback" / "incoming" / ".killed.tmp").mkdir(parents=True)
    first = export_router_feedback(settings, NOW, service.store)
    assert first is not None and [str(first)] == find_feedback_batches(settings)
    assert not (settings.serving_dir / "feedback" / "incoming" / ".killed.tmp").exists()
    rows = pd.read_parquet(first / MEASUREMENTS_FILE)
    assert sorted(zip(rows["user_id"], rows["region"], strict=True)) == [
        ("u1", EAST), ("u1", WEST), ("u2", WEST)
    ]  # fmt: skip
    assert rows.set_index(["user_id", "region"]).loc[("u1", WEST), "latency_ms"] == 30.0

    assert export_router_feedback(settings, NOW + timedelta(minutes=1), service.store) is None

    service.handle_probes([probe("u2", WEST, 40.0, NOW)])
    second = export_router_feedback(settings, NOW + timedelta(minutes=2), service.store)
    assert second is not None and second != first
    assert set(pd.read_parquet(second / MEASUREMENTS_FILE)["user_id"]) == {"u2"}


def test_ingest_writes_features_quarantines_bad_rows_and_is_idempotent(settings: Settings) -> None:
    from features.store import feature_store, online_features, repo_path

    at = NOW - timedelta(minutes=5)
    service = router_with_probes(
        settings, [probe("u1", WEST, 30.0, at), probe("u2", WEST, 200.0, at)]
    )
    batch = export_router_feedback(settings, NOW, service.store)
    rows = pd.read_parquet(batch / MEASUREMENTS_FILE)
    bad = rows.iloc[[0]].assign(user_id="u3", region="mars-1", latency_ms=-1.0)
    pd.concat([rows, bad], ignore_index=True).to_parquet(batch / MEASUREMENTS_FILE)

    report = ingest_feedback_batches([str(batch)], settings, NOW)
    assert report["rows_in"] == 3 == report["rows_valid"] + report["rows_quarantined"]
    assert report["rows_quarantined"] == 1 and report["users_written"] == 2
    quarantined = pd.read_parquet(quarantine_dir(settings) / f"{batch.name}.parquet")
    assert "region is not in the catalogue" in quarantined["reasons"].item()
    assert "latency_ms" in quarantined["reasons"].item()
    assert not batch.exists() and (done_dir(settings) / batch.name).is_dir()

    offline_path = repo_path(settings) / "offline" / "router_feedback.parquet"
    offline = pd.read_parquet(offline_path).set_index("user_id")
    assert offline.loc["u2", "feedback_latency_ms"] == 200.0
    assert offline.loc["u2", "feedback_slo_violation_share"] == 1.0
    assert offline.loc["u1", "feedback_slo_violation_share"] == 0.0
    online = online_features(feature_store(settings), ["u1"], at=NOW).iloc[0]
    assert online["feedback_latency_ms"] == pytest.approx(30.0)

    again = ingest_feedback_batches([str(batch)], settings, NOW)
    assert again["rows_in"] == 3
    assert len(pd.read_parquet(offline_path)) == 2


def test_a_batch_without_its_columns_is_rejected_whole(settings: Settings) -> None:
    folder = settings.serving_dir / "feedback" / "incoming" / "broken"
    folder.mkdir(parents=True)
    pd.DataFrame({"user_id": ["u1"]}).to_parquet(folder / MEASUREMENTS_FILE)
    pd.DataFrame({"intent_id": []}).to_parquet(folder / "switchovers.parquet")
    report = ingest_feedback_batches([str(folder)], settings, NOW)
    assert report["rejected"] and "lack columns" in report["rejected"][0]["reason"]
    assert (settings.serving_dir / "feedback" / "rejected" / "broken").is_dir()


def hold(ledger: Ledger, user: str, used: bool) -> None:
    """A warm reservation of ``user`` that is then used (active) or expires unused."""
    start = NOW - timedelta(hours=3)
    admission = ledger.admit(
        NewReservation(
            idempotency_key=idempotency_key(user, EAST, start), user_id=user, region=EAST,
            window_start=start, window_end=start + timedelta(hours=1),
            spec=ResourceSpec(2.0, 4.0, 300.0, 50.0), warm_fraction=0.25,
            warm_usd_per_hour=0.1, full_usd_per_hour=0.4, expires_at=start + timedelta(hours=2),
        ),
        Budget(100.0, 100.0),
        start,
    )  # fmt: skip
    rid = admission.reservation.reservation_id
    for target in ("provisioning", "warm", "active" if used else "expired"):
        ledger.transition(rid, target, NOW - timedelta(hours=1), target)


def test_realised_error_counts_used_and_unused_preallocations(settings: Settings) -> None:
    ledger = Ledger.from_settings(settings)
    for n in range(4):
        hold(ledger, f"u{n}", used=n == 0)
    ledger.dispose()
    errors = realised_error(settings, NOW)
    held = errors["reservations"]
    assert (held["resolved"], held["used"], held["unused"]) == (4, 1, 3)
    assert held["unused_share"] == 0.75
    assert held["wasted_warm_usd"] == pytest.approx(3 * 0.1 * 2)
    assert errors["demand"]["observed_hours"] == 0

    lenient = settings.model_copy(
        update={"feedback": FeedbackSettings(min_resolved_reservations=4)}
    )
    assert decide_drift(errors, lenient)["drift"]
    calm = decide_drift(errors, lenient, {"max_unused_share": 0.8})
    assert not calm["drift"] and calm["checks"]["unused_share"]["status"] == "ok"
    assert decide_drift(errors, settings)["checks"]["unused_share"]["status"] == "insufficient"
    path = record_drift_decision(decide_drift(errors, lenient), errors, settings, NOW)
    assert '"drift": true' in path.read_text()


def test_demand_error_scores_quantiles_against_the_naive() -> None:
    hours = pd.date_range(NOW - timedelta(hours=10), periods=10, freq="h", tz="UTC")
    matched = pd.DataFrame({"user_id": "u1", "hour": hours})
    for r in ("cpu_cores", "ram_gb", "storage_iops", "network_mbps"):
        matched[f"{r}_mean"] = 2.0
        matched[f"{r}_p50"] = 2.5  # MAE 0.5
        matched[f"{r}_p90"] = [1.0] * 5 + [3.0] * 5  # covers half
        matched[f"{r}_naive"] = 3.0  # MAE 1.0
    result = demand_error(matched)
    assert result["observed_hours"] == 10
    assert result["coverage_p90"] == pytest.approx(0.5)
    assert result["error_ratio"] == pytest.approx(0.5)
    assert result["resources"]["cpu_cores"]["pinball_p50"] == pytest.approx(0.25)
    assert (
        reservation_error(pd.DataFrame(columns=["used", "wasted_usd", "probability"]))[
            "unused_share"
        ]
        is None
    )


def test_matched_demand_aligns_predictions_with_the_observed_hours(settings: Settings) -> None:
    from features.aggregate import hourly_user_features
    from features.store import write_offline
    from serving.feedback_error import matched_demand
    from serving.predictions_store import PROFILE_SCHEMA, run_dir, write_json, write_table
    from simulation.world import World, WorldConfig

    telemetry = World(WorldConfig(users=2, days=3, seed=5, start="2026-10-02")).telemetry()
    hourly = hourly_user_features(telemetry)
    write_offline({"user_hourly": hourly}, settings)
    end = pd.Timestamp(hourly["event_timestamp"].max())
    since = end - pd.Timedelta(hours=12)
    # A perfect p50 for the last 12 observed hours: the hour starting at ``event_timestamp - 1h``.
    last = hourly[pd.to_datetime(hourly["event_timestamp"]) > since]
    profiles = pd.DataFrame({
        "user_id": last["user_id"], "step": 1,
        "target_hour": pd.to_datetime(last["event_timestamp"]) - pd.Timedelta(hours=1),
        "cold_start": False, "model_version": "1", "source": "model",
        "feature_timestamp": since,
    })  # fmt: skip
    for r in ("cpu_cores", "ram_gb", "storage_iops", "network_mbps"):
        profiles[f"{r}_p50"] = last[f"{r}_mean"].to_numpy()
        profiles[f"{r}_p90"] = last[f"{r}_mean"].to_numpy() + 1.0
    table = pa.Table.from_pandas(profiles[PROFILE_SCHEMA.names], schema=PROFILE_SCHEMA,
                                 preserve_index=False)  # fmt: skip
    folder = run_dir("run-1", settings)
    write_table(table, folder / "shard=00000" / "profiles.parquet")
    write_json(folder / "run.json", {"run_id": "run-1"})

    matched = matched_demand(settings, since - pd.Timedelta(hours=1), end)
    assert len(matched) == len(last)
    result = demand_error(matched)
    assert result["coverage_p90"] == 1.0
    assert result["resources"]["cpu_cores"]["mae_p50"] == pytest.approx(0.0, abs=1e-9)
    assert result["error_ratio"] == pytest.approx(0.0, abs=1e-9)


def test_export_carries_each_closed_switchover_once(settings: Settings) -> None:
    from serving.feedback import SWITCHOVERS_FILE

    at = NOW - timedelta(minutes=5)
    service = router_with_probes(settings, [probe("u2", WEST, 200.0, at)] * 5)
    (intent,) = service.store.intents("pending")
    assert intent.user_id == "u2" and intent.to_region == EAST
    first = export_router_feedback(settings, NOW, service.store)
    assert pd.read_parquet(first / SWITCHOVERS_FILE).empty  # still open

    service.store.transition_intent(intent.intent_id, "pending", "executing", NOW)
    service.store.transition_intent(intent.intent_id, "executing", "done", NOW, step="release")
    second = export_router_feedback(settings, NOW + timedelta(minutes=1), service.store)
    closed = pd.read_parquet(second / SWITCHOVERS_FILE)
    assert closed[["intent_id", "status"]].values.tolist() == [[intent.intent_id, "done"]]
    assert export_router_feedback(settings, NOW + timedelta(minutes=2), service.store) is None


def test_export_covers_users_probed_outside_any_config(settings: Settings) -> None:
    at = NOW - timedelta(minutes=5)
    service = router_with_probes(
        settings, [probe("u1", WEST, 30.0, at), probe("walk-in", EAST, 55.0, at)]
    )

    batch = export_router_feedback(settings, NOW, service.store)

    rows = pd.read_parquet(batch / MEASUREMENTS_FILE)
    assert sorted(zip(rows["user_id"], rows["region"], strict=True)) == [
        ("u1", WEST), ("walk-in", EAST)
    ]  # fmt: skip
