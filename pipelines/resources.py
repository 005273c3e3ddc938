"""Every external system as a ConfigurableResource. Values come from :class:`core.settings.Settings`
when the code location loads (``resources_from`` in ``definitions.py``); tests pass their own. Fields
have no defaults: a default here would repeat the setting's, always overwritten, free to disagree.

Dagster writes resource config into every run's snapshot (run storage) and shows it in its UI: a value
that carries a secret (a URL with a password, a key) arrives as a ``dg.EnvVar``, whose name is stored
and whose value is read in the process that runs the step."""

from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import PrivateAttr

from core.contracts.redis_keys import RedisKeys
from core.layout import Layout
from core.model_registry import ModelRegistry
from core.redis_clients import SyncClient, connect_url
from core.redis_server import EmbeddedRedis
from core.storage import location
from core.tables import OfflineStore
from core.vectorstore import VectorStore
from experiments.rollout import Rollouts
from experiments.rollout_rules import RolloutPolicy


class OfflineStoreResource(dg.ConfigurableResource):
    """The offline store under ``data_dir``, a local path or a URI such as ``s3://bucket/prefix``
    (folders as :class:`core.layout.Layout` names them)."""

    data_dir: str
    var_dir: str
    s3_endpoint_url: str  # an S3-compatible server (MinIO, SeaweedFS); empty: AWS

    @property
    def layout(self) -> Layout:
        return Layout(location(self.data_dir, self.s3_endpoint_url or None), Path(self.var_dir))

    @property
    def tables(self) -> OfflineStore:
        return OfflineStore(self.layout.tables)


class RedisResource(dg.ConfigurableResource):
    """Redis at ``url`` (a node of a Redis Cluster when ``cluster``; ``dg.EnvVar("ECHOTUNE_REDIS_URL")``
    when it carries a password); when ``url`` is empty, the project's embedded server in ``embedded_dir``
    (attached to if running, else started for the run and stopped after it)."""

    url: str
    cluster: bool
    prefix: str
    embedded_dir: str
    embedded_maxmemory: str

    _server: EmbeddedRedis | None = PrivateAttr(default=None)
    _client: SyncClient | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        url = self.url
        if not url:
            self._server = EmbeddedRedis(Path(self.embedded_dir), self.embedded_maxmemory)
            url = self._server.start()
        self._client = connect_url(url, self.cluster, "pipeline")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
        if self._server is not None:
            self._server.stop()

    @property
    def key_layout(self) -> RedisKeys:
        return RedisKeys(self.prefix)

    @property
    def client(self) -> SyncClient:
        if self._client is None:
            raise RuntimeError("RedisResource used outside of a run")
        return self._client

    @property
    def vectors(self) -> VectorStore:
        return VectorStore(self.client, self.key_layout)


class MlflowResource(dg.ConfigurableResource):
    """The MLflow tracking store and registered model the training assets write to: ``tracking_uri``, or
    when empty MLflow's schema of the PostgreSQL ``database_url`` (given as
    ``dg.EnvVar("ECHOTUNE_DATABASE_URL")``: it carries the password)."""

    tracking_uri: str
    database_url: str
    artifact_root: str
    experiment: str
    registered_model: str
    promotion_metric: str
    promotion_margin: float
    ui_url: str  # where the MLflow UI answers (links in asset metadata)
    s3_endpoint_url: str  # for an s3:// artifact root on an S3-compatible server; empty: AWS
    ann_min_tracks: int  # versions of at least this many tracks get an ANN index logged at release

    _registry: ModelRegistry | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._registry = ModelRegistry.open(
            self.store_uri,
            self.artifact_root,
            self.experiment,
            self.registered_model,
            s3_endpoint_url=self.s3_endpoint_url or None,
        )

    @property
    def store_uri(self) -> str:
        """The tracking URI the registry opens (with its password: never put it in config or a log)."""
        if self.tracking_uri:
            return self.tracking_uri
        from core.database import MLFLOW_SCHEMA, Database

        return Database.parse(self.database_url).url(MLFLOW_SCHEMA)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    @property
    def registry(self) -> ModelRegistry:
        if self._registry is None:
            raise RuntimeError("MlflowResource used outside of a run")
        return self._registry


