"""The nowcast on partial data: spend + conversions, no click times, spend only, CRM as kinds.

One seeded world (35 days, 4 campaigns: c01 and c04 lead campaigns with a CRM, c02 and c03
purchase) is written in several shapes (:class:`~signalloop.simulate.SimulationConfig`
``shape``), some then edited as a user's export would be (no click times, deals as
conversions, a crm table missing c04's records), and ingested into in-memory workspaces.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from signalloop import simulate as sim
from signalloop.ingest import ingest_file
from signalloop.nowcast import NowcastOptions, _spread_clicks, nowcast
from signalloop.store import Workspace

DAYS = 35
CONFIG = sim.SimulationConfig(days=DAYS, campaigns=4, seed=7)
AS_OF = CONFIG.start + timedelta(days=DAYS - 1)
OPTS = NowcastOptions(draws=200)


def ingest(folder: Path, tables: dict[str, pa.Table]) -> Workspace:
    """An in-memory workspace holding ``tables`` (kind -> table), ingested from Parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    ws = Workspace(":memory:")
    for kind, table in tables.items():
        path = folder / f"{kind}.parquet"
        pq.write_table(table, path)
        ingest_file(ws, kind, path, now=datetime(2030, 1, 1))
    return ws


def without_click_times(conv: pa.Table, campaigns: set[str] | None = None) -> pa.Table:
    """``conv`` with click_ts and click_id emptied (for ``campaigns``, or every row)."""
    cid = conv.column("campaign_id").to_pylist()
    drop = pa.array([campaigns is None or c in campaigns for c in cid])
    for col in ("click_ts", "click_id"):
        i = conv.column_names.index(col)
        blank = pa.nulls(len(conv), conv.schema.field(col).type)
        conv = conv.set_column(i, col, pc.if_else(drop, blank, conv.column(col)))
    return conv


def window(report: dict[str, Any], cid: str, days: int) -> dict[str, Any]:
    row = next(c for c in report["campaigns"] if c["campaign_id"] == cid)
    w: dict[str, Any] = row["windows"][f"{days}d"]
    return w


def truth(result: sim.Simulation, cid: str, days: int) -> float:
    """Eventual conversions of the clicks of the last ``days`` days (censored or not)."""
    daily = result.truth["daily"][cid]["conversions_by_click_date"]
    return float(sum(daily[DAYS - days :]))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("shapes")
    full = sim.simulate(CONFIG)
    partial = sim.simulate(replace(CONFIG, shape="spend_conversions"))
    spend, conv = partial.tables["spend"], partial.tables["conversions"]
    # c03 exports conversions without click times; c04 exports no conversions at all
    mixed = without_click_times(conv, {"c03"})
    mixed = mixed.filter(pc.not_equal(mixed.column("campaign_id"), "c04"))
    # won deals sent as conversions of kind deal (from the CRM's won rows), no crm table
    crm = full.tables["crm"]
    won = crm.filter(pc.equal(crm.column("stage"), "won"))
    fc = full.tables["conversions"]
    deal_cols: dict[str, Any] = {}
    for name in fc.column_names:
        typ = fc.schema.field(name).type
        deal_cols[name] = {
            "conversion_id": pc.binary_join_element_wise("won-", won.column("record_id"), ""),
            "ts": won.column("ts"),
            "kind": pa.array(["deal"] * won.num_rows),
            "user_id": won.column("user_id"),
            "value": won.column("amount"),
        }.get(name, pa.nulls(won.num_rows, typ))
    deals = pa.table(deal_cols).cast(fc.schema)
    no_deals = fc.filter(pc.not_equal(fc.column("kind"), "deal"))
    with_deals = pa.concat_tables([no_deals, deals])
    kinds = ("spend", "touchpoints", "changes")
    # c04's CRM records missing from the crm table: its stages arrive only as conversions
    # (a record recN began at the click of touch tN)
    tp = full.tables["touchpoints"]
    c04_touches = pc.filter(tp.column("touch_id"), pc.equal(tp.column("campaign_id"), "c04"))
    c04_records = pc.binary_join_element_wise("rec", pc.utf8_slice_codeunits(c04_touches, 1), "")
    crm_c01 = crm.filter(pc.invert(pc.is_in(crm.column("record_id"), c04_records)))
    workspaces = {
        "full": ingest(tmp / "full", dict(full.tables)),
        "spend_conversions": ingest(tmp / "sc", {"spend": spend, "conversions": conv}),
        "mixed": ingest(tmp / "mixed", {"spend": spend, "conversions": mixed}),
        "no_click_ts": ingest(
            tmp / "none", {"spend": spend, "conversions": without_click_times(conv)}
        ),
        "deals": ingest(
            tmp / "deals", {k: full.tables[k] for k in kinds} | {"conversions": with_deals}
        ),
        "crm_mixed": ingest(
            tmp / "crm_mixed", dict(full.tables) | {"crm": crm_c01.cast(crm.schema)}
        ),
    }
    done = {k: nowcast(ws, options=OPTS) for k, ws in workspaces.items()}
    reports = {k: r.to_dict() for k, r in done.items()}
    texts = {k: r.to_text() for k, r in done.items()}
    yield {
        "result": full,
        "reports": reports,
        "texts": texts,
        "won": won.num_rows,
        "workspaces": workspaces,
    }
    for ws in workspaces.values():
        ws.close()


