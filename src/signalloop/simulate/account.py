"""The simulated ad account: the world model built from a config and delivered day by day.

:class:`Account` builds the campaigns, ad sets, ads and creatives
(:mod:`~signalloop.simulate.entities`), draws its own budget plan and edit log
(:mod:`~signalloop.simulate.plan`) and delivers one day at a time with :meth:`Account.step`
(:mod:`~signalloop.simulate.delivery`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from signalloop.errors import UsageError
from signalloop.simulate.config import Fault, SimulationConfig, campaign_ids
from signalloop.simulate.delivery import deliver, rotate_creatives
from signalloop.simulate.entities import (
    SCHEMAS,
    Ad,
    Adset,
    Campaign,
    Change,
    Creative,
    DayEvents,
    concat,
)
from signalloop.simulate.params import (
    CPM,
    CTR,
    CVR,
    DAY,
    HEALTHY_VOLUME,
    LEARNING_THRESHOLD,
    LEARNING_WINDOW,
    SIGNIFICANT,
    STAGE_RATES,
    THEMES,
    Arr,
    H,
)
from signalloop.simulate.plan import plan_campaign, plan_world_faults


class Account:
    """The simulated ad account: world state built from a config, delivered day by day.

    Parameters
    ----------
    config
        Size, seed, first day and faults; the world faults (``creative_starvation``,
        ``override_storm``, ``low_volume``) are built into the plan here.

    Attributes
    ----------
    campaigns, adsets, ads, creatives : list
        The world's entities; events refer to them by index.
    ids : list of str
        Campaign ids ``c01`` ..
    budget_plan : ndarray
        The account's own daily budget per campaign (campaigns x days), in USD.
    user_pool : list of int
        Per campaign, the number of users its clicks are drawn from (``n_users``, grown for
        the healthy campaigns by their extra clicks).
    healthy : dict
        Campaign index -> what :meth:`make_healthy` did (into ``truth``).
    fault_notes : list of dict
        What the world faults did, one dict per fault of the config (into ``truth``).

    Examples
    --------
    >>> acct = Account(SimulationConfig(days=3, campaigns=2, seed=1))
    >>> events = [acct.step(d, acct.plan_budgets(d)) for d in range(3)]
    >>> sorted(events[0].learning.values())[0]
    'learning'
    """

    def __init__(self, config: SimulationConfig) -> None:
        if config.days < 1:
            raise UsageError(f"days must be at least 1, got {config.days}")
        self.config, self.days, k = config, config.days, config.campaigns
        self.ids = campaign_ids(k)
        unknown = [c for c in config.healthy if c != "*" and c not in self.ids]
        if unknown:
            raise UsageError(
                f"healthy campaign(s) {', '.join(map(repr, unknown))} unknown; expected * or "
                f"ids among {', '.join(self.ids)}"
            )
        self.campaigns: list[Campaign] = []
        self.adsets: list[Adset] = []
        self.ads: list[Ad] = []
        self.creatives: list[Creative] = []
        budgets = np.exp(np.linspace(math.log(60.0), math.log(800.0), k))
        budgets = budgets[np.random.default_rng([config.seed, 9]).permutation(k)]
        for ci in range(k):
            self._build(ci, float(budgets[ci]))
        clicks = sum(self.expected(c, c.budget)[1] for c in self.campaigns)
        self.n_users = max(2_000, int(0.6 * clicks * self.days))
        self.user_pool = [self.n_users] * k
        self.healthy: dict[int, dict[str, Any]] = {}
        for c in self.campaigns:
            if config.is_healthy(c.id):
                self.make_healthy(c)
        if self.healthy:
            # the healthy campaigns' extra clicks come from extra users; the other campaigns
            # keep their pool (and so their rows)
            grown = sum(self.expected(c, c.budget)[1] for c in self.campaigns)
            pool = max(self.n_users, int(0.6 * grown * self.days))
            for ci in self.healthy:
                self.user_pool[ci] = pool
        self.budget_plan = np.zeros((k, self.days))
        self.budget_edit: dict[tuple[int, int], tuple[int, str]] = {}
        self.plan_edits: dict[tuple[int, int], list[tuple[Change, int]]] = {}
        self.starved = np.zeros((k, self.days), dtype=bool)
        self.fault_notes: list[dict[str, Any]] = [{} for _ in config.faults]
        for c in self.campaigns:
            plan_campaign(self, c)
            plan_world_faults(self, c)
        self._last_budget: list[float | None] = [None] * k
        self._zero_days = [0] * k

    # ---- construction --------------------------------------------------------------------

    def _build(self, ci: int, budget: float) -> None:
        """Draw campaign ``ci`` with its ad sets, ads and first creatives."""
        rng = np.random.default_rng([self.config.seed, 0, ci])
        cid = self.ids[ci]
        platform = "linkedin" if ci == 4 else ("meta", "google")[ci % 2]
        objective = "lead" if ci % 3 == 0 or platform == "linkedin" else "purchase"
        median_h = float(np.clip(24.0 * math.exp(rng.normal(0.0, 0.2)), 14.0, 40.0))
        rates = tuple(
            float(np.clip(r * math.exp(rng.normal(0, 0.1)), 0.05, 0.95)) for r in STAGE_RATES
        )
        c = Campaign(
            ci,
            cid,
            f"{platform}_{objective}_{THEMES[ci % len(THEMES)]}_{cid}",
            platform,
            objective,
            round(budget),
            math.log(median_h),
            float(rng.uniform(0.9, 1.2)),
            float(rng.uniform(40.0, 160.0)),
            float(rng.uniform(0.75, 0.9)),
            rates,
            float(rng.uniform(4_000.0, 25_000.0)),
        )
        self.campaigns.append(c)
        n_as = int(rng.integers(1, 4))
        shares = rng.dirichlet(np.full(n_as, 4.0))
        for ai in range(n_as):
            b = float(rng.uniform(0.70, 0.85))
            base = c.budget * float(shares[ai])
            k = 1000.0 / CPM[platform] * base ** (1.0 - b) * math.exp(rng.normal(0, 0.1))
            aid = f"{cid}_as{ai + 1}"
            a = Adset(
                aid,
                f"{aid} | {('prospecting', 'lookalike', 'retargeting')[ai]}",
                ci,
                float(shares[ai]),
                CVR[objective][platform] * math.exp(rng.normal(0.0, 0.2)),
                k,
                b,
                k * base**b * float(rng.uniform(10.0, 18.0)),
                CTR[platform] * math.exp(rng.normal(0.0, 0.15)),
            )
            self.adsets.append(a)
            c.adsets.append(len(self.adsets) - 1)
            for di in range(int(rng.integers(2, 5))):
                self.ads.append(Ad(f"{aid}_ad{di + 1}", len(self.adsets) - 1))
                a.ads.append(len(self.ads) - 1)
                self.ads[-1].creative = self.new_creative(c, len(self.ads) - 1, 0, rng)

    def make_healthy(self, c: Campaign) -> None:
        """Give ``c`` the budget, and its split, that takes every ad set over the threshold.

        Each ad set's baseline spend is raised (never lowered) to what makes its expected
        conversions per 7 days (:meth:`expected`'s part-fatigued creatives) at least
        :data:`~signalloop.simulate.params.HEALTHY_VOLUME` x the learning threshold; the
        campaign's baseline budget is their sum (rounded up to whole USD) and the shares
        follow. Each ad set's response ``k`` and audience follow its new baseline spend as if
        it had been drawn with it (the baseline still buys at the platform CPM, the audience
        is still 10-18 days of baseline impressions). Draws nothing: the campaign's random
        streams, and the other campaigns, are unchanged. The creative pipeline lives in
        :func:`~signalloop.simulate.delivery.rotate_creatives`.
        """
        need = HEALTHY_VOLUME * LEARNING_THRESHOLD / LEARNING_WINDOW
        sets = [self.adsets[i] for i in c.adsets]
        drawn = [c.budget * a.share for a in sets]
        # at its baseline spend an ad set's expected conversions are linear in that spend
        per_usd = [
            a.k * a.ctr_base * 0.8 * a.cvr * s ** (a.b - 1.0)
            for a, s in zip(sets, drawn, strict=True)
        ]
        spend = [max(s, need / e) for s, e in zip(drawn, per_usd, strict=True)]
        budget = math.ceil(sum(spend) - 1e-9) if spend != drawn else c.budget
        self.healthy[c.idx] = {
            "drawn_budget": c.budget,
            "drawn_shares": [round(a.share, 4) for a in sets],
            "budget_scale": round(budget / c.budget, 4),
        }
        if spend == drawn:  # every ad set clears the margin already
            return
        for a, old, new in zip(sets, drawn, spend, strict=True):
            a.share = new / sum(spend)
            f = budget * a.share / old
            a.k *= f ** (1.0 - a.b)
            a.audience *= f
        c.budget = budget

    def new_creative(self, c: Campaign, ad: int, day: int, rng: np.random.Generator) -> int:
        """Draw a new creative for ``ad`` launched on ``day``; returns its index."""
        c.n_creatives += 1
        c.last_launch = max(c.last_launch, day)
        ai = self.ads[ad].adset
        self.creatives.append(
            Creative(
                f"cr_{c.idx + 1}{c.n_creatives:03d}",
                c.idx,
                ai,
                ad,
                day,
                self.adsets[ai].ctr_base * math.exp(rng.normal(0.0, 0.25)),
                float(rng.uniform(0.25, 0.45)),
                float(rng.uniform(0.25, 0.6)),
                float(rng.uniform(0.005, 0.015)),
            )
        )
        return len(self.creatives) - 1

    def expected(self, c: Campaign, budget: float) -> tuple[float, float]:
        """Expected (conversions, clicks) a day at ``budget`` with part-fatigued creatives."""
        conv = clicks = 0.0
        for a in (self.adsets[i] for i in c.adsets):
            cl = a.k * (budget * a.share) ** a.b * a.ctr_base * 0.8
            clicks, conv = clicks + cl, conv + cl * a.cvr
        return conv, clicks

    def faults_for(self, name: str, c: Campaign) -> list[tuple[int, Fault]]:
        """The faults called ``name`` that cover ``c``, with their index in the config."""
        faults = enumerate(self.config.faults)
        return [(i, f) for i, f in faults if f.name == name and f.covers(c.id)]

    # ---- delivery ------------------------------------------------------------------------

    def plan_budgets(self, day: int) -> dict[str, float]:
        """The account's own budget plan for ``day``: campaign id -> USD."""
        return {c.id: float(self.budget_plan[c.idx, day]) for c in self.campaigns}

    def date(self, day: int) -> str:
        """ISO date of day index ``day``."""
        return (self.config.start + dt.timedelta(days=day)).isoformat()

    def reset_learning(self, adset: int, day: int, actor: str, fld: str) -> None:
        """Put ad set ``adset`` back into ``learning`` on ``day`` (an edit of ``fld``)."""
        a = self.adsets[adset]
        a.resets.append({"day": day, "date": self.date(day), "actor": actor, "field": fld})
        a.phase, a.reset_day, a.conv_since = "learning", day, 0

    def step(self, day: int, budgets: Mapping[str, float]) -> DayEvents:
        """Deliver ``day`` at the given campaign budgets and return what happened.

        Parameters
        ----------
        day
            0-based day index; days must be stepped in order, each once.
        budgets
            Daily budget per campaign id in USD (missing means 0: paused). A change of more
            than 20% from the previous day's budget resets the campaign's ad sets' learning.

        Returns
        -------
        DayEvents
        """
        if not 0 <= day < self.days:
            raise UsageError(f"day must be in 0..{self.days - 1}, got {day}")
        parts: dict[str, list[dict[str, Arr]]] = {k: [] for k in SCHEMAS}
        changes: list[Change] = []
        for c in self.campaigns:
            rng = np.random.default_rng([self.config.seed, 1, c.idx, day])
            budget = round(float(budgets.get(c.id, 0.0)), 2)
            if not (math.isfinite(budget) and budget >= 0):
                raise UsageError(f"budget of {c.id} must be a finite number >= 0, got {budget}")
            self._apply_budget(c, day, budget, changes)
            for ch, ai in self.plan_edits.get((c.idx, day), []):
                changes.append(ch)
                if ch.field in SIGNIFICANT and ai >= 0:
                    self.reset_learning(ai, day, ch.actor, ch.field)
            rotate_creatives(self, c, day, rng, changes)
            deliver(self, c, day, budget, rng, parts)
        return DayEvents(
            day=day,
            spend=concat(parts["spend"], "spend"),
            clicks=concat(parts["clicks"], "clicks"),
            conversions=concat(parts["conversions"], "conversions"),
            crm=concat(parts["crm"], "crm"),
            changes=sorted(changes, key=lambda ch: (ch.ts, ch.level, ch.entity_id, ch.field)),
            learning={a.id: a.states[-1] for a in self.adsets},
        )

    def _apply_budget(self, c: Campaign, day: int, budget: float, out: list[Change]) -> None:
        """Launch the campaign or log a budget change; reset learning where significant."""
        last = self._last_budget[c.idx]
        if last is None:
            launch = Change(day * DAY, "campaign", c.id, "status", "PAUSED", "ACTIVE", "human")
            out.append(launch)  # at midnight UTC, before the first click
            for ai in c.adsets:
                self.reset_learning(ai, day, "human", "status")
        elif budget != last:
            default = (day * DAY + 6 * H + c.idx, "automation")
            ts, actor = self.budget_edit.get((c.idx, day), default)
            out.append(
                Change(ts, "campaign", c.id, "budget", f"{last:.2f}", f"{budget:.2f}", actor)
            )
            if last > 0 and budget > 0 and abs(budget / last - 1.0) > 0.2:
                for ai in c.adsets:
                    self.reset_learning(ai, day, actor, "budget")
        if budget > 0 and self._zero_days[c.idx] >= 7:
            for ai in c.adsets:
                self.reset_learning(ai, day, "human", "status")
        self._zero_days[c.idx] = 0 if budget > 0 else self._zero_days[c.idx] + 1
        self._last_budget[c.idx] = budget
