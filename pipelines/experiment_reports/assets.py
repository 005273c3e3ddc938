"""Experiment reports: the demo experiment simulated on the synthetic users, analysed and reported."""


import tempfile
from pathlib import Path

import dagster as dg
import numpy as np

from echotune.synthetic import SyntheticWorld
from echotune.tables import write_parquet_atomic
from experiments.definition import Experiment
from experiments.report import analyse, write_report
from experiments.simulation import simulate
from models import create
from models import load as load_model
from models import tracking
from models.interactions import Interactions
from models.ranking import top_k
from pipelines.resources import MlflowResource, OfflineStoreResource, SyntheticDataResource
from pipelines.training.assets import serving_vectors

DEMO_EXPERIMENT = Path(__file__).parents[2] / "experiments" / "definitions" / "demo-lightfm-vs-popularity.yaml"
AUDIO = ["danceability", "energy", "acousticness", "instrumentalness", "valence", "tempo", "loudness", "speechiness"]


@dg.asset(group_name="experiments", kinds={"evidently", "html"}, deps=[serving_vectors])
def experiment_report(
    context: dg.AssetExecutionContext, store: OfflineStoreResource, mlflow: MlflowResource, synthetic: SyntheticDataResource
) -> dg.MaterializeResult:
    """The demo A/B test (champion model vs popularity) simulated on the synthetic users: events,
    per-variant metrics, a verdict, and an Evidently HTML report."""
    experiment = Experiment.from_yaml(DEMO_EXPERIMENT)
    world = SyntheticWorld.generate(synthetic.tracks, synthetic.users, synthetic.seed)
    champion = tracking.alias_version(mlflow.registered_model, tracking.CHAMPION)
    if champion is None:
        raise dg.Failure("no champion model: the experiment needs the recommender_model asset to promote one")
    sessions, k = 4, 10
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(tracking.model_dir(mlflow.registered_model, champion, Path(tmp)))
    popularity = create("popularity").fit(Interactions(model.train_matrix, model.user_ids, model.item_ids))
    world_index = {t: i for i, t in enumerate(world.tracks["track_id"])}
    to_world = np.array([world_index[t] for t in model.item_ids])
    model_row = {u: i for i, u in enumerate(model.user_ids)}

    def provider(recommender):
        def ranked(users_idx: np.ndarray) -> np.ndarray:
            rows = np.array([model_row.get(world.user_ids[u], -1) for u in users_idx])
            out = np.full((len(users_idx), sessions * k), -1)
            known = rows >= 0
            if known.any():
                idx, _ = top_k(recommender.scores(rows[known]), sessions * k, exclude=model.train_matrix[rows[known]])
                out[known] = np.where(idx >= 0, to_world[np.maximum(idx, 0)], -1)
            return out

        return ranked

    providers = {"control": provider(popularity), "treatment": provider(model)}
    algorithms = {"control": "popularity", "treatment": model.name}
    events = simulate(world, experiment, providers, algorithms, sessions=sessions, k=k, seed=synthetic.seed)
    out_dir = store.reports_dir / experiment.id
    write_parquet_atomic(events, out_dir / "events.parquet")
    result = analyse(experiment, events)
    shown = events[events["type"] == "recommendation_shown"][["variant", "track_id"]]
    served = shown.merge(world.tracks[["track_id", *AUDIO]], on="track_id", how="left")
    summary_path, html_path = write_report(result, served, out_dir)
    context.log.info("experiment %s: %s", experiment.id, result["verdict"])
    primary = next((c for c in result["comparisons"] if c["metric"] == experiment.primary_metric), None)
    return dg.MaterializeResult(
        metadata={
            "verdict": result["verdict"],
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in result["reasons"])),
            "report": dg.MetadataValue.path(str(html_path)),
            "summary": dg.MetadataValue.path(str(summary_path)),
            "events": len(events),
            "primary_relative_lift": float(primary["relative_lift"]) if primary else float("nan"),
            "primary_p_value": float(primary["p_value"]) if primary else float("nan"),
        }
    )
