"""A seeded generative model of an ad account that writes the five canonical kinds.

The simulator builds an :class:`Account` (campaigns, ad sets, ads, creatives, a user pool, a
baseline budget plan and edit log) from a :class:`SimulationConfig`, delivers it one day at a
time with :meth:`Account.step`, right-censors what has not happened by the end of the last day,
applies observation faults and returns the five tables plus a complete ``truth`` dictionary.

Generative story
----------------
* **Campaigns** ``c01..cK`` alternate meta / google (``c05`` is linkedin when K >= 5). c01 is a
  B2B ``lead`` campaign (CRM path), c02 an e-commerce ``purchase`` campaign; then c03 purchase,
  c04 lead, linkedin lead, and so on. Baseline daily budgets are spread log-uniformly over
  60-800 USD (shuffled) so some ad sets sit well above and some well below 50 conversions per
  7 days. Budgets are campaign level and split over 1-3 ad sets by fixed shares.
* **Delivery**: delivered spend = budget x share x LogNormal(0, 0.08) (at most +25%);
  impressions = k x spend^b x LogNormal(0, 0.05) with b ~ U(0.70, 0.85) (diminishing returns),
  k set so that the baseline budget buys impressions at the platform CPM (meta 9, google 24,
  linkedin 38 USD). Impressions split over the ad set's live ads with weight ~ CTR^2.
* **Creatives / fatigue**: each ad runs one creative at a time. Expected CTR on day d is
  ``peak * (floor + (1 - floor) * exp(-lam_freq * freq - lam_age * age))`` with
  ``freq = cumulative impressions / ad-set audience`` and ``age`` in days. Clicks ~
  Binomial(impressions, CTR x LogNormal(0, 0.1)). **Fatigue onset** is the first day the expected
  CTR (at the start of the day) is below 70% of the peak. Once below 60% the creative is replaced
  with probability 0.4 per day (a ``changes`` row, field ``creative``, actor automation 70% /
  human 30%), except during ``creative_starvation``.
* **Conversions**: each click converts with the ad set's CVR x phase multiplier x a daily
  noise (stable 1.0 / sd 0.08, learning 0.8 / sd 0.3, learning-limited 0.9 / sd 0.2).
  Click-to-conversion delay is LogNormal in hours with median ~24 h (per campaign
  ``exp(N(0, 0.2))`` around it) and sigma ~ U(0.9, 1.2). Purchase values are LogNormal per
  campaign (mean 40-160 USD, sigma 0.6). 75-90% of conversions come from the ``pixel``
  (with campaign_id, adset_id, creative_id), the rest ``server`` (no campaign fields).
  ``spend.platform_conversions`` is the platform's own count on the click day of the recorded
  pixel/server conversions plus ~12% over-count.
* **CRM** (lead campaigns): each lead gets a record with a ``lead`` row a few minutes after the
  conversion, then mql / sql / opportunity / won with rates ~(0.5, 0.5, 0.6, 0.3) and LogNormal
  lags (medians 1.5, 4, 7, 21 days, sigma 0.8): lead-to-won median ~5 weeks, tail to months.
  80% of records that stop early get a ``lost`` row ~10 days (median) after their last stage.
  Won deals also produce a conversion (kind ``deal``, source ``offline`` for meta/linkedin,
  ``crm`` for google) at the won time carrying the originating click_id and click_ts.
* **Edits**: per campaign a human budget edit every ~14 days (ratio LogNormal(0, 0.25), so some
  exceed 20%), a small automation budget rule every ~7 days (< 15%), per ad set human targeting
  (~1/45 days) and bid (~1/60 days) edits, rare bid_strategy / optimization_event edits, and
  platform status pauses of single ads for 1-2 days. An edit timestamped on day d governs all
  of day d's delivery.
* **Learning phase** per ad set: launch (day 0) and every significant edit (budget change > 20%,
  bid, bid_strategy, targeting, creative, optimization_event, un-pausing after >= 7 days) resets
  it to ``learning``; it becomes ``stable`` once 50 conversions (counted on the click day) have
  accrued since the reset within 7 days, else ``learning_limited`` until a 7-day window holds 50.

Faults (see :data:`FAULT_NAMES`): ``creative_starvation``, ``override_storm`` and
``low_volume`` change the world; the others change only what is observed. Everything a fault
did is recorded under ``truth["faults"]``.
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

#: platform -> (utm_source, utm_medium, click-id parameter, click-id prefix)
PLATFORMS: dict[str, tuple[str, str, str, str]] = {
    "meta": ("facebook", "paid_social", "fbclid", "IwAR"),
    "google": ("google", "cpc", "gclid", "Cj0KCQiA"),
    "linkedin": ("linkedin", "paid_social", "li_fat_id", "AQE"),
}
CPM: dict[str, float] = {"meta": 9.0, "google": 24.0, "linkedin": 38.0}
CTR: dict[str, float] = {"meta": 0.013, "google": 0.034, "linkedin": 0.0065}
CVR: dict[str, float] = {
    "meta/lead": 0.07,
    "google/lead": 0.05,
    "linkedin/lead": 0.10,
    "meta/purchase": 0.03,
    "google/purchase": 0.04,
    "linkedin/purchase": 0.02,
}
STAGE_RATES: tuple[float, ...] = (0.5, 0.5, 0.6, 0.3)
STAGE_LAG_DAYS: tuple[float, ...] = (1.5, 4.0, 7.0, 21.0)
STAGES: tuple[str, ...] = (*FUNNEL, "lost")
LEARNING_THRESHOLD = 50
LEARNING_WINDOW = 7
PHASE_CVR: dict[str, tuple[float, float]] = {
    "learning": (0.8, 0.3),
    "learning_limited": (0.9, 0.2),
    "stable": (1.0, 0.08),
}
FATIGUE_ONSET = 0.7
REPLACE_AT = 0.6
KIND_NAMES = ("purchase", "lead", "deal")
SOURCE_NAMES = ("pixel", "server", "offline", "crm")
OWNERS = ("alex.kim", "maria.lopez", "sam.okafor", "jin.chen", "priya.nair", "tom.berg")
HOUR_WEIGHTS = np.array(
    [3, 2.5, 2, 1.5, 1, 0.8, 0.6, 0.6, 0.8, 1.2, 1.6, 2, 2.4, 2.8, 3, 3.2, 3.3, 3.4, 3.5, 3.6]
    + [3.8, 4, 3.8, 3.4],
    dtype=float,
)
HOUR_CDF = np.cumsum(HOUR_WEIGHTS) / HOUR_WEIGHTS.sum()
ALPHABET = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8
)
THEMES = ("demo_requests", "spring_sale", "free_trial", "bestsellers", "webinar", "retargeting")
TARGETING = (
    "age 25-54; interests saas marketing",
    "age 25-54; lookalike 1% customers",
    "age 30-65; job titles marketing managers",
    "broad; advantage+ audience",
    "age 21-44; interests ecommerce shopping",
    "remarketing 30d site visitors",
)
MESSY_UTM: dict[str, tuple[tuple[str, str], ...]] = {
    "meta": (
        ("Facebook", "paid_social"),
        ("FACEBOOK", "paid_social"),
        ("facebook ", "paid_social"),
        ("fb", "paid_social"),
        ("facebook", "paid-social"),
        ("facebook", "Paid Social"),
        ("fb", "social"),
    ),
    "google": (
        ("Google", "cpc"),
        ("GOOGLE", "cpc"),
        ("google ", "cpc"),
        ("adwords", "cpc"),
        ("google", "ppc"),
        ("google", "CPC"),
        ("adwords", "ppc"),
    ),
    "linkedin": (
        ("LinkedIn", "paid_social"),
        ("LINKEDIN", "paid_social"),
        ("linkedin ", "paid_social"),
        ("li", "paid_social"),
        ("linkedin", "paid-social"),
    ),
}


# --------------------------------------------------------------------------------------------
# configuration and faults


@dataclass(frozen=True)
class Fault:
    """One injected fault: ``name`` on ``campaign`` (an id or ``"*"``) for days start..end."""

    name: str
    campaign: str
    start: int
    end: int

    def covers(self, campaign: str) -> bool:
        """Whether the fault applies to ``campaign``."""
        return self.campaign in ("*", campaign)


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate: size, seed, first day and faults."""

    days: int = 90
    campaigns: int = 6
    seed: int = 0
    start: dt.date = dt.date(2026, 1, 1)
    faults: tuple[Fault, ...] = ()


