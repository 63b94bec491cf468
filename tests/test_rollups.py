"""Every rollup stays equal to its aggregate over all the raw rows, drop after drop.

:func:`assert_rollups_current` refreshes every registered rollup (incrementally: only the days
the new rows fall on) and compares it with the same aggregate computed afresh. It runs after
every daily drop of every data shape and fault in ``test_attribution_incremental.py`` (one
ingest serves both stores); here, a late drop for old days, rows not from an ingest and a
read-only workspace.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from signalloop import rollups
from signalloop.ingest import ingest_file
from signalloop.store import Workspace

from .conftest import simulated_drops

SEED = 12


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    cols = sorted(df.columns)
    return df[cols].sort_values(cols, na_position="first").reset_index(drop=True)


def assert_rollups_current(ws: Workspace) -> dict[str, dict[str, object]]:
    """Refresh every rollup and assert it equals its live aggregate; each one's state."""
    states = rollups.refresh_all(ws)
    for name in rollups.REGISTRY:
        if name not in states:  # (a rollup with params: refreshed where it is read)
            assert rollups.refresh(ws, name)
            states[name] = ws.read_meta(f"rollup:{name}")
        # (the same types too: a stored table is typed by DuckDB, the live one by ibis)
        stored_types = rollups.table(ws, name).schema()
        live_types = rollups.live(ws, name).schema()
        assert {c: type(t) for c, t in stored_types.items()} == {
            c: type(t) for c, t in live_types.items()
        }, name
        stored = _sorted(rollups.table(ws, name).to_pandas())
        fresh = _sorted(rollups.live(ws, name).to_pandas())
        pd.testing.assert_frame_equal(stored, fresh, check_dtype=False)
    return states


def test_a_late_drop_re_aggregates_only_its_days(tmp_path: Path) -> None:
    """Touchpoints of two old days arrive after later days: those two days are re-aggregated
    (and nothing else), and the rollups still equal the raw rows' aggregate."""
    drops = simulated_drops(tmp_path, "full", (), seed=SEED)
    with Workspace(tmp_path / "ws.duckdb") as ws:
        ingest_file(ws, "touchpoints", drops[1]["touchpoints"])
        assert_rollups_current(ws)
        early = drops[0]["touchpoints"]
        lines = early.read_text().splitlines(keepends=True)
        late = tmp_path / "late.csv"
        late.write_text(lines[0] + "".join(x for x in lines[1:] if ",2026-01-0" in x[:60]))
        days = {x.split("T")[0][-10:] for x in lines[1:] if ",2026-01-0" in x[:60]}
        ingest_file(ws, "touchpoints", late)
        states = assert_rollups_current(ws)
        # (the per-record ones: no CRM row, so as they were first built)
        per_record = [n for n, r in rollups.REGISTRY.items() if r.key == "record_id"]
        assert sorted(per_record) == ["crm_record_flags", "crm_record_outcome"]
        assert {states.pop(n)["refresh"] for n in per_record} == {"full"}
        assert {s["refresh"] for s in states.values()} == {"incremental"}
        touch = [states[n] for n in ("touch_daily", "touch_hourly")]
        assert {s["days"] for s in touch} == {len(days)}
        # (no conversion nor CRM row is attributed again: their aggregates keep every day)
        derived = ("conversion_daily", "conversion_kinds", "crm_daily")
        assert {states[n]["days"] for n in derived} == {0}


def test_rows_not_from_an_ingest_and_read_only(tmp_path: Path) -> None:
    drops = simulated_drops(tmp_path, "full", (), seed=SEED)
    db = tmp_path / "ws.duckdb"
    with Workspace(db) as ws:
        ingest_file(ws, "touchpoints", drops[0]["touchpoints"])
        assert_rollups_current(ws)
        ws.con.execute(
            "DELETE FROM touchpoints WHERE touch_id = (SELECT min(touch_id) FROM touchpoints)"
        )
        states = assert_rollups_current(ws)
        assert {s["refresh"] for s in states.values()} == {"full"}
        ingest_file(ws, "touchpoints", drops[1]["touchpoints"])
    with Workspace(db, read_only=True) as ro:
        assert not rollups.refresh(ro, "touch_daily")  # stale, cannot write: computed live
        got = _sorted(rollups.table(ro, "touch_daily").to_pandas())
        pd.testing.assert_frame_equal(got, _sorted(rollups.live(ro, "touch_daily").to_pandas()))
        state = ro.con.execute("SELECT value FROM meta WHERE key = 'rollup:touch_daily'").fetchone()
        assert state is not None and json.loads(state[0])["source"][0] < int(
            ro.table("touchpoints").count().execute()
        )


