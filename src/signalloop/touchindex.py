"""The touchpoints by user and by click id, in sorted runs beside the workspace file.

A daily run attributes the day's conversions (and re-attributes those a new touchpoint may
move) from their users' and clicks' touchpoints, which lie anywhere in the history: a
returning user's touches fall in every row group of the table, so DuckDB reads the user and
click id of every touchpoint to find them (32M rows at 1,000 campaigns and 89 days, and twice
that at 179 days: the largest part of a next day that grows with the history). This index
keeps what that pass reads of each touchpoint (``touch_id``, ``click_id``, ``user_id``,
``campaign_id``, ``ts``, ``adset_id``, ``creative_id``) in runs sorted by DuckDB's 64-bit
``hash`` of the user id, each row stored whole in blocks of rows (:mod:`signalloop.touchrows`),
with a second order by the click id's hash and the touch ids' hashes sorted, behind a sieve
that keeps about 2 of their 8 bytes (what an ingest asks before it lands a file:
:meth:`TouchIndex.holds_any_key`), as memory-mapped files in a folder beside the workspace
(``<stem>.touches``). A lookup hashes the asked keys, finds the
blocks that may hold them in each run, and reads only those blocks; the rows are then
checked against the keys themselves (:meth:`TouchIndex.lookup` returns candidates; the caller
filters them by the ids as it filtered the table), so two keys sharing a hash cost a row,
never a wrong answer.

What a lookup reads grows with the keys it asks, not with the history. The kernel reads
megabytes around each page a mapped file touches, so a few rows per user spread over a run
would read most of the run, and twice as much behind twice the history; a row stored by
column would cost a read per column. A run therefore keeps, in a small file read whole
(``.fences.npz``), the first user hash of each block and each block's byte offset: a user's
rows lie in the block or two its hash names, read with one request, with no readahead around
it (:class:`_Map`). Each row in a block carries its user and click hashes, so the day's clicks
are found in the blocks read for their users first (a conversion's click is mostly its
user's); only a click not found there, or one that more than one row of the run has, is
searched in the click order (every :data:`FENCE`-th click hash in the fences, then a
stretch of the sorted click hashes and their rows). When the asked ranges would cost more
than reading the whole file, the readahead is turned back on (BENCHMARKS.md has the figures).

The runs are trusted only when they were written for this workspace (an id kept in its
``meta`` table, so a file replaced by another workspace's is not taken for it), for the
touchpoints as they are (:meth:`~signalloop.store.Workspace.ingest_state`, which every ingest
changes), by this format and by the same DuckDB version (its hash may change). Rows ingested
since are added as a new run (:meth:`TouchIndex.sync`); anything else (rows removed or
rewritten) builds the index again from the table as one run, read from DuckDB in the users'
order and written in batches of :data:`BATCH_ROWS`, so memory stays bounded (the user hashes
of a run are also a sorted array of their own, ``.users.npy``, what merges sort by). The
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
import mmap
import os
import threading
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from signalloop import touchrows
from signalloop.store import Workspace, memory_limit

#: Bump when the runs change meaning: stored ones are then built again.
VERSION = 6
#: A run's files: its rows (in blocks: :mod:`signalloop.touchrows`), its dictionaries, its
#: rows' user hashes, its click order, its touch ids' hashes, their sieve (:func:`_sieve`:
#: what an ingest's key check reads whole) and its fences (:class:`_Fences`: what a lookup
#: reads whole).
_SUFFIXES = (
    ".rows",
    ".dict.arrow",
    ".users.npy",
    ".clicks.npy",
    ".keys.npy",
    ".sieve.npz",
    ".fences.npz",
)
#: Rows of the sorted click hashes per fence entry: a lookup searches the fences (read whole,
#: 1/128 of the hashes) and then reads only the stretches of the hashes they name.
FENCE = 128
#: Touch-id hashes per bucket of a run's sieve: from this many to twice as many, on average
#: (:func:`_sieve`). A hash not stored passes the sieve with odds of one in 1,000-2,000 (the
#: bucket's hashes over ``2**16``), and then costs a few reads of the sorted hashes; the
#: sieve keeps 2 bytes a hash and 8 a bucket (2.13-2.25 bytes a touchpoint).
SIEVE_BUCKET = 32
#: Wanted byte ranges closer than this are asked for as one read (about what one more read
#: costs on a disk that serves ~20k reads a second at ~2 GB/s).
GAP = 65536
#: The most bytes asked for in one ``madvise``: Linux reads no more of each call than the
#: larger of the device's readahead window and its largest request (often 128 KiB and
#: 1.25 MiB), and nothing of the rest.
CHUNK = 1 << 20
#: What a run holds of each touchpoint, as the attribution's pass reads it.
COLUMNS = touchrows.COLUMNS
#: The columns of few values, stored as positions in the run's dictionaries.
FEW = touchrows.CODED
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
            with touchrows.RowWriter(tmp[".rows"]) as writer:
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
                    writer.write(
                        _coded(pa.Table.from_batches([batch]).select(list(COLUMNS)), codes),
                        users[at : at + m],
                        batch.column("ch").to_numpy(),
                    )
                    at, clicked = at + m, end
        finally:
            if limit is not None:
                con.execute("SET memory_limit = ?", [limit])
        if at != n:
            raise ValueError(f"the touchpoints changed while indexed: {at} of {n}")
        users.flush()
        user_fence = np.array(users[:: touchrows.BLOCK])  # (while the hashes are in memory)
        del users
        order = np.argsort(click_h[:clicked], kind="stable")
        pairs = np.empty((clicked, 2), np.uint64)  # (each click hash beside its row)
        pairs[:, 0] = click_h[order]
        pairs[:, 1] = click_at[order]
        del click_h, click_at, order
        touch_h.sort()
        for sfx, array in ((".clicks.npy", pairs), (".keys.npy", touch_h)):
            with tmp[sfx].open("wb") as fh:
                np.save(fh, array)
        _save_sieve(tmp[".sieve.npz"], touch_h)
        if writer.schema is None:
            raise ValueError(f"the touchpoints changed while indexed: none of {n}")
        touchrows.save_dictionaries(tmp[".dict.arrow"], writer.schema, codes)
        _save_fences(tmp[".fences.npz"], user_fence, pairs[:, 0], writer.starts, sliced=True)
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
        tmp = {sfx: self.folder / f".{name}{sfx}" for sfx in _SUFFIXES}
        users = np.asarray(users, dtype=np.uint64)
        clicks = table.column("click_id")
        every = _hash(clicks)  # (a null's hash is not read)
        with touchrows.RowWriter(tmp[".rows"]) as writer:
            for lo in range(0, table.num_rows, BATCH_ROWS):  # (bounded: a batch encoded at once)
                hi = lo + BATCH_ROWS
                writer.write(table.slice(lo, BATCH_ROWS), users[lo:hi], every[lo:hi])
        touchrows.save_dictionaries(
            tmp[".dict.arrow"], table.schema, {c: table.column(c).chunk(0).dictionary for c in FEW}
        )
        has = np.flatnonzero(clicks.is_valid().to_numpy(zero_copy_only=False))
        hashed = every[has]
        order = np.argsort(hashed, kind="stable")
        # each click hash, sorted, beside the row it is on
        pairs = np.stack([hashed[order], has[order].astype(np.uint64)], axis=1)
        # and the touch ids' hashes, sorted: what the ingest asks before it lands a file
        touch = np.sort(_hash(table.column("touch_id").fill_null("")))
        for sfx, array in ((".users.npy", users), (".clicks.npy", pairs), (".keys.npy", touch)):
            with tmp[sfx].open("wb") as fh:
                np.save(fh, array)
        _save_sieve(tmp[".sieve.npz"], touch)
        _save_fences(tmp[".fences.npz"], users, pairs[:, 0], writer.starts)
        for sfx in _SUFFIXES:
            _durable(tmp[sfx], self.folder / f"{name}{sfx}")
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
        """Every row of the run (a merge's input)."""
        n = len(self._users(run))
        *_, starts = self._fences(run)
        schema, dicts = touchrows.load_dictionaries(self.folder / f"{run}.dict.arrow")
        mapped = _Map(self.folder / f"{run}.rows")
        mapped.readahead()
        return touchrows.read_all(mapped.bytes(), starts, n, schema, dicts)

    def _users(self, run: str) -> Hashes:
        """The run's user hashes, one per row, sorted (mapped, not read)."""
        return self._hashes(run, ".users.npy")

    def _hashes(self, run: str, suffix: str) -> Hashes:
        """A run's vector of hashes (``.users.npy``, ``.keys.npy``), mapped, not read."""
        hashes: Hashes = np.load(self.folder / f"{run}{suffix}", mmap_mode="r")
        if hashes.dtype != np.uint64 or hashes.ndim != 1:
            raise ValueError(f"{run}{suffix}: expected a vector of uint64, got {hashes.dtype}")
        return hashes

    def _rows(self, run: str) -> int:
        """The run's rows (as many as its user hashes, its blocks ending where its file does)."""
        n = len(self._users(run))
        *_, starts = self._fences(run)
        size = (self.folder / f"{run}.rows").stat().st_size
        blocks = -(-n // touchrows.BLOCK)
        if len(starts) != blocks + 1 or int(starts[-1]) != size:
            raise ValueError(
                f"{run}: {n} user hashes but {len(starts) - 1} blocks ending at "
                f"{int(starts[-1]) if len(starts) else 0} of {size} bytes"
            )
        return n

    def _fences(self, run: str) -> _Fences:
        """The run's fences and its blocks' offsets (a file damaged: ``ValueError``)."""
        try:
            with np.load(self.folder / f"{run}.fences.npz") as fences:
                got = _Fences(*(fences[f] for f in _Fences._fields))
        except (zipfile.BadZipFile, KeyError, EOFError) as e:
            raise ValueError(f"{run}.fences.npz: {type(e).__name__}: {e}") from e
        for name, array in zip(got._fields, got, strict=True):
            want = np.int64 if name == "blocks" else np.uint64
            if array.dtype != want or array.ndim != 1:
                raise ValueError(f"{run}.fences.npz: {name}: {array.dtype} {array.shape}")
        if not len(got.blocks):
            raise ValueError(f"{run}.fences.npz: no block offsets")
        return got

    def holds_any_key(self, hashes: npt.ArrayLike) -> bool:
        """Whether any of ``hashes`` (DuckDB's ``hash`` of a touch id, ``''`` for none) is a
        stored touchpoint's (or, about once in ``2**64 / rows``, shares one's hash).

        Each run's sieve is read whole (about 2 bytes a touchpoint, not the 8 of its sorted
        hashes); only the hashes that pass it are searched in the sorted hashes, a value
        read at a time.
        """
        q = _distinct(np.asarray(hashes, dtype=np.uint64))  # (sorted for the searches)
        doc = self._read()
        if doc is None:
            raise RuntimeError(f"the touch index in {self.folder} is not usable: sync it first")
        if not len(q):
            return False
        for run in doc["runs"]:
            keys = self._hashes(run, ".keys.npy")
            if len(keys) and _sifted(self.folder / f"{run}.sieve.npz", keys, q):
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
            fences = self._fences(run)
            starts = fences.blocks
            n = len(self._users(run))
            if len(fences.users) != len(starts) - 1:
                raise ValueError(f"{run}: {len(fences.users)} fences, {len(starts) - 1} blocks")
            rows = _Map(self.folder / f"{run}.rows")
            # the blocks the users' rows may lie in: every row of them, with its user and
            # click hashes
            by_user = _distinct(_stretches(fences.users, u))
            rows.want_blocks(starts, by_user)
            buf = rows.bytes()
            seen, uh, ch = touchrows.keys_of(buf, starts, n, by_user)
            of_click = _isin(ch, k) & (ch != 0)
            found = [seen[_isin(uh, u) | of_click]]
            # a click is found whole there unless more than one row has it: the others are
            # looked for by the click order (a conversion's click is its user's, mostly)
            whole = _distinct(ch[of_click])
            whole = whole[~_isin(whole, fences.shared)]
            rest = k[~_isin(k, whole)]
            if len(rest):
                by_click = _Map(self.folder / f"{run}.clicks.npy")
                pairs = by_click.npy()
                if pairs.ndim != 2 or pairs.shape[1] != 2:
                    raise ValueError(f"{run}.clicks.npy: expected pairs, got {pairs.shape}")
                at = by_click.search(pairs[:, 0], fences.clicks, rest)
                found.append(np.asarray(pairs[at, 1], np.int64))
            both = _distinct(np.concatenate(found))
            if len(both):
                more = _distinct(both // touchrows.BLOCK)
                rows.want_blocks(starts, more[~_isin(more, by_user)])  # (the clicks' others)
                schema, dicts = touchrows.load_dictionaries(self.folder / f"{run}.dict.arrow")
                parts.append(touchrows.take(buf, starts, n, both, schema, dicts))
        if not parts:
            return con.execute(_select("WHERE false")).fetch_arrow_table().select(list(COLUMNS))
        return pa.concat_tables(parts, promote_options="permissive")


class _Fences(NamedTuple):
    """What a lookup reads whole of a run (``.fences.npz``)."""

    #: the first user hash of each block (the rows are sorted by it)
    users: Hashes
    #: every :data:`FENCE`-th of the sorted click hashes (``.clicks.npy``'s first column)
    clicks: Hashes
    #: the click hashes more than one row of the run has, sorted: a click found once in the
    #: users' blocks is complete only when not one of these
    shared: Hashes
    #: each block's byte offset in ``.rows``, and the file's size last
    blocks: npt.NDArray[np.int64]


def _save_fences(
    path: Path,
    users: Hashes,
    clicks: Hashes,
    blocks: npt.NDArray[np.int64],
    *,
    sliced: bool = False,
) -> None:
    """A run's :class:`_Fences`, from its sorted user hashes (or, ``sliced``, their fence
    already) and click hashes, and its blocks' offsets."""
    shared = clicks[1:][clicks[1:] == clicks[:-1]]
    with path.open("wb") as fh:
        np.savez(
            fh,
            users=np.array(users if sliced else users[:: touchrows.BLOCK]),
            clicks=np.array(clicks[::FENCE]),
            shared=_distinct(shared),
            blocks=np.asarray(blocks, np.int64),
        )


def _save_sieve(path: Path, keys: Hashes) -> None:
    """Write the sieve of a run's sorted touch-id hashes (:func:`_sieve`)."""
    prints, bounds = _sieve(keys)
    with path.open("wb") as fh:
        np.savez(fh, prints=prints, bounds=bounds)


def _sieve(keys: Hashes) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.int64]]:
    """The sieve of sorted hashes: ``2**b`` buckets by their first ``b`` bits
    (:data:`SIEVE_BUCKET` to twice as many hashes each, on average), each bucket's hashes'
    next 16 bits (``prints``, in the hashes' order, so sorted within a bucket) and where
    each bucket begins and the last ends (``bounds``, ``2**b + 1`` positions).

    >>> prints, bounds = _sieve(np.array([1 << 60, 3 << 62], np.uint64))
    >>> prints.tolist(), bounds.tolist()
    ([4096, 49152], [0, 2])
    """
    b = _sieve_bits(len(keys))
    prints = ((keys >> np.uint64(48 - b)) & np.uint64(0xFFFF)).astype(np.uint16)
    # (each bucket's first possible hash; a shift by 64 is not defined, so b = 0 apart)
    starts = (
        (np.arange(1 << b, dtype=np.uint64) << np.uint64(64 - b)) if b else np.zeros(1, np.uint64)
    )
    bounds = np.append(np.searchsorted(keys, starts), len(keys)).astype(np.int64)
    return prints, bounds


def _sieve_bits(n: int) -> int:
    """The bucket bits of a sieve of ``n`` hashes: :data:`SIEVE_BUCKET` to twice as many in
    each bucket, on average (at most 32 bits)."""
    return min(max(int(n // SIEVE_BUCKET).bit_length() - 1, 0), 32)


def _sifted(path: Path, keys: Hashes, q: Hashes) -> bool:
    """Whether one of ``q`` (sorted) is one of ``keys`` (sorted, mapped), through the sieve
    of ``keys`` in ``path`` (a file damaged or not ``keys``' sieve: ``ValueError``)."""
    try:
        with np.load(path) as sieve:
            prints, bounds = sieve["prints"], sieve["bounds"]
    except (zipfile.BadZipFile, KeyError, EOFError) as e:
        raise ValueError(f"{path.name}: {type(e).__name__}: {e}") from e
    n = len(keys)
    b = (len(bounds) - 1).bit_length() - 1
    if (
        prints.dtype != np.uint16
        or bounds.dtype != np.int64
        or len(prints) != n
        or len(bounds) != (1 << b) + 1
        or b != _sieve_bits(n)
        or bounds[0] != 0
        or bounds[-1] != n
        or np.any(bounds[1:] < bounds[:-1])
    ):
        raise ValueError(f"{path.name}: not the sieve of {n} hashes")
    bucket = (q >> np.uint64(64 - b)).astype(np.int64) if b else np.zeros(len(q), np.int64)
    want = ((q >> np.uint64(48 - b)) & np.uint64(0xFFFF)).astype(np.uint16)
    # each bucket's prints are sorted: where each asked print is in its bucket, if it is
    end = bounds[bucket + 1]
    lo = _search(lambda at: prints[at], bounds[bucket], end, want)
    some = np.flatnonzero(lo < end)
    some = some[prints[lo[some]] == want[some]]
    if not len(some):
        return False
    # those hashes searched in the stored hashes of their print's stretch (sorted too, and
    # usually one), a value read at a time
    lo, q = lo[some], q[some]
    hi = _search(lambda at: prints[at], lo, end[some], want[some], right=True)
    at = _search(lambda at: _read_at(keys, at), lo, hi, q)
    inside = at < hi
    return bool(np.any(_read_at(keys, at[inside]) == q[inside]))


def _search(
    value: Callable[[npt.NDArray[np.int64]], npt.NDArray[Any]],
    lo: npt.NDArray[np.int64],
    hi: npt.NDArray[np.int64],
    want: npt.NDArray[Any],
    *,
    right: bool = False,
) -> npt.NDArray[np.int64]:
    """For each ``want``, the first position in ``[lo, hi)`` whose value (``value(at)``, of
    values sorted there) is not below it (``right``: above it), or ``hi``; a binary search
    of all of them at once.

    >>> v = np.array([1, 3, 3, 5])
    >>> z = np.zeros(3, np.int64)
    >>> _search(lambda at: v[at], z, z + 4, np.array([3, 4, 9])).tolist()
    [1, 3, 4]
    >>> _search(lambda at: v[at], z, z + 4, np.array([3, 4, 9]), right=True).tolist()
    [3, 3, 4]
    """
    lo, hi = lo.copy(), hi.copy()
    while True:
        going = np.flatnonzero(lo < hi)
        if not len(going):
            return lo
        mid = (lo[going] + hi[going]) // 2
        v = value(mid)
        up = (v <= want[going]) if right else (v < want[going])
        lo[going] = np.where(up, mid + 1, lo[going])
        hi[going] = np.where(up, hi[going], mid)


def _read_at(keys: Hashes, at: npt.NDArray[np.int64]) -> Hashes:
    """``keys[at]``, a few scattered values of a mapped array, read one by one without the
    readahead (a page fault of the mapping reads megabytes around each: a hundred of them
    read a gigabyte)."""
    if not isinstance(keys, np.memmap) or keys.filename is None:
        return np.asarray(keys[at])
    got = np.empty(len(at), np.uint64)
    size = got.itemsize
    fd = os.open(keys.filename, os.O_RDONLY)
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for i, pos in enumerate(at.tolist()):
            raw = os.pread(fd, size, keys.offset + pos * size)
            if len(raw) != size:
                raise ValueError(f"{Path(keys.filename).name}: cut short at value {pos}")
            got[i] = np.frombuffer(raw, np.uint64)[0]
    finally:
        os.close(fd)
    return got


class _Map:
    """A run's file mapped for a few scattered reads.

    The kernel reads megabytes around each page a mapping touches (the device's readahead:
    8 MB here), so a lookup's few rows per user, spread over the file, read most of it, and
    a longer history read more. This mapping asks for no readahead and, before reading, for
    exactly the byte ranges it will touch, all at once (``madvise(MADV_WILLNEED)``: the
    reads go to the disk together rather than one page fault after another). Both are hints:
    where the platform has neither, or a buffer lies outside the mapping, it reads as any
    mapping does.
    """

    def __init__(self, path: Path) -> None:
        with path.open("rb") as fh:
            self.mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        random = getattr(mmap, "MADV_RANDOM", None)
        if random is not None:
            self.mm.madvise(random)
        self.buffer = pa.py_buffer(self.mm)
        self.path = path
        #: whether the ranges asked for were so many that the readahead was turned back on
        self.dense = False

    def npy(self) -> npt.NDArray[np.uint64]:
        """The ``.npy`` file's array of uint64, over the mapping (not read)."""
        with self.path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read(fh)
            offset = fh.tell()
        if dtype != np.uint64 or fortran or len(shape) not in (1, 2):
            raise ValueError(f"{self.path.name}: expected uint64 rows, got {dtype} {shape}")
        count = int(np.prod(shape))
        flat = np.frombuffer(self.mm, dtype=np.uint64, count=count, offset=offset)
        return flat.reshape(shape)

    def want(self, array: npt.NDArray[Any], lo: npt.ArrayLike, hi: npt.ArrayLike) -> None:
        """Ask for the elements ``[lo, hi)`` (``hi`` above ``lo``) of ``array`` (a vector
        over this mapping, its elements evenly spaced) to be read now."""
        base = self._offset(array)
        if base is not None:
            step = array.strides[0]
            first = np.asarray(lo, np.int64) * step
            self._ask(base + first, base + (np.asarray(hi, np.int64) - 1) * step + array.itemsize)

    def search(
        self, values: npt.NDArray[np.uint64], fence: npt.NDArray[np.uint64], keys: Hashes
    ) -> npt.NDArray[np.int64]:
        """The positions in ``values`` (sorted, a view of this mapping) equal to one of
        ``keys`` (sorted, distinct), reading only the stretches of :data:`FENCE` values that
        ``fence`` (``values[::FENCE]``) says may hold them; where those are more than an
        eighth of the values, all of them, with the readahead (fewer, larger reads, and no
        copy of the stretches in memory)."""
        n = len(values)
        if not len(keys) or not n:
            return np.zeros(0, dtype=np.int64)
        if len(fence) != -(-n // FENCE):
            raise ValueError(f"{self.path.name}: {len(fence)} fences for {n} values")
        stretch = _distinct(_stretches(fence, keys))
        if len(stretch) * FENCE * 8 > n:  # (most of them: read whole, searched as they are)
            self.readahead()
            return _ranges(values, keys)
        self.want(values, stretch * FENCE, np.minimum((stretch + 1) * FENCE, n))
        at = (stretch[:, None] * FENCE + np.arange(FENCE)).ravel()
        at = at[at < n]
        return at[_ranges(values[at], keys)]

    def want_blocks(self, starts: npt.NDArray[np.int64], blocks: npt.NDArray[np.int64]) -> None:
        """Ask for the blocks ``blocks``, ``starts`` the blocks' offsets: each row's values
        and strings lie in its block (:mod:`signalloop.touchrows`)."""
        self._ask(starts[blocks], starts[blocks + 1])

    def bytes(self) -> npt.NDArray[np.uint8]:
        """The file's bytes, over the mapping (read as they are indexed)."""
        return np.frombuffer(self.mm, dtype=np.uint8)

    def readahead(self) -> None:
        """Read this file as any mapping does, with the readahead, from now on."""
        self.dense = True
        normal = getattr(mmap, "MADV_NORMAL", None)
        if normal is not None:
            self.mm.madvise(normal)

    def _offset(self, array: npt.NDArray[Any]) -> int | None:
        at = int(array.__array_interface__["data"][0]) - self.buffer.address
        return at if 0 <= at <= self.buffer.size else None

    def _ask(self, lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64]) -> None:
        """``madvise(MADV_WILLNEED)`` the byte ranges ``[lo, hi)``, joined where closer than
        :data:`GAP`, from page boundaries, in pieces of at most :data:`CHUNK` bytes (Linux
        reads at most its readahead window of each call).

        Ranges so many that reading them one by one would cost more than reading the whole
        file (each counted as :data:`GAP` bytes more) turn the readahead back on instead: a
        lookup of most users reads most of the file, and reads it faster in large pieces."""
        willneed = getattr(mmap, "MADV_WILLNEED", None)
        if willneed is None or self.dense or not len(lo):
            return
        lo = (lo // mmap.PAGESIZE) * mmap.PAGESIZE
        order = np.argsort(lo, kind="stable")
        lo, hi = lo[order], np.maximum.accumulate(hi[order])
        new = np.r_[True, lo[1:] > hi[:-1] + GAP]
        size = self.buffer.size
        starts = np.minimum(lo[new], size)
        ends = np.minimum(hi[np.r_[np.flatnonzero(new)[1:] - 1, len(hi) - 1]], size)
        if len(starts) * GAP + int((ends - starts).sum()) >= size:
            self.readahead()
            return
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            for at in range(s, e, CHUNK):
                self.mm.madvise(willneed, at, min(e - at, CHUNK))


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
    return _distinct(_hash(pa.chunked_array([pa.array([v for v in values if v is not None])])))


def _distinct(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The distinct values, sorted (NumPy 2.4's ``np.unique`` hashes integers: slower)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def _isin(values: npt.NDArray[Any], sorted_keys: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Whether each of ``values`` is one of ``sorted_keys`` (sorted)."""
    if not len(sorted_keys):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return np.asarray(sorted_keys[at] == values)


def _stretches(fence: Hashes, keys: Hashes) -> npt.NDArray[np.int64]:
    """The stretches that may hold each of ``keys`` (sorted), ``fence`` the first value of
    each stretch of sorted values: from the last stretch beginning below a key to the last
    beginning at or below it (a run of equal values can span stretches)."""
    first = np.maximum(np.searchsorted(fence, keys, side="left") - 1, 0)
    last = np.searchsorted(fence, keys, side="right") - 1
    inside = last >= 0
    first, last = first[inside], np.maximum(last[inside], first[inside])
    return touchrows.spans(first, last - first + 1)


def _ranges(sorted_hashes: npt.NDArray[np.uint64], keys: Hashes) -> npt.NDArray[np.int64]:
    """The positions in ``sorted_hashes`` holding one of ``keys`` (sorted, distinct)."""
    if not len(keys) or not len(sorted_hashes):
        return np.zeros(0, dtype=np.int64)
    lo = np.searchsorted(sorted_hashes, keys, side="left")
    hi = np.searchsorted(sorted_hashes, keys, side="right")
    n = hi - lo
    hit = n > 0
    return touchrows.spans(lo[hit], n[hit])
