"""What every forecaster promises: fit on a history, then forecast the hours right after it.

The backtest and batch prediction talk to baselines and the LSTM only through
:class:`Forecaster`; a forecaster is given a :class:`~training.panel.Panel` that ends at the
forecast origin, so it cannot see anything after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from training.panel import Panel

# Hours in a day: the season of "same hour, previous day".
DAY = 24


@dataclass
class Forecast:
    """Forecast of ``n`` series for the ``H`` hours after the origin, per resource.

    ``p50`` and ``p90`` have shape (n, H, 4) in the panel's resource order; ``region_proba``
    (n, H, n_regions) is a probability over the region catalogue per hour, or None when the
    forecaster does not predict location.
    """

    p50: np.ndarray
    p90: np.ndarray
    region_proba: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.p50.shape != self.p90.shape or self.p50.ndim != 3:
            raise ValueError(f"p50 {self.p50.shape} and p90 {self.p90.shape} must be (n, H, 4)")
        if self.region_proba is not None and self.region_proba.shape[:2] != self.p50.shape[:2]:
            raise ValueError(
                f"region_proba {self.region_proba.shape} does not match p50 {self.p50.shape}"
            )


@runtime_checkable
class Forecaster(Protocol):
    """A model that forecasts every series of a panel from its history alone."""

    name: str

    def fit(self, history: Panel) -> None:
        """Learn from ``history`` (all data before the forecast origin, nothing after)."""
        ...

    def predict(self, history: Panel, horizon: int) -> Forecast:
        """Forecast the ``horizon`` hours right after ``history``'s last hour."""
        ...
