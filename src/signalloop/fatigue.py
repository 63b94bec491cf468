"""Creative fatigue: CTR (and conversion-rate) decay with age and exposure, fitted per creative
with its uncertainty, a status, an onset date, a forecast; creative starvation per campaign.

Each creative's daily clicks are modelled as Poisson with the impressions as exposure and a
log-linear decay in its age (days since its first delivery) and in its cumulative
impressions (exposure so far, the data's stand-in for frequency)::

    log E[clicks_t] = log impressions_t + a - b * age_t - c * exposure_t

fitted by iteratively reweighted least squares with a weak ridge prior, so a creative with
little data stays near "no decay" instead of jumping to a verdict. The fitted CTR relative to
the creative's start, ``exp(-(b * age + c * exposure))``, has a 90% interval from the fit's
covariance (delta method). Status: ``fatigued`` when the relative CTR is below 0.7 and even
its upper bound is below 0.8; ``fresh`` above 0.9; ``peaking`` between. The onset is the
first day the fitted relative CTR falls below 0.7; days to fatigue extrapolate the fit at the
creative's recent delivery rate.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import ibis
import numpy as np

from signalloop.attribution import click_time
from signalloop.checks.base import CheckContext, default_as_of, to_date
from signalloop.checks.engine import without_exclusions
from signalloop.config import Settings
from signalloop.errors import UsageError
from signalloop.store import Workspace

FATIGUE_RATIO = 0.7
FRESH_RATIO = 0.9
Z90 = 1.6449
EXPOSURE_UNIT = 100_000.0  # impressions per unit of the exposure coefficient
RIDGE = 1.0
HORIZON = 120


def fit_decay(
    clicks: np.ndarray, impressions: np.ndarray, age: np.ndarray, exposure: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson log-linear decay fit: returns (coefficients [a, b, c], covariance).

    ``b`` and ``c`` are decay rates (positive = CTR falling) per day of age and per
    :data:`EXPOSURE_UNIT` impressions of exposure.

    >>> age = np.arange(30.0); imp = np.full(30, 20000.0)
    >>> ctr = 0.02 * np.exp(-0.03 * age)
    >>> beta, cov = fit_decay(np.round(ctr * imp), imp, age, np.cumsum(imp) - imp)
    >>> round(float(beta[1] + beta[2] * 0.2), 3)  # total decay per day
    0.03
    """
    x = np.column_stack([np.ones_like(age), -age, -exposure / EXPOSURE_UNIT])
    off = np.log(np.maximum(impressions, 1.0))
    beta = np.array([math.log(max(clicks.sum(), 0.5) / max(impressions.sum(), 1.0)), 0.0, 0.0])
    prior = np.diag([0.0, RIDGE, RIDGE])  # shrink the decay rates toward none
    for _ in range(50):
        mu = np.exp(np.clip(x @ beta + off, -50, 50))
        grad = x.T @ (clicks - mu) - prior @ beta
        hess = x.T @ (x * mu[:, None]) + prior
        step = np.linalg.solve(hess, grad)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-9:
            break
    mu = np.exp(np.clip(x @ beta + off, -50, 50))
    cov = np.linalg.inv(x.T @ (x * mu[:, None]) + prior)
    return beta, cov


def _rate(x: float) -> float:
    """A CTR for the report: 5 decimals, or 3 significant digits below 0.0001 (a creative
    with a handful of clicks in millions of impressions still has a rate, not 0).

    >>> _rate(0.0123456), _rate(0.00000123456)
    (0.01235, 1.23e-06)
    """
    return round(x, 5) if abs(x) >= 1e-4 else float(f"{x:.3g}")


@dataclass
class CreativeFatigue:
    creative_id: str
    campaign_id: str
    adset_id: str | None
    launched: date
    days: int
    impressions: int
    clicks: int
    ctr_start: float
    ctr_now: float
    relative_ctr: float
    relative_ctr_interval: tuple[float, float]
    status: str
    onset: date | None
    days_to_fatigue: int | None
    decay_per_day: float
    decay_per_100k_impressions: float
    live: bool
    conversion_rate_relative: float | None = None
    spend_7d: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "creative_id": self.creative_id,
            "campaign_id": self.campaign_id,
            "adset_id": self.adset_id,
            "launched": self.launched.isoformat(),
            "days": self.days,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "ctr_start": _rate(self.ctr_start),
            "ctr_now": _rate(self.ctr_now),
            "relative_ctr": round(self.relative_ctr, 3),
            "relative_ctr_90": [round(v, 3) for v in self.relative_ctr_interval],
            "status": self.status,
            "onset": self.onset.isoformat() if self.onset else None,
            "days_to_fatigue": self.days_to_fatigue,
            "decay_per_day": round(self.decay_per_day, 5),
            "decay_per_100k_impressions": round(self.decay_per_100k_impressions, 5),
            "conversion_rate_relative": (
                round(self.conversion_rate_relative, 3)
                if self.conversion_rate_relative is not None
                else None
            ),
            "live": self.live,
            "spend_7d": round(self.spend_7d, 2),
        }