def test_spend_and_click_ts_give_the_touchpoint_paths_totals(world: dict[str, Any]) -> None:
    """Without touchpoints, cohorts come from the spend clicks; totals match the full path.

    Tolerance: the two paths see the same conversions and the same number of clicks a day
    (the simulator's spend clicks are its touchpoints); they differ only in when within a
    day the clicks that did not convert came (spread by the hour-of-day profile learned
    from the converted clicks instead of known), which moves the youngest days' remainder a
    little: within 1% (+0.5) over 7 days and 0.3% (+0.5) over 28. Measured here: at most
    0.5% and 0.1% (0.1% and 0.0% on average over 6 seeds of 60 days); spreading the clicks
    uniformly over the day instead gives 1.6-2.2% on 7 days and fails.
    """
    full, part = world["reports"]["full"], world["reports"]["spend_conversions"]
    assert part["account"]["basis"]["click_ts"] == ["c01", "c02", "c03", "c04"]
    assert part["account"]["basis"]["touchpoints"] == []
    for cid in ("c01", "c02", "c03", "c04"):
        row = next(c for c in part["campaigns"] if c["campaign_id"] == cid)
        assert row["basis"] == "click_ts" and row["delay_source"] == "own"
        assert "touchpoints" in row["unlock"]
        for days, tol in ((7, 0.01), (28, 0.003)):
            a, b = window(full, cid, days), window(part, cid, days)
            assert b["observed_conversions"] == a["observed_conversions"]
            assert abs(b["expected_conversions"] - a["expected_conversions"]) <= (
                tol * a["expected_conversions"] + 0.5
            )
        # the nowcast is nearer the truth than what was observed so far
        t = truth(world["result"], cid, 7)
        w = window(part, cid, 7)
        assert abs(w["expected_conversions"] - t) < abs(w["observed_conversions"] - t)
    assert set(part["delay"]) == {"c01", "c02", "c03", "c04"}


def test_conversions_without_click_times_use_the_pooled_delay(world: dict[str, Any]) -> None:
    """c03 sends no click times: conversion days, the account's delay, and it says so."""
    mixed, full = world["reports"]["mixed"], world["reports"]["full"]
    assert mixed["account"]["basis"]["conversion_day"] == ["c03"]
    assert mixed["account"]["basis"]["click_ts"] == ["c01", "c02"]
    row = next(c for c in mixed["campaigns"] if c["campaign_id"] == "c03")
    assert row["basis"] == "conversion_day" and row["delay_source"] == "pooled"
    assert row["observed_by"] == "conversion_day"
    assert "click_ts" in row["missing"] and "click_ts" in row["unlock"]
    assert row["conversions_per_click"] > 0
    assert "c03" not in mixed["delay"]  # no delay of its own
    pooled = mixed["account"]["click"]["pooled_delay"]
    assert pooled["events"] == 0 and 5 < pooled["p50"] < 100  # hours
    t = truth(world["result"], "c03", 28)
    w, f = window(mixed, "c03", 28), window(full, "c03", 28)
    assert abs(w["expected_conversions"] - t) < 0.1 * t
    assert abs(w["expected_conversions"] - f["expected_conversions"]) < 0.1 * t
    assert w["lower"] <= w["expected_conversions"] <= w["upper"]
    cohorts = [r for r in mixed["cohorts"] if r["campaign_id"] == "c03"]
    last = max(cohorts, key=lambda r: str(r["date"]))
    assert last["date"] == AS_OF.isoformat() and last["completeness"] is None
    # the youngest click day still expects most of its conversions
    assert last["expected_conversions"] > 0 and last["clicks"] > 0


