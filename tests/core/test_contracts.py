from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from core.contracts import FeedbackEvent, RedisKeys, Track, parse_track_id
from core.contracts.events import EVENT_SCHEMA

TRACK = "4uLU6hMCjMI75M1A2tKUQC"


def _errors(**fields):
    with pytest.raises(ValidationError) as info:
        FeedbackEvent.model_validate({"user_id": "u1", "track_id": TRACK, "type": "play", **fields})
    return {".".join(map(str, e["loc"])): e["msg"] for e in info.value.errors()}


def test_track_id_accepts_ids_uris_and_urls():
    assert parse_track_id(TRACK) == TRACK
    assert parse_track_id(f"spotify:track:{TRACK}") == TRACK
    assert parse_track_id(f"https://open.spotify.com/track/{TRACK}?si=abc") == TRACK
    with pytest.raises(ValueError, match="22 base-62"):
        parse_track_id("not-a-track")


def test_event_errors_name_the_field():
    assert "track_id" in _errors(track_id="x")
    assert "type" in _errors(type="listened")
    assert "user_id" in _errors(user_id="has space")
    assert "ms_played" in _errors(ms_played=-5)


def test_rating_is_required_for_explicit_rating_and_only_there():
    assert any("rating is required" in m for m in _errors(type="explicit_rating").values())
    assert any("only allowed" in m for m in _errors(rating=4).values())
    assert FeedbackEvent(user_id="u", track_id=TRACK, type="explicit_rating", rating=5).rating == 5


def test_future_timestamps_are_rejected_and_naive_ones_are_utc():
    assert "timestamp" in _errors(timestamp=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    event = FeedbackEvent(user_id="u", track_id=TRACK, type="play", timestamp=datetime(2024, 1, 1, 12))
    assert event.timestamp.tzinfo is not None and event.timestamp.hour == 12


def test_a_timestamp_before_the_first_utc_instant_is_a_clear_error():
    """Regression (schemathesis): 0001-01-01 at +01:00 overflowed in the conversion to UTC and answered 500."""
    assert "out of range" in _errors(timestamp="0001-01-01T00:00:00+01:00")["timestamp"]


def test_unknown_fields_are_rejected():
    assert "surprise" in _errors(surprise=1)


def test_stamped_fills_id_and_time_and_row_matches_schema():
    event = FeedbackEvent(user_id="u", track_id=TRACK, type="like").stamped()
    assert event.event_id and event.timestamp
    assert set(event.to_row()) == set(EVENT_SCHEMA.names)
    assert FeedbackEvent(user_id="u", track_id=TRACK, type="like", event_id="mine").stamped().event_id == "mine"


def test_track_audio_features_are_range_checked():
    assert Track(track_id=TRACK, energy=0.5, tempo=120).energy == 0.5
    with pytest.raises(ValidationError, match="energy 1.5 is outside"):
        Track(track_id=TRACK, energy=1.5)


def test_user_keys_share_a_cluster_slot():
    keys = RedisKeys("p")
    assert "{u:alice}" in keys.user_vector("3", "alice") and "{u:alice}" in keys.user_played("alice")
    assert keys.user_vector("3", "alice") != keys.user_vector("4", "alice")  # versioned by model version
    assert "{fb}" in keys.feedback_stream() and "{fb}" in keys.feedback_accepted("e1")
