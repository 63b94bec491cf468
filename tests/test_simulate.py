"""Tests of the account simulator: determinism, contract, censoring, the model, every fault."""

from __future__ import annotations

import hashlib
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from signalloop import simulate as sim
from signalloop.contract import FUNNEL, KINDS
from signalloop.errors import UsageError
from signalloop.simulate.identities import IDENTITY_COLUMNS
from signalloop.simulate.traits import TRAIT_COLUMNS

DAYS, CAMPAIGNS, SEED = 56, 4, 11
IDS = sim.campaign_ids(CAMPAIGNS)
# c01 meta lead, c02 google purchase, c03 meta purchase, c04 google lead
FAULTS = {
    "tracking_outage": "tracking_outage@c02:30-36",
    "crm_sync_dropout": "crm_sync_dropout@c01:20-29",
    "utm_mess": "utm_mess@c03:10-30",
    "duplicate_events": "duplicate_events@c02:40-50",
    "stage_overwrite": "stage_overwrite@c04:20-50",
    "late_offline_conversions": "late_offline_conversions@c04:10-40",
    "creative_starvation": "creative_starvation@c03:15-",
    "override_storm": "override_storm@c02:14-34",
    "low_volume": "low_volume@c02:21-41",
}
FRAMES = ("spend", "touchpoints", "conversions", "crm", "changes")
#: the offline conversions of the CRM path: kind -> (CRM stage, id prefix)
OFFLINE = {"sql": ("sql", "sq"), "opportunity": ("opportunity", "op"), "deal": ("won", "dl")}


@cache
def run(*specs: str, days: int = DAYS, seed: int = SEED) -> sim.Simulation:
    faults = tuple(sim.parse_fault(s, days=days, campaign_ids=IDS) for s in specs)
    return sim.simulate(
        sim.SimulationConfig(days=days, campaigns=CAMPAIGNS, seed=seed, faults=faults)
    )


@cache
def frames(*specs: str) -> dict[str, pd.DataFrame]:
    """The tables as pandas frames, with campaign ids filled in from the touch numbers."""
    tables = run(*specs).tables
    out = {k: tables[k].to_pandas() for k in FRAMES}
    touch = out["touchpoints"].set_index(out["touchpoints"].touch_id.str[1:]).campaign_id
    conv = out["conversions"]
    conv["campaign"] = conv.conversion_id.str[2:].map(touch).to_numpy()
    out["crm"]["campaign"] = out["crm"].record_id.str[3:].map(touch).to_numpy()
    for k in ("touchpoints", "conversions", "crm", "changes"):
        out[k]["day"] = (out[k].ts - pd.Timestamp("2026-01-01", tz="UTC")).dt.days
    return out


def fault_truth(name: str) -> dict[str, Any]:
    (note,) = run(FAULTS[name]).truth["faults"]
    return note


def rows(note: dict[str, Any], what: str, table: str) -> int:
    return int(note["rows"][what][table])


def in_window(df: pd.DataFrame, lo: int, hi: int) -> pd.Series:
    return (df.day >= lo) & (df.day <= hi)


def spend_day(df: pd.DataFrame) -> pd.Series:
    return (pd.to_datetime(df.date) - pd.Timestamp("2026-01-01")).dt.days


def same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return a.reset_index(drop=True).equals(b.reset_index(drop=True))


# ---- determinism and the contract --------------------------------------------------------


def digest(paths: dict[str, Path]) -> dict[str, str]:
    return {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in paths.items()}


def test_same_seed_same_bytes_and_different_seed_differs(tmp_path: Path) -> None:
    config = sim.SimulationConfig(days=30, campaigns=3, seed=5)
    a = digest(sim.write(sim.simulate(config), tmp_path / "a"))
    b = digest(sim.write(sim.simulate(config), tmp_path / "b"))
    other = sim.SimulationConfig(days=30, campaigns=3, seed=6)
    c = digest(sim.write(sim.simulate(other), tmp_path / "c"))
    assert a == b
    assert set(a) == {*FRAMES, "truth"}
    assert all(a[k] != c[k] for k in a)
    kinds = set(pd.read_csv(tmp_path / "a" / "conversions.csv").kind)
    assert kinds >= {"lead", "sql", "opportunity"}


