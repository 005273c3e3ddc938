"""Event sources: the synthetic history, Spotify exports, generic interaction logs, and live feedback
drained from the Redis stream into daily partitions."""

import warnings
from datetime import date

import dagster as dg
import pandas as pd

from core.event_files import audit_event_file
from core.ingest.live_feedback import drain_day, trim_dead_letters
from core.ingest.service import ingest_history, ingest_interaction_logs
from core.synthetic import SyntheticWorld
from pipelines.ingestion.accounting import import_materialization, rejects_check_spec
from pipelines.resources import IngestionResource, OfflineStoreResource, RedisResource, SyntheticDataResource
from pipelines.step_cost import measured

GROUP = "ingestion"


@dg.asset(group_name=GROUP, kinds={"parquet"}, deps=["synthetic_catalog"])
@measured
def synthetic_events(store: OfflineStoreResource, synthetic: SyntheticDataResource) -> dg.MaterializeResult:
    """Generated listening and recommendation events following the synthetic users' tastes."""
    events = SyntheticWorld.generate(synthetic.tracks, synthetic.users, synthetic.seed).events(
        synthetic.events, days=synthetic.days
    )
    store.tables.remove_event_part("synthetic")  # regenerated whole: yesterday's window must not linger
    store.tables.write_events(events, part="synthetic", fsync=False)
    by_type = events["type"].value_counts()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(events),
            "users": int(events["user_id"].nunique()),
            "tracks": int(events["track_id"].nunique()),
            "days": int(events["timestamp"].dt.date.nunique()),
            "first_event": str(events["timestamp"].min()),
            "last_event": str(events["timestamp"].max()),
            "events_by_type": dg.MetadataValue.md(pd.DataFrame({"events": by_type}).to_markdown()),
        }
    )


def listening_history_asset(track_sources: list[str]) -> dg.AssetsDefinition:
    @dg.asset(
        name="listening_history",
        group_name=GROUP,
        kinds={"parquet", "spotify"},
        deps=track_sources,
        check_specs=[rejects_check_spec("listening_history")],
    )
    @measured
    def listening_history(store: OfflineStoreResource, ingestion: IngestionResource) -> dg.MaterializeResult:
        """Plays, completions and skips from Spotify streaming history exports; PII dropped at the door,
        listeners known only by keyed pseudonyms."""
        paths = ingestion.paths("history_files")
        result = ingest_history(store.tables, paths, ingestion.pseudonymizer(), user=ingestion.history_user or None)
        return import_materialization(result, ingestion.reject_threshold, files=len(paths))

    return listening_history


@dg.asset(group_name=GROUP, kinds={"parquet"}, check_specs=[rejects_check_spec("interaction_logs")])
@measured
def interaction_logs(store: OfflineStoreResource, ingestion: IngestionResource) -> dg.MaterializeResult:
    """User-item listen counts or weights from other services (CSV, TSV/.dat, Parquet)."""
    paths = ingestion.paths("interaction_files")
    result = ingest_interaction_logs(store.tables, paths)
    return import_materialization(result, ingestion.reject_threshold, files=len(paths))


def feedback_events_asset(partitions: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(name="feedback_events", group_name=GROUP, kinds={"parquet", "redis"}, partitions_def=partitions)
    def feedback_events(
        context: dg.AssetExecutionContext,
        store: OfflineStoreResource,
        redis: RedisResource,
        ingestion: IngestionResource,
    ) -> dg.MaterializeResult:
        """Feedback the API accepted on this day, drained from the Redis stream page by page. Entries
        leave the stream only once they and every older entry are fsync'd to parquet, and never before
        the worker acknowledged them; one drain of the stream runs at a time (core.ingest.live_feedback)."""
        day = date.fromisoformat(context.partition_key)
        result = drain_day(redis.client, redis.key_layout, store.tables, day)
        result.save_rejects(store.tables)
        expired = trim_dead_letters(redis.client, redis.key_layout, ingestion.dead_letter_days)
        return import_materialization(
            result,
            threshold=1.0,
            with_check=False,
            trimmed=result.extra.get("trimmed", 0),
            dead_letters_expired=expired,
        )

    return feedback_events


def feedback_events_check(partitions: dg.DailyPartitionsDefinition) -> dg.AssetChecksDefinition:
    # A check on a partitioned asset needs partitions_def, which Dagster 1.13 still calls a preview and
    # warns about on every load of the code location (in every `echotune pipeline` and UI start): the
    # warning says nothing a user can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return _feedback_events_check(partitions)


def _feedback_events_check(partitions: dg.DailyPartitionsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset="feedback_events", partitions_def=partitions, blocking=True)
    def feedback_events_are_valid(
        context: dg.AssetCheckExecutionContext, store: OfflineStoreResource
    ) -> dg.AssetCheckResult:
        """Stored live events of the day have unique ids and every required field."""
        day = date.fromisoformat(context.partition_key)
        counts = audit_event_file(
            store.tables.event_partition(day) / "live.parquet", ["event_id", "user_id", "track_id", "type", "timestamp"]
        )
        return dg.AssetCheckResult(
            passed=counts["missing_fields"] == 0 and counts["duplicate_ids"] == 0, metadata=counts
        )

    return feedback_events_are_valid
