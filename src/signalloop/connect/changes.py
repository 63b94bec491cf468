"""Pull a connected account's edit history into the ``changes`` kind (``signalloop pull``).

The history between two instants is read (:mod:`signalloop.connect.edits` says how, per
platform), each edit mapped to canonical ``changes`` rows with its actor, exact repeats
dropped, the edits signalloop applied itself recognised, and the rest landed through
:func:`signalloop.ingest.ingest_file` with ``restate=True``: the contract's natural key (``ts,
level, entity_id, field, new_value``) makes a re-pull add nothing, and an event the platform
restated (another old value, actor or detail under the same key) replaces the stored row.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from signalloop.connect import edits
from signalloop.connect.google import GoogleReader
from signalloop.connect.landing import Landed, land_rows
from signalloop.connect.meta import MetaReader, ReadFailed
from signalloop.store import Workspace

Progress = Callable[[str, float | None], None]


@dataclass
class ChangesResult(Landed):
    """What one pull of the edit history read and landed (the ingest's counts:
    :class:`~signalloop.connect.landing.Landed`)."""

    since: str
    until: str
    status: str = "ok"  # "ok" | "failed"
    #: Requests the history took (``PullResult.requests`` counts the spend's).
    requests: int = 0
    events_read: int = 0
    rows_mapped: int = 0
    rows_repeated: int = 0
    rows_own: int = 0
    #: Mapped rows by actor and by field (what the history says about who edits what).
    by_actor: dict[str, int] = field(default_factory=dict)
    by_field: dict[str, int] = field(default_factory=dict)
    #: Events not recorded (not an edit the contract names), by event or resource type.
    skipped: dict[str, int] = field(default_factory=dict)
    error: str = ""
    label: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


PULLS_DDL = """
CREATE TABLE IF NOT EXISTS edit_history_pulls (
    platform VARCHAR, account VARCHAR, since TIMESTAMP, until TIMESTAMP,
    pulled_at TIMESTAMP, edits BIGINT
)"""


def _mark(ws: Workspace, platform: str, account: str, res: ChangesResult) -> None:
    """Record that the history was read (even when it held no edit: ``apply`` then knows the
    budgets on the platform have not been edited in that range)."""
    ws.records.execute(PULLS_DDL)
    ws.records.execute(
        "INSERT INTO edit_history_pulls VALUES (?, ?, ?, ?, ?, ?)",
        [
            platform,
            account,
            *(_utc(datetime.fromisoformat(t)) for t in (res.since, res.until)),
            _utc(datetime.now(UTC)),
            res.rows_mapped,
        ],
    )


def _utc(t: datetime) -> datetime:
    """A naive UTC datetime (what the records' TIMESTAMP columns hold)."""
    return t.astimezone(UTC).replace(tzinfo=None)


def history_pulled(ws: Workspace, platform: str) -> datetime | None:
    """When the edit history of ``platform`` was last read into this workspace (``None``:
    never)."""
    ws.records.execute(PULLS_DDL)
    row = ws.records.execute(
        "SELECT max(pulled_at) FROM edit_history_pulls WHERE platform = ?", [platform]
    ).fetchone()
    return row[0] if row and row[0] is not None else None


def _own(ws: Workspace, platform: str, since: datetime) -> list[tuple[Any, ...]]:
    """The changes signalloop applied on ``platform`` since ``since``: (ts, level, entity,
    field, new value)."""
    return ws.con.execute(
        "SELECT ts, level, entity_id, field, new_value FROM changes "
        "WHERE json_extract_string(attrs, '$.source') = 'signalloop' "
        "AND json_extract_string(attrs, '$.platform') = ? AND ts >= ?",
        [platform, _utc(since - edits.OWN_EDIT_WINDOW)],
    ).fetchall()


def _is_own(row: Mapping[str, Any], own: list[tuple[Any, ...]]) -> bool:
    if row.get("actor") != "automation":
        return False
    t = datetime.fromisoformat(str(row["ts"])).astimezone(UTC).replace(tzinfo=None)
    for ts, level, ent, fld, new in own:
        if (level, str(ent), fld, new) == (
            row["level"],
            str(row["entity_id"]),
            row["field"],
            row["new_value"],
        ) and abs(ts - t) <= edits.OWN_EDIT_WINDOW:
            return True
    return False


def read_history(
    reader: MetaReader | GoogleReader,
    platform: str,
    account: str,
    since: datetime,
    until: datetime,
    *,
    currency: str | None,
    tz: ZoneInfo,
    res: ChangesResult,
) -> list[dict[str, Any]]:
    """Every edit between two instants as canonical rows (``res`` counts what was skipped)."""
    skipped: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    if isinstance(reader, MetaReader):
        events = reader.activities(since, until)
        res.events_read = len(events)
        for ev in events:
            row = edits.meta_change(ev, account, currency)
            if row is None:
                skipped[str(ev.get("event_type") or "?")] += 1
            else:
                rows.append(row)
    else:
        lo = since
        results: list[dict[str, Any]] = []
        while True:
            batch = reader.stream(edits.change_event_query(lo, until, tz))
            results += batch
            if len(batch) < edits.CHANGE_EVENT_LIMIT:
                break
            last = (batch[-1].get("changeEvent") or {}).get("changeDateTime")
            nxt = datetime.fromisoformat(str(last)).replace(tzinfo=tz)
            if nxt <= lo:  # 10,000 edits in one instant: cannot page further
                res.notes.append(f"more than {edits.CHANGE_EVENT_LIMIT:,} edits at {last}")
                break
            lo = nxt
        res.events_read = len(results)
        for r in results:
            got, why = edits.google_changes(r, account, tz)
            rows += got
            if why is not None:
                skipped[why] += 1
    res.skipped = dict(skipped.most_common())
    return rows


def pull_changes(
    ws: Workspace,
    reader: MetaReader | GoogleReader,
    platform: str,
    account: str,
    since: datetime,
    until: datetime,
    *,
    currency: str | None,
    time_zone: str,
    progress: Progress | None = None,
    today: date | None = None,
) -> ChangesResult:
    """Read the edit history between ``since`` and ``until`` (aware datetimes) and land it.

    ``today`` is the account's today (a pull's): Google's change events are read from no
    earlier than :data:`~signalloop.connect.edits.CHANGE_EVENT_DAYS` days before the platform's
    clock, which may run up to a day past an ``until`` that ends yesterday.

    A read that fails after the retries leaves the store as it was (``status`` "failed",
    ``error`` says why); a refused credential raises
    :class:`~signalloop.errors.CredentialError` as for spend.
    """
    tz = ZoneInfo(time_zone)
    res = ChangesResult(since.isoformat(), until.isoformat())
    if platform == "google":
        oldest = until - timedelta(days=edits.CHANGE_EVENT_DAYS) + timedelta(hours=12)
        if today is not None:  # the platform's clock is somewhere in the account's today
            first = today - timedelta(days=edits.CHANGE_EVENT_DAYS - 1)
            oldest = max(oldest, datetime.combine(first, datetime.min.time(), tz))
        if since < oldest:
            res.notes.append(
                f"Google Ads keeps {edits.CHANGE_EVENT_DAYS} days of change events: read from "
                f"{oldest:%Y-%m-%d %H:%M}; pull daily so no edit is missed"
            )
            since = oldest
            res.since = since.isoformat()
    res.label = f"pull:{platform}:{account}:changes:{since:%Y-%m-%d}..{until:%Y-%m-%d}"
    if progress:
        progress(f"pulling {platform} edit history", None)
    try:
        rows = read_history(
            reader, platform, account, since, until, currency=currency, tz=tz, res=res
        )
    except ReadFailed as exc:
        res.status, res.error = "failed", str(exc)
        return res
    rows, res.rows_repeated = edits.dedupe(rows)
    own = _own(ws, platform, since)
    mine = [r for r in rows if _is_own(r, own)]
    res.rows_own = len(mine)
    rows = [r for r in rows if not _is_own(r, own)] if mine else rows
    res.rows_mapped = len(rows)
    res.by_actor = dict(Counter(str(r["actor"]) for r in rows).most_common())
    res.by_field = dict(Counter(str(r["field"]) for r in rows).most_common())
    if rows:
        got = land_rows(ws, "changes", rows, edits.COLUMNS, res.label, progress)
        res.count(got)
    else:
        res.notes.append("no edits the contract records in this range")
    _mark(ws, platform, account, res)
    return res


def attrs_of(value: Any) -> dict[str, Any]:
    """A stored row's ``attrs`` as a dict (DuckDB hands JSON back as text)."""
    if isinstance(value, Mapping):
        return dict(value)
    try:
        doc = json.loads(value) if value else {}
    except (TypeError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}
