"""A feedback stream entry as the worker handles it: decoded, checked, with its times. An entry is an
event (field ``e``) or the API's record of a list it served (field ``l``, an exposure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.contracts.events import EVENT_TYPES
from core.contracts.served_lists import ServedList
from core.feedback_stream import decode

STREAMED = {"play", "track_completed", "track_skipped", "like"}  # tracks the user has heard: excluded from lists


@dataclass
class Event:
    """One feedback event read from the stream."""

    stream_id: str
    accepted_ms: int  # when the API appended it (the stream id's milliseconds)
    row: dict  # the event as decoded (core.contracts.events schema)

    @property
    def user(self) -> str:
        return self.row["user_id"]

    @property
    def event_id(self) -> str:
        return self.row["event_id"]

    @property
    def track_id(self) -> str:
        return self.row["track_id"]

    @property
    def event_ms(self) -> int:
        """When the event happened (its timestamp), else when it was accepted."""
        ts = self.row.get("timestamp")
        return int(ts.timestamp() * 1000) if isinstance(ts, datetime) else self.accepted_ms

    @property
    def played(self) -> bool:
        """Whether the user heard the track (it joins their played set)."""
        return self.row["type"] in STREAMED


def stream_id_of(entry_id: bytes | str) -> str:
    """A stream entry id as text (redis-py returns bytes)."""
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def entry_ms(stream_id: str) -> int:
    """The milliseconds part of a stream id: when Redis appended the entry."""
    return int(stream_id.split("-")[0])


@dataclass
class Exposure:
    """A list the API served: each of its tracks was shown (``recommendation_shown``)."""

    stream_id: str
    served: ServedList

    @property
    def user(self) -> str:
        return self.served.user_id


def parse_entry(stream_id: str, fields: dict) -> Event | Exposure:
    """The event in a stream entry's fields (``e``: its JSON row), or the exposure (``l``: the served
    list). Raises KeyError, ValueError or TypeError for an entry that is neither (the worker
    dead-letters it)."""
    if b"l" in fields:
        served = ServedList.from_payload(fields[b"l"])
        if not served.user_id or not served.tracks:
            raise ValueError("not an exposure: no user or no tracks")
        return Exposure(stream_id, served)
    row = decode(fields[b"e"])
    if not isinstance(row, dict):
        raise ValueError(f"not a feedback event: a JSON {type(row).__name__}, not an object")
    missing = [f for f in ("event_id", "user_id", "track_id") if not row.get(f)]
    if missing or row.get("type") not in EVENT_TYPES:
        # the error is logged and kept with the dead letter: it names fields, never their values (user ids)
        raise ValueError(f"not a feedback event: {'missing ' + ', '.join(missing) if missing else 'unknown type'}")
    return Event(stream_id, entry_ms(stream_id), row)
