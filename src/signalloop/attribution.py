"""Attribution and the per-campaign summary, as ibis expressions over the workspace.

The contract's rule: a conversion belongs to a campaign by its own ``campaign_id``, else by
``click_id`` to the touchpoint with that click, else by ``user_id`` to that user's last
touchpoint at or before the conversion. Conversions none of these reach stay unattributed
(and are counted, never dropped).
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import duckdb
import ibis

from signalloop import touchindex
from signalloop.store import Workspace
from signalloop.ties import first_by, last_by
from signalloop.touchindex import TouchIndex

#: The stored attribution: one row per conversion, its own columns and :data:`STORED`'s
#: (``attributed_campaign_id``, ``attributed_by`` ...), kept current by
#: :func:`refresh_attribution`. Whole rows, so that reading the attributed conversions is one
#: scan of one table, not a join of the conversions with their attribution (that join, or a
#: copy of it held per run, cost a run about 1 s at a year of 100 campaigns, and grew with
#: the history).
ATTRIBUTION_TABLE = "conversion_attribution"
#: Bumped when the rule changes, so every stored attribution is rebuilt once.
ATTRIBUTION_VERSION = 7
#: Where the stored attribution's state is kept (``meta``): its version, what it last saw of
#: each kind, ``refresh`` (full or incremental), ``gen`` and ``full_id`` (see CHANGES_TABLE).
ATTRIBUTION_STATE = "attribution_state"
#: The stored columns (:func:`attribute`'s, per ``conversion_id``).
STORED = (
    "conversion_id",
    "attributed_campaign_id",
    "attributed_by",
    "click_first_ts",
    "click_adset_id",
    "click_creative_id",
    "link_campaign_id",
    "link_click",
    "link_click_first",
    "link_on_campaign",
)
#: The stored campaign of each CRM record (:func:`crm_record_campaigns` without a cutoff):
#: ``record_id``, ``campaign_id``, ``first_ts``, and the parts it is made of that hold at any
#: cutoff the record exists at: its ``user_id`` and ``touch_campaign`` (the campaign of the
#: user's last touchpoint at or before ``first_ts``); refreshed with the attribution.
RECORDS_TABLE = "crm_record_campaign"
#: The days whose attributed rows each incremental refresh changed: ``(gen, what, day)``,
#: ``what`` being ``conversions`` (the days of the conversions attributed again) or ``crm``
#: (the days of the CRM rows whose record's campaign changed, and of every row sharing a
#: record and stage with a new row). The aggregates of attributed rows
#: (:mod:`signalloop.rollups`) re-aggregate these days only. Emptied by a full refresh, which
#: gets a new ``full_id`` in the state: an aggregate kept from before it is rebuilt whole.
CHANGES_TABLE = "attribution_days"
_READS = ("conversions", "touchpoints", "crm")


def attributed_conversions(ws: Workspace) -> Any:
    """Every conversion with ``attributed_campaign_id`` and ``attributed_by``.

    ``attributed_by`` is ``campaign_id``, ``click_id``, ``user_id`` or null (unattributed).
    The attribution is read from the workspace's :data:`ATTRIBUTION_TABLE`, brought up to date
    first (:func:`refresh_attribution`, which only attributes what new rows touch); a read-only
    workspace whose table is not current attributes every conversion on the fly instead, with
    the same result.
    """
    if refresh_attribution(ws):
        return _stored_conversions(ws)
    # (narrow: the touchpoints of the conversions' click ids and users, not every one)
    live = attribute(ws, ws.table("conversions"), narrow=True)
    return _held(ws, "conversions", live) if ws.backend != "duckdb" else live


def _state(ws: Workspace) -> str:
    """The stored attribution's state, as text: what a copy or a derived table is kept by."""
    return json.dumps(ws.read_meta(ATTRIBUTION_STATE), sort_keys=True)


#: Record campaigns a backend workspace holds at once, one per cutoff (:func:`_held`): the run's
#: own and the signal history's weekly backfills, which come one after another.
HELD_CUTOFFS = 3


def _held(ws: Workspace, what: Any, expr: Any) -> Any:
    """``expr`` computed once on a backend (PostgreSQL, Spark) while its data stays the same.

    There the attribution is not stored (:func:`refresh_attribution`), and every query that
    reads it would attribute every conversion again: on Spark, a join of the conversions with
    the whole click history per query, minutes each at 1,000 campaigns. So it is held as ibis
    caches a table (a temporary table on PostgreSQL, a persisted DataFrame on Spark, computed by
    the first query that reads it) for as long as the workspace's ingest log says nothing was
    ingested since; then everything held is let go. Record campaigns are held for the last
    :data:`HELD_CUTOFFS` cutoffs.
    """
    log = ws.table("ingest_log")
    state = log.aggregate(n=log.count(), last=log.ingest_id.max()).to_pyarrow().to_pylist()[0]
    memo: dict[Any, Any] = ws.__dict__.setdefault("_held", {})
    if memo.get("state", (None,))[0] != state:
        for key, (_, release) in list(memo.items()):
            if key != "state":
                release()
        memo.clear()
        memo["state"] = (state, None)
    if what not in memo:
        cuts = [k for k in memo if isinstance(k, tuple)]
        if isinstance(what, tuple) and len(cuts) >= HELD_CUTOFFS:
            memo.pop(cuts[0])[1]()
        memo[what] = hold_expr(ws.ibis, expr)
    return memo[what][0]