def test_csv_text_keeps_each_column_in_its_chunks() -> None:
    """A long simulation's string column holds more than one ``string`` array can (2 GiB:
    100 campaigns over 365 days failed with "offset overflow"), so the text is made chunk by
    chunk and never combined; the text is the same as the whole column's."""
    import pyarrow as pa

    from signalloop.simulate.tables import csv_text

    ts = pa.array([0, 3_600, 86_400], pa.timestamp("s", tz="UTC"))
    table = pa.table(
        {
            "url": pa.chunked_array([["https://a/?x=1", None], ["https://b/"]]),
            "ts": pa.chunked_array([ts[:2], ts[2:]]),
            "spend": pa.chunked_array([[1.25, -2.5], [None]], pa.float64()),
        }
    )
    text = csv_text(table)
    assert [text[n].num_chunks for n in text.column_names] == [2, 2, 2]
    assert text.to_pydict() == {
        "url": ["https://a/?x=1", None, "https://b/"],
        "ts": ["1970-01-01T00:00:00Z", "1970-01-01T01:00:00Z", "1970-01-02T00:00:00Z"],
        "spend": ["1.25", "-2.50", None],
    }


def test_written_files_follow_the_contract(tmp_path: Path) -> None:
    paths = sim.write(run(FAULTS["utm_mess"]), tmp_path)
    assert paths["truth"].name == "truth.json"
    for kind in FRAMES:
        df = pd.read_csv(paths[kind], dtype=str, keep_default_na=False)
        spec = KINDS[kind]
        # contract columns in contract order; touchpoints then carry the simulated traits,
        # the CRM the contacts' identities
        extra = {"touchpoints": list(TRAIT_COLUMNS), "crm": list(IDENTITY_COLUMNS)}.get(kind, [])
        assert list(df.columns) == [c for c in spec.names if c in df.columns] + extra
        assert set(spec.required) <= set(df.columns), kind
        for col in spec.required:
            assert (df[col] != "").all(), (kind, col)
        for col in spec.columns:
            if col.name not in df.columns:
                continue
            values = df[col.name][df[col.name] != ""]
            if col.type == "ts":
                assert values.str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all(), col.name
                pd.to_datetime(values, format="%Y-%m-%dT%H:%M:%SZ")
            elif col.type == "date":
                pd.to_datetime(values, format="%Y-%m-%d")
            elif col.type in ("int", "float"):
                nums = pd.to_numeric(values)
                if col.nonnegative:
                    assert (nums >= 0).all(), (kind, col.name)
            elif col.choices:
                assert set(values) <= set(col.choices), (kind, col.name)
    spend = pd.read_csv(paths["spend"])
    assert (spend.clicks <= spend.impressions).all()
    assert spend.spend.map(lambda v: f"{v:.2f}" == f"{round(v, 2):.2f}").all()


def test_natural_keys_unique_without_duplicate_fault() -> None:
    f = frames()
    for kind in FRAMES:
        key = list(KINDS[kind].key)
        assert not f[kind].duplicated(key).any(), kind


def test_default_account_size_and_speed(tmp_path: Path) -> None:
    started = time.perf_counter()
    result = sim.simulate(sim.SimulationConfig(seed=7))
    sim.write(result, tmp_path)
    assert time.perf_counter() - started < 5.0
    touches = result.tables["touchpoints"].num_rows
    assert 50_000 <= touches <= 300_000
    platforms = {c["platform"] for c in result.truth["campaigns"].values()}
    assert platforms == {"meta", "google", "linkedin"}
    objectives = [c["objective"] for c in result.truth["campaigns"].values()]
    assert objectives[0] == "lead" and "purchase" in objectives
    per_week = [7 * np.mean(a["conversions"]) for a in result.truth["learning"].values()]
    assert min(per_week) < 50 < max(per_week)


