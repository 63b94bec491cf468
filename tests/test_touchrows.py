"""A run's rows stored whole in blocks read back as they were written, whatever they hold.

Written in batches of any size (a block spanning two of them), any rows taken (sorted) or all
of them equal the table's own rows: strings of any length and script, empty ones, nulls in
every column, timestamps with a zone. A damaged file is a ``ValueError`` (what the touch
index's callers read around), never a wrong row or another error.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalloop import touchrows
from signalloop.touchrows import ALIGN, BLOCK, COLUMNS, RowWriter

_TS = pa.timestamp("us", tz="UTC")
_text = st.one_of(st.none(), st.text(max_size=40))
_row = st.tuples(
    _text,
    _text,
    _text,
    st.one_of(st.none(), st.sampled_from(["c1", "c2", "ç3", ""])),
    st.one_of(st.none(), st.integers(-(2**55), 2**57)),
    st.one_of(st.none(), st.sampled_from(["a1", "a2"])),
    st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"])),
)


def _table(rows: list[tuple[object, ...]]) -> pa.Table:
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(COLUMNS)
    arrays = {}
    for name, values in zip(COLUMNS, cols, strict=True):
        if name == "ts":
            arrays[name] = pa.array(list(values), _TS)
        elif name in touchrows.CODED:
            arrays[name] = pa.array(list(values), pa.string()).dictionary_encode()
        else:
            arrays[name] = pa.array(list(values), pa.string())
    return pa.table(arrays)


def _users(n: int) -> np.ndarray:
    """Sorted user hashes, some repeated, up to the largest."""
    return np.sort(np.random.default_rng(n).integers(0, 2**64 - 1, n, np.uint64, endpoint=True))


def _write(path: Path, table: pa.Table, cuts: list[int]) -> np.ndarray:
    users = _users(table.num_rows)
    with RowWriter(path) as writer:
        bounds = sorted({0, table.num_rows, *(c % (table.num_rows + 1) for c in cuts)})
        for lo, hi in itertools.pairwise(bounds):
            writer.write(table.slice(lo, hi - lo), users[lo:hi], users[lo:hi] // 3)
    return writer.starts


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(_row, min_size=1, max_size=3 * BLOCK + 5),
    cuts=st.lists(st.integers(0, 200), max_size=4),
    picks=st.lists(st.integers(0, 200), max_size=30),
)
def test_rows_read_back_as_written(
    tmp_path: Path, rows: list[tuple[object, ...]], cuts: list[int], picks: list[int]
) -> None:
    table = _table(rows)
    path = tmp_path / "run.rows"
    starts = _write(path, table, cuts)
    n = table.num_rows
    assert len(starts) == 1 + -(-n // BLOCK)
    assert not np.any(starts % ALIGN)  # (every block aligned, the file's size too)
    assert int(starts[-1]) == path.stat().st_size
    touchrows.save_dictionaries(tmp_path / "run.dict.arrow", table.schema, touchrows._dicts(table))
    schema, dicts = touchrows.load_dictionaries(tmp_path / "run.dict.arrow")
    assert schema.equals(table.schema)
    buf = np.frombuffer(path.read_bytes(), np.uint8)
    taken = np.unique(np.asarray([p % n for p in picks], np.int64))
    got = touchrows.take(buf, starts, n, taken, schema, dicts)
    assert got.schema.equals(table.schema)
    assert got.to_pylist() == table.take(pa.array(taken)).to_pylist()
    assert touchrows.read_all(buf, starts, n, schema, dicts).to_pylist() == table.to_pylist()
    blocks = np.unique(taken // BLOCK)
    rows, users, clicks = touchrows.keys_of(buf, starts, n, blocks)
    assert rows.tolist() == [r for r in range(n) if r // BLOCK in set(blocks.tolist())]
    assert users.tolist() == _users(n)[rows].tolist()
    clicked = table.column("click_id").is_valid().to_numpy(zero_copy_only=False)[rows]
    assert clicks.tolist() == np.where(clicked, _users(n)[rows] // 3, 0).tolist()


def _written(tmp_path: Path, n: int = 3 * BLOCK + 7) -> tuple[pa.Table, np.ndarray, Path]:
    rng = np.random.default_rng(4)
    rows = [
        (
            f"t{i}",
            None if i % 3 else f"k{i}",
            f"u{i % 11}",
            "c1",
            int(rng.integers(0, 2**40)),
            "a1",
            "k1",
        )
        for i in range(n)
    ]
    table = _table(rows)
    path = tmp_path / "run.rows"
    return table, _write(path, table, [40]), path


def test_a_damaged_run_is_a_value_error(tmp_path: Path) -> None:
    table, starts, path = _written(tmp_path)
    n, schema, dicts = table.num_rows, table.schema, touchrows._dicts(table)
    whole = np.frombuffer(path.read_bytes(), np.uint8)
    every = np.arange(n)
    with pytest.raises(ValueError, match="block offsets"):  # cut short
        touchrows.take(whole[:-8], starts, n, every, schema, dicts)
    with pytest.raises(ValueError, match="block offsets"):  # offsets of another run
        touchrows.take(whole, starts[:-1], n, every, schema, dicts)
    with pytest.raises(ValueError, match="of a run of"):
        touchrows.take(whole, starts, n, np.array([n]), schema, dicts)
    shifted = starts.copy()
    shifted[1] += ALIGN  # (a block's start moved: its first strings' ends no longer fit)
    with pytest.raises(ValueError):
        touchrows.take(whole, shifted, n, every, schema, dicts)
    far = starts.copy()
    far[1] = 2**40  # (a block's offset beyond the file, the others as they were)
    blocks = np.arange(len(starts) - 1)
    for read in (
        lambda: touchrows.take(whole, far, n, every, schema, dicts),
        lambda: touchrows.keys_of(whole, far, n, blocks),
    ):
        with pytest.raises(ValueError, match="out of order"):
            read()
    far[1:-1] = starts[-1]  # (in order, each block empty but the last)
    with pytest.raises(ValueError, match="fixed parts"):
        touchrows.keys_of(whole, far, n, blocks)
    ends = whole.copy()  # a string's end beyond its block
    at = touchrows._ENDS * BLOCK  # (the first block's first touch id's end)
    ends[at : at + 4] = 255
    with pytest.raises(ValueError, match="beyond its block"):
        touchrows.take(ends, starts, n, every, schema, dicts)
    codes = whole.copy()  # a campaign code beyond its dictionary
    codes[touchrows._CODES * BLOCK : touchrows._CODES * BLOCK + 4] = 9
    with pytest.raises(ValueError, match="beyond its dictionary"):
        touchrows.take(codes, starts, n, every, schema, dicts)
    assert touchrows.take(whole, starts, n, every, schema, dicts).equals(table)


def test_a_timestamp_is_required(tmp_path: Path) -> None:
    table = _table([("t", None, "u", "c1", 1, "a1", "k1")]).set_column(
        COLUMNS.index("ts"), "ts", pa.array(["2026-01-01"])
    )
    with pytest.raises(ValueError, match="ts: expected a timestamp"):
        touchrows.encode(table, [1], [1])