_HELD_IDS = itertools.count(1)


def hold_expr(client: Any, expr: Any) -> tuple[Any, Any]:
    """``expr`` held on ``client``, with what lets it go. DuckDB and PostgreSQL: a temporary
    table of a name of ours, dropped when let go (on PostgreSQL made in SQL: ibis 12 would
    make its JSON columns text, which the JSON columns of the tables it later joins refuse);
    elsewhere ibis's ``cache()``."""
    if client.name not in ("duckdb", "postgres"):
        held = expr.cache()
        return held, held.release
    name = f"_signalloop_held_{next(_HELD_IDS)}"
    if client.name == "duckdb":
        # ibis's create_table (created, then filled from the query: what cache() does too,
        # which would drop it only once garbage-collected). One CREATE TABLE AS took as long
        # at 1,000 campaigns (1.5M conversions: 1.07-1.22 s against 1.07-1.34 s)
        client.create_table(name, expr, temp=True)
    else:
        client.raw_sql(f'CREATE TEMP TABLE "{name}" AS {client.compile(expr)}').close()
    return client.table(name), lambda: client.drop_table(name, force=True)


def _stored_conversions(ws: Workspace) -> Any:
    """The stored attributed conversions: the conversions' columns, then :data:`STORED`'s."""
    a = ws.table(ATTRIBUTION_TABLE)
    return a.select(*_columns(ws))


def _columns(ws: Workspace) -> list[str]:
    """What :data:`ATTRIBUTION_TABLE` holds: the conversions' columns, then the attribution's."""
    return [*ws.table("conversions").columns, *STORED[1:]]


def attribute(ws: Workspace, conv: Any, *, narrow: bool = False, touchpoints: Any = None) -> Any:
    """``conv`` (conversions rows) with ``attributed_campaign_id`` and ``attributed_by``,
    computed from the touchpoints: the contract's rule, as one ibis expression.

    Also what the conversion's click id finds in the touchpoints (null without a match):
    ``click_first_ts``, the click's first touchpoint time, and ``click_adset_id`` and
    ``click_creative_id``, the ad set and creative of its first touchpoint that has one. A
    check cut at an as-of date counts the click as known when ``click_first_ts`` is before
    its cutoff (:func:`click_time`).

    And the nowcast's link (:func:`signalloop.nowcast._link_clicks`, which reads it through
    :func:`linked`): ``link_campaign_id`` and ``link_click``, the campaign and click time it
    gives, with ``link_click_first`` and ``link_on_campaign``, the first time of the click's
    touchpoints with a campaign and of those on the conversion's own campaign (the link is
    the same at a cutoff when both are before it or null).

    ``narrow`` reads only the touchpoints of ``conv``'s click ids and users (a semi-join
    first), which pays when ``conv`` is a few new rows against a long history.
    ``touchpoints``: a table holding (at least) those touchpoints, to read instead of the
    workspace's (with their ``click_id``, ``user_id``, ``campaign_id``, ``ts``,
    ``adset_id`` and ``creative_id``).
    """
    tp = ws.table("touchpoints") if touchpoints is None else touchpoints
    tp_click = tp.filter(tp.click_id.notnull())
    tp_user = tp.filter(tp.user_id.notnull() & tp.campaign_id.notnull())
    if narrow:
        tp_click = tp_click.filter(tp_click.click_id.isin(conv.click_id))
        tp_user = tp_user.filter(tp_user.user_id.isin(conv.user_id))
    t = tp_click
    clicks = t.group_by(t.click_id).aggregate(
        click_campaign=first_by(t.campaign_id, t.ts),
        click_first_ts=t.ts.min(),
        click_adset_id=first_by(t.adset_id, t.ts),
        click_creative_id=first_by(t.creative_id, t.ts),
        link_click_first=t.ts.min(where=t.campaign_id.notnull()),
    )
    tc = t.filter(t.campaign_id.notnull())
    on_campaign = tc.group_by(o_click_id=tc.click_id, o_campaign=tc.campaign_id).aggregate(
        link_on_campaign=tc.ts.min()
    )
    touches = tp_user.select(
        touch_user=tp_user.user_id, touch_ts=tp_user.ts, touch_campaign=tp_user.campaign_id
    )
    c = conv.mutate(_row=ibis.row_number())
    by_click = c.left_join(clicks, c.click_id == clicks.click_id).select(
        c._row,
        clicks.click_campaign,
        clicks.click_first_ts,
        clicks.click_adset_id,
        clicks.click_creative_id,
        clicks.link_click_first,
    )
    last_touch = (
        c.select(c._row, c.user_id, c.ts)
        .join(touches, (c.user_id == touches.touch_user) & (touches.touch_ts <= c.ts))
        .group_by("_row")
        .aggregate(user_campaign=last_by(touches.touch_campaign, touches.touch_ts))
    )
    out = (
        c.left_join(by_click, c._row == by_click._row)
        .drop("_row_right")
        .left_join(last_touch, c._row == last_touch._row)
        .drop("_row_right")
    )
    campaign = ibis.coalesce(out.campaign_id, out.click_campaign, out.user_campaign)
    by = ibis.cases(
        (out.campaign_id.notnull(), "campaign_id"),
        (out.click_campaign.notnull(), "click_id"),
        (out.user_campaign.notnull(), "user_id"),
        else_=ibis.null().cast("string"),
    )
    out = out.left_join(
        on_campaign,
        (out.click_id == on_campaign.o_click_id) & (out.campaign_id == on_campaign.o_campaign),
    ).drop("o_click_id", "o_campaign")
    # the nowcast's link: the click's campaign and time, else the user's last touch (on the
    # conversion's campaign when it has one) at or before the conversion
    l_campaign = ibis.coalesce(out.campaign_id, out.click_campaign)
    touch = ibis.ifelse(out.campaign_id.isnull(), out.link_click_first, out.link_on_campaign)
    l_click = ibis.coalesce(out.click_ts, touch)
    out = out.mutate(_l_campaign=l_campaign, _l_click=l_click)
    rest = out.filter(out._l_campaign.isnull() | out._l_click.isnull())
    user_link = (
        rest.select(rest._row, rest.user_id, rest.ts, rest._l_campaign)
        .join(
            touches,
            (rest.user_id == touches.touch_user)
            & (touches.touch_ts <= rest.ts)
            & (rest._l_campaign.isnull() | (touches.touch_campaign == rest._l_campaign)),
        )
        .group_by(u_row="_row")
        .aggregate(
            u_campaign=last_by(touches.touch_campaign, touches.touch_ts),
            u_ts=touches.touch_ts.max(),
        )
    )
    out = out.left_join(user_link, out._row == user_link.u_row)
    return out.mutate(
        attributed_campaign_id=campaign,
        attributed_by=by,
        link_campaign_id=ibis.coalesce(out._l_campaign, out.u_campaign),
        link_click=ibis.coalesce(out._l_click, out.u_ts),
    ).drop(
        "_row",
        "click_campaign",
        "user_campaign",
        "_l_campaign",
        "_l_click",
        "u_row",
        "u_campaign",
        "u_ts",
    )


