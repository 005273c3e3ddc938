"""A local HTTP server that speaks the Spotify Web API's real JSON: the stand-in for the one service
the tests cannot reach. Faults are scripted per path prefix (``fail(path, status, times, headers)``)."""

from __future__ import annotations

import base64
import json
import threading
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LIMITS = {"/v1/tracks": 50, "/v1/audio-features": 100, "/v1/artists": 50}
KEYS = {"/v1/tracks": "tracks", "/v1/audio-features": "audio_features", "/v1/artists": "artists"}


def track_json(track_id: str, name: str, artist_id: str, artist: str, duration_ms: int = 200_000) -> dict:
    """A track object in the shape GET /v1/tracks returns."""
    return {
        "album": {
            "album_type": "album",
            "id": "2up3OPMp9Tb4dAKM2erWXQ",
            "name": f"{name} (Album)",
            "release_date": "2019-05-17",
            "release_date_precision": "day",
            "type": "album",
        },
        "artists": [{"id": artist_id, "name": artist, "type": "artist", "uri": f"spotify:artist:{artist_id}"}],
        "disc_number": 1,
        "duration_ms": duration_ms,
        "explicit": False,
        "external_ids": {"isrc": "USUM71900764"},
        "href": f"https://api.spotify.com/v1/tracks/{track_id}",
        "id": track_id,
        "is_local": False,
        "name": name,
        "popularity": 71,
        "track_number": 1,
        "type": "track",
        "uri": f"spotify:track:{track_id}",
    }


def features_json(track_id: str, energy: float = 0.6, tempo: float = 120.0) -> dict:
    """An audio-features object in the shape GET /v1/audio-features returns."""
    return {
        "acousticness": 0.2,
        "analysis_url": f"https://api.spotify.com/v1/audio-analysis/{track_id}",
        "danceability": 0.7,
        "duration_ms": 200000,
        "energy": energy,
        "id": track_id,
        "instrumentalness": 0.0,
        "key": 5,
        "liveness": 0.1,
        "loudness": -6.5,
        "mode": 1,
        "speechiness": 0.05,
        "tempo": tempo,
        "time_signature": 4,
        "track_href": f"https://api.spotify.com/v1/tracks/{track_id}",
        "type": "audio_features",
        "uri": f"spotify:track:{track_id}",
        "valence": 0.5,
    }


class FakeSpotify:
    def __init__(self, client_id: str = "test-id", client_secret: str = "test-secret") -> None:
        self.credentials = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self.tracks: dict[str, dict] = {}
        self.features: dict[str, dict] = {}
        self.artists: dict[str, dict] = {}
        self.features_forbidden = False
        self.token_lifetime = 3600
        self.tokens_issued = 0
        self.valid_token: str | None = None
        self.requests: list[str] = []
        self._faults: dict[str, deque] = defaultdict(deque)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, track_id: str, name: str, artist_id: str, artist: str, genres=("pop",), **features) -> None:
        self.tracks[track_id] = track_json(track_id, name, artist_id, artist)
        self.features[track_id] = features_json(track_id, **features)
        self.artists[artist_id] = {"id": artist_id, "name": artist, "genres": list(genres), "type": "artist"}

    def revoke(self) -> None:
        """Invalidate the issued token (as an expiry would): the next API call gets 401."""
        self.valid_token = None

    def fail(self, path: str, status: int, times: int = 1, headers: dict | None = None) -> None:
        """The next ``times`` requests under ``path`` get ``status`` (with ``headers``)."""
        for _ in range(times):
            self._faults[path].append((status, headers or {}))

    def __enter__(self) -> FakeSpotify:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, headers: dict | None = None) -> None:
                self._send(status, {"error": {"status": status, "message": message}}, headers)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                form = parse_qs(self.rfile.read(length).decode())
                if self.path != "/api/token":
                    return self._error(404, "Service not found")
                if self.headers.get("Authorization") != f"Basic {fake.credentials}":
                    return self._send(400, {"error": "invalid_client", "error_description": "Invalid client"})
                if form.get("grant_type") != ["client_credentials"]:
                    return self._send(400, {"error": "unsupported_grant_type"})
                fake.tokens_issued += 1
                fake.valid_token = f"token-{fake.tokens_issued}"
                self._send(
                    200, {"access_token": fake.valid_token, "token_type": "Bearer", "expires_in": fake.token_lifetime}
                )

            def do_GET(self):
                url = urlparse(self.path)
                fake.requests.append(url.path)
                if fake.valid_token is None or self.headers.get("Authorization") != f"Bearer {fake.valid_token}":
                    return self._error(401, "The access token expired")
                for prefix, queue in fake._faults.items():
                    if url.path.startswith(prefix) and queue:
                        status, headers = queue.popleft()
                        return self._error(status, "injected fault", headers)
                if url.path not in KEYS:
                    return self._error(404, "Service not found")
                if url.path == "/v1/audio-features" and fake.features_forbidden:
                    return self._error(403, "Forbidden")
                ids = [i for i in parse_qs(url.query).get("ids", [""])[0].split(",") if i]
                if len(ids) > LIMITS[url.path]:
                    return self._error(400, "Too many ids requested")
                store = {"/v1/tracks": fake.tracks, "/v1/audio-features": fake.features, "/v1/artists": fake.artists}[
                    url.path
                ]
                self._send(200, {KEYS[url.path]: [store.get(i) for i in ids]})

        return Handler