# ---- censoring, delays, CRM --------------------------------------------------------------


def test_nothing_after_the_last_day_and_truth_covers_observed() -> None:
    f = frames()
    truth = run().truth
    for kind in ("touchpoints", "conversions", "crm", "changes"):
        assert f[kind].day.max() <= DAYS - 1, kind
    assert truth["censored"]["conversions"] > 0
    conv = f["conversions"][f["conversions"].source.isin(["pixel", "server"])]
    click_day = (conv.click_ts - pd.Timestamp("2026-01-01", tz="UTC")).dt.days
    observed = conv.groupby([conv.campaign, click_day]).size()
    for (cid, day), n in observed.items():
        assert truth["daily"][cid]["conversions_by_click_date"][day] >= n
    eventual = sum(sum(d["conversions_by_click_date"]) for d in truth["daily"].values())
    assert eventual > len(conv)
    last = sum(d["conversions_by_click_date"][-1] for d in truth["daily"].values())
    assert last > observed.xs(DAYS - 1, level=1).sum()


def test_truth_daily_matches_spend_and_clicks() -> None:
    f = frames()
    truth = run().truth
    spend = f["spend"].assign(day=spend_day(f["spend"]))
    by = spend.groupby(["campaign_id", "day"])[["spend", "clicks"]].sum()
    for (cid, day), row in by.iterrows():
        assert truth["daily"][cid]["spend"][day] == pytest.approx(row.spend, abs=0.02)
        assert truth["daily"][cid]["clicks"][day] == row.clicks
    assert len(f["touchpoints"]) == spend.clicks.sum()


def test_median_click_to_conversion_delay() -> None:
    conv = frames()["conversions"]
    conv = conv[conv.source.isin(["pixel", "server"])]
    hours = (conv.ts - conv.click_ts).dt.total_seconds() / 3600
    assert 12 <= hours.median() <= 36
    assert (hours > 0).all()
    for c in run().truth["campaigns"].values():
        assert 12 <= c["delay"]["median_hours"] <= 40


def stage_rank(crm: pd.DataFrame) -> pd.DataFrame:
    crm = crm[crm.stage != "lost"].sort_values(["record_id", "ts"])
    return crm.assign(rank=crm.stage.map(FUNNEL.index))


def backwards_records(crm: pd.DataFrame) -> set[str]:
    ranked = stage_rank(crm)
    drop = ranked.groupby("record_id")["rank"].diff() < 0
    return set(ranked.record_id[drop])


def test_crm_funnel_monotone_and_deals_become_conversions() -> None:
    f = frames()
    crm = f["crm"]
    assert backwards_records(crm) == set()
    assert set(crm.stage) == {*FUNNEL, "lost"}
    assert crm.campaign.notna().all()
    lead_first = stage_rank(crm).groupby("record_id").stage.first()
    assert (lead_first == "lead").all()
    won = crm[crm.stage == "won"]
    deals = f["conversions"][f["conversions"].kind == "deal"]
    assert len(deals) > 0
    assert set(deals.source) <= {"offline", "crm"}
    assert set(deals.conversion_id.str[2:]) <= set(won.record_id.str[3:])
    assert deals.value.gt(0).all() and won.amount.gt(0).all()


