"""The report's daily charts as inline SVG, built as plain strings: no JavaScript and no external assets,
so they show under the report's Content-Security-Policy and in any browser or mail client.

Input is one treatment's daily series (:func:`experiments.daily.daily_series`): the cumulative relative
lift with its repeated confidence interval as a band and the group-sequential boundary as dashed lines
(the lift crosses them on the day the design rejects), and the exposures per variant per day as bars
and a table. Each point and bar carries its figures in a ``<title>`` (the browser's tooltip).
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

WIDTH, HEIGHT = 720, 270
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 34, 46
LIFT, BOUNDARY, AXIS, GRID = "#0969da", "#cf222e", "#57606a", "#d0d7de"
VARIANT_COLOURS = ("#8c959f", "#0969da", "#1a7f37", "#9a6700", "#8250df")
FONT = 'font-family="system-ui,sans-serif" font-size="11"'


def lift_chart(series: dict[str, Any]) -> str:
    """SVG of the cumulative relative lift by day (one ``<circle class="lift-point">`` per day with a
    comparison), its repeated confidence interval as a band and the sequential boundary as dashed lines.
    Values far outside the last day's range (early, wide intervals) are clipped to the plot."""
    days = series["days"]
    lifts = [_finite(d["relative_lift"]) for d in days]
    lows, highs = ([_finite((d["relative_ci"] or (None, None))[i]) for d in days] for i in (0, 1))
    b_lows, b_highs = ([_finite((d["boundary_lift"] or (None, None))[i]) for d in days] for i in (0, 1))
    judged = [i for i, v in enumerate(lifts) if v is not None]
    last = judged[-1] if judged else None
    core = [0.0, *(v for v in lifts if v is not None)]
    if last is not None:
        core += [v for v in (lows[last], highs[last], b_lows[last], b_highs[last]) if v is not None]
    every = [v for values in (lifts, lows, highs, b_lows, b_highs) for v in values if v is not None] + [0.0]
    pad = max(0.5 * (max(core) - min(core)), 0.02)
    lo, hi = max(min(every), min(core) - pad), min(max(every), max(core) + pad)
    ticks = _ticks(lo, hi)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    x, y = _x_scale(len(days)), _y_scale(lo, hi)
    clip = f"echotune-lift-clip-{escape(series['variant'])}"

    parts = [_y_axis(ticks, y, lambda v: f"{v:+.0%}" if abs(hi - lo) >= 0.05 else f"{v:+.1%}"), _x_axis(days, x)]
    parts.append(
        f'<clipPath id="{clip}"><rect x="{LEFT}" y="{TOP}" width="{_plot_width()}" height="{_plot_height()}"/></clipPath>'
    )
    body = []
    for run in _runs([i for i in range(len(days)) if lows[i] is not None and highs[i] is not None]):
        outline = [(x(i), y(highs[i])) for i in run] + [(x(i), y(lows[i])) for i in reversed(run)]
        body.append(
            f'<polygon class="lift-interval" points="{_points(outline)}" fill="{LIFT}" fill-opacity="0.15" stroke="none"/>'
        )
    for bound in (b_lows, b_highs):
        for run in _runs([i for i in range(len(days)) if bound[i] is not None]):
            body.append(
                f'<polyline class="boundary" points="{_points([(x(i), y(bound[i])) for i in run])}" fill="none" '
                f'stroke="{BOUNDARY}" stroke-width="1.5" stroke-dasharray="5 3"/>'
            )
    body.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(0.0):.1f}" y2="{y(0.0):.1f}" stroke="{AXIS}" stroke-width="1"/>'
    )
    for run in _runs(judged):
        body.append(
            f'<polyline points="{_points([(x(i), y(lifts[i])) for i in run])}" fill="none" stroke="{LIFT}" stroke-width="2"/>'
        )
    for i in judged:
        d = days[i]
        tip = (
            f"{d['day']}: lift {_pct(d['relative_lift'])}, interval {_pct(lows[i])} to {_pct(highs[i])}, boundary "
            f"±{_pct(b_highs[i], sign=False)} (|z| {abs(d['z']):.2f} vs {d['z_boundary']:.2f}{', crossed' if d['crossed'] else ''}); "
            f"{d['users']:,} users so far"
        )
        body.append(
            f'<circle class="lift-point" cx="{x(i):.1f}" cy="{y(lifts[i]):.1f}" r="3.5" fill="{LIFT}"><title>{escape(tip)}</title></circle>'
        )
    parts.append(f'<g clip-path="url(#{clip})">{"".join(body)}</g>')
    legend = [
        ("band", LIFT, f"cumulative lift and its {1 - series['alpha']:.0%} repeated confidence interval"),
        ("dash", BOUNDARY, "sequential boundary (lift needed to stop)"),
    ]
    title = f"Cumulative relative lift of {series['metric']}, {series['variant']} vs {series['control']}, by day"
    y_label = f"relative lift of {series['metric']} (%)"
    return _svg(title, parts, legend, y_label)


