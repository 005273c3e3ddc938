"""Offline evaluation: splits that never leak test data into training, and metrics as free functions
returning one value per user."""

from models.evaluation.incumbent import (
    FoldedIn,
    HeadToHead,
    evaluate_incumbent,
    head_to_head,
    unseen_pairs,
)
from models.evaluation.metrics import (
    auc,
    average_precision_at_k,
    catalog_coverage,
    hit_rate_at_k,
    intra_list_diversity,
    ndcg_at_k,
    novelty,
    precision_at_k,
    recall_at_k,
)
from models.evaluation.protocol import evaluate
from models.evaluation.splits import Split, cold_start_split, random_holdout, time_split

__all__ = [
    "FoldedIn",
    "HeadToHead",
    "Split",
    "auc",
    "average_precision_at_k",
    "catalog_coverage",
    "cold_start_split",
    "evaluate",
    "evaluate_incumbent",
    "head_to_head",
    "hit_rate_at_k",
    "intra_list_diversity",
    "ndcg_at_k",
    "novelty",
    "precision_at_k",
    "random_holdout",
    "recall_at_k",
    "time_split",
    "unseen_pairs",
]
