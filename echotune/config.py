"""The settings as the command line reads them: a bad ``ECHOTUNE_*`` value is a one-line error that
names the variable, not a traceback."""

from __future__ import annotations

import click
from pydantic import ValidationError

from core.settings import Settings, get_settings


def load_settings() -> Settings:
    """:func:`core.settings.get_settings`, or a ClickException naming each bad variable."""
    try:
        return get_settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = "_".join(str(part) for part in error["loc"]).upper()
            problem = error["msg"].removeprefix("Value error, ")
            problems.append(f"ECHOTUNE_{field}: {problem}" if field else problem)
        raise click.ClickException("; ".join(problems)) from None
