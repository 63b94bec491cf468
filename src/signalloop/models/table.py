"""A modelling frame from a file: a CRM lead export, a contact list, any table with an outcome.

:func:`read_table` reads CSV (the delimiter sniffed by DuckDB's reader, UTF-8 with or without
BOM, gzip) or Parquet; :func:`table_frame` turns it into features, 0/1 labels and a clock in
time order:

* the target column becomes 1 where it equals ``positive`` (default: a yes-like value when the
  column has exactly two, such as ``yes``/``no``, ``true``/``false``, ``won``/``lost``);
* ``time`` names a timestamp or date column to order by (cadences then count days); with
  ``time_order="row"`` the file's own row order is the time order (cadences count rows);
* ``exclude`` drops columns (an outcome leak such as a call's duration); columns that are
  unique per row (ids, emails) are dropped too, and said so.

>>> import pandas as pd
>>> df = pd.DataFrame({"id": list("abcdef"), "x": [1, 2, 3, 4, 5, 6], "y": list("nynyny")})
>>> f = table_frame(df, target="y", time_order="row", source="leads.csv")
>>> f.positive, f.features, f.ignored, f.y.tolist()
('y', ['x'], {'id': 'unique per row (an id)'}, [0, 1, 0, 1, 0, 1])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from signalloop.errors import InputError, UsageError

POSITIVE_WORDS = ("yes", "y", "true", "t", "1", "won", "converted", "positive", "success")


@dataclass
class TableFrame:
    """Features, labels and clock of a table, in time order."""

    X: pd.DataFrame
    y: np.ndarray
    clock: np.ndarray
    unit: str
    target: str
    positive: str
    features: list[str]
    ignored: dict[str, str] = field(default_factory=dict)
    source: str = ""


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (delimiter sniffed) or Parquet file whole; CSV columns that are all numbers
    become numbers, the rest stay text.

    Raises :class:`~signalloop.errors.InputError` naming the file when it cannot be read.
    """
    p = Path(path)
    if not p.exists():
        raise InputError("no such file", file=p)
    con = duckdb.connect()
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            rel = con.sql("SELECT * FROM read_parquet(?)", params=[str(p)])
        else:
            # all text first: type sniffing would turn yes/no into booleans and strip the
            # leading zeros of ids; numbers are recognised below, column by column
            rel = con.sql(
                "SELECT * FROM read_csv(?, header = true, all_varchar = true)", params=[str(p)]
            )
        df: pd.DataFrame = rel.df()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"cannot read as a table: {first}", file=p) from exc
    finally:
        con.close()
    if df.empty:
        raise InputError("the table has no rows", file=p)
    for c in df.columns:
        if df[c].dtype == object or pd.api.types.is_string_dtype(df[c]):
            num = pd.to_numeric(df[c], errors="coerce")
            if num.notna().sum() == df[c].notna().sum():
                df[c] = num
    return df


def _positive(s: pd.Series[Any], positive: str | None, target: str, source: str) -> str:
    values = [str(v) for v in s.dropna().unique()]
    if positive is not None:
        if positive not in values:
            raise UsageError(
                f"{source}: --positive {positive!r} never occurs in column {target!r} "
                f"(values: {', '.join(sorted(values)[:10])})"
            )
        return positive
    if len(values) != 2:
        raise UsageError(
            f"{source}: column {target!r} has {len(values)} distinct values "
            f"({', '.join(sorted(values)[:10])}); say which one is the outcome with --positive"
        )
    for v in values:
        if v.strip().lower() in POSITIVE_WORDS:
            return v
    raise UsageError(
        f"{source}: cannot tell which of {values[0]!r} and {values[1]!r} in column {target!r} "
        "is the outcome; pass --positive"
    )


def table_frame(
    df: pd.DataFrame,
    *,
    target: str,
    positive: str | None = None,
    time: str | None = None,
    time_order: str | None = None,
    exclude: list[str] | None = None,
    source: str = "<table>",
) -> TableFrame:
    """Features, labels and clock of ``df`` for :func:`~signalloop.models.backtest.backtest`.

    Parameters
    ----------
    df
        The table as read.
    target, positive
        The outcome column and the value that counts as reaching it.
    time, time_order
        A time column to sort by (cadence in days), or ``"row"`` for the file's order.
    exclude
        Columns not to learn from.
    source
        The file's name, for messages.
    """
    cols = [str(c) for c in df.columns]
    if target not in cols:
        raise InputError(
            f"no target column {target!r}; the columns are {', '.join(cols)}",
            file=source,
            column=target,
        )
    if (time is None) == (time_order is None):
        raise UsageError("say how the rows are ordered in time: --time COLUMN or --time-order row")
    if time_order is not None and time_order != "row":
        raise UsageError(f"--time-order must be 'row', got {time_order!r}")
    unknown = [c for c in exclude or [] if c not in cols]
    if unknown:
        raise UsageError(f"{source}: --exclude names no column {', '.join(map(repr, unknown))}")
    df = df.copy()
    df.columns = cols
    df = df[df[target].notna()]
    pos = _positive(df[target].astype("string"), positive, target, source)
    if time is not None:
        if time not in cols:
            raise InputError(f"no time column {time!r}", file=source, column=time)
        ts = pd.to_datetime(df[time], utc=True, errors="coerce")
        bad = int(ts.isna().sum())
        if bad:
            first = int(np.flatnonzero(ts.isna().to_numpy())[0])
            raise InputError(
                f"{bad} value(s) of the time column are not timestamps, "
                f"such as {df[time].iloc[first]!r}",
                file=source,
                line=int(df.index[first]) + 2,
                column=time,
            )
        order = np.argsort(ts.to_numpy(), kind="stable")
        df = df.iloc[order]
        t0 = ts.iloc[order].iloc[0]
        clock = ((ts.iloc[order] - t0).dt.total_seconds() / 86400.0).to_numpy()
        unit = "days"
    else:
        clock = np.arange(len(df), dtype=float)
        unit = "rows"
    y = (df[target].astype("string") == pos).to_numpy(dtype=int)
    ignored: dict[str, str] = {c: "excluded" for c in exclude or []}
    ignored[target] = "target"
    if time is not None:
        ignored[time] = "time column"
    features = []
    for c in cols:
        if c in ignored:
            continue
        s = df[c]
        numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        if not numeric and len(df) >= 5 and s.nunique(dropna=True) > 0.5 * len(df):
            ignored[c] = "unique per row (an id)"
            continue
        if s.isna().all():
            ignored[c] = "always empty"
            continue
        features.append(c)
    ignored.pop(target)
    if time is not None:
        ignored.pop(time)
    if not features:
        raise UsageError(f"{source}: no feature columns left besides the target")
    X = df[features].reset_index(drop=True)
    for c in features:
        if not pd.api.types.is_numeric_dtype(X[c]):
            X[c] = X[c].astype("string")
    return TableFrame(X, y, clock, unit, target, pos, features, ignored, source)