def test_crm_stages_become_offline_conversions() -> None:
    """sql, opportunity and won each give a conversion at the stage's time, with the click."""
    f = frames()
    conv, crm = f["conversions"], f["crm"]
    offline = conv[conv.source.isin(["offline", "crm"])]
    assert set(offline.kind) == set(OFFLINE)
    assert offline.conversion_id.is_unique
    assert set(offline.campaign) == {"c01", "c04"}  # the lead campaigns only
    assert set(conv.kind[conv.campaign.isin(["c02", "c03"])]) == {"purchase"}
    # deal source: offline for meta (c01), crm for google (c04); no campaign on the row
    assert set(offline.source[offline.campaign == "c01"]) == {"offline"}
    assert set(offline.source[offline.campaign == "c04"]) == {"crm"}
    assert offline.campaign_id.isna().all() and offline.creative_id.isna().all()
    leads = conv[conv.kind == "lead"].assign(n=conv.conversion_id.str[2:]).set_index("n")
    touch = f["touchpoints"].assign(n=f["touchpoints"].touch_id.str[1:]).set_index("n")
    for kind, (stage, prefix) in OFFLINE.items():
        rows = offline[offline.kind == kind].assign(n=offline.conversion_id.str[2:]).set_index("n")
        assert (rows.conversion_id.str[:2] == prefix).all()
        assert len(rows) >= 3, kind
        # exactly the CRM records at that stage (both censored at the same end)
        at = crm[crm.stage == stage].assign(n=crm.record_id.str[3:]).set_index("n")
        assert set(rows.index) == set(at.index), kind
        at = at.loc[rows.index]
        assert (rows.ts == at.ts).all(), kind
        assert (rows.user_id == at.user_id).all(), kind
        # the originating click: click id and time of the touchpoint and of the lead
        assert (rows.click_id == touch.click_id.loc[rows.index]).all(), kind
        assert (rows.click_ts == touch.ts.loc[rows.index]).all(), kind
        assert (rows.click_ts == leads.click_ts.loc[rows.index]).all(), kind
        if kind == "sql":
            assert rows.value.isna().all() and at.amount.isna().all()
        else:  # the opportunity amount / the won amount
            assert (rows.value == at.amount).all() and rows.value.gt(0).all(), kind
    # each record's sql <= opportunity <= deal in time
    ts = offline.assign(n=offline.conversion_id.str[2:]).pivot(
        index="n", columns="kind", values="ts"
    )
    for a, b in (("sql", "opportunity"), ("opportunity", "deal")):
        both = ts[a].notna() & ts[b].notna()
        assert both.any() and (ts[a][both] < ts[b][both]).all()
    assert ts.sql.notna()[ts.opportunity.notna()].all()


def test_truth_daily_offline_conversions() -> None:
    f, truth = frames(), run().truth
    conv = f["conversions"]
    for kind, name in (("sql", "sqls"), ("opportunity", "opportunities"), ("deal", "deals")):
        rows = conv[conv.kind == kind]
        observed = rows.groupby([rows.campaign, rows.day]).size()
        for cid, daily in truth["daily"].items():
            series = daily[f"{name}_by_event_date"]
            got = observed.get(cid, pd.Series(dtype=int)).reindex(range(DAYS), fill_value=0)
            assert series == got.astype(float).tolist(), (cid, kind)  # nothing is censored
            assert sum(daily[f"{name}_by_click_date"]) >= sum(series), (cid, kind)
        opp = rows.groupby([rows.campaign, rows.day]).value.sum() if kind != "sql" else None
        if opp is not None:
            vname = "opportunity_value" if kind == "opportunity" else "deal_value"
            for (cid, day), v in opp.items():
                assert truth["daily"][cid][f"{vname}_by_event_date"][day] == pytest.approx(v)
    for cid, daily in truth["daily"].items():
        for by in ("click", "event"):
            parts = [daily[f"{n}_by_{by}_date"] for n in ("sqls", "opportunities", "deals")]
            assert daily[f"offline_conversions_by_{by}_date"] == np.sum(parts, axis=0).tolist()
        lead = truth["campaigns"][cid]["objective"] == "lead"
        assert (sum(daily["sqls_by_click_date"]) > 0) == lead, cid


# ---- creatives ---------------------------------------------------------------------------


