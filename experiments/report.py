"""The reports reviewers read: ``summary.json`` (the analysis, verdict first) and ``report.html``, whose
first screen states the verdict, the lifts with their intervals, the sample-ratio check, the dates and
the events left out of them, per treatment charts of the cumulative lift by day against the sequential
boundary and of the exposures per variant per day (:mod:`experiments.charts`), the guardrails and the
ranking quality per variant, followed by Evidently's comparison of each treatment with the
control: ranking quality of what each served (NDCG, precision, hit rate, MRR at k, one served list per
request id, clicks as relevance) and drift of the served tracks' audio features.

``summary.json`` is strict JSON (:mod:`experiments.summary_json`): a value that is undefined is written
as ``null`` and the top-level ``nulls`` map gives the reason for each, keyed by its JSON pointer.
Every number the HTML shows is in ``summary.json``: the Evidently figures are checked against the
analysis's ``ranking_quality`` before the page is written. Served lists left out of ranking quality (a
lost exposure, a track twice) are counted under ``incomplete_lists`` and named on the first screen.

An interleaving experiment's result (``design: interleaving``) is written by
:func:`experiments.interleaving_report.write_interleaving_report`: :func:`write_report` and
:func:`served_tracks` dispatch on the design."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.analysis import (
    analyse,  # noqa: F401  (re-exported: analyse + write_report is the API)
    events_in_dates,
)
from experiments.charts import daily_section
from experiments.definition import Experiment
from experiments.interleaving_analysis import merged_lists
from experiments.interleaving_report import write_interleaving_report
from experiments.ranking_quality import INCOMPLETE, check_served_lists, served_lists
from experiments.ranking_quality import METRICS as RANKING_METRICS
from experiments.summary_json import strict_summary, write_summary  # noqa: F401  (strict_summary re-exported)

AUDIO = ["danceability", "energy", "acousticness", "instrumentalness", "valence", "tempo", "loudness", "speechiness"]
_COLOURS = {"ship": "#1a7f37", "don't ship": "#cf222e", "keep running": "#9a6700"}


def served_tracks(events: pd.DataFrame, experiment: Experiment | str, tracks: pd.DataFrame | None) -> pd.DataFrame:
    """One row per track of the experiment's complete served lists (:func:`experiments.ranking_quality.served_lists`:
    variant, request, user, track, rank, clicked) with the track's audio features when the catalog has them.
    Given the :class:`Experiment` (not only its id), only events within its dates count, as in the analysis,
    and an interleaving experiment's rows are its usable merged lists (``variant`` = the contributing ranker)."""
    if isinstance(experiment, Experiment):
        events = events_in_dates(experiment, events)[0]
        shown = (
            merged_lists(experiment, events)[0]
            if experiment.design == "interleaving"
            else served_lists(events, experiment.id)
        )
    else:
        shown = served_lists(events, experiment)
    if tracks is not None:
        shown = shown.merge(tracks[["track_id", *[c for c in AUDIO if c in tracks]]], on="track_id", how="left")
    return shown


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The figures a run's metadata shows next to the verdict, by design: the primary metric's relative
    lift and its adjusted p-value (A/B), or the share of users preferring the treatment and the sign
    test's p-value (interleaving); NaN where there is no comparison yet."""
    nan = float("nan")
    if result.get("design") == "interleaving":
        pref = result["preference"]
        return {
            "share_preferring_treatment": nan if pref["share_b"] is None else float(pref["share_b"]),
            "preference_p_value": nan if pref["p_value"] is None else float(pref["p_value"]),
            "merged_lists": int(result["lists"]),
        }
    primary = result["primary"][0] if result["primary"] else None
    return {
        "primary_relative_lift": float(primary["relative_lift"]) if primary else nan,
        "primary_p_value": float(primary["adjusted_p_value"] or primary["p_value"]) if primary else nan,
        "sample_ratio_mismatch": bool(result["sample_ratio"]["mismatch"]),
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.2%}"


