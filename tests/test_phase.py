"""Learning phase replay, scored against the simulator's truth on a seeded account."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from signalloop import simulate as sim
from signalloop.checks.engine import save_exclusions
from signalloop.contract import KINDS
from signalloop.ingest import ingest_file
from signalloop.phase import phase
from signalloop.store import Workspace

from .conftest import write_csv


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Any]]:
    storm = sim.Fault("override_storm", "c02", 20, 45)
    res = sim.simulate(sim.SimulationConfig(days=60, campaigns=4, seed=9, faults=(storm,)))
    paths = sim.write(res, tmp_path_factory.mktemp("phase"))
    ws = Workspace(":memory:")
    for k in KINDS:
        ingest_file(ws, k, paths[k], now=datetime(2030, 1, 1))
    yield ws, res
    ws.close()


def test_resets_are_the_truths_significant_edits(account: tuple[Workspace, Any]) -> None:
    ws, res = account
    rep = phase(ws)
    assert {e.entity_id for e in rep.entities} == set(res.truth["learning"])
    for e in rep.entities:
        truth = res.truth["learning"][e.entity_id]
        assert [r.day.isoformat() for r in e.resets] == sorted({r["date"] for r in truth["resets"]})
        human_days = {r["day"] for r in truth["resets"] if r["actor"] == "human" and r["day"] > 0}
        assert e.human_resets == len(human_days)


def test_states_follow_the_truth(account: tuple[Workspace, Any]) -> None:
    ws, res = account
    rep = phase(ws)
    agree = days = 0
    for e in rep.entities:
        states = res.truth["learning"][e.entity_id]["states"]
        for i, st in enumerate(states):
            d = (date(2026, 1, 1) + timedelta(days=i)).isoformat()
            days += 1
            agree += e.states[d] == st
    assert agree / days >= 0.9


def test_override_storm_shows_in_human_resets_and_advice(account: tuple[Workspace, Any]) -> None:
    ws, _ = account
    rep = phase(ws, date(2026, 2, 15))  # inside the storm
    storm = [e for e in rep.entities if e.campaign_id == "c02"]
    calm = [e for e in rep.entities if e.campaign_id != "c02"]
    assert min(e.human_resets for e in storm) > max(e.human_resets for e in calm)
    assert all(e.days_lost > 0 for e in storm)
    assert any("stop manual edits" in e.recommendation for e in storm)


def test_json_contract(account: tuple[Workspace, Any]) -> None:
    ws, _ = account
    doc = json.loads(phase(ws).to_json())
    assert doc["threshold"] == 50 and doc["as_of"] == "2026-03-01"
    for e in doc["entities"]:
        assert {
            "level",
            "entity_id",
            "campaign_id",
            "state",
            "conversions_7d",
            "last_significant_edit",
            "resets",
            "human_resets",
            "days_lost",
            "evaluation_ready_on",
            "recommendation",
        } <= set(e)
        assert e["state"] in ("learning", "learning_limited", "stable")


def test_a_listing_window_lists_the_recent_resets_and_counts_every_one(
    account: tuple[Workspace, Any],
) -> None:
    from signalloop.diagnose import OVERRIDE_WINDOW_DAYS
    from signalloop.run import REPORT_DAYS

    ws, _ = account
    full = phase(ws).to_dict()
    assert full["listed"] == {"days": None, "from": None, "resets_not_listed": 0}
    doc = phase(ws, list_days=10).to_dict()  # 2026-02-20 .. 2026-03-01
    assert doc["listed"]["from"] == "2026-02-20"
    left = 0
    for e, f in zip(doc["entities"], full["entities"], strict=True):
        # everything but the list is the full replay's: nothing else depends on the window
        assert {k: v for k, v in e.items() if k != "resets"} == {
            k: v for k, v in f.items() if k != "resets"
        }
        older = [r for r in f["resets"] if r["date"] < "2026-02-20"]
        # the resets of the window, and the one in effect when it began
        assert e["resets"] == older[-1:] + [r for r in f["resets"] if r["date"] >= "2026-02-20"]
        left += len(f["resets"]) - len(e["resets"])
    assert left > 0 and doc["listed"]["resets_not_listed"] == left
    # diagnose's override churn counts the human resets of its window from the listed ones
    assert OVERRIDE_WINDOW_DAYS <= REPORT_DAYS


def test_exclusion_windows_pause_the_learning_clock(ws: Workspace, tmp_path: Path) -> None:
    spend, conv = [], []
    for d in range(20):
        day = date(2026, 1, 1) + timedelta(days=d)
        spend.append([day.isoformat(), "meta", "c1", "c1_a", "ad1", 1000, 50, 20.0])
        for k in range(10):
            conv.append([f"v{d}_{k}", f"{day}T12:{k:02d}:00Z", "lead", "c1", "c1_a", "pixel"])
    ingest_file(
        ws,
        "spend",
        write_csv(
            tmp_path / "s.csv",
            [
                "date",
                "platform",
                "campaign_id",
                "adset_id",
                "ad_id",
                "impressions",
                "clicks",
                "spend",
            ],
            spend,
        ),
    )
    ingest_file(
        ws,
        "conversions",
        write_csv(
            tmp_path / "c.csv",
            ["conversion_id", "ts", "kind", "campaign_id", "adset_id", "source"],
            conv,
        ),
    )
    # 10 a day from the launch: the 50 are reached on the fifth day
    plain = phase(ws).entities[0]
    assert plain.states["2026-01-04"] == "learning"
    assert plain.states["2026-01-05"] == "stable"
    save_exclusions(
        ws,
        [{"campaign_id": "c1", "start": "2026-01-03", "end": "2026-01-05", "reason": "test"}],
        date(2026, 1, 20),
    )
    paused = phase(ws).entities[0]
    # 01-03..01-05 do not count: 20 events by 01-02, the 50th on 01-08
    assert paused.states["2026-01-07"] == "learning"
    assert paused.states["2026-01-08"] == "stable"


def _replay_one(sp: Any, as_of: date, threshold: int) -> dict[str, Any]:
    """The learning rule for one entity, a day at a time (the reference _replay meets)."""
    from signalloop.phase import WINDOW

    by_day = {r.day: r for r in sp.resets}
    state, since, counted, current = "learning", 0.0, 0, None
    history: list[float] = []
    states: dict[str, str] = {}
    d = sp.first
    while d <= as_of:
        r = by_day.get(d)
        if r is not None:
            if current is not None and current.days_in_learning == 0:
                current.days_in_learning = counted
            state, since, counted, current = "learning", 0.0, 0, r
        if d in sp.excluded:
            states[d.isoformat()] = state
            d += timedelta(days=1)
            continue
        n = sp.daily.get(d, 0.0)
        history.append(n)
        since += n
        if state == "learning":
            counted += 1
            if since >= threshold:
                state = "stable"
                if current is not None:
                    current.days_in_learning = counted
            elif counted >= WINDOW:
                state = "learning_limited"
        elif state == "learning_limited":
            counted += 1
            if sum(history[-WINDOW:]) >= threshold:
                state = "stable"
                if current is not None:
                    current.days_in_learning = counted
        states[d.isoformat()] = state
        d += timedelta(days=1)
    if current is not None and current.days_in_learning == 0:
        current.days_in_learning = counted
    recent = history[-14:]
    if sp.extrapolate or len(recent) >= WINDOW:
        projected = sum(recent) / len(recent) * WINDOW if recent else 0.0
    else:
        projected = float(sum(recent))
    return {
        "state": state,
        "conversions_7d": round(sum(history[-WINDOW:])),
        "projected_7d": projected,
        "history_days": len(history),
        "states": states,
        "learned": [r.days_in_learning for r in sp.resets],
    }


@pytest.mark.parametrize("seed", range(6))
def test_the_replay_of_every_entity_at_once_is_each_replayed_alone(seed: int) -> None:
    """_replay steps through the days with every entity at once: on random entities (first
    days, fractional and whole daily counts, resets before the first day and two on one day,
    exclusion windows shared by a campaign's entities), each entity's states, counts,
    projection and days in learning equal a replay of that entity alone."""
    import copy

    import numpy as np

    from signalloop.phase import Reset, _replay, _Spec

    rng = np.random.default_rng(seed)
    as_of, threshold = date(2026, 3, 31), int(rng.choice([5, 20, 50]))
    windows = {
        c: {as_of - timedelta(days=int(x)) for x in rng.choice(80, int(rng.integers(0, 9)))}
        for c in ("c1", "c2", "c3")
    }
    specs = []
    for e in range(40):
        first = as_of - timedelta(days=int(rng.integers(-1, 70)))  # one starts after as_of
        rate = float(rng.choice([0.3, 2.0, 9.0]))
        daily = {
            first + timedelta(days=j): float(rng.poisson(rate)) * (1.0 if e % 3 else 0.37)
            for j in range(-3, 75)
            if rng.random() < 0.8
        }
        days = sorted(int(x) for x in rng.choice(np.arange(-5, 75), int(rng.integers(0, 6))))
        if days and e % 4 == 0:
            days.append(days[-1])  # two resets on one day: the last one counts
        resets = [Reset(first + timedelta(days=d), "human", "bid") for d in days]
        campaign = f"c{e % 3 + 1}"
        specs.append(_Spec(f"a{e}", campaign, first, daily, resets, windows[campaign], e % 5 != 0))
    alone = [_replay_one(copy.deepcopy(sp), as_of, threshold) for sp in specs]
    together = _replay(specs, as_of, threshold)
    for sp, want, got in zip(specs, alone, together, strict=True):
        assert got.entity_id == sp.entity
        assert got.state == want["state"]
        assert got.conversions_7d == want["conversions_7d"]
        assert got.projected_7d == want["projected_7d"]
        assert got.history_days == want["history_days"]
        assert got.states == want["states"]
        assert [r.days_in_learning for r in got.resets] == want["learned"]
    assert {s for e in together for s in e.states.values()} >= {"learning", "stable"}
