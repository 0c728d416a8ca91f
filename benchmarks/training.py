"""Nightly-retrain scale: the LSTM fitted on 2,000 simulated users × 30 days, read from Feast.

The world's telemetry is aggregated into a scratch Feast offline store (what the ingest DAG
does, timed apart as ``offline_store_seconds``); the retrain then reads its panel point in time
through the ``training`` feature service (``training.feature_panel``) and fits the LSTM. Its
references, measured in the same run:

- Feast's own ``get_historical_features`` (file offline store) on a sample of entity rows,
  against our point-in-time join of the same features on the same rows (``join_speedup``);
- the training throughput of a plain ``torch.nn.LSTM`` of the reference size (2 layers,
  hidden 64) stepping through the same 168 hourly steps with the same batch size.

The issue's bound: the retrain for this size finishes within 15 minutes.

``region_travel`` scores the region head against persistence ("stays where they are": the last
known region) on a separate world of travellers: fitted once, forecasting 24 h from each of the
last three midnights, top-1 accuracy over hours with a known region, counted three ways: hours
of users away at the forecast *origin* (a forecast made during travel: the subset chosen on
what is known when forecasting), all hours, and hours where the user is still away at the
*target* hour. The last one selects on the outcome: a trip that ended within the horizon is
left out, so persistence is right there by construction unless the user moved on, and every
predicted return counts only as an error; it is reported to show what a forecaster that does
predict returns gives up on trips that go on.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch

USERS = 2_000
DAYS = 30
SEED = 5
# Entity rows of the Feast comparison: the last SAMPLE_HOURS hour ends of SAMPLE_USERS users.
SAMPLE_USERS = 100
SAMPLE_HOURS = 24
# The travel world of region_travel: users, days, seed, share of travellers.
TRAVEL_WORLD = (300, 28, 11, 0.5)


def run(users: int = USERS, days: int = DAYS) -> dict[str, Any]:
    """Time simulate → offline store → Feast panel → LSTM fit, and the two references."""
    from core.settings import get_settings
    from features.store import feature_store
    from simulation.world import simulate
    from training.feature_panel import panel_from_feature_store
    from training.lstm import LstmForecaster

    settings = get_settings()
    with tempfile.TemporaryDirectory(prefix="prewarm-bench-training-") as tmp:
        scratch = settings.model_copy(update={"home": Path(tmp) / "home"})
        simulate(users=users, days=days, seed=SEED, out=Path(tmp) / "telemetry")
        started = time.perf_counter()
        hourly_rows = _stock_offline_store(Path(tmp) / "telemetry", scratch)
        offline_s = time.perf_counter() - started
        store = feature_store(scratch)
        started = time.perf_counter()
        panel = panel_from_feature_store(store, days)
        panel_s = time.perf_counter() - started
        join = _join_against_feast(store, panel.series_ids, panel.times[-1])
    forecaster = LstmForecaster(settings)
    forecaster.fit(panel)
    lstm = settings.lstm
    samples = lstm.samples_per_epoch * (forecaster.epochs_trained or 0)
    reference = _plain_lstm_samples_per_s(lstm.batch_size, lstm.hidden_size, lstm.num_layers)
    samples_per_s = samples / forecaster.fit_seconds
    grid_rows = panel.n_series * panel.n_hours
    return {
        "users": users,
        "days": days,
        "offline_store_seconds": round(offline_s, 1),
        "hourly_rows": hourly_rows,
        "panel_source": "feast offline store, feature service 'training' (point in time)",
        "panel_seconds": round(panel_s, 1),
        "panel_rows_per_s": round(grid_rows / panel_s),
        **join,
        "fit_seconds": round(forecaster.fit_seconds, 1),
        "epochs_trained": forecaster.epochs_trained,
        "samples_per_s": round(samples_per_s),
        "torch_lstm_reference_samples_per_s": round(reference),
        "ratio_to_reference": round(samples_per_s / reference, 2),
        "retrain_seconds": round(panel_s + forecaster.fit_seconds, 1),
        "bound_seconds": 15 * 60,
        "threads": lstm.threads,
        "region_travel": _region_during_travel(),
    }


def _stock_offline_store(telemetry: Path, settings) -> int:
    """Aggregate a telemetry dataset, a few hundred users at a time, into the offline store."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from core.schema import COLUMN_NAMES
    from features.aggregate import USER_KEY, hourly_user_features, user_profiles
    from features.store import apply_definitions, feature_store, write_offline

    apply_definitions(feature_store(settings))
    dataset = ds.dataset(telemetry, format="parquet")
    users = pc.unique(dataset.to_table(columns=[USER_KEY])[USER_KEY]).to_pylist()
    size = settings.backtest.users_per_batch
    hourly, profiles = [], []
    for first in range(0, len(users), size):
        condition = pc.field(USER_KEY).isin(users[first : first + size])
        frame = dataset.to_table(columns=list(COLUMN_NAMES), filter=condition).to_pandas()
        hourly.append(hourly_user_features(frame))
        profiles.append(user_profiles(frame))
    tables = {"user_hourly": pd.concat(hourly), "user_profile": pd.concat(profiles)}
    write_offline(tables, settings)
    return len(tables["user_hourly"])


