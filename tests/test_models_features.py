"""The training frame: labels against the simulator's truth, no look-ahead, exact small cases."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date
from typing import Any

import pandas as pd
import pytest

from signalloop.checks.engine import EXCLUSIONS_DDL
from signalloop.config import Settings
from signalloop.errors import UsageError
from signalloop.models.features import (
    OUTCOMES,
    _build,
    build_frame,
    horizon_for,
)
from signalloop.models.recent import recent_labels
from signalloop.store import Workspace

from .conftest import simulated_workspace

PRIMARY = ("lead", "purchase")


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A clean seeded account (c01 and c04 are lead campaigns with a CRM path)."""
    tmp = tmp_path_factory.mktemp("feat")
    ws, _, _ = simulated_workspace(tmp, days=60, campaigns=4, seed=3)
    yield ws
    ws.close()


def sql_df(ws: Workspace, sql: str) -> pd.DataFrame:
    return ws.con.execute(sql).df()


def test_conversion_labels_match_the_simulated_conversions(account: Workspace) -> None:
    tf = build_frame(account, "conversion")
    assert (tf.unit, tf.id_column, tf.target, tf.time) == ("touchpoint", "touch_id", "label", "ts")
    f = tf.frame
    kinds = ", ".join(f"'{k}'" for k in PRIMARY)
    truth = sql_df(
        account,
        "SELECT t.touch_id FROM conversions c JOIN touchpoints t ON t.click_id = c.click_id "
        f"WHERE c.kind IN ({kinds}) AND c.ts <= t.ts + INTERVAL 7 DAY",
    )
    in_frame = truth[truth.touch_id.isin(f.touch_id)]
    assert int(f.label.sum()) == len(in_frame) > 100
    assert set(f.touch_id[f.label == 1]) == set(in_frame.touch_id)
    assert f.ts.is_monotonic_increasing and f.touch_id.is_unique


def test_young_clicks_are_censored_not_negative(account: Workspace) -> None:
    tf = build_frame(account, "conversion")
    last = sql_df(account, "SELECT max(ts)::DATE AS d FROM touchpoints").d[0]
    cutoff = pd.Timestamp(last) + pd.Timedelta(days=1)
    young = sql_df(
        account,
        f"SELECT count(*) AS n FROM touchpoints WHERE campaign_id IS NOT NULL "
        f"AND ts > TIMESTAMP '{cutoff}' - INTERVAL 7 DAY",
    ).n[0]
    assert tf.censored == young > 0 and tf.excluded == 0
    assert tf.frame.ts.max() <= (cutoff - pd.Timedelta(days=7)).tz_localize("UTC")
    assert tf.window == (tf.frame.ts.iloc[0].to_pydatetime(), tf.frame.ts.iloc[-1].to_pydatetime())
    longer = build_frame(account, "conversion", horizon_days=14)
    assert longer.censored > tf.censored and len(longer.frame) < len(tf.frame)


def test_as_of_ignores_later_data(account: Workspace) -> None:
    tf = build_frame(account, "conversion", as_of=date(2026, 1, 31))
    assert tf.frame.ts.max() < pd.Timestamp("2026-01-25", tz="UTC")
    assert tf.frame.creative_age_days.max() < 31 and tf.frame.touches_before.max() >= 1


def test_features_use_nothing_after_the_touch(account: Workspace) -> None:
    f = build_frame(account, "conversion").frame
    first = f[f.touches_before == 0]
    assert (first.prior_conversions == 0).all() and first.hours_since_prev_touch.isna().all()
    assert (f.hours_since_prev_touch.dropna() >= 0).all() and (f.creative_age_days >= 0).all()
    expected = sql_df(
        account,
        "SELECT t.touch_id, coalesce(max(CASE c.stage WHEN 'lead' THEN 1 WHEN 'mql' THEN 2 "
        "WHEN 'sql' THEN 3 WHEN 'opportunity' THEN 4 WHEN 'won' THEN 5 END), 0) AS code "
        "FROM touchpoints t LEFT JOIN crm c ON c.user_id = t.user_id AND c.ts < t.ts "
        "GROUP BY t.touch_id",
    ).set_index("touch_id")["code"]
    got = f.set_index("touch_id").crm_stage_before.cat.codes
    assert (got == expected.reindex(got.index)).all() and got.max() > 0


