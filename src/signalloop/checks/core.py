"""The six core signal-check computations as generic ibis expressions.

Each function takes an ibis table expression and column names, so the same code serves the
canonical workspace tables (``touchpoints``, ``conversions``, ``crm``, ...) and a single wide
event log. Each builds **one** ibis expression, lets the backend (DuckDB by default) do all the
work on the full data, and turns only the small result into Python values.

The semantics are those of the anchor implementations the benchmark compares against
(``shared/bench/anchor_engines.py``):

* :func:`null_rates`: the fraction of NULLs per column.
* :func:`duplicate_count`: rows minus distinct key values (a row whose key is NULL has no key,
  so it counts as a duplicate); :func:`duplicate_counts_by` gives the same per group.
* :func:`outside_taxonomy`: the count per value that is NULL or not in the allowed set.
* :func:`daily_dropouts`: on the dense group x day grid (days from the first to the last day
  present anywhere), the days whose count is below ``ratio`` times the median of the previous
  ``window`` days, only when all ``window`` previous days exist.
* :func:`delay_quantiles`: per group, quantiles (linear interpolation) of ``ts - click_ts`` in
  seconds, over the rows whose ``click_ts`` is not NULL.
* :func:`stage_regressions`: the number of distinct entities having an event, ordered by time
  then stage rank, whose rank is lower than the previous event's (equivalently, lower than
  the highest before it: the rule of :func:`stage_flags`, which counts per entity the events
  that went backwards or were overwritten, for the ``stage_regression`` check and lead
  routing).

>>> import ibis
>>> t = ibis.memtable({"id": ["a", "a", "b", None], "src": ["fb", "google", None, "fb"]})
>>> duplicate_count(t, "id")
2
>>> outside_taxonomy(t, "src", ["google", "facebook"])
{'fb': 2, None: 1}
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any, NamedTuple

import ibis

__all__ = [
    "Dropout",
    "daily_dropouts",
    "delay_quantiles",
    "duplicate_count",
    "duplicate_counts_by",
    "funnel_ranks",
    "null_rates",
    "outside_taxonomy",
    "stage_flags",
    "stage_regressions",
]

_EPOCH = date(1970, 1, 1)


class Dropout(NamedTuple):
    """A day on which a group's count fell below ``ratio`` x the median of the days before."""

    group: Any
    day: date
    rows: int  # rows that day (``count`` would shadow tuple.count)
    median_prev: float


def _rows(expr: Any) -> list[dict[str, Any]]:
    """The (small) result of ``expr`` as a list of dicts."""
    return expr.to_pyarrow().to_pylist()  # type: ignore[no-any-return]


def _scalar(expr: Any) -> Any:
    return expr.to_pyarrow().as_py()


def _keys(key: str | Sequence[str]) -> list[str]:
    keys = [key] if isinstance(key, str) else list(key)
    if not keys:
        raise ValueError("at least one key column is needed")
    return keys


def _distinct_keys(t: Any, keys: list[str]) -> Any:
    """The number of distinct non-NULL values of the key (one column or several)."""
    if len(keys) == 1:
        return t[keys[0]].nunique()
    present = ibis.and_(*[t[k].notnull() for k in keys])
    return ibis.struct({k: t[k] for k in keys}).nunique(where=present)


def null_rates(t: Any, columns: Sequence[str] | None = None) -> dict[str, float]:
    """The fraction of NULL values in each column, in one pass.

    Parameters
    ----------
    t
        An ibis table expression.
    columns
        The columns to measure; all of ``t``'s columns when ``None``.

    Returns
    -------
    dict[str, float]
        Column name -> NULL count / row count (0.0 for every column of an empty table).

    Examples
    --------
    >>> import ibis
    >>> null_rates(ibis.memtable({"a": [1, None, 3, None], "b": ["x", "y", "z", "w"]}))
    {'a': 0.5, 'b': 0.0}
    """
    cols = list(t.columns if columns is None else columns)
    aggs = {"n": t.count(), **{f"c{i}": t[c].count() for i, c in enumerate(cols)}}
    row = _rows(t.aggregate(**aggs))[0]
    n = int(row["n"])
    return {c: (n - int(row[f"c{i}"])) / n if n else 0.0 for i, c in enumerate(cols)}


