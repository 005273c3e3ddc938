"""Request tokens that cannot be replayed (issue 23 item 4): counted once per (token, track, type),
expiring, signed under a key id so a rotation keeps the previous key, from key files that are checked
and created atomically; a token that does not hold costs its event the list, never the batch."""

import base64
import hashlib
import hmac
import multiprocessing
import secrets

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from core.clock import ManualClock
from core.contracts import RedisKeys
from core.ingest.pseudonyms import load_or_create_key
from serving.main import create_app
from serving.worker import FeedbackWorker
from tests.serving.conftest import CLIENT_KEY, served
from tests.serving.test_observability import samples

DAY = 86_400


def click(client, user: str, track: str, token: str | None, kind: str = "recommendation_clicked", **fields):
    body = {"user_id": user, "track_id": track, "type": kind, **({"token": token} if token else {}), **fields}
    return client.post("/feedback", json=body)


def stream_rows(redis_client, settings) -> list[dict]:
    """The client events on the feedback stream (exposures left out)."""
    entries = redis_client.xrange(RedisKeys(settings.redis_prefix).feedback_stream())
    return [orjson.loads(fields[b"e"]) for _, fields in entries if b"e" in fields]


def test_one_token_clicked_20_times_counts_once(settings, client, redis_client, known_user_id):
    """Regression (issue 23): one token clicked 20 times counted 20 clicks for its arm."""
    body = served(client, known_user_id, count=5)
    track, other = body["tracks"][0]["track_id"], body["tracks"][1]["track_id"]
    answers = [click(client, known_user_id, track, body["token"], event_id=f"click-{i}").json() for i in range(10)]
    batch = client.post(
        "/feedback",
        json=[{"user_id": known_user_id, "track_id": track, "type": "recommendation_clicked", "token": body["token"]}]
        * 10,
    )
    answers.append(batch.json())
    assert sum(a["accepted"] for a in answers) == 1 and sum(a["duplicates"] for a in answers) == 19
    # another track of the list, or another type on the same track, is another count
    assert click(client, known_user_id, other, body["token"]).json()["accepted"] == 1
    assert (
        click(client, known_user_id, track, body["token"], kind="track_completed", ms_played=200_000).json()["accepted"]
        == 1
    )
    rows = stream_rows(redis_client, settings)
    assert sorted((r["track_id"], r["type"]) for r in rows) == sorted(
        [(track, "recommendation_clicked"), (other, "recommendation_clicked"), (track, "track_completed")]
    )
    # the worker counts what the stream holds: one click per track of the list
    worker = FeedbackWorker(redis_client, RedisKeys(settings.redis_prefix), consumer="w1", batch=500, block_ms=10)
    worker.ensure_group()
    while worker.step():
        pass
    got = samples(client.get("/metrics").text)
    clicks = sum(
        v
        for (name, labels), v in got.items()
        if name == "echotune_algorithm_events_total" and ("type", "recommendation_clicked") in labels
    )
    assert clicks == 2


def test_listening_twice_to_a_listed_track_is_kept_and_counted_for_the_list_once(
    settings, client, redis_client, known_user_id
):
    """Regression: counting a token once per (track, type) dropped a listener's second real completion of
    the same recommended track (accepted feedback is never lost). The repeat is stored for learning,
    without the list or the arm; a retry of the same event id stays a duplicate."""
    body = served(client, known_user_id, count=5)
    track = body["tracks"][0]["track_id"]

    def listen(event_id):
        return click(
            client, known_user_id, track, body["token"], kind="track_completed", ms_played=200_000, event_id=event_id
        )

    assert listen("listen-1").json()["accepted"] == 1
    assert listen("listen-2").json()["accepted"] == 1  # a second real listen
    retried = listen("listen-2").json()
    assert retried["accepted"] == 0 and retried["duplicates"] == 1  # the same event again
    rows = sorted(
        (r for r in stream_rows(redis_client, settings) if r["type"] == "track_completed"), key=lambda r: r["event_id"]
    )
    assert [r["event_id"] for r in rows] == ["listen-1", "listen-2"]
    assert rows[0]["context_source"] == "token" and rows[0]["request_id"] == body["request_id"]
    assert rows[1]["context_source"] == "repeat" and rows[1]["request_id"] is None and rows[1]["experiment_id"] is None


def test_a_token_counts_for_a_day_then_its_events_count_as_without_one(
    settings, published, redis_client, known_user_id
):
    clock = ManualClock()
    with TestClient(create_app(settings, clock=clock), headers={"X-API-Key": CLIENT_KEY}) as client:
        body = served(client, known_user_id, count=5)
        first, second = (t["track_id"] for t in body["tracks"][:2])
        clock.advance(DAY - 60)
        fresh = click(client, known_user_id, first, body["token"])
        clock.advance(120)
        stale = click(client, known_user_id, second, body["token"])
    assert fresh.status_code == 202 and fresh.json()["ignored_tokens"] == []
    assert stale.status_code == 202 and stale.json()["accepted"] == 1
    assert "expired" in stale.json()["ignored_tokens"][0]["problem"]
    rows = {r["track_id"]: r for r in stream_rows(redis_client, settings)}
    assert rows[first]["context_source"] == "token" and rows[first]["request_id"] == body["request_id"]
    assert (
        rows[second]["context_source"] != "token" and rows[second]["request_id"] is None
    )  # no list named: not a click of it


