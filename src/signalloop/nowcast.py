"""Nowcast: the conversions and value that recent cohorts will still receive.

A click made yesterday has not had time to convert, so yesterday's CPA reads worse than it is.
:func:`nowcast` fits the delay from click to conversion (and, for the CRM, from lead to won
deal) with right-censoring (:mod:`signalloop.delay`), and for every campaign and cohort day
(the click day; the lead day for the CRM) estimates the eventual conversions and value, with
an interval, and the CPA and ROAS both as observed so far and as nowcast.

How
---
1. **Data, in ibis over the workspace cut at the as-of day** (as
   :class:`~signalloop.checks.base.CheckContext` cuts it): clicks (touchpoints with a campaign)
   counted by (campaign, click day, elapsed hour at the cut); click-path conversions (every
   kind but the CRM's downstream ones: ``mql``, ``sql``, ``opportunity``, ``won``, ``deal``,
   ``lost``; the first conversion of each click) by (campaign, click day, elapsed hour) and,
   for fitting, by (campaign, delay hour). A conversion's campaign and click time follow the
   contract's attribution rule (its ``campaign_id`` and ``click_ts``, else the touchpoint with
   its ``click_id``, else the user's last touchpoint before it; as
   :func:`~signalloop.attribution.attributed_conversions`). Conversions with no click time, or
   of a campaign without touchpoints, are counted as ``unlinked_conversions``, not nowcast.
   Unconverted clicks per bucket = clicks - converted clicks. The CRM path counts records
   (campaign as :func:`~signalloop.attribution.crm_record_campaigns`) by (campaign, lead day,
   age in days) and their ``won`` / ``lost`` delays.
2. **Exclusions.** Cohort days inside a stored exclusion window of their campaign
   (:func:`~signalloop.checks.engine.without_exclusions`), and the ``guard_days`` before it
   (clicks whose conversions were due inside the outage), are left out of fitting. Cohorts in
   a window are flagged ``excluded``, earlier cohorts whose follow-up overlaps one
   ``exclusion_overlap``. Conversions that fell inside a window were never observed, so for
   every cohort the nowcast adds the conversions the model expects inside the window
   (``sum n_all * (I(e - w_end) - I(e - w_start))``, ``I`` the incidence, ``e`` the elapsed
   time, ``w`` the window's start and end counted back from the cut) and does not count them
   as expected-but-missing when it compares observed with expected (step 5).
3. **Delay model** (default ``lognormal_cure``; the CRM one with ``lost`` as a competing
   terminal outcome), pooled per campaign toward the account.
4. **Per cohort**, from the buckets of still-open subjects, ``B = sum n_open * P(converts
   later | open at e)`` (the model's :meth:`~signalloop.delay.DelayModel.future_probability`
   at each bucket's elapsed time) and ``A = sum n_all * P(converted by e)`` (what the model
   expected to be observed by now).
5. **Cohort-level variation.** Real cohorts vary more than Bernoulli trials with one
   probability (learning phases, daily noise). Each cohort's rate is the campaign's times
   ``g ~ Gamma(1/phi, 1/phi)`` (mean 1, variance ``phi``), with ``phi`` estimated by moments
   from the fitted cohorts: ``phi = sum((k - A)^2 - A) / sum(A^2)``. Given the ``k`` conversions
   already observed, ``g | k ~ Gamma(1/phi + k, 1/phi + A)``, so the expected additional
   conversions are ``B (1/phi + k) / (1/phi + A)``: a cohort converting faster than the model
   expects is nowcast higher.
6. **Interval** by Monte Carlo over ``draws`` draws: the delay parameters from their
   posterior (parameter uncertainty), ``g`` from its posterior (cohort variation) and the
   additional conversions ~ Binomial(n_open, g B / n_open) (the Bernoulli sum). The interval
   holds ``level`` of the draws of observed + additional, in whole numbers, built so that it
   covers ``level`` of the time rather than more (see :func:`count_interval`). Sums over a
   campaign's days add the draws, so they keep the correlation of shared parameters.
7. **Value** = observed value + expected additional conversions x the campaign's mean value
   per conversion (its draws add the per-conversion spread). **CPA** = spend / conversions
   and **ROAS** = value / spend, each observed and nowcast, per cohort (spend of that day) and
   per campaign (all days and the last 7 and 28 days).

>>> from signalloop.store import Workspace
>>> nowcast(Workspace(":memory:")).to_dict()["cohorts"]
[]
"""

from __future__ import annotations

import json
import math
import time
from calendar import timegm
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import ibis
import numpy as np
import numpy.typing as npt
import pandas as pd

from signalloop.checks.base import default_as_of
from signalloop.checks.engine import load_exclusions, without_exclusions
from signalloop.config import Settings
from signalloop.delay import DelayData, DelayModel, LogNormalCure, make_delay_model
from signalloop.store import Workspace

FloatArray = npt.NDArray[np.float64]

__all__ = ["NowcastOptions", "NowcastReport", "count_interval", "nowcast", "shortest_interval"]

HOUR, DAY = 3600, 86_400
#: Floor of the between-campaign spread of the CRM model (logit p, mu, log sigma)
CRM_MIN_SCALE: tuple[float, float, float] = (0.3, 0.15, 0.1)
#: CRM kinds that are not a click's own conversion (besides the funnel stages after the first)
DOWNSTREAM_KINDS: tuple[str, ...] = ("deal", "lost")


