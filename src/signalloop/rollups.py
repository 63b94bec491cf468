"""Per-day (and per-entity) aggregates of the rows, kept current as rows arrive.

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

Some rollups aggregate rows with their attribution (:mod:`signalloop.attribution`): the
conversions with their attributed campaign (``conversion_daily``, ``conversion_kinds``), the
CRM rows with their record's campaign (``crm_daily``). A new touchpoint can move a conversion
or a record to another campaign on any earlier day, so their days come from the
attribution's own log of the days each refresh changed
(:data:`~signalloop.attribution.CHANGES_TABLE`), not from the new rows' days.

A rollup with a ``key`` is kept per entity instead of per day (``crm_record_flags`` and
``crm_record_outcome``, per CRM record): the entities new rows name are derived again from
all their rows. One with ``params`` (the funnel's stage ranks, its won stage) is kept for the
params last read with, and rebuilt for others.

>>> sorted(REGISTRY)  # doctest: +NORMALIZE_WHITESPACE
['conversion_daily', 'conversion_kinds', 'crm_daily', 'crm_record_flags',
 'crm_record_outcome', 'touch_daily', 'touch_hourly']
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
        ``build(rows, day, ws)`` -> the aggregate of ``rows`` (an ibis table of the kind, or
        of ``source``) grouped by ``day`` (the date expression, to be output as column
        ``day``) and its keys; ``ws`` for what else it reads.
    version
        Bump when ``build`` changes: stored tables of an older version are rebuilt.
    description
        What it holds, for the docs.
    derived
        ``None``: the days to aggregate again are those of the rows ingested since. Else the
        attribution log's name for them (``conversions``, ``crm``): the rollup reads
        attributed rows.
    source
        ``source(ws)`` -> the table aggregated (default: the kind's).
    key
        A rollup per entity, not per day: the entities (values of this column) that new
        rows name are aggregated again, from all their rows (``build`` gets ``day=None``).
    params
        What ``build`` also takes, by keyword, with their defaults: a table kept for other
        values (the reader's settings) is rebuilt for them.
    """

    name: str
    kind: str
    time: str
    build: Callable[..., Any]
    version: int
    description: str
    derived: str | None = None
    source: Callable[[Workspace], Any] | None = None
    key: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


REGISTRY: dict[str, Rollup] = {}


def register(rollup: Rollup) -> Rollup:
    """Add ``rollup`` to :data:`REGISTRY` (by name) and return it."""
    REGISTRY[rollup.name] = rollup
    return rollup


def _touch_daily(t: Any, day: Any, ws: Workspace) -> Any:
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


def _touch_hourly(t: Any, day: Any, ws: Workspace) -> Any:
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


def _conversions(ws: Workspace) -> Any:
    from signalloop.attribution import attributed_conversions

    return attributed_conversions(ws)


def _conversion_daily(t: Any, day: Any, ws: Workspace) -> Any:
    matched = t.click_id.notnull() & t.click_first_ts.notnull()
    click_day = t.click_first_ts.date()
    return t.group_by(
        day=day,
        campaign_id=t.attributed_campaign_id,
        source=t.source,
        # the week of the click (the conversion's own time without one)
        click_week=ibis.coalesce(t.click_ts, t.ts).date().truncate("W").cast("date"),
        # a matched click first seen after the conversion's day: that day (else null), so a
        # reader cut at an earlier day knows the click was not seen yet
        click_after=ibis.ifelse(matched & (click_day > day), click_day, ibis.null("date")),
    ).aggregate(n=t.count(), matched=ibis.ifelse(matched, 1, 0).sum().cast("int64"))


register(
    Rollup(
        "conversion_daily",
        "conversions",
        "ts",
        _conversion_daily,
        1,
        "conversions per day, attributed campaign, source, click week and ``click_after`` "
        "(the day a matched click was first seen, when after the conversion's): n, matched "
        "(with a click id whose touchpoint is known). The attribution checks read it",
        derived="conversions",
        source=_conversions,
    )
)


