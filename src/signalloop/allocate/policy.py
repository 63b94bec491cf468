"""Budget allocation policies and ``allocate``: daily budgets per campaign, with the evidence.

A policy turns what is known about each campaign (:class:`ArmState`) and a total daily budget
into a budget per campaign (:class:`Policy`). Policies are registered by name in
:data:`POLICIES`; the real one is :class:`GuardedBayes` (Thompson sampling on the pooled
Gamma-Poisson posterior of :mod:`signalloop.allocate.posterior`, under guardrails), the
others are baselines for the benchmarks.

No policy run by :func:`allocate` moves a campaign that spends by more than the daily change
limit: a budget the guardrails cannot reach is partly left unallocated, and said so.

>>> import numpy as np
>>> arms = [ArmState("c01", 100.0), ArmState("c02", 100.0, gate="hold")]
>>> plan = GuardedBayes().plan(arms, 300.0, np.random.default_rng(0))
>>> [(d.campaign_id, d.recommended) for d in plan.decisions], round(plan.unallocated, 2)
([('c01', 118.0), ('c02', 100.0)], 82.0)
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Protocol, TypeVar

import numpy as np
from scipy import stats

from signalloop.allocate.posterior import (
    OBJECTIVES,
    OUTCOME_SOURCES,
    PLATFORM_BIAS_CV,
    ArmState,
    Day,
    FloatArray,
    GammaPoissonArms,
    arm_data,
    water_fill,
)
from signalloop.config import Settings
from signalloop.errors import UsageError
from signalloop.store import Workspace

#: Campaign learning state from its ad sets': the most fragile one (lowest rank) wins;
#: a state not listed here counts as ``unknown`` (not known to be learning: edited only
#: within the daily change limit).
LEARNING_RANK = {"learning": 0, "learning_limited": 1, "unknown": 2, "stable": 3}


class Policy(Protocol):
    """Anything that splits a daily budget over arms.

    The contract: a non-negative daily budget for every arm. The baselines spend exactly
    ``budget``; a guarded policy (:class:`GuardedBayes`) may not, when its guardrails cannot
    reach it: ``budget - sum(budgets)`` is then the amount left unallocated (negative:
    over-allocated), which :func:`allocate` reports with the reason. :func:`allocate` puts
    every policy's budgets through the guardrails (:meth:`GuardedBayes.guard`); the time loop
    (:mod:`signalloop.allocate.loop`) applies them raw, to compare the policies as they are.
    """

    name: str

    def allocate(
        self, arms: Sequence[ArmState], budget: float, rng: np.random.Generator
    ) -> dict[str, float]:
        """Daily budget per ``campaign_id`` (non-negative; see the class for the sum)."""
        ...


POLICIES: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register(cls: T) -> T:
    """Class decorator: add a policy to :data:`POLICIES` under its ``name``."""
    POLICIES[cls.name] = cls  # type: ignore[attr-defined]
    return cls


def make_policy(name: str, **params: Any) -> Policy:
    """Instantiate a registered policy, passing only the parameters its ``__init__`` takes."""
    if name not in POLICIES:
        raise UsageError(f"unknown policy {name!r}: expected one of {', '.join(sorted(POLICIES))}")
    cls = POLICIES[name]
    accepted = inspect.signature(cls).parameters
    policy: Policy = cls(**{k: v for k, v in params.items() if k in accepted})
    return policy


def _even(ids: Sequence[str], budget: float) -> dict[str, float]:
    return {c: budget / len(ids) for c in ids} if ids else {}


def _check(arms: Sequence[ArmState], budget: float) -> None:
    if not arms:
        raise UsageError("no campaigns to allocate over")
    if not budget > 0:
        raise UsageError(f"the budget must be positive, got {budget}")


def _last_week_cpa(arm: ArmState, days: int = 7) -> float | None:
    s, y = arm_data(arm)
    s, y = s[-days:], y[-days:]
    return float(s.sum() / y.sum()) if y.sum() > 0 else None


# ---- baselines ---------------------------------------------------------------------------


@register
class EvenSplit:
    """The same budget for every arm, whatever it did (ignores gates and learning)."""

    name = "even_split"

    def allocate(
        self, arms: Sequence[ArmState], budget: float, rng: np.random.Generator
    ) -> dict[str, float]:
        _check(arms, budget)
        return _even([a.campaign_id for a in arms], budget)


@register
class GreedyCPA:
    """Everything to the arm with the lowest CPA last week (even split until one converts)."""

    name = "greedy_cpa"

    def allocate(
        self, arms: Sequence[ArmState], budget: float, rng: np.random.Generator
    ) -> dict[str, float]:
        _check(arms, budget)
        cpas = {a.campaign_id: _last_week_cpa(a) for a in arms}
        known = {c: v for c, v in cpas.items() if v is not None}
        if not known:
            return _even(list(cpas), budget)
        best = min(known, key=lambda c: known[c])
        return {c: budget if c == best else 0.0 for c in cpas}


@register
class EpsilonGreedy:
    """Like :class:`GreedyCPA`, but with probability ``epsilon`` a random arm gets the budget."""

    name = "epsilon_greedy"

    def __init__(self, epsilon: float = 0.1) -> None:
        self.epsilon = epsilon

    def allocate(
        self, arms: Sequence[ArmState], budget: float, rng: np.random.Generator
    ) -> dict[str, float]:
        _check(arms, budget)
        if rng.random() < self.epsilon:
            pick = arms[int(rng.integers(len(arms)))].campaign_id
            return {a.campaign_id: budget if a.campaign_id == pick else 0.0 for a in arms}
        return GreedyCPA().allocate(arms, budget, rng)


@register
class PlainThompson:
    """Thompson sampling without pooled priors or guardrails: one draw, then the optimum."""

    name = "thompson"

    def __init__(self, objective: str = "conversions", beta: float = 0.8) -> None:
        self.objective = objective
        self.beta = beta

    def allocate(
        self, arms: Sequence[ArmState], budget: float, rng: np.random.Generator
    ) -> dict[str, float]:
        _check(arms, budget)
        m = GammaPoissonArms(self.beta, objective=self.objective).fit(arms)
        shape, rate = 1e-3 + m.outcome_, 1e-3 + m.exposure_  # a flat prior, not the pooled one
        theta = rng.gamma(shape, 1.0 / rate)[None, :]
        k = len(arms)
        x = water_fill(theta, m.beta_, np.zeros(k), np.full(k, budget), budget)[0]
        return {a.campaign_id: float(v) for a, v in zip(arms, x, strict=True)}


# ---- the guarded Bayesian policy ---------------------------------------------------------


@dataclass
class ArmDecision:
    """One arm's recommendation with its evidence (a row of ``allocate``'s ``arms``)."""

    campaign_id: str
    current: float
    recommended: float
    automation: str
    expected_cpa: float | None
    cpa_interval: tuple[float, float] | None
    p_best: float
    reasons: list[str] = field(default_factory=list)
    expected_outcome: float | None = None
    outcome_source: str = "nowcast"

    def to_dict(self) -> dict[str, Any]:
        change = (
            round(100.0 * (self.recommended - self.current) / self.current, 1) + 0.0
            if self.current > 0
            else None
        )
        return {
            "campaign_id": self.campaign_id,
            "current": round(self.current, 2),
            "recommended": round(self.recommended, 2),
            "change_pct": change,
            "automation": self.automation,
            "outcome_source": self.outcome_source,
            "expected_cpa": _r(self.expected_cpa),
            "cpa_interval": [_r(v) for v in self.cpa_interval] if self.cpa_interval else None,
            "expected_outcome": _r(self.expected_outcome),
            "p_best": round(self.p_best, 3),
            "reasons": self.reasons,
        }


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


@dataclass
class Plan:
    """What :meth:`GuardedBayes.plan` decided: the decisions and what the budget left over.

    Attributes
    ----------
    decisions
        One :class:`ArmDecision` per arm, in the arms' order.
    budget
        The budget asked for.
    unallocated
        ``budget`` minus the recommended budgets: above zero when the guardrails keep the
        campaigns from taking the whole budget, below zero when the campaigns that keep
        their budget (held, in learning) and the smallest cuts the daily change limit allows
        already spend more than it; 0 when the budget is met (to the cent).
    unallocated_reason
        Why, or ``None`` when nothing is left over.
    """

    decisions: list[ArmDecision]
    budget: float
    unallocated: float
    unallocated_reason: str | None


def _source_reason(arm: ArmState) -> str | None:
    """How the arm's outcomes were counted, when not by the nowcast."""
    if arm.outcome_source == "platform_reported":
        return (
            "outcomes are platform-reported conversions (the ad platform's own counts, which "
            "over-count): weighed as at most "
            f"{1 / PLATFORM_BIAS_CV**2:.0f} first-party conversions, so its posterior is wider"
        )
    if arm.outcome_source == "observed":
        return (
            "outcomes are first-party conversions counted on their conversion day (no nowcast "
            "cohorts for it: no click time to correct for delay)"
        )
    return None