@dataclass(frozen=True)
class NowcastOptions:
    """How :func:`nowcast` estimates; every field has a working default.

    Attributes
    ----------
    model, crm_model
        Delay model names (:data:`signalloop.delay.DELAY_MODELS`) of the click path and of
        the CRM path.
    model_params, crm_model_params
        Their constructor arguments (``random_state`` comes from ``random_state``; the CRM
        model always gets ``competing=True``). ``crm_model_params=None`` means
        ``{"min_scale": CRM_MIN_SCALE}`` for ``lognormal_cure``: an account has few lead
        campaigns with few deals each, too few for the moment estimate of how much their
        deal rates differ, which then comes out near zero and pools them completely; the
        floor keeps about 30% of spread in the deal rate (``logit p``). ``{"shift": True}``
        (a three-parameter lognormal) removes most of the lognormal's bias on a sum of stage
        lags, but with ~100 deals it can run away into a long tail (see BENCHMARKS.md).
    level
        Interval level.
    draws
        Monte Carlo draws per campaign.
    random_state
        Seed of every draw.
    overdispersion
        Estimate the cohort-level variation ``phi`` (else every cohort has exactly the
        campaign's rate).
    guard_days, crm_guard_days
        Cohort days before an exclusion window also left out of fitting (their conversions
        were due inside the window).
    conversion_kinds
        Conversion kinds of the click path; ``None`` means every kind except the CRM's
        downstream stages (``mql`` ... ``won``, ``deal``, ``lost``).
    cohort_days
        Report only the last N cohort days (all are computed); ``None`` reports all.
    windows
        Trailing windows (days) of the per-campaign CPA and ROAS.
    crm
        Also nowcast the CRM path (lead to won deal).
    """

    model: str = "lognormal_cure"
    crm_model: str = "lognormal_cure"
    model_params: Mapping[str, Any] = field(default_factory=dict)
    crm_model_params: Mapping[str, Any] | None = None
    level: float = 0.9
    draws: int = 1000
    random_state: int = 0
    overdispersion: bool = True
    guard_days: int = 3
    crm_guard_days: int = 30
    conversion_kinds: tuple[str, ...] | None = None
    cohort_days: int | None = None
    windows: tuple[int, ...] = (7, 28)
    crm: bool = True


@dataclass
class NowcastReport:
    """The nowcast as of a day: delay fits, cohorts, campaigns, and the CRM path.

    ``cohorts`` and ``campaigns`` are lists of JSON-ready dicts (see :func:`nowcast`).
    """

    as_of: date | None
    level: float
    delay: dict[str, dict[str, Any]]
    cohorts: list[dict[str, Any]]
    campaigns: list[dict[str, Any]]
    crm: dict[str, Any]
    account: dict[str, Any] = field(default_factory=dict)
    exclusions: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: ``as_of``, ``delay``, ``cohorts``, ``campaigns``, ``crm``, ..."""
        return {
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "level": self.level,
            "delay": self.delay,
            "cohorts": self.cohorts,
            "campaigns": self.campaigns,
            "crm": self.crm,
            "account": self.account,
            "exclusions": self.exclusions,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, default=str, allow_nan=False)

    def to_text(self, days: int = 7) -> str:
        """A plain-text summary: per campaign the last ``days`` days, observed vs nowcast."""
        lines = [f"nowcast as of {self.as_of} ({round(self.level * 100)}% intervals)"]
        for c in self.campaigns:
            w = c["windows"].get(f"{days}d", c)
            lines.append(
                f"  {c['campaign_id']}: last {days}d conversions {w['observed_conversions']}"
                f" observed, {w['expected_conversions']} nowcast [{w['lower']}, {w['upper']}];"
                f" CPA {w['observed_cpa']} -> {w['nowcast_cpa']};"
                f" ROAS {w['observed_roas']} -> {w['nowcast_roas']}"
            )
        for c in self.crm.get("campaigns", []):
            lines.append(
                f"  {c['campaign_id']} (CRM): deals {c['observed_deals']} observed, "
                f"{c['expected_deals']} nowcast [{c['lower']}, {c['upper']}]"
            )
        return "\n".join(lines)


# ---- small helpers ------------------------------------------------------------------------


def shortest_interval(samples: FloatArray, level: float) -> tuple[FloatArray, FloatArray]:
    """The shortest interval holding ``level`` of the draws, per column.

    >>> lo, hi = shortest_interval(np.arange(100.0)[:, None], 0.9)
    >>> float(hi[0] - lo[0])
    89.0
    """
    s = np.sort(np.asarray(samples, dtype=float), axis=0)
    n = s.shape[0]
    m = min(max(math.ceil(level * n), 1), n)
    width = s[m - 1 :] - s[: n - m + 1]
    start = np.argmin(width, axis=0)[None, :]
    lo = np.take_along_axis(s, start, axis=0)[0]
    hi = np.take_along_axis(s, start + m - 1, axis=0)[0]
    return lo, hi


def count_interval(
    samples: FloatArray, level: float, rng: np.random.Generator, floor: FloatArray | None = None
) -> tuple[FloatArray, FloatArray]:
    """A ``level`` interval of integer-valued draws (one column per count), in whole numbers.

    A count has no exact 5% or 95% point: an interval of whole numbers built from plain
    quantiles covers more than asked (a cohort with 0.3 conversions still to come gets
    ``[k, k + 2]``, 99% sure). So each draw is spread uniformly over ``[x - 1/2, x + 1/2)``
    (the randomised quantiles of a count; Czado, Gneiting and Held 2009), the shortest
    interval holding ``level`` of that continuous spread is taken, and the whole numbers in it
    are the interval: over many cohorts it covers the truth ``level`` of the time. Shortest
    rather than equal-tailed, because the count cannot fall below what is already observed:
    a cohort that is nearly complete has its mass at the bottom, and an equal-tailed interval
    would put a 5% tail where no outcome can be. ``floor`` (the observed count) bounds the
    lower end.

    >>> s = np.repeat([[0.0], [1.0], [2.0]], [70, 25, 5], axis=0)
    >>> lo, hi = count_interval(s, 0.9, np.random.default_rng(0))
    >>> float(lo[0]), float(hi[0])
    (0.0, 1.0)
    """
    y = np.asarray(samples, dtype=float) + rng.uniform(-0.5, 0.5, np.shape(samples))
    a, b = shortest_interval(y, level)
    lo, hi = np.ceil(a) + 0.0, np.floor(b) + 0.0  # + 0.0: no -0.0
    empty = hi < lo
    mid = np.round((a + b) / 2)
    lo, hi = np.where(empty, mid, lo), np.where(empty, mid, hi)
    if floor is not None:
        lo = np.maximum(lo, floor)
        hi = np.maximum(hi, lo)
    return lo, hi


def _r(x: float | None, nd: int = 2) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), nd)


def _ratio(num: float, den: float, nd: int = 2) -> float | None:
    return _r(num / den, nd) if den > 0 else None


def _epoch(d: datetime) -> int:
    return timegm(d.timetuple())


def _downstream_kinds(settings: Settings) -> tuple[str, ...]:
    return (*settings.funnel[1:], *DOWNSTREAM_KINDS)


def _learnable(ws: Workspace, t: Any, day: str, guard: int) -> Any:
    """``t`` without exclusion windows of its campaign, nor the ``guard`` days before them."""
    t = without_exclusions(ws, t, "campaign_id", t[day])
    if guard > 0 and "exclusions" in ws.ibis.list_tables():
        ex = ws.table("exclusions").view()  # a second reference: no self-join ambiguity
        far = ibis.literal(date(9999, 12, 31))
        t = t.anti_join(
            ex,
            [
                ex.campaign_id == t.campaign_id,
                (ex.start - ibis.interval(days=guard)) <= t[day],
                ex["end"].fill_null(far) >= t[day],
            ],
        )
    return t


def _fetch(expr: Any) -> pd.DataFrame:
    df: pd.DataFrame = expr.to_pyarrow().to_pandas()
    return df


class _Source:
    """The workspace cut at the end of the as-of day (as :class:`CheckContext` cuts it).

    Table expressions are looked up once per run (each lookup asks DuckDB for the schema).
    """

    def __init__(self, ws: Workspace, as_of: date) -> None:
        self.ws = ws
        self.as_of = as_of
        self.cutoff = datetime.combine(as_of + timedelta(days=1), datetime.min.time())
        self.epoch = _epoch(self.cutoff)
        self._tables: dict[str, Any] = {}
        self._cached: list[Any] = []

    def table(self, name: str) -> Any:
        if name not in self._tables:
            t = self.ws.table(name)
            if name == "spend":
                t = t.filter(t.date <= self.as_of)
            elif "ts" in t.columns:
                t = t.filter(t.ts < self.cutoff)
            self._tables[name] = t
        return self._tables[name]

    def cache(self, expr: Any) -> Any:
        """``expr`` computed once into a temporary table (dropped by :meth:`release`)."""
        cached = expr.cache()
        self._cached.append(cached)
        return cached

    def release(self) -> None:
        """Drop the temporary tables of :meth:`cache`."""
        for t in self._cached:
            release = getattr(t, "release", None)
            if release is not None:
                release()
        self._cached.clear()

    def elapsed(self, ts: Any, unit: int) -> Any:
        """Whole ``unit`` seconds from ``ts`` to the cut, as an ibis expression."""
        return ((self.epoch - ts.epoch_seconds()) / unit).floor().cast("int64")


# ---- the data (ibis) ------------------------------------------------------------------------


@dataclass
class _Path:
    """One path's small inputs: cohorts, their buckets, the fitting data, values."""

    unit: str
    groups: list[str]
    #: per cohort: campaign_id, date, subjects, observed, observed_value (+ path extras)
    cohorts: pd.DataFrame
    #: per bucket: cohort (row in cohorts), t (elapsed, mid), n_all, n_open
    buckets: pd.DataFrame
    data: DelayData
    #: per group: mean and sd of the value of one conversion
    value_mean: FloatArray
    value_sd: FloatArray
    learnable: npt.NDArray[np.bool_]
    extra: dict[str, Any] = field(default_factory=dict)
    #: campaign -> exclusion windows as (start, end) in the path's unit before the cut
    gaps: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def _value_stats(groups: list[str], df: pd.DataFrame) -> tuple[FloatArray, FloatArray]:
    """Mean and sd of the value of one conversion per group (no value counts as 0).

    A group without fitted conversions gets the account's.
    """
    g = df.groupby("campaign_id")[["n", "vs", "vss"]].sum()
    g = g.reindex(groups).fillna(0.0)
    tot = g.sum()
    acct_mean = float(tot.vs / tot.n) if tot.n > 0 else 0.0
    acct_var = float(tot.vss / tot.n - acct_mean**2) if tot.n > 0 else 0.0
    n = g.n.to_numpy(float)
    mean = np.where(n > 0, g.vs.to_numpy(float) / np.maximum(n, 1), acct_mean)
    var = np.where(n > 0, g.vss.to_numpy(float) / np.maximum(n, 1) - mean**2, acct_var)
    return mean, np.sqrt(np.maximum(var, 0.0))


