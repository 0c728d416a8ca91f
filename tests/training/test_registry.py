"""The promotion gate: its rule, and its decisions recorded in a SQLite-backed MLflow."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from core.settings import get_settings
from training import registry
from training.pyfunc import pip_requirements


class _Persistence(mlflow.pyfunc.PythonModel):
    """A real (if humble) forecaster: tomorrow looks like the last value seen."""

    def predict(self, context, model_input: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(model_input).iloc[:, -1:]


def _logged_model(client) -> tuple[str, str]:
    registry.use_experiment()
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_Persistence(),
            input_example=pd.DataFrame({"x": [1.0, 2.0]}),
            pip_requirements=pip_requirements(),  # inferring them costs a subprocess each
        )
    return info.model_uri, run.info.run_id


def _register(client, score: float, baseline: float = 1.0):
    uri, run_id = _logged_model(client)
    return registry.register_challenger(client, uri, run_id, score, baseline)


@pytest.mark.parametrize(
    ("challenger", "champion", "baseline", "promote"),
    [
        (0.80, None, 1.07, True),  # first model beats seasonal naive
        (1.10, None, 1.07, False),  # first model worse than seasonal naive
        (0.70, 0.80, 1.07, True),  # better than the champion by more than the margin
        (0.79, 0.80, 1.07, False),  # better, but within the margin
        (0.90, 0.80, 1.07, False),  # worse
    ],
)
def test_the_gate_rule(challenger, champion, baseline, promote) -> None:
    decision = registry.decide(challenger, champion, baseline, margin=0.02)
    assert decision.promote is promote
    assert f"{challenger:.4f}" in decision.reason


def test_champion_moves_only_for_a_better_model_and_every_decision_is_recorded() -> None:
    client = registry.client()
    name = get_settings().mlflow.model_name

    first = _register(client, score=0.80)
    assert registry.apply_gate(client, first).promote
    assert registry.champion(client).version == first.version

    worse = _register(client, score=0.95)
    decision = registry.apply_gate(client, worse)
    assert not decision.promote
    assert registry.champion(client).version == first.version
    assert client.get_model_version_by_alias(name, "challenger").version == worse.version
    recorded = client.get_model_version(name, worse.version)
    assert (get_settings().home / "mlflow" / "artifacts").is_dir()
    assert recorded.tags["gate_decision"] == "kept as challenger"
    assert f"champion v{first.version}" in recorded.tags["gate_reason"]
    assert "kept as challenger" in recorded.description

    better = _register(client, score=0.60)
    assert registry.apply_gate(client, better).promote
    assert registry.champion(client).version == better.version
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert loaded.predict(pd.DataFrame({"x": [3.0]})).iloc[0, 0] == 3.0
