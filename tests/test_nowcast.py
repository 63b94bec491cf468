"""The nowcast on a small simulated account whose truth we know."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from signalloop.checks.engine import save_exclusions
from signalloop.config import Settings, settings_from_dict
from signalloop.errors import ConfigError
from signalloop.nowcast import NowcastOptions, NowcastReport, count_interval, nowcast
from signalloop.store import Workspace

from .conftest import every_fault, ingest_drop, simulated_drops, simulated_workspace

DAYS = 60
START = date(2026, 1, 1)
AS_OF = START + timedelta(days=DAYS - 1)
#: a tracking outage on c03, days 30-36: its conversions in those days never arrive
OUTAGE = (START + timedelta(days=30), START + timedelta(days=36))


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Any]]:
    ws, result, _ = simulated_workspace(
        tmp_path_factory.mktemp("nowcast"),
        days=DAYS,
        campaigns=4,
        seed=11,
        faults=("tracking_outage@c03:30-36",),
        db=":memory:",
        now=datetime(2030, 1, 1),
    )
    yield ws, result.truth
    ws.close()


@pytest.fixture(scope="module")
def report(account: tuple[Workspace, Any]) -> NowcastReport:
    return nowcast(account[0])


def truth_of(truth: dict[str, Any], row: dict[str, Any], key: str) -> float:
    return float(
        truth["daily"][row["campaign_id"]][key][(date.fromisoformat(row["date"]) - START).days]
    )


def test_beats_the_naive_observed_so_far_on_the_last_14_days(
    report: NowcastReport, account: tuple[Workspace, Any]
) -> None:
    truth = account[1]
    assert report.as_of == AS_OF
    recent = [r for r in report.cohorts if date.fromisoformat(r["date"]) > AS_OF - timedelta(14)]
    assert len(recent) == 4 * 14
    t = np.array([truth_of(truth, r, "conversions_by_click_date") for r in recent])
    obs = np.array([r["observed_conversions"] for r in recent], float)
    exp = np.array([r["expected_conversions"] for r in recent], float)
    lo = np.array([r["lower"] for r in recent], float)
    hi = np.array([r["upper"] for r in recent], float)
    assert np.abs(exp - t).sum() < 0.6 * np.abs(obs - t).sum()
    assert abs(exp.sum() - t.sum()) < 0.05 * t.sum() < (t.sum() - obs.sum())
    assert 0.75 <= np.mean((lo <= t) & (t <= hi)) <= 1.0
    assert np.all((obs <= lo) & (lo <= exp) & (exp <= hi))  # the point inside its interval
    # campaign totals over the same 14 days: much closer than the naive ones
    for c in report.campaigns:
        w = c["windows"]["28d"]
        assert w["lower"] <= w["expected_conversions"] <= w["upper"]


def test_value_cpa_and_roas_exist_observed_and_nowcast(
    report: NowcastReport, account: tuple[Workspace, Any]
) -> None:
    truth = account[1]
    last = [r for r in report.cohorts if r["date"] == AS_OF.isoformat()]
    for r in last:
        assert r["spend"] > 0
        assert r["observed_cpa"] is None or r["nowcast_cpa"] < r["observed_cpa"]
        assert r["expected_value"] >= r["observed_value"]
        assert r["nowcast_roas"] >= r["observed_roas"]
    purchase = [c for c, v in truth["campaigns"].items() if v["objective"] == "purchase"]
    recent = [
        r
        for r in report.cohorts
        if r["campaign_id"] in purchase and date.fromisoformat(r["date"]) > AS_OF - timedelta(7)
    ]
    tv = sum(truth_of(truth, r, "value_by_click_date") for r in recent)
    assert sum(r["expected_value"] for r in recent) == pytest.approx(tv, rel=0.1)
    for c in report.campaigns:
        for k in ("observed_cpa", "nowcast_cpa", "observed_roas", "nowcast_roas"):
            assert k in c and k in c["windows"]["7d"]


def test_only_a_clicks_own_conversion_counts(
    report: NowcastReport, account: tuple[Workspace, Any]
) -> None:
    """Lead campaigns also import sql / opportunity / deal conversions: not click conversions."""
    truth = account[1]
    old = [
        r
        for r in report.cohorts
        if date.fromisoformat(r["date"]) < AS_OF - timedelta(20) and r["campaign_id"] != "c03"
    ]
    t = sum(truth_of(truth, r, "conversions_by_click_date") for r in old)
    obs = sum(r["observed_conversions"] for r in old)
    assert 0.99 * t <= obs <= t
    leads = [c for c, v in truth["campaigns"].items() if v["objective"] == "lead"]
    assert set(report.crm["delay"]) >= set(leads)


def test_crm_path_nowcasts_deals_by_lead_day(report: NowcastReport) -> None:
    crm = report.crm
    assert crm["unit"] == "days"
    for d in crm["delay"].values():
        assert 10 < d["p50"] < d["p90"] < 200
        assert d["model"] == "lognormal_cure"
    recent = [r for r in crm["cohorts"] if date.fromisoformat(r["date"]) > AS_OF - timedelta(14)]
    assert recent
    for r in recent:
        assert r["leads"] >= 1
        assert r["expected_deals"] >= r["observed_deals"]
        assert r["lower"] <= r["upper"]
    # almost nothing is won within two weeks of the lead; the nowcast expects deals to come
    assert sum(r["expected_deals"] for r in recent) > 5 * sum(r["observed_deals"] for r in recent)
    for c in crm["campaigns"]:
        assert {"observed_cost_per_deal", "nowcast_cost_per_deal", "nowcast_roas"} <= set(c)


def test_json_contract(report: NowcastReport) -> None:
    doc = json.loads(report.to_json())
    assert doc["as_of"] == AS_OF.isoformat()
    assert set(doc["delay"]) == {"c01", "c02", "c03", "c04"}
    for d in doc["delay"].values():
        assert {"p50", "p90", "model"} <= set(d)
        assert 5 < d["p50"] < d["p90"] < 500  # hours
    keys = {
        "campaign_id",
        "date",
        "clicks",
        "observed_conversions",
        "expected_conversions",
        "lower",
        "upper",
        "observed_value",
        "expected_value",
    }
    assert doc["cohorts"] and all(keys <= set(c) for c in doc["cohorts"])
    assert {"delay", "cohorts", "campaigns"} <= set(doc["crm"])
    assert "nowcast" in report.to_text()


def test_exclusion_windows_are_left_out_of_fitting_flagged_and_filled_in(
    account: tuple[Workspace, Any], report: NowcastReport
) -> None:
    """c03's tracking outage: stored as an exclusion (as ``signalloop check`` would)."""
    ws, truth = account
    start, end = OUTAGE
    window = {"campaign_id": "c03", "start": start.isoformat(), "end": end.isoformat()}
    save_exclusions(ws, [window | {"reason": "tracking_outage"}], AS_OF)
    try:
        out = nowcast(ws, options=NowcastOptions(crm=False))
    finally:
        ws.con.execute("DELETE FROM exclusions")
    c03 = [r for r in out.cohorts if r["campaign_id"] == "c03"]
    inside = [r for r in c03 if start.isoformat() <= r["date"] <= end.isoformat()]
    assert len(inside) == 7 and all(r["excluded"] for r in inside)
    assert all(r["exclusion_overlap"] for r in c03 if r["date"] < start.isoformat())
    later = [r for r in c03 if r["date"] > end.isoformat()]
    assert not any(r["excluded"] or r["exclusion_overlap"] for r in later)
    assert not any(r["excluded"] for r in out.cohorts if r["campaign_id"] != "c03")
    # fitting leaves out the window and the 3 guard days before it
    left_out = [r for r in c03 if start - timedelta(3) <= date.fromisoformat(r["date"]) <= end]
    before = report.delay["c03"]["events"]
    assert out.delay["c03"]["events"] == before - sum(r["observed_conversions"] for r in left_out)
    assert out.delay["c01"]["events"] == report.delay["c01"]["events"]
    # what happened inside the window was never seen: the nowcast fills it in
    hit = [r for r in c03 if start - timedelta(5) <= date.fromisoformat(r["date"]) <= end]
    t = np.array([truth_of(truth, r, "conversions_by_click_date") for r in hit])
    obs = np.array([r["observed_conversions"] for r in hit], float)
    exp = np.array([r["expected_conversions"] for r in hit], float)
    assert obs.sum() < 0.6 * t.sum()
    assert abs(exp.sum() - t.sum()) < 0.15 * t.sum()
    assert np.abs(exp - t).sum() < 0.4 * np.abs(obs - t).sum()
    # without the exclusion stored, the outage reads as a collapse of the campaign
    blind = [
        r for r in report.cohorts if r["campaign_id"] == "c03" and r["date"] == end.isoformat()
    ]
    assert blind[0]["expected_conversions"] < inside[-1]["expected_conversions"]


