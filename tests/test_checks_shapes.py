"""Checks and diagnoses on partial data shapes: what the click log used to be needed for."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from tests.conftest import simulated_workspace

from signalloop.checks import run_checks
from signalloop.diagnose import diagnose
from signalloop.phase import phase

START = date(2026, 1, 1)


def test_outage_found_from_the_spend_exports_clicks(tmp_path: Path) -> None:
    """No touchpoints: the expected conversions come from the spend export's daily clicks."""
    ws, _, _ = simulated_workspace(
        tmp_path,
        days=45,
        campaigns=4,
        seed=5,
        faults=("tracking_outage@c02:39-44",),
        shape="spend_conversions",
    )
    with ws:
        as_of = START + timedelta(days=44)
        checks = run_checks(ws, as_of=as_of).to_dict()
        drops = [
            f
            for f in checks["findings"]
            if f["check"] == "integration_dropout" and f["evidence"].get("kind") != "delivery_stop"
        ]
        assert [(f["campaign_id"], f["active"]) for f in drops] == [("c02", True)]
        assert drops[0]["evidence"]["clicks_source"] == "spend"
        assert drops[0]["window"]["start"] == str(START + timedelta(days=39))
        gates = {c["campaign_id"]: c["gate"] for c in checks["campaigns"]}
        assert gates["c02"] == "hold" and gates["c01"] == "open"
        top = diagnose(ws, as_of, checks=checks)["diagnoses"][0]
        assert (top["campaign_id"], top["failure_type"], top["severity"]) == (
            "c02",
            "integration_dropout",
            "critical",
        )


def test_low_volume_seen_without_an_edit_log(tmp_path: Path) -> None:
    """Without the edit log no reset is seen: an ad set that once left learning reads stable,
    and its volume still has to be judged."""
    ws, _, _ = simulated_workspace(
        tmp_path, days=60, campaigns=3, seed=2, faults=("low_volume@c03:30-",), shape="spend"
    )
    with ws:
        as_of = START + timedelta(days=59)
        ph = phase(ws, as_of).to_dict()
        assert ph["edit_log"] is False
        c03 = [e for e in ph["entities"] if e["campaign_id"] == "c03"]
        assert all(e["conversions_source"] == "platform_reported" for e in c03)
        assert all(e["projected_conversions_7d"] < 50 for e in c03)
        dx = [
            d
            for d in diagnose(ws, as_of, state={"phase": ph})["diagnoses"]
            if d["campaign_id"] == "c03"
        ]
        assert dx[0]["failure_type"] in ("signal_gap", "low_volume_manual")
        assert dx[0]["evidence"]["volume_source"] == "platform_reported"


def test_stable_ad_set_below_threshold_counts_only_without_an_edit_log() -> None:
    from signalloop.diagnose import Evidence, diagnose_evidence

    entity = {
        "level": "adset",
        "entity_id": "c01_as1",
        "campaign_id": "c01",
        "state": "stable",
        "conversions_7d": 15,
        "projected_conversions_7d": 16.0,
        "conversions_source": "platform_reported",
        "history_days": 90,
        "resets": [],
        "human_resets": 0,
        "days_lost": 0,
        "evaluation_ready_on": None,
        "last_significant_edit": None,
    }

    def types(edit_log: bool) -> list[str]:
        ev = Evidence(
            date(2026, 3, 31),
            50,
            {"findings": []},
            {"entities": [entity], "edit_log": edit_log},
            {"campaigns": [], "creatives": []},
            None,
            [],
            {"audience": []},
        )
        return [d["failure_type"] for d in diagnose_evidence(ev)["diagnoses"]]

    assert types(edit_log=True) == []
    assert types(edit_log=False) == ["signal_gap"]
