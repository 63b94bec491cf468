"""Budget allocation: the Gamma-Poisson arm model, the policies, guardrails, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from signalloop.allocate.policy import (
    POLICIES,
    ArmState,
    Day,
    GuardedBayes,
    allocate,
    make_policy,
)
from signalloop.allocate.posterior import GammaPoissonArms, water_fill
from signalloop.errors import UsageError
from signalloop.store import Workspace

from .conftest import simulated_workspace

START = date(2026, 1, 1)


def arm(
    cid: str,
    theta: float,
    spend: float,
    *,
    days: int = 28,
    beta: float = 0.8,
    seed: int = 0,
    **kw: object,
) -> ArmState:
    """An arm whose daily conversions are Poisson(theta * spend^beta), spend jittered."""
    rng = np.random.default_rng(seed)
    hist = []
    for d in range(days):
        s = spend * float(rng.lognormal(0, 0.08))
        y = float(rng.poisson(theta * s**beta))
        hist.append(Day(START + timedelta(days=d), s, y, y))
    return ArmState(cid, spend, tuple(hist), **kw)  # type: ignore[arg-type]


def test_posterior_recovers_a_known_theta() -> None:
    a = arm("c01", 0.2, 200.0, days=60, seed=1)
    m = GammaPoissonArms(beta=0.8).fit([a])
    lo, hi = np.quantile(m.sample(4000, np.random.default_rng(0))[:, 0], [0.025, 0.975])
    assert lo < 0.2 < hi
    assert abs(m.mean_[0] - 0.2) / 0.2 < 0.05
    assert m.cv_[0] < 0.05  # ~1400 conversions


def test_beta_is_fitted_near_the_truth_when_spend_varies() -> None:
    rng = np.random.default_rng(3)
    arms = []
    for k in range(3):
        hist = []
        for d in range(60):
            s = float(rng.uniform(50, 800))
            y = float(rng.poisson(0.5 * s**0.7))
            hist.append(Day(START + timedelta(days=d), s, y, y))
        arms.append(ArmState(f"c{k}", 300.0, tuple(hist)))
    assert abs(GammaPoissonArms().fit(arms).beta_ - 0.7) < 0.05


def test_cold_arm_gets_the_pooled_prior() -> None:
    warm = [arm(f"c0{i}", th, 200.0, seed=i) for i, th in enumerate((0.1, 0.15, 0.2), 1)]
    cold = ArmState("c09", 0.0)
    m = GammaPoissonArms(beta=0.8).fit([*warm, cold])
    assert m.shape_[3] == pytest.approx(m.prior_shape_)
    assert m.rate_[3] == pytest.approx(m.prior_rate_)
    assert 0.1 < m.prior_shape_ / m.prior_rate_ < 0.2  # the account's typical theta
    assert 0.5 <= m.prior_shape_ <= 10.0


def test_water_fill_equalises_marginal_returns() -> None:
    theta = np.array([[1.0, 2.0, 0.5]])
    x = water_fill(theta, 0.5, np.zeros(3), np.full(3, 1e6), 100.0)[0]
    assert x.sum() == pytest.approx(100.0)
    marginal = 0.5 * theta[0] * x**-0.5
    assert np.ptp(marginal) < 1e-6


def guarded_arms() -> list[ArmState]:
    return [
        arm("c01", 0.30, 300.0, seed=1),  # the best, stable
        arm("c02", 0.10, 300.0, seed=2, gate="hold", gate_reasons=("integration_dropout",)),
        arm("c03", 0.05, 200.0, seed=3),  # the worst, stable
        arm("c04", 0.15, 200.0, seed=4, learning_state="learning"),
    ]


def test_guardrails_hold_exactly() -> None:
    arms = guarded_arms()
    budget = sum(a.current for a in arms)
    pol = GuardedBayes()
    out = {d.campaign_id: d for d in pol.decide(arms, budget, np.random.default_rng(0))}
    rec = {c: d.recommended for c, d in out.items()}
    assert sum(rec.values()) == pytest.approx(budget, abs=1e-6)
    assert rec["c02"] == arms[1].current  # held: unchanged, exactly
    assert rec["c04"] == arms[3].current  # learning, no cap: unchanged
    for a in (arms[0], arms[2]):  # open, stable
        assert abs(rec[a.campaign_id] / a.current - 1) <= 0.18 + 1e-9
        assert 0.02 * budget - 1e-6 <= rec[a.campaign_id] <= 0.8 * budget + 1e-6
    assert rec["c01"] > arms[0].current > 0 and rec["c03"] < arms[2].current
    assert out["c01"].p_best > 0.9
    assert any("held at the gate" in r for r in out["c02"].reasons)
    assert any("in learning" in r for r in out["c04"].reasons)
    assert out["c01"].automation == "automated"  # ~2500 conversions: cv ~ 0.02
    assert {d.automation for d in out.values()} <= {"assisted", "automated"}


def test_cpa_cap_stops_losses_and_unlocks_learning_arms() -> None:
    arms = guarded_arms()
    budget = sum(a.current for a in arms)
    # CPA at 200/day: 200^0.2 / theta = 2.89 / 0.05 = 58 (c03), 19 (c04), 9.6 (c01 at 300)
    plan = GuardedBayes(cpa_cap=15.0).plan(arms, budget, np.random.default_rng(0))
    out = {d.campaign_id: d.recommended for d in plan.decisions}
    assert out["c03"] == pytest.approx(0.02 * budget, abs=0.01)  # stop-loss to the minimum
    assert out["c04"] != arms[3].current  # in learning, but over the cap: edited
    assert out["c02"] == arms[1].current
    # what the stopped arms free, c01 can take only 18% of: the rest is left unallocated
    assert out["c01"] == pytest.approx(300.0 * 1.18)
    assert plan.unallocated == pytest.approx(budget - sum(out.values()))
    assert plan.unallocated == pytest.approx(1000.0 - 354.0 - 300.0 - 20.0 - 20.0)
    assert plan.unallocated_reason and "left unallocated" in plan.unallocated_reason


def test_budget_beyond_the_guardrails_is_left_unallocated_not_forced() -> None:
    arms = guarded_arms()
    current = {a.campaign_id: a.current for a in arms}
    for factor, word in ((3.0, "left unallocated"), (0.3, "over-allocated")):
        budget = factor * sum(current.values())
        plan = GuardedBayes().plan(arms, budget, np.random.default_rng(0))
        out = {d.campaign_id: d for d in plan.decisions}
        # the free arms go to their change limit, the held and learning ones stay
        step = 1.18 if factor > 1 else 0.82
        assert out["c01"].recommended == pytest.approx(current["c01"] * step)
        assert out["c03"].recommended == pytest.approx(current["c03"] * step)
        assert out["c02"].recommended == current["c02"]
        assert out["c04"].recommended == current["c04"]
        total = sum(d.recommended for d in plan.decisions)
        assert plan.unallocated == pytest.approx(budget - total)
        assert (plan.unallocated > 0) == (factor > 1)
        assert plan.unallocated_reason and word in plan.unallocated_reason
        assert all(plan.unallocated_reason in d.reasons for d in plan.decisions)


def test_shares_give_way_before_the_budget() -> None:
    # c01 spends 90% of the budget: above the 80% maximum share, yet the others can take
    # only 18% more, so c01 stays above 80% rather than leaving budget unspent
    arms = [arm("c01", 0.1, 900.0, seed=1), arm("c02", 0.3, 100.0, seed=2)]
    plan = GuardedBayes().plan(arms, 1000.0, np.random.default_rng(0))
    out = {d.campaign_id: d for d in plan.decisions}
    assert out["c02"].recommended == pytest.approx(118.0)
    assert out["c01"].recommended == pytest.approx(882.0)
    assert plan.unallocated == 0.0 and plan.unallocated_reason is None
    assert any("above the maximum share" in r for r in out["c01"].reasons)


def test_manual_automation_for_low_volume() -> None:
    arms = [arm("c01", 0.3, 300.0, seed=1), arm("c02", 0.002, 100.0, seed=2)]
    out = {d.campaign_id: d for d in GuardedBayes().decide(arms, 400.0, np.random.default_rng(0))}
    assert out["c02"].automation == "manual"
    assert any("bid manually" in r for r in out["c02"].reasons)
    assert out["c01"].automation in ("assisted", "automated")


def test_no_history_even_split_and_says_so() -> None:
    arms = [ArmState(f"c0{i}", 0.0) for i in range(1, 5)]
    out = GuardedBayes().decide(arms, 1000.0, np.random.default_rng(0))
    assert [d.recommended for d in out] == [250.0] * 4
    assert all(any("no outcome data" in r for r in d.reasons) for d in out)
    assert all(d.automation == "manual" and d.expected_cpa is None for d in out)
    assert all(d.outcome_source == "none" for d in out)


def test_no_history_even_split_stays_within_the_change_limit() -> None:
    # the KAG shape before platform counts were read: 7,952 / 21 / 413 a day, no outcomes
    current = {"1178": 7951.74, "916": 21.39, "936": 413.34}
    arms = [ArmState(c, v, (Day(START, v * 7),)) for c, v in current.items()]
    budget = sum(current.values())
    plan = GuardedBayes().plan(arms, budget, np.random.default_rng(0))
    out = {d.campaign_id: d.recommended for d in plan.decisions}
    assert out["916"] == pytest.approx(21.39 * 1.18, abs=0.01)
    assert out["936"] == pytest.approx(413.34 * 1.18, abs=0.01)
    assert out["1178"] == pytest.approx(budget - out["916"] - out["936"], abs=0.01)
    assert all(abs(out[c] / v - 1) <= 0.18 for c, v in current.items())
    assert plan.unallocated == pytest.approx(0.0, abs=0.005)


def test_randomness_only_from_the_generator() -> None:
    arms = guarded_arms()
    a = GuardedBayes().allocate(arms, 1000.0, np.random.default_rng(7))
    b = GuardedBayes().allocate(arms, 1000.0, np.random.default_rng(7))
    assert a == b


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_conforms(name: str) -> None:
    pol = make_policy(name, objective="conversions", cpa_cap=None)
    assert pol.name == name
    rng = np.random.default_rng(0)
    for arms in (guarded_arms(), [ArmState("c01", 0.0), ArmState("c02", 50.0)]):
        out = pol.allocate(arms, 900.0, rng)
        assert set(out) == {a.campaign_id for a in arms}
        assert all(v >= 0 for v in out.values())
        if name == "guarded_bayes":  # the change limit before the budget
            spending = [a for a in arms if a.current > 0]
            assert all(abs(out[a.campaign_id] - a.current) <= 0.18 * a.current for a in spending)
        else:  # the baselines spend the budget exactly
            assert sum(out.values()) == pytest.approx(900.0, abs=1e-6)
    with pytest.raises(UsageError):
        pol.allocate([], 900.0, rng)


def test_unknown_policy_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown policy"):
        make_policy("nope")


# ---- the workspace and the CLI -----------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signalloop", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A seeded 45-day, 4-campaign account whose c02 loses tracking on its last 5 days."""
    tmp = tmp_path_factory.mktemp("allocate")
    path = tmp / "acct.duckdb"
    faults = ("tracking_outage@c02:40-44",)
    ws, _, _ = simulated_workspace(tmp, days=45, campaigns=4, seed=5, faults=faults, db=path)
    ws.close()
    yield path


