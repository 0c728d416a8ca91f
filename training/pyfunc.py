"""The MLflow pyfunc face of the LSTM forecaster: hourly feature windows in, predicted profiles out.

Serving talks to the registered model only through :class:`ProfileModel`, so it needs MLflow and
a DataFrame, not the training code's :class:`~training.panel.Panel`. The input is long format,
one row per user and hour (:data:`INPUT_COLUMNS`; ``event_timestamp`` is the hour start,
naive UTC or zone-aware); the output is one row per user and forecast
step (:data:`OUTPUT_COLUMNS`): p50 and p90 of each resource, the most likely region with its
probability (null where the model or the data has no location), and ``cold_start`` for users
with less history than the encoder reads.

:func:`panel_from_frame` and :func:`frame_from_panel` convert between the two shapes.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from packaging.version import Version

from core.regions import load_regions
from core.schema import RESOURCE_COLUMNS
from training.lstm import LstmForecaster
from training.panel import STATIC_COLUMNS, UNKNOWN, Panel

USER = "user_id"
HOUR_START = "event_timestamp"
REGION = "region"
STEP = "step"
INPUT_COLUMNS: tuple[str, ...] = (USER, HOUR_START, *RESOURCE_COLUMNS, REGION, *STATIC_COLUMNS)
OUTPUT_COLUMNS: tuple[str, ...] = (
    USER,
    STEP,
    "target_hour",
    *(f"{r}_{q}" for r in RESOURCE_COLUMNS for q in ("p50", "p90")),
    REGION,
    "region_probability",
    "cold_start",
)
ARTIFACT = "lstm"
# What loading the model needs: the project itself (training, core) and what it runs on.
REQUIREMENTS: tuple[str, ...] = (
    "prewarm",
    "mlflow",
    "cloudpickle",
    "torch",
    "pytorch-lightning",
    "numpy",
    "pandas",
    "pyarrow",
)


def frame_from_panel(panel: Panel, region_codes: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The long-format model input holding every (series, hour) of ``panel``."""
    codes = np.asarray(region_codes or load_regions().codes, dtype=object)
    n, hours = panel.n_series, panel.n_hours
    frame = pd.DataFrame(
        {
            USER: np.repeat(np.asarray(panel.series_ids, dtype=object), hours),
            HOUR_START: np.tile(_naive_utc(panel.times), n),
        }
    )
    for k, column in enumerate(RESOURCE_COLUMNS):
        frame[column] = panel.values[:, :, k].reshape(-1).astype(np.float64)
    region = None
    if panel.region is not None:
        index = panel.region.reshape(-1).astype(np.int64)
        region = np.where(index >= 0, codes[np.clip(index, 0, None)], None)
    frame[REGION] = region
    for column in STATIC_COLUMNS:
        frame[column] = np.repeat(panel.static[column].to_numpy(dtype=object), hours)
    return frame


