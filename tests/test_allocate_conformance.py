"""Allocation conformance: every policy, every data shape, any budget keeps the guardrails.

What ``allocate`` recommends, whatever the policy (the baselines go through
:meth:`~signalloop.allocate.policy.GuardedBayes.guard`), the outcome source and the budget:

* every budget is non-negative;
* a held campaign keeps its budget exactly, so does one in learning (no CPA cap here);
* a campaign that spends moves at most the daily change limit (18%);
* ``unallocated`` is the budget minus the budgets, exactly, and it is not zero only when
  nothing could take it: every campaign free to move is at its bound on that side (the
  change limit; the share bounds for a campaign that spends nothing), with a reason.

Checked on random arms (hypothesis) and on seeded workspaces of each data shape: spend alone
with the platform's conversions, spend alone without any conversions, spend and first-party
conversions (with and without the nowcast), and every kind.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.csv as pv
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalloop.allocate.policy import (
    POLICIES,
    ArmState,
    Day,
    GuardedBayes,
    Plan,
    allocate,
    arms_from_workspace,
    guarded_plan,
    make_policy,
)
from signalloop.allocate.posterior import OUTCOME_SOURCES
from signalloop.checks import run_checks
from signalloop.checks.base import default_as_of
from signalloop.ingest import ingest_file
from signalloop.nowcast import NowcastOptions, nowcast
from signalloop.phase import phase
from signalloop.store import Workspace

from .conftest import simulated_workspace

MAX_CHANGE, MIN_SHARE, MAX_SHARE = 0.18, 0.02, 0.8
NAMES = sorted(POLICIES)
START = date(2026, 1, 1)


def assert_guardrails(arms: Sequence[ArmState], plan: Plan, budget: float) -> None:
    """The guardrails and the unallocated amount of one plan (no CPA cap)."""
    rec = {d.campaign_id: d.recommended for d in plan.decisions}
    assert [d.campaign_id for d in plan.decisions] == [a.campaign_id for a in arms]
    fixed = {a.campaign_id for a in arms if a.gate == "hold" or a.learning_state == "learning"}
    for a in arms:
        x = rec[a.campaign_id]
        assert x >= 0
        if a.campaign_id in fixed:
            assert x == a.current, a
        elif a.current > 0:
            assert abs(x - a.current) <= MAX_CHANGE * a.current * (1 + 1e-12) + 1e-9, (a, x)
    assert sum(rec.values()) + plan.unallocated == pytest.approx(budget, abs=1e-6)
    free = [a for a in arms if a.campaign_id not in fixed]
    if plan.unallocated >= 0.005:  # nothing free could take more
        assert plan.unallocated_reason and "left unallocated" in plan.unallocated_reason
        for a in free:
            top = a.current * (1 + MAX_CHANGE) if a.current > 0 else MAX_SHARE * budget
            assert rec[a.campaign_id] >= top - 0.011, (a, rec[a.campaign_id])
    elif plan.unallocated <= -0.005:  # nothing free could take less
        assert plan.unallocated_reason and "over-allocated" in plan.unallocated_reason
        for a in free:
            bottom = a.current * (1 - MAX_CHANGE) if a.current > 0 else 0.0
            assert rec[a.campaign_id] <= bottom + 0.011, (a, rec[a.campaign_id])
    else:
        assert plan.unallocated_reason is None
    if plan.unallocated_reason:
        assert all(plan.unallocated_reason in d.reasons for d in plan.decisions)


# ---- random arms -------------------------------------------------------------------------


@st.composite
def arm_states(draw: st.DrawFn, cid: str) -> ArmState:
    """An arm with a random current budget, gate, learning state, source and history."""
    current = draw(st.sampled_from([0.0, 0.01, 5.0, 100.0, 2_500.0, 40_000.0]))
    current *= draw(st.floats(0.5, 2.0))
    days = draw(st.integers(0, 28))
    theta = draw(st.floats(0.0, 1.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    spend = max(current, 1.0)
    hist = []
    for d in range(days):
        s = float(spend * rng.lognormal(0, 0.3)) if rng.random() > 0.1 else 0.0
        y = float(rng.poisson(theta * s**0.8))
        hist.append(Day(START + timedelta(days=d), s, y, y * 1.1, 30 * y, 33 * y, d % 9 == 8))
    return ArmState(
        cid,
        current,
        tuple(hist),
        draw(st.sampled_from(["open", "open", "open", "hold"])),
        draw(st.sampled_from(["stable", "learning_limited", "learning", "unknown", "new"])),
        ("integration_dropout",),
        draw(st.sampled_from(OUTCOME_SOURCES)),
    )


@st.composite
def accounts(draw: st.DrawFn) -> tuple[list[ArmState], float]:
    n = draw(st.integers(1, 6))
    arms = [draw(arm_states(f"c{i:02d}")) for i in range(1, n + 1)]
    total = sum(a.current for a in arms)
    factor = draw(st.sampled_from([0.01, 0.3, 0.82, 1.0, 1.18, 3.0, 50.0]))
    return arms, max(total * factor * draw(st.floats(0.9, 1.1)), 1.0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(accounts(), st.sampled_from(NAMES), st.sampled_from(["conversions", "value"]))
def test_every_policy_keeps_the_guardrails_on_random_arms(
    account: tuple[list[ArmState], float], name: str, objective: str
) -> None:
    arms, budget = account
    policy = make_policy(name, objective=objective)
    guard = GuardedBayes(objective, draws=50)
    plan = guarded_plan(policy, arms, budget, np.random.default_rng(0), guard)
    assert_guardrails(arms, plan, budget)


def test_the_stop_loss_is_the_one_edit_past_the_change_limit() -> None:
    rng = np.random.default_rng(4)
    arms = []
    for k, theta in enumerate((0.4, 0.02, 0.3)):
        hist = []
        for d in range(28):
            y = float(rng.poisson(theta * 300.0**0.8))
            hist.append(Day(START + timedelta(days=d), 300.0, y, y))
        arms.append(ArmState(f"c0{k + 1}", 300.0, tuple(hist)))
    plan = GuardedBayes(cpa_cap=30.0).plan(arms, 900.0, np.random.default_rng(0))
    out = {d.campaign_id: d for d in plan.decisions}
    assert out["c02"].recommended == 18.0  # 2% of the budget: far past 18%, and said so
    assert any("stop-loss" in r and "resets learning" in r for r in out["c02"].reasons)
    for c in ("c01", "c03"):
        assert out[c].recommended == pytest.approx(354.0)  # the others: +18% at most
    assert plan.unallocated == pytest.approx(900.0 - 18.0 - 2 * 354.0)


# ---- seeded workspaces of every data shape -----------------------------------------------


@dataclass
class ShapeCase:
    """A workspace of one data shape with the day's reports, computed once."""

    name: str
    ws: Workspace
    as_of: date
    docs: dict[str, Any]
    arms: list[ArmState]

    def allocate(self, budget: float, **kw: Any) -> dict[str, Any]:
        return allocate(ws=self.ws, budget=budget, as_of=self.as_of, **self.docs, **kw)


