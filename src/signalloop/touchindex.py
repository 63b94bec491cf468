"""The touchpoints by user and by click id, in sorted runs beside the workspace file.

A daily run attributes the day's conversions (and re-attributes those a new touchpoint may
move) from their users' and clicks' touchpoints, which lie anywhere in the history: a
returning user's touches fall in every row group of the table, so DuckDB reads the user and
click id of every touchpoint to find them (32M rows at 1,000 campaigns and 89 days, and twice
that at 179 days: the largest part of a next day that grows with the history). This index
keeps what that pass reads of each touchpoint (``touch_id``, ``click_id``, ``user_id``,
``campaign_id``, ``ts``, ``adset_id``, ``creative_id``) in runs sorted by DuckDB's 64-bit
``hash`` of the user id, with a second order by the click id's hash and the touch ids'
hashes sorted (what an ingest asks before it lands a file: :meth:`TouchIndex.holds_any_key`),
as memory-mapped Arrow and NumPy files in a folder beside the workspace (``<stem>.touches``).
A lookup hashes the asked keys, binary-searches each run, and reads only the rows that
match; the rows are then checked against the keys themselves (:meth:`TouchIndex.lookup`
returns candidates; the caller filters them by the ids as it filtered the table), so two
keys sharing a hash cost a row, never a wrong answer.

The runs are trusted only when they were written for this workspace (an id kept in its
``meta`` table, so a file replaced by another workspace's is not taken for it), for the
touchpoints as they are (:meth:`~signalloop.store.Workspace.ingest_state`, which every ingest
changes), by this format and by the same DuckDB version (its hash may change). Rows ingested
since are added as a new run (:meth:`TouchIndex.sync`); anything else (rows removed or
rewritten) builds the index again from the table as one run, read from DuckDB in the users'
order and written in batches of :data:`BATCH_ROWS`, so memory stays bounded. The user hashes
of a run are a sorted array of their own (``.users.npy``), so a lookup's binary searches read
a few pages per key of one array, not every page of one array per chunk of the history. The
newest runs are merged while the newer is at least half the older's size and the older below
:data:`MERGE_ROWS`, so a key is merged a few times in all; the runs the daily ingests add
(about one per 4M touchpoints) are folded back into one by ``signalloop compact``. A run
found damaged (a file cut short) is read around by the callers, which then
:meth:`TouchIndex.forget` the runs; the folder can be deleted at any time: it is made again.

>>> import duckdb, tempfile
>>> from pathlib import Path
>>> con = duckdb.connect()
>>> _ = con.execute(
...     "CREATE TABLE touchpoints AS SELECT * FROM (VALUES "
...     "('t1', 'c1', 'u1', 'cmp', TIMESTAMP '2026-01-01 10:00', 'a', 'cr', 1), "
...     "('t2', NULL, 'u2', 'cmp', TIMESTAMP '2026-01-02 10:00', 'a', 'cr', 1)) "
...     "v(touch_id, click_id, user_id, campaign_id, ts, adset_id, creative_id, _ingest_id)")
>>> index = TouchIndex(Path(tempfile.mkdtemp()) / "ws.touches", owner="ws-1")
>>> index.sync(con, [2, 1])
'built'
>>> index.sync(con, [2, 1])
'current'
>>> sorted(index.lookup(con, users=["u2"], clicks=["c1"]).column("touch_id").to_pylist())
['t1', 't2']
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from signalloop.store import Workspace, memory_limit

#: Bump when the runs change meaning: stored ones are then built again.
VERSION = 3
#: A run's files: its rows, their user hashes, its click order, its touch ids' hashes.
_SUFFIXES = (".arrow", ".users.npy", ".clicks.npy", ".keys.npy")
#: What a run holds of each touchpoint, as the attribution's pass reads it.
COLUMNS = ("touch_id", "click_id", "user_id", "campaign_id", "ts", "adset_id", "creative_id")
#: The columns of few values, stored as dictionaries.
FEW = ("campaign_id", "adset_id", "creative_id")
#: Rows per record batch when the runs are built again: the table is read in its user-hash
#: order as a stream of batches, written one after the other into a single run (memory
#: stays bounded; DuckDB sorts out of core within its memory limit).
BATCH_ROWS = 1_000_000
#: DuckDB's memory limit while it sorts the touchpoints for a build (the rest of the build's
#: memory is the hashes, 24 bytes a touchpoint).
BUILD_MEMORY = "1GB"
#: Runs this large are not merged further.
MERGE_ROWS = 4_000_000
#: The ``meta`` key of the workspace's id, which the runs record.
META_KEY = "touch_index"
#: Per folder, the lock threads of one process take (``fcntl`` locks are per process).
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()

Hashes = npt.NDArray[np.uint64]


def for_workspace(ws: Workspace) -> TouchIndex | None:
    """The index of a DuckDB workspace file (``<stem>.touches`` beside it); ``None`` for an
    in-memory, read-only or other backend's workspace."""
    if ws.backend != "duckdb" or ws.read_only or ws.path == ":memory:":
        return None
    owner = ws.read_meta(META_KEY).get("id")
    if not owner:
        owner = uuid.uuid4().hex
        ws.write_meta(META_KEY, {"id": owner})
    p = Path(getattr(ws, "local_path", None) or ws.path)
    return TouchIndex(p.with_name(p.stem + ".touches"), owner=str(owner), memory=memory_limit())


