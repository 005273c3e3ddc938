"""``echotune model ...``: the registered model's versions and the champion alias, from a terminal."""

from __future__ import annotations

import json

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
    """Every version with its aliases, gate verdict and held-out metric, as JSON lines."""
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
