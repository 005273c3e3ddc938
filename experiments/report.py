"""The reports reviewers read: ``summary.json`` (the analysis, verdict first) and ``report.html``, whose
first screen states the verdict, the lifts with their intervals, the sample-ratio check and the
guardrails, followed by Evidently's comparison of the variants: ranking quality of what each served
(NDCG, precision, hit rate, MRR at k, clicks as relevance) and drift of the served tracks' audio features."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.analysis import analyse  # noqa: F401  (re-exported: analyse + write_report is the API)

AUDIO = ["danceability", "energy", "acousticness", "instrumentalness", "valence", "tempo", "loudness", "speechiness"]
_COLOURS = {"ship": "#1a7f37", "don't ship": "#cf222e", "keep running": "#9a6700"}


def served_tracks(events: pd.DataFrame, experiment_id: str, tracks: pd.DataFrame | None) -> pd.DataFrame:
    """One row per track shown in the experiment: variant, user, track, rank (position + 1), whether it
    was clicked, and the track's audio features (when the catalog has them)."""
    ev = events[events["experiment_id"] == experiment_id]
    shown = ev[ev["type"] == "recommendation_shown"][["variant", "user_id", "track_id", "position", "request_id"]].copy()
    clicks = ev[ev["type"] == "recommendation_clicked"][["request_id", "track_id"]].drop_duplicates().assign(target=1)
    shown = shown.merge(clicks, on=["request_id", "track_id"], how="left")
    shown["target"] = shown["target"].fillna(0).astype(int)
    shown["rank"] = pd.to_numeric(shown["position"], errors="coerce").fillna(0).astype(int) + 1
    if tracks is not None:
        shown = shown.merge(tracks[["track_id", *[c for c in AUDIO if c in tracks]]], on="track_id", how="left")
    return shown.drop(columns=["position"])


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.2%}"


def _rows(comparisons: list[dict]) -> str:
    out = []
    for c in comparisons:
        p = c.get("adjusted_p_value") if c.get("adjusted_p_value") is not None else c["p_value"]
        out.append(
            f"<tr><td>{html.escape(c['variant'])}</td><td>{c['metric']}</td><td>{c['control']:.4f}</td><td>{c['treatment']:.4f}</td>"
            f"<td>{_pct(c['relative_lift'])}</td><td>{_pct(c['relative_ci'][0])} to {_pct(c['relative_ci'][1])}</td>"
            f"<td>{p:.3g}</td><td>{html.escape(c.get('method') or '')}</td></tr>"
        )
    return "".join(out)


