"""The ``@champion`` model for batch prediction: which version, whether to trust it, its forecast.

The plan resolves ``models:/<name>@champion`` to a version once per run, so every shard of the
run loads the same version (``models:/<name>/<version>``) even if the alias moves meanwhile. A
champion is *stale* when the data it was trained on (the ``data_window_end`` lineage tag of its
MLflow run) ended more than ``predict.max_model_data_age_days`` before the newest features.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import mlflow
import pandas as pd

from core.settings import Settings
from serving.predict_features import ShardFeatures
from serving.predict_output import Prediction, profile_table, region_table, top_regions
from training import registry
from training.lstm import LstmForecaster

DATA_END_TAG = "data_window_end"
# Loaded forecasters by (tracking URI, model name, version): a process predicting several
# shards loads each version once.
_LOADED: dict[tuple[str, str, str], LstmForecaster] = {}


@dataclass(frozen=True)
class Champion:
    """The registered champion version and when its training data ended (None: unknown)."""

    version: str
    data_end: pd.Timestamp | None


def champion(settings: Settings) -> Champion | None:
    """The current ``@champion`` version of ``settings.mlflow.model_name``, or None."""
    client = registry.client(settings)
    version = registry.champion(client, settings)
    if version is None:
        return None
    data_end = None
    if version.run_id:
        tag = client.get_run(version.run_id).data.tags.get(DATA_END_TAG)
        data_end = pd.Timestamp(tag).tz_convert("UTC") if tag else None
    return Champion(str(version.version), data_end)


def model_problem(
    current: Champion | None, features_end: pd.Timestamp | None, settings: Settings
) -> str | None:
    """Why the champion cannot be used (missing or stale), or None when it can."""
    if current is None:
        return f"no @champion version of model {settings.mlflow.model_name!r} is registered"
    if current.data_end is None or features_end is None:
        return None
    age = features_end - current.data_end
    limit = pd.Timedelta(days=settings.predict.max_model_data_age_days)
    if age > limit:
        return (
            f"champion v{current.version} is stale: its training data ended {current.data_end}, "
            f"{age / pd.Timedelta(days=1):.1f} days before the newest features "
            f"(max {settings.predict.max_model_data_age_days:g})"
        )
    return None


def load_forecaster(version: str, settings: Settings) -> LstmForecaster:
    """The forecaster of ``models:/<name>/<version>``, loaded through MLflow's pyfunc flavour."""
    uri = settings.mlflow_tracking_uri
    key = (uri, settings.mlflow.model_name, version)
    if key not in _LOADED:
        registry.client(settings)  # creates the SQLite folder of the embedded default
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        model = mlflow.pyfunc.load_model(f"models:/{settings.mlflow.model_name}/{version}")
        forecaster = getattr(model.unwrap_python_model(), "forecaster", None)
        if not isinstance(forecaster, LstmForecaster):
            raise TypeError(f"model version {version} does not wrap an LstmForecaster")
        _LOADED[key] = forecaster
    return _LOADED[key]


def forecast(
    forecaster: LstmForecaster,
    features: ShardFeatures,
    version: str,
    top_k: int,
    stages: dict[str, float] | None = None,
) -> Prediction:
    """The model's profiles (all steps of its horizon) and top-``top_k`` regions per step.

    ``stages`` (optional) receives the seconds spent in the model (``model``: scaling, input
    windows, the network) and in building the tables (``tables``).
    """
    panel = features.panel
    if panel is None:
        return Prediction.empty()
    started = time.perf_counter()
    result = forecaster.predict(panel, forecaster.config.horizon)
    modelled = time.perf_counter()
    profiles = profile_table(
        panel.series_ids,
        panel.times[-1] + pd.Timedelta(hours=1),
        result.p50,
        result.p90,
        forecaster.last_cold_start,
        version,
        features.newest,
        "model",
    )
    regions = Prediction.empty().region_probs
    if result.region_proba is not None:
        indices, chances = top_regions(result.region_proba, top_k)
        regions = region_table(panel.series_ids, indices, chances, forecaster.region_codes)
    if stages is not None:
        stages["model"] = modelled - started
        stages["tables"] = time.perf_counter() - modelled
    return Prediction(profiles, regions)
