import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models import create
from models.features import ItemFeatures
from models.weighting import count_weights, table_weights


def test_content_ranks_an_item_nobody_played_by_its_features(blocks, block_features):
    m = blocks.matrix.tolil()
    m[:, 5] = 0
    model = create("content", dimensions=8).fit(blocks.with_matrix(sp.csr_matrix(m)), block_features)
    group0 = np.array([u.startswith("g0") for u in blocks.user_ids])
    scores = model.scores(np.arange(blocks.n_users))[:, 5]
    assert scores[group0].min() > scores[~group0].max()
    new = ItemFeatures(np.array(["new"]), block_features.matrix[[5]], block_features.names)
    np.testing.assert_allclose(model.cold_item_vectors(new), model.item_vectors()[[5]], atol=1e-6)


def test_content_and_genre_popularity_need_features(blocks, block_features):
    with pytest.raises(ValueError, match="needs item features"):
        create("content").fit(blocks)
    with pytest.raises(ValueError, match="no item feature name starts with 'genre:'"):
        create("genre_popularity").fit(blocks, block_features)


def test_genre_popularity_prefers_the_users_genre_then_popularity(blocks, block_features):
    model = create("genre_popularity", feature_prefix="block:").fit(blocks, block_features)
    idx, _ = model.recommend(np.array([0]), k=3)  # user g0u00, no exclusions: popular block-0 items first
    popularity = np.asarray((blocks.matrix > 0).sum(axis=0)).ravel()
    block0 = np.argsort(-popularity[:30], kind="stable")
    assert set(idx[0]) <= set(range(30))
    assert popularity[idx[0]].tolist() == sorted(popularity[block0][:3].tolist(), reverse=True)


def test_table_weights_take_weights_as_given_and_counts_as_log1p():
    np.testing.assert_allclose(table_weights(pd.DataFrame({"weight": [0.5, 2.0]})), [0.5, 2.0])
    np.testing.assert_allclose(table_weights(pd.DataFrame({"count": [1, 100]})), count_weights(np.array([1, 100])))
    with pytest.raises(ValueError, match="no 'weight' or 'count' column"):
        table_weights(pd.DataFrame({"plays": [1]}))


def test_content_vectors_place_tracks_by_sound_and_genre():
    from models.features import CONTINUOUS_FEATURES, content_vectors

    # tracks 0 and 1 sound alike, 2 is the opposite; 3 has no audio features, only track 2's genre
    audio = {f: np.array([0.1, 0.12, 0.9, np.nan], dtype=np.float32) for f in CONTINUOUS_FEATURES}
    genres = [["rock"], ["rock"], ["jazz"], ["jazz"]]
    vectors = content_vectors(audio, genres)
    assert vectors.shape == (4, len(CONTINUOUS_FEATURES) + 2)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    cosine = vectors @ vectors.T
    assert cosine[0, 1] > 0.99 and cosine[0, 2] < 0
    # no sound of its own: it sits at the catalog mean, so its genre alone decides its neighbour
    assert np.argmax(cosine[3, :3]) == 2
    np.testing.assert_allclose(vectors[3, : len(CONTINUOUS_FEATURES)], 0.0, atol=1e-6)


def test_content_vectors_without_any_audio_features_use_genres():
    from models.features import content_vectors

    vectors = content_vectors({}, [["a"], ["b"], None])
    assert vectors[0] @ vectors[1] == pytest.approx(0.0) and not vectors[2].any()


def test_raw_count_evidence_tells_counts_from_graded_weights():
    from models.weighting import count_weights, raw_count_evidence

    counts = np.array([1, 3, 12, 40, 250, 260, 900, 352_698])
    assert "heavy tail" in raw_count_evidence(counts)
    assert raw_count_evidence(count_weights(counts)) is None  # graded: log-scaled floats
    assert raw_count_evidence(np.array([1, 2, 3, 5, 4])) is None  # small integers: ratings, not counts
    assert raw_count_evidence(np.array([100, 120, 150, 140])) is None  # no tail


def test_track_features_from_codes_equal_the_long_table_route():
    """track_features builds the matrix from integer codes (a million tracks in seconds); it must be
    exactly ItemFeatures.from_pairs over track_feature_pairs, whatever the index, gaps and item order."""
    from core.synthetic import SyntheticWorld
    from models.features import ItemFeatures, track_feature_pairs, track_features

    tracks = SyntheticWorld.generate(400, 10, seed=8).tracks.iloc[10:].copy()  # an index not starting at 0
    tracks.loc[tracks.index[:30], "energy"] = np.nan
    tracks["explicit"] = tracks["explicit"].astype(object)
    tracks.loc[tracks.index[5:15], "explicit"] = None
    tracks.loc[tracks.index[20:25], "genres"] = pd.Series([[] for _ in range(5)], index=tracks.index[20:25])
    ids = tracks["track_id"].to_numpy()
    item_ids = np.append(np.random.default_rng(0).permutation(ids)[:300], "not-in-the-catalog")
    for wanted in (None, item_ids):
        fast = track_features(tracks, wanted)
        slow = ItemFeatures.from_pairs(ids if wanted is None else wanted, track_feature_pairs(tracks))
        assert list(fast.item_ids) == list(slow.item_ids) and list(fast.names) == list(slow.names)
        assert (fast.matrix != slow.matrix).nnz == 0 and fast.matrix.nnz > 0
