from core.contracts import FeedbackEvent, RedisKeys
from core.feedback_stream import FeedbackStream, decode, encode

TRACK = "4uLU6hMCjMI75M1A2tKUQC"


def test_append_is_idempotent_on_event_id(redis_client, redis_prefix):
    stream = FeedbackStream(redis_client, RedisKeys(redis_prefix))
    events = [FeedbackEvent(user_id="u", track_id=TRACK, type="play", event_id=f"e{i}").stamped() for i in range(3)]
    first = stream.append(events)
    assert len(first) == 3 and all(first)
    again = stream.append([events[1], FeedbackEvent(user_id="u", track_id=TRACK, type="like", event_id="e9").stamped()])
    assert again[0] is None and again[1] is not None
    assert stream.length() == 4
    assert stream.counters()["accepted"] == 4
    entries = redis_client.xrange(RedisKeys(redis_prefix).feedback_stream())
    row = decode(entries[0][1][b"e"])
    assert row["event_id"] == "e0" and row["track_id"] == TRACK and row["source"] == "api"


def test_dead_letters_go_back_on_the_stream_once(redis_client, redis_prefix, tmp_path):
    from core.erasure_log import ErasureLog
    from core.feedback_stream import DeadLetterReplay, dead_letters, replay_dead_letters

    keys = RedisKeys(redis_prefix)
    log = ErasureLog(tmp_path / "erasures")
    event = FeedbackEvent(user_id="u", track_id=TRACK, type="play", event_id="dl1").stamped()
    redis_client.xadd(
        keys.feedback_dead_letters(), {"entry": "1-0", "error": "ValueError: boom", "field:e": encode(event)}
    )
    redis_client.xadd(keys.feedback_dead_letters(), {"entry": "2-0", "error": "not an event"})  # nothing to replay
    assert [d["error"] for d in dead_letters(redis_client, keys)] == ["ValueError: boom", "not an event"]
    assert replay_dead_letters(redis_client, keys, log) == DeadLetterReplay(1, 0)
    (entry,) = redis_client.xrange(keys.feedback_stream())
    assert entry[1][b"e"] == encode(event)
    assert [d["entry"] for d in dead_letters(redis_client, keys)] == ["2-0"]
    assert replay_dead_letters(redis_client, keys, log) == DeadLetterReplay(0, 0)


def test_dead_letter_replay_deletes_the_events_of_users_erased_since(redis_client, redis_prefix, tmp_path):
    """Regression (issue 23): `echotune feedback replay-dead-letters` put an erased user's events back on
    the stream. An erasure only in the offline log (Redis was down when it was asked) counts too."""
    from core.erasure_log import ErasureLog
    from core.feedback_stream import DeadLetterReplay, dead_letters, replay_dead_letters

    keys = RedisKeys(redis_prefix)
    log = ErasureLog(tmp_path / "erasures")
    for n, user in enumerate(["gone", "kept", "gone"]):
        event = FeedbackEvent(user_id=user, track_id=TRACK, type="play", event_id=f"dl{n}").stamped()
        redis_client.xadd(keys.feedback_dead_letters(), {"entry": f"{n}-1", "error": "boom", "field:e": encode(event)})
    log.record_request(log.digest("gone"))
    redis_client.set(keys.user_revision("gone"), 3)  # online state the failed DELETE left
    assert replay_dead_letters(redis_client, keys, log) == DeadLetterReplay(1, 2)
    assert not redis_client.exists(keys.user_revision("gone"))
    assert [decode(f[b"e"])["user_id"] for _, f in redis_client.xrange(keys.feedback_stream())] == ["kept"]
    assert dead_letters(redis_client, keys) == []  # the erased user's letters are gone, not left waiting
