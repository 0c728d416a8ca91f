"""The LSTM forecaster: ``training.model.ForecastModule`` trained with Lightning on panel windows.

``LstmForecaster`` implements ``training.forecast.Forecaster`` under the name "lstm". ``fit``
cuts windows from the history (``training.windows``), keeps the last
``settings.lstm.validation_hours`` hours for early stopping, restores the best checkpoint and
calibrates the p90 and the region head on those held-out hours (``ForecastModule.calibrate``).
``predict`` reads the last ``L`` hours of each series. Series with less than ``L`` hours of
history are padded and masked, still forecast, and flagged in ``last_cold_start``. Trained
weights (with the calibrations) and scalers round-trip through ``save`` / ``load`` (a state
dict and a JSON file).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from core.regions import load_regions
from core.schema import RESOURCE_COLUMNS, ROLES
from core.settings import LstmSettings, Settings, get_settings
from training.epochs import EpochHistory
from training.forecast import Forecast
from training.model import ForecastModule
from training.panel import Panel
from training.windows import (
    Scaler,
    SeriesTensors,
    WindowDataModule,
    WindowDataset,
    fit_scaler,
    series_tensors,
    split_origins,
    subsample,
)

WEIGHTS_FILE = "lstm.pt"
METADATA_FILE = "lstm.json"
UNKNOWN_ROLE = ROLES.index("unknown")
PREDICT_BATCH = 1024


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's informational banner (accelerator, checkpoint paths) meanwhile."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


@contextmanager
def _torch_state(threads: int) -> Iterator[None]:
    """Use ``threads`` CPU threads meanwhile; restore them and the determinism flag afterwards."""
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


class LstmForecaster:
    """Global LSTM forecaster of resource quantiles and, where the data has it, of the region.

    ``settings.lstm`` gives the defaults; keyword ``overrides`` replace single fields
    (``LstmForecaster(max_epochs=3)``).
    """

    name = "lstm"

    def __init__(self, settings: Settings | None = None, **overrides: object) -> None:
        self.settings = settings or get_settings()
        merged = {**self.settings.lstm.model_dump(), **overrides}
        self.config = LstmSettings.model_validate(merged)
        if not {0.5, 0.9} <= set(self.config.quantiles):
            raise ValueError(f"quantiles must include 0.5 and 0.9; got {self.config.quantiles}")
        self.region_codes = load_regions(self.settings.regions_file).codes
        self.module: ForecastModule | None = None
        self.series_ids: tuple[str, ...] = ()
        self.scaler: Scaler | None = None
        self.last_cold_start: np.ndarray | None = None
        self.fit_seconds: float | None = None
        self.epochs_trained: int | None = None
        self.spread_factors: list[float] | None = None
        self.epoch_history: list[dict] = []

    # -- fitting -------------------------------------------------------------------------

    def fit(self, history: Panel) -> None:
        """Train on windows of ``history``; its last hours validate for early stopping."""
        with _torch_state(self.config.threads):
            self._fit(history)

    def _fit(self, history: Panel) -> None:
        started = time.perf_counter()
        config = self.config
        pl.seed_everything(config.seed, workers=True, verbose=False)
        self.series_ids = tuple(history.series_ids)
        self.scaler = fit_scaler(history.values)
        tensors = self._tensors(history, self.scaler)
        observed = ~np.isnan(history.values).all(axis=2)
        train, validation = split_origins(
            observed, config.encoder_length, config.horizon, config.validation_hours
        )
        validation = subsample(validation, config.validation_windows, config.seed)
        module = self._new_module(with_region_head=history.region is not None)
        data = WindowDataModule(
            tensors,
            train,
            validation,
            batch_size=config.batch_size,
            samples_per_epoch=config.samples_per_epoch,
            seed=config.seed,
            num_workers=config.num_workers,
        )
        self.epochs_trained = self._train(module, data)
        self.spread_factors = module.calibrate(data.val_dataloader()).tolist()
        self.module = module
        self.fit_seconds = time.perf_counter() - started

    def _train(self, module: ForecastModule, data: WindowDataModule) -> int:
        """Fit ``module`` with early stopping, load its best checkpoint, return the epochs run.

        Each epoch's losses and validation metrics are kept in ``epoch_history`` (see
        ``training.epochs``).
        """
        config = self.config
        history = EpochHistory()
        with tempfile.TemporaryDirectory(prefix="prewarm-lstm-") as folder, _quiet_lightning():
            checkpoint = ModelCheckpoint(
                dirpath=folder, monitor="val_loss", mode="min", save_top_k=1, save_weights_only=True
            )
            stopping = EarlyStopping(monitor="val_loss", mode="min", patience=config.patience)
            trainer = pl.Trainer(
                accelerator="cpu",
                devices=1,
                deterministic=True,
                enable_progress_bar=False,
                logger=False,
                enable_model_summary=False,
                max_epochs=config.max_epochs,
                gradient_clip_val=config.gradient_clip,
                num_sanity_val_steps=0,
                callbacks=[stopping, checkpoint, history],
                default_root_dir=folder,
            )
            trainer.fit(module, datamodule=data)
            best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(best["state_dict"])
        module.eval()
        self.epoch_history = history.epochs
        return trainer.current_epoch

    def _new_module(self, with_region_head: bool) -> ForecastModule:
        config = self.config
        return ForecastModule(
            encoder_length=config.encoder_length,
            horizon=config.horizon,
            n_resources=len(RESOURCE_COLUMNS),
            quantiles=tuple(config.quantiles),
            n_roles=len(ROLES),
            n_regions=len(self.region_codes),
            with_region_head=with_region_head,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            head_hidden_size=config.head_hidden_size,
            embedding_dim=config.embedding_dim,
            dropout=config.dropout,
            patch_hours=config.patch_hours,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            region_loss_weight=config.region_loss_weight,
        )

    # -- predicting ----------------------------------------------------------------------

    def predict(self, history: Panel, horizon: int) -> Forecast:
        """Forecast the ``horizon`` hours after ``history`` from each series' last ``L`` hours.

        Series seen in ``fit`` keep their training scalers; new ones are scaled on their own
        history. Sets ``last_cold_start``: True for series with less than ``L`` hours of history.
        """
        if self.module is None or self.scaler is None:
            raise RuntimeError("the LSTM forecaster must be fitted (or loaded) before predict")
        if not 1 <= horizon <= self.config.horizon:
            raise ValueError(f"horizon must be 1..{self.config.horizon}; got {horizon}")
        scaler = self._scaler_for(history)
        tensors = self._tensors(history, scaler)
        with _torch_state(self.config.threads):
            quantiles, region_logits = self._forward_at_end(tensors)
        values = self._snap_to_zero(scaler.inverse(quantiles), scaler)[:, :horizon]
        levels = sorted(self.config.quantiles)
        self.last_cold_start = self._cold_start(history)
        region_proba = None
        if region_logits is not None and history.region is not None:
            region_proba = torch.softmax(region_logits, dim=-1).numpy()[:, :horizon]
        return Forecast(
            p50=values[..., levels.index(0.5)],
            p90=values[..., levels.index(0.9)],
            region_proba=region_proba,
        )

    def _snap_to_zero(self, values: np.ndarray, scaler: Scaler) -> np.ndarray:
        """Demand is never negative, and tiny forecasts mean idle: exactly zero (a monotone map).

        Idle and powered-off hours are exact zeros in telemetry, which a regression only
        approaches; below ``zero_snap`` of the series' scale the forecast becomes 0.
        """
        threshold = self.config.zero_snap * scaler.scale[:, None, :, None]
        return np.where(values < threshold, 0.0, values).astype(np.float32)

    def _forward_at_end(self, tensors: SeriesTensors) -> tuple[np.ndarray, torch.Tensor | None]:
        """Scaled quantiles (n, H, R, Q) and region logits for the origin right after the data."""
        n = tensors.values.shape[0]
        origins = np.stack([np.arange(n), np.full(n, tensors.length)], axis=1)
        windows = WindowDataset(tensors, origins, targets=False)
        quantiles, logits = [], []
        with torch.inference_mode():
            for first in range(0, n, PREDICT_BATCH):
                out = self.module(windows[list(range(first, min(first + PREDICT_BATCH, n)))])
                quantiles.append(out["quantiles"])
                if "region_logits" in out:
                    logits.append(out["region_logits"])
        return torch.cat(quantiles).numpy(), torch.cat(logits) if logits else None

    def _scaler_for(self, history: Panel) -> Scaler:
        """Training scalers for known series; scalers fitted on ``history`` for new ones."""
        known = pd.Index(self.series_ids).get_indexer(list(history.series_ids))
        seen = known >= 0
        resources = history.values.shape[2]
        loc = np.empty((history.n_series, resources), np.float32)
        scale = np.empty((history.n_series, resources), np.float32)
        loc[seen] = self.scaler.loc[known[seen]]
        scale[seen] = self.scaler.scale[known[seen]]
        if not seen.all():  # fitting is the slow part of predicting: only for new series
            own = fit_scaler(history.values[~seen])
            loc[~seen], scale[~seen] = own.loc, own.scale
        return Scaler(loc, scale)

    def _cold_start(self, history: Panel) -> np.ndarray:
        """True for series whose first observed hour is less than ``L`` hours before the end."""
        observed = ~np.isnan(history.values).all(axis=2)
        first = np.where(observed.any(axis=1), observed.argmax(axis=1), history.n_hours)
        return (history.n_hours - first) < self.config.encoder_length

    # -- shared --------------------------------------------------------------------------

    def _tensors(self, history: Panel, scaler: Scaler) -> SeriesTensors:
        return series_tensors(
            scaler.transform(history.values),
            history.times,
            self._static_indices(history.static),
            history.region,
            self.config.encoder_length,
            self.config.horizon,
        )

    def _static_indices(self, static: pd.DataFrame) -> np.ndarray:
        """(n, 2) role and home-region indices; unrecognised values map to "unknown"."""
        roles = {role: i for i, role in enumerate(ROLES)}
        regions = {code: i for i, code in enumerate(self.region_codes)}
        role = static["role"].map(roles).fillna(UNKNOWN_ROLE)
        home = static["home_region"].map(regions).fillna(len(self.region_codes))
        return np.stack([role.to_numpy(np.int64), home.to_numpy(np.int64)], axis=1)

    # -- export --------------------------------------------------------------------------

    def save(self, folder: Path) -> Path:
        """Write the trained weights (state dict) and the scalers and settings (JSON)."""
        if self.module is None or self.scaler is None:
            raise RuntimeError("nothing to save: the LSTM forecaster is not fitted")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.module.state_dict(), folder / WEIGHTS_FILE)
        metadata = {
            "config": self.config.model_dump(mode="json"),
            "hparams": dict(self.module.hparams),
            "region_codes": list(self.region_codes),
            "series_ids": list(self.series_ids),
            "loc": self.scaler.loc.tolist(),
            "scale": self.scaler.scale.tolist(),
        }
        (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=1))
        return folder

    @classmethod
    def load(cls, folder: Path, settings: Settings | None = None) -> LstmForecaster:
        """A forecaster ready to predict, from a folder written by ``save``."""
        folder = Path(folder)
        metadata = json.loads((folder / METADATA_FILE).read_text())
        forecaster = cls(settings, **metadata["config"])
        if tuple(metadata["region_codes"]) != forecaster.region_codes:
            raise ValueError("the saved model was trained on a different region catalogue")
        module = ForecastModule(**metadata["hparams"])
        module.load_state_dict(torch.load(folder / WEIGHTS_FILE, weights_only=True))
        forecaster.module = module.eval()
        forecaster.series_ids = tuple(metadata["series_ids"])
        forecaster.scaler = Scaler(
            np.asarray(metadata["loc"], np.float32).reshape(-1, len(RESOURCE_COLUMNS)),
            np.asarray(metadata["scale"], np.float32).reshape(-1, len(RESOURCE_COLUMNS)),
        )
        return forecaster
