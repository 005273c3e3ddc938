"""Interleaving: team draft against the paper's algorithm written out literally, credit, the sign test
against scipy's binomial test, the bootstrap against naive resampling and by its coverage, the sign
test's false positive rate with no difference, and the analysis of events whose truth is known."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from scipy import stats

from echotune.cli import main
from experiments import analysis
from experiments.definition import Experiment
from experiments.interleaving import (
    bootstrap_share_interval,
    credit,
    outcome,
    preference,
    request_seed,
    rounds,
    sign_test,
    team_draft,
    team_draft_by_coins,
    users_for_sign_test,
)
from experiments.interleaving_analysis import DONT_SHIP, KEEP_RUNNING, SHIP, analyse_interleaving
from experiments.ranking_quality import ServedListError
from experiments.simulation import interleaved_clicks, team_draft_outcomes

CATALOG = [f"t{i:02d}" for i in range(30)]


def paper_team_draft(a, b, k, coins):
    """Algorithm 2 of Radlinski, Kurup & Joachims (2008) as printed: while both rankings hold a track
    not yet merged, the team with fewer picks goes next and a coin breaks a tie."""
    merged, teams, coins = [], [], iter(coins)
    while len(merged) < k and any(t not in merged for t in a) and any(t not in merged for t in b):
        picks_a, picks_b = teams.count("a"), teams.count("b")
        team = "a" if picks_a < picks_b or (picks_a == picks_b and next(coins)) else "b"
        merged.append(next(t for t in (a if team == "a" else b) if t not in merged))
        teams.append(team)
    return merged, teams


def random_rankings(rng, cases=400):
    """Pairs of rankings from a small catalog (so they overlap), of different lengths, some empty."""
    for _ in range(cases):
        a = list(rng.choice(CATALOG, size=rng.integers(0, 15), replace=False))
        b = list(rng.choice(CATALOG, size=rng.integers(0, 15), replace=False))
        yield a, b, int(rng.integers(0, 13))


def test_team_draft_is_the_papers_algorithm_for_every_coin_sequence():
    rng = np.random.default_rng(0)
    for a, b, k in random_rankings(rng):
        coins = list(rng.random(rounds(k)) < 0.5)
        assert team_draft_by_coins(a, b, k, coins) == paper_team_draft(a, b, k, coins), (a, b, k, coins)


def test_team_draft_properties_hold_for_overlapping_lists_of_different_lengths():
    rng = np.random.default_rng(1)
    for a, b, k in random_rankings(rng):
        merged, teams = team_draft(a, b, k, rng)
        assert len(merged) <= k and len(set(merged)) == len(merged) and len(teams) == len(merged)
        assert abs(teams.count("a") - teams.count("b")) <= 1
        for team, ranking in (("a", a), ("b", b)):
            picks = [t for t, who in zip(merged, teams) if who == team]
            assert [ranking.index(t) for t in picks] == sorted(ranking.index(t) for t in picks)  # in its own order
            for i, t in enumerate(merged):  # each pick is the team's best track not yet merged
                if teams[i] == team:
                    assert t == next(r for r in ranking if r not in merged[:i])


def test_coins_decide_who_picks_first_half_of_the_time():
    a, b = CATALOG[:10], CATALOG[10:20]
    first = [team_draft(a, b, 10, seed)[1][0] for seed in range(2000)]
    assert 0.45 < first.count("a") / len(first) < 0.55
    # and a later round's coin matters too: with distinct lists, position 2 is a's in about half the lists
    third = [team_draft(a, b, 10, seed)[1][2] for seed in range(2000)]
    assert 0.45 < third.count("a") / len(third) < 0.55


def test_empty_identical_and_one_sided_lists():
    assert team_draft([], [], 10, 0) == ([], [])
    assert team_draft(CATALOG[:5], [], 10, 0) == ([], [])  # nothing to contest: no interleaved list
    same = CATALOG[:8]
    for seed in range(20):
        merged, teams = team_draft(same, same, 6, seed)
        assert merged == same[:6]  # the shared order survives; only the credit is drawn
        assert all(sorted(teams[i : i + 2]) == ["a", "b"] for i in range(0, 6, 2))
    merged, teams = team_draft(CATALOG[:3], CATALOG[10:20], 10, 3)  # a runs out after three picks
    assert teams.count("a") == 3 and teams.count("b") in (2, 3) and len(merged) in (5, 6)
    assert team_draft(CATALOG[:5], CATALOG[5:10], 0, 0) == ([], [])


def test_team_draft_is_deterministic_given_the_seed_and_request():
    a, b = CATALOG[:10], CATALOG[5:15]
    seed = request_seed("exp", "request-1")
    assert seed == request_seed("exp", "request-1") != request_seed("exp", "request-2")
    assert team_draft(a, b, 10, seed) == team_draft(a, b, 10, seed)
    assert team_draft(a, b, 10, np.random.default_rng(seed)) == team_draft(a, b, 10, seed)
    assert len({tuple(team_draft(a, b, 10, s)[1]) for s in range(50)}) > 5
    with pytest.raises(ValueError, match="needs 5 coins"):
        team_draft_by_coins(a, b, 10, [True, False])


def test_the_simulations_outcomes_are_what_team_draft_serves_each_equally_often():
    rng = np.random.default_rng(2)
    a_ranked, b_ranked = rng.permutation(30)[:10][None, :], rng.permutation(30)[:10][None, :]
    tracks, from_b = team_draft_outcomes(a_ranked, b_ranked, 10)
    outcomes = [(tuple(t[t >= 0]), tuple(f[t >= 0])) for t, f in zip(tracks[0], from_b[0])]
    served = {}
    for seed in range(6400):
        merged, teams = team_draft(a_ranked[0].tolist(), b_ranked[0].tolist(), 10, seed)
        key = (tuple(merged), tuple(team == "b" for team in teams))
        served[key] = served.get(key, 0) + 1
    expected = {o: outcomes.count(o) / len(outcomes) for o in set(outcomes)}  # coin sequences can coincide
    assert set(served) == set(expected)
    for key, share in expected.items():
        assert served[key] / 6400 == pytest.approx(share, abs=0.02)


def test_interleaved_clicks_credit_the_contributing_ranker():
    click_prob = np.array([[[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])  # two equally likely merges of three tracks
    from_b = np.array([[[True, False, False], [False, True, True]]])
    a, b = interleaved_clicks(np.random.default_rng(0), click_prob, from_b, np.zeros(4000, dtype=int), np.full(4000, 1))
    assert set(zip(a, b)) == {(1, 1), (0, 0)} and 0.45 < np.mean(a) < 0.55


def test_credit_and_outcome():
    teams = ["a", "b", "b", "a", "b"]
    assert credit(teams, [0, 2, 4]) == (1, 2)
    assert credit(teams, [2, 2]) == (0, 1)  # a track clicked twice in one list counts once
    assert credit(teams, []) == (0, 0)
    assert (outcome(*credit(teams, [0, 2, 4])), outcome(1, 0), outcome(2, 2)) == ("b", "a", "tie")
    with pytest.raises(ValueError, match=r"\[5\] are outside the list of 5"):
        credit(teams, [5])


def test_sign_test_matches_scipy_binomtest():
    cases = [(k, n) for n in range(1, 41) for k in range(n + 1)] + [
        (480, 1000),
        (5270, 10_000),
        (3, 2000),
        (61_000, 120_000),
    ]
    for k, n in cases:
        assert sign_test(k, n) == pytest.approx(stats.binomtest(k, n, 0.5).pvalue, rel=1e-9, abs=1e-300), (k, n)
    ks, ns = np.array([c[0] for c in cases]), np.array([c[1] for c in cases])
    assert np.allclose(sign_test(ks, ns), [sign_test(k, n) for k, n in cases], rtol=1e-12)
    with pytest.raises(ValueError):
        sign_test(3, 2)


def test_bootstrap_shortcut_matches_resampling_users():
    """Drawing the resampled count as Binomial(n, share) is resampling n users with replacement."""
    rng = np.random.default_rng(3)
    prefers_b = np.r_[np.ones(70), np.zeros(50)]
    naive = [prefers_b[rng.integers(0, 120, 120)].mean() for _ in range(20_000)]
    lo, hi = bootstrap_share_interval(70, 120, 0.95, resamples=20_000, seed=4)
    assert lo == pytest.approx(np.quantile(naive, 0.025), abs=1.01 / 120)
    assert hi == pytest.approx(np.quantile(naive, 0.975), abs=1.01 / 120)


def test_bootstrap_interval_covers_the_true_share_in_about_95_percent_of_experiments():
    rng = np.random.default_rng(5)
    runs, covered = 600, 0
    for run in range(runs):
        wins = rng.binomial(200, 0.6)
        lo, hi = bootstrap_share_interval(wins, 200, 0.95, seed=run)
        covered += lo <= 0.6 <= hi
    assert 0.92 <= covered / runs <= 0.975, covered / runs


def test_sign_test_false_positive_rate_with_no_difference_is_near_alpha():
    """A/A: both rankers' credited clicks come from one distribution (heavy-tailed users, many ties)."""
    rng = np.random.default_rng(6)
    runs, hits = 2000, 0
    for _ in range(runs):
        rate = rng.gamma(0.8, 1.5, 400)
        hits += preference(rng.poisson(rate), rng.poisson(rate), alpha=0.05)["significant"]
    # the exact test is conservative (discrete), never liberal; s.e. of the rate is 0.5%
    assert 0.03 <= hits / runs <= 0.06, hits / runs


