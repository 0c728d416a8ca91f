"""Per-epoch training history: recorded by a Lightning callback, logged to an MLflow run.

The LSTM is fitted in one step of the training job and the MLflow run is opened in a later one
(``training.job``), possibly in another process, so that a retried fit never leaves an orphaned
run behind. :class:`EpochHistory` therefore records each epoch's metrics with the moment the
epoch ended, as plain JSON-able dicts, and :func:`log_history` writes them to the run afterwards
with ``step`` = epoch and their original timestamps: the run's metric history looks as if it
had been logged live.
"""

from __future__ import annotations

import math
import time

import pytorch_lightning as pl
from mlflow import MlflowClient
from mlflow.entities import Metric

EPOCH = "epoch"
TIMESTAMP_MS = "timestamp_ms"


class EpochHistory(pl.Callback):
    """Keeps, per finished training epoch, every scalar metric the module logged for it.

    ``epochs`` is a list of ``{"epoch": 1, "timestamp_ms": ..., "train_loss": ...,
    "val_loss": ..., ...}``, epochs counted from 1. Lightning runs the validation of an epoch
    before ``on_train_epoch_end``, so each entry holds that epoch's validation metrics too.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float | int]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        entry: dict[str, float | int] = {
            EPOCH: trainer.current_epoch + 1,
            TIMESTAMP_MS: int(time.time() * 1000),
        }
        for name, value in trainer.callback_metrics.items():
            number = float(value)
            if math.isfinite(number):
                entry[name] = number
        self.epochs.append(entry)


def log_history(client: MlflowClient, run_id: str, history: list[dict]) -> int:
    """Log ``history`` (as recorded by :class:`EpochHistory`) to a run; returns points logged.

    Each metric gets one point per epoch, ``step`` = the epoch number.
    """
    metrics = [
        Metric(key=name, value=float(value), timestamp=int(entry[TIMESTAMP_MS]), step=entry[EPOCH])
        for entry in history
        for name, value in entry.items()
        if name not in (EPOCH, TIMESTAMP_MS)
    ]
    # log_batch takes at most 1,000 metrics a call.
    for first in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[first : first + 1000])
    return len(metrics)
