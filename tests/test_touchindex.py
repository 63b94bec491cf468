"""The touch index finds every touchpoint of the asked users and clicks, whatever its runs.

Its lookups, filtered by the ids themselves, must equal filtering the touchpoints table:
after a build in several chunks, after ingests added as runs (and merged), after rows were
removed (built again), and for another workspace's or another version's runs (never read).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from signalloop import touchindex
from signalloop.attribution import (
    ATTRIBUTION_STATE,
    attribute,
    attributed_conversions,
    refresh_attribution,
)
from signalloop.store import Workspace
from signalloop.touchindex import TouchIndex

from .conftest import ingest_drop, simulated_drops
from .test_attribution_incremental import _frame

_TABLE = (
    "CREATE TABLE touchpoints (touch_id VARCHAR, click_id VARCHAR, user_id VARCHAR, "
    "campaign_id VARCHAR, ts TIMESTAMP, adset_id VARCHAR, creative_id VARCHAR, "
    "_ingest_id BIGINT)"
)


def _add(con: duckdb.DuckDBPyConnection, rng: np.random.Generator, n: int, ingest: int) -> None:
    """``n`` touchpoints of one ingest: users repeat across ingests, some ids are null."""
    start = con.execute("SELECT count(*) FROM touchpoints").fetchone()[0]  # type: ignore[index]
    rows = []
    for i in range(start, start + n):
        user = None if rng.random() < 0.05 else f"u{int(rng.integers(0, 400))}"
        click = None if rng.random() < 0.3 else f"k{int(rng.integers(0, 3 * n + 50))}"
        rows.append(
            (
                f"t{i}",
                click,
                user,
                f"c{int(rng.integers(0, 7))}",
                f"2026-01-{1 + int(rng.integers(0, 28)):02d} 10:00:00",
                None if rng.random() < 0.2 else f"a{int(rng.integers(0, 20))}",
                f"cr{int(rng.integers(0, 30))}",
                ingest,
            )
        )
    con.executemany("INSERT INTO touchpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def touch_csv(path: Path, ids: range) -> Path:
    """A touchpoints CSV of touch ids ``t<i>`` (seven users, three campaigns, a click each)."""
    lines = ["touch_id,ts,user_id,click_id,campaign_id"]
    lines += [f"t{i},2026-01-02T10:00:00,u{i % 7},k{i},c{i % 3}" for i in ids]
    path.write_text("\n".join(lines) + "\n")
    return path


def _state(con: duckdb.DuckDBPyConnection) -> list[int]:
    row = con.execute("SELECT count(*), coalesce(max(_ingest_id), -1) FROM touchpoints").fetchone()
    assert row is not None
    return [int(row[0]), int(row[1])]


def _assert_finds(
    index: TouchIndex, con: duckdb.DuckDBPyConnection, rng: np.random.Generator
) -> None:
    """Lookups of random users and clicks (some unknown, a null) equal the table's filter."""
    for _ in range(5):
        users = [f"u{int(x)}" for x in rng.integers(0, 450, int(rng.integers(0, 40)))]
        clicks = [f"k{int(x)}" for x in rng.integers(0, 2000, int(rng.integers(0, 40)))]
        users.append(None)  # type: ignore[arg-type]
        found = index.lookup(con, users=users, clicks=clicks)
        assert found.column_names == list(touchindex.COLUMNS)
        got = sorted(
            t
            for t, u, k in zip(
                found.column("touch_id").to_pylist(),
                found.column("user_id").to_pylist(),
                found.column("click_id").to_pylist(),
                strict=True,
            )
            if u in users or k in clicks
        )
        want = sorted(
            r[0]
            for r in con.execute(
                "SELECT touch_id FROM touchpoints WHERE list_contains($u, user_id) "
                "OR list_contains($k, click_id)",
                {"u": [u for u in users if u is not None], "k": clicks},
            ).fetchall()
        )
        assert got == want
        assert len(set(got)) == len(got)  # (each touchpoint once, from its one run)
    # the touch ids' hashes: any stored one is found, none of the others
    stored = [r[0] for r in con.execute("SELECT touch_id FROM touchpoints").fetchall()]
    pick = [stored[int(i)] for i in rng.integers(0, len(stored), 3)]
    absent = [f"x{int(i)}" for i in range(50)]
    assert index.holds_any_key(touchindex._hash(pa.chunked_array([pa.array(absent + pick)])))
    assert not index.holds_any_key(touchindex._hash(pa.chunked_array([pa.array(absent)])))


