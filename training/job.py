"""The training job: panel → LSTM → holdout scores → MLflow run → registered version → gate.

The job is five steps, each a function the ``nightly_retrain`` DAG calls as one task and each
passing the next a small JSON-able dict (paths, hashes, scores), never the data itself:

1. :func:`build_dataset` — the hourly panel of the latest ``window_days``, read point in time
   from the Feast offline store through the ``training`` feature service
   (``training.feature_panel``), or else built from a telemetry folder; saved under
   ``$PREWARM_HOME/training/datasets/<data hash>.npz``.
2. :func:`train` — fits the LSTM on all but the last ``horizon`` hours (the holdout) and saves
   it under ``$PREWARM_HOME/training/models/``, with its per-epoch losses.
3. :func:`evaluate` — scores, on that same holdout, the new model (the challenger), the
   seasonal-naive baseline and the current ``@champion`` (loaded from the registry), so the gate
   compares like with like: holdout mean MASE, lower is better.
4. :func:`log_and_register` — one MLflow run: params, per-epoch and final metrics, the holdout
   table (JSON), figures (PNG), lineage tags, the pyfunc model
   (:class:`training.pyfunc.ProfileModel`); then registers it as a new version with the alias
   ``challenger``.
5. :func:`gate` — ``training.registry.decide`` on the holdout scores of step 3, recorded on the
   version the way ``registry.apply_gate`` records it; moves ``@champion`` on promotion.

:func:`train_and_register` runs all five in one process.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from core.regions import load_regions
from core.schema import RESOURCE_COLUMNS
from core.settings import Settings, get_settings
from training import metrics, plots, registry
from training.baselines import SeasonalNaive
from training.epochs import log_history
from training.feature_panel import panel_from_feature_store
from training.forecast import DAY, Forecast
from training.lstm import LstmForecaster
from training.panel import STATIC_COLUMNS, Panel, panel_from_telemetry
from training.pyfunc import ARTIFACT, ProfileModel, pip_requirements, signature_and_example

REPO_ROOT = Path(__file__).resolve().parents[1]
FEATURE_SERVICE = "training"
TRAINING_FILE = "training.json"


# ------------------------------------------------------------------------------ the dataset


def build_dataset(
    source: str | Path | Panel | None = None,
    window_days: int | None = None,
    settings: Settings | None = None,
    end: datetime | None = None,
) -> dict:
    """Build, save and describe the training panel (see step 1 of the module docstring).

    ``source`` is None for the Feast offline store (feature service ``training``), or a
    telemetry folder (or Parquet file), or an hourly panel built already. Only hours that ended
    by ``end`` (default: all) are used, so a backfill sees what was known then. Raises
    ValueError when there is nothing to train on.
    """
    settings = settings or get_settings()
    days = window_days or settings.mlflow.window_days
    service = None
    if isinstance(source, Panel):
        panel, source = source, "panel"
    elif source is not None:
        panel = panel_from_telemetry(Path(source))
    else:
        from features.store import feature_store

        service = FEATURE_SERVICE
        catalogue = load_regions(settings.regions_file)
        store = feature_store(settings)
        panel = panel_from_feature_store(store, days, end, service, catalogue)
        source = f"feast:{settings.feast.project}/{service}"
    panel = _known_by(panel, end)
    panel = panel.window(max(0, panel.n_hours - days * 24), panel.n_hours)
    digest = data_hash(panel)
    path = settings.home / "training" / "datasets" / f"{digest}.npz"
    save_panel(panel, path)
    return {
        "path": str(path),
        "data_hash": digest,
        "source": str(source),
        "feature_service": service,
        "window_start": panel.times[0].isoformat(),
        "window_end": (panel.times[-1] + pd.Timedelta(hours=1)).isoformat(),
        "n_series": panel.n_series,
        "n_hours": panel.n_hours,
    }


def _known_by(panel: Panel, end: datetime | None) -> Panel:
    """The hours of ``panel`` that ended by ``end`` (all of them when ``end`` is None)."""
    if end is None:
        return panel
    end = pd.Timestamp(end)
    end = end.tz_localize("UTC") if end.tzinfo is None else end
    known = int(np.searchsorted(panel.times + timedelta(hours=1), end, "right"))
    if known == 0:
        raise ValueError(f"no hour of the data ended by {end}")
    return panel.head(known)


def data_hash(panel: Panel) -> str:
    """SHA-256 (first 16 hex digits) of the panel's ids, hours, values and regions."""
    digest = hashlib.sha256()
    digest.update("\n".join(panel.series_ids).encode())
    digest.update(panel.times.asi8.tobytes())
    digest.update(np.ascontiguousarray(panel.values).tobytes())
    if panel.region is not None:
        digest.update(np.ascontiguousarray(panel.region).tobytes())
    return digest.hexdigest()[:16]


