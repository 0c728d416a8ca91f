"""Ingest of telemetry batches: the library behind the ``telemetry_ingest`` DAG.

A *batch* is a Parquet file or dataset folder dropped into ``Settings.landing_dir``. Each batch
is identified by a fingerprint of its bytes, and every output is keyed by that fingerprint, so a
batch processed twice (a retried or killed task) leaves exactly one copy of everything:

- ``ingest/telemetry/batch=<id>/``  the accepted rows (the raw offline store);
- ``ingest/quarantine/batch=<id>/`` the rejected rows, each with its ``reasons``;
- ``ingest/reports/batch=<id>.json`` the gate's report of an accepted batch;
- ``ingest/rejected/batch=<id>/``   the gate's output for a batch rejected as a whole (its
  report and every row with its reasons; none of its rows enter the store; the landing file
  itself is left untouched);
- ``ingest/batches/<id>.json``      the record of the decision, written last: a batch without
  a record is not ingested yet, whatever partial outputs a killed run left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds

from core.settings import Settings, get_settings

FINGERPRINT_CHARS = 20


@dataclass(frozen=True)
class BatchResult:
    """What happened to one batch; serialisable for XCom and for the batch record."""

    batch_id: str
    source: str
    status: str  # "accepted" | "rejected"
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    reason: str | None = None
    first_event: str | None = None
    last_event: str | None = None

    def to_dict(self) -> dict:
        """A plain dict (JSON- and XCom-friendly)."""
        return asdict(self)


class BatchesRejectedError(RuntimeError):
    """One or more batches were rejected as a whole; the message lists them with reasons."""


def batch_fingerprint(path: Path) -> str:
    """Content hash of a batch file or folder: same bytes, same id, whatever its name."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def _records_dir(settings: Settings) -> Path:
    return settings.ingest_dir / "batches"


def _record_path(batch_id: str, settings: Settings) -> Path:
    return _records_dir(settings) / f"{batch_id}.json"


def _landing_items(landing: Path) -> list[Path]:
    """Batches waiting in the landing folder; names starting with '.' or '_' are in flight."""
    if not landing.is_dir():
        return []
    return sorted(
        item
        for item in landing.iterdir()
        if not item.name.startswith((".", "_"))
        and (item.is_dir() or item.suffix == ".parquet")
    )


def find_new_batches(settings: Settings | None = None) -> list[str]:
    """Paths of landed batches that have no ingest record yet, oldest name first.

    The sensor calls this every minute; a landed item whose name, size and modification time
    match one already recorded is not hashed again.
    """
    settings = settings or get_settings()
    seen = _seen_index(settings)
    new = []
    for item in _landing_items(settings.landing_dir):
        known = seen.get(_stat_key(item))
        if known is not None and _record_path(known, settings).exists():
            continue
        if not _record_path(batch_fingerprint(item), settings).exists():
            new.append(str(item))
    return new