def click_time(conv: Any, cutoff: Any) -> Any:
    """The first touchpoint time of each conversion's click, as known before ``cutoff``
    (null when the click has no touchpoint yet): what joining the touchpoints cut at
    ``cutoff`` by ``click_id`` and taking the earliest gives."""
    return ibis.ifelse(conv.click_first_ts < cutoff, conv.click_first_ts, ibis.null())


def refresh_attribution(ws: Workspace, also: Callable[[], Any] | None = None) -> bool:
    """Bring :data:`ATTRIBUTION_TABLE` up to date; whether it is current (and may be read).

    The first call attributes every conversion. Later calls attribute only what rows
    ingested since could change: new conversions, stored ones whose click id a new touchpoint
    carries, and stored ones whose user has a new touchpoint (with a campaign) at or before
    them; then the CRM records those rows reach. Anything else (rows not from an ingest, rows
    gone, a new rule version) attributes everything again, so the table always equals
    :func:`attribute` over all conversions
    (``tests/test_attribution_incremental.py`` checks it on every simulator shape and fault).

    A read-only workspace, conversion ids that are not unique, or a write that conflicts with
    another thread's leave the table as it is and answer ``False``: callers then attribute on
    the fly. So does a workspace on another backend than DuckDB (for now).

    ``also``: other keys to read in the same pass over the history's touchpoints, asked for
    (called) only when an incremental refresh makes one: it gives ``None`` or a
    :class:`~signalloop.models.recent.Prefetch`, whose ``users`` and ``ids`` columns are
    added to the pass's and whose ``take`` gets the rows read, with ``touch_id``. The
    attribution reads only its own keys' rows of them.
    """
    if ws.backend != "duckdb":
        return False
    con = ws.con
    have = ws.has_table(ATTRIBUTION_TABLE)
    saved = ws.read_meta(ATTRIBUTION_STATE)
    now = {kind: ws.ingest_state(kind) for kind in _READS}
    if have and saved.get("version") == ATTRIBUTION_VERSION and saved.get("tables") == now:
        if "full_id" not in saved and saved.get("unique") and not ws.read_only:
            # stored before the log of changed days: start it (its aggregates rebuild once)
            try:
                with ws.transaction():
                    con.execute(f"CREATE OR REPLACE TABLE {CHANGES_TABLE} ({_CHANGES_DDL})")
                    ws.write_meta(
                        ATTRIBUTION_STATE, {**saved, "gen": 0, "full_id": uuid.uuid4().hex}
                    )
            except duckdb.TransactionException:
                pass
        return bool(saved.get("unique"))
    if ws.read_only:
        return False
    appended = bool(
        have
        and saved.get("unique")
        and saved.get("version") == ATTRIBUTION_VERSION
        and all(ws.appended_since(kind, saved["tables"][kind]) for kind in _READS)
    )
    if appended:
        # the stored ids were unique: only the new rows can repeat one, among themselves or
        # against a stored row (a scan of the new rows and a semi-join, not a distinct count
        # of every conversion id: 0.12-0.22 s at 1,000 campaigns and 89 days, growing)
        seen = int(saved["tables"]["conversions"][1])
        dup = con.execute(
            "SELECT (SELECT count(*) <> count(DISTINCT conversion_id) FROM conversions "
            "WHERE _ingest_id > $seen) OR EXISTS (SELECT 1 FROM conversions o SEMI JOIN "
            "(SELECT conversion_id FROM conversions WHERE _ingest_id > $seen) n "
            "ON o.conversion_id = n.conversion_id WHERE coalesce(o._ingest_id <= $seen, true))",
            {"seen": seen},
        ).fetchone()
    else:
        dup = con.execute(
            "SELECT count(*) <> count(DISTINCT conversion_id) FROM conversions"
        ).fetchone()
    unique = not (dup and dup[0])
    full = not (appended and unique)
    # the touchpoints by user and click id, kept current beside the workspace file: built
    # with a full refresh, a run added with each incremental one, which reads its users' and
    # clicks' touchpoints there instead of scanning the history's ids
    index, index_state = _touch_index(ws, now["touchpoints"]) if unique else (None, None)
    # each write is a generation; a full one starts a new log (see CHANGES_TABLE)
    gen = int(saved.get("gen", 0)) + 1
    full_id = str(saved.get("full_id") or uuid.uuid4().hex)
    try:
        with ws.transaction():
            if not unique:
                con.execute(f"DROP TABLE IF EXISTS {ATTRIBUTION_TABLE}")
                con.execute(f"DROP TABLE IF EXISTS {RECORDS_TABLE}")
            elif full:
                # (narrow: only the touchpoints of the conversions' click ids and users are
                # grouped, not every click of the history: 32M touchpoints, 75 -> 15 s)
                expr = attribute(ws, ws.table("conversions"), narrow=True).select(*_columns(ws))
                con.execute(
                    f"CREATE OR REPLACE TABLE {ATTRIBUTION_TABLE} AS {ws.ibis.compile(expr)}"
                )
                recs = _record_campaigns(ws, conversions=_stored_conversions(ws), parts=True)
                con.execute(f"CREATE OR REPLACE TABLE {RECORDS_TABLE} AS {ws.ibis.compile(recs)}")
                con.execute(f"CREATE OR REPLACE TABLE {CHANGES_TABLE} ({_CHANGES_DDL})")
                full_id = uuid.uuid4().hex
            else:
                # the conversions to attribute again, worked out once (four statements below
                # read them; each would otherwise scan the history's click and user ids)
                ids = _touched(
                    ws, saved["tables"]["conversions"][1], saved["tables"]["touchpoints"][1]
                )
                touched = ws.temp_table(
                    "_attribution_touched", ids.name("conversion_id").as_table()
                ).conversion_id
                conv = ws.table("conversions")
                conv = conv.filter(conv.conversion_id.isin(touched))
                # the CRM records to derive again, worked out once too
                records = ws.temp_table(
                    "_attribution_records", _records_to_redo(ws, saved["tables"], touched)
                )
                crm = ws.table("crm")
                users = conv.select(u=conv.user_id).union(
                    crm.filter(crm.record_id.isin(records.record_id)).select(u=crm.user_id)
                )
                # the touchpoints of their clicks and users and of the records' users, read
                # in one pass for both (the attribution reads the users' twice, the records
                # theirs once: each keeps its own, see ``narrow``): from the touch index
                # when there is one, else from the history's ids
                clicks = conv.select(k=conv.click_id)
                extra = also() if also is not None else None
                if extra is not None:  # (another reader's keys, read in the same pass)
                    users = users.union(extra.users.name("u").as_table())
                    clicks = clicks.union(extra.ids.name("k").as_table())
                users = ws.temp_table("_attribution_users", users)
                clicks = ws.temp_table("_attribution_clicks", clicks)
                tp, damaged = _touches_of(ws, index, users, clicks)
                index_state = damaged or index_state
                near = tp.filter(tp.click_id.isin(clicks.k) | tp.user_id.isin(users.u))
                cols = ("click_id", "user_id", "campaign_id", "ts", "adset_id", "creative_id")
                near = ws.temp_table("_attribution_tp", near.select("touch_id", *cols))
                if extra is not None:
                    extra.take(near)
                redo = attribute(ws, conv, narrow=True, touchpoints=near).select(*_columns(ws))
                con.execute(
                    f"DELETE FROM {ATTRIBUTION_TABLE} WHERE conversion_id IN "
                    f"({ws.ibis.compile(touched)})"
                )
                con.execute(f"INSERT INTO {ATTRIBUTION_TABLE} {ws.ibis.compile(redo)}")
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE _attribution_before AS SELECT record_id, "
                    f"campaign_id FROM {RECORDS_TABLE} WHERE record_id IN "
                    "(SELECT record_id FROM _attribution_records)"
                )
                _refresh_records(ws, records, near)
                if not ws.has_table(CHANGES_TABLE) or "full_id" not in saved:
                    # (a workspace from before the log: its aggregates are rebuilt once)
                    con.execute(f"CREATE OR REPLACE TABLE {CHANGES_TABLE} ({_CHANGES_DDL})")
                    full_id = uuid.uuid4().hex
                _log_changes(ws, gen, saved["tables"]["crm"][1])
                for temp in (
                    "_attribution_touched",
                    "_attribution_records",
                    "_attribution_tp",
                    "_attribution_before",
                    "_attribution_users",
                    "_attribution_clicks",
                    "_attribution_cand",
                ):
                    con.execute(f"DROP TABLE IF EXISTS {temp}")
            state = {
                "version": ATTRIBUTION_VERSION,
                "tables": now,
                "unique": unique,
                "refresh": "full" if full else "incremental",
                "gen": gen,
                "full_id": full_id,
                "touch_index": index_state,
            }
            ws.write_meta(ATTRIBUTION_STATE, state)
    except duckdb.TransactionException:
        return False
    return unique


