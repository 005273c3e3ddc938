import pytest

from core.ingest.spotify_api import CircuitBreaker, CircuitOpenError, SpotifyApiError, SpotifyClient
from tests.fakes.spotify_api import FakeSpotify

IDS = [f"{i:03d}" + "A" * 19 for i in range(120)]  # 22-character ids


@pytest.fixture
def fake():
    with FakeSpotify() as server:
        for i, track_id in enumerate(IDS[:110]):
            server.add(track_id, f"Song {i}", f"{i % 7:03d}" + "B" * 19, f"Artist {i % 7}", genres=("indie", "rock"))
        yield server


def client_for(fake, **kw):
    waits = []
    client = SpotifyClient("test-id", "test-secret", base_url=fake.url, accounts_url=fake.url, sleep=waits.append, **kw)
    return client, waits


def test_fetches_in_maximal_batches_with_nulls_for_unknown_ids(fake):
    client, _ = client_for(fake)
    result = client.fetch(IDS)
    assert result.result.accepted == 110 and result.not_found == IDS[110:]
    assert fake.requests.count("/v1/tracks") == 3 and fake.requests.count("/v1/audio-features") == 2  # 50s and 100s
    row = result.tracks.set_index("track_id").loc[IDS[0]]
    assert row["name"] == "Song 0" and list(row["genres"]) == ["indie", "rock"] and row["energy"] == pytest.approx(0.6)
    assert row["release_year"] == 2019
    assert fake.tokens_issued == 1  # cached


def test_honours_retry_after_on_429_and_retries_5xx(fake):
    client, waits = client_for(fake, backoff_seconds=0.25)
    fake.fail("/v1/tracks", 429, headers={"Retry-After": "7"})
    fake.fail("/v1/tracks", 503, times=2)
    assert client.fetch(IDS[:10]).result.accepted == 10
    assert waits == [7.0, 0.25, 0.5]


def test_refreshes_an_expired_token(fake):
    client, _ = client_for(fake)
    client.tracks(IDS[:2])
    fake.revoke()
    assert len(client.tracks(IDS[:2])) == 2
    assert fake.tokens_issued == 2


def test_forbidden_audio_features_leave_tracks_with_null_features(fake):
    fake.features_forbidden = True
    client, _ = client_for(fake)
    result = client.fetch(IDS[:20])
    assert result.result.accepted == 20 and not result.features_available
    assert result.tracks["energy"].isna().all() and result.tracks["name"].notna().all()
    assert "403" in result.result.extra["audio_features_error"]


def test_circuit_breaker_stops_hammering_a_failing_api(fake):
    clock = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, reset_seconds=30, clock=lambda: clock[0])
    client, _ = client_for(fake, max_retries=1, breaker=breaker)
    fake.fail("/v1/tracks", 500, times=100)
    for _ in range(2):
        with pytest.raises(SpotifyApiError):
            client.tracks(IDS[:1])
    calls = len(fake.requests)
    with pytest.raises(CircuitOpenError):
        client.tracks(IDS[:1])
    assert len(fake.requests) == calls  # failed fast, no request sent
    clock[0] = 31.0
    fake._faults.clear()
    assert len(client.tracks(IDS[:1])) == 1  # half-open, then closed again


def test_other_client_errors_are_not_retried(fake):
    client, waits = client_for(fake)
    with pytest.raises(SpotifyApiError, match="400 Too many ids"):
        client.get("/v1/tracks", {"ids": ",".join(IDS[:60])})
    assert waits == []