def test_ctr_decays_with_age_and_creatives_are_replaced() -> None:
    f = frames()
    truth = run().truth
    launch = {c["creative_id"]: c["launch_day"] for c in truth["creatives"]}
    spend = f["spend"].assign(day=spend_day(f["spend"]))
    spend["age"] = spend.day - spend.creative_id.map(launch)
    young = spend[spend.age < 7]
    old = spend[spend.age >= 28]
    assert young.clicks.sum() / young.impressions.sum() > 1.2 * (
        old.clicks.sum() / old.impressions.sum()
    )
    onsets = [c for c in truth["creatives"] if c["fatigue_onset_day"] is not None]
    assert len(onsets) >= 5
    assert all(c["fatigue_onset_day"] > c["launch_day"] for c in onsets)
    replaced = [c for c in truth["creatives"] if c["launch_day"] > 0]
    early = {c["creative_id"] for c in replaced if c["launch_day"] < DAYS - 3}
    assert early and early <= set(spend.creative_id)
    rotations = f["changes"][f["changes"].field == "creative"]
    assert set(rotations.new_value) == {c["creative_id"] for c in replaced}


# ---- faults ------------------------------------------------------------------------------


def untouched(name: str, kinds: tuple[str, ...], campaign: str) -> None:
    """Every row of every other campaign is exactly as in the fault-free run."""
    base, bad = frames(), frames(FAULTS[name])
    for kind in kinds:
        col = "campaign_id" if kind in ("spend", "touchpoints") else "campaign"
        a = base[kind][base[kind][col] != campaign]
        b = bad[kind][bad[kind][col] != campaign]
        assert same(a, b), kind


def test_tracking_outage() -> None:
    note = fault_truth("tracking_outage")
    base, bad = frames(), frames(FAULTS["tracking_outage"])
    assert (note["start"], note["end"], note["start_date"]) == (30, 36, "2026-01-31")

    def tracked(df: pd.DataFrame) -> pd.Series:
        return (df.campaign == "c02") & df.source.isin(["pixel", "server"]) & in_window(df, 30, 36)

    assert tracked(base["conversions"]).sum() == rows(note, "removed", "conversions") > 0
    assert set(base["conversions"].conversion_id[tracked(base["conversions"])]) == set(
        note["conversion_ids"]
    )
    assert tracked(bad["conversions"]).sum() == 0
    assert same(base["touchpoints"], bad["touchpoints"])
    window = bad["spend"].campaign_id.eq("c02") & bad["spend"].date.between(
        pd.Timestamp("2026-01-31").date(), pd.Timestamp("2026-02-06").date()
    )
    assert bad["spend"].platform_conversions[window].sum() < (
        0.5 * base["spend"].platform_conversions[window].sum()
    )
    assert bad["spend"].spend.equals(base["spend"].spend)
    untouched("tracking_outage", ("conversions", "crm"), "c02")


def test_tracking_outage_leaves_offline_conversions() -> None:
    """On a lead campaign the outage removes leads but no sql / opportunity / deal rows."""
    spec = "tracking_outage@c01:20-40"
    (note,) = run(spec).truth["faults"]
    base, bad = frames(), frames(spec)
    conv = base["conversions"]
    hit = conv.campaign.eq("c01") & conv.source.isin(["pixel", "server"]) & in_window(conv, 20, 40)
    assert set(conv.conversion_id[hit]) == set(note["conversion_ids"]) and hit.sum() > 0
    assert same(conv[~hit], bad["conversions"])
    offline = conv.campaign.eq("c01") & conv.kind.isin(list(OFFLINE)) & in_window(conv, 20, 40)
    assert offline.sum() >= 10
    assert same(base["crm"], bad["crm"])


