"""Signal-environment checks: integration dropouts, attribution match, creative freshness,
conversion volume. Each also records its 0-1 score of the signal environment.

Heavy work (daily counts, the delay histogram, joins) is ibis; the per-campaign daily series
that come back (campaigns x days) are small and handled with numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

import ibis
import numpy as np
from ibis import _

from signalloop.attribution import crm_record_campaigns
from signalloop.checks.base import CheckContext, Finding, creative_rows, register

TRACKED = ("pixel", "server")


def poisson_cdf(k: int, mu: float) -> float:
    """P(X <= k) for X ~ Poisson(mu).

    >>> round(poisson_cdf(0, 2.0), 4)
    0.1353
    """
    if mu <= 0:
        return 1.0
    total, term = 0.0, math.exp(-mu)
    for i in range(k + 1):
        if i > 0:
            term *= mu / i
        total += term
    return min(total, 1.0)


def delay_pmf(ctx: CheckContext, max_days: int = 21) -> np.ndarray:
    """Daily click-to-conversion delay distribution of tracked conversions (days 0..max_days).

    Estimated from conversions whose click is at least ``max_days`` before the as-of date, so
    the recent, still-arriving clicks do not bias it short; the last bin holds the tail.
    """
    if "delay_pmf" in ctx.cache:
        cached: np.ndarray = ctx.cache["delay_pmf"]
        return cached
    conv = ctx.conversions.filter(
        ctx.conversions.source.isin(TRACKED) | ctx.conversions.source.isnull()
    )
    c = conv
    # the stored click time, else the click's first touchpoint (after the limit either way
    # when that touchpoint is after the as-of date)
    click_ts = ibis.coalesce(c.click_ts, c.click_first_ts)
    limit = ibis.literal(ctx.cutoff - timedelta(days=max_days))
    c = c.filter(click_ts.notnull() & (click_ts < limit))
    lag = ((c.ts.date() - click_ts.date()).cast("int32")).clip(0, max_days)
    hist = c.group_by(lag=lag).aggregate(n=c.count()).to_pyarrow().to_pylist()
    pmf = np.zeros(max_days + 1)
    for r in hist:
        if r["lag"] is not None:
            pmf[int(r["lag"])] += r["n"]
    if pmf.sum() == 0:  # no history yet: about a day, as the platforms report
        pmf[:3] = (0.5, 0.3, 0.2)
    pmf = np.asarray(pmf / pmf.sum(), dtype=float)
    ctx.cache["delay_pmf"] = pmf
    return np.asarray(pmf)


def _daily(t: Any, days: list[date], key: str = "campaign_id") -> dict[str, np.ndarray]:
    """Per ``key`` value, its ``n`` on each of ``days`` (a daily series; rows of other days and
    without a key left out; a key with no row on ``days`` gets no series).

    ``t`` is an arrow table (a query's ``to_pyarrow()``) with ``key``, ``day`` and ``n``.
    Worked out with arrays, not per row: at 1,000 campaigns a series per campaign and day of
    conversions is half a million rows.

    >>> import pyarrow as pa
    >>> rows = pa.Table.from_pylist([{"campaign_id": "a", "day": date(2026, 1, 2), "n": 3},
    ...                              {"campaign_id": None, "day": date(2026, 1, 2), "n": 1},
    ...                              {"campaign_id": "b", "day": date(2026, 1, 9), "n": 5}])
    >>> {k: v.tolist() for k, v in _daily(rows, [date(2026, 1, 1), date(2026, 1, 2)]).items()}
    {'a': [0.0, 3.0]}
    """
    import pyarrow as pa

    if not len(days) or not t.num_rows:
        return {}
    first = (days[0] - date(1970, 1, 1)).days
    if (days[-1] - days[0]).days != len(days) - 1:  # not one run of days: look each up
        index = {(d - date(1970, 1, 1)).days - first: i for i, d in enumerate(days)}
    else:
        index = None
    keys = t.column(key).cast(pa.string()).dictionary_encode().combine_chunks()
    code = keys.indices.to_numpy(zero_copy_only=False)
    has_key = ~np.asarray(keys.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    day_col = t.column("day").cast(pa.date32()).cast(pa.int32())
    day_null = np.asarray(day_col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    offset = day_col.fill_null(0).to_numpy().astype(np.int64) - first
    if index is None:
        pos, ok = offset, (offset >= 0) & (offset < len(days))
    else:
        pos = np.array([index.get(int(o), -1) for o in offset], dtype=np.int64)
        ok = pos >= 0
    ok &= has_key & ~day_null
    n = t.column("n").cast(pa.float64()).to_numpy(zero_copy_only=False)
    code, pos, n = np.where(ok, code, 0).astype(np.int64)[ok], pos[ok], n[ok]
    names = keys.dictionary.to_pylist()
    series = np.zeros((len(names), len(days)))
    np.add.at(series, (code, pos), n)  # row by row in order, as a loop would add them
    seen, first_row = np.unique(code, return_index=True)  # in the order keys first appear
    return {str(names[i]): series[i] for i in seen[np.argsort(first_row, kind="stable")].tolist()}


def _spend_daily(ctx: CheckContext, column: str, days: list[date]) -> dict[str, np.ndarray]:
    """Per campaign, the spend export's daily sum of ``column`` (rows where it is set)."""
    sp = ctx.table("spend")
    sp = sp.filter(sp.campaign_id.notnull() & sp[column].notnull())
    rows = (
        sp.group_by(campaign_id=sp.campaign_id, day=sp.date)
        .aggregate(n=sp[column].sum())
        .to_pyarrow()
    )
    return _daily(rows, days)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i - 1))
            start = None
    if start is not None:
        runs.append((start, len(mask) - 1))
    return runs


