"""Stories of experiments, walked the way a user walks them (issue 21, item 7): after `echotune
pipeline`, an admin registers an experiment through the API, the API serves its lists to listeners,
their clicks come back with the request tokens, the Dagster partitions of the feedback stream are
drained, the reports sensor asks for a report, and the report says what the listeners preferred.

The listeners are the synthetic users behind the data set; each clicks the tracks of a list that suit
their taste best, so the ranker that learnt their tastes (the champion model) is the known answer
against a global popularity list."""

import pytest

from tests.stories.experiments_support import (  # noqa: F401  (module fixtures the tests take)
    ADMIN,
    DEMO,
    api,
    drain,
    flush_exposures,
    listen,
    project,
    report,
    stop_running,
)

pytestmark = pytest.mark.slow

RANKERS = [
    {"name": "popularity", "algorithm": "popularity", "weight": 0.5},
    {"name": "champion", "model_alias": "champion", "weight": 0.5},
]


def test_an_interleaving_experiment_started_through_the_api_reaches_ship_for_the_ranker_listeners_prefer(project, api):  # noqa: F811
    # the demo's own experiment takes every listener of its layer: the admin stops it first
    assert DEMO in stop_running(api)
    spec = {
        "id": "home-interleaving",
        "name": "Champion vs popularity, interleaved",
        "design": "interleaving",
        "status": "running",
        "variants": RANKERS,
        "min_sample_size": 50,
        "guardrail_metrics": [],
    }
    created = api.post("/experiments", json=spec, headers=ADMIN)
    assert created.status_code == 201, created.text

    first = api.get(f"/recommendations/{project.world.user_ids[0]}", params={"count": 10}).json()
    assert (first["experiment"], first["algorithm"]) == (
        "home-interleaving",
        "interleaved",
    )  # served at once by this API process
    walked = listen(api, project.world)
    assert walked["clicks"] == 2 * walked["lists"]
    flush_exposures(api)

    days = drain(project)
    assert days
    summary = report(project, "home-interleaving")
    assert summary["design"] == "interleaving" and summary["verdict"] == "ship", summary["reasons"]
    assert summary["preference"]["winner"] == "champion" and summary["preference"]["share_b_ci"][0] > 0.5
    assert summary["lists"] == walked["lists"] + 1 and summary["incomplete_lists"] == {}
    credited = summary["clicks"]["credited"]
    assert credited["champion"] > credited["popularity"] and sum(credited.values()) == walked["clicks"]
    assert summary["simulated"]["listeners"] == "real"  # they came through the API, not the demo's simulation
    assert (
        api.get("/experiments/home-interleaving/summary").json()["verdict"] == "ship"
    )  # what the API shows a reviewer
    page = api.get("/experiments/home-interleaving/report")
    assert page.status_code == 200 and "Verdict: SHIP" in page.text


def test_an_ab_experiment_started_through_the_api_reaches_ship_for_the_arm_listeners_click_more(project, api):  # noqa: F811
    stop_running(api)
    spec = {
        "id": "home-ab",
        "name": "Champion vs popularity, A/B",
        "status": "running",
        "variants": RANKERS,
        "min_sample_size": 40,
        "guardrail_metrics": [],
    }
    assert api.post("/experiments", json=spec, headers=ADMIN).status_code == 201
    walked = listen(api, project.world, clicks=None, seed=1)  # clicks drawn by the synthetic world's response model
    flush_exposures(api)
    drain(project)
    summary = report(project, "home-ab")
    assert summary["design"] == "ab" and summary["verdict"] == "ship", summary["reasons"]
    [primary] = summary["primary"]
    assert primary["variant"] == "champion" and primary["relative_ci"][0] > 0
    per_variant = {v["variant"]: v for v in summary["variants"]}
    assert per_variant["champion"]["ctr"] > per_variant["popularity"]["ctr"]
    assert sum(v["clicked"] for v in per_variant.values()) == walked["clicks"] and summary["incomplete_lists"] == {}
    assert sum(q["lists"] for q in summary["ranking_quality"].values()) == walked["lists"]