def test_crm_sync_dropout() -> None:
    note = fault_truth("crm_sync_dropout")
    base, bad = frames(), frames(FAULTS["crm_sync_dropout"])
    hit = base["crm"].campaign.eq("c01") & in_window(base["crm"], 20, 29)
    assert hit.sum() == rows(note, "removed", "crm") > 0
    assert not (bad["crm"].campaign.eq("c01") & in_window(bad["crm"], 20, 29)).any()
    assert same(base["crm"][~hit], bad["crm"])
    conv = base["conversions"]
    offline = conv.source.isin(["offline", "crm"])
    lost = conv.campaign.eq("c01") & offline & in_window(conv, 20, 29)
    assert lost.sum() == rows(note, "removed", "conversions")
    assert set(conv.conversion_id[lost]) == set(note["conversion_ids"])
    assert {"sql", "opportunity"} <= set(conv.kind[lost])
    assert same(conv[~lost], bad["conversions"])  # pixel / server rows in the window stay
    untouched("crm_sync_dropout", ("conversions", "crm"), "c01")


def test_utm_mess() -> None:
    note = fault_truth("utm_mess")
    bad = frames(FAULTS["utm_mess"])["touchpoints"]
    canonical = bad.utm_source.isin(["facebook", "google"]) & bad.utm_medium.isin(
        ["paid_social", "cpc"]
    )
    hit = bad.campaign_id.eq("c03") & in_window(bad, 10, 30)
    assert (~canonical).sum() == (~canonical & hit).sum() == rows(note, "changed", "touchpoints")
    share = (~canonical[hit]).mean()
    assert 0.25 < share < 0.45
    messy = bad[~canonical]
    assert {"Facebook", "fb"} & set(messy.utm_source)
    assert all(
        s.strip().replace(" ", "+") in url
        for s, url in zip(messy.utm_source, messy.landing_url, strict=True)
    )
    untouched("utm_mess", ("spend", "conversions", "crm"), "c03")


def test_duplicate_events() -> None:
    note = fault_truth("duplicate_events")
    base, bad = frames(), frames(FAULTS["duplicate_events"])
    conv = bad["conversions"]
    dup = conv[conv.duplicated("conversion_id", keep=False)]
    assert len(conv) - len(base["conversions"]) == rows(note, "added", "conversions") > 0
    assert set(dup.conversion_id) == set(note["conversion_ids"])
    assert set(dup.campaign) == {"c02"} and in_window(dup, 40, 50).all()
    hit = base["conversions"].campaign.eq("c02") & in_window(base["conversions"], 40, 50)
    assert 0.10 <= note["share"] <= 0.20
    assert rows(note, "added", "conversions") / hit.sum() == pytest.approx(note["share"], abs=0.06)
    gaps = dup.sort_values("ts").groupby("conversion_id").ts.agg(lambda s: s.max() - s.min())
    assert (gaps > pd.Timedelta(0)).all() and (gaps < pd.Timedelta(seconds=11)).all()
    untouched("duplicate_events", ("conversions",), "c02")


def test_duplicate_events_copy_offline_conversions_too() -> None:
    spec = "duplicate_events@c01:20-50"
    (note,) = run(spec).truth["faults"]
    base, bad = frames(), frames(spec)["conversions"]
    dup = bad[bad.duplicated("conversion_id", keep=False)]
    assert set(dup.conversion_id) == set(note["conversion_ids"])
    assert len(bad) - len(base["conversions"]) == rows(note, "added", "conversions")
    assert {"lead", "sql", "opportunity"} <= set(dup.kind)
    assert set(dup.campaign) == {"c01"} and in_window(dup, 20, 50).all()
    first = bad.drop_duplicates("conversion_id")
    assert same(
        first.sort_values("conversion_id"), base["conversions"].sort_values("conversion_id")
    )


def test_stage_overwrite() -> None:
    note = fault_truth("stage_overwrite")
    base, bad = frames(), frames(FAULTS["stage_overwrite"])
    back = backwards_records(bad["crm"])
    assert back == set(note["record_ids"]) and len(back) >= 3
    added = pd.concat([bad["crm"], base["crm"]]).drop_duplicates(keep=False)
    assert len(added) == rows(note, "added", "crm")
    assert set(added.campaign) == {"c04"} and in_window(added, 20, 50).all()
    untouched("stage_overwrite", ("crm",), "c04")


