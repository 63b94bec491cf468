"""The policy time loop: allocate, deliver, observe with real delays, repeat; count regret.

:func:`run_policy` runs a budget policy (:mod:`signalloop.allocate.policy`) against the
simulated account (:class:`~signalloop.simulate.Account`) one day at a time. Each day ``d``
the policy sees only what is observable by the end of day ``d - 1``:

* spend and clicks per campaign and day (delivery reports are complete the same day);
* the pixel and server conversions, counted on their click day, that *arrived* before the
  end of day ``d - 1`` (real click-to-conversion delays: recent days are under-counted) and
  that the observation faults let through (a ``tracking_outage`` removes the conversions
  that arrive in its window, as :func:`~signalloop.simulate.faults.drop_untracked` does);
* ``expected_conversions``: each click day's count divided by the share of conversions a day
  of that age has received, a chain-ladder estimate of the delay distribution pooled over the
  account from the conversions seen so far (a log-normal with a 24 h median where the account
  has too little data yet);
* the gate: a campaign is ``hold`` while, for the last two report days, fewer than 20% of the
  conversions its clicks predict (its own conversions per click, the delay distribution)
  arrived, with at least 3 predicted: a tracking outage visible in the data. The click days
  that lost more than 20% of their conversions to flagged days are ``excluded`` from learning;
* the learning state of its ad sets (the most fragile one, :attr:`DayEvents.learning`).

That is what the ``full`` data shape shows, and ``spend_conversions`` and ``crm`` too (the
loop already counts conversions on the spend export's clicks by their ``click_ts``, which
those shapes carry). The config's data shape (``config.shape``, ``config.click_ts``) changes
what the policy sees, as :func:`~signalloop.allocate.policy.arms_from_workspace` would read
that shape (:func:`observed_source`):

* ``click_ts=False`` (conversions without their click time): the arrived conversions counted
  on their arrival day, no delay correction (outcome source ``observed``); the days the gate
  flags are excluded;
* ``spend`` (the platform export alone): the platform's reported conversions by click day,
  as many as have arrived, never corrected (``platform_reported``: the tracked ones times the
  platform's over-count of that campaign and day,
  :func:`~signalloop.simulate.tables.platform_conversions`); no first-party events, so no
  gate and no exclusions.

The first ``warmup_days`` run at the account's own plan; from then on the policy splits
``budget`` over the campaigns. Counted per day and in total (policy days only):

* ``expected``: the policy's noise-free expected conversions, each ad set's expected
  conversions at its budget scaled by its learning state's mean conversion-rate multiplier
  that day (learning 0.8, learning-limited 0.9, stable 1.0: what a reset costs counts);
  ``expected_ignoring_learning``: the same with every ad set stable (``sum acct.expected``);
* ``oracle``: the stable expected conversions of the allocation that maximises them for the
  same budget (:func:`oracle_allocation`), kept from the first policy day on, never resetting
  learning. :meth:`Account.expected` assumes creatives at 80% of their peak CTR: fatigue
  beyond that factor is left out, and only the realised conversions carry it;
* ``regret = oracle - expected`` (and ``regret_ignoring_learning_pct``, the allocation alone);
* ``resets_caused``: ad-set learning resets from the policy's budget edits (a change of more
  than 20%, or a restart after 7 or more days at zero);
* ``spend_moved_held``: ``|budget - yesterday's budget|`` over the campaign-days the gate held;
* ``breaches``: guardrail breaches, campaign-days on which a campaign that spent the day before
  moved more than :data:`MAX_CHANGE`, or a held or learning campaign's budget moved at all;
* ``unallocated``: the budget minus the day's budgets (what a guarded policy left unplaced);
* ``realised``: the conversions the day's clicks actually produced (eventually, unobserved
  faults aside).

>>> res = run_policy("even_split", SimulationConfig(days=10, campaigns=3, seed=1), warmup_days=3)
>>> len(res.rows), res.totals["regret"] >= 0
(7, True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from signalloop.allocate.policy import LEARNING_RANK, Policy, make_policy
from signalloop.allocate.posterior import OUTCOME_SOURCES, ArmState, Day, FloatArray
from signalloop.errors import UsageError
from signalloop.simulate import Account, Fault, SimulationConfig, campaign_ids, parse_fault
from signalloop.simulate.entities import Campaign, DayEvents, take
from signalloop.simulate.params import DAY, PHASE_CVR, SOURCE_NAMES
from signalloop.simulate.tables import platform_conversions

SCENARIOS = ("cold_start", "tracking_outage", "fatigue")
"""The benchmark scenarios of :func:`scenario_config`."""
SCENARIO_WARMUP = {"cold_start": 3, "tracking_outage": 7, "fatigue": 7}
"""Warm-up days per scenario (cold start: the policy takes over almost at launch)."""
RUN_DAYS = 56
"""Policy days of a scenario: 8 simulated weeks after the warm-up."""

MAX_AGE = 21
"""Click-day age (days) from which a day's conversions count as complete."""
HISTORY = 28
"""Days of history per arm handed to the policy."""
HOLD_SHARE, HOLD_MIN_EXPECTED, HOLD_DAYS = 0.2, 3.0, 2
"""Gate: arrivals below this share of the predicted, with at least this many predicted,
on this many report days in a row hold a campaign."""
EXCLUDE_LOST = 0.2
"""A click day that lost more than this share of its conversions to flagged days is excluded."""
MAX_CHANGE = 0.18
"""The daily change limit counted as a guardrail breach (:class:`GuardedBayes`' default)."""
_OFFLINE = SOURCE_NAMES.index("offline")


