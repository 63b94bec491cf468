"""The stored attribution (and the rollups) stay equal to computing them afresh.

Each account is cut into daily drops and ingested drop by drop, as a daily export arrives;
after every ingest the stored attribution (:func:`~signalloop.attribution.refresh_attribution`,
which only re-attributes what the new rows touch) must equal
:func:`~signalloop.attribution.attribute` over all conversions, the CRM records' campaigns
and the nowcast's click links their derivation from the rows (at several cutoffs), and every
rollup its aggregate (:func:`~tests.test_rollups.assert_rollups_current`). Every data shape
and every simulator fault is covered, and touchpoints arriving after their conversions.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from signalloop import nowcast
from signalloop.attribution import (
    ATTRIBUTION_TABLE,
    STORED,
    _record_campaigns,
    attribute,
    attributed_conversions,
    crm_record_campaigns,
    refresh_attribution,
)
from signalloop.contract import KINDS
from signalloop.ingest import ingest_file
from signalloop.store import Workspace

from .conftest import DROP_CUTS, DROP_DAYS, drop_cases, ingest_drop, simulated_drops
from .test_models_recent import assert_recent_current
from .test_rollups import assert_rollups_current

SEED = 11


def _frame(expr: object) -> pd.DataFrame:
    df = expr.to_pandas()  # type: ignore[attr-defined]
    cols = list(STORED)
    return df[cols].sort_values("conversion_id").reset_index(drop=True)


def _refresh_kind(ws: Workspace) -> str:
    row = ws.con.execute("SELECT value FROM meta WHERE key = 'attribution_state'").fetchone()
    return str(json.loads(row[0])["refresh"]) if row else ""


def _records(expr: object) -> pd.DataFrame:
    df = expr.to_pandas()  # type: ignore[attr-defined]
    df = df[["record_id", "campaign_id", "first_ts"]].sort_values("record_id")
    return df.reset_index(drop=True)


def _assert_links(ws: Workspace) -> None:
    """The nowcast's stored links equal linking from the rows cut at several as-of days."""
    span = ws.con.execute("SELECT min(ts), max(ts) FROM conversions").fetchone()
    if not span or span[0] is None:
        return
    lo, hi = span
    for k in (1, 2, 4):
        as_of = (lo + (hi - lo) * k / 4).date()
        src = nowcast._Source(ws, as_of)
        conv = src.table("conversions")
        cols = ["conversion_id", "key", "campaign_id", "click", "ts", "kind"]
        got = nowcast._link_clicks(src, conv).to_pandas()[cols]
        want = nowcast._link_clicks_cut(src, conv).to_pandas()[cols]
        pd.testing.assert_frame_equal(
            got.sort_values("conversion_id").reset_index(drop=True),
            want.sort_values("conversion_id").reset_index(drop=True),
        )


def _assert_current(ws: Workspace) -> None:
    assert refresh_attribution(ws)
    stored = _frame(attributed_conversions(ws))
    fresh = _frame(attribute(ws, ws.table("conversions")))
    pd.testing.assert_frame_equal(stored, fresh)
    # the CRM records' campaigns, stored and as of earlier cutoffs (some inside a record's
    # first hour), against deriving them from the rows
    pd.testing.assert_frame_equal(
        _records(crm_record_campaigns(ws)), _records(_record_campaigns(ws))
    )
    _assert_links(ws)
    first = ws.con.execute("SELECT min(ts), max(ts) FROM crm").fetchone()
    if first and first[0] is not None:
        lo, hi = first
        for k in (1, 2, 3):
            cut = lo + (hi - lo) * k / 4
            for at in (cut, cut.replace(minute=0, second=0, microsecond=0)):
                pd.testing.assert_frame_equal(
                    _records(crm_record_campaigns(ws, at)), _records(_record_campaigns(ws, at))
                )
                _assert_stored_touches(ws, at)


def _assert_stored_touches(ws: Workspace, at: datetime) -> None:
    """Record campaigns from rows cut at ``at`` with the touch half read from the stored
    records (as the records begun within the hour before a cut are derived) equal deriving
    that half from the touchpoints."""
    crm, tp = ws.table("crm"), ws.table("touchpoints")
    conv = attributed_conversions(ws)
    given = {
        "crm": crm.filter(crm.ts < at),
        "conversions": conv.filter(conv.ts < at),
        "touchpoints": tp.filter(tp.ts < at),
    }
    pd.testing.assert_frame_equal(
        _records(_record_campaigns(ws, **given, reuse=True)),
        _records(crm_record_campaigns(ws, **given)),
    )


