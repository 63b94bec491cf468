"""One day of delivery: creative rotation, spend, clicks, conversions and the CRM funnel.

:meth:`Account.step <signalloop.simulate.account.Account.step>` calls, per campaign,
:func:`rotate_creatives` (fatigue onsets and refreshes) and then :func:`deliver` (spend,
impressions, clicks and their conversions, the learning phase, and for lead campaigns the
CRM rows and their offline conversions: sql, opportunity and won deals).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from signalloop.simulate.entities import Campaign, Change, cols, concat
from signalloop.simulate.params import (
    ALPHABET,
    DAY,
    FATIGUE_ONSET,
    HEALTHY_BATCH_AT,
    HEALTHY_CADENCE_DAYS,
    HEALTHY_REFRESH_AT,
    HOUR_CDF,
    KIND_NAMES,
    LEARNING_THRESHOLD,
    LEARNING_WINDOW,
    OFFLINE_KINDS,
    OWNERS,
    PHASE_CVR,
    REPLACE_AT,
    SOURCE_NAMES,
    STAGE_LAG_DAYS,
    Arr,
    H,
)

if TYPE_CHECKING:
    from signalloop.simulate.account import Account


def rotate_creatives(
    acct: Account, c: Campaign, day: int, rng: np.random.Generator, out: list[Change]
) -> None:
    """Record fatigue onsets; refresh each ad set's fatigued creatives in one batch.

    By default an ad set is refreshed with probability 0.4 a day once a live creative is
    below ``REPLACE_AT`` of its peak, every creative below ``FATIGUE_ONSET`` getting a
    successor. A healthy campaign (``SimulationConfig.healthy``) refreshes with certainty once
    one is below ``HEALTHY_REFRESH_AT`` (before its onset), taking along every creative below
    ``HEALTHY_BATCH_AT``, and when nothing new has launched for ``HEALTHY_CADENCE_DAYS`` days
    it replaces the stalest live creative (with the others of its ad set below
    ``HEALTHY_BATCH_AT``). ``creative_starvation`` blocks both in its window.

    Parameters
    ----------
    acct
        The account.
    c
        The campaign.
    day
        Day index.
    rng
        The campaign's random stream of the day.
    out
        Receives the ``creative`` edit-log rows.
    """
    healthy = acct.config.is_healthy(c.id)
    for ai in c.adsets:
        a = acct.adsets[ai]
        live = [(adi, acct.creatives[acct.ads[adi].creative]) for adi in a.ads]
        fresh = [cr.fresh(day, a.audience) for _, cr in live]
        for (_, cr), e in zip(live, fresh, strict=True):
            if cr.onset_day is None and e < FATIGUE_ONSET:
                cr.onset_day = day
        if healthy:
            if min(fresh) >= HEALTHY_REFRESH_AT:
                continue
            due_at, cut = HEALTHY_REFRESH_AT, HEALTHY_BATCH_AT
        elif min(fresh) >= REPLACE_AT or rng.random() >= 0.4:
            continue
        else:
            due_at, cut = REPLACE_AT, FATIGUE_ONSET
        if acct.starved[c.idx, day]:
            for fi, f in acct.faults_for("creative_starvation", c):
                blocked = acct.fault_notes[fi]["blocked_creatives"]
                if f.start <= day <= f.end:
                    due = [cr.id for (_, cr), e in zip(live, fresh, strict=True) if e < due_at]
                    blocked += [x for x in due if x not in blocked]
            continue
        _refresh(acct, c, ai, [e < cut for e in fresh], day, rng, out)
    if healthy and day - c.last_launch >= HEALTHY_CADENCE_DAYS and not acct.starved[c.idx, day]:
        stalest = min(
            (acct.creatives[acct.ads[adi].creative].fresh(day, acct.adsets[ai].audience), ai, j)
            for ai in c.adsets
            for j, adi in enumerate(acct.adsets[ai].ads)
        )
        _, ai, pick = stalest
        a = acct.adsets[ai]
        fresh = [acct.creatives[acct.ads[adi].creative].fresh(day, a.audience) for adi in a.ads]
        _refresh(
            acct,
            c,
            ai,
            [j == pick or e < HEALTHY_BATCH_AT for j, e in enumerate(fresh)],
            day,
            rng,
            out,
        )


def _refresh(
    acct: Account,
    c: Campaign,
    ai: int,
    replace: list[bool],
    day: int,
    rng: np.random.Generator,
    out: list[Change],
) -> None:
    """Give the ads of ad set ``ai`` flagged in ``replace`` a new creative; reset learning.

    30% of refreshes are made by hand, except in a healthy campaign, whose creative pipeline
    is automated (the draw is made all the same, so the stream stays in step).
    """
    a = acct.adsets[ai]
    human = rng.random() < 0.3 and not acct.config.is_healthy(c.id)
    hours = (9 * H, 18 * H) if human else (2 * H, 5 * H)
    ts, actor = day * DAY + int(rng.integers(*hours)), ("automation", "human")[human]
    for j, (adi, swap) in enumerate(zip(a.ads, replace, strict=True)):
        if swap:
            cr = acct.creatives[acct.ads[adi].creative]
            new = acct.new_creative(c, adi, day, rng)
            cr.retire_day, acct.ads[adi].creative = day, new
            ad_id, new_id = acct.ads[adi].id, acct.creatives[new].id
            out.append(Change(ts + j, "ad", ad_id, "creative", cr.id, new_id, actor))
    acct.reset_learning(ai, day, actor, "creative")


def deliver(
    acct: Account,
    c: Campaign,
    day: int,
    budget: float,
    rng: np.random.Generator,
    parts: dict[str, list[dict[str, Arr]]],
) -> None:
    """Deliver one campaign's day: spend rows, clicks, conversions, CRM rows, learning.

    Parameters
    ----------
    acct
        The account.
    c
        The campaign.
    day
        Day index.
    budget
        The campaign's budget for the day in USD.
    rng
        The campaign's random stream of the day (after :func:`rotate_creatives`).
    parts
        Receives the day's column arrays per event kind (see ``SCHEMAS``).
    """
    rows: list[tuple[int, int, int, int, int, int, int, float]] = []
    per_ad: list[tuple[int, int, int, float]] = []  # ad, ad set, creative, p(convert)
    ad_clicks: list[int] = []
    for ai in c.adsets:
        a = acct.adsets[ai]
        a.states.append(a.phase)
        a.conversions.append(0)
        live = [i for i in a.ads if day not in acct.ads[i].paused]
        target = budget * a.share
        if target <= 0 or not live:
            continue
        spent = min(target * math.exp(rng.normal(0.0, 0.08)), 1.25 * target)
        crs = [acct.ads[i].creative for i in live]
        ectr = np.array(
            [acct.creatives[i].fresh(day, a.audience) * acct.creatives[i].peak_ctr for i in crs]
        )
        w = (ectr / a.ctr_base) ** 2 * rng.gamma(20.0, 1 / 20.0, len(live))
        w /= w.sum()
        imp_total = a.k * spent**a.b * math.exp(rng.normal(0.0, 0.05))
        imp = np.floor(imp_total * w + rng.random(len(live))).astype(np.int64)
        spend = np.round(spent * w, 2)
        clk = rng.binomial(imp, np.minimum(ectr * np.exp(rng.normal(0.0, 0.1, len(live))), 0.5))
        mult, sd = PHASE_CVR[a.phase]
        p = min(1.0, a.cvr * mult * math.exp(rng.normal(0.0, sd) - sd * sd / 2))
        for j, adi in enumerate(live):
            acct.creatives[crs[j]].cum_imp += float(imp[j])
            if imp[j] > 0 or spend[j] > 0:
                rows.append(
                    (day, c.idx, ai, adi, crs[j], int(imp[j]), int(clk[j]), float(spend[j]))
                )
            per_ad.append((adi, ai, crs[j], p))
            ad_clicks.append(int(clk[j]))
    if rows:
        parts["spend"].append(cols("spend", *zip(*rows, strict=True)))
    n = int(sum(ad_clicks))
    info = np.repeat(np.array(per_ad, dtype=float).reshape(-1, 4), ad_clicks, axis=0)
    ads, adset, creative = (info[:, j].astype(np.int64) for j in range(3))
    p_click = info[:, 3]
    ts = day * DAY + np.searchsorted(HOUR_CDF, rng.random(n), side="right") * H
    ts = ts + rng.integers(0, H, n)
    order = np.argsort(ts, kind="stable")
    ads, adset, creative = ads[order], adset[order], creative[order]
    p_click, ts = p_click[order], ts[order]
    user = np.floor(acct.user_pool[c.idx] * rng.random(n) ** 1.6).astype(np.int64)
    token = ALPHABET[rng.integers(0, 64, (n, 22))].view("S22").ravel()
    tn = ((c.idx + 1) * 10_000 + day) * 1_000_000 + np.arange(n, dtype=np.int64)
    camp = np.full(n, c.idx)
    click = (tn, camp, adset, ads, creative, ts, user, token, p_click)
    parts["clicks"].append(cols("clicks", *click))
    hit = rng.random(n) < p_click
    m = int(hit.sum())
    for ai in c.adsets:
        _learn(acct, ai, day, int(np.count_nonzero(adset[hit] == ai)))
    delay = np.exp(c.delay_mu + c.delay_sigma * rng.normal(0.0, 1.0, m)) * H
    cts = ts[hit] + np.maximum(delay.astype(np.int64), 30)
    value = np.full(m, np.nan)
    if c.objective == "purchase":
        mu = math.log(c.value_mean) - 0.6**2 / 2
        value = np.round(np.exp(mu + 0.6 * rng.normal(0.0, 1.0, m)), 2)
    source = (rng.random(m) >= c.pixel_share).astype(np.int64)
    kind = np.full(m, KIND_NAMES.index(c.objective))
    sel = (tn[hit], camp[hit], adset[hit], ads[hit], creative[hit], user[hit], ts[hit], cts)
    parts["conversions"].append(cols("conversions", *sel, value, source, kind, token[hit]))
    if c.objective == "lead" and m:
        _crm(c, rng, tn[hit], user[hit], ts[hit], cts, token[hit], parts)


def _learn(acct: Account, ai: int, day: int, conversions: int) -> None:
    """Count the day's conversions of ad set ``ai`` and move its learning phase on."""
    a = acct.adsets[ai]
    a.conversions[-1] = conversions
    a.conv_since += conversions
    if a.phase == "learning":
        if a.conv_since >= LEARNING_THRESHOLD:
            a.phase = "stable"
        elif day - a.reset_day + 1 >= LEARNING_WINDOW:
            a.phase = "learning_limited"
    elif sum(a.conversions[-LEARNING_WINDOW:]) >= LEARNING_THRESHOLD:
        a.phase = "stable"  # learning_limited until 7 days hold the threshold