# ---- the oracle --------------------------------------------------------------------------


def _response(acct: Account, c: Campaign) -> tuple[FloatArray, FloatArray]:
    """Coefficients and exponents of ``acct.expected(c, x)[0] = sum coef * x ** b``."""
    sets = [acct.adsets[i] for i in c.adsets]
    coef = np.array([a.k * a.share**a.b * a.ctr_base * 0.8 * a.cvr for a in sets])
    return coef, np.array([a.b for a in sets])


def oracle_allocation(acct: Account, budget: float) -> dict[str, float]:
    """The budgets that maximise ``sum acct.expected(c, b)[0]`` subject to ``sum b = budget``.

    Each campaign's expected conversions are a sum of concave powers of its budget (one per ad
    set), so the optimum equalises the marginal return ``lambda`` across campaigns; nested
    bisections on the log scale find each campaign's budget for a ``lambda`` and the
    ``lambda`` whose budgets sum to ``budget``. The expectation is noise-free, at 80% of peak
    CTR and stable ad sets (fatigue beyond that factor is ignored), so it does not depend on
    the day.

    Parameters
    ----------
    acct
        The account.
    budget
        Total daily budget (USD, positive).

    Returns
    -------
    dict
        Campaign id -> budget, summing to ``budget``.
    """
    if not budget > 0:
        raise UsageError(f"the budget must be positive, got {budget}")
    width = max(len(c.adsets) for c in acct.campaigns)
    coef = np.zeros((len(acct.campaigns), width))
    expo = np.full((len(acct.campaigns), width), 0.5)
    for i, c in enumerate(acct.campaigns):
        cf, b = _response(acct, c)
        coef[i, : len(cf)], expo[i, : len(b)] = cf, b

    def marginal(x: FloatArray) -> FloatArray:
        return np.asarray((coef * expo * x[:, None] ** (expo - 1.0)).sum(axis=1), dtype=float)

    def spend_at(log_lam: float) -> FloatArray:
        lo = np.full(len(coef), math.log(budget) - 40.0)
        hi = np.full(len(coef), math.log(budget))
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            above = marginal(np.exp(mid)) > math.exp(log_lam)
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        return np.asarray(np.exp(0.5 * (lo + hi)), dtype=float)

    m_all = marginal(np.full(len(coef), budget))
    lo_l = math.log(max(float(m_all.min()), 1e-300)) - 1.0  # every campaign at the budget
    hi_l = math.log(float(marginal(np.full(len(coef), budget * 1e-12)).max())) + 1.0
    for _ in range(100):
        mid = 0.5 * (lo_l + hi_l)
        if spend_at(mid).sum() > budget:
            lo_l = mid
        else:
            hi_l = mid
    x = spend_at(0.5 * (lo_l + hi_l))
    x *= budget / x.sum()
    return {c.id: float(v) for c, v in zip(acct.campaigns, x, strict=True)}