def test_a_stale_token_in_a_batch_costs_its_event_the_list_not_the_batch(client, redis_client, settings, known_user_id):
    """Regression (issue 23): one stale token made a whole batch 422."""
    body = served(client, known_user_id, count=5)
    tracks = [t["track_id"] for t in body["tracks"]]
    batch = [
        {"user_id": known_user_id, "track_id": tracks[0], "type": "recommendation_clicked", "token": body["token"]},
        {"user_id": known_user_id, "track_id": tracks[1], "type": "recommendation_clicked", "token": "not.a.token"},
        {"user_id": known_user_id, "track_id": tracks[2], "type": "track_skipped"},
    ]
    response = client.post("/feedback", json=batch)
    assert response.status_code == 202 and response.json()["accepted"] == 3
    assert [(d["index"], d["field"]) for d in response.json()["ignored_tokens"]] == [(1, "token")]
    sources = {r["track_id"]: r["context_source"] for r in stream_rows(redis_client, settings)}
    assert sources[tracks[0]] == "token" and sources[tracks[1]] != "token"


def test_a_rotation_keeps_the_previous_key_valid_for_its_tokens(settings, published, redis_client, known_user_id):
    old, new = SecretStr(secrets.token_hex(32)), SecretStr(secrets.token_hex(32))
    issued_by_old = settings.model_copy(update={"token_key": old})
    with TestClient(create_app(issued_by_old), headers={"X-API-Key": CLIENT_KEY}) as client:
        body = served(client, known_user_id, count=3)
    tracks = [t["track_id"] for t in body["tracks"]]
    rotated = settings.model_copy(update={"token_key": new, "token_previous_key": old})
    with TestClient(create_app(rotated), headers={"X-API-Key": CLIENT_KEY}) as client:
        kept = click(client, known_user_id, tracks[0], body["token"])
        assert (
            served(client, known_user_id)["token"].split(".")[0] != body["token"].split(".")[0]
        )  # new lists: the new key's id
    after = settings.model_copy(update={"token_key": new})  # the previous key removed once its tokens expired
    with TestClient(create_app(after), headers={"X-API-Key": CLIENT_KEY}) as client:
        dropped = click(client, known_user_id, tracks[1], body["token"])
    assert kept.json()["ignored_tokens"] == [] and kept.json()["accepted"] == 1
    assert dropped.json()["accepted"] == 1 and "no longer holds" in dropped.json()["ignored_tokens"][0]["problem"]


def test_a_token_from_before_key_ids_still_counts(settings, published, known_user_id):
    """Lists served by an API process of the previous release (a rolling deploy) are still counted."""
    key = secrets.token_hex(32)
    with TestClient(
        create_app(settings.model_copy(update={"token_key": SecretStr(key)})), headers={"X-API-Key": CLIENT_KEY}
    ) as client:
        body = served(client, known_user_id, count=3)
        _, payload, _ = body["token"].split(".")
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        signature = hmac.new(bytes.fromhex(key), raw, hashlib.sha256).digest()[:16]
        legacy = payload + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
        answer = click(client, known_user_id, body["tracks"][0]["track_id"], legacy)
    assert answer.json()["accepted"] == 1 and answer.json()["ignored_tokens"] == []


@pytest.mark.parametrize(
    "content,problem", [("", "is empty"), ("abcd", "holds 2 bytes"), ("not hex at all", "is not a hex key")]
)
def test_a_token_key_file_that_holds_no_usable_key_stops_the_api(settings, published, content, problem):
    """Regression (issue 23): an empty token.key (a crash between create and write) was accepted, and
    every token signed under the empty key could be forged."""
    settings.layout.token_key.parent.mkdir(parents=True, exist_ok=True)
    settings.layout.token_key.write_text(content)
    with pytest.raises(ValueError, match=problem) as refused:
        with TestClient(create_app(settings)):
            pass
    assert str(settings.layout.token_key) in str(refused.value) and "delete it" in str(refused.value)


def _race(path, barrier, keys) -> None:
    barrier.wait()
    keys.put(load_or_create_key(path).hex())


def test_processes_racing_on_first_start_end_with_one_key(tmp_path):
    path = tmp_path / "var" / "token.key"
    context = multiprocessing.get_context("fork")
    barrier, found = context.Barrier(8), context.Queue()
    racers = [context.Process(target=_race, args=(path, barrier, found)) for _ in range(8)]
    for racer in racers:
        racer.start()
    keys = [found.get(timeout=30) for _ in racers]
    for racer in racers:
        racer.join(timeout=30)
    assert len(set(keys)) == 1 and path.read_text() == keys[0] and len(bytes.fromhex(keys[0])) == 32
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == ["token.key"]  # no temporary file left behind
