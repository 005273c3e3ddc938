"""Steps 4 and 5: count what was done with each stream entry and acknowledge it, exactly once.

What is counted feeds /metrics: the counters (``applied``, ``exposures``, ``dead_lettered``,
``dropped_erased``); the aggregates, one field per "algorithm|model_version|experiment|variant|type"
(CTR and completion by model version, experiment conversion); and user engagement, the users and
events of five-minute and hourly buckets of when the API accepted the events (:data:`ACTIVITY_WINDOWS`).

Counting and acknowledging are one script: an entry is counted only when its XACK removes it from the
group's pending list, which happens once. A worker that crashes before the script leaves the entry
pending for another to handle and count; after it, the entry is never delivered again. (This replaced
a set of every counted event id per day: at thousands of events a second that set outgrew everything
else in Redis.)

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
from core.contracts.served_lists import ServedList
from core.redis_clients import run_scripts
from serving.worker.events import entry_ms

NO_LABEL = "none"  # the event did not say
OTHER_LABEL = "other"  # a model version not published, an experiment not registered (or retired since)
LABELS_FRESH_SECONDS = 10.0  # published versions and experiments are re-read this often...
LABELS_MISS_SECONDS = 1.0  # ...or, at most this often, when an event names one not seen yet
SWEEP_EVERY_SECONDS = 600.0
LIST_EVENTS = (
    "recommendation_shown",
    "recommendation_clicked",
)  # events about a served list: counted for a variant only with its token  # fold fields of retired versions into "other" at least this often


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

# KEYS: stream, counters, aggregates, then active users and events of the five-minute and of the hourly
# bucket; ARGV: group, expiry (epoch s) of the five-minute and of the hourly bucket, then per entry: stream
# id, counter field, user id or '' (not engagement), how many events, m, then m pairs (aggregate field,
# events). Each entry is counted only if this XACK is the one that acknowledges it.
ACK_SCRIPT = """
local counted = 0
local active = 0
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i + 3])
  local m = tonumber(ARGV[i + 4])
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 and n > 0 then
    counted = counted + n
    redis.call('HINCRBY', KEYS[2], ARGV[i + 1], n)
    for k = 0, m - 1 do redis.call('HINCRBY', KEYS[3], ARGV[i + 5 + 2 * k], ARGV[i + 6 + 2 * k]) end
    if ARGV[i + 2] ~= '' then
      redis.call('PFADD', KEYS[4], ARGV[i + 2])
      redis.call('PFADD', KEYS[6], ARGV[i + 2])
      active = active + n
    end
  end
  i = i + 5 + 2 * m
end
if active > 0 then
  redis.call('INCRBY', KEYS[5], active)
  redis.call('INCRBY', KEYS[7], active)
  for k = 4, 5 do redis.call('EXPIREAT', KEYS[k], ARGV[2]) end
  for k = 6, 7 do redis.call('EXPIREAT', KEYS[k], ARGV[3]) end