def duplicate_count(t: Any, key: str | Sequence[str]) -> int:
    """Rows minus distinct key values: how many rows repeat a key seen before.

    Parameters
    ----------
    t
        An ibis table expression.
    key
        The key column, or several columns forming the key. A row with a NULL in the key has
        no key and counts as a duplicate (``count(*) - count(DISTINCT key)``).

    Returns
    -------
    int
        The number of surplus rows (0 when the key is unique and never NULL).

    Examples
    --------
    >>> import ibis
    >>> t = ibis.memtable({"id": [1, 1, 1, 2], "day": [1, 1, 2, 1]})
    >>> duplicate_count(t, "id"), duplicate_count(t, ["id", "day"])
    (2, 1)
    """
    keys = _keys(key)
    return int(_scalar(t.count() - _distinct_keys(t, keys)))


def duplicate_counts_by(
    t: Any, key: str | Sequence[str], by: str | Sequence[str]
) -> dict[Any, int]:
    """:func:`duplicate_count` within each group (a key repeated across groups is not counted).

    Parameters
    ----------
    t
        An ibis table expression.
    key
        The key column or columns.
    by
        The grouping column, or several (then the result's keys are tuples).

    Returns
    -------
    dict
        Group value (a tuple for several grouping columns) -> surplus rows, for every group,
        in group order.

    Examples
    --------
    >>> import ibis
    >>> t = ibis.memtable({"id": [1, 1, 1, 2], "c": ["x", "x", "y", "y"]})
    >>> duplicate_counts_by(t, "id", "c")
    {'x': 1, 'y': 0}
    """
    keys = _keys(key)
    groups = _keys(by)
    names = [f"g{i}" for i in range(len(groups))]
    agg = (
        t.group_by(**{n: t[g] for n, g in zip(names, groups, strict=True)})
        .aggregate(dups=t.count() - _distinct_keys(t, keys))
        .order_by(names)
    )
    out: dict[Any, int] = {}
    for r in _rows(agg):
        g = r[names[0]] if len(names) == 1 else tuple(r[n] for n in names)
        out[g] = int(r["dups"])
    return out


def outside_taxonomy(t: Any, column: str, allowed: Iterable[Hashable]) -> dict[Any, int]:
    """The count of each value of ``column`` that is NULL or not one of ``allowed``.

    Parameters
    ----------
    t
        An ibis table expression.
    column
        The column to check (compared exactly: no trimming, case-sensitive).
    allowed
        The allowed values.

    Returns
    -------
    dict
        Offending value (``None`` for NULL) -> number of rows, most frequent first (then by
        value, NULL last); empty when every value is allowed.

    Examples
    --------
    >>> import ibis
    >>> t = ibis.memtable({"s": ["google", "Google", None, "fb", "fb"]})
    >>> outside_taxonomy(t, "s", ["google"])
    {'fb': 2, 'Google': 1, None: 1}
    """
    values = list(allowed)
    c = t[column]
    f = t.filter(c.isnull() | ~c.isin(values)) if values else t  # nothing allowed: all out
    agg = f.group_by(value=f[column]).aggregate(n=f.count()).order_by([ibis.desc("n"), "value"])
    return {r["value"]: int(r["n"]) for r in _rows(agg)}