@dataclass
class FatigueReport:
    as_of: date
    creatives: list[CreativeFatigue]
    campaigns: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "creatives": [c.to_dict() for c in self.creatives],
            "campaigns": self.campaigns,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


def fatigue(
    ws: Workspace,
    as_of: date | None = None,
    *,
    settings: Settings | None = None,
    starvation_days: int = 21,
) -> FatigueReport:
    """Fit every creative's decay up to ``as_of`` and judge each campaign's creative supply."""
    settings = settings or Settings()
    as_of = as_of or default_as_of(ws)
    if as_of is None:
        raise UsageError(f"workspace {ws.path} holds no data yet: ingest something first")
    ctx = CheckContext(ws, as_of, settings)
    spend = ctx.table("spend")
    spend = spend.filter(spend.creative_id.notnull())
    spend = without_exclusions(ws, spend, "campaign_id", spend.date)
    daily = (
        spend.group_by(["campaign_id", "creative_id", "date"])
        .aggregate(
            adset_id=spend.adset_id.arbitrary(),
            impressions=spend.impressions.sum(),
            clicks=spend.clicks.sum(),
            spend=spend.spend.sum(),
        )
        .order_by(["campaign_id", "creative_id", "date"])
        .to_pyarrow()
        .to_pylist()
    )
    conv_by = _conversions_by_creative(ctx)
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in daily:
        r["date"] = to_date(r["date"])  # once per row, not in every loop below
        series.setdefault((r["campaign_id"], r["creative_id"]), []).append(r)
    fitted = (_one(cid, cr, rows, as_of, conv_by.get(cr, {})) for (cid, cr), rows in series.items())
    creatives = [c for c in fitted if c is not None]
    campaigns = _starvation(creatives, as_of, starvation_days)
    return FatigueReport(as_of, creatives, campaigns)


def _conversions_by_creative(ctx: CheckContext) -> dict[str, dict[date, int]]:
    conv = ctx.conversions
    conv = conv.filter(conv.source.isin(["pixel", "server"]) | conv.source.isnull())
    # the click's creative and day, when its touchpoint is known by the as-of date
    c = conv
    known = click_time(c, ctx.cutoff)
    c = c.mutate(
        creative=ibis.coalesce(
            c.creative_id, ibis.ifelse(known.notnull(), c.click_creative_id, ibis.null())
        ),
        day=ibis.coalesce(c.click_ts.date(), known.date(), c.ts.date()),
    )
    rows = c.group_by(["creative", "day"]).aggregate(n=c.count()).to_pyarrow().to_pylist()
    out: dict[str, dict[date, int]] = {}
    for r in rows:
        if r["creative"] is not None and r["day"] is not None:
            out.setdefault(r["creative"], {})[r["day"]] = int(r["n"])
    return out