def _share(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


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
    srm_line = (
        ("MISMATCH" if srm["mismatch"] else "ok")
        + f" (chi-square p = {srm['p_value']:.3g}; users "
        + ", ".join(f"{html.escape(v)} {n:,} (expected {srm['expected'][v]:,.0f})" for v, n in srm["observed"].items())
        + ")"
    )
    guardrails = (
        "".join(
            f"<li><b>{html.escape(g['metric'])}</b> in {html.escape(g['variant'])}: {'BREACHED' if g['breached'] else 'held'} - {html.escape(g['reason'])}</li>"
            for g in result["guardrails"]
        )
        or "<li>none measured</li>"
    )
    power = result.get("power") or {}
    power_line = (
        f"{power['metric']} baseline {power['baseline']:.4f}; smallest detectable relative lift now {_pct(power.get('mde_at_current_size'))}; "
        f"users for a 5% lift: {power['users_for_5pct_lift']:,}"
        if power.get("users_for_5pct_lift")
        else "not enough data"
    )
    variants = "".join(
        f"<tr><td>{html.escape(str(v['variant']))}</td><td>{v['users']:,}</td><td>{v['shown']:,}</td><td>{v['ctr']:.4f}</td>"
        f"<td>{v['completion_rate']:.4f}</td><td>{v['skip_rate']:.4f}</td><td>{v['listening_minutes']:.1f}</td></tr>"
        for v in result["variants"]
    )
    ranking = result.get("ranking_quality") or {}
    k = next(iter(ranking.values()), {}).get("k")
    ranking_rows = "".join(
        f"<tr><td>{html.escape(variant)}</td><td>{q['lists']:,}</td><td>{q['lists_clicked']:,}</td>"
        + "".join(f"<td>{_share(q[f'{name}@{k}'])}</td>" for name in RANKING_METRICS)
        + "</tr>"
        for variant, q in ranking.items()
    )
    left_out = _incomplete_line(result.get("incomplete_lists") or {})
    ranking_header = (
        "<tr><th>variant</th><th>lists</th><th>lists with a click</th>"
        + "".join(f"<th>{label}@{k}</th>" for label in ("NDCG", "precision", "hit rate", "MRR"))
        + "</tr>"
    )
    header = "<tr><th>variant</th><th>metric</th><th>control</th><th>treatment</th><th>relative lift</th><th>95% CI</th><th>p (adjusted)</th><th>method</th></tr>"
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in result["reasons"])
    reasons += "".join(f"<li><b>Caveat:</b> {html.escape(c)}</li>" for c in result.get("caveats", []))
    table = 'border="1" cellpadding="4" style="border-collapse:collapse;margin:6px 0"'
    daily = "".join(daily_section(series) for series in result.get("daily", []) if series["days"])
    return f"""
<section id="echotune-verdict" style="font-family:system-ui,sans-serif;max-width:1150px;margin:16px auto;padding:16px;border:3px solid {colour};border-radius:8px">
  <h1 style="margin:0">{html.escape(exp["name"])} <small style="color:#555">({html.escape(exp["id"])})</small></h1>
  <p style="margin:4px 0 8px 0;color:#555">{html.escape(exp.get("hypothesis") or "")}</p>
  <h2 style="color:{colour};margin:8px 0">Verdict: {result["verdict"].upper()}</h2>
  <ul>{reasons}</ul>
  <p><b>Sample ratio:</b> {srm_line}</p>
  <p><b>Dates:</b> {_dates_line(result.get("dates") or {})}</p>
  <h3 style="margin:8px 0 0 0">Primary metric (group-sequential, Holm-adjusted{", CUPED" if result.get("cuped") else ""})</h3>
  <table {table}>{header}{_rows(result["primary"])}</table>
  {daily}
  <h3 style="margin:8px 0 0 0">Guardrails</h3><ul>{guardrails}</ul>
  <h3 style="margin:8px 0 0 0">Secondary metrics (Holm-adjusted)</h3>
  <table {table}>{header}{_rows(result["secondary"])}</table>
  <h3 style="margin:8px 0 0 0">Variants</h3>
  <table {table}><tr><th>variant</th><th>users</th><th>exposures</th><th>CTR</th><th>completion</th><th>skip</th><th>minutes/user</th></tr>{variants}</table>
  <h3 style="margin:8px 0 0 0">Ranking quality (per served list, clicks as relevance, mean over lists)</h3>
  <table id="echotune-ranking-quality" {table}>{ranking_header}{ranking_rows}</table>
  {left_out}
  <p><b>Power:</b> {power_line}</p>
  <p style="color:#555">Below: Evidently's comparison of each treatment (current) with the control (reference): ranking
  quality, where Evidently's "users" are served lists (request ids) and "no feedback users included" means a list without a
  click counts as 0, and drift of the served tracks' audio features.</p>
</section>"""


