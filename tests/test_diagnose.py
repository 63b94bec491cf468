"""Diagnosis on a seeded simulated account with known faults, and the rules on plain evidence."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

import signalloop.attribution
from signalloop.checks import run_checks
from signalloop.checks.base import CheckContext, default_as_of
from signalloop.config import Settings
from signalloop.diagnose import (
    FAILURE_TYPES,
    OVERRIDE_WARN_RESETS,
    RULES,
    Evidence,
    diagnose,
    diagnose_evidence,
    spend_at_stake,
)
from signalloop.errors import UsageError
from signalloop.fatigue import fatigue
from signalloop.models.depth import feedback_depth
from signalloop.nowcast import nowcast
from signalloop.phase import phase
from signalloop.store import Workspace

from .conftest import simulated_workspace

FAULTS = (
    "tracking_outage@c02:52-59",  # open at the as-of date
    "override_storm@c05:20-50",
    "creative_starvation@c03:0-59",
    "utm_mess@c04:10-59",
    "duplicate_events@c01:30-59",
)
#: campaign -> the failure type its fault must produce (c06 stays clean)
EXPECTED = {
    "c01": "attribution_error",
    "c02": "integration_dropout",
    "c03": "creative_fatigue",
    "c04": "attribution_error",
    "c05": "override_churn",
}
KEYS = {
    "campaign_id",
    "failure_type",
    "root_cause",
    "evidence",
    "recovery_action",
    "expected_recovery_days",
    "severity",
    "confidence",
    "impact",
}
IMPACT = {"spend_per_day", "conversions_per_week", "share_of_account_spend", "conversions_source"}
RANK = {"info": 0, "warn": 1, "critical": 2}


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    tmp = tmp_path_factory.mktemp("diag")
    ws, _, _ = simulated_workspace(tmp, days=60, campaigns=6, seed=11, faults=FAULTS)
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def precomputed(account: Workspace) -> tuple[dict[str, Any], dict[str, Any]]:
    checks = run_checks(account).to_dict()
    state = {
        "phase": phase(account).to_dict(),
        "fatigue": fatigue(account).to_dict(),
        "nowcast": nowcast(account).to_dict(),
        "depth": feedback_depth(account),
    }
    return checks, state


@pytest.fixture(scope="module")
def report(account: Workspace, precomputed: tuple[dict[str, Any], dict[str, Any]]) -> Any:
    checks, state = precomputed
    return diagnose(account, checks=checks, state=state)


def by_campaign(report: dict[str, Any]) -> dict[str | None, list[dict[str, Any]]]:
    out: dict[str | None, list[dict[str, Any]]] = {}
    for d in report["diagnoses"]:
        out.setdefault(d["campaign_id"], []).append(d)
    return out


def test_json_contract(report: dict[str, Any]) -> None:
    assert set(report) == {"as_of", "diagnoses"}
    assert report["as_of"] == "2026-03-01"
    assert report["diagnoses"]
    for d in report["diagnoses"]:
        assert set(d) == KEYS
        assert d["failure_type"] in FAILURE_TYPES
        assert d["severity"] in RANK
        assert 0.0 <= d["confidence"] <= 1.0
        assert isinstance(d["evidence"], dict) and d["evidence"]["source"]
        assert d["root_cause"] and d["recovery_action"]
        days = d["expected_recovery_days"]
        assert days is None or (isinstance(days, int) and days >= 0)
        assert set(d["impact"]) == IMPACT
        assert d["impact"]["spend_per_day"] >= 0.0
        assert 0.0 <= d["impact"]["share_of_account_spend"] <= 1.0


def test_ordered_most_severe_then_spend_at_stake_then_most_confident(
    report: dict[str, Any],
) -> None:
    keys = [
        (-RANK[d["severity"]], -d["impact"]["spend_per_day"], -d["confidence"])
        for d in report["diagnoses"]
    ]
    assert keys == sorted(keys)
    assert report["diagnoses"][0]["severity"] == "critical"


@pytest.mark.parametrize("campaign, failure", sorted(EXPECTED.items()))
def test_fault_among_top_two(report: dict[str, Any], campaign: str, failure: str) -> None:
    top = [d["failure_type"] for d in by_campaign(report)[campaign][:2]]
    assert failure in top


def test_fault_severities(report: dict[str, Any]) -> None:
    first = {cid: ds[0] for cid, ds in by_campaign(report).items()}
    assert first["c02"]["failure_type"] == "integration_dropout"
    assert first["c02"]["severity"] == "critical"  # the outage is still open
    assert first["c02"]["evidence"]["observed"] == 0
    assert first["c01"]["severity"] == "critical"  # duplicates hold the gate
    assert first["c05"]["severity"] == "warn"
    assert first["c05"]["evidence"]["max_adset_human_resets_window"] >= OVERRIDE_WARN_RESETS
    # the account-wide UTM taxonomy finding is an account diagnosis
    assert [d["failure_type"] for d in by_campaign(report)[None]] == ["attribution_error"]


def test_outage_silences_volume_diagnoses(report: dict[str, Any]) -> None:
    types = {d["failure_type"] for d in by_campaign(report)["c02"]}
    assert not types & {"signal_gap", "low_volume_manual", "learning_variance"}


def test_clean_campaign_has_no_warn_or_critical(report: dict[str, Any]) -> None:
    assert all(d["severity"] == "info" for d in by_campaign(report).get("c06", []))


def test_crm_records_are_counted_from_the_stored_records_at_the_end_and_the_rows_before(
    account: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    end = default_as_of(account)
    assert end is not None and CheckContext(account, end, Settings()).at_the_end
    read = []
    stored = signalloop.attribution.crm_record_campaigns

    def spy(*args: Any, **kw: Any) -> Any:
        read.append(args[1:])
        return stored(*args, **kw)

    monkeypatch.setattr(signalloop.attribution, "crm_record_campaigns", spy)
    sql = "SELECT count(DISTINCT record_id) FROM crm WHERE ts < ?"
    for as_of, from_stored in ((end, True), (end - timedelta(days=20), False)):
        cut = CheckContext(account, as_of, Settings()).cutoff
        (rows,) = account.con.execute(sql, [cut]).fetchone() or (0,)
        read.clear()
        assert spend_at_stake(account, as_of)["account"]["crm_records"] == rows > 0
        assert read == ([(cut,)] if from_stored else [])


def test_healthy_account_gets_no_warn_or_critical(tmp_path: Path) -> None:
    # every campaign run healthy: every ad set over the threshold, a creative pipeline
    ws, _, _ = simulated_workspace(
        tmp_path, days=60, campaigns=4, seed=11, healthy=("*",), db=tmp_path / "healthy.duckdb"
    )
    with ws:
        found = diagnose(ws)["diagnoses"]
    assert found  # info only: learning after resets, people's edits
    assert all(d["severity"] == "info" for d in found), [
        (d["campaign_id"], d["failure_type"], d["severity"]) for d in found
    ]
    assert not {d["failure_type"] for d in found} & {"creative_fatigue", "low_volume_manual"}


def test_computes_what_is_missing(
    account: Workspace, precomputed: tuple[dict[str, Any], dict[str, Any]], report: Any
) -> None:
    checks, state = precomputed
    partial = diagnose(account, checks=checks, state={"phase": state["phase"]})
    assert partial == report
    # models-only rules stay silent without their evidence
    assert not {d["failure_type"] for d in report["diagnoses"]} & {"overfitting", "audience_bias"}


def empty_evidence(**kw: Any) -> Evidence:
    base: dict[str, Any] = {
        "as_of": date(2026, 3, 1),
        "threshold": 50,
        "checks": {"findings": []},
        "phase": {"entities": []},
        "fatigue": {"campaigns": [], "creatives": []},
        "nowcast": None,
        "depth": [],
    }
    base.update(kw)
    return Evidence(**base)


def test_model_rules_fire_on_given_evidence() -> None:
    assert diagnose_evidence(empty_evidence())["diagnoses"] == []
    models = {
        "backtests": [
            {"name": "lead", "campaign_id": "c1", "overfit": True, "gap": {"auc": 0.12}},
            {"name": "ok", "overfit": False, "gap": {"auc": 0.01}},
        ],
        "audience": [
            {"campaign_id": "c2", "known_user_share": 0.92},
            {"campaign_id": "c3", "known_user_share": 0.3},
        ],
    }
    out = diagnose_evidence(empty_evidence(models=models))["diagnoses"]
    assert [(d["campaign_id"], d["failure_type"], d["severity"]) for d in out] == [
        ("c1", "overfitting", "critical"),
        ("c2", "audience_bias", "warn"),
    ]


def test_feedback_loop_and_override_rules() -> None:
    depth = [
        {"campaign_id": "c1", "depth": "conversion", "counts": {"click": 900, "conversion": 40}},
        {"campaign_id": "c2", "depth": "revenue", "counts": {"click": 900, "revenue": 3}},
    ]
    resets = [
        {"date": f"2026-02-{d:02d}", "actor": "human", "detail": "", "field": "bid"}
        for d in range(10, 10 + OVERRIDE_WARN_RESETS)
    ]
    ent = {
        "campaign_id": "c3",
        "entity_id": "c3_as1",
        "state": "stable",
        "projected_conversions_7d": 80.0,
        "resets": resets,
        "human_resets": len(resets),
        "days_lost": 12,
        "evaluation_ready_on": "2026-03-20",
    }
    out = diagnose_evidence(empty_evidence(depth=depth, phase={"entities": [ent]}))["diagnoses"]
    got = {(d["campaign_id"], d["failure_type"], d["severity"]) for d in out}
    assert got == {("c1", "feedback_loop_broken", "warn"), ("c3", "override_churn", "warn")}


def test_rules_are_a_registry() -> None:
    assert len(set(FAILURE_TYPES)) == len(RULES)
    for needed in (
        "integration_dropout",
        "attribution_error",
        "learning_variance",
        "signal_gap",
        "low_volume_manual",
        "creative_fatigue",
        "override_churn",
        "feedback_loop_broken",
        "overfitting",
        "audience_bias",
    ):
        assert needed in FAILURE_TYPES


def test_empty_workspace_is_a_usage_error(tmp_path: Path) -> None:
    with Workspace(tmp_path / "empty.duckdb") as ws, pytest.raises(UsageError):
        diagnose(ws)


def test_cli_diagnose(account: Workspace, report: Any, tmp_path: Path) -> None:
    import json
    import shutil
    import subprocess
    import sys

    account.con.execute("CHECKPOINT")  # the fixture holds the file open: work on a copy
    db = tmp_path / "ws.duckdb"
    shutil.copy(account.path, db)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "signalloop", "diagnose", "--db", str(db), *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    p = run("--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["as_of"] == report["as_of"]
    assert [d["failure_type"] for d in doc["diagnoses"]] == [
        d["failure_type"] for d in report["diagnoses"]
    ]
    text = run("--min-severity", "critical")
    assert text.returncode == 0 and "critical" in text.stdout and "info" not in text.stdout
    bad = run("--min-severity", "loud")
    assert bad.returncode == 2 and "--min-severity" in bad.stderr