def save_panel(panel: Panel, path: Path) -> Path:
    """Write a panel to one ``.npz`` file (read back by :func:`load_panel`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "series_ids": np.asarray(panel.series_ids, dtype=str),
        "times": panel.times.asi8,
        "values": panel.values,
        **{c: panel.static[c].to_numpy(dtype=str) for c in STATIC_COLUMNS},
    }
    if panel.region is not None:
        arrays["region"] = panel.region
    with path.open("wb") as handle:
        np.savez(handle, **arrays)
    return path


def load_panel(path: str | Path) -> Panel:
    """The panel written by :func:`save_panel`."""
    with np.load(Path(path)) as data:
        ids = tuple(str(i) for i in data["series_ids"])
        static = pd.DataFrame(
            {c: data[c].astype(object) for c in STATIC_COLUMNS},
            index=pd.Index(ids, name="series_id"),
        )
        return Panel(
            ids,
            pd.DatetimeIndex(data["times"]).tz_localize("UTC"),
            data["values"],
            data["region"] if "region" in data.files else None,
            static,
        )


# ------------------------------------------------------------------------------ training


def train(
    dataset: dict,
    horizon: int | None = None,
    epochs: int | None = None,
    settings: Settings | None = None,
    **overrides: object,
) -> dict:
    """Fit the LSTM on the panel less its last ``horizon`` hours; save it; say where and how.

    ``epochs`` replaces ``settings.lstm.max_epochs``; ``overrides`` replace other LSTM settings.
    """
    settings = settings or get_settings()
    horizon = horizon or settings.lstm.horizon
    panel = load_panel(dataset["path"])
    if epochs is not None:
        overrides["max_epochs"] = epochs
    forecaster = LstmForecaster(settings, **{**overrides, "horizon": horizon})
    forecaster.fit(panel.head(_origin(panel, horizon)))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    folder = settings.home / "training" / "models" / f"{dataset['data_hash']}-{stamp}"
    forecaster.save(folder)
    summary = {
        "model_dir": str(folder),
        "horizon": horizon,
        "epochs_trained": forecaster.epochs_trained,
        "fit_seconds": forecaster.fit_seconds,
        "config": forecaster.config.model_dump(mode="json"),
        "epoch_history": forecaster.epoch_history,
        "calibration": calibration(forecaster),
    }
    (folder / TRAINING_FILE).write_text(json.dumps(summary, indent=1))
    return summary


def calibration(forecaster: LstmForecaster) -> dict[str, float]:
    """What the calibration after training fitted, for the MLflow run: the spread multiplier
    of each quantile but the median (``calibration_spread_q<level>``) and, with a region head,
    the region logits' temperature and bias on staying."""
    levels = sorted(forecaster.config.quantiles)
    median = levels.index(0.5)
    factors = forecaster.spread_factors or []
    out = {
        f"calibration_spread_q{level:g}": float(factors[k if k < median else k - 1])
        for k, level in enumerate(levels)
        if k != median and factors
    }
    module = forecaster.module
    if module is not None and module.region_head is not None:
        temperature, stay_bias = module.region_calibration
        out["calibration_region_temperature"] = temperature
        out["calibration_region_stay_bias"] = stay_bias
    return out


def _origin(panel: Panel, horizon: int) -> int:
    """The holdout starts ``horizon`` hours before the end; the history must cover a day first."""
    origin = panel.n_hours - horizon
    if origin < DAY + 1:
        raise ValueError(
            f"{panel.n_hours} h of data leave too little history before a {horizon} h holdout"
        )
    return origin


# ------------------------------------------------------------------------------ evaluation


def holdout_scores(panel: Panel, origin: int, forecast: Forecast) -> dict:
    """MASE, p50 and p90 coverage per resource (and mean MASE) of ``forecast`` after ``origin``."""
    horizon = forecast.p50.shape[1]
    actual = panel.values[:, origin : origin + horizon].astype(np.float64)
    scale = metrics.seasonal_scale(panel.values[:, :origin])
    per_resource = {
        "mase": _per_resource(metrics.mase(actual, forecast.p50, scale)),
        "coverage_p50": _per_resource(metrics.coverage(actual, forecast.p50)),
        "coverage_p90": _per_resource(metrics.coverage(actual, forecast.p90)),
    }
    known = [v for v in per_resource["mase"].values() if v is not None]
    per_resource["mase_mean"] = float(np.mean(known)) if known else None
    return per_resource