def _days(ctx: CheckContext) -> list[date]:
    first = ctx.first_day or ctx.as_of
    n = (ctx.as_of - first).days + 1
    return [first + timedelta(days=i) for i in range(max(n, 1))]


@register(
    "integration_dropout",
    scope="campaign",
    severity="critical",
    description="days far below what the trailing history and the campaign's own clicks "
    "(the click log, else the spend export's daily clicks) predict (tracking outages, CRM "
    "sync dropouts), told apart from delivery stops and from conversions that have not "
    "arrived yet",
    holds=True,
    low_ratio=0.25,
    min_expected=6.0,
    max_p=1e-4,
    min_daily_expected=0.3,
    min_days=2,
    stop_ratio=0.2,
    baseline_days=14,
)
def integration_dropout(ctx: CheckContext, opt: Mapping[str, Any]) -> list[Finding]:
    days = _days(ctx)
    pmf = delay_pmf(ctx)
    tp = ctx.rollup("touch_daily")
    tp = tp.filter(tp.campaign_id.notnull())
    clicks = _daily(
        tp.group_by(campaign_id=tp.campaign_id, day=tp.day).aggregate(n=tp.n.sum()).to_pyarrow(),
        days,
    )
    # a campaign without a click log: its daily clicks from the spend export instead
    spend_clicks = _spend_daily(ctx, "clicks", days)
    clicks_source: dict[str, str] = {}
    for cid, from_spend in spend_clicks.items():
        if cid not in clicks or clicks[cid].sum() == 0:
            clicks[cid] = from_spend
            clicks_source[cid] = "spend"
    # (the per-day aggregates of the attributed conversions and CRM rows, kept current as
    # rows arrive, not every conversion and CRM row of the history)
    observed = {"pixel+server": _tracked_daily(ctx, days)}
    # CRM: records entering the funnel per day (each record's first entry stage row, so a
    # stage that is re-written later does not count twice); CRM activity: every stage row of
    # the campaign's records per day. A sync dropout empties all of it; expected from the
    # campaign's own trailing two weeks.
    entries, rows = _crm_days(ctx)
    observed["crm"] = _daily(entries, days)
    activity = _daily(rows, days)
    findings: list[Finding] = []
    uptime: dict[str, float] = {}
    for cid in ctx.campaigns:
        c = clicks.get(cid, np.zeros(len(days)))
        unit = np.convolve(c, pmf)[: len(days)]
        down = np.zeros(len(days), dtype=bool)
        runs: list[tuple[str, int, int, float, float]] = []
        for source, series in observed.items():
            o = series.get(cid)
            if o is None or o.sum() < opt["min_expected"]:
                continue
            runs += [(source, *r) for r in _dropouts(o, unit, opt)]
        a = activity.get(cid)
        if a is not None and a.sum() >= opt["min_expected"]:
            for r in _dropouts(a, _trailing_mean(a, opt["baseline_days"]), opt):
                # the same outage seen in the entries and in all CRM activity: keep one
                runs = [x for x in runs if x[0] != "crm" or x[2] < r[0] or x[1] > r[1]]
                runs.append(("crm", *r))
        for source, start, end, e_sum, o_sum in sorted(runs, key=lambda x: x[1]):
            down[start : end + 1] = True
            active = end == len(days) - 1
            window = (days[start], None if active else days[end])
            ratio = o_sum / e_sum if e_sum else 0.0
            findings.append(
                Finding(
                    "integration_dropout",
                    "critical" if active else "warn",
                    cid,
                    f"{source} conversions {'have been' if active else 'were'} far below "
                    f"what the campaign's clicks predict from {days[start]} to "
                    f"{'now' if active else days[end]}: {o_sum:.0f} observed, "
                    f"{e_sum:.1f} expected ({ratio:.0%})"
                    + (" - still going" if active else " - excluded from learning"),
                    {
                        "source": source,
                        "kind": "tracking_outage" if source != "crm" else "crm_sync_dropout",
                        "observed": int(o_sum),
                        "expected": round(e_sum, 1),
                        "clicks": int(c[start : end + 1].sum()),
                        "clicks_source": clicks_source.get(cid, "touchpoints"),
                        "days": end - start + 1,
                    },
                    active=active,
                    window=window,
                )
            )
        findings.extend(_delivery_stops(cid, c, days, opt))
        last28 = down[-28:]
        measured = any(cid in series for series in observed.values()) or cid in activity
        if not measured:  # no events of its own arrive: uptime cannot be told, not 100%
            ctx.environment.setdefault(cid, {})["integration_uptime"] = {
                "score": None,
                "missing": "first-party conversions",
                "unlock": "first-party conversions (conversions: conversion_id, ts, kind, with "
                "campaign_id or click_id) or CRM records linked to the campaign",
                "evidence": {},
            }
            continue
        uptime[cid] = 1.0 - float(last28.mean()) if len(last28) else 1.0
        ctx.environment.setdefault(cid, {})["integration_uptime"] = {
            "score": round(uptime[cid], 3),
            "evidence": {"days_down_last_28": int(last28.sum())},
        }
    return findings


