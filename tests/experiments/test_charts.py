"""The report's SVG charts: well-formed XML, one point per day with a comparison, one bar per day and
variant, placed where their values say, on series written here so the right picture is known."""

import math
import xml.etree.ElementTree as ET

import pytest

from experiments.charts import boundary_sentence, daily_section, exposures_chart, exposures_table, lift_chart

SVG = "{http://www.w3.org/2000/svg}"
NAN = float("nan")


def day(i, lift, half_width=0.1, boundary=0.15, users=None, shown=(100, 110)):
    """One daily record as experiments.daily writes it; ``lift=None`` is a day without a comparison."""
    record = {
        "day": f"2024-03-{i + 1:02d}",
        "shown": {"control": shown[0], "treatment": shown[1]},
        "exposed_users": {"control": shown[0] // 10, "treatment": shown[1] // 10},
        "users": users or 100 * (i + 1),
    }
    if lift is None:
        return record | dict.fromkeys(
            ("information_fraction", "relative_lift", "relative_ci", "z", "z_boundary", "boundary_lift", "crossed")
        )
    z = lift / boundary * 2.0
    return record | {
        "information_fraction": (i + 1) / 10,
        "relative_lift": lift,
        "relative_ci": (lift - half_width, lift + half_width),
        "z": z,
        "z_boundary": 2.0,
        "boundary_lift": (-boundary, boundary),
        "crossed": abs(z) >= 2.0,
    }


def series(days):
    return {
        "variant": "treatment",
        "control": "control",
        "metric": "ctr",
        "planned_users": 1000,
        "alpha": 0.05,
        "days": days,
    }


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # raises on anything that is not well-formed XML
    assert root.tag == f"{SVG}svg"
    return root


def with_class(root: ET.Element, tag: str, name: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}{tag}") if e.get("class") == name]


def texts(root: ET.Element) -> list[str]:
    return [e.text for e in root.iter(f"{SVG}text")]


def test_the_lift_chart_has_one_point_per_day_placed_by_its_lift():
    lifts = [0.05, 0.12, 0.08, 0.10, 0.11, 0.09, 0.10]
    root = parse(lift_chart(series([day(i, v) for i, v in enumerate(lifts)])))
    points = with_class(root, "circle", "lift-point")
    assert len(points) == len(lifts)
    xs, ys = [float(p.get("cx")) for p in points], [float(p.get("cy")) for p in points]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)  # one per day, in order
    # SVG's y grows downwards: a larger lift is drawn higher, equal steps of lift are equal steps of y
    assert [a < b for a, b in zip(ys, ys[1:])] == [a > b for a, b in zip(lifts, lifts[1:])]
    assert (ys[0] - ys[2]) / (ys[2] - ys[1]) == pytest.approx((0.08 - 0.05) / (0.12 - 0.08), abs=0.05)
    assert points[1].find(f"{SVG}title").text.startswith("2024-03-02: lift +12.0%")
    [band] = with_class(root, "polygon", "lift-interval")
    assert len(band.get("points").split()) == 2 * len(lifts)  # upper edge out, lower edge back
    boundaries = with_class(root, "polyline", "boundary")
    assert len(boundaries) == 2 and all(len(b.get("points").split()) == len(lifts) for b in boundaries)
    labels = texts(root)
    assert "relative lift of ctr (%)" in labels and any(t.startswith("day (UTC)") for t in labels)
    assert "03-01" in labels and "+10%" in labels and "+0%" in labels
    assert root.find(f"{SVG}title").text == "Cumulative relative lift of ctr, treatment vs control, by day"


def test_days_without_a_comparison_break_the_line_and_draw_no_point():
    days = [day(0, None), day(1, 0.1), day(2, 0.12), day(3, None), day(4, 0.11)]
    days[2]["relative_ci"] = (NAN, NAN)  # a relative interval undefined that day
    root = parse(lift_chart(series(days)))
    assert len(with_class(root, "circle", "lift-point")) == 3
    assert [len(b.get("points").split()) for b in with_class(root, "polygon", "lift-interval")] == [2, 2]
    assert [len(b.get("points").split()) for b in with_class(root, "polyline", "boundary")] == [2, 1, 2, 1]


def test_early_wide_intervals_are_clipped_to_a_readable_range():
    days = [day(0, 0.3, half_width=5.0, boundary=8.0)] + [
        day(i, 0.05, half_width=0.03, boundary=0.06) for i in range(1, 6)
    ]
    root = parse(lift_chart(series(days)))
    ticks = [t for t in texts(root) if t.endswith("%") and t[0] in "+-"]
    assert max(float(t.rstrip("%")) for t in ticks) < 100  # not stretched to +500%
    clip = root.find(f"{SVG}clipPath")
    assert root.find(f"{SVG}g").get("clip-path") == f"url(#{clip.get('id')})"


def test_a_single_day_and_no_comparison_at_all_still_draw():
    assert len(with_class(parse(lift_chart(series([day(0, 0.1)]))), "circle", "lift-point")) == 1
    assert with_class(parse(lift_chart(series([day(0, None), day(1, None)]))), "circle", "lift-point") == []
    assert boundary_sentence(series([day(0, None)])).startswith("No comparison of ctr yet")


def test_exposure_bars_one_per_day_and_variant_with_heights_in_proportion():
    days = [day(i, 0.1, shown=(100 * (i + 1), 50 * (i + 1))) for i in range(4)]
    root = parse(exposures_chart(series(days)))
    bars = with_class(root, "rect", "exposure-bar")
    assert len(bars) == 2 * len(days)
    heights = [float(b.get("height")) for b in bars]
    assert heights[0] / heights[1] == pytest.approx(2.0, rel=0.01) and heights[6] / heights[0] == pytest.approx(
        4.0, rel=0.01
    )
    assert bars[1].find(f"{SVG}title").text == "treatment on 2024-03-01: 50 tracks shown to 5 users"
    assert "tracks shown per day" in texts(root)


def test_the_exposure_table_and_the_sentence_give_the_figures():
    days = [day(0, 0.02, shown=(1234, 1300)), day(1, 0.2, shown=(900, 950), users=250)]
    table = exposures_table(series(days))
    assert "<th>03-01</th><th>03-02</th>" in table and "<td>1,234</td>" in table and "<td>95</td>" in table
    assert boundary_sentence(series(days)) == (
        "The cumulative lift of ctr first crossed the sequential boundary on 2024-03-02 "
        "(+20.0% against ±15.0%, 250 of 1,000 planned users)."
    )
    assert "has not crossed" in boundary_sentence(series(days[:1]))
    section = daily_section(series(days))
    assert (
        section.count("<svg") == 2
        and "<script" not in section
        and "http://" not in section.replace("http://www.w3.org/2000/svg", "")
    )
    assert not math.isnan(float(with_class(parse(lift_chart(series(days))), "circle", "lift-point")[0].get("cy")))