def test_allocate_json_contract_and_held_campaign(db: Path) -> None:
    with Workspace(db) as ws:
        doc = allocate(ws, 1000.0)  # settle the current budgets first
    budget = round(sum(a["current"] for a in doc["arms"]), 2)
    p = run("allocate", "--budget", str(budget), "--db", str(db), "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert {"as_of", "budget", "objective", "policy", "arms"} <= set(doc)
    assert doc["as_of"] == "2026-02-14" and doc["policy"] == "guarded_bayes"
    keys = {"campaign_id", "current", "recommended", "change_pct", "automation"}
    keys |= {"expected_cpa", "cpa_interval", "p_best", "reasons"}
    arms = {a["campaign_id"]: a for a in doc["arms"]}
    assert set(arms) == {"c01", "c02", "c03", "c04"}
    assert all(keys <= set(a) for a in arms.values())
    total = sum(a["recommended"] for a in arms.values())
    assert total + doc["unallocated"] == pytest.approx(budget, abs=1e-6)
    assert doc["unallocated"] == 0.0 and doc["unallocated_reason"] is None
    assert {a["outcome_source"] for a in arms.values()} == {"nowcast"}
    assert doc["outcome_sources"] == {"nowcast": 4}
    held = arms["c02"]
    assert held["recommended"] == held["current"] and held["change_pct"] == 0.0
    assert any("held at the gate" in r for r in held["reasons"])
    assert sum(a["p_best"] for a in arms.values()) == pytest.approx(1.0)
    for a in arms.values():
        lo, hi = a["cpa_interval"]
        assert lo <= a["expected_cpa"] <= hi
        assert abs(a["change_pct"]) <= 18.0


def test_allocate_value_objective_and_baseline_policy(db: Path) -> None:
    with Workspace(db) as ws:
        doc = allocate(ws, 900.0, objective="value", policy="even_split", cpa_cap=30.0)
    assert doc["objective"] == "value" and doc["policy"] == "even_split"
    # the even split, through the guardrails: c02 is held, the others move at most 18%
    arms = {a["campaign_id"]: a for a in doc["arms"]}
    assert arms["c02"]["recommended"] == arms["c02"]["current"]
    assert all(abs(a["change_pct"]) <= 18.0 for a in arms.values())
    assert all("even_split policy, within the guardrails" in a["reasons"][0] for a in arms.values())
    total = sum(a["recommended"] for a in arms.values())
    assert total + doc["unallocated"] == pytest.approx(900.0, abs=1e-6)


def test_cli_table_and_bad_input(db: Path, tmp_path: Path) -> None:
    p = run("allocate", "--budget", "1200", "--cpa-cap", "25", "--db", str(db))
    assert p.returncode == 0, p.stderr
    assert "recommended" in p.stdout and "c02" in p.stdout
    bad = run("allocate", "--budget", "0", "--db", str(db), "--json")
    assert bad.returncode == 2 and "must be positive" in bad.stderr and bad.stdout == ""
    bad = run("allocate", "--budget", "100", "--policy", "nope", "--db", str(db))
    assert bad.returncode == 2 and "unknown policy" in bad.stderr
    bad = run("allocate", "--budget", "100", "--objective", "clicks", "--db", str(db))
    assert bad.returncode == 2 and "--objective" in bad.stderr
    empty = run("allocate", "--budget", "100", "--db", str(tmp_path / "empty.duckdb"))
    assert empty.returncode == 2 and "ingest something first" in empty.stderr