def test_campaign_platforms_from_the_rollup_equal_the_raw_count(tmp_path: Path) -> None:
    """The push's campaign platforms read the clicks from ``touch_daily``: the same answer as
    counting every touchpoint (each campaign's most frequent platform, ties by name, spend's
    own platform winning), here with a campaign whose clicks are split across platforms."""
    from signalloop.push.outcomes import campaign_platforms, platform_of

    drops = simulated_drops(tmp_path, "full", (), seed=SEED)
    with Workspace(tmp_path / "ws.duckdb") as ws:
        ingest_file(ws, "touchpoints", drops[0]["touchpoints"])
        camp = ws.con.execute("SELECT min(campaign_id) FROM touchpoints").fetchone()[0]
        # the campaign's later clicks move to Google, more of them than stay on Meta
        ws.con.execute(
            "UPDATE touchpoints SET platform = 'google_ads' WHERE campaign_id = ? AND rowid IN "
            "(SELECT rowid FROM touchpoints WHERE campaign_id = ? ORDER BY ts DESC "
            "LIMIT (SELECT count(*) * 2 // 3 FROM touchpoints WHERE campaign_id = ?))",
            [camp, camp, camp],
        )
        rows = ws.con.execute(
            "SELECT campaign_id, platform, count(*) FROM touchpoints WHERE campaign_id IS NOT "
            "NULL AND platform IS NOT NULL GROUP BY ALL"
        ).fetchall()
        best: dict[str, tuple[int, str]] = {}
        for c, p, n in rows:
            if c not in best or (-n, p) < best[c]:
                best[c] = (-n, p)
        expected = {c: platform_of(p) for c, (_, p) in best.items()}
        assert expected[camp] == "google"
        assert campaign_platforms(ws) == expected
        assert rollups.refresh(ws, "touch_daily")  # read from the stored rollup
        ingest_file(ws, "spend", drops[0]["spend"])  # spend's own platform wins
        spend = dict(
            ws.con.execute(
                "SELECT campaign_id, arg_max(platform, n) FROM (SELECT campaign_id, platform, "
                "count(*) AS n FROM spend GROUP BY ALL) GROUP BY campaign_id"
            ).fetchall()
        )
        got = campaign_platforms(ws)
        assert got[camp] == platform_of(spend[camp]) == "meta"


def _csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _crm_days(ws: Workspace) -> set[tuple[str, str | None, str, int, int]]:
    t = rollups.table(ws, "crm_daily").to_pyarrow().to_pylist()
    return {(str(r["day"]), r["campaign_id"], r["stage"], r["n"], r["firsts"]) for r in t}


