"""The instance config the project writes from its settings: SQLite by default; with
ECHOTUNE_DATABASE_URL, Dagster and MLflow on PostgreSQL (each in its own schema, migrated on first use)
with a run queue that starts one training run at a time.

The PostgreSQL tests run when a server is reachable at 127.0.0.1:5432 (user postgres; CI has one), each
in a database created for it and dropped after; they skip with the reason otherwise."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from core.database import DAGSTER_SCHEMA, MLFLOW_SCHEMA
from core.model_registry import CHAMPION, ModelRegistry
from core.settings import Settings, get_settings
from echotune.cli import main
from echotune.demo import mlflow_server
from pipelines.automation.jobs import drain_job, everything_job, retrain_job
from pipelines.definitions import build_defs, resources_from
from pipelines.instance import DRAIN_TAG, TRAINING_TAG, instance_config, prepare_instance

REPO = Path(__file__).resolve().parents[2]
SERVER = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


@pytest.fixture(scope="session")
def postgres_admin():
    try:
        admin = psycopg2.connect(**SERVER, dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(
            f"no PostgreSQL reachable at 127.0.0.1:5432 ({str(exc).strip()}): production configuration not tested"
        )
    admin.autocommit = True
    yield admin
    admin.close()


@pytest.fixture
def database_url(postgres_admin):
    """ECHOTUNE_DATABASE_URL of a fresh, empty database, dropped after the test."""
    name = f"echotune_test_{uuid.uuid4().hex[:8]}"
    with postgres_admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with postgres_admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def limited_role(database_url, postgres_admin):
    """A login role without the CREATE privilege on the test database (PostgreSQL 15 grants none by default)."""
    role, name = f"echotune_test_role_{uuid.uuid4().hex[:8]}", database_url.rsplit("/", 1)[1]
    with postgres_admin.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} LOGIN")
    yield role
    connection = psycopg2.connect(**SERVER, dbname=name)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"DROP OWNED BY {role}")
    finally:
        connection.close()
    with postgres_admin.cursor() as cursor:
        cursor.execute(f"DROP ROLE {role}")


def on_postgres(settings: Settings, database_url: str) -> Settings:
    # built again rather than copied, so the MLflow URI is derived from the database like in production
    return Settings(**{**settings.model_dump(exclude={"mlflow_tracking_uri"}), "database_url": database_url})


def run_queue(instance: dg.DagsterInstance) -> list[str]:
    """The job names of the queued runs the run-queue daemon would start now, read from the instance's
    coordinator config and run storage by the daemon's own selection (its next step only launches them)."""
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    return [run.job_name for run in daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)]


# --- the embedded default: no database --------------------------------------------------------------
def test_default_instance_is_sqlite_with_a_run_queue(settings):
    env = prepare_instance(settings)
    assert env == {"DAGSTER_HOME": str(settings.dagster_home)}
    assert settings.mlflow_tracking_uri.startswith("sqlite:///")
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 2
        assert [(limit["key"], limit["limit"]) for limit in queue.tag_concurrency_limits] == [
            (TRAINING_TAG, 1),
            (DRAIN_TAG, 1),
        ]


def test_drains_asked_for_in_one_tick_start_one_at_a_time_oldest_first(settings):
    """The drain sensor asks for one run per day not yet stored, oldest first; two drains at once
    would wait on each other's lock (core.ingest.live_feedback), so the queue starts them one by one,
    first in first out."""
    prepare_instance(settings)
    defs = build_defs(settings)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(module_name="pipelines.definitions", working_directory=str(REPO)), "echotune"
        )
        remote = next(iter(origin.create_location(instance).get_repositories().values())).get_full_job(drain_job.name)
        runs = [
            instance.create_run_for_job(
                defs.resolve_job_def(drain_job.name),
                status=dg.DagsterRunStatus.QUEUED,
                remote_job_origin=remote.get_remote_origin(),
                tags={**remote.run_tags, "dagster/partition": day},
            )
            for day in ("2025-03-01", "2025-03-02")
        ]
        daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)

        def next_up() -> list[str]:
            return [
                run.tags["dagster/partition"]
                for run in daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)
            ]

        assert next_up() == ["2025-03-01"]
        instance.report_dagster_event(
            dg.DagsterEvent(event_type_value="PIPELINE_STARTING", job_name=drain_job.name), run_id=runs[0].run_id
        )
        assert next_up() == []  # the second waits while the first runs
        instance.report_run_failed(runs[0])
        assert next_up() == ["2025-03-02"]


