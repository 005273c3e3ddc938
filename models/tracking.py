"""MLflow: training runs, the registered model, and the alias gate to production.

A trained model is logged as a pyfunc "model from code" (:mod:`models.pyfunc_model`, the saved model
folder as its artifact, ``k`` as a signature param) and registered. Every new version becomes
``challenger``; it becomes ``champion`` only through :func:`decide_promotion`. Rollback moves
``champion`` back to an earlier version.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

CHAMPION, CHALLENGER = "champion", "challenger"
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "user_id")]),
    outputs=Schema([ColSpec("string", "user_id"), ColSpec("string", "item_id"), ColSpec("long", "rank"), ColSpec("double", "score")]),
    params=ParamSchema([ParamSpec("k", "long", 10)]),
)


def configure(tracking_uri: str, artifact_root: Path, experiment: str) -> str:
    """Point MLflow at the tracking store and make sure the experiment exists. Returns its id."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep logs readable
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        artifact_root.mkdir(parents=True, exist_ok=True)
        experiment_id = client.create_experiment(experiment, artifact_location=artifact_root.resolve().as_uri())
    else:
        experiment_id = found.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@dataclass
class TrainingRecord:
    run_id: str
    version: str
    model_uri: str


def log_model_run(
    model_dir: Path,
    registered_model: str,
    algorithm: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    run_name: str | None = None,
) -> TrainingRecord:
    """Log one training run (params, metrics, tags, the pyfunc model) and register a new version."""
    with mlflow.start_run(run_name=run_name or f"train-{algorithm}") as run:
        mlflow.log_params({k: v for k, v in params.items() if v is not None})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.set_tags({"algorithm": algorithm, **tags})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_FILE),
            artifacts={"model_dir": str(model_dir)},
            signature=SIGNATURE,
            registered_model_name=registered_model,
            pip_requirements=["lightfm-next==1.19.0", "numpy", "scipy", "pandas"],
            code_paths=[str(Path(__file__).parent)],
        )
    return TrainingRecord(run_id=run.info.run_id, version=str(info.registered_model_version), model_uri=info.model_uri)


@dataclass
class PromotionDecision:
    promoted: bool
    reason: str
    metric: str
    challenger: float
    champion: float | None
    baseline: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(
    metric: str,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    baseline: dict[str, float] | None,
    margin: float,
) -> PromotionDecision:
    """The gate. The challenger must beat the popularity baseline and the current champion on
    ``metric`` by the relative ``margin`` (0.02 = 2% better). Pure function: no MLflow calls."""
    value = challenger[metric]
    champ = None if champion is None else champion.get(metric)
    base = None if baseline is None else baseline.get(metric)

    def decision(promoted: bool, reason: str) -> PromotionDecision:
        return PromotionDecision(promoted, reason, metric, value, champ, base)

    if base is not None and not value > base * (1 + margin):
        return decision(False, f"{metric} {value:.4f} does not beat popularity {base:.4f} by {margin:.0%}")
    if champ is not None and not value > champ * (1 + margin):
        return decision(False, f"{metric} {value:.4f} does not beat the champion's {champ:.4f} by {margin:.0%}")
    if champ is None:
        return decision(True, f"first model to pass the gate: {metric} {value:.4f} vs popularity {base}")
    return decision(True, f"{metric} {value:.4f} beats the champion's {champ:.4f} by more than {margin:.0%}")


def alias_version(registered_model: str, alias: str) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(registered_model, alias).version)
    except MlflowException:
        return None


def run_metrics(registered_model: str, version: str) -> dict[str, float]:
    """The metrics logged by the run that produced a model version."""
    client = MlflowClient()
    run_id = client.get_model_version(registered_model, version).run_id
    return dict(client.get_run(run_id).data.metrics) if run_id else {}


def run_tags(registered_model: str, version: str) -> dict[str, str]:
    """The tags of the run that produced a model version."""
    client = MlflowClient()
    run_id = client.get_model_version(registered_model, version).run_id
    return dict(client.get_run(run_id).data.tags) if run_id else {}


def log_report(registered_model: str, version: str, folder: Path, artifact_path: str) -> None:
    """Attach a report folder to the run that produced a model version (seen in the MLflow UI)."""
    client = MlflowClient()
    run_id = client.get_model_version(registered_model, version).run_id
    if run_id:
        client.log_artifacts(run_id, str(folder), artifact_path)


def set_alias(registered_model: str, alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(registered_model, alias, version)


def record_decision(registered_model: str, version: str, decision: PromotionDecision) -> None:
    """Keep the gate's verdict on the model version, where the MLflow UI shows it."""
    client = MlflowClient()
    client.set_model_version_tag(registered_model, version, "promotion", "promoted" if decision.promoted else "rejected")
    client.set_model_version_tag(registered_model, version, "promotion_reason", decision.reason)
    run_id = client.get_model_version(registered_model, version).run_id
    if run_id:
        client.log_text(run_id, json.dumps(decision.as_dict(), indent=2), "promotion.json")


def rollback(registered_model: str, to_version: str | None = None) -> tuple[str | None, str]:
    """Move ``champion`` to ``to_version`` (default: the newest earlier version that was promoted).

    Returns (previous champion, new champion). Raises LookupError when there is nothing to go back to.
    """
    client = MlflowClient()
    current = alias_version(registered_model, CHAMPION)
    if to_version is None:
        versions = client.search_model_versions(f"name = '{registered_model}'")
        promoted = sorted(
            (int(v.version) for v in versions if v.tags.get("promotion") == "promoted" and (current is None or int(v.version) < int(current))),
            reverse=True,
        )
        if not promoted:
            raise LookupError(f"no earlier promoted version of {registered_model} than champion {current}")
        to_version = str(promoted[0])
    client.get_model_version(registered_model, to_version)  # raises if it does not exist
    client.set_registered_model_alias(registered_model, CHAMPION, to_version)
    return current, to_version


def model_dir(registered_model: str, version: str, destination: Path) -> Path:
    """Download the saved model folder behind a registered version; returns its path."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{registered_model}/{version}", dst_path=str(destination)))
    found = [p.parent for p in (local / "artifacts").glob("*/model.json")]
    if len(found) != 1:
        raise FileNotFoundError(f"version {version} of {registered_model} holds no saved model folder")
    return found[0]
