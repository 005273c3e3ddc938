"""The ADR's alert rules, tested the way Prometheus evaluates them: `promtool test rules` over
ops/prometheus/alerts_test.yml, whose series make each rule of the ``echotune-adr`` group fire after its
duration and stay quiet below its threshold or before its duration ends. promtool comes from PATH or
from Debian's package (`make test` puts it in .venv/bin); without it these tests skip, saying so."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROMETHEUS = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
# the ADR's four rules: threshold and duration of each (P95 budgets: recommendation, feature lookup,
# feedback processing, experiment assignment)
ADR_RULES = {
    "EchotuneRecommendationLatencyP95": ("> 0.2", "5m"),
    "EchotuneFeatureLookupLatencyP95": ("> 0.05", "5m"),
    "EchotuneFeedbackLatencyP95": ("> 0.1", "5m"),
    "EchotuneExperimentAssignmentLatencyP95": ("> 0.01", "5m"),
    "EchotuneApiErrorRate": ("> 0.01", "2m"),
    "EchotuneMemoryHigh": ("> 0.8", "10m"),
    "EchotuneFeedbackQueueDepth": ("> 1000", "1m"),
}


def promtool() -> str:
    found = shutil.which("promtool", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.skip(
            "no promtool: `make test` fetches it from Debian's prometheus package (ops/prometheus/install-promtool.sh)"
        )
    return found


def adr_group() -> dict[str, dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups if group["name"] == "echotune-adr" for rule in group["rules"]}


def test_the_adr_rules_have_its_thresholds_and_durations():
    rules = adr_group()
    assert set(rules) == set(ADR_RULES)
    for name, (threshold, duration) in ADR_RULES.items():
        assert re.sub(r"\s+", " ", rules[name]["expr"]).strip().endswith(threshold), name
        assert rules[name]["for"] == duration, name


def test_memory_is_measured_against_the_container_limit_not_a_constant():
    expr = adr_group()["EchotuneMemoryHigh"]["expr"]
    assert "echotune_memory_limit_bytes" in expr and "e9" not in expr


def test_every_adr_rule_is_tested_firing_and_quiet():
    cases = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    for name in ADR_RULES:
        mine = [c for c in checks if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"no test makes {name} fire"
        assert any(not c["exp_alerts"] for c in mine), f"no test keeps {name} quiet"


def test_the_rollback_rule_is_tested_firing_and_quiet():
    """Issue 24: every rollout decision is a metric and a rollback an alert."""
    cases = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    checks = [c for case in cases for c in case["alert_rule_test"] if c["alertname"] == "EchotuneRolloutRolledBack"]
    assert any(c["exp_alerts"] for c in checks) and any(not c["exp_alerts"] for c in checks)


def test_the_rules_load_and_pass_their_unit_tests():
    tool = promtool()
    checked = subprocess.run([tool, "check", "rules", "alerts.yml"], cwd=PROMETHEUS, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([tool, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS, capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_promtool_catches_a_rule_that_fires_too_early(tmp_path: Path):
    """The unit tests can fail: the latency rule with a 3-minute duration breaks them."""
    tool = promtool()
    text = (PROMETHEUS / "alerts.yml").read_text()
    rule = text.index("alert: EchotuneRecommendationLatencyP95")
    early = text[:rule] + text[rule:].replace("for: 5m", "for: 3m", 1)
    (tmp_path / "alerts.yml").write_text(early)
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path / "alerts_test.yml")
    tested = subprocess.run([tool, "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert tested.returncode != 0
    assert "EchotuneRecommendationLatencyP95" in tested.stdout + tested.stderr
