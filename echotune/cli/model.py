"""``echotune model ...``: the registered model's versions and the champion alias, from a terminal."""

from __future__ import annotations

import json

import click

from echotune.settings import get_settings


def _configure():
    from models import tracking

    settings = get_settings()
    tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_root, settings.mlflow_experiment)
    return settings, tracking


@click.group()
def model() -> None:
    """Registered model versions, promotion and rollback."""


@model.command()
def status() -> None:
    """Every version with its aliases, gate verdict and held-out metric, as JSON lines."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    settings, tracking = _configure()
    client = MlflowClient()
    try:
        registered = client.get_registered_model(settings.registered_model)
    except MlflowException as exc:
        raise click.ClickException(f"no model registered as {settings.registered_model!r} yet: run `echotune pipeline`") from exc
    # search_model_versions leaves aliases empty on some stores; the registered model always carries them.
    aliases: dict[str, list[str]] = {}
    for alias, number in registered.aliases.items():
        aliases.setdefault(str(number), []).append(alias)
    for version in sorted(client.search_model_versions(f"name = '{settings.registered_model}'"), key=lambda v: int(v.version)):
        metrics = tracking.run_metrics(settings.registered_model, version.version)
        click.echo(json.dumps({
            "version": str(version.version), "aliases": sorted(aliases.get(str(version.version), [])), "promotion": version.tags.get("promotion"),
            "reason": version.tags.get("promotion_reason"),
            settings.promotion_metric: metrics.get(f"test_{settings.promotion_metric}"),
        }))  # fmt: skip


@model.command()
@click.option("--to", "to_version", default=None, help="Version to make champion (default: the newest earlier promoted one).")
def rollback(to_version: str | None) -> None:
    """Move the champion alias back, in MLflow and in Redis: the API serves the old version within seconds."""
    import redis

    from echotune.contracts.redis_keys import RedisKeys
    from echotune.redis_server import redis_url
    from echotune.vectorstore import VectorStore

    settings, tracking = _configure()
    try:
        previous, now = tracking.rollback(settings.registered_model, to_version)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    with redis_url(settings.redis_url, settings.redis_dir) as url:
        store = VectorStore(redis.Redis.from_url(url), RedisKeys(settings.redis_prefix))
        if now not in store.versions():
            raise click.ClickException(f"champion is now version {now} in MLflow, but it is not published in Redis: run `echotune pipeline`")
        store.set_alias("champion", now)
    click.echo(json.dumps({"previous_champion": previous, "champion": now}))


COMMANDS = [model]
