"""Contracts shared by pipelines, serving and experiments: defined once, imported everywhere."""

from core.contracts.events import EVENT_TYPES, EventContext, EventType, FeedbackEvent
from core.contracts.ids import is_spotify_id, parse_track_id
from core.contracts.redis_keys import RedisKeys
from core.contracts.tracks import AUDIO_FEATURES, TRACK_SCHEMA, Track

__all__ = [
    "AUDIO_FEATURES",
    "EVENT_TYPES",
    "EventContext",
    "EventType",
    "FeedbackEvent",
    "RedisKeys",
    "TRACK_SCHEMA",
    "Track",
    "is_spotify_id",
    "parse_track_id",
]
