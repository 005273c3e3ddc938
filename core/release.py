"""Releasing a model: the one path from a trained model to what the API serves, and back.

1. :func:`register` logs the trained model to MLflow as a new version and makes it ``challenger``.
2. :func:`gate` compares it with the champion and popularity on held-out data
   (:func:`models.promotion.decide_promotion`), records the verdict on the version and, when it
   passes, moves ``champion`` to it. The two are compared on the same held-out pairs when training
   was given the champion (:func:`load_champion`), on the champion's logged metrics only when it
   could not be scored there.
3. :func:`publish_aliases` writes the vectors of every aliased version to Redis (:func:`publish`) and
   only then moves the Redis alias, so the API switches atomically; a version of a large catalog also
   gets its ANN index built and logged to MLflow with it (:func:`index_version`), which the API loads
   with the vectors; :func:`publish_played` adds what users played.
4. :func:`rollback` moves ``champion`` back, in MLflow and Redis together.
   A guarded rollout (:mod:`experiments.rollout`) moves the ``candidate`` alias: :func:`make_candidate`
   (the gate does it with ``canary``), :func:`promote_candidate`, :func:`withdraw_candidate`;
   :func:`register_folder` registers a model trained outside the pipeline (``echotune train --out``).
5. :func:`retire` deletes published vector sets beyond the newest few, never one an alias or a
   running experiment still serves.

The Dagster assets, the rollback job, the CLI, the tests and the benchmarks all call these functions;
each takes its MLflow registry and its vector store as arguments.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from core.erasure_log import ErasureLog
from core.model_registry import CANDIDATE, CHALLENGER, CHAMPION, ModelRegistry, Registration
from core.vectorstore import PLAYED_CAP, VectorStore
from models.algorithms import load
from models.ann import CatalogIndex
from models.base import Recommender
from models.features import catalog_content, track_features, unit_rows
from models.promotion import PromotionDecision, decide_promotion
from models.training import TrainingResult

log = logging.getLogger(__name__)
ALIASES = (CHAMPION, CHALLENGER, CANDIDATE)
# the MLflow param (and published meta field) of the recency half-life a version's data was weighted with
HALF_LIFE_PARAM = "recency_half_life_days"
REFIT_PARAM = "refit"  # TrainingResult.refit: "full", "warm_started:..." or "reused_evaluation_fit"


def register(
    registry: ModelRegistry,
    result: TrainingResult,
    model_dir: Path,
    tags: dict[str, str],
    weighting: dict[str, float] | None = None,
) -> Registration:
    """Log a trained model (its held-out metrics next to popularity's; when it was measured against the
    champion, both on those pairs: ``head_to_head_test_...``, ``head_to_head_incumbent_test_...``,
    ``head_to_head_pairs``) as a new version: ``challenger``.
    ``weighting``: how its training data was weighted (e.g. ``HALF_LIFE_PARAM``), logged with its params."""
    metrics = {
        **result.metrics,
        **{f"popularity_{k}": v for k, v in result.baseline_metrics.items()},
        "fit_seconds": result.fit_seconds,
    }
    if (versus := result.head_to_head) is not None:
        metrics |= {f"head_to_head_{k}": v for k, v in versus.model.items()} | {
            f"head_to_head_incumbent_{k}": v for k, v in versus.incumbent.items()
        }
        metrics["head_to_head_pairs"] = versus.pairs
    params = {**result.params, **(weighting or {}), REFIT_PARAM: result.refit}  # refit: what the released model is
    record = registry.log_version(model_dir, result.algorithm, params, metrics, tags)
    registry.set_alias(CHALLENGER, record.version)
    return record


def gate(
    registry: ModelRegistry,
    version: str,
    result: TrainingResult,
    metric: str,
    margin: float,
    erasures: dict[str, float] | None = None,
    incumbent_version: str | None = None,
    canary: bool = False,
) -> PromotionDecision:
    """The champion gate for ``version``: its held-out ``metric`` (e.g. ``test_ndcg_at_10``) must beat
    popularity's and the champion's by ``margin``. Against the champion, the figures of
    ``result.head_to_head`` (both models on the same held-out pairs) when they were measured for
    ``incumbent_version`` and that is still the champion; otherwise (it could not be loaded, no held-out
    pair was new to it, or the champion moved during training) the metrics logged when the champion was
    trained, on its own split. Both are recorded with the verdict. A champion trained before a user's
    erasure (``erasures``: user -> request time) has to go: then beating popularity is enough. Records
    the verdict; promotes when it passes: to ``champion``, or with ``canary`` (ECHOTUNE_ROLLOUT=canary) to
    ``candidate`` when a champion serves (a guarded rollout then decides; the first version, and one
    replacing a champion that has to go, become champion at once)."""
    champion = registry.alias(CHAMPION)
    rival = champion is not None and champion != version
    champion_metrics = registry.run_metrics(champion) if rival else None
    versus = result.head_to_head if rival and incumbent_version == champion else None
    tainted = rival and _trained_before_erasure(registry, champion, erasures or {})
    reason = "it was trained on data of a user erased since (GDPR)" if tainted else None
    decision = decide_promotion(
        metric,
        result.metrics,
        champion_metrics,
        result.baseline_metrics,
        margin,
        champion_must_go=reason,
        head_to_head=None if versus is None else (versus.model, versus.incumbent),
    )
    registry.record_decision(version, decision)
    if decision.promoted and canary and rival and not tainted:
        make_candidate(registry, version, f"passed the gate: {decision.reason}")
    elif decision.promoted:
        registry.set_alias(CHAMPION, version)
    return decision


def make_candidate(registry: ModelRegistry, version: str, reason: str) -> None:
    """Point ``candidate`` at ``version`` in MLflow (a rollout publishes and serves it), tagging why."""
    if version not in registry.versions():
        raise LookupError(f"{registry.name} has no version {version}; versions: {', '.join(registry.versions())}")
    registry.set_alias(CANDIDATE, version)
    registry.record_rollout(version, "candidate", reason)


def promote_candidate(registry: ModelRegistry, store: VectorStore, version: str) -> str | None:
    """The candidate ``version`` becomes ``champion`` in MLflow and Redis (it must be published), and the
    ``candidate`` alias goes. Returns the previous champion."""
    if version not in store.versions():
        raise LookupError(f"version {version} is not published in Redis: it cannot become champion")
    previous = registry.alias(CHAMPION)
    registry.set_alias(CHAMPION, version)
    store.set_alias(CHAMPION, version)
    withdraw_candidate(registry, store, version)
    return previous


def withdraw_candidate(registry: ModelRegistry, store: VectorStore, version: str) -> None:
    """``candidate`` no longer points at ``version``, in MLflow and Redis (the API stops serving it to the
    rollout's arm at its next alias check; an alias another version took meanwhile is left alone)."""
    if store.alias(CANDIDATE) == version:
        store.remove_alias(CANDIDATE)
    if registry.alias(CANDIDATE) == version:
        registry.remove_alias(CANDIDATE)


def register_folder(registry: ModelRegistry, model_dir: Path, tags: dict[str, str]) -> Registration:
    """Register a model saved outside the pipeline (``echotune train --out DIR``) as a new version, for
    an operator's own rollout (``echotune model rollout``). Raises ValueError, naming the folder, for a
    folder that holds no saved model or a model that cannot be served. No alias moves and no gate runs:
    its held-out figures are unknown, so the live rollout is its only judge."""
    try:
        model = load(model_dir)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{model_dir}: not a saved model folder (echotune train --out writes one): {error}") from error
    if not model.servable:
        raise ValueError(f"{model_dir}: {model.name} models cannot be served: {model.not_servable_because}")
    return registry.log_version(
        model_dir, model.name, {}, {}, {"source": "echotune model register", **tags}, run_name=f"register-{model.name}"
    )


def load_version(registry: ModelRegistry, version: str) -> Recommender:
    """The model of a registered version, in memory (downloaded to a temporary folder, gone on return)."""
    with tempfile.TemporaryDirectory() as tmp:
        return load(registry.download(version, Path(tmp) / version))


def load_champion(registry: ModelRegistry) -> tuple[str, Recommender] | None:
    """The champion version and its model, for training to measure against the challenger on the same
    held-out pairs (``models.training.train(incumbent=...)``, then :func:`gate` with ``incumbent_version``).
    None when there is no champion, or it cannot be loaded, has no fold-in or no training matrix
    (artifacts deleted, an offline-only algorithm): the gate then compares with its logged metrics, and
    the reason is logged."""
    version = registry.alias(CHAMPION)
    if version is None:
        return None
    try:
        model = load_version(registry, version)
    except (MlflowException, OSError, ValueError, KeyError) as error:
        log.warning(
            "champion %s of %s cannot be loaded (%s): the gate compares with its logged metrics",
            version,
            registry.name,
            error,
        )
        return None
    if not model.servable or model.train_matrix is None:  # no fold-in, or no telling which held-out pairs it learned
        log.warning(
            "champion %s (%s) cannot be scored on new data: the gate compares with its logged metrics",
            version,
            model.name,
        )
        return None
    return version, model


def served_items(catalog: pd.DataFrame, model: Recommender) -> pd.DataFrame:
    """The item table published with a version: catalog metadata in the model's item order, plus
    popularity (log1p of the users who played each item)."""
    items = catalog.set_index("track_id").reindex(model.item_ids).reset_index()
    train = model.train_matrix
    users_per_item = np.asarray((train > 0).sum(axis=0)).ravel() if train is not None else 0
    items["popularity"] = np.log1p(users_per_item).astype(np.float32)
    return items


def index_version(registry: ModelRegistry, version: str, model: Recommender, catalog: pd.DataFrame) -> CatalogIndex:
    """Build the ANN index of ``version`` (its item vectors, unit similarity vectors and the content
    vectors of its published item table, as the API holds them) and log it to MLflow with the version.
    Returns the index."""
    content = catalog_content(served_items(catalog, model))
    index = CatalogIndex.build(model.item_vectors(), unit_rows(model.similarity_vectors()), content)
    registry.log_ann_index(version, index.to_bytes())
    return index


def publish(
    store: VectorStore,
    version: str,
    model: Recommender,
    catalog: pd.DataFrame,
    trained_until_ms: int = 0,
    registered_model: str = "",
    alias: str | None = None,
    erased: ErasureLog | None = None,
    half_life_days: float | None = None,
) -> dict[str, int]:
    """Write every artefact of ``version`` to Redis: item table and vectors, similarity vectors, the
    fold-in the feedback worker learns with, user vectors (none for users ``erased`` names: a model
    trained before their erasure still holds them). Moves ``alias`` to it afterwards when given. ``trained_until_ms``: the
    newest event in the model's data (the worker folds in newer ones); ``half_life_days``: the recency
    half-life its data was weighted with (the worker weighs live events alike; None: no decay). Raises
    ValueError for a model that cannot be served (see ``Recommender.servable``)."""
    if not model.servable:
        raise ValueError(f"{model.name} models cannot be served: {model.not_servable_because}")
    fold = model.fold_in()
    user_ids, user_vectors = model.user_ids, model.user_vectors()
    gone = erased.erased_among(map(str, user_ids)) if erased is not None else set()
    if gone:
        keep = ~np.isin(user_ids.astype(str), np.array(sorted(gone), dtype=str))
        user_ids, user_vectors = user_ids[keep], user_vectors[keep]
    counts = store.publish(
        version,
        served_items(catalog, model),
        model.item_vectors(),
        user_ids,
        user_vectors,
        meta={
            "algorithm": model.name,
            "registered_model": registered_model,
            "trained_until": str(int(trained_until_ms)),
            HALF_LIFE_PARAM: str(float(half_life_days or 0)),
        },
        similarity_vectors=model.similarity_vectors(),
        fold_in=(fold.matrix, fold.tail),
    )
    if alias is not None:
        store.set_alias(alias, version)
    return counts


def publish_aliases(
    registry: ModelRegistry,
    store: VectorStore,
    catalog: pd.DataFrame,
    aliases: Collection[str] = ALIASES,
    erased: ErasureLog | None = None,
    ann_min_tracks: int | None = None,
) -> dict[str, str]:
    """For each MLflow alias that points at a version: publish the version to Redis unless it already
    is (without the vectors of users ``erased`` names; with its ANN index logged to MLflow when it has
    at least ``ann_min_tracks`` tracks, None: never), then move the Redis alias. Returns alias -> version."""
    published: dict[str, str] = {}
    store.retag_versions()  # versions published before their artefacts carried a hash tag
    for alias in aliases:
        version = registry.alias(alias)
        if version is None:
            continue
        if version not in store.versions():
            model = load_version(registry, version)
            trained_until = int(registry.run_tags(version).get("trained_until_ms", "0"))
            half_life = float(
                registry.run_params(version).get(HALF_LIFE_PARAM) or 0
            )  # versions trained before it: none
            # before the vectors: the API finds the index once it sees them; built once per version (a second
            # store, or a Redis that lost the version, reuses the logged one)
            if (
                ann_min_tracks is not None
                and len(model.item_ids) >= ann_min_tracks
                and not registry.has_ann_index(version)
            ):
                index_version(registry, version, model, catalog)
            publish(
                store,
                version,
                model,
                catalog,
                trained_until,
                registered_model=registry.name,
                erased=erased,
                half_life_days=half_life,
            )
        store.set_alias(alias, version)
        published[alias] = version
    return published


def publish_played(
    store: VectorStore, interactions: pd.DataFrame, cap: int = PLAYED_CAP, erased: ErasureLog | None = None
) -> int:
    """Add every (user, item) of the training interactions to the users' played sets, with when it
    was last played; each user keeps their ``cap`` most recent. Users ``erased`` has recorded are left
    out: the interactions table of an earlier training may still hold them (publishing a champion moved
    by hand republished an erased user's played set)."""
    if erased is not None:
        gone = erased.erased_among(interactions["user_id"].astype(str).unique())
        if gone:
            interactions = interactions[~interactions["user_id"].astype(str).isin(gone)]
    when = pd.to_datetime(interactions["timestamp"], utc=True, errors="coerce")
    frame = pd.DataFrame(
        {
            "user_id": interactions["user_id"].astype(str),
            "item_id": interactions["item_id"].astype(str),
            "ms": (when.astype("int64") // 1_000_000).where(when.notna(), 0),
        }
    )
    played = {user: dict(zip(group["item_id"], group["ms"])) for user, group in frame.groupby("user_id", sort=False)}
    return store.add_played(played, cap)


def extend_catalog(
    registry: ModelRegistry, store: VectorStore, catalog: pd.DataFrame, aliases: Collection[str] = ALIASES
) -> dict[str, int]:
    """New tracks join the served catalog without a retrain: tracks of ``catalog`` that a published
    aliased version lacks get item vectors from their audio features and genres through the model's
    cold-start map (``cold_item_vectors``) and are appended to that version in Redis
    (:meth:`VectorStore.extend`); the next training gives them learned vectors. Returns version ->
    tracks added (versions whose model has no cold-start map are left as they are)."""
    added: dict[str, int] = {}
    for version in dict.fromkeys(v for a in aliases if (v := store.alias(a)) is not None):
        published = store.load(version)
        new = catalog[~catalog["track_id"].astype(str).isin(set(published.items["track_id"].astype(str)))]
        if new.empty:
            continue
        model = load_version(registry, version)
        if not hasattr(model, "cold_item_vectors"):
            continue
        ids = new["track_id"].astype(str).to_numpy()
        vectors = model.cold_item_vectors(track_features(new, ids))
        similarity = None
        if published.similarity_vectors is not None:  # same space as the published ones (without a bias column)
            part = vectors[:, : published.similarity_vectors.shape[1]]
            similarity = (part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        items = new.reset_index(drop=True).assign(popularity=np.float32(0.0))
        store.extend(version, items, vectors, similarity)
        added[version] = len(new)
    return added


def rollback(registry: ModelRegistry, store: VectorStore, to_version: str | None = None) -> tuple[str | None, str]:
    """Move ``champion`` to ``to_version`` (default: the newest earlier version the gate promoted), in
    MLflow and in Redis. Returns (previous champion, new champion). Raises LookupError when there is
    nothing to go back to or the target is not published in Redis; then nothing has moved."""
    current = registry.alias(CHAMPION)
    if to_version is None:
        earlier = [v for v in registry.versions() if current is None or int(v) < int(current)]
        promoted = [v for v in earlier if registry.version_tags(v).get("promotion") == "promoted"]
        if not promoted:
            raise LookupError(f"no earlier promoted version of {registry.name} than champion {current}")
        to_version = promoted[-1]
    if to_version not in registry.versions():
        raise LookupError(f"{registry.name} has no version {to_version}; versions: {', '.join(registry.versions())}")
    if to_version not in store.versions():
        raise LookupError(
            f"version {to_version} is not published in Redis: publish it first (materialize serving_vectors)"
        )
    registry.set_alias(CHAMPION, to_version)
    store.set_alias(CHAMPION, to_version)
    return current, to_version


def retire(store: VectorStore, keep: int, protected: Collection[str] = ()) -> list[str]:
    """Delete the published vector sets beyond the ``keep`` newest, except versions an alias points at
    and ``protected`` ones (e.g. served by a running experiment). Returns the versions deleted."""
    versions = store.versions()  # oldest first
    kept = set(versions[-keep:]) if keep > 0 else set()
    spared = kept | set(protected) | set(store.aliases().values())
    deleted = []
    for version in versions:
        if version not in spared:
            store.delete_version(version)
            deleted.append(version)
    return deleted


def purge_erased(registry: ModelRegistry, store: VectorStore, erasures: dict[str, float]) -> dict[str, float]:
    """Retire every model version trained on data that included a user erased since (registered
    before their request): its MLflow artifacts, registered version and Redis vector set are deleted.
    Only once the champion itself is clean (trained after every erasure), so the API keeps serving.
    ``erasures``: user -> epoch seconds of the request. Returns each version deleted -> when it had
    been registered (so a receipt can name the versions that held each user)."""
    champion = registry.alias(CHAMPION)
    if not erasures or champion is None or _trained_before_erasure(registry, champion, erasures):
        return {}
    doomed = {v: registry.created_at(v) for v in registry.versions() if _trained_before_erasure(registry, v, erasures)}
    aliases = store.aliases()
    for version in doomed:
        for alias, target in aliases.items():
            if target == version:
                store.remove_alias(alias)
        if version in store.versions():
            store.delete_version(version)
        registry.delete_version(version)
    return doomed


def purge_receipts(purged: dict[str, float], erasures: dict[str, float]) -> dict[str, list[tuple[str, int, str]]]:
    """Receipt entries of a purge: for each erased subject, the deleted versions that held them."""
    receipts = {}
    for subject, erased_at in erasures.items():
        held = sorted((v for v, registered in purged.items() if registered < erased_at), key=int)
        if held:
            receipts[subject] = [
                (
                    "model_versions",
                    len(held),
                    f"versions {', '.join(held)}: MLflow artifacts, registered version and Redis vectors deleted",
                )
            ]
    return receipts


def _trained_before_erasure(registry: ModelRegistry, version: str, erasures: dict[str, float]) -> bool:
    return bool(erasures) and registry.created_at(version) < max(erasures.values())