def expected_conversions(
    acct: Account, budgets: dict[str, float], learning: dict[str, str] | None = None
) -> float:
    """Noise-free expected conversions a day of ``budgets`` (``sum acct.expected(c, b)[0]``).

    With ``learning`` (ad set id -> learning state that day), each ad set's conversions are
    scaled by its state's mean conversion-rate multiplier in the simulator (learning 0.8,
    learning-limited 0.9, stable 1.0): the cost of a reset counts.
    """
    if learning is None:
        return float(sum(acct.expected(c, budgets.get(c.id, 0.0))[0] for c in acct.campaigns))
    total = 0.0
    for c in acct.campaigns:
        b = budgets.get(c.id, 0.0)
        for a in (acct.adsets[i] for i in c.adsets):
            cl = a.k * (b * a.share) ** a.b * a.ctr_base * 0.8
            total += cl * a.cvr * PHASE_CVR[learning.get(a.id, "stable")][0]
    return total


# ---- what the policy can see -------------------------------------------------------------


def _prior_cdf(ages: int, median_h: float = 24.0, sigma: float = 1.05) -> FloatArray:
    """Share of a click day's conversions arrived by the end of each age (log-normal delay)."""
    hours = (np.arange(24) + 0.5)[None, :]
    left = (np.arange(ages)[:, None] + 1) * 24.0 - hours
    z = (np.log(left) - math.log(median_h)) / sigma
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
    return np.asarray(cdf.mean(axis=1), dtype=float)