def test_sql_leads_link_to_their_click_and_label_by_the_crm(account: Workspace) -> None:
    tf = build_frame(account, "sql")
    f = tf.frame
    assert (tf.unit, tf.id_column) == ("lead", "record_id") and f.record_id.is_unique
    # the simulator numbers a click and its record alike (tN, recN): the truth of the link
    assert (f.record_id.str.removeprefix("rec") == f.touch_id.str.removeprefix("t")).mean() > 0.99
    truth = sql_df(
        account,
        "SELECT record_id, (min(ts) FILTER (WHERE stage IN ('sql', 'opportunity', 'won')) "
        "<= min(ts) + INTERVAL 30 DAY) IS TRUE AS reached FROM crm GROUP BY record_id",
    ).set_index("record_id")["reached"]
    assert (f.set_index("record_id").label == truth.reindex(f.record_id).astype(int)).all()
    assert 0 < f.label.sum() < len(f)
    # a lead's own later stage never leaks into its features
    own = f[f.label == 1]
    assert (own.crm_stage_before == "none").mean() > 0.9
    assert (f.days_since_click >= 0).all() and {"crm_source", "crm_owner"} <= set(tf.categorical)


def test_every_outcome_builds(account: Workspace) -> None:
    for outcome in OUTCOMES:
        tf = build_frame(account, outcome, horizon_days=14)
        assert set(tf.frame.label.unique()) <= {0, 1} and tf.outcome == outcome
        assert list(tf.frame.columns[-len(tf.features) :]) == tf.features
        assert all(str(tf.frame[c].dtype) == "category" for c in tf.categorical)
    with pytest.raises(UsageError, match="no mature leads for outcome 'won'"):
        build_frame(account, "won")  # 60 days of data, a 60-day window: nothing closed yet


def test_exclusion_windows_drop_units(account: Workspace) -> None:
    before = build_frame(account, "conversion")
    account.con.execute(EXCLUSIONS_DDL)
    account.con.execute(
        "INSERT INTO exclusions VALUES ('c02', DATE '2026-01-10', DATE '2026-01-14', 't', "
        "'test', NULL, NULL)"
    )
    try:
        after = build_frame(account, "conversion")
    finally:
        account.con.execute("DELETE FROM exclusions WHERE source = 'test'")
    f = before.frame
    gone = f[(f.campaign_id == "c02") & f.ts.dt.date.between(date(2026, 1, 10), date(2026, 1, 14))]
    assert after.excluded == len(gone) > 0
    assert len(after.frame) == len(f) - len(gone)
    assert not after.frame.touch_id.isin(gone.touch_id).any()


def _full_recent(ws: Workspace, outcome: str, as_of: date, days: int) -> tuple[int, int]:
    """recent_labels the long way: every unit labelled, then the window counted."""
    kept = _build(ws, outcome, as_of=as_of, labels_only=True)
    f = kept.filter(kept._mature).select("ts", "label").to_pandas()
    recent = f[f.ts > f.ts.max() - pd.Timedelta(days=days)]
    return len(recent), int(recent.label.sum())


@pytest.mark.parametrize("days", [3, 28])
def test_recent_labels_counts_only_the_window_with_the_same_labels(
    account: Workspace, days: int
) -> None:
    as_of = date(2026, 2, 20)
    want = _full_recent(account, "conversion", as_of, days)
    assert recent_labels(account, "conversion", as_of=as_of, days=days) == want
    assert want[1] > 0
    # an exclusion over the last mature days of every campaign moves the window back
    account.con.execute(EXCLUSIONS_DDL)
    account.con.execute(
        "INSERT INTO exclusions SELECT DISTINCT campaign_id, DATE '2026-02-08', "
        "DATE '2026-02-20', 't', 'test', NULL, NULL FROM touchpoints "
        "WHERE campaign_id IS NOT NULL"
    )
    try:
        moved = _full_recent(account, "conversion", as_of, days)
        assert recent_labels(account, "conversion", as_of=as_of, days=days) == moved != want
        assert recent_labels(account, "sql", as_of=as_of, days=days) == _full_recent(
            account, "sql", as_of, days
        )
    finally:
        account.con.execute("DELETE FROM exclusions WHERE source = 'test'")


TOUCH_COLS = (
    "touch_id, ts, user_id, click_id, platform, campaign_id, adset_id, creative_id, "
    "utm_source, utm_medium, attrs"
)