_CHANGES_DDL = "gen BIGINT, what VARCHAR, day DATE"


def _touch_index(ws: Workspace, state: list[int]) -> tuple[TouchIndex | None, str | None]:
    """The workspace's touch index brought up to the touchpoints in ``state``, and what that
    took (``current``, ``appended``, ``built``), or why there is none (``None`` for a
    workspace without a file; ``unavailable: ...`` when it could not be written: the
    attribution then reads the history's ids, as without it)."""
    index = touchindex.for_workspace(ws)
    if index is None:
        return None, None
    try:
        return index, index.sync(ws.con, state)
    except touchindex.DAMAGED as e:  # (a full disk, a folder not ours: slower, not wrong)
        return None, f"unavailable: {type(e).__name__}: {e}"


def _touches_of(
    ws: Workspace, index: TouchIndex | None, users: Any, clicks: Any
) -> tuple[Any, str | None]:
    """The touchpoints to filter by ``users.u`` and ``clicks.k``: the touch index's candidates
    for those keys (a small temporary table) or, without an index, the whole table; and what
    went wrong with the index, if anything (a run damaged on disk: the whole table is read,
    and the index is built again by the next refresh)."""
    if index is None:
        return ws.table("touchpoints"), None
    try:
        cand = index.lookup(
            ws.con,
            user_sql=ws.ibis.compile(users.select("u")),
            click_sql=ws.ibis.compile(clicks.select("k")),
        )
    except touchindex.DAMAGED as e:
        index.forget()
        return ws.table("touchpoints"), f"damaged: {type(e).__name__}, the table read instead"
    ws.con.register("_touch_candidates", cand)
    try:
        ws.con.execute(
            "CREATE OR REPLACE TEMP TABLE _attribution_cand AS SELECT * FROM _touch_candidates"
        )
    finally:
        ws.con.unregister("_touch_candidates")
    return ws.table("_attribution_cand"), None