def _conversion_kinds(t: Any, day: Any, ws: Workspace) -> Any:
    return t.group_by(
        day=day, campaign_id=t.attributed_campaign_id, kind=t.kind, source=t.source
    ).aggregate(
        n=t.count(),
        valued=ibis.ifelse(t.value.notnull(), 1, 0).sum().cast("int64"),
        paid=ibis.ifelse(t.value > 0, 1, 0).sum().cast("int64"),
    )


register(
    Rollup(
        "conversion_kinds",
        "conversions",
        "ts",
        _conversion_kinds,
        2,
        "conversions per day, attributed campaign, kind and source: n, valued (with a value), "
        "paid (a value above 0). Label completeness and the feedback depth read it",
        derived="conversions",
        source=_conversions,
    )
)


def _crm_daily(t: Any, day: Any, ws: Workspace) -> Any:
    from signalloop.attribution import crm_record_campaigns

    crm = ws.table("crm")
    # each record and stage of these rows: the first time of that stage over all its rows
    mine = crm.filter(crm.record_id.isin(t.record_id))
    first = mine.group_by(f_record=mine.record_id, f_stage=mine.stage).aggregate(f_ts=mine.ts.min())
    rec = crm_record_campaigns(ws).select(r_record="record_id", r_campaign="campaign_id")
    t = t.mutate(day=day)
    j = t.left_join(first, (t.record_id == first.f_record) & (t.stage == first.f_stage))
    j = j.left_join(rec, j.record_id == rec.r_record)
    return j.group_by(day=j.day, campaign_id=j.r_campaign, stage=j.stage).aggregate(
        n=j.count(), firsts=j.record_id.nunique(where=j.ts == j.f_ts)
    )


register(
    Rollup(
        "crm_daily",
        "crm",
        "ts",
        _crm_daily,
        1,
        "CRM stage rows per day, campaign of their record and stage: n (rows) and firsts "
        "(records whose first row of that stage is on that day)",
        derived="crm",
    )
)


def _record_flags(t: Any, day: Any, ws: Workspace, ranks: Mapping[str, int]) -> Any:
    from signalloop.checks.core import stage_flags

    f = stage_flags(t, "record_id", "stage", "ts", ranks)
    return f.filter((f.backwards > 0) | (f.overwritten > 0))


def _default_ranks() -> dict[str, int]:
    from signalloop.checks.core import funnel_ranks
    from signalloop.config import Settings

    return funnel_ranks(Settings().funnel)


register(
    Rollup(
        "crm_record_flags",
        "crm",
        "ts",
        _record_flags,
        1,
        "per CRM record whose stage went backwards or was overwritten (the "
        "``stage_regression`` rule, for the funnel's ``ranks``): backwards, overwritten, "
        "last_bad",
        key="record_id",
        params={"ranks": _default_ranks()},
    )
)


def _record_outcomes(t: Any, day: Any, ws: Workspace, won: str) -> Any:
    o = record_outcomes(t, won)
    return o.filter(o.won_ts.notnull() | o.lost_ts.notnull())


def record_outcomes(crm: Any, won: str) -> Any:
    """Each CRM record of ``crm`` with how it closed: ``won_ts`` and ``lost_ts``, the first
    time of its ``won`` and ``lost`` stage rows (null: none), and ``amount``, the greatest
    amount of its ``won`` rows. What the nowcast's CRM path reads per record."""
    return crm.group_by("record_id").aggregate(
        won_ts=crm.ts.min(where=crm.stage == won),
        lost_ts=crm.ts.min(where=crm.stage == "lost"),
        amount=crm.amount.max(where=crm.stage == won),
    )


register(
    Rollup(
        "crm_record_outcome",
        "crm",
        "ts",
        _record_outcomes,
        1,
        "per CRM record that was won or lost: won_ts, lost_ts (the first row of each) and "
        "amount (the greatest of its ``won`` rows), for the funnel's last stage ``won``. The "
        "nowcast's CRM path reads it",
        key="record_id",
        params={"won": "won"},
    )
)


