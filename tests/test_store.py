"""The workspace: where it lives, its tables, its ibis backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from signalloop.contract import KINDS
from signalloop.errors import UsageError
from signalloop.store import DEFAULT_DB, Workspace, resolve_db_path


def test_path_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGNALLOOP_DB", raising=False)
    assert resolve_db_path(None) == DEFAULT_DB == "signalloop.duckdb"
    monkeypatch.setenv("SIGNALLOOP_DB", "/tmp/env.duckdb")
    assert resolve_db_path(None) == "/tmp/env.duckdb"
    assert resolve_db_path("explicit.duckdb") == "explicit.duckdb"


def test_schema_has_one_table_per_kind_plus_bookkeeping(ws: Workspace) -> None:
    tables = set(ws.ibis.list_tables())
    assert tables >= {*KINDS, "quarantine", "duplicates", "ingest_log", "meta"}
    for name, kind in KINDS.items():
        cols = ws.table(name).columns
        assert tuple(cols[: len(kind.names)]) == kind.names
        assert {"attrs", "_ingest_id"} <= set(cols)


def test_reopening_keeps_data_and_schema(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    with Workspace(db) as ws:
        ws.con.execute("INSERT INTO touchpoints (touch_id, ts, user_id) VALUES ('t', now(), 'u')")
    with Workspace(db, read_only=True) as ws:
        assert ws.counts()["touchpoints"] == 1


def test_history_wide_ids_are_stored_uncompressed(tmp_path: Path) -> None:
    """The ids that joins look up across the whole history (``PLAIN_IDS``) are written without
    compression, through reopening and later ingests; the other columns keep DuckDB's own
    choice (``landing_url``: FSST)."""
    from signalloop.store import PLAIN_IDS

    db = tmp_path / "w.duckdb"
    rows = (
        "SELECT 's9-t' || i, TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND, 's9-u' || (i % 50000), "
        "'fbclid-' || md5(i::VARCHAR), 'https://example.com/a?fbclid=' || md5(i::VARCHAR), {n} "
        "FROM range({lo}, {hi}) r(i)"
    )
    insert = "INSERT INTO touchpoints (touch_id, ts, user_id, click_id, landing_url, _ingest_id) "
    for n, (lo, hi) in enumerate(((0, 300_000), (300_000, 600_000))):
        with Workspace(db) as ws:
            ws.con.execute(insert + rows.format(n=n, lo=lo, hi=hi))
            ws.con.execute("CHECKPOINT")
            got = dict(
                ws.con.execute(
                    "SELECT column_name, list(DISTINCT compression) FROM "
                    "pragma_storage_info('touchpoints') WHERE segment_type = 'VARCHAR' GROUP BY 1"
                ).fetchall()
            )
            for col in PLAIN_IDS["touchpoints"]:
                assert got[col] == ["Uncompressed"], (col, got[col])
            assert "FSST" in got["landing_url"]


def test_clear_errors_for_bad_locations(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        Workspace(tmp_path / "no" / "such" / "dir.duckdb")
    with pytest.raises(UsageError, match="ingest something first"):
        Workspace(tmp_path / "absent.duckdb", read_only=True)


def test_reads_go_through_ibis(ws: Workspace) -> None:
    expr = ws.table("spend").group_by("campaign_id").aggregate(n=ws.table("spend").count())
    assert "GROUP BY" in str(ws.ibis.compile(expr)).upper()


def test_a_reused_filtered_table_is_inlined_not_materialised(ws: Workspace) -> None:
    """ibis names a filtered table read twice as a CTE; the workspace compiles it NOT
    MATERIALIZED (``inline_scans``) and gets the rows the materialised CTE gives, while a
    CTE that aggregates stays materialised."""
    ws.con.execute("CREATE TABLE t (a INTEGER, b VARCHAR)")
    ws.con.execute("INSERT INTO t SELECT i, 'x' || (i % 7) FROM range(100) r(i)")
    t = ws.table("t")
    big = t.filter(t.a > 10)
    counts = big.group_by("b").aggregate(n=big.count())
    q = big.join(counts, "b").join(counts.view(), "b")
    sql = ws.ibis.compile(q)
    # the filter is inlined, the grouping (read twice too) is not
    assert sql.count("AS NOT MATERIALIZED (") == 1 and sql.count(" AS (") >= 1
    plain = type(ws.ibis.compiler).__mro__[1]().to_sqlglot(q).sql(dialect="duckdb")
    assert "MATERIALIZED" not in plain
    got = sorted(ws.con.execute(sql).fetchall())
    assert got == sorted(ws.con.execute(plain).fetchall())
    assert len(got) == 89
