"""What the API served is the ground truth of experiments: every list is recorded as shown by the server
itself, every response carries a signed token, and feedback is counted under the list its token names,
never under what a client claims."""

import base64

import orjson
import pandas as pd
import pytest

from core.contracts import RedisKeys
from core.ingest.live_feedback import drain_day, undrained_days
from core.tables import OfflineStore
from experiments.analysis import analyse
from experiments.assignment import Assigner
from experiments.definition import Experiment
from experiments.interleaving_analysis import analyse_interleaving
from serving.worker import FeedbackWorker
from tests.serving.conftest import ADMIN_KEY, drain, flush_exposures, served
from tests.serving.test_observability import samples

pytestmark = pytest.mark.redis_topologies  # one server and a Redis Cluster

ADMIN = {"X-API-Key": ADMIN_KEY}
SPEC = {
    "id": "home-test",
    "name": "Home list",
    "min_sample_size": 1,
    "guardrail_metrics": [],
    "variants": [
        {"name": "control", "algorithm": "popularity", "weight": 0.5},
        {"name": "treatment", "model_alias": "champion", "weight": 0.5},
    ],
}


@pytest.fixture
def worker(settings, redis_client, published):
    w = FeedbackWorker(redis_client, RedisKeys(settings.redis_prefix), consumer="w1", batch=500, block_ms=10)
    w.ensure_group()
    return w


def start(client, spec: dict = SPEC) -> Experiment:
    assert client.post("/experiments", json={**spec, "status": "running"}, headers=ADMIN).status_code == 201
    return Experiment.model_validate(spec)


def stored_events(redis_client, settings) -> pd.DataFrame:
    """The stream as the daily drains store it, read back from the offline store. The days drained are
    the days of the entries (their ids, as the drain sensor lists them), not today by the wall clock:
    entries accepted just before midnight and drained just after would otherwise be left out."""
    store, keys = OfflineStore(settings.layout.tables), RedisKeys(settings.redis_prefix)
    days = undrained_days(redis_client, keys)
    assert days, "nothing in the stream to drain"
    for day in days:
        drain_day(redis_client, keys, store, day)
    return store.read_events()


def feedback(client, user, track, kind, token=None, **context):
    body = {
        "user_id": user,
        "track_id": track,
        "type": kind,
        **({"context": context} if context else {}),
        **({"token": token} if token else {}),
    }
    return client.post("/feedback", json=body)


def test_every_list_served_is_counted_as_shown_without_any_client_post(client, worker, redis_client, settings, trained):
    experiment = start(client)
    assigner = Assigner(experiment)
    _, graded = trained
    users = list(graded["user_id"].unique()) + [f"new-listener-{i}" for i in range(200)]
    lists = {"control": 0, "treatment": 0}
    for i in range(1000):
        body = served(client, users[i % len(users)], count=5)
        assert body["experiment"] == "home-test" and len(body["tracks"]) == 5 and body["token"]
        assert body["variant"] == assigner.variant(body["user_id"])
        lists[body["variant"]] += 1
    flush_exposures(client)
    drain(worker)
    got = samples(client.get("/metrics").text)
    shown = {
        labels: n
        for (name, labels), n in got.items()
        if name == "echotune_feedback_events_total" and ("type", "recommendation_shown") in labels
    }
    assert sum(shown.values()) == 5000
    for variant, n in lists.items():
        assert sum(v for labels, v in shown.items() if ("variant", variant) in labels) == 5 * n
    assert got[("echotune_feedback_exposures_total", ())] == 5000
    # the daily drain stores them as rows the analysis reads: five positions per list, the server's context
    events = stored_events(redis_client, settings)
    rows = events[events["type"] == "recommendation_shown"]
    assert (
        len(rows) == 5000 and set(rows["context_source"]) == {"server"} and set(rows["surface"]) == {"recommendations"}
    )
    assert rows.groupby("request_id")["position"].apply(lambda p: sorted(p) == [0, 1, 2, 3, 4]).all()
    result = analyse(experiment, events)
    assert {v["variant"]: v["shown"] for v in result["variants"]} == {k: 5 * n for k, n in lists.items()}