def tiny(ws: Workspace) -> None:
    """Five touches, two conversions tied by click and by user, one CRM record."""
    touches: list[tuple[Any, ...]] = [
        ("t0", "2025-12-31 23:00", "u2", None, None, None, None, None, "organic", None, None),
        ("t1", "2026-01-01 10:00", "u1", "k1", "meta", "c1", "as1", "cr1", " Facebook ",
         "Paid_Social", '{"device": "mobile", "age": "31", "id": "a"}'),
        ("t3", "2026-01-02 09:00", "u2", "k3", "google", "c2", "as2", "cr2", "google", "cpc",
         '{"device": "mobile", "age": "25", "id": "b"}'),
        ("t2", "2026-01-03 12:00", "u1", "k2", "meta", "c1", "as1", "cr1", "facebook",
         "paid_social", '{"device": "desktop", "age": 40, "id": "c"}'),
        ("t4", "2026-01-20 08:00", "u3", "k4", "meta", "c1", "as1", "cr1", "facebook",
         "paid_social", None),
    ]  # fmt: skip
    ws.con.executemany(
        f"INSERT INTO touchpoints ({TOUCH_COLS}) VALUES ({', '.join('?' * 11)})", touches
    )
    ws.con.executemany(
        "INSERT INTO conversions (conversion_id, ts, kind, user_id, click_id, campaign_id, value, "
        "source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("cv1", "2026-01-01 12:00", "lead", "u1", "k1", "c1", None, "pixel"),
            ("cv3", "2026-01-04 09:00", "Purchase", "u2", None, None, 50.0, "server"),
            ("sq1", "2026-01-02 09:00", "sql", "u1", "k1", None, None, "offline"),
        ],
    )
    ws.con.executemany(
        "INSERT INTO crm (record_id, stage, ts, user_id, owner, source) VALUES (?, ?, ?, ?, ?, ?)",
        [
            ("rec1", "lead", "2026-01-01 12:05", "u1", "ann", "paid_social"),
            ("rec1", "SQL", "2026-01-02 09:00", "u1", "bob", "paid_social"),
        ],
    )
    ws.con.execute(
        "INSERT INTO spend (date, platform, campaign_id, creative_id, impressions, clicks, spend) "
        "VALUES ('2025-12-30', 'meta', 'c1', 'cr1', 100, 3, 9.5)"
    )


def test_tiny_workspace_has_exact_features(ws: Workspace) -> None:
    tiny(ws)
    tf = build_frame(ws, "conversion")
    f = tf.frame.set_index("touch_id")
    assert list(f.index) == ["t1", "t3", "t2"] and tf.censored == 1 and tf.excluded == 0
    assert f.label.to_dict() == {"t1": 1, "t3": 1, "t2": 0}
    assert f.touches_before.to_dict() == {"t1": 0, "t3": 1, "t2": 1}
    assert math.isnan(f.hours_since_prev_touch["t1"])
    assert f.hours_since_prev_touch[["t3", "t2"]].tolist() == [34.0, 50.0]
    assert f.prior_conversions.to_dict() == {"t1": 0, "t3": 0, "t2": 1}
    assert f.crm_stage_before.astype(str).to_dict() == {"t1": "none", "t3": "none", "t2": "sql"}
    assert f.creative_age_days["t1"] == pytest.approx(2 + 10 / 24)
    assert f.creative_age_days[["t3", "t2"]].tolist() == pytest.approx([0.0, 4.5])
    assert f.hour.tolist() == [10, 9, 12] and f.weekday.tolist() == [3, 4, 5]
    assert f.utm_source["t1"] == "facebook" and f.utm_medium["t1"] == "paid_social"
    assert f.attr_device.astype(str).tolist() == ["mobile", "mobile", "desktop"]
    assert f.attr_age.tolist() == [31.0, 25.0, 40.0] and "attr_age" not in tf.categorical
    assert tf.features == [
        "platform", "campaign_id", "adset_id", "creative_id", "utm_source", "utm_medium",
        "creative_age_days", "hour", "weekday", "touches_before", "hours_since_prev_touch",
        "prior_conversions", "crm_stage_before", "attr_age", "attr_device", "attr_id",
    ]  # fmt: skip
    assert tf.window == (
        pd.Timestamp("2026-01-01 10:00", tz="UTC").to_pydatetime(),
        pd.Timestamp("2026-01-03 12:00", tz="UTC").to_pydatetime(),
    )
    value = build_frame(ws, "value").frame.set_index("touch_id")
    assert value.label.to_dict() == {"t1": 0, "t3": 1, "t2": 0}


def test_tiny_workspace_lead_frame(ws: Workspace) -> None:
    tiny(ws)
    with pytest.raises(UsageError, match="no mature leads"):
        build_frame(ws, "sql")  # the 30-day window of rec1 is still open
    tf = build_frame(ws, "sql", horizon_days=5)
    row = tf.frame.iloc[0]
    assert len(tf.frame) == 1 and (row.record_id, row.touch_id, row.label) == ("rec1", "t1", 1)
    assert row.days_since_click == pytest.approx((2 + 5 / 60) / 24)
    assert row.crm_stage_before == "none" and row.crm_owner == "ann"
    assert row.ts == pd.Timestamp("2026-01-01 12:05", tz="UTC")
    assert build_frame(ws, "won", horizon_days=5).frame.label.tolist() == [0]


