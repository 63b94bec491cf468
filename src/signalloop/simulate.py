"""A seeded generative model of an ad account that writes the five canonical kinds.

:class:`Account` (campaigns, ad sets, ads, creatives, a user pool, a budget plan and edit log)
is built from a :class:`SimulationConfig` and delivered one day at a time by
:meth:`Account.step`; :func:`simulate` runs every day at the account's own plan, right-censors
what has not happened by the end of the last day, applies the observation faults and returns
the five tables plus a complete ``truth`` dictionary; :func:`write` writes them as CSV + JSON.

Generative story
----------------
* **Campaigns** ``c01..cK`` alternate meta / google (``c05`` is linkedin when K >= 5); c01 is a
  B2B ``lead`` campaign (CRM path), c02 and c03 e-commerce ``purchase``, c04 lead, linkedin
  lead, and so on (every third campaign lead). Baseline daily budgets are spread log-uniformly
  over 60-800 USD (shuffled), so some ad sets make well over and some well under 50
  conversions per 7 days. Budgets are campaign level, split over 1-3 ad sets by fixed shares.
* **Delivery**: spend = budget x share x LogNormal(0, 0.08) (at most +25%); impressions =
  k x spend^b x LogNormal(0, 0.05), b ~ U(0.70, 0.85) (diminishing returns), k such that the
  baseline budget buys at the platform CPM (meta 9, google 24, linkedin 38 USD). Impressions
  and spend split over the ad set's live ads with weight ~ CTR^2 x Gamma noise.
* **Creatives**: each ad runs one creative at a time with expected CTR
  ``peak * (floor + (1 - floor) * exp(-lam_freq * freq - lam_age * age))`` where
  ``freq = cumulative impressions / ad-set audience`` and ``age`` is in days; clicks ~
  Binomial(impressions, CTR x LogNormal(0, 0.1)). The **fatigue onset** is the first day whose
  expected CTR (at the start of the day) is below 70% of the peak. When a live creative is
  below 60%, the ad set is refreshed with probability 0.4 a day: every creative below 70% gets
  a successor (``changes`` rows, field ``creative``, actor automation 70% / human 30%; one
  learning reset), except during ``creative_starvation``.
* **Conversions**: each click converts with the ad set's CVR (meta/google/linkedin lead 7/5/10%,
  purchase 3/4%) x phase multiplier x daily noise (stable 1.0, sd 0.08; learning 0.8, sd 0.3;
  learning-limited 0.9, sd 0.2). Click-to-conversion delay in hours is LogNormal with median
  ~24 h (x exp(N(0, 0.2)) per campaign) and sigma ~ U(0.9, 1.2); purchase values LogNormal
  (mean 40-160 USD per campaign, sigma 0.6). 75-90% of conversions come from the ``pixel``
  (with campaign_id, adset_id, creative_id), the rest from ``server`` (click_id only).
  ``spend.platform_conversions`` is the platform's count, on the click day, of the recorded
  pixel/server conversions plus ~12% over-count.
* **CRM** (lead campaigns): each lead becomes a record with a ``lead`` row minutes after the
  conversion, then mql / sql / opportunity / won with rates ~(0.5, 0.5, 0.6, 0.3) and
  LogNormal lags (medians 1.5, 4, 7, 21 days, sigma 0.8): lead-to-won ~5 weeks, tail to months.
  80% of records that stop early get a ``lost`` row (median 10 days later). A won deal is also
  a conversion (kind ``deal``, source ``offline`` for meta/linkedin, ``crm`` for google) at the
  won time with the originating click_id and click_ts. Ids share the click's number ``N``:
  touch ``tN``, conversion ``cvN``, CRM record ``recN``, deal ``dlN``.
* **Edits**: per campaign a human budget edit every ~21 days (ratio LogNormal(0, 0.22), so some
  exceed 20%) and an automation budget rule every ~7 days (< 15%); per ad set human targeting
  (~1/120 days) and bid (~1/150) edits, rare bid_strategy / optimization_event edits; platform
  pauses single ads for 1-2 days (~1/150 days). An edit on day d governs all of day d.
* **Learning phase** per ad set: launch (day 0) and every significant edit (budget change
  > 20%, bid, bid_strategy, targeting, creative, optimization_event, un-pausing after >= 7
  days) reset it to ``learning``; it turns ``stable`` once 50 conversions (counted on the click
  day) accrue within 7 days of the reset, else ``learning_limited`` until 7 days hold 50.

Faults (:data:`FAULT_NAMES`): ``creative_starvation``, ``override_storm`` and ``low_volume``
change the world; the others only what is observed. Each campaign draws from its own random
streams, so a fault on one campaign leaves the others' rows unchanged. ``truth["faults"]``
records each fault's window (day indexes and dates), row counts (``rows``: removed / changed /
added per table) and affected ids.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from signalloop.contract import FUNNEL, KINDS
from signalloop.errors import UsageError

Arr = npt.NDArray[Any]
DAY = 86_400
H = 3_600

FAULT_NAMES: tuple[str, ...] = (
    "tracking_outage",
    "crm_sync_dropout",
    "utm_mess",
    "duplicate_events",
    "stage_overwrite",
    "late_offline_conversions",
    "creative_starvation",
    "override_storm",
    "low_volume",
)
#: platform -> (utm_source, utm_medium, click-id URL parameter, click-id prefix)
PLATFORMS: dict[str, tuple[str, str, str, str]] = {
    "meta": ("facebook", "paid_social", "fbclid", "IwAR"),
    "google": ("google", "cpc", "gclid", "Cj0KCQiA"),
    "linkedin": ("linkedin", "paid_social", "li_fat_id", "AQE"),
}
CPM = {"meta": 9.0, "google": 24.0, "linkedin": 38.0}
CTR = {"meta": 0.013, "google": 0.034, "linkedin": 0.0065}
CVR = {"lead": {"meta": 0.07, "google": 0.05, "linkedin": 0.10}, "purchase": {"meta": 0.03}}
CVR["purchase"].update(google=0.04, linkedin=0.02)
STAGE_RATES = (0.5, 0.5, 0.6, 0.3)
STAGE_LAG_DAYS = (1.5, 4.0, 7.0, 21.0)
STAGES = (*FUNNEL, "lost")
LEARNING_THRESHOLD, LEARNING_WINDOW = 50, 7
PHASE_CVR = {"learning": (0.8, 0.3), "learning_limited": (0.9, 0.2), "stable": (1.0, 0.08)}
SIGNIFICANT = ("bid", "bid_strategy", "targeting", "optimization_event")
FATIGUE_ONSET, REPLACE_AT = 0.7, 0.6
KIND_NAMES, SOURCE_NAMES = ("purchase", "lead", "deal"), ("pixel", "server", "offline", "crm")
OWNERS = ("alex.kim", "maria.lopez", "sam.okafor", "jin.chen", "priya.nair", "tom.berg")
THEMES = ("demo_requests", "spring_sale", "free_trial", "bestsellers", "webinar", "retargeting")
TARGETING = (
    "age 25-54; interests saas marketing",
    "age 25-54; lookalike 1% customers",
    "age 30-65; job titles marketing managers",
    "broad; advantage+ audience",
    "age 21-44; interests ecommerce shopping",
    "remarketing 30d site visitors",
)
#: messy (utm_source, utm_medium) variants per platform for the ``utm_mess`` fault
MESSY_UTM = {
    "meta": "Facebook/paid_social|FACEBOOK/paid_social|facebook /paid_social|fb/paid_social|"
    "facebook/paid-social|facebook/Paid Social|fb/social",
    "google": "Google/cpc|GOOGLE/cpc|google /cpc|adwords/cpc|google/ppc|google/CPC|adwords/ppc",
    "linkedin": "LinkedIn/paid_social|LINKEDIN/paid_social|linkedin /paid_social|li/paid_social|"
    "linkedin/paid-social",
}
HOUR_CDF = np.cumsum(
    np.r_[
        3,
        2.5,
        2,
        1.5,
        1,
        0.8,
        0.6,
        0.6,
        0.8,
        1.2,
        1.6,
        2,
        2.4,
        2.8,
        3,
        3.2,
        3.3,
        3.4,
        3.5,
        3.6,
        3.8,
        4,
        3.8,
        3.4,
    ]
)
HOUR_CDF /= HOUR_CDF[-1]
ALPHABET = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", np.uint8
)
#: internal column layouts of the world's event arrays
SCHEMAS: dict[str, tuple[tuple[str, Any], ...]] = {
    kind: tuple(
        (c, "S22" if c == "token" else float if c in {"spend", "value", "amount"} else np.int64)
        for c in cols.split()
    )
    for kind, cols in {
        "spend": "day camp adset ad creative impressions clicks spend",
        "clicks": "tn camp adset ad creative ts user token",
        "conversions": "tn camp adset ad creative user click_ts ts value source kind token",
        "crm": "record camp stage ts user amount owner",
    }.items()
}


# ---- configuration and faults ---------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One injected fault.

    ``name`` (one of :data:`FAULT_NAMES`) applies to ``campaign`` (an id, or ``"*"`` for every
    campaign) on the 0-based days ``start`` .. ``end``, inclusive.
    """

    name: str
    campaign: str
    start: int
    end: int

    def covers(self, campaign: str) -> bool:
        """Whether the fault applies to ``campaign``."""
        return self.campaign in ("*", campaign)


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate: length, number of campaigns, seed, first day and faults."""

    days: int = 90
    campaigns: int = 6
    seed: int = 0
    start: dt.date = dt.date(2026, 1, 1)
    faults: tuple[Fault, ...] = ()


def campaign_ids(n: int) -> list[str]:
    """Return the campaign ids ``c01`` .. ``cNN``.

    >>> campaign_ids(3)
    ['c01', 'c02', 'c03']
    """
    if n < 1:
        raise UsageError(f"the number of campaigns must be at least 1, got {n}")
    width = max(2, len(str(n)))
    return [f"c{i + 1:0{width}d}" for i in range(n)]


def parse_fault(spec: str, *, days: int, campaign_ids: Sequence[str]) -> Fault:
    """Parse ``NAME@CAMPAIGN[:START-END]`` into a :class:`Fault`.

    Parameters
    ----------
    spec
        CAMPAIGN is an id (``c02``), a 1-based number (``2``) or ``*``; START and END are
        0-based inclusive day indexes. Without ``:START-END`` the fault covers the whole run,
        ``START-`` runs to the last day and a lone ``START`` is one day.
    days
        Length of the run, to check the window against.
    campaign_ids
        The valid campaign ids.

    Returns
    -------
    Fault

    Raises
    ------
    UsageError
        Saying what was expected and what was got.

    Examples
    --------
    >>> parse_fault("tracking_outage@c02:60-66", days=90, campaign_ids=["c01", "c02"])
    Fault(name='tracking_outage', campaign='c02', start=60, end=66)
    >>> parse_fault("low_volume@1", days=90, campaign_ids=["c01", "c02"])
    Fault(name='low_volume', campaign='c01', start=0, end=89)
    >>> parse_fault("utm_mess@*:30-", days=90, campaign_ids=["c01"]).end
    89
    """
    form = "NAME@CAMPAIGN[:START-END] (e.g. tracking_outage@c02:60-66)"
    if "@" not in spec:
        raise UsageError(f"fault {spec!r}: expected {form}")
    name, rest = (p.strip() for p in spec.strip().split("@", 1))
    if name not in FAULT_NAMES:
        raise UsageError(
            f"fault {spec!r}: unknown fault name {name!r}; expected one of {', '.join(FAULT_NAMES)}"
        )
    camp, _, window = (p.strip() for p in rest.partition(":"))
    ids = list(campaign_ids)
    if camp.isdigit() and 1 <= int(camp) <= len(ids) and camp not in ids:
        camp = ids[int(camp) - 1]
    if camp != "*" and camp not in ids:
        raise UsageError(
            f"fault {spec!r}: unknown campaign {camp!r}; expected *, a number 1-{len(ids)} "
            f"or one of {', '.join(ids)}"
        )
    start, end = 0, days - 1
    if window:
        lo, dash, hi = window.partition("-")
        try:
            start = int(lo)
            end = int(hi) if hi.strip() else (days - 1 if dash else start)
        except ValueError:
            raise UsageError(
                f"fault {spec!r}: expected the days as START-END, START- or START "
                f"(0-based day indexes), got {window!r}"
            ) from None
        if not 0 <= start <= end <= days - 1:
            raise UsageError(
                f"fault {spec!r}: days {start}-{end} are out of range; expected "
                f"0 <= START <= END <= {days - 1} for a {days}-day run"
            )
    return Fault(name, camp, start, end)


# ---- world state ----------------------------------------------------------------------------


@dataclass
class _Creative:
    id: str
    campaign: int
    adset: int
    ad: int
    launch_day: int
    peak_ctr: float
    floor: float
    lam_freq: float
    lam_age: float
    cum_imp: float = 0.0
    retire_day: int | None = None
    onset_day: int | None = None

    def fresh(self, day: int, audience: float) -> float:
        """Expected CTR on ``day`` as a share of the peak."""
        x = self.lam_freq * self.cum_imp / audience + self.lam_age * (day - self.launch_day)
        return self.floor + (1.0 - self.floor) * math.exp(-x)


@dataclass
class _Ad:
    id: str
    adset: int
    creative: int = -1
    paused: set[int] = field(default_factory=set)


@dataclass
class _Adset:
    id: str
    name: str
    campaign: int
    share: float
    cvr: float
    k: float
    b: float
    audience: float
    ctr_base: float
    ads: list[int] = field(default_factory=list)
    phase: str = "learning"
    reset_day: int = 0
    conv_since: int = 0
    conversions: list[int] = field(default_factory=list)
    resets: list[dict[str, Any]] = field(default_factory=list)
    states: list[str] = field(default_factory=list)


@dataclass
class _Campaign:
    idx: int
    id: str
    name: str
    platform: str
    objective: str
    budget: float
    delay_mu: float
    delay_sigma: float
    value_mean: float
    pixel_share: float
    stage_rates: tuple[float, ...]
    amount_mean: float
    adsets: list[int] = field(default_factory=list)
    n_creatives: int = 0


@dataclass(frozen=True)
class Change:
    """One edit-log row; ``ts`` in seconds since the start of day 0."""

    ts: int
    level: str
    entity_id: str
    field: str
    old_value: str
    new_value: str
    actor: str


@dataclass
class DayEvents:
    """What one day of delivery produced; times in seconds since the start of day 0.

    ``spend``, ``clicks``, ``conversions`` and ``crm`` are column arrays (see ``SCHEMAS``;
    entities as indexes into the account's lists). ``conversions`` holds purchases, leads and
    deals at their true event time, which may be after the day or the run. ``learning`` maps
    each ad set id to the phase that governed the day.
    """

    day: int
    spend: dict[str, Arr]
    clicks: dict[str, Arr]
    conversions: dict[str, Arr]
    crm: dict[str, Arr]
    changes: list[Change]
    learning: dict[str, str]


def _cols(kind: str, *arrays: Any) -> dict[str, Arr]:
    return {n: np.asarray(a, dtype=t) for (n, t), a in zip(SCHEMAS[kind], arrays, strict=True)}


def _concat(parts: Sequence[dict[str, Arr]], kind: str) -> dict[str, Arr]:
    if not parts:
        return {n: np.empty(0, dtype=t) for n, t in SCHEMAS[kind]}
    return {n: np.concatenate([p[n] for p in parts]) for n, _ in SCHEMAS[kind]}


def _take(cols: dict[str, Arr], idx: Arr) -> dict[str, Arr]:
    return {k: v[idx] for k, v in cols.items()}


class Account:
    """The simulated ad account: world state built from a config, delivered day by day.

    Parameters
    ----------
    config
        Size, seed, first day and faults; the world faults (``creative_starvation``,
        ``override_storm``, ``low_volume``) are built into the plan here.

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
        self.campaigns: list[_Campaign] = []
        self.adsets: list[_Adset] = []
        self.ads: list[_Ad] = []
        self.creatives: list[_Creative] = []
        budgets = np.exp(np.linspace(math.log(60.0), math.log(800.0), k))
        budgets = budgets[np.random.default_rng([config.seed, 9]).permutation(k)]
        for ci in range(k):
            self._build(ci, float(budgets[ci]))
        clicks = sum(self.expected(c, c.budget)[1] for c in self.campaigns)
        self.n_users = max(2_000, int(0.6 * clicks * self.days))
        self.budget_plan = np.zeros((k, self.days))
        self.budget_edit: dict[tuple[int, int], tuple[int, str]] = {}
        self.plan_edits: dict[tuple[int, int], list[tuple[Change, int]]] = {}
        self.starved = np.zeros((k, self.days), dtype=bool)
        self.fault_notes: list[dict[str, Any]] = [{} for _ in config.faults]
        for c in self.campaigns:
            self._plan(c)
        self._last_budget: list[float | None] = [None] * k
        self._zero_days = [0] * k

    # ---- construction --------------------------------------------------------------------

    def _build(self, ci: int, budget: float) -> None:
        rng = np.random.default_rng([self.config.seed, 0, ci])
        cid = self.ids[ci]
        platform = "linkedin" if ci == 4 else ("meta", "google")[ci % 2]
        objective = "lead" if ci % 3 == 0 or platform == "linkedin" else "purchase"
        median_h = float(np.clip(24.0 * math.exp(rng.normal(0.0, 0.2)), 14.0, 40.0))
        rates = tuple(
            float(np.clip(r * math.exp(rng.normal(0, 0.1)), 0.05, 0.95)) for r in STAGE_RATES
        )
        c = _Campaign(
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
            a = _Adset(
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
                self.ads.append(_Ad(f"{aid}_ad{di + 1}", len(self.adsets) - 1))
                a.ads.append(len(self.ads) - 1)
                self.ads[-1].creative = self._new_creative(c, len(self.ads) - 1, 0, rng)

    def _new_creative(self, c: _Campaign, ad: int, day: int, rng: np.random.Generator) -> int:
        c.n_creatives += 1
        ai = self.ads[ad].adset
        self.creatives.append(
            _Creative(
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

    def expected(self, c: _Campaign, budget: float) -> tuple[float, float]:
        """Expected (conversions, clicks) a day at ``budget`` with part-fatigued creatives."""
        conv = clicks = 0.0
        for a in (self.adsets[i] for i in c.adsets):
            cl = a.k * (budget * a.share) ** a.b * a.ctr_base * 0.8
            clicks, conv = clicks + cl, conv + cl * a.cvr
        return conv, clicks

    def _faults(self, name: str, c: _Campaign) -> list[tuple[int, Fault]]:
        faults = enumerate(self.config.faults)
        return [(i, f) for i, f in faults if f.name == name and f.covers(c.id)]

    def _edit(
        self, c: _Campaign, d: int, ts: int, adset: int, fld: str, old: str, new: str
    ) -> None:
        """Plan a human ad-set edit on day ``d``."""
        ch = Change(ts, "adset", self.adsets[adset].id, fld, old, new, "human")
        self.plan_edits.setdefault((c.idx, d), []).append((ch, adset))

    def _plan(self, c: _Campaign) -> None:
        """The campaign's baseline budget plan and edit log, then the world faults."""
        rng = np.random.default_rng([self.config.seed, 3, c.idx])
        n = self.days
        u, z, r2 = rng.random(n), rng.normal(0.0, 0.22, n), rng.uniform(0.88, 1.12, n)
        secs, night = rng.integers(8 * H, 19 * H, n), rng.integers(1 * H, 5 * H, n)
        budget = c.budget
        for d in range(n):
            if d > 0 and u[d] < 1 / 21:
                budget = max(20.0, round(budget * math.exp(z[d]) * (c.budget / budget) ** 0.3))
                self.budget_edit[(c.idx, d)] = (d * DAY + int(secs[d]), "human")
            elif d > 0 and u[d] < 1 / 21 + 1 / 7:
                budget = max(20.0, round(budget * r2[d] * (c.budget / budget) ** 0.2))
                self.budget_edit[(c.idx, d)] = (d * DAY + int(night[d]), "automation")
            self.budget_plan[c.idx, d] = budget
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
                    self._edit(c, d, ts, ai, "targeting", target, new)
                    target = new
                if draws[d, 1]:
                    nb = round(bid * float(ratio[d]), 2)
                    self._edit(c, d, ts + 7, ai, "bid", f"{bid:.2f}", f"{nb:.2f}")
                    bid = nb
                if draws[d, 2]:
                    ns = "cost_cap" if strategy == "lowest_cost" else "lowest_cost"
                    self._edit(c, d, ts + 13, ai, "bid_strategy", strategy, ns)
                    strategy = ns
                if draws[d, 3]:
                    ne = "landing_page_view" if event != "landing_page_view" else c.objective
                    self._edit(c, d, ts + 19, ai, "optimization_event", event, ne)
                    event = ne
            for adi in self.adsets[ai].ads:
                ad = self.ads[adi]
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
                            self.plan_edits.setdefault((c.idx, day), []).append((ch, -1))
                    ad.paused.update(range(d, min(n, d + ln)))
                    d += ln + 1
        self._plan_faults(c)

    def _plan_faults(self, c: _Campaign) -> None:
        n, plan = self.days, self.budget_plan[c.idx]
        for fi, f in self._faults("creative_starvation", c):
            self.starved[c.idx, f.start : f.end + 1] = True
            self.fault_notes[fi].setdefault("blocked_creatives", [])
        for fi, f in self._faults("override_storm", c):
            rng = np.random.default_rng([self.config.seed, 4, c.idx, fi])
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
                        self.budget_edit[(c.idx, d)] = (ts, "human")
                    elif kind == 1:
                        old, new = rng.choice(len(TARGETING), 2, replace=False)
                        self._edit(c, d, ts, ai, "targeting", TARGETING[old], TARGETING[new])
                    else:
                        old_bid, new_bid = rng.uniform(1, 4, 2)
                        self._edit(c, d, ts, ai, "bid", f"{old_bid:.2f}", f"{new_bid:.2f}")
            if f.end + 1 < n:
                self.budget_edit[(c.idx, f.end + 1)] = ((f.end + 1) * DAY + 10 * H, "human")
            self.fault_notes[fi].setdefault("edits", {})[c.id] = count
        for fi, f in self._faults("low_volume", c):
            lo, hi = 1.0, c.budget
            for _ in range(50):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if self.expected(c, mid)[0] < 15.0 / 7.0 else (lo, mid)
            cap = max(5.0, math.floor(lo))
            plan[f.start : f.end + 1] = np.minimum(plan[f.start : f.end + 1], cap)
            for d in (f.start, f.end + 1):
                if d < n:
                    self.budget_edit[(c.idx, d)] = (d * DAY + 9 * H, "human")
            note = self.fault_notes[fi]
            note.setdefault("budget_cap", {})[c.id] = cap
            exp7 = round(7 * self.expected(c, cap)[0], 2)
            note.setdefault("expected_conversions_7d", {})[c.id] = exp7

    # ---- delivery ------------------------------------------------------------------------

    def plan_budgets(self, day: int) -> dict[str, float]:
        """The account's own budget plan for ``day``: campaign id -> USD."""
        return {c.id: float(self.budget_plan[c.idx, day]) for c in self.campaigns}

    def date(self, day: int) -> str:
        """ISO date of day index ``day``."""
        return (self.config.start + dt.timedelta(days=day)).isoformat()

    def _reset(self, adset: int, day: int, actor: str, fld: str) -> None:
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
                    self._reset(ai, day, ch.actor, ch.field)
            self._rotate(c, day, rng, changes)
            self._deliver(c, day, budget, rng, parts)
        return DayEvents(
            day=day,
            spend=_concat(parts["spend"], "spend"),
            clicks=_concat(parts["clicks"], "clicks"),
            conversions=_concat(parts["conversions"], "conversions"),
            crm=_concat(parts["crm"], "crm"),
            changes=sorted(changes, key=lambda ch: (ch.ts, ch.level, ch.entity_id, ch.field)),
            learning={a.id: a.states[-1] for a in self.adsets},
        )

    def _apply_budget(self, c: _Campaign, day: int, budget: float, out: list[Change]) -> None:
        last = self._last_budget[c.idx]
        if last is None:
            launch = Change(day * DAY, "campaign", c.id, "status", "PAUSED", "ACTIVE", "human")
            out.append(launch)  # at midnight UTC, before the first click
            for ai in c.adsets:
                self._reset(ai, day, "human", "status")
        elif budget != last:
            default = (day * DAY + 6 * H + c.idx, "automation")
            ts, actor = self.budget_edit.get((c.idx, day), default)
            out.append(
                Change(ts, "campaign", c.id, "budget", f"{last:.2f}", f"{budget:.2f}", actor)
            )
            if last > 0 and budget > 0 and abs(budget / last - 1.0) > 0.2:
                for ai in c.adsets:
                    self._reset(ai, day, actor, "budget")
        if budget > 0 and self._zero_days[c.idx] >= 7:
            for ai in c.adsets:
                self._reset(ai, day, "human", "status")
        self._zero_days[c.idx] = 0 if budget > 0 else self._zero_days[c.idx] + 1
        self._last_budget[c.idx] = budget

    def _rotate(self, c: _Campaign, day: int, rng: np.random.Generator, out: list[Change]) -> None:
        """Record fatigue onsets; refresh each ad set's fatigued creatives in one batch."""
        for ai in c.adsets:
            a = self.adsets[ai]
            live = [(adi, self.creatives[self.ads[adi].creative]) for adi in a.ads]
            fresh = [cr.fresh(day, a.audience) for _, cr in live]
            for (_, cr), e in zip(live, fresh, strict=True):
                if cr.onset_day is None and e < FATIGUE_ONSET:
                    cr.onset_day = day
            if min(fresh) >= REPLACE_AT or rng.random() >= 0.4:
                continue
            if self.starved[c.idx, day]:
                for fi, f in self._faults("creative_starvation", c):
                    blocked = self.fault_notes[fi]["blocked_creatives"]
                    if f.start <= day <= f.end:
                        due = [
                            cr.id for (_, cr), e in zip(live, fresh, strict=True) if e < REPLACE_AT
                        ]
                        blocked += [x for x in due if x not in blocked]
                continue
            human = rng.random() < 0.3
            hours = (9 * H, 18 * H) if human else (2 * H, 5 * H)
            ts, actor = day * DAY + int(rng.integers(*hours)), ("automation", "human")[human]
            for j, ((adi, cr), e) in enumerate(zip(live, fresh, strict=True)):
                if e < FATIGUE_ONSET:
                    new = self._new_creative(c, adi, day, rng)
                    cr.retire_day, self.ads[adi].creative = day, new
                    ad_id, new_id = self.ads[adi].id, self.creatives[new].id
                    out.append(Change(ts + j, "ad", ad_id, "creative", cr.id, new_id, actor))
            self._reset(ai, day, actor, "creative")

    def _deliver(
        self,
        c: _Campaign,
        day: int,
        budget: float,
        rng: np.random.Generator,
        parts: dict[str, list[dict[str, Arr]]],
    ) -> None:
        rows: list[tuple[int, int, int, int, int, int, int, float]] = []
        per_ad: list[tuple[int, int, int, float]] = []  # ad, ad set, creative, p(convert)
        ad_clicks: list[int] = []
        for ai in c.adsets:
            a = self.adsets[ai]
            a.states.append(a.phase)
            a.conversions.append(0)
            live = [i for i in a.ads if day not in self.ads[i].paused]
            target = budget * a.share
            if target <= 0 or not live:
                continue
            spent = min(target * math.exp(rng.normal(0.0, 0.08)), 1.25 * target)
            crs = [self.ads[i].creative for i in live]
            ectr = np.array(
                [self.creatives[i].fresh(day, a.audience) * self.creatives[i].peak_ctr for i in crs]
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
                self.creatives[crs[j]].cum_imp += float(imp[j])
                if imp[j] > 0 or spend[j] > 0:
                    rows.append(
                        (day, c.idx, ai, adi, crs[j], int(imp[j]), int(clk[j]), float(spend[j]))
                    )
                per_ad.append((adi, ai, crs[j], p))
                ad_clicks.append(int(clk[j]))
        if rows:
            parts["spend"].append(_cols("spend", *zip(*rows, strict=True)))
        n = int(sum(ad_clicks))
        info = np.repeat(np.array(per_ad, dtype=float).reshape(-1, 4), ad_clicks, axis=0)
        ads, adset, creative = (info[:, j].astype(np.int64) for j in range(3))
        p_click = info[:, 3]
        ts = day * DAY + np.searchsorted(HOUR_CDF, rng.random(n), side="right") * H
        ts = ts + rng.integers(0, H, n)
        order = np.argsort(ts, kind="stable")
        ads, adset, creative = ads[order], adset[order], creative[order]
        p_click, ts = p_click[order], ts[order]
        user = np.floor(self.n_users * rng.random(n) ** 1.6).astype(np.int64)
        token = ALPHABET[rng.integers(0, 64, (n, 22))].view("S22").ravel()
        tn = ((c.idx + 1) * 10_000 + day) * 1_000_000 + np.arange(n, dtype=np.int64)
        camp = np.full(n, c.idx)
        parts["clicks"].append(_cols("clicks", tn, camp, adset, ads, creative, ts, user, token))
        hit = rng.random(n) < p_click
        m = int(hit.sum())
        for ai in c.adsets:
            self._learn(ai, day, int(np.count_nonzero(adset[hit] == ai)))
        delay = np.exp(c.delay_mu + c.delay_sigma * rng.normal(0.0, 1.0, m)) * H
        cts = ts[hit] + np.maximum(delay.astype(np.int64), 30)
        value = np.full(m, np.nan)
        if c.objective == "purchase":
            mu = math.log(c.value_mean) - 0.6**2 / 2
            value = np.round(np.exp(mu + 0.6 * rng.normal(0.0, 1.0, m)), 2)
        source = (rng.random(m) >= c.pixel_share).astype(np.int64)
        kind = np.full(m, KIND_NAMES.index(c.objective))
        sel = (tn[hit], camp[hit], adset[hit], ads[hit], creative[hit], user[hit], ts[hit], cts)
        parts["conversions"].append(_cols("conversions", *sel, value, source, kind, token[hit]))
        if c.objective == "lead" and m:
            self._crm(c, rng, tn[hit], user[hit], ts[hit], cts, token[hit], parts)

    def _learn(self, ai: int, day: int, conversions: int) -> None:
        a = self.adsets[ai]
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
        self,
        c: _Campaign,
        rng: np.random.Generator,
        tn: Arr,
        user: Arr,
        click_ts: Arr,
        conv_ts: Arr,
        token: Arr,
        parts: dict[str, list[dict[str, Arr]]],
    ) -> None:
        """Lead -> mql -> sql -> opportunity -> won / lost rows, and won deals as conversions."""
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
                _cols("crm", *(x[s] for x in (tn, camp, s * i, stage_ts[i], user, amount, owner)))
            )
        parts["crm"].append(_concat(rows, "crm"))
        w, no = reached[4], np.full(m, -1)
        source = np.full(m, SOURCE_NAMES.index("crm" if c.platform == "google" else "offline"))
        # a won deal is an offline conversion at the won time, carrying the originating click
        deal = (tn, camp, no, no, no, user, click_ts, times[4], won, source, np.full(m, 2), token)
        parts["conversions"].append(_cols("conversions", *(x[w] for x in deal)))


# ---- simulate: run the account, censor, observe with faults ---------------------------------


@dataclass
class Simulation:
    """A simulated account: its config, the five canonical tables and the ground truth."""

    config: SimulationConfig
    tables: dict[str, pa.Table]
    truth: dict[str, Any]


def _window(f: Fault, ts: Arr, camp: Arr, ids: Sequence[str]) -> Arr:
    inside = (ts >= f.start * DAY) & (ts < (f.end + 1) * DAY)
    return inside if f.campaign == "*" else inside & (camp == ids.index(f.campaign))


def _count(note: dict[str, Any], what: str, table: str, n: int) -> None:
    rows = note.setdefault("rows", {"removed": {}, "changed": {}, "added": {}})
    rows[what][table] = rows[what].get(table, 0) + int(n)


def simulate(config: SimulationConfig) -> Simulation:
    """Simulate the account described by ``config``.

    Runs :meth:`Account.step` over every day at the account's own budget plan, drops every
    event timestamped after the end of the last day (right-censoring, as an export taken then
    would be) and applies the observation faults.

    Parameters
    ----------
    config
        What to simulate.

    Returns
    -------
    Simulation
        ``tables`` keyed by kind, with canonical column names, and a JSON-serialisable
        ``truth``.
    """
    acct = Account(config)
    events = [acct.step(d, acct.plan_budgets(d)) for d in range(config.days)]
    world = {k: _concat([getattr(e, k) for e in events], k) for k in SCHEMAS}
    truth = _truth(acct, world)
    conv, crm = dict(world["conversions"]), dict(world["crm"])
    end, ids = config.days * DAY, acct.ids
    notes = [
        {
            "name": f.name,
            "campaign": f.campaign,
            "campaigns": ids if f.campaign == "*" else [f.campaign],
            "start": f.start,
            "end": f.end,
            "start_date": acct.date(f.start),
            "end_date": acct.date(f.end),
            "rows": {"removed": {}, "changed": {}, "added": {}},
            **acct.fault_notes[i],
        }
        for i, f in enumerate(config.faults)
    ]
    faults = list(enumerate(config.faults))
    for i, f in faults:
        if f.name == "late_offline_conversions":
            m = _window(f, conv["ts"], conv["camp"], ids) & (conv["kind"] == 2)
            delay = np.random.default_rng([config.seed, 2, i]).integers(14 * DAY, 35 * DAY, len(m))
            conv["ts"] = conv["ts"] + m * delay
            _count(notes[i], "changed", "conversions", m.sum())
            notes[i]["delayed_past_end"] = int((m & (conv["ts"] >= end)).sum())
            notes[i]["conversion_ids"] = _conversion_ids(_take(conv, m)).tolist()
    truth["censored"] = {
        "conversions": int((conv["ts"] >= end).sum()),
        "crm": int((crm["ts"] >= end).sum()),
    }
    conv, crm = _take(conv, conv["ts"] < end), _take(crm, crm["ts"] < end)
    for i, f in faults:
        if f.name == "tracking_outage":
            m = _window(f, conv["ts"], conv["camp"], ids) & (conv["source"] <= 1)
            _count(notes[i], "removed", "conversions", m.sum())
            notes[i]["conversion_ids"] = _conversion_ids(_take(conv, m)).tolist()
            conv = _take(conv, ~m)
        elif f.name == "crm_sync_dropout":
            m = _window(f, crm["ts"], crm["camp"], ids)
            _count(notes[i], "removed", "crm", m.sum())
            notes[i]["record_ids"] = sorted(set(f"rec{r}" for r in crm["record"][m]))
            crm = _take(crm, ~m)
            m = _window(f, conv["ts"], conv["camp"], ids) & (conv["source"] >= 2)
            _count(notes[i], "removed", "conversions", m.sum())
            conv = _take(conv, ~m)
    platform = _platform_conversions(acct, world["spend"], conv)
    for i, f in faults:
        rng = np.random.default_rng([config.seed, 2, i])
        if f.name == "duplicate_events":
            share = float(rng.uniform(0.10, 0.20))
            m = _window(f, conv["ts"], conv["camp"], ids) & (rng.random(len(conv["ts"])) < share)
            dup = _take(conv, m)
            dup["ts"] = np.minimum(dup["ts"] + rng.integers(1, 10, len(dup["ts"])), end - 1)
            conv = {k: np.concatenate([conv[k], dup[k]]) for k in conv}
            _count(notes[i], "added", "conversions", len(dup["ts"]))
            notes[i]["share"] = round(share, 4)
            notes[i]["conversion_ids"] = sorted(_conversion_ids(dup).tolist())
        elif f.name == "stage_overwrite":
            crm, records = _overwrite(f, crm, rng, ids, end)
            _count(notes[i], "added", "crm", len(records))
            notes[i]["record_ids"] = [f"rec{r}" for r in records]
        elif f.name in ("override_storm", "low_volume", "creative_starvation"):
            spend = world["spend"]  # delivery changed on these rows
            _count(
                notes[i],
                "changed",
                "spend",
                _window(f, spend["day"] * DAY, spend["camp"], ids).sum(),
            )
    tables = {
        "spend": _spend_table(acct, world["spend"], platform),
        "touchpoints": _touch_table(acct, world["clicks"], notes),
        "conversions": _conversion_table(acct, conv),
        "crm": _crm_table(acct, crm),
        "changes": _changes_table(acct, [ch for e in events for ch in e.changes]),
    }
    for i, f in faults:
        if f.name == "override_storm":
            _count(notes[i], "added", "changes", sum(notes[i]["edits"].values()))
    truth["faults"] = notes
    return Simulation(config, tables, truth)


def _conversion_ids(conv: dict[str, Arr]) -> Arr:
    return np.char.add(np.where(conv["kind"] == 2, "dl", "cv"), conv["tn"].astype(str))


def _overwrite(
    f: Fault, crm: dict[str, Arr], rng: np.random.Generator, ids: Sequence[str], end: int
) -> tuple[dict[str, Arr], list[int]]:
    """Add rows moving ~30% of the records at mql..opportunity backwards inside the window."""
    m = _window(f, crm["ts"], crm["camp"], ids) & (crm["stage"] >= 1) & (crm["stage"] <= 3)
    idx = np.flatnonzero(m)
    idx = idx[np.lexsort((crm["ts"][idx], crm["record"][idx]))]
    pick = idx[np.unique(crm["record"][idx], return_index=True)[1]]
    pick = pick[rng.random(len(pick)) < 0.3]
    limit = min(end, (f.end + 1) * DAY) - 1
    new_ts = np.minimum(crm["ts"][pick] + rng.integers(H, 3 * DAY, len(pick)), limit)
    pick, new_ts = pick[new_ts > crm["ts"][pick]], new_ts[new_ts > crm["ts"][pick]]
    add = _take(crm, pick)
    add["stage"] = np.floor(rng.random(len(pick)) * add["stage"]).astype(np.int64)
    add["ts"], add["amount"] = new_ts, np.full(len(pick), np.nan)
    out = {k: np.concatenate([crm[k], add[k]]) for k in crm}
    return out, sorted(int(r) for r in add["record"])


def _platform_conversions(
    acct: Account, spend: dict[str, Arr], conv: dict[str, Arr]
) -> tuple[Arr, Arr]:
    """Platform-reported conversions and value per spend row.

    The platform counts the recorded pixel/server conversions on their click day, x ~1.12.
    """
    n_ads, size = len(acct.ads), acct.days * len(acct.ads)
    px = conv["source"] <= 1
    key = (conv["click_ts"][px] // DAY) * n_ads + conv["ad"][px]
    count = np.bincount(key, minlength=size)
    value = np.bincount(key, weights=np.nan_to_num(conv["value"][px]), minlength=size)
    row = spend["day"] * n_ads + spend["ad"]
    obs, val = count[row].astype(float), value[row]
    reported = obs + np.floor(
        obs * 0.12 + np.random.default_rng([acct.config.seed, 5]).random(size)[row]
    )
    return reported, np.round(np.where(obs > 0, val * reported / np.maximum(obs, 1), 0.0), 2)


# ---- tables ---------------------------------------------------------------------------------


def _strings(values: Sequence[str], idx: Arr) -> pa.Array:
    idx = np.asarray(idx, dtype=np.int64)
    return pc.take(pa.array(list(values), pa.string()), pa.array(idx, mask=idx < 0))


def _ts(acct: Account, secs: Arr) -> pa.Array:
    base = np.datetime64(acct.config.start.isoformat(), "s")
    return pa.array(base + secs.astype("timedelta64[s]")).cast(pa.timestamp("s", tz="UTC"))


def _ids(prefix: str, nums: Arr) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(nums), pa.string()), "")


def _table(acct: Account, kind: str, c: dict[str, Arr], **given: pa.Array) -> pa.Table:
    """A table of ``kind`` with its columns in contract order.

    ``given`` columns are used as they are; the others are looked up from the index columns
    of ``c`` (camp, adset, ad, creative, user, ts, ...); columns with no source are left out.
    """
    cs, n = acct.campaigns, len(next(iter(c.values())))
    lookup: dict[str, tuple[Sequence[str], str]] = {
        "platform": ([x.platform for x in cs], "camp"),
        "campaign_id": (acct.ids, "camp"),
        "campaign_name": ([x.name for x in cs], "camp"),
        "utm_campaign": ([x.name for x in cs], "camp"),
        "adset_id": ([a.id for a in acct.adsets], "adset"),
        "adset_name": ([a.name for a in acct.adsets], "adset"),
        "ad_id": ([a.id for a in acct.ads], "ad"),
        "ad_name": ([f"{a.id} | auto" for a in acct.ads], "ad"),
        "creative_id": ([x.id for x in acct.creatives], "creative"),
        "utm_content": ([x.id for x in acct.creatives], "creative"),
        "kind": (KIND_NAMES, "kind"),
        "stage": (STAGES, "stage"),
        "owner": (OWNERS, "owner"),
    }
    cols: dict[str, pa.Array] = {}
    for name in KINDS[kind].names:
        if name in given:
            cols[name] = given[name]
        elif name in lookup:
            cols[name] = _strings(lookup[name][0], c[lookup[name][1]])
        elif name in ("ts", "click_ts"):
            cols[name] = _ts(acct, c[name])
        elif name == "user_id":
            cols[name] = _ids("u", 1_000_000 + c["user"])
        elif name == "currency":
            cols[name] = pa.array(np.full(n, "USD"))
        elif name in c:
            cols[name] = pa.array(
                c[name], mask=np.isnan(c[name]) if c[name].dtype == float else None
            )
    return pa.table(cols)


def _click_ids(acct: Account, c: dict[str, Arr]) -> pa.Array:
    prefix = _strings([PLATFORMS[x.platform][3] for x in acct.campaigns], c["camp"])
    return pc.binary_join_element_wise(prefix, pa.array(c["token"]).cast(pa.string()), "")


def _spend_table(acct: Account, s: dict[str, Arr], platform: tuple[Arr, Arr]) -> pa.Table:
    day0 = np.datetime64(acct.config.start.isoformat(), "D")
    date = pa.array(day0 + s["day"].astype("timedelta64[D]"))
    reported = {"platform_conversions": platform[0], "platform_conversion_value": platform[1]}
    return _table(acct, "spend", s | reported, date=date)


def _touch_table(acct: Account, t: dict[str, Arr], notes: list[dict[str, Any]]) -> pa.Table:
    """Touchpoints in time order; ``utm_mess`` swaps in messy utm_source / utm_medium."""
    t = _take(t, np.lexsort((t["tn"], t["ts"])))
    n, cs = len(t["tn"]), acct.campaigns
    pairs = [PLATFORMS[c.platform][:2] for c in cs]
    utm = t["camp"].copy()
    for i, f in enumerate(acct.config.faults):
        if f.name != "utm_mess":
            continue
        rng = np.random.default_rng([acct.config.seed, 2, i])
        hit, pick = _window(f, t["ts"], t["camp"], acct.ids) & (rng.random(n) < 0.35), rng.random(n)
        for c in cs:
            rows = np.flatnonzero(hit & (t["camp"] == c.idx))
            variants = [v.split("/", 1) for v in MESSY_UTM[c.platform].split("|")]
            utm[rows] = len(pairs) + np.floor(pick[rows] * len(variants)).astype(np.int64)
            pairs += [(v[0], v[1]) for v in variants]
        _count(notes[i], "changed", "touchpoints", hit.sum())
        notes[i]["share"] = 0.35
    click_id = _click_ids(acct, t)
    path = [("demo/" if c.objective == "lead" else "shop/") + c.id for c in cs]
    url = pc.binary_join_element_wise(
        "https://www.example.com/",
        _strings(path, t["camp"]),
        "?utm_source=",
        _strings([quote_plus(p[0]) for p in pairs], utm),
        "&utm_medium=",
        _strings([quote_plus(p[1]) for p in pairs], utm),
        "&utm_campaign=",
        _strings([c.name for c in cs], t["camp"]),
        "&utm_content=",
        _strings([x.id for x in acct.creatives], t["creative"]),
        "&",
        _strings([PLATFORMS[c.platform][2] for c in cs], t["camp"]),
        "=",
        click_id,
        "",
    )
    return _table(
        acct,
        "touchpoints",
        t,
        touch_id=_ids("t", t["tn"]),
        click_id=click_id,
        landing_url=url,
        utm_source=_strings([p[0] for p in pairs], utm),
        utm_medium=_strings([p[1] for p in pairs], utm),
    )


def _conversion_table(acct: Account, c: dict[str, Arr]) -> pa.Table:
    """Conversions in time order; only pixel rows carry campaign, ad set and creative."""
    c = _take(c, np.lexsort((c["kind"], c["tn"], c["ts"])))
    hide = {k: np.where(c["source"] == 0, c[k], -1) for k in ("camp", "adset", "creative")}
    ids = pa.array(_conversion_ids(c))
    source = _strings(SOURCE_NAMES, c["source"])
    return _table(
        acct,
        "conversions",
        c | hide,
        conversion_id=ids,
        click_id=_click_ids(acct, c),
        source=source,
    )


def _crm_table(acct: Account, r: dict[str, Arr]) -> pa.Table:
    r = _take(r, np.lexsort((r["stage"], r["record"], r["ts"])))
    src = _strings(
        ["paid_search" if c.platform == "google" else "paid_social" for c in acct.campaigns],
        r["camp"],
    )
    return _table(acct, "crm", r, record_id=_ids("rec", r["record"]), source=src)


def _changes_table(acct: Account, changes: Sequence[Change]) -> pa.Table:
    rows = sorted(changes, key=lambda c: (c.ts, c.level, c.entity_id, c.field, c.new_value))
    names = KINDS["changes"].names
    cols = {k: pa.array([getattr(c, k) for c in rows], pa.string()) for k in names[1:]}
    return pa.table({"ts": _ts(acct, np.array([c.ts for c in rows], dtype=np.int64)), **cols})


# ---- truth and writing ----------------------------------------------------------------------


def _r(x: float, nd: int = 6) -> float:
    return round(float(x), nd)


def _rl(a: Arr, nd: int = 2) -> list[float]:
    return [round(v, nd) for v in np.asarray(a, dtype=float).tolist()]


def _truth(acct: Account, world: dict[str, dict[str, Arr]]) -> dict[str, Any]:
    """Everything the generative model knows.

    Parameters, true daily series, creatives and learning phases; :func:`simulate` adds
    ``censored`` and ``faults``.
    """
    cfg, days, k = acct.config, acct.days, len(acct.campaigns)

    def grid(camp: Arr, day: Arr, weights: Arr | None = None) -> Arr:
        ok = (day >= 0) & (day < days)
        w = None if weights is None else np.nan_to_num(weights[ok])
        return np.bincount(camp[ok] * days + day[ok], weights=w, minlength=k * days).reshape(
            k, days
        )

    s, cv = world["spend"], world["conversions"]
    cols = {"spend": grid(s["camp"], s["day"], s["spend"])}
    cols |= {n: grid(s["camp"], s["day"], s[n].astype(float)) for n in ("impressions", "clicks")}
    for name, vname, m in (
        ("conversions", "value", cv["kind"] <= 1),
        ("deals", "deal_value", cv["kind"] == 2),
    ):
        camp, val = cv["camp"][m], cv["value"][m]
        for by, day in (("click", cv["click_ts"][m] // DAY), ("event", cv["ts"][m] // DAY)):
            cols[f"{name}_by_{by}_date"] = grid(camp, day)
            cols[f"{vname}_by_{by}_date"] = grid(camp, day, val)
    daily = {
        c.id: {"budget": _rl(acct.budget_plan[c.idx])} | {n: _rl(a[c.idx]) for n, a in cols.items()}
        for c in acct.campaigns
    }
    campaigns = {c.id: _campaign_truth(acct, c) for c in acct.campaigns}
    creatives = [
        {
            "creative_id": cr.id,
            "campaign": acct.ids[cr.campaign],
            "adset": acct.adsets[cr.adset].id,
            "ad": acct.ads[cr.ad].id,
            "launch_day": cr.launch_day,
            "retire_day": cr.retire_day,
            "peak_ctr": _r(cr.peak_ctr),
            "fatigue_onset_day": cr.onset_day,
            "decay": {
                "floor": _r(cr.floor, 4),
                "lam_freq": _r(cr.lam_freq, 4),
                "lam_age": _r(cr.lam_age, 5),
                "final_frequency": _r(cr.cum_imp / acct.adsets[cr.adset].audience, 4),
            },
        }
        for cr in sorted(acct.creatives, key=lambda x: (x.campaign, x.launch_day, x.ad))
    ]
    learning = {
        a.id: {
            "campaign": acct.ids[a.campaign],
            "resets": a.resets,
            "states": a.states,
            "conversions": a.conversions,
        }
        for a in acct.adsets
    }
    faults = [
        {"name": f.name, "campaign": f.campaign, "start": f.start, "end": f.end} for f in cfg.faults
    ]
    return {
        "config": {
            "days": days,
            "campaigns": k,
            "seed": cfg.seed,
            "start": cfg.start.isoformat(),
            "end": acct.date(days - 1),
            "faults": faults,
        },
        "model": {
            "response": "impressions = k * spend ** b; clicks ~ Binomial(impressions, ctr)",
            "ctr": "peak * (floor + (1 - floor) * exp(-lam_freq * frequency - lam_age * age_days))",
            "frequency": "cumulative impressions of the creative / audience of its ad set",
            "fatigue_onset": f"first day the expected CTR is below {FATIGUE_ONSET} x peak",
            "replace_below": REPLACE_AT,
            "learning": {
                "threshold": LEARNING_THRESHOLD,
                "window_days": LEARNING_WINDOW,
                "cvr_multiplier": {p: v[0] for p, v in PHASE_CVR.items()},
                "significant": ["budget > 20%", *SIGNIFICANT, "creative", "pause >= 7 days"],
            },
            "delay": "click-to-conversion hours ~ LogNormal(mu, sigma)",
            "ids": "touch tN, conversion cvN, CRM record recN, deal dlN share the click number N",
        },
        "campaigns": campaigns,
        "daily": daily,
        "creatives": creatives,
        "learning": learning,
    }


def _campaign_truth(acct: Account, c: _Campaign) -> dict[str, Any]:
    lead = c.objective == "lead"
    crm = {
        "stage_rates": {s: _r(r, 4) for s, r in zip(FUNNEL[1:], c.stage_rates, strict=True)},
        "lag_median_days": dict(
            zip(("mql", "sql", "opportunity", "won"), STAGE_LAG_DAYS, strict=True)
        ),
        "lag_sigma": 0.8,
        "lost_share": 0.8,
        "lost_lag_median_days": 10.0,
        "amount_mean": _r(c.amount_mean, 2),
        "deal_source": "crm" if c.platform == "google" else "offline",
    }
    adsets = {
        a.id: {
            "name": a.name,
            "budget_share": _r(a.share, 4),
            "cvr": _r(a.cvr),
            "k": _r(a.k, 4),
            "b": _r(a.b, 4),
            "ctr_base": _r(a.ctr_base),
            "audience": _r(a.audience, 1),
            "ads": [acct.ads[i].id for i in a.ads],
        }
        for a in (acct.adsets[i] for i in c.adsets)
    }
    return {
        "name": c.name,
        "platform": c.platform,
        "objective": c.objective,
        "utm_source": PLATFORMS[c.platform][0],
        "utm_medium": PLATFORMS[c.platform][1],
        "baseline_budget": _r(c.budget, 2),
        "pixel_share": _r(c.pixel_share, 4),
        "delay": {
            "mu": _r(c.delay_mu),
            "sigma": _r(c.delay_sigma),
            "median_hours": _r(math.exp(c.delay_mu), 3),
            "mean_hours": _r(math.exp(c.delay_mu + c.delay_sigma**2 / 2), 3),
        },
        "value": None
        if lead
        else {"distribution": "lognormal", "mean": _r(c.value_mean, 2), "sigma": 0.6},
        "crm": crm if lead else None,
        "adsets": adsets,
    }


def _fmt2(arr: pa.Array) -> pa.Array:
    """Format floats with exactly two decimals (nulls stay null)."""
    v = arr.to_numpy(zero_copy_only=False).astype(float)
    cents = np.round(np.nan_to_num(v) * 100).astype(np.int64)
    a = np.abs(cents)
    frac = pc.utf8_lpad(pc.cast(pa.array(a % 100), pa.string()), width=2, padding="0")
    s = pc.binary_join_element_wise(pc.cast(pa.array(a // 100), pa.string()), frac, ".")
    s = pc.if_else(pa.array(cents < 0), pc.binary_join_element_wise("-", s, ""), s)
    return pc.if_else(pa.array(np.isnan(v)), pa.nulls(len(v), pa.string()), s)


def _csv_column(col: pa.ChunkedArray) -> pa.Array:
    arr = col.combine_chunks()
    if pa.types.is_timestamp(arr.type):
        return pc.strftime(arr, format="%Y-%m-%dT%H:%M:%SZ")
    if pa.types.is_floating(arr.type):
        return _fmt2(arr)
    return pc.cast(arr, pa.string())


def write(sim: Simulation, out_dir: Path) -> dict[str, Path]:
    """Write the five tables as canonical CSVs and ``truth.json`` into ``out_dir``.

    Timestamps are written ``YYYY-MM-DDTHH:MM:SSZ``, dates ``YYYY-MM-DD``, money and other
    floats with two decimals, so the same simulation always gives byte-identical files.

    Parameters
    ----------
    sim
        A :func:`simulate` result.
    out_dir
        Folder to write into; created if missing.

    Returns
    -------
    dict
        ``spend``, ``touchpoints``, ``conversions``, ``crm``, ``changes``, ``truth`` -> path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for kind in KINDS:
        table = sim.tables[kind]
        text = pa.table({n: _csv_column(table[n]) for n in table.column_names})
        special = any(
            pc.any(pc.match_substring_regex(text[n], '[",\\r\\n]')).as_py()
            for n in text.column_names
        )
        style = "needed" if special else "none"
        paths[kind] = out / f"{kind}.csv"
        with paths[kind].open("wb") as fh:
            fh.write((",".join(table.column_names) + "\n").encode())
            pcsv.write_csv(text, fh, pcsv.WriteOptions(include_header=False, quoting_style=style))
    paths["truth"] = out / "truth.json"
    paths["truth"].write_text(
        json.dumps(sim.truth, indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    return paths
