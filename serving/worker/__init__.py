"""The feedback worker: learns from listening events in real time, effectively once.

It reads the feedback stream as a member of a Redis consumer group (:mod:`.consumer`,
:class:`FeedbackWorker`). For each batch:

1. **Read** each user's online state, one script call per user in one pipeline (:mod:`.user_state`):
   revision, which model versions the vectors carry updates for, the vectors, which of the events are
   already applied, the online scores of the events' tracks (and the remembered events when a re-fold
   needs them). A user whose state this worker stored last is not read: the state it kept is used,
   and step 3's revision check sends it back here if anyone changed the user meanwhile.
2. **Compute** the new vectors against the fixed item vectors of the served (champion) version
   (:mod:`.served_model`; :mod:`.online_learning` calls the pure maths of :mod:`models.online_update`,
   the incremental moves of the whole batch at once per model version):
   ``user += Δweight * fold_in[track]`` per event (:mod:`models.foldin`), with the same grading and
   recency decay as training (:mod:`models.weighting`). When the served version changed, the user is
   re-folded: the trained vector of the new version plus the user's events newer than that model's
   data; users with such events are re-folded into a new champion without waiting for their next
   event (:mod:`.carry_over`).
3. **Store** each user's update with one script (:mod:`.user_state`) that first checks the revision
   read in step 1 (another worker got there first: :mod:`.online_learning` reads again) and that none
   of the events is applied yet, then marks them applied, writes the vector and the played set, all in
   the user's Redis slot.
4. **Count** the events (applied counter, per algorithm/variant aggregates) with a script that counts
   each event id once (:mod:`.counting`).
5. **Acknowledge** the entries (:mod:`.consumer`). A crash anywhere before this leaves the entries
   pending; another worker reclaims them (XAUTOCLAIM) and steps 3-4 skip what was already done.
   Entries that cannot be decoded (:mod:`.events`), or that crashed workers ``max_deliveries`` times,
   go to the dead-letter stream. A batch that fails for a reason of its own is retried entry by entry,
   so only the entries that fail alone are dead-lettered.

The loop (:meth:`FeedbackWorker.run`) outlives any one error: Redis being unavailable (down, read-only
after a failover, out of memory, ...) and anything else are logged and retried with backoff, on a
connection with a socket timeout above the blocking read (:mod:`.connection`). Every round stamps a
heartbeat (:mod:`.heartbeat`) that readiness and ``/metrics`` report.
"""

from serving.worker.consumer import GROUP, FeedbackWorker
from serving.worker.events import Event

__all__ = ["GROUP", "Event", "FeedbackWorker"]
