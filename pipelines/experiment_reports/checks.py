"""Checks on the experiments: every running experiment can be served as defined."""

import dagster as dg

from experiments.store import ExperimentStore
from pipelines.resources import RedisResource


# after serving_vectors too: the state it judges is what both steps leave. Checked right after the
# definitions, the first run judged aliases that step had not published yet (a red check on a healthy
# first `make demo`, issue 21).
@dg.asset_check(asset="experiment_definitions", additional_deps=["serving_vectors"])
def running_experiments_are_servable(redis: RedisResource) -> dg.AssetCheckResult:
    """Each variant of a running experiment names a model the API can serve: a published version, or
    an alias that points at one (otherwise its users silently get the champion)."""
    vectors = redis.vectors
    published, problems = set(vectors.versions()), []
    running = ExperimentStore(redis.client, redis.key_layout).running()
    for experiment in running:
        for variant in experiment.variants:
            if variant.model_version and str(variant.model_version) not in published:
                problems.append(
                    f"{experiment.id}/{variant.name}: model version {variant.model_version} is not published"
                )
            if variant.model_alias and vectors.alias(variant.model_alias) is None:
                problems.append(
                    f"{experiment.id}/{variant.name}: alias {variant.model_alias!r} points at nothing published"
                )
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "running": len(running),
            "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"),
        },
    )