def test_preference_finds_the_better_ranker_and_stays_json_safe():
    rng = np.random.default_rng(7)
    rate = rng.gamma(1.0, 2.0, 800)
    result = preference(rng.poisson(rate), rng.poisson(rate * 1.3), names=("control", "treatment"))
    assert result["winner"] == "treatment" and result["significant"] and result["p_value"] < 0.01
    assert 0.5 < result["share_b_ci"][0] < result["share_b"] < result["share_b_ci"][1]
    assert result["prefer_a"] + result["prefer_b"] + result["ties"] == result["users"] == 800
    assert "treatment preferred by" in result["summary"]
    json.dumps(result, allow_nan=False)
    a, b = rng.poisson(rate), rng.poisson(rate * 1.1)
    assert preference(a, b, seed=1) == preference(a, b, seed=1)  # the bootstrap is seeded


def test_preference_without_any_preference_is_none_with_a_reason():
    for a, b in (([0, 0, 3], [0, 0, 3]), ([], [])):
        result = preference(a, b)
        assert result["p_value"] is None and result["share_b"] is None and result["share_b_ci"] is None
        assert result["winner"] is None and not result["significant"] and "no user prefers" in result["reason"]
        json.dumps(result, allow_nan=False)
    with pytest.raises(ValueError, match="one value per user"):
        preference([1, 2], [1])


