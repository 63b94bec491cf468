"""How a touch index run stores its rows: each row whole, in blocks of :data:`BLOCK` rows.

A daily lookup takes a few rows per user (those of the day's converting users and clicks)
from a run of tens of millions (:mod:`signalloop.touchindex`). Stored by column, as Arrow
stores a table, each row's seven values lie in seven places of the file (and the strings'
offsets in three more), so a cold lookup reads about ten pages per row, wherever it lies in
the history. Stored whole, a row's values lie together: one block of :data:`BLOCK` rows
(about 3.4 KB at 1,000 campaigns) holds everything a lookup takes of its rows, and a lookup
reads a page or two per user. The blocks' byte offsets (a small array, read whole beside the
run's fences) say where each block starts.

A block of ``m`` rows (:data:`BLOCK`, but in a run's last block), little-endian, starting at a
multiple of :data:`ALIGN` bytes (zeros between blocks); the values under a null are whatever
the source held there (its validity bit says it is null):

========  ============  ==========================================================
ts        int64 x m     the timestamps in their unit
uh        uint64 x m    the user hashes (the run's order: a lookup's users are matched
                        by them in the blocks it reads)
ch        uint64 x m    the click ids' hashes (a lookup's clicks are found among the rows
                        of the blocks it reads for its users first)
codes     int32 x 3m    campaign, ad set, creative: positions in the run's dictionaries,
                        column after column
ends      uint32 x 3m   where each row's touch, click and user id end in the block's
                        strings, column after column (the touch ids first, then the
                        click ids, then the user ids)
valid     uint8 x m     bit ``k``: the ``k``-th of :data:`COLUMNS` is not null
strings   bytes         the block's touch ids, click ids and user ids (UTF-8)
========  ============  ==========================================================

The run's dictionaries and its columns' Arrow types are kept in a small Arrow file of their
own (:func:`save_dictionaries`). Both directions work on whole batches with NumPy: a block's
parts are copied as slices, never value by value in Python.

>>> import tempfile
>>> from pathlib import Path
>>> t = pa.table({
...     "touch_id": ["t1", "t2", "t3"], "click_id": ["c1", None, "c3"],
...     "user_id": ["u1", "u2", "u1"], "campaign_id": pa.array(["x", "y", "x"]).dictionary_encode(),
...     "ts": pa.array([1, 2, None], pa.timestamp("us")),
...     "adset_id": pa.array([None, "a", "a"]).dictionary_encode(),
...     "creative_id": pa.array(["k", "k", "k"]).dictionary_encode()})
>>> path = Path(tempfile.mkdtemp()) / "run.rows"
>>> with RowWriter(path) as w:
...     w.write(t, users=[7, 9, 7], clicks=[5, 0, 6])
>>> rows = np.frombuffer(path.read_bytes(), np.uint8)
>>> got = take(rows, w.starts, 3, np.array([0, 2]), t.schema, _dicts(t))
>>> got.column("click_id").to_pylist(), got.column("ts").to_pylist()[1]
(['c1', 'c3'], None)
>>> got.column("campaign_id").to_pylist(), got.column("adset_id").to_pylist()
(['x', 'x'], [None, 'a'])
>>> keys_of(rows, w.starts, 3, np.array([0]))
(array([0, 1, 2]), array([7, 9, 7], dtype=uint64), array([5, 0, 6], dtype=uint64))
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

#: Rows per block: about 3.4 KB a block at 1,000 campaigns, a page or two for each user a
#: lookup takes.
BLOCK = 32
#: What a run holds of each touchpoint, in the order of the validity bits.
COLUMNS = ("touch_id", "click_id", "user_id", "campaign_id", "ts", "adset_id", "creative_id")
#: The strings stored as bytes, in their order in a block.
STRINGS = ("touch_id", "click_id", "user_id")
#: The columns of few values, stored as positions in the run's dictionaries.
CODED = ("campaign_id", "adset_id", "creative_id")
#: Bytes of a row in its block besides its strings: ts, three codes, three ends, validity.
FIXED = 8 + 8 + 8 + 12 + 12 + 1
#: Where each part of a block's fixed part starts, in bytes per row of the block (a block of
#: ``m`` rows: its user hashes start at ``8 * m``, its first codes at ``16 * m``, ...).
_TS, _UH, _CH, _CODES, _ENDS, _VALID = 0, 8, 16, 24, 36, 48
#: Pieces of bytes written per system call (Linux takes up to 1,024).
IOV = 1024
#: Every block starts at a multiple of this many bytes (zeros between), so that its
#: timestamps, codes and ends are read as aligned words.
ALIGN = 8
#: Rows decoded at once when a whole run is read (a merge): bounds the index arrays a decode
#: builds (its blocks' rows, and two string bounds a row per column).
DECODE_ROWS = 1 << 18

U8 = npt.NDArray[np.uint8]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]


def _one(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """``col`` as one array (its one chunk as it is: a slice is not copied)."""
    if isinstance(col, pa.Array):
        return col
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _strings(col: pa.ChunkedArray | pa.Array) -> tuple[I64, pa.Buffer | None]:
    """A string column's offsets (n + 1, from 0) and its bytes (a null's, if any, kept)."""
    array = _one(col)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = array.cast(pa.string())  # (string views, binary: as UTF-8 strings)
    # (a null's bytes, if any, are kept: its validity bit says it is null)
    wide = pa.types.is_large_string(array.type)
    offsets = np.frombuffer(array.buffers()[1], np.int64 if wide else np.int32)
    at = offsets[array.offset : array.offset + len(array) + 1].astype(np.int64)
    return at - at[0], _slice(array.buffers()[2], int(at[0]), int(at[-1] - at[0]))


def _slice(buffer: pa.Buffer | None, start: int, size: int) -> pa.Buffer | None:
    return None if buffer is None or not size else buffer.slice(start, size)


def _valid(col: pa.Array) -> npt.NDArray[np.bool_]:
    return np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _values(array: pa.Array) -> npt.NDArray[Any]:
    """A fixed-width array's values as stored (whatever lies under its nulls)."""
    dtype = np.dtype(array.type.to_pandas_dtype())
    raw = np.frombuffer(array.buffers()[1], dtype=dtype)
    return raw[array.offset : array.offset + len(array)]


