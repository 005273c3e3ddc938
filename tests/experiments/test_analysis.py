"""The analysis end to end on events whose truth is known: a real lift, no lift, a broken split, a
harmful treatment; and the offline CLI."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from echotune.cli import main
from experiments.analysis import DONT_SHIP, KEEP_RUNNING, SHIP, analyse, caveats
from experiments.assignment import Assigner
from experiments.definition import Experiment
from experiments.report import served_tracks, summary_html, write_report

TRACK = "4uLU6hMCjMI75M1A2tKUQC"
TRACKS = [TRACK[:-1] + c for c in "ABCDEFGHIJ"]  # one list: ten distinct tracks


def experiment(**changes) -> Experiment:
    spec = {"id": "exp", "name": "test", "min_sample_size": 200, "secondary_metrics": ["completion_rate"],
            "variants": [{"name": "control", "algorithm": "popularity", "weight": 0.5},
                         {"name": "treatment", "model_alias": "champion", "weight": 0.5}]}  # fmt: skip
    return Experiment.model_validate({**spec, **changes})


def simulate(spec: Experiment, n_users=3000, ctr=(0.10, 0.10), skip=(0.3, 0.3), force_variant=None, seed=0, days=5) -> pd.DataFrame:
    """Shown/clicked/completed/skipped events for users assigned by the real assigner."""
    rng = np.random.default_rng(seed)
    assigner = Assigner(spec)
    rows = []
    start = pd.Timestamp("2024-03-01", tz="UTC")
    for u in range(n_users):
        user = f"user{u}"
        variant = force_variant(u) if force_variant else assigner.variant(user)
        arm = [v.name for v in spec.variants].index(variant)
        when = start + pd.Timedelta(days=int(rng.integers(days)), seconds=int(rng.integers(86_400)))
        # pre-period activity correlated with engagement: CUPED's covariate
        taste = rng.gamma(2.0, 0.5)
        for i in range(int(rng.poisson(3 * taste))):
            rows.append((f"pre-{u}-{i}", user, TRACK, "recommendation_clicked", when - pd.Timedelta(days=10), None, None, None, None, None))
        for s in range(int(rng.integers(1, 4))):
            request = f"r{u}-{s}"
            for pos in range(10):
                track = TRACKS[pos]
                rows.append((f"s{u}-{s}-{pos}", user, track, "recommendation_shown", when, None, spec.id, variant, request, pos))
                if rng.random() < ctr[arm] * min(2.5, taste):
                    rows.append((f"c{u}-{s}-{pos}", user, track, "recommendation_clicked", when, None, spec.id, variant, request, pos))
                    kind = "track_skipped" if rng.random() < skip[arm] else "track_completed"
                    rows.append((f"t{u}-{s}-{pos}", user, track, kind, when, 100_000, spec.id, variant, request, pos))
    frame = pd.DataFrame(rows, columns=["event_id", "user_id", "track_id", "type", "timestamp", "ms_played", "experiment_id", "variant", "request_id", "position"])
    frame["rating"], frame["algorithm"], frame["model_version"] = None, None, None
    return frame


def test_a_real_lift_ships_with_an_interval_that_excludes_zero():
    spec = experiment()
    result = analyse(spec, simulate(spec, ctr=(0.10, 0.12)))
    assert result["verdict"] == SHIP, result["reasons"]
    primary = result["primary"][0]
    assert primary["relative_ci"][0] > 0 and 0.1 < primary["relative_lift"] < 0.3
    assert result["cuped"] and "cuped" in primary["method"].lower()
    assert not result["sample_ratio"]["mismatch"]
    assert result["secondary"][0]["adjusted_p_value"] is not None
    assert result["power"]["users_for_5pct_lift"] > 0


def test_no_lift_keeps_running():
    spec = experiment()
    result = analyse(spec, simulate(spec, ctr=(0.10, 0.10), seed=3))
    assert result["verdict"] == KEEP_RUNNING, result["reasons"]


def test_sample_ratio_mismatch_blocks_any_verdict():
    spec = experiment()
    lopsided = simulate(spec, ctr=(0.10, 0.14), force_variant=lambda u: "control" if u % 100 < 54 else "treatment", n_users=20_000, days=2)
    result = analyse(spec, lopsided)
    assert result["sample_ratio"]["mismatch"] and result["verdict"] == DONT_SHIP
    assert "sample ratio mismatch" in result["reasons"][0]


def test_a_breached_guardrail_blocks_a_winner():
    spec = experiment()
    result = analyse(spec, simulate(spec, ctr=(0.10, 0.13), skip=(0.30, 0.45)))
    assert result["verdict"] == DONT_SHIP
    assert any("skip_rate" in r for r in result["reasons"])


def test_too_few_users_keeps_running():
    spec = experiment(min_sample_size=5000, guardrail_metrics=[])  # (a guardrail may still stop it early: tested above)
    assert analyse(spec, simulate(spec, ctr=(0.10, 0.14)))["verdict"] == KEEP_RUNNING


def test_a_challenger_without_online_learning_is_flagged_as_a_caveat():
    assert caveats(experiment()) == []  # popularity vs champion: nothing to flag
    challenger = experiment(variants=[{"name": "control", "model_alias": "champion", "weight": 0.5},
                                      {"name": "treatment", "model_alias": "challenger", "weight": 0.5}])  # fmt: skip
    [caveat] = caveats(challenger)
    assert "treatment serves model alias 'challenger'" in caveat and "favours control" in caveat
    pinned = experiment(variants=[{"name": "control", "model_version": "3", "weight": 0.5},
                                  {"name": "treatment", "model_version": "4", "weight": 0.5}])  # fmt: skip
    assert caveats(pinned) == []  # neither learns online: a fair comparison
    result = analyse(challenger, simulate(challenger, n_users=400))
    assert result["caveats"] == [caveat]
    first_screen = summary_html(result)
    assert first_screen.index("Caveat:") < first_screen.index("Sample ratio")


def test_report_puts_the_verdict_first(tmp_path):
    spec = experiment()
    events = simulate(spec, ctr=(0.10, 0.12))
    tracks = pd.DataFrame({"track_id": TRACKS, "energy": np.linspace(0.2, 0.8, 10), "tempo": np.linspace(90.0, 150.0, 10)})
    summary, page = write_report(analyse(spec, events), served_tracks(events, spec.id, tracks), tmp_path)
    text = page.read_text()
    assert text.index('id="echotune-verdict"') < text.index("<div id=\"root_", text.index("<body>"))
    assert "Verdict: SHIP" in text and "Sample ratio:</b> ok" in text
    assert json.loads(summary.read_text())["verdict"] == SHIP


@pytest.mark.slow
def test_cli_analyze_reruns_an_experiment_offline(tmp_path):
    spec = experiment()
    events = simulate(spec, ctr=(0.10, 0.12))
    events_file = tmp_path / "events.csv"
    events.to_csv(events_file, index=False)
    definition = tmp_path / "exp.yaml"
    import yaml

    definition.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    result = CliRunner().invoke(main, ["experiment", "analyze", "--definition", str(definition), "--events", str(events_file), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip().splitlines()[-1])
    assert line["verdict"] == SHIP and (tmp_path / "out" / "report.html").exists() and (tmp_path / "out" / "summary.json").exists()
