"""Issue 23: PostgreSQL with ``sslmode=verify-full``. The query string of ECHOTUNE_DATABASE_URL carries
sslmode and sslrootcert to every connection the project makes: the schema check (psycopg2), Dagster's
run, event-log and schedule storage (dagster-postgres), and MLflow's tracking store and registry
(SQLAlchemy), proven against a private PostgreSQL that only takes TLS, with a CA the test makes."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import dagster as dg
import psycopg2
import pytest
from mlflow import MlflowClient

from core.database import MLFLOW_SCHEMA
from core.model_registry import ModelRegistry
from core.settings import Settings
from pipelines.instance import instance_config, prepare_instance
from tests.tls_certificates import make_certificates
from tests.tls_postgres import TlsPostgres

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tls_postgres():
    server = TlsPostgres().start()
    yield server
    server.stop()


@dg.asset
def a_number() -> int:
    return 7


def test_dagster_and_mlflow_reach_postgresql_over_verified_tls(tmp_path, tls_postgres):
    ca = tls_postgres.certificates.ca
    url = tls_postgres.url(sslmode="verify-full", sslrootcert=str(ca))
    settings = Settings(home=tmp_path, database_url=url)
    # what each engine is given: MLflow's SQLAlchemy URL and Dagster's connection parameters
    query = parse_qs(urlsplit(settings.mlflow_tracking_uri).query)
    assert (query["sslmode"], query["sslrootcert"]) == (["verify-full"], [str(ca)]), settings.mlflow_tracking_uri
    params = instance_config(settings)["storage"]["postgres"]["postgres_db"]["params"]
    assert params["sslmode"] == "verify-full" and params["sslrootcert"] == str(ca)

    # Dagster: the schema made over TLS, then a real materialization stored in PostgreSQL
    prepare_instance(settings)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert dg.materialize([a_number], instance=instance).success
        assert instance.get_latest_materialization_event(dg.AssetKey("a_number")) is not None

    # MLflow: its store migrated and written over TLS, through the one way every process opens it
    registry = ModelRegistry.from_settings(settings)
    assert registry is not None
    experiments = MlflowClient(tracking_uri=settings.mlflow_tracking_uri).search_experiments()
    assert settings.mlflow_experiment in {e.name for e in experiments}

    # every one of those connections was TLS: the server takes no other, and says so for the live ones
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT bool_and(ssl), count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE backend_type = 'client backend'"
        )
        all_ssl, clients = cursor.fetchone()
        cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname IN ('dagster', %s)", (MLFLOW_SCHEMA,))
        schemas = {row[0] for row in cursor.fetchall()}
    assert all_ssl and clients >= 1 and schemas == {"dagster", MLFLOW_SCHEMA}


def test_a_server_the_ca_did_not_sign_or_a_plain_connection_is_refused(tmp_path, tls_postgres):
    other_ca = make_certificates(tmp_path / "other").ca
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        psycopg2.connect(tls_postgres.url(sslmode="verify-full", sslrootcert=str(other_ca)), connect_timeout=5)
    with pytest.raises(psycopg2.OperationalError, match="(?i)no pg_hba.conf entry|rejects connection"):
        psycopg2.connect(tls_postgres.url(sslmode="disable"), connect_timeout=5)
