"""``echotune docs``: rewrite the reference pages generated from the code (docs/settings.md)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Repository root.",
)
def docs(root: Path) -> None:
    """Rewrite docs/settings.md from core/settings.py (a test fails when they disagree)."""
    from core.settings_reference import write

    click.echo(f"wrote {write(root)}")


COMMANDS = [docs]
