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

    settings = load_settings()
    # without the key the imports used, a new key would be made and the pseudonym would match nothing:
    # an admin would erase an id that holds nothing and get a receipt for it
    if settings.pseudonym_key is None and not settings.layout.pseudonym_key.exists():
        raise click.ClickException(
            f"no pseudonym key: neither ECHOTUNE_PSEUDONYM_KEY is set nor {settings.layout.pseudonym_key} exists. "
            "Run this where the imports ran (the same ECHOTUNE_HOME / ECHOTUNE_VAR_DIR) or set ECHOTUNE_PSEUDONYM_KEY "
            "to the key they used"
        )
    click.echo(pseudonymizer(settings)(name))


COMMANDS = [pseudonym]