def _tracked_daily(ctx: CheckContext, days: list[date]) -> dict[str, np.ndarray]:
    """Per campaign, its pixel and server conversions on each of ``days`` (a daily series),
    from the per-day aggregates of the attributed conversions (rollup ``conversion_daily``,
    kept current as rows arrive), not every conversion of the history. Cached on ``ctx``."""
    key = f"tracked_daily:{days[0] if days else None}:{len(days)}"
    if key not in ctx.cache:
        cd = ctx.rollup("conversion_daily")
        tracked = cd.filter(cd.source.isin(TRACKED) | cd.source.isnull())
        rows = tracked.group_by("campaign_id", "day").aggregate(n=tracked.n.sum())
        ctx.cache[key] = _daily(rows.to_pyarrow(), days)
    found: dict[str, np.ndarray] = ctx.cache[key]
    return found


def _crm_days(ctx: CheckContext) -> tuple[Any, Any]:
    """Per campaign and day (arrow tables of ``campaign_id``, ``day``, ``n``): the CRM
    records entering the funnel (their first row of its first stage), and every CRM row.

    From the per-day CRM aggregates (rollup ``crm_daily``) when the cut is the data's end,
    else from the rows before the cut (a record's campaign may differ there)."""
    entry_stage = ctx.settings.funnel[0]
    if ctx.at_the_end:
        cr = ctx.rollup("crm_daily")
        entries = cr.filter(cr.stage == entry_stage)
        return (
            entries.group_by("campaign_id", "day").aggregate(n=entries.firsts.sum()).to_pyarrow(),
            cr.group_by("campaign_id", "day").aggregate(n=cr.n.sum()).to_pyarrow(),
        )
    crm = ctx.table("crm")
    entry = crm.filter(crm.stage == entry_stage)
    entry = entry.group_by("record_id").aggregate(ts=entry.ts.min())
    rec = crm_record_campaigns(ctx.ws, ctx.cutoff)
    lj = entry.join(rec, entry.record_id == rec.record_id)
    rows_all = crm.join(rec, crm.record_id == rec.record_id)
    return (
        lj.group_by(campaign_id=rec.campaign_id, day=entry.ts.date())
        .aggregate(n=lj.count())
        .to_pyarrow(),
        rows_all.group_by(campaign_id=rec.campaign_id, day=crm.ts.date())
        .aggregate(n=rows_all.count())
        .to_pyarrow(),
    )


