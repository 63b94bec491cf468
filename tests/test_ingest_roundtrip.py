"""Hypothesis round trips: write canonical rows as CSV, ingest, read back the same values."""

from __future__ import annotations

import csv
import tempfile
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalloop.contract import KINDS, Column
from signalloop.ingest import ingest_file
from signalloop.readers import NULL_TOKENS
from signalloop.store import Workspace

ALPHABET = st.sampled_from(list("abcXYZ019_-.:/;,|'\"é中 "))
TS_MIN = datetime(2000, 1, 1)
TS_MAX = datetime(2026, 11, 1)


def _ok_text(s: str) -> bool:
    return s == s.strip() and s != "" and s.lower() not in NULL_TOKENS


TEXT = st.text(ALPHABET, min_size=1, max_size=12).filter(_ok_text)


def value_strategy(col: Column) -> st.SearchStrategy[Any]:
    if col.type in ("id", "text"):
        return TEXT
    if col.type == "int":
        return st.integers(0, 10**12)
    if col.type == "float":
        lo = 0.0 if col.nonnegative else -1e9
        return st.floats(lo, 1e9, allow_nan=False, allow_infinity=False)
    if col.type == "date":
        return st.dates(date(2000, 1, 1), date(2026, 11, 1))
    if col.type == "ts":
        return st.datetimes(TS_MIN, TS_MAX)
    assert col.choices is not None
    return st.sampled_from(col.choices)


def render(col: Column, value: Any, offset_hours: int) -> str:
    """Text for a CSV cell; timestamps in a random offset, enums in random case."""
    if value is None:
        return ""
    if col.type == "ts":
        tz = timezone(timedelta(hours=offset_hours))
        local = value.replace(tzinfo=UTC).astimezone(tz)
        return local.isoformat()
    if col.type == "float":
        return repr(value)
    if col.type == "enum":
        return str(value).upper() if offset_hours % 2 else str(value)
    return str(value)


@st.composite
def rows_for(draw: st.DrawFn, kind: str) -> list[dict[str, Any]]:
    spec = KINDS[kind]
    n = draw(st.integers(1, 6))
    rows = []
    for i in range(n):
        row: dict[str, Any] = {}
        for col in spec.columns:
            if col.required or draw(st.booleans()):
                row[col.name] = draw(value_strategy(col))
            else:
                row[col.name] = None
        # keep the natural key unique: suffix the first id column of the key with the row number
        first_id = next(c for c in spec.key if spec.column(c).type in ("id", "text"))
        row[first_id] = f"{row[first_id] or 'k'}#{i}"
        if kind == "spend":
            row["clicks"] = min(row["clicks"], row["impressions"])
        rows.append(row)
    return rows


def roundtrip(kind: str, rows: list[dict[str, Any]], delimiter: str, offset: int) -> None:
    spec = KINDS[kind]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{kind}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, delimiter=delimiter)
            w.writerow(spec.names)
            for r in rows:
                w.writerow([render(c, r[c.name], offset) for c in spec.columns])
        with Workspace(":memory:") as ws:
            res = ingest_file(ws, kind, path)
            assert (res.rows_loaded, res.rows_quarantined) == (len(rows), 0), res
            got = ws.table(kind).drop("attrs", "_ingest_id").to_pyarrow().to_pylist()
    key = spec.key[0] if kind != "spend" else "campaign_id"
    want = sorted(rows, key=lambda r: str(r[key]))
    got = sorted(got, key=lambda r: str(r[key]))
    for w_row, g_row in zip(want, got, strict=True):
        for col in spec.columns:
            expected = w_row[col.name]
            if (col.type == "enum" or col.name == "stage") and expected is not None:
                expected = expected.lower()
            assert g_row[col.name] == expected, (col.name, w_row, g_row)


SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("kind", list(KINDS))
def test_roundtrip(kind: str) -> None:
    @SETTINGS
    @given(
        rows=rows_for(kind),
        delimiter=st.sampled_from([",", ";", "\t", "|"]),
        offset=st.integers(-11, 13),
    )
    def check(rows: list[dict[str, Any]], delimiter: str, offset: int) -> None:
        roundtrip(kind, rows, delimiter, offset)

    check()