class _Observer:
    """The account as the policy sees it: reported spend, clicks and arrived conversions."""

    def __init__(self, acct: Account) -> None:
        self.acct = acct
        k, n = len(acct.campaigns), acct.days
        self.spend = np.zeros((k, n))
        self.clicks = np.zeros((k, n))
        self.conv = np.zeros((k, n, n))  # campaign, click day, arrival day
        self.value = np.zeros((k, n, n))
        self.realised = np.zeros((k, n))
        self.platform = np.ones((k, n))  # reported / tracked conversions per click day
        self.flagged = np.zeros((k, n), dtype=bool)  # arrival days flagged as an outage
        self.excluded = np.zeros((k, n), dtype=bool)  # click days left out of learning
        self.prior = _prior_cdf(MAX_AGE)
        self.cdf = self.prior.copy()
        self.outages = [
            (acct.ids.index(f.campaign) if f.campaign != "*" else -1, f.start, f.end)
            for f in acct.config.faults
            if f.name == "tracking_outage"
        ]

    def add(self, ev: DayEvents) -> None:
        """Record one delivered day (its conversions arrive on their own days)."""
        s = ev.spend
        np.add.at(self.spend, (s["camp"], s["day"]), s["spend"])
        np.add.at(self.clicks, (s["camp"], s["day"]), s["clicks"])
        cv = ev.conversions
        keep = cv["source"] < _OFFLINE  # pixel and server: the primary conversions
        camp, ts = cv["camp"][keep], cv["ts"][keep]
        value = np.nan_to_num(cv["value"][keep])
        np.add.at(self.realised[:, ev.day], camp, 1.0)
        seen = np.ones(len(ts), dtype=bool)
        for ci, start, end in self.outages:  # the observation fault: these never arrive
            inside = (ts >= start * DAY) & (ts < (end + 1) * DAY)
            seen &= ~(inside if ci < 0 else inside & (camp == ci))
        arrive = ts // DAY
        seen &= arrive < self.acct.days
        click_day = cv["click_ts"][keep] // DAY
        idx = (camp[seen], click_day[seen], arrive[seen])
        np.add.at(self.conv, idx, 1.0)
        np.add.at(self.value, idx, value[seen])
        tracked = seen | (arrive >= self.acct.days)  # what the platform's pixel records
        reported = platform_conversions(self.acct, s, take(cv, np.flatnonzero(keep)[tracked]))[0]
        k = len(self.acct.campaigns)
        rep = np.bincount(s["camp"], weights=reported, minlength=k)
        trk = np.bincount(camp[tracked], minlength=k).astype(float)
        self.platform[:, ev.day] = np.where(trk > 0, rep / np.maximum(trk, 1.0), 1.0)

    def _fit_cdf(self, d: int) -> None:
        """Chain-ladder delay distribution from the conversions arrived before day ``d``."""
        obs = self.conv[:, :d, :d]
        byage = np.zeros((obs.shape[0], d, MAX_AGE))
        for a in range(min(MAX_AGE, d)):
            cs = np.arange(d - a)
            byage[:, cs, a] = obs[:, cs, cs + a]
        cum = np.cumsum(byage, axis=2)
        use = ~self.excluded[:, :d]
        age = d - 1 - np.arange(d)
        f = np.empty(MAX_AGE - 1)
        for a in range(MAX_AGE - 1):
            ok = use & (age >= a + 1)[None, :]
            num, den = float(cum[:, :, a + 1][ok].sum()), float(cum[:, :, a][ok].sum())
            f[a] = num / den if den >= 30 and num > 0 else self.prior[a + 1] / self.prior[a]
        cdf = np.empty(MAX_AGE)
        cdf[-1] = self.prior[-1]
        for a in range(MAX_AGE - 2, -1, -1):
            cdf[a] = cdf[a + 1] / max(f[a], 1.0)
        self.cdf = np.clip(cdf, 1e-3, 1.0)

    def complete(self, d: int) -> FloatArray:
        """Share of eventual conversions arrived by the end of day ``d - 1``, per click day."""
        age = d - 1 - np.arange(d)
        return np.asarray(np.where(age < MAX_AGE, self.cdf[np.minimum(age, MAX_AGE - 1)], 1.0))

    def _lost(self, d: int) -> None:
        """Exclude click days that lost more than :data:`EXCLUDE_LOST` to flagged days."""
        inc = np.diff(np.r_[0.0, self.cdf])
        for k in np.flatnonzero(self.flagged[:, :d].any(axis=1)):
            lost = np.zeros(d)
            for r in (int(x) for x in np.flatnonzero(self.flagged[k, :d])):
                cs = np.arange(max(0, r - MAX_AGE + 1), r + 1)
                lost[cs] += inc[r - cs]
            self.excluded[k, :d] |= lost > EXCLUDE_LOST

    def observe(self, d: int, source: str = "nowcast") -> tuple[list[tuple[Day, ...]], list[bool]]:
        """History per campaign (last :data:`HISTORY` days) and gate hold, as of day ``d``.

        ``source`` (:func:`observed_source`): ``nowcast`` counts the arrived conversions on
        their click day and completes them for the delay; ``observed`` on their arrival day;
        ``platform_reported`` the platform's counts on their click day, uncorrected, with no
        gate; ``none`` shows no outcome at all (spend only, no conversion counts).
        """
        self._fit_cdf(d)
        done = self.complete(d)
        obs = self.conv[:, :d, :d].sum(axis=2)
        inc = np.diff(np.r_[0.0, self.cdf])
        ref = max(0, d - HISTORY)
        for k in range(obs.shape[0]):
            ok = ~self.excluded[k, ref : d - 1]
            denom = float((self.clicks[k, ref : d - 1] * done[ref : d - 1])[ok].sum())
            rate = float(obs[k, ref : d - 1][ok].sum()) / denom if denom > 0 else 0.0
            r = d - 1  # the newest arrival day, complete now
            cs = np.arange(max(0, r - MAX_AGE + 1), r + 1)
            predicted = rate * float((self.clicks[k, cs] * inc[r - cs]).sum())
            arrived = float(self.conv[k, :d, r].sum())
            self.flagged[k, r] = (
                predicted >= HOLD_MIN_EXPECTED
                and arrived < HOLD_SHARE * predicted
                and self.clicks[k, r] > 0
            )
        self._lost(d)
        hold = [
            d >= HOLD_DAYS and bool(self.flagged[k, d - HOLD_DAYS : d].all())
            for k in range(obs.shape[0])
        ]
        vals = self.value[:, :d, :d].sum(axis=2)
        excluded = self.excluded[:, :d]
        if source == "observed":  # by arrival day: complete, the flagged days left out
            obs, vals = self.conv[:, :d, :d].sum(axis=1), self.value[:, :d, :d].sum(axis=1)
            done, excluded = np.ones(d), self.flagged[:, :d]
        elif source in ("platform_reported", "none"):  # the platform's counts so far, no gate
            keep = 1.0 if source == "platform_reported" else 0.0
            obs, vals = obs * self.platform[:, :d] * keep, vals * self.platform[:, :d] * keep
            done, excluded = np.ones(d), np.zeros_like(excluded)
            hold = [False] * len(hold)
        start = self.acct.config.start
        hist = []
        for k in range(obs.shape[0]):
            days = tuple(
                Day(
                    start + timedelta(days=int(c)),
                    float(self.spend[k, c]),
                    float(obs[k, c]),
                    float(obs[k, c] / done[c]),
                    float(vals[k, c]),
                    float(vals[k, c] / done[c]),
                    bool(excluded[k, c]),
                )
                for c in range(max(0, d - HISTORY), d)
            )
            hist.append(days)
        return hist, hold