def _per_resource(values: np.ndarray) -> dict[str, float | None]:
    """Mean over series per resource; None where every series is undefined (NaN)."""
    out = {}
    for resource, column in zip(RESOURCE_COLUMNS, values.T, strict=True):
        finite = column[np.isfinite(column)]
        out[resource] = float(finite.mean()) if finite.size else None
    return out


def evaluate(dataset: dict, trained: dict, settings: Settings | None = None) -> dict:
    """Holdout scores of the challenger, seasonal naive and the current champion (if any)."""
    settings = settings or get_settings()
    panel = load_panel(dataset["path"])
    horizon = trained["horizon"]
    origin = _origin(panel, horizon)
    history = panel.head(origin)
    challenger = LstmForecaster.load(Path(trained["model_dir"]), settings)
    naive = SeasonalNaive(settings)
    naive.fit(history)
    return {
        "horizon": horizon,
        "holdout_start": panel.times[origin].isoformat(),
        "n_series": panel.n_series,
        "challenger": holdout_scores(panel, origin, challenger.predict(history, horizon)),
        "seasonal_naive": holdout_scores(panel, origin, naive.predict(history, horizon)),
        "champion": _champion_scores(panel, origin, horizon, settings),
    }


def _champion_scores(panel: Panel, origin: int, horizon: int, settings: Settings) -> dict | None:
    """The current ``@champion`` scored on this holdout, loaded through MLflow; None if none.

    A champion that cannot forecast this far (trained for a shorter horizon) is represented by
    the score stored on its version, and says so in ``source``.
    """
    mlflow_client = registry.client(settings)
    current = registry.champion(mlflow_client, settings)
    if current is None:
        return None
    _use_tracking(settings)
    uri = f"models:/{settings.mlflow.model_name}@{registry.CHAMPION}"
    forecaster = mlflow.pyfunc.load_model(uri).unwrap_python_model().forecaster
    if forecaster.config.horizon < horizon:
        stored = float(current.tags[registry.SCORE_TAG])
        return {"version": current.version, "source": "stored tag", "mase_mean": stored}
    scores = holdout_scores(panel, origin, forecaster.predict(panel.head(origin), horizon))
    return {"version": current.version, "source": "this holdout", **scores}


def _use_tracking(settings: Settings) -> None:
    """Point MLflow's fluent API (tracking and registry) at the configured store."""
    registry.client(settings)  # creates the SQLite folder if needed
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)


# ------------------------------------------------------------------------------ MLflow


def log_and_register(
    dataset: dict, trained: dict, evaluation: dict, settings: Settings | None = None
) -> dict:
    """Log one MLflow run for this training and register its model as the new challenger."""
    settings = settings or get_settings()
    registry.use_experiment(settings)
    panel = load_panel(dataset["path"])
    forecaster = LstmForecaster.load(Path(trained["model_dir"]), settings)
    with mlflow.start_run(run_name=f"retrain-{dataset['data_hash']}") as run:
        mlflow.log_params(
            {
                **{f"lstm.{k}": v for k, v in trained["config"].items()},
                "horizon": trained["horizon"],
                "window_start": dataset["window_start"],
                "window_end": dataset["window_end"],
                "n_series": dataset["n_series"],
            }
        )
        mlflow.set_tags(_lineage(dataset))
        log_history(registry.client(settings), run.info.run_id, trained.get("epoch_history", []))
        mlflow.log_metrics(_flat_metrics(trained, evaluation))
        mlflow.log_dict(evaluation, "holdout.json")
        _log_figures(panel, forecaster, trained["horizon"], evaluation, settings)
        signature, example = signature_and_example(forecaster, panel)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ProfileModel(),
            artifacts={ARTIFACT: trained["model_dir"]},
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
        )
    version = registry.register_challenger(
        registry.client(settings),
        info.model_uri,
        run.info.run_id,
        evaluation["challenger"]["mase_mean"],
        evaluation["seasonal_naive"]["mase_mean"],
        settings,
    )
    return {"run_id": run.info.run_id, "model_uri": info.model_uri, "version": version.version}


def _lineage(dataset: dict) -> dict[str, str]:
    """Where the model's data came from, and which code trained it.

    ``feature_service`` is the Feast feature service the panel was read through, or "none" when
    it was built from a telemetry folder or given as a panel.
    """
    return {
        "feature_service": dataset.get("feature_service") or "none",
        "data_source": dataset["source"],
        "data_window_start": dataset["window_start"],
        "data_window_end": dataset["window_end"],
        "data_hash": dataset["data_hash"],
        "git_commit": git_commit(),
    }