def campaign_ids(n: int) -> list[str]:
    """Return the campaign ids ``c01 .. cNN``.

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
        ``NAME@CAMPAIGN:START-END``; CAMPAIGN is an id (``c02``), a 1-based number (``2``) or
        ``*``; days are 0-based and inclusive; without ``:START-END`` the fault covers the
        whole run and ``START-`` runs to the last day.
    days
        Length of the run, to check the window.
    campaign_ids
        The valid campaign ids.

    Returns
    -------
    Fault

    Raises
    ------
    UsageError
        With what was expected and what was got.

    Examples
    --------
    >>> parse_fault("tracking_outage@c02:60-66", days=90, campaign_ids=["c01", "c02"])
    Fault(name='tracking_outage', campaign='c02', start=60, end=66)
    >>> parse_fault("low_volume@1", days=90, campaign_ids=["c01", "c02"])
    Fault(name='low_volume', campaign='c01', start=0, end=89)
    >>> parse_fault("utm_mess@*:30-", days=90, campaign_ids=["c01"]).end
    89
    """
    form = "NAME@CAMPAIGN[:START-END]"
    text = spec.strip()
    if "@" not in text:
        raise UsageError(f"fault {spec!r}: expected {form} (e.g. tracking_outage@c02:60-66)")
    name, rest = (p.strip() for p in text.split("@", 1))
    if name not in FAULT_NAMES:
        raise UsageError(
            f"fault {spec!r}: unknown fault name {name!r}; expected one of {', '.join(FAULT_NAMES)}"
        )
    camp, _, window = rest.partition(":")
    camp = camp.strip()
    ids = list(campaign_ids)
    if camp == "*":
        cid = "*"
    elif camp in ids:
        cid = camp
    elif camp.isdigit() and 1 <= int(camp) <= len(ids):
        cid = ids[int(camp) - 1]
    else:
        raise UsageError(
            f"fault {spec!r}: unknown campaign {camp!r}; expected *, a number 1-{len(ids)} "
            f"or one of {', '.join(ids)}"
        )
    start, end = 0, days - 1
    window = window.strip()
    if window:
        lo, dash, hi = window.partition("-")
        try:
            start = int(lo)
            end = int(hi) if hi.strip() else (days - 1 if dash else start)
        except ValueError:
            raise UsageError(
                f"fault {spec!r}: expected a day window START-END, START- or START "
                f"(0-based day numbers), got {window!r}"
            ) from None
        if not 0 <= start <= end <= days - 1:
            raise UsageError(
                f"fault {spec!r}: day window {start}-{end} is out of range; expected "
                f"0 <= START <= END <= {days - 1} for a {days}-day run"
            )
    return Fault(name, cid, start, end)