def _log_changes(ws: Workspace, gen: int, crm_seen: int) -> None:
    """Append to :data:`CHANGES_TABLE` the days this incremental refresh changed.

    Conversions: the days of those attributed again (``_attribution_touched``). CRM rows: the
    days of every row of a record whose stored campaign changed or is new (from
    ``_attribution_before``), and of every row sharing a record and stage with a row ingested
    since ``crm_seen`` (the new rows, and the rows whose record's first of that stage they
    may have moved)."""
    ws.con.execute(
        f"INSERT INTO {CHANGES_TABLE} SELECT DISTINCT {gen}, 'conversions', CAST(ts AS DATE) "
        "FROM conversions WHERE ts IS NOT NULL AND conversion_id IN "
        "(SELECT conversion_id FROM _attribution_touched)"
    )
    ws.con.execute(
        f"""INSERT INTO {CHANGES_TABLE}
        WITH moved AS (
            SELECT r.record_id FROM _attribution_records r
            LEFT JOIN _attribution_before b ON b.record_id = r.record_id
            LEFT JOIN {RECORDS_TABLE} a ON a.record_id = r.record_id
            WHERE b.record_id IS NULL OR b.campaign_id IS DISTINCT FROM a.campaign_id
        ), fresh AS (
            SELECT DISTINCT record_id, stage FROM crm WHERE _ingest_id > {int(crm_seen)}
        )
        SELECT {gen}, 'crm', day FROM (
            -- (two semi-joins, each one hashed pass, not one OR tested row by row)
            SELECT CAST(c.ts AS DATE) AS day FROM crm c
            SEMI JOIN moved m ON c.record_id = m.record_id
            UNION
            SELECT CAST(c.ts AS DATE) AS day FROM crm c
            SEMI JOIN fresh f ON c.record_id = f.record_id
                AND c.stage IS NOT DISTINCT FROM f.stage
        ) WHERE day IS NOT NULL"""
    )


def changed_days(ws: Workspace, what: str, since: int) -> list[Any]:
    """The days :data:`CHANGES_TABLE` lists for ``what`` after generation ``since``."""
    rows = ws.con.execute(
        f"SELECT DISTINCT day FROM {CHANGES_TABLE} WHERE what = ? AND gen > ? ORDER BY day",
        [what, since],
    ).fetchall()
    return [r[0] for r in rows]


