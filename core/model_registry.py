"""The MLflow side of a release: training runs, registered versions, aliases and their artifacts.

A :class:`ModelRegistry` holds its own ``MlflowClient`` (tracking store and registry at one URI) and
the experiment its runs go to, so nothing here sets MLflow's process-wide tracking URI. A model is
logged as a pyfunc "model from code" (:mod:`models.pyfunc_model`, the saved model folder as its
artifact, ``k`` as a signature param). The steps that use it are in :mod:`core.release`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

import models
from core.database import ensure_schema

if TYPE_CHECKING:
    from core.settings import Settings
from core.storage import StoragePath, local_folder
from models.promotion import PromotionDecision

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
# a version the gate passed that reaches listeners as a canary first (core.release, experiments.rollout)
CANDIDATE = "candidate"
ANN_INDEX_PATH, ANN_INDEX_FILE = (
    "ann_index",
    "catalog_index.npz",
)  # where a version's ANN index sits among its run's artifacts
PYFUNC_FILE = Path(models.__file__).with_name("pyfunc_model.py")
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "user_id")]),
    outputs=Schema(
        [
            ColSpec("string", "user_id"),
            ColSpec("string", "item_id"),
            ColSpec("long", "rank"),
            ColSpec("double", "score"),
        ]
    ),
    params=ParamSchema([ParamSpec("k", "long", 10)]),
)


@dataclass(frozen=True)
class Registration:
    run_id: str
    version: str
    model_uri: str


@dataclass(frozen=True)
class ModelRegistry:
    """One registered model in one MLflow tracking store."""

    client: MlflowClient
    name: str
    experiment_id: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        """The registry the settings name: ``ECHOTUNE_MLFLOW_TRACKING_URI``, the artifact location (under
        ``ECHOTUNE_STORAGE_URL`` when set, with ``ECHOTUNE_S3_ENDPOINT_URL``), the experiment and the
        registered model. The one way every process opens it, so none misses a setting."""
        return cls.open(
            settings.mlflow_tracking_uri,
            settings.mlflow_artifact_location,
            settings.mlflow_experiment,
            settings.registered_model,
            s3_endpoint_url=settings.s3_endpoint_url,
        )

    @classmethod
    def open(
        cls,
        tracking_uri: str,
        artifact_root: str | Path,
        experiment: str,
        name: str,
        s3_endpoint_url: str | None = None,
    ) -> ModelRegistry:
        """The registry at ``tracking_uri``; creates the experiment (artifacts under ``artifact_root``,
        a local path or a URI such as ``s3://bucket/prefix/mlflow``) on first use, and on PostgreSQL the
        schema MLflow then migrates its tables into. ``s3_endpoint_url``: the S3-compatible server that
        s3:// artifacts live on (MinIO, SeaweedFS), for every later artifact call of this process."""
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep logs readable
        if s3_endpoint_url:
            # MLflow's S3 artifact repository reads its endpoint from the environment only
            os.environ["MLFLOW_S3_ENDPOINT_URL"] = s3_endpoint_url
        ensure_schema(tracking_uri)
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        root = str(artifact_root)
        if found is not None:
            if "://" in root and not found.artifact_location.startswith(root):
                # an experiment keeps the artifact root it was created with: say so, rather than write elsewhere silently
                log.warning(
                    "MLflow experiment %r keeps its artifacts at %s, not %s: name a new ECHOTUNE_MLFLOW_EXPERIMENT to "
                    "store new runs there",
                    experiment,
                    found.artifact_location,
                    root,
                )
            return cls(client, name, found.experiment_id)
        if "://" not in root:
            Path(root).mkdir(parents=True, exist_ok=True)
            root = Path(root).resolve().as_uri()
        return cls(client, name, client.create_experiment(experiment, artifact_location=root))

    # --- runs and versions ---------------------------------------------------------------------
    def log_version(
        self,
        model_dir: Path,
        algorithm: str,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        run_name: str | None = None,
    ) -> Registration:
        """Log one training run (params, metrics, tags, the pyfunc model) and register a new version."""
        # MLflow logs models only through its fluent API, which reads the process-wide tracking URI:
        # this client's URI is set for the duration of the call and the previous one put back after.
        with _use_tracking_uri(self.client.tracking_uri), warnings.catch_warnings():
            # the signature is given explicitly; an input example would only make MLflow load the model once more
            warnings.filterwarnings("ignore", message=".*input example was not provided.*")
            with mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name or f"train-{algorithm}") as run:
                mlflow.log_params({k: v for k, v in params.items() if v is not None})
                mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
                mlflow.set_tags({"algorithm": algorithm, **tags})
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(PYFUNC_FILE),
                    artifacts={"model_dir": str(model_dir)},
                    signature=SIGNATURE,
                    registered_model_name=self.name,
                    pip_requirements=["numpy", "scipy", "pandas"]
                    + (["lightfm-next==1.19.0"] if algorithm == "lightfm" else []),
                    code_paths=[str(PYFUNC_FILE.parent)],
                )
        return Registration(
            run_id=run.info.run_id, version=str(info.registered_model_version), model_uri=info.model_uri
        )

    def versions(self) -> list[str]:
        """Every registered version, oldest first."""
        found = self.client.search_model_versions(f"name = '{self.name}'")
        return [str(v) for v in sorted(int(v.version) for v in found)]

    @staticmethod
    def now() -> float:
        """The current time as the registry's timestamps count it (epoch seconds)."""
        return time.time()

    def created_at(self, version: str) -> float:
        """Epoch seconds when ``version`` was registered."""
        return self.client.get_model_version(self.name, version).creation_timestamp / 1000.0

    def delete_version(self, version: str) -> None:
        """Delete ``version`` for good: its model artifacts, its run's artifacts (reports, the gate's
        verdict) and the registered version. The run's params and metrics stay, for the history."""
        found = self.client.get_model_version(self.name, version)
        sources = [self.client.get_model_version_download_uri(self.name, version)]
        if found.run_id:
            sources.append(self.client.get_run(found.run_id).info.artifact_uri)
        for source in sources:
            get_artifact_repository(source).delete_artifacts()
        self.client.delete_model_version(self.name, version)
        if found.model_id:
            self.client.delete_logged_model(found.model_id)

    def version_tags(self, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(self.name, version).tags)

    def run_metrics(self, version: str) -> dict[str, float]:
        """The metrics logged by the run that produced a model version."""
        run_id = self.client.get_model_version(self.name, version).run_id
        return dict(self.client.get_run(run_id).data.metrics) if run_id else {}

    def run_params(self, version: str) -> dict[str, str]:
        """The params logged by the run that produced a model version (as MLflow stores them: text)."""
        run_id = self.client.get_model_version(self.name, version).run_id
        return dict(self.client.get_run(run_id).data.params) if run_id else {}

    def run_tags(self, version: str) -> dict[str, str]:
        """The tags of the run that produced a model version."""
        run_id = self.client.get_model_version(self.name, version).run_id
        return dict(self.client.get_run(run_id).data.tags) if run_id else {}

    # --- aliases ---------------------------------------------------------------------------------
    def alias(self, alias: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except MlflowException:
            return None

    def aliases(self) -> dict[str, str]:
        """alias -> version. (search_model_versions leaves aliases empty on some stores; the registered
        model always carries them.)"""
        try:
            return {alias: str(v) for alias, v in self.client.get_registered_model(self.name).aliases.items()}
        except MlflowException:
            return {}

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.name, alias, version)

    def remove_alias(self, alias: str) -> None:
        """Delete ``alias`` (nothing happens when it is not set)."""
        if self.alias(alias) is not None:
            self.client.delete_registered_model_alias(self.name, alias)

    # --- what the gate said, reports, artifacts ------------------------------------------------
    def record_decision(self, version: str, decision: PromotionDecision) -> None:
        """Keep the gate's verdict on the model version, where the MLflow UI shows it."""
        self.client.set_model_version_tag(
            self.name, version, "promotion", "promoted" if decision.promoted else "rejected"
        )
        self.client.set_model_version_tag(self.name, version, "promotion_reason", decision.reason)
        # where the champion's figure came from: the challenger's held-out data (same_split) or its own training run (logged)
        self.client.set_model_version_tag(self.name, version, "promotion_compared_on", decision.compared_on)
        run_id = self.client.get_model_version(self.name, version).run_id
        if run_id:
            self.client.log_text(run_id, json.dumps(decision.as_dict(), indent=2), "promotion.json")

    def record_rollout(self, version: str, decision: str, reason: str) -> None:
        """Keep the rollout's latest decision on the version (``rollout``: candidate, step_up, hold, promote,
        rollback; ``rollout_reason``), where the MLflow UI shows it."""
        self.client.set_model_version_tag(self.name, version, "rollout", decision)
        self.client.set_model_version_tag(self.name, version, "rollout_reason", reason[:5000])

    def log_report(self, version: str, folder: StoragePath, artifact_path: str) -> None:
        """Attach a report folder (local or in shared storage) to the run that produced a model
        version (seen in the MLflow UI)."""
        run_id = self.client.get_model_version(self.name, version).run_id
        if run_id:
            with local_folder(folder) as local:
                self.client.log_artifacts(run_id, str(local), artifact_path)

    def log_ann_index(self, version: str, data: bytes) -> None:
        """Keep a version's ANN index (:class:`models.ann.CatalogIndex` bytes) with the run that produced
        it, so every API loads the index built at release instead of building its own."""
        run_id = self.client.get_model_version(self.name, version).run_id
        if not run_id:
            raise LookupError(f"version {version} of {self.name} has no run to log its ANN index to")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / ANN_INDEX_FILE
            path.write_bytes(data)
            self.client.log_artifact(run_id, str(path), ANN_INDEX_PATH)

    def has_ann_index(self, version: str) -> bool:
        """Whether an ANN index is logged with ``version`` (a listing, not a download)."""
        try:
            run_id = self.client.get_model_version(self.name, version).run_id
        except MlflowException:
            return False
        return bool(run_id) and any(
            a.path.endswith(ANN_INDEX_FILE) for a in self.client.list_artifacts(run_id, ANN_INDEX_PATH)
        )

    def ann_index(self, version: str) -> bytes | None:
        """The ANN index logged with ``version``, or None (released before indexes were, not indexed,
        or published without registering, as benchmarks do)."""
        try:
            run_id = self.client.get_model_version(self.name, version).run_id
        except MlflowException:
            return None
        if not run_id:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id,
                    artifact_path=f"{ANN_INDEX_PATH}/{ANN_INDEX_FILE}",
                    dst_path=tmp,
                    tracking_uri=self.client.tracking_uri,
                )
            except (MlflowException, OSError):
                return None
            return Path(local).read_bytes()

    def download(self, version: str, destination: Path) -> Path:
        """Download the saved model folder behind a registered version; returns its path."""
        # the version's own storage location: a models:/ URI would be resolved through the
        # process-wide registry URI, not this client's
        source = self.client.get_model_version_download_uri(self.name, version)
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(destination), tracking_uri=self.client.tracking_uri
            )
        )
        found = [p.parent for p in (local / "artifacts").glob("*/model.json")]
        if len(found) != 1:
            raise FileNotFoundError(f"version {version} of {self.name} holds no saved model folder")
        return found[0]