def _naive_utc(times: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """UTC wall times without a zone: MLflow's schema only accepts naive datetimes."""
    return times.tz_convert("UTC").tz_localize(None)


def panel_from_frame(frame: pd.DataFrame, region_codes: tuple[str, ...] | None = None) -> Panel:
    """The hourly panel of a long-format input; hours missing from the frame become NaN.

    Raises ValueError when a required column is missing or the frame is empty.
    """
    missing = [c for c in (USER, HOUR_START, *RESOURCE_COLUMNS) if c not in frame.columns]
    if missing or frame.empty:
        raise ValueError(f"the input needs rows and the columns {missing or INPUT_COLUMNS}")
    codes = pd.Index(region_codes or load_regions().codes)
    hours = pd.to_datetime(frame[HOUR_START], utc=True).dt.floor("h")
    times = pd.date_range(hours.min(), hours.max(), freq="h")
    users = frame[USER].astype(str)
    series_ids = tuple(sorted(users.unique()))
    row = pd.Index(series_ids).get_indexer(users)
    col = ((hours - times[0]) // pd.Timedelta(hours=1)).to_numpy(np.int64)

    values = np.full((len(series_ids), len(times), len(RESOURCE_COLUMNS)), np.nan, np.float32)
    values[row, col] = frame[list(RESOURCE_COLUMNS)].to_numpy(np.float32)
    region = None
    if REGION in frame.columns and frame[REGION].notna().any():
        region = np.full((len(series_ids), len(times)), -1, np.int16)
        known = frame[REGION].astype(object).where(frame[REGION].notna())
        region[row, col] = codes.get_indexer(known)
    static = (
        frame.assign(**{USER: users})
        .drop_duplicates(USER, keep="last")
        .set_index(USER)
        .reindex(list(series_ids))
    )
    static = pd.DataFrame(
        {c: static[c] if c in static.columns else UNKNOWN for c in STATIC_COLUMNS},
        index=pd.Index(series_ids, name="series_id"),
    )
    static = static.where(static.notna(), UNKNOWN).astype(str)
    return Panel(series_ids, times, values, region, static)


def profiles(forecaster: LstmForecaster, panel: Panel, horizon: int) -> pd.DataFrame:
    """Predicted profiles (:data:`OUTPUT_COLUMNS`) of every series for ``horizon`` hours."""
    forecast = forecaster.predict(panel, horizon)
    n = panel.n_series
    steps = np.arange(1, horizon + 1)
    out = pd.DataFrame(
        {
            USER: np.repeat(np.asarray(panel.series_ids, dtype=object), horizon),
            STEP: np.tile(steps, n).astype(np.int64),
            "target_hour": np.tile(_naive_utc(panel.times[-1] + pd.to_timedelta(steps, "h")), n),
        }
    )
    for k, column in enumerate(RESOURCE_COLUMNS):
        out[f"{column}_p50"] = forecast.p50[:, :, k].reshape(-1).astype(np.float64)
        out[f"{column}_p90"] = forecast.p90[:, :, k].reshape(-1).astype(np.float64)
    if forecast.region_proba is not None:
        best = forecast.region_proba.argmax(axis=2).reshape(-1)
        codes = np.asarray(forecaster.region_codes, dtype=object)
        out[REGION] = codes[best]
        out["region_probability"] = forecast.region_proba.max(axis=2).reshape(-1).astype(np.float64)
    else:
        out[REGION] = None
        out["region_probability"] = np.nan
    out["cold_start"] = np.repeat(np.asarray(forecaster.last_cold_start, dtype=bool), horizon)
    return out[list(OUTPUT_COLUMNS)]


class ProfileModel(mlflow.pyfunc.PythonModel):
    """A saved :class:`LstmForecaster` (artifact ``lstm``) predicting per-user profiles.

    ``predict`` accepts the param ``horizon`` (hours, at most the model's own horizon).
    """

    def __init__(self) -> None:
        self.forecaster: LstmForecaster | None = None

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the forecaster from the model's ``lstm`` artifact folder."""
        self.forecaster = LstmForecaster.load(Path(context.artifacts[ARTIFACT]))

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict | None = None,
    ) -> pd.DataFrame:
        """Profiles of every user in ``model_input`` for the hours after its last hour."""
        if self.forecaster is None:
            raise RuntimeError("ProfileModel has no forecaster: load it through MLflow")
        horizon = int((params or {}).get("horizon") or self.forecaster.config.horizon)
        panel = panel_from_frame(model_input, self.forecaster.region_codes)
        return profiles(self.forecaster, panel, horizon)


def pip_requirements() -> list[str]:
    """:data:`REQUIREMENTS` pinned to the versions installed here (public part: no "+cpu").

    Given to MLflow explicitly: its inference imports the model in a subprocess, which took
    15-45 s per logged model on this machine, and left torch out.
    """
    return [f"{name}=={Version(version(name)).public}" for name in REQUIREMENTS]


def signature_and_example(
    forecaster: LstmForecaster, panel: Panel, users: int = 2
) -> tuple[ModelSignature, pd.DataFrame]:
    """The model signature inferred on a real prediction, and the input example it came from."""
    sample = panel.window(max(0, panel.n_hours - forecaster.config.encoder_length), panel.n_hours)
    keep = list(range(min(users, panel.n_series)))
    sample = Panel(
        tuple(sample.series_ids[i] for i in keep),
        sample.times,
        sample.values[keep],
        None if sample.region is None else sample.region[keep],
        sample.static.iloc[keep],
    )
    example = frame_from_panel(sample, forecaster.region_codes)
    horizon = forecaster.config.horizon
    output = profiles(forecaster, sample, horizon)
    signature = infer_signature(example, output, params={"horizon": horizon})
    return signature, example
