"""GDPR erasure, offline half: ``DELETE /users/{id}`` removes the user's online data at once and
records the request in Redis; this asset deletes their stored rows before anything trains on them."""

import dagster as dg

from core.erasure import erase_users
from pipelines.resources import OfflineStoreResource, RedisResource


def user_erasures_asset(sources: list[str]) -> dg.AssetsDefinition:
    @dg.asset(name="user_erasures", group_name="ingestion", kinds={"parquet", "redis"}, deps=sources)
    def user_erasures(store: OfflineStoreResource, redis: RedisResource) -> dg.MaterializeResult:
        """Every erasure ever requested is applied on every run, after the sources are ingested:
        a re-import of an old export cannot bring an erased user's rows back into training."""
        raw = redis.client.hgetall(redis.key_layout.erased_users())
        erasures = {k.decode(): float(v) for k, v in raw.items()}
        deleted = erase_users(store.tables, erasures)
        return dg.MaterializeResult(
            metadata={"erased_users": len(erasures), **{f"deleted_{kind}": n for kind, n in deleted.items()}}
        )

    return user_erasures