def test_every_training_job_carries_the_tag_and_jobs_run_multiprocess(settings):
    defs = build_defs(settings)
    trains = {
        name
        for name in (
            "materialize_everything",
            "retrain",
            "search_hyperparameters",
            "drain_feedback",
            "publish_champion",
            "rollback_champion",
        )
        if defs.resolve_job_def(name).run_tags.get(TRAINING_TAG) == "true"
    }
    assert trains == {"materialize_everything", "retrain", "search_hyperparameters"}
    assert {
        defs.resolve_job_def(name).executor_def.name for name in ("materialize_everything", "retrain", "drain_feedback")
    } == {"multiprocess"}


def test_the_password_is_never_written(tmp_path):
    settings = Settings(
        home=tmp_path, database_url="postgresql://echotune:s%40cret@db.internal:6543/echo?sslmode=require"
    )
    text = yaml.safe_dump(instance_config(settings))
    assert "cret" not in text
    storage = instance_config(settings)["storage"]["postgres"]["postgres_db"]
    assert storage == {
        "username": "echotune",
        "hostname": "db.internal",
        "port": 6543,
        "db_name": "echo",
        "scheme": "postgresql+psycopg2",
        "params": {"sslmode": "require", "options": "-csearch_path=dagster"},
    }
    # MLflow gets the whole URL in process, in its own schema; the demo's MLflow server gets it in its
    # environment, nothing of it on its command line
    assert (
        settings.mlflow_tracking_uri
        == "postgresql+psycopg2://echotune:s%40cret@db.internal:6543/echo?sslmode=require&options=-csearch_path%3Dmlflow"
    )
    command, env = mlflow_server(settings)
    assert env == {"MLFLOW_BACKEND_STORE_URI": settings.mlflow_tracking_uri}
    assert not [part for part in command if "cret" in part or "db.internal" in part]


def test_a_bad_database_url_is_refused_naming_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("ECHOTUNE_HOME", str(tmp_path))
    for url, problem in [
        ("mysql://u@h/db", "ECHOTUNE_DATABASE_URL: must be a PostgreSQL URL"),
        ("postgresql://u@h", "ECHOTUNE_DATABASE_URL: must name a user, a host and a database"),
        ("postgresql://u@h/db?options=-cx=y", "ECHOTUNE_DATABASE_URL: must not set options"),
        (
            "postgresql://u@127.0.0.1:1/db",
            "cannot connect to PostgreSQL database 'db' at 127.0.0.1:1 (ECHOTUNE_DATABASE_URL)",
        ),
    ]:
        monkeypatch.setenv("ECHOTUNE_DATABASE_URL", url)
        get_settings.cache_clear()
        result = CliRunner().invoke(main, ["pipeline"])
        assert result.exit_code == 1 and problem in result.output, result.output
    get_settings.cache_clear()
    assert not (tmp_path / "dagster_home").exists()  # refused before anything was written


