"""``signalloop compact``: a workspace rewritten into a fresh file holds the same rows, its
history-wide ids uncompressed, the space of deleted rows given back; a failure leaves it as
it was."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from signalloop import compact as compact_module
from signalloop.cli import app
from signalloop.compact import compact
from signalloop.errors import UsageError
from signalloop.ingest import ingest_file
from signalloop.store import PLAIN_IDS, Workspace

#: 300,000 touchpoints whose ids are as long and as varied as real ones (FSST's kind of text)
ROWS = (
    "SELECT 's9-t' || i, TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND, 's9-u' || (i % 50000), "
    "'fbclid-' || md5(i::VARCHAR), 'c' || (i % 7), "
    "'https://example.com/a?fbclid=' || md5(i::VARCHAR), 0 FROM range(300000) r(i)"
)
INSERT = (
    "INSERT INTO touchpoints (touch_id, ts, user_id, click_id, campaign_id, landing_url, "
    "_ingest_id) "
)


def _compression(ws: Workspace, table: str) -> dict[str, list[str]]:
    rows = ws.con.execute(
        "SELECT column_name, list(DISTINCT compression ORDER BY compression) FROM "
        f"pragma_storage_info('{table}') WHERE segment_type = 'VARCHAR' "
        "AND compression <> 'Constant' GROUP BY 1"
    ).fetchall()
    return dict(rows)


def _contents(ws: Workspace) -> dict[str, Any]:
    tables = [
        r[0]
        for r in ws.con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE NOT temporary ORDER BY 1"
        ).fetchall()
    ]
    return {t: ws.con.execute(f'SELECT * FROM "{t}" ORDER BY ALL').fetchall() for t in tables}


def _old_workspace(db: Path, tmp_path: Path) -> Path:
    """A workspace made before ``PLAIN_IDS``: its touchpoints' ids compressed with FSST; an
    ingested file, and most of the bulk rows deleted again (space DuckDB keeps)."""
    csv = tmp_path / "touchpoints.csv"
    csv.write_text(
        "touch_id,ts,user_id,click_id,campaign_id\n"
        "t1,2026-01-02T10:00:00,u1,k1,c1\nt2,2026-01-02T11:00:00,u2,k2,c2\n"
    )
    with Workspace(db) as ws:
        row = ws.con.execute(
            "SELECT sql FROM duckdb_tables() WHERE table_name = 'touchpoints'"
        ).fetchone()
        assert row is not None
        ddl = row[0]
        ws.con.execute("DROP TABLE touchpoints")
        for col in PLAIN_IDS["touchpoints"]:  # (as DuckDB chose for them before)
            ddl = ddl.replace(f"{col} VARCHAR", f"{col} VARCHAR USING COMPRESSION fsst")
        ws.con.execute(ddl)
        ws.con.execute(INSERT + ROWS)
        ws.con.execute("CHECKPOINT")
        ingest_file(ws, "touchpoints", csv)
        ws.con.execute(
            "DELETE FROM touchpoints WHERE touch_id LIKE 's9-t%' AND ts > '2026-01-01 00:30'"
        )
        ws.con.execute("CHECKPOINT")
        got = _compression(ws, "touchpoints")
        assert all(got[c] == ["FSST"] for c in PLAIN_IDS["touchpoints"]), got
    return csv


def test_an_old_workspace_is_rewritten_with_the_same_rows(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    csv = _old_workspace(db, tmp_path)
    with Workspace(db, read_only=True) as ws:
        before = _contents(ws)
    size = db.stat().st_size
    steps: list[str] = []
    done = compact(db, progress=lambda msg, _f: steps.append(msg))
    assert done["bytes_before"] == size and done["bytes_after"] < size / 2
    assert done["rewritten_ids"]["touchpoints"] == list(PLAIN_IDS["touchpoints"])
    assert done["tables"]["touchpoints"] == 1803  # 1,801 bulk rows kept (to 00:30:00), 2 ingested
    assert "copying touchpoints" in steps
    assert not (tmp_path / "w.duckdb.compacting").exists()
    with Workspace(db) as ws:
        assert _contents(ws) == before
        got = _compression(ws, "touchpoints")
        for col in PLAIN_IDS["touchpoints"]:
            assert got[col] == ["Uncompressed"], (col, got[col])
        # the ingest log came along: the same file again adds nothing
        again = ingest_file(ws, "touchpoints", csv)
        assert again.status == "skipped" or again.rows_loaded == 0, again
        assert _contents(ws)["touchpoints"] == before["touchpoints"]
    # a second rewrite of a current workspace changes nothing it holds
    assert compact(db)["rewritten_ids"] == {"touchpoints": [], "conversions": []}


def test_a_failed_check_leaves_the_workspace_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "w.duckdb"
    _old_workspace(db, tmp_path)
    with Workspace(db, read_only=True) as ws:
        before = _contents(ws)
    size = db.stat().st_size

    def differs(*args: Any) -> int:
        raise RuntimeError("touchpoints: the copy holds (1, 1), the workspace (2, 2)")

    monkeypatch.setattr(compact_module, "_check_same", differs)
    with pytest.raises(RuntimeError, match="the copy holds"):
        compact(db)
    assert db.stat().st_size == size and not (tmp_path / "w.duckdb.compacting").exists()
    with Workspace(db, read_only=True) as ws:
        assert _contents(ws) == before
        assert _compression(ws, "touchpoints")["touch_id"] == ["FSST"]


def test_a_full_disk_is_said_before_and_while_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Too little room for the copy: said before anything is written. The disk filling up
    while it is written: the copy is removed, and the same words, with what DuckDB said."""
    db = tmp_path / "w.duckdb"
    _old_workspace(db, tmp_path)
    with Workspace(db, read_only=True) as ws:
        before = _contents(ws)
    real = shutil.disk_usage

    def small(path: Any) -> Any:
        return real(path)._replace(free=1024)

    monkeypatch.setattr(compact_module.shutil, "disk_usage", small)
    with pytest.raises(UsageError, match=r"needs about .* GiB free in .*, and 0.0 GiB are"):
        compact(db)
    monkeypatch.setattr(compact_module.shutil, "disk_usage", real)

    def full(*args: Any) -> int:
        raise duckdb.IOException('Could not write file "x": No space left on device')

    monkeypatch.setattr(compact_module, "_check_same", full)
    with pytest.raises(UsageError, match="no space left on the disk while writing the new copy"):
        compact(db)
    assert not (tmp_path / "w.duckdb.compacting").exists()
    with Workspace(db, read_only=True) as ws:
        assert _contents(ws) == before