def test_a_forged_variant_and_algorithm_count_for_no_arm(client, worker, redis_client, settings, trained):
    experiment = start(client)
    assigner = Assigner(experiment)
    _, graded = trained
    user = next(u for u in graded["user_id"].unique() if assigner.variant(u) == "control")
    body = served(client, user, count=5)
    assert body["variant"] == "control" and body["algorithm"] == "popularity"
    track = body["tracks"][2]["track_id"]
    forged = {
        "algorithm": "lowrank_ease",
        "variant": "treatment",
        "experiment_id": "home-test",
        "model_version": "1",
        "position": 0,
    }
    # with the token, the click counts for the list the server served: control, popularity, position 2
    assert feedback(client, user, track, "recommendation_clicked", token=body["token"], **forged).status_code == 202
    # without a token it counts for no list: not a click of either arm
    assert feedback(client, user, track, "recommendation_clicked", **forged).status_code == 202
    # a token rewritten to name the treatment fails its signature; another user's token or track does not hold either:
    # each such click is kept, counted as without a token (no list, no arm), and the answer says why
    key_id, payload, signature = body["token"].split(".")
    decoded = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tampered = (
        key_id
        + "."
        + base64.urlsafe_b64encode(orjson.dumps({**decoded, "v": "treatment", "a": "lowrank_ease"}))
        .rstrip(b"=")
        .decode()
        + "."
        + signature
    )
    outside = next(t for t in graded["item_id"].unique() if t not in {x["track_id"] for x in body["tracks"]})
    for who, what, token, why in [
        (user, track, tampered, "signature does not match"),
        ("someone-else", track, body["token"], "another user"),
        (user, outside, body["token"], "is not in the list"),
    ]:
        ignored = feedback(client, who, what, "recommendation_clicked", token=token)
        assert ignored.status_code == 202 and ignored.json()["accepted"] == 1
        assert (
            ignored.json()["ignored_tokens"][0]["field"] == "token"
            and why in ignored.json()["ignored_tokens"][0]["problem"]
        )
    flush_exposures(client)
    drain(worker)
    got = samples(client.get("/metrics").text)
    assert got[
        ("echotune_experiment_conversion", (("experiment", "home-test"), ("variant", "control")))
    ] == pytest.approx(1 / 5)
    assert ("echotune_experiment_conversion", (("experiment", "home-test"), ("variant", "treatment"))) not in got
    clicks = {
        labels: n
        for (name, labels), n in got.items()
        if name == "echotune_algorithm_events_total" and ("type", "recommendation_clicked") in labels
    }
    assert clicks == {
        (
            ("algorithm", "popularity"),
            ("experiment", "home-test"),
            ("model_version", "1"),
            ("type", "recommendation_clicked"),
            ("variant", "control"),
        ): 1,
        # the token-less click and the three whose token did not hold: clicks of no list
        (
            ("algorithm", "none"),
            ("experiment", "none"),
            ("model_version", "none"),
            ("type", "recommendation_clicked"),
            ("variant", "none"),
        ): 4,
    }
    events = stored_events(redis_client, settings)
    stored = events[events["type"] == "recommendation_clicked"].set_index("context_source")
    assert stored.loc["token", ["variant", "algorithm", "position", "request_id"]].tolist() == [
        "control",
        "popularity",
        2,
        body["request_id"],
    ]
    assert orjson.loads(stored.loc["token", "client_context"])["variant"] == "treatment"  # kept for audit, not counted
    result = analyse(experiment, events)
    per_variant = {v["variant"]: v for v in result["variants"]}
    assert per_variant["control"]["clicked"] == 1
    # "someone-else" is a user of the treatment by assignment: their event counts for its users, not as a click of a list
    assert "treatment" not in per_variant or per_variant["treatment"]["clicked"] == 0


def test_a_clients_own_shown_event_is_the_servers_exposure_again(client, worker, trained):
    _, graded = trained
    body = served(client, graded["user_id"].iloc[0], count=3)
    reply = feedback(
        client, body["user_id"], body["tracks"][0]["track_id"], "recommendation_shown", token=body["token"]
    ).json()
    assert (reply["accepted"], reply["duplicates"]) == (0, 1)
    flush_exposures(client)
    drain(worker)
    assert samples(client.get("/metrics").text)[("echotune_feedback_exposures_total", ())] == 3


def test_similar_lists_and_batches_are_exposures_of_their_own_surface(client, redis_client, settings, trained):
    model, graded = trained
    user = graded["user_id"].iloc[0]
    similar = client.get(f"/recommendations/{user}/similar/{model.item_ids[0]}", params={"count": 4}).json()
    batch = client.post(
        "/recommendations/batch", json={"requests": [{"user_id": user, "count": 2}, {"user_id": "cold", "count": 3}]}
    ).json()
    assert similar["token"] and all(r["result"]["token"] for r in batch["results"])
    flush_exposures(client)
    rows = stored_events(redis_client, settings)
    assert rows.groupby("surface").size().to_dict() == {"similar": 4, "batch": 5}
    assert feedback(client, user, similar["tracks"][1]["track_id"], "play", token=similar["token"]).status_code == 202


def test_an_interleaved_list_credits_each_click_to_the_ranker_that_gave_the_track(
    client, worker, redis_client, settings, trained
):
    spec = {**SPEC, "id": "rankers", "design": "interleaving"}
    experiment = start(client, spec)
    _, graded = trained
    user = graded["user_id"].value_counts().index[0]  # known to the model: its list differs from popularity's
    body = served(client, user, count=10)
    assert body["algorithm"] == "interleaved" and body["experiment"] == "rankers" and len(body["tracks"]) == 10
    again = client.get(f"/recommendations/{user}", params={"count": 10}, headers={"X-Request-ID": "fixed"}).json()
    assert again["request_id"] != body["request_id"]  # every list its own id
    clicked = [body["tracks"][i]["track_id"] for i in (0, 3)]
    for track in clicked:
        assert (
            feedback(client, user, track, "recommendation_clicked", token=body["token"], variant="control").status_code
            == 202
        )
    flush_exposures(client)
    drain(worker)
    events = stored_events(redis_client, settings)
    shown = events[(events["type"] == "recommendation_shown") & (events["request_id"] == body["request_id"])].set_index(
        "track_id"
    )
    teams = shown.loc[clicked, "variant"].tolist()
    result = analyse_interleaving(experiment, events)
    assert result["lists"] == 2
    assert result["clicks"]["credited"] == {"control": teams.count("control"), "treatment": teams.count("treatment")}
    assert result["clicks"]["not_matched"] == 0
