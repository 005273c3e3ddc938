"""Hyperparameter search a data scientist runs from the launchpad, every trial an MLflow run."""

import json

import dagster as dg
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

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
def hyperparameter_search(
    context: dg.AssetExecutionContext, config: SearchConfig, store: OfflineStoreResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """Random search on a validation split carved out of the training part (the test part the model
    is reported on is never seen). Each trial is a nested MLflow run under one parent run; the best
    parameters are in the metadata, ready for ECHOTUNE_TRAIN_PARAMS."""
    spec = json.loads(config.space_json) if config.space_json else DEFAULT_SPACES.get(config.algorithm)
    if not spec:
        raise dg.Failure(f"no default search space for {config.algorithm}: give space_json")
    space = space_from_json(spec)
    matrix, features = build_inputs(store.tables.read_interactions(), store.tables.read_tracks())
    train = random_holdout(matrix, seed=config.seed).train  # the test part stays unseen
    validation = random_holdout(train, seed=config.seed + 1)
    client, experiment_id = mlflow.registry.client, mlflow.registry.experiment_id
    parent = client.create_run(
        experiment_id,
        run_name=f"search-{config.algorithm}",
        tags={"kind": "hyperparameter_search", "algorithm": config.algorithm, "dagster_run_id": context.run_id},
    )
    parent_id = parent.info.run_id
    for name, value in {"space": json.dumps(spec)[:500], "n_trials": config.n_trials, "metric": config.metric}.items():
        client.log_param(parent_id, name, value)

    def log_trial(trial) -> None:
        run = client.create_run(experiment_id, run_name=f"trial-{trial.number}", tags={MLFLOW_PARENT_RUN_ID: parent_id})
        for name, value in trial.params.items():
            client.log_param(run.info.run_id, name, value)
        for name, value in {
            **{f"validation_{k}": v for k, v in trial.metrics.items()},
            "fit_seconds": trial.fit_seconds,
        }.items():
            client.log_metric(run.info.run_id, name, float(value))
        client.set_terminated(run.info.run_id)
        context.log.info(
            "trial %d: %s=%.4f %s", trial.number, config.metric, trial.metrics[config.metric], trial.params
        )

    try:
        result = random_search(
            config.algorithm,
            space,
            validation,
            n_trials=config.n_trials,
            seed=config.seed,
            metric=config.metric,
            item_features=features,
            callback=log_trial,
        )
    except BaseException:
        client.set_terminated(parent_id, status="FAILED")
        raise
    best = result.best
    client.log_metric(parent_id, f"best_validation_{config.metric}", best.metrics[config.metric])
    client.log_dict(parent_id, best.params, "best_params.json")
    client.set_terminated(parent_id)
    return dg.MaterializeResult(
        metadata={
            "best_params": dg.MetadataValue.json(best.params),
            f"best_validation_{config.metric}": best.metrics[config.metric],
            "trials": len(result.trials),
            "mlflow_parent_run": parent_id,
        }
    )