def test_what_compact_refuses(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a DuckDB file"):
        compact(tmp_path / "absent.duckdb")
    with pytest.raises(UsageError, match="DuckDB workspace file"):
        compact("postgres://localhost/signalloop")
    db = tmp_path / "w.duckdb"
    Workspace(db).close()
    holder = subprocess.Popen(  # another process holds the workspace (as serve would)
        [sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(UsageError, match="open in another process"):
            compact(db)
    finally:
        holder.kill()
        holder.wait()


HOLD = (
    "import sys, time, duckdb; c = duckdb.connect(sys.argv[1]); print('open', flush=True); "
    "time.sleep(60)"
)


def test_cli(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    _old_workspace(db, tmp_path)
    runner = CliRunner()
    done = runner.invoke(app, ["compact", "--db", str(db), "--json"])
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["tables"]["touchpoints"] == 1803 and doc["bytes_after"] < doc["bytes_before"]
    text = runner.invoke(app, ["compact", "--db", str(db)])
    assert text.exit_code == 0 and "rewritten" in text.stdout
    bad = runner.invoke(app, ["compact", "--db", str(tmp_path / "none.duckdb"), "--json"])
    assert bad.exit_code == 2 and "not a DuckDB file" in bad.output


def test_the_touch_index_is_folded_back_into_one_run(tmp_path: Path) -> None:
    """Each touchpoints ingest adds a run to the touch index; compact builds it again as one
    run, which the next refresh finds current and reads the same touchpoints from."""
    from signalloop import touchindex
    from signalloop.attribution import ATTRIBUTION_STATE, refresh_attribution

    from .test_touchindex import touch_csv

    def write(name: str, ids: range) -> Path:
        return touch_csv(tmp_path / name, ids)

    db = tmp_path / "w.duckdb"
    with Workspace(db) as ws:
        ingest_file(ws, "touchpoints", write("a.csv", range(0, 400)))
        assert refresh_attribution(ws)
        for day in range(1, 6):  # small daily files: runs of very different sizes
            ingest_file(ws, "touchpoints", write(f"d{day}.csv", range(400 * day, 400 * day + 9)))
        index = touchindex.for_workspace(ws)
        assert index is not None and index.runs() > 1
        runs = index.runs()
        users = [f"u{i}" for i in range(7)]
        before = sorted(index.lookup(ws.con, users=users).column("touch_id").to_pylist())
    done = compact(db)
    assert done["touch_index"] == {"runs_before": runs, "runs": 1, "refresh": "built"}
    with Workspace(db) as ws:
        index = touchindex.for_workspace(ws)
        assert index is not None and index.runs() == 1
        after = sorted(index.lookup(ws.con, users=users).column("touch_id").to_pylist())
        assert after == before and len(after) == 400 + 5 * 9
        assert refresh_attribution(ws)
        assert ws.read_meta(ATTRIBUTION_STATE)["touch_index"] == "current"
    # an index that cannot be written (a full disk) is said; the rewrite stands
    with Workspace(db) as ws:
        for day in range(6, 8):
            ingest_file(ws, "touchpoints", write(f"d{day}.csv", range(400 * day, 400 * day + 9)))

    def full(*_a: Any, **_k: Any) -> str:
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(touchindex.TouchIndex, "sync", full)
        failed = compact(db)
    assert failed["touch_index"]["refresh"].startswith("unavailable: OSError")
    assert failed["touch_index"]["runs"] == 0 and failed["tables"]["touchpoints"] == 463
    with Workspace(db) as ws:
        assert refresh_attribution(ws)  # (built again by the refresh)
        assert ws.read_meta(ATTRIBUTION_STATE)["touch_index"] == "built"
    # without an index (none built yet), nothing is built
    empty = tmp_path / "e.duckdb"
    Workspace(empty).close()
    assert compact(empty)["touch_index"] is None