def _keys_learnable(ws: Workspace, keys: pd.DataFrame, guard: int) -> npt.NDArray[np.bool_]:
    """Whether each (campaign_id, date) of ``keys`` is outside the exclusions and guards."""
    if keys.empty or "exclusions" not in ws.ibis.list_tables():
        return np.ones(len(keys), dtype=bool)
    mem = ibis.memtable(
        pd.DataFrame({"campaign_id": keys.campaign_id.astype(str), "day": keys.date}),
        schema={"campaign_id": "string", "day": "date"},
    )
    ok = _fetch(_learnable(ws, mem, "day", guard))
    allowed = set(zip(ok.campaign_id, ok.day, strict=True))
    return np.array(
        [(c, d) in allowed for c, d in zip(keys.campaign_id, keys.date, strict=True)], dtype=bool
    )


def _link_clicks(src: _Source, conv: Any) -> Any:
    """Each conversion's campaign and click time, by the contract's attribution rule.

    The campaign is the conversion's ``campaign_id``, else that of the touchpoint with its
    ``click_id``, else that of the user's last touchpoint at or before it (as
    :func:`~signalloop.attribution.attributed_conversions`); the click time is ``click_ts``,
    else that touchpoint's time. The user join runs only for the conversions the first two
    rules leave open. Returns ``(key, campaign_id, click, ts, value, user_id)``; ``key``
    identifies the click (``click_id``, else the conversion).
    """
    tp = src.table("touchpoints")
    clicks = (
        tp.filter(tp.click_id.notnull() & tp.campaign_id.notnull())
        .group_by(t_click_id=tp.click_id)
        .aggregate(t_campaign=tp.campaign_id.argmin(tp.ts), t_click=tp.ts.min())
    )
    j = conv.left_join(clicks, conv.click_id == clicks.t_click_id)
    j = j.select(
        conversion_id=j.conversion_id,
        user_id=j.user_id,
        key=ibis.coalesce(j.click_id, j.conversion_id),
        campaign_id=ibis.coalesce(j.campaign_id, j.t_campaign),
        click=ibis.coalesce(j.click_ts, j.t_click),
        ts=j.ts,
        value=j.value,
    )
    done = j.filter(j.campaign_id.notnull() & j.click.notnull())
    rest = j.filter(j.campaign_id.isnull() | j.click.isnull())
    touches = tp.filter(tp.user_id.notnull() & tp.campaign_id.notnull()).select(
        u_user=tp.user_id, u_ts=tp.ts, u_campaign=tp.campaign_id
    )
    last = (
        rest.join(touches, (rest.user_id == touches.u_user) & (touches.u_ts <= rest.ts))
        .group_by(u_conversion_id="conversion_id")
        .aggregate(u_campaign=touches.u_campaign.argmax(touches.u_ts), u_ts=touches.u_ts.max())
    )
    r = rest.left_join(last, rest.conversion_id == last.u_conversion_id)
    r = r.select(
        key=r.key,
        campaign_id=ibis.coalesce(r.campaign_id, r.u_campaign),
        click=ibis.coalesce(r.click, r.u_ts),
        ts=r.ts,
        value=r.value,
        user_id=r.user_id,
    )
    return done.select("key", "campaign_id", "click", "ts", "value", "user_id").union(r)


