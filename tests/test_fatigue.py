"""Creative fatigue: the decay fit recovers known decay; onsets against the simulator's truth."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from signalloop import simulate as sim
from signalloop.contract import KINDS
from signalloop.fatigue import fatigue, fit_decay
from signalloop.ingest import ingest_file
from signalloop.store import Workspace


def test_fit_recovers_decay_and_its_uncertainty_shrinks_with_data() -> None:
    rng = np.random.default_rng(0)
    age = np.arange(40.0)
    for imp_per_day, tol in ((50_000.0, 0.004), (2_000.0, 0.02)):
        imp = np.full(40, imp_per_day)
        clicks = rng.poisson(0.02 * np.exp(-0.02 * age) * imp).astype(float)
        beta, _cov = fit_decay(clicks, imp, age, np.zeros(40))
        assert beta[1] == pytest.approx(0.02, abs=tol)
    big = fit_decay(
        rng.poisson(0.02 * 50_000.0, 40).astype(float), np.full(40, 5e4), age, np.zeros(40)
    )[1]
    small = fit_decay(
        rng.poisson(0.02 * 2_000.0, 40).astype(float), np.full(40, 2e3), age, np.zeros(40)
    )[1]
    assert big[1, 1] < small[1, 1]


def test_no_decay_means_fresh_not_fatigued() -> None:
    rng = np.random.default_rng(1)
    age = np.arange(30.0)
    imp = np.full(30, 10_000.0)
    beta, _cov = fit_decay(rng.poisson(0.01 * imp).astype(float), imp, age, np.cumsum(imp) - imp)
    d = np.array([0.0, -29.0, -3.0])
    rel = np.exp(d @ beta)
    assert 0.85 < rel < 1.15


@pytest.fixture(scope="module")
def fat_ws(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, object]:
    starve = sim.Fault("creative_starvation", "c01", 20, 59)
    res = sim.simulate(sim.SimulationConfig(days=60, campaigns=4, seed=4, faults=(starve,)))
    paths = sim.write(res, tmp_path_factory.mktemp("fat"))
    ws = Workspace(":memory:")
    for k in KINDS:
        ingest_file(ws, k, paths[k], now=datetime(2030, 1, 1))
    return ws, res


@pytest.fixture(scope="module")
def report(fat_ws: tuple[Workspace, object]) -> tuple[object, object]:
    ws, res = fat_ws
    return fatigue(ws), res


def test_onsets_close_to_the_truth(report: tuple[object, object]) -> None:
    rep, res = report
    truth = {c["creative_id"]: c for c in res.truth["creatives"]}  # type: ignore[attr-defined]
    errors = []
    for c in rep.creatives:  # type: ignore[attr-defined]
        on = truth[c.creative_id]["fatigue_onset_day"]
        if on is not None and c.onset is not None:
            errors.append(abs((c.onset - date(2026, 1, 1)).days - on))
    assert len(errors) >= 10
    assert float(np.median(errors)) <= 6


def test_starved_campaign_is_flagged(report: tuple[object, object]) -> None:
    rep, _ = report
    camps = {c["campaign_id"]: c for c in rep.campaigns}  # type: ignore[attr-defined]
    # no new creative since launch, and the budget's biggest creative is a fatigued one
    assert camps["c01"]["days_since_newest_creative"] >= 39
    assert camps["c01"]["top_creative_status"] == "fatigued"
    assert camps["c01"]["least_inefficient_not_good"] is True
    assert all(c["days_since_newest_creative"] < 20 for k, c in camps.items() if k != "c01")
    doc = json.loads(rep.to_json())  # type: ignore[attr-defined]
    assert {"as_of", "creatives", "campaigns"} <= set(doc)
    assert {c["status"] for c in doc["creatives"]} <= {"fresh", "peaking", "fatigued"}


def test_many_series_fitted_together_are_each_fitted_alone() -> None:
    """fit_decays over several series (each stopping on its own) gives every series what
    fit_decay gives it alone, to rounding."""
    from signalloop.fatigue import fit_decays

    rng = np.random.default_rng(7)
    series = []
    for n, rate, decay in ((5, 0.02, 0.0), (40, 0.01, 0.05), (90, 0.03, 0.01), (1, 0.05, 0.0)):
        age = np.arange(float(n))
        imp = rng.integers(500, 20_000, n).astype(float)
        clicks = rng.poisson(rate * imp * np.exp(-decay * age)).astype(float)
        series.append((clicks, imp, age, np.cumsum(imp) - imp))
    group = np.concatenate([np.full(len(s[0]), i) for i, s in enumerate(series)])
    beta, cov = fit_decays(*(np.concatenate([s[j] for s in series]) for j in range(4)), group, 4)
    for i, s in enumerate(series):
        b1, c1 = fit_decay(*s)
        assert np.allclose(beta[i], b1, rtol=1e-9, atol=1e-12)
        assert np.allclose(cov[i], c1, rtol=1e-9, atol=1e-15)


def test_a_listing_window_lists_the_recent_creatives_as_every_one_is_listed(
    fat_ws: tuple[Workspace, object],
) -> None:
    """``list_days`` lists the creatives that delivered in those days, each exactly as the
    full listing has it; every campaign's verdict still counts every creative; the rest is
    counted."""
    ws, _ = fat_ws
    full = fatigue(ws).to_dict()
    assert full["listed"] == {"days": None, "from": None, "creatives_not_listed": 0}
    as_of = date.fromisoformat(full["as_of"])

    def last(c: dict[str, object]) -> date:
        return date.fromisoformat(str(c["launched"])) + timedelta(days=int(str(c["days"])) - 1)

    for days in (7, 21):
        part = fatigue(ws, list_days=days).to_dict()
        edge = as_of - timedelta(days=days - 1)
        recent = [c for c in full["creatives"] if last(c) >= edge]
        assert 0 < len(recent) < len(full["creatives"])
        assert part["creatives"] == recent
        assert all(c in recent for c in full["creatives"] if c["live"])
        assert part["campaigns"] == full["campaigns"]
        assert part["listed"] == {
            "days": days,
            "from": edge.isoformat(),
            "creatives_not_listed": len(full["creatives"]) - len(recent),
        }


def test_no_creative_ids_says_what_is_missing(tmp_path: Path) -> None:
    """Spend without creative ids (a campaign-level export) gives no creative to fit: the
    report says so and names the export, instead of an empty list alone; with creative ids
    but every day inside an exclusion window it says that."""
    from signalloop.checks.engine import save_exclusions

    from .conftest import write_csv

    rows = [(f"2026-01-{d:02d}", "meta", "c1", 1000, 20, 50.0) for d in range(1, 11)]
    f = write_csv(
        tmp_path / "spend.csv",
        ("date", "platform", "campaign_id", "impressions", "clicks", "spend"),
        rows,
    )
    with Workspace(":memory:") as ws:
        ingest_file(ws, "spend", f)
        doc = fatigue(ws, date(2026, 1, 10)).to_dict()
        assert doc["creatives"] == [] and doc["campaigns"] == []
        assert doc["missing"] == "creative ids: no spend row names a creative_id or an ad_id"
        assert "ad_id or creative_id in the spend export" in doc["unlock"]
    g = write_csv(
        tmp_path / "spend_cr.csv",
        ("date", "platform", "campaign_id", "creative_id", "impressions", "clicks", "spend"),
        [(d, p, c, "cr1", i, k, s) for d, p, c, i, k, s in rows],
    )
    with Workspace(":memory:") as ws:
        ingest_file(ws, "spend", g)
        assert "missing" not in fatigue(ws, date(2026, 1, 10)).to_dict()
        window = {"campaign_id": "c1", "start": "2026-01-01", "end": None, "reason": "test"}
        save_exclusions(ws, [window], date(2026, 1, 10))
        doc = fatigue(ws, date(2026, 1, 10)).to_dict()
        assert doc["missing"].startswith("delivery: no spend row with a creative_id or an ad_id")


def test_an_ad_level_export_without_creative_ids_is_fitted_per_ad(tmp_path: Path) -> None:
    """A Google Ads or Meta ad-level export names ads, not creatives: each ad is read as its
    creative (``ad:<ad_id>``), by fatigue, the creative freshness check and ``learnable``
    alike. One ad's CTR falls from 2% to about 0.5% over 40 days, the other's stays at 2%; a
    row with a creative id keeps it. A snapshot export (one day per ad) says it lacks the
    daily history."""
    from signalloop.checks.engine import run_checks
    from signalloop.shapes import learnable

    from .conftest import write_csv

    cols = ("date", "platform", "campaign_id", "ad_id", "creative_id", "impressions", "clicks")
    rows = []
    for d in range(40):
        day = (date(2026, 1, 1) + timedelta(days=d)).isoformat()
        rows.append((day, "google", "c1", "a1", "", 20000, round(400 * np.exp(-0.035 * d))))
        rows.append((day, "google", "c1", "a2", "", 20000, 400))
        rows.append((day, "google", "c1", "a3", "a1", 20000, 400))  # its creative id: "a1"
    f = write_csv(tmp_path / "ads.csv", (*cols, "spend"), [(*r, 10.0) for r in rows])
    with Workspace(":memory:") as ws:
        ingest_file(ws, "spend", f)
        doc = fatigue(ws, date(2026, 2, 9)).to_dict()
        assert "missing" not in doc
        by = {c["creative_id"]: c for c in doc["creatives"]}
        assert set(by) == {"ad:a1", "ad:a2", "a1"}
        assert by["ad:a1"]["status"] == "fatigued" and by["ad:a1"]["relative_ctr"] < 0.35
        assert by["ad:a2"]["status"] == by["a1"]["status"] == "fresh"
        assert by["ad:a1"]["conversion_rate_relative"] is None
        (c1,) = run_checks(ws, as_of=date(2026, 2, 9)).to_dict()["campaigns"]
        fresh = c1["signal_environment"]["creative_freshness"]["evidence"]
        assert fresh["live_creatives"] == 3
        assert [c["creative_id"] for c in fresh["fatigued_creatives"]] == ["ad:a1"]
        caps = learnable(ws, date(2026, 2, 9))["capabilities"]
        (cap,) = [c for c in caps if c["name"] == "creative_fatigue"]
        assert cap["status"] != "unavailable"
    snap = write_csv(tmp_path / "snapshot.csv", (*cols, "spend"), [(*r, 10.0) for r in rows[:3]])
    with Workspace(":memory:") as ws:
        ingest_file(ws, "spend", snap)
        doc = fatigue(ws, date(2026, 1, 1)).to_dict()
        assert len(doc["creatives"]) == 3
        assert doc["missing"].startswith("daily history: each of the 3 creatives has one day")


def test_series_are_cut_where_the_campaign_or_creative_changes() -> None:
    """Each (campaign, creative) run of the sorted daily rows is a series, a creative shared
    by two campaigns two series; a series' ad set is its last row's; two nulls are the same
    value, a null and a value are not."""
    import pyarrow as pa

    from signalloop.fatigue import _same_as_previous, _Series

    d = [date(2026, 1, i) for i in (1, 2, 3, 1, 2, 1, 2)]
    daily = pa.table(
        {
            "campaign_id": ["c1", "c1", "c1", "c1", "c1", "c2", "c2"],
            "creative_id": ["x", "x", "x", "y", "y", "x", "x"],
            "date": d,
            "adset_id": ["a", "a", "b", "a", None, "z", "z"],
            "impressions": [100, 200, 300, 10, 20, 5, 6],
            "clicks": [1, 2, 3, 0, 1, 0, 0],
            "spend": [1.0] * 7,
        }
    )
    s = _Series.of(daily, date(2026, 1, 3))
    assert s.bounds.tolist() == [0, 3, 5, 7]
    assert (s.campaign_id, s.creative_id, s.adset_id) == (
        ["c1", "c1", "c2"],
        ["x", "y", "x"],
        ["b", None, "z"],
    )
    assert s.age.tolist() == [0, 1, 2, 0, 1, 0, 1]
    assert s.exposure.tolist() == [0, 100, 300, 0, 10, 0, 5]
    col = pa.array(["a", None, None, "a", "a", None])
    assert _same_as_previous(col).tolist() == [False, True, False, True, False]


def test_conversion_decays_count_a_creatives_conversions_for_each_of_its_series() -> None:
    """The conversions per creative and day meet every series of that creative on that day
    (by creative and day, whichever campaign), as a lookup per row gives them."""
    import pandas as pd
    import pyarrow as pa

    from signalloop.fatigue import _conversion_decays, _Series, fit_decays

    rng = np.random.default_rng(3)
    rows = []
    for cid, cr, n in (("c1", "x", 30), ("c1", "y", 20), ("c2", "x", 25), ("c3", "w", 10)):
        for i in range(n):
            rows.append((cid, cr, date(2026, 1, 1) + timedelta(days=i), int(rng.integers(5, 40))))
    daily = pa.table(
        {
            "campaign_id": [r[0] for r in rows],
            "creative_id": [r[1] for r in rows],
            "date": [r[2] for r in rows],
            "adset_id": ["a"] * len(rows),
            "impressions": [1000] * len(rows),
            "clicks": [r[3] for r in rows],
            "spend": [1.0] * len(rows),
        }
    )
    s = _Series.of(daily, date(2026, 2, 1))
    conv = pd.DataFrame(
        [
            (cr, np.datetime64(date(2026, 1, 1) + timedelta(days=i), "D"), float(i % 3 + 1))
            for cr in ("x", "y", "q")
            for i in range(0, 28, 2)
        ],
        columns=["creative", "day", "n"],
    )
    got = _conversion_decays(s, conv, np.arange(s.n))
    assert sorted(got) == [0, 1, 2]  # w has no conversions; the others have enough
    counts = {(c, d): n for c, d, n in conv.itertuples(index=False)}
    for g in got:
        lo, hi = int(s.bounds[g]), int(s.bounds[g + 1])
        y = np.array([counts.get((s.creative_id[g], s.day[i]), 0.0) for i in range(lo, hi)])
        beta, _ = fit_decays(
            y, s.clicks[lo:hi], s.age[lo:hi], np.zeros(hi - lo), np.zeros(hi - lo, np.int64), 1
        )
        assert got[g] == pytest.approx(float(np.exp(-beta[0, 1] * s.age[hi - 1])), rel=1e-9)


def test_stored_fits_are_used_only_where_a_series_rows_are_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A creative that stopped delivering keeps its stored fit; every other series, and one
    whose rows changed (a restated day), is fitted again; the report is the full fit's."""
    import signalloop.fatigue as F

    res = sim.simulate(sim.SimulationConfig(days=60, campaigns=3, seed=4))
    paths = sim.write(res, tmp_path / "data")
    ws = Workspace(tmp_path / "ws.duckdb")
    ingest_file(ws, "spend", paths["spend"], now=datetime(2030, 1, 1))
    end = date.fromisoformat(fatigue(ws).to_dict()["as_of"])
    cut = end - timedelta(days=12)
    fitted: list[int] = []
    fit = F.fit_decays

    def spy(*args: object) -> object:
        fitted.append(int(args[-1]))  # type: ignore[call-overload]
        return fit(*args)  # type: ignore[arg-type]

    def full(as_of: date) -> dict[str, object]:
        with monkeypatch.context() as m:
            m.setattr(F, "_read_fits", lambda ws: None)
            m.setattr(F, "_store_fits", lambda *a: None)
            return fatigue(ws, as_of).to_dict()

    def last(c: dict[str, object]) -> date:
        return date.fromisoformat(str(c["launched"])) + timedelta(days=int(str(c["days"])) - 1)

    everyone = full(end)["creatives"]
    assert isinstance(everyone, list)
    fatigue(ws, cut)  # (stores the fits of the series cut there)
    monkeypatch.setattr(F, "fit_decays", spy)
    got = fatigue(ws, end).to_dict()
    moved = [c for c in everyone if last(c) > cut]
    assert 0 < len(moved) < len(everyone)
    assert fitted[0] == len(moved)  # (the conversion decays, fitted after, are not stored)
    assert got == full(end)
    # a stopped creative's early day restated: that series alone is fitted again
    old = next(c for c in everyone if last(c) <= cut)
    ws.con.execute(
        "UPDATE spend SET clicks = clicks + 5 WHERE creative_id = ? AND date = ?",
        [old["creative_id"], old["launched"]],
    )
    fitted.clear()
    again = fatigue(ws, end).to_dict()
    assert fitted[0] == 1
    assert again == full(end) != got
    ws.close()
