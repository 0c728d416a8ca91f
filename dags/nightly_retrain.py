"""DAG ``nightly_retrain``: panel → LSTM → holdout evaluation → MLflow run and version → gate.

Thin by design: every task calls one function of ``training.job`` (tested without Airflow) and
passes the next a small dict (paths, hashes, scores) through XCom; heavy imports happen inside
the tasks, never at parse time.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

# Emitted by feedback_collect when realised forecast error drifts.
DRIFT = Asset("prewarm://feedback/drift", group="prewarm")

DOC = """
### nightly_retrain

Every night at 02:00 UTC, and whenever the feedback loop reports drift (the
`prewarm://feedback/drift` Asset), retrains the LSTM profile forecaster and lets the promotion
gate decide whether it replaces `@champion` in the MLflow registry.

1. **build_dataset** — the hourly panel of the latest `window_days` known at the run's
   `run_after`, joined point in time from the Feast offline store through the `training`
   feature service (or built from the telemetry folder in the `source` param); saved under
   `$PREWARM_HOME/training/datasets/<data hash>.npz`.
2. **train** — fits the LSTM on all but the last `horizon` hours (the holdout), `epochs`
   epochs; saves it under `$PREWARM_HOME/training/models/` with its per-epoch losses.
3. **backtest** — scores the new model, seasonal naive and the current `@champion` on that
   same holdout (mean MASE, p50/p90 coverage per resource).
4. **register** — one MLflow run (params, per-epoch and final metrics, holdout table, figures,
   lineage tags: feature service, data window, data hash, git commit) with the pyfunc model,
   registered as `@challenger`.
5. **gate** — promotes to `@champion` only if the challenger beats the champion by the
   configured margin on the same holdout (the first model must beat seasonal naive); the
   decision and its reason are written on the model version.

Params: `epochs`, `horizon`, `window_days` (null: the settings' values), `source` (null: the
Feast offline store).
"""

DEFAULT_ARGS = {"owner": "prewarm", "retries": 1, "retry_delay": timedelta(minutes=5)}


@dag(
    dag_id="nightly_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"), assets=[DRIFT]
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["prewarm", "training", "mlflow"],
    doc_md=DOC,
    params={
        "epochs": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Training epochs of the LSTM; null: settings.lstm.max_epochs.",
        ),
        "horizon": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=168,
            description="Holdout and forecast hours; null: settings.lstm.horizon.",
        ),
        "window_days": Param(
            None,
            type=["null", "integer"],
            minimum=2,
            description="Days of history the panel covers; null: settings.mlflow.window_days.",
        ),
        "source": Param(
            None,
            type=["null", "string"],
            description="A telemetry folder to train on; null (or empty) for the Feast offline "
            "store.",
        ),
    },
)
def nightly_retrain() -> None:
    @task
    def build_dataset(params: dict | None = None, **context) -> dict:
        from training.job import build_dataset as run

        return run(
            params["source"] or None,
            window_days=params["window_days"],
            end=context["dag_run"].run_after,
        )

    @task(execution_timeout=timedelta(hours=2))
    def train(dataset: dict, params: dict | None = None) -> dict:
        from training.job import train as run

        return run(dataset, horizon=params["horizon"], epochs=params["epochs"])

    @task
    def backtest(dataset: dict, trained: dict) -> dict:
        from training.job import evaluate

        return evaluate(dataset, trained)

    @task
    def register(dataset: dict, trained: dict, evaluation: dict) -> dict:
        from training.job import log_and_register

        return log_and_register(dataset, trained, evaluation)

    @task
    def gate(registered: dict, evaluation: dict) -> dict:
        from training.job import gate as run

        return run(registered, evaluation)

    dataset = build_dataset()
    trained = train(dataset)
    evaluation = backtest(dataset, trained)
    gate(register(dataset, trained, evaluation), evaluation)


nightly_retrain()