def test_attributed_rollups_follow_what_late_rows_move(tmp_path: Path) -> None:
    """A backdated CRM row moves its record's first lead to an earlier day; a late touchpoint
    moves a conversion and a record to its campaign. Only their days are aggregated again,
    and the rollups equal the rows' aggregate after each drop."""
    with Workspace(tmp_path / "ws.duckdb") as ws:
        tp = "touch_id,ts,user_id,campaign_id"
        ingest_file(
            ws,
            "touchpoints",
            _csv(
                tmp_path / "t1.csv",
                tp,
                "t1,2026-01-05T10:00:00,u1,c1",
                "t2,2026-01-03T09:00:00,u2,c2",
                "t3,2026-01-06T09:00:00,u2,c2",
            ),
        )
        ingest_file(
            ws,
            "conversions",
            _csv(
                tmp_path / "k1.csv",
                "conversion_id,ts,kind,user_id",
                "k1,2026-01-08T10:00:00,signup,u3",
            ),
        )
        crm = "record_id,stage,ts,user_id"
        ingest_file(
            ws,
            "crm",
            _csv(
                tmp_path / "c1.csv",
                crm,
                "r1,lead,2026-01-05T12:00:00,u1",
                "r1,mql,2026-01-07T10:00:00,u1",
                "r2,lead,2026-01-06T12:00:00,u2",
                "r3,lead,2026-01-08T11:00:00,u3",
            ),
        )
        assert_rollups_current(ws)
        assert _crm_days(ws) == {
            ("2026-01-05", "c1", "lead", 1, 1),
            ("2026-01-07", "c1", "mql", 1, 1),
            ("2026-01-06", "c2", "lead", 1, 1),
            ("2026-01-08", None, "lead", 1, 1),
        }
        # r2's lead written again, earlier: its first lead is now on the 4th (still c2)
        ingest_file(ws, "crm", _csv(tmp_path / "c2.csv", crm, "r2,lead,2026-01-04T08:00:00,u2"))
        states = assert_rollups_current(ws)
        assert states["crm_daily"]["refresh"] == "incremental"
        assert states["crm_daily"]["days"] == 2  # the 4th and the 6th, nothing else
        assert states["conversion_daily"]["days"] == 0
        assert ("2026-01-04", "c2", "lead", 1, 1) in _crm_days(ws)
        assert ("2026-01-06", "c2", "lead", 1, 0) in _crm_days(ws)
        # u3's click arrives late: k1 and r3 (both on the 8th) move to c2
        ingest_file(
            ws, "touchpoints", _csv(tmp_path / "t2.csv", tp, "t4,2026-01-08T08:00:00,u3,c2")
        )
        states = assert_rollups_current(ws)
        assert states["crm_daily"]["days"] == states["conversion_daily"]["days"] == 1
        assert ("2026-01-08", "c2", "lead", 1, 1) in _crm_days(ws)
        conv = rollups.table(ws, "conversion_daily").to_pyarrow().to_pylist()
        assert [(str(r["day"]), r["campaign_id"], r["n"]) for r in conv] == [
            ("2026-01-08", "c2", 1)
        ]
        # r1 back to lead after its mql: only r1's flags are derived again
        ingest_file(ws, "crm", _csv(tmp_path / "c3.csv", crm, "r1,lead,2026-01-09T09:00:00,u1"))
        states = assert_rollups_current(ws)
        assert states["crm_record_flags"]["refresh"] == "incremental"
        assert states["crm_record_flags"]["keys"] == 1
        assert states["crm_record_flags"]["days"] is None  # (per record, not per day)
        flags = rollups.table(ws, "crm_record_flags").to_pyarrow().to_pylist()
        assert [(r["record_id"], r["backwards"], r["overwritten"]) for r in flags] == [("r1", 1, 0)]
        # and back again: r1's stored flags are replaced, not added to
        ingest_file(ws, "crm", _csv(tmp_path / "c4.csv", crm, "r1,lead,2026-01-11T09:00:00,u1"))
        assert assert_rollups_current(ws)["crm_record_flags"]["keys"] == 1
        flags = rollups.table(ws, "crm_record_flags").to_pyarrow().to_pylist()
        assert [(r["record_id"], r["backwards"]) for r in flags] == [("r1", 2)]
        # another funnel (mql before lead): the table is rebuilt for it, and equals its rows'
        ranks = {"mql": 0, "lead": 1}
        got = rollups.table(ws, "crm_record_flags", ranks=ranks).to_pandas()
        assert ws.read_meta("rollup:crm_record_flags")["refresh"] == "full"
        want = rollups.live(ws, "crm_record_flags", ranks=ranks).to_pandas()
        pd.testing.assert_frame_equal(_sorted(got), _sorted(want), check_dtype=False)
        assert set(got.record_id) == {"r1"}  # its mql after its first lead: backwards now