def test_no_click_times_anywhere_cannot_correct_and_says_so(world: dict[str, Any]) -> None:
    rep = world["reports"]["no_click_ts"]
    assert rep["account"]["basis"]["conversion_day"] == ["c01", "c02", "c03", "c04"]
    assert rep["delay"] == {} and "pooled_delay" not in rep["account"]["click"]
    for row in rep["campaigns"]:
        assert row["delay_source"] is None
        assert "no campaign has click_ts" in row["missing"]
        assert row["expected_conversions"] == row["observed_conversions"]


def test_a_campaign_with_spend_only_gets_basis_none(world: dict[str, Any]) -> None:
    rep = world["reports"]["mixed"]
    assert rep["account"]["basis"]["none"] == ["c04"]
    row = next(c for c in rep["campaigns"] if c["campaign_id"] == "c04")
    assert row["basis"] == "none" and row["expected_conversions"] is None
    assert row["spend"] > 0 and row["clicks"] > 0 and row["platform_conversions"] > 0
    assert "conversions" in row["missing"] and "campaign_id" in row["unlock"]
    assert row["windows"]["7d"]["expected_conversions"] is None
    assert row["windows"]["7d"]["spend"] > 0
    assert not [r for r in rep["cohorts"] if r["campaign_id"] == "c04"]
    assert "c04: not nowcast, missing conversions" in world["texts"]["mixed"]
    assert "c03 (from conversion_day): last 7d" in world["texts"]["mixed"]


def test_deals_sent_as_conversions_feed_the_crm_path(world: dict[str, Any]) -> None:
    """No crm table: the CRM's won rows sent as conversions of kind deal are deals."""
    rep = world["reports"]["deals"]
    crm = rep["crm"]
    assert crm["source"] == "conversions"
    assert any(w["kinds"].get("deal") == world["won"] for w in crm["warnings"])
    assert "crm rows (record_id, stage, ts" in crm["warnings"][-1]["message"]
    assert sum(c["observed_deals"] for c in crm["campaigns"]) == world["won"] > 0
    assert {c["campaign_id"] for c in crm["campaigns"]} == {"c01", "c04"}
    for c in crm["campaigns"]:
        assert c["expected_deals"] >= c["observed_deals"]
    full = world["reports"]["full"]["crm"]
    assert full["source"] == "crm" and full["warnings"] == []
    # the same leads either way: each lead conversion is a record
    leads = {c["campaign_id"]: c["leads"] for c in full["campaigns"]}
    assert {c["campaign_id"]: c["leads"] for c in crm["campaigns"]} == leads


def test_crm_kinds_without_leads_warn_instead_of_zero(
    tmp_path: Path, world: dict[str, Any]
) -> None:
    """Only deal and purchase conversions: nothing to count open leads from, so a warning."""
    partial = sim.simulate(replace(CONFIG, shape="spend_conversions"))
    conv = partial.tables["conversions"]
    conv = conv.filter(pc.is_in(conv.column("kind"), pa.array(["deal", "purchase"])))
    n_deals = int(pc.sum(pc.equal(conv.column("kind"), "deal")).as_py())
    with ingest(tmp_path, {"spend": partial.tables["spend"], "conversions": conv}) as ws:
        rep = nowcast(ws, options=NowcastOptions(draws=50)).to_dict()
    crm = rep["crm"]
    assert crm["source"] is None and crm["campaigns"] == [] and n_deals > 0
    assert crm["warnings"][0]["kinds"] == {"deal": n_deals}
    assert "send them as crm rows" in crm["warnings"][0]["message"]
    assert "unlock" in crm and "crm (record_id, stage, ts" in crm["unlock"]


