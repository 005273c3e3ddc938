"""Checks a data scientist can trust: on the interactions training reads, on the model before anything
is published (blocking: a bad model never reaches Redis), on what is published, and on freshness."""

import math

import dagster as dg
import numpy as np

from core.model_registry import CHALLENGER, CHAMPION
from pipelines.resources import MlflowResource, MonitoringResource, OfflineStoreResource, RedisResource

MIN_USERS, MIN_ITEMS = 10, 10
# graded weights are log1p of a summed score (models.weighting): even a thousand completions weigh under 7
MAX_WEIGHT = 20.0


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name, asset="interactions", blocking=True)
        for name in ("interactions_have_unique_pairs", "interaction_weights_in_range", "enough_users_and_items")
    ]
)
def interactions_checks(store: OfflineStoreResource):
    """One row per (user, item); finite weights within the graded range, positives above zero; enough
    users and items to learn anything."""
    graded = store.tables.read_interactions()
    duplicates = int(graded.duplicated(["user_id", "item_id"]).sum())
    yield dg.AssetCheckResult(
        check_name="interactions_have_unique_pairs", passed=duplicates == 0, metadata={"duplicate_pairs": duplicates}
    )
    weights = graded["weight"].to_numpy(dtype=float)
    bad = int(
        (~np.isfinite(weights)).sum()
        + (np.abs(weights) > MAX_WEIGHT).sum()
        + ((graded["positive"]) & (weights <= 0)).sum()
    )
    yield dg.AssetCheckResult(
        check_name="interaction_weights_in_range",
        passed=bad == 0,
        metadata={
            "out_of_range": bad,
            "max_weight": float(np.nanmax(weights)) if len(weights) else 0.0,
            "limit": MAX_WEIGHT,
        },
    )
    users, items = int(graded["user_id"].nunique()), int(graded["item_id"].nunique())
    yield dg.AssetCheckResult(
        check_name="enough_users_and_items",
        passed=users >= MIN_USERS and items >= MIN_ITEMS,
        metadata={"users": users, "items": items, "min_users": MIN_USERS, "min_items": MIN_ITEMS},
    )


@dg.asset_check(asset="recommender_model", blocking=True)
def model_beats_popularity(mlflow: MlflowResource) -> dg.AssetCheckResult:
    """The version this run registered beats popularity on held-out data and has no NaN metric.
    Blocking: when it fails, nothing of this run is published."""
    registry = mlflow.registry
    version = registry.alias(CHALLENGER)
    metrics = registry.run_metrics(version) if version else {}
    metric = f"test_{mlflow.promotion_metric}"
    value, baseline = metrics.get(metric, math.nan), metrics.get(f"popularity_{metric}", math.nan)
    nan_metrics = sorted(k for k, v in metrics.items() if isinstance(v, float) and math.isnan(v))
    passed = version is not None and not nan_metrics and value > baseline
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "version": version or "none",
            metric: value,
            f"popularity_{metric}": baseline,
            "nan_metrics": ", ".join(nan_metrics) or "none",
        },
    )


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec("published_versions_are_complete", asset="serving_vectors", blocking=True),
        dg.AssetCheckSpec("vectors_follow_the_champion", asset="serving_vectors"),
        dg.AssetCheckSpec("champion_is_fresh", asset="serving_vectors"),
    ]
)
def serving_checks(mlflow: MlflowResource, redis: RedisResource, monitoring: MonitoringResource):
    """Every alias points at a complete vector set; Redis serves what MLflow calls champion; the
    champion is not older than ECHOTUNE_MODEL_MAX_AGE_HOURS."""
    vectors, registry = redis.vectors, mlflow.registry
    incomplete = {alias: version for alias, version in vectors.aliases().items() if not vectors.is_complete(version)}
    yield dg.AssetCheckResult(
        check_name="published_versions_are_complete",
        passed=not incomplete,
        metadata={"aliases": dg.MetadataValue.json(vectors.aliases()), "incomplete": dg.MetadataValue.json(incomplete)},
    )
    in_mlflow, in_redis = registry.alias(CHAMPION), vectors.alias(CHAMPION)
    yield dg.AssetCheckResult(
        check_name="vectors_follow_the_champion",
        passed=in_mlflow == in_redis,
        metadata={"mlflow_champion": in_mlflow or "none", "redis_champion": in_redis or "none"},
    )
    age_hours = (registry.now() - registry.created_at(in_mlflow)) / 3600 if in_mlflow else math.inf
    yield dg.AssetCheckResult(
        check_name="champion_is_fresh",
        passed=age_hours <= monitoring.model_max_age_hours,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "champion_age_hours": round(age_hours, 2) if math.isfinite(age_hours) else -1.0,
            "max_hours": monitoring.model_max_age_hours,
        },
    )
