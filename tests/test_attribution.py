"""Attribution follows the contract: campaign_id, else click_id, else the user's last touch."""

from __future__ import annotations

from pathlib import Path

from signalloop.attribution import attributed_conversions, attribution_counts, campaign_summary
from signalloop.ingest import ingest_file
from signalloop.store import Workspace

from .conftest import write_csv


def load(ws: Workspace, tmp_path: Path) -> None:
    write_csv(
        tmp_path / "spend.csv",
        ["date", "platform", "campaign_id", "impressions", "clicks", "spend"],
        [
            ["2026-01-01", "meta", "cA", 1000, 20, 30.0],
            ["2026-01-01", "google", "cB", 500, 10, 40.0],
        ],
    )
    write_csv(
        tmp_path / "tp.csv",
        ["touch_id", "ts", "user_id", "click_id", "campaign_id"],
        [
            ["t1", "2026-01-01T10:00:00Z", "u1", "k1", "cA"],
            ["t2", "2026-01-02T10:00:00Z", "u1", "k2", "cB"],
            ["t3", "2026-01-02T11:00:00Z", "u2", "k3", "cB"],
        ],
    )
    write_csv(
        tmp_path / "conv.csv",
        ["conversion_id", "ts", "kind", "user_id", "click_id", "campaign_id", "value"],
        [
            ["v1", "2026-01-01T12:00:00Z", "purchase", "u1", "", "cA", 10],  # own campaign_id
            ["v2", "2026-01-02T12:00:00Z", "purchase", "", "k3", "", 20],  # by click_id
            ["v3", "2026-01-01T23:00:00Z", "purchase", "u1", "", "", 5],  # u1's last touch: t1
            ["v4", "2026-01-03T23:00:00Z", "purchase", "u1", "", "", 7],  # u1's last touch: t2
            ["v5", "2026-01-01T09:00:00Z", "purchase", "u1", "", "", 1],  # before any touch
            ["v6", "2026-01-03T23:00:00Z", "purchase", "u9", "", "", 5],  # unknown user
        ],
    )
    for kind, name in (("spend", "spend"), ("touchpoints", "tp"), ("conversions", "conv")):
        ingest_file(ws, kind, tmp_path / f"{name}.csv")


def test_rules_in_order(ws: Workspace, tmp_path: Path) -> None:
    load(ws, tmp_path)
    got = {
        r["conversion_id"]: (r["attributed_campaign_id"], r["attributed_by"])
        for r in attributed_conversions(ws).to_pyarrow().to_pylist()
    }
    assert got == {
        "v1": ("cA", "campaign_id"),
        "v2": ("cB", "click_id"),
        "v3": ("cA", "user_id"),
        "v4": ("cB", "user_id"),
        "v5": (None, None),
        "v6": (None, None),
    }
    assert attribution_counts(ws) == {
        "campaign_id": 1,
        "click_id": 1,
        "user_id": 2,
        "unattributed": 2,
    }


def test_campaign_summary(ws: Workspace, tmp_path: Path) -> None:
    load(ws, tmp_path)
    rows = {r["campaign_id"]: r for r in campaign_summary(ws)}
    assert (rows["cA"]["conversions"], rows["cA"]["value"], rows["cA"]["cpa"]) == (2, 15.0, 15.0)
    assert (rows["cB"]["conversions"], rows["cB"]["value"], rows["cB"]["cpa"]) == (2, 27.0, 20.0)
    assert rows["cB"]["roas"] == round(27 / 40, 3)
    assert [r["campaign_id"] for r in campaign_summary(ws)] == ["cB", "cA"]  # by spend