@pytest.mark.parametrize(("shape", "faults"), drop_cases())
def test_daily_drops_equal_a_full_recompute(
    tmp_path: Path, shape: str, faults: tuple[str, ...]
) -> None:
    drops = simulated_drops(tmp_path, shape, faults, seed=SEED)
    with Workspace(tmp_path / "ws.duckdb") as ws:
        # each drop's last day: the day before the next cut, the account's last day
        ends = [date.fromisoformat(c) - timedelta(days=1) for c in DROP_CUTS]
        ends.append(date(2026, 1, DROP_DAYS))
        for i, drop in enumerate(drops):
            ingest_drop(ws, drop)
            _assert_current(ws)
            states = assert_rollups_current(ws)
            if shape == "full":  # the lens's recent labels, as each day's run asks them
                assert_recent_current(ws, ends[i])
            if shape == "full" and i > 0:
                assert {s["refresh"] for s in states.values()} == {"incremental"}
            # a spend-only account has nothing new to attribute after its first drop
            assert _refresh_kind(ws) == ("full" if i == 0 or shape == "spend" else "incremental")
            # the touch index was built with the first refresh and each ingest adds its rows
            # after: the incremental refreshes find it current and read their touchpoints there
            index = json.loads(
                ws.con.execute("SELECT value FROM meta WHERE key = 'attribution_state'").fetchone()[
                    0
                ]
            )["touch_index"]
            if i == 0 or _refresh_kind(ws) == "incremental":
                assert index == ("built" if i == 0 else "current")


def test_late_touchpoints_re_attribute_what_they_reach(tmp_path: Path) -> None:
    """Conversions first, their day's touchpoints a drop later: the clicks and last touches
    that arrive late move the conversions they reach from unattributed to their campaign."""
    drops = simulated_drops(tmp_path, "full", ("click_id_loss@c02:10-27",), seed=SEED)
    with Workspace(tmp_path / "ws.duckdb") as ws:
        for drop in drops:
            for kind in ("spend", "conversions", "crm"):
                ingest_file(ws, kind, drop[kind])
            _assert_current(ws)
            assert_rollups_current(ws)
            before = _frame(attributed_conversions(ws))
            ingest_file(ws, "touchpoints", drop["touchpoints"])
            _assert_current(ws)
            # (the conversions and records they move: their days aggregated again)
            assert_rollups_current(ws)
            after = _frame(attributed_conversions(ws))
        moved = (before.attributed_by != after.attributed_by).sum()
        assert moved > 0  # the last drop's touchpoints did re-attribute conversions


def test_rows_not_from_an_ingest_rebuild_everything(tmp_path: Path) -> None:
    drops = simulated_drops(tmp_path, "full", (), seed=SEED)
    with Workspace(tmp_path / "ws.duckdb") as ws:
        for kind in KINDS:
            ingest_file(ws, kind, drops[0][kind])
        _assert_current(ws)
        # a row written by hand (no ingest id) and one removed: the next read rebuilds
        ws.con.execute(
            "INSERT INTO conversions (conversion_id, ts, kind, campaign_id) "
            "VALUES ('by-hand', TIMESTAMP '2026-01-10 10:00:00', 'lead', 'c03')"
        )
        ws.con.execute(
            "DELETE FROM touchpoints WHERE touch_id = (SELECT min(touch_id) FROM touchpoints)"
        )
        _assert_current(ws)
        assert _refresh_kind(ws) == "full"
        row = ws.con.execute(
            f"SELECT attributed_by FROM {ATTRIBUTION_TABLE} WHERE conversion_id = 'by-hand'"
        ).fetchone()
        assert row == ("campaign_id",)


def test_non_unique_ids_and_read_only_attribute_on_the_fly(tmp_path: Path) -> None:
    drops = simulated_drops(tmp_path, "full", (), seed=SEED)
    db = tmp_path / "ws.duckdb"
    with Workspace(db) as ws:
        for kind in KINDS:
            ingest_file(ws, kind, drops[0][kind])
        ingest_file(ws, "conversions", drops[1]["conversions"])
    with Workspace(db, read_only=True) as ro:
        assert not refresh_attribution(ro)  # stale and cannot write: the live expression
        assert len(_frame(attributed_conversions(ro))) == ro.table("conversions").count().execute()
    with Workspace(db) as ws:
        ws.con.execute("INSERT INTO conversions SELECT * FROM conversions LIMIT 1")
        assert not refresh_attribution(ws)
        n = ws.table("conversions").count().execute()
        assert len(attributed_conversions(ws).to_pandas()) == n


