"""The training run's figures: forecast against actual for a few users, and p50/p90 calibration."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from core.schema import RESOURCE_COLUMNS
from training.forecast import Forecast
from training.panel import Panel


def forecast_vs_actual(
    panel: Panel, origin: int, forecast: Forecast, users: list[int], context_hours: int = 48
) -> Figure:
    """Per user (rows) and resource (columns): the recent actuals, then p50 and p90 vs actual."""
    horizon = forecast.p50.shape[1]
    first = max(0, origin - context_hours)
    hours = np.arange(first, origin + horizon) - origin
    ahead = np.arange(1, horizon + 1) - 1
    fig, axes = plt.subplots(
        len(users), len(RESOURCE_COLUMNS), figsize=(16, 3 * len(users)), squeeze=False
    )
    for row, user in enumerate(users):
        for k, resource in enumerate(RESOURCE_COLUMNS):
            ax = axes[row, k]
            ax.plot(hours, panel.values[user, first : origin + horizon, k], color="black", lw=1)
            ax.plot(ahead, forecast.p50[user, :, k], color="tab:blue", label="p50")
            ax.fill_between(ahead, forecast.p50[user, :, k], forecast.p90[user, :, k], alpha=0.3)
            ax.axvline(-0.5, color="grey", ls=":")
            ax.set_title(f"{panel.series_ids[user]} · {resource}", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def calibration(coverage: dict[str, dict[float, float]]) -> Figure:
    """Observed share of actuals at or below each quantile forecast, against its nominal level."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="ideal")
    for resource, observed in coverage.items():
        levels = sorted(observed)
        ax.plot(levels, [observed[q] for q in levels], marker="o", label=resource)
    ax.set_xlabel("nominal quantile")
    ax.set_ylabel("observed coverage on the holdout")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
