"""The default algorithm on the real HetRec Last.fm listens, on the protocol of issue 4 (skipped when
../shared/data is absent, as in a fresh clone)."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from models import DEFAULT_ALGORITHM, create
from models.evaluation import metrics as m
from models.evaluation import random_holdout
from models.interactions import Interactions
from models.ranking import top_k
from models.weighting import count_weights
from tests.conftest import SHARED_DATA

LASTFM = SHARED_DATA / "hetrec-lastfm"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.realdata,
    pytest.mark.skipif(not (LASTFM / "user_artists.dat").exists(), reason=f"real data not found: {LASTFM} is absent"),
]


def _listens() -> pd.DataFrame:
    path = LASTFM / "user_artists.dat"
    expected = next(
        line.split()[0]
        for line in (LASTFM / "SHA256SUMS").read_text().splitlines()
        if line.endswith("user_artists.dat")
    )
    assert hashlib.sha256(path.read_bytes()).hexdigest() == expected, "user_artists.dat is not the published file"
    frame = pd.read_csv(path, sep="\t", dtype={"userID": str, "artistID": str})
    return frame.rename(columns={"userID": "user_id", "artistID": "item_id", "weight": "count"})


def test_default_reaches_the_issue_targets_on_lastfm():
    frame = _listens()
    matrix = Interactions.from_frame(frame.assign(weight=count_weights(frame["count"].to_numpy())))
    split = random_holdout(matrix, test_share=0.2, min_items=5, seed=42)
    model = create(DEFAULT_ALGORITHM).fit(split.train)
    users = split.test_users
    recommended, _ = top_k(model.scores(users), 10, exclude=split.train.matrix[users])
    relevant = split.test.matrix[users]
    assert model.item_vectors().shape[1] == 64
    assert np.nanmean(m.ndcg_at_k(recommended, relevant, 10)) >= 0.23
    assert np.nanmean(m.precision_at_k(recommended, relevant, 10)) >= 0.18