def _select(where: str, *, hashes: bool = False) -> str:
    """The rows of the touchpoints a run holds, with their user hash (``uh``), sorted by it;
    ``hashes``: also each click id's (``ch``) and touch id's (``th``, ``''`` for none)."""
    cols = ", ".join(COLUMNS)
    more = ", hash(click_id) AS ch, hash(coalesce(touch_id, '')) AS th" if hashes else ""
    return f"SELECT hash(user_id) AS uh, {cols}{more} FROM touchpoints {where} ORDER BY uh, rowid"


class TouchIndex:
    """The sorted runs of the touchpoints in ``folder``, written for workspace ``owner``.

    ``memory``: the connection's DuckDB memory limit, set back after a build sorts within
    :data:`BUILD_MEMORY` (``None``: the limit as DuckDB shows it, rounded to a tenth of a GiB).
    """

    def __init__(self, folder: str | Path, *, owner: str, memory: str | None = None) -> None:
        self.folder = Path(folder)
        self.owner = owner
        self.memory = memory
        self._header = self.folder / "index.json"

    # -- the header ------------------------------------------------------------------------
    def _read(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self._header.read_text())
        except (OSError, ValueError):
            return None
        if (doc.get("version"), doc.get("duckdb"), doc.get("owner")) != (
            VERSION,
            duckdb.__version__,
            self.owner,
        ):
            return None
        files = (f"{r}{suffix}" for r in doc["runs"] for suffix in _SUFFIXES)
        if not all((self.folder / name).exists() for name in files):
            return None  # (a run's file gone: built again)
        return dict(doc)

    def runs(self) -> int:
        """How many runs a lookup searches (0: none usable)."""
        doc = self._read()
        return 0 if doc is None else len(doc["runs"])

    def state(self) -> list[int] | None:
        """The touchpoints' ingest state the runs hold (``None``: no usable runs)."""
        doc = self._read()
        return None if doc is None else [int(x) for x in doc["state"]]

    # -- keeping it current ----------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[TouchIndex]:
        """Hold the runs (against other threads and processes) while they change."""
        self.folder.mkdir(parents=True, exist_ok=True)
        key = str(self.folder.resolve())
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(key, threading.Lock())
        with lock, (self.folder / "index.lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield self
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def sync(self, con: duckdb.DuckDBPyConnection, state: list[int]) -> str:
        """Bring the runs up to the touchpoints in ``state`` (their
        :meth:`~signalloop.store.Workspace.ingest_state`, read on ``con``).

        Returns ``current`` (nothing to do), ``appended`` (the rows ingested since, added as
        a run) or ``built`` (every run written again from the table)."""
        state = [int(x) for x in state]
        with self.locked():
            for tmp in self.folder.glob(".run-*"):  # (a write cut short: never named)
                tmp.unlink(missing_ok=True)
            doc = self._read()
            if doc is not None and doc["state"] == state:
                return "current"
            runs: list[str] = list(doc["runs"]) if doc is not None else []
            # (each run exactly the rows of ``state``: an ingest landing meanwhile is the
            # next sync's)
            upto = f"_ingest_id <= {state[1]}"
            if doc is not None and _appended(con, doc["state"], state):
                seen = int(doc["state"][1])
                new = self._write_run(con, f"WHERE _ingest_id > {seen} AND {upto}")
                try:
                    kept, sizes = self._merge(runs + [r for r, _ in new])
                except (ValueError, pa.ArrowException):
                    pass  # (a run damaged on disk: all built again below)
                else:
                    self._commit(kept, state, rows=sum(sizes))
                    return "appended"
            # one run of every row, streamed in the users' order (a lookup then searches one
            # sorted array, not one per chunk of the history)
            built = self._build_run(con, f"WHERE {upto}")
            self._commit([r for r, _ in built], state, rows=sum(n for _, n in built))
            return "built"

    def _write_run(self, con: duckdb.DuckDBPyConnection, where: str) -> list[tuple[str, int]]:
        """The run of the rows ``where`` selects and their count (none when there are none)."""
        table = con.execute(_select(where)).fetch_arrow_table()
        users = np.asarray(table.column("uh").to_numpy(), dtype=np.uint64)
        table = table.select(list(COLUMNS))
        return [(self._save(table, users), table.num_rows)] if table.num_rows else []

    def _build_run(self, con: duckdb.DuckDBPyConnection, where: str) -> list[tuple[str, int]]:
        """One run of the rows ``where`` selects, read from DuckDB sorted, in batches of
        :data:`BATCH_ROWS` (each written as it comes); none when there are none.

        Memory holds one batch and the click and touch hashes (16 and 8 bytes a row, sorted
        at the end); the users' hashes go straight to their file. The few-valued columns are
        coded against one dictionary each, read first, as an Arrow file's batches share it.
        """
        found = con.execute(f"SELECT count(*) FROM touchpoints {where}").fetchone()
        n = int(found[0]) if found else 0
        if not n:
            return []
        codes = {
            c: con.execute(
                f"SELECT DISTINCT {c} FROM touchpoints {where} AND {c} IS NOT NULL ORDER BY 1"
            )
            .fetch_arrow_table()
            .column(0)
            .combine_chunks()
            for c in FEW
        }
        name = f"run-{uuid.uuid4().hex}"
        tmp = {sfx: self.folder / f".{name}{sfx}" for sfx in _SUFFIXES}
        users = np.lib.format.open_memmap(tmp[".users.npy"], "w+", np.uint64, (n,))
        # filled as the batches come (no list of parts concatenated: half the memory)
        click_h, click_at, touch_h = (np.empty(n, np.uint64) for _ in range(3))
        at = clicked = 0
        shown = con.execute("SELECT current_setting('memory_limit')").fetchone()
        limit = self.memory or (str(shown[0]) if shown else None)
        # DuckDB sorts within a smaller share of memory here (spilling to its temporary
        # folder), as the hashes above take their part
        con.execute(f"SET memory_limit = '{BUILD_MEMORY}'")
        try:
            reader = con.execute(_select(where, hashes=True)).to_arrow_reader(BATCH_ROWS)
            with pa.OSFile(str(tmp[".arrow"]), "wb") as sink:
                writer = None
                for batch in reader:
                    m = batch.num_rows
                    if not m:
                        continue
                    if at + m > n:  # (rows came that the count did not see)
                        raise ValueError(f"the touchpoints changed while indexed: {n}")
                    users[at : at + m] = batch.column("uh").to_numpy()
                    has = np.flatnonzero(batch.column("click_id").is_valid().to_numpy(False))
                    end = clicked + len(has)
                    click_h[clicked:end] = batch.column("ch").to_numpy()[has]
                    click_at[clicked:end] = has + at
                    touch_h[at : at + m] = batch.column("th").to_numpy()
                    table = _coded(pa.Table.from_batches([batch]).select(list(COLUMNS)), codes)
                    if writer is None:
                        writer = pa.ipc.new_file(sink, table.schema)
                    writer.write_table(table, max_chunksize=m)
                    at, clicked = at + m, end
                if writer is not None:
                    writer.close()
        finally:
            if limit is not None:
                con.execute("SET memory_limit = ?", [limit])
        if at != n:
            raise ValueError(f"the touchpoints changed while indexed: {at} of {n}")
        users.flush()
        del users
        order = np.argsort(click_h[:clicked], kind="stable")
        pairs = np.empty((2, clicked), np.uint64)
        np.take(click_h, order, out=pairs[0])
        np.take(click_at, order, out=pairs[1])
        del click_h, click_at, order
        touch_h.sort()
        for sfx, array in ((".clicks.npy", pairs), (".keys.npy", touch_h)):
            with tmp[sfx].open("wb") as fh:
                np.save(fh, array)
        for sfx in _SUFFIXES:
            _durable(tmp[sfx], self.folder / f"{name}{sfx}")
        return [(name, n)]

    def _save(self, table: pa.Table, users: Hashes) -> str:
        """Write a run sorted by user hash (``users``, one per row): its rows, their user
        hashes, and its click order beside them."""
        table = table.unify_dictionaries().combine_chunks()
        for name in FEW:  # (campaigns, ad sets, creatives: a few thousand values, coded)
            at = table.schema.get_field_index(name)
            col = table.column(at)
            if not pa.types.is_dictionary(col.type):
                table = table.set_column(at, name, col.dictionary_encode())
        name = f"run-{uuid.uuid4().hex}"
        tmp = self.folder / f".{name}.arrow"
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table, max_chunksize=max(table.num_rows, 1))
        _durable(tmp, self.folder / f"{name}.arrow")
        tmp = self.folder / f".{name}.users.npy"
        with tmp.open("wb") as fh:
            np.save(fh, np.asarray(users, dtype=np.uint64))
        _durable(tmp, self.folder / f"{name}.users.npy")
        clicks = table.column("click_id")
        has = np.flatnonzero(clicks.is_valid().to_numpy(zero_copy_only=False))
        hashed = _hash(clicks.take(pa.array(has)))
        order = np.argsort(hashed, kind="stable")
        # two rows, each contiguous: the click hashes sorted, and the row each is on
        pairs = np.stack([hashed[order], has[order].astype(np.uint64)])
        # and the touch ids' hashes, sorted: what the ingest asks before it lands a file
        touch = table.column("touch_id").fill_null("")
        for suffix, array in ((".clicks.npy", pairs), (".keys.npy", np.sort(_hash(touch)))):
            tmp = self.folder / f".{name}{suffix}"
            with tmp.open("wb") as fh:
                np.save(fh, array)
            _durable(tmp, self.folder / f"{name}{suffix}")
        return name

    def _merge(self, runs: list[str]) -> tuple[list[str], list[int]]:
        """Merge the newest two while the newer is at least half the older and the older is
        below :data:`MERGE_ROWS`; the runs and their sizes."""
        sizes = [self._rows(r) for r in runs]
        while len(runs) >= 2 and 2 * sizes[-1] >= sizes[-2] and sizes[-2] < MERGE_ROWS:
            both = pa.concat_tables([self._table(runs[-2]), self._table(runs[-1])])
            uh = np.concatenate([self._users(runs[-2]), self._users(runs[-1])])
            # (stable: rows of one user hash keep their runs' order, the older first)
            order = np.argsort(uh, kind="stable")
            merged = self._save(both.take(pa.array(order)), uh[order])
            runs, sizes = [*runs[:-2], merged], [*sizes[:-2], sizes[-2] + sizes[-1]]
        return runs, sizes

    def _commit(self, runs: list[str], state: list[int], *, rows: int) -> None:
        doc = {
            "version": VERSION,
            "duckdb": duckdb.__version__,
            "owner": self.owner,
            "state": state,
            "runs": runs,
            "rows": int(rows),
        }
        tmp = self.folder / ".index.json"
        tmp.write_text(json.dumps(doc))
        _durable(tmp, self._header)
        keep = set(runs)  # (every other run's files: replaced, merged, another owner's)
        for path in self.folder.glob("run-*"):
            if path.name.split(".")[0] not in keep:
                path.unlink(missing_ok=True)

    def forget(self) -> None:
        """Stop trusting the runs (a file found damaged): the next sync builds them again."""
        with self.locked():
            self._header.unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------------------------
    def _table(self, run: str) -> pa.Table:
        source = pa.memory_map(str(self.folder / f"{run}.arrow"), "r")
        return pa.ipc.open_file(source).read_all()

    def _users(self, run: str) -> Hashes:
        """The run's user hashes, one per row, sorted (mapped, not read)."""
        users: Hashes = np.load(self.folder / f"{run}.users.npy", mmap_mode="r")
        if users.dtype != np.uint64 or users.ndim != 1:
            raise ValueError(f"{run}.users.npy: expected a vector of uint64, got {users.dtype}")
        return users

    def _rows(self, run: str) -> int:
        source = pa.memory_map(str(self.folder / f"{run}.arrow"), "r")
        reader = pa.ipc.open_file(source)
        n = int(sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches)))
        if len(self._users(run)) != n:
            raise ValueError(f"{run}: {n} rows but {len(self._users(run))} user hashes")
        return n

    def holds_any_key(self, hashes: npt.ArrayLike) -> bool:
        """Whether any of ``hashes`` (DuckDB's ``hash`` of a touch id, ``''`` for none) is a
        stored touchpoint's (or, about once in ``2**64 / rows``, shares one's hash)."""
        # sorted for the searches (np.sort: NumPy 2.4's np.unique is slow on many ints)
        q = np.sort(np.asarray(hashes, dtype=np.uint64))
        doc = self._read()
        if doc is None:
            raise RuntimeError(f"the touch index in {self.folder} is not usable: sync it first")
        if not len(q):
            return False
        for run in doc["runs"]:
            keys = np.load(self.folder / f"{run}.keys.npy", mmap_mode="r")
            if len(keys):
                at = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
                if np.any(keys[at] == q):
                    return True
        return False

    def lookup(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        users: Sequence[Any] | None = None,
        clicks: Sequence[Any] | None = None,
        user_sql: str | None = None,
        click_sql: str | None = None,
    ) -> pa.Table:
        """The stored touchpoints whose user hash or click hash is one of the keys' (an
        Arrow table of :data:`COLUMNS`): every touchpoint of those users and clicks, and
        rarely another that shares a hash; filter by the ids themselves.

        The keys are given as values (``users``, ``clicks``) or as SQL selecting one column
        of them on ``con`` (``user_sql``, ``click_sql``); they are hashed by DuckDB there."""
        u = _key_hashes(con, users, user_sql)
        k = _key_hashes(con, clicks, click_sql)
        doc = self._read()
        if doc is None:
            raise RuntimeError(f"the touch index in {self.folder} is not usable: sync it first")
        parts = []
        for run in doc["runs"]:
            table = self._table(run)
            rows = [_ranges(self._users(run), u)]
            pairs = np.load(self.folder / f"{run}.clicks.npy", mmap_mode="r")
            rows.append(np.asarray(pairs[1][_ranges(pairs[0], k)], dtype=np.int64))
            both = np.sort(np.concatenate(rows))
            if len(both):
                both = both[np.r_[True, both[1:] != both[:-1]]]
                if both[-1] >= table.num_rows:
                    raise ValueError(f"{run}: row {both[-1]} of {table.num_rows}")
                parts.append(_take(table, both).select(list(COLUMNS)))
        if not parts:
            return con.execute(_select("WHERE false")).fetch_arrow_table().select(list(COLUMNS))
        return pa.concat_tables(parts, promote_options="permissive")


