"""The jobs the loop launches. Each automatic run carries why in its tags (``echotune/trigger`` and
``echotune/reason``), shown in the Dagster UI and copied into the assets' metadata."""

import dagster as dg

from pipelines.instance import DRAIN_TAG, TRAINING_TAG

TRIGGER_TAG, REASON_TAG = "echotune/trigger", "echotune/reason"
# the run queue starts one run with this tag at a time (pipelines.instance); every job that trains carries it
TRAINS = {TRAINING_TAG: "true"}


def tags(trigger: str, reason: str) -> dict[str, str]:
    """The tags an automatic run carries: what triggered it and why, in words."""
    return {TRIGGER_TAG: trigger, REASON_TAG: reason}


LIVE_FEEDBACK = dg.AssetSelection.assets("feedback_events")
REPORTS = dg.AssetSelection.assets("experiment_report")
SEARCH = dg.AssetSelection.assets("hyperparameter_search")
CATALOG = dg.AssetSelection.assets("catalog_extension")
DRIFT = dg.AssetSelection.assets("feedback_drift")
ROLLOUT = dg.AssetSelection.assets("model_rollout")

# one run for everything unpartitioned (what `echotune pipeline` runs); live feedback (by day),
# experiment reports (by experiment) and the rollout's looks have jobs of their own, and the search runs when launched
everything_job = dg.define_asset_job(
    "materialize_everything",
    selection=dg.AssetSelection.all() - LIVE_FEEDBACK - REPORTS - SEARCH - CATALOG - DRIFT - ROLLOUT,
    tags=TRAINS,
)
drain_job = dg.define_asset_job(
    "drain_feedback",
    selection=LIVE_FEEDBACK,
    description="Persist the feedback stream's entries of one day.",
    tags={DRAIN_TAG: "true"},
)
# a retrain re-reads every stored event (live ones included) but re-ingests no source: erasures first,
# then interactions, the model behind the gate, and the vectors the API serves
retrain_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.assets("user_erasures", "interactions", "recommender_model", "serving_vectors"),
    description="Erasures, interactions from every event, a model behind the gate, its vectors in Redis.",
    tags=TRAINS,
)
publish_job = dg.define_asset_job(
    "publish_champion",
    selection=dg.AssetSelection.assets("serving_vectors"),
    description="Publish what the MLflow aliases point at.",
)
catalog_job = dg.define_asset_job(
    "extend_catalog", selection=CATALOG, description="New catalog tracks join the served versions."
)
drift_job = dg.define_asset_job(
    "measure_drift", selection=DRIFT, description="Drift of live feedback against the champion's data."
)
