"""A careful client for the Spotify Web API (or a compatible provider at another base URL).

* client-credentials auth; the token is cached and refreshed before it expires (or after a 401);
* ``GET /v1/tracks`` (50 ids per call), ``GET /v1/audio-features`` (100), ``GET /v1/artists`` (50, for
  genres), the maxima the API allows;
* 429: waits ``Retry-After`` seconds (bounded) and retries; 5xx and network errors: retries with
  exponential backoff;
* a circuit breaker: after ``failure_threshold`` consecutive failed calls it stops calling for
  ``reset_seconds`` and fails fast instead of hammering a broken API;
* 403 on audio features (apps created after 2024-11-27 lack access): tracks are still returned, with
  null features, and the result says why.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd

from core.contracts.tracks import AUDIO_FEATURES
from core.ingest.result import ImportResult
from core.ingest.track_files import merge_duplicates, normalise, to_schema

MAX_TRACK_IDS = 50
MAX_FEATURE_IDS = 100
MAX_ARTIST_IDS = 50


class SpotifyApiError(RuntimeError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CircuitOpenError(SpotifyApiError):
    pass


@dataclass
class CircuitBreaker:
    failure_threshold: int = 5
    reset_seconds: float = 30.0
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None

    def before_call(self) -> None:
        if self.opened_at is None:
            return
        if self.clock() - self.opened_at < self.reset_seconds:
            raise CircuitOpenError(
                f"Spotify API circuit open after {self.failures} consecutive failures; "
                f"retrying in {self.reset_seconds - (self.clock() - self.opened_at):.0f}s"
            )
        self.opened_at = None  # half-open: let one call through

    def success(self) -> None:
        self.failures, self.opened_at = 0, None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.failure_threshold:
            self.opened_at = self.clock()


@dataclass
class FetchResult:
    tracks: pd.DataFrame  # TRACK_SCHEMA
    result: ImportResult
    features_available: bool = True
    features_error: str | None = None
    not_found: list[str] = field(default_factory=list)


class SpotifyClient:
    def __init__(
        self,
        client_id: str,
        client_secret: str,
        base_url: str = "https://api.spotify.com",
        accounts_url: str = "https://accounts.spotify.com",
        max_retries: int = 5,
        backoff_seconds: float = 0.5,
        max_retry_after: float = 120.0,
        timeout: float = 10.0,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError("Spotify client_id and client_secret are required (ECHOTUNE_SPOTIFY_CLIENT_ID / _SECRET)")
        self._auth = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self.base_url, self.accounts_url = base_url.rstrip("/"), accounts_url.rstrip("/")
        self.max_retries, self.backoff, self.max_retry_after = max_retries, backoff_seconds, max_retry_after
        self.breaker = breaker or CircuitBreaker()
        self._sleep = sleep
        self._http = httpx.Client(timeout=timeout)
        self._token: str | None = None
        self._token_expires = 0.0
        self.calls = 0

    def close(self) -> None:
        self._http.close()

    # --- auth ------------------------------------------------------------------------------
    def _bearer(self, refresh: bool = False) -> str:
        if refresh or self._token is None or time.monotonic() > self._token_expires - 30:
            response = self._http.post(
                f"{self.accounts_url}/api/token",
                data={"grant_type": "client_credentials"},
                headers={"Authorization": f"Basic {self._auth}"},
            )
            if response.status_code != 200:
                raise SpotifyApiError(
                    f"token request failed with {response.status_code}: {response.text[:200]}", response.status_code
                )
            body = response.json()
            self._token = body["access_token"]
            self._token_expires = time.monotonic() + float(body.get("expires_in", 3600))
        return self._token

    # --- one call with retries ---------------------------------------------------------------
    def get(self, path: str, params: dict[str, Any]) -> dict:
        """GET ``path`` with retries; raises SpotifyApiError (``.status`` set) when it gives up."""
        self.breaker.before_call()
        refreshed = False
        error = SpotifyApiError(f"GET {path}: still failing after {self.max_retries + 1} attempts")
        errors = 0  # consecutive server/network errors: the backoff exponent
        for _ in range(self.max_retries + 1):
            self.calls += 1
            try:
                response = self._http.get(
                    f"{self.base_url}{path}", params=params, headers={"Authorization": f"Bearer {self._bearer()}"}
                )
            except httpx.TransportError as exc:
                error = SpotifyApiError(f"GET {path}: {type(exc).__name__}: {exc}")
                self._sleep(self.backoff * 2**errors)
                errors += 1
                continue
            status = response.status_code
            if status == 200:
                self.breaker.success()
                return response.json()
            if status == 401 and not refreshed:  # token revoked or expired early
                self._bearer(refresh=True)
                refreshed = True
                continue
            if status == 429:
                wait = float(response.headers.get("Retry-After", "1"))
                if wait > self.max_retry_after:
                    self.breaker.failure()
                    raise SpotifyApiError(
                        f"GET {path}: rate limited for {wait:.0f}s, more than the {self.max_retry_after:.0f}s we wait",
                        429,
                    )
                error = SpotifyApiError(f"GET {path}: still rate limited after {self.max_retries + 1} attempts", 429)
                self._sleep(wait)
                continue
            if status >= 500:
                error = SpotifyApiError(f"GET {path}: server error {status}", status)
                self._sleep(self.backoff * 2**errors)
                errors += 1
                continue
            # other 4xx (403 no access, 400 bad request): retrying will not help
            raise SpotifyApiError(f"GET {path}: {status} {_message(response)}", status)
        self.breaker.failure()
        raise error

    # --- endpoints ---------------------------------------------------------------------------
    def tracks(self, ids: Sequence[str]) -> list[dict | None]:
        return self._batched("/v1/tracks", "tracks", ids, MAX_TRACK_IDS)

    def audio_features(self, ids: Sequence[str]) -> list[dict | None]:
        return self._batched("/v1/audio-features", "audio_features", ids, MAX_FEATURE_IDS)

    def artists(self, ids: Sequence[str]) -> list[dict | None]:
        return self._batched("/v1/artists", "artists", ids, MAX_ARTIST_IDS)

    def _batched(self, path: str, key: str, ids: Sequence[str], size: int) -> list[dict | None]:
        out: list[dict | None] = []
        for start in range(0, len(ids), size):
            out += self.get(path, {"ids": ",".join(ids[start : start + size])})[key]
        return out

    # --- the import ------------------------------------------------------------------------------
    def fetch(self, ids: Sequence[str], with_genres: bool = True) -> FetchResult:
        """Tracks, their audio features and (``with_genres``) their artists' genres, as TRACK_SCHEMA
        rows. Unknown ids (``null`` entries) are reported, not invented; values out of range are
        rejected like any other source's."""
        ids = list(dict.fromkeys(ids))
        result = ImportResult(source="spotify_api", read=len(ids))
        found = [t for t in self.tracks(ids) if t]
        known = {t["id"] for t in found}
        not_found = [i for i in ids if i not in known]
        features_error = None
        try:
            features = {f["id"]: f for f in self.audio_features(sorted(known)) if f}
        except SpotifyApiError as exc:
            if exc.status != 403:
                raise
            features, features_error = {}, f"audio features unavailable: {exc}"
        genres: dict[str, list[str]] = {}
        if with_genres and found:
            artist_ids = sorted({a["id"] for t in found for a in t.get("artists", []) if a.get("id")})
            genres = {a["id"]: a.get("genres", []) for a in self.artists(artist_ids) if a}
        rows = []
        for t in found:
            artist_ids = [a.get("id") for a in t.get("artists", [])]
            f = features.get(t["id"], {})
            rows.append(
                {
                    "track_id": t["id"],
                    "name": t.get("name"),
                    "artists": [a.get("name") for a in t.get("artists", [])],
                    "artist_ids": artist_ids,
                    "album": (t.get("album") or {}).get("name"),
                    "genres": sorted({g for a in artist_ids for g in genres.get(a, [])}) or None,
                    "duration_ms": t.get("duration_ms"),
                    "explicit": t.get("explicit"),
                    "release_year": ((t.get("album") or {}).get("release_date") or "")[:4] or None,
                    **{name: f.get(name) for name in AUDIO_FEATURES},
                }
            )
        frame = (
            normalise(pd.DataFrame(rows), "spotify_api", result.rejects) if rows else pd.DataFrame(columns=["track_id"])
        )
        tracks = to_schema(merge_duplicates(to_schema(frame)))
        result.accepted = len(tracks)
        result.dropped = len(not_found)
        result.extra.update(
            {
                "not_found": len(not_found),
                "with_audio_features": int(tracks["energy"].notna().sum()),
                "audio_features_available": features_error is None,
                "api_calls": self.calls,
            }
        )
        if features_error:
            result.extra["audio_features_error"] = features_error
        return FetchResult(tracks, result, features_error is None, features_error, not_found)


def _message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except Exception:  # not Spotify's error JSON
        return response.text[:200]
