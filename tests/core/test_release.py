"""The release path against a real MLflow store in tmp and a real Redis: register, gate, publish,
roll back, retire. Every other caller (assets, CLI, fixtures, benchmarks) goes through these functions."""

import copy
import dataclasses
import json
import os
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from core import release
from core.contracts import RedisKeys
from core.model_registry import CANDIDATE, CHALLENGER, CHAMPION, ModelRegistry
from core.vectorstore import VectorStore
from models import create
from models.evaluation import HeadToHead
from models.promotion import decide_promotion
from models.training import train
from tests.models.conftest import block_matrix

METRIC = "test_ndcg_at_10"
AT_5 = "test_ndcg_at_5"  # the held-out metric of the trained fixture (k=5)


@pytest.fixture(scope="module")
def trained():
    """A low-rank EASE trained on the two-taste block matrix (it beats popularity there by far)."""
    return train(block_matrix().to_frame(), None, "lowrank_ease", {"dimensions": 4}, k=5)


@pytest.fixture
def catalog(trained):
    ids = trained.model.item_ids
    return pd.DataFrame({"track_id": ids, "name": [f"Song {i}" for i in ids], "duration_ms": 200_000})


@pytest.fixture
def registry(tmp_path, mlflow_migrated):
    return ModelRegistry.open(
        mlflow_migrated(f"sqlite:///{tmp_path / 'mlflow.db'}"), tmp_path / "artifacts", "test", "test-model"
    )


@pytest.fixture
def store(redis_client, redis_prefix):
    return VectorStore(redis_client, RedisKeys(redis_prefix))


def _register(registry, trained, tmp_path, n):
    return release.register(
        registry, trained, trained.model.save(tmp_path / f"m{n}"), {"trained_until_ms": "1000"}
    ).version


def test_register_gate_and_publish(registry, store, trained, catalog, tmp_path):
    uri_before = mlflow.get_tracking_uri()
    first = _register(registry, trained, tmp_path, 1)
    assert registry.alias(CHALLENGER) == first and registry.alias(CHAMPION) is None
    assert registry.run_params(first)[release.REFIT_PARAM] == trained.refit  # what the released model is
    decision = release.gate(registry, first, trained, "test_ndcg_at_5", margin=0.0)
    assert decision.promoted and registry.alias(CHAMPION) == first
    # the same model again cannot beat itself: it stays challenger, the champion stays
    second = _register(registry, trained, tmp_path, 2)
    again = release.gate(registry, second, trained, "test_ndcg_at_5", margin=0.0)
    assert not again.promoted and "champion" in again.reason
    assert (registry.alias(CHAMPION), registry.alias(CHALLENGER)) == (first, second)
    assert registry.version_tags(second)["promotion"] == "rejected"
    # nothing here set MLflow's process-wide tracking URI
    assert mlflow.get_tracking_uri() == uri_before and registry.client.tracking_uri not in os.environ.get(
        "MLFLOW_TRACKING_URI", ""
    )

    assert release.publish_aliases(registry, store, catalog) == {CHAMPION: first, CHALLENGER: second}
    assert store.aliases() == {CHAMPION: first, CHALLENGER: second}
    published = store.load(first)
    assert list(published.items["track_id"]) == list(trained.model.item_ids)
    np.testing.assert_allclose(published.item_vectors, trained.model.item_vectors(), rtol=1e-6)
    assert published.similarity_vectors is not None and store.fold_in(first) is not None
    assert published.meta["trained_until"] == "1000" and published.meta["registered_model"] == "test-model"
    user = trained.model.user_ids[0]
    np.testing.assert_allclose(store.user_vector(first, user), trained.model.user_vectors()[0], rtol=1e-6)


def test_an_ann_index_is_logged_with_versions_of_large_catalogs(
    registry, store, trained, catalog, tmp_path, monkeypatch
):
    from models.ann import CatalogIndex

    small, large = (_register(registry, trained, tmp_path, n) for n in (1, 2))
    n_items = len(trained.model.item_ids)
    registry.set_alias(CHAMPION, small)
    release.publish_aliases(registry, store, catalog, aliases=(CHAMPION,), ann_min_tracks=n_items + 1)
    assert registry.ann_index(small) is None  # below the threshold: served exact, nothing to log
    registry.set_alias(CHAMPION, large)
    release.publish_aliases(registry, store, catalog, aliases=(CHAMPION,), ann_min_tracks=n_items)
    index = CatalogIndex.from_bytes(registry.ann_index(large))
    assert (index.items.rows, index.items.dimensions) == trained.model.item_vectors().shape
    assert index.similarity.rows == n_items
    assert index.content is not None and index.content.rows == n_items  # seeded cold starts (issue 25)
    assert registry.ann_index("99") is None  # not a registered version
    assert registry.has_ann_index(large) and not registry.has_ann_index(small) and not registry.has_ann_index("99")

    # the version lost from Redis (a flush, another store) is published again with the index logged at release
    store.set_alias(CHAMPION, small)
    store.delete_version(large)

    def rebuilt(*_):
        raise AssertionError("the index of a version that has one was built again")

    monkeypatch.setattr(release, "index_version", rebuilt)
    release.publish_aliases(registry, store, catalog, aliases=(CHAMPION,), ann_min_tracks=n_items)
    assert store.alias(CHAMPION) == large and CatalogIndex.from_bytes(registry.ann_index(large)).items.rows == n_items