def _click_path(src: _Source, settings: Settings, opts: NowcastOptions) -> tuple[_Path, Any]:
    """The click path's cohorts, buckets and fitting data; also the linked conversions."""
    tp = src.table("touchpoints")
    tp = tp.filter(tp.campaign_id.notnull())
    clicks = _fetch(
        tp.group_by(
            campaign_id=tp.campaign_id, date=tp.ts.date(), eh=src.elapsed(tp.ts, HOUR)
        ).aggregate(n_all=tp.count())
    )
    conv = src.table("conversions")
    if opts.conversion_kinds is not None:
        conv = conv.filter(conv.kind.isin(list(opts.conversion_kinds)))
    else:
        conv = conv.filter(~conv.kind.isin(list(_downstream_kinds(settings))))
    linked = src.cache(_link_clicks(src, conv))
    nolink = linked.filter(linked.campaign_id.isnull() | linked.click.isnull())
    unlinked = _fetch(nolink.group_by("campaign_id").aggregate(n=nolink.count()))
    j = linked.filter(linked.campaign_id.notnull() & linked.click.notnull())
    j = j.filter(j.click < src.cutoff)
    first = j.group_by("key").aggregate(
        campaign_id=j.campaign_id.argmin(j.ts),
        click=j.click.min(),
        ts=j.ts.min(),
        value=j.value.argmin(j.ts),
    )
    first = first.mutate(
        date=first.click.date(),
        eh=src.elapsed(first.click, HOUR),
        dh=((first.ts.epoch_seconds() - first.click.epoch_seconds()) / HOUR)
        .floor()
        .clip(lower=0)
        .cast("int64"),
    )
    conv_b = _fetch(
        first.group_by("campaign_id", "date", "eh").aggregate(
            n_obs=first.count(), value=first.value.sum()
        )
    )
    fit = _learnable(src.ws, first, "date", opts.guard_days)
    fit_ev = _fetch(
        fit.group_by("campaign_id", bucket=fit.dh).aggregate(
            n=fit.count(),
            vs=fit.value.sum(),
            vss=(fit.value * fit.value).sum(),
        )
    )
    # a campaign without touchpoints has no clicks to put its conversions on (every "click"
    # would have converted): its conversions are counted as unlinked, not nowcast
    unlinked_n = {
        str(c): int(n)
        for c, n in zip(unlinked.campaign_id, unlinked.n, strict=True)
        if isinstance(c, str)
    }
    unattributed = int(unlinked[unlinked.campaign_id.isna()].n.sum())
    known = set(clicks.campaign_id)
    for cid, n in (
        conv_b[~conv_b.campaign_id.isin(known)].groupby("campaign_id").n_obs.sum().items()
    ):
        unlinked_n[str(cid)] = unlinked_n.get(str(cid), 0) + int(n)
    path = _assemble(
        src.ws,
        unit="hours",
        subjects=clicks,
        events=conv_b[conv_b.campaign_id.isin(known)],
        fit_events=fit_ev[fit_ev.campaign_id.isin(known)],
        fit_competing=None,
        guard=opts.guard_days,
        extra={"unlinked": unlinked_n, "unattributed": unattributed},
    )
    return path, linked


def _record_campaigns(src: _Source, crm: Any, linked: Any) -> Any:
    """Each CRM record's campaign and start (the rule of :func:`crm_record_campaigns`).

    The campaign of the user's latest linked conversion up to an hour after the record began,
    else the user's last touchpoint before it; computed from the conversions already linked
    for the click path (the same attribution rule, without attributing every conversion
    again). Returns ``(record_id, campaign_id, first_ts)``. See
    :func:`signalloop.attribution.crm_record_campaigns`.
    """
    rec = crm.group_by("record_id").aggregate(
        user_id=crm.user_id.arbitrary(), first_ts=crm.ts.min()
    )
    leads = linked.filter(linked.user_id.notnull() & linked.campaign_id.notnull()).select(
        c_user=linked.user_id, c_ts=linked.ts, c_campaign=linked.campaign_id
    )
    by_lead = (
        rec.join(
            leads,
            (rec.user_id == leads.c_user) & (leads.c_ts <= rec.first_ts + ibis.interval(hours=1)),
        )
        .group_by(l_record_id="record_id")
        .aggregate(lead_campaign=leads.c_campaign.argmax(leads.c_ts))
    )
    tp = src.table("touchpoints")
    touches = tp.filter(tp.user_id.notnull() & tp.campaign_id.notnull()).select(
        t_user=tp.user_id, t_ts=tp.ts, t_campaign=tp.campaign_id
    )
    by_touch = (
        rec.join(touches, (rec.user_id == touches.t_user) & (touches.t_ts <= rec.first_ts))
        .group_by(t_record_id="record_id")
        .aggregate(touch_campaign=touches.t_campaign.argmax(touches.t_ts))
    )
    j = rec.left_join(by_lead, rec.record_id == by_lead.l_record_id).left_join(
        by_touch, rec.record_id == by_touch.t_record_id
    )
    return j.select(
        record_id=j.record_id,
        campaign_id=ibis.coalesce(j.lead_campaign, j.touch_campaign),
        first_ts=j.first_ts,
    )


