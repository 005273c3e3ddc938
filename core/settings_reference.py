"""The settings reference (docs/settings.md), written from :class:`core.settings.Settings` itself: one
row per field, grouped by the section comments of the class, with its variable, default and
description. ``echotune docs`` rewrites the file; a test fails when the file and the class disagree,
so the reference cannot go stale."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from core.settings import Settings

REFERENCE = Path("docs") / "settings.md"
_SECTION = re.compile(r"^\s+# --- (?P<title>.+?) -{3,}")
_FIELD = re.compile(r"^    (?P<name>[a-z_0-9]+): ")
# defaults computed at run time, said in words
_COMPUTED = {"home": "the current directory", "train_params": "`{}`"}


def sections() -> list[tuple[str, list[str]]]:
    """(section title, field names) in the order the class declares them."""
    found: list[tuple[str, list[str]]] = []
    for line in inspect.getsource(Settings).splitlines():
        if match := _SECTION.match(line):
            found.append((match["title"], []))
        elif (match := _FIELD.match(line)) and match["name"] in Settings.model_fields and found:
            found[-1][1].append(match["name"])
    return found


def default_text(name: str) -> str:
    field = Settings.model_fields[name]
    if name in _COMPUTED:
        return _COMPUTED[name]
    value = field.default
    if value is PydanticUndefined or value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "unset" if not value.get_secret_value() else "(secret)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return "empty"
    return f"`{value}`"


def render() -> str:
    """The whole of docs/settings.md."""
    lines = [
        "# Settings",
        "",
        "<!-- Generated from core/settings.py by `echotune docs`; a test fails when this file is stale. -->",
        "",
        "Every knob is an environment variable with the prefix `ECHOTUNE_` (or a line in `.env`), read once",
        "by `core.settings.Settings` and passed down. Relative paths resolve against `ECHOTUNE_HOME`; every",
        "folder under the data and var roots is derived in `core.layout`. Secrets (`ECHOTUNE_TOKEN_KEY`,",
        "`ECHOTUNE_PSEUDONYM_KEY`, `ECHOTUNE_SPOTIFY_CLIENT_SECRET`, passwords in URLs) are read from the",
        "environment at run time and never written into Dagster's run configuration.",
    ]
    for title, names in sections():
        lines += ["", f"## {title[0].upper()}{title[1:]}", "", "| variable | default | meaning |", "|---|---|---|"]
        for name in names:
            description = " ".join((Settings.model_fields[name].description or "").split()).replace("|", "\\|")
            lines.append(f"| `ECHOTUNE_{name.upper()}` | {default_text(name)} | {description} |")
    return "\n".join(lines) + "\n"


def write(root: Path) -> Path:
    """Rewrite ``root``/docs/settings.md; returns its path."""
    path = root / REFERENCE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    return path