def exposures_chart(series: dict[str, Any]) -> str:
    """SVG bars of recommendation_shown events per variant per day (``<rect class="exposure-bar">``),
    each bar's tooltip also giving the distinct users shown a list that day."""
    days, variants = series["days"], [series["control"], series["variant"]]
    top = max([d["shown"][v] for d in days for v in variants] + [1])
    ticks = _ticks(0.0, float(top), integers=True)
    x, y = _x_scale(len(days)), _y_scale(0.0, max(float(top), ticks[-1]))
    slot = _plot_width() / max(len(days), 1)
    bar = min(slot * 0.8 / len(variants), 40.0)
    parts = [_y_axis(ticks, y, lambda v: f"{v:,.0f}"), _x_axis(days, x)]
    for i, d in enumerate(days):
        for j, variant in enumerate(variants):
            left = x(i) - bar * len(variants) / 2 + j * bar
            tip = f"{variant} on {d['day']}: {d['shown'][variant]:,} tracks shown to {d['exposed_users'][variant]:,} users"
            parts.append(
                f'<rect class="exposure-bar" x="{left:.1f}" y="{y(d["shown"][variant]):.1f}" width="{bar:.1f}" '
                f'height="{y(0.0) - y(d["shown"][variant]):.1f}" fill="{_colour(j)}"><title>{escape(tip)}</title></rect>'
            )
    legend = [("box", _colour(j), v) for j, v in enumerate(variants)]
    return _svg(
        f"Exposures per day: recommendation_shown events, {variants[1]} and {variants[0]}",
        parts,
        legend,
        "tracks shown per day",
    )


def exposures_table(series: dict[str, Any]) -> str:
    """HTML table, one column per day: tracks shown and distinct users shown a list, per variant."""
    days, variants = series["days"], [series["control"], series["variant"]]
    head = "<tr><th>variant</th><th>per day</th>" + "".join(f"<th>{escape(d['day'][5:])}</th>" for d in days) + "</tr>"
    rows = "".join(
        f"<tr><td>{escape(v)}</td><td>{label}</td>" + "".join(f"<td>{d[key][v]:,}</td>" for d in days) + "</tr>"
        for v in variants
        for key, label in (("shown", "tracks shown"), ("exposed_users", "users"))
    )
    return f'<table class="exposures" border="1" cellpadding="3" style="border-collapse:collapse;font-size:12px">{head}{rows}</table>'


def daily_section(series: dict[str, Any]) -> str:
    """One treatment's charts and exposure table for the report's first screen, under a sentence saying
    when the lift first crossed the sequential boundary, or how far it is from it today."""
    return (
        f'<h4 style="margin:10px 0 2px 0">{escape(series["variant"])} vs {escape(series["control"])} by day (UTC)</h4>'
        f'<p style="margin:2px 0">{escape(boundary_sentence(series))}</p>'
        f"<div>{lift_chart(series)}</div><div>{exposures_chart(series)}</div>"
        f'<div style="overflow-x:auto">{exposures_table(series)}</div>'
    )


def boundary_sentence(series: dict[str, Any]) -> str:
    """The day the lift first crossed the sequential boundary, or where it stands against it today."""
    judged = [d for d in series["days"] if d["crossed"] is not None]
    if not judged:
        return f"No comparison of {series['metric']} yet: each variant needs 2 users with exposures."
    crossed = next((d for d in judged if d["crossed"]), None)
    if crossed is not None:
        return (
            f"The cumulative lift of {series['metric']} first crossed the sequential boundary on {crossed['day']} "
            f"({_pct(crossed['relative_lift'])} against ±{_pct(crossed['boundary_lift'][1], sign=False)}, "
            f"{crossed['users']:,} of {series['planned_users']:,} planned users)."
        )
    today = judged[-1]
    return (
        f"The cumulative lift of {series['metric']} has not crossed the sequential boundary: {_pct(today['relative_lift'])} on "
        f"{today['day']} against ±{_pct(today['boundary_lift'][1], sign=False)} needed to stop at "
        f"{today['users']:,} of {series['planned_users']:,} planned users."
    )


