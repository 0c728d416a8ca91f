"""The feedback loop: what the router measured flows back as features and as realised error.

The pieces, in the order data moves through them (one module each):

- ``serving.feedback_export`` — the router's background loop snapshots its per-user smoothed
  measurements (latency, throughput, CPU per region) and the switchovers closed since the
  last export into a batch folder under :func:`incoming_dir`.
- ``serving.feedback_ingest`` — the ``feedback_collect`` DAG validates each batch (bad rows to
  :func:`quarantine_dir` with their reasons), writes the ``router_feedback`` features offline
  and online, and moves the batch to :func:`done_dir`.
- ``serving.feedback_error`` — the realised error of what drove the pre-allocations: were the
  reservations used, and how did the predicted p50/p90 fare on the hours now observed.
- ``serving.feedback_drift`` — compares those figures with the thresholds of
  ``settings.feedback``, records the decision under :func:`drift_dir`; on drift the DAG emits
  the ``prewarm://feedback/drift`` Asset that triggers ``nightly_retrain``.

Layout under ``settings.serving_dir / "feedback"``::

    incoming/<batch>/measurements.parquet   one row per (user, region) the router measured
    incoming/<batch>/switchovers.parquet    switchover intents closed since the last export
    done/<batch>/...                        the same, plus report.json, once ingested
    rejected/<batch>/...                    a batch unusable as a whole, plus report.json
    quarantine/<batch>.parquet              rejected rows with a ``reasons`` column
    drift/<stamp>.json                      every drift decision with its figures
    export_state.json                       what the last export saw (so unchanged is skipped)

A batch folder is built under a hidden temporary name and renamed into place, so a reader
never sees half a batch.
"""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings

MEASUREMENTS_FILE = "measurements.parquet"
SWITCHOVERS_FILE = "switchovers.parquet"
REPORT_FILE = "report.json"


def feedback_dir(settings: Settings) -> Path:
    """Root of the feedback loop's files: ``$PREWARM_HOME/serving/feedback``."""
    return settings.serving_dir / "feedback"


def incoming_dir(settings: Settings) -> Path:
    """Where router exports wait to be ingested."""
    return feedback_dir(settings) / "incoming"


def done_dir(settings: Settings) -> Path:
    """Where ingested batches are kept, each with its report."""
    return feedback_dir(settings) / "done"


def rejected_dir(settings: Settings) -> Path:
    """Where batches unusable as a whole are kept, each with the reason."""
    return feedback_dir(settings) / "rejected"


def quarantine_dir(settings: Settings) -> Path:
    """Rejected rows of ingested batches, with their reasons."""
    return feedback_dir(settings) / "quarantine"


def drift_dir(settings: Settings) -> Path:
    """One JSON record per drift decision."""
    return feedback_dir(settings) / "drift"


def find_feedback_batches(settings: Settings) -> list[str]:
    """Paths of the complete batches waiting in the incoming folder, oldest name first."""
    folder = incoming_dir(settings)
    if not folder.is_dir():
        return []
    return [
        str(path)
        for path in sorted(folder.iterdir())
        if path.is_dir() and not path.name.startswith(".")
    ]