def _touched(ws: Workspace, conv_seen: int, tp_seen: int) -> Any:
    """The ``conversion_id`` of every conversion rows ingested after the given ids may
    re-attribute (an ibis column expression)."""
    conv = ws.table("conversions")
    tp = ws.table("touchpoints")
    new_tp = tp.filter((tp._ingest_id > tp_seen) & tp.campaign_id.notnull())
    new_conv = conv.filter(conv._ingest_id > conv_seen).select("conversion_id")
    # a new touch of a known click can change its first time and ad set for any conversion
    new_clicks = tp.filter((tp._ingest_id > tp_seen) & tp.click_id.notnull()).click_id
    by_click = conv.filter(conv.click_id.isin(new_clicks)).select("conversion_id")
    users = (
        new_tp.filter(new_tp.user_id.notnull())
        .group_by(u=new_tp.user_id)
        .aggregate(first=new_tp.ts.min())
    )
    # any conversion: the nowcast's link goes to a user's last touch on the conversion's own
    # campaign when its click says nothing
    by_user = conv.join(users, (conv.user_id == users.u) & (conv.ts >= users.first)).select(
        "conversion_id"
    )
    return new_conv.union(by_click).union(by_user).conversion_id


def _records_to_redo(ws: Workspace, seen: dict[str, list[int]], touched: Any) -> Any:
    """The ``record_id`` of every CRM record whose stored campaign new rows could change:
    records with new stage rows; records begun at or after a new touchpoint of their user
    (which may now be the last touch before the record began); and records begun at most an
    hour before a re-attributed conversion of their user (which may be, or have moved, the
    lead that created the record). A record begun before all of those keeps what it links
    to. An ibis table of distinct ids."""
    crm, tp = ws.table("crm"), ws.table("touchpoints")
    conv = ws.table("conversions")
    new_tp = tp.filter(
        (tp._ingest_id > seen["touchpoints"][1]) & tp.campaign_id.notnull() & tp.user_id.notnull()
    )
    moved = conv.filter(conv.conversion_id.isin(touched) & conv.user_id.notnull())
    # per user, the earliest first time of a record these rows can reach
    reach = (
        new_tp.select(u=new_tp.user_id, t=new_tp.ts)
        .union(moved.select(u=moved.user_id, t=moved.ts - ibis.interval(hours=1)))
        .group_by("u")
        .aggregate(t=lambda r: r.t.min())
    )
    first = crm.group_by(f_rec=crm.record_id).aggregate(f_ts=crm.ts.min())
    mine = crm.join(reach, crm.user_id == reach.u).select(r_rec=crm.record_id, r_t=reach.t)
    reached = mine.join(first, mine.r_rec == first.f_rec).filter(lambda j: j.f_ts >= j.r_t)
    return (
        crm.filter(crm._ingest_id > seen["crm"][1])
        .select("record_id")
        .union(reached.select(record_id=reached.r_rec))
        .distinct()
    )


def _refresh_records(ws: Workspace, records: Any, touchpoints: Any) -> None:
    """Re-derive the stored campaign of the CRM records in ``records`` (a table of
    ``record_id``), from ``touchpoints`` (holding at least their users' touchpoints)."""
    crm = ws.table("crm")
    redo = _record_campaigns(
        ws,
        crm=crm.filter(crm.record_id.isin(records.record_id)),
        conversions=_stored_conversions(ws),
        touchpoints=touchpoints,
        narrow=True,
        parts=True,
    )
    ws.con.execute(
        f"DELETE FROM {RECORDS_TABLE} WHERE record_id IN ({ws.ibis.compile(records.record_id)})"
    )
    ws.con.execute(f"INSERT INTO {RECORDS_TABLE} {ws.ibis.compile(redo)}")


