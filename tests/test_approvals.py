"""Approving and rejecting budget lines: recorded once, as human budget edits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from signalloop import approvals
from signalloop.errors import UsageError
from signalloop.store import Workspace

DOC: dict[str, Any] = {
    "run_id": "r1",
    "as_of": "2026-03-31",
    "allocation": {
        "arms": [
            {"campaign_id": "c01", "current": 100.0, "recommended": 130.0},
            {"campaign_id": "c02", "current": 50.0, "recommended": 50.0},
            {"campaign_id": "c03", "current": 80.0, "recommended": 60.0},
        ]
    },
}
NOW = datetime(2026, 4, 1, 7, 30, tzinfo=UTC)


def test_approve_one_then_all_open() -> None:
    ws = Workspace(":memory:")
    first = approvals.decide(ws, DOC, ["c01"], "approve", person="maria", key_id="k1", now=NOW)
    assert first[0]["edit_logged"] and first[0]["applied"] == approvals.NOT_APPLIED
    rest = approvals.decide(ws, DOC, None, "reject", person="ana", key_id="k2", now=NOW)
    assert [d["campaign_id"] for d in rest] == ["c02", "c03"]
    assert all(not d["edit_logged"] for d in rest)
    got = approvals.decisions(ws, "r1")
    assert {c: d["decision"] for c, d in got.items()} == {
        "c01": "approve",
        "c02": "reject",
        "c03": "reject",
    }
    rows = ws.con.execute(
        "SELECT ts, level, entity_id, field, old_value, new_value, actor, attrs FROM changes"
    ).fetchall()
    assert len(rows) == 1
    ts, level, ent, fld, old, new, actor, attrs = rows[0]
    assert (level, ent, fld, old, new, actor) == (
        "campaign",
        "c01",
        "budget",
        "100.0",
        "130.0",
        "human",
    )
    assert ts == datetime(2026, 4, 1, 7, 30)
    assert json.loads(attrs) == {"person": "maria", "run_id": "r1", "via": "signalloop"}


def test_unchanged_line_approved_logs_no_edit() -> None:
    ws = Workspace(":memory:")
    (d,) = approvals.decide(ws, DOC, ["c02"], "approve", person="maria", key_id="k", now=NOW)
    assert not d["edit_logged"]
    assert ws.con.execute("SELECT count(*) FROM changes").fetchone() == (0,)


def test_decided_once_and_errors_name_the_problem() -> None:
    ws = Workspace(":memory:")
    approvals.decide(ws, DOC, ["c01"], "approve", person="maria", key_id="k", now=NOW)
    with pytest.raises(approvals.AlreadyDecided, match="c01 was already approved by maria"):
        approvals.decide(ws, DOC, ["c01"], "reject", person="ana", key_id="k")
    with pytest.raises(UsageError, match="no budget line for c09"):
        approvals.decide(ws, DOC, ["c09"], "approve", person="ana", key_id="k")
    with pytest.raises(UsageError, match="decision must be one of"):
        approvals.decide(ws, DOC, ["c02"], "maybe", person="ana", key_id="k")
    with pytest.raises(UsageError, match="no run id"):
        approvals.decide(ws, DOC | {"run_id": None}, None, "approve", person="a", key_id="k")
    # a failed call leaves nothing behind
    assert ws.con.execute("SELECT count(*) FROM approvals").fetchone() == (1,)


def test_approved_change_is_a_significant_human_budget_edit() -> None:
    """The approval is a `changes` row of the kind the learning-phase replay counts: a human
    budget edit over the phase's threshold (the end-to-end replay is in test_web_pages)."""
    from signalloop.phase import BUDGET_THRESHOLD

    assert BUDGET_THRESHOLD < 0.30  # c01's +30% is a significant edit
    ws = Workspace(":memory:")
    approvals.decide(ws, DOC, ["c01"], "approve", person="maria", key_id="k", now=NOW)
    actor = ws.con.execute("SELECT actor FROM changes WHERE entity_id = 'c01'").fetchone()
    assert actor == ("human",)