def test_rollback_moves_mlflow_and_redis_together(registry, store, trained, catalog, tmp_path):
    versions = [_register(registry, trained, tmp_path, n) for n in (1, 2, 3)]
    for version in versions[:2]:
        registry.record_decision(version, decide_promotion(METRIC, {METRIC: 1.0}, None, None, 0.0))
        registry.set_alias(CHAMPION, version)
    release.publish_aliases(registry, store, catalog)  # champion 2 and challenger 3 published; 1 is not
    with pytest.raises(LookupError, match="not published in Redis"):
        release.rollback(registry, store)  # to version 1, which Redis does not hold
    assert registry.alias(CHAMPION) == store.alias(CHAMPION) == versions[1]  # nothing moved

    release.publish(store, versions[0], trained.model, catalog)
    assert release.rollback(registry, store) == (versions[1], versions[0])
    assert registry.alias(CHAMPION) == store.alias(CHAMPION) == versions[0]
    with pytest.raises(LookupError, match="no earlier promoted version"):
        release.rollback(registry, store)
    with pytest.raises(LookupError, match="has no version 9"):
        release.rollback(registry, store, "9")


def test_retire_keeps_the_newest_and_everything_still_served(store, trained, catalog):
    for version in "123456":
        release.publish(store, version, trained.model, catalog)
    store.set_alias(CHAMPION, "1")
    deleted = release.retire(store, keep=2, protected={"3"})
    assert deleted == ["2", "4"]
    assert store.versions() == ["1", "3", "5", "6"]
    assert store.user_vector("2", trained.model.user_ids[0]) is None and store.meta("2") == {}


def test_an_unservable_model_is_never_published(store, catalog):
    ease = create("ease", min_users=1).fit(block_matrix())
    with pytest.raises(ValueError, match="cannot be served"):
        release.publish(store, "1", ease, catalog)
    assert store.versions() == []


def test_the_registered_pyfunc_answers_with_k(registry, trained, tmp_path):
    version = _register(registry, trained, tmp_path, 1)
    with mlflow.tracking._tracking_service.utils._use_tracking_uri(registry.client.tracking_uri):
        loaded = mlflow.pyfunc.load_model(f"models:/test-model/{version}")
    model = trained.model
    out = loaded.predict(pd.DataFrame({"user_id": [model.user_ids[0], "nobody"]}), params={"k": 3})
    assert list(out.columns) == ["user_id", "item_id", "rank", "score"]
    assert len(out) == 3 and set(out["user_id"]) == {model.user_ids[0]}
    assert not set(out["item_id"]) & set(model.item_ids[model.train_matrix[0].indices])
    restored = registry.download(version, tmp_path / "download")
    assert (restored / "model.json").exists()


def test_the_gate_judges_the_champion_on_the_same_pairs(registry, trained, tmp_path):
    """Regression (issue 21): the gate compared a retrained version's held-out metric with the one the
    champion logged on an older split, and rejected the version that followed a taste shift. When
    training measured both head to head (``train(incumbent=...)``) those figures are compared, and both
    the champion's are recorded; the logged one is compared only when the champion was not scored."""
    first = _register(registry, trained, tmp_path, 1)
    assert release.gate(registry, first, trained, AT_5, margin=0.0).compared_on == "none"
    loaded = release.load_champion(registry)
    assert loaded is not None and loaded[0] == first
    np.testing.assert_allclose(loaded[1].item_vectors(), trained.model.item_vectors())
    assert loaded[1].train_matrix.nnz == trained.model.train_matrix.nnz  # what the head-to-head leaves out

    # below the champion's logged figure on its whole split, above the champion head to head
    logged = registry.run_metrics(first)[AT_5]
    versus = HeadToHead(model={AT_5: logged * 0.9}, incumbent={AT_5: logged * 0.7}, pairs=40)
    challenger = dataclasses.replace(trained, metrics={AT_5: logged * 0.8}, head_to_head=versus)
    second = _register(registry, challenger, tmp_path, 2)
    recorded_metrics = registry.run_metrics(second)
    assert (
        recorded_metrics[f"head_to_head_{AT_5}"],
        recorded_metrics[f"head_to_head_incumbent_{AT_5}"],
        recorded_metrics["head_to_head_pairs"],
    ) == pytest.approx((logged * 0.9, logged * 0.7, 40))
    decision = release.gate(registry, second, challenger, AT_5, margin=0.0, incumbent_version=first)
    assert decision.promoted and registry.alias(CHAMPION) == second, decision.reason
    assert registry.version_tags(second)["promotion_compared_on"] == "same_split"
    run_id = registry.client.get_model_version(registry.name, second).run_id
    recorded = json.loads(Path(registry.client.download_artifacts(run_id, "promotion.json", str(tmp_path))).read_text())
    assert (recorded["challenger_compared"], recorded["champion"], recorded["champion_logged"]) == pytest.approx(
        (logged * 0.9, logged * 0.7, logged)
    )

    # figures measured against another version than the champion now (it moved during training): the logged ones
    third = _register(registry, challenger, tmp_path, 3)
    moved = release.gate(registry, third, challenger, AT_5, margin=0.0, incumbent_version=first)
    assert not moved.promoted and moved.compared_on == "logged" and registry.alias(CHAMPION) == second

    # a champion whose artifacts are gone cannot be loaded: no incumbent, so the logged figure
    shutil.rmtree(registry.client.get_model_version_download_uri(registry.name, second).removeprefix("file://"))
    assert release.load_champion(registry) is None