def test_tiny_exclusion_and_as_of(ws: Workspace) -> None:
    tiny(ws)
    ws.con.execute(EXCLUSIONS_DDL)
    ws.con.execute(
        "INSERT INTO exclusions VALUES ('c2', '2026-01-02', NULL, 'x', 'manual', NULL, NULL)"
    )
    tf = build_frame(ws, "conversion")
    assert tf.excluded == 1 and list(tf.frame.touch_id) == ["t1", "t2"]
    early = build_frame(ws, "conversion", as_of=date(2026, 1, 10), horizon_days=1)
    assert early.censored == 0 and list(early.frame.touch_id) == ["t1", "t2"]


def test_errors(ws: Workspace) -> None:
    with pytest.raises(UsageError, match="conversion, sql, won, value"):
        build_frame(ws, "clicks")
    with pytest.raises(UsageError, match="ingest touchpoints first"):
        build_frame(ws, "conversion")
    with pytest.raises(UsageError, match="no touchpoints with a campaign before 2026-03-02"):
        build_frame(ws, "conversion", as_of=date(2026, 3, 1))
    with pytest.raises(UsageError, match="horizon_days"):
        build_frame(ws, "conversion", horizon_days=0)
    assert horizon_for("won", Settings()) == 60


def test_include_censored_keeps_open_units_unlabelled(ws: Workspace) -> None:
    tiny(ws)
    leads = build_frame(ws, "sql", include_censored=True)  # the default raises: none mature
    row = leads.frame.iloc[0]
    assert len(leads.frame) == 1 and (row.record_id, row.label) == ("rec1", -1)
    assert leads.censored == 1 and leads.features == build_frame(ws, "sql", horizon_days=5).features
    touches = build_frame(ws, "conversion", include_censored=True).frame.set_index("touch_id")
    assert touches.label.to_dict() == {"t1": 1, "t3": 1, "t2": 0, "t4": -1}
    assert list(build_frame(ws, "conversion").frame.touch_id) == ["t1", "t3", "t2"]


def test_attr_plan_over_distinct_documents_counts_as_every_row(tmp_path: Any) -> None:
    """The plan is worked out over the distinct attrs documents weighted by their rows: the
    same row counts and distinct values as over every row, for spacing and key order,
    numbers written as text, booleans, nulls and keys a JSON path cannot name."""
    from signalloop.models import features as F

    docs = [
        '{"device": "mobile", "age": "31", "id": "a", "x.y": 1, "flag": true}',
        '{ "age" : "31",  "device":"mobile", "id": "a", "x.y": 1, "flag": true }',
        '{"device": "desktop", "age": 40, "id": "b", "x.y": null, "flag": false}',
        '{"device": "tablet", "age": " 25 ", "id": "c"}',
        '{"device": null, "age": "n/a", "id": "d", "x.y": 2.5}',
    ]
    counts = [30, 7, 5, 3, 2]
    rows: list[tuple[Any, ...]] = []
    for d, (doc, n) in enumerate(zip(docs, counts, strict=True)):
        for i in range(n):
            rows.append((f"t{d}_{i}", "2026-01-01 10:00", f"u{i}", None, "meta", "c1", None,
                         None, None, None, doc))  # fmt: skip
    with Workspace(tmp_path / "attrs.duckdb") as ws:
        ws.con.executemany(
            f"INSERT INTO touchpoints ({TOUCH_COLS}) VALUES ({', '.join('?' * 11)})", rows
        )
        t = ws.table("touchpoints")
        w = t.filter(t.attrs.notnull())
        names = F._attr_keys(w)
        per_row: dict[str, Any] = {}
        for i, key in enumerate(names):
            text, num = F._attr_values(w, key)
            per_row |= {f"n{i}": text.count(), f"x{i}": num.count(), f"d{i}": text.nunique()}
        want = w.aggregate(**per_row).to_pyarrow().to_pylist()[0]
        got_names, got = F._attr_stats(t)
        plan = F._attr_plan(t)
        old = F.MAX_ATTR_LEVELS
        try:  # a level cap of 3 drops the five-valued age and the four-valued id
            F.MAX_ATTR_LEVELS = 3
            capped = F._attr_plan(t)
        finally:
            F.MAX_ATTR_LEVELS = old
        again = F._attr_plan_of(ws, t)
        assert F._attr_plan_of(ws, t) is not again and again == plan
    assert names == got_names == ["age", "device", "flag", "id", "x.y"]
    assert got == want
    n = sum(counts)
    assert [want[f"n{i}"] for i in range(5)] == [n, n - 2, n - 5, n, 39]
    assert [want[f"x{i}"] for i in range(5)] == [45, 0, 0, 0, 39]
    assert plan == [
        ("age", "attr_age", "category"),
        ("device", "attr_device", "category"),
        ("flag", "attr_flag", "category"),
        ("id", "attr_id", "category"),
        ("x.y", "attr_x_y", "number"),
    ]
    assert [p[0] for p in capped] == ["device", "flag", "x.y"]
