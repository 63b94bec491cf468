"""The touch index finds every touchpoint of the asked users and clicks, whatever its runs.

Its lookups, filtered by the ids themselves, must equal filtering the touchpoints table:
after a build in several chunks, after ingests added as runs (and merged), after rows were
removed (built again), and for another workspace's or another version's runs (never read).
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from signalloop import touchindex, touchrows
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
    monkeypatch.setattr(touchindex, "BATCH_ROWS", 700)  # a build in batches, blocks across them
    monkeypatch.setattr(touchindex, "MERGE_ROWS", 900)
    rng = np.random.default_rng(3)
    con = duckdb.connect()
    con.execute(_TABLE)
    _add(con, rng, 2000, 1)
    index = TouchIndex(tmp_path / "ws.touches", owner="w1")
    assert index.sync(con, _state(con)) == "built"
    runs = json.loads((tmp_path / "ws.touches" / "index.json").read_text())["runs"]
    assert len(runs) == 1  # one run, written batch by batch
    assert index._rows(runs[0]) == 2000
    *_, blocks = index._fences(runs[0])
    assert len(blocks) == 1 + -(-2000 // touchrows.BLOCK)
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
        for run in folder.glob("run-*.rows"):
            run.write_bytes(run.read_bytes()[:100])  # cut short
        assert state(ws).startswith("damaged: ValueError")
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


def _asks(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple[int, int]]]:
    """Every byte range a lookup asks the kernel for, by file name (and still asked)."""
    asked: dict[str, list[tuple[int, int]]] = {}
    ask = touchindex._Map._ask

    def record(self: touchindex._Map, lo: np.ndarray, hi: np.ndarray) -> None:
        asked.setdefault(self.path.name.split(".", 1)[1], []).extend(
            zip(np.asarray(lo).tolist(), np.asarray(hi).tolist(), strict=True)
        )
        ask(self, lo, hi)

    monkeypatch.setattr(touchindex._Map, "_ask", record)
    return asked


def _covered(asked: list[tuple[int, int]], lo: int, hi: int) -> bool:
    return any(a <= lo and hi <= b for a, b in asked)


def test_a_fenced_search_finds_what_a_full_search_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search reads only the stretches its fences name (or, for keys in most of them,
    everything with the readahead), and finds every position a search of the whole array
    finds: runs of one hash across stretches, the first and last values, keys below and
    above them, at every length around a stretch's."""
    rng = np.random.default_rng(11)
    fence = touchindex.FENCE
    asked = _asks(monkeypatch)
    paths = set()
    for n in (1, fence - 1, fence, fence + 1, 5 * fence, 3000, 200_000):
        many = np.full(min(n, 2 * fence + 7), 2**63, dtype=np.uint64)  # spans stretches
        rest = rng.integers(1, 2**64 - 2, max(n - len(many), 0), dtype=np.uint64)
        values = np.sort(np.concatenate([rest, many]))[:n]
        path = tmp_path / f"v{n}.npy"
        np.save(path, values)
        pairs = tmp_path / f"p{n}.npy"  # (the values beside others, as the clicks are kept)
        np.save(pairs, np.stack([values, np.arange(n, dtype=np.uint64)], axis=1))
        for size, file in ((3, path), (20, path), (3, pairs), (20, pairs)):
            mapped = touchindex._Map(file)
            array = mapped.npy()
            array = array if array.ndim == 1 else array[:, 0]
            offset = file.stat().st_size - n * array.strides[0]
            picks = values[rng.integers(0, n, size)]
            absent = rng.integers(1, 2**64 - 2, size, dtype=np.uint64)
            edges = np.array([0, values[0], values[-1], 2**63, 2**64 - 1], dtype=np.uint64)
            keys = np.unique(np.concatenate([picks, absent, edges]))
            asked.clear()
            got = mapped.search(array, values[::fence], keys)
            assert got.tolist() == touchindex._ranges(values, keys).tolist()
            paths.add(mapped.dense)
            if not mapped.dense:  # (each position found was asked for before it was read)
                for at in got.tolist():
                    lo = offset + array.strides[0] * at
                    assert _covered(asked["npy"], lo, lo + 8)
            with pytest.raises(ValueError, match="fences for"):
                short = values[:: 2 * fence][:-1] if n > fence else values[:0]
                mapped.search(array, short, keys)
    assert paths == {False, True}  # (both ways searched)