def _incomplete_line(incomplete: dict[str, dict]) -> str:
    """The lists left out of ranking quality, by reason, with example request ids (empty when none)."""
    if not incomplete:
        return ""
    items = "".join(
        f"<li>{found['shown'] if rule == 'no_request_id' else found['lists']:,} {'shown tracks' if rule == 'no_request_id' else 'lists'}: "
        f"{html.escape(INCOMPLETE[rule])}{' (e.g. ' + html.escape(', '.join(found['examples'])) + ')' if found['examples'] else ''}</li>"
        for rule, found in incomplete.items()
    )
    return f'<p id="echotune-incomplete-lists"><b>Left out of ranking quality (not complete rankings):</b></p><ul>{items}</ul>'


def _dates_line(dates: dict[str, Any]) -> str:
    left_out = dates.get("events_left_out") or {}
    span = f"from {dates.get('start') or 'the first event'} to {dates.get('end') or 'the latest event'}"
    span += " (end excluded)" if dates.get("end") else ""
    return (
        f"{html.escape(span)}; left out {left_out.get('before_start', 0):,} of the experiment's events dated before the start "
        f"and {left_out.get('after_end', 0):,} on or after the end"
    )


def write_report(result: dict[str, Any], served: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    """Write ``summary.json`` (strict JSON, see the module docstring) and ``report.html`` into
    ``out_dir``; returns their paths. ``served`` is :func:`served_tracks` of the analysed events.
    Raises ServedListError when ``served`` does not form lists, and ValueError when Evidently's ranking
    figures differ from the analysis's ``ranking_quality`` (the page would contradict the summary).
    An interleaving result goes to :func:`~experiments.interleaving_report.write_interleaving_report`."""
    from evidently.core.metric_types import render_widgets
    from evidently.legacy.renderers.html_widgets import group_widget

    if result.get("design") == "interleaving":
        return write_interleaving_report(
            result, served, out_dir, _COLOURS[result["verdict"]], _dates_line(result.get("dates") or {}), AUDIO
        )

    check_served_lists(served)
    lists = served.groupby("variant")["request_id"].nunique()
    for variant, quality in result["ranking_quality"].items():
        if int(lists.get(variant, 0)) != quality["lists"]:
            raise ValueError(
                f"served holds {int(lists.get(variant, 0)):,} lists of {variant}, the analysis counted {quality['lists']:,} "
                "within the experiment's dates: build it with served_tracks(events, experiment) (the Experiment, "
                "not its id) from the events given to analyse"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = write_summary(result, out_dir / "summary.json")
    control = result["experiment"]["variants"][0]["name"]
    k = result["ranking_quality"][control]["k"]
    groups = []  # one Evidently comparison per treatment: a pooled "current" would match no variant's figures
    for treatment in [v["name"] for v in result["experiment"]["variants"][1:]]:
        pair = served[served["variant"].isin([control, treatment])]
        if not ((pair["variant"] == control).any() and (pair["variant"] == treatment).any()):
            continue
        snapshot = ranking_snapshot(pair, control, treatment, k)
        shown = evidently_ranking_quality(snapshot, k)
        check_agreement({treatment: shown["current"], control: shown["reference"]}, result["ranking_quality"])
        model = snapshot.to_snapshot_model()
        groups.append(
            group_widget(
                title=f"{treatment} (current) vs {control} (reference)", widgets=model.widgets + model.tests_widgets
            )
        )
    html_path = out_dir / "report.html"
    if groups:
        page = render_widgets(groups, as_iframe=False).replace("<body>", "<body>" + summary_html(result), 1)
    else:  # nothing served yet: the summary alone
        page = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(result['experiment']['id'])}</title></head><body>{summary_html(result)}</body></html>"
    html_path.write_text(page)
    return summary_path, html_path


def ranking_snapshot(served: pd.DataFrame, control: str, treatment: str, k: int):
    """Evidently's run of ``treatment`` (current) against ``control`` (reference): ranking quality at
    ``k`` with one list per request id (lists without a click included), and drift of the audio features."""
    from evidently import DataDefinition, Dataset, Recsys, Report
    from evidently.presets import DataDriftPreset

    audio = [c for c in AUDIO if c in served and served[c].notna().any()]
    definition = DataDefinition(
        numerical_columns=["rank", "clicked", *audio],
        ranking=[
            Recsys(
                user_id="request_id",
                item_id="track_id",
                target="clicked",
                prediction="rank",
                recommendations_type="rank",
            )
        ],
    )
    metrics: list = [metric(k=k, no_feedback_users=True) for metric in _evidently_metrics().values()]
    if audio:
        metrics.append(DataDriftPreset(columns=audio))
    columns = ["request_id", "track_id", "rank", "clicked", *audio]
    current, reference = (
        Dataset.from_pandas(served.loc[served["variant"] == v, columns], data_definition=definition)
        for v in (treatment, control)
    )
    return Report(metrics).run(current, reference)


def evidently_ranking_quality(snapshot, k: int) -> dict[str, dict[str, float]]:
    """The ranking figures an Evidently snapshot shows, ``{"current"|"reference": {"ndcg@k": ...}}``."""
    out: dict[str, dict[str, float]] = {"current": {}, "reference": {}}
    for name, metric_type in _evidently_metrics().items():
        metric = metric_type(k=k, no_feedback_users=True)
        current = snapshot.context.get_metric_result(metric)
        reference = snapshot.context.get_reference_metric_result(metric.metric_id)
        # one row per k = 1, 2, ... in order; read by position, because Evidently 0.7.23 labels the rows
        # of NDCG and MRR one rank too high (its series start at 1 and it adds 1 again)
        out["current"][f"{name}@{k}"] = float(current.value["value"].iloc[k - 1])
        out["reference"][f"{name}@{k}"] = float(reference.value["value"].iloc[k - 1])
    return out


def check_agreement(
    shown: dict[str, dict[str, float]], ranking_quality: dict[str, dict[str, Any]], tolerance: float = 1e-6
) -> None:
    """ValueError unless every figure in ``shown`` (variant -> {"ndcg@k": ...}) lies in [0, 1] and
    equals the analysis's value for that variant within ``tolerance``."""
    for variant, figures in shown.items():
        for key, value in figures.items():
            ours = ranking_quality[variant][key]
            if not 0.0 <= value <= 1.0 or not abs(value - ours) <= tolerance:
                raise ValueError(
                    f"Evidently shows {key} = {value:.6f} for {variant}, the analysis computed {ours:.6f} per served list; "
                    "the report would contradict summary.json: check the ranking definition (one list per request id)"
                )


def _evidently_metrics() -> dict[str, type]:
    from evidently.metrics import MRR, NDCG, HitRate, PrecisionTopK

    return {"ndcg": NDCG, "precision": PrecisionTopK, "hit_rate": HitRate, "mrr": MRR}