def guard_bounds(
    arm: ArmState, budget: float, min_share: float, max_share: float, max_change: float
) -> tuple[float, float, str | None]:
    """The budget range the guardrails allow a free arm, and why, if not the share range.

    Within ``[min_share, max_share]`` of the budget, and, when it spends now, within
    ``max_change`` of its current budget; the change limit wins: an arm whose current
    budget is outside the share range moves at most ``max_change`` a day toward it.

    >>> guard_bounds(ArmState("c01", 100.0), 1000.0, 0.02, 0.8, 0.18)
    (82.0, 118.0, None)
    >>> guard_bounds(ArmState("c01", 5.0), 1000.0, 0.02, 0.8, 0.18)[:2]
    (5.8999999999999995, 5.8999999999999995)
    """
    lo, hi = min_share * budget, max_share * budget
    cur = arm.current
    if cur <= 0:
        return lo, hi, None
    c_lo, c_hi = cur * (1 - max_change), cur * (1 + max_change)
    if hi < c_lo or lo > c_hi:
        to = c_lo if hi < c_lo else c_hi
        return (
            to,
            to,
            f"its share is outside {min_share:.0%}-{max_share:.0%}: moving at most "
            f"{max_change:.0%} a day toward it",
        )
    return max(lo, c_lo), min(hi, c_hi), None


def project(target: FloatArray, lo: FloatArray, hi: FloatArray, total: float) -> FloatArray:
    """The point of ``{lo <= x <= hi, sum x = total}`` nearest ``target`` (Euclidean).

    ``x = clip(target + lambda, lo, hi)`` with ``lambda`` found by bisection. Requires
    ``sum lo <= total <= sum hi``.

    >>> project(np.array([0.0, 300.0]), np.array([82.0, 82.0]), np.array([118.0, 118.0]), 200.0)
    array([ 82., 118.])
    """
    target = np.asarray(target, dtype=float)
    span = float(np.abs(target).max() + np.abs(hi).max() + abs(total)) + 1.0
    a, b = -span, span
    for _ in range(200):
        mid = 0.5 * (a + b)
        if np.clip(target + mid, lo, hi).sum() > total:
            b = mid
        else:
            a = mid
    x = np.clip(target + 0.5 * (a + b), lo, hi)
    resid = total - x.sum()
    room = hi - x if resid > 0 else x - lo
    if room.sum() > 0:
        x = np.clip(x + resid * room / room.sum(), lo, hi)
    return np.asarray(x, dtype=float)