def _durable(tmp: Path, final: Path) -> None:
    """Put the written file ``tmp`` in place as ``final``, on disk first (a run named by the
    header is never a file cut short by a crash)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


#: What reading damaged runs raises (the caller then reads the table instead).
DAMAGED = (OSError, ValueError, pa.ArrowException)


def _take(table: pa.Table, rows: npt.NDArray[np.int64]) -> pa.Table:
    """The rows ``rows`` (sorted) of a run's table, taken batch by batch: a built run is
    many batches of the mapped file, and only the asked rows of each are read."""
    batches = table.to_batches()
    if len(batches) == 1:
        return pa.Table.from_batches([batches[0].take(pa.array(rows))])
    ends = np.cumsum([b.num_rows for b in batches])
    cut = np.searchsorted(rows, ends[:-1], side="left")
    starts = np.r_[0, ends[:-1]]
    taken = [
        b.take(pa.array(part - s))
        for b, part, s in zip(batches, np.split(rows, cut), starts, strict=True)
        if len(part)
    ]
    return pa.Table.from_batches(taken, schema=table.schema)


def _coded(table: pa.Table, codes: dict[str, pa.Array]) -> pa.Table:
    """``table`` with each of :data:`FEW` coded against its dictionary in ``codes``."""
    for name, values in codes.items():
        at = table.schema.get_field_index(name)
        col = table.column(at).combine_chunks()
        index = pc.index_in(col, value_set=values.cast(col.type))
        coded = pa.DictionaryArray.from_arrays(index, values.cast(col.type))
        table = table.set_column(at, name, coded)
    return table


def _appended(con: duckdb.DuckDBPyConnection, seen: list[int], now: list[int]) -> bool:
    """Whether every touchpoint since ``seen`` came by a later ingest and none went away."""
    n0, hi0 = int(seen[0]), int(seen[1])
    row = con.execute("SELECT count(*) FROM touchpoints WHERE _ingest_id > ?", [hi0]).fetchone()
    return row is not None and n0 + int(row[0]) == int(now[0])


def _hash(values: pa.ChunkedArray) -> Hashes:
    """DuckDB's ``hash`` of each value (as the runs hash the ids)."""
    con = duckdb.connect()
    t = pa.table({"v": values})
    con.register("t", t)
    out = con.execute("SELECT hash(v) AS h FROM t").fetchnumpy()["h"]
    con.close()
    return np.asarray(out, dtype=np.uint64)


