import numpy as np
import pytest

pytestmark = pytest.mark.redis_topologies  # one server and a Redis Cluster

TRACK = "4uLU6hMCjMI75M1A2tKUQC"


@pytest.fixture(scope="module")
def published(shared_published):
    """These tests only ask the API: one published version and one app for the module."""
    return shared_published


@pytest.fixture(scope="module")
def client(shared_client):
    return shared_client


@pytest.fixture
def known_user(trained):
    _, graded = trained
    return graded["user_id"].value_counts().index[0]


def test_known_user_gets_ranked_tracks_without_played_ones(client, published, known_user):
    response = client.get(f"/recommendations/{known_user}", params={"count": 7}, headers={"X-Request-ID": "trace-123"})
    assert response.status_code == 200
    body = response.json()
    assert body["algorithm"] == "lowrank_ease" and body["model_version"] == "1" and not body["degraded"]
    assert response.headers["X-Request-ID"] == "trace-123"
    assert body["request_id"].startswith("trace-123.")  # the list's id: unique although the client chose the request id
    tracks = body["tracks"]
    assert len(tracks) == 7 and [t["position"] for t in tracks] == list(range(7))
    scores = [t["score"] for t in tracks]
    assert scores == sorted(scores, reverse=True)
    assert not {t["track_id"] for t in tracks} & published.played(known_user)
    assert 0 < body["confidence"] <= 1
    assert response.headers["X-API-Version"] == "1.0"


def test_played_tracks_come_back_only_when_asked(client, published, known_user):
    played = published.played(known_user)
    body = client.get(f"/recommendations/{known_user}", params={"count": 100, "exclude_played": "false"}).json()
    assert {t["track_id"] for t in body["tracks"]} & played


def test_unknown_user_cold_start(client, world):
    popular = client.get("/recommendations/someone-new", params={"count": 3}).json()
    assert popular["algorithm"] == "popularity" and popular["confidence"] == 0.0 and popular["metadata"]["cold_start"]
    seeds = world.tracks["track_id"].iloc[:2].tolist()
    content = client.get("/recommendations/someone-new", params={"count": 5, "seed_tracks": ",".join(seeds)}).json()
    assert content["algorithm"] == "content" and not set(seeds) & {t["track_id"] for t in content["tracks"]}
    genre = world.tracks["genres"].iloc[0][0]
    by_genre = client.get("/recommendations/someone-new", params={"count": 5, "context_genres": genre}).json()
    assert by_genre["tracks"] and all(genre in t["genres"] for t in by_genre["tracks"])


def test_filters(client, world, known_user):
    genre = world.tracks["genres"].explode().value_counts().index[0]
    body = client.get(f"/recommendations/{known_user}", params={"count": 10, "genres": genre}).json()
    assert body["tracks"] and all(genre in t["genres"] for t in body["tracks"])

    meta = world.tracks.set_index("track_id")
    body = client.get(
        f"/recommendations/{known_user}", params={"count": 20, "explicit": "false", "energy_min": 0.5, "tempo_max": 130}
    ).json()
    assert body["tracks"]
    for t in body["tracks"]:
        row = meta.loc[t["track_id"]]
        assert not row["explicit"] and row["energy"] >= 0.5 and row["tempo"] <= 130

    first = client.get(f"/recommendations/{known_user}", params={"count": 5}).json()["tracks"]
    artist = meta.loc[first[0]["track_id"], "artist_ids"][0]
    body = client.get(
        f"/recommendations/{known_user}",
        params=[("count", 20), ("exclude_tracks", first[1]["track_id"]), ("exclude_artists", artist)],
    ).json()
    assert first[1]["track_id"] not in {t["track_id"] for t in body["tracks"]}
    assert body["tracks"] and all(meta.loc[t["track_id"], "artist_ids"][0] != artist for t in body["tracks"])

    diverse = client.get(f"/recommendations/{known_user}", params={"count": 15, "max_per_artist": 1}).json()["tracks"]
    artists = [meta.loc[t["track_id"], "artist_ids"][0] for t in diverse]
    assert len(diverse) == 15 and len(set(artists)) == 15


def test_algorithm_override(client, known_user):
    body = client.get(f"/recommendations/{known_user}", params={"algorithm": "popularity", "count": 4}).json()
    assert body["algorithm"] == "popularity"
    response = client.get(f"/recommendations/{known_user}", params={"algorithm": "magic"})
    assert response.status_code == 422 and "algorithm" in response.json()["error"]["message"]