def _cents(sol: FloatArray, lo: FloatArray, hi: FloatArray, total: float) -> FloatArray:
    """``sol`` rounded to cents within ``[lo, hi]``, the rounding residual on arms with room.

    An arm whose range holds no whole cent keeps its unrounded value.
    """
    lo_c, hi_c = np.ceil(lo * 100) / 100, np.floor(hi * 100) / 100
    whole = lo_c <= hi_c
    x = np.where(whole, np.clip(np.round(sol, 2), lo_c, hi_c), sol)
    resid = round(total - float(x.sum()), 2)
    for j in np.argsort(-(hi_c - lo_c)):
        if abs(resid) < 0.005:
            break
        if not whole[j]:
            continue
        step = min(resid, hi_c[j] - x[j]) if resid > 0 else max(resid, lo_c[j] - x[j])
        x[j] = round(x[j] + step, 2)
        resid = round(resid - step, 2)
    return np.asarray(x, dtype=float)


@register
class GuardedBayes:
    """Thompson sampling on pooled Gamma-Poisson posteriors, under guardrails.

    Each of ``draws`` posterior draws of every arm's ``theta`` gives the budgets that maximise
    ``sum theta * spend ** beta`` within the bounds (:func:`water_fill`); the recommendation is
    their mean. Guardrails, in order of precedence: a held campaign keeps its budget exactly;
    a stop-loss (posterior ``P(CPA > cpa_cap) >= stop_loss_prob`` at its current spend) cuts
    an arm to ``min_share`` (the one edit allowed past the change limit, and only with a
    ``cpa_cap``: stopping a loss is the point); a campaign in ``learning`` keeps its budget
    unless its CPA is above the cap; every other arm moves at most ``max_change`` a day
    (below the 20% that resets learning) within ``[min_share, max_share]`` of the budget
    (:func:`guard_bounds`; the change limit wins when both cannot hold). With no outcome
    data at all the free arms split evenly within the same bounds.

    **Budgets may not sum to the budget.** When the budget lies beyond what the guardrails
    allow (above every free campaign's largest step up, below the campaigns that keep their
    budget plus every free campaign's largest step down), the free campaigns go to those
    bounds and the difference is reported (:attr:`Plan.unallocated`, negative when
    over-allocated) with a reason on each arm, instead of breaking a guardrail. Budgets are
    rounded to cents within their bounds.

    :meth:`guard` applies the same guardrails to any policy's budgets (the nearest allowed
    budgets), which is how :func:`allocate` runs the baseline policies.

    Parameters
    ----------
    objective
        ``"conversions"`` or ``"value"``.
    cpa_cap
        Stop-loss CPA (cost per conversion); ``None``: no stop-loss.
    min_share, max_share, max_change
        Guardrails (fractions): 2% and 80% of the budget per arm, 18% change a day (under the
        20% that resets learning). Chosen on the time loop (20 seeds, cold start and outage):
        the first defaults, 5% / 60% / 15%, kept the guarded policy ~3.5 points of regret
        above these, mostly by forcing 5% onto arms the best allocation starves and capping
        the one it would feed.
    draws
        Thompson draws averaged.
    manual_below
        Fewer nowcast conversions than this over the window: ``manual`` automation.
    automated_cv
        Posterior coefficient of variation of ``theta`` at or below which the arm is
        ``automated`` (about ``1 / cv ** 2`` = 100 conversions); between: ``assisted``.
    stop_loss_prob, level
        Probability of the stop-loss; level of ``cpa_interval``.
    beta
        Fixed spend exponent, or ``None`` to fit it on the account.
    """

    name = "guarded_bayes"

    def __init__(
        self,
        objective: str = "conversions",
        cpa_cap: float | None = None,
        *,
        min_share: float = 0.02,
        max_share: float = 0.8,
        max_change: float = 0.18,
        draws: int = 200,
        manual_below: float = 10.0,
        automated_cv: float = 0.1,
        stop_loss_prob: float = 0.9,
        level: float = 0.9,
        beta: float | None = None,
    ) -> None:
        self.objective = objective
        self.cpa_cap = cpa_cap
        self.min_share = min_share
        self.max_share = max_share
        self.max_change = max_change
        self.draws = draws
        self.manual_below = manual_below
        self.automated_cv = automated_cv
        self.stop_loss_prob = stop_loss_prob
        self.level = level
        self.beta = beta

    def allocate(
        self, arms: Sequence[ArmState], budget: float, rng: np.random.Generator
    ) -> dict[str, float]:
        return {d.campaign_id: d.recommended for d in self.decide(arms, budget, rng)}

    def guard(
        self,
        arms: Sequence[ArmState],
        budget: float,
        budgets: Mapping[str, float],
        rng: np.random.Generator,
    ) -> dict[str, float]:
        """The budgets nearest ``budgets`` (another policy's) that respect the guardrails."""
        plan = self.plan(arms, budget, rng, target=budgets)
        return {d.campaign_id: d.recommended for d in plan.decisions}

    def fit(self, arms: Sequence[ArmState]) -> tuple[GammaPoissonArms, GammaPoissonArms]:
        """The conversion posterior (CPA, stop-loss, automation) and the objective's.

        With the ``value`` objective and no value in any arm's outcomes, the objective's
        posterior is the conversions' (the reasons say so).
        """
        conv = GammaPoissonArms(self.beta).fit(arms)
        obj = conv
        if self.objective == "value":
            val = GammaPoissonArms(conv.beta_, objective="value").fit(arms)
            if val.has_data_ or not conv.has_data_:
                obj = val
        return conv, obj

    def decide(
        self, arms: Sequence[ArmState], budget: float, rng: np.random.Generator
    ) -> list[ArmDecision]:
        """Budgets with their evidence (:meth:`plan`'s decisions)."""
        return self.plan(arms, budget, rng).decisions

    def plan(
        self,
        arms: Sequence[ArmState],
        budget: float,
        rng: np.random.Generator,
        target: Mapping[str, float] | None = None,
    ) -> Plan:
        """Budgets with their evidence and what is left unallocated.

        ``target`` given (another policy's budgets): the guardrails are applied to those
        (the nearest budgets they allow) instead of the Thompson optimum.
        """
        _check(arms, budget)
        conv, obj = self.fit(arms)
        conv_draws = conv.sample(self.draws, rng)
        obj_draws = obj.sample(self.draws, rng) if obj is not conv else conv_draws
        reasons: dict[str, list[str]] = {a.campaign_id: [] for a in arms}
        for arm in arms:
            why = _source_reason(arm)
            if why and conv.has_data_:
                reasons[arm.campaign_id].append(why)
        if self.objective == "value" and obj is conv and conv.has_data_:
            for arm in arms:
                reasons[arm.campaign_id].append(
                    "no conversion value in any source: allocated on conversions"
                )
        budgets, note = self._budgets(arms, budget, conv, conv_draws, obj_draws, reasons, target)
        best = np.argmax(obj_draws, axis=1)
        alpha = (1.0 - self.level) / 2
        out = []
        for i, arm in enumerate(arms):
            x = budgets[arm.campaign_id]
            n = float(arm_data(arm)[1].sum())
            cpa_draws = x ** (1 - conv.beta_) / np.maximum(conv_draws[:, i], 1e-300)
            has = conv.has_data_ and x > 0
            source = arm.outcome_source if conv.has_data_ else "none"
            if not conv.has_data_:
                level = "manual"
            elif n < self.manual_below:
                level = "manual"
                what = (
                    "platform-reported conversions"
                    if source == "platform_reported"
                    else ("conversions")
                )
                reasons[arm.campaign_id].append(
                    f"{n:.0f} {what} over {len(arm.history)} days: too little volume for "
                    "any model, bid manually"
                )
            elif conv.cv_[i] <= self.automated_cv:
                level = "automated"
            else:
                level = "assisted"
            out.append(
                ArmDecision(
                    arm.campaign_id,
                    arm.current,
                    x,
                    level,
                    float(np.median(cpa_draws)) if has else None,
                    (
                        (
                            float(np.quantile(cpa_draws, alpha)),
                            float(np.quantile(cpa_draws, 1 - alpha)),
                        )
                        if has
                        else None
                    ),
                    float(np.mean(best == i)) if conv.has_data_ else 1.0 / len(arms),
                    reasons[arm.campaign_id],
                    float(np.median(obj_draws[:, i]) * x**obj.beta_) if has else None,
                    source,
                )
            )
        left = budget - sum(budgets.values())
        return Plan(out, budget, left, note if abs(left) >= 0.005 else None)

    def _bound_reason(
        self, arm: ArmState, x: float, lo: float, hi: float, budget: float, why: list[str]
    ) -> None:
        tol = 0.011 + 1e-9 * max(hi, 1.0)
        cur = arm.current
        if cur > 0 and abs(x - hi) < tol and abs(hi - cur * (1 + self.max_change)) < tol:
            why.append(f"raised by the daily change limit ({self.max_change:.0%})")
        elif cur > 0 and abs(x - lo) < tol and abs(lo - cur * (1 - self.max_change)) < tol:
            why.append(f"cut by the daily change limit ({self.max_change:.0%})")
        elif abs(x - lo) < tol and abs(lo - self.min_share * budget) < tol:
            why.append(f"at the minimum share ({self.min_share:.0%})")
        elif abs(x - hi) < tol and abs(hi - self.max_share * budget) < tol:
            why.append(f"at the maximum share ({self.max_share:.0%})")

    def _fixed(
        self,
        arms: Sequence[ArmState],
        budget: float,
        conv: GammaPoissonArms,
        conv_draws: FloatArray,
        reasons: dict[str, list[str]],
    ) -> dict[str, float]:
        """Arms whose budget the guardrails set: held, stopped, in learning."""
        lo_share = self.min_share * budget
        fixed: dict[str, float] = {}
        for i, arm in enumerate(arms):
            cid, cur = arm.campaign_id, arm.current
            why = reasons[cid]
            if arm.gate == "hold":
                fixed[cid] = cur
                held_by = ", ".join(arm.gate_reasons) or "the signal checks"
                why.append(f"held at the gate by {held_by}: keeps its current budget")
                continue
            if arm.learning_state not in ("learning", "learning_limited", "stable"):
                why.append(
                    f"learning state {arm.learning_state}: edited only within the daily change "
                    f"limit ({self.max_change:.0%})"
                )
            if not conv.has_data_:
                if arm.learning_state == "learning":
                    fixed[cid] = cur
                    why.append("in learning: budget not edited")
                continue
            at = cur if cur > 0 else lo_share
            cpa = at ** (1 - conv.beta_) / np.maximum(conv_draws[:, i], 1e-300)
            over = self.cpa_cap is not None and float(np.median(cpa)) > self.cpa_cap
            if self.cpa_cap is not None:
                # P(CPA > cap) = P(theta < at^(1-beta) / cap), exactly from the Gamma posterior
                p_over = float(
                    stats.gamma.cdf(
                        at ** (1 - conv.beta_) / self.cpa_cap,
                        conv.shape_[i],
                        scale=1.0 / conv.rate_[i],
                    )
                )
                if p_over >= self.stop_loss_prob:
                    fixed[cid] = round(lo_share, 2)
                    why.append(
                        f"stop-loss: P(CPA > {self.cpa_cap:g}) = {p_over:.2f}; cut to the minimum "
                        f"share ({self.min_share:.0%})"
                        + (
                            " (a cut this large resets learning)"
                            if cur > 0 and lo_share < cur * 0.8
                            else ""
                        )
                    )
                    continue
            if arm.learning_state == "learning" and not over:
                fixed[cid] = cur
                why.append("in learning: budget not edited (its CPA is not above the cap)")
            elif arm.learning_state == "learning" and over:
                why.append(f"in learning, but its CPA is above the cap {self.cpa_cap:g}: edited")
        return fixed

    def _budgets(
        self,
        arms: Sequence[ArmState],
        budget: float,
        conv: GammaPoissonArms,
        conv_draws: FloatArray,
        obj_draws: FloatArray,
        reasons: dict[str, list[str]],
        target: Mapping[str, float] | None,
    ) -> tuple[dict[str, float], str | None]:
        fixed = self._fixed(arms, budget, conv, conv_draws, reasons)
        if target is not None:
            for cid in fixed:
                asked = float(target.get(cid, 0.0))
                if abs(asked - fixed[cid]) >= 0.005:
                    reasons[cid].insert(0, f"the policy's {asked:,.2f} overruled by the guardrails")
        idx = [i for i, a in enumerate(arms) if a.campaign_id not in fixed]
        free = [arms[i] for i in idx]
        taken = sum(fixed.values())
        rest = budget - taken
        x = dict(fixed)
        if not free:
            every = (
                f"every campaign keeps its budget (held at the gate, in learning or stopped): "
                f"they take {taken:,.2f} of the {budget:,.2f} budget; "
                + (
                    f"{rest:,.2f} is left unallocated"
                    if rest > 0
                    else f"over-allocated by {-rest:,.2f}"
                )
            )
            for c in fixed:
                if abs(rest) >= 0.005:
                    reasons[c].append(every)
            return x, every
        lo, hi = np.zeros(len(free)), np.zeros(len(free))
        for j, arm in enumerate(free):
            lo[j], hi[j], outside = guard_bounds(
                arm, budget, self.min_share, self.max_share, self.max_change
            )
            if outside:
                reasons[arm.campaign_id].append(outside)
        # the shares give way before the budget does; the change limit never
        cur = np.array([a.current for a in free])
        soft_lo, soft_hi = lo.copy(), hi.copy()
        if rest > hi.sum():
            hi = np.where(cur > 0, np.maximum(hi, cur * (1 + self.max_change)), hi)
        elif rest < lo.sum():
            lo = np.where(cur > 0, np.minimum(lo, cur * (1 - self.max_change)), 0.0)
        total = float(np.clip(rest, lo.sum(), hi.sum()))
        if target is not None:
            asks = np.array([float(target.get(a.campaign_id, 0.0)) for a in free])
            sol = project(asks, lo, hi, total)
        elif conv.has_data_:
            sol = water_fill(obj_draws[:, idx], conv.beta_, lo, hi, total).mean(axis=0)
        else:
            sol = water_fill(np.ones((1, len(free))), conv.beta_, lo, hi, total)[0]
        sol = _cents(sol, lo, hi, total)
        for j, arm in enumerate(free):
            said = reasons[arm.campaign_id]
            if target is not None:
                t_j = float(target.get(arm.campaign_id, 0.0))
                if abs(t_j - sol[j]) >= 0.005:
                    said.insert(0, f"the policy's {t_j:,.2f} moved by the guardrails")
            elif not conv.has_data_:
                said.append(
                    "no outcome data in the window from any source (nowcast, first-party "
                    "conversions, platform-reported conversions): even split within the daily "
                    "change limit"
                )
            if sol[j] > soft_hi[j] + 0.005:
                said.append(
                    f"above the maximum share ({self.max_share:.0%}): the budget cannot be met "
                    "otherwise within the daily change limit"
                )
            elif sol[j] < soft_lo[j] - 0.005:
                said.append(
                    f"below the minimum share ({self.min_share:.0%}): the budget cannot be met "
                    "otherwise within the daily change limit"
                )
            self._bound_reason(arm, float(sol[j]), lo[j], hi[j], budget, said)
            if (
                target is None
                and conv.has_data_
                and not any(
                    r.startswith(("raised by", "cut by", "at the m", "its share", "above", "below"))
                    for r in said
                )
            ):
                said.append("Thompson sampling: marginal returns equalised")
        x |= {a.campaign_id: float(v) for a, v in zip(free, sol, strict=True)}
        left = budget - sum(x.values())
        note = None
        if abs(left) >= 0.005:
            limit = f"the daily change limit ({self.max_change:.0%})"
            kept = (
                f" beside the {taken:,.2f} that held, learning or stopped campaigns keep"
                if fixed
                else ""
            )
            if left > 0:
                note = (
                    f"the budget cannot be met within {limit}: the campaigns free to move can "
                    f"take at most {float(sol.sum()):,.2f}{kept}; {left:,.2f} is left "
                    "unallocated"
                )
            else:
                note = (
                    f"the budget cannot be met within {limit}: the campaigns free to move need "
                    f"at least {float(sol.sum()):,.2f}{kept}; over-allocated by {-left:,.2f}"
                )
            for arm in arms:
                reasons[arm.campaign_id].append(note)
        return x, note


