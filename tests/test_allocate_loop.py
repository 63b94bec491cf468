"""The policy time loop against the simulator: budgets, oracle, guardrails, CLI."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
from typer.testing import CliRunner

from signalloop.allocate.loop import (
    LoopResult,
    expected_conversions,
    oracle_allocation,
    run_policy,
    scenario_config,
)
from signalloop.allocate.policy import POLICIES
from signalloop.cli import app
from signalloop.simulate import Account, SimulationConfig

SMALL = SimulationConfig(days=21, campaigns=4, seed=3)


@cache
def small(policy: str) -> LoopResult:
    return run_policy(policy, SMALL, warmup_days=5, random_state=1)


@cache
def outage(policy: str) -> LoopResult:
    config = scenario_config("tracking_outage", seed=2, days=42, campaigns=4)
    return run_policy(policy, config, warmup_days=7, random_state=2)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_policy_spends_the_budget_each_day(policy: str) -> None:
    res = small(policy)
    assert res.policy == policy
    assert len(res.rows) == SMALL.days - 5
    for row in res.rows:
        assert sum(row.budgets.values()) == pytest.approx(res.budget, abs=0.05)
        assert min(row.budgets.values()) >= 0


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_the_oracle_is_never_beaten(policy: str) -> None:
    res = small(policy)
    for row in res.rows:
        assert row.oracle >= row.expected - 1e-6 * row.oracle
        assert row.regret == pytest.approx(row.oracle - row.expected)
    assert res.totals["regret"] >= -1e-6


def test_oracle_allocation_is_optimal_on_a_grid() -> None:
    acct = Account(SimulationConfig(days=1, campaigns=3, seed=5))
    best = oracle_allocation(acct, 900.0)
    assert sum(best.values()) == pytest.approx(900.0)
    top = expected_conversions(acct, best)
    rng = np.random.default_rng(0)
    for w in rng.dirichlet(np.ones(3), 300):
        other = {c: 900.0 * float(x) for c, x in zip(acct.ids, w, strict=True)}
        assert expected_conversions(acct, other) <= top + 1e-9


def test_guarded_bayes_keeps_its_guardrails_through_an_outage() -> None:
    res = outage("guarded_bayes")
    assert res.totals["held_days"] > 0  # the gate saw the outage
    assert res.totals["resets_caused"] == 0
    assert res.totals["spend_moved_held"] == 0


def test_unguarded_policies_reset_learning() -> None:
    assert outage("greedy_cpa").totals["resets_caused"] > 0
    assert outage("thompson").totals["resets_caused"] > 0


def test_the_outage_is_held_only_around_its_window() -> None:
    config = scenario_config("tracking_outage", seed=2, days=42, campaigns=4)
    (fault,) = config.faults
    res = outage("guarded_bayes")
    held_days = {r.day for r in res.rows if fault.campaign in r.held}
    assert held_days
    assert min(held_days) > fault.start
    assert max(held_days) <= fault.end + 2
    assert all(r.held in ([], [fault.campaign]) for r in res.rows)


def test_same_seed_same_result() -> None:
    a = run_policy("thompson", SMALL, warmup_days=5, random_state=4).to_dict()
    b = run_policy("thompson", SMALL, warmup_days=5, random_state=4).to_dict()
    assert a == b
    json.dumps(a, allow_nan=False)


def test_scenarios() -> None:
    cold = scenario_config("cold_start", 1)
    assert cold.days == 59 and cold.faults == ()
    fat = scenario_config("fatigue", 1)
    assert fat.faults[0].name == "creative_starvation"
    assert (fat.faults[0].start, fat.faults[0].end) == (0, fat.days - 1)
    with pytest.raises(Exception, match="unknown scenario"):
        scenario_config("nope", 1)


def test_cli_simulate_policy_json() -> None:
    args = ["simulate", "--policy", "even_split", "--days", "12", "--campaigns", "3", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["policy"] == "even_split"
    assert doc["totals"]["days"] == 5
    assert {"regret", "resets_caused", "spend_moved_held", "expected", "oracle"} <= set(
        doc["totals"]
    )


def test_cli_simulate_without_policy_needs_out() -> None:
    result = CliRunner().invoke(app, ["simulate", "--days", "3"])
    assert result.exit_code == 2