def _stat_key(path: Path) -> str:
    """Name, total size and newest modification time of a batch file or folder."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    stats = [f.stat() for f in files]
    size = sum(st.st_size for st in stats)
    newest = max((st.st_mtime_ns for st in stats), default=0)
    return f"{path.resolve()}|{size}|{newest}"


def _seen_path(settings: Settings) -> Path:
    return settings.ingest_dir / "seen.json"


def _seen_index(settings: Settings) -> dict[str, str]:
    """Landed items already fingerprinted: stat key -> batch id (a cache, safe to delete)."""
    path = _seen_path(settings)
    return json.loads(path.read_text()) if path.exists() else {}


def _remember(source: Path, batch_id: str, settings: Settings) -> None:
    """Add ``source`` to the stat-key cache, atomically."""
    if not source.exists():
        return
    index = _seen_index(settings)
    index[_stat_key(source)] = batch_id
    path = _seen_path(settings)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, path)


def read_record(batch_id: str, settings: Settings | None = None) -> BatchResult | None:
    """The recorded decision for a batch, or None when it was never ingested."""
    path = _record_path(batch_id, settings or get_settings())
    return BatchResult(**json.loads(path.read_text())) if path.exists() else None


def ingest_batch(
    path: str | Path,
    max_bad_fraction: float | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> BatchResult:
    """Validate one batch and file its rows: accepted to the store, rejected to quarantine.

    Idempotent: a batch that already has a record returns that record untouched.
    """
    from features.validation import BatchRejected, validate_batch

    settings = settings or get_settings()
    path = Path(path)
    batch_id = batch_fingerprint(path)
    recorded = read_record(batch_id, settings)
    if recorded is not None:
        return recorded

    work = settings.ingest_dir / "work" / batch_id
    shutil.rmtree(work, ignore_errors=True)
    try:
        report = validate_batch(path, work, max_bad_fraction=max_bad_fraction, now=now)
    except BatchRejected as exc:
        _replace_dir(work, settings.ingest_dir / "rejected" / f"batch={batch_id}")
        result = BatchResult(
            batch_id=batch_id,
            source=str(path),
            status="rejected",
            rows_in=int(getattr(exc.report, "rows_in", 0) or 0),
            rows_valid=0,
            rows_quarantined=int(getattr(exc.report, "rows_quarantined", 0) or 0),
            reason=str(exc),
        )
        return _write_record(result, settings)

    _replace_dir(work / "valid", _accepted_dir(settings) / f"batch={batch_id}")
    _replace_dir(work / "quarantine", settings.ingest_dir / "quarantine" / f"batch={batch_id}")
    reports = settings.ingest_dir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    shutil.copy2(work / "report.json", reports / f"batch={batch_id}.json")
    first, last = _event_span(_accepted_dir(settings) / f"batch={batch_id}")
    shutil.rmtree(work, ignore_errors=True)
    result = BatchResult(
        batch_id=batch_id,
        source=str(path),
        status="accepted",
        rows_in=report.rows_in,
        rows_valid=report.rows_valid,
        rows_quarantined=report.rows_quarantined,
        first_event=first,
        last_event=last,
    )
    return _write_record(result, settings)


def _accepted_dir(settings: Settings) -> Path:
    return settings.ingest_dir / "telemetry"


def _replace_dir(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, replacing what a killed earlier attempt left there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    if source.exists():
        os.replace(source, target)
    else:
        target.mkdir()


def _event_span(folder: Path) -> tuple[str | None, str | None]:
    """First and last event timestamp (ISO) of a telemetry folder, None when it is empty."""
    if not any(folder.glob("*.parquet")):
        return None, None
    stamps = ds.dataset(folder, format="parquet").to_table(columns=["event_timestamp"])
    series = stamps.column("event_timestamp").to_pandas()
    if series.empty:
        return None, None
    return series.min().isoformat(), series.max().isoformat()


def _write_record(result: BatchResult, settings: Settings) -> BatchResult:
    """Write the batch record atomically: the last step, which marks the batch as done."""
    target = _record_path(result.batch_id, settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=2))
    os.replace(tmp, target)
    _remember(Path(result.source), result.batch_id, settings)
    return result


def accepted_telemetry(
    start: datetime | None = None,
    end: datetime | None = None,
    users: list[str] | None = None,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """Accepted telemetry rows in ``[start, end)`` (optionally for some users) from all batches.

    A (user, timestamp) present in several batches is kept once: the copy from the batch whose
    record was written first wins, so later re-sends cannot rewrite history silently.
    """
    from core.schema import ENTITY_KEY, conform, empty_frame

    settings = settings or get_settings()
    root = _accepted_dir(settings)
    folders = _batches_in_ingest_order(settings)
    if not folders:
        return empty_frame()
    files = [part for b in folders for part in sorted((root / f"batch={b}").glob("*.parquet"))]
    condition = None
    ts = ds.field("event_timestamp")
    for part in (
        ts >= pd.Timestamp(start) if start is not None else None,
        ts < pd.Timestamp(end) if end is not None else None,
        ds.field("user_id").isin(users) if users is not None else None,
    ):
        if part is not None:
            condition = part if condition is None else condition & part
    # to_table keeps the files' order, so keep="first" keeps the earliest batch's copy.
    table = ds.dataset(files, format="parquet").to_table(filter=condition)
    frame = conform(table.to_pandas()).drop_duplicates(subset=list(ENTITY_KEY), keep="first")
    return frame.sort_values(list(ENTITY_KEY), kind="stable").reset_index(drop=True)


def _batches_in_ingest_order(settings: Settings) -> list[str]:
    """Ids of accepted batches with data, ordered by when their record was written."""
    records = sorted(_records_dir(settings).glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    ids = []
    for record in records:
        result = BatchResult(**json.loads(record.read_text()))
        folder = _accepted_dir(settings) / f"batch={result.batch_id}"
        if result.status == "accepted" and any(folder.glob("*.parquet")):
            ids.append(result.batch_id)
    return ids


def affected_window(results: list[dict]) -> tuple[datetime, datetime] | None:
    """The whole hours touched by the accepted batches among ``results``: [start, end)."""
    accepted = [r for r in results if r["status"] == "accepted" and r["first_event"]]
    if not accepted:
        return None
    first = min(pd.Timestamp(r["first_event"]) for r in accepted).floor("h")
    last = max(pd.Timestamp(r["last_event"]) for r in accepted).floor("h") + timedelta(hours=1)
    return first.to_pydatetime(), last.to_pydatetime()


def raise_for_rejections(results: list[dict]) -> None:
    """Fail loudly, after the good batches went through, if any batch was rejected whole."""
    rejected = [r for r in results if r["status"] == "rejected"]
    if rejected:
        lines = [f"{r['source']} (batch {r['batch_id']}): {r['reason']}" for r in rejected]
        raise BatchesRejectedError(f"{len(rejected)} batch(es) rejected:\n" + "\n".join(lines))


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def refresh_features(results: list[dict], settings: Settings | None = None) -> dict:
    """Re-aggregate the hours the accepted batches touched into the Feast offline tables.

    Hours are recomputed from *all* accepted rows in them (a batch may complete an hour that
    an earlier batch began); profiles are recomputed from the affected users' whole history.
    Writes are upserts, so a re-run gives the same tables. Returns the window (ISO strings).
    """
    from core.regions import load_regions
    from features.aggregate import hourly_user_features, region_status, user_profiles
    from features.store import write_offline

    settings = settings or get_settings()
    window = affected_window(results)
    if window is None:
        return {"start": None, "end": None, "users": 0, "hourly_rows": 0}
    start, end = window
    telemetry = accepted_telemetry(start, end, settings=settings)
    users = sorted(telemetry["user_id"].unique())
    catalogue = load_regions(settings.regions_file)
    hourly = hourly_user_features(telemetry, catalogue)
    profiles = user_profiles(accepted_telemetry(users=users, settings=settings), catalogue)
    hour_ends = pd.date_range(start + timedelta(hours=1), end, freq="h")
    status = region_status(catalogue, hour_ends, seed=settings.seed)
    write_offline(
        {"user_hourly": hourly, "user_profile": profiles, "region_status": status}, settings
    )
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "users": len(users),
        "hourly_rows": len(hourly),
    }


def materialize_features(
    window: dict, now: datetime | None = None, settings: Settings | None = None
) -> dict:
    """Load the refreshed window into the online store, never past ``now``.

    ``now`` is the run's logical "now" (Airflow's ``run_after``), so a backfill materialises
    what was known then, and an end in the future never stalls later runs.
    """
    from features.store import apply_definitions, feature_store, materialize_window

    if window.get("start") is None:
        return {**window, "materialized": False}
    store = feature_store(settings)
    apply_definitions(store)
    end = min(pd.Timestamp(window["end"]), pd.Timestamp(now or utc_now()))
    materialize_window(store, pd.Timestamp(window["start"]).to_pydatetime(), end.to_pydatetime())
    return {**window, "end": end.isoformat(), "materialized": True}