def test_click_days_older_than_settle_days_are_settled(
    account: tuple[Workspace, Any], report: NowcastReport
) -> None:
    """Click days 42 days old or more (18 of the 60 here) are settled: reported as observed,
    left out of the delay's fit. Against fitting and nowcasting every day, the last 14 days
    move by a fraction of a percent."""
    ws = account[0]
    settled = report.account["click"]["settled"]
    opened = (AS_OF - timedelta(days=41)).isoformat()
    assert (settled["days"], settled["before"], settled["cohorts"]) == (42, opened, 4 * 18)
    old = [r for r in report.cohorts if r["date"] < opened]
    assert len(old) == 4 * 18 and all(r["settled"] for r in old)
    assert all(
        r["observed_conversions"] == r["expected_conversions"] == r["lower"] == r["upper"]
        for r in old
    )
    assert not any(r["settled"] for r in report.cohorts if r["date"] >= opened)
    assert 0 < settled["share_still_due"] < 0.005 and "warning" not in settled
    every = nowcast(ws, options=NowcastOptions(settle_days=None))
    assert every.account["click"]["settled"] == {"days": None, "cohorts": 0}
    assert not any(r["settled"] for r in every.cohorts)
    for c in ("c01", "c02", "c03", "c04"):  # the fit holds the open days' conversions only
        assert 0 < report.delay[c]["events"] < every.delay[c]["events"]
    recent = (AS_OF - timedelta(days=13)).isoformat()
    got = {
        name: np.array([r["expected_conversions"] for r in out.cohorts if r["date"] >= recent])
        for name, out in (("settled", report), ("every", every))
    }
    assert abs(got["settled"].sum() / got["every"].sum() - 1) < 0.005
    # a settle age the delay outlasts: the share still due is named, with a warning
    short = nowcast(ws, options=NowcastOptions(crm=False, settle_days=2))
    assert short.account["click"]["settled"]["share_still_due"] > 0.005
    assert "raise settle_days" in short.account["click"]["settled"]["warning"]


