"""Small synthetic hourly panels for the training tests: daily cycles, noise and regions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.schema import RESOURCE_COLUMNS
from training.panel import Panel

START = pd.Timestamp("2026-01-05", tz="UTC")  # a Monday, 00:00


def make_panel(
    values: np.ndarray, region: np.ndarray | None = None, start: pd.Timestamp = START
) -> Panel:
    """A panel over ``values`` (n, T, 4) starting at ``start``, series named s0, s1, ..."""
    n, hours, _ = values.shape
    ids = tuple(f"s{i}" for i in range(n))
    static = pd.DataFrame(
        {"role": ["unknown"] * n, "home_region": ["unknown"] * n},
        index=pd.Index(ids, name="series_id"),
    )
    times = pd.date_range(start, periods=hours, freq="h")
    return Panel(ids, times, values.astype(np.float32), region, static)


def daily_pattern(n: int, days: int, seed: int = 0) -> np.ndarray:
    """(n, days·24, 4) strictly daily-periodic demand: each series and resource its own shape."""
    rng = np.random.default_rng(seed)
    hour = np.arange(days * 24) % 24
    level = rng.uniform(1.0, 10.0, size=(n, 1, len(RESOURCE_COLUMNS)))
    phase = rng.uniform(0, 24, size=(n, 1, len(RESOURCE_COLUMNS)))
    cycle = 1.0 + 0.8 * np.sin(2 * np.pi * (hour[None, :, None] - phase) / 24)
    return level * cycle


def noisy_daily_panel(n: int = 6, days: int = 21, noise: float = 0.1, seed: int = 0) -> Panel:
    """Daily cycles plus multiplicative Gaussian noise of relative size ``noise``."""
    rng = np.random.default_rng(seed + 1)
    clean = daily_pattern(n, days, seed)
    noisy = clean * (1.0 + noise * rng.standard_normal(clean.shape))
    return make_panel(np.maximum(noisy, 0.0))


# LSTM overrides small enough for tests that train end to end in seconds.
SMALL = dict(
    encoder_length=48,
    hidden_size=16,
    head_hidden_size=32,
    embedding_dim=4,
    batch_size=64,
    samples_per_epoch=512,
    validation_hours=24,
    seed=0,
)
