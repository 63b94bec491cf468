"""The units and labels of the last days, as the decision lens compares them with a model's.

:func:`recent_labels` counts the mature units of an outcome's frame over its last ``days``
days and how many are positive, without building a feature. Counted from the rows, that
labels ten million clicks every run at 1,000 campaigns; but a unit's label, once its window
has closed, changes only when rows arrive that can reach it. A touch, conversion or CRM row
at time ``t`` reaches no unit older than ``t`` minus the label window and a day (a
conversion labels the click it names, or its user's last click before it, within the window;
a CRM record links to its user's conversion up to an hour after it begins, or to the last
click before it), and a conversion that names a new click reaches back from its own time.

So the counts of fully mature days are kept per day and campaign in :data:`TABLE`, with
exclusion windows left in (they are applied when read, per campaign and day as everywhere),
and a run counts from the rows only the days that rows ingested since (or rows between the
last run's cutoff and this one's) may have changed, the days still maturing, and the partial
day where the window starts. Rows that did not come by an append (removed, rewritten), a new
label window or funnel start the store again. The result equals counting from the rows
(``tests/test_models_recent.py``, on daily drops of every simulator shape and fault). Other
backends and read-only workspaces count from the rows.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

import duckdb
import ibis
import pandas as pd
from ibis.common.exceptions import TableNotFound

from signalloop.checks.engine import without_exclusions
from signalloop.config import Settings
from signalloop.errors import UsageError
from signalloop.models.features import ClickPool, _build, horizon_for, pool_rows
from signalloop.store import Workspace

#: The mature units of the days counted, per outcome: day, campaign, time and label (exclusion
#: windows left in; a row without a campaign marks a day as counted).
TABLE = "recent_label_units"
#: Bump when the labels or the store's rows change meaning: stored counts are then dropped.
VERSION = 1
_KINDS = ("touchpoints", "conversions", "crm")
#: Per workspace, :func:`_reach` of the rows since a saved state (and between two cutoffs).
_REACHED: weakref.WeakKeyDictionary[Workspace, dict[str, datetime | None]] = (
    weakref.WeakKeyDictionary()
)
_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (outcome VARCHAR, day DATE, campaign_id VARCHAR, "
    "ts TIMESTAMP, label BIGINT)"
)
#: The outcomes whose units (leads) tie to a click of any age: their first days to count read
#: their users' clicks from the whole history, which :class:`Prefetch` reads ahead.
LEAD_OUTCOMES = ("sql", "won")
#: Per workspace, the touchpoints read ahead for the lead outcomes' first days (a
#: :class:`Prefetch` that a pass over the history filled).
_PREFETCHED: weakref.WeakKeyDictionary[Workspace, Prefetch] = weakref.WeakKeyDictionary()


def recent_labels(
    ws: Workspace,
    outcome: str,
    *,
    as_of: date,
    days: int,
    settings: Settings | None = None,
    horizon_days: int | None = None,
) -> tuple[int, int]:
    """``(units, positives)`` among the mature units of the last ``days`` days of the frame.

    The same units and labels as :func:`~signalloop.models.features.build_frame` (the last
    ``days`` days up to its latest mature, non-excluded unit), counted without building a
    single feature: what the decision lens compares with a saved model's training data.

    Raises
    ------
    UsageError
        As ``build_frame``: an unknown outcome, no touchpoints, no mature units.
    """
    settings = settings or Settings()
    if ws.backend != "duckdb" or ws.read_only:
        return _from_rows(ws, outcome, as_of, days, settings, horizon_days)
    horizon = horizon_for(outcome, settings, horizon_days)
    found = _Counts(ws, outcome, as_of, settings, horizon_days, horizon).window(days)
    if found is None:  # nothing mature in reach: the rows say what there is (or raise)
        return _from_rows(ws, outcome, as_of, days, settings, horizon_days)
    return found


def recent_labels_all(
    ws: Workspace,
    outcomes: list[str],
    *,
    as_of: date,
    days: int,
    settings: Settings | None = None,
    horizon_days: Mapping[str, int | None] | None = None,
) -> dict[str, tuple[int, int]]:
    """:func:`recent_labels` of each of ``outcomes`` (in order; the first that raises stops),
    each with its label window in ``horizon_days`` (default: the outcome's).

    The same counts as one call per outcome. Where two or more outcomes that read the same
    clicks have days to count from the rows (the lead outcomes, whose records link to a
    click of any age), the clicks their ties need are read from the click history in one
    pass (a scan of every click's user and click id, about 2 s at 1,000 campaigns) instead
    of one pass each; each outcome then takes its own clicks from that table.
    """
    settings = settings or Settings()
    windows = {o: (horizon_days or {}).get(o) for o in outcomes}
    if ws.backend != "duckdb" or ws.read_only:
        return {
            o: recent_labels(ws, o, as_of=as_of, days=days, settings=settings, horizon_days=h)
            for o, h in windows.items()
        }
    counts = _counts(ws, list(windows), as_of, settings, windows)
    out: dict[str, tuple[int, int]] = {}
    shared = _share_clicks(ws, counts, days)
    try:
        for c in counts:
            found = c.window(days)
            if found is None:  # nothing mature in reach: the rows say what there is (or raise)
                found = _from_rows(ws, c.outcome, as_of, days, settings, c.horizon_days)
            out[c.outcome] = found
    finally:
        for name in shared:
            ws.con.execute(f"DROP TABLE IF EXISTS {name}")
    return out


class Prefetch:
    """The users and click ids whose touchpoints the lead outcomes' first days to count will
    read from the whole history, so that another pass over the history (the stored
    attribution's, :func:`~signalloop.attribution.refresh_attribution`) reads them too:
    one scan of every touchpoint's user and click id instead of two (at 1,000 campaigns
    1.2-5 s each, growing with the history).

    ``users`` and ``ids`` are ibis columns (their union over the outcomes); the pass calls
    :meth:`take` with a table holding at least every touchpoint of those users and click
    ids. A count then reads its clicks from it only when it asks for the same days, users,
    ids and clicks (compiled alike) with no rows ingested since; else it reads the history.
    """

    def __init__(self, ws: Workspace, entries: list[tuple[str, list[date], str, str, str]]):
        # (weakly: the registry of these is keyed by the workspace, weakly too)
        self._ws = weakref.ref(ws)
        self.entries = entries  # (outcome, days, clicks, users, ids), the three as SQL
        self.state = {k: ws.ingest_state(k) for k in _KINDS}
        self.keys: tuple[Any, Any] = (None, None)  # (users, ids): their union expressions
        self.table: str | None = None
        self.used: list[str] = []  # the outcomes that read it (for the tests)
        self._held: tuple[Any, Any] | None = None

    @property
    def ws(self) -> Workspace:
        """The workspace it reads ahead in."""
        ws = self._ws()
        if ws is None:  # pragma: no cover - (a prefetch outliving its workspace is unused)
            raise ReferenceError("the workspace of this prefetch is gone")
        return ws

    def _hold(self) -> tuple[Any, Any]:
        """The users and ids, computed once into temporary tables (the pass and
        :meth:`take` each read them; worked out inside each, they group the CRM rows twice)."""
        if self._held is None:
            made = []
            names = ("_recent_prefetch_users", "_recent_prefetch_ids")
            for name, col in zip(names, self.keys, strict=True):
                made.append(self.ws.temp_table(name, col.name("v").as_table().distinct()).v)
            self._held = (made[0], made[1])
        return self._held

    @property
    def users(self) -> Any:
        """The users whose touchpoints to read (an ibis column)."""
        return self._hold()[0]

    @property
    def ids(self) -> Any:
        """The click ids whose touchpoints to read (an ibis column)."""
        return self._hold()[1]

    def take(self, near: Any) -> None:
        """Keep the rows of ``near`` (touchpoints with ``touch_id``, ``ts``, ``user_id``,
        ``click_id`` and ``campaign_id``) of :attr:`users` or :attr:`ids`."""
        rows = pool_rows(near, self.users, self.ids)
        self.table = self.ws.temp_table("_recent_prefetched", rows).get_name()
        _PREFETCHED[self.ws] = self

    def pool(self, c: _Counts, days: list[date], clicks: Any, users: Any, ids: Any) -> Any:
        """``clicks``' rows of ``users`` or ``ids`` from the table read ahead, or ``None``
        when it does not hold them (other days or keys, rows ingested since)."""
        ws = self.ws
        if self.table is None or c.source != self.state:  # (c's: what it counts from)
            return None
        asked = (c.outcome, days, *(ws.ibis.compile(x) for x in (clicks, users, ids)))
        if asked not in [tuple(e) for e in self.entries]:
            return None
        try:
            t = ws.ibis.table(self.table)
        except TableNotFound:  # (its pass was rolled back: the table is gone)
            return None
        cut = ibis.literal(c.cutoff, type="timestamp")
        return pool_rows(t.filter((t.ts < cut) & t.campaign_id.notnull()), users, ids)


def prefetch(
    ws: Workspace,
    outcomes: list[str],
    *,
    as_of: date,
    days: int,
    settings: Settings | None = None,
    horizon_days: Mapping[str, int | None] | None = None,
) -> Prefetch | None:
    """What the lead outcomes among ``outcomes`` will read from the whole click history when
    :func:`recent_labels_all` counts their first days (with the same ``horizon_days``), as a
    :class:`Prefetch` for another pass over the history to fill; ``None`` when none will
    (no lead outcome, nothing to count, another backend, a read-only workspace).

    The daily run asks it before the stored attribution's pass over the history, and the
    decision lens's counts, later in the run, read their clicks from what that pass kept.
    """
    if ws.backend != "duckdb" or ws.read_only:
        return None
    settings = settings or Settings()
    entries: list[tuple[str, list[date], str, str, str]] = []
    users: list[Any] = []
    ids: list[Any] = []
    leads = [o for o in outcomes if o in LEAD_OUTCOMES]
    for c in _counts(ws, leads, as_of, settings, horizon_days):
        missing = c.first_missing(days)
        try:
            asked = _pool_asked(c, missing)
        except UsageError:  # (raised again where the lens counts)
            continue
        if asked is None:
            continue
        clicks, u, i = asked
        entries.append((c.outcome, missing, *(ws.ibis.compile(x) for x in (clicks, u, i))))
        users.append(u.name("v").as_table())
        ids.append(i.name("v").as_table())
    if not entries:
        return None
    ahead = Prefetch(ws, entries)
    ahead.keys = (ibis.union(*users).v, ibis.union(*ids).v)
    return ahead


def _pool_asked(c: _Counts, missing: list[date]) -> tuple[Any, Any, Any] | None:
    """``(clicks, users, ids)``: what counting ``missing`` would read its clicks from (the
    expressions, nothing run), or ``None`` when there is nothing to count or it reads no
    pool (the value outcome reads every click). Raises as counting would."""
    if not missing:
        return None
    seen: list[tuple[Any, Any, Any]] = []

    def note(clicks: Any, users: Any, ids: Any) -> Any:
        seen.append((clicks, users, ids))
        return pool_rows(clicks, users, ids)  # not read: only what it asks for is kept

    c.label_rows(missing, note)
    return seen[0] if seen else None


def forget_prefetch(ws: Workspace) -> None:
    """Drop what :func:`prefetch` read ahead for ``ws`` (the daily run's end)."""
    ahead = _PREFETCHED.pop(ws, None)
    if ahead is not None:
        for name in (ahead.table, "_recent_prefetch_users", "_recent_prefetch_ids"):
            if name is not None:
                ws.con.execute(f"DROP TABLE IF EXISTS {name}")


def _counts(
    ws: Workspace,
    outcomes: list[str],
    as_of: date,
    settings: Settings,
    horizon_days: Mapping[str, int | None] | None,
) -> list[_Counts]:
    """A :class:`_Counts` per outcome, each with its label window in ``horizon_days``."""
    windows = {o: (horizon_days or {}).get(o) for o in outcomes}
    return [
        _Counts(ws, o, as_of, settings, h, horizon_for(o, settings, h)) for o, h in windows.items()
    ]


def _share_clicks(ws: Workspace, counts: list[_Counts], days: int) -> list[str]:
    """Read the clicks that the outcomes' first days to count need in one pass per source of
    clicks, into a temporary table each outcome's count then takes its own clicks from (their
    names: none where no two outcomes with days to count read the same clicks).

    The lead outcomes (``sql``, ``won``) read every click of their users' history; the
    ``conversion`` outcome, with the stored attribution, only the clicks from its first day
    to count on (:func:`~signalloop.models.features._named_clicks_from`), a scan of a few
    days that gains nothing from joining the others' pass.
    """
    groups: list[list[tuple[_Counts, list[date], Any, Any, Any]]] = []
    for c in counts:
        missing = c.first_missing(days)
        try:
            asked = _pool_asked(c, missing)
        except UsageError:  # raised again, in order, when counted
            return []
        if asked is None:
            continue
        entry = (c, missing, *asked)
        same = next((g for g in groups if g[0][2].equals(entry[2])), None)
        if same is None:
            groups.append([entry])
        else:
            same.append(entry)
    names: list[str] = []
    for g in groups:
        if len(g) < 2:
            continue
        name = f"_recent_clicks_shared_{len(names)}"
        users = ibis.union(*(u.name("v").as_table() for _, _, _, u, _ in g))
        ids = ibis.union(*(i.name("v").as_table() for _, _, _, _, i in g))
        ahead = _PREFETCHED.get(ws)
        read = [ahead.pool(c, m, cl, u, i) for c, m, cl, u, i in g] if ahead else []
        if ahead and all(r is not None for r in read):  # (read ahead: no pass of its own)
            ws.temp_table(name, ibis.union(*read, distinct=True))
            ahead.used.extend(c.outcome for c, _, _, _, _ in g)
        else:
            ws.temp_table(name, pool_rows(g[0][2], users.v, ids.v))
        for c, missing, _, _, _ in g:
            c.shared = (missing, name)
        names.append(name)
    return names


def _from_rows(
    ws: Workspace,
    outcome: str,
    as_of: date,
    days: int,
    settings: Settings,
    horizon_days: int | None,
) -> tuple[int, int]:
    """:func:`recent_labels` counted from the rows."""
    kept = _build(
        ws,
        outcome,
        as_of=as_of,
        settings=settings,
        horizon_days=horizon_days,
        labels_only=True,
        recent_days=days,
    )
    mature = kept.filter(kept._mature)
    end = mature.ts.max().as_scalar()
    recent = mature.filter(mature.ts > end - ibis.interval(days=days))
    row = recent.aggregate(n=recent.count(), pos=recent.label.sum()).to_pyarrow().to_pylist()[0]
    if not row["n"]:  # as build_frame: nothing mature is an error, not zero
        raise UsageError(
            f"no mature units for outcome {outcome!r} at as_of {as_of}: use a shorter horizon "
            "or a later as_of"
        )
    return int(row["n"]), int(row["pos"] or 0)


class _Counts:
    """One outcome's stored units at one cutoff: read, completed from the rows, saved."""

    def __init__(
        self,
        ws: Workspace,
        outcome: str,
        as_of: date,
        settings: Settings,
        horizon_days: int | None,
        horizon: int,
    ) -> None:
        self.ws, self.outcome, self.as_of = ws, outcome, as_of
        self.settings, self.horizon_days = settings, horizon_days
        self.cutoff = datetime.combine(as_of + timedelta(days=1), time())
        self.h = timedelta(days=horizon)
        self.edge = self.cutoff - self.h  # a unit is mature when its time is at most this
        funnel = [s.strip().lower() for s in settings.funnel]
        self.ident = {"version": VERSION, "horizon": horizon, "funnel": funnel}
        self.key = f"recent_labels:{outcome}"
        ws.con.execute(_DDL)
        self.source = {k: ws.ingest_state(k) for k in _KINDS}
        self.reset, self.stale_from = self._invalidation()
        self.fresh = f"_recent_fresh_{outcome}"  # units counted from the rows this run
        ws.con.execute(f"CREATE OR REPLACE TEMP TABLE {self.fresh} AS {_EMPTY}")
        self.counted: list[date] = []  # their days
        self.done: list[date] = []  # of those, the fully mature ones: to store
        self.keep_days = 0  # days kept before the latest mature one (set by window)
        # (days, table): a table holding the clicks counting those days needs (_share_clicks)
        self.shared: tuple[list[date], str] | None = None

    # -- what the stored units still hold -----------------------------------------------------
    def _invalidation(self) -> tuple[bool, datetime | None]:
        """Whether to start again, else from when the stored days may have changed."""
        ws = self.ws
        saved = ws.read_meta(self.key)
        if saved.get("ident") != self.ident or "source" not in saved:
            return True, None
        if not all(ws.appended_since(k, saved["source"][k]) for k in _KINDS):
            return True, None
        before = datetime.fromisoformat(saved["cutoff"])
        if saved["source"] == self.source and before == self.cutoff:
            return False, None
        # the outcomes' stores were saved together: the reach of the same rows is looked up once
        key = json.dumps([saved["source"], saved["cutoff"], self.source, self.cutoff.isoformat()])
        seen = _REACHED.setdefault(ws, {})
        if key not in seen:
            seen[key] = _reach(ws, saved["source"], before, self.cutoff)
        reach = seen[key]
        return False, None if reach is None else reach - self.h - timedelta(days=1)

    def _holds(self, day: date) -> bool:
        """Whether ``day``'s stored units hold now: fully mature, not reached by new rows."""
        end = datetime.combine(day + timedelta(days=1), time())
        return end <= self.edge and (self.stale_from is None or end <= self.stale_from)

    def _stored_days(self, days: list[date]) -> set[date]:
        if self.reset or not days:
            return set()
        sql = f"SELECT DISTINCT day FROM {TABLE} WHERE outcome = ? AND day BETWEEN ? AND ?"
        got = self.ws.con.execute(sql, [self.outcome, days[0], days[-1]]).fetchall()
        return {d for (d,) in got if self._holds(d)}

    def first_missing(self, days: int) -> list[date]:
        """The days :meth:`window` counts from the rows first (its first reach)."""
        edge_day = self.edge.date()
        reach = _days(edge_day - timedelta(days=days + 1), edge_day)
        have = self._stored_days(reach)
        return [d for d in reach if d not in have and d not in self.counted]

    def label_rows(self, days: list[date], pool: ClickPool | None = None) -> Any:
        """The units of ``days`` with their labels, exclusions left in (an ibis table)."""
        return _build(
            self.ws,
            self.outcome,
            as_of=self.as_of,
            settings=self.settings,
            horizon_days=self.horizon_days,
            labels_only=True,
            unit_days=days,
            exclude=False,
            pool=pool,
        )

    def _label_days(self, days: list[date]) -> None:
        """The mature units of ``days`` (exclusions left in) from the rows, kept for the run."""
        pool: ClickPool | None = None
        if self.shared is not None and self.shared[0] == days:
            table, name = self.ws.ibis.table(self.shared[1]), f"_unit_day_clicks_{self.outcome}"

            def own(clicks: Any, users: Any, ids: Any) -> Any:  # its rows of the shared pass
                rows = pool_rows(table, users, ids)
                return self.ws.temp_table(name, rows)

            pool = own
        elif (ahead := _PREFETCHED.get(self.ws)) is not None:
            name = f"_unit_day_clicks_{self.outcome}"

            def ahead_or_history(clicks: Any, users: Any, ids: Any) -> Any:
                rows = ahead.pool(self, days, clicks, users, ids)
                if rows is None:  # (not what was read ahead: from the history)
                    rows = pool_rows(clicks, users, ids)
                else:
                    ahead.used.append(self.outcome)
                return self.ws.temp_table(name, rows)

            pool = ahead_or_history
        units = self.label_rows(days, pool)
        m = units.filter(units._mature)
        got = m.select(day=m.ts.date(), campaign_id=m.campaign_id, ts=m.ts, label=m.label)
        con = self.ws.con
        con.execute(f"INSERT INTO {self.fresh} {self.ws.ibis.compile(got)}")
        done = [d for d in days if self._holds(d)]
        for d in done:  # a marker per day, so that a day without units is not counted again
            con.execute(f"INSERT INTO {self.fresh} VALUES (?, NULL, NULL, 0)", [d])
        self.counted.extend(days)
        self.done.extend(done)

    def _units(self, days: list[date]) -> Any:
        """The non-excluded mature units of ``days`` (an ibis table): stored where they hold,
        else counted from the rows first."""
        have = self._stored_days(days)
        missing = [d for d in days if d not in have and d not in self.counted]
        if missing:
            self._label_days(missing)
        kept = [d for d in days if d in have]
        stored = self.ws.ibis.sql(
            f"SELECT day, campaign_id, ts, label FROM {TABLE} WHERE outcome = "
            f"'{self.outcome}' AND day IN ({_dates(kept)}) UNION ALL SELECT day, campaign_id, "
            f"ts, label FROM {self.fresh} WHERE day IN ({_dates(days)})"
        )
        units = stored.filter(stored.campaign_id.notnull())
        return without_exclusions(self.ws, units, "campaign_id", units.day)

    def window(self, days: int) -> tuple[int, int] | None:
        """``(units, positives)`` of the last ``days`` days (``None``: no mature unit in the
        last ``2 * days`` days), the units saved for the next run."""
        edge_day = self.edge.date()
        self.keep_days = 2 * days + 2  # the window and the looking back for its end
        for back in (days + 1, 2 * days + 1):
            reach = _days(edge_day - timedelta(days=back), edge_day)
            end = self._units(reach).ts.max().execute()
            if end is not None and not pd.isna(end):
                break
        else:
            self._save()
            return None
        end = pd.Timestamp(end).to_pydatetime()
        start = end - timedelta(days=days)
        units = self._units(_days(start.date(), end.date()))
        inside = units.filter(units.ts > ibis.literal(start, type="timestamp"))
        got = inside.aggregate(n=inside.count(), pos=inside.label.sum()).execute()
        self._save()
        n, pos = got["n"].iloc[0], got["pos"].iloc[0]
        return (int(n), int(0 if pd.isna(pos) else pos)) if n else None

    def _save(self) -> None:
        """Store the fully mature days counted from rows, and what they were counted at;
        forget the days no window will reach again."""
        ws, con = self.ws, self.ws.con
        oldest = self.edge.date() - timedelta(days=self.keep_days)
        try:
            with ws.transaction():
                if self.reset:
                    con.execute(f"DELETE FROM {TABLE} WHERE outcome = ?", [self.outcome])
                elif self.stale_from is not None:
                    con.execute(
                        f"DELETE FROM {TABLE} WHERE outcome = ? "
                        "AND CAST(day AS TIMESTAMP) + INTERVAL 1 DAY > ?",
                        [self.outcome, self.stale_from],
                    )
                con.execute(
                    f"DELETE FROM {TABLE} WHERE outcome = ? AND day < ?", [self.outcome, oldest]
                )
                if self.done:
                    listed = _dates(self.done)
                    con.execute(
                        f"DELETE FROM {TABLE} WHERE outcome = ? AND day IN ({listed})",
                        [self.outcome],
                    )
                    con.execute(
                        f"INSERT INTO {TABLE} SELECT ?, day, campaign_id, ts, label "
                        f"FROM {self.fresh} WHERE day IN ({listed})",
                        [self.outcome],
                    )
                state = {"ident": self.ident, "source": self.source}
                ws.write_meta(self.key, {**state, "cutoff": self.cutoff.isoformat()})
        except duckdb.TransactionException:  # another thread wrote: counted, not stored
            pass
        finally:
            con.execute(f"DROP TABLE IF EXISTS {self.fresh}")


_EMPTY = (
    "SELECT CAST(NULL AS DATE) AS day, CAST(NULL AS VARCHAR) AS campaign_id, "
    "CAST(NULL AS TIMESTAMP) AS ts, CAST(NULL AS BIGINT) AS label WHERE false"
)


def _dates(days: list[date]) -> str:
    return ", ".join(f"DATE '{d.isoformat()}'" for d in days) or "NULL"


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _reach(
    ws: Workspace, source: dict[str, list[int]], before: datetime, cutoff: datetime
) -> datetime | None:
    """The earliest time of a row that came since ``source`` or lies between the two cutoffs,
    or of a conversion naming a click among those new touches (``None``: no such row)."""
    lo, hi = min(before, cutoff), max(before, cutoff)

    def new(kind: str, cols: str = "ts") -> str:
        # two scans each one filter prunes by its zone maps (a row in both is read twice,
        # which a minimum and a membership test do not mind), not one scan of an OR of them
        since = int(source[kind][1])
        return (
            f"(SELECT {cols} FROM {kind} WHERE _ingest_id > {since} UNION ALL "
            f"SELECT {cols} FROM {kind} WHERE ts >= ? AND ts < ?)"
        )

    sql = (
        f"SELECT least((SELECT min(ts) FROM {new('touchpoints')}), "
        f"(SELECT min(ts) FROM {new('conversions')}), (SELECT min(ts) FROM {new('crm')}), "
        "(SELECT min(ts) FROM conversions WHERE click_id IN (SELECT click_id FROM "
        f"{new('touchpoints', 'click_id')} WHERE click_id IS NOT NULL)))"
    )
    row = ws.con.execute(sql, [lo, hi] * 4).fetchone()
    return None if row is None or row[0] is None else pd.Timestamp(row[0]).to_pydatetime()