def git_commit() -> str:
    """The checkout's ``HEAD`` commit, or "unknown" outside a git checkout."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def _flat_metrics(trained: dict, evaluation: dict) -> dict[str, float]:
    """Training figures and the holdout scores as MLflow metric names (finite values only)."""
    out = {"fit_seconds": trained["fit_seconds"], "epochs_trained": trained["epochs_trained"]}
    out.update(trained.get("calibration", {}))
    for model in ("challenger", "seasonal_naive", "champion"):
        scores = evaluation.get(model) or {}
        prefix = "holdout" if model == "challenger" else f"holdout_{model}"
        for name, value in scores.items():
            if isinstance(value, dict):
                out.update({f"{prefix}_{name}_{r}": v for r, v in value.items()})
            elif name == "mase_mean":
                out[f"{prefix}_mase_mean"] = value
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def _log_figures(
    panel: Panel, forecaster: LstmForecaster, horizon: int, evaluation: dict, settings: Settings
) -> None:
    """Forecast vs actual for a few users, and the challenger's calibration, as PNG artifacts."""
    import matplotlib.pyplot as plt

    origin = _origin(panel, horizon)
    forecast = forecaster.predict(panel.head(origin), horizon)
    users = np.random.default_rng(settings.seed).choice(
        panel.n_series, size=min(settings.mlflow.plot_users, panel.n_series), replace=False
    )
    figure = plots.forecast_vs_actual(panel, origin, forecast, sorted(users.tolist()))
    mlflow.log_figure(figure, "plots/forecast_vs_actual.png")
    plt.close(figure)
    scores = evaluation["challenger"]
    coverage = {
        r: {0.5: scores["coverage_p50"][r], 0.9: scores["coverage_p90"][r]}
        for r in RESOURCE_COLUMNS
        if scores["coverage_p50"][r] is not None and scores["coverage_p90"][r] is not None
    }
    figure = plots.calibration(coverage)
    mlflow.log_figure(figure, "plots/calibration.png")
    plt.close(figure)


# ------------------------------------------------------------------------------ the gate


def gate(registered: dict, evaluation: dict, settings: Settings | None = None) -> dict:
    """Decide on the registered challenger with the holdout scores of :func:`evaluate`.

    Unlike ``registry.apply_gate``, which compares with the score stored on the champion's
    version (measured on *its* holdout), the champion here was scored on this run's holdout.
    The decision is recorded on the version with the same tags and description.
    """
    settings = settings or get_settings()
    mlflow_client = registry.client(settings)
    name = settings.mlflow.model_name
    champion = evaluation.get("champion")
    decision = registry.decide(
        evaluation["challenger"]["mase_mean"],
        champion["mase_mean"] if champion else None,
        evaluation["seasonal_naive"]["mase_mean"],
        settings.mlflow.promotion_margin,
        champion["version"] if champion else None,
    )
    version = registered["version"]
    outcome = "promoted to champion" if decision.promote else "kept as challenger"
    tags = {
        "gate_decision": outcome,
        "gate_reason": decision.reason,
        "gate_reference": decision.reference_name,
        "gate_reference_score": f"{decision.reference_score:.6f}",
    }
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, value)
    mlflow_client.update_model_version(
        name, version, description=f"Promotion gate: {outcome}. {decision.reason}."
    )
    if decision.promote:
        mlflow_client.set_registered_model_alias(name, registry.CHAMPION, version)
    return {
        "version": version,
        "promoted": decision.promote,
        "decision": outcome,
        "reason": decision.reason,
        "challenger_score": decision.challenger_score,
        "reference": decision.reference_name,
        "reference_score": decision.reference_score,
    }


# ------------------------------------------------------------------------------ all at once


def train_and_register(
    source: str | Path | Panel | None = None,
    horizon: int | None = None,
    epochs: int | None = None,
    settings: Settings | None = None,
    window_days: int | None = None,
    **overrides: object,
) -> dict:
    """Run the whole job; returns run id, version, whether it was promoted, why, and scores.

    ``overrides`` replace single LSTM settings (e.g. ``hidden_size=16``).
    """
    settings = settings or get_settings()
    dataset = build_dataset(source, window_days, settings)
    trained = train(dataset, horizon, epochs, settings, **overrides)
    evaluation = evaluate(dataset, trained, settings)
    registered = log_and_register(dataset, trained, evaluation, settings)
    decision = gate(registered, evaluation, settings)
    return {
        "run_id": registered["run_id"],
        "version": registered["version"],
        "promoted": decision["promoted"],
        "decision": decision["decision"],
        "reason": decision["reason"],
        "scores": {
            "challenger": evaluation["challenger"]["mase_mean"],
            "seasonal_naive": evaluation["seasonal_naive"]["mase_mean"],
            "champion": (evaluation["champion"] or {}).get("mase_mean"),
        },
        "data_hash": dataset["data_hash"],
    }