def daily_dropouts(
    t: Any, ts: str, group: str, ratio: float = 0.2, window: int = 7
) -> list[Dropout]:
    """Days on which a group's row count dropped below ``ratio`` x its trailing median.

    Rows are counted per group and calendar day (of ``ts``, a timestamp or date column) on the
    dense grid of every group x every day from the first to the last day present in ``t``
    (missing days count 0). A day is flagged when its count is below ``ratio`` times the
    median of the ``window`` previous days, and only when all ``window`` previous days are on
    the grid. Rows with a NULL ``group`` or ``ts`` are not counted.

    Parameters
    ----------
    t
        An ibis table expression.
    ts
        The event time (timestamp or date) column.
    group
        The grouping column (campaign, integration, ...).
    ratio
        The drop threshold as a share of the trailing median.
    window
        The number of previous days the median is taken over.

    Returns
    -------
    list[Dropout]
        ``(group, day, count, median_prev)`` tuples, sorted by group then day.

    Examples
    --------
    >>> import ibis
    >>> from datetime import date, timedelta
    >>> days = [date(2025, 1, 1) + timedelta(days=i) for i in range(9)]
    >>> counts = [5, 5, 5, 5, 5, 5, 5, 0, 5]  # nothing on Jan 8
    >>> rows = [(d, "c1") for d, k in zip(days, counts) for _ in range(k)]
    >>> t = ibis.memtable({"day": [d for d, _ in rows], "cmp": [c for _, c in rows]})
    >>> daily_dropouts(t, "day", "cmp")
    [Dropout(group='c1', day=datetime.date(2025, 1, 8), rows=0, median_prev=5.0)]
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 day, got {window}")
    col = t[ts]
    day = col if col.type().is_date() else col.date()
    daily = t.group_by(g=t[group], day=day).aggregate(cnt=t.count())
    daily = daily.select("g", "cnt", dn=daily.day.delta(ibis.date(_EPOCH), unit="day"))
    bounds = daily.aggregate(lo=daily.dn.min(), hi=daily.dn.max())
    days = bounds.select(dn=ibis.range(bounds.lo, bounds.hi + 1).unnest())
    grid = daily.filter(daily.g.notnull()).select("g").distinct().cross_join(days)
    dense = grid.left_join(daily, ["g", "dn"]).select("g", "dn", cnt=ibis.coalesce(ibis._.cnt, 0))
    w = ibis.window(group_by="g", order_by="dn", rows=(-window, -1))
    dense = dense.mutate(med=dense.cnt.median().over(w), prev=dense.cnt.count().over(w))
    out = dense.filter((dense.prev == window) & (dense.cnt < ratio * dense.med))
    out = out.select("g", "dn", "cnt", "med").order_by(["g", "dn"])
    return [
        Dropout(r["g"], _EPOCH + timedelta(days=int(r["dn"])), int(r["cnt"]), float(r["med"]))
        for r in _rows(out)
    ]


def delay_quantiles(
    t: Any,
    ts: str,
    click_ts: str,
    group: str,
    qs: Sequence[float] = (0.5, 0.9, 0.99),
) -> dict[Any, tuple[float, ...]]:
    """Quantiles of the delay ``ts - click_ts`` in seconds, per group.

    Parameters
    ----------
    t
        An ibis table expression.
    ts
        The conversion time (timestamp) column.
    click_ts
        The click time (timestamp) column; rows where it is NULL are left out.
    group
        The grouping column (a NULL group is a group of its own, keyed ``None``).
    qs
        The quantile levels, each in [0, 1]; linear interpolation between order statistics.

    Returns
    -------
    dict
        Group -> one delay in seconds per level in ``qs`` (negative when the click is later),
        in group order.

    Examples
    --------
    >>> import ibis
    >>> from datetime import datetime, timedelta
    >>> t0 = datetime(2025, 1, 1)
    >>> t = ibis.memtable({
    ...     "ts": [t0 + timedelta(seconds=s) for s in (10, 20, 40)],
    ...     "click": [t0, t0, t0],
    ...     "cmp": ["a", "a", "a"],
    ... })
    >>> delay_quantiles(t, "ts", "click", "cmp", qs=(0.5, 0.75))
    {'a': (20.0, 30.0)}
    """
    levels = [float(q) for q in qs]
    if not levels or any(not 0.0 <= q <= 1.0 for q in levels):
        raise ValueError(f"quantile levels must be in [0, 1], got {list(qs)}")
    s = t.filter(t[click_ts].notnull())
    delay = s[ts].delta(s[click_ts], unit="microsecond") / 1e6
    agg = s.group_by(g=s[group]).aggregate(q=delay.quantile(levels)).order_by("g")
    out: dict[Any, tuple[float, ...]] = {}
    for r in _rows(agg):
        q = r["q"]
        out[r["g"]] = tuple(math.nan if v is None else float(v) for v in q)
    return out


def funnel_ranks(funnel: Sequence[str]) -> dict[str, int]:
    """Stage -> its position in the funnel (the first one when a stage is listed twice).

    >>> funnel_ranks(["lead", "mql", "sql"])
    {'lead': 0, 'mql': 1, 'sql': 2}
    """
    ranks: dict[str, int] = {}
    for i, s in enumerate(funnel):
        ranks.setdefault(s, i)
    return ranks


def stage_flags(t: Any, entity: str, stage: str, ts: str, ranks: Mapping[str, int]) -> Any:
    """Per entity, how often its lifecycle stage went backwards or was overwritten.

    The one stage-regression rule (the ``stage_regression`` check, lead routing's guardrail
    and :func:`stage_regressions` all use it). The events of each entity whose ``stage`` is
    one of ``ranks`` (and whose ``entity`` is not NULL) are ordered by ``ts`` (NULLs last),
    then stage rank, so events at the same time never count as going backwards. An event
    went *backwards* when its rank is below the highest rank the entity reached before it;
    it *overwrote* the event before it when both have the same (non-NULL) time.

    Parameters
    ----------
    t
        An ibis table expression.
    entity
        The entity column (user, CRM record).
    stage
        The stage column (compared as is: normalise it first if it needs it).
    ts
        The event time column.
    ranks
        Stage -> rank in the funnel (higher = later); stages not listed are ignored.

    Returns
    -------
    ibis table
        ``(entity, backwards, overwritten, last_bad)``: one row per entity with an event of a
        listed stage, the entity column under its own name, the counts of backwards and
        overwriting events, and the time of the last of them (NULL when there is none).

    Examples
    --------
    >>> import ibis
    >>> t = ibis.memtable({
    ...     "u": ["a", "a", "a", "b", "b"],
    ...     "stage": ["sql", "lead", "mql", "lead", "mql"],
    ...     "ts": [1, 2, 3, 1, 1],
    ... })
    >>> f = stage_flags(t, "u", "stage", "ts", {"lead": 1, "mql": 2, "sql": 3})
    >>> f.order_by("u").to_pyarrow().to_pylist()  # doctest: +NORMALIZE_WHITESPACE
    [{'u': 'a', 'backwards': 2, 'overwritten': 0, 'last_bad': 3},
     {'u': 'b', 'backwards': 0, 'overwritten': 1, 'last_bad': 1}]
    """
    if not ranks:
        raise ValueError("no stage ranks: the funnel is empty")
    s = t.filter(t[stage].isin(list(ranks)) & t[entity].notnull()).select(
        e=t[entity], ts=t[ts], r=t[stage].cases(*ranks.items())
    )
    order = [s.ts.asc(nulls_first=False), s.r]
    w = ibis.window(group_by="e", order_by=order)
    s = s.mutate(
        highest=s.r.max().over(ibis.cumulative_window(group_by="e", order_by=order)),
        prev_ts=s.ts.lag().over(w),
    )
    s = s.mutate(prev_highest=s.highest.lag().over(w))
    s = s.mutate(
        backwards=s.prev_highest.notnull() & (s.r < s.prev_highest),
        overwritten=s.prev_ts.notnull() & (s.ts == s.prev_ts),
    )
    bad = s.backwards | s.overwritten
    return s.group_by(s.e.name(entity)).aggregate(
        backwards=s.backwards.sum(),
        overwritten=s.overwritten.sum(),
        last_bad=s.ts.max(where=bad),
    )


def stage_regressions(t: Any, entity: str, stage: str, ts: str, ranks: Mapping[str, int]) -> int:
    """The number of entities whose lifecycle stage went backwards at least once.

    The rule of :func:`stage_flags`: an entity regressed when some event (ordered by time,
    NULLs last, then rank) ranks below the highest stage reached before it, which is the same
    as below the event just before it somewhere in its history.

    Parameters
    ----------
    t
        An ibis table expression.
    entity
        The entity column (user, CRM record).
    stage
        The stage column.
    ts
        The event time column.
    ranks
        Stage -> rank in the funnel (higher = later); stages not listed are ignored.

    Returns
    -------
    int
        The number of distinct entities with at least one regression.

    Examples
    --------
    >>> import ibis
    >>> t = ibis.memtable({
    ...     "u": ["a", "a", "b", "b", "c", "c"],
    ...     "stage": ["mql", "lead", "lead", "mql", "mql", "lead"],
    ...     "ts": [1, 2, 1, 2, 5, 5],
    ... })
    >>> stage_regressions(t, "u", "stage", "ts", {"lead": 1, "mql": 2})
    1
    """
    if len(set(ranks.values())) < 2:
        return 0
    f = stage_flags(t, entity, stage, ts, ranks)
    return int(_scalar(f.filter(f.backwards > 0).count()))
