"""``echotune feedback ...``: the dead letters of the feedback worker, for the on-call engineer."""

from __future__ import annotations

import contextlib
import json

import click

from echotune.config import load_settings


@contextlib.contextmanager
def _redis():
    """The configured Redis, or the embedded one (attached to while the demo runs), its key layout and
    the offline erasure log."""
    from core.contracts.redis_keys import RedisKeys
    from core.redis_clients import connected
    from core.tables import OfflineStore

    settings = load_settings()
    with connected(settings, "cli") as client:
        yield client, RedisKeys(settings.redis_prefix), OfflineStore(settings.layout.tables).erasures


@click.group()
def feedback() -> None:
    """The feedback stream's dead letters."""


@feedback.command("dead-letters")
@click.option("--count", default=20, show_default=True, help="How many of the oldest to list.")
def list_dead_letters(count: int) -> None:
    """List the oldest dead letters (id, error), one JSON line each."""
    from core.feedback_stream import dead_letters

    with _redis() as (client, keys, _):
        for letter in dead_letters(client, keys, count):
            click.echo(json.dumps(letter))


@feedback.command("replay-dead-letters")
@click.option("--limit", type=int, default=None, help="At most this many (default: all).")
def replay(limit: int | None) -> None:
    """Put dead letters back on the stream, oldest first (after fixing what made them fail). Events of
    users erased since are deleted instead (``dropped_erased``)."""
    from dataclasses import asdict

    from core.feedback_stream import replay_dead_letters

    with _redis() as (client, keys, erasures):
        click.echo(json.dumps(asdict(replay_dead_letters(client, keys, erasures, limit))))


COMMANDS = [feedback]