def test_lookups_equal_the_tables_filter_through_builds_appends_and_merges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(touchindex, "BATCH_ROWS", 700)  # a build in several batches
    monkeypatch.setattr(touchindex, "MERGE_ROWS", 900)
    rng = np.random.default_rng(3)
    con = duckdb.connect()
    con.execute(_TABLE)
    _add(con, rng, 2000, 1)
    index = TouchIndex(tmp_path / "ws.touches", owner="w1")
    assert index.sync(con, _state(con)) == "built"
    runs = json.loads((tmp_path / "ws.touches" / "index.json").read_text())["runs"]
    assert len(runs) == 1  # one run, written batch by batch
    arrow = pa.ipc.open_file(pa.memory_map(str(tmp_path / "ws.touches" / f"{runs[0]}.arrow")))
    assert arrow.num_record_batches == 3
    _assert_finds(index, con, rng)
    assert index.sync(con, _state(con)) == "current"
    for ingest in range(2, 9):  # daily ingests: each a run, the small ones merged
        _add(con, rng, int(rng.integers(50, 300)), ingest)
        assert index.sync(con, _state(con)) == "appended"
        _assert_finds(index, con, rng)
    doc = json.loads((tmp_path / "ws.touches" / "index.json").read_text())
    assert doc["rows"] == _state(con)[0]
    assert len(doc["runs"]) < 1 + 7  # some were merged
    files = {p.name.split(".")[0] for p in (tmp_path / "ws.touches").glob("run-*")}
    assert files == set(doc["runs"])  # (merged runs' files are gone)
    # rows removed: not an append, built again
    con.execute("DELETE FROM touchpoints WHERE user_id = 'u7'")
    assert index.sync(con, _state(con)) == "built"
    _assert_finds(index, con, rng)


