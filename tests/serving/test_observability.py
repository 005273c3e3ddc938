"""Monitoring: every metric the alert rules and the dashboard in ops/ query is one the code exports;
the figures behind them (CTR and completion by model version, experiment conversion, active users,
the worker's lag and rates, memory and CPU of every API process) are right."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis
import yaml
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from core import release
from core.clock import ManualClock
from core.contracts import FeedbackEvent, RedisKeys
from core.contracts.served_lists import EXPOSURE_FIELD, ServedList
from core.feedback_stream import FeedbackStream
from experiments.assignment import Assigner
from experiments.definition import Experiment
from experiments.rollout import read_health
from serving.main import create_app
from serving.version_health import VersionHealthCounts
from serving.worker import GROUP, FeedbackWorker
from serving.worker.counting import Handled
from serving.worker.events import stream_id_of
from serving.worker.metrics import memory_limit_bytes, serve_metrics
from tests.serving.conftest import ADMIN_KEY, CLIENT_KEY, drain, flush_exposures, served
from tests.waiting import wait_until

OPS = Path(__file__).resolve().parents[2] / "ops"
# the runbook's entries ("**Roll back.** ...") that alerts send their reader to
RUNBOOK_HEADINGS = set(
    re.findall(r"^\*\*(.+?)\.\*\*", (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(), re.M)
)
FROM_PROMETHEUS = {"up"}  # series Prometheus writes itself for every scrape target
EXPERIMENT = {
    "id": "home-test",
    "name": "Home list",
    "variants": [
        {"name": "control", "algorithm": "popularity", "weight": 0.5},
        {"name": "treatment", "model_alias": "champion", "weight": 0.5},
    ],
}

# --- PromQL: the metric names an expression selects ------------------------------------------------
_NOT_METRICS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "atan2",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "limitk",
    "limit_ratio",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, aggregations,
    keywords, label names (in matchers and in by/on/... lists), strings, durations or numbers."""
    text = re.sub(
        r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr
    )  # strings first: they may hold anything
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries, $__rate_interval
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" \1 ", text)  # label lists
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        before, after = text[: match.start()], text[match.end() :].lstrip()
        if (
            before[-1:].isdigit()
            or before[-1:] == "."
            or after.startswith("(")
            or match.group().lower() in _NOT_METRICS
        ):
            continue  # 2e9 and 1h, a function call, a keyword
        names.add(match.group())
    return names


def test_metric_names_are_read_out_of_promql():
    expr = """sum by (le, route) (rate(echotune_a_bucket{route=~"/x/[{]id[}].*", job="b c"}[5m])) / ignoring (pid) group_left
              max(echotune_b) by (instance) > 2e9 and on (algorithm) echotune_c offset 1h or absent(up{job="w"}) * 0.7
              + sum(increase(echotune_d_total[$__rate_interval]))"""
    assert metric_names(expr) == {"echotune_a_bucket", "echotune_b", "echotune_c", "up", "echotune_d_total"}