def test_crm_stages_sent_only_as_conversions_warn_by_campaign(world: dict[str, Any]) -> None:
    """A crm table without c04's records, while c04's sql / opportunity / deal conversions
    arrive: the CRM path (which reads only the crm table) leaves c04 out, and says so by
    campaign, kind and count (recounted here from the tables: conversions of those kinds
    whose click is a c04 touch, up to the cut)."""
    full = world["result"]
    tp = full.tables["touchpoints"].to_pandas()
    conv = full.tables["conversions"].to_pandas()
    c04_clicks = set(tp.click_id[tp.campaign_id == "c04"])
    cut = pd.Timestamp(AS_OF + timedelta(days=1), tz="UTC")
    stages = conv[conv.kind.isin(["sql", "opportunity", "deal"]) & (conv.ts < cut)]
    own = stages[stages.click_id.isin(c04_clicks)]
    expected = {str(k): int(n) for k, n in own.kind.value_counts().items()}
    assert set(expected) == {"sql", "opportunity", "deal"} and expected["deal"] > 0
    crm = world["reports"]["crm_mixed"]["crm"]
    assert crm["source"] == "crm"
    assert [c["campaign_id"] for c in crm["campaigns"]] == ["c01"]
    assert len(crm["warnings"]) == 1
    w = crm["warnings"][0]
    assert w["campaigns"] == {"c04": expected} and w["kinds"] == dict(sorted(expected.items()))
    assert "c04: " in w["message"] and f"{expected['deal']} deal" in w["message"]
    assert "send them as crm rows (record_id, stage, ts" in w["message"]
    # every CRM campaign in the crm table: no warning
    assert world["reports"]["full"]["crm"]["warnings"] == []


def test_every_point_lies_in_its_interval_on_every_shape(world: dict[str, Any]) -> None:
    """Cohorts, campaigns, windows, CRM rows and the account's totals by date, on every shape
    (the conversion-day path's too, whose interval has no observed floor)."""
    checked = 0
    for name, rep in world["reports"].items():
        by = rep["account"]["by_date"]
        windows = [w for c in rep["campaigns"] for w in c["windows"].values()]
        rows = [*rep["cohorts"], *rep["campaigns"], *windows, *by["click"]]
        rows += by["click_with_excluded"]
        crm = rep["crm"]
        crm_windows = [w for c in crm["campaigns"] for w in c["windows"].values()]
        deals = [*crm["cohorts"], *crm["campaigns"], *crm_windows, *by["crm"]]
        for r in rows:
            if r["expected_conversions"] is None:  # basis none: nothing to hold
                assert r["lower"] is None and r["upper"] is None, (name, r)
                continue
            assert r["lower"] <= r["expected_conversions"] <= r["upper"], (name, r)
            assert r["value_lower"] <= r["expected_value"] <= r["value_upper"], (name, r)
            checked += 1
        for r in deals:
            assert r["observed_deals"] <= r["lower"] <= r["expected_deals"] <= r["upper"], r
            assert r["value_lower"] <= r["expected_value"] <= r["value_upper"], (name, r)
            checked += 1
    assert checked == 1884  # rows of six reports


