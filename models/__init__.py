"""reco-core: recommendation algorithms, scoring, ranking and evaluation. A plain library: no Dagster,
FastAPI or Redis imports, so pipelines, the API and notebooks all use the same code."""

from models.algorithms import ALGORITHMS, DEFAULT_ALGORITHM, SERVABLE_ALGORITHMS, check_servable, create, load
from models.base import Recommender
from models.interactions import Interactions

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "SERVABLE_ALGORITHMS",
    "Interactions",
    "Recommender",
    "check_servable",
    "create",
    "load",
]