def _codes(col: pa.ChunkedArray | pa.Array) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.bool_]]:
    """A dictionary column's positions (whatever lies under a null) and whether each is set."""
    array = _one(col)
    if not pa.types.is_dictionary(array.type):
        raise ValueError(f"expected a dictionary column, got {array.type}")
    return _values(array.indices).astype("<i4"), _valid(array)


def encode(table: pa.Table, users: npt.ArrayLike, clicks: npt.ArrayLike) -> tuple[U8, I64]:
    """The blocks of ``table``'s rows as one array of bytes, and each block's size
    (:func:`pieces`, joined)."""
    parts, sizes = pieces(table, users, clicks)
    return np.frombuffer(b"".join(parts), np.uint8), sizes


def pieces(
    table: pa.Table, users: npt.ArrayLike, clicks: npt.ArrayLike
) -> tuple[list[memoryview | bytes], I64]:
    """The blocks of ``table``'s rows (every block of :data:`BLOCK` rows but the last), as
    pieces of bytes to write one after the other (views of the table's buffers, not copies),
    and each block's size. ``table``: :data:`COLUMNS`, :data:`CODED` as dictionaries
    (their positions are stored as they are: the caller codes them against the run's);
    ``users`` and ``clicks``: each row's user and click hash (what a lookup matches its rows
    by; a null click's is not read)."""
    n = table.num_rows
    uh, ch = np.asarray(users, dtype="<u8"), np.asarray(clicks, dtype="<u8")
    if len(uh) != n or len(ch) != n:
        raise ValueError(f"{n} rows but {len(uh)} user and {len(ch)} click hashes")
    if not n:
        return [], np.zeros(0, np.int64)
    ts_col = _one(table.column("ts"))
    if not pa.types.is_timestamp(ts_col.type):
        raise ValueError(f"ts: expected a timestamp column, got {ts_col.type}")
    valid = np.zeros(n, np.uint8)
    ts_ok = _valid(ts_col)
    ts = _values(ts_col.cast(pa.int64())).astype("<i8")
    valid |= ts_ok.astype(np.uint8) << COLUMNS.index("ts")
    codes = []
    for name in CODED:
        c, ok = _codes(table.column(name))
        codes.append(c)
        valid |= ok.astype(np.uint8) << COLUMNS.index(name)
    offsets, data = [], []
    for name in STRINGS:
        col = _one(table.column(name))
        valid |= _valid(col).astype(np.uint8) << COLUMNS.index(name)
        o, d = _strings(col)
        offsets.append(o)
        data.append(memoryview(d).cast("B") if d is not None else memoryview(b""))
    starts = np.arange(0, n, BLOCK)
    ends = np.minimum(starts + BLOCK, n)
    # each block's string bytes per column, and where each row's ends in its block
    per = [o[ends] - o[starts] for o in offsets]
    base = np.zeros(len(starts), np.int64)
    ends_in_block = []
    for o, size in zip(offsets, per, strict=True):
        block_of = np.repeat(np.arange(len(starts)), ends - starts)
        ends_in_block.append((o[1:] - o[starts][block_of] + base[block_of]).astype("<u4"))
        base = base + size
    head_len = FIXED * (ends - starts)
    pad = -(head_len + base) % ALIGN  # (each block starts at a multiple of ALIGN)
    sizes = head_len + base + pad
    full = n // BLOCK
    fixed = [ts, uh, ch, *codes, *ends_in_block, valid]
    heads = []
    if full:
        heads.append(_heads(fixed, 0, full * BLOCK, BLOCK))
    if n > full * BLOCK:
        heads.append(_heads(fixed, full * BLOCK, n, n - full * BLOCK))
    head = np.concatenate(heads, axis=None) if len(heads) > 1 else heads[0].ravel()
    # a block: its head, then its touch ids, click ids and user ids (slices joined as such);
    # each head is kept behind ALIGN zero bytes, of which the previous block's padding
    # is taken
    hv = memoryview(head.data)
    at = np.r_[0, np.cumsum(ALIGN + head_len)]
    x0 = (at[:-1] + ALIGN - np.r_[0, pad[:-1]]).tolist()
    x1 = (at[:-1] + ALIGN + head_len).tolist()
    (t0, t1), (c0, c1), (u0, u1) = ((o[starts].tolist(), o[ends].tolist()) for o in offsets)
    dt, dc, du = data
    parts: list[memoryview | bytes] = []
    for b in range(len(starts)):
        parts += (hv[x0[b] : x1[b]], dt[t0[b] : t1[b]], dc[c0[b] : c1[b]], du[u0[b] : u1[b]])
    parts.append(bytes(int(pad[-1])))
    return parts, sizes


