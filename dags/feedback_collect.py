"""DAG ``feedback_collect``: router metrics → features (offline + online) → realised error → drift.

Thin by design: every task calls one function of ``serving.feedback_*`` (tested without
Airflow); heavy imports happen inside the tasks, never at parse time.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, PokeReturnValue, dag, get_current_context, task

# Consumed by nightly_retrain (same URI, same Asset).
DRIFT = Asset("prewarm://feedback/drift", group="prewarm")

DOC = """
### feedback_collect

Hourly, and as soon as the router has exported new measurements to
`$PREWARM_HOME/serving/feedback/incoming/` (a sensor waits up to the hour for them; with none
it skips the run instead of failing it).

1. **wait_for_metrics** — lists the complete router feedback batches waiting.
2. **ingest_metrics** — validates each batch (bad rows to `feedback/quarantine/` with their
   reasons; `rows_in == rows_valid + rows_quarantined`), upserts the `router_feedback`
   features into the offline store, pushes them online, and moves the batch to
   `feedback/done/`. A batch unusable as a whole goes to `feedback/rejected/`. Re-runs add no
   duplicate rows.
3. **realised_error** — of the predictions behind the pre-allocations: used vs unused
   reservations (Brier score of the predicted location probability, wasted warm spend), and
   the p50/p90 against the hours now observed (p90 coverage, pinball, MAE vs lag-24 naive).
4. **decide_drift** — compares them with `settings.feedback`'s thresholds (or this run's
   params) and records the decision with its figures in `feedback/drift/`.
5. **emit_drift** — on drift only, emits the `prewarm://feedback/drift` Asset, which triggers
   `nightly_retrain`; without drift it is skipped and emits nothing.

Params (manual runs): `min_coverage_p90`, `max_error_ratio`, `max_unused_share` (null: the
settings' values).
"""

DEFAULT_ARGS = {"owner": "prewarm", "retries": 2, "retry_delay": timedelta(minutes=1)}


def _threshold(description: str, maximum: float | None = None) -> Param:
    bounds = {"maximum": maximum} if maximum is not None else {}
    return Param(None, type=["null", "number"], minimum=0, description=description, **bounds)


def _now():
    return get_current_context()["dag_run"].run_after


@dag(
    dag_id="feedback_collect",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["prewarm", "serving", "feedback"],
    doc_md=DOC,
    params={
        "min_coverage_p90": _threshold("Drift below this p90 coverage; null: settings.", 1),
        "max_error_ratio": _threshold("Drift above this p50-vs-naive MAE ratio; null: settings."),
        "max_unused_share": _threshold("Drift above this unused share; null: settings.", 1),
    },
)
def feedback_collect() -> None:
    @task.sensor(poke_interval=60, timeout=55 * 60, mode="reschedule", soft_fail=True)
    def wait_for_metrics() -> PokeReturnValue:
        from core.settings import get_settings
        from serving.feedback import find_feedback_batches

        batches = find_feedback_batches(get_settings())
        return PokeReturnValue(is_done=bool(batches), xcom_value=batches)

    @task
    def ingest_metrics(batches: list[str]) -> dict:
        from core.settings import get_settings
        from serving.feedback_ingest import ingest_feedback_batches

        return ingest_feedback_batches(list(batches), get_settings(), _now())

    @task
    def realised_error(ingested: dict) -> dict:
        from core.settings import get_settings
        from serving.feedback_error import realised_error as run

        return run(get_settings(), _now())

    @task
    def decide_drift(errors: dict, params: dict | None = None) -> dict:
        from core.settings import get_settings
        from serving.feedback_drift import decide_drift as run
        from serving.feedback_drift import record_drift_decision

        settings = get_settings()
        overrides = {k: params[k] for k in ("min_coverage_p90", "max_error_ratio",
                                            "max_unused_share")}  # fmt: skip
        decision = run(errors, settings, overrides)
        context = get_current_context()
        path = record_drift_decision(decision, errors, settings, _now(), context["run_id"])
        return {**decision, "record": str(path)}

    @task(outlets=[DRIFT])
    def emit_drift(decision: dict, **context) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        if not decision["drift"]:
            raise AirflowSkipException("no drift: " + ", ".join(
                f"{name} {check['status']}" for name, check in decision["checks"].items()
            ))  # fmt: skip
        context["outlet_events"][DRIFT].extra = {
            "reasons": decision["reasons"], "record": decision["record"]
        }  # fmt: skip
        return {"reasons": decision["reasons"]}

    errors = realised_error(ingest_metrics(wait_for_metrics()))
    emit_drift(decide_drift(errors))


feedback_collect()
