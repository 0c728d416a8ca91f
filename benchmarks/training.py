"""Nightly-retrain scale: the LSTM fitted on 2,000 simulated users × 30 days.

Measures the panel build (hourly aggregation), the Lightning fit (samples/s, wall time with
early stopping and calibration) and, as the reference measured in the same run, the training
throughput of a plain ``torch.nn.LSTM`` of the reference size (2 layers, hidden 64) stepping
through the same 168 hourly steps with the same batch size. The issue's bound: the retrain
for this size finishes within 15 minutes.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

USERS = 2_000
DAYS = 30
SEED = 5


def run(users: int = USERS, days: int = DAYS) -> dict[str, Any]:
    """Time simulate → panel → LSTM fit, and the plain torch.nn.LSTM training reference."""
    from core.settings import get_settings
    from simulation.world import simulate
    from training.lstm import LstmForecaster
    from training.panel import panel_from_telemetry

    settings = get_settings()
    with tempfile.TemporaryDirectory(prefix="prewarm-bench-training-") as tmp:
        simulate(users=users, days=days, seed=SEED, out=Path(tmp) / "telemetry")
        started = time.perf_counter()
        panel = panel_from_telemetry(Path(tmp) / "telemetry")
        panel_s = time.perf_counter() - started
    forecaster = LstmForecaster(settings)
    forecaster.fit(panel)
    lstm = settings.lstm
    samples = lstm.samples_per_epoch * (forecaster.epochs_trained or 0)
    reference = _plain_lstm_samples_per_s(lstm.batch_size, lstm.hidden_size, lstm.num_layers)
    samples_per_s = samples / forecaster.fit_seconds
    return {
        "users": users,
        "days": days,
        "panel_seconds": round(panel_s, 1),
        "fit_seconds": round(forecaster.fit_seconds, 1),
        "epochs_trained": forecaster.epochs_trained,
        "samples_per_s": round(samples_per_s),
        "torch_lstm_reference_samples_per_s": round(reference),
        "ratio_to_reference": round(samples_per_s / reference, 2),
        "retrain_seconds": round(panel_s + forecaster.fit_seconds, 1),
        "bound_seconds": 15 * 60,
        "threads": lstm.threads,
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
