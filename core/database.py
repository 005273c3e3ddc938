"""The PostgreSQL database that ``ECHOTUNE_DATABASE_URL`` names, shared by Dagster and MLflow.

Both keep a table called ``runs`` and their own ``alembic_version``, so in one database they would
collide (MLflow's first migration fails on Dagster's ``runs``): each gets a schema of its own, selected
by the connection's ``search_path``. Each creates and migrates its tables on first use; only the schema
has to exist before, which :func:`ensure_schema` sees to.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

DAGSTER_SCHEMA, MLFLOW_SCHEMA = "dagster", "mlflow"
# psycopg2 explicitly: SQLAlchemy 2.1 picks psycopg 3 for a bare postgresql://, which dagster-postgres breaks on
DRIVER = "postgresql+psycopg2"
_SCHEMES = ("postgresql", "postgres", DRIVER)


@dataclass(frozen=True)
class Database:
    """The parts of a ``postgresql://user:password@host:port/db?params`` URL."""

    username: str
    password: str
    host: str
    port: int
    name: str
    params: dict[str, str]

    @classmethod
    def parse(cls, url: str) -> Database:
        """Split ``url``; a ValueError says what is missing (the setting's name is added by the caller)."""
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ValueError(
                f"must be a PostgreSQL URL (postgresql://user:password@host:5432/db), not scheme {parts.scheme!r}"
            )
        name = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not name or not parts.username:
            raise ValueError("must name a user, a host and a database: postgresql://user:password@host:5432/db")
        try:
            port = parts.port or 5432
        except ValueError:
            raise ValueError(f"has a port that is not a number: {parts.netloc.rsplit(':', 1)[-1]!r}") from None
        params = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        if "options" in params:
            raise ValueError(
                "must not set options: EchoTune sets the search_path of Dagster's and MLflow's schemas itself"
            )
        return cls(unquote(parts.username), unquote(parts.password or ""), parts.hostname, port, name, params)

    def url(self, schema: str) -> str:
        """SQLAlchemy URL (psycopg2) whose connections create and find their tables in ``schema``."""
        userinfo = quote(self.username, safe="") + (f":{quote(self.password, safe='')}" if self.password else "")
        query = urlencode({**self.params, **search_path(schema)}, quote_via=quote)
        return f"{DRIVER}://{userinfo}@{self.host}:{self.port}/{quote(self.name, safe='')}?{query}"


def search_path(schema: str) -> dict[str, str]:
    """The libpq connection parameter that makes ``schema`` the one tables are created in."""
    return {"options": f"-csearch_path={schema}"}


def ensure_schema(url: str) -> None:
    """Create the schema a PostgreSQL URL's search_path selects, when it does not exist yet; any other
    URL (sqlite, a URL without a search_path) is left alone. Creating it needs the CREATE privilege on the
    database; a ConnectionError or PermissionError says what to do."""
    parts = urlsplit(url)
    options = parse_qs(parts.query).get("options", [""])[-1]
    if parts.scheme not in _SCHEMES or not options.startswith("-csearch_path="):
        return
    schema = options.removeprefix("-csearch_path=")
    import psycopg2  # only a deployment on PostgreSQL needs the driver loaded
    from psycopg2 import errors, sql

    # libpq reads the same URL (with its own scheme), so host, credentials and parameters such as sslmode carry over
    where = f"database {unquote(parts.path.lstrip('/'))!r} at {parts.hostname}:{parts.port or 5432}"
    try:
        connection = psycopg2.connect(parts._replace(scheme="postgresql").geturl(), connect_timeout=10)
    except psycopg2.OperationalError as exc:
        raise ConnectionError(
            f"cannot connect to PostgreSQL {where} (ECHOTUNE_DATABASE_URL): {str(exc).strip()}"
        ) from None
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            # looked up first: a user without CREATE on the database can still use a schema made for it
            cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
            if cursor.fetchone() is None:
                cursor.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    except errors.InsufficientPrivilege:
        user = unquote(parts.username or "")
        raise PermissionError(
            f"user {user!r} may not create schema {schema!r} in {where}: GRANT CREATE ON DATABASE to it, or create the "
            f"schema for it (CREATE SCHEMA {schema} AUTHORIZATION {user})"
        ) from None
    finally:
        connection.close()
