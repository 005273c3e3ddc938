"""Training: graded interactions -> a registered model behind the champion gate -> vectors in Redis."""

import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd

from core import release
from core.redis_clients import used_memory
from core.training_data import build_interactions
from experiments.store import served_versions
from models.training import train
from pipelines.resources import (
    MlflowResource,
    MonitoringResource,
    OfflineStoreResource,
    RedisResource,
    RolloutResource,
    TrainingResource,
)
from pipelines.step_cost import measured

REASON_TAG = "echotune/reason"


def interactions_asset(sources: list[str]) -> dg.AssetsDefinition:
    @dg.asset(name="interactions", group_name="training", kinds={"parquet"}, deps=["tracks", "user_erasures", *sources])
    @measured
    def interactions(store: OfflineStoreResource, training: TrainingResource) -> dg.MaterializeResult:
        """Graded (user, item) pairs: events weighted by ``models.weighting`` plus every interaction log,
        recent ones weighing more (half-life ``ECHOTUNE_RECENCY_HALF_LIFE_DAYS`` before the newest)."""
        graded, inputs = build_interactions(store.tables, training.recency_half_life_days)
        store.tables.write_interactions(graded)
        catalog = set(store.tables.read_tracks()["track_id"])
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(graded),
                "users": int(graded["user_id"].nunique()),
                "items": int(graded["item_id"].nunique()),
                "items_outside_catalog": int((~graded["item_id"].drop_duplicates().isin(catalog)).sum()),
                "positive_share": float(graded["positive"].mean()) if len(graded) else 0.0,
                "recency_half_life_days": training.recency_half_life_days,
                **{f"rows_{k}": v for k, v in inputs.items()},
            }
        )

    return interactions


@dg.asset(group_name="training", kinds={"mlflow"}, deps=["interactions", "tracks"])
@measured
def recommender_model(
    context: dg.AssetExecutionContext,
    training: TrainingResource,
    store: OfflineStoreResource,
    mlflow: MlflowResource,
    rollout: RolloutResource,
) -> dg.MaterializeResult:
    """A model trained on the interactions, measured on held-out interactions against popularity and the
    current champion (scored on the same held-out interactions), logged to MLflow and registered. It
    becomes ``challenger``, and if it passes the gate ``candidate`` (ECHOTUNE_ROLLOUT=canary: a guarded
    rollout serves it to a share of listeners first) or ``champion`` (direct, or no champion yet)."""
    interactions = store.tables.read_interactions()
    registry = mlflow.registry
    incumbent_version, incumbent = release.load_champion(registry) or (None, None)
    result = train(
        interactions,
        store.tables.read_tracks(),
        training.algorithm,
        training.params(),
        k=training.k,
        incumbent=incumbent,
    )
    del incumbent  # its vectors are not needed past its evaluation
    last = pd.to_datetime(interactions["timestamp"], utc=True).max() if len(interactions) else pd.NaT
    trained_until = "0" if pd.isna(last) else str(int(last.timestamp() * 1000))
    # the saved folder only travels to MLflow: no local copy of users' factors outlives the run (an
    # erased user's vector must be deletable in one place)
    with tempfile.TemporaryDirectory() as tmp:
        record = release.register(
            registry,
            result,
            result.model.save(Path(tmp) / "model"),
            tags={
                "dataset_fingerprint": result.fingerprint,
                "dagster_run_id": context.run_id,
                "refit_on_all_data": "true",
                "trained_until_ms": trained_until,
                "incumbent_version": incumbent_version or "none",
            },
            weighting={release.HALF_LIFE_PARAM: training.recency_half_life_days},
        )
    metric = f"test_{mlflow.promotion_metric}"
    decision = release.gate(
        registry,
        record.version,
        result,
        metric,
        mlflow.promotion_margin,
        erasures=store.tables.erasures.subjects(),
        incumbent_version=incumbent_version,
        canary=rollout.mode == "canary",
    )
    context.log.info("model version %s: %s", record.version, decision.reason)

    columns = {"model": result.metrics, "popularity": result.baseline_metrics}
    if (versus := result.head_to_head) is not None:  # both on the held-out pairs the champion never trained on
        columns |= {
            f"model, pairs new to v{incumbent_version}": versus.model,
            f"champion v{incumbent_version}, same pairs": versus.incumbent,
        }
    table = pd.DataFrame(columns).round(4)
    return dg.MaterializeResult(
        metadata={
            "version": record.version,
            "run_id": record.run_id,
            "promoted": decision.promoted,
            "promotion_reason": decision.reason,
            "champion_version": registry.alias(release.CHAMPION) or "none",
            "candidate_version": registry.alias(release.CANDIDATE) or "none",
            "dataset_fingerprint": result.fingerprint,
            "fit_seconds": round(result.fit_seconds, 2),
            # every held-out figure as a number, so the asset's plots follow them across versions
            **{k: dg.MetadataValue.float(float(v)) for k, v in result.metrics.items() if isinstance(v, (int, float))},
            **{
                f"popularity_{k}": dg.MetadataValue.float(float(v))
                for k, v in result.baseline_metrics.items()
                if k == metric
            },
            # the two figures the gate set against each other, and where the champion's was measured (same_split or logged)
            **(
                {
                    f"gate_challenger_{metric}": dg.MetadataValue.float(float(decision.challenger_compared)),
                    f"gate_champion_{metric}": dg.MetadataValue.float(float(decision.champion)),
                }
                if decision.champion is not None
                else {}
            ),
            "gate_compared_on": decision.compared_on,
            "metrics": dg.MetadataValue.md(table.to_markdown()),
            "mlflow_run": dg.MetadataValue.url(mlflow.run_url(registry.experiment_id, record.run_id)),
            "trigger": context.run.tags.get(REASON_TAG, "manual"),
            **{f"data_{k}": v for k, v in result.data.items()},
        }
    )