def _heads(columns: list[npt.NDArray[Any]], lo: int, hi: int, m: int) -> U8:
    """The fixed parts of the blocks of ``m`` rows in rows ``[lo, hi)``, one block a row,
    each behind :data:`ALIGN` zero bytes: ``columns`` one after the other."""
    nb = (hi - lo) // m

    def part(a: npt.NDArray[Any]) -> U8:
        return np.ascontiguousarray(a[lo:hi]).reshape(nb, m).view(np.uint8)

    parts = [part(c) for c in columns]
    head = np.zeros((nb, ALIGN + FIXED * m), np.uint8)
    at = ALIGN
    for p in parts:  # (column after column: one strided copy each)
        head[:, at : at + p.shape[1]] = p
        at += p.shape[1]
    return head


class RowWriter:
    """Write a run's rows as blocks to ``path``, batch after batch (each batch's last rows
    short of a block wait for the next); :attr:`starts` after closing: each block's byte
    offset, and the file's size last."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = path.open("wb", buffering=0)
        self.carry: tuple[pa.Table, npt.NDArray[np.uint64], npt.NDArray[np.uint64]] | None = None
        self.sizes: list[I64] = []
        self.starts: I64 = np.zeros(1, np.int64)
        self.schema: pa.Schema | None = None

    def write(self, table: pa.Table, users: npt.ArrayLike, clicks: npt.ArrayLike) -> None:
        """Add ``table``'s rows, ``users`` and ``clicks`` their user and click hashes."""
        uh, ch = np.asarray(users, dtype=np.uint64), np.asarray(clicks, dtype=np.uint64)
        if self.schema is None:
            self.schema = table.schema
        if self.carry is not None:  # (its block filled first: the batch itself not copied)
            need = min(BLOCK - self.carry[0].num_rows, table.num_rows)
            first = pa.concat_tables([self.carry[0], table.slice(0, need)])
            first_uh = np.concatenate([self.carry[1], uh[:need]])
            first_ch = np.concatenate([self.carry[2], ch[:need]])
            table, uh, ch = table.slice(need), uh[need:], ch[need:]
            self.carry = None
            if first.num_rows < BLOCK:
                self.carry = (first, first_uh, first_ch)
                return
            self._put(first, first_uh, first_ch)
        whole = (table.num_rows // BLOCK) * BLOCK
        if whole:
            self._put(table.slice(0, whole), uh[:whole], ch[:whole])
        rest = table.num_rows > whole
        self.carry = (table.slice(whole), uh[whole:], ch[whole:]) if rest else None

    def _put(
        self, table: pa.Table, users: npt.NDArray[np.uint64], clicks: npt.NDArray[np.uint64]
    ) -> None:
        data, sizes = pieces(table, users, clicks)
        _write(self.fh.fileno(), data)
        self.sizes.append(sizes)

    def close(self) -> I64:
        if self.carry is not None:
            self._put(*self.carry)
            self.carry = None
        self.fh.close()
        sizes = np.concatenate(self.sizes) if self.sizes else np.zeros(0, np.int64)
        self.starts = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        return self.starts

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.fh.close()


def _write(fd: int, parts: list[memoryview | bytes]) -> None:
    """Write ``parts`` one after the other, :data:`IOV` at a time (the kernel copies them
    from where they are: no joined copy of the batch in memory)."""
    for at in range(0, len(parts), IOV):
        chunk = parts[at : at + IOV]
        done = os.writev(fd, chunk)
        if done != sum(len(p) for p in chunk):  # (a short write: the rest as one)
            rest = memoryview(b"".join(chunk))[done:]
            while len(rest):
                rest = rest[os.write(fd, rest) :]


def keys_of(buf: U8, starts: I64, n: int, blocks: I64) -> tuple[I64, U64, U64]:
    """Every row of the blocks ``blocks`` (of a run of ``n`` rows), with its user hash and
    its click hash (0 where it has no click id)."""
    _check(buf, starts, n)
    rows = spans(blocks * BLOCK, np.minimum(n - blocks * BLOCK, BLOCK))
    b = rows // BLOCK
    m = np.minimum(n - b * BLOCK, BLOCK)
    a, j = starts[b], rows - b * BLOCK
    _fits(a, m, starts[b + 1])
    u64 = np.frombuffer(buf, "<u8", count=len(buf) // 8)
    clicked = (buf[a + _VALID * m + j] >> COLUMNS.index("click_id")) & 1 == 1
    ch = np.where(clicked, u64[(a + _CH * m + 8 * j) // 8], 0).astype(np.uint64)
    return rows, u64[(a + _UH * m + 8 * j) // 8], ch


def _check(buf: U8, starts: I64, n: int) -> None:
    """Offsets that fit the bytes: as many as the blocks, from 0 to the end, in order (then
    every read of a block whose fixed part :func:`_fits` lies in the file)."""
    nb = -(-n // BLOCK)
    if len(starts) != nb + 1 or int(starts[-1]) != len(buf) or int(starts[0]) != 0:
        raise ValueError(
            f"{nb} blocks of {n} rows expected to end at {len(buf)} bytes; "
            f"{len(starts) - 1} block offsets ending at {int(starts[-1]) if len(starts) else 0}"
        )
    if np.any(starts[1:] < starts[:-1]):
        raise ValueError("block offsets out of order")


def _fits(at: I64, rows: I64, end: I64) -> None:
    """Blocks starting at ``at``, of ``rows`` rows, ending at ``end``: aligned, and long
    enough for their rows' fixed parts."""
    if np.any(at + FIXED * rows > end) or np.any(at % ALIGN):
        raise ValueError("a block shorter than its rows' fixed parts, or not aligned")


def take(
    buf: U8,
    starts: I64,
    n: int,
    rows: I64,
    schema: pa.Schema,
    dictionaries: dict[str, pa.Array],
) -> pa.Table:
    """The rows ``rows`` (sorted, distinct) of a run of ``n`` rows stored as blocks in
    ``buf`` (a mapped file's bytes), ``starts`` its blocks' offsets: an Arrow table of
    :data:`COLUMNS` typed as ``schema``, the coded ones as dictionaries.

    A damaged run (offsets that do not fit the bytes, a row beyond the run) raises
    ``ValueError``."""
    _check(buf, starts, n)
    if len(rows) and (rows[0] < 0 or rows[-1] >= n):
        raise ValueError(f"row {int(rows[-1])} of a run of {n}")
    rows = np.asarray(rows, np.int64)
    b = rows // BLOCK
    j = rows - b * BLOCK
    m = np.minimum(n - b * BLOCK, BLOCK)
    a = starts[b]
    _fits(a, m, starts[b + 1])
    # (aligned words: one gather of each value; a block's parts start at multiples of 4)
    i64 = np.frombuffer(buf, "<i8", count=len(buf) // 8)
    i32 = np.frombuffer(buf, "<i4", count=len(buf) // 4)
    u32 = i32.view("<u4")
    valid = buf[a + _VALID * m + j]
    columns: dict[str, pa.Array] = {}
    ts = i64[(a + _TS * m + 8 * j) // 8]
    columns["ts"] = pa.Array.from_buffers(
        schema.field("ts").type, len(rows), [_bits(valid, "ts"), pa.py_buffer(ts)]
    )
    for k, name in enumerate(CODED):
        codes = i32[(a + (_CODES + 4 * k) * m + 4 * j) // 4]
        mask = (valid >> COLUMNS.index(name)) & 1 == 0
        values = dictionaries[name]
        if np.any(((codes < 0) | (codes >= len(values))) & ~mask):
            raise ValueError(f"{name}: a code beyond its dictionary of {len(values)}")
        indices = pa.array(np.where(mask, 0, codes).astype(np.int32), mask=mask)
        typ = schema.field(name).type
        columns[name] = pa.DictionaryArray.from_arrays(
            indices.cast(typ.index_type) if pa.types.is_dictionary(typ) else indices,
            values,
        )
    text = a + FIXED * m
    for k, name in enumerate(STRINGS):
        end_at = (a + (_ENDS + 4 * k) * m + 4 * j) // 4
        end = u32[end_at].astype(np.int64)
        if k == 0:
            start = np.where(j > 0, u32[end_at - 1], 0).astype(np.int64)
        else:  # (a block's first row: the previous column's last end)
            last = (a + (_ENDS + 4 * (k - 1)) * m + 4 * (m - 1)) // 4
            start = u32[np.where(j > 0, end_at - 1, last)].astype(np.int64)
        size = end - start
        if np.any((size < 0) | (text + end > starts[b + 1])):
            raise ValueError(f"{name}: a string beyond its block")
        data, offsets = _gather(buf, text + start, text + end)
        columns[name] = pa.StringArray.from_buffers(
            len(rows), pa.py_buffer(offsets), data, _bits(valid, name)
        ).cast(_plain(schema.field(name).type))
    return pa.table([columns[c] for c in COLUMNS], names=list(COLUMNS))


def read_all(
    buf: U8, starts: I64, n: int, schema: pa.Schema, dicts: dict[str, pa.Array]
) -> pa.Table:
    """Every row of a run (a merge's input), decoded :data:`DECODE_ROWS` at a time."""
    parts = [
        take(buf, starts, n, np.arange(lo, min(lo + DECODE_ROWS, n)), schema, dicts)
        for lo in range(0, n, DECODE_ROWS)
    ]
    if not parts:
        return take(buf, starts, n, np.zeros(0, np.int64), schema, dicts)
    return pa.concat_tables(parts)


def _plain(typ: pa.DataType) -> pa.DataType:
    return pa.large_string() if pa.types.is_large_string(typ) else pa.string()


def _bits(valid: U8, name: str) -> pa.Buffer | None:
    ok = ((valid >> COLUMNS.index(name)) & 1).astype(bool)
    if ok.all():
        return None
    return pa.py_buffer(np.packbits(ok, bitorder="little"))


def _gather(buf: U8, lo: I64, hi: I64) -> tuple[pa.Buffer, npt.NDArray[np.int32]]:
    """The bytes ``[lo, hi)`` of ``buf`` for each row, one after the other, and their
    offsets. The ranges follow one another in the file (rows in order, a column's strings in
    row order within a block), so ``buf`` is read as an Arrow array of them and the gaps
    between them, and Arrow copies the ranges out (no index per byte)."""
    n = len(lo)
    if not n:
        return pa.py_buffer(b""), np.zeros(1, np.int32)
    bounds = np.empty(2 * n + 1, np.int64)
    bounds[0:-1:2], bounds[1::2], bounds[-1] = lo, hi, hi[-1]
    if np.any(bounds[1:] < bounds[:-1]):
        raise ValueError("strings out of order in their blocks")
    ranges = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), 2 * n, [None, pa.py_buffer(bounds), pa.py_buffer(buf)]
    )
    taken = ranges.take(pa.array(np.arange(0, 2 * n, 2)))
    offsets = np.frombuffer(taken.buffers()[1], np.int64)[taken.offset : taken.offset + n + 1]
    data = taken.buffers()[2] or pa.py_buffer(b"")
    return data, (offsets - offsets[0]).astype(np.int32)


def spans(starts: npt.NDArray[Any], counts: npt.NDArray[Any]) -> I64:
    """Every position of the ranges ``[starts, starts + counts)`` (counts above 0), in order:
    the starts repeated, plus 0, 1, ... within each range."""
    if not len(counts):
        return np.zeros(0, dtype=np.int64)
    total = int(counts.sum())
    at = np.repeat(starts - np.r_[0, np.cumsum(counts)[:-1]], counts)
    return np.asarray(at + np.arange(total), dtype=np.int64)


def save_dictionaries(path: Path, schema: pa.Schema, dicts: dict[str, pa.Array]) -> None:
    """The run's dictionaries (one row per value: its column and the value) and its
    columns' Arrow types (in the file's metadata)."""
    names = [np.full(len(dicts[c]), c, dtype=object) for c in CODED]
    values = pa.concat_arrays([dicts[c].cast(pa.string()) for c in CODED])
    table = pa.table({"column": pa.array(np.concatenate(names), pa.string()), "value": values})
    meta = {b"columns": schema.serialize().to_pybytes()}
    table = table.replace_schema_metadata(meta)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)


def load_dictionaries(path: Path) -> tuple[pa.Schema, dict[str, pa.Array]]:
    """What :func:`save_dictionaries` wrote: the run's columns' types and dictionaries."""
    with pa.memory_map(str(path), "r") as source:
        table = pa.ipc.open_file(source).read_all()
    meta = table.schema.metadata or {}
    if b"columns" not in meta or table.column_names != ["column", "value"]:
        raise ValueError(f"{path.name}: not a run's dictionaries")
    schema = pa.ipc.read_schema(pa.py_buffer(meta[b"columns"]))
    names = np.asarray(table.column("column").to_numpy(zero_copy_only=False), dtype=object)
    values = table.column("value").combine_chunks()
    dicts = {}
    for c in CODED:
        typ = schema.field(c).type
        want = typ.value_type if pa.types.is_dictionary(typ) else typ
        dicts[c] = values.filter(pa.array(names == c)).cast(want)
    return schema, dicts


def _dicts(table: pa.Table) -> dict[str, pa.Array]:
    """The dictionaries of ``table``'s coded columns (one chunk each)."""
    return {c: table.column(c).combine_chunks().dictionary for c in CODED}