# --------------------------------------------------------------------------------------------
# world state


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

    def expected_ctr(self, day: int, audience: float) -> float:
        x = self.lam_freq * self.cum_imp / audience + self.lam_age * (day - self.launch_day)
        return self.peak_ctr * (self.floor + (1.0 - self.floor) * math.exp(-x))


@dataclass
class _Ad:
    id: str
    adset: int
    creative: int
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
    ads: list[int]
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
    value_sigma: float
    pixel_share: float
    stage_rates: tuple[float, ...]
    amount_mean: float
    adsets: list[int] = field(default_factory=list)
    n_creatives: int = 0


@dataclass(frozen=True)
class Change:
    """One edit-log row (``ts`` in seconds since the start of day 0)."""

    ts: int
    level: str
    entity_id: str
    field: str
    old_value: str
    new_value: str
    actor: str
    adsets: tuple[int, ...] = ()
    significant: bool = False


@dataclass
class DayEvents:
    """What one day of delivery produced (times in seconds since the start of day 0).

    ``conversions`` holds purchases, leads and deals with their true event time, which may be
    after the day (or after the run); ``learning`` maps ad set id to the phase of the day.
    """

    day: int
    spend: dict[str, Arr]
    clicks: dict[str, Arr]
    conversions: dict[str, Arr]
    crm: dict[str, Arr]
    changes: list[Change]
    learning: dict[str, str]


SCHEMAS: dict[str, dict[str, Any]] = {
    "spend": {
        "day": np.int64,
        "camp": np.int64,
        "adset": np.int64,
        "ad": np.int64,
        "creative": np.int64,
        "impressions": np.int64,
        "clicks": np.int64,
        "spend": np.float64,
    },
    "clicks": {
        "tn": np.int64,
        "camp": np.int64,
        "adset": np.int64,
        "ad": np.int64,
        "creative": np.int64,
        "ts": np.int64,
        "user": np.int64,
        "token": "S22",
    },
    "conversions": {
        "tn": np.int64,
        "camp": np.int64,
        "adset": np.int64,
        "ad": np.int64,
        "creative": np.int64,
        "user": np.int64,
        "click_ts": np.int64,
        "ts": np.int64,
        "value": np.float64,
        "source": np.int64,
        "kind": np.int64,
    },
    "crm": {
        "record": np.int64,
        "camp": np.int64,
        "stage": np.int64,
        "ts": np.int64,
        "user": np.int64,
        "amount": np.float64,
        "owner": np.int64,
    },
}


def _concat(parts: Sequence[dict[str, Arr]], kind: str) -> dict[str, Arr]:
    schema = SCHEMAS[kind]
    return {
        k: (np.concatenate([p[k] for p in parts]) if parts else np.empty(0, dtype=t))
        for k, t in schema.items()
    }


def _take(cols: dict[str, Arr], idx: Arr) -> dict[str, Arr]:
    return {k: v[idx] for k, v in cols.items()}