def _trailing_mean(o: np.ndarray, days: int) -> np.ndarray:
    """Each day's mean over the ``days`` before it (0 until a week of history exists).

    From running sums (one pass, not a slice per day): exact for the counts it is given, whose
    sums are whole numbers.

    >>> _trailing_mean(np.array([2.0, 4, 6, 8, 10, 12, 14, 16, 18]), 3).tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 12.0, 14.0]
    """
    out = np.zeros(len(o))
    if len(o) <= 7:
        return out
    sums = np.concatenate(([0.0], np.cumsum(o, dtype=float)))
    t = np.arange(7, len(o))
    lo = np.maximum(0, t - days)
    out[7:] = (sums[t] - sums[lo]) / (t - lo)
    return out


def _dropouts(
    o: np.ndarray, unit: np.ndarray, opt: Mapping[str, Any]
) -> list[tuple[int, int, float, float]]:
    """Runs of days whose observed count is far below the expectation from clicks."""
    usable = unit > 0
    rate = o[usable].sum() / unit[usable].sum() if usable.any() and unit[usable].sum() else 0.0
    found: list[tuple[int, int, float, float]] = []
    for _pass in range(2):  # re-estimate the rate without the days already found down
        e = rate * unit
        low = (e >= opt["min_daily_expected"]) & (o <= opt["low_ratio"] * e)
        found = []
        for start, end in _runs(low):
            e_sum, o_sum = float(e[start : end + 1].sum()), float(o[start : end + 1].sum())
            if end - start + 1 < opt["min_days"]:
                continue
            if e_sum >= opt["min_expected"] and poisson_cdf(int(o_sum), e_sum) < opt["max_p"]:
                found.append((start, end, e_sum, o_sum))
        keep = usable.copy()
        for start, end, *_rest in found:
            keep[start : end + 1] = False
        if keep.any() and unit[keep].sum():
            rate = o[keep].sum() / unit[keep].sum()
    return found


def _delivery_stops(
    cid: str, c: np.ndarray, days: list[date], opt: Mapping[str, Any]
) -> list[Finding]:
    """Runs of days with (almost) no clicks where the campaign usually has them."""
    out: list[Finding] = []
    typical = float(np.median(c[c > 0])) if (c > 0).any() else 0.0
    if typical < 5:
        return out
    for start, end in _runs(c <= opt["stop_ratio"] * typical):
        if end - start + 1 < 2 or start == 0:
            continue
        out.append(
            Finding(
                "integration_dropout",
                "info",
                cid,
                f"delivery stopped from {days[start]} to {days[end]} (clicks near zero): a "
                "delivery stop, not a tracking outage",
                {
                    "kind": "delivery_stop",
                    "clicks": int(c[start : end + 1].sum()),
                    "typical_daily_clicks": typical,
                },
                window=(days[start], days[end]),
            )
        )
    return out


