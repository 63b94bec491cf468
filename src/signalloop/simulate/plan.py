"""The account's own plan: baseline budgets, the edit log, and the faults that change the world.

:func:`plan_campaign` draws, before any delivery, each campaign's budget path (human edits
about every 21 days, automation rules about every 7), its ad-set edits (targeting, bid,
bid strategy, optimisation event) and the platform's ad pauses; :func:`plan_world_faults`
then builds ``creative_starvation``, ``override_storm`` and ``low_volume`` into the plan.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from signalloop.simulate.entities import Campaign, Change
from signalloop.simulate.params import DAY, TARGETING, H

if TYPE_CHECKING:
    from signalloop.simulate.account import Account


def _edit(
    acct: Account, c: Campaign, d: int, ts: int, adset: int, fld: str, old: str, new: str
) -> None:
    """Plan a human ad-set edit on day ``d``."""
    ch = Change(ts, "adset", acct.adsets[adset].id, fld, old, new, "human")
    acct.plan_edits.setdefault((c.idx, d), []).append((ch, adset))


def plan_campaign(acct: Account, c: Campaign) -> None:
    """Draw the campaign's baseline budget plan and its edit log into ``acct``.

    Parameters
    ----------
    acct
        The account under construction; fills ``budget_plan[c.idx]``, ``budget_edit`` (who
        changes the budget when, per campaign and day) and ``plan_edits`` (ad-set edits and
        platform pauses per campaign and day), and each ad's ``paused`` days.
    c
        The campaign.
    """
    rng = np.random.default_rng([acct.config.seed, 3, c.idx])
    n = acct.days
    u, z, r2 = rng.random(n), rng.normal(0.0, 0.22, n), rng.uniform(0.88, 1.12, n)
    secs, night = rng.integers(8 * H, 19 * H, n), rng.integers(1 * H, 5 * H, n)
    budget = c.budget
    for d in range(n):
        if d > 0 and u[d] < 1 / 21:
            budget = max(20.0, round(budget * math.exp(z[d]) * (c.budget / budget) ** 0.3))
            acct.budget_edit[(c.idx, d)] = (d * DAY + int(secs[d]), "human")
        elif d > 0 and u[d] < 1 / 21 + 1 / 7:
            budget = max(20.0, round(budget * r2[d] * (c.budget / budget) ** 0.2))
            acct.budget_edit[(c.idx, d)] = (d * DAY + int(night[d]), "automation")
        acct.budget_plan[c.idx, d] = budget
    for ai in c.adsets:
        target = TARGETING[int(rng.integers(len(TARGETING)))]
        bid, strategy = round(float(rng.uniform(1.0, 4.0)), 2), "lowest_cost"
        event = "lead" if c.objective == "lead" else "purchase"
        draws = rng.random((n, 5)) < (1 / 120, 1 / 150, 1 / 400, 1 / 500, 0)
        secs, ratio = rng.integers(8 * H, 19 * H, n), rng.uniform(0.75, 1.3, n)
        for d in (int(x) + 1 for x in np.flatnonzero(draws[1:].any(axis=1))):
            ts = int(d * DAY + secs[d])
            if draws[d, 0]:
                new = TARGETING[(TARGETING.index(target) + 1 + d % 3) % len(TARGETING)]
                _edit(acct, c, d, ts, ai, "targeting", target, new)
                target = new
            if draws[d, 1]:
                nb = round(bid * float(ratio[d]), 2)
                _edit(acct, c, d, ts + 7, ai, "bid", f"{bid:.2f}", f"{nb:.2f}")
                bid = nb
            if draws[d, 2]:
                ns = "cost_cap" if strategy == "lowest_cost" else "lowest_cost"
                _edit(acct, c, d, ts + 13, ai, "bid_strategy", strategy, ns)
                strategy = ns
            if draws[d, 3]:
                ne = "landing_page_view" if event != "landing_page_view" else c.objective
                _edit(acct, c, d, ts + 19, ai, "optimization_event", event, ne)
                event = ne
        for adi in acct.adsets[ai].ads:
            ad = acct.ads[adi]
            pause, lengths = rng.random(n) < 1 / 150, rng.integers(1, 3, n)
            psec = rng.integers(0, DAY - H, n)
            d = 1
            while d < n:
                if not pause[d]:
                    d += 1
                    continue
                ln = int(lengths[d])
                for day, old, new in ((d, "ACTIVE", "PAUSED"), (d + ln, "PAUSED", "ACTIVE")):
                    if day < n:
                        ts = day * DAY + int(psec[d]) // (1 + (day > d))
                        ch = Change(ts, "ad", ad.id, "status", old, new, "platform")
                        acct.plan_edits.setdefault((c.idx, day), []).append((ch, -1))
                ad.paused.update(range(d, min(n, d + ln)))
                d += ln + 1


def plan_world_faults(acct: Account, c: Campaign) -> None:
    """Build the world faults covering ``c`` into the plan drawn by :func:`plan_campaign`.

    ``creative_starvation`` blocks creative refreshes in its window, ``override_storm``
    replaces the window's plan with several human budget, targeting and bid edits a week,
    ``low_volume`` caps the budget where about 15 conversions a week are expected. What each
    did is noted in ``acct.fault_notes``.

    Parameters
    ----------
    acct
        The account under construction.
    c
        The campaign.
    """
    n, plan = acct.days, acct.budget_plan[c.idx]
    for fi, f in acct.faults_for("creative_starvation", c):
        acct.starved[c.idx, f.start : f.end + 1] = True
        acct.fault_notes[fi].setdefault("blocked_creatives", [])
    for fi, f in acct.faults_for("override_storm", c):
        rng = np.random.default_rng([acct.config.seed, 4, c.idx, fi])
        base = budget = float(plan[f.start])
        count = 0
        plan[f.start : f.end + 1] = budget  # the storm replaces the plan in its window
        for week in range(f.start, f.end + 1, 7):
            stop = min(week + 7, f.end + 1)
            edits = 3 + int(rng.poisson(len(c.adsets)))
            days = np.sort(rng.integers(week, stop, edits))
            for d in (int(x) for x in days):
                ts, ai = d * DAY + int(rng.integers(8 * H, 20 * H)), int(rng.choice(c.adsets))
                kind, count = int(rng.integers(3)), count + 1
                if kind == 0:
                    drift = budget / base  # drift back towards the pre-storm budget
                    sign = 1.0 if rng.random() < 1 / (1 + drift**2) else -1.0
                    budget = max(20.0, round(budget * (1 + sign * rng.uniform(0.3, 0.6))))
                    plan[d : f.end + 1] = budget
                    acct.budget_edit[(c.idx, d)] = (ts, "human")
                elif kind == 1:
                    old, new = rng.choice(len(TARGETING), 2, replace=False)
                    _edit(acct, c, d, ts, ai, "targeting", TARGETING[old], TARGETING[new])
                else:
                    old_bid, new_bid = rng.uniform(1, 4, 2)
                    _edit(acct, c, d, ts, ai, "bid", f"{old_bid:.2f}", f"{new_bid:.2f}")
        if f.end + 1 < n:
            acct.budget_edit[(c.idx, f.end + 1)] = ((f.end + 1) * DAY + 10 * H, "human")
        acct.fault_notes[fi].setdefault("edits", {})[c.id] = count
    for fi, f in acct.faults_for("low_volume", c):
        lo, hi = 1.0, c.budget
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if acct.expected(c, mid)[0] < 15.0 / 7.0 else (lo, mid)
        cap = max(5.0, math.floor(lo))
        plan[f.start : f.end + 1] = np.minimum(plan[f.start : f.end + 1], cap)
        for d in (f.start, f.end + 1):
            if d < n:
                acct.budget_edit[(c.idx, d)] = (d * DAY + 9 * H, "human")
        note = acct.fault_notes[fi]
        note.setdefault("budget_cap", {})[c.id] = cap
        exp7 = round(7 * acct.expected(c, cap)[0], 2)
        note.setdefault("expected_conversions_7d", {})[c.id] = exp7
