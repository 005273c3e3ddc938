"""The Redis key layout, the only place key names are spelled.

Everything lives under ``<prefix>:v1:`` (the layout version). Model artefacts are versioned by the
registered model version, so a new version is written beside the old one and made live by moving one
alias key: readers never see a half-written set. Per-user keys carry the user id in a hash tag
(``{u:<id>}``) so that, on Redis Cluster, all of a user's keys share a slot; a version's artefacts carry
``{m:<version>}`` (extending its catalog is one transaction), the feedback stream's keys ``{fb}``.
"""

from __future__ import annotations

from dataclasses import dataclass

# v2: played tracks are a sorted set (by when they were played, capped per user), erasures are
# recorded by digest. A new layout version starts from empty keys: the next pipeline run publishes into
# it; keys of the old one (``<prefix>:v1:*``) can be deleted.
LAYOUT_VERSION = "v2"


@dataclass(frozen=True)
class RedisKeys:
    prefix: str = "echotune"

    @property
    def root(self) -> str:
        return f"{self.prefix}:{LAYOUT_VERSION}"

    # --- model versions -------------------------------------------------------------------
    def alias(self, name: str) -> str:
        """String: the model version an alias (champion, challenger) points at."""
        return f"{self.root}:alias:{name}"

    def model_meta(self, version: str) -> str:
        """Hash: algorithm, dimensions, item count, MLflow run id, publication time."""
        return f"{self.root}:model:{{m:{version}}}:meta"

    def model_items(self, version: str) -> str:
        """String: parquet bytes of the version's item table (ids, metadata, popularity)."""
        return f"{self.root}:model:{{m:{version}}}:items"

    def model_item_vectors(self, version: str) -> str:
        """String: .npy bytes of the float32 item matrix, row i = item i of ``model_items``."""
        return f"{self.root}:model:{{m:{version}}}:item_vectors"

    def model_similarity_vectors(self, version: str) -> str:
        """String: .npy bytes of unit-norm item vectors for item-to-item similarity (when the model's
        similarity differs from its scoring vectors, e.g. without a bias column)."""
        return f"{self.root}:model:{{m:{version}}}:similarity_vectors"

    def model_fold_in(self, version: str) -> str:
        """String: .npy bytes of the version's fold-in matrix (user = weights @ matrix + tail)."""
        return f"{self.root}:model:{{m:{version}}}:fold_in"

    def untagged_model_artefacts(self, version: str) -> dict[str, str]:
        """The names a version's artefacts had before they carried the version's hash tag -> their names
        now (:meth:`core.vectorstore.VectorStore.retag_versions` renames them once on a single server)."""
        return {
            f"{self.root}:model:{version}:{part}": tagged
            for part, tagged in (
                ("meta", self.model_meta(version)),
                ("items", self.model_items(version)),
                ("item_vectors", self.model_item_vectors(version)),
                ("similarity_vectors", self.model_similarity_vectors(version)),
                ("fold_in", self.model_fold_in(version)),
            )
        }

    def user_vector(self, version: str, user_id: str) -> str:
        """String: float32 bytes of the user's vector for this model version."""
        return f"{self.root}:model:{version}:user:{{u:{user_id}}}"

    def models_index(self) -> str:
        """Sorted set: published model versions scored by publication time."""
        return f"{self.root}:models"

    # --- users ----------------------------------------------------------------------------
    def user_played(self, user_id: str) -> str:
        """Sorted set: track ids of the served catalog the user has played, scored by when (epoch ms);
        the most recent ``played_cap`` are kept. Excluded from recommendations."""
        return f"{self.root}:user:{{u:{user_id}}}:played"

    # the user's online learning state (all in the user's slot, updated together by the worker)
    def user_online_scores(self, user_id: str) -> str:
        """Hash: track id -> graded score accumulated from events since the served model's training."""
        return f"{self.root}:user:{{u:{user_id}}}:online"

    def user_recent_events(self, user_id: str) -> str:
        """List: the user's latest events as JSON [event_ms, track_id, contribution], newest first (re-fold on a new version)."""
        return f"{self.root}:user:{{u:{user_id}}}:recent"

    def user_applied_events(self, user_id: str) -> str:
        """Sorted set: event ids whose effect is stored, scored by time (dedupe window)."""
        return f"{self.root}:user:{{u:{user_id}}}:applied"

    def user_revision(self, user_id: str) -> str:
        """String: incremented on every update of the user's online state (optimistic concurrency)."""
        return f"{self.root}:user:{{u:{user_id}}}:revision"

    def user_folded_version(self, user_id: str) -> str:
        """String: the model version whose vector carries the user's online updates."""
        return f"{self.root}:user:{{u:{user_id}}}:folded"

    def user_keys(self, user_id: str, versions: list[str]) -> list[str]:
        """Every key that holds something of the user (what a GDPR erasure deletes): their vector in
        each model version and all of their online state. A new per-user key belongs here too."""
        return [self.user_vector(v, user_id) for v in versions] + [
            self.user_played(user_id),
            self.user_online_scores(user_id),
            self.user_recent_events(user_id),
            self.user_applied_events(user_id),
            self.user_revision(user_id),
            self.user_folded_version(user_id),
        ]

    def user_key_pattern(self) -> str:
        """A SCAN pattern matching every key of :meth:`user_keys` of every user (their hash tag ``{u:<id>}``)."""
        return f"{self.root}:*{{u:*}}*"

    def user_of_key(self, key: str | bytes) -> str | None:
        """The user id a key of :meth:`user_keys` names (its ``{u:<id>}`` hash tag), None for any other key."""
        text = key.decode() if isinstance(key, bytes) else key
        if not text.startswith(self.root + ":"):
            return None
        start = text.find("{u:")
        end = text.find("}", start)
        return text[start + 3 : end] if start >= 0 and end > start + 3 else None

    def erased_users(self) -> str:
        """Hash: erased subject (a keyed digest of the user id, never the id) -> epoch seconds of the
        request (GDPR): a copy of the offline erasure log (``core.erasure_log``) for the hot paths."""
        return f"{self.root}:erased_users"

    def erasures_version(self) -> str:
        """String: incremented on every erasure, so the worker reloads the erased subjects only when
        they changed (one GET per batch)."""
        return f"{self.root}:erasures_version"

    # --- experiments ----------------------------------------------------------------------
    def experiments(self) -> str:
        """Hash: experiment id -> its definition and status (JSON)."""
        return f"{self.root}:experiments"

    # --- guarded rollout ------------------------------------------------------------------
    def rollout(self) -> str:
        """Hash: the current rollout's state (version, champion, experiment, share, status, paused, ...), written
        by the rollout (:mod:`experiments.rollout`); a flag may pause it or change its share here."""
        return f"{self.root}:rollout"

    def rollout_decisions(self) -> str:
        """List: the rollout decisions, newest first (JSON), capped (the rollout's report reads them)."""
        return f"{self.root}:rollout:decisions"

    def rollout_decision_counts(self) -> str:
        """Hash: decision (hold, step_up, promote, rollback) -> how many were taken (a Prometheus counter)."""
        return f"{self.root}:rollout:decision_counts"

    def version_health(self, version: str) -> str:
        """Hash with TTL: what the API answered with one model version (requests, errors, latency histogram
        buckets ``le:<ms>``), summed over every API process (:mod:`serving.version_health`)."""
        return f"{self.root}:version_health:{version}"

    # --- API ------------------------------------------------------------------------------
    def rate_limit(self, key_id: str, endpoint: str, minute: int) -> str:
        """String with TTL: what one API key sent to one endpoint class in one minute (requests or events)."""
        return f"{self.root}:ratelimit:{endpoint}:{key_id}:{minute}"

    # --- feedback (hash tag {fb}: the stream, its idempotency marks and counters share a slot, so
    # one script can check, append and count atomically even on Redis Cluster) -----------------
    def feedback_stream(self) -> str:
        """Stream: accepted feedback events, one field ``e`` holding the event's JSON row."""
        return f"{self.root}:{{fb}}:stream"

    def feedback_dead_letters(self) -> str:
        """Stream: events the worker could not apply, with the error."""
        return f"{self.root}:{{fb}}:dead"

    def feedback_accepted(self, event_id: str) -> str:
        """String with TTL: marks an event id as accepted (idempotency of POST /feedback); for an event
        answering a request token, the id is its (list, track, type), so the list's click counts once."""
        return f"{self.root}:{{fb}}:accepted:{event_id}"

    def feedback_memory_full(self) -> str:
        """String with a 100 ms TTL: "1" when Redis was above the share of its maxmemory past which feedback
        is refused at the append script's last look, else "0" (the script reads INFO at most every 100 ms)."""
        return f"{self.root}:{{fb}}:memory_full"

    def feedback_aggregates(self) -> str:
        """Hash: "algorithm|model_version|experiment|variant|type" -> events applied (CTR, completion and
        experiment conversion; fields of installs before model versions were counted, "algorithm|variant|type",
        are still read)."""
        return f"{self.root}:{{fb}}:aggregates"

    def feedback_active_users(self, bucket: str) -> str:
        """HyperLogLog with TTL: users with an event applied in one time bucket of when the API accepted
        it (``5m:<n>``: the n-th five minutes since the epoch, ``1h:<n>``: the n-th hour); /metrics merges
        the buckets of a window (PFCOUNT) into the active users of the last hour and day."""
        return f"{self.root}:{{fb}}:active_users:{bucket}"

    def feedback_active_events(self, bucket: str) -> str:
        """String with TTL: events applied in one time bucket (as :meth:`feedback_active_users`), for
        the events per active user."""
        return f"{self.root}:{{fb}}:active_events:{bucket}"

    def feedback_drained_until(self) -> str:
        """String: the drain's watermark, a stream id: every entry up to it is durably written to parquet
        (the stream is trimmed up to it, never past; see :mod:`core.ingest.live_feedback`)."""
        return f"{self.root}:{{fb}}:drained_until"

    def feedback_drained_days(self) -> str:
        """Hash: UTC day -> id of the last entry of that day written to parquet, for days drained ahead of
        the watermark (an older day still waiting); removed once the watermark passes it."""
        return f"{self.root}:{{fb}}:drained_days"

    def feedback_drain_lock(self) -> str:
        """String with TTL: held by the one drain (or rewrite of live event files) running at a time."""
        return f"{self.root}:{{fb}}:drain_lock"

    def worker_heartbeats(self) -> str:
        """Hash: feedback worker consumer name -> epoch ms of its last heartbeat (readiness and
        operators tell from it whether any worker is alive)."""
        return f"{self.root}:{{fb}}:heartbeats"

    def feedback_counters(self) -> str:
        """Hash: monotonic counters shared by every process (accepted, applied, dead_lettered)."""
        return f"{self.root}:{{fb}}:counters"