def guarded_plan(
    policy: Policy,
    arms: Sequence[ArmState],
    budget: float,
    rng: np.random.Generator,
    guard: GuardedBayes | None = None,
) -> Plan:
    """What :func:`allocate` recommends with ``policy``: every policy within the guardrails.

    :class:`GuardedBayes` plans itself; any other policy's budgets go through ``guard``'s
    guardrails (:meth:`GuardedBayes.plan` with ``target``; default ``GuardedBayes()``), the
    reasons naming the policy.
    """
    if isinstance(policy, GuardedBayes):
        return policy.plan(arms, budget, rng)
    guard = guard or GuardedBayes()
    plan = guard.plan(arms, budget, rng, target=policy.allocate(arms, budget, rng))
    for d in plan.decisions:
        d.reasons.insert(0, f"budget from the {policy.name} policy, within the guardrails")
    return plan


# ---- the workspace -----------------------------------------------------------------------

#: Fewest conversions on each side before platform counts are scaled to first-party ones.
CALIBRATE_MIN = 20.0
#: The reason an arm carries when its nowcast rests on less than touchpoints.
NOWCAST_BASIS = {
    "click_ts": "outcomes nowcast from the spend export's daily clicks and the conversions' "
    "click_ts (no touchpoints)",
    "conversion_day": "outcomes nowcast from conversion days with the account's pooled delay "
    "(no click time)",
}