@register(
    "attribution_match",
    scope="campaign",
    severity="warn",
    description="share of conversions joined to a click by click_id, per platform, and week by "
    "week per campaign against the campaign's own history: a fall (a consent banner or a "
    "redirect stripping gclid / fbclid) is click-id loss, named with the week it broke and "
    "the share before and after; platform-reported against observed conversions. Only "
    "campaigns whose touchpoints carry click ids are judged (elsewhere the score is "
    "unavailable, not 0); the platform comparison needs first-party conversions",
    min_match_share=0.8,
    max_ratio=2.0,
    min_ratio=0.5,
    min_conversions=20,
    loss_min_week_conversions=10,
    loss_baseline_weeks=2,
    loss_weeks=2,
    loss_margin=0.25,
    loss_max_share=0.6,
    loss_onset_z=3.0,
    loss_onset_min=0.02,
)
def attribution_match(ctx: CheckContext, opt: Mapping[str, Any]) -> list[Finding]:
    tp = ctx.rollup("touch_daily")
    with_ids = tp.filter(tp.campaign_id.notnull())
    ids = with_ids.group_by("campaign_id").aggregate(n=with_ids.click_ids.sum())
    ids = ids.filter(ids.n > 0)
    matchable = {str(r["campaign_id"]): int(r["n"]) for r in ids.to_pyarrow().to_pylist()}
    spend = ctx.table("spend")
    platforms = spend.group_by(p_campaign=spend.campaign_id).aggregate(
        platform=spend.platform.arbitrary()
    )
    # the conversions per day and attributed campaign (a rollup kept current as rows arrive):
    # matched when they carry a click id whose touchpoint was seen by the as-of day
    cd = ctx.rollup("conversion_daily")
    seen = cd.click_after.isnull() | (cd.click_after <= ibis.literal(ctx.as_of, type="date"))
    c = cd.mutate(matched=ibis.ifelse(seen, cd.matched, 0))
    c = c.left_join(platforms, c.campaign_id == platforms.p_campaign)
    c = c.mutate(week=c.day.truncate("W"))
    findings: list[Finding] = []
    # judged: conversions of campaigns whose touchpoints carry click ids (and the unattributed
    # ones, once the account has any such touchpoints); the rest have nothing to match
    judged = c.filter(
        # (a semi-join, not a list of a thousand ids that a scan would test one by one)
        c.campaign_id.isin(ids.campaign_id) | c.campaign_id.isnull()
    )
    by_platform = (
        judged.group_by(platform=judged.platform.fill_null("unknown"))
        .aggregate(n=judged.n.sum(), matched=judged.matched.sum())
        .order_by("platform")
        .to_pyarrow()
        .to_pylist()
        if matchable
        else []
    )
    for p in by_platform:
        share = (p["matched"] or 0) / p["n"] if p["n"] else 1.0
        if p["n"] >= opt["min_conversions"] and share < opt["min_match_share"]:
            findings.append(
                Finding(
                    "attribution_match",
                    "warn",
                    None,
                    f"only {share:.0%} of {p['platform']} conversions join a click by click_id",
                    {
                        "kind": "click_id_match",
                        "platform": p["platform"],
                        "conversions": int(p["n"]),
                        "unmatched": int(p["n"] - (p["matched"] or 0)),
                        "matched_share": round(share, 4),
                    },
                )
            )
    weekly = (
        c.group_by("campaign_id", "week")
        .aggregate(n=c.n.sum(), matched=c.matched.sum())
        .order_by(["campaign_id", "week"])
        .to_pyarrow()
        .to_pylist()
    )
    per_campaign: dict[str, list[dict[str, Any]]] = {}
    for r in weekly:
        if r["campaign_id"] is not None:
            per_campaign.setdefault(r["campaign_id"], []).append(r)
    off = _platform_disagreement(ctx, c, opt)
    last4 = ctx.as_of - timedelta(days=ctx.as_of.weekday() + 21)  # Monday, 3 weeks back
    for cid in ctx.campaigns:
        rows = per_campaign.get(cid, [])
        env = ctx.environment.setdefault(cid, {})
        if cid not in matchable:
            env["attribution_accuracy"] = {
                "score": None,
                "missing": "touchpoints with click_id",
                "unlock": "export clicks (touchpoints: touch_id, ts, user_id, campaign_id, "
                "click_id) so conversions can be matched to them by click_id",
                "evidence": {"conversions": sum(int(r["n"]) for r in rows)},
            }
        else:
            recent = [r for r in rows if r["week"] >= last4]
            n = sum(int(r["n"]) for r in recent)
            matched = sum(int(r["matched"] or 0) for r in recent)
            evidence = {"conversions_last_4_weeks": n, "matched_by_click_id": matched}
            env["attribution_accuracy"] = (
                {"score": round(matched / n, 3), "evidence": evidence}
                if n
                else {
                    "score": None,
                    "missing": "conversions in the last 4 weeks",
                    "unlock": "conversions (conversion_id, ts, kind) carrying click_id",
                    "evidence": evidence,
                }
            )
            loss = click_id_loss(
                [(r["week"], int(r["n"]), int(r["matched"] or 0)) for r in rows], opt
            )
            if loss is not None:
                findings.append(
                    Finding(
                        "attribution_match",
                        "warn",
                        cid,
                        f"click-id match share fell from {loss['share_before']:.0%} to "
                        f"{loss['share_after']:.0%} from the week of {loss['break_week']} "
                        f"({loss['weeks_low']} week(s), {loss['unmatched_after']:,} of "
                        f"{loss['conversions_after']:,} conversions without a click id that "
                        "joins a click): click ids are being lost between the ad click and "
                        "the conversion",
                        {"kind": "click_id_loss", **loss},
                        active=True,
                        window=(date.fromisoformat(loss["break_week"]), None),
                    )
                )
        if cid in off:
            findings.append(
                Finding(
                    "attribution_match",
                    "warn",
                    cid,
                    "platform-reported conversions disagree with observed ones in "
                    f"{len(off[cid])} week(s) (ratio outside "
                    f"{opt['min_ratio']}-{opt['max_ratio']})",
                    {"kind": "platform_disagreement", "weeks": off[cid]},
                )
            )
    return findings


