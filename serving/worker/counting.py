"""Step 4: count applied and dead-lettered events, each event id once however often it is redelivered.

What is counted feeds /metrics: the counters (``applied``, ``dead_lettered``, ``dropped_erased``);
the aggregates, one field per "algorithm|model_version|experiment|variant|type" (CTR and completion
by model version, experiment conversion); and user engagement, the users and events of five-minute
and hourly buckets of when the API accepted the events (:data:`ACTIVITY_WINDOWS`). A script adds an
event id to the set of ids counted on its day and counts it only if it was new, so a worker that
crashed after counting and before acknowledging does not count its batch twice when another worker
reclaims it.

Aggregate fields stay bounded whatever labels clients send (:class:`AggregateLabels`): a model
version that is not published, or an experiment that is not registered, is counted as "other", and
the counts of a version retired later are folded into "other" too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import redis

from core.clock import SYSTEM_CLOCK, Clock
from core.contracts.events import LABEL
from core.contracts.redis_keys import RedisKeys
from serving.worker.events import Event, entry_ms
from serving.worker.user_state import DEDUPE_SECONDS

# a day longer than the applied-events dedupe window: an event id still deduplicated there is never counted twice
COUNTED_TTL_SECONDS = DEDUPE_SECONDS + 86_400

NO_LABEL = "none"  # the event did not say
OTHER_LABEL = "other"  # a model version not published, an experiment not registered (or retired since)
LABELS_FRESH_SECONDS = 10.0  # published versions and experiments are re-read this often...
LABELS_MISS_SECONDS = 1.0  # ...or, at most this often, when an event names one not seen yet
SWEEP_EVERY_SECONDS = 600.0  # fold fields of retired versions into "other" at least this often


@dataclass(frozen=True)
class ActivityWindow:
    """Users and events of the last ``name`` (1h, 24h), kept in ``buckets`` buckets of ``bucket_seconds``."""

    name: str
    bucket: str
    bucket_seconds: int
    buckets: int

    def index(self, epoch_s: float) -> int:
        return int(epoch_s // self.bucket_seconds)

    def bucket_names(self, now: float) -> list[str]:
        """The buckets of the window ending at ``now`` (the current one included)."""
        last = self.index(now)
        return [f"{self.bucket}:{i}" for i in range(last - self.buckets + 1, last + 1)]

    def expires_at(self, index: int) -> int:
        """When bucket ``index`` leaves every window, plus one bucket of margin (epoch seconds)."""
        return (index + self.buckets + 1) * self.bucket_seconds


# the last hour from 12 five-minute buckets, the last day from 24 hourly ones: PFCOUNT merges at most 24 keys
ACTIVITY_WINDOWS = (ActivityWindow("1h", "5m", 300, 12), ActivityWindow("24h", "1h", 3600, 24))
_FINE, _COARSE = ACTIVITY_WINDOWS

# KEYS: counted set of the day, counters, aggregates; ARGV: ttl, counter field, pairs (id, aggregate field or '')
COUNT_SCRIPT = """
local new = 0
for i = 3, #ARGV, 2 do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    new = new + 1
    if ARGV[i + 1] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[i + 1], 1) end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
if new > 0 then redis.call('HINCRBY', KEYS[2], ARGV[2], new) end
return new
"""

# KEYS: counted set of the day, counters, aggregates, then active users and events of the five-minute and
# of the hourly bucket; ARGV: ttl of the counted set, expiry (epoch s) of the five-minute and of the hourly
# bucket, then triples (event id, aggregate field, user id)
APPLIED_SCRIPT = """
local new = 0
for i = 4, #ARGV, 3 do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    new = new + 1
    redis.call('HINCRBY', KEYS[3], ARGV[i + 1], 1)
    redis.call('PFADD', KEYS[4], ARGV[i + 2])
    redis.call('PFADD', KEYS[6], ARGV[i + 2])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
if new > 0 then
  redis.call('HINCRBY', KEYS[2], 'applied', new)
  redis.call('INCRBY', KEYS[5], new)
  redis.call('INCRBY', KEYS[7], new)
  for k = 4, 5 do redis.call('EXPIREAT', KEYS[k], ARGV[2]) end
  for k = 6, 7 do redis.call('EXPIREAT', KEYS[k], ARGV[3]) end