def alert_rules() -> list[dict]:
    return [
        rule
        for group in yaml.safe_load((OPS / "prometheus" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    ]


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads((OPS / "grafana" / "echotune.json").read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def exported_names(text: str) -> set[str]:
    """Every series name an exposition has, also of families declared but without samples yet (a
    counter that never moved), named as prometheus_client writes them (_total, _bucket, ...)."""
    suffixes = {
        "counter": ["_total", "_created"],
        "histogram": ["_bucket", "_sum", "_count", "_created"],
        "summary": ["_sum", "_count"],
    }
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {
            family.name,
            *(s.name for s in family.samples),
            *(family.name + suffix for suffix in suffixes.get(family.type, [])),
        }
    return names


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(series name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


# --- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture
def worker(settings, redis_client, published):
    w = FeedbackWorker(redis_client, RedisKeys(settings.redis_prefix), consumer="w1", batch=100, block_ms=10)
    w.ensure_group()
    return w


def post(client, user, track, kind, token=None, **context):
    body = {
        "user_id": user,
        "track_id": track,
        "type": kind,
        "context": context or None,
        **({"token": token} if token else {}),
    }
    response = client.post("/feedback", json=body)
    assert response.status_code == 202, response.text


# --- the ops/ files against what the code exports ----------------------------------------------------
def test_every_alert_and_dashboard_expression_names_an_exported_metric(client, worker, trained, known_user_id):
    model, _ = trained
    tracks = list(model.item_ids[:3])
    client.get(f"/recommendations/{known_user_id}")
    client.get(f"/recommendations/{known_user_id}/similar/{tracks[0]}")
    client.post("/recommendations/batch", json={"requests": [{"user_id": known_user_id}]})
    for kind in ("recommendation_shown", "recommendation_clicked", "track_completed", "track_skipped"):
        post(
            client,
            known_user_id,
            tracks[0],
            kind,
            algorithm="lowrank_ease",
            model_version="1",
            experiment_id="home-test",
            variant="control",
        )
    worker.r.xadd(worker.keys.feedback_stream(), {"e": b"{not json"})  # a dead letter
    drain(worker)
    exported = (
        exported_names(client.get("/metrics").text)
        | exported_names(generate_latest(worker.metrics.registry).decode())
        | FROM_PROMETHEUS
    )
    queried = [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()] + [
        (f"panel {title!r}", expr) for title, expr in dashboard_exprs()
    ]
    unknown = sorted(
        {f"{name} (in {where})" for where, expr in queried for name in metric_names(expr) if name not in exported}
    )
    assert not unknown, "metrics queried in ops/ that the code does not export: " + "; ".join(unknown)


def test_every_alert_says_what_it_is_and_what_to_do():
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules) >= 15
    for rule in rules:
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["runbook"], rule["alert"]
        assert "README" not in rule["annotations"]["runbook"], (
            f"{rule['alert']}: the runbook lives in docs/operations.md"
        )
        headings = set(re.findall(r'docs/operations.md "([^"]+)"', rule["annotations"]["runbook"]))
        assert headings <= RUNBOOK_HEADINGS, (
            f"{rule['alert']} refers to runbook sections that do not exist: {headings - RUNBOOK_HEADINGS}"
        )
    dashboard = json.loads((OPS / "grafana" / "echotune.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and all(e.strip() for _, e in dashboard_exprs())


# --- the figures ---------------------------------------------------------------------------------------
def test_ctr_completion_and_conversion_by_model_version(client, worker, published, world, trained):
    """Shown tracks are the API's own record of the lists it served; clicks and plays count for the list
    their token names. A click without a token, whatever context it claims, counts for no experiment."""
    model, graded = trained
    release.publish(published, "2", model, world.tracks)  # a second published version for the treatment
    spec = {
        **EXPERIMENT,
        "variants": [
            {"name": "control", "model_version": "1", "weight": 0.5},
            {"name": "treatment", "model_version": "2", "weight": 0.5},
        ],
    }
    assert (
        client.post("/experiments", json={**spec, "status": "running"}, headers={"X-API-Key": ADMIN_KEY}).status_code
        == 201
    )
    assigner = Assigner(Experiment.model_validate(spec))
    users = {assigner.variant(u): u for u in graded["user_id"].unique()[:50]}
    lists = {
        "control": [served(client, users["control"], 2), served(client, users["control"], 2)],
        "treatment": [served(client, users["treatment"], 2)],
    }
    assert [b["model_version"] for b in lists["control"] + lists["treatment"]] == ["1", "1", "2"]
    # (type, list, position): a token counts once per track and type, so repeated completions are of other tracks and lists
    plays = {
        "control": [
            ("recommendation_clicked", 0, 0),
            ("track_completed", 0, 0),
            ("track_completed", 0, 1),
            ("track_completed", 1, 0),
            ("track_skipped", 1, 1),
        ],
        "treatment": [("recommendation_clicked", 0, 0), ("track_completed", 0, 0), ("track_skipped", 0, 0)],
    }
    for variant, events in plays.items():
        for kind, i, position in events:
            body = lists[variant][i]
            post(client, body["user_id"], body["tracks"][position]["track_id"], kind, token=body["token"])
    forged = {"algorithm": "lowrank_ease", "model_version": "77", "experiment_id": "made-up", "variant": "x"}
    post(client, users["control"], model.item_ids[0], "recommendation_clicked", **forged)
    flush_exposures(client)
    drain(worker)
    got = samples(client.get("/metrics").text)
    assert got[("echotune_algorithm_ctr", (("algorithm", "lowrank_ease"), ("model_version", "1")))] == 0.25
    assert got[("echotune_algorithm_ctr", (("algorithm", "lowrank_ease"), ("model_version", "2")))] == 0.5
    assert got[("echotune_algorithm_completion_rate", (("algorithm", "lowrank_ease"), ("model_version", "1")))] == 0.75
    assert got[("echotune_algorithm_completion_rate", (("algorithm", "lowrank_ease"), ("model_version", "2")))] == 0.5
    assert got[("echotune_experiment_conversion", (("experiment", "home-test"), ("variant", "control")))] == 0.25
    assert got[("echotune_experiment_conversion", (("experiment", "home-test"), ("variant", "treatment")))] == 0.5
    assert (
        got[
            (
                "echotune_feedback_events_total",
                (("algorithm", "lowrank_ease"), ("type", "recommendation_shown"), ("variant", "control")),
            )
        ]
        == 4
    )
    assert got[("echotune_feedback_exposures_total", ())] == 6
    # the tokenless click with a made-up context: counted, but under no version, experiment or variant it named
    untargeted = (
        ("algorithm", "none"),
        ("experiment", "none"),
        ("model_version", "none"),
        ("type", "recommendation_clicked"),
        ("variant", "none"),
    )
    assert got[("echotune_algorithm_events_total", untargeted)] == 1
    assert not [k for k in got if {"77", "made-up", "x"} & {v for _, v in k[1]}]


def test_aggregates_of_older_installs_and_retired_versions_keep_their_totals(
    client, worker, published, world, trained, redis_client, settings
):
    keys = RedisKeys(settings.redis_prefix)
    model, _ = trained
    release.publish(published, "2", model, world.tracks)
    shown = ServedList("r1", "u1", "recommendations", "lowrank_ease", "2", None, None, (model.item_ids[0],), 0)
    redis_client.xadd(keys.feedback_stream(), {EXPOSURE_FIELD: shown.payload()})  # version 2 served one track
    drain(worker)
    redis_client.hset(
        keys.feedback_aggregates(), "lowrank_ease|control|recommendation_shown", 4
    )  # written before model versions were counted
    shown = (
        "echotune_feedback_events_total",
        (("algorithm", "lowrank_ease"), ("type", "recommendation_shown"), ("variant", "control")),
    )
    old = (
        "echotune_algorithm_events_total",
        (
            ("algorithm", "lowrank_ease"),
            ("experiment", "none"),
            ("model_version", "none"),
            ("type", "recommendation_shown"),
            ("variant", "control"),
        ),
    )
    v2 = (
        "echotune_algorithm_events_total",
        (
            ("algorithm", "lowrank_ease"),
            ("experiment", "none"),
            ("model_version", "2"),
            ("type", "recommendation_shown"),
            ("variant", "none"),
        ),
    )
    before = samples(client.get("/metrics").text)
    assert before[shown] == 4 and before[old] == 4 and before[v2] == 1
    published.delete_version("2")
    assert worker.counter.sweep() == 2  # the old field rewritten, version 2 folded into "other"
    after = samples(client.get("/metrics").text)
    assert after[shown] == 4 and after[old] == 4 and v2 not in after
    assert after[(v2[0], tuple((k, "other" if k == "model_version" else v) for k, v in v2[1]))] == 1
    assert set(redis_client.hkeys(keys.feedback_aggregates())) == {
        b"lowrank_ease|none|none|control|recommendation_shown",
        b"lowrank_ease|other|none|none|recommendation_shown",
    }


def test_active_users_are_counted_once_per_user(client, worker, settings, published, trained):
    model, _ = trained
    for user, n in [("listener_a", 5), ("listener_b", 3), ("listener_c", 1)]:
        for track in model.item_ids[:n]:
            post(client, user, track, "track_completed")
    drain(worker)
    entries = worker.r.xrange(worker.keys.feedback_stream())
    redelivered = [Handled(stream_id_of(i), "applied", "x|none|none|none|play", "listener_a") for i, _ in entries]
    assert worker.counter.acknowledge(redelivered) == {"applied": 0}  # acknowledged already: counted once
    got = samples(client.get("/metrics").text)
    for window in ("1h", "24h"):
        assert got[("echotune_active_users", (("window", window),))] == 3
        assert got[("echotune_events_per_active_user", (("window", window),))] == 3
    later = ManualClock(at=time.time() + 2 * 3600)
    with TestClient(create_app(settings, clock=later), headers={"X-API-Key": CLIENT_KEY}) as two_hours_later:
        got = samples(two_hours_later.get("/metrics").text)
    assert (
        got[("echotune_active_users", (("window", "1h"),))] == 0
        and got[("echotune_active_users", (("window", "24h"),))] == 3
    )


# --- the worker's own metrics -------------------------------------------------------------------------
def test_the_worker_reports_pending_lag_rates_and_its_model(settings, redis_client, published, trained):
    keys = RedisKeys(settings.redis_prefix)
    worker = FeedbackWorker(redis_client, keys, consumer="w1", batch=100, block_ms=10, claim_idle_ms=0)
    worker.ensure_group()
    stream = FeedbackStream(redis_client, keys)
    stream.append(
        [FeedbackEvent(user_id="u1", track_id=t, type="track_completed").stamped() for t in trained[0].item_ids[:5]]
    )
    redis_client.xreadgroup(GROUP, "crashed", {keys.feedback_stream(): ">"}, count=2)  # read, never acknowledged

    def figures() -> dict:
        return {
            name: value
            for (name, labels), value in samples(generate_latest(worker.metrics.registry).decode()).items()
            if not labels
        }

    waiting = figures()
    assert waiting["echotune_worker_pending_entries"] == 2 and waiting["echotune_worker_lag_entries"] == 3
    assert waiting["echotune_worker_lag_seconds"] >= 0 and waiting["echotune_worker_oldest_pending_age_seconds"] >= 0
    redis_client.xadd(keys.feedback_stream(), {"e": b"{not json"})
    drain(worker)  # reclaims the crashed consumer's two entries too
    done = figures()
    assert (
        done["echotune_worker_pending_entries"] == 0
        and done["echotune_worker_lag_entries"] == 0
        and done["echotune_worker_lag_seconds"] == 0
    )
    assert done["echotune_worker_events_applied_total"] == 5 and done["echotune_worker_entries_total"] == 6
    assert done["echotune_worker_dead_letters_total"] == 1 and done["echotune_worker_dead_letter_stream_length"] == 1
    assert done["echotune_worker_redis_up"] == 1 and done["echotune_worker_heartbeat_age_seconds"] < 5
    assert (
        samples(generate_latest(worker.metrics.registry).decode())[
            ("echotune_worker_model_info", (("model_version", "1"),))
        ]
        == 1
    )
    assert ("echotune_process_resident_memory_bytes", (("pid", str(os.getpid())),)) in samples(
        generate_latest(worker.metrics.registry).decode()
    )


def test_worker_metrics_are_served_over_http_and_survive_redis_being_away(settings, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    unreachable = redis.Redis(port=port, socket_connect_timeout=0.2)  # nothing listens there
    worker = FeedbackWorker(unreachable, RedisKeys(settings.redis_prefix), consumer="w1", block_ms=10)
    assert serve_metrics(worker.metrics.registry, "127.0.0.1", 0) is None  # 0: off
    server = serve_metrics(worker.metrics.registry, "127.0.0.1", port)
    try:
        assert serve_metrics(worker.metrics.registry, "127.0.0.1", port) is None  # taken: logged, the worker goes on
        assert "--metrics-port" in caplog.text
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
    assert samples(text)[("echotune_worker_redis_up", ())] == 0 and "echotune_worker_events_applied_total" in text


# --- memory and CPU of every API worker -------------------------------------------------------------
@pytest.mark.slow
def test_memory_and_cpu_are_reported_for_every_api_worker(settings, redis_url, tmp_path):
    """`echotune serve --workers 2`: each scrape, whichever worker answers it, reports both workers; a
    worker that dies is replaced by uvicorn, and its pid and live-gauge files go."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECHOTUNE_", "PROMETHEUS_"))}
    env.update(
        ECHOTUNE_HOME=str(tmp_path),
        ECHOTUNE_REDIS_URL=redis_url,
        ECHOTUNE_REDIS_PREFIX=settings.redis_prefix,
        ECHOTUNE_API_KEYS=f"{CLIENT_KEY}:client",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "echotune.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def pids_until(check, seconds=60) -> set[str]:
        def reported() -> set[str] | None:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                got = samples(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
            except OSError:
                return None  # not listening yet, or a worker being replaced
            seen = {dict(labels)["pid"] for name, labels in got if name == "echotune_process_resident_memory_bytes"}
            cpu = {dict(labels)["pid"] for name, labels in got if name == "echotune_process_cpu_seconds_total"}
            return seen if check(seen) and cpu == seen else None

        return wait_until(reported, seconds, "memory and CPU reported for the expected API worker pids", interval=0.2)

    try:

        def workers():
            return {str(p.pid) for p in psutil.Process(server.pid).children() if "spawn_main" in " ".join(p.cmdline())}

        first = pids_until(lambda seen: len(seen) == 2 and seen == workers())
        dead = sorted(first)[0]
        os.kill(int(dead), signal.SIGKILL)
        second = pids_until(lambda seen: len(seen) == 2 and dead not in seen)
        assert second == workers() and dead not in second
        assert not list(
            (tmp_path / "var" / "prometheus").glob(f"gauge_live*_{dead}.db")
        )  # in-flight of the dead worker no longer counts
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_feature_lookup_and_assignment_latency_are_observed_per_request(client, known_user_id):
    """The ADR's feature-lookup and assignment budgets have alerts (ops/prometheus/alerts.yml): each
    recommendation request adds one observation of each stage."""

    def counts() -> dict[str, float]:
        figures = samples(client.get("/metrics").text)
        return {
            stage: figures.get(("echotune_stage_duration_seconds_count", (("stage", stage),)), 0.0)
            for stage in ("feature_lookup", "experiment_assignment")
        }

    before = counts()
    for _ in range(3):
        assert client.get(f"/recommendations/{known_user_id}").status_code == 200
    after = counts()
    assert after["feature_lookup"] - before["feature_lookup"] == 3
    assert after["experiment_assignment"] - before["experiment_assignment"] == 3


def test_the_memory_limit_is_the_containers_cgroup_limit(tmp_path):
    host = psutil.virtual_memory().total
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert memory_limit_bytes((v2, v1)) == host  # no cgroup files: the host's memory
    v2.write_text("max\n")
    v1.write_text("1073741824\n")
    assert memory_limit_bytes((v2, v1)) == 1073741824  # v2 unlimited, v1 set
    v2.write_text("536870912\n")
    assert memory_limit_bytes((v2, v1)) == 536870912
    v2.write_text(str(host * 4))
    assert memory_limit_bytes((v2,)) == host  # v1's "unlimited" sentinel is a huge number: capped at the host


def test_answers_are_counted_per_model_version_for_a_canary(client, settings, redis_client, known_user_id):
    """Issue 24: the rollout judges a candidate's errors and P95 from what every API process answered with
    it, summed in Redis (and exported per version to Prometheus)."""
    for _ in range(3):
        served(client, known_user_id)
    flush_exposures(client)  # the counts ride along with the exposures' flush
    keys = RedisKeys(settings.redis_prefix)
    health = read_health(redis_client, keys, "1")
    assert health.requests == 3 and health.errors == 0 and sum(health.buckets) == 3
    assert health.p95_ms is not None and redis_client.ttl(keys.version_health("1")) > 0
    assert 'echotune_model_request_duration_seconds_count{model_version="1"}' in client.get("/metrics").text

    counts = VersionHealthCounts()  # a failing answer counts as an error of its version, in its latency bucket
    counts.record("7", 0.25, error=True)
    counts.record("7", 0.004, error=False)
    for command in counts.take_commands(keys):
        redis_client.execute_command(*command)
    seven = read_health(redis_client, keys, "7")
    assert (seven.requests, seven.errors, seven.error_rate, seven.p95_ms) == (2, 1, 0.5, 300.0)
    assert counts.take_commands(keys) == []  # sent once