def _day(rollup: Rollup, t: Any) -> Any:
    col = t[rollup.time]
    return col if rollup.time == "date" else col.date()


def _source(rollup: Rollup, ws: Workspace) -> Any:
    return rollup.source(ws) if rollup.source is not None else ws.table(rollup.kind)


def _build(r: Rollup, t: Any, ws: Workspace, params: Mapping[str, Any]) -> Any:
    return r.build(t, None if r.key else _day(r, t), ws, **{**r.params, **params})


def live(ws: Workspace, name: str, **params: Any) -> Any:
    """The rollup ``name`` computed from the raw rows (what its table must equal)."""
    r = REGISTRY[name]
    return _build(r, _source(r, ws), ws, params)


def table(ws: Workspace, name: str, **params: Any) -> Any:
    """The rollup ``name``, current: its table after :func:`refresh`, else :func:`live`."""
    return ws.table(name) if refresh(ws, name, **params) else live(ws, name, **params)


def _state_key(name: str) -> str:
    return f"rollup:{name}"


def refresh(ws: Workspace, name: str, **params: Any) -> bool:
    """Bring the rollup ``name`` up to date; whether its table is current and may be read.

    Only the days of rows ingested since the last refresh are aggregated again, from the raw
    rows of those days (for a rollup per entity, the entities they name, from all their
    rows). A read-only workspace, or a write that conflicts with another thread's, leaves
    the table as it is and answers ``False`` when it is stale. ``params`` (the rollup's
    :attr:`Rollup.params`) other than the stored table's rebuild it.
    """
    r = REGISTRY[name]
    if ws.backend != "duckdb":  # computed live there, for now
        return False
    con = ws.con
    have = ws.has_table(name)
    saved = ws.read_meta(_state_key(name))
    params = json.loads(json.dumps({**r.params, **params}))  # (as stored)
    if saved.get("params", {}) != params:
        have = False
    now: Any
    if r.derived is not None:
        from signalloop.attribution import ATTRIBUTION_STATE, refresh_attribution

        if not refresh_attribution(ws):  # not current (nor can it be): read live
            return False
        att = ws.read_meta(ATTRIBUTION_STATE)
        now = {"full_id": att.get("full_id"), "gen": att.get("gen")}
    else:
        now = ws.ingest_state(r.kind)
    if have and saved.get("version") == r.version and saved.get("source") == now:
        return True
    if ws.read_only:
        return False
    src = _source(r, ws)
    incremental = have and saved.get("version") == r.version and "source" in saved
    days: list[Any] = []
    if incremental and r.derived is not None:
        from signalloop.attribution import changed_days

        # (the log goes back to the attribution's last full refresh, no further)
        full_id = now["full_id"]
        incremental = full_id is not None and saved["source"].get("full_id") == full_id
        if incremental:
            days = changed_days(ws, r.derived, int(saved["source"]["gen"]))
    elif incremental and r.key:
        incremental = ws.appended_since(r.kind, saved["source"])
    elif incremental:
        incremental = ws.appended_since(r.kind, saved["source"])
        if incremental:
            new = src.filter(src._ingest_id > saved["source"][1])
            got = new.select(day=_day(r, new)).distinct().day.to_pyarrow().to_pylist()
            days = sorted(d for d in got if d is not None)
            incremental = len(days) == len(got)  # a row without a day: rebuild
    try:
        with ws.transaction():
            keys = 0
            if not incremental:
                expr = _build(r, src, ws, params)
                # typed as the expression is (a table made AS SELECT keeps DuckDB's types: a
                # week truncated to a timestamp, a sum of integers a decimal)
                types = ws.ibis.compiler.type_mapper
                cols = ", ".join(f'"{c}" {types.to_string(t)}' for c, t in expr.schema().items())
                con.execute(f"CREATE OR REPLACE TABLE {name} ({cols})")
                con.execute(f"INSERT INTO {name} {ws.ibis.compile(expr)}")
            elif r.key:
                # the entities new rows name, then all their rows
                new = src.filter(src._ingest_id > saved["source"][1])
                named = ws.temp_table("_rollup_keys", new.select(k=new[r.key]).distinct())
                keys = int(named.count().execute())
                expr = _build(r, src.filter(src[r.key].isin(named.k)), ws, params)
                con.execute(f'DELETE FROM {name} WHERE "{r.key}" IN (SELECT k FROM _rollup_keys)')
                con.execute(f"INSERT INTO {name} {ws.ibis.compile(expr)}")
                con.execute("DROP TABLE IF EXISTS _rollup_keys")
            elif days:
                col = src[r.time]
                lo, hi = days[0], days[-1] + timedelta(days=1)
                if r.time == "date":
                    rows = src.filter((col >= lo) & (col < hi))
                else:
                    rows = src.filter((col >= ibis.literal(lo).cast("timestamp")) & (col < hi))
                rows = rows.filter(_day(r, rows).isin(days))
                expr = _build(r, rows, ws, params)
                listed = ", ".join(f"DATE '{d.isoformat()}'" for d in days)
                con.execute(f"DELETE FROM {name} WHERE day IN ({listed})")
                con.execute(f"INSERT INTO {name} {ws.ibis.compile(expr)}")
            state = {
                "version": r.version,
                "source": now,
                "refresh": "incremental" if incremental else "full",
                "days": len(days) if incremental and not r.key else None,
                **({"keys": keys} if r.key and incremental else {}),
                **({"params": params} if params else {}),
            }
            ws.write_meta(_state_key(name), state)
    except duckdb.TransactionException:
        return False
    return True