def summary_html(result: dict[str, Any]) -> str:
    """The first screen: verdict, reasons, lifts with intervals, sample ratio, guardrails, power."""
    colour = _COLOURS[result["verdict"]]
    exp = result["experiment"]
    srm = result["sample_ratio"]
    srm_line = ("MISMATCH" if srm["mismatch"] else "ok") + f" (chi-square p = {srm['p_value']:.3g}; users " + ", ".join(
        f"{html.escape(v)} {n:,} (expected {srm['expected'][v]:,.0f})" for v, n in srm["observed"].items()) + ")"  # fmt: skip
    guardrails = "".join(
        f"<li><b>{html.escape(g['metric'])}</b> in {html.escape(g['variant'])}: {'BREACHED' if g['breached'] else 'held'} - {html.escape(g['reason'])}</li>"
        for g in result["guardrails"]
    ) or "<li>none measured</li>"
    power = result.get("power") or {}
    power_line = (
        f"{power['metric']} baseline {power['baseline']:.4f}; smallest detectable relative lift now {_pct(power.get('mde_at_current_size'))}; "
        f"users for a 5% lift: {power['users_for_5pct_lift']:,}" if power.get("users_for_5pct_lift") else "not enough data"
    )
    variants = "".join(
        f"<tr><td>{html.escape(str(v['variant']))}</td><td>{v['users']:,}</td><td>{v['shown']:,}</td><td>{v['ctr']:.4f}</td>"
        f"<td>{v['completion_rate']:.4f}</td><td>{v['skip_rate']:.4f}</td><td>{v['listening_minutes']:.1f}</td></tr>"
        for v in result["variants"]
    )
    header = "<tr><th>variant</th><th>metric</th><th>control</th><th>treatment</th><th>relative lift</th><th>95% CI</th><th>p (adjusted)</th><th>method</th></tr>"
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in result["reasons"])
    reasons += "".join(f"<li><b>Caveat:</b> {html.escape(c)}</li>" for c in result.get("caveats", []))
    table = 'border="1" cellpadding="4" style="border-collapse:collapse;margin:6px 0"'
    return f"""
<section id="echotune-verdict" style="font-family:system-ui,sans-serif;max-width:1150px;margin:16px auto;padding:16px;border:3px solid {colour};border-radius:8px">
  <h1 style="margin:0">{html.escape(exp['name'])} <small style="color:#555">({html.escape(exp['id'])})</small></h1>
  <p style="margin:4px 0 8px 0;color:#555">{html.escape(exp.get('hypothesis') or '')}</p>
  <h2 style="color:{colour};margin:8px 0">Verdict: {result['verdict'].upper()}</h2>
  <ul>{reasons}</ul>
  <p><b>Sample ratio:</b> {srm_line}</p>
  <h3 style="margin:8px 0 0 0">Primary metric (group-sequential, Holm-adjusted{', CUPED' if result.get('cuped') else ''})</h3>
  <table {table}>{header}{_rows(result['primary'])}</table>
  <h3 style="margin:8px 0 0 0">Guardrails</h3><ul>{guardrails}</ul>
  <h3 style="margin:8px 0 0 0">Secondary metrics (Holm-adjusted)</h3>
  <table {table}>{header}{_rows(result['secondary'])}</table>
  <h3 style="margin:8px 0 0 0">Variants</h3>
  <table {table}><tr><th>variant</th><th>users</th><th>exposures</th><th>CTR</th><th>completion</th><th>skip</th><th>minutes/user</th></tr>{variants}</table>
  <p><b>Power:</b> {power_line}</p>
  <p style="color:#555">Below: Evidently's comparison of what the variants served (control = reference): ranking quality
  with clicks as relevance, and drift of the served tracks' audio features.</p>
</section>"""


def write_report(result: dict[str, Any], served: pd.DataFrame, out_dir: Path, k: int = 10) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``report.html`` into ``out_dir``; returns their paths."""
    from evidently import DataDefinition, Dataset, Recsys, Report
    from evidently.metrics import MRR, NDCG, HitRate, PrecisionTopK
    from evidently.presets import DataDriftPreset

    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(result, indent=2, default=_json_default))
    control = result["experiment"]["variants"][0]["name"]
    audio = [c for c in AUDIO if c in served and served[c].notna().any()]
    definition = DataDefinition(
        numerical_columns=["rank", "target", *audio],
        ranking=[Recsys(user_id="user_id", item_id="track_id", target="target", prediction="rank", recommendations_type="rank")],
    )
    k = max(1, min(k, int(served["rank"].max()) if len(served) else 1))  # Evidently needs every rank up to k
    metrics: list = [NDCG(k=k), PrecisionTopK(k=k), HitRate(k=k), MRR(k=k)]
    if audio:
        metrics.append(DataDriftPreset(columns=audio))
    reference, current = served[served["variant"] == control], served[served["variant"] != control]
    html_path = out_dir / "report.html"
    if len(reference) and len(current):
        columns = ["user_id", "track_id", "rank", "target", *audio]
        snapshot = Report(metrics).run(
            Dataset.from_pandas(current[columns], data_definition=definition), Dataset.from_pandas(reference[columns], data_definition=definition)
        )
        page = snapshot.get_html_str(as_iframe=False).replace("<body>", "<body>" + summary_html(result), 1)
    else:  # nothing served yet: the summary alone
        page = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(result['experiment']['id'])}</title></head><body>{summary_html(result)}</body></html>"
    html_path.write_text(page)
    return summary_path, html_path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
