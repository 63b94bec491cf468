"""The report's charts carry the nowcast's numbers: report.json's chart data, then the figures.

On the shared ``loop_run`` (45 days, 4 campaigns, a week-long outage on c02), every chart series
is recomputed here from the run's nowcast (the account totals per date, which must add up the
cohorts) and compared exactly; observed and nowcast series are told apart by direction (the
nowcast expects at least what is observed), every interval is ordered and holds its point, the
account bands are the total's own 90% intervals (narrower than the campaigns' bounds added up),
and each figure draws the JSON arrays under the right names.
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


def by_date(report: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    """The nowcast's account totals per date (``account.by_date[key]``), by date."""
    rows = report["state"]["nowcast"]["account"]["by_date"][key]
    return {r["date"]: r for r in rows}


@pytest.mark.parametrize(
    ("key", "cohorts", "excluded"),
    [("click", "cohorts", False), ("click_with_excluded", "cohorts", True), ("crm", "crm", False)],
)
def test_account_totals_add_up_the_cohorts(
    report: dict[str, Any], key: str, cohorts: str, excluded: bool
) -> None:
    """Spend, observed and expected per date are the cohorts' sums (to the rounding of 0.01 a
    cohort); the interval is not (see test_account_bands_are_the_totals_own_interval)."""
    nc = report["state"]["nowcast"]
    rows = nc["cohorts"] if cohorts == "cohorts" else nc["crm"]["cohorts"]
    obs, exp = ("observed_conversions", "expected_conversions")
    if cohorts == "crm":
        obs, exp = ("observed_deals", "expected_deals")
    fields = ("spend", obs, exp, "observed_value", "expected_value")
    by = sums(rows, fields, excluded=excluded)
    totals = by_date(report, key)
    assert sorted(totals) == sorted(by) and len(by) == 45
    n = {d: sum(1 for c in rows if c["date"] == d and (excluded or not c["excluded"])) for d in by}
    for d, t in totals.items():
        assert t["campaigns"] == n[d]
        assert t[obs] == by[d][1]
        for f, i in (("spend", 0), (exp, 2), ("observed_value", 3), ("expected_value", 4)):
            assert t[f] == pytest.approx(by[d][i], abs=0.006 * n[d]), (d, f)
    left_out = {(c["campaign_id"], c["date"]) for c in rows if c["excluded"]}
    assert {(cid, d) for d, t in totals.items() for cid in t["excluded"]} == left_out
    assert len(left_out) == (7 if cohorts == "cohorts" else 0)  # c02's outage week


def test_cpa_chart_is_spend_over_the_nowcast_conversions(report: dict[str, Any]) -> None:
    c = report["charts"]["cpa_roas"]
    by = by_date(report, "click")  # the outage week's c02 cohorts are out: no data bought
    days = sorted(by)[-RECENT_DAYS:]
    assert c["dates"] == days and len(days) == RECENT_DAYS
    spend = [by[d]["spend"] for d in days]
    for key, field in (
        ("observed_cpa", "observed_conversions"),
        ("nowcast_cpa", "expected_conversions"),
        # the low CPA is spend over the most conversions the interval allows, the high the fewest
        ("cpa_low", "upper"),
        ("cpa_high", "lower"),
    ):
        assert c[key] == [ratio(s, by[d][field]) for s, d in zip(spend, days, strict=True)], key


def test_roas_chart_is_the_crm_deal_value_over_spend(report: dict[str, Any]) -> None:
    c = report["charts"]["cpa_roas"]
    assert c["roas_from"] == "crm" and report["state"]["nowcast"]["crm"]["cohorts"]
    by = by_date(report, "crm")
    days = sorted(by)[-RECENT_DAYS:]
    assert c["roas_dates"] == days
    for key, field in (
        ("observed_roas", "observed_value"),
        ("nowcast_roas", "expected_value"),
        ("roas_low", "value_lower"),
        ("roas_high", "value_upper"),
    ):
        assert c[key] == [ratio(by[d][field], by[d]["spend"]) for d in days], key


