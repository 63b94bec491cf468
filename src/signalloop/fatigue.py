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

A spend row's creative is its ``creative_id``, else its ad, as ``ad:<ad_id>``
(:func:`signalloop.checks.base.creative_rows`): ad-level exports seldom carry creative ids. Such a
series has no conversion-rate fit, since conversions name creatives, not ads.

Each series' fit is kept in the workspace (:data:`FITS_TABLE`) with a digest of the rows it
was fitted on, and a later call fits again only the series whose rows changed: those that
delivered since, or whose days were restated or fell into an exclusion window.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import duckdb
import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from signalloop.attribution import click_time
from signalloop.checks.base import CheckContext, creative_rows, default_as_of
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
    :data:`EXPOSURE_UNIT` impressions of exposure. One series of :func:`fit_decays`.

    >>> age = np.arange(30.0); imp = np.full(30, 20000.0)
    >>> ctr = 0.02 * np.exp(-0.03 * age)
    >>> beta, cov = fit_decay(np.round(ctr * imp), imp, age, np.cumsum(imp) - imp)
    >>> round(float(beta[1] + beta[2] * 0.2), 3)  # total decay per day
    0.03
    """
    beta, cov = fit_decays(clicks, impressions, age, exposure, np.zeros(len(age), np.int64), 1)
    return beta[0], cov[0]


def fit_decays(
    clicks: np.ndarray,
    impressions: np.ndarray,
    age: np.ndarray,
    exposure: np.ndarray,
    group: np.ndarray,
    n_groups: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fit_decay` of many series at once: ``group`` numbers each row's series.

    Newton (IRLS) steps for every series together, each series stopping on its own once its
    step is under 1e-9 (at most 50), as one loop per series would. Every series needs a row.
    Returns coefficients ``(n_groups, 3)`` and covariances ``(n_groups, 3, 3)``.

    The design's columns are ``1``, ``-age`` and ``-exposure``: a product with the first is
    the other factor itself, so the sums below take the columns and their pairwise products
    as they stand (computed once), and a step over the series still running touches only
    their rows and their numbers (a few series that converge slowly cost what they hold,
    not what the whole account holds).
    """
    x1, x2 = -age, -exposure / EXPOSURE_UNIT
    cols: tuple[Any, ...] = (x1, x2, x1 * x1, x1 * x2, x2 * x2)  # the hessian's products
    off = np.log(np.maximum(impressions, 1.0))
    g = np.asarray(group, np.int64)
    k = n_groups
    tot_c = np.bincount(g, clicks, minlength=k)
    tot_i = np.bincount(g, impressions, minlength=k)
    beta = np.zeros((k, 3))
    beta[:, 0] = np.log(np.maximum(tot_c, 0.5) / np.maximum(tot_i, 1.0))
    prior = np.diag([0.0, RIDGE, RIDGE])  # shrink the decay rates toward none

    def hessian(gi: np.ndarray, m: int, mu: np.ndarray, c: tuple[Any, ...]) -> np.ndarray:
        """Per series (``gi`` numbers the rows' series among ``m``), with the prior."""
        a1, a2, a11, a12, a22 = c
        h = np.empty((m, 3, 3))
        h[:, 0, 0] = np.bincount(gi, mu, minlength=m)
        h[:, 0, 1] = h[:, 1, 0] = np.bincount(gi, a1 * mu, minlength=m)
        h[:, 0, 2] = h[:, 2, 0] = np.bincount(gi, a2 * mu, minlength=m)
        h[:, 1, 1] = np.bincount(gi, a11 * mu, minlength=m)
        h[:, 1, 2] = h[:, 2, 1] = np.bincount(gi, a12 * mu, minlength=m)
        h[:, 2, 2] = np.bincount(gi, a22 * mu, minlength=m)
        return h + prior

    def mean(b: np.ndarray, gi: np.ndarray, c: tuple[Any, ...], o: np.ndarray) -> np.ndarray:
        bg = b[gi]
        eta = (bg[:, 0] + c[0] * bg[:, 1]) + c[1] * bg[:, 2]  # x . beta, term by term
        return np.asarray(np.exp(np.clip(eta + o, -50, 50)), float)

    active = np.arange(k)  # the series still running, and their rows (all at first)
    gi, c, o, y = g, cols, off, clicks
    for _ in range(50):
        b = beta[active]
        m = len(active)
        mu = mean(b, gi, c, o)
        resid = y - mu
        grad = np.column_stack(
            [np.bincount(gi, v, minlength=m) for v in (resid, c[0] * resid, c[1] * resid)]
        )
        step = np.linalg.solve(hessian(gi, m, mu, c), (grad - b @ prior)[..., None])[..., 0]
        beta[active] += step
        done = np.max(np.abs(step), axis=1) < 1e-9
        if done.all():
            break
        if done.any():  # keep the rows of the series still running, renumbered among them
            keep = ~done
            rows = np.flatnonzero(keep[gi])
            gi = (np.cumsum(keep) - 1)[gi[rows]]
            c, o, y = tuple(v[rows] for v in c), o[rows], y[rows]
            active = active[keep]
    cov = np.linalg.inv(hessian(g, k, mean(beta, g, cols, off), cols))
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
    #: what ``creatives`` lists: ``days`` (``None``: every creative), ``from`` (the first
    #: day of delivery that lists a creative), ``creatives_not_listed``
    listed: dict[str, Any] = field(default_factory=dict)
    #: why there is no creative to fit (``None`` when there is one), and the export that
    #: would give one
    missing: str | None = None
    unlock: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "creatives": [c.to_dict() for c in self.creatives],
            "campaigns": self.campaigns,
            "listed": self.listed,
            **({"missing": self.missing, "unlock": self.unlock} if self.missing else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


def fatigue(
    ws: Workspace,
    as_of: date | None = None,
    *,
    settings: Settings | None = None,
    starvation_days: int = 21,
    list_days: int | None = None,
) -> FatigueReport:
    """Fit every creative's decay up to ``as_of`` and judge each campaign's creative supply.

    ``list_days``: list only the creatives that delivered in the last ``list_days`` days
    (every live one among them); ``None`` lists every creative of the history. Every
    creative is still fitted and counts in its campaign's starvation verdict (its launch and
    start CTR), and ``listed`` says how many were left out. A creative that stopped
    delivering long ago is what a year of history is mostly made of: describing each of them
    again every day grew the daily run with the history (the run lists
    :data:`signalloop.run.REPORT_DAYS`).
    """
    settings = settings or Settings()
    as_of = as_of or default_as_of(ws)
    if as_of is None:
        raise UsageError(f"workspace {ws.path} holds no data yet: ingest something first")
    ctx = CheckContext(ws, as_of, settings)
    spend = creative_rows(ctx.table("spend"))  # (an ad without a creative id as ad:<ad_id>)
    spend = without_exclusions(ws, spend, "campaign_id", spend.date)
    daily = (
        spend.group_by(["campaign_id", "creative_id", "date"])
        .aggregate(
            adset_id=spend.adset_id.arbitrary(),
            impressions=spend.impressions.sum(),
            clicks=spend.clicks.sum(),
            spend=spend.spend.sum(),
        )
        .filter(lambda t: t.impressions > 0)  # a day without delivery says nothing of decay
        .order_by(["campaign_id", "creative_id", "date"])
        .to_pyarrow()
    )
    s = _Series.of(daily, as_of)
    beta, cov = _fits(ws, s)
    shown = np.arange(s.n)
    edge = None
    if list_days is not None:
        list_days = max(int(list_days), 2)  # (every live one: delivered in the last 2 days)
        edge = as_of - timedelta(days=list_days - 1)
        shown = np.flatnonzero(s.day[s.bounds[1:] - 1] >= np.datetime64(edge, "D"))
    conv_rel = _conversion_decays(s, _conversions_by_creative(ctx), shown)
    creatives = [_one(s, g, beta[g], cov[g], conv_rel.get(g), as_of) for g in shown.tolist()]
    campaigns = _starvation(creatives, _supply(s, beta), as_of, starvation_days)
    listed = {
        "days": list_days,
        "from": edge.isoformat() if edge else None,
        "creatives_not_listed": int(s.n - len(shown)),
    }
    report = FatigueReport(as_of, creatives, campaigns, listed)
    if s.n == 0:  # nothing to fit: say what is missing rather than list nothing
        report.missing, report.unlock = _why_no_creatives(ctx)
    elif len(s.day) == s.n:  # (a snapshot export: every creative on one day, no decay to see)
        report.missing = (
            f"daily history: each of the {s.n} creatives has one day of delivery, so no "
            "decay can be seen yet"
        )
        report.unlock = UNLOCK_CREATIVES
    return report


#: The export that gives fatigue its series.
UNLOCK_CREATIVES = (
    "spend per ad or creative and day: ad_id or creative_id in the spend export (e.g. Meta's "
    "or Google Ads' ad-level export with a 'Breakdown: Day' or 'Day' segment), with "
    "impressions and clicks"
)


def _why_no_creatives(ctx: CheckContext) -> tuple[str, str]:
    """Why no spend row up to the as-of date gave a creative series (read only then)."""
    sp = ctx.table("spend")
    if int(creative_rows(sp).count().execute()) == 0:
        return "creative ids: no spend row names a creative_id or an ad_id", UNLOCK_CREATIVES
    return (
        "delivery: no spend row with a creative_id or an ad_id has impressions outside "
        "exclusion windows",
        UNLOCK_CREATIVES,
    )


def _supply(s: _Series, beta: np.ndarray) -> dict[str, tuple[date, float]]:
    """Per campaign, over every creative it has had: the newest launch and the best start
    CTR (what :func:`_starvation` compares with, listed or not)."""
    out: dict[str, tuple[date, float]] = {}
    for g in range(s.n):
        first = int(s.bounds[g])
        cid, launched, start = s.campaign_id[g], _date(s.day[first]), math.exp(beta[g, 0])
        newest, best = out.get(cid, (launched, start))
        out[cid] = (max(newest, launched), max(best, start))
    return out


@dataclass
class _Series:
    """Every creative's delivery days (with impressions) as arrays, series after series.

    Series ``g`` is rows ``bounds[g]:bounds[g + 1]``; ``age`` counts days from its first row,
    ``exposure`` the impressions before each row. ``campaign_id`` and ``creative_id`` are
    per series (its rows share them), ``adset_id`` its last row's: a long history's million
    rows are compared and cut into series in Arrow, and only a series' names become Python
    strings.
    """

    campaign_id: list[Any]
    creative_id: list[Any]
    adset_id: list[Any]
    day: np.ndarray  # datetime64[D]
    imp: np.ndarray
    clicks: np.ndarray
    spend: np.ndarray
    bounds: np.ndarray
    group: np.ndarray
    age: np.ndarray
    exposure: np.ndarray

    @property
    def n(self) -> int:
        return len(self.bounds) - 1

    @classmethod
    def of(cls, daily: Any, as_of: date) -> _Series:
        def num(name: str) -> np.ndarray:
            return np.asarray(daily[name].fill_null(0).to_numpy(), float)

        n = daily.num_rows
        day = daily["date"].fill_null(as_of).to_numpy().astype("datetime64[D]")
        same = np.ones(max(n - 1, 0), bool)
        for name in ("campaign_id", "creative_id"):  # a series starts where either changes
            same &= _same_as_previous(daily[name].combine_chunks())
        new = np.r_[np.ones(min(n, 1), bool), ~same]
        starts = np.flatnonzero(new)
        bounds = np.r_[starts, n].astype(np.int64)
        group = np.cumsum(new) - 1
        imp = num("impressions")
        before = np.cumsum(imp) - imp
        age = (day - day[starts][group]).astype(float) if n else np.zeros(0)
        first, last = pa.array(starts), pa.array(bounds[1:] - 1)
        return cls(
            daily["campaign_id"].take(first).to_pylist(),
            daily["creative_id"].take(first).to_pylist(),
            daily["adset_id"].take(last).to_pylist(),
            day,
            imp,
            num("clicks"),
            num("spend"),
            bounds,
            group,
            age,
            before - before[starts][group] if n else np.zeros(0),
        )


#: The decay fit of every creative series, with a digest of the rows it was fitted on
#: (:func:`_fits`): a series whose rows are the same (a creative that stopped delivering) is
#: not fitted again.
FITS_TABLE = "fatigue_fits"
#: Bump when :func:`fit_decays` or what a series holds changes: stored fits are then unused.
FITS_VERSION = 1
_U64 = np.uint64


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser of each element (unsigned 64-bit, wrapping)."""
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return np.asarray(x ^ (x >> _U64(31)), np.uint64)


def _digests(s: _Series) -> np.ndarray:
    """One 64-bit digest per series of everything its fit reads: each row's place in the
    series, day, impressions and clicks (the bits of the floats), mixed, summed per series
    (wrapping). Age and exposure follow from those rows."""
    if s.n == 0:
        return np.zeros(0, np.uint64)
    place = (np.arange(len(s.group)) - s.bounds[:-1][s.group]).astype(np.uint64)
    h = _mix(s.day.astype(np.int64).astype(np.uint64) + _U64(FITS_VERSION))
    for bits in (s.imp.view(np.uint64), s.clicks.view(np.uint64), place):
        h = _mix(h ^ bits)
    return np.asarray(np.add.reduceat(h, s.bounds[:-1]), np.uint64)


def _fits(ws: Workspace, s: _Series) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fit_decays` of every series of ``s``: the stored fit of a series whose digest
    (:func:`_digests`) is the stored one, the others fitted (together), then every series'
    fit stored for the next call when any was fitted (on a DuckDB workspace that can be
    written).

    Each series is fitted on its own rows only (:func:`fit_decays` gives a series what it
    gives it alone, to the bit), so a stored fit is the one a full fit would give. A history
    is mostly creatives that stopped delivering long ago: fitting every one of them again
    each day grew the daily run with the history. At 1,000 campaigns the next day fits 6,049
    of 15,072 series: 0.24-0.32 s instead of 0.46-0.49 s for all of them behind 89 days,
    0.30-0.53 s instead of 0.76-0.87 s behind 179 (BENCHMARKS.md).
    """
    digest = _digests(s)
    beta, cov = np.zeros((s.n, 3)), np.zeros((s.n, 3, 3))
    hit = np.zeros(s.n, bool)
    stored = _read_fits(ws)
    if stored is not None and s.n:
        at = {
            k: i
            for i, k in enumerate(zip(stored["campaign_id"], stored["creative_id"], strict=True))
        }
        found = np.array(
            [at.get(k, -1) for k in zip(s.campaign_id, s.creative_id, strict=True)], np.int64
        )
        known = found >= 0
        hit[known] = stored["digest"][found[known]] == digest[known]
        beta[hit] = stored["beta"][found[hit]]
        cov[hit] = stored["cov"][found[hit]]
    miss = np.flatnonzero(~hit)
    if len(miss):
        rows = np.flatnonzero(~hit[s.group])
        local = np.cumsum(~hit) - 1
        b, c = fit_decays(
            s.clicks[rows],
            s.imp[rows],
            s.age[rows],
            s.exposure[rows],
            local[s.group[rows]],
            len(miss),
        )
        beta[miss], cov[miss] = b, c
        _store_fits(ws, s, digest, beta, cov)
    return beta, cov


def _read_fits(ws: Workspace) -> dict[str, Any] | None:
    """The stored fits as arrays (``None``: none stored, of another version, or not a DuckDB
    workspace)."""
    if ws.backend != "duckdb" or ws.read_meta(FITS_TABLE).get("version") != FITS_VERSION:
        return None
    try:
        t = ws.con.execute(f"SELECT * FROM {FITS_TABLE}").fetch_arrow_table()
    except duckdb.CatalogException:
        return None
    return {
        "campaign_id": t["campaign_id"].to_pylist(),
        "creative_id": t["creative_id"].to_pylist(),
        "digest": np.asarray(t["digest"].to_numpy(), np.uint64),
        "beta": np.column_stack([t[f"b{i}"].to_numpy() for i in range(3)]),
        "cov": np.column_stack([t[f"c{i}"].to_numpy() for i in range(9)]).reshape(-1, 3, 3),
    }


def _store_fits(
    ws: Workspace, s: _Series, digest: np.ndarray, beta: np.ndarray, cov: np.ndarray
) -> None:
    """Replace the stored fits with these (nothing on a read-only or non-DuckDB workspace,
    nor when another thread writes at the same time: the fits are then only not kept)."""
    if ws.read_only or ws.backend != "duckdb":
        return
    flat = cov.reshape(-1, 9)
    t = pa.table(
        {
            "campaign_id": pa.array(s.campaign_id, pa.string()),
            "creative_id": pa.array(s.creative_id, pa.string()),
            "digest": pa.array(digest, pa.uint64()),
            **{f"b{i}": beta[:, i] for i in range(3)},
            **{f"c{i}": flat[:, i] for i in range(9)},
        }
    )
    ws.con.register("_fatigue_fits", t)
    try:
        with ws.transaction() as con:
            con.execute(f"CREATE OR REPLACE TABLE {FITS_TABLE} AS SELECT * FROM _fatigue_fits")
            ws.write_meta(FITS_TABLE, {"version": FITS_VERSION})
    except duckdb.TransactionException:
        pass
    finally:
        ws.con.unregister("_fatigue_fits")


def _same_as_previous(col: pa.Array) -> np.ndarray:
    """Per row after the first, whether ``col`` holds the same value as the row before
    (two nulls are the same, a null and a value are not)."""
    if len(col) < 2:
        return np.zeros(0, bool)
    a, b = col.slice(1), col.slice(0, len(col) - 1)
    equal = pc.fill_null(pc.equal(a, b), False).to_numpy(zero_copy_only=False)
    both_null = pc.and_(pc.is_null(a), pc.is_null(b)).to_numpy(zero_copy_only=False)
    return np.asarray(equal | both_null, bool)


def _conversions_by_creative(ctx: CheckContext) -> pd.DataFrame:
    """Conversions per ``creative`` and ``day`` (``datetime64[D]``), ``n``."""
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
    c = c.filter(c.creative.notnull() & c.day.notnull())
    out = c.group_by(["creative", "day"]).aggregate(n=c.count()).to_pyarrow()
    return pd.DataFrame(
        {
            "creative": out["creative"].to_numpy(zero_copy_only=False),
            "day": out["day"].to_numpy().astype("datetime64[D]"),
            "n": np.asarray(out["n"].to_numpy(), float),
        }
    )


def _one(
    s: _Series, g: int, beta: np.ndarray, cov: np.ndarray, conv_rel: float | None, as_of: date
) -> CreativeFatigue:
    lo_row, hi_row = int(s.bounds[g]), int(s.bounds[g + 1])
    days, imp = s.age[lo_row:hi_row], s.imp[lo_row:hi_row]
    exposure = s.exposure[lo_row:hi_row]
    launched = _date(s.day[lo_row])

    def rel(age: float, expo: float) -> tuple[float, float, float]:
        d = np.array([0.0, -age, -expo / EXPOSURE_UNIT])
        m, sd = float(d @ beta), float(math.sqrt(max(d @ cov @ d, 0.0)))
        return math.exp(m), math.exp(m - Z90 * sd), math.exp(m + Z90 * sd)

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
    last = _date(s.day[hi_row - 1])
    live = (as_of - last).days < 2
    to_fatigue: int | None = None
    if onset is None and live:
        rate = float(imp[-7:].mean())
        ks = np.arange(1, HORIZON + 1, dtype=float)
        ahead = below(age_now + ks, expo_now + ks * rate)
        to_fatigue = int(ks[ahead[0]]) if len(ahead) else None
    start_ctr = math.exp(beta[0])
    recent = s.day[lo_row:hi_row] > np.datetime64(as_of - timedelta(days=7), "D")
    return CreativeFatigue(
        creative_id=s.creative_id[g],
        campaign_id=s.campaign_id[g],
        adset_id=s.adset_id[g],
        launched=launched,
        days=int(days[-1]) + 1,
        impressions=int(imp.sum()),
        clicks=int(s.clicks[lo_row:hi_row].sum()),
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
        spend_7d=float(s.spend[lo_row:hi_row][recent].sum()),
    )


def _date(d: np.datetime64) -> date:
    return date.fromordinal(int(d.astype(np.int64)) + _EPOCH)


_EPOCH = date(1970, 1, 1).toordinal()


def _conversion_decays(s: _Series, conv: pd.DataFrame, among: np.ndarray) -> dict[int, float]:
    """Per series of ``among`` (ascending) with 200 clicks and 20 conversions of its
    creative: the conversion rate per click now relative to its start (log-linear in age),
    fitted for all of them at once (each alone, as :func:`fit_decays` fits: the same
    whichever others).

    A conversion counts for every series of its creative (conversions name creatives, not
    campaigns). Creatives and days are matched as integer keys (the creative's number among
    the series' creatives, and the day), not as a pandas index of strings and dates."""
    tot_clicks = np.bincount(s.group, s.clicks, minlength=s.n)
    creatives = pd.Index(s.creative_id, dtype=object)
    names = creatives.unique()
    code = names.get_indexer(creatives)  # per series
    c_code = names.get_indexer(pd.Index(conv["creative"].to_numpy(), dtype=object))
    mine = c_code >= 0
    c_code, c_day, c_n = c_code[mine], conv["day"].to_numpy()[mine], conv["n"].to_numpy()[mine]
    tot_conv = np.bincount(c_code, c_n, minlength=len(names))[code]
    enough = (tot_clicks >= 200) & (tot_conv >= 20)
    chosen = among[enough[among]]
    if not len(chosen):
        return {}
    picked = np.zeros(s.n, bool)
    picked[chosen] = True  # (``among`` ascends, so the chosen series' rows ascend too)
    rows = np.flatnonzero(picked[s.group] & (s.clicks > 0))
    local = np.searchsorted(chosen, s.group[rows])
    want = _creative_day_keys(code[s.group[rows]], s.day[rows])
    have = pd.Index(_creative_day_keys(c_code, c_day))  # (one row per creative and day)
    at = have.get_indexer(want)
    y = np.where(at >= 0, c_n[np.maximum(at, 0)], 0.0)
    beta, _cov = fit_decays(y, s.clicks[rows], s.age[rows], np.zeros(len(rows)), local, len(chosen))
    last_age = np.zeros(len(chosen))
    last_age[local] = s.age[rows]  # rows ascend within a series: the last write is its last
    return {int(g): float(math.exp(-beta[j, 1] * last_age[j])) for j, g in enumerate(chosen)}


def _creative_day_keys(code: np.ndarray, day: np.ndarray) -> np.ndarray:
    """One int64 per (creative number, day): the number in the high 32 bits."""
    days = day.astype("datetime64[D]").astype(np.int64) + (1 << 31)
    return (code.astype(np.int64) << 32) | days


def _starvation(
    creatives: list[CreativeFatigue],
    supply: dict[str, tuple[date, float]],
    as_of: date,
    starvation_days: int,
) -> list[dict[str, Any]]:
    """Each campaign's verdict: from its listed ``creatives`` (every live one is listed) and
    its ``supply`` over all of them (:func:`_supply`)."""
    out = []
    by: dict[str, list[CreativeFatigue]] = {}
    for c in creatives:
        by.setdefault(c.campaign_id, []).append(c)
    for cid in sorted(supply):
        crs = by.get(cid, [])
        newest, best_start = supply[cid]
        live = [c for c in crs if c.live and c.spend_7d > 0]
        total = sum(c.spend_7d for c in live)
        fatigued = sum(c.spend_7d for c in live if c.status == "fatigued")
        share = fatigued / total if total else 0.0
        since = (as_of - newest).days
        top = max(live, key=lambda c: c.spend_7d) if live else None
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