#: shape -> (simulator shape, what the outcome sources must be)
SHAPES = {
    "spend": ("spend", {"platform_reported"}),
    "spend_no_conversions": ("spend", {"none"}),
    "spend_conversions": ("spend_conversions", {"nowcast"}),
    "spend_conversions_without_nowcast": ("spend_conversions", {"observed"}),
    "full": ("full", {"nowcast"}),
}


def _strip_platform_counts(folder: Path, spend_csv: Path) -> Workspace:
    """A workspace of the spend export without its platform conversion columns."""
    table = pv.read_csv(spend_csv)
    keep = [c for c in table.column_names if not c.startswith("platform_conversion")]
    path = folder / "spend_only.csv"
    pv.write_csv(table.select(keep), path)
    ws = Workspace(folder / "stripped.duckdb")
    ingest_file(ws, "spend", path)
    return ws


@pytest.fixture(scope="module", params=list(SHAPES))
def case(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ShapeCase]:
    name: str = request.param
    tmp = tmp_path_factory.mktemp(name)
    ws, _, paths = simulated_workspace(tmp, days=35, campaigns=4, seed=3, shape=SHAPES[name][0])
    if name == "spend_no_conversions":
        ws.close()
        ws = _strip_platform_counts(tmp, paths["spend"])
    as_of = default_as_of(ws)
    assert as_of is not None
    docs: dict[str, Any] = {
        "checks": run_checks(ws, as_of=as_of).to_dict(),
        "phase_doc": phase(ws, as_of).to_dict(),
        "nowcast_doc": (
            {"cohorts": []}
            if name == "spend_conversions_without_nowcast"
            else nowcast(ws, as_of, options=NowcastOptions(draws=200, crm=False)).to_dict()
        ),
    }
    arms, _ = arms_from_workspace(ws, as_of, **docs)
    yield ShapeCase(name, ws, as_of, docs, arms)
    ws.close()


