import pytest

from core.contracts import RedisKeys
from core.feedback_stream import decode
from experiments.assignment import Assigner
from experiments.definition import Experiment
from tests.serving.conftest import ADMIN_KEY

pytestmark = pytest.mark.redis_topologies  # one server and a Redis Cluster

ADMIN = {"X-API-Key": ADMIN_KEY}
SPEC = {
    "id": "home-test",
    "name": "Home list",
    "variants": [
        {"name": "control", "algorithm": "popularity", "weight": 0.5},
        {"name": "treatment", "model_alias": "champion", "weight": 0.5},
    ],
}


def test_create_validate_start_stop(client):
    assert client.post("/experiments", json=SPEC).status_code == 403  # client key
    created = client.post("/experiments", json=SPEC, headers=ADMIN)
    assert created.status_code == 201 and created.json()["status"] == "draft"
    assert client.post("/experiments", json=SPEC, headers=ADMIN).status_code == 409
    bad = client.post(
        "/experiments",
        json={**SPEC, "id": "bad", "variants": [{**SPEC["variants"][0], "weight": 0.7}, SPEC["variants"][1]]},
        headers=ADMIN,
    )
    assert bad.status_code == 422 and "sum to 1" in bad.json()["error"]["message"]
    unknown = client.post(
        "/experiments",
        json={**SPEC, "id": "bad2", "variants": [{**SPEC["variants"][0], "algorithm": "magic"}, SPEC["variants"][1]]},
        headers=ADMIN,
    )
    assert unknown.status_code == 422 and "unknown algorithm 'magic'" in unknown.json()["error"]["message"]
    assert client.post("/experiments/home-test/start", headers=ADMIN).json()["status"] == "running"
    client.post("/experiments", json={**SPEC, "id": "second"}, headers=ADMIN)
    overlap = client.post("/experiments/second/start", headers=ADMIN)
    assert (
        overlap.status_code == 409
        and "same users of layer 'default' as 'home-test'" in overlap.json()["error"]["message"]
    )
    # in another layer, or on the other half of the layer's traffic, it runs beside it
    client.post("/experiments", json={**SPEC, "id": "other-layer", "layer": "ranking"}, headers=ADMIN)
    assert client.post("/experiments/other-layer/start", headers=ADMIN).json()["status"] == "running"
    assert client.post("/experiments/nope/start", headers=ADMIN).status_code == 404
    assert [e["id"] for e in client.get("/experiments").json()] == ["home-test", "other-layer", "second"]
    assert client.post("/experiments/home-test/stop", headers=ADMIN).json()["status"] == "stopped"
    restart = client.post("/experiments/home-test/start", headers=ADMIN)
    assert restart.status_code == 422 and "stopped is final" in restart.json()["error"]["message"]


def test_running_experiment_routes_users_and_stamps_responses_and_events(client, settings, redis_client, trained):
    client.post("/experiments", json={**SPEC, "status": "running"}, headers=ADMIN)
    assigner = Assigner(Experiment.model_validate(SPEC))
    _, graded = trained
    seen = set()
    for user in graded["user_id"].unique()[:20]:
        body = client.get(f"/recommendations/{user}", params={"count": 5}).json()
        variant = assigner.variant(user)
        assert (body["experiment"], body["variant"]) == ("home-test", variant)
        assert body["algorithm"] == ("popularity" if variant == "control" else "lowrank_ease")
        seen.add(variant)
    assert seen == {"control", "treatment"}
    user = graded["user_id"].iloc[0]
    client.post(
        "/feedback", json={"user_id": user, "track_id": graded["item_id"].iloc[0], "type": "recommendation_clicked"}
    )
    events = [
        decode(f[b"e"]) for _, f in redis_client.xrange(RedisKeys(settings.redis_prefix).feedback_stream()) if b"e" in f
    ]
    row = events[-1]  # no token: the user's arm, re-derived by the server
    assert (row["experiment_id"], row["variant"], row["context_source"]) == (
        "home-test",
        assigner.variant(user),
        "assignment",
    )


@pytest.mark.redis_topologies("node")  # reports are files: no Redis path of its own
def test_report_and_summary_are_served_once_written(client, settings):
    assert client.get("/experiments/home-test/report").status_code == 404
    folder = settings.layout.reports / "home-test"
    folder.mkdir(parents=True)
    (folder / "report.html").write_text(
        "<html><body><section id='echotune-verdict'>Verdict: SHIP</section></body></html>"
    )
    (folder / "summary.json").write_text('{"verdict": "ship"}')
    page = client.get("/experiments/home-test/report")
    assert (
        page.status_code == 200
        and "Verdict: SHIP" in page.text
        and page.headers["content-type"].startswith("text/html")
    )
    assert client.get("/experiments/home-test/summary").json() == {"verdict": "ship"}
    assert client.get("/experiments/..%2F..%2Fetc/report").status_code in (404, 422)


def test_the_api_process_that_changes_an_experiment_serves_the_change_at_once(client, trained):
    """An admin who starts or stops an experiment sees it in this process's next response, not up to
    5 s later (the refresh interval other API processes keep)."""
    _, graded = trained
    user = graded["user_id"].iloc[0]
    assert (
        client.get(f"/recommendations/{user}", params={"count": 3}).json()["experiment"] is None
    )  # loads the (empty) set now
    assert client.post("/experiments", json={**SPEC, "status": "running"}, headers=ADMIN).status_code == 201
    assert client.get(f"/recommendations/{user}", params={"count": 3}).json()["experiment"] == "home-test"
    assert client.post("/experiments/home-test/stop", headers=ADMIN).status_code == 200
    assert client.get(f"/recommendations/{user}", params={"count": 3}).json()["experiment"] is None


def test_another_api_process_serves_a_change_after_its_refresh_interval(client, settings, trained):
    """Regression (issue 22): the router timed its refresh with time.monotonic, not the clock it was
    given, so a test could only see a change by resetting its private state. Another API process (here
    one with a clock of the test's own) serves the old set until ``refresh_seconds`` have passed on it."""
    from fastapi.testclient import TestClient

    from core.clock import ManualClock
    from serving.main import create_app
    from tests.serving.conftest import CLIENT_KEY

    user = trained[1]["user_id"].iloc[0]
    clock = ManualClock()
    with TestClient(create_app(settings, clock=clock), headers={"X-API-Key": CLIENT_KEY}) as other:
        assert (
            other.get(f"/recommendations/{user}", params={"count": 3}).json()["experiment"] is None
        )  # loads the (empty) set now
        assert client.post("/experiments", json={**SPEC, "status": "running"}, headers=ADMIN).status_code == 201
        interval = other.app.state.echotune.experiments.refresh_seconds
        clock.advance(interval - 0.5)
        assert other.get(f"/recommendations/{user}", params={"count": 3}).json()["experiment"] is None  # not due yet
        clock.advance(0.5)
        assert other.get(f"/recommendations/{user}", params={"count": 3}).json()["experiment"] == "home-test"
