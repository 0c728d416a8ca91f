"""The `prewarm` command: one entry point for every job of the project (DESIGN.md section 4).

Each subcommand parses its arguments, calls one library function and prints a short summary.
Errors in the input end with a clear message and exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    help="prewarm: predict where users will be and what they will need; pre-allocate capacity.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)

EXIT_BAD_INPUT = 2


def _fail(message: str) -> typer.Exit:
    """Print ``message`` as an error and return the exit to raise (code 2: bad input)."""
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code=EXIT_BAD_INPUT)


@app.command()
def simulate(
    users: Annotated[int, typer.Option(min=1, help="Number of users.")] = 200,
    days: Annotated[int, typer.Option(min=1, help="Number of days.")] = 7,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 42,
    out: Annotated[Path, typer.Option(help="Output dataset folder (Parquet).")] = Path(
        "var/telemetry"
    ),
    start: Annotated[
        str | None, typer.Option(help="First day, YYYY-MM-DD (UTC); default from settings.")
    ] = None,
) -> None:
    """Simulate a world of users and write its telemetry as a Parquet dataset."""
    from prewarm.progress import progress_bar
    from simulation.world import simulate as run_simulation

    with progress_bar("simulating users") as progress:
        summary = run_simulation(
            users=users, days=days, seed=seed, out=out, start=start, progress=progress
        )
    console.print(
        f"wrote {summary.rows:,} rows for {summary.users:,} users × {summary.days} days "
        f"to {summary.out} in {summary.seconds:.1f} s"
    )


@app.command("import-gwa")
def import_gwa(
    src: Annotated[Path, typer.Argument(help="GWA-T-12 CSV folder/file or Parquet file/folder.")],
    out: Annotated[Path, typer.Option(help="Output telemetry dataset folder.")] = Path(
        "var/gwa"
    ),
) -> None:
    """Import the GWA-T-12 (Bitbrains) trace into the telemetry schema."""
    from features.importers.gwa import GwaFormatError
    from features.importers.gwa import import_gwa as run_import
    from prewarm.progress import progress_bar

    if not src.exists():
        raise _fail(f"{src}: no such file or folder")
    try:
        with progress_bar("importing VMs") as progress:
            summary = run_import(src, out, progress=progress)
    except GwaFormatError as exc:
        raise _fail(str(exc)) from exc
    console.print(
        f"imported {summary.rows_out:,} rows ({summary.vms} VMs, {summary.source_format}) "
        f"to {out}"
    )


@app.command()
def validate(
    input: Annotated[Path, typer.Argument(help="Telemetry Parquet file or dataset folder.")],
    out: Annotated[Path, typer.Option(help="Folder for valid/, quarantine/, report.json.")],
    max_bad_fraction: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Reject the whole batch above this bad share."),
    ] = None,
) -> None:
    """Validate a telemetry batch: valid rows on, bad rows to quarantine with their reasons."""
    from features.validation import BatchRejected, validate_batch

    try:
        report = validate_batch(input, out, max_bad_fraction=max_bad_fraction)
    except BatchRejected as exc:
        raise _fail(f"batch rejected: {exc} (report: {out / 'report.json'})") from exc
    console.print(
        f"{report.rows_in:,} rows in: {report.rows_valid:,} valid, "
        f"{report.rows_quarantined:,} quarantined ({report.rows_per_s:,.0f} rows/s); "
        f"report {out / 'report.json'}"
    )
    for check, count in sorted(report.failed_expectations.items()):
        console.print(f"  {count:>8,}  {check}", soft_wrap=True)


@app.command()
def backtest(
    telemetry: Annotated[Path, typer.Option(help="Telemetry dataset folder (or Parquet file).")],
    out: Annotated[Path, typer.Option(help="Where to write the JSON results.")],
    horizon: Annotated[int, typer.Option(min=1, help="Forecast horizon H, hours.")] = 24,
    folds: Annotated[int, typer.Option(min=1, help="Rolling-origin folds K.")] = 3,
    models: Annotated[
        str, typer.Option(help="Comma-separated models.")
    ] = "seasonal_naive,ets,lightgbm,lstm",
) -> None:
    """Rolling-origin backtest on hourly series: fold k's origin is T − (K − k + 1)·H."""
    from prewarm.progress import progress_bar
    from training.backtest import make_forecasters, run_backtest
    from training.panel import panel_from_telemetry

    if not telemetry.exists():
        raise _fail(f"{telemetry}: no such file or folder")
    names = [m.strip() for m in models.split(",") if m.strip()]
    try:
        forecasters = make_forecasters(names)
    except (ValueError, RuntimeError) as exc:
        raise _fail(str(exc)) from exc
    panel = panel_from_telemetry(telemetry)
    if panel.n_hours <= folds * horizon:
        raise _fail(f"{panel.n_hours} hours of data cannot hold {folds} folds of {horizon} h")
    with progress_bar("backtest (model × fold)") as progress:
        results = run_backtest(panel, horizon, folds, forecasters, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    table = _backtest_table(results)
    console.print(table)


def _backtest_table(results: dict):
    """The headline figures of a backtest, one row per model."""
    from rich.table import Table

    def figure(value) -> str:
        return "—" if value is None else f"{value:.3f}"

    table = Table(title=f"backtest: {results['n_series']} series, H={results['horizon']}, "
                  f"K={results['folds']}")
    for column in ("model", "MASE mean", "sMAPE mean", "pinball p90", "coverage p90",
                   "region top-1", "fit s"):
        table.add_column(column)
    for name, m in results["models"].items():
        table.add_row(
            name, figure(m["mase"]["mean"]), figure(m["smape"]["mean"]),
            figure(m["pinball_p90"]["mean"]), figure(m["coverage_p90"]["mean"]),
            figure(m["region_top1"]), figure(m["fit_seconds"]),
        )  # fmt: skip
    return table


@app.command()
def demo() -> None:
    """Run the main job on the embedded default (SQLite, local files) through the four DAGs.

    Simulates a world, then telemetry_ingest → nightly_retrain → predict_and_provision (with
    a router running) → feedback_collect with Airflow on SQLite, then prewarm evaluate. Size:
    PREWARM_DEMO__USERS, __DAYS, __EPOCHS, __EVAL_DAYS. DAG logs go to files, not the terminal.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from core.settings import get_settings
    from prewarm.demo import DEMO_STAGES, run_demo
    from prewarm.demo_report import print_demo_summary

    settings = get_settings()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console) as bars:
        users = bars.add_task("simulating users", total=None)
        stages = bars.add_task("demo stages", total=len(DEMO_STAGES))
        summary = run_demo(
            settings,
            progress=lambda done, total: bars.update(users, completed=done, total=total),
            step=lambda text: bars.console.print(f"• {text}"),
            stage_done=lambda name: bars.advance(stages),
        )
    print_demo_summary(summary, settings, console)
    if not summary.ok:
        raise typer.Exit(code=1)


@app.command()
def up(
    airflow_port: Annotated[int, typer.Option(help="Port of the Airflow UI / API server.")] = 8080,
    mlflow_port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    router_port: Annotated[int, typer.Option(help="Port of the router.")] = 8765,
    schedules: Annotated[
        bool, typer.Option(help="Let the scheduler start cron runs (off: the UI/API/Assets only).")
    ] = False,
) -> None:
    """Start Airflow, the MLflow UI and the router on localhost, on the demo's home; Ctrl-C stops.

    Airflow (api-server, scheduler, dag-processor, triggerer) uses the same AIRFLOW_HOME and
    SQLite database as `prewarm demo`, so the demo's runs are visible; MLflow serves the
    demo's sqlite:/// store.
    """
    from core.settings import get_settings
    from prewarm.up import run_until_interrupted

    try:
        run_until_interrupted(
            get_settings(), airflow_port, mlflow_port, router_port, console, schedules
        )
    except RuntimeError as exc:
        console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(code=1) from exc


@app.command()
def bench(
    out: Annotated[Path, typer.Option(help="Where to write the JSON results.")],
    only: Annotated[
        str | None, typer.Option(help="Comma-separated benchmark names (default: all).")
    ] = None,
) -> None:
    """Run the benchmarks and write their figures, each beside its same-run reference."""
    from benchmarks import run_benchmarks

    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    try:
        results = run_benchmarks(names, console=console)
    except KeyError as exc:
        raise _fail(str(exc)) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    console.print_json(json.dumps(results))


@app.command()
def evaluate(
    out: Annotated[Path, typer.Option(help="Folder for results.json.")],
    users: Annotated[int, typer.Option(min=1, help="Number of users.")] = 500,
    days: Annotated[int, typer.Option(min=1, help="Days evaluated after the training range.")] = 14,
    seed: Annotated[int, typer.Option(help="Seed of the world: same seed, same results.")] = 42,
    policies: Annotated[
        str, typer.Option(help="Comma-separated policies.")
    ] = "static,reactive,predictive,oracle",
) -> None:
    """Closed-loop evaluation of serving policies on a simulated world (DESIGN.md section 4)."""
    from simulation.evaluate import evaluate as run_evaluation

    names = [n.strip() for n in policies.split(",") if n.strip()]
    try:
        results = run_evaluation(
            users, days, seed, names, out, progress=lambda n: console.print(f"evaluating {n}")
        )
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    console.print_json(json.dumps(results))


router_app = typer.Typer(help="The Dynamic Connection Router service.", no_args_is_help=True)
app.add_typer(router_app, name="router")


@router_app.command("serve")
def router_serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind; default settings.router.host.")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port; default settings.router.port.")
    ] = None,
) -> None:
    """Serve the router API (uvicorn, one worker) and run its migration executor until interrupted.

    The executor (a background thread; off with PREWARM_ROUTER__RUN_MIGRATIONS=false) carries
    out the switchovers the router decides: freeze, copy, verify, start, redirect, release.

    The admin API (POST /v1/config, rollback) needs the bearer token in PREWARM_ROUTER_TOKEN;
    without it the admin endpoints answer 503, and a production router
    (PREWARM_ROUTER__PRODUCTION=true) refuses to start.
    """
    from core.settings import get_settings
    from serving.router.app import RouterStartupError, serve

    settings = get_settings()
    try:
        serve(settings, host or settings.router.host, port or settings.router.port)
    except RouterStartupError as exc:
        raise _fail(str(exc)) from exc


@router_app.command("migrate")
def router_migrate() -> None:
    """Run the migration executor in a process of its own, until SIGTERM or Ctrl-C.

    It reads the router's state (settings.router.state) and carries out the switchovers the
    router decides, while it holds the executor lease: run the router with
    PREWARM_ROUTER__RUN_MIGRATIONS=false to keep migrations off its request path, or keep both
    and this one stands by, taking over when the router's executor stops.
    """
    from serving.router.executor_process import run_executor

    run_executor()


if __name__ == "__main__":
    app()
