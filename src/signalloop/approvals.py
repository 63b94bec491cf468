"""Approving or rejecting a run's budget lines, with who decided and when.

A run's allocation recommends tomorrow's budget per campaign. A person approves or rejects each
line (or all of them) in the web app. Every decision is a row of ``approvals``; an approved line
that changes a budget is also written to the edit log (``changes``: ``field = budget``, ``actor =
human``, the person and the run in ``attrs``), so learning-phase accounting counts it as the human
edit it is. A line is decided once: deciding it again is refused with who decided it first.

Applying an approved budget on the ad platform needs a platform connection (``signalloop apply``);
until one is configured, each decision says so in ``applied``.

>>> from signalloop.store import Workspace
>>> ws = Workspace(":memory:")
>>> doc = {"run_id": "r1", "as_of": "2026-03-31", "allocation": {"arms": [
...     {"campaign_id": "c01", "current": 100.0, "recommended": 118.0}]}}
>>> [d["decision"] for d in decide(ws, doc, ["c01"], "approve", person="maria", key_id="k")]
['approve']
>>> ws.con.execute("SELECT entity_id, new_value, actor FROM changes").fetchall()
[('c01', '118.0', 'human')]
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from signalloop.errors import UsageError
from signalloop.store import Workspace

APPROVALS_DDL = """
CREATE TABLE IF NOT EXISTS approvals (
    run_id VARCHAR, as_of DATE, campaign_id VARCHAR, decision VARCHAR, person VARCHAR,
    key_id VARCHAR, decided_at TIMESTAMP, current DOUBLE, recommended DOUBLE,
    edit_logged BOOLEAN, applied VARCHAR, note VARCHAR
)"""
DECISIONS = ("approve", "reject")
NOT_APPLIED = "not applied: no platform connection is configured; set the budget on the platform"


class AlreadyDecided(UsageError):
    """A line that was already approved or rejected."""


def decisions(ws: Workspace, run_id: str) -> dict[str, dict[str, Any]]:
    """The decisions on a run's lines by campaign id, JSON-ready."""
    ws.con.execute(APPROVALS_DDL)
    cur = ws.con.execute(
        "SELECT campaign_id, decision, person, decided_at, current, recommended, edit_logged, "
        "applied, note FROM approvals WHERE run_id = ? ORDER BY decided_at",
        [run_id],
    )
    cols = [d[0] for d in cur.description]
    out = {}
    for row in cur.fetchall():
        r = dict(zip(cols, row, strict=True))
        r["decided_at"] = r["decided_at"].isoformat(timespec="seconds")
        out[str(r.pop("campaign_id"))] = r
    return out


def decide(
    ws: Workspace,
    doc: dict[str, Any],
    campaigns: Iterable[str] | None,
    decision: str,
    *,
    person: str,
    key_id: str,
    note: str | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Approve or reject lines of the run ``doc`` (``report.json``); ``None`` = every open line.

    Returns one dict per decided line. Raises :class:`AlreadyDecided` when a named line was
    decided before, :class:`~signalloop.errors.UsageError` for an unknown campaign or decision.
    """
    if decision not in DECISIONS:
        raise UsageError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    run_id = str(doc.get("run_id") or "")
    if not run_id:
        raise UsageError("this report has no run id: decide on a run recorded in `runs`")
    arms = {str(a["campaign_id"]): a for a in (doc.get("allocation") or {}).get("arms", [])}
    if not arms:
        raise UsageError(f"run {run_id} allocated nothing: there is no line to decide")
    done = decisions(ws, run_id)
    if campaigns is None:
        wanted = [c for c in arms if c not in done]
    else:
        wanted = list(dict.fromkeys(campaigns))
        unknown = [c for c in wanted if c not in arms]
        if unknown:
            raise UsageError(
                f"run {run_id} has no budget line for {', '.join(unknown)}; "
                f"its lines are {', '.join(arms)}"
            )
        again = [c for c in wanted if c in done]
        if again:
            first = done[again[0]]
            raise AlreadyDecided(
                f"{again[0]} was already {first['decision']}d by {first['person']} at "
                f"{first['decided_at']}; a line is decided once"
            )
    when = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    as_of = date.fromisoformat(str(doc["as_of"]))
    out = []
    with ws.transaction() as con:
        for cid in wanted:
            a = arms[cid]
            current, recommended = float(a["current"]), float(a["recommended"])
            logged = decision == "approve" and round(recommended, 2) != round(current, 2)
            if logged:
                con.execute(
                    "INSERT INTO changes (ts, level, entity_id, field, old_value, new_value, "
                    "actor, attrs) VALUES (?, 'campaign', ?, 'budget', ?, ?, 'human', ?)",
                    [
                        when,
                        cid,
                        str(current),
                        str(recommended),
                        json.dumps({"person": person, "run_id": run_id, "via": "signalloop"}),
                    ],
                )
            applied = NOT_APPLIED if decision == "approve" else None
            con.execute(
                "INSERT INTO approvals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    run_id,
                    as_of,
                    cid,
                    decision,
                    person,
                    key_id,
                    when,
                    current,
                    recommended,
                    logged,
                    applied,
                    note,
                ],
            )
            out.append(
                {
                    "campaign_id": cid,
                    "decision": decision,
                    "person": person,
                    "decided_at": when.isoformat(timespec="seconds"),
                    "current": current,
                    "recommended": recommended,
                    "edit_logged": logged,
                    "applied": applied,
                }
            )
    return out
