"""The first and last row of a group, the same on every run: ``arg_min`` / ``arg_max`` with a
tie-break.

``x.argmax(ts)`` keeps the ``x`` of *a* row with the latest ``ts``; where two rows share it (a
user's touches on two campaigns in the same second), which one depends on the order in which
the backend's parallel aggregation meets them, and two runs of the same code on the same data
can differ. :func:`last_by` and :func:`first_by` order by ``(key, tie)`` instead: the latest
(earliest) ``key``, then the greatest (least) ``tie``, which is ``x`` itself unless given (a
column that identifies the row, such as ``touch_id``, keeps several values taken from one
group on the same row). Rows whose ``x`` is null are skipped, as DuckDB's ``arg_max`` skips
them (the other backends' ``arg_max`` do not).

Each compiles to the backend's ordered aggregate: ``FIRST(x ORDER BY {key, tie} DESC)`` on
DuckDB, ``ARRAY_AGG(x ORDER BY ROW(key, tie) DESC)[1]`` on PostgreSQL, ``MAX_BY(x,
STRUCT(key, tie))`` on Spark.

>>> import ibis, pandas as pd
>>> t = ibis.memtable(pd.DataFrame({
...     "u": ["a", "a", "a", "a", "b"],
...     "ts": pd.to_datetime(["2026-01-01 10:00", "2026-01-01 10:00", "2026-01-01 09:00",
...                           "2026-01-01 09:00", "2026-01-01 08:00"]),
...     "c": ["c2", "c1", "c4", "c3", None]}))
>>> got = t.group_by("u").aggregate(last=last_by(t.c, t.ts), first=first_by(t.c, t.ts))
>>> got.order_by("u").to_pyarrow().to_pylist()
[{'u': 'a', 'last': 'c2', 'first': 'c3'}, {'u': 'b', 'last': None, 'first': None}]
"""

from __future__ import annotations

from typing import Any

import ibis

__all__ = ["first_by", "last_by"]


def _key(key: Any, tie: Any) -> Any:
    return ibis.struct({"k": key, "t": tie})


def _where(x: Any, where: Any) -> Any:
    return x.notnull() if where is None else (x.notnull() & where)


def last_by(x: Any, key: Any, tie: Any = None, where: Any = None) -> Any:
    """``x`` of the row with the greatest ``(key, tie)`` (``tie`` defaults to ``x``), among
    the rows where ``where`` holds and ``x`` is not null: ``x.argmax(key)``, a tie on ``key``
    going to the greatest ``tie``."""
    return x.argmax(_key(key, x if tie is None else tie), where=_where(x, where))


def first_by(x: Any, key: Any, tie: Any = None, where: Any = None) -> Any:
    """``x`` of the row with the least ``(key, tie)`` (``tie`` defaults to ``x``), among the
    rows where ``where`` holds and ``x`` is not null: ``x.argmin(key)``, a tie on ``key``
    going to the least ``tie``."""
    return x.argmin(_key(key, x if tie is None else tie), where=_where(x, where))