class Account:
    """The simulated ad account: world state built from a config, delivered day by day.

    Parameters
    ----------
    config
        Size, seed, first day and faults. World faults (``creative_starvation``,
        ``override_storm``, ``low_volume``) are built into the plan here.

    Notes
    -----
    Each campaign draws from its own random streams (set-up, and one per day), so a fault on
    one campaign leaves every other campaign's data unchanged.
    """

    def __init__(self, config: SimulationConfig) -> None:
        if config.days < 1:
            raise UsageError(f"days must be at least 1, got {config.days}")
        self.config = config
        self.days = config.days
        self.ids = campaign_ids(config.campaigns)
        self.campaigns: list[_Campaign] = []
        self.adsets: list[_Adset] = []
        self.ads: list[_Ad] = []
        self.creatives: list[_Creative] = []
        k = config.campaigns
        budgets = np.exp(np.linspace(math.log(60.0), math.log(800.0), k))
        budgets = budgets[np.random.default_rng([config.seed, 9]).permutation(k)]
        for ci in range(k):
            self._build_campaign(ci, float(budgets[ci]))
        est_clicks = sum(self._expected(c, c.budget)[1] for c in self.campaigns) * self.days
        self.n_users = max(2_000, int(0.6 * est_clicks))
        self.budget_plan = np.zeros((k, self.days))
        self.budget_edit: dict[tuple[int, int], tuple[int, str]] = {}
        self.plan_edits: dict[tuple[int, int], list[Change]] = {}
        self.starved = np.zeros((k, self.days), dtype=bool)
        self.fault_notes: list[dict[str, Any]] = [{} for _ in config.faults]
        for c in self.campaigns:
            self._plan(c)
        self._last_budget: list[float | None] = [None] * k
        self._zero_days = [0] * k

    # ---- construction ----------------------------------------------------------------------

    def _build_campaign(self, ci: int, budget: float) -> None:
        rng = np.random.default_rng([self.config.seed, 0, ci])
        cid = self.ids[ci]
        platform = "linkedin" if ci == 4 else ("meta" if ci % 2 == 0 else "google")
        objective = "lead" if (ci % 3 == 0 or platform == "linkedin") else "purchase"
        theme = THEMES[ci % len(THEMES)]
        med_h = float(np.clip(24.0 * math.exp(rng.normal(0.0, 0.2)), 14.0, 40.0))
        c = _Campaign(
            idx=ci,
            id=cid,
            name=f"{platform}_{objective}_{theme}_{cid}",
            platform=platform,
            objective=objective,
            budget=round(budget),
            delay_mu=math.log(med_h),
            delay_sigma=float(rng.uniform(0.9, 1.2)),
            value_mean=float(rng.uniform(40.0, 160.0)),
            value_sigma=0.6,
            pixel_share=float(rng.uniform(0.75, 0.9)),
            stage_rates=tuple(
                float(np.clip(r * math.exp(rng.normal(0, 0.1)), 0.05, 0.95)) for r in STAGE_RATES
            ),
            amount_mean=float(rng.uniform(4_000.0, 25_000.0)),
        )
        self.campaigns.append(c)
        n_as = int(rng.integers(1, 4))
        shares = rng.dirichlet(np.full(n_as, 4.0))
        cvr0 = CVR[f"{platform}/{objective}"]
        for ai in range(n_as):
            b = float(rng.uniform(0.70, 0.85))
            base = c.budget * float(shares[ai])
            k = 1000.0 / CPM[platform] * base ** (1.0 - b) * math.exp(rng.normal(0, 0.1))
            n_ads = int(rng.integers(2, 5))
            daily_imp = k * base**b
            a = _Adset(
                id=f"{cid}_as{ai + 1}",
                name=f"{cid}_as{ai + 1} | {('prospecting', 'lookalike', 'retargeting')[ai]}",
                campaign=ci,
                share=float(shares[ai]),
                cvr=cvr0 * math.exp(rng.normal(0.0, 0.2)),
                k=k,
                b=b,
                audience=daily_imp * float(rng.uniform(8.0, 15.0)),
                ctr_base=CTR[platform] * math.exp(rng.normal(0.0, 0.15)),
                ads=[],
            )
            self.adsets.append(a)
            c.adsets.append(len(self.adsets) - 1)
            for di in range(n_ads):
                ad = _Ad(id=f"{a.id}_ad{di + 1}", adset=len(self.adsets) - 1, creative=-1)
                self.ads.append(ad)
                a.ads.append(len(self.ads) - 1)
                ad.creative = self._new_creative(c, len(self.ads) - 1, 0, rng)

    def _new_creative(self, c: _Campaign, ad: int, day: int, rng: np.random.Generator) -> int:
        c.n_creatives += 1
        a = self.adsets[self.ads[ad].adset]
        cr = _Creative(
            id=f"cr_{c.idx + 1}{c.n_creatives:03d}",
            campaign=c.idx,
            adset=self.ads[ad].adset,
            ad=ad,
            launch_day=day,
            peak_ctr=a.ctr_base * math.exp(rng.normal(0.0, 0.25)),
            floor=float(rng.uniform(0.25, 0.45)),
            lam_freq=float(rng.uniform(0.3, 0.8)),
            lam_age=float(rng.uniform(0.005, 0.015)),
        )
        self.creatives.append(cr)
        return len(self.creatives) - 1

    def _expected(self, c: _Campaign, budget: float) -> tuple[float, float]:
        """Expected (conversions, clicks) per day at ``budget`` with fresh creatives."""
        conv = clicks = 0.0
        for ai in c.adsets:
            a = self.adsets[ai]
            cl = a.k * (budget * a.share) ** a.b * a.ctr_base * 0.8
            clicks += cl
            conv += cl * a.cvr
        return conv, clicks

    def _faults(self, name: str, c: _Campaign) -> list[tuple[int, Fault]]:
        return [
            (i, f)
            for i, f in enumerate(self.config.faults)
            if f.name == name and f.covers(c.id) and f.start < self.days
        ]

    def _plan(self, c: _Campaign) -> None:
        """Baseline budget plan and edit log of one campaign, then the world faults."""
        rng = np.random.default_rng([self.config.seed, 3, c.idx])
        n = self.days
        u, z, r2 = rng.random(n), rng.normal(0.0, 0.25, n), rng.uniform(0.88, 1.12, n)
        hours = rng.integers(8 * 3600, 19 * 3600, n)
        night = rng.integers(1 * 3600, 5 * 3600, n)
        budget = c.budget
        for d in range(n):
            if d > 0 and u[d] < 1 / 14:
                budget = max(20.0, round(budget * math.exp(z[d]) * (c.budget / budget) ** 0.3))
                self.budget_edit[(c.idx, d)] = (d * DAY + int(hours[d]), "human")
            elif d > 0 and u[d] < 1 / 14 + 1 / 7:
                budget = max(20.0, round(budget * r2[d] * (c.budget / budget) ** 0.2))
                self.budget_edit[(c.idx, d)] = (d * DAY + int(night[d]), "automation")
            self.budget_plan[c.idx, d] = budget
        for ai in c.adsets:
            a = self.adsets[ai]
            tgt = TARGETING[int(rng.integers(len(TARGETING)))]
            bid = round(float(rng.uniform(1.0, 4.0)), 2)
            strategy = "lowest_cost"
            event = "lead" if c.objective == "lead" else "purchase"
            rates = (1 / 45, 1 / 60, 1 / 200, 1 / 300)
            draws = rng.random((n, 4))
            secs = rng.integers(8 * 3600, 19 * 3600, n)
            for d in range(1, n):
                ts = d * DAY + int(secs[d])
                if draws[d, 0] < rates[0]:
                    new = TARGETING[(TARGETING.index(tgt) + 1 + d % 3) % len(TARGETING)]
                    self._edit(c, d, Change(ts, "adset", a.id, "targeting", tgt, new, "human"))
                    tgt = new
                if draws[d, 1] < rates[1]:
                    nb = round(bid * float(rng.uniform(0.75, 1.3)), 2)
                    self._edit(
                        c,
                        d,
                        Change(ts + 7, "adset", a.id, "bid", f"{bid:.2f}", f"{nb:.2f}", "human"),
                    )
                    bid = nb
                if draws[d, 2] < rates[2]:
                    ns = "cost_cap" if strategy == "lowest_cost" else "lowest_cost"
                    self._edit(
                        c, d, Change(ts + 13, "adset", a.id, "bid_strategy", strategy, ns, "human")
                    )
                    strategy = ns
                if draws[d, 3] < rates[3]:
                    ne = (
                        "landing_page_view"
                        if event != "landing_page_view"
                        else ("lead" if c.objective == "lead" else "purchase")
                    )
                    self._edit(
                        c,
                        d,
                        Change(ts + 19, "adset", a.id, "optimization_event", event, ne, "human"),
                    )
                    event = ne
            for adi in a.ads:
                ad = self.ads[adi]
                pause = rng.random(n) < 1 / 80
                lengths = rng.integers(1, 3, n)
                psec = rng.integers(0, DAY - 3600, n)
                d = 1
                while d < n:
                    if pause[d]:
                        ln = int(lengths[d])
                        self._edit(
                            c,
                            d,
                            Change(
                                d * DAY + int(psec[d]),
                                "ad",
                                ad.id,
                                "status",
                                "ACTIVE",
                                "PAUSED",
                                "platform",
                            ),
                        )
                        ad.paused.update(range(d, min(n, d + ln)))
                        if d + ln < n:
                            self._edit(
                                c,
                                d + ln,
                                Change(
                                    (d + ln) * DAY + int(psec[d]) // 2,
                                    "ad",
                                    ad.id,
                                    "status",
                                    "PAUSED",
                                    "ACTIVE",
                                    "platform",
                                ),
                            )
                        d += ln + 1
                    else:
                        d += 1
        self._plan_faults(c)

    def _plan_faults(self, c: _Campaign) -> None:
        n = self.days
        for fi, f in self._faults("creative_starvation", c):
            self.starved[c.idx, f.start : f.end + 1] = True
            self.fault_notes[fi].setdefault("blocked_creatives", [])
        for fi, f in self._faults("override_storm", c):
            rng = np.random.default_rng([self.config.seed, 4, c.idx, fi])
            base = self.budget_plan[c.idx].copy()
            budget = float(base[f.start])
            count = 0
            for d in range(f.start, f.end + 1):
                for ai in c.adsets:
                    a = self.adsets[ai]
                    for _ in range(int(rng.poisson(3.0 / 7.0))):
                        ts = d * DAY + int(rng.integers(8 * 3600, 20 * 3600))
                        kind = int(rng.integers(3))
                        count += 1
                        if kind == 0:
                            sign = 1.0 if rng.random() < 0.5 else -1.0
                            budget = max(20.0, round(budget * (1 + sign * rng.uniform(0.3, 0.6))))
                            self.budget_edit[(c.idx, d)] = (ts, "human")
                        elif kind == 1:
                            old, new = rng.choice(len(TARGETING), 2, replace=False)
                            self._edit(
                                c,
                                d,
                                Change(
                                    ts,
                                    "adset",
                                    a.id,
                                    "targeting",
                                    TARGETING[old],
                                    TARGETING[new],
                                    "human",
                                ),
                            )
                        else:
                            self._edit(
                                c,
                                d,
                                Change(
                                    ts,
                                    "adset",
                                    a.id,
                                    "bid",
                                    f"{rng.uniform(1, 4):.2f}",
                                    f"{rng.uniform(1, 4):.2f}",
                                    "human",
                                ),
                            )
                self.budget_plan[c.idx, d] = budget
            if f.end + 1 < n:
                self.budget_edit[(c.idx, f.end + 1)] = ((f.end + 1) * DAY + 10 * 3600, "human")
            self.fault_notes[fi].setdefault("edits", {})[c.id] = count
        for fi, f in self._faults("low_volume", c):
            target = 15.0 / 7.0
            lo, hi = 1.0, c.budget
            for _ in range(50):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if self._expected(c, mid)[0] < target else (lo, mid)
            cap = max(5.0, math.floor(lo))
            seg = self.budget_plan[c.idx, f.start : f.end + 1]
            self.budget_plan[c.idx, f.start : f.end + 1] = np.minimum(seg, cap)
            self.budget_edit[(c.idx, f.start)] = (f.start * DAY + 9 * 3600, "human")
            if f.end + 1 < n:
                self.budget_edit[(c.idx, f.end + 1)] = ((f.end + 1) * DAY + 9 * 3600, "human")
            self.fault_notes[fi].setdefault("budget_cap", {})[c.id] = cap
            self.fault_notes[fi].setdefault("expected_conversions_7d", {})[c.id] = round(
                7 * self._expected(c, cap)[0], 2
            )

    def _edit(self, c: _Campaign, day: int, ch: Change) -> None:
        significant = ch.field in ("bid", "bid_strategy", "targeting", "optimization_event")
        adsets = tuple(i for i in c.adsets if self.adsets[i].id == ch.entity_id)
        ch = Change(
            ch.ts,
            ch.level,
            ch.entity_id,
            ch.field,
            ch.old_value,
            ch.new_value,
            ch.actor,
            adsets,
            significant,
        )
        self.plan_edits.setdefault((c.idx, day), []).append(ch)

    # ---- delivery --------------------------------------------------------------------------

    def plan_budgets(self, day: int) -> dict[str, float]:
        """The account's own baseline budget plan for ``day`` (campaign id -> USD)."""
        return {c.id: float(self.budget_plan[c.idx, day]) for c in self.campaigns}

    def _reset(self, adset: int, day: int, actor: str, fld: str) -> None:
        a = self.adsets[adset]
        a.resets.append({"day": day, "date": self._date(day), "actor": actor, "field": fld})
        a.phase, a.reset_day, a.conv_since = "learning", day, 0

    def _date(self, day: int) -> str:
        return (self.config.start + dt.timedelta(days=day)).isoformat()

    def step(self, day: int, budgets: Mapping[str, float]) -> DayEvents:
        """Deliver ``day`` at the given campaign budgets and return what happened.

        Parameters
        ----------
        day
            0-based day index; days must be stepped in order.
        budgets
            Daily budget per campaign id in USD (missing means 0, i.e. paused). A change of
            more than 20% against the previous day is a significant edit (learning reset).

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
            budget = float(budgets.get(c.id, 0.0))
            if budget < 0 or not math.isfinite(budget):
                raise UsageError(f"budget of {c.id} must be a finite number >= 0, got {budget}")
            self._apply_budget(c, day, round(budget, 2), changes)
            for ch in self.plan_edits.get((c.idx, day), []):
                changes.append(ch)
                if ch.significant:
                    for ai in ch.adsets:
                        self._reset(ai, day, ch.actor, ch.field)
            self._rotate(c, day, rng, changes)
            self._deliver(c, day, budget, rng, parts)
        learning = {a.id: a.states[-1] for a in self.adsets}
        return DayEvents(
            day=day,
            spend=_concat(parts["spend"], "spend"),
            clicks=_concat(parts["clicks"], "clicks"),
            conversions=_concat(parts["conversions"], "conversions"),
            crm=_concat(parts["crm"], "crm"),
            changes=sorted(changes, key=lambda ch: (ch.ts, ch.level, ch.entity_id, ch.field)),
            learning=learning,
        )

    def _apply_budget(self, c: _Campaign, day: int, budget: float, out: list[Change]) -> None:
        last = self._last_budget[c.idx]
        if day == 0 and last is None:
            ts = 8 * 3600 + 60 * c.idx
            out.append(Change(ts, "campaign", c.id, "status", "PAUSED", "ACTIVE", "human"))
            for ai in c.adsets:
                self._reset(ai, day, "human", "status")
        elif last is not None and budget != last:
            ts, actor = self.budget_edit.get(
                (c.idx, day), (day * DAY + 6 * 3600 + c.idx, "automation")
            )
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
        """Record fatigue onsets and replace fatigued creatives (unless starved)."""
        starved = bool(self.starved[c.idx, day])
        for ai in c.adsets:
            a = self.adsets[ai]
            for adi in a.ads:
                ad = self.ads[adi]
                cr = self.creatives[ad.creative]
                e = cr.expected_ctr(day, a.audience)
                if cr.onset_day is None and e < FATIGUE_ONSET * cr.peak_ctr:
                    cr.onset_day = day
                draw = rng.random()
                if e >= REPLACE_AT * cr.peak_ctr or draw >= 0.4:
                    continue
                if starved:
                    for fi, f in self._faults("creative_starvation", c):
                        if f.start <= day <= f.end:
                            blocked = self.fault_notes[fi]["blocked_creatives"]
                            if cr.id not in blocked:
                                blocked.append(cr.id)
                    continue
                human = rng.random() < 0.3
                ts = day * DAY + int(
                    rng.integers(9 * 3600, 18 * 3600) if human else rng.integers(2 * 3600, 5 * 3600)
                )
                new = self._new_creative(c, adi, day, rng)
                cr.retire_day = day
                ad.creative = new
                actor = "human" if human else "automation"
                out.append(
                    Change(ts, "ad", ad.id, "creative", cr.id, self.creatives[new].id, actor)
                )
                self._reset(ai, day, actor, "creative")

    def _deliver(
        self,
        c: _Campaign,
        day: int,
        budget: float,
        rng: np.random.Generator,
        parts: dict[str, list[dict[str, Arr]]],
    ) -> None:
        ad_idx: list[int] = []
        ad_clicks: list[int] = []
        ad_p: list[float] = []
        spend_rows: list[tuple[int, int, int, int, int, int, float]] = []
        for ai in c.adsets:
            a = self.adsets[ai]
            a.states.append(a.phase)
            live = [i for i in a.ads if day not in self.ads[i].paused]
            target = budget * a.share
            if target <= 0 or not live:
                a.conversions.append(0)
                continue
            delivered = min(target * math.exp(rng.normal(0.0, 0.08)), 1.25 * target)
            ectr = np.array(
                [self.creatives[self.ads[i].creative].expected_ctr(day, a.audience) for i in live]
            )
            w = (ectr / a.ctr_base) ** 2 * rng.gamma(20.0, 1 / 20.0, len(live))
            w /= w.sum()
            imp_total = a.k * delivered**a.b * math.exp(rng.normal(0.0, 0.05))
            imp = np.floor(imp_total * w + rng.random(len(live))).astype(np.int64)
            spend = np.round(delivered * w, 2)
            ctr = np.minimum(ectr * np.exp(rng.normal(0.0, 0.1, len(live))), 0.5)
            clk = rng.binomial(imp, ctr)
            mult, sd = PHASE_CVR[a.phase]
            p = a.cvr * mult * math.exp(rng.normal(0.0, sd) - sd * sd / 2)
            for j, adi in enumerate(live):
                cr_i = self.ads[adi].creative
                self.creatives[cr_i].cum_imp += float(imp[j])
                if imp[j] > 0 or spend[j] > 0:
                    spend_rows.append(
                        (day, c.idx, ai, adi, cr_i, int(imp[j]), int(clk[j]), float(spend[j]))
                    )
                ad_idx.append(adi)
                ad_clicks.append(int(clk[j]))
                ad_p.append(min(p, 1.0))
            a.conversions.append(0)  # filled below
        if spend_rows:
            cols = list(zip(*spend_rows, strict=True))
            parts["spend"].append(
                {
                    k: np.array(v, dtype=t)
                    for (k, t), v in zip(SCHEMAS["spend"].items(), cols, strict=True)
                }
            )
        n = int(sum(ad_clicks))
        ads = np.repeat(np.array(ad_idx, dtype=np.int64), ad_clicks)
        p = np.repeat(np.array(ad_p), ad_clicks)
        adset = np.array([self.ads[i].adset for i in ads], dtype=np.int64)
        creative = np.array([self.ads[i].creative for i in ads], dtype=np.int64)
        hour = np.searchsorted(HOUR_CDF, rng.random(n), side="right")
        ts = day * DAY + hour * 3600 + rng.integers(0, 3600, n)
        order = np.argsort(ts, kind="stable")
        ads, p, adset, creative, ts = ads[order], p[order], adset[order], creative[order], ts[order]
        user = np.floor(self.n_users * rng.random(n) ** 1.6).astype(np.int64)
        tokens = ALPHABET[rng.integers(0, 64, (n, 22))].view("S22").ravel()
        tn = ((c.idx + 1) * 1_000 + day) * 100_000 + np.arange(n, dtype=np.int64)
        parts["clicks"].append(
            {
                "tn": tn,
                "camp": np.full(n, c.idx),
                "adset": adset,
                "ad": ads,
                "creative": creative,
                "ts": ts,
                "user": user,
                "token": tokens,
            }
        )
        conv = rng.random(n) < p
        m = int(conv.sum())
        for ai in c.adsets:
            self._learn(ai, day, int(np.count_nonzero(adset[conv] == ai)))
        delay = np.exp(c.delay_mu + c.delay_sigma * rng.normal(0.0, 1.0, m)) * 3600.0
        cts = ts[conv] + np.maximum(delay.astype(np.int64), 30)
        if c.objective == "purchase":
            mu = math.log(c.value_mean) - c.value_sigma**2 / 2
            value = np.round(np.exp(mu + c.value_sigma * rng.normal(0.0, 1.0, m)), 2)
        else:
            value = np.full(m, np.nan)
        source = (rng.random(m) >= c.pixel_share).astype(np.int64)
        kind = np.full(m, 0 if c.objective == "purchase" else 1, dtype=np.int64)
        parts["conversions"].append(
            {
                "tn": tn[conv],
                "camp": np.full(m, c.idx),
                "adset": adset[conv],
                "ad": ads[conv],
                "creative": creative[conv],
                "user": user[conv],
                "click_ts": ts[conv],
                "ts": cts,
                "value": value,
                "source": source,
                "kind": kind,
            }
        )
        if c.objective == "lead" and m:
            self._crm(c, rng, tn[conv], user[conv], ts[conv], cts, parts)

    def _learn(self, ai: int, day: int, conversions: int) -> None:
        a = self.adsets[ai]
        a.conversions[-1] = conversions
        a.conv_since += conversions
        if a.phase == "learning":
            if a.conv_since >= LEARNING_THRESHOLD:
                a.phase = "stable"
            elif day - a.reset_day + 1 >= LEARNING_WINDOW:
                a.phase = "learning_limited"
        elif a.phase == "learning_limited" and sum(a.conversions[-LEARNING_WINDOW:]) >= (
            LEARNING_THRESHOLD
        ):
            a.phase = "stable"

    def _crm(
        self,
        c: _Campaign,
        rng: np.random.Generator,
        tn: Arr,
        user: Arr,
        click_ts: Arr,
        conv_ts: Arr,
        parts: dict[str, list[dict[str, Arr]]],
    ) -> None:
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
        lost_ts = times[last, np.arange(m)] + lost_lag.astype(np.int64) + 3600
        amu = math.log(c.amount_mean) - 0.5 * 0.7**2
        opp_amount = np.round(np.exp(amu + 0.7 * rng.normal(0.0, 1.0, m)), -1)
        won_amount = np.round(opp_amount * rng.uniform(0.85, 1.1, m), 0)
        owner = rng.integers(0, len(OWNERS), m)
        rec_parts = []
        for s in range(5):
            sel = np.flatnonzero(reached[s])
            amount = np.full(len(sel), np.nan)
            if s == 3:
                amount = opp_amount[sel]
            elif s == 4:
                amount = won_amount[sel]
            rec_parts.append(
                {
                    "record": tn[sel],
                    "camp": np.full(len(sel), c.idx),
                    "stage": np.full(len(sel), s),
                    "ts": times[s, sel],
                    "user": user[sel],
                    "amount": amount,
                    "owner": owner[sel],
                }
            )
        sel = np.flatnonzero(lost)
        rec_parts.append(
            {
                "record": tn[sel],
                "camp": np.full(len(sel), c.idx),
                "stage": np.full(len(sel), 5),
                "ts": lost_ts[sel],
                "user": user[sel],
                "amount": np.full(len(sel), np.nan),
                "owner": owner[sel],
            }
        )
        parts["crm"].append(_concat(rec_parts, "crm"))
        won = np.flatnonzero(reached[4])
        w = len(won)
        parts["conversions"].append(
            {
                "tn": tn[won],
                "camp": np.full(w, c.idx),
                "adset": np.full(w, -1),
                "ad": np.full(w, -1),
                "creative": np.full(w, -1),
                "user": user[won],
                "click_ts": click_ts[won],
                "ts": times[4, won] + rng.integers(600, 6 * 3600, w),
                "value": won_amount[won],
                "source": np.full(w, 3 if c.platform == "google" else 2),
                "kind": np.full(w, 2),
            }
        )
