"""Hyperparameter search a data scientist runs from the launchpad, every trial an MLflow run."""

import json

import dagster as dg

from models.evaluation import random_holdout
from models.search import DEFAULT_SPACES, random_search, space_from_json
from models.training import build_inputs
from pipelines.resources import MlflowResource, OfflineStoreResource


class SearchConfig(dg.Config):
    algorithm: str = "lowrank_ease"
    space_json: str = ""  # empty: the algorithm's default space (models.search.DEFAULT_SPACES)
    n_trials: int = 8
    metric: str = "ndcg_at_10"
    seed: int = 0


@dg.asset(group_name="training", kinds={"mlflow"}, deps=["interactions", "tracks"])
def hyperparameter_search(context: dg.AssetExecutionContext, config: SearchConfig, store: OfflineStoreResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    """Random search on a validation split carved out of the training part (the test part the model
    is reported on is never seen). Each trial is a nested MLflow run under one parent run; the best
    parameters are in the metadata, ready for ECHOTUNE_TRAIN_PARAMS."""
    import mlflow as ml

    spec = json.loads(config.space_json) if config.space_json else DEFAULT_SPACES.get(config.algorithm)
    if not spec:
        raise dg.Failure(f"no default search space for {config.algorithm}: give space_json")
    space = space_from_json(spec)
    matrix, features = build_inputs(store.tables.read_interactions(), store.tables.read_tracks())
    train = random_holdout(matrix, seed=config.seed).train  # the test part stays unseen
    validation = random_holdout(train, seed=config.seed + 1)
    with ml.start_run(run_name=f"search-{config.algorithm}") as parent:
        ml.set_tags({"kind": "hyperparameter_search", "algorithm": config.algorithm, "dagster_run_id": context.run_id})
        ml.log_params({"space": json.dumps(spec)[:500], "n_trials": config.n_trials, "metric": config.metric})

        def log_trial(trial) -> None:
            with ml.start_run(run_name=f"trial-{trial.number}", nested=True):
                ml.log_params(trial.params)
                ml.log_metrics({**{f"validation_{k}": v for k, v in trial.metrics.items()}, "fit_seconds": trial.fit_seconds})
            context.log.info("trial %d: %s=%.4f %s", trial.number, config.metric, trial.metrics[config.metric], trial.params)

        result = random_search(config.algorithm, space, validation, n_trials=config.n_trials, seed=config.seed,
                               metric=config.metric, item_features=features, callback=log_trial)  # fmt: skip
        best = result.best
        ml.log_metrics({f"best_validation_{config.metric}": best.metrics[config.metric]})
        ml.log_dict(best.params, "best_params.json")
    return dg.MaterializeResult(
        metadata={
            "best_params": dg.MetadataValue.json(best.params),
            f"best_validation_{config.metric}": best.metrics[config.metric],
            "trials": len(result.trials),
            "mlflow_parent_run": parent.info.run_id,
        }
    )
