"""The report's charts carry the nowcast's numbers: report.json's chart data, then the figures.

On the shared ``loop_run`` (45 days, 4 campaigns, a week-long outage on c02), every chart series
is recomputed here from the run's nowcast cohorts and compared exactly; observed and nowcast
series are told apart by direction (the nowcast expects at least what is observed), every
interval is ordered, and each figure draws the JSON arrays under the right names.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from signalloop.report import (
    CONVERSION_DAYS,
    RECENT_DAYS,
    fig_allocation,
    fig_conversions,
    fig_cpa_roas,
)


@pytest.fixture(scope="module")
def report(loop_run: dict[str, Any]) -> dict[str, Any]:
    """report.json as written to disk (what a reader of the report gets)."""
    doc: dict[str, Any] = json.loads(Path(loop_run["doc"]["report"]["json"]).read_text())
    return doc


def ratio(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


def sums(
    cohorts: list[dict[str, Any]], fields: tuple[str, ...], *, excluded: bool
) -> dict[str, list[float]]:
    """Per day, each field summed over campaigns (cohorts in an exclusion window kept or not)."""
    out: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(fields))
    for c in cohorts:
        if c["excluded"] and not excluded:
            continue
        for i, f in enumerate(fields):
            out[c["date"]][i] += c[f]
    return out


def trace(fig: Any, name: str) -> Any:
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, [t.name for t in fig.data]
    return found[0]


def test_cpa_chart_is_spend_over_the_nowcast_conversions(report: dict[str, Any]) -> None:
    c = report["charts"]["cpa_roas"]
    by = sums(
        report["state"]["nowcast"]["cohorts"],
        ("spend", "observed_conversions", "expected_conversions", "lower", "upper"),
        excluded=False,  # the outage week's c02 cohorts are out: their spend bought no data
    )
    days = sorted(by)[-RECENT_DAYS:]
    assert c["dates"] == days and len(days) == RECENT_DAYS
    spend = [by[d][0] for d in days]
    assert c["observed_cpa"] == [ratio(s, by[d][1]) for s, d in zip(spend, days, strict=True)]
    assert c["nowcast_cpa"] == [ratio(s, by[d][2]) for s, d in zip(spend, days, strict=True)]
    # the low CPA is spend over the most conversions the interval allows, the high the fewest
    assert c["cpa_low"] == [ratio(s, by[d][4]) for s, d in zip(spend, days, strict=True)]
    assert c["cpa_high"] == [ratio(s, by[d][3]) for s, d in zip(spend, days, strict=True)]


def test_roas_chart_is_the_crm_deal_value_over_spend(report: dict[str, Any]) -> None:
    c = report["charts"]["cpa_roas"]
    crm = report["state"]["nowcast"]["crm"]["cohorts"]
    assert c["roas_from"] == "crm" and crm
    by = sums(
        crm,
        ("spend", "observed_value", "expected_value", "value_lower", "value_upper"),
        excluded=False,
    )
    days = sorted(by)[-RECENT_DAYS:]
    assert c["roas_dates"] == days
    for key, i in (("observed_roas", 1), ("nowcast_roas", 2), ("roas_low", 3), ("roas_high", 4)):
        assert c[key] == [ratio(by[d][i], by[d][0]) for d in days], key


def test_conversions_chart_sums_every_cohort_and_shades_the_outage(
    report: dict[str, Any],
) -> None:
    c = report["charts"]["conversions"]
    cohorts = report["state"]["nowcast"]["cohorts"]
    by = sums(
        cohorts,
        ("observed_conversions", "expected_conversions", "lower", "upper"),
        excluded=True,  # conversions by day show the outage's hole; the shading explains it
    )
    days = sorted(by)[-CONVERSION_DAYS:]
    acc = c["account"]
    assert acc["dates"] == days and len(days) == 45
    assert acc["observed"] == [by[d][0] for d in days]
    assert acc["expected"] == [round(by[d][1], 2) for d in days]
    assert acc["lower"] == [by[d][2] for d in days]
    assert acc["upper"] == [by[d][3] for d in days]
    for cid, s in c["campaigns"].items():
        mine = sorted(
            (x["date"], x["observed_conversions"]) for x in cohorts if x["campaign_id"] == cid
        )
        assert list(zip(s["dates"], s["observed"], strict=True)) == mine
    assert sorted(c["campaigns"]) == ["c01", "c02", "c03", "c04"]
    assert [(w["campaign_id"], w["start"], w["end"]) for w in c["outages"]] == [
        ("c02", "2026-01-31", "2026-02-06")
    ]


def test_observed_and_nowcast_are_not_swapped(report: dict[str, Any]) -> None:
    """The nowcast adds conversions still to come: never fewer than observed, more at the end."""
    c = report["charts"]["cpa_roas"]
    for obs, now in zip(c["observed_cpa"], c["nowcast_cpa"], strict=True):
        assert now <= obs
    # the last click day has most of its conversions still to come
    assert c["observed_cpa"][-1] > 2 * c["nowcast_cpa"][-1]
    for obs, now in zip(c["observed_roas"], c["nowcast_roas"], strict=True):
        assert now >= obs
    assert c["nowcast_roas"][-1] > 0 and c["observed_roas"][-1] == 0  # no deal closes that fast
    acc = report["charts"]["conversions"]["account"]
    assert all(e >= o for o, e in zip(acc["observed"], acc["expected"], strict=True))
    assert acc["expected"][-1] > 2 * acc["observed"][-1]


def in_interval(lo: float, point: float, hi: float, *, slack: float = 0.0) -> bool:
    """``lo <= point <= hi``; ``slack`` widens a single-valued interval (lo == hi) either way."""
    if lo == hi:
        return lo - slack <= point <= hi + slack
    return lo <= point <= hi


def test_every_interval_is_ordered(report: dict[str, Any]) -> None:
    """Low <= high everywhere; the observed count is the floor; the nowcast sits inside.

    A count's 90% interval holds whole numbers (``nowcast.count_interval``) and the nowcast is
    a mean: when a day is all but complete the interval is the observed count alone and the
    mean sits a fraction of a conversion above it. There the nowcast is allowed one
    conversion's slack; everywhere else it lies inside its interval.
    """
    ch = report["charts"]
    acc = ch["conversions"]["account"]
    for o, lo, e, hi in zip(
        acc["observed"], acc["lower"], acc["expected"], acc["upper"], strict=True
    ):
        assert o <= lo <= hi
        assert in_interval(lo, e, hi, slack=1.0), (lo, e, hi)
    c = ch["cpa_roas"]
    rows = zip(c["observed_cpa"], c["cpa_low"], c["nowcast_cpa"], c["cpa_high"], strict=True)
    by = sums(report["state"]["nowcast"]["cohorts"], ("spend", "upper"), excluded=False)
    for d, (obs, lo, now, hi) in zip(c["dates"], rows, strict=True):
        assert lo <= hi <= obs  # fewer conversions than observed cannot happen
        one_conversion = by[d][0] / by[d][1] - by[d][0] / (by[d][1] + 1)
        assert in_interval(lo, now, hi, slack=one_conversion), (d, lo, now, hi)
    rows = zip(c["observed_roas"], c["roas_low"], c["nowcast_roas"], c["roas_high"], strict=True)
    for obs, lo, now, hi in rows:
        assert obs <= lo <= now <= hi
    arms = ch["allocation"]["arms"]
    assert [a["campaign_id"] for a in arms] == ["c01", "c02", "c03", "c04"]
    for a in arms:
        lo, hi = a["cpa_interval"]
        assert lo <= a["expected_cpa"] <= hi, a


def test_figures_draw_the_json_numbers(report: dict[str, Any]) -> None:
    """Each figure's traces are report.json's arrays, under the names the legend shows."""
    c = report["charts"]["cpa_roas"]
    fig = fig_cpa_roas(c)
    assert list(trace(fig, "observed CPA").y) == c["observed_cpa"]
    assert list(trace(fig, "nowcast CPA").y) == c["nowcast_cpa"]
    assert list(trace(fig, "observed ROAS").y) == c["observed_roas"]
    assert list(trace(fig, "nowcast ROAS").y) == c["nowcast_roas"]
    band = [
        (lo, hi)
        for lo, hi in zip(c["cpa_low"], c["cpa_high"], strict=True)
        if lo is not None and hi is not None
    ]
    assert len(band) == RECENT_DAYS  # every recent day has conversions to put a CPA on
    assert (
        list(trace(fig, "CPA 90% interval").y) == [b[1] for b in band] + [b[0] for b in band][::-1]
    )
    conv = report["charts"]["conversions"]
    acc = conv["account"]
    fig = fig_conversions(conv)
    assert list(trace(fig, "account observed").y) == acc["observed"]
    assert list(trace(fig, "account nowcast").y) == acc["expected"]
    assert list(trace(fig, "account nowcast 90% interval").y) == acc["upper"] + acc["lower"][::-1]
    alloc = report["charts"]["allocation"]
    fig = fig_allocation(alloc)
    arms = alloc["arms"]
    assert list(trace(fig, "now").y) == [a["current"] for a in arms]
    assert list(trace(fig, "recommended").y) == [a["recommended"] for a in arms]
    cpa = trace(fig, "expected CPA")
    assert list(cpa.y) == [a["expected_cpa"] for a in arms]
    tops = [round(y + up, 6) for y, up in zip(cpa.y, cpa.error_y.array, strict=True)]
    bottoms = [round(y - down, 6) for y, down in zip(cpa.y, cpa.error_y.arrayminus, strict=True)]
    assert tops == [a["cpa_interval"][1] for a in arms]
    assert bottoms == [a["cpa_interval"][0] for a in arms]
