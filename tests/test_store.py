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


def test_clear_errors_for_bad_locations(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        Workspace(tmp_path / "no" / "such" / "dir.duckdb")
    with pytest.raises(UsageError, match="ingest something first"):
        Workspace(tmp_path / "absent.duckdb", read_only=True)


def test_reads_go_through_ibis(ws: Workspace) -> None:
    expr = ws.table("spend").group_by("campaign_id").aggregate(n=ws.table("spend").count())
    assert "GROUP BY" in str(ws.ibis.compile(expr)).upper()
