"""GDPR erasure, offline half: ``DELETE /users/{id}`` removes the user's online data at once and
records the request (offline erasure log and Redis); this asset deletes their stored rows before
anything trains on them, and adds what it removed to each user's receipt."""

import dagster as dg

from core.erasure import erase_users, forget_online, receipt_entries, sync_erasures
from core.ingest.live_feedback import drain_lock
from pipelines.resources import OfflineStoreResource, RedisResource


def user_erasures_asset(sources: list[str]) -> dg.AssetsDefinition:
    @dg.asset(name="user_erasures", group_name="ingestion", kinds={"parquet", "redis"}, deps=sources)
    def user_erasures(store: OfflineStoreResource, redis: RedisResource) -> dg.MaterializeResult:
        """Every erasure ever requested is applied on every run, after the sources are ingested:
        a re-import of an old export cannot bring an erased user's rows back into training. A Redis
        that lost its copy of the erasures gets it back from the offline log here."""
        tables = store.tables
        erasures = sync_erasures(tables, redis.client, redis.key_layout)
        with drain_lock(
            redis.client, redis.key_layout
        ):  # it rewrites live event files: a drain meanwhile would lose its rows or undo these
            deleted, per_user = erase_users(tables, erasures)
        for subject, counts in per_user.items():
            tables.erasures.append(subject, receipt_entries(counts, "offline_tables"))
        # every erased subject's online keys, not only the latest ones': an erasure whose online half
        # failed (Redis down at DELETE /users) or state a late replay recreated goes here
        forgotten = forget_online(redis.client, redis.key_layout, tables.erasures, erasures)
        for subject, n in forgotten.items():
            tables.erasures.append(
                subject, [("redis_online_state", n, "online keys found by the pipeline's erasure step")]
            )
        return dg.MaterializeResult(
            metadata={
                "erased_users": len(erasures),
                "erased_users_with_rows_deleted_now": len(per_user),
                **{f"deleted_{kind}": n for kind, n in deleted.items()},
                "deleted_redis_keys": sum(forgotten.values()),
            }
        )

    return user_erasures
