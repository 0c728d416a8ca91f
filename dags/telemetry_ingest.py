"""DAG ``telemetry_ingest``: new telemetry batches → validated → offline store → features → online.

Thin by design: every task calls one function of ``features.ingest`` (tested without Airflow);
heavy imports happen inside the tasks, never at parse time.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, PokeReturnValue, dag, task

# Consumed by predict_and_provision (same URI, same Asset).
FEATURES = Asset("prewarm://features/hourly", group="prewarm")

DOC = """
### telemetry_ingest

Hourly, and whenever new batches land in `$PREWARM_HOME/landing/` (a sensor waits up to the
hour for them; with none it skips the run instead of failing it).

1. **wait_for_batches** — lists landing files/folders whose content fingerprint has no ingest
   record yet.
2. **ingest_batch** (mapped, one per batch) — the great-expectations gate
   (`prewarm validate`): valid rows go to the offline store, rejected rows to quarantine with
   their reasons; a batch rejected as a whole (structure, empty, unreadable, too many bad
   rows) is recorded with its reason and none of it enters the store. Re-running a batch is
   idempotent (its fingerprint keys every output).
3. **refresh_features** — re-aggregates the hours the accepted batches touched into the Feast
   offline tables (hourly user aggregates, location, latency, profiles, region status).
4. **materialize** — `materialize(start, end)` for exactly that window, never past now;
   emits the `prewarm://features/hourly` Asset that `predict_and_provision` listens to.
5. **check_rejections** — fails the run (after the good batches went through) if any batch
   was rejected, so the rejection is visible in the UI; the reasons are in the task log and in
   `$PREWARM_HOME/ingest/rejected/`.

Params (manual runs): `max_bad_fraction`, `materialize_online`.
"""

DEFAULT_ARGS = {"owner": "prewarm", "retries": 2, "retry_delay": timedelta(minutes=2)}


@dag(
    dag_id="telemetry_ingest",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["prewarm", "features", "ingest"],
    doc_md=DOC,
    params={
        "max_bad_fraction": Param(
            0.05,
            type="number",
            minimum=0,
            maximum=1,
            description="Reject a batch as a whole above this share of bad rows.",
        ),
        "materialize_online": Param(
            True, type="boolean", description="Push the refreshed window to the online store."
        ),
    },
)
def telemetry_ingest() -> None:
    @task.sensor(poke_interval=60, timeout=55 * 60, mode="reschedule", soft_fail=True)
    def wait_for_batches() -> PokeReturnValue:
        from features.ingest import find_new_batches

        batches = find_new_batches()
        return PokeReturnValue(is_done=bool(batches), xcom_value=batches)

    @task(max_active_tis_per_dagrun=2)
    def ingest_batch(path: str, params: dict | None = None) -> dict:
        from features.ingest import ingest_batch as run

        return run(path, max_bad_fraction=params["max_bad_fraction"]).to_dict()

    @task
    def refresh_features(results: list[dict]) -> dict:
        from features.ingest import refresh_features as run

        return run(list(results))

    @task(outlets=[FEATURES])
    def materialize(window: dict, params: dict | None = None, **context) -> dict:
        from features.ingest import materialize_features

        if not params["materialize_online"]:
            return {"skipped": True, **window}
        return materialize_features(window, now=context["dag_run"].run_after)

    @task
    def check_rejections(results: list[dict]) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        from features.ingest import BatchesRejectedError, raise_for_rejections

        try:
            raise_for_rejections(list(results))
        except BatchesRejectedError as exc:  # deterministic: retrying cannot help
            raise AirflowFailException(str(exc)) from exc

    batches = wait_for_batches()
    results = ingest_batch.expand(path=batches)
    window = refresh_features(results)
    materialize(window)
    check_rejections(results)


telemetry_ingest()