def test_cohort_days_lists_the_last_days_and_counts_the_rest(
    account: tuple[Workspace, Any], report: NowcastReport
) -> None:
    """The daily run lists only its report's days (``cohort_days``): the cohort rows of those
    days are the full nowcast's, the campaign rows (every day, and the windows) are the
    same, and ``account["listed"]`` counts the cohorts left out of the lists."""
    out = nowcast(account[0], options=NowcastOptions(cohort_days=20))
    first = (AS_OF - timedelta(days=19)).isoformat()
    assert out.campaigns == report.campaigns
    assert out.cohorts == [r for r in report.cohorts if r["date"] >= first]
    crm_rows = report.crm["cohorts"]
    assert out.crm["cohorts"] == [r for r in crm_rows if r["date"] >= first]
    assert out.crm["campaigns"] == report.crm["campaigns"]
    assert out.account["by_date"]["click"][0]["date"] == first
    assert out.account["listed"] == {
        "cohort_days": 20,
        "from": first,
        "cohorts_not_listed": len(report.cohorts) - len(out.cohorts),
        "crm_cohorts_not_listed": len(crm_rows) - len(out.crm["cohorts"]),
    }
    assert out.account["listed"]["cohorts_not_listed"] == 4 * 40
    assert out.account["listed"]["crm_cohorts_not_listed"] > 0
    assert "listed" not in report.account  # every cohort listed: nothing to say


def test_settle_days_comes_from_the_settings(account: tuple[Workspace, Any]) -> None:
    assert Settings().settle_days == 42
    assert settings_from_dict({"nowcast": {"settle_days": 0}}).settle_days is None
    for bad in ({"settle_days": -1}, {"settle_days": "42"}, {"settle": 42}):
        with pytest.raises(ConfigError, match=r"\[nowcast\]"):
            settings_from_dict({"nowcast": bad})
    out = nowcast(account[0], settings=settings_from_dict({"nowcast": {"settle_days": 30}}))
    assert out.account["click"]["settled"]["cohorts"] == 4 * 30  # days 0-29 of 60
    assert sum(r["settled"] for r in out.cohorts) == 4 * 30
    assert Settings().crm_settle_days == 180
    assert settings_from_dict({"nowcast": {"crm_settle_days": 0}}).crm_settle_days is None
    with pytest.raises(ConfigError, match=r"crm_settle_days must be a whole number"):
        settings_from_dict({"nowcast": {"crm_settle_days": 1.5}})
    out = nowcast(account[0], settings=settings_from_dict({"nowcast": {"crm_settle_days": 25}}))
    assert out.crm["settled"]["days"] == 25
    assert out.crm["settled"]["cohorts"] == sum(r["settled"] for r in out.crm["cohorts"]) > 0