end
return new
"""

# KEYS: aggregates; ARGV: pairs (field, field its count moves to). Fields of another shape stay as they are.
FOLD_SCRIPT = """
local moved = 0
for i = 1, #ARGV, 2 do
  local n = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '')
  if n and n == math.floor(n) then
    redis.call('HINCRBY', KEYS[1], ARGV[i + 1], n)
    redis.call('HDEL', KEYS[1], ARGV[i])
    moved = moved + 1
  end
end
return moved
"""


def utc_day(ms: int) -> str:
    """The UTC day (YYYY-MM-DD) of an epoch time in milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def aggregate_parts(field: str) -> tuple[str, str, str, str, str] | None:
    """(algorithm, model_version, experiment, variant, type) of an aggregate field, or None for a field of
    another shape. Fields written before model versions were counted ("algorithm|variant|type") read
    with model version and experiment "none"."""
    parts = field.split("|")
    if len(parts) == 3:
        parts = [parts[0], NO_LABEL, NO_LABEL, parts[1], parts[2]]
    if len(parts) != 5 or not all(LABEL.match(p) for p in parts):
        return None
    return tuple(parts)  # type: ignore[return-value]


def _label(value: object) -> str:
    if value is None or value == "":
        return NO_LABEL
    return value if isinstance(value, str) and LABEL.match(value) else OTHER_LABEL