@dg.asset(group_name="serving", kinds={"redis"}, deps=[recommender_model])
@measured
def serving_vectors(
    context: dg.AssetExecutionContext,
    store: OfflineStoreResource,
    mlflow: MlflowResource,
    redis: RedisResource,
    monitoring: MonitoringResource,
    rollout: RolloutResource,
) -> dg.MaterializeResult:
    """User and track vectors of the champion (and challenger, and candidate) model versions, published to
    Redis. Each version is written completely before its Redis alias moves, so the API switches atomically.
    A candidate published here starts its rollout (:mod:`experiments.rollout`). Older vector sets beyond
    ECHOTUNE_KEEP_VERSIONS are deleted (never one an alias or a running experiment serves)."""
    vectors = redis.vectors
    log = store.tables.erasures
    erasures = log.subjects()
    published = release.publish_aliases(
        mlflow.registry, vectors, store.tables.read_tracks(), erased=log, ann_min_tracks=mlflow.ann_min_tracks
    )
    n_played = release.publish_played(vectors, store.tables.read_interactions(), erased=log)
    rollouts = rollout.rollouts(redis, mlflow)
    candidate, running = published.get(release.CANDIDATE), rollouts.current()
    if candidate is not None and not (running is not None and running.running and running.version == candidate):
        state = rollouts.start(
            candidate, f"version {candidate} passed the gate ({context.run.tags.get(REASON_TAG, 'manual')})"
        )
        context.log.info("rollout %s: version %s to %g of listeners", state.experiment_id, candidate, state.share)
    purged = release.purge_erased(mlflow.registry, vectors, erasures)
    retired = release.retire(
        vectors, monitoring.keep_versions, protected=served_versions(redis.client, redis.key_layout, vectors)
    )
    for subject, receipt in release.purge_receipts(purged, erasures).items():
        log.append(subject, receipt)
    champion = published.get(release.CHAMPION)
    meta = vectors.meta(champion) if champion else {}
    return dg.MaterializeResult(
        metadata={
            "champion_version": champion or "none",
            "challenger_version": published.get(release.CHALLENGER, "none"),
            "candidate_version": published.get(release.CANDIDATE, "none"),
            "users_with_vectors": int(meta.get("users", 0)),
            "items": int(meta.get("items", 0)),
            "dimensions": int(meta.get("dimensions", 0)),
            "played_entries": n_played,
            "versions_retired_for_erasures": ", ".join(purged) or "none",
            "vector_sets_deleted": ", ".join(retired) or "none",
            "vector_sets_kept": len(vectors.versions()),
            "redis_used_memory_mb": dg.MetadataValue.float(used_memory(redis.client) / 2**20),
            "trigger": context.run.tags.get(REASON_TAG, "manual"),
        }
    )


@dg.asset(group_name="serving", kinds={"redis"}, deps=["tracks"])
@measured
def catalog_extension(
    context: dg.AssetExecutionContext, store: OfflineStoreResource, mlflow: MlflowResource, redis: RedisResource
) -> dg.MaterializeResult:
    """Tracks that reached the catalog after the served model was trained join it now, without a
    retrain: their vectors come from their audio features and genres through the model's cold-start
    map, and the API and the worker pick them up within seconds. The next training learns them."""
    added = release.extend_catalog(mlflow.registry, redis.vectors, store.tables.read_tracks())
    context.log.info("new tracks added to published versions: %s", added or "none")
    return dg.MaterializeResult(
        metadata={
            "tracks_added": sum(added.values()),
            "by_version": dg.MetadataValue.json(added),
            "trigger": context.run.tags.get(REASON_TAG, "manual"),
        }
    )
