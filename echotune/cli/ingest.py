"""``echotune ingest ...``: imports for people who don't use the Dagster UI.

Each command shows a progress bar on stderr (on a terminal) and ends with one JSON line on stdout:
``{"read": N, "accepted": N, "rejected": N, "duplicates": N, ...}``. Exit status 0 when the rejected
share is within ``ECHOTUNE_REJECT_THRESHOLD``, 3 when it is not (the valid rows are stored either way;
the rejects table says what was wrong with the others), 2 on unusable input.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

from echotune.config import load_settings

EXIT_TOO_MANY_REJECTS = 3


def _finish(result) -> None:
    from core.tables import OfflineStore

    settings = load_settings()
    summary = result.summary()
    summary["rejects_table"] = str(OfflineStore(settings.layout.tables).rejects_path(result.source))
    click.echo(json.dumps(summary, default=str))
    if result.rejected_share > settings.reject_threshold:
        click.echo(
            f"rejected share {result.rejected_share:.2%} is above the threshold {settings.reject_threshold:.2%}",
            err=True,
        )
        sys.exit(EXIT_TOO_MANY_REJECTS)


def _run(paths: tuple[Path, ...], work: Callable) -> None:
    from tqdm import tqdm

    from core.tables import OfflineStore

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise click.UsageError(f"no such file: {', '.join(missing)}")
    store = OfflineStore(load_settings().layout.tables)
    with tqdm(total=len(paths), unit="file", file=sys.stderr, disable=None) as bar:
        rows = 0

        def progress(n: int) -> None:
            nonlocal rows
            rows += n
            bar.update(1)
            bar.set_postfix(rows=rows)

        try:
            result = work(store, list(paths), progress)
        except ValueError as exc:  # unusable input: say what and where
            raise click.ClickException(str(exc)) from exc
    _finish(result)


_PATHS = click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))


@click.group()
def ingest() -> None:
    """Import data into the offline store (the same tables the pipeline trains on)."""


@ingest.command()
@_PATHS
def tracks(paths: tuple[Path, ...]) -> None:
    """Track metadata and audio features from CSV, Parquet or JSON files in Spotify's schema."""
    from core.ingest.service import ingest_track_files

    _run(paths, lambda store, p, progress: ingest_track_files(store, p, progress))


@ingest.command()
@_PATHS
@click.option(
    "--user", default=None, help="Owner of exports without a username field (default: each file's folder name)."
)
def history(paths: tuple[Path, ...], user: str | None) -> None:
    """Spotify streaming history exports (extended or account data) as feedback events, PII removed."""
    from core.ingest.service import ingest_history, pseudonymizer

    pseudonyms = pseudonymizer(load_settings())
    _run(
        paths,
        lambda store, p, progress: ingest_history(
            store, p, pseudonyms, user=user or load_settings().history_user or None, progress=progress
        ),
    )


@ingest.command()
@_PATHS
@click.option("--source", default="interaction_logs", show_default=True, help="Name of this log in the store.")
@click.option(
    "--kind",
    type=click.Choice(["auto", "count", "weight"]),
    default="auto",
    show_default=True,
    help="What the value column holds: listen counts (log1p at training) or ready weights.",
)
def interactions(paths: tuple[Path, ...], source: str, kind: str) -> None:
    """User-item logs (user, item or track id, count or weight, optional timestamp) from CSV, TSV/.dat or Parquet."""
    from core.ingest.service import ingest_interaction_logs

    _run(
        paths, lambda store, p, progress: ingest_interaction_logs(store, p, source=source, kind=kind, progress=progress)
    )


COMMANDS = [ingest]