def test_a_champion_trained_before_an_erasure_is_replaced_even_when_it_wins_head_to_head(registry, trained, tmp_path):
    first = _register(registry, trained, tmp_path, 1)
    registry.set_alias(CHAMPION, first)
    weaker = dataclasses.replace(trained, head_to_head=HeadToHead(model={AT_5: 0.2}, incumbent={AT_5: 0.4}, pairs=10))
    second = _register(registry, weaker, tmp_path, 2)
    kept = release.gate(registry, second, weaker, AT_5, margin=0.0, incumbent_version=first)
    assert not kept.promoted and kept.compared_on == "same_split"
    erasures = {"someone": registry.now() + 1}
    replaced = release.gate(registry, second, weaker, AT_5, margin=0.0, erasures=erasures, incumbent_version=first)
    assert replaced.promoted and "erased" in replaced.reason and registry.alias(CHAMPION) == second


def test_a_champion_saved_without_its_training_matrix_is_not_an_incumbent(registry, trained, tmp_path):
    """Which held-out pairs it learned is unknown: training is not given it (the gate falls back to its
    logged figures) rather than failing."""
    bare = copy.deepcopy(trained.model)
    bare._train = None  # as saved before models kept it
    version = release.register(registry, trained, bare.save(tmp_path / "bare"), {}).version
    registry.set_alias(CHAMPION, version)
    assert release.load_champion(registry) is None


def test_publishing_played_sets_leaves_erased_users_out(store, tmp_path):
    """Regression (issue 23): publish_champion (a champion moved by hand) republished played sets from an
    interactions table that still held an erased user: their played set was back in Redis."""
    from core.erasure_log import ErasureLog

    log = ErasureLog(tmp_path / "erasures")
    interactions = pd.DataFrame(
        {
            "user_id": ["kept", "kept", "gone"],
            "item_id": ["a", "b", "a"],
            "timestamp": pd.Timestamp("2026-01-01", tz="UTC"),
        }
    )
    log.record_request(log.digest("gone"))
    release.publish_played(store, interactions, erased=log)
    assert store.played("kept") == {"a", "b"}
    assert store.played("gone") == set()
    assert not list(store.r.scan_iter(match=f"{store.keys.root}*gone*"))  # no key names them
    release.publish_played(store, interactions)  # without the log (the old call) they came back
    assert store.played("gone") == {"a"}


def test_a_canary_gate_makes_a_candidate_which_is_promoted_or_withdrawn(registry, store, trained, catalog, tmp_path):
    """Issue 24: with ECHOTUNE_ROLLOUT=canary the gate moves ``candidate``, not ``champion`` (the first
    version still becomes champion: there is nothing to measure it against); the rollout then promotes or
    withdraws it, in MLflow and Redis together."""
    first = _register(registry, trained, tmp_path, 1)
    assert release.gate(registry, first, trained, AT_5, margin=0.0, canary=True).promoted
    assert registry.alias(CHAMPION) == first and registry.alias(CANDIDATE) is None
    better = dataclasses.replace(trained, metrics={**trained.metrics, AT_5: trained.metrics[AT_5] * 1.5})
    second = _register(registry, better, tmp_path, 2)
    assert release.gate(registry, second, better, AT_5, margin=0.0, canary=True).promoted
    assert (registry.alias(CHAMPION), registry.alias(CANDIDATE)) == (first, second)
    assert registry.version_tags(second)["rollout"] == "candidate"
    assert release.publish_aliases(registry, store, catalog)[CANDIDATE] == second

    release.withdraw_candidate(registry, store, second)
    assert registry.alias(CANDIDATE) is None and store.alias(CANDIDATE) is None and store.alias(CHAMPION) == first

    release.make_candidate(registry, second, "again")
    release.publish_aliases(registry, store, catalog)
    assert release.promote_candidate(registry, store, second) == first
    assert registry.alias(CHAMPION) == store.alias(CHAMPION) == second
    assert registry.alias(CANDIDATE) is None and store.alias(CANDIDATE) is None
    with pytest.raises(LookupError, match="has no version 9"):
        release.make_candidate(registry, "9", "no such version")


def test_a_folder_that_holds_no_model_is_refused_by_name(registry, trained, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: not a saved model folder"):
        release.register_folder(registry, tmp_path / "empty", {})
    record = release.register_folder(registry, trained.model.save(tmp_path / "outside"), {"trained_until_ms": "5"})
    assert registry.alias(CHAMPION) is None and registry.run_tags(record.version)["source"] == "echotune model register"