def _crm_path(src: _Source, settings: Settings, opts: NowcastOptions, linked: Any) -> _Path:
    """The CRM path (lead to won deal, ``lost`` competing) by lead day and age in days."""
    won_stage = settings.funnel[-1]
    crm = src.table("crm")
    rec = crm.group_by(s_record_id=crm.record_id).aggregate(
        won_ts=crm.ts.min(where=crm.stage == won_stage),
        lost_ts=crm.ts.min(where=crm.stage == "lost"),
        amount=crm.amount.max(where=crm.stage == won_stage),
    )
    camp = _record_campaigns(src, crm, linked)
    r = camp.join(rec, camp.record_id == rec.s_record_id)
    status = ibis.cases((r.won_ts.notnull(), "won"), (r.lost_ts.notnull(), "lost"), else_="open")
    end = ibis.coalesce(r.won_ts, r.lost_ts)
    r = r.mutate(
        date=r.first_ts.date(),
        status=status,
        age=src.elapsed(r.first_ts, DAY),
        delay=((end.epoch_seconds() - r.first_ts.epoch_seconds()) / DAY)
        .floor()
        .clip(lower=0)
        .cast("int64"),
        won=(r.won_ts.notnull()).cast("int64"),
        lost=(r.won_ts.isnull() & r.lost_ts.notnull()).cast("int64"),
    )
    r = src.cache(r)
    by_age = _fetch(
        r.group_by("campaign_id", "date", eh=r.age).aggregate(
            n_all=r.count(),
            n_closed=r.lost.sum(),
            n_obs=r.won.sum(),
            value=r.amount.sum(),
        )
    )
    unattributed = int(by_age[by_age.campaign_id.isna()].n_all.sum())
    by_age = by_age[by_age.campaign_id.notna()]
    fit = _learnable(src.ws, r.filter(r.campaign_id.notnull()), "date", opts.crm_guard_days)
    fit = fit.filter(fit.status != "open")
    fit_b = _fetch(
        fit.group_by("campaign_id", "status", bucket=fit.delay).aggregate(
            n=fit.count(),
            vs=fit.amount.sum(),
            vss=(fit.amount * fit.amount).sum(),
        )
    )
    return _assemble(
        src.ws,
        unit="days",
        subjects=by_age[["campaign_id", "date", "eh", "n_all", "n_closed"]],
        events=by_age[["campaign_id", "date", "eh", "n_obs", "value"]],
        fit_events=fit_b[fit_b.status == "won"],
        fit_competing=fit_b[fit_b.status == "lost"],
        guard=opts.crm_guard_days,
        extra={"unattributed_records": unattributed},
    )


def _assemble(
    ws: Workspace,
    *,
    unit: str,
    subjects: pd.DataFrame,
    events: pd.DataFrame,
    fit_events: pd.DataFrame,
    fit_competing: pd.DataFrame | None,
    guard: int,
    extra: dict[str, Any],
) -> _Path:
    """Join subjects and observed events per (campaign, date, elapsed bucket) into a path.

    ``subjects`` may have ``n_closed``: subjects closed without the event (CRM ``lost``),
    neither open nor converted.
    """
    keys = ["campaign_id", "date", "eh"]
    if subjects.empty:
        empty = DelayData.build([], (*[[]] * 4,), (*[[]] * 3,), unit=unit)  # type: ignore[arg-type]
        cols = ["campaign_id", "date", "subjects", "observed", "observed_value", "closed"]
        return _Path(
            unit,
            [],
            pd.DataFrame(columns=cols),
            pd.DataFrame(),
            empty,
            np.zeros(0),
            np.zeros(0),
            np.zeros(0, dtype=bool),
            extra,
        )
    if "n_closed" not in subjects.columns:
        subjects = subjects.assign(n_closed=0)
    b = subjects.merge(events, on=keys, how="outer").fillna(
        {"n_all": 0, "n_obs": 0, "n_closed": 0, "value": 0.0}
    )
    b["date"] = pd.to_datetime(b["date"]).dt.date
    b = b.sort_values(keys, kind="stable").reset_index(drop=True)
    b["n_all"] = np.maximum(b.n_all.to_numpy(float), b.n_obs.to_numpy(float))
    cohorts = (
        b.groupby(["campaign_id", "date"], sort=True)
        .agg(
            subjects=("n_all", "sum"),
            observed=("n_obs", "sum"),
            observed_value=("value", "sum"),
            closed=("n_closed", "sum"),
        )
        .reset_index()
    )
    cohorts["cohort"] = np.arange(len(cohorts))
    b = b.merge(cohorts[["campaign_id", "date", "cohort"]], on=["campaign_id", "date"])
    b = b.sort_values(["cohort", "eh"], kind="stable").reset_index(drop=True)
    groups = sorted(cohorts.campaign_id.unique().tolist())
    gidx = {g: i for i, g in enumerate(groups)}
    learn = _keys_learnable(ws, cohorts[["campaign_id", "date"]], guard)
    cohorts["learnable"] = learn
    # open subjects per bucket: all - converted - closed otherwise (CRM lost)
    n_all = b.n_all.to_numpy(float)
    n_open = np.maximum(n_all - b.n_obs.to_numpy(float) - b.n_closed.to_numpy(float), 0.0)
    b["n_open"] = n_open
    b["t"] = b.eh.to_numpy(float) + 0.5
    lb = learn[b.cohort.to_numpy()]
    cg = b.campaign_id.map(gidx).to_numpy(np.int64)

    def ev_arrays(df: pd.DataFrame | None) -> tuple[Any, Any, Any, Any] | None:
        if df is None:
            return None
        df = df[df.campaign_id.isin(gidx)]
        lo = df.bucket.to_numpy(float)
        return (df.campaign_id.map(gidx).to_numpy(np.int64), lo, lo + 1.0, df.n.to_numpy(float))

    ev = ev_arrays(fit_events)
    assert ev is not None
    data = DelayData.build(
        groups,
        ev,
        (cg[lb], b.t.to_numpy(float)[lb], n_open[lb]),
        ev_arrays(fit_competing),
        unit=unit,
    )
    vm, vsd = _value_stats(groups, fit_events)
    return _Path(unit, groups, cohorts, b, data, vm, vsd, learn, extra)


