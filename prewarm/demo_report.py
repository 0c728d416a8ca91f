"""What `prewarm demo` prints at the end: the DAG runs, the policies table and where to look."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

from core.settings import Settings
from prewarm.demo import DAG_ORDER, DemoSummary

# (results.json key, column title, format)
POLICY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("slo_violation_minutes", "SLO-viol. min", "{:,.0f}"),
    ("unmet_demand_fraction", "unmet", "{:.2%}"),
    ("p95_latency_ms", "p95 ms", "{:.1f}"),
    ("cost_usd", "cost USD", "{:,.0f}"),
    ("idle_warm_resource_hours", "idle warm h", "{:,.0f}"),
    ("migrations", "moves", "{:,.0f}"),
)


def runs_table(summary: DemoSummary) -> Table:
    """One row per DAG: its state (or why it did not run) and its task states."""
    table = Table(title="DAG runs (Airflow on SQLite)")
    table.add_column("DAG", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("tasks")
    ran = {run.dag_id: run for run in summary.runs}
    for dag_id in DAG_ORDER:
        if dag_id in ran:
            states = Counter(ran[dag_id].task_states.values())
            tasks = ", ".join(f"{n} {s}" for s, n in states.items())
            table.add_row(dag_id, ran[dag_id].state, tasks)
        elif dag_id in summary.skipped:
            table.add_row(dag_id, "not run", summary.skipped[dag_id])
        else:
            table.add_row(dag_id, "not reached", "an earlier run failed")
    return table


def policies_table(evaluation: dict) -> Table:
    """Policies × key metrics of a ``prewarm evaluate`` result."""
    table = Table(title="closed-loop evaluation (prewarm evaluate)")
    table.add_column("policy", no_wrap=True)
    for _, title, _ in POLICY_COLUMNS:
        table.add_column(title, justify="right")
    for name, metrics in evaluation["policies"].items():
        table.add_row(name, *(fmt.format(metrics[key]) for key, _, fmt in POLICY_COLUMNS))
    return table


def online_table(sample: list[dict]) -> Table:
    """A few users' features as the online store serves them to prediction."""
    table = Table(title="online features (SQLite online store)")
    for column in sample[0]:
        table.add_column(column)
    for row in sample:
        table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()))
    return table


def print_demo_summary(summary: DemoSummary, settings: Settings, console: Console) -> None:
    """Print the demo's outcome and where to look next."""
    console.print(runs_table(summary))
    for run in summary.runs:
        console.print(f"  log of {run.dag_id}: {run.log}", soft_wrap=True)
    totals = summary.ingest
    console.print(
        f"ingest: {totals['batches']} batch(es), {totals['rows_in']:,} rows in, "
        f"{totals['rows_valid']:,} valid, {totals['rows_quarantined']:,} quarantined, "
        f"{totals['rejected']} rejected"
    )
    if summary.online_sample:
        console.print(online_table(summary.online_sample))
    if summary.probes:
        console.print(
            f"router: {summary.probes['probes']:,} probes from {summary.probes['users']:,} "
            f"users, {summary.probes['switch_decisions']:,} switchover decisions; "
            + ("measurements exported by the router" if summary.probes.get("exported")
               else "the router exported no measurements in time")
        )
    if summary.evaluation is not None:
        console.print(policies_table(summary.evaluation))
    if summary.evaluation_error is not None:
        console.print(f"[bold red]prewarm evaluate failed:[/] {summary.evaluation_error}",
                      soft_wrap=True)  # fmt: skip
    home = settings.home.resolve()
    console.print("[bold]where to look[/]")
    if summary.evaluation_dir is not None:
        console.print(f"  evaluation results: {summary.evaluation_dir.resolve() / 'results.json'}",
                      soft_wrap=True)  # fmt: skip
        report = summary.evaluation_dir / "report.html"
        if report.exists():
            console.print(f"  report: {report.resolve()}", soft_wrap=True)
    console.print(f"  MLflow store: {settings.mlflow_tracking_uri}", soft_wrap=True)
    console.print("  the Airflow and MLflow UIs and the router: [bold]make up[/] "
                  "(Airflow http://127.0.0.1:8080, MLflow http://127.0.0.1:5000)")  # fmt: skip
    console.print(f"  state under {home} (rm -rf it to reset)", soft_wrap=True)
    if summary.seconds:
        console.print("  seconds per stage: " + ", ".join(
            f"{name} {seconds:.0f}" for name, seconds in summary.seconds.items()))  # fmt: skip