def test_sign_test_plan_reaches_the_promised_power():
    users = users_for_sign_test(0.55, 0.6, alpha=0.05, power=0.8)
    decided = round(users * 0.6)
    critical = stats.binom.ppf(0.025, decided, 0.5)  # exact power of the sign test at the planned size
    power = stats.binom.cdf(critical - 1, decided, 0.55) + stats.binom.sf(decided - critical, decided, 0.55)
    assert 0.77 < power < 0.83, (users, power)


# --- the analysis of events -------------------------------------------------------------------


def experiment(**changes) -> Experiment:
    spec = {
        "id": "il",
        "name": "interleaving",
        "design": "interleaving",
        "min_sample_size": 100,
        "variants": [
            {"name": "control", "algorithm": "popularity", "weight": 0.5},
            {"name": "treatment", "model_alias": "champion", "weight": 0.5},
        ],
    }
    return Experiment.model_validate({**spec, **changes})


def interleaved_events(
    spec: Experiment, users=300, click=(0.1, 0.1), lists=3, seed=0, click_variant="control"
) -> pd.DataFrame:
    """Merged lists of two rankers with disjoint tracks (so the truth is known: the treatment's tracks
    are clicked with probability click[1]); every click carries ``click_variant`` as its own label."""
    rng = np.random.default_rng(seed)
    names = {"a": spec.variants[0].name, "b": spec.variants[1].name}
    rows = []
    when = pd.Timestamp("2024-03-01", tz="UTC")
    for u in range(users):
        ranking_a, ranking_b = list(rng.permutation(CATALOG[:15])), list(rng.permutation(CATALOG[15:]))
        for s in range(lists):
            request = f"r{u}-{s}"
            merged, teams = team_draft(ranking_a, ranking_b, 10, request_seed(spec.id, request))
            for pos, (track, team) in enumerate(zip(merged, teams)):
                rows.append((f"s{u}-{s}-{pos}", f"user{u}", track, "recommendation_shown", names[team], request, pos))
                if rng.random() < click[team == "b"]:
                    rows.append(
                        (f"c{u}-{s}-{pos}", f"user{u}", track, "recommendation_clicked", click_variant, request, pos)
                    )
    frame = pd.DataFrame(rows, columns=["event_id", "user_id", "track_id", "type", "variant", "request_id", "position"])
    return frame.assign(timestamp=when, experiment_id=spec.id)