# ---- prediction ---------------------------------------------------------------------------


@dataclass
class _Prediction:
    expected: FloatArray  # per cohort: eventual conversions (point)
    expected_value: FloatArray
    samples: FloatArray  # (S, n_cohorts): eventual conversions
    value_samples: FloatArray  # (S, n_cohorts)
    phi: float


def _overdispersion(model: DelayModel, path: _Path) -> float:
    """Method-of-moments ``phi`` from the learnable cohorts (see the module docstring)."""
    b, c = path.buckets, path.cohorts
    num = den = 0.0
    for g, name in enumerate(path.groups):
        m = (b.campaign_id == name).to_numpy()
        if not m.any():
            continue
        inc = model.incidence(g, b.t.to_numpy(float)[m])[0]
        a = np.bincount(b.cohort.to_numpy()[m], inc * b.n_all.to_numpy(float)[m], len(c))
        sel = (c.campaign_id == name).to_numpy() & path.learnable & (a > 0)
        k = c.observed.to_numpy(float)[sel]
        a = a[sel]
        num += float(np.sum((k - a) ** 2 - a))
        den += float(np.sum(a * a))
    return max(num / den, 0.0) if den > 0 else 0.0


def _predict(model: DelayModel, path: _Path, opts: NowcastOptions) -> _Prediction:
    """Point nowcast and Monte Carlo draws of every cohort's eventual conversions and value."""
    c, b = path.cohorts, path.buckets
    n_c, draws = len(c), max(int(opts.draws), 1)
    rng = np.random.default_rng(opts.random_state)
    phi = _overdispersion(model, path) if opts.overdispersion else 0.0
    observed = c.observed.to_numpy(float)
    obs_value = c.observed_value.to_numpy(float)
    expected = observed.copy()
    exp_value = obs_value.copy()
    samples = np.repeat(observed[None, :], draws, axis=0)
    vsamples = np.repeat(obs_value[None, :], draws, axis=0)
    cohort = b.cohort.to_numpy()
    t_all, n_all, n_open = (b[k].to_numpy(float) for k in ("t", "n_all", "n_open"))
    for g, name in enumerate(path.groups):
        m = (b.campaign_id == name).to_numpy()
        if not m.any():
            continue
        gaps = path.gaps.get(name, [])
        inc0, fut0, unseen0 = _curves_with_gaps(model, g, t_all[m], gaps, 0, rng)
        coh = cohort[m]
        b0 = np.bincount(coh, fut0[0] * n_open[m], n_c)
        lost0 = np.bincount(coh, unseen0[0] * n_all[m], n_c)
        a0 = np.bincount(coh, inc0[0] * n_all[m], n_c) - lost0
        active = (c.campaign_id == name).to_numpy() & (b0 + lost0 > 1e-3)
        if not active.any():
            continue
        ids = np.nonzero(active)[0]
        keep = m & active[cohort]
        coh_k = cohort[keep]  # sorted: buckets are in cohort order
        starts = np.searchsorted(coh_k, ids)
        inc, fut, unseen = _curves_with_gaps(model, g, t_all[keep], gaps, draws, rng)
        bs = np.add.reduceat(fut * n_open[keep], starts, axis=1)
        lost = np.add.reduceat(unseen * n_all[keep], starts, axis=1)
        a_s = np.add.reduceat(inc * n_all[keep], starts, axis=1) - lost
        k = observed[ids]
        opn = np.bincount(coh_k, n_open[keep], n_c)[ids]
        # cohort variation: g | k ~ Gamma(1/phi + k, 1/phi + A), A = expected observed by now
        if phi > 0:
            rate = 1.0 / phi + np.maximum(a_s, 0.0)
            gmult = rng.gamma(np.broadcast_to(1.0 / phi + k, rate.shape), 1.0 / rate)
            gpoint = (1.0 / phi + k) / (1.0 / phi + np.maximum(a0[ids], 0.0))
        else:
            gmult = np.ones_like(bs)
            gpoint = np.ones(len(ids))
        prob = np.clip(gmult * bs / np.maximum(opn, 1e-12), 0.0, 1.0)
        add = rng.binomial(np.broadcast_to(np.round(opn).astype(np.int64), prob.shape), prob)
        add = add + rng.poisson(gmult * lost)  # happened inside an exclusion window, unseen
        point_add = gpoint * (b0[ids] + lost0[ids])
        vm, vsd = float(path.value_mean[g]), float(path.value_sd[g])
        noise = rng.standard_normal(add.shape) * np.sqrt(add) * vsd
        samples[:, ids] = k + add
        vsamples[:, ids] = obs_value[ids] + np.maximum(add * vm + noise, 0.0)
        expected[ids] = k + point_add
        exp_value[ids] = obs_value[ids] + point_add * vm
    return _Prediction(expected, exp_value, samples, vsamples, phi)