def campaign_summary(ws: Workspace) -> list[dict[str, Any]]:
    """Per campaign: spend, impressions, clicks, attributed conversions and value, CPA, ROAS.

    ``conversions`` counts every attributed conversion event, whatever its kind;
    ``conversions_by_kind`` splits it (lead, purchase, deal, ...), most frequent first.

    Returns one dict per campaign (a small result), sorted by spend, largest first.
    Conversions attributed to a campaign with no spend rows still appear.
    """
    spend = ws.table("spend")
    s = spend.group_by(campaign_id=spend.campaign_id).aggregate(
        platform=spend.platform.arbitrary(),
        spend=spend.spend.sum(),
        impressions=spend.impressions.sum(),
        clicks=spend.clicks.sum(),
        platform_conversions=spend.platform_conversions.sum(),
    )
    conv = attributed_conversions(ws)
    conv = conv.filter(conv.attributed_campaign_id.notnull())
    c = conv.group_by(campaign_id=conv.attributed_campaign_id).aggregate(
        conversions=conv.count(), value=conv.value.sum()
    )
    j = s.outer_join(c, s.campaign_id == c.campaign_id)
    j = j.select(
        campaign_id=ibis.coalesce(j.campaign_id, j.campaign_id_right),
        platform=j.platform,
        spend=j.spend.fill_null(0),
        impressions=j.impressions.fill_null(0),
        clicks=j.clicks.fill_null(0),
        platform_conversions=j.platform_conversions,
        conversions=j.conversions.fill_null(0),
        value=j.value.fill_null(0),
    ).order_by(ibis.desc("spend"), "campaign_id")
    rows: list[dict[str, Any]] = j.to_pyarrow().to_pylist()
    per_kind = (
        conv.group_by(campaign_id=conv.attributed_campaign_id, kind=conv.kind)
        .aggregate(n=conv.count())
        .order_by(["campaign_id", ibis.desc("n"), "kind"])
        .to_pyarrow()
        .to_pylist()
    )
    kinds: dict[str, dict[str, int]] = {}
    for k in per_kind:
        kinds.setdefault(k["campaign_id"], {})[k["kind"]] = int(k["n"])
    for r in rows:
        r["conversions_by_kind"] = kinds.get(r["campaign_id"], {})
        conv_n = r["conversions"]
        r["cpa"] = round(r["spend"] / conv_n, 2) if conv_n and r["spend"] else None
        r["roas"] = round(r["value"] / r["spend"], 3) if r["spend"] else None
        r["spend"] = round(r["spend"], 2)
        r["value"] = round(r["value"], 2)
    return rows


def attribution_counts(ws: Workspace) -> dict[str, int]:
    """How many conversions each attribution rule reached, and how many none did."""
    conv = attributed_conversions(ws)
    res = conv.group_by("attributed_by").aggregate(n=conv.count()).to_pyarrow().to_pylist()
    return {(r["attributed_by"] or "unattributed"): int(r["n"]) for r in res}


def crm_record_campaigns(
    ws: Workspace,
    cutoff: Any = None,
    *,
    crm: Any = None,
    conversions: Any = None,
    touchpoints: Any = None,
    stored_touches: bool = False,
) -> Any:
    """Each CRM record's campaign.

    The campaign of the user's latest attributed conversion up to an hour after the record
    began (the lead that created it), else the user's last touchpoint before it. Returns an
    ibis table ``(record_id, campaign_id, first_ts)``; a record none of these reach has a
    null campaign.

    Parameters
    ----------
    ws
        The workspace.
    cutoff
        Only rows before this time (applied to the tables read here, not to those given).
    crm, conversions, touchpoints
        Tables to use instead of the workspace's: CRM rows (``record_id``, ``stage``, ``ts``,
        ``user_id``); conversions already attributed (``user_id``, ``ts``,
        ``attributed_campaign_id``); touchpoints (``user_id``, ``ts``, ``campaign_id``).

    Without ``crm``, ``conversions`` and ``touchpoints`` the stored campaigns are read
    (:data:`RECORDS_TABLE`, kept current with the attribution): a record that began more than
    an hour before ``cutoff`` has the same campaign with or without it, and the few that began
    within that hour (their lead may fall after the cutoff) are derived again, unless no
    conversion or CRM row lies at or after the cutoff (the daily run's case): then the
    stored campaigns are the cut ones (a touch after the cutoff is after every record's
    start, which is all a touch is compared with).
    """
    if crm is None and conversions is None and touchpoints is None and refresh_attribution(ws):
        stored = ws.table(RECORDS_TABLE).select("record_id", "campaign_id", "first_ts")
        if cutoff is None:
            return stored
        if isinstance(cutoff, datetime) and not rows_from(ws, cutoff):
            return stored.filter(stored.first_ts < ibis.literal(cutoff))
        edge = ibis.literal(cutoff) - ibis.interval(hours=1)
        return stored.filter(stored.first_ts < edge).union(_live_records(ws, cutoff, stored))
    found = _record_campaigns(ws, cutoff, crm=crm, conversions=conversions, touchpoints=touchpoints)
    mine = crm is None and conversions is None and touchpoints is None
    if mine and ws.backend != "duckdb" and (cutoff is None or isinstance(cutoff, datetime)):
        return _held(ws, ("records", cutoff), found)
    return found


_LIVE_IDS = itertools.count(1)


def rows_from(ws: Workspace, cutoff: datetime) -> bool:
    """Whether a conversion or a CRM row lies at or after ``cutoff`` (on any backend).

    When none does (the daily run's case), each stored record's campaign is the one the rows
    before ``cutoff`` give it."""
    for name in ("conversions", "crm"):
        hit = (ws.table(name).ts.max() >= ibis.literal(cutoff)).execute()
        if hit is not None and bool(hit):
            return True
    return False


