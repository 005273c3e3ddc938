"""Identifier rules shared by every entry point."""

from __future__ import annotations

import re

_SPOTIFY_ID = re.compile(r"^[0-9A-Za-z]{22}$")
_URI_PREFIXES = ("spotify:track:", "https://open.spotify.com/track/")
# user ids and event ids travel in Redis keys and URLs: keep them to a safe alphabet
SAFE_ID = re.compile(r"^[0-9A-Za-z_.:@-]{1,128}$")


def is_spotify_id(value: str) -> bool:
    return bool(_SPOTIFY_ID.match(value))


def parse_track_id(value: str) -> str:
    """Return the bare Spotify track id of an id, a ``spotify:track:`` URI or an open.spotify.com URL.

    Raises ValueError with a message that says what is wrong when it is none of those.
    """
    text = value.strip()
    for prefix in _URI_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :].split("?", 1)[0]
            break
    if not is_spotify_id(text):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise ValueError(f"{shown!r} is not a Spotify track ID (22 base-62 characters) or spotify:track: URI")
    return text
