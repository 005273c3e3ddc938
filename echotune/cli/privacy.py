"""``echotune pseudonym NAME``: the pseudonym a listener's imported data is stored under, for
answering a data-subject request (access, erasure) about them."""

from __future__ import annotations

import click

from echotune.config import load_settings


@click.command()
@click.argument("name")
def pseudonym(name: str) -> None:
    """Print the pseudonym under which NAME's imported listening history is stored (the owner of a
    Spotify export: its username, or the folder or --user name it was imported with). Erase it with
    DELETE /users/<pseudonym>."""
    from core.ingest.service import pseudonymizer

    click.echo(pseudonymizer(load_settings())(name))


COMMANDS = [pseudonym]
