"""Experiment analysis and the reports reviewers read: a JSON summary with the verdict and an
Evidently HTML report whose first screen states who won, by how much, and how sure we are."""

from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.definition import Experiment
from experiments.metrics import LOWER_IS_BETTER, RATIO_METRICS, user_metrics, variant_summary
from experiments.stats import Comparison, ratio_test


def analyse(experiment: Experiment, events: pd.DataFrame) -> dict[str, Any]:
    """Compare every treatment with the control on the primary, secondary and guardrail metrics and
    reach a verdict: ship, don't ship, or keep running."""
    per_user = user_metrics(events, experiment.id)
    summary = variant_summary(per_user)
    control = experiment.control.name
    metrics = [experiment.primary_metric, *experiment.secondary_metrics, *experiment.guardrail_metrics]
    comparisons: list[Comparison] = []
    for variant in experiment.variants[1:]:
        c, t = per_user[per_user["variant"] == control], per_user[per_user["variant"] == variant.name]
        for metric in dict.fromkeys(metrics):
            num, den = RATIO_METRICS[metric]
            if len(c) < 2 or len(t) < 2 or c[den].sum() == 0 or t[den].sum() == 0:
                continue
            test = ratio_test(metric, c[num], c[den], t[num], t[den], experiment.alpha)
            comparisons.append(dataclasses.replace(test, variant=variant.name))
    verdict, reasons = _verdict(experiment, summary, comparisons)
    return {
        "experiment": experiment.model_dump(mode="json"),
        "verdict": verdict,
        "reasons": reasons,
        "variants": summary.reset_index().to_dict(orient="records"),
        "comparisons": [c.as_dict() for c in comparisons],
    }


def _verdict(experiment: Experiment, summary: pd.DataFrame, comparisons: list[Comparison]) -> tuple[str, list[str]]:
    reasons = []
    small = summary[summary["users"] < experiment.min_sample_size]
    if len(small):
        reasons.append(f"variants {', '.join(small.index)} have fewer than {experiment.min_sample_size} users")
    primary = [c for c in comparisons if c.metric == experiment.primary_metric]
    breached = [
        c for c in comparisons
        if c.metric in experiment.guardrail_metrics and c.p_value < experiment.alpha
        and (c.absolute_lift > 0) == (c.metric in LOWER_IS_BETTER)
    ]  # fmt: skip
    for c in breached:
        reasons.append(f"guardrail {c.metric} got worse in {c.variant}: {c.control:.4f} -> {c.treatment:.4f} (p={c.p_value:.2g})")
    if breached:
        return "don't ship", reasons
    if len(small) or not primary:
        return "keep running", reasons or ["no primary metric comparison yet"]
    best = max(primary, key=lambda c: c.absolute_lift)
    better = best.absolute_lift > 0 if best.metric not in LOWER_IS_BETTER else best.absolute_lift < 0
    line = (f"{best.metric} {best.control:.4f} -> {best.treatment:.4f} in {best.variant} "
            f"({best.relative_lift:+.1%}, 95% CI {best.relative_ci[0]:+.1%} to {best.relative_ci[1]:+.1%}, p={best.p_value:.2g})")  # fmt: skip
    if best.p_value < experiment.alpha:
        return ("ship" if better else "don't ship"), [line, *reasons]
    return "keep running", [f"not significant yet: {line}", *reasons]


def _summary_html(result: dict[str, Any]) -> str:
    colour = {"ship": "#1a7f37", "don't ship": "#cf222e", "keep running": "#9a6700"}[result["verdict"]]
    exp = result["experiment"]
    rows = "".join(
        f"<tr><td>{html.escape(c['variant'])}</td><td>{c['metric']}</td><td>{c['control']:.4f}</td><td>{c['treatment']:.4f}</td>"
        f"<td>{c['relative_lift']:+.2%}</td><td>{c['relative_ci'][0]:+.2%} to {c['relative_ci'][1]:+.2%}</td><td>{c['p_value']:.3g}</td></tr>"
        for c in result["comparisons"]
    )
    variants = "".join(f"<tr><td>{html.escape(str(v['variant']))}</td><td>{v['users']}</td><td>{v['shown']}</td><td>{v['ctr']:.4f}</td></tr>" for v in result["variants"])
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in result["reasons"])
    return f"""
<section id="echotune-verdict" style="font-family:system-ui,sans-serif;max-width:1100px;margin:16px auto;padding:16px;border:2px solid {colour};border-radius:8px">
  <h1 style="margin:0 0 4px 0">{html.escape(exp['name'])} <small style="color:#555">({html.escape(exp['id'])})</small></h1>
  <p style="margin:0 0 8px 0;color:#555">{html.escape(exp.get('hypothesis') or '')}</p>
  <h2 style="color:{colour};margin:8px 0">Verdict: {result['verdict'].upper()}</h2>
  <ul>{reasons}</ul>
  <table border="1" cellpadding="4" style="border-collapse:collapse">
    <tr><th>variant</th><th>metric</th><th>control</th><th>treatment</th><th>relative lift</th><th>95% CI</th><th>p-value</th></tr>{rows}
  </table>
  <h3>Variants</h3>
  <table border="1" cellpadding="4" style="border-collapse:collapse"><tr><th>variant</th><th>users</th><th>exposures</th><th>CTR</th></tr>{variants}</table>
  <p style="color:#555">Below: Evidently's comparison of the tracks each variant served (control = reference).</p>
</section>"""


def write_report(result: dict[str, Any], served: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``report.html`` (verdict first, then Evidently's drift of the served
    tracks' audio features, control as reference). ``served``: one row per shown track with
    ``variant`` and audio feature columns."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(result, indent=2, default=_json_default))

    control = result["experiment"]["variants"][0]["name"]
    features = [c for c in served.columns if c not in {"variant", "track_id"}]
    definition = DataDefinition(numerical_columns=features)
    reference = Dataset.from_pandas(served.loc[served["variant"] == control, features], data_definition=definition)
    current = Dataset.from_pandas(served.loc[served["variant"] != control, features], data_definition=definition)
    snapshot = Report([DataDriftPreset()]).run(current, reference)
    page = snapshot.get_html_str(as_iframe=False)
    page = page.replace("<body>", "<body>" + _summary_html(result), 1)
    html_path = out_dir / "report.html"
    html_path.write_text(page)
    return summary_path, html_path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
