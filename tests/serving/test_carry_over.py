"""A newly served champion starts from the users' online state: the worker re-folds the users whose
events came after the new version's training data, without waiting for their next event."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from core import release
from core.contracts import FeedbackEvent, RedisKeys
from core.feedback_stream import FeedbackStream
from serving.worker import FeedbackWorker

pytestmark = pytest.mark.redis_topologies  # the scan for users runs over every node of a cluster


def worker_for(settings, redis_client, name: str) -> FeedbackWorker:
    worker = FeedbackWorker(redis_client, RedisKeys(settings.redis_prefix), consumer=name, batch=100, block_ms=10)
    worker.ensure_group()
    return worker


def run_until_idle(worker: FeedbackWorker) -> None:
    """Steps until the stream is applied and no user is left to carry into the served version."""
    while worker.step() or worker.carry_over.pending(worker.served):
        pass


def completions(user: str, tracks, at: datetime, prefix: str) -> list[FeedbackEvent]:
    return [
        FeedbackEvent(
            user_id=user, track_id=t, type="track_completed", event_id=f"{prefix}{i}", ms_played=200_000, timestamp=at
        ).stamped()
        for i, t in enumerate(tracks)
    ]


def test_users_with_events_after_the_new_versions_data_are_carried_into_it(
    settings, redis_client, published, trained, world, known_user_id
):
    model, graded = trained
    early, late = graded["user_id"].value_counts().index[1:3]  # two listeners besides the known one
    stream = FeedbackStream(redis_client, RedisKeys(settings.redis_prefix))
    at = datetime(2025, 6, 1, tzinfo=UTC)  # times of our own: nothing here depends on the wall clock
    tracks = list(model.item_ids[:4])
    stream.append(
        completions(early, tracks[:2], at, "e") + completions(late, tracks[2:], at + timedelta(seconds=10), "l")
    )
    worker = worker_for(settings, redis_client, "w1")
    run_until_idle(worker)  # both learnt online against version 1

    # version 2 (the same model) trained on data up to between the two listeners' events, made champion
    until = at + timedelta(seconds=5)
    release.publish(published, "2", model, world.tracks, int(until.timestamp() * 1000), alias="champion")
    trained_vector = {u: published.user_vector("2", u).copy() for u in (early, late)}
    worker.refresh_model(force=True)  # what its next round does within a second
    run_until_idle(worker)  # no new event of theirs

    rows = [list(model.item_ids).index(t) for t in tracks[2:]]
    carried = model.fold_in().update(
        trained_vector[late], np.array(rows), np.full(2, worker.online_boost * np.log1p(1.0), np.float32)
    )
    np.testing.assert_allclose(published.user_vector("2", late), carried, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        published.user_vector("2", early), trained_vector[early]
    )  # version 2 learnt their events already
    assert worker.carry_over.done == "2" and worker.carry_over.carried == 1

    # a second worker doing the same pass (or a restart) carries nothing twice; the next event moves incrementally
    run_until_idle(worker_for(settings, redis_client, "w2"))
    np.testing.assert_allclose(published.user_vector("2", late), carried, rtol=1e-5, atol=1e-6)
    stream.append(completions(late, tracks[:1], at + timedelta(seconds=20), "n"))
    run_until_idle(worker)
    step = worker.online_boost * np.log1p(1.0) * model.fold_in().matrix[list(model.item_ids).index(tracks[0])]
    np.testing.assert_allclose(published.user_vector("2", late), carried + step, rtol=1e-5, atol=1e-5)