def click_id_loss(
    weeks: list[tuple[date, int, int]], opt: Mapping[str, Any]
) -> dict[str, Any] | None:
    """A campaign's click-id match share falling against its own history, or ``None``.

    ``weeks`` are ``(week start, conversions, matched by click_id)`` in time order. Weeks
    with fewer than ``loss_min_week_conversions`` conversions are not judged. The last
    ``loss_weeks`` judged weeks (at least) must each be under ``loss_max_share`` and under
    the baseline (the median share of the judged weeks before them, at least
    ``loss_baseline_weeks`` of them) minus ``loss_margin``. The run of low weeks extends back
    over an earlier week whose share is significantly under the baseline (by more than
    ``loss_onset_z`` binomial standard errors at that week's count and at least
    ``loss_onset_min``): the week the loss began in the middle of. Its first week is the
    week it broke.

    >>> opt = {"loss_min_week_conversions": 10, "loss_baseline_weeks": 2, "loss_weeks": 2,
    ...        "loss_margin": 0.25, "loss_max_share": 0.6, "loss_onset_z": 3.0,
    ...        "loss_onset_min": 0.02}
    >>> w = [date(2026, 1, 5) + timedelta(weeks=i) for i in range(6)]
    >>> rows = list(zip(w, [40] * 6, [38, 39, 38, 31, 12, 11]))
    >>> loss = click_id_loss(rows, opt)
    >>> loss["break_week"], loss["share_before"], loss["share_after"], loss["weeks_low"]
    ('2026-01-26', 0.95, 0.45, 3)
    >>> click_id_loss(list(zip(w, [40] * 6, [38] * 6)), opt) is None
    True
    """
    used = [(w, n, m) for w, n, m in weeks if n >= opt["loss_min_week_conversions"]]
    shares = [m / n for _w, n, m in used]
    k = len(used)
    start = k
    while start > 0 and shares[start - 1] < opt["loss_max_share"]:
        start -= 1
    if k - start < opt["loss_weeks"] or start < opt["loss_baseline_weeks"]:
        return None
    baseline = float(np.median(shares[:start]))
    if any(s >= baseline - opt["loss_margin"] for s in shares[start:]):
        return None
    # a week the loss began in the middle of: significantly under the baseline
    while start - 1 >= opt["loss_baseline_weeks"]:
        n_prev = used[start - 1][1]
        se = math.sqrt(baseline * (1.0 - baseline) / n_prev)
        if shares[start - 1] >= baseline - max(opt["loss_onset_z"] * se, opt["loss_onset_min"]):
            break
        start -= 1
        baseline = float(np.median(shares[:start]))
    low = used[start:]
    n_after = sum(n for _w, n, _m in low)
    m_after = sum(m for _w, _n, m in low)
    n_before = sum(n for _w, n, _m in used[:start])
    return {
        "break_week": used[start][0].isoformat(),
        "share_before": round(baseline, 3),
        "share_after": round(m_after / n_after, 3),
        "weeks_low": len(low),
        "conversions_before": n_before,
        "conversions_after": n_after,
        "unmatched_after": n_after - m_after,
        "weekly": [
            {"week": w.isoformat(), "conversions": n, "matched_share": round(m / n, 3)}
            for w, n, m in used
        ],
    }