def test_account_totals_by_date_on_mixed_bases(world: dict[str, Any]) -> None:
    """c01, c02 by click_ts, c03 by conversion day, c04 not nowcast: the totals per date hold
    the three nowcast campaigns, c03's count by conversion day apart, c04's spend nowhere."""
    rep = world["reports"]["mixed"]
    by = rep["account"]["by_date"]
    assert by["not_nowcast"] == ["c04"]
    cohorts = rep["cohorts"]
    assert {c["campaign_id"] for c in cohorts} == {"c01", "c02", "c03"}
    rows = {r["date"]: r for r in by["click"]}
    assert sorted(rows) == sorted({c["date"] for c in cohorts})
    for d, r in rows.items():
        mine = [c for c in cohorts if c["date"] == d]
        assert r["campaigns"] == len(mine)
        assert r["observed_conversions"] == sum(c["observed_conversions"] for c in mine)
        c03 = [c["observed_conversions"] for c in mine if c["campaign_id"] == "c03"]
        assert r["observed_by_conversion_day"] == sum(c03)
        assert r["spend"] == pytest.approx(sum(c["spend"] for c in mine), abs=0.02)
        exp = sum(c["expected_conversions"] for c in mine)
        assert r["expected_conversions"] == pytest.approx(exp, abs=0.02)
        # the floor is the click-day campaigns' observed count only
        click_day = r["observed_conversions"] - r["observed_by_conversion_day"]
        assert click_day <= r["lower"] <= r["expected_conversions"] <= r["upper"]
    assert sum(r["observed_by_conversion_day"] for r in rows.values()) > 0
    # the full shape has none of it
    full = world["reports"]["full"]["account"]["by_date"]
    assert all(r["observed_by_conversion_day"] == 0 for r in full["click"])
    assert full["not_nowcast"] == [] and len(full["crm"]) == DAYS


def test_spend_clicks_spread_over_the_day_clip_to_the_converted() -> None:
    day = AS_OF - timedelta(days=1)
    spend = pd.DataFrame({"campaign_id": ["a", "b"], "date": [day, day], "clicks": [2, 240]})
    events = pd.DataFrame(
        {"campaign_id": ["a", "a"], "date": [day, day], "eh": [47, 30], "n_obs": [4, 1]}
    )
    b = _spread_clicks(spend, events, AS_OF)
    a = b[b.campaign_id == "a"]
    # fewer spend clicks than converted: the day holds just the 5 converted clicks
    assert a.n_all.sum() == pytest.approx(5.0)
    assert set(a.eh) == {47, 30}
    # no conversions: uniform over the 24 hours (no profile given)
    assert b[b.campaign_id == "b"].n_all.tolist() == pytest.approx([10.0] * 24)


@pytest.mark.parametrize("shape", ["full", "spend_conversions", "mixed"])
def test_settled_click_days_on_every_basis(world: dict[str, Any], shape: str) -> None:
    """``settle_days=20`` on the 35-day account: the 15 oldest click days are settled on the
    touchpoint and ``click_ts`` bases (the spend clicks of a day as one bucket), each reported
    as observed with the clicks it had; the conversion-day path (c03 in ``mixed``) is not
    touched; each campaign's last 7 days stay inside the 90% interval of settling nothing,
    and their sum within 2% of its."""
    ws = world["workspaces"][shape]
    short = nowcast(ws, options=replace(OPTS, settle_days=20, crm=False)).to_dict()
    every = nowcast(ws, options=replace(OPTS, settle_days=None, crm=False)).to_dict()
    opened = (AS_OF - timedelta(days=19)).isoformat()
    by_key = {(r["campaign_id"], r["date"]): r for r in every["cohorts"]}
    settled = [r for r in short["cohorts"] if r.get("settled")]
    click_path = [r for r in short["cohorts"] if "settled" in r]
    assert settled and all(r["date"] < opened for r in settled)
    assert [r for r in click_path if r["date"] < opened] == settled
    assert short["account"]["click"]["settled"]["cohorts"] == len(settled)
    for r in settled:
        assert r["observed_conversions"] == r["expected_conversions"] == r["lower"] == r["upper"]
        assert r["clicks"] == by_key[(r["campaign_id"], r["date"])]["clicks"]
    if shape == "mixed":  # c03: conversions without click times, by conversion day
        assert not any(r["campaign_id"] == "c03" for r in click_path)
        assert any(r["campaign_id"] == "c03" for r in short["cohorts"])
    sums = [0.0, 0.0]
    for c in every["campaigns"]:
        if c.get("basis") == "none":
            continue
        a, b = window(short, c["campaign_id"], 7), window(every, c["campaign_id"], 7)
        assert b["lower"] <= a["expected_conversions"] <= b["upper"], c["campaign_id"]
        sums[0] += a["expected_conversions"]
        sums[1] += b["expected_conversions"]
    assert abs(sums[0] - sums[1]) <= 0.02 * sums[1]
