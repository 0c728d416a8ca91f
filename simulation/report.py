"""``report.html`` of a closed-loop evaluation: the plots a reviewer wants, in one file.

- violation minutes (total, avoidable, latency, demand) and cost per policy;
- a timeline of the user who travelled most: the region nearest their true position, where each
  policy served them, where the predictive policy decided they should be, and the switchovers;
- that user's CPU demand against each policy's allocation (the predictive one is sized on the
  LSTM's forecast);
- warm capacity held over time per region, for every policy that holds any.

The figures are PNGs embedded in the page (no files beside it, nothing fetched when opened).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never a window, whatever the environment says
import matplotlib.pyplot as plt
import numpy as np

from core.latency import great_circle_km
from simulation.eval_policy import PolicyContext
from simulation.eval_record import WorldRecord
from simulation.eval_trace import PolicyTrace

REPORT_FILE = "report.html"
TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("slo_violation_minutes", "SLO-violation min"),
    ("unavoidable_violation_minutes", "unavoidable min"),
    ("demand_violation_minutes", "demand min"),
    ("unmet_demand_fraction", "unmet demand"),
    ("cost_usd", "cost USD"),
    ("served_resource_hours", "served vCPU-h"),
    ("idle_warm_resource_hours", "idle warm vCPU-h"),
    ("migrations", "migrations"),
    ("p95_latency_ms", "p95 latency ms"),
)
POLICY_COLOURS = {"static": "#7f7f7f", "reactive": "#d62728", "predictive": "#1f77b4",
                  "oracle": "#2ca02c"}  # fmt: skip


def write_report(
    results: Mapping,
    traces: Mapping[str, PolicyTrace],
    record: WorldRecord,
    context: PolicyContext,
    out: Path,
) -> Path:
    """Write ``out/report.html`` for ``results`` and the policies' ``traces``; its path."""
    user = most_travelled_user(record, context)
    sections = [
        ("Violations and cost per policy", _figure(_plot_outcomes, results["policies"])),
        (
            f"A travelling user ({context.user_ids[user]}): where they were and were served",
            _figure(_plot_timeline, traces, record, context, user),
        ),
        (
            f"Demand and allocation of {context.user_ids[user]} (vCPU)",
            _figure(_plot_demand, traces, record, context, user),
        ),
        ("Warm capacity held per region (vCPU)", _figure(_plot_warm, traces, context)),
    ]
    page = _page(results, sections)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path


def nearest_regions(record: WorldRecord, context: PolicyContext, user: int) -> np.ndarray:
    """The catalogue region nearest ``user``'s TRUE position at every evaluation step."""
    first, catalogue = context.first_step, context.catalogue
    lat, lon = record.true_lat[user, first:], record.true_lon[user, first:]
    distance = great_circle_km(lat[:, None], lon[:, None], catalogue.lat[None], catalogue.lon[None])
    return np.argmin(distance, axis=1)


def most_travelled_user(record: WorldRecord, context: PolicyContext) -> int:
    """The user whose true position is nearest a region other than home for the most steps."""
    first, catalogue = context.first_step, context.catalogue
    lat, lon = record.true_lat[:, first:], record.true_lon[:, first:]
    home = context.home_region
    home_km = great_circle_km(lat, lon, catalogue.lat[home][:, None], catalogue.lon[home][:, None])
    away = np.zeros(record.n_users, np.int64)
    for region in range(len(catalogue)):
        km = great_circle_km(lat, lon, catalogue.lat[region], catalogue.lon[region])
        away += ((km < home_km) & (home != region)[:, None]).sum(axis=1)
    return int(np.argmax(away))


# ------------------------------------------------------------------------------ the figures


def _plot_outcomes(axes_figure, policies: Mapping[str, Mapping[str, float]]) -> None:
    left, right = axes_figure.subplots(1, 2)
    names = list(policies)
    parts = (
        ("total", lambda m: m["slo_violation_minutes"]),
        ("avoidable", lambda m: m["slo_violation_minutes"]
         - m.get("unavoidable_violation_minutes", 0.0)),
        ("latency", lambda m: m.get("latency_violation_minutes", np.nan)),
        ("demand", lambda m: m.get("demand_violation_minutes", np.nan)),
    )  # fmt: skip
    width = 0.8 / len(parts)
    x = np.arange(len(names))
    for k, (label, value) in enumerate(parts):
        left.bar(x + k * width, [value(policies[n]) for n in names], width, label=label)
    left.set_xticks(x + width * (len(parts) - 1) / 2, names)
    left.set_ylabel("user-minutes")
    left.set_title("SLO-violation minutes")
    left.legend(fontsize="small")
    right.bar(names, [policies[n]["cost_usd"] for n in names],
              color=[POLICY_COLOURS.get(n, "#9467bd") for n in names])  # fmt: skip
    right.set_ylabel("USD")
    right.set_title("cost")