# --- on PostgreSQL ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_training_runs_queued_beyond_the_limit_wait(settings, database_url, monkeypatch):
    # with a password (this server trusts loopback, so it is carried here, not checked): Dagster's processes
    # get it from the environment, never from the file
    with_password = database_url.replace("postgres@", "postgres:pa%24%24word@")
    monkeypatch.setenv("ECHOTUNE_DATABASE_URL", with_password)  # resources name the variable (dg.EnvVar)
    settings = on_postgres(settings, with_password)
    assert prepare_instance(settings) == {"DAGSTER_HOME": str(settings.dagster_home), "PGPASSWORD": "pa$$word"}
    assert "word" not in (settings.dagster_home / "dagster.yaml").read_text()
    defs = build_defs(settings)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert [
            type(s).__name__ for s in (instance.run_storage, instance.event_log_storage, instance.schedule_storage)
        ] == ["PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"]
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 8

        # the code location as the webserver and the daemon load it (pipelines.definitions, in process here)
        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(module_name="pipelines.definitions", working_directory=str(REPO)), "echotune"
        )
        repository = next(iter(origin.create_location(instance).get_repositories().values()))

        def enqueue(job_name: str) -> dg.DagsterRun:
            """Submit a run the way the launchpad and the sensors do: with its job's tags, to the queue."""
            remote = repository.get_full_job(job_name)
            return instance.create_run_for_job(
                defs.resolve_job_def(job_name),
                status=dg.DagsterRunStatus.QUEUED,
                tags=dict(remote.run_tags),
                remote_job_origin=remote.get_remote_origin(),
            )

        def started(run: dg.DagsterRun) -> None:  # what the daemon records before it hands a run to the launcher
            instance.report_dagster_event(
                dg.DagsterEvent(event_type_value="PIPELINE_STARTING", job_name=run.job_name), run_id=run.run_id
            )

        daily, by_volume = enqueue(retrain_job.name), enqueue(everything_job.name)
        drain = enqueue(drain_job.name)
        assert run_queue(instance) == [retrain_job.name, drain_job.name]  # the second training run is held back
        started(daily)
        started(drain)
        assert run_queue(instance) == []
        assert instance.get_run_by_id(by_volume.run_id).status == dg.DagsterRunStatus.QUEUED
        instance.report_run_failed(daily)  # finished (failed or not), it frees the training slot
        assert run_queue(instance) == [everything_job.name]

        result = dg.materialize(
            defs.assets,
            selection=["synthetic_catalog", "tracks"],
            resources=resources_from(settings),
            instance=instance,
        )
        assert result.success and instance.get_latest_materialization_event(dg.AssetKey("tracks")) is not None