def test_conversions_chart_sums_every_cohort_and_shades_the_outage(
    report: dict[str, Any],
) -> None:
    c = report["charts"]["conversions"]
    cohorts = report["state"]["nowcast"]["cohorts"]
    # conversions by day show the outage's hole (every cohort); the shading explains it
    by = by_date(report, "click_with_excluded")
    days = sorted(by)[-CONVERSION_DAYS:]
    acc = c["account"]
    assert acc["dates"] == days and len(days) == 45
    for key, field in (
        ("observed", "observed_conversions"),
        ("expected", "expected_conversions"),
        ("lower", "lower"),
        ("upper", "upper"),
    ):
        assert acc[key] == [by[d][field] for d in days], key
    for cid, s in c["campaigns"].items():
        mine = sorted(
            (x["date"], x["observed_conversions"]) for x in cohorts if x["campaign_id"] == cid
        )
        assert list(zip(s["dates"], s["observed"], strict=True)) == mine
    assert sorted(c["campaigns"]) == ["c01", "c02", "c03", "c04"]
    assert [(w["campaign_id"], w["start"], w["end"]) for w in c["outages"]] == [
        ("c02", "2026-01-31", "2026-02-06")
    ]


@pytest.mark.parametrize(("key", "cohorts"), [("click", "cohorts"), ("crm", "crm")])
def test_account_bands_are_the_totals_own_interval(
    report: dict[str, Any], key: str, cohorts: str
) -> None:
    """The account's 90% band comes from the campaigns' draws added per date, not from their
    90% bounds added up (which hold the total far more often than 90%: see
    tests/test_nowcast_intervals.py). On this account the count band is never wider than the
    added bounds and narrower on most days; the value band is not the added bounds either (a
    lead day's few deals: each cohort's band is its observed value up to its point, while the
    total's must hold one more deal)."""
    nc = report["state"]["nowcast"]
    rows = nc["cohorts"] if cohorts == "cohorts" else nc["crm"]["cohorts"]
    by = sums(rows, ("lower", "upper", "value_lower", "value_upper"), excluded=False)
    totals = by_date(report, key)
    narrower = []
    for d in sorted(totals):
        t = totals[d]
        assert by[d][0] <= t["lower"] <= t["upper"] <= by[d][1], d
        narrower.append(t["upper"] - t["lower"] < by[d][1] - by[d][0])
    value_differs = sum(
        abs(t["value_upper"] - by[d][3]) > 0.01 * t["campaigns"] for d, t in totals.items()
    )
    assert (sum(narrower), sum(narrower[-14:]), value_differs) == {
        # of 45 days, of the last 14, value bands not the sum (the 3 days older than
        # settle_days are settled: their band is the observed count, as each cohort's)
        "click": (32, 14, 23),
        "crm": (34, 11, 43),
    }[key]


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


def test_every_interval_is_ordered_and_holds_its_point(report: dict[str, Any]) -> None:
    """Low <= high everywhere; the observed count is the floor; the nowcast lies inside its
    interval, in the nowcast's rows (cohorts, campaigns and their windows, the CRM's, the
    account's by date) and in the charts: no slack (``nowcast.count_interval`` widens a
    whole-number interval to the whole numbers next to its point)."""
    nc = report["state"]["nowcast"]
    by = nc["account"]["by_date"]
    windows = [r for c in nc["campaigns"] for r in c["windows"].values()]
    rows = [*nc["cohorts"], *nc["campaigns"], *windows, *by["click"], *by["click_with_excluded"]]
    crm_windows = [r for c in nc["crm"]["campaigns"] for r in c["windows"].values()]
    crm = [*nc["crm"]["cohorts"], *nc["crm"]["campaigns"], *crm_windows, *by["crm"]]
    assert len(rows) == 180 + 4 * 3 + 45 + 45 and len(crm) == 89 + 2 * 3 + 45
    for r in rows + crm:
        obs, exp = (
            ("observed_deals", "expected_deals")
            if "observed_deals" in r
            else ("observed_conversions", "expected_conversions")
        )
        assert r[obs] <= r["lower"] <= r[exp] <= r["upper"], r
        assert r["observed_value"] <= r["value_lower"] <= r["expected_value"] <= r["value_upper"], r
    ch = report["charts"]
    acc = ch["conversions"]["account"]
    for o, lo, e, hi in zip(
        acc["observed"], acc["lower"], acc["expected"], acc["upper"], strict=True
    ):
        assert o <= lo <= e <= hi
    c = ch["cpa_roas"]
    rows_ = zip(c["observed_cpa"], c["cpa_low"], c["nowcast_cpa"], c["cpa_high"], strict=True)
    for obs_, lo, now, hi in rows_:
        assert lo <= now <= hi <= obs_  # fewer conversions than observed cannot happen
    rows_ = zip(c["observed_roas"], c["roas_low"], c["nowcast_roas"], c["roas_high"], strict=True)
    for obs_, lo, now, hi in rows_:
        assert obs_ <= lo <= now <= hi
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