def test_analysis_credits_clicks_by_the_shown_team_not_the_clicks_label():
    spec = experiment()
    events = interleaved_events(spec, click=(0.05, 0.15), click_variant="control")  # every click claims control
    result = analyse_interleaving(spec, events)
    assert result["verdict"] == SHIP and result["preference"]["winner"] == "treatment", result["reasons"]
    credited = result["clicks"]["credited"]
    assert credited["treatment"] > 2 * credited["control"] > 0 and result["clicks"]["not_matched"] == 0
    truth = events[events["type"] == "recommendation_clicked"]["track_id"].isin(CATALOG[15:]).sum()
    assert credited["treatment"] == truth
    assert result["lists"] == 900 and result["preference"]["users"] == 300
    json.dumps(result, allow_nan=False)


def test_analysis_finds_a_worse_treatment_and_no_difference():
    spec = experiment()
    assert analyse_interleaving(spec, interleaved_events(spec, click=(0.15, 0.05), seed=1))["verdict"] == DONT_SHIP
    same = analyse_interleaving(spec, interleaved_events(spec, click=(0.1, 0.1), seed=3))
    assert same["verdict"] == KEEP_RUNNING and same["preference"]["p_value"] > 0.05


def test_clicks_on_tracks_or_users_not_in_the_list_are_not_credited():
    spec = experiment()
    events = interleaved_events(spec, users=20, click=(0.0, 0.0))
    shown = events[events["type"] == "recommendation_shown"].iloc[0]
    stray = pd.DataFrame(
        [
            {**shown, "event_id": "x1", "type": "recommendation_clicked", "track_id": "not-shown"},
            {**shown, "event_id": "x2", "type": "recommendation_clicked", "user_id": "someone-else"},
            {**shown, "event_id": "x3", "type": "recommendation_clicked", "request_id": "other", "experiment_id": None},
        ]
    )
    result = analyse_interleaving(spec, pd.concat([events, stray], ignore_index=True))
    assert result["clicks"] == {"credited": {"control": 0, "treatment": 0}, "not_matched": 2}
    assert result["preference"]["p_value"] is None and result["verdict"] == KEEP_RUNNING
    assert any("2 clicks" in c for c in result["caveats"])


def test_analysis_refuses_events_that_form_no_merged_list():
    spec = experiment()
    events = interleaved_events(spec, users=5)
    with pytest.raises(ServedListError, match="names a variant that is not one of the experiment's.*names the ranker"):
        analyse_interleaving(spec, events.assign(variant="other"))
    with pytest.raises(ValueError, match="design 'ab'"):
        analyse_interleaving(experiment(design="ab"), events)


def test_lists_that_cannot_be_credited_are_left_out_and_named_not_fatal():
    """Issue 21 item 3: one list with a track shown twice (its team ambiguous) or naming a ranker the
    experiment does not have stopped the whole analysis; now those lists are set aside and named."""
    spec = experiment()
    events = interleaved_events(spec, users=300, click=(0.05, 0.15))
    shown = events[events["type"] == "recommendation_shown"]
    twice = shown[shown["request_id"] == "r0-0"].head(1)
    stranger = events.index[(events["request_id"] == "r1-0") & (events["type"] == "recommendation_shown")][:1]
    broken = pd.concat([events, twice], ignore_index=True)
    broken.loc[stranger, "variant"] = "other"
    result = analyse_interleaving(spec, broken)
    assert result["verdict"] == SHIP and result["lists"] == 900 - 2
    assert result["incomplete_lists"] == {
        "unknown_variant": {"lists": 1, "shown": 10, "examples": ["r1-0"]},
        "repeated_track": {"lists": 1, "shown": 11, "examples": ["r0-0"]},
    }
    [caveat] = [c for c in result["caveats"] if "left out" in c]
    assert (
        caveat.startswith("2 of 900 served lists left out of the preference")
        and "'r0-0'" in caveat
        and "'r1-0'" in caveat
    )
    assert result["clicks"]["not_matched"] == 0  # clicks on the lists set aside are not blamed on the client


