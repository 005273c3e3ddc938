TRACK = "4uLU6hMCjMI75M1A2tKUQC"


def test_known_user_gets_ranked_tracks_without_played_ones(client, published, trained):
    model, graded = trained
    user = graded["user_id"].value_counts().index[0]
    response = client.get(f"/recommendations/{user}", params={"count": 7})
    assert response.status_code == 200
    body = response.json()
    assert body["algorithm"] == "lightfm" and body["model_version"] == "1" and not body["degraded"]
    tracks = body["tracks"]
    assert len(tracks) == 7 and [t["position"] for t in tracks] == list(range(7))
    scores = [t["score"] for t in tracks]
    assert scores == sorted(scores, reverse=True)
    assert not {t["track_id"] for t in tracks} & published.played(user)
    assert response.headers["X-API-Version"] == "1.0"


def test_unknown_user_gets_popular_tracks(client):
    body = client.get("/recommendations/someone-new", params={"count": 3}).json()
    assert body["algorithm"] == "popularity" and body["confidence"] == 0.0 and body["metadata"]["cold_start"]
    assert len(body["tracks"]) == 3


def test_bad_requests_name_the_field(client):
    response = client.get("/recommendations/u1", params={"count": 0})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "count"
    response = client.get("/recommendations/bad user")
    assert response.status_code == 422 and "user_id" in response.json()["error"]["message"]


def test_health_reports_redis_and_model(client):
    body = client.get("/health").json()
    assert body == {"status": "ok", "redis": "ok", "model_version": "1", "algorithm": "lightfm", "api_version": "1.0"}


def test_no_model_published_is_a_clear_503(settings):
    from fastapi.testclient import TestClient

    from serving.main import create_app

    with TestClient(create_app(settings)) as empty:
        response = empty.get("/recommendations/u1")
    assert response.status_code == 503 and response.json()["error"]["code"] == "no_model"