end
return counted
"""


@dataclass(frozen=True)
class Handled:
    """What the worker did with one stream entry, for :meth:`EventCounter.acknowledge`."""

    stream_id: str
    counter: str  # applied, exposures, dead_lettered, dropped_erased, or '' (acknowledged, not counted)
    field: str = ""  # the aggregate field ('' none)
    user: str = ""  # a user active in the entry's time bucket ('' none: not engagement)
    events: int = 1  # how many events the entry counts for (an exposure list: its tracks)
    fields: tuple[
        tuple[str, int], ...
    ] = ()  # aggregate fields of an entry that counts under several (an interleaved list)

    def aggregate(self) -> tuple[tuple[str, int], ...]:
        """(aggregate field, events) pairs this entry adds."""
        if self.fields:
            return self.fields
        return ((self.field, self.events),) if self.field and self.counter else ()


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
        (at most once a second) before it is counted as "other". A click or shown event that names no
        served list (no request token: its experiment is the user's assignment) is untargeted: it counts
        under no experiment, so it can never move a variant's click-through rate."""
        self.refresh()
        raw = [
            [_label(r.get(k)) for k in ("algorithm", "model_version", "experiment_id", "variant")] + [r["type"]]
            for r in rows
        ]
        for parts, row in zip(raw, rows):
            if row.get("context_source") == "assignment" and row["type"] in LIST_EVENTS:
                parts[2] = parts[3] = NO_LABEL
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
    """The exactly-once counters of the feedback worker: counting is acknowledging (ACK_SCRIPT)."""

    def __init__(
        self, client: redis.Redis, keys: RedisKeys, clock: Clock = SYSTEM_CLOCK, group: str = "workers"
    ) -> None:
        self.r = client
        self.keys = keys
        self.clock = clock
        self.group = group
        self.labels = AggregateLabels(client, keys, clock)
        self._ack = client.register_script(ACK_SCRIPT)
        self._fold = client.register_script(FOLD_SCRIPT)
        self._swept_at = float("-inf")

    def fields(self, rows: Sequence[Mapping]) -> list[str]:
        """The aggregate field of each event row (see :class:`AggregateLabels`)."""
        self._sweep_if_due()
        return self.labels.fields(rows)

    def exposure_fields(self, lists: Sequence[ServedList]) -> list[tuple[tuple[str, int], ...]]:
        """Per served list, its (aggregate field, shown tracks) pairs: one pair, or one per ranker of an
        interleaved list (each track is shown for the variant that contributed it)."""
        rows, owners = [], []
        for i, served in enumerate(lists):
            per_variant: dict[str | None, int] = defaultdict(int)
            for position in range(len(served.tracks)):
                per_variant[served.variant_at(position)] += 1
            for variant, n in per_variant.items():
                rows.append(
                    {
                        "algorithm": served.algorithm,
                        "model_version": served.model_version,
                        "experiment_id": served.experiment_id,
                        "variant": variant,
                        "type": "recommendation_shown",
                    }
                )
                owners.append((i, n))
        out: list[list[tuple[str, int]]] = [[] for _ in lists]
        for (i, n), field in zip(owners, self.fields(rows)):
            out[i].append((field, n))
        return [tuple(pairs) for pairs in out]

    def acknowledge(self, handled: Sequence[Handled]) -> dict[str, int]:
        """Acknowledge the entries and count each one whose acknowledgement this is (a redelivered entry
        another worker finished is not counted twice). Returns events counted per counter."""
        by_bucket: dict[int, list[Handled]] = defaultdict(list)
        for h in handled:
            by_bucket[_FINE.index(entry_ms(h.stream_id) / 1000)].append(h)
        calls, order = [], []
        for fine, group in by_bucket.items():
            start = fine * _FINE.bucket_seconds
            coarse = _COARSE.index(start)
            keys = [
                self.keys.feedback_stream(),
                self.keys.feedback_counters(),
                self.keys.feedback_aggregates(),
                self.keys.feedback_active_users(f"{_FINE.bucket}:{fine}"),
                self.keys.feedback_active_events(f"{_FINE.bucket}:{fine}"),
                self.keys.feedback_active_users(f"{_COARSE.bucket}:{coarse}"),
                self.keys.feedback_active_events(f"{_COARSE.bucket}:{coarse}"),
            ]
            # one script call per counter, so the return value says how many of that kind were counted
            for counter in dict.fromkeys(h.counter for h in group):
                args = [self.group, _FINE.expires_at(fine), _COARSE.expires_at(coarse)]
                for h in group:
                    if h.counter == counter:
                        pairs = h.aggregate()
                        args += [
                            h.stream_id,
                            h.counter or "acknowledged",
                            h.user,
                            h.events if h.counter else 0,
                            len(pairs),
                        ]
                        args += [x for pair in pairs for x in pair]
                calls.append((self._ack, keys, args))
                order.append(counter)
        counted: dict[str, int] = defaultdict(int)
        for counter, n in zip(order, run_scripts(self.r, calls)):
            counted[counter] += int(n)
        return dict(counted)

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