def _window_rows(expr: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = expr.to_pyarrow().to_pylist()
    return rows


def _outcome_tables(
    ws: Workspace, first: date, as_of: date, settings: Settings
) -> tuple[
    dict[tuple[str, date], tuple[float, float]], dict[tuple[str, date], tuple[float, float]]
]:
    """First-party conversions by conversion day and platform counts by spend day.

    Returns ``(observed, platform)``: ``(campaign_id, day) -> (conversions, value)``. The
    first-party ones are the attributed conversions (the contract's rule) of the click path's
    kinds (the CRM's downstream stages left out, as the nowcast does); the platform's are the
    spend rows' ``platform_conversions`` and ``platform_conversion_value`` where not null.
    """
    from signalloop.attribution import attributed_conversions
    from signalloop.nowcast import DOWNSTREAM_KINDS

    downstream = [*settings.funnel[1:], *DOWNSTREAM_KINDS]
    conv = attributed_conversions(ws)
    day = conv.ts.date()
    conv = conv.filter(
        conv.attributed_campaign_id.notnull()
        & ~conv.kind.isin(downstream)
        & (day >= first)
        & (day <= as_of)
    )
    observed = {
        (str(r["c"]), r["d"]): (float(r["n"]), float(r["v"] or 0.0))
        for r in _window_rows(
            conv.group_by(c=conv.attributed_campaign_id, d=conv.ts.date()).aggregate(
                n=conv.count(), v=conv.value.sum()
            )
        )
    }
    sp = ws.table("spend")
    sp = sp.filter(
        sp.campaign_id.notnull()
        & sp.platform_conversions.notnull()
        & (sp.date >= first)
        & (sp.date <= as_of)
    )
    platform = {
        (str(r["c"]), r["d"]): (float(r["n"] or 0.0), float(r["v"] or 0.0))
        for r in _window_rows(
            sp.group_by(c=sp.campaign_id, d=sp.date).aggregate(
                n=sp.platform_conversions.sum(), v=sp.platform_conversion_value.sum()
            )
        )
    }
    return observed, platform


def _sum_by_campaign(rows: Mapping[tuple[str, date], tuple[float, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for (cid, _), (n, _v) in rows.items():
        out[cid] = out.get(cid, 0.0) + n
    return out


def arms_from_workspace(
    ws: Workspace,
    as_of: date,
    *,
    settings: Settings | None = None,
    window: int = 28,
    checks: Mapping[str, Any] | None = None,
    phase_doc: Mapping[str, Any] | None = None,
    nowcast_doc: Mapping[str, Any] | None = None,
) -> tuple[list[ArmState], dict[str, Any]]:
    """Build every campaign's :class:`ArmState` from the workspace as of a day.

    Reads spend per campaign and day, each campaign's outcomes from the best source it has,
    the checks' gates and exclusion windows, and the learning phase of the ad sets (a
    campaign is as fragile as its most fragile ad set). ``current`` is the mean daily spend
    of the last 7 days. Campaigns with no spend in the window are left out.

    Outcome sources, per campaign, best first (its :attr:`ArmState.outcome_source`):

    1. ``nowcast``: the nowcast's cohorts (first-party conversions by click day, with the
       conversions and value recent days will still receive), when they hold a conversion
       of the campaign in the window;
    2. ``observed``: first-party conversions attributed to it, by conversion day (complete
       by construction: a day's conversions are all in by its end; lagged behind the spend
       that caused them, which a 28-day window mostly absorbs);
    3. ``platform_reported``: the platform's own counts on its spend rows, scaled to the
       first-party level by the ratio of the two over the campaigns that have both (at least
       :data:`CALIBRATE_MIN` conversions on each side), and discounted in the posterior
       (:func:`~signalloop.allocate.posterior.evidence_weight`);
    4. no outcomes: ``observed`` with zero conversions when the account has first-party
       conversions in the window (nothing was attributed to it), ``nowcast`` when the
       nowcast has cohorts for it without a conversion, else ``none`` (the pooled prior).

    Parameters
    ----------
    ws
        The workspace.
    as_of
        The last day seen.
    settings
        Project settings.
    window
        Days of history per campaign.
    checks, phase_doc, nowcast_doc
        The ``to_dict()`` of :func:`~signalloop.checks.run_checks`,
        :func:`~signalloop.phase.phase` and :func:`~signalloop.nowcast.nowcast` as of the
        same day, computed when not given.

    Returns
    -------
    tuple
        The arms and a dict of what was read: ``checks``, ``exclusions``,
        ``platform_scale`` (the factor applied to platform counts, ``None`` when unscaled)
        and ``nowcast_basis`` (the nowcast's ``basis`` of the campaigns it supplies).
    """
    from signalloop.checks import run_checks
    from signalloop.checks.engine import excluded_days, windows_by_campaign
    from signalloop.nowcast import NowcastOptions, nowcast
    from signalloop.phase import phase

    settings = settings or Settings()
    if checks is None:
        checks = run_checks(ws, as_of=as_of, settings=settings).to_dict()
    if phase_doc is None:
        phase_doc = phase(ws, as_of, settings=settings).to_dict()
    if nowcast_doc is None:
        opts = NowcastOptions(draws=200, crm=False, settle_days=settings.settle_days)
        nowcast_doc = nowcast(ws, as_of, settings=settings, options=opts).to_dict()
    gates = {c["campaign_id"]: c for c in checks["campaigns"]}
    first = as_of - timedelta(days=window - 1)
    cohorts: dict[tuple[str, date], Mapping[str, Any]] = {}
    for r in nowcast_doc.get("cohorts", []):
        d = date.fromisoformat(r["date"])
        if first <= d <= as_of:
            cohorts[(str(r["campaign_id"]), d)] = r
    states: dict[str, str] = {}
    for e in phase_doc["entities"]:
        s = e["state"] if e["state"] in LEARNING_RANK else "unknown"
        prev = states.get(e["campaign_id"], "stable")
        states[e["campaign_id"]] = min(prev, s, key=LEARNING_RANK.__getitem__)
    sp = ws.table("spend")
    sp = sp.filter(sp.campaign_id.notnull() & (sp.date >= first) & (sp.date <= as_of))
    spend: dict[str, dict[date, float]] = {}
    for r in _window_rows(sp.group_by(["campaign_id", "date"]).aggregate(s=sp.spend.sum())):
        spend.setdefault(str(r["campaign_id"]), {})[r["date"]] = float(r["s"] or 0.0)
    observed, platform = _outcome_tables(ws, first, as_of, settings)
    nc_n: dict[str, float] = {}
    for (cid, _), r in cohorts.items():
        nc_n[cid] = nc_n.get(cid, 0.0) + float(r.get("observed_conversions") or 0.0)
    obs_n, plat_n = _sum_by_campaign(observed), _sum_by_campaign(platform)
    source: dict[str, str] = {}
    for cid in spend:
        if nc_n.get(cid, 0.0) > 0:
            source[cid] = "nowcast"
        elif obs_n.get(cid, 0.0) > 0:
            source[cid] = "observed"
        elif cid in plat_n and sum(plat_n.values()) > 0:
            source[cid] = "platform_reported"
        elif cid in nc_n:
            source[cid] = "nowcast"
        elif sum(obs_n.values()) + sum(nc_n.values()) > 0:
            source[cid] = "observed"
        else:
            source[cid] = "none"
    # platform counts on the first-party scale, where some campaigns have both
    both = [c for c, s in source.items() if s in ("nowcast", "observed") and c in plat_n]
    fp = sum(nc_n.get(c, 0.0) if source[c] == "nowcast" else obs_n.get(c, 0.0) for c in both)
    pf = sum(plat_n[c] for c in both)
    scale = fp / pf if fp >= CALIBRATE_MIN and pf >= CALIBRATE_MIN else None
    if scale is None or "platform_reported" not in source.values():
        scale = None
    windows = windows_by_campaign(checks["exclusions"], as_of)
    arms = []
    for cid in sorted(spend):
        hist = []
        held = excluded_days(windows, cid, first, window).tolist()
        for k in range(window):
            d = first + timedelta(days=k)
            out = held[k]
            s = spend[cid].get(d, 0.0)
            if source[cid] == "nowcast":
                c = cohorts.get((cid, d), {})
                day = Day(
                    d,
                    s,
                    float(c.get("observed_conversions") or 0.0),
                    float(c.get("expected_conversions") or 0.0),
                    float(c.get("observed_value") or 0.0),
                    float(c.get("expected_value") or 0.0),
                    bool(c.get("excluded")) or out,
                )
            else:
                rows = platform if source[cid] == "platform_reported" else observed
                n, v = rows.get((cid, d), (0.0, 0.0))
                f = scale if source[cid] == "platform_reported" and scale else 1.0
                day = Day(d, s, n * f, n * f, v * f, v * f, out)
            hist.append(day)
        last7 = [h.spend for h in hist[-7:]]
        gate = gates.get(cid, {"gate": "open", "reasons": []})
        arms.append(
            ArmState(
                cid,
                float(np.mean(last7)),
                tuple(hist),
                gate["gate"],
                states.get(cid, "stable"),
                tuple(gate["reasons"]),
                source[cid],
            )
        )
    basis = {
        str(c["campaign_id"]): str(c["basis"])
        for c in nowcast_doc.get("campaigns", [])
        if c.get("basis") and source.get(str(c["campaign_id"])) == "nowcast"
    }
    return arms, {
        "checks": checks,
        "exclusions": checks["exclusions"],
        "platform_scale": None if scale is None else round(scale, 4),
        "nowcast_basis": basis,
    }


def allocate(
    ws: Workspace,
    budget: float,
    *,
    objective: str = "conversions",
    cpa_cap: float | None = None,
    as_of: date | None = None,
    settings: Settings | None = None,
    policy: str = "guarded_bayes",
    random_state: int = 0,
    window: int = 28,
    checks: Mapping[str, Any] | None = None,
    phase_doc: Mapping[str, Any] | None = None,
    nowcast_doc: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Recommend tomorrow's daily budget per campaign from the workspace.

    Every policy's budgets go through the guardrails (:meth:`GuardedBayes.guard` for the
    baselines, which the time loop evaluates raw): held campaigns keep their budget, those in
    learning too, no campaign that spends moves more than the daily change limit (18%). When
    the budget cannot be met within them, the difference is ``unallocated``.

    Parameters
    ----------
    ws
        The workspace.
    budget
        Total daily budget to split.
    objective
        ``"conversions"`` or ``"value"`` (nowcast-expected, so recent days count in full).
    cpa_cap
        Stop-loss cost per conversion.
    as_of
        Last day seen (default: the last day with data).
    settings
        Project settings.
    policy
        A name in :data:`POLICIES`.
    random_state
        Seed of the Thompson draws.
    window
        Days of history per campaign.
    checks, phase_doc, nowcast_doc
        The day's check, learning-phase and nowcast reports (``to_dict()``) if already
        computed, as ``signalloop run`` has them; computed here otherwise.

    Returns
    -------
    dict
        ``as_of``, ``budget``, ``objective``, ``policy``, ``current_basis``, ``beta``, ``prior``
        (the pooled Gamma prior), ``unallocated`` (``budget`` minus the recommended budgets,
        to the cent: above zero when the guardrails keep the campaigns below the budget,
        below zero when they keep them above it), ``unallocated_reason`` (why, or ``None``),
        ``outcome_sources`` (campaigns per source), ``platform_scale`` (the factor platform
        counts were scaled by to the first-party level, or ``None``) and ``arms``: per
        campaign ``campaign_id``, ``current``, ``recommended``, ``change_pct``,
        ``automation``, ``outcome_source`` (``nowcast``, ``observed``,
        ``platform_reported`` or ``none``), ``expected_cpa`` (posterior median at the
        recommended budget), ``cpa_interval``, ``expected_outcome``, ``p_best`` (share of
        draws in which its return per spend^beta is the best) and ``reasons``.
    """
    from signalloop.checks.base import default_as_of

    if not budget > 0:
        raise UsageError(f"--budget must be positive, got {budget:g}")
    if objective not in OBJECTIVES:
        raise UsageError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if cpa_cap is not None and not cpa_cap > 0:
        raise UsageError(f"--cpa-cap must be positive, got {cpa_cap:g}")
    chosen = make_policy(policy, objective=objective, cpa_cap=cpa_cap)
    day = as_of or default_as_of(ws)
    if day is None:
        raise UsageError(
            f"workspace {ws.path} holds no spend, touchpoints or conversions yet: "
            "ingest something first (signalloop ingest KIND FILE)"
        )
    arms, read = arms_from_workspace(
        ws,
        day,
        settings=settings,
        window=window,
        checks=checks,
        phase_doc=phase_doc,
        nowcast_doc=nowcast_doc,
    )
    if not arms:
        raise UsageError(f"no campaign spent anything in the {window} days up to {day}")
    rng = np.random.default_rng(random_state)
    guarded = chosen if isinstance(chosen, GuardedBayes) else GuardedBayes(objective, cpa_cap)
    plan = guarded_plan(chosen, arms, budget, rng, guarded)
    conv, _ = guarded.fit(arms)
    scale = read["platform_scale"]
    for d in plan.decisions:
        via = NOWCAST_BASIS.get(read["nowcast_basis"].get(d.campaign_id, ""))
        if via and d.outcome_source == "nowcast":
            d.reasons.insert(0, via)
        if scale is not None and d.outcome_source == "platform_reported":
            d.reasons.append(
                f"its platform-reported conversions scaled by {scale:.2f}: first-party over "
                "platform-reported conversions on the campaigns that have both"
            )
    rows = [d.to_dict() for d in plan.decisions]
    sources: dict[str, int] = {}
    for r in rows:
        sources[r["outcome_source"]] = sources.get(r["outcome_source"], 0) + 1
    return {
        "as_of": day.isoformat(),
        "budget": budget,
        "objective": objective,
        "policy": policy,
        "current_basis": "mean daily spend over the last 7 days",
        "beta": round(conv.beta_, 3),
        "prior": (
            {"shape": round(conv.prior_shape_, 3), "rate": float(conv.prior_rate_)}
            if conv.has_data_
            else None
        ),
        "unallocated": round(budget - sum(r["recommended"] for r in rows), 2) + 0.0,
        "unallocated_reason": plan.unallocated_reason,
        "outcome_sources": dict(
            sorted(sources.items(), key=lambda kv: OUTCOME_SOURCES.index(kv[0]))
        ),
        "platform_scale": read["platform_scale"],
        "arms": rows,
    }


__all__ = [
    "LEARNING_RANK",
    "POLICIES",
    "ArmDecision",
    "ArmState",
    "Day",
    "EpsilonGreedy",
    "EvenSplit",
    "GreedyCPA",
    "GuardedBayes",
    "PlainThompson",
    "Plan",
    "Policy",
    "allocate",
    "arms_from_workspace",
    "guard_bounds",
    "guarded_plan",
    "make_policy",
    "project",
    "register",
]
