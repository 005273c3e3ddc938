"""Experiments: definitions registered from YAML, the demo experiment simulated on the synthetic
users, and one report per experiment (a dynamic partition per experiment id).

The demo's experiment (:data:`experiments.simulation.DEMO_EXPERIMENT`) belongs to the synthetic source:
only ``demo_experiment_events`` registers it, and a pipeline without that source stops it when an
earlier demo run left it running in the same Redis (it would split the user's own listeners 50/50)."""

import tempfile
from datetime import timedelta
from pathlib import Path

import dagster as dg
import numpy as np

from core.model_registry import CHAMPION
from core.synthetic import SyntheticWorld
from experiments.analysis import analyse
from experiments.definition import Experiment
from experiments.report import headline, served_tracks, write_report
from experiments.simulation import DEMO_EXPERIMENT, simulate
from experiments.store import ExperimentStore
from models import create
from models import load as load_model
from models.interactions import Interactions
from models.ranking import top_k, top_k_shared
from pipelines.resources import (
    ExperimentsResource,
    MlflowResource,
    OfflineStoreResource,
    RedisResource,
    SyntheticDataResource,
)
from pipelines.step_cost import measured

GROUP = "experiments"
EXPERIMENTS = dg.DynamicPartitionsDefinition(name="experiments")
# the demo serves lists to at most this many synthetic users (a seeded sample): ranking a million
# tracks for 100,000 users would take the pipeline longer than everything else together
DEMO_USERS = 10_000
# lists are ranked for this many (user, track) scores at a time (64 MB of scores at any catalog size)
_SCORE_CELLS = 2**24


def experiment_definitions_asset(demo: bool) -> dg.AssetsDefinition:
    """The ``experiment_definitions`` asset; ``demo`` (the synthetic source is on) leaves the demo's
    experiment to ``demo_experiment_events``, otherwise a running demo experiment is stopped."""

    @dg.asset(name="experiment_definitions", group_name=GROUP, kinds={"yaml", "redis"})
    def experiment_definitions(
        context: dg.AssetExecutionContext, redis: RedisResource, experiments: ExperimentsResource
    ) -> dg.MaterializeResult:
        """Experiment definitions from the YAML folder registered in Redis (where the API reads them; a
        status changed through the API is kept), and a report partition per experiment."""
        experiment_store = ExperimentStore(redis.client, redis.key_layout)
        added = experiment_store.import_folder(Path(experiments.definitions_dir))
        stopped = [] if demo else stop_demo_experiment(experiment_store)
        every = experiment_store.all()
        known = set(context.instance.get_dynamic_partitions(EXPERIMENTS.name))
        context.instance.add_dynamic_partitions(EXPERIMENTS.name, [e.id for e in every if e.id not in known])
        return dg.MaterializeResult(
            metadata={
                "registered": len(every),
                "running": ", ".join(e.id for e in every if e.status == "running") or "none",
                "added_now": ", ".join(added) or "none",
                "demo_experiment_stopped": ", ".join(stopped) or "none",
            }
        )

    return experiment_definitions


def stop_demo_experiment(experiment_store: ExperimentStore) -> list[str]:
    """Stop the demo's experiment if it is running (an earlier demo run in this Redis registered it);
    returns the ids stopped. Without the synthetic source its listeners are real ones."""
    demo = experiment_store.get(DEMO_EXPERIMENT.stem)
    if demo is None or demo.status != "running":
        return []
    experiment_store.set_status(demo.id, "stopped")
    return [demo.id]