def _live_records(ws: Workspace, cutoff: Any, stored: Any) -> Any:
    """The campaigns of the records begun within the hour before ``cutoff``, derived again
    from the rows cut there: computed once into a small in-memory table (a few hundred
    records a day) instead of inside every query that reads the records. Deriving them reads
    their users' touchpoints, a pass over the history's user ids that a run's checks would
    otherwise repeat in each query (about 0.9 s each at 1,000 campaigns). Remembered per
    workspace for the last cutoff and attribution state."""
    edge = ibis.literal(cutoff) - ibis.interval(hours=1)
    recent = stored.filter((stored.first_ts >= edge) & (stored.first_ts < cutoff))
    rows = ws.table("crm")
    rows = rows.filter((rows.ts < cutoff) & rows.record_id.isin(recent.record_id))
    live = _record_campaigns(ws, cutoff, crm=rows, narrow=True, reuse=True)
    if not isinstance(cutoff, datetime):  # an expression: nothing to remember it by
        return live
    key = (cutoff.isoformat(), _state(ws))
    memo: dict[tuple[str, str], Any] = getattr(ws, "_live_records", {})
    if key not in memo:
        # a temporary table, not an in-memory arrow one (DuckDB pushes join filters into
        # those that arrow scans cannot take), under its own name: an expression built for
        # an earlier cutoff keeps reading its own rows
        name = f"_live_records_{next(_LIVE_IDS)}"
        memo = {key: ws.ibis.create_table(name, live.to_pyarrow(), temp=True)}
        ws._live_records = memo  # type: ignore[attr-defined]
    return memo[key]


def _record_campaigns(
    ws: Workspace,
    cutoff: Any = None,
    *,
    crm: Any = None,
    conversions: Any = None,
    touchpoints: Any = None,
    narrow: bool = False,
    parts: bool = False,
    reuse: bool = False,
) -> Any:
    """:func:`crm_record_campaigns` from the rows (``narrow``: only the touchpoints and
    conversions of the records' users are read; ``parts``: with the stored columns
    ``user_id`` and ``touch_campaign``).

    ``reuse`` (the attribution current, on DuckDB): each record's last touch before it
    began is read from :data:`RECORDS_TABLE` where the stored record has the same user and
    start (a touch at or before the start is before any cutoff the record exists at),
    instead of joining the records with every touchpoint of their users; the records the
    store does not hold so are derived from ``touchpoints``."""
    if crm is None:
        crm = ws.table("crm")
        crm = crm.filter(crm.ts < cutoff) if cutoff is not None else crm
    if touchpoints is None:
        touchpoints = ws.table("touchpoints")
        if cutoff is not None:
            touchpoints = touchpoints.filter(touchpoints.ts < cutoff)
    if conversions is None:
        conversions = attributed_conversions(ws)
        if cutoff is not None:
            conversions = conversions.filter(conversions.ts < cutoff)
    tp, conv = touchpoints, conversions
    rec = crm.group_by("record_id").aggregate(
        user_id=crm.user_id.arbitrary(), first_ts=crm.ts.min()
    )
    if narrow:
        tp = tp.filter(tp.user_id.isin(rec.user_id))
        conv = conv.filter(conv.user_id.isin(rec.user_id))
    leads = conv.filter(conv.user_id.notnull() & conv.attributed_campaign_id.notnull()).select(
        c_user=conv.user_id, c_ts=conv.ts, c_campaign=conv.attributed_campaign_id
    )
    by_lead = (
        rec.join(
            leads,
            (rec.user_id == leads.c_user) & (leads.c_ts <= rec.first_ts + ibis.interval(hours=1)),
        )
        .group_by(l_record_id="record_id")
        .aggregate(lead_campaign=last_by(leads.c_campaign, leads.c_ts))
    )

    def last_touch(rec: Any, tp: Any) -> Any:
        touches = tp.filter(tp.user_id.notnull() & tp.campaign_id.notnull()).select(
            t_user=tp.user_id, t_ts=tp.ts, t_campaign=tp.campaign_id
        )
        return (
            rec.join(touches, (rec.user_id == touches.t_user) & (touches.t_ts <= rec.first_ts))
            .group_by(t_record_id="record_id")
            .aggregate(touch_campaign=last_by(touches.t_campaign, touches.t_ts))
        )

    if reuse:
        s = ws.table(RECORDS_TABLE)
        same = (
            (rec.record_id == s.record_id)
            & (rec.user_id == s.user_id)
            & (rec.first_ts == s.first_ts)
        )
        held = rec.join(s, same).select(t_record_id=rec.record_id, touch_campaign=s.touch_campaign)
        # a record stored with another user or start (or none: a user-less record touches
        # nothing either way) is derived from its users' touchpoints
        other = rec.filter(rec.user_id.notnull()).anti_join(s, same)
        # usually none: then no semi-join on their users at all (DuckDB would still scan
        # every touchpoint's user for an empty one, about 1.3 s at 1,000 campaigns)
        if int(other.count().execute()) == 0:
            by_touch = held
        else:
            by_touch = held.union(last_touch(other, tp.filter(tp.user_id.isin(other.user_id))))
    else:
        by_touch = last_touch(rec, tp)
    j = rec.left_join(by_lead, rec.record_id == by_lead.l_record_id).left_join(
        by_touch, rec.record_id == by_touch.t_record_id
    )
    extra = {"user_id": j.user_id, "touch_campaign": j.touch_campaign} if parts else {}
    return j.select(
        record_id=j.record_id,
        campaign_id=ibis.coalesce(j.lead_campaign, j.touch_campaign),
        first_ts=j.first_ts,
        **extra,
    )
