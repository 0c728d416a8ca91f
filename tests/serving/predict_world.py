"""A small simulated world for the batch-prediction tests: feature store, registry, champion.

Building it (simulate, aggregate, materialise, train a tiny LSTM, register it) takes a while,
so it is built once per test module; each test works on its own copy of the home.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd

from core.settings import PredictSettings, Settings
from features.aggregate import hourly_user_features, user_profiles
from features.store import apply_definitions, feature_store, materialize_window, write_offline
from simulation.world import World, WorldConfig
from tests.training.synthetic import SMALL
from training import job, registry
from training.panel import panel_from_telemetry

USERS = 6
DAYS = 10
SEED = 11
HORIZON = 12
# The tiny model's training data ends this long before the newest features.
MODEL_DATA_LAG = timedelta(hours=24)


@dataclass(frozen=True)
class PredictWorld:
    """A home with features (offline and online) and a registered champion model."""

    home: Path
    telemetry: pd.DataFrame
    end: pd.Timestamp  # the end of the newest hour of features
    version: str  # the champion's version

    def settings(self, home: Path, **predict: object) -> Settings:
        """Settings on a fresh copy of this world's home; ``predict`` overrides PredictSettings."""
        shutil.copytree(self.home, home)
        return Settings(home=home, predict=PredictSettings(**predict))


def build_world(home: Path) -> PredictWorld:
    """Simulate, aggregate into the feature store, train and register the champion."""
    settings = Settings(home=home)
    telemetry = World(WorldConfig(users=USERS, days=DAYS, seed=SEED)).telemetry()
    hourly = hourly_user_features(telemetry)
    stock_store(settings, hourly, user_profiles(telemetry))

    panel = panel_from_telemetry(telemetry)
    lag = int(MODEL_DATA_LAG / timedelta(hours=1))
    result = job.train_and_register(
        panel.head(panel.n_hours - lag), horizon=HORIZON, epochs=1, settings=settings, **SMALL
    )
    client = registry.client(settings)
    client.set_registered_model_alias(settings.mlflow.model_name, "champion", result["version"])
    end = hourly["event_timestamp"].max()
    return PredictWorld(home, telemetry, end, str(result["version"]))


def stock_store(settings: Settings, hourly: pd.DataFrame, profiles: pd.DataFrame) -> None:
    """Apply the definitions, write the offline tables and materialise them online."""
    store = feature_store(settings)
    apply_definitions(store)
    write_offline({"user_hourly": hourly, "user_profile": profiles}, settings)
    start = hourly["event_timestamp"].min() - timedelta(hours=1)
    materialize_window(store, start, hourly["event_timestamp"].max() + timedelta(seconds=1))