@dg.asset(group_name=GROUP, kinds={"parquet"}, deps=["serving_vectors", "experiment_definitions", "synthetic_events"])
@measured
def demo_experiment_events(
    context: dg.AssetExecutionContext,
    store: OfflineStoreResource,
    redis: RedisResource,
    mlflow: MlflowResource,
    synthetic: SyntheticDataResource,
) -> dg.MaterializeResult:
    """The demo experiment run on the synthetic users: each user in the allocation is served lists by
    their variant (the champion model, or popularity) and answers them with the same response model
    that generated their history (at most ``DEMO_USERS`` of them). The events land in the event log
    like live feedback would."""
    experiment_store = ExperimentStore(redis.client, redis.key_layout)
    experiment = experiment_store.get(DEMO_EXPERIMENT.stem)
    if experiment is None:  # the demo's definition ships with the package: register it wherever home is
        experiment = experiment_store.put(Experiment.from_yaml(DEMO_EXPERIMENT))
        context.instance.add_dynamic_partitions(EXPERIMENTS.name, [experiment.id])
    world = SyntheticWorld.generate(synthetic.tracks, synthetic.users, synthetic.seed)
    champion = mlflow.registry.alias(CHAMPION)
    if champion is None:
        raise dg.Failure("no champion model: the experiment needs the recommender_model asset to promote one")
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(mlflow.registry.download(champion, Path(tmp)))
    popularity = create("popularity").fit(Interactions(model.train_matrix, model.user_ids, model.item_ids))
    world_index = {t: i for i, t in enumerate(world.tracks["track_id"])}
    to_world = np.array([world_index.get(t, -1) for t in model.item_ids])
    model_row = {u: i for i, u in enumerate(model.user_ids)}
    sessions, k = 4, 10

    def provider(recommender):
        def ranked(users_idx: np.ndarray) -> np.ndarray:
            rows = np.array([model_row.get(world.user_ids[u], -1) for u in users_idx])
            out = np.full((len(users_idx), sessions * k), -1)
            known = np.flatnonzero(rows >= 0)
            step = max(1, _SCORE_CELLS // max(len(model.item_ids), 1))
            for part in (known[i : i + step] for i in range(0, len(known), step)):
                played = model.train_matrix[rows[part]]
                if recommender is popularity:  # one ranking for everyone: rank its head, not the catalog
                    idx, _ = top_k_shared(popularity.item_vectors()[:, 0], sessions * k, exclude=played)
                else:
                    idx, _ = top_k(recommender.scores(rows[part]), sessions * k, exclude=played)
                out[part] = np.where(idx >= 0, to_world[np.maximum(idx, 0)], -1)
            return out

        return ranked

    by_name = {v.name: v for v in experiment.variants}
    providers = {name: provider(popularity if v.algorithm == "popularity" else model) for name, v in by_name.items()}
    algorithms = {name: "popularity" if v.algorithm == "popularity" else model.name for name, v in by_name.items()}
    history_end = store.tables.read_events()["timestamp"].max()
    users = None
    if world.n_users > DEMO_USERS:
        users = np.sort(np.random.default_rng(synthetic.seed).choice(world.n_users, size=DEMO_USERS, replace=False))
    events = simulate(
        world,
        experiment,
        providers,
        algorithms,
        sessions=sessions,
        k=k,
        start=history_end - timedelta(days=7),
        days=7,
        seed=synthetic.seed,
        users=users,
    )
    events["model_version"] = np.where(events["algorithm"] == model.name, champion, None)
    part = f"simulation-{experiment.id}"
    store.tables.remove_event_part(part)
    store.tables.write_events(events, part=part, fsync=False)
    context.log.info("simulated %d events for %s", len(events), experiment.id)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(events),
            "users": int(events["user_id"].nunique()),
            "users_sampled": int(world.n_users if users is None else len(users)),  # at most DEMO_USERS
            "users_in_world": int(world.n_users),
            "champion_version": champion,
        }
    )


@dg.asset(
    group_name=GROUP, kinds={"evidently", "html"}, partitions_def=EXPERIMENTS, deps=["experiment_definitions", "tracks"]
)
@measured
def experiment_report(
    context: dg.AssetExecutionContext, store: OfflineStoreResource, redis: RedisResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """One experiment's analysis, by its design (A/B: sample ratio, guardrails, sequential and
    CUPED-adjusted lifts, power; interleaving: per-user preference and its sign test) and its reports:
    summary.json and an Evidently HTML whose first screen is the verdict. Both are also logged to the
    MLflow runs of the model versions under test."""
    experiment = ExperimentStore(redis.client, redis.key_layout).get(context.partition_key)
    if experiment is None:
        raise dg.Failure(f"experiment {context.partition_key} is not registered")
    events = store.tables.read_events()
    result = analyse(experiment, events)
    served = served_tracks(events, experiment, store.tables.read_tracks())
    out_dir = store.layout.reports / experiment.id
    summary_path, html_path = write_report(result, served, out_dir)
    versions = sorted(
        {v for v in events.loc[events["experiment_id"] == experiment.id, "model_version"].dropna().unique()}
    )
    for version in versions:
        mlflow.registry.log_report(version, out_dir, f"experiments/{experiment.id}")
    context.log.info("experiment %s: %s", experiment.id, result["verdict"])
    return dg.MaterializeResult(
        metadata={
            "verdict": result["verdict"],
            "design": experiment.design,
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in result["reasons"])),
            "report": dg.MetadataValue.path(str(html_path)),
            "summary": dg.MetadataValue.path(str(summary_path)),
            **headline(result),
            "logged_to_model_versions": ", ".join(versions) or "none",
        }
    )
