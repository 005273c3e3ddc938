"""Connection URLs that may carry a password (``redis://:PASSWORD@host``,
``postgresql://user:PASSWORD@host/db``): whether one does, and the URL fit for a log line or an error
message. Such a URL reaches Dagster only as the name of its environment variable
(``pipelines.definitions``), MLflow's server only through its environment (``echotune demo``, the
image's ``mlflow-ui`` role), and a log line only redacted."""

from __future__ import annotations

from urllib.parse import urlsplit

REDACTED = "***"


def has_password(url: str | None) -> bool:
    """Whether ``url`` carries a password in its user information."""
    if not url:
        return False
    try:
        return bool(urlsplit(url).password)
    except ValueError:  # not a URL we can read: treat it as secret
        return True


def redacted(url: str | None) -> str:
    """``url`` with its password replaced by ``***`` (the rest kept, so the line still says where)."""
    if not url or not has_password(url):
        return url or ""
    parts = urlsplit(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:{REDACTED}@{host}").geturl()