def test_an_appended_id_that_repeats_one_is_found(tmp_path: Path) -> None:
    """After an append, only the new rows are checked for a repeated conversion id (the
    stored ones were unique): an id repeated among them or against a stored row (as two
    ingests racing could append) still turns the stored attribution off."""
    drops = simulated_drops(tmp_path, "full", (), seed=SEED)
    with Workspace(tmp_path / "ws.duckdb") as ws:
        for kind in KINDS:
            ingest_file(ws, kind, drops[0][kind])
        assert refresh_attribution(ws)
        hi = ws.ingest_state("conversions")[1]

        def append(sql: str) -> None:  # rows as a later ingest would land them
            ws.con.execute(
                f"INSERT INTO conversions SELECT * REPLACE ({hi + 1} AS _ingest_id) FROM ({sql})"
            )

        append(
            "SELECT * REPLACE ('new-' || conversion_id AS conversion_id) FROM conversions LIMIT 2"
        )
        assert refresh_attribution(ws) and _refresh_kind(ws) == "incremental"
        _assert_current(ws)
        hi += 1
        append("SELECT * FROM conversions WHERE conversion_id LIKE 'new-%' LIMIT 1")
        assert not refresh_attribution(ws)  # against a stored row
    with Workspace(tmp_path / "ws2.duckdb") as ws:
        for kind in KINDS:
            ingest_file(ws, kind, drops[0][kind])
        assert refresh_attribution(ws)
        hi = ws.ingest_state("conversions")[1]
        ws.con.execute(
            f"INSERT INTO conversions SELECT * REPLACE ('twice' AS conversion_id, {hi + 1} AS "
            "_ingest_id) FROM conversions LIMIT 2"
        )
        assert not refresh_attribution(ws)  # among the new rows


def test_a_record_begun_just_before_the_cutoff_is_derived_again(tmp_path: Path) -> None:
    """The lead that created a record may come up to an hour after it: cut between the two,
    the record's campaign is its last touch's, as the rows before the cut say."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "touchpoints.csv").write_text(
        "touch_id,ts,user_id,campaign_id\nt1,2026-01-05T08:00:00Z,u1,cA\n"
    )
    (folder / "crm.csv").write_text("record_id,stage,ts,user_id\nr1,lead,2026-01-05T10:00:00Z,u1\n")
    (folder / "conversions.csv").write_text(
        "conversion_id,ts,kind,user_id,campaign_id\nk1,2026-01-05T10:30:00Z,lead,u1,cB\n"
    )
    with Workspace(tmp_path / "ws.duckdb") as ws:
        for kind in ("touchpoints", "crm", "conversions"):
            ingest_file(ws, kind, folder / f"{kind}.csv")
        assert refresh_attribution(ws)

        def campaign(cutoff: datetime | None) -> list[object]:
            return list(crm_record_campaigns(ws, cutoff).to_pandas().campaign_id)

        assert campaign(None) == ["cB"]
        assert campaign(datetime(2026, 1, 5, 10, 10)) == ["cA"]  # the lead is after the cut
        assert campaign(datetime(2026, 1, 5, 10, 40)) == ["cB"]
        assert campaign(datetime(2026, 1, 5, 9, 0)) == []  # the record has not begun


def test_a_conversion_before_its_click_links_as_the_cut_rows_say(tmp_path: Path) -> None:
    """A conversion stamped before its click's only touchpoint, cut between the two: the
    nowcast links it through the user's earlier touch, as the rows before the cut say, and
    through its click once the cut is past it."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "touchpoints.csv").write_text(
        "touch_id,ts,user_id,click_id,campaign_id\n"
        "t1,2026-01-04T09:00:00Z,u1,k0,cX\n"
        "t2,2026-01-06T01:00:00Z,u1,k1,cY\n"
    )
    (folder / "conversions.csv").write_text(
        "conversion_id,ts,kind,user_id,click_id\nv1,2026-01-05T23:00:00Z,purchase,u1,k1\n"
    )
    with Workspace(tmp_path / "ws.duckdb") as ws:
        for kind in ("touchpoints", "conversions"):
            ingest_file(ws, kind, folder / f"{kind}.csv")
        assert refresh_attribution(ws)
        for as_of, campaign in ((date(2026, 1, 5), "cX"), (date(2026, 1, 6), "cY")):
            src = nowcast._Source(ws, as_of)
            conv = src.table("conversions")
            got = nowcast._link_clicks(src, conv).to_pandas()
            want = nowcast._link_clicks_cut(src, conv).to_pandas()
            assert list(got.campaign_id) == list(want.campaign_id) == [campaign]
            assert list(got.click) == list(want.click)