class SyntheticDataResource(dg.ConfigurableResource):
    """Sizes and seed of the generated default data set."""

    tracks: int
    users: int
    events: int
    days: int
    seed: int


class TrainingResource(dg.ConfigurableResource):
    """Which algorithm the training asset fits and with which parameters (a JSON object, so any
    algorithm's knobs can be set from the launchpad). Only servable algorithms: the pipeline releases
    what it trains to the API."""

    algorithm: str
    params_json: str
    k: int = 10  # the cutoff of the held-out metrics (ndcg_at_10, ...): not a setting, so set here only
    # interactions weigh half as much per this many days before the newest one (0: no decay); recorded
    # in each version's MLflow params and published with it, so the worker learns as it was trained
    recency_half_life_days: float

    def params(self) -> dict:
        import json

        from models import check_servable

        try:
            check_servable(self.algorithm)
        except ValueError as exc:
            raise dg.Failure(str(exc)) from None
        params = json.loads(self.params_json or "{}")
        if not isinstance(params, dict):
            raise dg.Failure(f"params_json must be a JSON object, not {self.params_json!r}")
        return params


class IngestionResource(dg.ConfigurableResource):
    """Where source files are and how strict imports are."""

    track_files: list[str]
    history_files: list[str]
    interaction_files: list[str]
    history_user: str
    reject_threshold: float
    dead_letter_days: int
    # empty: the key file (created once); set it through dg.EnvVar in production
    pseudonym_key: str
    pseudonym_key_file: str

    def paths(self, setting: Literal["track_files", "history_files", "interaction_files"]) -> list[Path]:
        """The files configured for a source; a Failure naming the environment variable when none are."""
        paths = [Path(p) for p in getattr(self, setting)]
        if not paths:
            raise dg.Failure(f"no {setting.replace('_', ' ')} configured (ECHOTUNE_{setting.upper()})")
        return paths

    def pseudonymizer(self):
        from core.ingest.pseudonyms import Pseudonymizer, load_or_create_key

        key = (
            bytes.fromhex(self.pseudonym_key)
            if self.pseudonym_key
            else load_or_create_key(Path(self.pseudonym_key_file))
        )
        return Pseudonymizer(key)


class SpotifyApiResource(dg.ConfigurableResource):
    """The Spotify Web API (or a compatible provider): client credentials arrive through dg.EnvVar."""

    client_id: str
    client_secret: str
    base_url: str
    accounts_url: str
    max_tracks: int

    def client(self):
        from core.ingest.spotify_api import SpotifyClient

        return SpotifyClient(self.client_id, self.client_secret, base_url=self.base_url, accounts_url=self.accounts_url)


class ExperimentsResource(dg.ConfigurableResource):
    """Where experiment definitions (YAML) live."""

    definitions_dir: str


class MonitoringResource(dg.ConfigurableResource):
    """Thresholds of the monitors and the loop (see the ECHOTUNE_* settings of the same names)."""

    drift_threshold: float
    feedback_backlog_max: int
    model_max_age_hours: float
    retrain_after_events: int
    keep_versions: int


class RolloutResource(dg.ConfigurableResource):
    """The guarded rollout's policy (the ECHOTUNE_ROLLOUT* and ECHOTUNE_CANARY_SHARE settings)."""

    mode: str  # canary or direct
    ramp: list[float]  # the candidate's shares, canary share first, ending at 1.0
    ctr_margin: float
    min_users: int
    alpha: float
    max_error_rate: float
    max_p95_ms: float
    min_requests: int

    @property
    def policy(self) -> RolloutPolicy:
        return RolloutPolicy(
            ramp=tuple(self.ramp),
            ctr_margin=self.ctr_margin,
            min_users=self.min_users,
            alpha=self.alpha,
            max_error_rate=self.max_error_rate,
            max_p95_ms=self.max_p95_ms,
            min_requests=self.min_requests,
        )

    def rollouts(self, redis: RedisResource, mlflow: MlflowResource) -> Rollouts:
        return Rollouts(redis.client, redis.key_layout, mlflow.registry, redis.vectors, self.policy)
