"""DAG ``predict_and_provision``: @champion forecasts → placement → warm capacity → router config.

Thin by design: every task calls one function of ``serving.predict`` or ``serving.cycle``
(tested without Airflow) and passes the next a small dict through XCom; heavy imports happen
inside the tasks, never at parse time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pendulum
from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    dag,
    get_current_context,
    task,
)

# Emitted by telemetry_ingest when fresh features are online (same URI, same Asset).
FEATURES = Asset("prewarm://features/hourly", group="prewarm")
ROUTER_CONNECTION = "prewarm_router"

DOC = """
### predict_and_provision

Whenever `telemetry_ingest` publishes fresh features (the `prewarm://features/hourly` Asset),
and at least hourly, predicts every active user's next resource profile and location with the
`@champion` model, plans where each user should be served, holds warm capacity there, and tells
the router.

1. **plan_shards** — resolves `@champion`, checks the model and the features are fresh, splits
   the active users into shards. A missing or stale model, or stale features, makes the run
   fall back *loudly* (WARNING, `fallback` in every summary) to the last good predictions or to
   the reactive profile from recent usage.
2. **predict_shard** (mapped, one per shard) — reads the shard's feature windows, forecasts,
   writes the predicted profiles (Parquet) and pushes them to the online store. Idempotent.
3. **finalize** — checks every shard is done; moves the "latest good predictions" pointer.
4. **place** — the Resource Prediction Engine: region and allocation per user and window
   (cost + SLO-violation penalty, capacity-constrained; HiGHS or the heuristic). Writes the
   plan with an explanation per request under `$PREWARM_HOME/serving/plans/<run>/`.
5. **provision** — warm holds for the plan's `preallocate` rows through the Pre-Allocation
   Manager (idempotency keys, budget cap). Skipped in a dry run.
6. **housekeep** — warms what booted, expires holds past their TTL, reconciles ledger and
   provider.
7. **routing_config** — writes the router's config for the current window.
8. **push_router_config** — pushes it to the router's admin API (URL and token from the
   Airflow connection `prewarm_router`: host = URL, password = token). A refused config fails
   the task with the router's reasons; the router keeps the config in force. Skipped in a dry run.

Params (manual runs): `dry_run` (forecast-only: plan, act on nothing), `budget_usd_per_hour`
(cap on warm spend for this run; null: the settings' value).
"""

DEFAULT_ARGS = {"owner": "prewarm", "retries": 2, "retry_delay": timedelta(minutes=1)}


def _cycle() -> tuple[str, datetime]:
    """The Airflow run id and the cycle's time (``run_after``: asset runs have no interval)."""
    context = get_current_context()
    return context["run_id"], context["dag_run"].run_after


@dag(
    dag_id="predict_and_provision",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("30 * * * *", timezone="UTC"), assets=[FEATURES]
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["prewarm", "serving", "provisioning", "router"],
    doc_md=DOC,
    params={
        "dry_run": Param(
            False, type="boolean", description="Forecast-only: write the plan, act on nothing."
        ),
        "budget_usd_per_hour": Param(
            None,
            type=["null", "number"],
            minimum=0,
            description="Cap on the hourly price of all warm holds; null: the settings' value.",
        ),
    },
)
def predict_and_provision() -> None:
    @task
    def plan_shards() -> list[dict]:
        from serving.cycle import cycle_id
        from serving.predict import plan_shards as run

        run_id, now = _cycle()
        return run(cycle_id(run_id), now)

    @task(max_active_tis_per_dagrun=4)
    def predict_shard(shard: dict) -> dict:
        from serving.predict import predict_shard as run

        _, now = _cycle()
        return run(shard, shard["run_id"], now)

    @task(trigger_rule="none_failed")  # no active user: no shard, still a (recorded) run
    def finalize(shards: list[dict]) -> dict:
        from serving.cycle import cycle_id
        from serving.predict import finalize as run

        run_id, now = _cycle()
        return run(cycle_id(run_id), now)

    @task
    def place(predictions: dict) -> dict:
        from serving.cycle import place as run

        run_id, now = _cycle()
        return run(run_id, now)

    @task
    def provision(plan: dict, params: dict | None = None) -> dict:
        from serving.cycle import provision as run

        run_id, now = _cycle()
        return run(run_id, now, params["dry_run"], params["budget_usd_per_hour"])

    @task(trigger_rule="none_failed")
    def housekeep(provisioned: dict, params: dict | None = None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from serving.cycle import housekeep as run

        if params["dry_run"]:
            raise AirflowSkipException("dry run: nothing is expired or reconciled")
        _, now = _cycle()
        return run(now)

    @task(trigger_rule="none_failed")
    def routing_config(provisioned: dict) -> dict:
        from serving.cycle import routing_config as run

        run_id, now = _cycle()
        return run(run_id, now)

    @task(retries=3, retry_delay=timedelta(seconds=30))
    def push_router_config(config: dict, params: dict | None = None) -> dict:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from serving.cycle import push_routing_config, router_url
        from serving.router.client import PushRejectedError

        if params["dry_run"]:
            raise AirflowSkipException("dry run: the router keeps its config")
        connection = BaseHook.get_connection(ROUTER_CONNECTION)
        url = router_url(connection.host, connection.port, connection.schema)
        try:
            return push_routing_config(config["path"], url, connection.password or "")
        except PushRejectedError as refused:
            raise AirflowFailException(str(refused)) from refused

    shards = plan_shards()
    predicted = predict_shard.expand(shard=shards)
    plan = place(finalize(predicted))
    provisioned = provision(plan)
    housekeep(provisioned)
    push_router_config(routing_config(provisioned))


predict_and_provision()