def _svg(title: str, parts: list[str], legend: list[tuple[str, str, str]], y_label: str) -> str:
    keys, left = [], LEFT
    for kind, colour, label in legend:
        if kind == "band":
            keys.append(
                f'<rect x="{left}" y="8" width="18" height="10" fill="{colour}" fill-opacity="0.15"/>'
                f'<line x1="{left}" x2="{left + 18}" y1="13" y2="13" stroke="{colour}" stroke-width="2"/>'
            )
        elif kind == "dash":
            keys.append(
                f'<line x1="{left}" x2="{left + 18}" y1="13" y2="13" stroke="{colour}" stroke-width="1.5" stroke-dasharray="5 3"/>'
            )
        else:
            keys.append(f'<rect x="{left + 4}" y="8" width="10" height="10" fill="{colour}"/>')
        keys.append(f'<text x="{left + 24}" y="17" {FONT} fill="#24292f">{escape(label)}</text>')
        left += 24 + 6 * len(label) + 18
    y_title = (
        f'<text transform="translate(14 {TOP + _plot_height() / 2:.0f}) rotate(-90)" text-anchor="middle" {FONT} '
        f'fill="#24292f">{escape(y_label)}</text>'
    )
    x_title = (
        f'<text x="{LEFT + _plot_width() / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle" {FONT} fill="#24292f">'
        "day (UTC): all data up to the end of that day</text>"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">'
        f"<title>{escape(title)}</title>{''.join(keys)}{''.join(parts)}{y_title}{x_title}</svg>"
    )


def _y_axis(ticks: list[float], y, label) -> str:
    lines = [
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="{GRID}" stroke-width="1"/>'
        f'<text x="{LEFT - 6}" y="{y(t) + 4:.1f}" text-anchor="end" {FONT} fill="{AXIS}">{escape(label(t))}</text>'
        for t in ticks
    ]
    return "".join(lines) + f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + _plot_height()}" stroke="{AXIS}"/>'


def _x_axis(days: list[dict], x) -> str:
    every = max(1, math.ceil(len(days) / 12))  # at most a dozen labels
    base = TOP + _plot_height()
    labels = [
        f'<text x="{x(i):.1f}" y="{base + 16}" text-anchor="middle" {FONT} fill="{AXIS}">{escape(d["day"][5:])}</text>'
        for i, d in enumerate(days)
        if i % every == 0
    ]
    return f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}" stroke="{AXIS}"/>' + "".join(labels)


def _plot_width() -> int:
    return WIDTH - LEFT - RIGHT


def _plot_height() -> int:
    return HEIGHT - TOP - BOTTOM


def _x_scale(n: int):
    """Day i at the middle of its slot, so lines and bars of one day share an x."""
    return lambda i: LEFT + (i + 0.5) * _plot_width() / max(n, 1)


def _y_scale(lo: float, hi: float):
    span = (hi - lo) or 1.0
    return lambda v: TOP + (hi - v) / span * _plot_height()


def _ticks(lo: float, hi: float, integers: bool = False) -> list[float]:
    """About five round tick values covering [lo, hi]."""
    raw = max(hi - lo, 1e-9) / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    step = max(step, 1.0) if integers else step
    return [k * step for k in range(math.floor(lo / step), math.ceil(hi / step) + 1)]


def _runs(indices: list[int]) -> list[list[int]]:
    """Consecutive stretches of day indices (a line or band breaks over days without a value)."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _points(xy: list[tuple[float, float]]) -> str:
    return " ".join(f"{a:.1f},{b:.1f}" for a, b in xy)


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _pct(value: float | None, sign: bool = True) -> str:
    return "n/a" if value is None or not math.isfinite(value) else (f"{value:+.1%}" if sign else f"{value:.1%}")


def _colour(j: int) -> str:
    return VARIANT_COLOURS[j % len(VARIANT_COLOURS)]