@pytest.mark.redis_topologies("node")  # validation errors: no Redis path of their own
def test_bad_requests_name_the_field(client):
    for params, field in [
        ({"count": 0}, "count"),
        ({"energy_min": "high"}, "energy_min"),
        ({"colour": "red"}, "colour"),
        ({"energy_min": 0.9, "energy_max": 0.1}, "energy"),
        ({"seed_tracks": "nope"}, "seed_tracks"),
    ]:
        response = client.get("/recommendations/u1", params=params)
        assert response.status_code == 422, params
        assert field in response.json()["error"]["message"], (params, response.json())
    response = client.get("/recommendations/bad user")
    assert response.status_code == 422 and "user_id" in response.json()["error"]["message"]


def test_similar_tracks(client, world, known_user):
    seed = world.tracks.iloc[10]
    body = client.get(
        f"/recommendations/{known_user}/similar/spotify:track:{seed.track_id}", params={"count": 10}
    ).json()
    assert body["algorithm"] == "similar" and body["metadata"] == {"seed_track": seed.track_id, "personalised": True}
    assert seed.track_id not in {t["track_id"] for t in body["tracks"]} and len(body["tracks"]) == 10
    missing = client.get(f"/recommendations/{known_user}/similar/{TRACK}")
    assert missing.status_code == 404 and TRACK in missing.json()["error"]["message"]
    assert client.get(f"/recommendations/{known_user}/similar/xyz").status_code == 422


def test_similar_tracks_share_the_seed_genre_more_than_chance(client, world):
    tracks = world.tracks
    hits, total = 0, 0
    for _, seed in tracks.sample(10, random_state=1).iterrows():
        body = client.get(f"/recommendations/nobody/similar/{seed.track_id}", params={"count": 10}).json()
        hits += sum(seed.genres[0] in t["genres"] for t in body["tracks"])
        total += len(body["tracks"])
    base_rate = np.mean(
        [tracks["genres"].map(lambda g, x=x: x in g).mean() for x in tracks["genres"].explode().unique()]
    )
    assert hits / total > 2 * base_rate


def test_batch(client, known_user):
    body = client.post(
        "/recommendations/batch",
        json={
            "requests": [
                {"user_id": known_user, "count": 3},
                {"user_id": "newbie", "count": 2, "algorithm": "popularity"},
                {"user_id": known_user, "count": 2, "algorithm": "nope"},
            ]
        },
    ).json()
    results = body["results"]
    assert [r["user_id"] for r in results] == [known_user, "newbie", known_user]
    assert len(results[0]["result"]["tracks"]) == 3 and results[1]["result"]["algorithm"] == "popularity"
    assert results[2]["error"]["error"]["code"] == "validation_error"
    too_many = client.post("/recommendations/batch", json={"requests": [{"user_id": "u"}] * 101})
    assert too_many.status_code == 422 and "requests" in too_many.json()["error"]["message"]


def test_health_readiness_and_metrics_need_no_key(client):
    anonymous = {"X-API-Key": ""}
    body = client.get("/health", headers=anonymous).json()
    assert body["status"] == "ready" and body["redis"] == "ok" and body["models"] == {"champion": "1"}
    assert client.get("/health/ready", headers=anonymous).status_code == 200
    client.get("/recommendations/u1")
    metrics = client.get("/metrics", headers=anonymous)
    assert metrics.status_code == 200
    text = metrics.text
    for name in (
        "echotune_http_requests_total",
        "echotune_http_request_duration_seconds_bucket",
        "echotune_http_requests_in_flight",
        "echotune_recommendations_served_total",
        "process_resident_memory_bytes",
    ):
        assert name in text, name
    assert 'route="/recommendations/{user_id}"' in text


def test_no_model_published_is_a_clear_503(settings):
    from fastapi.testclient import TestClient

    from serving.main import create_app
    from tests.serving.conftest import CLIENT_KEY

    with TestClient(create_app(settings), headers={"X-API-Key": CLIENT_KEY}) as empty:
        response = empty.get("/recommendations/u1")
        ready = empty.get("/health/ready")
    assert response.status_code == 503 and response.json()["error"]["code"] == "no_model"
    assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
