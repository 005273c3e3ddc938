"""The rollout's report, in the experiment reports' format: ``summary.json`` (strict JSON, verdict first)
and ``report.html`` whose first screen is the verdict and why, then the state (share, users per arm,
the candidate's errors and latency against their budgets), the guardrails at the latest look with their
always-valid intervals and bounds, and one row per decision taken, newest first."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from experiments.analysis import DONT_SHIP, KEEP_RUNNING, SHIP
from experiments.rollout import PROMOTED, ROLLED_BACK, RolloutState
from experiments.summary_json import write_summary

VERDICTS = {PROMOTED: SHIP, ROLLED_BACK: DONT_SHIP}
_COLOURS = {SHIP: "#1a7f37", DONT_SHIP: "#cf222e", KEEP_RUNNING: "#9a6700"}


def rollout_summary(state: RolloutState, decisions: list[dict]) -> dict[str, Any]:
    """The report's data: verdict (ship once promoted, don't ship once rolled back, else keep running),
    reasons, the state, the latest look and every decision (newest first)."""
    own = [d for d in decisions if d.get("experiment_id") == state.experiment_id]
    latest = next((d for d in own if d.get("guardrails")), {})
    return {
        "verdict": VERDICTS.get(state.status, KEEP_RUNNING),
        "reasons": [state.reason] if state.reason else [],
        "experiment": {"id": state.experiment_id, "design": "rollout"},
        "version": state.version,
        "champion": state.champion,
        "status": state.status,
        "share": state.share,
        "paused": state.paused,
        "users": latest.get("users", {}),
        "health": latest.get("health", {}),
        "guardrails": latest.get("guardrails", []),
        "decisions": own,
    }


def _pct(x) -> str:
    return "n/a" if x is None or x != x else f"{x:+.1%}"


def write_rollout_report(summary: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``report.html`` of a rollout into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = write_summary(summary, out_dir / "summary.json")
    verdict = summary["verdict"]
    e = html.escape
    health = summary["health"] or {}
    guardrails = "".join(
        f"<tr><td>{e(g['metric'])}</td><td>{g['champion']:.4g}</td><td>{g['candidate']:.4g}</td><td>{_pct(g['harm'])}</td>"
        f"<td>{_pct(g['harm_low'])} to {_pct(g['harm_high'])}</td><td>{g['margin']:.0%}</td>"
        f"<td>{'breached' if g['breached'] else 'non-inferior' if g['non_inferior'] else 'open'}</td></tr>"
        for g in summary["guardrails"]
    )
    rows = "".join(
        f"<tr><td>{e(d['at'])}</td><td>{e(d['decision'])}</td><td>{d['share']:g}</td>"
        f"<td>{e(', '.join(f'{k} {v:,}' for k, v in (d.get('users') or {}).items()))}</td>"
        f"<td>{e('; '.join(d['reasons']))}</td></tr>"
        for d in summary["decisions"]
    )
    p95 = health.get("p95_ms")
    page = f"""<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(summary["experiment"]["id"])}</title></head><body>
<h1 style="color:{_COLOURS[verdict]}">{e(verdict)}: rollout of version {e(summary["version"])} ({e(summary["status"])})</h1>
<ul>{"".join(f"<li>{e(r)}</li>" for r in summary["reasons"])}</ul>
<p>Candidate share {summary["share"]:g}{" (paused)" if summary["paused"] else ""}; champion version {e(summary["champion"])};
users {e(", ".join(f"{k} {v:,}" for k, v in (summary["users"] or {}).items()) or "none yet")}.
Candidate answers: {health.get("requests", 0):,}, error rate {health.get("error_rate", 0):.2%} (budget {health.get("max_error_rate", 0):.0%}),
P95 {"n/a" if p95 is None else f"{p95:g} ms"} (budget {health.get("max_p95_ms", 0):g} ms).</p>
<h2>Guardrails at the latest look (harm: + is worse; always-valid interval)</h2>
<table border=1><tr><th>metric</th><th>champion</th><th>candidate</th><th>harm</th><th>interval</th><th>margin</th><th>state</th></tr>{guardrails}</table>
<h2>Decisions, newest first</h2>
<table border=1><tr><th>at</th><th>decision</th><th>share after</th><th>users</th><th>why</th></tr>{rows}</table>
</body></html>"""
    html_path = out_dir / "report.html"
    html_path.write_text(page)
    return summary_path, html_path