def test_late_offline_conversions() -> None:
    note = fault_truth("late_offline_conversions")
    base, bad = frames(), frames(FAULTS["late_offline_conversions"])
    ids = set(note["conversion_ids"])
    conv = base["conversions"]
    was = conv.set_index("conversion_id").ts
    now = bad["conversions"].set_index("conversion_id").ts
    assert ids <= set(was.index)
    # every offline / crm conversion of c04 in the window, and nothing else
    hit = conv.campaign.eq("c04") & conv.source.isin(["offline", "crm"]) & in_window(conv, 10, 40)
    assert set(conv.conversion_id[hit]) == ids
    assert len(ids) == rows(note, "changed", "conversions") >= 100
    by_kind = note["delayed_by_kind"]
    assert list(by_kind) == ["sql", "opportunity", "deal"]
    assert by_kind == conv.kind[hit].value_counts().reindex(list(by_kind), fill_value=0).to_dict()
    assert by_kind["sql"] > 0 and by_kind["opportunity"] > 0
    moved = [i for i in ids if i in now.index]
    assert len(ids) - len(moved) == note["delayed_past_end"] > 0
    lag = pd.Series({i: now[i] - was[i] for i in moved})
    assert lag.between(pd.Timedelta(days=14), pd.Timedelta(days=35)).all()
    rest = conv[~conv.conversion_id.isin(ids)]
    assert same(rest, bad["conversions"][~bad["conversions"].conversion_id.isin(ids)])
    assert same(base["crm"], bad["crm"])  # the CRM itself is on time


def test_creative_starvation() -> None:
    note = fault_truth("creative_starvation")
    truth, base_truth = run(FAULTS["creative_starvation"]).truth, run().truth
    bad = frames(FAULTS["creative_starvation"])
    new = [c for c in truth["creatives"] if c["campaign"] == "c03" and c["launch_day"] >= 15]
    assert new == []
    rot = bad["changes"]
    assert (
        not (rot.field.eq("creative") & rot.entity_id.str.startswith("c03"))
        .loc[rot.day >= 15]
        .any()
    )
    assert note["blocked_creatives"]
    assert any(c["campaign"] == "c03" and c["launch_day"] >= 15 for c in base_truth["creatives"])

    def fatigued_share(t: dict[str, object], spend: pd.DataFrame) -> float:
        onset = {c["creative_id"]: c["fatigue_onset_day"] for c in t["creatives"]}  # type: ignore[attr-defined]
        s = spend[spend.campaign_id.eq("c03")]
        day = spend_day(s)
        tired = s.creative_id.map(onset).le(day)
        return float(s.spend[tired & (day >= 35)].sum() / s.spend[day >= 35].sum())

    assert fatigued_share(truth, bad["spend"]) > 0.6
    assert fatigued_share(truth, bad["spend"]) > fatigued_share(base_truth, frames()["spend"])
    untouched("creative_starvation", ("spend", "touchpoints", "conversions", "crm"), "c03")


def test_override_storm() -> None:
    truth, base_truth = run(FAULTS["override_storm"]).truth, run().truth
    ch = frames(FAULTS["override_storm"])["changes"]
    human = ch[ch.actor.eq("human") & ch.entity_id.str.startswith("c02") & in_window(ch, 14, 34)]
    assert len(human) >= 2 * 3  # several per week over three weeks (same-day budget edits merge)
    for adset, info in truth["learning"].items():
        if info["campaign"] != "c02":
            assert info == base_truth["learning"][adset]
            continue
        resets = [r for r in info["resets"] if 14 <= r["day"] <= 34 and r["actor"] == "human"]
        assert len(resets) >= 4
        unstable = sum(s != "stable" for s in info["states"][14:35])
        assert unstable >= sum(
            s != "stable" for s in base_truth["learning"][adset]["states"][14:35]
        )
    assert fault_truth("override_storm")["edits"]["c02"] >= 9