def test_a_lookup_asks_for_every_byte_it_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows a lookup takes from a run are asked for ahead: the whole block of each (its
    values and its strings), once, and no block but those the users' fence says may hold a
    user's rows and those holding an asked click's row."""
    monkeypatch.setattr(touchindex, "BATCH_ROWS", 700)
    rng = np.random.default_rng(7)
    con = duckdb.connect()
    con.execute(_TABLE)
    _add(con, rng, 2000, 1)
    folder = tmp_path / "ws.touches"
    index = TouchIndex(folder, owner="w1")
    index.sync(con, _state(con))
    (run,) = {p.name.split(".")[0] for p in folder.glob("run-*")}
    *_, starts = index._fences(run)
    every = index._table(run).column("touch_id").to_pylist()  # (in the run's order)
    asked = _asks(monkeypatch)
    users = [f"u{int(x)}" for x in rng.integers(0, 400, 30)]
    clicks = [f"k{int(x)}" for x in rng.integers(0, 6000, 30)]
    got = index.lookup(con, users=users, clicks=clicks)
    ids = got.column("touch_id").to_pylist()
    found = set(ids)
    clicked = {
        t for t, k in zip(ids, got.column("click_id").to_pylist(), strict=True) if k in clicks
    }
    assert found and clicked
    held = {i // touchrows.BLOCK for i, t in enumerate(every) if t in found}
    blocks = {(int(starts[b]), int(starts[b + 1])): b for b in range(len(starts) - 1)}
    asked_blocks = [blocks[r] for r in asked["rows"]]  # (each asked range a whole block)
    assert len(set(asked_blocks)) == len(asked_blocks)  # (once each)
    assert held <= set(asked_blocks)
    # and no other than those the users' fence names, or holding a click's row
    user_fence, *_ = index._fences(run)
    hashes = touchindex._key_hashes(con, users, None)
    named = set(touchindex._stretches(user_fence, hashes).tolist())
    by_click = {i // touchrows.BLOCK for i, t in enumerate(every) if t in found and t in clicked}
    assert set(asked_blocks) <= named | by_click
    assert len(asked_blocks) < len(starts) - 1  # (not every block)


def test_asked_ranges_are_joined_when_close_and_kept_apart_when_far(tmp_path: Path) -> None:
    """``madvise`` is called from page boundaries, once per group of ranges closer than
    :data:`~signalloop.touchindex.GAP`, each call covering its group; ranges past the end of
    the file are cut to it."""
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(10 * touchindex.GAP))
    mapped = touchindex._Map(path)
    calls: list[tuple[int, int]] = []

    class Recorder:
        def madvise(self, option: int, start: int, length: int) -> None:
            calls.append((start, start + length))

    mapped.mm = Recorder()  # type: ignore[assignment]
    gap, size = touchindex.GAP, 10 * touchindex.GAP
    lo = np.array([3 * gap + 100, 10, 5000, 3 * gap + 50, 9 * gap + 7], dtype=np.int64)
    hi = np.array([3 * gap + 4000, 20, 6000, 3 * gap + 60, 11 * gap], dtype=np.int64)
    mapped._ask(lo, hi)
    assert all(s % mmap.PAGESIZE == 0 for s, _ in calls)
    assert len(calls) == 3  # (the first two ranges joined, the two near 3 * GAP joined)
    for a, b in zip(lo.tolist(), np.minimum(hi, size).tolist(), strict=True):
        assert _covered(calls, a, b)
    assert max(e for _, e in calls) == size
    assert sum(e - s for s, e in calls) < 3 * gap  # (far ranges not read between)


@pytest.mark.parametrize("cut", [10, 0])
def test_a_damaged_fences_file_is_damage(tmp_path: Path, cut: int) -> None:
    """A run's fences cut short (or emptied) are read as a damaged run (what the callers read
    around), not an error of another kind."""
    con = duckdb.connect()
    con.execute(_TABLE)
    _add(con, np.random.default_rng(2), 300, 1)
    index = TouchIndex(tmp_path / "ws.touches", owner="w1")
    index.sync(con, _state(con))
    (fences,) = (tmp_path / "ws.touches").glob("run-*.fences.npz")
    fences.write_bytes(fences.read_bytes()[:cut])
    with pytest.raises(touchindex.DAMAGED):
        index.lookup(con, users=["u1"], clicks=["k1"])


@pytest.mark.parametrize("n", [1, 31, 64, 65, 2_000, 100_000])
def test_the_sieve_answers_as_the_sorted_hashes(tmp_path: Path, n: int) -> None:
    """The key check through a run's sieve finds a stored hash, and refuses hashes that
    share a stored one's bucket and print (the 16 bits it keeps) but not the hash, and
    repeated stored hashes; every answer equals a search of the sorted hashes."""
    rng = np.random.default_rng(n)
    keys = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    keys[: n // 10] = keys[0]  # (a hash stored several times)
    keys.sort()
    path = tmp_path / "run.sieve.npz"
    touchindex._save_sieve(path, keys)
    np.save(tmp_path / "run.keys.npy", keys)
    keys = np.load(tmp_path / "run.keys.npy", mmap_mode="r")  # (as a run's: read by value)
    bits = touchindex._sieve_bits(n)
    prints, bounds = touchindex._sieve(keys)
    assert len(bounds) == (1 << bits) + 1 and len(prints) == n
    assert n / (1 << bits) < 2 * touchindex.SIEVE_BUCKET or bits == 0
    # beside each stored hash, one with the same first 64 - 48 + bits bits: it passes the
    # sieve, and only the sorted hashes tell it apart
    near = keys ^ np.uint64(1 << (47 - bits))
    near = near[~np.isin(near, keys)]
    far = rng.integers(0, 2**64, 5_000, dtype=np.uint64, endpoint=False)
    far = far[~np.isin(far, keys)]
    for q, want in (
        (near, False),
        (far, False),
        (np.append(far, keys[-1]), True),
        (np.append(near, keys[n // 2]), True),
        (keys[:1], True),
    ):
        assert touchindex._sifted(path, keys, np.sort(q)) is want
    assert touchindex._sifted(path, keys, np.sort(near[:1])) is False


def test_a_damaged_sieve_is_damage(tmp_path: Path) -> None:
    """A run's sieve cut short, or not its hashes' (another run's), is a damaged run (what
    the ingest reads around: its anti-join, and the index built again)."""
    keys = np.sort(np.random.default_rng(3).integers(0, 2**64, 500, dtype=np.uint64))
    path = tmp_path / "run.sieve.npz"
    touchindex._save_sieve(path, keys)
    q = keys[:3].copy()
    with pytest.raises(ValueError, match="not the sieve of 499"):
        touchindex._sifted(path, keys[:-1], q)
    con = duckdb.connect()
    con.execute(_TABLE)
    _add(con, np.random.default_rng(2), 300, 1)
    index = TouchIndex(tmp_path / "ws.touches", owner="w1")
    index.sync(con, _state(con))
    absent = touchindex._hash(pa.chunked_array([pa.array(["not stored"])]))
    assert not index.holds_any_key(absent)
    (sieve,) = (tmp_path / "ws.touches").glob("run-*.sieve.npz")
    sieve.write_bytes(sieve.read_bytes()[:40])
    with pytest.raises(touchindex.DAMAGED, match=r"sieve\.npz"):
        index.holds_any_key(absent)