def _crm(
    c: Campaign,
    rng: np.random.Generator,
    tn: Arr,
    user: Arr,
    click_ts: Arr,
    conv_ts: Arr,
    token: Arr,
    parts: dict[str, list[dict[str, Arr]]],
) -> None:
    """Lead -> mql -> sql -> opportunity -> won / lost rows, and their offline conversions.

    Every record reaching sql, opportunity or won also gives a conversion row of kind
    ``sql``, ``opportunity`` or ``deal`` at that stage's time (source ``crm`` for google,
    ``offline`` otherwise), with the originating click; opportunities carry the opportunity
    amount, deals the won amount, sql rows no value.
    """
    m = len(tn)
    times = np.zeros((5, m), dtype=np.int64)
    times[0] = conv_ts + rng.integers(60, 900, m)
    reached = np.ones((5, m), dtype=bool)
    for s in range(1, 5):
        lag = np.exp(math.log(STAGE_LAG_DAYS[s - 1]) + 0.8 * rng.normal(0.0, 1.0, m))
        times[s] = times[s - 1] + np.maximum((lag * DAY).astype(np.int64), 600)
        reached[s] = reached[s - 1] & (rng.random(m) < c.stage_rates[s - 1])
    last = reached.sum(axis=0) - 1
    lost_lag = np.exp(math.log(10.0) + 0.8 * rng.normal(0.0, 1.0, m)) * DAY
    lost = (last < 4) & (rng.random(m) < 0.8)
    lost_ts = times[last, np.arange(m)] + lost_lag.astype(np.int64) + H
    amu = math.log(c.amount_mean) - 0.5 * 0.7**2
    opp = np.round(np.exp(amu + 0.7 * rng.normal(0.0, 1.0, m)), -1)
    won = np.round(opp * rng.uniform(0.85, 1.1, m), 0)
    amounts = (np.nan, np.nan, np.nan, opp, won, np.nan)
    owner = rng.integers(0, len(OWNERS), m)
    masks = [*reached, lost]
    stage_ts = [*times, lost_ts]
    camp = np.full(m, c.idx)
    rows = []
    for i, s in enumerate(masks):
        amount = np.broadcast_to(amounts[i], m)
        rows.append(
            cols("crm", *(x[s] for x in (tn, camp, s * i, stage_ts[i], user, amount, owner)))
        )
    parts["crm"].append(concat(rows, "crm"))
    # reaching sql, opportunity or won is an offline conversion at the stage's time, carrying
    # the originating click (kinds sql, opportunity, deal; value the stage's amount, if any)
    no = np.full(m, -1)
    source = np.full(m, SOURCE_NAMES.index("crm" if c.platform == "google" else "offline"))
    offline = []
    for stage, kind in OFFLINE_KINDS.items():
        value = np.broadcast_to(amounts[stage], m)
        row = (tn, camp, no, no, no, user, click_ts, times[stage], value, source, kind, token)
        offline.append(cols("conversions", *(np.broadcast_to(x, m)[reached[stage]] for x in row)))
    parts["conversions"].append(concat(offline, "conversions"))
