"""Training: graded interactions -> a registered model behind the champion gate -> vectors in Redis."""


import tempfile
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from echotune.training_data import build_interactions
from models import load as load_model
from models import tracking
from models.training import train
from pipelines.resources import MlflowResource, OfflineStoreResource, RedisResource, TrainingResource


def interactions_asset(sources: list[str]) -> dg.AssetsDefinition:
    @dg.asset(name="interactions", group_name="training", kinds={"parquet"}, deps=["tracks", "user_erasures", *sources])
    def interactions(store: OfflineStoreResource) -> dg.MaterializeResult:
        """Graded (user, item) pairs: events weighted by ``models.weighting`` plus every interaction log."""
        graded, inputs = build_interactions(store.tables)
        store.tables.write_interactions(graded)
        catalog = set(store.tables.read_tracks()["track_id"])
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(graded),
                "users": int(graded["user_id"].nunique()),
                "items": int(graded["item_id"].nunique()),
                "items_outside_catalog": int((~graded["item_id"].drop_duplicates().isin(catalog)).sum()),
                "positive_share": float(graded["positive"].mean()) if len(graded) else 0.0,
                **{f"rows_{k}": v for k, v in inputs.items()},
            }
        )

    return interactions


@dg.asset(group_name="training", kinds={"mlflow"}, deps=["interactions", "tracks"])
def recommender_model(
    context: dg.AssetExecutionContext, training: TrainingResource, store: OfflineStoreResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """A model trained on the interactions, measured on held-out interactions against popularity,
    logged to MLflow and registered. It becomes ``challenger``, and ``champion`` only if it passes the gate."""
    interactions = store.tables.read_interactions()
    result = train(interactions, store.tables.read_tracks(), training.algorithm, training.params(), k=training.k)
    last = pd.to_datetime(interactions["timestamp"], utc=True).max() if len(interactions) else pd.NaT
    trained_until = "0" if pd.isna(last) else str(int(last.timestamp() * 1000))
    folder = result.model.save(store.models_dir / datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f"))

    metrics = {**result.metrics, **{f"popularity_{k}": v for k, v in result.baseline_metrics.items()}, "fit_seconds": result.fit_seconds}
    record = tracking.log_model_run(
        folder, mlflow.registered_model, result.algorithm, result.params, metrics,
        tags={"dataset_fingerprint": result.fingerprint, "dagster_run_id": context.run_id, "refit_on_all_data": "true",
              "trained_until_ms": trained_until},
    )  # fmt: skip
    tracking.set_alias(mlflow.registered_model, tracking.CHALLENGER, record.version)

    metric = f"test_{mlflow.promotion_metric}"
    champion = tracking.alias_version(mlflow.registered_model, tracking.CHAMPION)
    champion_metrics = tracking.run_metrics(mlflow.registered_model, champion) if champion else None
    decision = tracking.decide_promotion(metric, result.metrics, champion_metrics, result.baseline_metrics, mlflow.promotion_margin)
    tracking.record_decision(mlflow.registered_model, record.version, decision)
    if decision.promoted:
        tracking.set_alias(mlflow.registered_model, tracking.CHAMPION, record.version)
    context.log.info("model version %s: %s", record.version, decision.reason)

    table = pd.DataFrame({"model": result.metrics, "popularity": result.baseline_metrics}).round(4)
    return dg.MaterializeResult(
        metadata={
            "version": record.version,
            "run_id": record.run_id,
            "promoted": decision.promoted,
            "promotion_reason": decision.reason,
            "champion_version": record.version if decision.promoted else (champion or "none"),
            "dataset_fingerprint": result.fingerprint,
            "fit_seconds": round(result.fit_seconds, 2),
            metric: dg.MetadataValue.float(result.metrics[metric]),
            "metrics": dg.MetadataValue.md(table.to_markdown()),
            **{f"data_{k}": v for k, v in result.data.items()},
        }
    )


def _served_items(catalog: pd.DataFrame, item_ids: np.ndarray, train_matrix) -> pd.DataFrame:
    """Item table published with a version: catalog metadata in the model's item order plus popularity."""
    items = catalog.set_index("track_id").reindex(item_ids).reset_index()
    users_per_item = np.asarray((train_matrix > 0).sum(axis=0)).ravel() if train_matrix is not None else 0
    items["popularity"] = np.log1p(users_per_item).astype(np.float32)
    return items


@dg.asset(group_name="serving", kinds={"redis"}, deps=[recommender_model])
def serving_vectors(store: OfflineStoreResource, mlflow: MlflowResource, redis: RedisResource) -> dg.MaterializeResult:
    """User and track vectors of the champion (and challenger) model versions, published to Redis.
    Each version is written completely before its Redis alias moves, so the API switches atomically."""
    catalog = store.tables.read_tracks()
    graded = store.tables.read_interactions()
    published = {}
    with tempfile.TemporaryDirectory() as tmp:
        for alias in (tracking.CHAMPION, tracking.CHALLENGER):
            version = tracking.alias_version(mlflow.registered_model, alias)
            if version is None:
                continue
            if version not in redis.vectors.versions():
                model = load_model(tracking.model_dir(mlflow.registered_model, version, Path(tmp) / version))
                items = _served_items(catalog, model.item_ids, model.train_matrix)
                fold = model.fold_in()
                # events after the model's data ends are not in it: the feedback worker folds them in online
                trained_until = tracking.run_tags(mlflow.registered_model, version).get("trained_until_ms", "0")
                redis.vectors.publish(
                    version, items, model.item_vectors(), model.user_ids, model.user_vectors(),
                    meta={"algorithm": model.name, "registered_model": mlflow.registered_model, "trained_until": trained_until},
                    similarity_vectors=model.similarity_vectors(), fold_in=(fold.matrix, fold.tail),
                )  # fmt: skip
            redis.vectors.set_alias(alias, version)
            published[alias] = version
    played = graded.groupby("user_id")["item_id"].agg(list).to_dict()
    n_played = redis.vectors.add_played(played)
    champion = published.get(tracking.CHAMPION)
    meta = redis.vectors.meta(champion) if champion else {}
    return dg.MaterializeResult(
        metadata={
            "champion_version": champion or "none",
            "challenger_version": published.get(tracking.CHALLENGER, "none"),
            "users_with_vectors": int(meta.get("users", 0)),
            "items": int(meta.get("items", 0)),
            "dimensions": int(meta.get("dimensions", 0)),
            "played_entries": n_played,
        }
    )