def test_lead_days_older_than_crm_settle_days_are_settled(
    account: tuple[Workspace, Any], report: NowcastReport
) -> None:
    """Lead days at least ``crm_settle_days`` old are reported as observed (no deals drawn for
    their open leads), while their open leads still count in the CRM delay's fit: the fit and
    every younger lead day's point nowcast are those of nowcasting every lead day. A CRM whose
    old leads are never marked lost then draws only the last ``crm_settle_days`` lead days,
    however long its history."""
    ws = account[0]
    assert report.crm["settled"]["days"] == 180 and report.crm["settled"]["cohorts"] == 0
    every = nowcast(ws, options=NowcastOptions(crm_settle_days=None))
    assert every.crm["settled"] == {"days": None, "cohorts": 0}
    settled = nowcast(ws, options=NowcastOptions(crm_settle_days=20))
    opened = (AS_OF - timedelta(days=19)).isoformat()
    doc = settled.crm["settled"]
    old = [r for r in settled.crm["cohorts"] if r["date"] < opened]
    assert (doc["days"], doc["before"], doc["cohorts"]) == (20, opened, len(old))
    assert old and all(r["settled"] for r in old)
    assert not any(r["settled"] for r in settled.crm["cohorts"] if r["date"] >= opened)
    assert all(r["observed_deals"] == r["expected_deals"] == r["lower"] == r["upper"] for r in old)
    # an old lead day still had deals to come: settling it is a choice the report names
    before = {(r["campaign_id"], r["date"]): r for r in every.crm["cohorts"]}
    assert any(
        before[(r["campaign_id"], r["date"])]["expected_deals"] > r["expected_deals"] for r in old
    )
    assert settled.crm["delay"] == every.crm["delay"]  # the same fit
    young = [r for r in settled.crm["cohorts"] if r["date"] >= opened]
    assert young and all(
        r["expected_deals"] == before[(r["campaign_id"], r["date"])]["expected_deals"]
        for r in young
    )
    # 20 days is shorter than a deal takes: the share still due is named, with a warning
    assert doc["share_still_due"] > 0.005
    assert "raise crm_settle_days" in doc["warning"]
    assert "lead days before" in settled.to_text()


def test_an_earlier_as_of_sees_only_what_was_there(
    account: tuple[Workspace, Any], report: NowcastReport
) -> None:
    early = AS_OF - timedelta(10)
    out = nowcast(account[0], early, options=NowcastOptions(crm=False, cohort_days=14))
    assert out.as_of == early
    dates = {r["date"] for r in out.cohorts}
    assert max(dates) == early.isoformat() and len(dates) == 14
    later = {(r["campaign_id"], r["date"]): r for r in report.cohorts}
    for r in out.cohorts:
        assert (
            r["observed_conversions"]
            <= later[(r["campaign_id"], r["date"])]["observed_conversions"]
        )


def test_the_nonparametric_model_runs_end_to_end(account: tuple[Workspace, Any]) -> None:
    opts = NowcastOptions(model="discrete_hazard", crm=False, draws=200, cohort_days=3)
    out = nowcast(account[0], options=opts)
    assert {d["model"] for d in out.delay.values()} == {"discrete_hazard"}
    assert all(r["expected_conversions"] >= r["observed_conversions"] for r in out.cohorts)


def test_count_interval_covers_about_the_level() -> None:
    rng = np.random.default_rng(0)
    hits = n = 0
    for m in (0.2, 1.0, 3.0, 12.0):
        draws = rng.poisson(m, (4000, 200)).astype(float)
        lo, hi = count_interval(draws, 0.9, rng)
        truth = rng.poisson(m, 200)
        hits += int(((lo <= truth) & (truth <= hi)).sum())
        n += 200
    assert 0.86 <= hits / n <= 0.94


def test_empty_workspace(tmp_path: Path) -> None:
    with Workspace(tmp_path / "empty.duckdb") as ws:
        out = nowcast(ws)
    assert out.as_of is None and out.cohorts == [] and json.loads(out.to_json())["delay"] == {}


def _flags_one_window_at_a_time(
    cohorts: Any, windows: list[dict[str, Any]], as_of: date
) -> tuple[list[bool], list[bool]]:
    """The exclusion flags as the nowcast computed them before: every cohort, per window."""
    inside = np.zeros(len(cohorts), dtype=bool)
    overlap = np.zeros(len(cohorts), dtype=bool)
    d = cohorts.date.to_numpy()
    for w in windows:
        start = date.fromisoformat(w["start"])
        end = date.fromisoformat(w["end"]) if w["end"] else as_of
        if start > as_of or w["campaign_id"] is None:
            continue
        end = min(end, as_of)
        mine = (cohorts.campaign_id == w["campaign_id"]).to_numpy()
        ins = np.array([start <= x <= end for x in d], dtype=bool)
        ovl = np.array([x < start for x in d], dtype=bool)
        inside |= mine & ins
        overlap |= mine & ovl & ~ins
    return inside.tolist(), overlap.tolist()