def observed_source(config: SimulationConfig) -> str:
    """The outcome source a policy has on the config's data shape (what the loop shows it).

    >>> observed_source(SimulationConfig(shape="spend"))
    'platform_reported'
    >>> observed_source(SimulationConfig(shape="spend_conversions", click_ts=False))
    'observed'
    >>> observed_source(SimulationConfig())
    'nowcast'
    """
    if config.shape == "spend":
        return "platform_reported"
    return "nowcast" if config.click_ts else "observed"


# ---- the loop ----------------------------------------------------------------------------


@dataclass
class DayRow:
    """One policy day of the loop."""

    day: int
    date: str
    budgets: dict[str, float]
    held: list[str]
    expected: float
    oracle: float
    regret: float
    realised: float
    resets_caused: int
    spend_moved_held: float
    #: ``expected`` as if every ad set were stable (what a reset costs is left out)
    expected_ignoring_learning: float = 0.0
    #: campaigns that moved past the change limit, or held or learning ones that moved
    breaches: int = 0
    #: the budget minus the day's budgets
    unallocated: float = 0.0


@dataclass
class LoopResult:
    """What a policy did over the loop: per-day rows and totals.

    Attributes
    ----------
    policy
        The policy's name.
    config
        The simulation (days, campaigns, seed, faults).
    budget, warmup_days
        The daily budget from the first policy day, and the warm-up days at the plan.
    oracle_budgets
        The oracle's allocation (:func:`oracle_allocation`).
    rows
        One :class:`DayRow` per policy day.
    totals
        ``days``, ``expected``, ``oracle``, ``regret``, ``regret_pct`` (of the oracle),
        ``realised``, ``resets_caused``, ``spend_moved_held``, ``held_days``, ``breaches``,
        ``unallocated`` (summed over the days) and ``outcome_source`` (what the policy saw).
    """

    policy: str
    config: dict[str, Any]
    budget: float
    warmup_days: int
    oracle_budgets: dict[str, float]
    rows: list[DayRow] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (floats rounded)."""
        return {
            "policy": self.policy,
            "config": self.config,
            "budget": round(self.budget, 2),
            "warmup_days": self.warmup_days,
            "oracle_budgets": {k: round(v, 2) for k, v in self.oracle_budgets.items()},
            "totals": {k: _round(v) for k, v in self.totals.items()},
            "days": [{k: _round(v) for k, v in asdict(r).items()} for r in self.rows],
        }


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, dict):
        return {k: _round(x) for k, x in v.items()}
    return v


def _resets(acct: Account, day: int) -> int:
    """Ad-set resets on ``day`` from a budget edit or a restart after 7+ days at zero."""
    return sum(
        1
        for a in acct.adsets
        for r in a.resets
        if r["day"] == day and r["field"] in ("budget", "status")
    )


def _breaches(applied: dict[str, float], last: dict[str, float], fixed: list[str]) -> int:
    """Campaigns past the change limit (those that spent), or fixed ones that moved at all."""
    out = 0
    for c, b in applied.items():
        moved = abs(b - last[c])
        if moved > 0.005 and (c in fixed or (last[c] > 0 and moved > MAX_CHANGE * last[c] + 0.005)):
            out += 1
    return out


def run_policy(
    policy: str | Policy,
    config: SimulationConfig,
    *,
    budget: float | None = None,
    warmup_days: int = 7,
    random_state: int = 0,
    policy_params: dict[str, Any] | None = None,
    source: str | None = None,
) -> LoopResult:
    """Run ``policy`` against the simulated account of ``config``, one day at a time.

    Parameters
    ----------
    policy
        A name in :data:`~signalloop.allocate.policy.POLICIES` or a :class:`Policy`.
    config
        The simulated account (its observation faults, e.g. ``tracking_outage``, apply to
        what the policy sees; its world faults to delivery).
    budget
        Total daily budget from the first policy day; default: the sum of the account's plan
        budgets on the last warm-up day.
    warmup_days
        Days run at the account's own plan first (at least 1, fewer than ``config.days``).
    random_state
        Seed of the policy's random draws (the account has its own, ``config.seed``).
    policy_params
        Keyword arguments for :func:`~signalloop.allocate.policy.make_policy`.
    source
        What the policy sees, overriding the config's shape (:func:`observed_source`):
        ``"none"`` is a spend export without the platform's conversion counts.

    Returns
    -------
    LoopResult
    """
    if not 1 <= warmup_days < config.days:
        raise UsageError(
            f"warmup_days must be in 1..{config.days - 1} for a {config.days}-day run, "
            f"got {warmup_days}"
        )
    chosen = make_policy(policy, **(policy_params or {})) if isinstance(policy, str) else policy
    acct = Account(config)
    seen = _Observer(acct)
    source = source or observed_source(config)
    if source not in OUTCOME_SOURCES:
        raise UsageError(f"unknown outcome source {source!r}: one of {', '.join(OUTCOME_SOURCES)}")
    rng = np.random.default_rng([random_state, 61])
    if budget is None:
        budget = float(sum(acct.plan_budgets(warmup_days - 1).values()))
    if not budget > 0:
        raise UsageError(f"the budget must be positive, got {budget:g}")
    oracle = oracle_allocation(acct, budget)
    oracle_exp = expected_conversions(acct, oracle)
    ids = acct.ids
    res = LoopResult(
        chosen.name,
        {
            "days": config.days,
            "campaigns": config.campaigns,
            "seed": config.seed,
            "start": config.start.isoformat(),
            "faults": [f"{f.name}@{f.campaign}:{f.start}-{f.end}" for f in config.faults],
            "shape": config.shape,
            "click_ts": config.click_ts,
        },
        budget,
        warmup_days,
        oracle,
    )
    ev: DayEvents | None = None
    last: dict[str, float] = {}
    for d in range(config.days):
        fixed: list[str] = []
        if d < warmup_days:
            budgets = acct.plan_budgets(d)
            held: list[str] = []
        else:
            assert ev is not None
            hist, hold = seen.observe(d, source)
            arms = []
            for k, c in enumerate(acct.campaigns):
                states = [ev.learning[acct.adsets[i].id] for i in c.adsets]
                arms.append(
                    ArmState(
                        c.id,
                        last[c.id],
                        hist[k],
                        "hold" if hold[k] else "open",
                        min(states, key=lambda s: LEARNING_RANK.get(s, 0)),
                        ("tracking outage: conversions stopped arriving",) if hold[k] else (),
                        source,
                    )
                )
            raw = chosen.allocate(arms, budget, rng)
            budgets = {c: max(float(raw.get(c, 0.0)), 0.0) for c in ids}
            held = [c for c, h in zip(ids, hold, strict=True) if h]
            fixed = [
                a.campaign_id for a in arms if a.gate == "hold" or a.learning_state == "learning"
            ]
        ev = acct.step(d, budgets)
        seen.add(ev)
        applied = {c: round(budgets.get(c, 0.0), 2) for c in ids}
        if d >= warmup_days:
            exp = expected_conversions(acct, budgets, ev.learning)
            exp_free = expected_conversions(acct, budgets)
            res.rows.append(
                DayRow(
                    d,
                    acct.date(d),
                    applied,
                    held,
                    exp,
                    oracle_exp,
                    oracle_exp - exp,
                    0.0,
                    _resets(acct, d),
                    float(sum(abs(applied[c] - last[c]) for c in held)),
                    exp_free,
                    _breaches(applied, last, fixed),
                    budget - sum(budgets.values()),
                )
            )
        last = applied
    for row in res.rows:
        row.realised = float(seen.realised[:, row.day].sum())
    n = len(res.rows)
    tot_oracle = oracle_exp * n
    tot_exp = sum(r.expected for r in res.rows)
    res.totals = {
        "days": n,
        "expected": tot_exp,
        "oracle": tot_oracle,
        "regret": tot_oracle - tot_exp,
        "regret_pct": 100.0 * (tot_oracle - tot_exp) / tot_oracle if tot_oracle > 0 else 0.0,
        "regret_ignoring_learning_pct": (
            100.0 * (tot_oracle - sum(r.expected_ignoring_learning for r in res.rows)) / tot_oracle
            if tot_oracle > 0
            else 0.0
        ),
        "realised": sum(r.realised for r in res.rows),
        "resets_caused": sum(r.resets_caused for r in res.rows),
        "spend_moved_held": sum(r.spend_moved_held for r in res.rows),
        "held_days": sum(len(r.held) for r in res.rows),
        "breaches": sum(r.breaches for r in res.rows),
        "unallocated": sum(r.unallocated for r in res.rows),
        "outcome_source": source,
    }
    return res


# ---- scenarios ---------------------------------------------------------------------------


def _biggest(seed: int, campaigns: int) -> str:
    """The campaign with the largest baseline budget (where a fault matters most)."""
    acct = Account(SimulationConfig(days=1, campaigns=campaigns, seed=seed))
    return max(acct.campaigns, key=lambda c: c.budget).id


def scenario_config(
    name: str,
    seed: int,
    days: int | None = None,
    campaigns: int = 6,
    *,
    shape: str = "full",
    click_ts: bool = True,
) -> SimulationConfig:
    """The simulated account of a benchmark scenario.

    Parameters
    ----------
    name
        ``cold_start`` (every campaign launches on day 0; run it with
        ``warmup_days=SCENARIO_WARMUP["cold_start"]``, 3, so the policy starts with almost no
        history), ``tracking_outage`` (the campaign with the largest baseline budget loses its
        pixel and server conversions for 7 days, 3 weeks into the policy's run) or
        ``fatigue`` (``creative_starvation`` on that campaign for the whole run: its creatives
        fatigue and are never refreshed).
    seed
        The account's seed.
    days
        Length of the run; default ``RUN_DAYS`` (56) + the scenario's warm-up.
    campaigns
        Number of campaigns.
    shape, click_ts
        The data shape the policy sees (:func:`observed_source`); the account is the same.

    Returns
    -------
    SimulationConfig
    """
    if name not in SCENARIOS:
        raise UsageError(f"unknown scenario {name!r}: expected one of {', '.join(SCENARIOS)}")
    warm = SCENARIO_WARMUP[name]
    n = days if days is not None else RUN_DAYS + warm
    ids = campaign_ids(campaigns)
    faults: tuple[Fault, ...] = ()
    if name == "tracking_outage":
        start = min(warm + 21, n - 2)
        end = min(start + 6, n - 1)
        spec = f"tracking_outage@{_biggest(seed, campaigns)}:{start}-{end}"
        faults = (parse_fault(spec, days=n, campaign_ids=ids),)
    elif name == "fatigue":
        spec = f"creative_starvation@{_biggest(seed, campaigns)}"
        faults = (parse_fault(spec, days=n, campaign_ids=ids),)
    return SimulationConfig(
        days=n, campaigns=campaigns, seed=seed, faults=faults, shape=shape, click_ts=click_ts
    )


def run_scenario(
    name: str,
    policy: str | Policy,
    seed: int,
    *,
    days: int | None = None,
    campaigns: int = 6,
    random_state: int | None = None,
    shape: str = "full",
    click_ts: bool = True,
    source: str | None = None,
) -> LoopResult:
    """:func:`run_policy` on :func:`scenario_config` with the scenario's warm-up."""
    config = scenario_config(name, seed, days, campaigns, shape=shape, click_ts=click_ts)
    rs = seed if random_state is None else random_state
    return run_policy(
        policy, config, warmup_days=SCENARIO_WARMUP[name], random_state=rs, source=source
    )


__all__ = [
    "RUN_DAYS",
    "SCENARIOS",
    "SCENARIO_WARMUP",
    "DayRow",
    "LoopResult",
    "expected_conversions",
    "observed_source",
    "oracle_allocation",
    "run_policy",
    "run_scenario",
    "scenario_config",
]
