"""GDPR erasure: deleting an erased user's rows offline, and keeping Redis's copy of who was erased.

:class:`core.erasure_log.ErasureLog` is the append-only authority on who was erased (by keyed digest,
never by id). An erased user stays erased: their rows are deleted from every table
(:func:`erase_users`, run before every training), new rows of theirs are never written
(:meth:`core.tables.OfflineStore.without_erased`), the API refuses their events and the worker drops
any that were already queued.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import redis

from core.contracts.events import EVENT_SCHEMA
from core.contracts.redis_keys import RedisKeys
from core.erasure_log import ErasureLog
from core.parquet_files import write_parquet_atomic
from core.storage import StoragePath, read_table
from core.tables import OfflineStore


def erase_users(store: OfflineStore, subjects: Iterable[str]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Delete every stored row of the erased ``subjects`` (digests, see ``ErasureLog.digest``): events,
    interaction logs, the interactions table, and rejected rows that mention them. Files are
    rewritten atomically and only when they hold such a row, so a second call changes nothing.
    Returns rows deleted per table kind, and per subject and kind (subjects with nothing deleted are
    left out)."""
    deleted = {"events": 0, "interaction_logs": 0, "interactions": 0, "rejects": 0}
    per_user: dict[str, dict[str, int]] = {}
    subjects = set(subjects)
    if not subjects:
        return deleted, per_user
    log = store.erasures

    def count(kind: str, owners: list[str]) -> None:
        for owner in owners:
            per_user.setdefault(owner, {}).setdefault(kind, 0)
            per_user[owner][kind] += 1

    def rewrite(path: StoragePath, schema: pa.Schema | None, kind: str) -> None:
        table = read_table(path, schema=schema)
        if kind == "rejects":  # by the user it belongs to (a pseudonym), or any raw value naming an erased user
            stored = table["user_id"].to_pylist() if "user_id" in table.column_names else [None] * len(table)
            owners = [
                _erased_subject(user, log, subjects) or _erased_in_text(raw, log, subjects)
                for user, raw in zip(stored, table["raw"].to_pylist())
            ]
            mask = pa.array([o is not None for o in owners])
            owners = [o for o in owners if o is not None]
        else:
            erased = log.erased_among(pc.unique(table["user_id"]).drop_null().to_pylist(), subjects)
            mask = pc.fill_null(pc.is_in(table["user_id"], value_set=pa.array(sorted(erased), pa.string())), False)
            owners = [log.digest(u) for u in table.filter(mask)["user_id"].to_pylist()]
        n = pc.sum(pc.cast(mask, pa.int64())).as_py() or 0
        if n:
            count(kind, owners)
            write_parquet_atomic(table.filter(pc.invert(mask)), path, schema)
            deleted[kind] += n

    for path in store.event_files():
        rewrite(path, EVENT_SCHEMA, "events")
    for source in store.interaction_sources():
        rewrite(store.interaction_source_path(source), None, "interaction_logs")
    if store.interactions_path.exists():
        rewrite(store.interactions_path, None, "interactions")
    for path in store.rejects_files():
        rewrite(path, None, "rejects")
    return deleted, per_user


def sync_erasures(store: OfflineStore, client: redis.Redis, keys: RedisKeys) -> dict[str, float]:
    """Every erased subject (-> epoch seconds of the request): the offline log and Redis's copy, each
    completed from the other. A Redis that was flushed, or runs without an append-only file, gets
    every erasure back; one recorded only in Redis is logged."""
    logged = store.erasures.subjects()
    cached = {k.decode(): float(v) for k, v in client.hgetall(keys.erased_users()).items()}
    for subject, at in cached.items():
        if subject not in logged:
            store.erasures.record_request(subject, at)
    everyone = {**cached, **logged}
    missing = {s: at for s, at in everyone.items() if s not in cached}
    if missing:
        client.hset(keys.erased_users(), mapping={s: str(at) for s, at in missing.items()})
        client.incr(keys.erasures_version())
    return everyone


def forget_online(client: redis.Redis, keys: RedisKeys, log: ErasureLog, subjects: Iterable[str]) -> dict[str, int]:
    """Delete every Redis key that names an erased user (each family of
    :meth:`RedisKeys.user_keys`, found by their ``{u:<id>}`` hash tag), for every subject in
    ``subjects``, not only the ones erased lately: an erasure whose online half failed (Redis down
    when ``DELETE /users`` ran), or state an event replayed later recreated, is removed here. Returns
    keys deleted per subject (subjects with none left out)."""
    subjects = set(subjects)
    if not subjects:
        return {}
    by_user: dict[str, list[bytes]] = {}
    for key in client.scan_iter(match=keys.user_key_pattern(), count=1000):
        user = keys.user_of_key(key)
        if user is not None:
            by_user.setdefault(user, []).append(key)
    erased = sorted(log.erased_among(by_user, subjects))
    if not erased:
        return {}
    pipe = client.pipeline(transaction=False)
    for user in erased:  # one user's keys share a slot ({u:<id>}); a cluster pipeline refuses delete()
        pipe.execute_command("DEL", *by_user[user])
    deleted: dict[str, int] = {}
    for user, n in zip(erased, pipe.execute()):
        if n:
            deleted[log.digest(user)] = deleted.get(log.digest(user), 0) + int(n)
    return deleted


def _erased_subject(user_id: str | None, log: ErasureLog, subjects: set[str]) -> str | None:
    if not user_id:
        return None
    subject = log.digest(user_id)
    return subject if subject in subjects else None


def _erased_in_text(raw: str | None, log, subjects: set[str]) -> str | None:
    """The erased subject a raw rejected row (JSON of whatever the source held) names in any of its
    string values, if any: a rejected row keeps the source's own column names (userID, username...)."""
    if not raw:
        return None
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    values = row.values() if isinstance(row, dict) else row if isinstance(row, list) else [row]
    for value in values:
        if isinstance(value, str) and 0 < len(value) <= 128:
            subject = log.digest(value)
            if subject in subjects:
                return subject
    return None


def receipt_entries(counts: dict[str, int], place: str) -> list[tuple[str, int, str]]:
    """One receipt entry for rows deleted per table kind, e.g. ``offline_tables``: 5 (events 4, rejects 1)."""
    detail = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()) if n)
    return [(place, sum(counts.values()), detail)] if detail else []
