"""Diagnose and the learning phase on partial data shapes: no bare zeros.

A Meta export alone (platform-reported conversions, one row per ad for a whole period
stamped with one date), a daily spend export alone, spend plus conversions without
touchpoints, and spend with no conversions of any kind.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from signalloop import simulate as sim
from signalloop.checks import run_checks
from signalloop.diagnose import diagnose, spend_at_stake
from signalloop.ingest import ingest_file
from signalloop.phase import STATES, phase
from signalloop.store import Workspace

from .conftest import shared_data, write_csv

#: Platform-reported conversions per campaign in the KAG export (Total_Conversion).
KAG_REPORTED = {"1178": 2669, "936": 537, "916": 58}
VOLUME = ("signal_gap", "low_volume_manual")


@pytest.fixture(scope="module")
def kag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    path = shared_data("facebook_ads_kag", "KAG_conversion_data.csv")
    ws = Workspace(tmp_path_factory.mktemp("kag") / "kag.duckdb")
    ingest_file(ws, "spend", path, profile="meta_ads", report_date=date(2017, 8, 30))
    yield ws
    ws.close()


def test_kag_phase_uses_the_platform_counts_and_says_the_state_is_unknown(
    kag: Workspace,
) -> None:
    doc = phase(kag).to_dict()
    per: dict[str, int] = {}
    for e in doc["entities"]:
        assert e["state"] == "unknown"
        assert e["conversions_source"] == "platform_reported"
        assert e["missing"] == "daily history" and "daily breakdown" in e["unlock"]
        assert e["history_days"] == 1
        # one period's total, not extrapolated to 7 days from a single day
        assert e["projected_conversions_7d"] == e["conversions_7d"]
        per[e["campaign_id"]] = per.get(e["campaign_id"], 0) + e["conversions_7d"]
    assert per == KAG_REPORTED


def test_kag_diagnoses_read_platform_conversions_never_a_bare_zero(kag: Workspace) -> None:
    out = diagnose(kag)["diagnoses"]
    volume = {d["campaign_id"]: d for d in out if d["failure_type"] in VOLUME}
    assert set(volume) == set(KAG_REPORTED)
    for cid, d in volume.items():
        e = d["evidence"]
        assert e["volume_source"] == "platform_reported"
        assert e["pooled_projected_conversions_7d"] == KAG_REPORTED[cid]
        assert e["conversions_7d"] == KAG_REPORTED[cid]
        assert e["history_days"] == 1
        assert "platform-reported" in d["root_cause"]
        assert d["impact"]["conversions_source"] == "platform_reported"
        assert d["impact"]["conversions_per_week"] == KAG_REPORTED[cid]
    for d in out:
        assert not d["root_cause"].startswith("0 conversions")
    # every campaign reaches the threshold pooled: consolidate, not "bid manually"
    assert {d["failure_type"] for d in volume.values()} == {"signal_gap"}
    # money at stake: 1178 spends most, so it comes first among equals
    assert out[0]["campaign_id"] == "1178"
    assert sum(d["impact"]["share_of_account_spend"] for d in volume.values()) == pytest.approx(
        1.0, abs=1e-3
    )


def test_kag_checks_say_what_they_cannot_measure(kag: Workspace) -> None:
    checks = run_checks(kag, store_exclusions=False).to_dict()
    assert not [f for f in checks["findings"] if f["check"] == "attribution_match"]
    for c in checks["campaigns"]:
        env = c["signal_environment"]
        assert env["conversion_volume"]["evidence"]["volume_source"] == "platform_reported"
        for comp in ("attribution_accuracy", "integration_uptime"):
            assert env[comp]["score"] is None and env[comp]["missing"] and env[comp]["unlock"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    res = sim.simulate(sim.SimulationConfig(days=28, campaigns=2, seed=6))
    return sim.write(res, tmp_path_factory.mktemp("shapes"))


def _workspace(paths: dict[str, Path], kinds: tuple[str, ...]) -> Workspace:
    ws = Workspace(":memory:")
    for kind in kinds:
        ingest_file(ws, kind, paths[kind])
    return ws


def test_daily_spend_export_alone_replays_learning_from_platform_counts(
    simulated: dict[str, Path],
) -> None:
    with _workspace(simulated, ("spend",)) as ws:
        doc = phase(ws).to_dict()
        reported = ws.con.execute(
            "SELECT adset_id, sum(platform_conversions) FROM spend "
            "WHERE date >= DATE '2026-01-22' GROUP BY adset_id"
        ).fetchall()
        out = diagnose(ws)["diagnoses"]
    assert doc["entities"]
    for e in doc["entities"]:
        assert e["conversions_source"] == "platform_reported"
        assert e["state"] in STATES and e["state"] != "unknown"
        assert e["history_days"] == 28
    assert {e["entity_id"]: e["conversions_7d"] for e in doc["entities"]} == {
        a: round(n) for a, n in reported
    }
    for d in out:
        if d["failure_type"] in VOLUME:
            assert d["evidence"]["volume_source"] == "platform_reported"
            assert "history_days" in d["evidence"]


def test_spend_and_conversions_without_touchpoints(simulated: dict[str, Path]) -> None:
    with _workspace(simulated, ("spend", "conversions")) as ws:
        doc = phase(ws).to_dict()
        tracked = dict(
            ws.con.execute(
                "SELECT campaign_id, count(*) FROM conversions WHERE source IN "
                "('pixel', 'server') AND campaign_id IS NOT NULL "
                "AND ts >= TIMESTAMP '2026-01-22' GROUP BY campaign_id"
            ).fetchall()
        )
        stake = spend_at_stake(ws, date(2026, 1, 28))
        out = diagnose(ws)["diagnoses"]
    per: dict[str, int] = {}
    for e in doc["entities"]:
        assert e["conversions_source"] == "first_party"
        assert e["state"] in ("learning", "learning_limited", "stable")
        per[e["campaign_id"]] = per.get(e["campaign_id"], 0) + e["conversions_7d"]
    # every tracked conversion lands on an ad set (those naming none by their clicks)
    for cid, n in tracked.items():
        assert abs(per[cid] - n) <= len(doc["entities"])
        assert stake["campaigns"][cid]["conversions_per_week"] == n
        assert stake["campaigns"][cid]["conversions_source"] == "first_party"
    for d in out:
        if d["failure_type"] in VOLUME:
            assert d["evidence"]["volume_source"] == "first_party"
            assert d["evidence"]["pooled_projected_conversions_7d"] > 0
        assert d["failure_type"] != "attribution_error"  # nothing to match is not a mismatch


def _spend_only(tmp_path: Path) -> Path:
    rows = [
        [f"2026-01-{d:02d}", "google", c, f"{c}_a", 1000, 40, 25.0]
        for d in range(1, 15)
        for c in ("g1", "g2")
    ]
    head = ["date", "platform", "campaign_id", "adset_id", "impressions", "clicks", "spend"]
    return write_csv(tmp_path / "spend.csv", head, rows)


def test_no_conversions_of_any_kind_is_unknown_not_zero(tmp_path: Path) -> None:
    with Workspace(":memory:") as ws:
        ingest_file(ws, "spend", _spend_only(tmp_path))
        doc = phase(ws).to_dict()
        checks = run_checks(ws, store_exclusions=False).to_dict()
        out = diagnose(ws, checks=checks)["diagnoses"]
    for e in doc["entities"]:
        assert e["state"] == "unknown" and e["conversions_source"] is None
        assert e["conversions_7d"] is None and e["projected_conversions_7d"] is None
        assert e["missing"] == "conversions" and "platform_conversions" in e["unlock"]
        assert "unknown" in e["recommendation"]
    assert not [f for f in checks["findings"] if f["check"] == "conversion_volume"]
    for c in checks["campaigns"]:
        vol = c["signal_environment"]["conversion_volume"]
        assert vol["score"] is None and vol["missing"] == "conversions"
    volume = [d for d in out if d["failure_type"] in VOLUME]
    assert [(d["campaign_id"], d["failure_type"], d["severity"]) for d in volume] == [
        ("g1", "signal_gap", "info"),
        ("g2", "signal_gap", "info"),
    ]
    for d in volume:
        assert d["evidence"]["volume_source"] is None
        assert d["evidence"]["missing"] == "conversions"
        assert d["recovery_action"].startswith("send ")
        assert d["impact"]["spend_per_day"] == 25.0
        assert d["impact"]["conversions_per_week"] is None


def test_campaign_level_spend_is_its_own_entity(tmp_path: Path) -> None:
    rows: list[list[Any]] = [
        [f"2026-01-{d:02d}", "google", "g1", 1000, 40, 25.0, 9] for d in range(1, 15)
    ]
    head = ["date", "platform", "campaign_id", "impressions", "clicks", "spend"]
    head.append("platform_conversions")
    with Workspace(":memory:") as ws:
        ingest_file(ws, "spend", write_csv(tmp_path / "s.csv", head, rows))
        (e,) = phase(ws).to_dict()["entities"]
    assert (e["level"], e["entity_id"], e["campaign_id"]) == ("campaign", "g1", "g1")
    assert e["conversions_source"] == "platform_reported"
    assert e["conversions_7d"] == 63 and e["state"] == "stable"  # 50 reached on day 6


def test_conversions_naming_no_ad_set_follow_the_ad_sets_clicks(tmp_path: Path) -> None:
    # two ad sets, 30 and 10 clicks a day; 8 conversions a day name only the campaign
    spend = [
        [f"2026-01-{d:02d}", "meta", "m1", a, 1000, k, 20.0]
        for d in range(1, 11)
        for a, k in (("m1_a", 30), ("m1_b", 10))
    ]
    conv = [
        [f"v{d}_{i}", f"2026-01-{d:02d}T12:{i:02d}:00Z", "lead", "m1", "pixel"]
        for d in range(1, 11)
        for i in range(8)
    ]
    with Workspace(":memory:") as ws:
        head = ["date", "platform", "campaign_id", "adset_id", "impressions", "clicks", "spend"]
        ingest_file(ws, "spend", write_csv(tmp_path / "s.csv", head, spend))
        chead = ["conversion_id", "ts", "kind", "campaign_id", "source"]
        ingest_file(ws, "conversions", write_csv(tmp_path / "c.csv", chead, conv))
        ents = {e["entity_id"]: e for e in phase(ws).to_dict()["entities"]}
    assert {a: e["conversions_7d"] for a, e in ents.items()} == {"m1_a": 42, "m1_b": 14}
    assert {e["split_by_clicks_share"] for e in ents.values()} == {1.0}
    assert {e["conversions_source"] for e in ents.values()} == {"first_party"}
