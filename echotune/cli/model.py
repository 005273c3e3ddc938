"""``echotune model ...``: the registered model's versions and the champion alias, from a terminal."""

from __future__ import annotations

import json
from pathlib import Path

import click

from echotune.config import load_settings


def _registry(settings):
    from core.model_registry import ModelRegistry

    return ModelRegistry.from_settings(settings)


@click.group()
def model() -> None:
    """Registered model versions, promotion and rollback."""


@model.command()
def status() -> None:
    """Every version with its aliases, gate verdict, rollout decision and held-out metric, as JSON lines."""
    settings = load_settings()
    registry = _registry(settings)
    versions = registry.versions()
    if not versions:
        raise click.ClickException(f"no model registered as {settings.registered_model!r} yet: run `echotune pipeline`")
    aliases: dict[str, list[str]] = {}
    for alias, version in registry.aliases().items():
        aliases.setdefault(version, []).append(alias)
    for version in versions:
        tags = registry.version_tags(version)
        metrics = registry.run_metrics(version)
        click.echo(
            json.dumps(
                {
                    "version": version,
                    "aliases": sorted(aliases.get(version, [])),
                    "promotion": tags.get("promotion"),
                    "reason": tags.get("promotion_reason"),
                    "rollout": tags.get("rollout"),
                    "rollout_reason": tags.get("rollout_reason"),
                    settings.promotion_metric: metrics.get(f"test_{settings.promotion_metric}"),
                }
            )
        )


@model.command()
@click.option(
    "--to", "to_version", default=None, help="Version to make champion (default: the newest earlier promoted one)."
)
def rollback(to_version: str | None) -> None:
    """Move the champion alias back, in MLflow and in Redis: the API serves the old version within seconds."""
    from core import release
    from core.contracts.redis_keys import RedisKeys
    from core.redis_clients import connected
    from core.vectorstore import VectorStore

    settings = load_settings()
    registry = _registry(settings)
    with connected(settings, "cli") as client:
        store = VectorStore(client, RedisKeys(settings.redis_prefix))
        try:
            previous, now = release.rollback(registry, store, to_version)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({"previous_champion": previous, "champion": now}))


@model.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--trained-until-ms",
    type=int,
    default=0,
    help="Epoch ms of the newest event in its training data (the worker folds newer ones in); default 0.",
)
def register(path: Path, trained_until_ms: int) -> None:
    """Register a model saved by `echotune train --out PATH` as a new version (no gate, no alias moves):
    `echotune model rollout VERSION` then serves it to a canary share. Prints the version as JSON."""
    from core import release

    settings = load_settings()
    try:
        record = release.register_folder(_registry(settings), path, {"trained_until_ms": str(trained_until_ms)})
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({"version": record.version, "run_id": record.run_id}))


@model.command()
@click.argument("version")
def rollout(version: str) -> None:
    """Roll a registered version out: it becomes `candidate`, is published, and is served to
    ECHOTUNE_CANARY_SHARE of listeners; the rollout sensor promotes it or rolls it back after each drain.
    A running rollout of another version is superseded. Prints the rollout's state as JSON."""
    from core import release
    from core.contracts.redis_keys import RedisKeys
    from core.redis_clients import connected
    from core.tables import OfflineStore
    from core.vectorstore import VectorStore
    from experiments.rollout import Rollouts
    from experiments.rollout_rules import RolloutPolicy

    settings = load_settings()
    registry = _registry(settings)
    tables = OfflineStore(settings.layout.tables)
    with connected(settings, "cli") as client:
        keys = RedisKeys(settings.redis_prefix)
        store = VectorStore(client, keys)
        try:
            if store.alias(release.CHAMPION) in (None, version):
                raise LookupError(f"version {version} cannot be rolled out: it must differ from a published champion")
            release.make_candidate(registry, version, "rolled out by hand (echotune model rollout)")
            release.publish_aliases(
                registry,
                store,
                tables.read_tracks(),
                aliases=[release.CANDIDATE],
                erased=tables.erasures,
                ann_min_tracks=settings.ann_min_tracks,
            )
            state = Rollouts(client, keys, registry, store, RolloutPolicy.from_settings(settings)).start(
                version, "rolled out by hand (echotune model rollout)"
            )
        except (LookupError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(state.as_hash()))


@model.command()
def purge() -> None:
    """Retire now every model version trained on data of a user erased since: MLflow artifacts,
    registered version and Redis vectors (the pipeline does it on every run). Needs a champion trained
    after the last erasure; prints the versions deleted as JSON."""
    from core import release
    from core.contracts.redis_keys import RedisKeys
    from core.erasure import sync_erasures
    from core.redis_clients import connected
    from core.tables import OfflineStore
    from core.vectorstore import VectorStore

    settings = load_settings()
    registry = _registry(settings)
    tables = OfflineStore(settings.layout.tables)
    with connected(settings, "cli") as client:
        keys = RedisKeys(settings.redis_prefix)
        erasures = sync_erasures(tables, client, keys)
        champion = registry.alias(release.CHAMPION)
        purged = release.purge_erased(registry, VectorStore(client, keys), erasures)
    for subject, receipt in release.purge_receipts(purged, erasures).items():
        tables.erasures.append(subject, receipt)
    if erasures and not purged and champion is not None and registry.created_at(champion) < max(erasures.values()):
        raise click.ClickException(
            f"champion version {champion} was trained before the last erasure: run `echotune pipeline` to train one without the erased users, then purge"
        )
    click.echo(json.dumps({"erased_users": len(erasures), "deleted_versions": sorted(purged, key=int)}))


COMMANDS = [model]