def test_low_volume() -> None:
    note = fault_truth("low_volume")
    truth, base_truth = run(FAULTS["low_volume"]).truth, run().truth
    conv = truth["daily"]["c02"]["conversions_by_click_date"]
    base_conv = base_truth["daily"]["c02"]["conversions_by_click_date"]
    weekly = [sum(conv[d : d + 7]) for d in range(21, 42 - 6)]
    assert max(weekly) < 35  # well under 50 conversions per 7 days
    assert sum(conv[21:42]) < sum(base_conv[21:42])
    assert note["expected_conversions_7d"]["c02"] < 20
    assert max(truth["daily"]["c02"]["budget"][21:42]) <= note["budget_cap"]["c02"]
    ch = frames(FAULTS["low_volume"])["changes"]
    cut = ch[ch.entity_id.eq("c02") & ch.field.eq("budget") & ch.day.eq(21)]
    assert list(cut.actor) == ["human"]
    for cid in ("c01", "c03", "c04"):
        assert truth["daily"][cid] == base_truth["daily"][cid]


def test_star_campaign_applies_everywhere() -> None:
    result = run("crm_sync_dropout@*:20-29")
    (note,) = result.truth["faults"]
    assert note["campaigns"] == IDS
    crm = result.tables["crm"].to_pandas()
    days = (crm.ts - pd.Timestamp("2026-01-01", tz="UTC")).dt.days
    assert not days.between(20, 29).any()


# ---- parse_fault -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("tracking_outage@c02:60-66", sim.Fault("tracking_outage", "c02", 60, 66)),
        ("utm_mess@2:10-", sim.Fault("utm_mess", "c02", 10, 89)),
        ("low_volume@*", sim.Fault("low_volume", "*", 0, 89)),
        ("duplicate_events@c01:5", sim.Fault("duplicate_events", "c01", 5, 5)),
        (" stage_overwrite@c03:0-89 ", sim.Fault("stage_overwrite", "c03", 0, 89)),
    ],
)
def test_parse_fault_accepts(spec: str, expected: sim.Fault) -> None:
    assert sim.parse_fault(spec, days=90, campaign_ids=sim.campaign_ids(3)) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tracking_outage", "expected NAME@CAMPAIGN"),
        ("outage@c01:1-2", "unknown fault name 'outage'"),
        ("outage@c01:1-2", "tracking_outage, crm_sync_dropout"),
        ("utm_mess@c09:1-2", "unknown campaign 'c09'"),
        ("utm_mess@c09:1-2", "c01, c02, c03"),
        ("utm_mess@4", "unknown campaign '4'"),
        ("utm_mess@c01:5-90", "out of range"),
        ("utm_mess@c01:9-3", "out of range"),
        ("utm_mess@c01:a-b", "got 'a-b'"),
    ],
)
def test_parse_fault_rejects(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        sim.parse_fault(spec, days=90, campaign_ids=sim.campaign_ids(3))


def test_bad_arguments_raise_usage_errors() -> None:
    with pytest.raises(UsageError, match="at least 1"):
        sim.campaign_ids(0)
    with pytest.raises(UsageError, match="days"):
        sim.simulate(sim.SimulationConfig(days=0))
    account = sim.Account(sim.SimulationConfig(days=3, campaigns=2))
    with pytest.raises(UsageError, match="budget of c01"):
        account.step(0, {"c01": -5.0})


def test_account_step_follows_external_budgets() -> None:
    config = sim.SimulationConfig(days=10, campaigns=2, seed=1)
    account = sim.Account(config)
    spend = []
    for day in range(10):
        budgets = {"c01": 400.0 if day >= 5 else 100.0, "c02": 100.0}
        events = account.step(day, budgets)
        spend.append(events.spend["spend"][events.spend["camp"] == 0].sum())
        if day == 5:
            assert [c.field for c in events.changes if c.entity_id == "c01"] == ["budget"]
            assert set(events.learning.values()) >= {"learning"}
        conv = events.conversions
        assert (conv["ts"] >= conv["click_ts"]).all()
    assert np.mean(spend[5:]) > 3 * np.mean(spend[:5])
