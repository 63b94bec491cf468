"""Feedback depth per campaign and the shallow-model flag, on seeded accounts and by hand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from signalloop import simulate as sim
from signalloop.checks.engine import run_checks
from signalloop.errors import UsageError
from signalloop.ingest import ingest_file
from signalloop.models.depth import LEVELS, feedback_depth, shallow_model
from signalloop.store import Workspace


def load(tmp: Path, *, crm: bool) -> Workspace:
    result = sim.simulate(sim.SimulationConfig(days=60, campaigns=4, seed=3))
    paths = sim.write(result, tmp / "data")
    ws = Workspace(tmp / "ws.duckdb")
    for kind in ("spend", "touchpoints", "changes"):
        ingest_file(ws, kind, paths[kind])
    if crm:
        ingest_file(ws, "crm", paths["crm"])
        ingest_file(ws, "conversions", paths["conversions"])
    else:  # no CRM sync: no records and no offline imports of their stages
        conv = pd.read_csv(paths["conversions"], dtype=str)
        conv = conv[~conv.source.isin(["offline", "crm"])]
        conv.to_csv(tmp / "conv.csv", index=False)
        ingest_file(ws, "conversions", tmp / "conv.csv")
    return ws


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    ws = load(tmp_path_factory.mktemp("depth"), crm=True)
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def no_crm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    ws = load(tmp_path_factory.mktemp("nocrm"), crm=False)
    yield ws
    ws.close()


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["campaign_id"]: r for r in rows}


def test_lead_and_purchase_campaigns_reach_revenue(full: Workspace) -> None:
    rows = by_id(feedback_depth(full))
    assert list(rows) == ["c01", "c02", "c03", "c04"]
    for cid in ("c01", "c04"):  # lead campaigns: CRM records, some won
        c = rows[cid]["counts"]
        assert rows[cid]["depth"] == "revenue" and c["pipeline"] > 0 < c["revenue"] < c["pipeline"]
    for cid in ("c02", "c03"):  # purchase: revenue without CRM
        c = rows[cid]["counts"]
        assert rows[cid]["depth"] == "revenue" and c["pipeline"] == 0
        assert c["revenue"] == c["conversion"] > 0
    assert all(set(r["counts"]) == set(LEVELS) for r in rows.values())
    assert all(r["counts"]["click"] > r["counts"]["conversion"] for r in rows.values())
    n = full.con.execute("SELECT count(*) FROM touchpoints WHERE campaign_id = 'c02'").fetchone()
    assert n is not None and rows["c02"]["counts"]["click"] == n[0]
    # the label_completeness check agrees on every campaign
    report = run_checks(full, only=["label_completeness"])
    check = {
        f.campaign_id: f.evidence["depth"]
        for f in report.findings
        if f.check == "label_completeness" and "depth" in f.evidence
    }
    assert check == {cid: r["depth"] for cid, r in rows.items()}
    # given the run's checks, the same rows without running the check again
    checks = run_checks(full, store_exclusions=False).to_dict()
    assert feedback_depth(full, checks=checks) == feedback_depth(full)
    for f in checks["findings"]:  # and it is the checks' figure that is read
        if f["check"] == "label_completeness":
            f["evidence"]["outcome_known_share"] = 0.123
    assert {r["outcome_known_share"] for r in feedback_depth(full, checks=checks)} == {0.123}


def test_a_conversion_model_on_lead_campaigns_is_flagged(full: Workspace) -> None:
    rows = feedback_depth(full)
    flags = by_id(shallow_model("conversion", rows))
    assert set(flags) == {"c01", "c02", "c03", "c04"}
    assert flags["c01"]["available"] == "revenue" and "train on won" in flags["c01"]["message"]
    assert "train on value" in flags["c02"]["message"]
    assert shallow_model("won", rows) == [] and shallow_model("value", rows) == []
    assert {f["campaign_id"] for f in shallow_model("sql", rows)} == {"c01", "c02", "c03", "c04"}


def test_lead_campaign_without_crm_stops_at_conversion(no_crm: Workspace) -> None:
    rows = by_id(feedback_depth(no_crm))
    for cid in ("c01", "c04"):
        assert rows[cid]["depth"] == "conversion"
        assert rows[cid]["counts"]["pipeline"] == rows[cid]["counts"]["revenue"] == 0
        assert rows[cid]["outcome_known_share"] is None
    assert rows["c02"]["depth"] == "revenue"
    assert {f["campaign_id"] for f in shallow_model("conversion", list(rows.values()))} == {
        "c02",
        "c03",
    }


def test_tiny_workspace_exact_depths(ws: Workspace) -> None:
    ws.con.executemany(
        "INSERT INTO touchpoints (touch_id, ts, user_id, click_id, campaign_id) "
        "VALUES (?, ?, ?, ?, ?)",
        [
            ("t1", "2026-01-01 10:00", "u1", "k1", "lead"),
            ("t2", "2026-01-01 11:00", "u2", "k2", "lead"),
            ("t3", "2026-01-01 12:00", "u3", "k3", "shop"),
            ("t4", "2026-01-01 13:00", "u4", "k4", "clicks"),
        ],
    )
    ws.con.executemany(
        "INSERT INTO conversions (conversion_id, ts, kind, user_id, click_id, value, source) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            ("cv1", "2026-01-01 12:00", "lead", "u1", "k1", None, "pixel"),
            ("cv2", "2026-01-01 13:00", "lead", "u2", "k2", None, "pixel"),
            ("op1", "2026-01-05 09:00", "opportunity", "u1", "k1", 900.0, "offline"),
            ("cv3", "2026-01-02 09:00", "purchase", "u3", "k3", 40.0, "pixel"),
        ],
    )
    ws.con.executemany(
        "INSERT INTO crm (record_id, stage, ts, user_id) VALUES (?, ?, ?, ?)",
        [("rec1", "lead", "2026-01-01 12:05", "u1"), ("rec1", "sql", "2026-01-03 12:05", "u1")],
    )
    rows = by_id(feedback_depth(ws))
    assert {c: r["depth"] for c, r in rows.items()} == {
        "clicks": "click",
        "lead": "pipeline",
        "shop": "revenue",
    }
    assert rows["lead"]["counts"] == {"click": 2, "conversion": 2, "pipeline": 1, "revenue": 0}
    assert rows["shop"]["counts"] == {"click": 1, "conversion": 1, "pipeline": 0, "revenue": 1}
    flags = shallow_model("conversion", list(rows.values()))
    assert flags == [
        {
            "campaign_id": "lead",
            "outcome": "conversion",
            "available": "pipeline",
            "message": "lead: trained on leads where pipeline outcomes exist: train on sql or won",
        },
        {
            "campaign_id": "shop",
            "outcome": "conversion",
            "available": "revenue",
            "message": "shop: trained on conversions where revenue outcomes exist: train on value",
        },
    ]
    assert [f["campaign_id"] for f in shallow_model("sql", list(rows.values()))] == ["shop"]
    with pytest.raises(UsageError, match="unknown outcome"):
        shallow_model("clicks", [])


def test_the_check_reads_closed_records_from_the_rollup_as_from_the_rows(full: Workspace) -> None:
    from signalloop.checks import hygiene
    from signalloop.checks.base import REGISTRY, CheckContext, default_as_of
    from signalloop.config import Settings

    settings = Settings()
    as_of = default_as_of(full)
    assert as_of is not None
    # (records older than 20 days: the 60-day account has none older than the default)
    opt = {**REGISTRY["label_completeness"].options(settings), "outcome_age_days": 20}
    at_end = CheckContext(full, as_of, settings)
    assert at_end.at_the_end  # (the daily run's case: the stored crm_record_outcome)
    from_rows = CheckContext(full, as_of, settings)
    from_rows.__dict__["at_the_end"] = False  # (what a cut before the end reads)

    def evidence(ctx: CheckContext) -> dict[str, Any]:
        return {f.campaign_id: (f.message, f.evidence) for f in hygiene._feedback_depth(ctx, opt)}

    got = evidence(at_end)
    assert got == evidence(from_rows)
    shares = [e["outcome_known_share"] for _, e in got.values()]
    assert any(s is not None and 0 < s < 1 for s in shares)  # records closed and still open