def test_runs_of_another_workspace_or_version_are_not_read(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    con = duckdb.connect()
    con.execute(_TABLE)
    _add(con, rng, 300, 1)
    folder = tmp_path / "ws.touches"
    assert TouchIndex(folder, owner="w1").sync(con, _state(con)) == "built"
    assert TouchIndex(folder, owner="w2").state() is None
    assert TouchIndex(folder, owner="w2").sync(con, _state(con)) == "built"
    header = folder / "index.json"
    doc = json.loads(header.read_text())
    header.write_text(json.dumps({**doc, "duckdb": "0.0.0"}))  # another DuckDB's hash
    index = TouchIndex(folder, owner="w2")
    assert index.state() is None
    with pytest.raises(RuntimeError, match="not usable"):
        index.lookup(con, users=["u1"])
    assert index.sync(con, _state(con)) == "built"
    _assert_finds(index, con, rng)
    next(folder.glob("run-*.keys.npy")).unlink()  # a run's file gone: not read, built again
    (folder / ".run-cut-short.arrow").write_bytes(b"half a run")  # a write cut short
    assert index.state() is None
    assert index.sync(con, _state(con)) == "built"
    _assert_finds(index, con, rng)
    assert not list(folder.glob(".*.arrow"))  # (its leftovers cleared)


def test_the_attribution_reads_its_touchpoints_from_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daily refresh takes its users' and clicks' touchpoints from the index (an index
    that finds nothing changes what it attributes); with the index as it is, it equals the
    full recompute (also on every shape and fault: test_attribution_incremental)."""
    drops = simulated_drops(tmp_path, "full", (), seed=11)

    def attributed(name: str, blind: bool) -> dict[str, int]:
        with Workspace(tmp_path / name) as ws:
            ingest_drop(ws, drops[0])
            assert refresh_attribution(ws)
            assert ws.read_meta(ATTRIBUTION_STATE)["touch_index"] == "built"
            ingest_drop(ws, drops[1])
            with monkeypatch.context() as m:
                if blind:
                    m.setattr(TouchIndex, "lookup", lambda self, con, **kw: _nothing(con))
                assert refresh_attribution(ws)
            state = ws.read_meta(ATTRIBUTION_STATE)
            assert (state["refresh"], state["touch_index"]) == ("incremental", "current")
            stored = _frame(attributed_conversions(ws))
            fresh = _frame(attribute(ws, ws.table("conversions")))
            return {"equal": int(stored.equals(fresh)), "rows": len(stored)}

    assert attributed("seeing.duckdb", blind=False)["equal"] == 1
    assert attributed("blind.duckdb", blind=True)["equal"] == 0


def _nothing(con: duckdb.DuckDBPyConnection) -> object:
    return (
        con.execute(touchindex._select("WHERE false"))
        .fetch_arrow_table()
        .select(list(touchindex.COLUMNS))
    )


def test_an_ingest_looks_up_only_the_ids_the_index_may_hold(tmp_path: Path) -> None:
    """A touchpoints file none of whose ids the index holds lands without the anti-join; one
    that repeats stored ids lands only the new ones; either way the ingest adds its rows to
    the index, and re-ingesting adds nothing."""
    from signalloop.ingest import ingest_file

    def write(name: str, ids: range) -> Path:
        return touch_csv(tmp_path / name, ids)

    with Workspace(tmp_path / "ws.duckdb") as ws:
        assert ingest_file(ws, "touchpoints", write("a.csv", range(0, 50))).rows_loaded == 50
        index = touchindex.for_workspace(ws)
        assert index is not None
        assert index.state() is None  # (built by the first attribution refresh)
        limit = "SELECT current_setting('memory_limit')"
        before = ws.con.execute(limit).fetchone()
        assert refresh_attribution(ws)
        assert ws.con.execute(limit).fetchone() == before  # (the build's limit set back)
        assert index.state() == ws.ingest_state("touchpoints")
        fresh = ingest_file(ws, "touchpoints", write("b.csv", range(50, 80)))
        assert (fresh.rows_loaded, fresh.rows_existing) == (30, 0)
        assert index.state() == ws.ingest_state("touchpoints")  # (the ingest added its run)
        mixed = ingest_file(ws, "touchpoints", write("c.csv", range(70, 100)))
        assert (mixed.rows_loaded, mixed.rows_existing) == (20, 10)
        again = ingest_file(ws, "touchpoints", write("d.csv", range(70, 101)))
        assert (again.rows_loaded, again.rows_existing) == (1, 30)
        n, distinct = ws.con.execute(
            "SELECT count(*), count(DISTINCT touch_id) FROM touchpoints"
        ).fetchone()  # type: ignore[misc]
        assert n == distinct == 101
        assert index.state() == ws.ingest_state("touchpoints")
        assert refresh_attribution(ws)
        assert ws.read_meta(ATTRIBUTION_STATE)["touch_index"] == "current"


def test_damaged_runs_are_read_around_and_built_again(tmp_path: Path) -> None:
    """A run cut short on disk (a crash, a full disk) is not trusted: the refresh reads the
    table instead (and says so), the ingest makes its anti-join, and the index is built again;
    the attribution stays equal to the full recompute throughout."""
    drops = simulated_drops(tmp_path, "full", (), seed=11)
    folder = tmp_path / "ws.touches"

    def state(ws: Workspace) -> str:
        assert refresh_attribution(ws)
        assert _frame(attributed_conversions(ws)).equals(
            _frame(attribute(ws, ws.table("conversions")))
        )
        return str(ws.read_meta(ATTRIBUTION_STATE)["touch_index"])

    with Workspace(tmp_path / "ws.duckdb") as ws:
        ingest_drop(ws, drops[0])
        assert state(ws) == "built"
        ingest_drop(ws, drops[1])  # (its run added by the ingest)
        for run in folder.glob("run-*.arrow"):
            run.write_bytes(run.read_bytes()[:100])  # cut short
        assert state(ws).startswith("damaged: ArrowInvalid")
        ingest_drop(ws, drops[2])  # (the index forgotten: the ingest's anti-join)
        assert state(ws) == "built"
        for keys in folder.glob("run-*.keys.npy"):
            keys.write_bytes(b"not a run")
        ingest_drop(ws, drops[3])  # the key check cannot read its runs: the anti-join
        assert not (folder / "index.json").exists()  # (forgotten)
        n, distinct = ws.con.execute(
            "SELECT count(*), count(DISTINCT touch_id) FROM touchpoints"
        ).fetchone()  # type: ignore[misc]
        assert n == distinct
        assert state(ws) == "built"