def test_analysis_without_events_keeps_running_and_uses_the_analysis_verdicts():
    result = analyse_interleaving(experiment(), interleaved_events(experiment(), users=0))
    assert result["verdict"] == KEEP_RUNNING and result["lists"] == 0 and result["preference"]["p_value"] is None
    json.dumps(result, allow_nan=False)
    assert (SHIP, DONT_SHIP, KEEP_RUNNING) == (analysis.SHIP, analysis.DONT_SHIP, analysis.KEEP_RUNNING)
    small = analyse_interleaving(
        experiment(min_sample_size=1000), interleaved_events(experiment(), users=50, click=(0.0, 0.5))
    )
    assert small["verdict"] == KEEP_RUNNING and "below the minimum sample" in small["reasons"][0]


def test_cli_analyze_an_interleaving_log_where_one_rankers_tracks_are_clicked_3x_gives_ship(tmp_path):
    """Issue 21 item 2 (done-when): `echotune experiment analyze` sent an interleaving log through the
    A/B analysis, whose list validation refused a merged list (two variants under one request id)."""
    spec = experiment()
    events = interleaved_events(spec, users=300, click=(0.05, 0.15), seed=5)
    events_file, definition, out = tmp_path / "events.csv", tmp_path / "il.yaml", tmp_path / "out"
    events.to_csv(events_file, index=False)
    definition.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    catalog = tmp_path / "tracks.csv"
    pd.DataFrame(
        {"track_id": CATALOG, "energy": np.r_[np.full(15, 0.3), np.full(15, 0.8)], "tempo": np.linspace(80, 160, 30)}
    ).to_csv(catalog, index=False)
    args = [
        "experiment",
        "analyze",
        "--definition",
        str(definition),
        "--events",
        str(events_file),
        "--tracks",
        str(catalog),
        "--out",
        str(out),
    ]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    line = json.loads(run.stdout.strip().splitlines()[-1])
    assert line["verdict"] == SHIP and line["reasons"][0].startswith("significantly preferred: treatment preferred by")
    summary = json.loads(
        (out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"summary.json holds {c}")
    )
    assert list(summary)[:4] == ["experiment", "design", "dates", "verdict"] and summary["design"] == "interleaving"
    assert summary["preference"]["winner"] == "treatment" and summary["preference"]["p_value"] < 0.001
    lo, hi = summary["preference"]["share_b_ci"]
    assert 0.5 < lo <= summary["preference"]["share_b"] <= hi
    assert summary["lists"] == 900 and summary["incomplete_lists"] == {} and "nulls" in summary
    page = (out / "report.html").read_text()
    body = page.index("<body>")
    assert (
        body < page.index("Verdict: SHIP") < page.index('id="echotune-preference"') < page.index('<div id="root_', body)
    )
    assert (
        "tracks from treatment (current) vs from control (reference)" in page
    )  # Evidently's drift of what each ranker gave


def test_an_interleaving_summary_without_preference_says_why_each_null_is_null(tmp_path):
    from experiments.report import served_tracks, write_report

    spec = experiment()
    events = interleaved_events(spec, users=20, click=(0.0, 0.0))
    result = analysis.analyse(spec, events)
    summary_path, page = write_report(result, served_tracks(events, spec, None), tmp_path)
    summary = json.loads(summary_path.read_text())
    assert summary["verdict"] == KEEP_RUNNING and summary["preference"]["p_value"] is None
    for field in ("share_b", "share_b_ci", "p_value", "winner"):
        assert summary["nulls"][f"/preference/{field}"], field
    assert "Verdict: KEEP RUNNING" in page.read_text()