def _join_against_feast(store, users: tuple[str, ...], last_hour: pd.Timestamp) -> dict[str, Any]:
    """Rows/s of Feast's get_historical_features and of our join, same rows and features."""
    from features.aggregate import TIMESTAMP, USER_KEY
    from training.feature_panel import point_in_time_join, view_tables

    ends = pd.date_range(end=last_hour + pd.Timedelta(hours=1), periods=SAMPLE_HOURS, freq="h")
    chosen = list(users[:SAMPLE_USERS])
    entities = pd.DataFrame(
        [(user, end) for user in chosen for end in ends], columns=[USER_KEY, TIMESTAMP]
    )
    refs = [f"{table.view}:{name}" for table in view_tables(store) for name in table.features]
    started = time.perf_counter()
    with warnings.catch_warnings():
        # Feast's internal joins mix string dtypes of the key; the values are the same.
        warnings.filterwarnings("ignore", message="Merging dataframes with merge column")
        feast = store.get_historical_features(entity_df=entities, features=refs).to_df()
    feast_s = time.perf_counter() - started
    started = time.perf_counter()
    ours = point_in_time_join(store, entities)
    ours_s = time.perf_counter() - started
    if len(feast) != len(ours):
        raise RuntimeError(f"Feast returned {len(feast)} rows, our join {len(ours)}")
    return {
        "join_sample_rows": len(entities),
        "join_sample_features": len(refs),
        "feast_historical_rows_per_s": round(len(entities) / feast_s),
        "pit_join_rows_per_s": round(len(entities) / ours_s),
        "join_speedup": round(feast_s / ours_s, 1),
    }


def _region_during_travel(horizon: int = 24, origins: int = 3) -> dict[str, Any]:
    """Top-1 region accuracy of the LSTM and of persistence on TRAVEL_WORLD (module docstring)."""
    import numpy as np

    from simulation.world import World, WorldConfig
    from training.lstm import LstmForecaster
    from training.panel import panel_from_telemetry

    users, days, seed, share = TRAVEL_WORLD
    world = World(WorldConfig(users=users, days=days, seed=seed, traveller_share=share))
    panel = panel_from_telemetry(world.telemetry())
    truth = world.truth()
    per_hour = truth.travelling.shape[1] // panel.n_hours
    away = truth.travelling[:, per_hour - 1 :: per_hour]  # away at the end of each hour
    starts = [panel.n_hours - k * horizon for k in range(origins, 0, -1)]
    model = LstmForecaster(horizon=horizon)
    model.fit(panel.head(starts[0]))
    counts: dict[str, list[int]] = {}
    for origin in starts:
        predicted = model.predict(panel.head(origin), horizon).region_proba.argmax(-1)
        actual = panel.region[:, origin : origin + horizon]
        known = actual >= 0
        past = panel.region[:, :origin]
        last_at = np.where(past >= 0, np.arange(origin), -1).max(axis=1)
        stay = np.where(last_at >= 0, past[np.arange(panel.n_series), last_at.clip(0)], -1)
        subsets = {
            "away_at_target_hour": away[:, origin : origin + horizon] & known,
            "away_at_origin": away[:, origin - 1 : origin] & known,
            "all_hours": known,
        }
        for name, hours in subsets.items():
            tally = counts.setdefault(name, [0, 0, 0])
            tally[0] += int(np.sum((predicted == actual) & hours))
            tally[1] += int(np.sum((stay[:, None] == actual) & hours))
            tally[2] += int(hours.sum())
    return {
        "world": dict(zip(("users", "days", "seed", "traveller_share"), TRAVEL_WORLD, strict=True)),
        **{
            name: {"lstm_top1": round(hit / n, 4), "stay_top1": round(stay / n, 4), "hours": n}
            for name, (hit, stay, n) in counts.items()
        },
    }


def _plain_lstm_samples_per_s(batch: int, hidden: int, layers: int, steps: int = 20) -> float:
    """Training samples/s of a plain hourly nn.LSTM (168 steps, 24 inputs) with an MSE head."""
    from core.settings import get_settings

    torch.manual_seed(0)
    previous = torch.get_num_threads()
    torch.set_num_threads(get_settings().lstm.threads)
    try:
        model = torch.nn.LSTM(24, hidden, num_layers=layers, batch_first=True)
        head = torch.nn.Linear(hidden, 24 * 4 * 2)
        optimiser = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=1e-3)
        inputs, target = torch.randn(batch, 168, 24), torch.randn(batch, 24 * 4 * 2)
        started = time.perf_counter()
        for _ in range(steps):
            optimiser.zero_grad()
            output, _ = model(inputs)
            loss = torch.nn.functional.mse_loss(head(output[:, -1]), target)
            loss.backward()
            optimiser.step()
        return steps * batch / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
