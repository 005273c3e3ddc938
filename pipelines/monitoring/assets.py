"""Monitoring: is live listening still what the champion learned from, and is feedback flowing?"""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from core.contracts import TRACK_SCHEMA
from core.drift import MAX_ROWS, WINDOW_DAYS, catalog_columns, measure, save_report
from core.model_registry import CHAMPION
from pipelines.resources import MlflowResource, MonitoringResource, OfflineStoreResource, RedisResource
from pipelines.step_cost import measured

GROUP = "monitoring"
DRIFT_CHECK, BACKLOG_CHECK = "drift_within_threshold", "feedback_backlog_under_threshold"
# After each drain, whichever day it drained. Not eager(): eager also waits until no partition of its
# upstream is missing, and feedback_events has a daily partition for every day since
# ECHOTUNE_PARTITIONS_START of which only days with stream entries are ever drained, so the monitor
# never ran on its own (issue 21). Nor while a drain still runs: the next one's update asks again.
AFTER_EACH_DRAIN = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after each drain")


@dg.asset(
    group_name=GROUP,
    kinds={"evidently", "html"},
    deps=["feedback_events"],
    # the retrain sensor reads the verdict
    automation_condition=AFTER_EACH_DRAIN,
    check_specs=[
        dg.AssetCheckSpec(DRIFT_CHECK, asset="feedback_drift"),
        dg.AssetCheckSpec(BACKLOG_CHECK, asset="feedback_drift"),
    ],
)
@measured
def feedback_drift(
    context: dg.AssetExecutionContext,
    store: OfflineStoreResource,
    mlflow: MlflowResource,
    redis: RedisResource,
    monitoring: MonitoringResource,
) -> dg.MaterializeResult:
    """Live feedback since the champion's training data against that data's last week (Evidently):
    event types, genres and audio features of what is played, activity per user; online CTR per model
    version. The drift check fails past ECHOTUNE_DRIFT_THRESHOLD (the share of drifted columns), and
    then the retrain sensor asks for a new model."""
    registry = mlflow.registry
    champion = registry.alias(CHAMPION)
    trained_until = int(registry.run_tags(champion).get("trained_until_ms", "0")) if champion else 0
    # only the days the two windows span: it runs after every drain, and the table grows every day
    first_day = (pd.Timestamp(trained_until, unit="ms", tz="UTC") - pd.Timedelta(days=WINDOW_DAYS)).strftime("%Y-%m-%d")
    catalog = store.tables.read_tracks(columns=catalog_columns(TRACK_SCHEMA.names))
    result = measure(store.tables.read_events(since=first_day), catalog, trained_until, window_days=WINDOW_DAYS)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    report = save_report(result, store.layout.reports / "drift", f"drift-{stamp}.html")
    exceeded = result.share is not None and result.share >= monitoring.drift_threshold
    backlog = _backlog(redis)
    table = pd.DataFrame({"p_value_or_distance": result.drifted}).round(6)
    metadata = {
        "champion_version": champion or "none",
        "drift_share": dg.MetadataValue.float(result.share if result.share is not None else 0.0),
        "drift_measured": result.share is not None,
        "drift_threshold": monitoring.drift_threshold,
        "drift_exceeded": exceeded,
        "reference_events": result.reference_events,
        "live_events": result.current_events,
        # Evidently compares a seeded sample of each window: its time grows with rows, a distribution's test does not
        "reference_events_compared": result.reference_compared,
        "live_events_compared": result.current_compared,
        "sample_cap_per_window": MAX_ROWS,
        "drifted_columns": dg.MetadataValue.md(table.to_markdown() if len(table) else "none"),
        "online_ctr_by_model_version": dg.MetadataValue.json(result.ctr_by_model_version),
        **{f"online_ctr_v{v}": dg.MetadataValue.float(c) for v, c in result.ctr_by_model_version.items()},
        "stream_backlog": backlog,
    }
    if report is not None:
        metadata["report"] = dg.MetadataValue.path(str(report))
    if result.reason:
        metadata["not_measured_because"] = result.reason
        context.log.info(result.reason)
    checks = [
        dg.AssetCheckResult(
            check_name=DRIFT_CHECK,
            passed=not exceeded,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "drift_share": result.share if result.share is not None else 0.0,
                "threshold": monitoring.drift_threshold,
                "note": result.reason or f"{len(result.drifted)} drifted columns",
            },
        ),
        dg.AssetCheckResult(
            check_name=BACKLOG_CHECK,
            passed=backlog <= monitoring.feedback_backlog_max,
            metadata={"entries_waiting": backlog, "max": monitoring.feedback_backlog_max},
        ),
    ]
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


def _backlog(redis: RedisResource) -> int:
    """Entries waiting in the feedback stream: not yet trimmed (drained and acknowledged)."""
    return int(redis.client.xlen(redis.key_layout.feedback_stream()))
