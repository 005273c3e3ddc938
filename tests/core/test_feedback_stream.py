from core.contracts import FeedbackEvent, RedisKeys
from core.feedback_stream import FeedbackStream, decode

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