def test_each_shape_allocates_from_its_best_source(case: ShapeCase) -> None:
    total = round(sum(a.current for a in case.arms), 2)
    doc = case.allocate(total)
    sources = {a["outcome_source"] for a in doc["arms"]}
    assert sources == SHAPES[case.name][1]
    assert doc["outcome_sources"] == {sources.pop(): 4}
    reasons = " ".join(r for a in doc["arms"] for r in a["reasons"])
    if case.name == "spend":
        assert "platform-reported conversions" in reasons
    if case.name == "spend_conversions":  # no touchpoints: cohorts from the spend clicks
        assert "daily clicks and the conversions' click_ts" in reasons
    if case.name == "spend_conversions_without_nowcast":
        assert "counted on their conversion day" in reasons
    if case.name == "spend_no_conversions":
        assert "no outcome data in the window from any source" in reasons
        assert doc["prior"] is None
    else:
        assert doc["prior"] is not None and "no outcome data" not in reasons


@pytest.mark.parametrize("factor", [0.05, 0.7, 1.0, 1.3, 20.0])
def test_allocate_keeps_the_guardrails_on_every_shape(case: ShapeCase, factor: float) -> None:
    total = sum(a.current for a in case.arms)
    budget = round(total * factor, 2)
    current = {a.campaign_id: a for a in case.arms}
    for name in NAMES:
        doc = case.allocate(budget, policy=name, random_state=int(factor * 10))
        rec = {a["campaign_id"]: a["recommended"] for a in doc["arms"]}
        assert set(rec) == set(current)
        assert sum(rec.values()) + doc["unallocated"] == pytest.approx(budget, abs=1e-6)
        for a in doc["arms"]:
            arm = current[a["campaign_id"]]
            assert a["recommended"] >= 0
            if arm.gate == "hold" or arm.learning_state == "learning":
                assert a["recommended"] == a["current"]
            elif arm.current > 0:
                assert abs(a["recommended"] - arm.current) <= MAX_CHANGE * arm.current + 0.005
        if abs(doc["unallocated"]) >= 0.01:
            assert doc["unallocated_reason"]
            assert (doc["unallocated"] > 0) == (factor > 1)
        else:
            assert doc["unallocated_reason"] is None
        if factor in (0.05, 20.0):  # far beyond what 18% a day can reach
            assert abs(doc["unallocated"]) > 0.1 * total
        # the plan behind it, on the same arms, for every seed
        for seed in (1, 2):
            plan = guarded_plan(make_policy(name), case.arms, budget, np.random.default_rng(seed))
            assert_guardrails(case.arms, plan, budget)
