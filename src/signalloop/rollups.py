"""Per-day aggregates of the raw rows, kept current as rows arrive.

A daily run should read the new day, not the whole history again. A :class:`Rollup` is a
declarative aggregate of one kind's rows grouped by their event day (plus keys); its table
holds one row per group. :func:`refresh` brings it up to date: the days that rows ingested
since the last refresh fall on are aggregated again from the raw rows of those days only (a
late or restated row re-aggregates its own day) and replace the stored rows of those days.
Anything that is not an append by ingest (rows written by hand, rows removed, a changed
definition) rebuilds the table from scratch, so a rollup always equals its aggregate over
all rows (``tests/test_rollups.py`` checks this on daily drops of every simulator shape and
fault).

Readers ask :func:`table` for a rollup: current, or, on a read-only workspace whose rollup is
stale, the same aggregate computed from the raw rows.

>>> sorted(REGISTRY)
['touch_daily', 'touch_hourly']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import duckdb
import ibis

from signalloop.store import Workspace


@dataclass(frozen=True)
class Rollup:
    """One per-day aggregate of a kind.

    Parameters
    ----------
    name
        Its table in the workspace.
    kind
        The kind it aggregates (its rows carry ``_ingest_id``).
    time
        The kind's event-time column; ``day`` is its date.
    build
        ``build(rows, day)`` -> the aggregate of ``rows`` (an ibis table of the kind) grouped
        by ``day`` (the date expression, to be output as column ``day``) and its keys.
    version
        Bump when ``build`` changes: stored tables of an older version are rebuilt.
    description
        What it holds, for the docs.
    """

    name: str
    kind: str
    time: str
    build: Callable[[Any, Any], Any]
    version: int
    description: str


REGISTRY: dict[str, Rollup] = {}


def register(rollup: Rollup) -> Rollup:
    """Add ``rollup`` to :data:`REGISTRY` (by name) and return it."""
    REGISTRY[rollup.name] = rollup
    return rollup


def _touch_daily(t: Any, day: Any) -> Any:
    return t.group_by(
        day=day,
        campaign_id=t.campaign_id,
        platform=t.platform,
        utm_source=t.utm_source,
        utm_medium=t.utm_medium,
    ).aggregate(
        n=t.count(),
        click_ids=t.click_id.notnull().sum(),
        first=t.ts.min(),
        last=t.ts.max(),
    )


def _touch_hourly(t: Any, day: Any) -> Any:
    hour = t.ts.truncate("h")
    return t.group_by(
        day=day, campaign_id=t.campaign_id, hour=hour, on_hour=t.ts == hour
    ).aggregate(n=t.count())


register(
    Rollup(
        "touch_daily",
        "touchpoints",
        "ts",
        _touch_daily,
        2,
        "touchpoints per day, campaign, platform, utm_source and utm_medium: n, click_ids "
        "(with a click id), first and last time",
    )
)
register(
    Rollup(
        "touch_hourly",
        "touchpoints",
        "ts",
        _touch_hourly,
        1,
        "touchpoints per day, campaign and hour (``hour`` truncated; ``on_hour`` when the "
        "time is exactly on it): n. The nowcast's clicks by elapsed hour come from it",
    )
)


def _day(rollup: Rollup, t: Any) -> Any:
    col = t[rollup.time]
    return col if rollup.time == "date" else col.date()


def live(ws: Workspace, name: str) -> Any:
    """The rollup ``name`` computed from the raw rows (what its table must equal)."""
    r = REGISTRY[name]
    t = ws.table(r.kind)
    return r.build(t, _day(r, t))


def table(ws: Workspace, name: str) -> Any:
    """The rollup ``name``, current: its table after :func:`refresh`, else :func:`live`."""
    return ws.table(name) if refresh(ws, name) else live(ws, name)


def _state_key(name: str) -> str:
    return f"rollup:{name}"


def refresh(ws: Workspace, name: str) -> bool:
    """Bring the rollup ``name`` up to date; whether its table is current and may be read.

    Only the days of rows ingested since the last refresh are aggregated again, from the raw
    rows of those days. A read-only workspace, or a write that conflicts with another
    thread's, leaves the table as it is and answers ``False`` when it is stale.
    """
    r = REGISTRY[name]
    if ws.backend != "duckdb":  # computed live there, for now
        return False
    con = ws.con
    have = ws.has_table(name)
    saved = ws.read_meta(_state_key(name))
    now = ws.ingest_state(r.kind)
    if have and saved.get("version") == r.version and saved.get("source") == now:
        return True
    if ws.read_only:
        return False
    src = ws.table(r.kind)
    incremental = (
        have
        and saved.get("version") == r.version
        and "source" in saved
        and ws.appended_since(r.kind, saved["source"])
    )
    days: list[Any] = []
    if incremental:
        new = src.filter(src._ingest_id > saved["source"][1])
        got = new.select(day=_day(r, new)).distinct().day.to_pyarrow().to_pylist()
        days = sorted(d for d in got if d is not None)
        incremental = len(days) == len(got)  # a row without a day: rebuild
    try:
        with ws.transaction():
            if not incremental:
                expr = r.build(src, _day(r, src))
                con.execute(f"CREATE OR REPLACE TABLE {name} AS {ws.ibis.compile(expr)}")
            elif days:
                col = src[r.time]
                lo, hi = days[0], days[-1] + timedelta(days=1)
                if r.time == "date":
                    rows = src.filter((col >= lo) & (col < hi))
                else:
                    rows = src.filter((col >= ibis.literal(lo).cast("timestamp")) & (col < hi))
                rows = rows.filter(_day(r, rows).isin(days))
                expr = r.build(rows, _day(r, rows))
                listed = ", ".join(f"DATE '{d.isoformat()}'" for d in days)
                con.execute(f"DELETE FROM {name} WHERE day IN ({listed})")
                con.execute(f"INSERT INTO {name} {ws.ibis.compile(expr)}")
            state = {
                "version": r.version,
                "source": now,
                "refresh": "incremental" if incremental else "full",
                "days": len(days) if incremental else None,
            }
            ws.write_meta(_state_key(name), state)
    except duckdb.TransactionException:
        return False
    return True


def refresh_all(ws: Workspace) -> dict[str, dict[str, Any]]:
    """Refresh every registered rollup; each one's state (``refresh``: full or incremental,
    ``days`` re-aggregated)."""
    out: dict[str, dict[str, Any]] = {}
    for name in REGISTRY:
        if not refresh(ws, name):
            out[name] = {"refresh": "live"}
            continue
        out[name] = ws.read_meta(_state_key(name))
    return out