def test_stored_record_touches_match_the_rows_at_a_cut(ws: Workspace, tmp_path: Path) -> None:
    """Record campaigns with the touch half read from the stored records (as the records
    begun within the hour before a cut are derived): a record whose rows name two users,
    cut where only the first exists (the stored record may hold the other), still gets the
    first user's last touch."""
    from datetime import datetime

    from signalloop.attribution import _record_campaigns, refresh_attribution

    load(ws, tmp_path)
    write_csv(
        tmp_path / "crm.csv",
        ["record_id", "stage", "ts", "user_id"],
        [
            ["r1", "sql", "2026-01-04T10:00:00Z", "u2"],  # the stored record's user
            ["r1", "lead", "2026-01-02T10:30:00Z", "u1"],  # u1's last touch before: t2 (cB)
            ["r2", "lead", "2026-01-02T11:30:00Z", "u2"],  # u2's last touch before: t3 (cB)
            ["r3", "lead", "2026-01-01T11:00:00Z", ""],  # no user: no touch
        ],
    )
    ingest_file(ws, "crm", tmp_path / "crm.csv")
    crm, tp, conv = ws.table("crm"), ws.table("touchpoints"), attributed_conversions(ws)
    assert refresh_attribution(ws)  # (the stored records are current: they may be reused)
    stored = ws.con.execute("SELECT user_id FROM crm_record_campaign WHERE record_id = 'r1'")
    assert stored.fetchone() == ("u2",)  # so the cut at Jan 3 (user u1) is derived again
    for at in (datetime(2026, 1, 3), datetime(2026, 1, 5)):
        given = {
            "crm": crm.filter(crm.ts < at),
            "conversions": conv.filter(conv.ts < at).filter(conv.kind == "none"),
            "touchpoints": tp.filter(tp.ts < at),
        }
        rows = {
            stored: {
                r["record_id"]: r["campaign_id"]
                for r in _record_campaigns(ws, **given, reuse=stored).to_pyarrow().to_pylist()
            }
            for stored in (True, False)
        }
        assert rows[True] == rows[False]
        assert rows[True]["r2"] == "cB" and rows[True]["r3"] is None
        if at.day == 3:  # only r1's first row: its user is u1
            assert rows[True]["r1"] == "cB"


def test_the_attributed_conversions_are_one_stored_table(ws: Workspace, tmp_path: Path) -> None:
    """Read from the stored attribution alone (no join with the conversions, no copy made per
    run), equal to attributing on the fly, and current again after an ingest."""
    from signalloop.attribution import _columns, attribute

    load(ws, tmp_path)

    def rows(t: object) -> list[tuple[object, ...]]:
        t = t.drop("attrs")  # type: ignore[attr-defined]
        return sorted(tuple(r.values()) for r in t.to_pyarrow().to_pylist())

    def live() -> list[tuple[object, ...]]:
        return rows(attribute(ws, ws.table("conversions")).select(*_columns(ws)))

    stored = attributed_conversions(ws)
    sql = str(ws.ibis.compile(stored)).upper()
    assert "JOIN" not in sql and "CONVERSION_ATTRIBUTION" in sql
    before = rows(stored)
    assert before == live()
    write_csv(
        tmp_path / "conv2.csv",
        ["conversion_id", "ts", "kind", "user_id", "click_id", "campaign_id", "value"],
        [["v7", "2026-01-04T08:00:00Z", "purchase", "u2", "", "", 3]],
    )
    ingest_file(ws, "conversions", tmp_path / "conv2.csv")
    again = rows(attributed_conversions(ws))
    assert len(again) == len(before) + 1
    assert again == live()
    temps = ws.con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone()
    assert temps == (0,)


def test_the_nowcast_reads_its_links_from_the_stored_rows(ws: Workspace, tmp_path: Path) -> None:
    """On the daily run's cut (every click before it) the nowcast's links are a plain scan of
    the stored attribution, with no pass over the touchpoints; cut earlier, the conversions
    whose click comes later are linked again from the cut rows, as a live link has it."""
    from datetime import date

    from signalloop.nowcast import _link_clicks_cut, _Source, _stored_links

    load(ws, tmp_path)

    def rows(t: object) -> list[tuple[object, ...]]:
        got = t.to_pyarrow().to_pylist()  # type: ignore[attr-defined]
        return sorted(tuple(str(v) for v in r.values()) for r in got)

    src = _Source(ws, date(2026, 1, 3))
    stored, other = _stored_links(src, src.conversions())
    assert other is None
    assert "TOUCHPOINTS" not in str(ws.ibis.compile(stored)).upper()
    assert rows(stored) == rows(_link_clicks_cut(src, src.table("conversions")))
    # a conversion stamped before its click (k3 is touched on 2 January), cut on 1 January
    write_csv(
        tmp_path / "conv3.csv",
        ["conversion_id", "ts", "kind", "user_id", "click_id", "campaign_id", "value"],
        [["v8", "2026-01-01T20:00:00Z", "purchase", "u2", "k3", "", 4]],
    )
    ingest_file(ws, "conversions", tmp_path / "conv3.csv")
    early = _Source(ws, date(2026, 1, 1))
    stored, other = _stored_links(early, early.conversions())
    assert other is not None and other.conversion_id.to_pyarrow().to_pylist() == ["v8"]
    both = stored.union(_link_clicks_cut(early, other))
    assert rows(both) == rows(_link_clicks_cut(early, early.table("conversions")))