def _curves_with_gaps(
    model: DelayModel,
    g: int,
    t: FloatArray,
    gaps: list[tuple[float, float]],
    draws: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Incidence and future probability at ``t``, and the share converting unseen in ``gaps``.

    A subject at elapsed ``t`` whose event fell inside an exclusion window ``(w0, w1)``
    (elapsed times at the window's start and end, counted back from the cut) was never
    observed: that share is ``I(t - w1) - I(t - w0)`` per window (``I`` the incidence, 0 for
    negative times). One parameter draw set serves all three.
    """
    n = len(t)
    shifted = [np.maximum(t - w, 0.0) for w0, w1 in gaps for w in (w1, w0)]
    inc, fut, _ = model.curves(g, np.concatenate([t, *shifted]), n_draws=draws, rng=rng)
    unseen = np.zeros((inc.shape[0], n))
    for j in range(len(gaps)):
        late, early = (
            inc[:, n * (1 + 2 * j) : n * (2 + 2 * j)],
            inc[:, n * (2 + 2 * j) : n * (3 + 2 * j)],
        )
        unseen += late - early
    return inc[:, :n], fut[:, :n], np.maximum(unseen, 0.0)


# ---- the report -----------------------------------------------------------------------------


def _spend(src: _Source) -> pd.DataFrame:
    s = src.table("spend")
    s = s.filter(s.campaign_id.notnull())
    df = _fetch(s.group_by("campaign_id", "date").aggregate(spend=s.spend.sum()))
    if not df.empty:
        df["date"] = pd.to_datetime(df["date"]).dt.date
    return df


def _flags(path: _Path, windows: list[dict[str, Any]], as_of: date) -> None:
    """Mark cohorts inside a window (``in_window``) and those whose follow-up overlaps one.

    Also sets ``path.gaps``: each campaign's windows up to the cut as elapsed times (in the
    path's unit) at their start and end, counted back from the cut.
    """
    c = path.cohorts
    unit = HOUR if path.unit == "hours" else DAY
    cutoff = datetime.combine(as_of + timedelta(days=1), datetime.min.time())
    inside = np.zeros(len(c), dtype=bool)
    overlap = np.zeros(len(c), dtype=bool)
    gaps: dict[str, list[tuple[float, float]]] = {}
    d = c.date.to_numpy()
    for w in windows:
        start = date.fromisoformat(w["start"])
        end = date.fromisoformat(w["end"]) if w["end"] else as_of
        if start > as_of or w["campaign_id"] is None:
            continue
        end = min(end, as_of)
        w0 = (cutoff - datetime.combine(start, datetime.min.time())).total_seconds() / unit
        w1 = cutoff - datetime.combine(end + timedelta(days=1), datetime.min.time())
        gaps.setdefault(w["campaign_id"], []).append((w0, max(w1.total_seconds() / unit, 0.0)))
        mine = (c.campaign_id == w["campaign_id"]).to_numpy()
        ins = np.array([start <= x <= end for x in d], dtype=bool)
        ovl = np.array([x < start for x in d], dtype=bool)
        inside |= mine & ins
        overlap |= mine & ovl & ~ins
    c["in_window"] = inside
    c["exclusion_overlap"] = overlap
    path.gaps = gaps


def _stats(
    sel: npt.NDArray[np.bool_],
    path: _Path,
    pred: _Prediction,
    spend: float,
    level: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Totals of the cohorts ``sel``: counts, values, interval of the sum, CPA and ROAS."""
    c = path.cohorts
    obs = float(c.observed.to_numpy(float)[sel].sum())
    obs_v = float(c.observed_value.to_numpy(float)[sel].sum())
    exp_n = float(pred.expected[sel].sum())
    exp_v = float(pred.expected_value[sel].sum())
    lo, hi = count_interval(pred.samples[:, sel].sum(axis=1)[:, None], level, rng, np.r_[obs])
    vlo, vhi = shortest_interval(pred.value_samples[:, sel].sum(axis=1)[:, None], level)
    return {
        "subjects": int(c.subjects.to_numpy(float)[sel].sum()),
        "spend": _r(spend),
        "observed_conversions": round(obs),
        "expected_conversions": _r(exp_n),
        "lower": int(lo[0]),
        "upper": int(hi[0]),
        "observed_value": _r(obs_v),
        "expected_value": _r(exp_v),
        "value_lower": _r(max(float(vlo[0]), obs_v)),
        "value_upper": _r(max(float(vhi[0]), obs_v)),
        "observed_cpa": _ratio(spend, obs),
        "nowcast_cpa": _ratio(spend, exp_n),
        "observed_roas": _ratio(obs_v, spend, 3),
        "nowcast_roas": _ratio(exp_v, spend, 3),
    }


def _rename(d: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {names.get(k, k): v for k, v in d.items()}


def _render(
    path: _Path,
    pred: _Prediction,
    spend: pd.DataFrame,
    as_of: date,
    opts: NowcastOptions,
    names: dict[str, str],
    extra_cols: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Cohort rows and campaign rows (all days and trailing windows) of one path."""
    rng = np.random.default_rng([opts.random_state, 1])
    c = path.cohorts
    sp = c.merge(spend, on=["campaign_id", "date"], how="left").spend.fillna(0.0).to_numpy(float)
    obs_all = c.observed.to_numpy(float)
    obs_v_all = c.observed_value.to_numpy(float)
    lo, hi = count_interval(pred.samples, opts.level, rng, obs_all)
    vlo, vhi = shortest_interval(pred.value_samples, opts.level)
    first = as_of - timedelta(days=opts.cohort_days - 1) if opts.cohort_days else date.min
    rows: list[dict[str, Any]] = []
    cids: list[str] = [str(x) for x in c.campaign_id]
    dates: list[date] = list(c.date)
    subjects = c.subjects.to_numpy(float)
    in_window = c.in_window.to_numpy(bool)
    overlap = c.exclusion_overlap.to_numpy(bool)
    extras = {v: c[k].to_numpy(float) for k, v in (extra_cols or {}).items()}
    for i, day in enumerate(dates):
        if day < first:
            continue
        obs, exp_n = float(obs_all[i]), float(pred.expected[i])
        obs_v, exp_v = float(obs_v_all[i]), float(pred.expected_value[i])
        row = {
            "campaign_id": cids[i],
            "date": day.isoformat(),
            "subjects": int(subjects[i]),
            "observed_conversions": round(obs),
            "expected_conversions": _r(exp_n),
            "lower": int(lo[i]),
            "upper": int(hi[i]),
            "observed_value": _r(obs_v),
            "expected_value": _r(exp_v),
            "value_lower": _r(max(float(vlo[i]), obs_v)),
            "value_upper": _r(max(float(vhi[i]), obs_v)),
            "completeness": _ratio(obs, exp_n, 3),
            "spend": _r(float(sp[i])),
            "observed_cpa": _ratio(float(sp[i]), obs),
            "nowcast_cpa": _ratio(float(sp[i]), exp_n),
            "observed_roas": _ratio(obs_v, float(sp[i]), 3),
            "nowcast_roas": _ratio(exp_v, float(sp[i]), 3),
            "excluded": bool(in_window[i]),
            "exclusion_overlap": bool(overlap[i]),
        }
        row |= {k: int(v[i]) for k, v in extras.items()}
        rows.append(_rename(row, names))
    campaigns: list[dict[str, Any]] = []
    spent = spend.groupby("campaign_id") if not spend.empty else None
    names_all = set(path.groups) | (set(spend.campaign_id) if not spend.empty else set())
    days = c.date.to_numpy()
    for name in sorted(names_all):
        mine = (c.campaign_id == name).to_numpy()
        own = spent.get_group(name) if spent is not None and name in spent.groups else None

        def cost(since: date, own: pd.DataFrame | None = own) -> float:
            return float(own[own.date >= since].spend.sum()) if own is not None else 0.0

        out: dict[str, Any] = {"campaign_id": name}
        out |= _stats(mine, path, pred, cost(date.min), opts.level, rng)
        windows: dict[str, Any] = {}
        for w in opts.windows:
            since = as_of - timedelta(days=w - 1)
            stats = _stats(mine & (days >= since), path, pred, cost(since), opts.level, rng)
            windows[f"{w}d"] = _rename(stats, names)
        out["windows"] = windows
        campaigns.append(_rename(out, names))
    return rows, campaigns


_CLICK_NAMES = {"subjects": "clicks"}
_CRM_NAMES = {
    "subjects": "leads",
    "observed_conversions": "observed_deals",
    "expected_conversions": "expected_deals",
    "observed_cpa": "observed_cost_per_deal",
    "nowcast_cpa": "nowcast_cost_per_deal",
}


def _delay_json(model: DelayModel, path: _Path) -> dict[str, dict[str, Any]]:
    return {g: model.describe(i) for i, g in enumerate(path.groups)}


def nowcast(
    ws: Workspace,
    as_of: date | None = None,
    *,
    settings: Settings | None = None,
    options: NowcastOptions | None = None,
) -> NowcastReport:
    """Nowcast every campaign's cohorts as of a day (the click path and the CRM path).

    Parameters
    ----------
    ws
        The workspace.
    as_of
        The last day seen (tables are cut at its end); defaults to the latest day with data.
    settings
        Project settings (the funnel: its last stage is the won deal).
    options
        How to estimate (:class:`NowcastOptions`).

    Returns
    -------
    NowcastReport
        ``to_dict()`` gives ``as_of``; ``delay`` (campaign -> ``p50``, ``p90`` in hours,
        ``model``, the fitted ``p``, ``mu``, ``sigma``, pooling weights); ``cohorts`` (campaign
        x click day: ``clicks``, ``observed_conversions``, ``expected_conversions``, ``lower``,
        ``upper``, ``observed_value``, ``expected_value``, value interval, ``spend``, observed
        and nowcast ``cpa`` and ``roas``, ``excluded``, ``exclusion_overlap``); ``campaigns``
        (the same over all days, with ``windows`` ``7d`` and ``28d``); ``crm`` (``delay`` in
        days, ``cohorts`` by lead day with ``leads``, ``observed_deals``, ``expected_deals``,
        ``lower``, ``upper``, values, cost per deal and ROAS; ``campaigns``); ``account``
        (the pooled fits and the cohort variation ``phi``); ``exclusions``; ``timings``.
    """
    settings = settings or Settings()
    opts = options or NowcastOptions()
    if not 0 < opts.level < 1:
        raise ValueError(f"level must be between 0 and 1, got {opts.level}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if as_of is None:
        as_of = default_as_of(ws)
        if as_of is None:
            return NowcastReport(None, opts.level, {}, [], [], {"delay": {}, "cohorts": []})
    src = _Source(ws, as_of)
    report = NowcastReport(as_of, opts.level, {}, [], [], {})
    report.exclusions = load_exclusions(ws)
    try:
        spend = _spend(src)
        click, linked = _click_path(src, settings, opts)
        timings["click_data"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        crm = _crm_path(src, settings, opts, linked) if opts.crm else None
        timings["crm_data"] = time.perf_counter() - t1
    finally:
        src.release()
    if click.groups:
        t1 = time.perf_counter()
        model, pred = _run_path(click, opts, report.exclusions, as_of, competing=False)
        report.cohorts, report.campaigns = _render(click, pred, spend, as_of, opts, _CLICK_NAMES)
        for row in report.campaigns:
            row["unlinked_conversions"] = int(click.extra["unlinked"].get(row["campaign_id"], 0))
        report.delay = _delay_json(model, click)
        report.account["click"] = _account_json(model, pred.phi)
        timings["click_model"] = time.perf_counter() - t1
    report.account.setdefault("click", {})
    report.account["click"]["unattributed_conversions"] = click.extra["unattributed"]
    report.account["click"]["unlinked_conversions"] = click.extra["unlinked"]
    if crm is not None:
        t1 = time.perf_counter()
        report.crm = {"unit": "days", "delay": {}, "cohorts": [], "campaigns": []}
        report.crm["unattributed_records"] = crm.extra["unattributed_records"]
        if crm.groups:
            cmodel, cpred = _run_path(crm, opts, report.exclusions, as_of, competing=True)
            cohorts, campaigns = _render(
                crm, cpred, spend, as_of, opts, _CRM_NAMES, {"closed": "lost"}
            )
            report.crm |= {
                "delay": _delay_json(cmodel, crm),
                "cohorts": cohorts,
                "campaigns": [r for r in campaigns if r["campaign_id"] in crm.groups],
            }
            report.account["crm"] = _account_json(cmodel, cpred.phi)
        timings["crm_model"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    report.timings = timings
    return report


def _run_path(
    path: _Path,
    opts: NowcastOptions,
    windows: list[dict[str, Any]],
    as_of: date,
    *,
    competing: bool,
) -> tuple[DelayModel, _Prediction]:
    """Flag exclusions, fit the path's delay model, predict every cohort."""
    _flags(path, windows, as_of)
    name = opts.crm_model if competing else opts.model
    params: dict[str, Any] = {"random_state": opts.random_state}
    if competing:
        given = opts.crm_model_params
        if given is None:
            given = {"min_scale": CRM_MIN_SCALE} if name == LogNormalCure.name else {}
        params |= {**given, "competing": True}
    else:
        params |= opts.model_params
    model = make_delay_model(name, **params).fit(path.data)
    return model, _predict(model, path, opts)


def _account_json(model: DelayModel, phi: float) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model.name, "overdispersion": round(phi, 5)}
    if isinstance(model, LogNormalCure):
        th = model.account_theta_
        out |= {
            "p": round(float(1 / (1 + math.exp(-th[0]))), 5),
            "mu": round(float(th[1]), 4),
            "sigma": round(float(math.exp(th[2])), 4),
            "between_scale": [round(float(x), 4) for x in model.between_scale_],
        }
    return out