def _one(
    cid: str, cr: str, rows: list[dict[str, Any]], as_of: date, conv: dict[date, int]
) -> CreativeFatigue | None:
    rows = [r for r in rows if (r["impressions"] or 0) > 0]
    if not rows:
        return None
    launched = rows[0]["date"] or as_of
    days = np.array([((r["date"] or as_of) - launched).days for r in rows], float)
    imp = np.array([r["impressions"] for r in rows], float)
    clk = np.array([r["clicks"] for r in rows], float)
    exposure = np.cumsum(imp) - imp
    beta, cov = fit_decay(clk, imp, days, exposure)

    def rel(age: float, expo: float) -> tuple[float, float, float]:
        d = np.array([0.0, -age, -expo / EXPOSURE_UNIT])
        m, s = float(d @ beta), float(math.sqrt(max(d @ cov @ d, 0.0)))
        return math.exp(m), math.exp(m - Z90 * s), math.exp(m + Z90 * s)

    age_now, expo_now = float(days[-1]), float(exposure[-1] + imp[-1])
    r_now, lo, hi = rel(age_now, expo_now)
    if r_now < FATIGUE_RATIO and hi < FATIGUE_RATIO + 0.1:
        status = "fatigued"
    elif r_now >= FRESH_RATIO:
        status = "fresh"
    else:
        status = "peaking"

    def below(age: np.ndarray, expo: np.ndarray) -> np.ndarray:
        """Positions where the point estimate of ``rel`` is under the fatigue ratio."""
        m = 0.0 * beta[0] + (-age) * beta[1] + (-expo / EXPOSURE_UNIT) * beta[2]
        return np.flatnonzero(np.exp(m) < FATIGUE_RATIO)

    onset = None
    first = below(days, exposure + imp)
    if len(first):
        onset = launched + timedelta(days=int(days[first[0]]))
    last = rows[-1]["date"] or as_of
    live = (as_of - last).days < 2
    to_fatigue: int | None = None
    if onset is None and live:
        rate = float(imp[-7:].mean())
        ks = np.arange(1, HORIZON + 1, dtype=float)
        ahead = below(age_now + ks, expo_now + ks * rate)
        to_fatigue = int(ks[ahead[0]]) if len(ahead) else None
    start_ctr = math.exp(beta[0])
    conv_rel = _conversion_decay(rows, conv, launched)
    spend7 = sum(r["spend"] or 0.0 for r in rows if (as_of - (r["date"] or as_of)).days < 7)
    return CreativeFatigue(
        creative_id=cr,
        campaign_id=cid,
        adset_id=rows[-1]["adset_id"],
        launched=launched,
        days=int(days[-1]) + 1,
        impressions=int(imp.sum()),
        clicks=int(clk.sum()),
        ctr_start=start_ctr,
        ctr_now=start_ctr * r_now,
        relative_ctr=r_now,
        relative_ctr_interval=(lo, hi),
        status=status,
        onset=onset,
        days_to_fatigue=to_fatigue,
        decay_per_day=float(beta[1]),
        decay_per_100k_impressions=float(beta[2]),
        live=live,
        conversion_rate_relative=conv_rel,
        spend_7d=float(spend7),
    )


def _conversion_decay(
    rows: list[dict[str, Any]], conv: dict[date, int], launched: date
) -> float | None:
    """Conversion rate per click now relative to the creative's start (log-linear in age)."""
    clicks = np.array([r["clicks"] or 0 for r in rows], float)
    if clicks.sum() < 200 or sum(conv.values()) < 20:
        return None
    ages = np.array([((r["date"] or launched) - launched).days for r in rows], float)
    y = np.array([conv.get(r["date"] or launched, 0) for r in rows], float)
    keep = clicks > 0
    beta, _cov = fit_decay(y[keep], clicks[keep], ages[keep], np.zeros(int(keep.sum())))
    return float(math.exp(-beta[1] * ages[keep][-1]))


def _starvation(
    creatives: list[CreativeFatigue], as_of: date, starvation_days: int
) -> list[dict[str, Any]]:
    out = []
    by: dict[str, list[CreativeFatigue]] = {}
    for c in creatives:
        by.setdefault(c.campaign_id, []).append(c)
    for cid, crs in sorted(by.items()):
        newest = max(c.launched for c in crs)
        live = [c for c in crs if c.live and c.spend_7d > 0]
        total = sum(c.spend_7d for c in live)
        fatigued = sum(c.spend_7d for c in live if c.status == "fatigued")
        share = fatigued / total if total else 0.0
        since = (as_of - newest).days
        top = max(live, key=lambda c: c.spend_7d) if live else None
        best_start = max((c.ctr_start for c in crs), default=0.0)
        starving = since >= starvation_days and share >= 0.5
        out.append(
            {
                "campaign_id": cid,
                "days_since_newest_creative": since,
                "live_creatives": len(live),
                "fatigued_spend_share_7d": round(share, 3),
                "starvation": starving,
                "top_creative": top.creative_id if top else None,
                "top_creative_status": top.status if top else None,
                "least_inefficient_not_good": bool(
                    top is not None
                    and top.status == "fatigued"
                    and top.ctr_now < FATIGUE_RATIO * best_start
                ),
                "message": (
                    f"creative starvation: nothing new for {since} days while {share:.0%} of "
                    "the last 7 days' spend went to fatigued creatives"
                    if starving
                    else f"newest creative {since} days old; {share:.0%} of recent spend on "
                    "fatigued creatives"
                ),
            }
        )
    return out
