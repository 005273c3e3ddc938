"""The report of an interleaving experiment: ``summary.json`` (strict JSON, :mod:`experiments.summary_json`)
and ``report.html``, whose first screen states the verdict and its reasons, then the per-user preference
(users preferring each ranker, ties, the treatment's share with its bootstrap interval, the sign test),
the impressions each ranker won, the credited clicks and the lists left out; below it, Evidently's drift
of the audio features of the tracks each ranker contributed to the merged lists (when the catalog has them).

There is no ranking-quality section: in a merged list neither ranker owns the ranks, so NDCG of one
ranker's list is not what was served. The A/B report is :func:`experiments.report.write_report`, which
dispatches here on the result's ``design``."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.summary_json import write_summary


def _share(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def interleaving_html(result: dict[str, Any], colour: str, dates_line: str) -> str:
    """The first screen of an interleaving report (``result`` from
    :func:`experiments.analysis.analyse` of an interleaving experiment); ``colour`` marks the verdict."""
    exp, pref = result["experiment"], result["preference"]
    a, b = result["rankers"]["a"], result["rankers"]["b"]
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in result["reasons"])
    reasons += "".join(f"<li><b>Caveat:</b> {html.escape(c)}</li>" for c in result.get("caveats", []))
    ci = pref.get("share_b_ci")
    interval = f"{_share(ci[0])} to {_share(ci[1])}" if ci else "n/a"
    p = "n/a" if pref.get("p_value") is None else f"{pref['p_value']:.3g}"
    table = 'border="1" cellpadding="4" style="border-collapse:collapse;margin:6px 0"'
    won, credited = result["impressions"]["won"], result["clicks"]["credited"]
    return f"""
<section id="echotune-verdict" style="font-family:system-ui,sans-serif;max-width:1150px;margin:16px auto;padding:16px;border:3px solid {colour};border-radius:8px">
  <h1 style="margin:0">{html.escape(exp["name"])} <small style="color:#555">({html.escape(exp["id"])}, interleaving)</small></h1>
  <p style="margin:4px 0 8px 0;color:#555">{html.escape(exp.get("hypothesis") or "")}</p>
  <h2 style="color:{colour};margin:8px 0">Verdict: {result["verdict"].upper()}</h2>
  <ul>{reasons}</ul>
  <p><b>Dates:</b> {dates_line}</p>
  <h3 style="margin:8px 0 0 0">Preference per user (sign test over users with a preference)</h3>
  <table id="echotune-preference" {table}>
    <tr><th>users</th><th>prefer {html.escape(a)}</th><th>prefer {html.escape(b)}</th><th>ties</th>
        <th>share preferring {html.escape(b)}</th><th>{1 - pref["alpha"]:.0%} interval</th><th>p</th><th>winner</th></tr>
    <tr><td>{pref["users"]:,}</td><td>{pref["prefer_a"]:,}</td><td>{pref["prefer_b"]:,}</td><td>{pref["ties"]:,}</td>
        <td>{_share(pref.get("share_b"))}</td><td>{interval}</td><td>{p}</td><td>{html.escape(pref.get("winner") or "none")}</td></tr>
  </table>
  <p style="color:#555">{html.escape(pref["method"])}</p>
  <h3 style="margin:8px 0 0 0">Merged lists</h3>
  <table {table}><tr><th>lists</th><th>with a click</th><th>won by {html.escape(a)}</th><th>won by {html.escape(b)}</th><th>tied</th>
    <th>clicks credited to {html.escape(a)}</th><th>to {html.escape(b)}</th><th>clicks not matched</th></tr>
    <tr><td>{result["lists"]:,}</td><td>{result["impressions"]["with_clicks"]:,}</td><td>{won[a]:,}</td><td>{won[b]:,}</td>
    <td>{result["impressions"]["tied"]:,}</td><td>{credited[a]:,}</td><td>{credited[b]:,}</td><td>{result["clicks"]["not_matched"]:,}</td></tr></table>
  <p style="color:#555">Below: Evidently's drift of the audio features of the tracks {html.escape(b)} (current) and
  {html.escape(a)} (reference) contributed to the merged lists.</p>
</section>"""


def write_interleaving_report(
    result: dict[str, Any], served: pd.DataFrame, out_dir: Path, colour: str, dates_line: str, audio: list[str]
) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``report.html`` of an interleaving experiment into ``out_dir``; returns
    their paths. ``served`` is :func:`experiments.report.served_tracks` of the analysed events (the
    usable merged lists, ``variant`` = the ranker that contributed each track, with the ``audio``
    columns the catalog has). ValueError when it holds another number of lists than the analysis."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.core.metric_types import render_widgets
    from evidently.legacy.renderers.html_widgets import group_widget
    from evidently.presets import DataDriftPreset

    if served["request_id"].nunique() != result["lists"]:
        raise ValueError(
            f"served holds {served['request_id'].nunique():,} merged lists, the analysis counted {result['lists']:,}: build it "
            "with served_tracks(events, experiment) (the Experiment, not its id) from the events given to analyse"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = write_summary(result, out_dir / "summary.json")
    first_screen = interleaving_html(result, colour, dates_line)
    a, b = result["rankers"]["a"], result["rankers"]["b"]
    columns = [c for c in audio if c in served and served[c].notna().any()]
    by_ranker = {name: served.loc[served["variant"] == name, columns] for name in (a, b)}
    if columns and all(len(frame) for frame in by_ranker.values()):
        definition = DataDefinition(numerical_columns=columns)
        current, reference = (Dataset.from_pandas(by_ranker[name], data_definition=definition) for name in (b, a))
        model = Report([DataDriftPreset(columns=columns)]).run(current, reference).to_snapshot_model()
        group = group_widget(
            title=f"tracks from {b} (current) vs from {a} (reference)", widgets=model.widgets + model.tests_widgets
        )
        page = render_widgets([group], as_iframe=False).replace("<body>", "<body>" + first_screen, 1)
    else:  # no audio features, or a ranker contributed nothing yet: the summary alone
        page = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(result['experiment']['id'])}</title></head><body>{first_screen}</body></html>"
    html_path = out_dir / "report.html"
    html_path.write_text(page)
    return summary_path, html_path