class AggregateLabels:
    """The aggregate field an applied event is counted under. Algorithm and variant are the event's
    (validated labels); the model version only when it is published, the experiment only when it is
    registered and the variant then only when it is one of the experiment's, else "other"."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, clock: Clock = SYSTEM_CLOCK) -> None:
        self.r, self.keys, self.clock = client, keys, clock
        self.versions: frozenset[str] = frozenset()
        self.experiments: dict[str, frozenset[str]] = {}
        self._read_at = float("-inf")

    def refresh(self, within: float = LABELS_FRESH_SECONDS) -> frozenset[str]:
        """Re-read published versions and registered experiments unless read in the last ``within``
        seconds. Returns the versions that were published before and are not any more."""
        if self.clock.monotonic() - self._read_at < within:
            return frozenset()
        self._read_at = self.clock.monotonic()
        pipe = self.r.pipeline(transaction=False)
        pipe.zrange(self.keys.models_index(), 0, -1)
        pipe.hvals(self.keys.experiments())
        versions, definitions = pipe.execute()
        before, self.versions = self.versions, frozenset(v.decode() for v in versions)
        self.experiments = dict(_variants(definitions))
        return before - self.versions

    def normalized(self, parts: Sequence[str]) -> str:
        """The field for (algorithm, model_version, experiment, variant, type) as they are known now."""
        algorithm, version, experiment, variant, kind = parts
        if version not in (NO_LABEL, OTHER_LABEL) and version not in self.versions:
            version = OTHER_LABEL
        if experiment != NO_LABEL:
            variants = self.experiments.get(experiment, frozenset())
            experiment = experiment if experiment in self.experiments else OTHER_LABEL
            variant = variant if variant in variants else OTHER_LABEL
        return "|".join((algorithm, version, experiment, variant, kind))

    @staticmethod
    def _unknown(label: str, known) -> bool:
        return label not in (NO_LABEL, OTHER_LABEL) and label not in known

    def fields(self, rows: Sequence[Mapping]) -> list[str]:
        """The aggregate field of each event row; an unknown version or experiment is looked up again
        (at most once a second) before it is counted as "other"."""
        self.refresh()
        raw = [[_label(r.get(k)) for k in ("algorithm", "model_version", "experiment_id", "variant")] + [r["type"]] for r in rows]
        if any(self._unknown(p[1], self.versions) or self._unknown(p[2], self.experiments) for p in raw):
            self.refresh(within=LABELS_MISS_SECONDS)
        return [self.normalized(p) for p in raw]


def _variants(definitions: Iterable[bytes]) -> Iterable[tuple[str, frozenset[str]]]:
    """(experiment id, its variant names) of each readable definition in the experiments hash."""
    for raw in definitions:
        try:
            definition = orjson.loads(raw)
            yield definition["id"], frozenset(v["name"] for v in definition["variants"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # the API and the pipeline validate definitions; a bad one is just not a known experiment


class EventCounter:
    """The exactly-once counters of the feedback worker."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, clock: Clock = SYSTEM_CLOCK) -> None:
        self.r = client
        self.keys = keys
        self.clock = clock
        self.labels = AggregateLabels(client, keys, clock)
        self._count = client.register_script(COUNT_SCRIPT)
        self._applied = client.register_script(APPLIED_SCRIPT)
        self._fold = client.register_script(FOLD_SCRIPT)
        self._swept_at = float("-inf")

    def _keys(self, day: str) -> list[str]:
        return [self.keys.feedback_counted(day), self.keys.feedback_counters(), self.keys.feedback_aggregates()]

    def count_applied(self, events: Sequence[Event]) -> int:
        """Adds the events not counted yet to ``applied``, to their aggregate field and to the active
        users and events of their time buckets (the time of an event is when the API accepted it).
        Returns how many were counted (not counted before)."""
        self._sweep_if_due()
        fields = self.labels.fields([e.row for e in events])
        by_bucket: dict[int, list[str]] = defaultdict(list)
        for e, field in zip(events, fields):
            by_bucket[_FINE.index(e.accepted_ms / 1000)] += [e.event_id, field, e.user]
        pipe = self.r.pipeline(transaction=False)
        for fine, triples in by_bucket.items():
            start = fine * _FINE.bucket_seconds
            coarse = _COARSE.index(start)
            keys = [
                *self._keys(utc_day(start * 1000)),
                self.keys.feedback_active_users(f"{_FINE.bucket}:{fine}"), self.keys.feedback_active_events(f"{_FINE.bucket}:{fine}"),
                self.keys.feedback_active_users(f"{_COARSE.bucket}:{coarse}"), self.keys.feedback_active_events(f"{_COARSE.bucket}:{coarse}"),
            ]  # fmt: skip
            args = [COUNTED_TTL_SECONDS, _FINE.expires_at(fine), _COARSE.expires_at(coarse), *triples]
            self._applied(keys=keys, args=args, client=pipe)
        return sum(pipe.execute())

    def count_dead_lettered(self, stream_id: str) -> None:
        """Adds the stream entry ``stream_id`` to ``dead_lettered`` unless it was counted already."""
        self._count(keys=self._keys(utc_day(entry_ms(stream_id))), args=[COUNTED_TTL_SECONDS, "dead_lettered", f"dead:{stream_id}", ""])

    def count_erased(self, events: Sequence[Event]) -> None:
        """Adds the events not counted yet to ``dropped_erased``: queued events of users erased since
        (accepted, then dropped by law: neither applied nor dead letters)."""
        by_day: dict[str, list[str]] = defaultdict(list)
        for e in events:
            by_day[utc_day(e.accepted_ms)] += [f"erased:{e.event_id}", ""]
        pipe = self.r.pipeline(transaction=False)
        for day, pairs in by_day.items():
            self._count(keys=self._keys(day), args=[COUNTED_TTL_SECONDS, "dropped_erased", *pairs], client=pipe)
        pipe.execute()

    def sweep(self) -> int:
        """Fold the counts of fields whose model version is no longer published (or whose experiment is
        no longer registered) into "other", and rewrite fields of the older three-part shape, so the
        aggregates keep one field set per published version. Skipped while no version is published
        (an empty Redis must not fold away what it is about to serve). Returns the fields moved."""
        self._swept_at = self.clock.monotonic()
        self.labels.refresh(within=0.0)
        if not self.labels.versions:
            return 0
        moves: list[str] = []
        for raw in self.r.hscan_iter(self.keys.feedback_aggregates(), count=1000):
            field = raw[0].decode("utf-8", errors="replace")
            parts = aggregate_parts(field)
            if parts is not None and (target := self.labels.normalized(parts)) != field:
                moves += [field, target]
        return int(self._fold(keys=[self.keys.feedback_aggregates()], args=moves)) if moves else 0

    def _sweep_if_due(self) -> None:
        retired = self.labels.refresh()
        if retired or self.clock.monotonic() - self._swept_at >= SWEEP_EVERY_SECONDS:
            self.sweep()