def _platform_disagreement(
    ctx: CheckContext, c: Any, opt: Mapping[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """Weeks (by click week) where the platform's conversion count and the observed one
    disagree, per campaign; only campaigns with first-party conversions are compared (with
    none, the platform's count is all there is, not a disagreement)."""
    spend = ctx.table("spend")
    s = spend.mutate(week=spend.date.truncate("W"))
    rep = (
        s.group_by(["campaign_id", "week"])
        .aggregate(reported=s.platform_conversions.sum())
        .to_pyarrow()
        .to_pylist()
    )
    tracked = c.filter(c.source.isin(TRACKED) | c.source.isnull())
    obs = {
        (r["campaign_id"], r["cweek"]): int(r["n"])
        for r in tracked.group_by("campaign_id", cweek=tracked.click_week)
        .aggregate(n=tracked.n.sum())
        .to_pyarrow()
        .to_pylist()
    }
    observed = {cid for cid, _w in obs}
    off: dict[str, list[dict[str, Any]]] = {}
    for r in rep:
        if r["reported"] is None or r["campaign_id"] not in observed:
            continue
        o = obs.get((r["campaign_id"], r["week"]), 0)
        if max(o, r["reported"]) < opt["min_conversions"]:
            continue
        ratio = r["reported"] / o if o else math.inf
        if ratio > opt["max_ratio"] or ratio < opt["min_ratio"]:
            off.setdefault(r["campaign_id"], []).append(
                {"week": str(r["week"]), "reported": r["reported"], "observed": o}
            )
    return off


@register(
    "creative_freshness",
    scope="campaign",
    severity="warn",
    description="days since the newest creative; share of recent spend on fatigued creatives "
    "(CTR well below their own best week) while nothing new arrives: creative starvation",
    max_days_since_new=21,
    fatigued_ratio=0.6,
    max_fatigued_share=0.6,
    min_impressions=1000,
)
def creative_freshness(ctx: CheckContext, opt: Mapping[str, Any]) -> list[Finding]:
    sp = creative_rows(ctx.table("spend"))  # (an ad without a creative id as ad:<ad_id>)
    # weeks counted back from the as-of day: week 0 is the last 7 days
    week = (ibis.literal(ctx.as_of, type="date") - sp.date).cast("int32") // 7
    weeks = (
        sp.mutate(week=week)
        .group_by(["campaign_id", "creative_id", "week"])
        .aggregate(impressions=_.impressions.sum(), clicks=_.clicks.sum(), spend=_.spend.sum())
    )
    # every week of the creatives with spend in the last 7 days (the only ones judged), not
    # of every creative the history has had; the newest launch counts them all
    live = weeks.filter((weeks.week == 0) & (weeks.spend != 0))
    weekly = (
        weeks.semi_join(live, ["campaign_id", "creative_id"])
        .order_by(["campaign_id", "creative_id", "week"])
        .to_pyarrow()
        .to_pylist()
    )
    first = sp.group_by(["campaign_id", "creative_id"]).aggregate(first=_.date.min())
    newest_of = {
        r["campaign_id"]: r["newest"]
        for r in first.group_by("campaign_id")
        .aggregate(newest=first["first"].max())
        .to_pyarrow()
        .to_pylist()
    }
    by: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in weekly:
        by.setdefault(r["campaign_id"], {}).setdefault(r["creative_id"], []).append(r)
    findings: list[Finding] = []
    for cid in ctx.campaigns:
        newest = newest_of.get(cid)
        if newest is None:
            continue
        crs = by.get(cid, {})
        since = (ctx.as_of - newest).days
        total7 = fatigued7 = 0.0
        fatigued = []
        for cr, rows in crs.items():
            now = next((r for r in rows if r["week"] == 0), None)
            if now is None or not now["spend"]:
                continue
            total7 += now["spend"]
            ctrs = [
                r["clicks"] / r["impressions"]
                for r in rows
                if r["impressions"] >= opt["min_impressions"]
            ]
            if now["impressions"] >= opt["min_impressions"] and ctrs:
                ratio = (now["clicks"] / now["impressions"]) / max(ctrs)
                if ratio < opt["fatigued_ratio"]:
                    fatigued7 += now["spend"]
                    fatigued.append({"creative_id": cr, "ctr_vs_best_week": round(ratio, 3)})
        share = fatigued7 / total7 if total7 else 0.0
        evidence = {
            "days_since_newest_creative": since,
            "newest_creative_launched": newest.isoformat(),
            "fatigued_spend_share_7d": round(share, 3),
            "fatigued_creatives": fatigued,
            "live_creatives": sum(
                1 for rows in crs.values() for r in rows if r["week"] == 0 and r["spend"]
            ),
        }
        ctx.environment.setdefault(cid, {})["creative_freshness"] = {
            "score": round(1.0 - share, 3),
            "evidence": evidence,
        }
        if since >= opt["max_days_since_new"] and share >= opt["max_fatigued_share"]:
            findings.append(
                Finding(
                    "creative_freshness",
                    "warn",
                    cid,
                    f"no new creative for {since} days while {share:.0%} of the last 7 days' "
                    "spend went to fatigued creatives (CTR under "
                    f"{opt['fatigued_ratio']:.0%} of their best week): creative starvation",
                    evidence,
                    active=True,
                    window=(newest, None),
                )
            )
    return findings


@register(
    "conversion_volume",
    scope="adset",
    severity="warn",
    description="conversions in the trailing 7 days per ad set and campaign against the "
    "learning threshold: first-party tracked conversions, else the platform-reported ones of "
    "the spend rows (labelled volume_source platform_reported); with neither the volume is "
    "unavailable (score None, what is missing and which export unlocks it), not 0",
)
def conversion_volume(ctx: CheckContext, opt: Mapping[str, Any]) -> list[Finding]:
    threshold = ctx.settings.learning_threshold
    c = ctx.tracked_conversions
    start = ctx.as_of - timedelta(days=6)
    days = _days(ctx)
    daily = _tracked_daily(ctx, days)
    last7 = c.filter(c.day >= start)
    per_adset = (
        last7.group_by(campaign_id=last7.attributed_campaign_id, adset_id=last7.adset)
        .aggregate(n=last7.count())
        .to_pyarrow()
        .to_pylist()
    )
    # the platform's own counts, for campaigns without any first-party conversion
    reported = _spend_daily(ctx, "platform_conversions", days)
    sp = ctx.table("spend")
    sp = sp.filter(sp.platform_conversions.notnull())
    sp7 = sp.filter(sp.date >= start)
    per_adset += [
        {**r, "platform": True}
        for r in sp7.group_by(campaign_id=sp7.campaign_id, adset_id=sp7.adset_id)
        .aggregate(n=sp7.platform_conversions.sum())
        .to_pyarrow()
        .to_pylist()
    ]
    adset_counts: dict[tuple[str, bool], dict[str, int]] = {}
    for r in per_adset:
        if r["campaign_id"] is not None:
            key = (r["campaign_id"], bool(r.get("platform")))
            adset_counts.setdefault(key, {})[r["adset_id"] or "(none)"] = round(float(r["n"] or 0))
    findings: list[Finding] = []
    for cid in ctx.campaigns:
        env = ctx.environment.setdefault(cid, {})
        if cid in daily and daily[cid].sum() > 0:
            source, series = "first_party", daily[cid]
        elif cid in reported and reported[cid].sum() > 0:
            source, series = "platform_reported", reported[cid]
        else:
            env["conversion_volume"] = {
                "score": None,
                "missing": "conversions",
                "unlock": "first-party conversions (conversions: conversion_id, ts, kind, with "
                "campaign_id or click_id), or the platform's conversion counts in the spend "
                "export (platform_conversions)",
                "evidence": {"threshold": threshold},
            }
            continue
        n7 = round(float(series[-7:].sum()))
        rolling = np.convolve(series, np.ones(7))[: len(series)]
        below = rolling[6:] < threshold if len(series) >= 7 else np.array([], dtype=bool)
        weeks_below = []
        for s, e in _runs(below):
            weeks_below.append({"start": days[s].isoformat(), "end": days[e + 6].isoformat()})
        what = "conversions" if source == "first_party" else "platform-reported conversions"
        env["conversion_volume"] = {
            "score": round(min(1.0, n7 / threshold), 3),
            "evidence": {"conversions_7d": n7, "threshold": threshold, "volume_source": source},
        }
        sets = adset_counts.get((cid, source == "platform_reported"), {})
        # conversions naming no ad set ("(none)") are not an ad set below the threshold
        limited = sorted(a for a, n in sets.items() if a != "(none)" and n < threshold)
        if n7 < threshold or limited or weeks_below:
            findings.append(
                Finding(
                    "conversion_volume",
                    "warn" if n7 < threshold else "info",
                    cid,
                    f"{n7} {what} in the last 7 days against a learning threshold of "
                    f"{threshold}"
                    + (f"; {len(limited)} ad set(s) below it" if limited else "")
                    + (
                        f"; below it over {len(weeks_below)} stretch(es) of the history"
                        if weeks_below
                        else ""
                    )
                    + (
                        " (no first-party conversions for this campaign: the platform's own "
                        "count, which over-counts)"
                        if source == "platform_reported"
                        else ""
                    ),
                    {
                        "conversions_7d": n7,
                        "threshold": threshold,
                        "volume_source": source,
                        "adsets_7d": sets,
                        "below_threshold_periods": weeks_below,
                    },
                    active=n7 < threshold,
                )
            )
    return findings