@pytest.mark.parametrize("seed", range(5))
def test_exclusion_flags_per_campaign_equal_the_flags_window_by_window(seed: int) -> None:
    """Each window flags only its campaign's cohorts, by day number: the same ``in_window``
    and ``exclusion_overlap`` as testing every cohort against every window, with windows that
    overlap, stay open, begin after the as-of day or belong to no campaign, and cohorts of no
    campaign or of one without windows."""
    import pandas as pd

    from signalloop.nowcast import _flags, _Path

    rng = np.random.default_rng(seed)
    as_of = date(2026, 3, 31)
    day0 = as_of - timedelta(days=60)
    n = 400
    campaigns = np.array(["c1", "c2", "c3", "c4", None], dtype=object)
    cohorts = pd.DataFrame(
        {
            "campaign_id": campaigns[rng.integers(0, 5, n)],
            "date": [day0 + timedelta(days=int(k)) for k in rng.integers(0, 61, n)],
        }
    )
    windows = []
    for _ in range(int(rng.integers(8, 30))):
        start = day0 + timedelta(days=int(rng.integers(-5, 70)))
        length = int(rng.integers(0, 10))
        windows.append(
            {
                "campaign_id": ["c1", "c2", "c3", None][int(rng.integers(0, 4))],
                "start": start.isoformat(),
                "end": None if rng.random() < 0.2 else (start + timedelta(days=length)).isoformat(),
            }
        )
    path = _Path("days", [], cohorts.copy(), pd.DataFrame(), None, None, None, None)  # type: ignore[arg-type]
    _flags(path, windows, as_of)
    inside, overlap = _flags_one_window_at_a_time(cohorts, windows, as_of)
    assert path.cohorts.in_window.tolist() == inside
    assert path.cohorts.exclusion_overlap.tolist() == overlap
    assert any(inside) and any(overlap)


@pytest.mark.parametrize("shape", ["crm", "full"])
def test_the_crm_path_at_a_cut_equals_a_workspace_that_ends_there(
    tmp_path: Path, shape: str
) -> None:
    """The CRM path as of a day with later rows in the workspace (each record's outcome from
    the rows cut there) equals the one of a workspace holding only the rows up to that day
    (read from the stored per-record outcomes and campaigns), on a faulty account."""
    drops = simulated_drops(tmp_path, shape, every_fault(), seed=5)
    as_of = date(2026, 1, 21)  # the last day of the second drop
    opts = NowcastOptions(draws=200, cohort_days=14)
    got = {}
    for name, held in (("cut", drops), ("end", drops[:2])):
        with Workspace(tmp_path / f"{name}.duckdb") as ws:
            for drop in held:
                ingest_drop(ws, drop)
            got[name] = nowcast(ws, as_of, options=opts)
            if name == "end":
                state = ws.read_meta("rollup:crm_record_outcome")
                assert state["refresh"] == "full" and state["params"] == {"won": "won"}
    assert got["end"].crm["cohorts"], "no CRM cohorts to compare"
    assert got["cut"].crm == got["end"].crm


def test_a_clicks_first_conversion_is_the_earliest_ties_to_the_lowest_campaign() -> None:
    """Ranked among the clicks with several conversions only; the same rows as ranking all."""
    import ibis
    import pandas as pd

    from signalloop.nowcast import _first_of_click

    t0 = datetime(2026, 1, 5, 10)
    rows = pd.DataFrame(
        {
            "key": ["k1", "k1", "k1", "k2", "k3", "k3"],
            "campaign_id": ["c2", "c1", "c1", "c9", "c4", "c3"],
            "click": [t0] * 6,
            "ts": [t0 + timedelta(hours=h) for h in (2, 2, 2, 1, 5, 3)],
            "value": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "conversion_id": ["v3", "v2", "v1", "v4", "v5", "v6"],
        }
    )
    got = _first_of_click(ibis.memtable(rows)).to_pandas().sort_values("key")
    # k1: three at one instant, c1 before c2, then v1 before v2; k3: the earlier one
    assert list(zip(got.key, got.campaign_id, got.value, strict=True)) == [
        ("k1", "c1", 3.0),
        ("k2", "c9", 4.0),
        ("k3", "c3", 6.0),
    ]