def refresh_all(ws: Workspace) -> dict[str, dict[str, Any]]:
    """Refresh every registered rollup without params (those with params are refreshed for
    the params they are read with); each one's state (``refresh``: ``full``,
    ``incremental`` with the ``days`` re-aggregated, ``unchanged`` when nothing it reads
    changed, or ``live`` when it cannot be stored)."""
    out: dict[str, dict[str, Any]] = {}
    for name, r in REGISTRY.items():
        if r.params:
            continue
        if ws.backend != "duckdb":  # (computed live there: nothing stored to read)
            out[name] = {"refresh": "live"}
            continue
        before = ws.read_meta(_state_key(name))
        if not refresh(ws, name):
            out[name] = {"refresh": "live"}
            continue
        out[name] = state_change(before, ws.read_meta(_state_key(name)))
    return out


def read_states(ws: Workspace) -> dict[str, dict[str, Any]]:
    """The stored state of every rollup with params (refreshed where they are read: see
    :func:`refresh_all`), by name: an empty dict for one never stored, ``live`` on a
    backend where none is stored."""
    if ws.backend != "duckdb":
        return {name: {"refresh": "live"} for name, r in REGISTRY.items() if r.params}
    return {name: ws.read_meta(_state_key(name)) for name, r in REGISTRY.items() if r.params}


def state_change(before: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, Any]:
    """What a stored aggregate's state (a rollup's, the attribution's) says was done to it
    between ``before`` and ``now``: the new state, ``unchanged``, ``live`` (nothing stored on
    this backend), or ``not read`` (never stored: no step read it, as the CRM outcomes of an
    account without CRM rows).

    >>> state_change({"refresh": "full"}, {"refresh": "full"})
    {'refresh': 'unchanged'}
    >>> state_change({}, {"refresh": "incremental", "keys": 3})
    {'refresh': 'incremental', 'keys': 3}
    >>> state_change({}, {})
    {'refresh': 'not read'}
    """
    if not now:
        return {"refresh": "not read"}
    if now.get("refresh") == "live":
        return {"refresh": "live"}
    return {"refresh": "unchanged"} if now == before else dict(now)


def what_changed(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """:func:`state_change` of each rollup's :func:`read_states`, from ``before`` to
    ``after`` a run's reads."""
    return {name: state_change(before.get(name, {}), now) for name, now in after.items()}
