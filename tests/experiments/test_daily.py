"""The daily series on an experiment whose truth is known: five days, CTR 0.10 against 0.12 (a relative
lift of +20%), users arriving uniformly over the days. Exposures are checked against a direct count of
the events, the last day against the final analysis, the boundaries against experiments.sequential."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from experiments.analysis import analyse
from experiments.daily import earlier_looks
from experiments.report import served_tracks, strict_summary, summary_html, write_report
from experiments.sequential import group_sequential_boundary
from tests.experiments.test_analysis import experiment, simulate

DAYS = [f"2024-03-0{d}" for d in range(1, 6)]
TRUE_LIFT = 0.12 / 0.10 - 1


@pytest.fixture(scope="module")
def known():
    spec = experiment()
    events = simulate(spec, ctr=(0.10, 0.12), days=len(DAYS))
    return spec, events, analyse(spec, events)


def test_one_record_per_day_with_the_exposures_counted_directly(known):
    spec, events, result = known
    [series] = result["daily"]
    assert (series["variant"], series["control"], series["metric"]) == ("treatment", "control", "ctr")
    assert [d["day"] for d in series["days"]] == DAYS
    shown = events[(events["type"] == "recommendation_shown") & (events["experiment_id"] == spec.id)]
    day = shown["timestamp"].dt.strftime("%Y-%m-%d")
    for record in series["days"]:
        for variant in ("control", "treatment"):
            that_day = shown[(day == record["day"]) & (shown["variant"] == variant)]
            assert record["shown"][variant] == len(that_day) > 0
            assert record["exposed_users"][variant] == that_day["user_id"].nunique() > 0


def test_the_last_day_is_the_final_analysis(known):
    _, _, result = known
    last, final = result["daily"][0]["days"][-1], result["primary"][0]
    assert last["relative_lift"] == pytest.approx(final["relative_lift"], rel=1e-12)
    assert last["relative_ci"] == pytest.approx(final["relative_ci"], rel=1e-12)
    assert last["users"] == final["n_control"] + final["n_treatment"]
    assert last["relative_ci"][0] < TRUE_LIFT < last["relative_ci"][1]
    assert last["crossed"] and result["verdict"] == "ship"  # +20% on 3,000 users crosses; the verdict agrees


def test_each_day_is_the_analysis_of_the_data_up_to_its_end(known):
    spec, events, result = known
    day = result["daily"][0]["days"][2]
    so_far = analyse(spec, events[events["timestamp"] < pd.Timestamp(day["day"], tz="UTC") + pd.Timedelta(days=1)])
    assert day["relative_lift"] == pytest.approx(so_far["primary"][0]["relative_lift"], rel=1e-12)
    assert day["users"] == so_far["primary"][0]["n_control"] + so_far["primary"][0]["n_treatment"]


def test_the_boundary_of_each_day_is_the_group_sequential_design(known):
    spec, events, result = known
    series = result["daily"][0]
    own = events[events["experiment_id"] == spec.id]
    arrivals = own.groupby("user_id")["timestamp"].min().dt.strftime("%Y-%m-%d").value_counts().sort_index().cumsum()
    assert [d["users"] for d in series["days"]] == arrivals.tolist()  # users so far: a direct count
    planned = max(2 * spec.min_sample_size, int(arrivals.iloc[-1]))
    assert series["planned_users"] == planned
    expected = group_sequential_boundary(arrivals.to_numpy() / planned, spec.alpha)
    assert [d["z_boundary"] for d in series["days"]] == pytest.approx(expected, rel=1e-12)
    assert earlier_looks(series) == arrivals.tolist()[:-1]
    assert all(a > b for a, b in zip(expected, expected[1:]))  # O'Brien-Fleming-like: strict early
    for d in series["days"]:
        assert d["information_fraction"] == pytest.approx(d["users"] / planned)
        assert d["crossed"] == (abs(d["z"]) >= d["z_boundary"])
        # the dashed line is where the lift line meets the boundary: crossing it is rejecting
        assert (
            d["crossed"] == (abs(d["relative_lift"]) >= d["boundary_lift"][1])
            and d["boundary_lift"][0] == -d["boundary_lift"][1]
        )


@pytest.mark.parametrize("metric", ["ctr", "listening_minutes"])
def test_users_active_on_several_days_are_counted_once(metric):
    """The series adds each day's per-user sums; a user's second session a day later must add to their
    sums, not count as another user (listening minutes are a mean per user: its denominator is 1 each)."""
    spec = experiment(primary_metric=metric)
    events = simulate(spec, n_users=800, ctr=(0.10, 0.12), days=3)
    later = events["request_id"].fillna("").str.endswith("-1")
    events.loc[later, "timestamp"] += pd.Timedelta(days=1)  # second sessions a day after the first
    result = analyse(spec, events)
    last, final = result["daily"][0]["days"][-1], result["primary"][0]
    assert (
        last["users"]
        == final["n_control"] + final["n_treatment"]
        == events.loc[events["experiment_id"] == spec.id, "user_id"].nunique()
    )
    assert last["relative_lift"] == pytest.approx(final["relative_lift"], rel=1e-9)
    assert last["relative_ci"] == pytest.approx(final["relative_ci"], rel=1e-9)


def test_every_treatment_gets_its_own_series_against_the_control():
    spec = experiment(
        variants=[
            {"name": "control", "algorithm": "popularity", "weight": 0.34},
            {"name": "better", "model_alias": "champion", "weight": 0.33},
            {"name": "same", "model_alias": "challenger", "weight": 0.33},
        ]
    )
    events = simulate(spec, n_users=1500, ctr=(0.10, 0.13, 0.10), skip=(0.3, 0.3, 0.3), days=3)
    better, same = analyse(spec, events)["daily"]
    assert (better["variant"], same["variant"]) == ("better", "same")
    assert set(better["days"][0]["shown"]) == {"control", "better"} and set(same["days"][0]["shown"]) == {
        "control",
        "same",
    }
    assert better["days"][-1]["crossed"] and not same["days"][-1]["crossed"]


@pytest.mark.slow  # writes the Evidently report
def test_summary_json_holds_the_series_as_strict_json_with_a_reason_for_each_null(tmp_path):
    spec = experiment(start="2024-02-29T00:00:00Z")  # a day before the first user: nothing to compare yet
    events = simulate(spec, n_users=800, ctr=(0.10, 0.12), days=3)
    result = analyse(spec, events)
    summary_path, page = write_report(result, served_tracks(events, spec, None), tmp_path)
    summary = json.loads(summary_path.read_text(), parse_constant=lambda c: pytest.fail(f"summary.json holds {c}"))
    first, second = summary["daily"][0]["days"][:2]
    assert first["day"] == "2024-02-29" and first["users"] == 0 and first["shown"] == {"control": 0, "treatment": 0}
    assert first["relative_lift"] is None and first["z_boundary"] is None
    assert summary["nulls"]["/daily/0/days/0/relative_lift"].startswith("no comparison by this day")
    assert summary["nulls"]["/daily/0/days/0/z_boundary"].startswith("no users in the experiment by this day")
    assert second["day"] == "2024-03-01" and math.isfinite(second["relative_lift"]) and second["z_boundary"] > 0
    assert not [p for p in summary["nulls"] if p.startswith("/daily/0/days/1/")]
    # the charts are on the first screen, above Evidently's sections
    text = page.read_text()
    assert (
        text.index('id="echotune-verdict"')
        < text.index('class="lift-point"')
        < text.index('<div id="root_', text.index("<body>"))
    )


def test_a_control_without_clicks_leaves_the_relative_figures_null_with_the_reason():
    spec = experiment()
    events = simulate(spec, n_users=400, ctr=(0.10, 0.12), days=2)
    # no pre-period either: CUPED's adjusted control would not be 0
    events = events[
        (events["experiment_id"] == spec.id)
        & ~((events["variant"] == "control") & (events["type"] == "recommendation_clicked"))
    ]
    result = analyse(spec, events)
    day = result["daily"][0]["days"][-1]
    assert np.isnan(day["relative_lift"]) and np.isnan(day["boundary_lift"][1]) and day["crossed"]
    first_screen = summary_html(result)  # renders, with no point to draw on a relative scale
    assert "sequential boundary" in first_screen and 'class="lift-point"' not in first_screen
    nulls = strict_summary(result)["nulls"]
    assert nulls["/daily/0/days/1/relative_lift"] == "the control's value is 0, so a relative change is undefined"
    assert nulls["/daily/0/days/1/boundary_lift/1"].startswith("the control's value is 0")
