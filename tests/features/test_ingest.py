"""Ingest of landed batches: the gate, the offline store, idempotence and the feature refresh."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.settings import get_settings
from features import ingest
from tests.features.test_validation import telemetry_frame

NOW = pd.Timestamp("2026-02-01", tz="UTC").to_pydatetime()


def _land(frame: pd.DataFrame, name: str) -> Path:
    landing = get_settings().landing_dir
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / name
    frame.to_parquet(path)
    return path


def _corrupt_one_row(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[5, "cpu_cores"] = -3.0
    return frame


def test_new_batches_are_found_once_and_filed_by_the_gate() -> None:
    good = _land(_corrupt_one_row(telemetry_frame(users=3, steps=24)), "a.parquet")
    broken = _land(telemetry_frame(users=2, steps=12).drop(columns=["ram_gb"]), "b.parquet")
    assert ingest.find_new_batches() == [str(good), str(broken)]

    accepted = ingest.ingest_batch(good, now=NOW)
    rejected = ingest.ingest_batch(broken, now=NOW)

    assert accepted.status == "accepted"
    assert (accepted.rows_in, accepted.rows_valid, accepted.rows_quarantined) == (72, 71, 1)
    assert rejected.status == "rejected" and "ram_gb" in rejected.reason
    assert ingest.find_new_batches() == []
    stored = ingest.accepted_telemetry()
    assert len(stored) == 71
    assert (stored["cpu_cores"] >= 0).all()
    quarantine = pd.read_parquet(
        get_settings().ingest_dir / "quarantine" / f"batch={accepted.batch_id}"
    )
    assert quarantine["cpu_cores"].tolist() == [-3.0]
    assert "cpu_cores" in quarantine["reasons"].iloc[0]


def test_reingesting_after_a_kill_leaves_no_duplicates() -> None:
    path = _land(telemetry_frame(users=2, steps=24), "a.parquet")
    first = ingest.ingest_batch(path, now=NOW)
    again = ingest.ingest_batch(path, now=NOW)
    assert again == first
    # A run killed after filing the rows but before writing the record re-does the batch.
    (get_settings().ingest_dir / "batches" / f"{first.batch_id}.json").unlink()
    assert ingest.find_new_batches() == [str(path)]
    redone = ingest.ingest_batch(path, now=NOW)
    assert redone.rows_valid == first.rows_valid
    assert len(ingest.accepted_telemetry()) == 48


def test_the_same_rows_resent_in_another_batch_are_kept_once() -> None:
    frame = telemetry_frame(users=2, steps=24)
    ingest.ingest_batch(_land(frame, "a.parquet"), now=NOW)
    ingest.ingest_batch(_land(frame.iloc[::-1], "b.parquet"), now=NOW)
    assert len(ingest.accepted_telemetry()) == 48


def test_refresh_and_materialize_serve_the_batch_online() -> None:
    from features.store import feature_store, online_features

    frame = telemetry_frame(users=3, steps=36)
    result = ingest.ingest_batch(_land(frame, "a.parquet"), now=NOW).to_dict()
    window = ingest.refresh_features([result])
    assert window["users"] == 3 and window["hourly_rows"] == 9
    assert window["start"] == "2026-01-05T00:00:00+00:00"
    assert window["end"] == "2026-01-05T03:00:00+00:00"
    done = ingest.materialize_features(window, now=NOW)
    assert done["materialized"]
    online = online_features(feature_store(), ["user-000", "user-002"])
    assert len(online) == 2
    numeric = online.select_dtypes("number")
    assert numeric.notna().any(axis=None)


def test_rejections_fail_loudly_with_their_reasons() -> None:
    results = [
        {"status": "accepted", "source": "a", "batch_id": "1", "reason": None},
        {"status": "rejected", "source": "b.parquet", "batch_id": "2", "reason": "empty file"},
    ]
    with pytest.raises(ingest.BatchesRejectedError, match=r"b\.parquet.*empty file"):
        ingest.raise_for_rejections(results)
    ingest.raise_for_rejections(results[:1])


def test_recorded_batches_are_not_hashed_again_but_changed_ones_are(monkeypatch) -> None:
    path = _land(telemetry_frame(users=2, steps=24), "a.parquet")
    ingest.ingest_batch(path, now=NOW)

    def no_hashing(_path):
        raise AssertionError("an unchanged, recorded batch was hashed again")

    with monkeypatch.context() as patched:
        patched.setattr(ingest, "batch_fingerprint", no_hashing)
        assert ingest.find_new_batches() == []
    _land(telemetry_frame(users=3, steps=24), "a.parquet")  # same name, new content
    assert ingest.find_new_batches() == [str(path)]
