"""The push ledger: what was sent to which platform, when, and what the platform answered.

One table, ``push_ledger``, in the workspace. A row per item (event, click conversion,
exclusion) per attempt that the platform answered, written in one transaction per acknowledged
request, so a run cut short loses nothing it had been told about. An item is *done* when a row
for it says ``sent`` (the platform took it, or told us it already had it) or ``rejected`` with
``final`` true (a per-row error that re-sending cannot fix, such as a click past its window);
done items are never sent again. A whole request turned away (a 4xx) is written with
``final`` false: the next run tries its items again and the ledger shows every attempt.

Live and test sends (Meta's ``test_event_code``, Google's ``validateOnly``) are kept apart: an
event sent to the Test Events tool is still unsent for optimisation.

>>> from signalloop.store import Workspace
>>> ws = Workspace(":memory:")
>>> write(ws, [entry("meta", "event", "sl-1", status="sent", request_id="r1")])
1
>>> sorted(done_keys(ws, "meta", "event")), done_keys(ws, "meta", "event", test=True)
(['sl-1'], set())
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from signalloop.store import Workspace

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS push_ledger (
    platform VARCHAR, item VARCHAR, key VARCHAR, record_id VARCHAR, stage VARCHAR,
    campaign_id VARCHAR, request_id VARCHAR, sent_at TIMESTAMP, status VARCHAR,
    final BOOLEAN, code VARCHAR, message VARCHAR, resource VARCHAR, detail JSON,
    test BOOLEAN, http_status INTEGER, response JSON
)"""
_COLUMNS = (
    "platform",
    "item",
    "key",
    "record_id",
    "stage",
    "campaign_id",
    "request_id",
    "sent_at",
    "status",
    "final",
    "code",
    "message",
    "resource",
    "detail",
    "test",
    "http_status",
    "response",
)


def _arrow_types() -> dict[str, object]:
    import pyarrow as pa

    text = pa.string()
    types: dict[str, object] = dict.fromkeys(_COLUMNS, text)
    types.update(
        sent_at=pa.timestamp("us"), final=pa.bool_(), test=pa.bool_(), http_status=pa.int32()
    )
    return types


_TYPES = _arrow_types()
#: Statuses a ledger row can have.
STATUSES = ("sent", "rejected", "failed")


def new_request_id() -> str:
    """A fresh id tying a request's rows together."""
    return uuid.uuid4().hex[:16]


def entry(
    platform: str,
    item: str,
    key: str,
    *,
    status: str,
    request_id: str,
    final: bool | None = None,
    record_id: str | None = None,
    stage: str | None = None,
    campaign_id: str | None = None,
    code: str | None = None,
    message: str | None = None,
    resource: str | None = None,
    detail: Mapping[str, Any] | None = None,
    test: bool = False,
    http_status: int | None = None,
    response: Mapping[str, Any] | None = None,
    sent_at: datetime | None = None,
) -> dict[str, Any]:
    """One ledger row (``final`` defaults to true for ``sent``, false otherwise)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    return {
        "platform": platform,
        "item": item,
        "key": key,
        "record_id": record_id,
        "stage": stage,
        "campaign_id": campaign_id,
        "request_id": request_id,
        "sent_at": (sent_at or datetime.now(UTC)).replace(tzinfo=None),
        "status": status,
        "final": status == "sent" if final is None else final,
        "code": code,
        "message": message,
        "resource": resource,
        "detail": json.dumps(dict(detail), default=str) if detail is not None else None,
        "test": test,
        "http_status": http_status,
        "response": json.dumps(dict(response), default=str) if response is not None else None,
    }


def ensure(ws: Workspace) -> None:
    """Create the ledger table when it does not exist."""
    ws.con.execute(LEDGER_DDL)


def write(ws: Workspace, rows: Iterable[Mapping[str, Any]]) -> int:
    """Append rows in one transaction; returns how many."""
    import pyarrow as pa

    batch = list(rows)
    if not batch:
        return 0
    ensure(ws)
    # one INSERT ... SELECT from an Arrow table: executemany is ~30x slower per row
    table = pa.table({c: pa.array([r[c] for r in batch], _TYPES[c]) for c in _COLUMNS})
    view = f"_ledger_batch_{uuid.uuid4().hex[:8]}"
    with ws.transaction() as con:
        con.register(view, table)
        try:
            con.execute(
                f"INSERT INTO push_ledger ({', '.join(_COLUMNS)}) "
                f"SELECT {', '.join(_COLUMNS)} FROM {view}"
            )
        finally:
            con.unregister(view)
    return len(batch)


def done_keys(ws: Workspace, platform: str, item: str, *, test: bool = False) -> set[str]:
    """Keys that must not be sent again: sent, or finally rejected (live and test apart)."""
    ensure(ws)
    rows = ws.con.execute(
        "SELECT DISTINCT key FROM push_ledger WHERE platform = ? AND item = ? AND test = ? "
        "AND (status = 'sent' OR final)",
        [platform, item, test],
    ).fetchall()
    return {r[0] for r in rows}


def sent_exclusions(ws: Workspace, *, test: bool = False) -> dict[str, dict[str, Any]]:
    """The latest sent version of each Google exclusion: key -> resource, start, end.

    Latest by ``sent_at``, then by the order the rows were written (two rows of one time:
    the later written), the resource and the window taken from that one row."""
    ensure(ws)
    rows = ws.con.execute(
        "SELECT key, resource, detail FROM push_ledger "
        "WHERE platform = 'google' AND item = 'exclusion' AND status = 'sent' AND test = ? "
        "QUALIFY row_number() OVER (PARTITION BY key ORDER BY sent_at DESC, rowid DESC) = 1",
        [test],
    ).fetchall()
    return {k: {"resource": res, **json.loads(d or "{}")} for k, res, d in rows}


def summary(ws: Workspace) -> list[dict[str, Any]]:
    """Per platform, item, status and test flag: rows, distinct keys and the last send."""
    ensure(ws)
    rows = ws.con.execute(
        "SELECT platform, item, status, test, count(*), count(DISTINCT key), max(sent_at) "
        "FROM push_ledger GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    return [
        {
            "platform": p,
            "item": i,
            "status": s,
            "test": t,
            "rows": n,
            "keys": k,
            "last": last.isoformat(sep=" ", timespec="seconds") if last else None,
        }
        for p, i, s, t, n, k, last in rows
    ]


def recent(ws: Workspace, limit: int = 200) -> list[dict[str, Any]]:
    """The newest ledger rows (without the raw responses), newest first."""
    ensure(ws)
    cols = [c for c in _COLUMNS if c != "response"]
    cur = ws.con.execute(
        f"SELECT {', '.join(cols)} FROM push_ledger ORDER BY sent_at DESC LIMIT ?", [limit]
    )
    return [
        {**dict(zip(cols, r, strict=True)), "sent_at": r[cols.index("sent_at")].isoformat()}
        for r in cur.fetchall()
    ]
