"""The simulator's ``healthy`` option: a creative pipeline and volume for named campaigns."""

from __future__ import annotations

from functools import cache
from typing import Any

import pandas as pd
import pytest

from signalloop import simulate as sim
from signalloop.errors import UsageError
from signalloop.simulate.params import HEALTHY_CADENCE_DAYS, LEARNING_THRESHOLD

DAYS, CAMPAIGNS, SEED = 56, 4, 11
IDS = sim.campaign_ids(CAMPAIGNS)
#: the starvation window of the fatigue estimate and the creative_freshness check
STARVATION_DAYS = 21


@cache
def run(healthy: tuple[str, ...] = (), *specs: str) -> sim.Simulation:
    faults = tuple(sim.parse_fault(s, days=DAYS, campaign_ids=IDS) for s in specs)
    return sim.simulate(
        sim.SimulationConfig(
            days=DAYS, campaigns=CAMPAIGNS, seed=SEED, faults=faults, healthy=healthy
        )
    )


def launches(truth: dict[str, Any], cid: str) -> list[int]:
    return sorted({c["launch_day"] for c in truth["creatives"] if c["campaign"] == cid})


def adset_volume_7d(truth: dict[str, Any], cid: str) -> dict[str, int]:
    """True conversions (by click day) of each ad set over the last 7 days."""
    return {
        a: sum(v["conversions"][-7:]) for a, v in truth["learning"].items() if v["campaign"] == cid
    }


def test_healthy_campaign_has_a_creative_pipeline_and_volume() -> None:
    truth, base = run(("c03",)).truth, run().truth
    # c03 (meta purchase) by default: nothing new for 30 days, then 16 days before the end
    assert launches(base, "c03") == [0, 30, 39]
    days = launches(truth, "c03")
    assert days == [0, 14, 19, 28, 33, 36, 44, 46]
    gaps = [b - a for a, b in zip(days, [*days[1:], DAYS - 1], strict=True)]
    assert max(gaps) == HEALTHY_CADENCE_DAYS < STARVATION_DAYS
    # replaced before the fatigue onset: no creative of c03 ever reached it
    mine = [c for c in truth["creatives"] if c["campaign"] == "c03"]
    assert mine and all(c["fatigue_onset_day"] is None for c in mine)
    # every ad set over the learning threshold over the last 7 days
    assert adset_volume_7d(truth, "c03") == {"c03_as1": 108, "c03_as2": 100, "c03_as3": 149}
    assert min(adset_volume_7d(truth, "c03").values()) >= LEARNING_THRESHOLD
    assert sum(truth["daily"]["c03"]["conversions_by_event_date"][-7:]) == 337
    assert sum(base["daily"]["c03"]["conversions_by_event_date"][-7:]) == 151
    camp = truth["campaigns"]["c03"]
    assert camp["baseline_budget"] == 1548.0
    assert camp["healthy"] == {
        "drawn_budget": 800,
        "drawn_shares": [0.4579, 0.3033, 0.2388],
        "budget_scale": 1.935,
    }
    assert [a["budget_share"] for a in camp["adsets"].values()] == [0.3883, 0.3021, 0.3097]
    assert truth["config"]["healthy"] == ["c03"]
    assert "healthy" not in base["config"]
    assert all("healthy" not in c for c in base["campaigns"].values())


def test_pipeline_changes_are_logged_as_creative_edits() -> None:
    result = run(("c03",))
    ch = result.tables["changes"].to_pandas()
    rot = ch[ch.field.eq("creative") & ch.entity_id.str.startswith("c03")]
    new = {c["creative_id"] for c in result.truth["creatives"] if c["campaign"] == "c03"}
    born = {
        c["creative_id"]
        for c in result.truth["creatives"]
        if c["campaign"] == "c03" and c["launch_day"] > 0
    }
    assert set(rot.new_value) == born and born < new
    day = (rot.ts - pd.Timestamp("2026-01-01", tz="UTC")).dt.days
    assert sorted(set(day)) == launches(result.truth, "c03")[1:]


def test_other_campaigns_are_unchanged() -> None:
    healthy, base = run(("c03",)), run()
    for kind in ("spend", "touchpoints", "conversions", "crm", "changes"):
        a, b = base.tables[kind].to_pandas(), healthy.tables[kind].to_pandas()
        if kind in ("spend", "touchpoints"):
            a, b = a[a.campaign_id != "c03"], b[b.campaign_id != "c03"]
        elif kind == "changes":
            a, b = a[~a.entity_id.str.startswith("c03")], b[~b.entity_id.str.startswith("c03")]
        else:
            key = "conversion_id" if kind == "conversions" else "record_id"
            # ids carry the click number: (campaign number * 10,000 + day) * 1,000,000 + n
            mine = r"^[a-z]+3\d{10}$"
            a, b = a[~a[key].str.match(mine)], b[~b[key].str.match(mine)]
        assert a.reset_index(drop=True).equals(b.reset_index(drop=True)), kind
    for cid in ("c01", "c02", "c04"):
        assert healthy.truth["daily"][cid] == base.truth["daily"][cid]
        assert healthy.truth["campaigns"][cid] == base.truth["campaigns"][cid]
    for adset, info in base.truth["learning"].items():
        if info["campaign"] != "c03":
            assert healthy.truth["learning"][adset] == info


def test_default_is_the_empty_option() -> None:
    config = sim.SimulationConfig(days=DAYS, campaigns=CAMPAIGNS, seed=SEED)
    assert config.healthy == () and not config.is_healthy("c01")
    assert sim.SimulationConfig(healthy=("*",)).is_healthy("c05")


def test_starvation_still_blocks_a_healthy_pipeline() -> None:
    truth = run(("c03",), "creative_starvation@c03:20-").truth
    assert launches(truth, "c03") == [0, 14, 19]


def test_every_campaign_healthy() -> None:
    truth = run(("*",)).truth
    for cid in IDS:
        days = launches(truth, cid)
        gaps = [b - a for a, b in zip(days, [*days[1:], DAYS - 1], strict=True)]
        assert max(gaps) <= HEALTHY_CADENCE_DAYS, cid
        assert min(adset_volume_7d(truth, cid).values()) >= LEARNING_THRESHOLD, cid


def test_unknown_healthy_campaign_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="healthy campaign"):
        sim.simulate(sim.SimulationConfig(days=5, campaigns=2, healthy=("c09",)))