def _key_hashes(
    con: duckdb.DuckDBPyConnection, values: Sequence[Any] | None, sql: str | None
) -> Hashes:
    """The sorted distinct hashes of the non-null keys."""
    if sql is not None:
        got = con.execute(
            f"SELECT DISTINCT hash(k) AS h FROM ({sql}) q(k) WHERE k IS NOT NULL ORDER BY h"
        ).fetchnumpy()["h"]
        return np.asarray(got, dtype=np.uint64)
    if not values:
        return np.zeros(0, dtype=np.uint64)
    h = np.sort(_hash(pa.chunked_array([pa.array([v for v in values if v is not None])])))
    return h[np.r_[True, h[1:] != h[:-1]]] if len(h) else h


def _ranges(sorted_hashes: npt.NDArray[np.uint64], keys: Hashes) -> npt.NDArray[np.int64]:
    """The positions in ``sorted_hashes`` holding one of ``keys`` (sorted, distinct)."""
    if not len(keys) or not len(sorted_hashes):
        return np.zeros(0, dtype=np.int64)
    lo = np.searchsorted(sorted_hashes, keys, side="left")
    hi = np.searchsorted(sorted_hashes, keys, side="right")
    n = hi - lo
    hit = n > 0
    lo, n = lo[hit], n[hit]
    if not len(n):
        return np.zeros(0, dtype=np.int64)
    # every position of every range: the starts repeated, plus 0, 1, ... within each range
    starts = np.repeat(lo - np.r_[0, np.cumsum(n)[:-1]], n)
    return np.asarray(starts + np.arange(int(n.sum())), dtype=np.int64)
