"""Rollback from the launchpad: move ``champion`` back, in MLflow and in Redis (what the API serves)."""

import dagster as dg

from models import tracking
from pipelines.resources import MlflowResource, RedisResource


class RollbackConfig(dg.Config):
    to_version: str = ""  # empty: the newest earlier version the gate promoted


@dg.op
def move_champion_back(context: dg.OpExecutionContext, config: RollbackConfig, mlflow: MlflowResource, redis: RedisResource) -> str:
    previous, now = tracking.rollback(mlflow.registered_model, config.to_version or None)
    if now not in redis.vectors.versions():
        raise dg.Failure(f"version {now} is champion in MLflow but not published in Redis: materialize serving_vectors")
    redis.vectors.set_alias("champion", now)
    context.log.info("champion moved from version %s back to %s (API follows within seconds)", previous, now)
    return now


@dg.job(description="Move the champion alias back to an earlier version, in MLflow and in Redis.")
def rollback_champion():
    move_champion_back()