def _plot_timeline(axes_figure, traces, record, context, user: int) -> None:
    axes = axes_figure.subplots()
    hours = _hours(context, record.n_steps - context.first_step)
    true = nearest_regions(record, context, user)
    shown = set(true.tolist())
    axes.step(hours, true, where="post", color="black", linewidth=3, alpha=0.3,
              label="region nearest the true position")  # fmt: skip
    for name, trace in traces.items():
        served = trace.served[user].astype(np.int64)
        shown |= set(served.tolist())
        colour = POLICY_COLOURS.get(name, "#9467bd")
        axes.step(hours, served, where="post", color=colour, linewidth=1.2,
                  label=f"{name}: serving region")  # fmt: skip
        switches = np.flatnonzero(np.diff(served) != 0) + 1
        axes.scatter(hours[switches], served[switches], color=colour, marker="|", s=200)
        if name == "predictive":
            target = trace.target[user].astype(np.int64)
            shown |= set(target.tolist())
            axes.step(hours, target, where="post", color=colour, linestyle=":",
                      label="predictive: decided region (forecast + placement)")  # fmt: skip
    ticks = sorted(r for r in shown if r >= 0)
    axes.set_yticks(ticks, [context.catalogue.codes[r] for r in ticks], fontsize="small")
    axes.set_xlabel("hours since the evaluation started")
    axes.legend(fontsize="small", loc="upper right")


def _plot_demand(axes_figure, traces, record, context, user: int) -> None:
    axes = axes_figure.subplots()
    first = context.first_step
    hours = _hours(context, record.n_steps - first)
    demand = np.where(record.session_active[user, first:], record.demand[user, first:, 0], np.nan)
    axes.plot(hours, demand, color="black", linewidth=1, label="true demand (active intervals)")
    for name, trace in traces.items():
        colour = POLICY_COLOURS.get(name, "#9467bd")
        axes.step(hours, trace.allocation_cpu[user], where="post", linewidth=1, color=colour,
                  label=f"{name}: allocation")  # fmt: skip
    axes.set_xlabel("hours since the evaluation started")
    axes.set_ylabel("vCPU")
    axes.legend(fontsize="small", loc="upper right")


def _plot_warm(axes_figure, traces, context) -> None:
    holding = {name: t for name, t in traces.items() if t.warm_vcpu.any()}
    if not holding:
        axes = axes_figure.subplots()
        axes.text(0.5, 0.5, "no policy held warm capacity", ha="center", va="center")
        axes.set_axis_off()
        return
    grid = axes_figure.subplots(len(holding), 1, sharex=True, squeeze=False)[:, 0]
    for axes, (name, trace) in zip(grid, holding.items(), strict=True):
        per_hour = context.steps_per_hour
        steps = trace.warm_vcpu.shape[1] // per_hour * per_hour
        hourly = trace.warm_vcpu[:, :steps].reshape(len(trace.warm_vcpu), -1, per_hour).mean(2)
        top = np.argsort(hourly.sum(axis=1))[::-1][:6]
        top = [r for r in top if hourly[r].any()]
        rest = np.delete(hourly, top, axis=0).sum(axis=0)
        series = [hourly[r] for r in top] + [rest]
        labels = [context.catalogue.codes[r] for r in top] + ["other regions"]
        axes.stackplot(np.arange(hourly.shape[1]), series, labels=labels)
        axes.set_title(name)
        axes.set_ylabel("vCPU warm")
        axes.legend(fontsize="x-small", loc="upper right")
    grid[-1].set_xlabel("hours since the evaluation started")


def _hours(context: PolicyContext, steps: int) -> np.ndarray:
    return np.arange(steps) / context.steps_per_hour


def _figure(draw, *args) -> str:
    """``draw(figure, *args)`` on a new figure; the PNG as a data URI."""
    figure = plt.figure(figsize=(11, 4.5), layout="constrained")
    try:
        draw(figure, *args)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90)
    finally:
        plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# ------------------------------------------------------------------------------ the page


def _page(results: Mapping, sections: list[tuple[str, str]]) -> str:
    policies = results["policies"]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in TABLE_METRICS)
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>"
        + "".join(f"<td>{_format(metrics.get(key))}</td>" for key, _ in TABLE_METRICS)
        + "</tr>"
        for name, metrics in policies.items()
    )
    figures = "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="{uri}">'
        for title, uri in sections
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>prewarm evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}"
        "</style></head><body><h1>prewarm closed-loop evaluation</h1>"
        "<p>Every policy pays the same boot, copy and scaling delays; minutes are counted "
        "against the true position and demand. Unavoidable minutes: no region meets the SLO "
        "at the user's true position.</p>"
        f"<table><tr><th>policy</th>{head}</tr>{rows}</table>{figures}</body></html>"
    )


def _format(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) < 1:
        return f"{value:.4f}"
    return f"{value:,.0f}"