@pytest.mark.slow
def test_a_user_who_may_not_create_schemas_is_told_what_to_do(settings, database_url, limited_role, monkeypatch):
    name = database_url.rsplit("/", 1)[1]
    limited_url = f"postgresql://{limited_role}@127.0.0.1:5432/{name}"
    monkeypatch.setenv("ECHOTUNE_HOME", str(settings.home))
    monkeypatch.setenv("ECHOTUNE_DATABASE_URL", limited_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["pipeline"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert (
        f"user '{limited_role}' may not create schema 'dagster' in database '{name}' at 127.0.0.1:5432" in result.output
    )
    assert f"CREATE SCHEMA dagster AUTHORIZATION {limited_role}" in result.output

    admin = psycopg2.connect(**SERVER, dbname=name)  # what the message says: the schemas made for the user
    try:
        admin.autocommit = True
        with admin.cursor() as cursor:
            for schema in (DAGSTER_SCHEMA, MLFLOW_SCHEMA):
                cursor.execute(f"CREATE SCHEMA {schema} AUTHORIZATION {limited_role}")
    finally:
        admin.close()
    limited = on_postgres(settings, limited_url)
    prepare_instance(limited)
    with dg.DagsterInstance.from_config(str(limited.dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage" and instance.get_runs() == []


@pytest.mark.slow
def test_echotune_pipeline_on_a_fresh_database(settings, database_url, postgres_admin):
    """`echotune pipeline` with only ECHOTUNE_DATABASE_URL set: Dagster and MLflow create their schemas'
    tables on first use (migrated to their newest revision), nothing lands in SQLite."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECHOTUNE_", "DAGSTER_", "MLFLOW_"))}
    env.update(
        {
            "ECHOTUNE_HOME": str(settings.home),
            "ECHOTUNE_DATABASE_URL": database_url,
            "ECHOTUNE_REDIS_URL": settings.redis_url,
            "ECHOTUNE_REDIS_PREFIX": settings.redis_prefix,
            "ECHOTUNE_SYNTH_TRACKS": "300",
            "ECHOTUNE_SYNTH_USERS": "80",
            "ECHOTUNE_SYNTH_EVENTS": "6000",
            "ECHOTUNE_SYNTH_DAYS": "5",
            "ECHOTUNE_TRAIN_PARAMS": '{"dimensions": 16}',
            "ECHOTUNE_EXPERIMENTS_DIR": str(REPO / "experiments" / "definitions"),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "echotune.cli", "pipeline"],
        cwd=settings.home,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    settings = on_postgres(settings, database_url)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        runs = {run.job_name: run for run in instance.get_runs()}
        assert runs[everything_job.name].status == dg.DagsterRunStatus.SUCCESS
        assert runs[everything_job.name].tags[TRAINING_TAG] == "true"
        assert instance.get_latest_materialization_event(dg.AssetKey("recommender_model")) is not None
    registry = ModelRegistry.from_settings(settings)
    assert registry.alias(CHAMPION) == "1"
    assert (
        not (settings.home / "mlruns" / "mlflow.db").exists()
        and not (settings.dagster_home / "history" / "runs.db").exists()
    )

    name = database_url.rsplit("/", 1)[1]
    connection = psycopg2.connect(**SERVER, dbname=name)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN ('public', %s, %s)",
                (DAGSTER_SCHEMA, MLFLOW_SCHEMA),
            )
            tables = set(cursor.fetchall())
            revisions = {}
            for schema in (DAGSTER_SCHEMA, MLFLOW_SCHEMA):
                cursor.execute(f"SELECT version_num FROM {schema}.alembic_version")
                revisions[schema] = cursor.fetchone()[0]
    finally:
        connection.close()
    assert {(DAGSTER_SCHEMA, t) for t in ("runs", "event_logs", "jobs", "job_ticks")} <= tables
    assert {
        (MLFLOW_SCHEMA, t) for t in ("runs", "experiments", "registered_models", "registered_model_aliases")
    } <= tables
    assert not {t for s, t in tables if s == "public"}
    assert revisions == {DAGSTER_SCHEMA: head_revision("dagster"), MLFLOW_SCHEMA: head_revision("mlflow")}


def head_revision(package: str) -> str:
    """The newest migration a package ships: what a fresh database must be at after first use."""
    import dagster
    import mlflow

    folder = {
        "dagster": Path(dagster.__file__).parent / "_core" / "storage" / "alembic",
        "mlflow": Path(mlflow.__file__).parent / "store" / "db_migrations",
    }[package]
    return ScriptDirectory(str(folder)).get_current_head()


# --- secrets kept out of stores, files, logs and command lines (issue 23, item 1) ------------------------
def _hits_in_database(url: str, needle: bytes) -> list[str]:
    """Every table (any schema) of the database at ``url`` with a row holding ``needle``: rows cast to text,
    and each binary value also inflated (Dagster keeps snapshots zlib-compressed)."""
    import zlib

    found = []
    connection = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
            for schema, table in cursor.fetchall():
                cursor.execute(f'SELECT t::text FROM "{schema}"."{table}" t')
                texts = [row[0].encode() for row in cursor.fetchall()]
                cursor.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                    "AND data_type = 'bytea'",
                    (schema, table),
                )
                for (column,) in cursor.fetchall():
                    cursor.execute(f'SELECT "{column}" FROM "{schema}"."{table}" WHERE "{column}" IS NOT NULL')
                    for (blob,) in cursor.fetchall():
                        texts.append(bytes(blob))
                        try:
                            texts.append(zlib.decompress(bytes(blob)))
                        except zlib.error:
                            pass
                found += [f"{schema}.{table}" for text in texts if needle in text][:1]
    finally:
        connection.close()
    return found


def _hits_in_files(root: Path, needle: bytes) -> list[str]:
    return [str(path) for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def _hits_in_command_lines(needle: bytes) -> list[str]:
    """Every process of the host whose command line holds ``needle`` (what `ps` shows to every user)."""
    hits = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in cmdline.read_bytes():
                hits.append(cmdline.parent.name)
        except OSError:  # gone meanwhile, or not ours to read
            pass
    return hits


@pytest.mark.slow
def test_a_database_password_reaches_no_dagster_row_file_log_or_command_line(
    settings, database_url, monkeypatch, caplog, capfd, tmp_path
):
    """Issue 23: with ECHOTUNE_DATABASE_URL carrying a password, the tracking URI (and so the password) was
    plain resource config, written into every run's snapshot in run storage, and the image's MLflow UI
    had it on its command line. A real job runs on Dagster and MLflow in PostgreSQL; then every row of
    every table of the database, every file of the project's home (Dagster's home and instance file, the
    MLflow artifacts, logs), the logs and the command lines of the host's processes (the MLflow UI
    started the way the demo starts it) are searched for the password: no hit."""
    import logging
    import signal
    import socket
    import urllib.request

    from tests.waiting import wait_until

    password = f"Pw{uuid.uuid4().hex}"
    url = database_url.replace("postgres@", f"postgres:{password}@")  # trusted on loopback: carried, not checked
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("ECHOTUNE_DATABASE_URL", url)  # a secret arrives in the environment
    settings = on_postgres(settings, url).model_copy(update={"mlflow_port": port})
    for name, value in prepare_instance(settings).items():  # what `echotune pipeline` gives Dagster's processes
        monkeypatch.setenv(name, value)
    defs = build_defs(settings)
    assert resources_from(settings)["mlflow"].tracking_uri == ""  # from the variable at run time

    with caplog.at_level(logging.DEBUG), dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        result = defs.resolve_job_def(everything_job.name).execute_in_process(instance=instance)
        assert result.success
        (run,) = instance.get_runs()
        snapshot = instance.get_job_snapshot(run.job_snapshot_id)
        assert password not in str(snapshot) and "ECHOTUNE_DATABASE_URL" in str(snapshot)  # the name, not the value
    assert ModelRegistry.from_settings(settings).alias(CHAMPION) == "1"  # MLflow's store is in the database

    command, env = mlflow_server(settings)
    log = tmp_path / "mlflow-ui.log"
    with open(log, "wb") as out:
        ui = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    return response.status == 200
            except OSError:
                assert ui.poll() is None, log.read_text()[-2000:]
                return False

        wait_until(answers, 120, "the MLflow UI answering")
        assert _hits_in_command_lines(password.encode()) == []
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(30)

    needle = password.encode()
    assert _hits_in_database(url, needle) == []
    assert _hits_in_files(settings.home, needle) == [] and _hits_in_files(settings.dagster_home, needle) == []
    assert needle not in log.read_bytes()
    out, err = capfd.readouterr()
    assert password not in caplog.text and password not in out + err


def test_a_redis_url_with_a_password_reaches_dagster_as_its_variable(settings, monkeypatch):
    secret = settings.model_copy(update={"redis_url": "redis://:hunter2@redis.internal:6379/0"})
    with pytest.raises(ValueError, match=r"ECHOTUNE_REDIS_URL carries a password \(redis://:\*\*\*@redis.internal"):
        resources_from(secret)  # set in .env or code: the run's processes would not find it
    monkeypatch.setenv("ECHOTUNE_REDIS_URL", secret.redis_url)
    redis_config = resources_from(secret)["redis"]
    assert isinstance(redis_config.url, dg.EnvVar) and redis_config.url.env_var_name == "ECHOTUNE_REDIS_URL"
    assert resources_from(settings)["redis"].url == settings.redis_url  # no password: a plain value


def test_a_password_in_dotenv_reaches_dagster_as_its_variable(tmp_path, monkeypatch):
    """A URL with a password in .env (the settings read it, the environment does not hold it): the command
    line puts it in its process environment, as Dagster's own tools load .env, so the resources take it as
    dg.EnvVar and the processes the CLI starts inherit it. Never over a variable already set."""
    from echotune.config import load_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ECHOTUNE_REDIS_URL", "unset")
    monkeypatch.delenv("ECHOTUNE_REDIS_URL")  # absent now, and absent again after the test
    monkeypatch.setenv("ECHOTUNE_HOME", str(tmp_path))
    (tmp_path / ".env").write_text("ECHOTUNE_REDIS_URL=redis://:hunter2@127.0.0.1:1/0\n")
    get_settings.cache_clear()
    try:
        settings = load_settings()
    finally:
        get_settings.cache_clear()
    assert os.environ["ECHOTUNE_REDIS_URL"] == "redis://:hunter2@127.0.0.1:1/0"
    config = resources_from(settings)["redis"].url
    assert isinstance(config, dg.EnvVar) and config.env_var_name == "ECHOTUNE_REDIS_URL"
