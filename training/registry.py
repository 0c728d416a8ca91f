"""The MLflow model registry and the promotion gate.

Every trained model is registered as a new version with the alias ``challenger``. The gate
compares it with ``@champion`` on the same holdout (lower mean MASE is better) and moves
``champion`` only when the challenger is better by the configured relative margin; the very
first model must beat ``seasonal_naive`` on that holdout instead. Each decision is written on
the version itself (tags and description), so a reviewer in the MLflow UI sees why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from core.settings import Settings, get_settings

CHAMPION = "champion"
CHALLENGER = "challenger"
SCORE_TAG = "holdout_mase_mean"
BASELINE_TAG = "holdout_seasonal_naive_mase_mean"


@dataclass(frozen=True)
class GateDecision:
    """Whether a challenger becomes champion, and why, in words a reviewer can read."""

    promote: bool
    reason: str
    challenger_score: float
    reference_name: str  # "champion vN" or "seasonal_naive"
    reference_score: float
    margin: float


def decide(
    challenger_score: float,
    champion_score: float | None,
    baseline_score: float,
    margin: float,
    champion_version: str | None = None,
) -> GateDecision:
    """The gate's rule on holdout mean MASE (lower is better).

    With a champion: promote when ``challenger < champion × (1 − margin)``. Without one: promote
    when the challenger beats the seasonal-naive baseline measured on the same holdout.
    """
    if champion_score is None:
        promote = challenger_score < baseline_score
        verdict = "beats" if promote else "does not beat"
        reason = (
            f"first model: holdout mean MASE {challenger_score:.4f} {verdict} "
            f"seasonal_naive {baseline_score:.4f}"
        )
        return GateDecision(
            promote, reason, challenger_score, "seasonal_naive", baseline_score, 0.0
        )
    bar = champion_score * (1.0 - margin)
    promote = challenger_score < bar
    verdict = "below" if promote else "not below"
    name = f"champion v{champion_version}" if champion_version else "champion"
    reason = (
        f"holdout mean MASE {challenger_score:.4f} is {verdict} {bar:.4f} "
        f"({name} {champion_score:.4f} less the {margin:.1%} margin)"
    )
    return GateDecision(promote, reason, challenger_score, name, champion_score, margin)


def client(settings: Settings | None = None) -> MlflowClient:
    """An MLflow client on the configured tracking and registry URI."""
    settings = settings or get_settings()
    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def use_experiment(settings: Settings | None = None) -> str:
    """Point the ``mlflow`` module at our tracking URI and experiment; returns its id.

    The experiment's artifacts live under ``$PREWARM_HOME/mlflow/artifacts`` (MLflow would
    otherwise write them to ``./mlruns`` in the working directory).
    """
    import mlflow

    settings = settings or get_settings()
    mlflow_client = client(settings)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    name = settings.mlflow.experiment
    found = mlflow_client.get_experiment_by_name(name)
    if found is None:
        artifacts = (settings.home / "mlflow" / "artifacts").resolve()
        experiment_id = mlflow_client.create_experiment(name, artifact_location=artifacts.as_uri())
    else:
        experiment_id = found.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def register_challenger(
    mlflow: MlflowClient,
    model_uri: str,
    run_id: str,
    score: float,
    baseline_score: float,
    settings: Settings | None = None,
) -> ModelVersion:
    """Register ``model_uri`` as a new version tagged with its holdout scores; alias challenger."""
    settings = settings or get_settings()
    name = settings.mlflow.model_name
    try:
        mlflow.get_registered_model(name)
    except MlflowException:
        mlflow.create_registered_model(
            name, description="Per-user resource and location profile forecaster (prewarm)."
        )
    # A logged model's URI (models:/m-…) names its model id; a tracking server requires the
    # id beside such a source (SQLite stores accept it without).
    logged = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    version = mlflow.create_model_version(name, model_uri, run_id=run_id, model_id=logged)
    mlflow.set_model_version_tag(name, version.version, SCORE_TAG, f"{score:.6f}")
    mlflow.set_model_version_tag(name, version.version, BASELINE_TAG, f"{baseline_score:.6f}")
    mlflow.set_registered_model_alias(name, CHALLENGER, version.version)
    return mlflow.get_model_version(name, version.version)


def champion(mlflow: MlflowClient, settings: Settings | None = None) -> ModelVersion | None:
    """The version holding the ``champion`` alias, or None before the first promotion."""
    name = (settings or get_settings()).mlflow.model_name
    try:
        return mlflow.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def apply_gate(
    mlflow: MlflowClient, version: ModelVersion, settings: Settings | None = None
) -> GateDecision:
    """Decide on ``version`` against the current champion, record the decision, move aliases."""
    settings = settings or get_settings()
    name = settings.mlflow.model_name
    current = champion(mlflow, settings)
    challenger_score = float(version.tags[SCORE_TAG])
    decision = decide(
        challenger_score,
        float(current.tags[SCORE_TAG]) if current is not None else None,
        float(version.tags[BASELINE_TAG]),
        settings.mlflow.promotion_margin,
        current.version if current is not None else None,
    )
    outcome = "promoted to champion" if decision.promote else "kept as challenger"
    mlflow.set_model_version_tag(name, version.version, "gate_decision", outcome)
    mlflow.set_model_version_tag(name, version.version, "gate_reason", decision.reason)
    mlflow.set_model_version_tag(
        name, version.version, "gate_reference", decision.reference_name
    )
    mlflow.update_model_version(
        name, version.version, description=f"Promotion gate: {outcome}. {decision.reason}."
    )
    if decision.promote:
        mlflow.set_registered_model_alias(name, CHAMPION, version.version)
    return decision
