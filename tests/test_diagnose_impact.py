"""Impact-ranked diagnoses: money at stake within a severity, one diagnosis per root cause."""

from __future__ import annotations

from datetime import date
from typing import Any

from signalloop.diagnose import MIN_AFFECTED_EVENTS, Evidence, diagnose_evidence
from signalloop.report import _diagnosis_table

AS_OF = date(2026, 3, 1)
#: 1,000 a day across the account: c1 spends 660 of it, c2 300, c3 40
SPEND = {
    "account": {
        "spend_per_day": 1000.0,
        "conversions_per_week": 700.0,
        "conversions_source": "first_party",
        "conversions": 6000,
        "touchpoints": 90000,
        "crm_records": 800,
    },
    "campaigns": {
        "c1": {
            "spend_per_day": 660.0,
            "conversions_per_week": 420.0,
            "conversions_source": "first_party",
        },
        "c2": {
            "spend_per_day": 300.0,
            "conversions_per_week": 250.0,
            "conversions_source": "first_party",
        },
        "c3": {"spend_per_day": 40.0, "conversions_per_week": 30.0, "conversions_source": None},
    },
}


def finding(
    check: str, cid: str | None, severity: str, evidence: dict[str, Any], msg: str = "x"
) -> dict[str, Any]:
    return {
        "check": check,
        "campaign_id": cid,
        "severity": severity,
        "message": msg,
        "evidence": evidence,
        "active": severity == "critical",
    }


def fatigue(cid: str, share: float) -> dict[str, Any]:
    return {
        "campaign_id": cid,
        "starvation": True,
        "fatigued_spend_share_7d": share,
        "days_since_newest_creative": 30,
        "live_creatives": 4,
        "message": f"creative starvation: {share:.0%} of spend on fatigued creatives",
    }


def evidence(
    findings: list[dict[str, Any]],
    campaigns: list[dict[str, Any]] | None = None,
    spend: dict[str, Any] | None = None,
) -> Evidence:
    return Evidence(
        AS_OF,
        50,
        {"findings": findings},
        {"entities": []},
        {"campaigns": campaigns or [], "creatives": []},
        None,
        [],
        {},
        SPEND if spend is None else spend,
    )


def test_a_handful_of_unclaimed_duplicates_does_not_outrank_fatigue() -> None:
    # the demo's case: 1 duplicate among 6 unattributed conversions, critical by its share
    dup = finding(
        "duplicates",
        None,
        "critical",
        {"kind": "conversions", "copies": 1, "ids": 1, "share": 0.1667},
        "1 duplicate conversion events (16.7% of 6 that no campaign can claim)",
    )
    out = diagnose_evidence(evidence([dup], [fatigue("c1", 0.66)]))["diagnoses"]
    assert [(d["campaign_id"], d["failure_type"], d["severity"]) for d in out] == [
        ("c1", "creative_fatigue", "warn"),
        (None, "attribution_error", "info"),
    ]
    first, dx = out
    assert first["impact"] == {
        "spend_per_day": 660.0,
        "conversions_per_week": 420.0,
        "share_of_account_spend": 0.66,
        "conversions_source": "first_party",
    }
    # 1 of the account's 6,000 conversions: 1/6000 of its spend and conversions
    assert dx["impact"] == {
        "spend_per_day": 0.17,
        "conversions_per_week": 0.1,
        "share_of_account_spend": 0.0002,
        "conversions_source": "first_party",
    }
    assert dx["evidence"]["affected_events"] == 1
    assert "only 1 event(s) affected" in dx["root_cause"]


def test_enough_affected_events_keep_their_severity() -> None:
    dup = finding(
        "duplicates", "c2", "critical", {"kind": "conversions", "copies": MIN_AFFECTED_EVENTS}
    )
    few = finding("timestamps", "c2", "warn", {"conversion_before_click": MIN_AFFECTED_EVENTS - 1})
    out = diagnose_evidence(evidence([dup, few]))["diagnoses"]
    assert [(d["evidence"]["source"], d["severity"]) for d in out] == [
        ("check:duplicates", "critical"),
        ("check:timestamps", "info"),
    ]


def test_within_a_severity_money_at_stake_comes_first() -> None:
    # c3 is the more confident fatigue diagnosis, c1 has 16x its spend at stake
    out = diagnose_evidence(evidence([], [fatigue("c3", 0.95), fatigue("c1", 0.62)]))
    got = [(d["campaign_id"], d["confidence"]) for d in out["diagnoses"]]
    assert got[0][0] == "c1" and got[1][0] == "c3"
    assert got[0][1] < got[1][1]


def test_one_diagnosis_per_root_cause() -> None:
    found = [
        finding("duplicates", "c2", "warn", {"kind": "conversions", "copies": 40}),
        finding("utm_hygiene", "c2", "warn", {"column": "utm_source", "rows": 300}),
        finding("utm_hygiene", "c2", "warn", {"column": "utm_medium", "rows": 200}),
        finding(
            "attribution_match",
            "c2",
            "warn",
            {
                "kind": "click_id_loss",
                "share_before": 0.95,
                "share_after": 0.3,
                "unmatched_after": 120,
            },
        ),
        finding("attribution_match", "c2", "warn", {"kind": "platform_disagreement"}),
    ]
    out = diagnose_evidence(evidence(found))["diagnoses"]
    assert all(d["failure_type"] == "attribution_error" for d in out)
    by_source = {d["evidence"]["source"]: d for d in out}
    assert len(out) == 4
    # the two UTM findings are one root cause; the two attribution_match kinds are two
    assert by_source["check:utm_hygiene"]["evidence"]["findings"] == 2
    assert by_source["check:utm_hygiene"]["evidence"]["affected_events"] == 500
    actions = [d["recovery_action"] for d in out]
    assert len(set(actions)) == 4 and not any(";" in a for a in actions)
    loss = next(d for d in out if d["recovery_action"].startswith("fix click-id capture"))
    assert loss["confidence"] == 0.95  # a 65-point fall
    assert out[0] is loss  # the most confident of the four, all on c2's spend


def test_account_share_counts_touchpoints_for_utm_findings() -> None:
    variants = finding(
        "utm_hygiene",
        None,
        "warn",
        {
            "column": "utm_source",
            "proposed": "facebook",
            "variants": {"facebook": 20000, "Facebook": 600, "FACEBOOK": 300},
        },
    )
    (dx,) = diagnose_evidence(evidence([variants]))["diagnoses"]
    assert dx["evidence"]["affected_events"] == 900
    assert dx["impact"]["share_of_account_spend"] == 0.01  # 900 of 90,000 touchpoints
    assert dx["impact"]["spend_per_day"] == 10.0


def test_no_spend_evidence_means_unknown_impact_not_zero() -> None:
    out = diagnose_evidence(evidence([], [fatigue("c1", 0.66)], spend={}))["diagnoses"]
    assert out[0]["impact"] == {
        "spend_per_day": None,
        "conversions_per_week": None,
        "share_of_account_spend": None,
        "conversions_source": None,
    }


def test_report_table_shows_the_impact() -> None:
    doc = diagnose_evidence(evidence([], [fatigue("c1", 0.66)]))
    html = _diagnosis_table(doc)
    assert "<th>at stake</th>" in html
    assert "660.00 a day" in html and "66.0% of spend" in html and "420 conversions a week" in html
