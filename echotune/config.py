"""The settings as the command line reads them: a bad ``ECHOTUNE_*`` value is a one-line error that
names the variable, not a traceback; a URL with a password read from ``.env`` joins the process
environment, so Dagster's resources can take it as ``dg.EnvVar`` (Dagster's own tools load ``.env`` the
same way) and the processes the CLI starts inherit it."""

from __future__ import annotations

import os

import click
from pydantic import ValidationError

from core.settings import Settings, get_settings
from core.urls import has_password

SECRET_URLS = ("redis_url", "database_url", "mlflow_tracking_uri")  # settings that may carry a password


def load_settings() -> Settings:
    """:func:`core.settings.get_settings`, or a ClickException naming each bad variable."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = "_".join(str(part) for part in error["loc"]).upper()
            problem = error["msg"].removeprefix("Value error, ")
            problems.append(f"ECHOTUNE_{field}: {problem}" if field else problem)
        raise click.ClickException("; ".join(problems)) from None
    for name in set(SECRET_URLS) & settings.model_fields_set:  # given (environment or .env), not derived
        value = getattr(settings, name)
        if has_password(value):
            os.environ.setdefault(f"ECHOTUNE_{name.upper()}", value)  # never overrides the environment
    return settings
