"""A list the API served, as the server knows it: what a request token signs (:mod:`serving.served_lists`)
and what the feedback stream records as its exposure (field ``l``, one entry per response). The worker
counts an exposure as one ``recommendation_shown`` per track; the drain stores it as those rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

EXPOSURE_FIELD = b"l"  # the stream entry field of an exposure (an event's is b"e")


@dataclass(frozen=True)
class ServedList:
    request_id: str
    user_id: str
    surface: str  # recommendations, similar, batch
    algorithm: str
    model_version: str | None
    experiment_id: str | None
    variant: str | None
    tracks: tuple[str, ...]
    served_ms: int
    teams: str | None = None  # interleaving: per position "a" (control) or "b" (treatment)
    team_variants: tuple[str, str] | None = None  # interleaving: the variant names of teams a and b

    def payload(self) -> bytes:
        """The compact JSON both the token and the exposure entry carry."""
        body = {
            "r": self.request_id,
            "user_id": self.user_id,
            "s": self.surface,
            "a": self.algorithm,
            "m": self.model_version,
            "e": self.experiment_id,
            "v": self.variant,
            "t": _packed(self.tracks),
            "ts": self.served_ms,
        }
        if self.teams is not None:
            body["teams"], body["tv"] = self.teams, list(self.team_variants or ())
        return orjson.dumps(body)

    @classmethod
    def from_payload(cls, raw: bytes | str) -> ServedList:
        body = orjson.loads(raw)
        ids = body["t"]
        if isinstance(ids, str):  # Spotify ids, 22 characters each, joined
            if len(ids) % 22:
                raise ValueError("the list's tracks are not whole track ids")
            ids = [ids[i : i + 22] for i in range(0, len(ids), 22)]
        return cls(
            request_id=body["r"],
            user_id=body["user_id"],
            surface=body["s"],
            algorithm=body["a"],
            model_version=body.get("m"),
            experiment_id=body.get("e"),
            variant=body.get("v"),
            tracks=tuple(ids),
            served_ms=int(body["ts"]),
            teams=body.get("teams"),
            team_variants=tuple(body["tv"]) if body.get("tv") else None,
        )

    def position_of(self, track_id: str) -> int | None:
        try:
            return self.tracks.index(track_id)
        except ValueError:
            return None

    def variant_at(self, position: int) -> str | None:
        """The variant a position counts for: the list's, or the ranker that gave it under interleaving."""
        if self.teams is not None and self.team_variants is not None:
            return self.team_variants[0] if self.teams[position] == "a" else self.team_variants[1]
        return self.variant

    def rows(self) -> list[dict[str, Any]]:
        """One ``recommendation_shown`` row of :data:`~core.contracts.events.EVENT_SCHEMA` per track, as the
        server saw it (``context_source`` "server"); event ids ``<request id>:<position>``."""
        when = datetime.fromtimestamp(self.served_ms / 1000, tz=UTC)
        return [
            {
                "event_id": f"{self.request_id}:{p}",
                "user_id": self.user_id,
                "track_id": t,
                "type": "recommendation_shown",
                "timestamp": when,
                "ms_played": None,
                "rating": None,
                "request_id": self.request_id,
                "surface": self.surface,
                "algorithm": self.algorithm,
                "model_version": self.model_version,
                "experiment_id": self.experiment_id,
                "variant": self.variant_at(p),
                "position": p,
                "source": "api",
                "context_source": "server",
                "client_context": None,
            }
            for p, t in enumerate(self.tracks)
        ]


def _packed(tracks: tuple[str, ...]) -> str | list[str]:
    """Spotify ids (22 characters each) joined into one string; other ids as a list."""
    return "".join(tracks) if all(len(t) == 22 for t in tracks) else list(tracks)
