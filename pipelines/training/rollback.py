"""Rollback from the launchpad: move ``champion`` back, in MLflow and in Redis (what the API serves)."""

import dagster as dg

from core import release
from pipelines.resources import MlflowResource, RedisResource


class RollbackConfig(dg.Config):
    to_version: str = ""  # empty: the newest earlier version the gate promoted


@dg.op
def move_champion_back(
    context: dg.OpExecutionContext, config: RollbackConfig, mlflow: MlflowResource, redis: RedisResource
) -> str:
    try:
        previous, now = release.rollback(mlflow.registry, redis.vectors, config.to_version or None)
    except LookupError as exc:
        raise dg.Failure(str(exc)) from None
    context.log.info("champion moved from version %s back to %s (API follows within seconds)", previous, now)
    return now


@dg.job(description="Move the champion alias back to an earlier version, in MLflow and in Redis.")
def rollback_champion():
    move_champion_back()
