"""Every metric against a naive, loop-by-loop reference implementation on random inputs."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from models.evaluation import metrics as m

RNG = np.random.default_rng(11)
N_USERS, N_ITEMS, K = 40, 50, 10


def _random_case():
    relevant = sp.random(N_USERS, N_ITEMS, density=0.12, random_state=1, format="csr")
    relevant.data[:] = 1
    relevant[3] = 0  # a user with nothing relevant -> NaN
    relevant.eliminate_zeros()
    recommended = np.array([RNG.permutation(N_ITEMS)[:K] for _ in range(N_USERS)])
    recommended[5, 7:] = -1  # a short list
    return recommended, relevant


REC, REL = _random_case()


def _sets(u):
    return [i for i in REC[u] if i >= 0], set(REL[u].indices)


def ref_precision(u):
    rec, rel = _sets(u)
    return sum(i in rel for i in rec) / K


def ref_recall(u):
    rec, rel = _sets(u)
    return sum(i in rel for i in rec) / len(rel)


def ref_ndcg(u):
    rec, rel = _sets(u)
    dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(rec) if i in rel)
    idcg = sum(1 / math.log2(r + 2) for r in range(min(len(rel), K)))
    return dcg / idcg


def ref_ap(u):
    rec, rel = _sets(u)
    hits, total = 0, 0.0
    for r, i in enumerate(rec):
        if i in rel:
            hits += 1
            total += hits / (r + 1)
    return total / min(len(rel), K)


def ref_hit(u):
    rec, rel = _sets(u)
    return float(any(i in rel for i in rec))


def ref_shown_precision(u):
    rec, rel = _sets(u)  # padding already dropped: divide by what the list holds
    return sum(i in rel for i in rec) / len(rec)


def ref_reciprocal_rank(u):
    rec, rel = _sets(u)
    for r, i in enumerate(rec):
        if i in rel:
            return 1 / (r + 1)
    return 0.0


@pytest.mark.parametrize(
    "fast, ref",
    [
        (m.precision_at_k, ref_precision),
        (m.recall_at_k, ref_recall),
        (m.ndcg_at_k, ref_ndcg),
        (m.average_precision_at_k, ref_ap),
        (m.hit_rate_at_k, ref_hit),
        (m.shown_precision_at_k, ref_shown_precision),
        (m.reciprocal_rank_at_k, ref_reciprocal_rank),
    ],
)
def test_ranking_metrics_match_reference(fast, ref):
    values = fast(REC, REL, K)
    assert np.isnan(values[3])
    for u in range(N_USERS):
        if u != 3:
            assert values[u] == pytest.approx(ref(u)), f"user {u}"


def test_auc_matches_pairwise_reference():
    scores = RNG.normal(size=(N_USERS, N_ITEMS)).round(1)  # rounding creates ties
    exclude = sp.random(N_USERS, N_ITEMS, density=0.1, random_state=2, format="csr")
    fast = m.auc(scores, REL, exclude)
    for u in range(N_USERS):
        excluded = set(exclude[u].indices)
        pos = [i for i in REL[u].indices if i not in excluded]
        neg = [i for i in range(N_ITEMS) if i not in excluded and i not in set(REL[u].indices)]
        if not pos or not neg:
            assert np.isnan(fast[u])
            continue
        wins = sum((scores[u, p] > scores[u, n]) + 0.5 * (scores[u, p] == scores[u, n]) for p in pos for n in neg)
        assert fast[u] == pytest.approx(wins / (len(pos) * len(neg)))


def test_perfect_and_worst_rankings():
    rel = sp.csr_matrix(np.array([[1, 1, 0, 0, 0]]))
    assert m.ndcg_at_k(np.array([[0, 1, 2]]), rel, 3)[0] == pytest.approx(1.0)
    assert m.ndcg_at_k(np.array([[2, 3, 4]]), rel, 3)[0] == 0.0
    assert m.auc(np.array([[5.0, 4, 3, 2, 1]]), rel)[0] == 1.0
    assert m.auc(np.array([[1.0, 2, 3, 4, 5]]), rel)[0] == 0.0


def test_coverage_novelty_diversity_references():
    rec = np.array([[0, 1], [1, 2], [2, -1]])
    assert m.catalog_coverage(rec, 10) == pytest.approx(0.3)
    pop = np.array([0.5, 0.25, 0.125] + [0.01] * 7)
    assert m.novelty(rec, pop)[0] == pytest.approx((1 + 2) / 2)
    vecs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    div = m.intra_list_diversity(np.array([[0, 1, 2]]), vecs)[0]
    cos = 1 / math.sqrt(2)
    assert div == pytest.approx(1 - (0 + cos + cos) / 3)


def test_short_lists_and_first_hits():
    rel = sp.csr_matrix(np.array([[0, 1, 0, 0, 1]]))
    short = np.array([[0, 1, -1, -1, -1]])  # two items shown, one relevant
    assert m.shown_precision_at_k(short, rel, 5)[0] == pytest.approx(0.5)
    assert m.precision_at_k(short, rel, 5)[0] == pytest.approx(0.2)
    assert m.reciprocal_rank_at_k(np.array([[2, 3, 4, 1]]), rel, 4)[0] == pytest.approx(1 / 3)
    assert m.reciprocal_rank_at_k(np.array([[2, 3, 4, 1]]), rel, 2)[0] == 0.0  # the first hit is below k
