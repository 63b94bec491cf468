"""Who converts: known users (converted or in the CRM before the click) against new ones."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from signalloop.audience import audience
from signalloop.diagnose import diagnose_evidence
from signalloop.ingest import ingest_file
from signalloop.store import Workspace

from .conftest import simulated_workspace, write_csv

HEADER = ["conversion_id", "ts", "kind", "user_id", "click_ts", "campaign_id"]


def test_known_users_are_counted_from_before_the_click(ws: Workspace, tmp_path: Path) -> None:
    rows = [
        # u1 converted in January: its March conversion is from a known user
        ("a1", "2026-01-10T10:00:00Z", "purchase", "u1", "2026-01-10T08:00:00Z", "c1"),
        ("a2", "2026-03-20T10:00:00Z", "purchase", "u1", "2026-03-20T09:00:00Z", "c1"),
        # u2: first conversion in the window, a new user
        ("a3", "2026-03-21T10:00:00Z", "purchase", "u2", "2026-03-21T09:00:00Z", "c1"),
        # u3: in the CRM since February (a lead), converts in March on c2: known
        ("a4", "2026-03-22T10:00:00Z", "purchase", "u3", "2026-03-22T09:00:00Z", "c2"),
        # u4: the CRM record starts minutes after this conversion's click: still new
        ("a5", "2026-03-25T10:00:00Z", "lead", "u4", "2026-03-25T09:00:00Z", "c2"),
        # no user id: not counted
        ("a6", "2026-03-25T11:00:00Z", "purchase", "", "2026-03-25T10:00:00Z", "c2"),
    ]
    ingest_file(ws, "conversions", write_csv(tmp_path / "conv.csv", HEADER, rows))
    crm = [
        ("r3", "lead", "2026-02-01T00:00:00Z", "u3"),
        ("r4", "lead", "2026-03-25T09:05:00Z", "u4"),
    ]
    ingest_file(
        ws, "crm", write_csv(tmp_path / "crm.csv", ["record_id", "stage", "ts", "user_id"], crm)
    )
    got = {a["campaign_id"]: a for a in audience(ws, date(2026, 3, 31))}
    assert {k: (a["conversions"], a["known_user_conversions"]) for k, a in got.items()} == {
        "c1": (2, 1),
        "c2": (2, 1),
    }
    assert got["c1"]["known_user_share"] == 0.5
    assert got["c1"]["window"] == ["2026-03-04", "2026-03-31"]
    # a January as-of sees only the first conversion, from a then-new user
    jan = audience(ws, date(2026, 1, 31))
    assert [(a["campaign_id"], a["known_user_conversions"]) for a in jan] == [("c1", 0)]


@pytest.mark.parametrize(("share", "fires"), [(0.69, False), (0.85, True)])
def test_the_audience_bias_rule_reads_the_share(share: float, fires: bool) -> None:
    from signalloop.diagnose import RULES, Evidence

    ev = Evidence(
        as_of=date(2026, 3, 31),
        threshold=50,
        checks={"findings": [], "campaigns": [], "exclusions": []},
        phase={"entities": []},
        fatigue={"creatives": [], "campaigns": []},
        nowcast={"campaigns": []},
        depth=[],
        models={"audience": [{"campaign_id": "c1", "known_user_share": share, "conversions": 90}]},
    )
    types = [d["failure_type"] for d in diagnose_evidence(ev, RULES)["diagnoses"]]
    assert ("audience_bias" in types) is fires


def test_the_simulated_fault_is_seen_on_its_campaign_only(tmp_path: Path) -> None:
    w, _, _ = simulated_workspace(
        tmp_path, days=60, campaigns=4, seed=3, faults=("audience_bias@c02:30-59",), db=":memory:"
    )
    with w:
        shares = {a["campaign_id"]: a["known_user_share"] for a in audience(w)}
    assert shares["c02"] > 0.75
    assert max(v for k, v in shares.items() if k != "c02") < 0.15
