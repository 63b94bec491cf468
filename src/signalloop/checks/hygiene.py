"""Event-hygiene checks: UTM naming, duplicates, timestamps, labels, stage order, late offline.

Each is computed with ibis over the workspace cut at the as-of date; only small aggregates
(one row per value, campaign or record group) come back to Python.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

import ibis
from ibis import _

from signalloop.attribution import click_time, crm_record_campaigns
from signalloop.checks.base import CheckContext, Finding, register, to_date
from signalloop.checks.core import funnel_ranks, stage_flags

_d = to_date


def _active(ctx: CheckContext, last: date | None, days: int) -> bool:
    return last is not None and (ctx.as_of - last).days < days


@register(
    "utm_hygiene",
    scope="campaign",
    severity="warn",
    description="UTM sources and mediums written several ways, or outside the taxonomy",
    min_share=0.01,
    min_rows=5,
)
def utm_hygiene(ctx: CheckContext, opt: Mapping[str, Any]) -> list[Finding]:
    tp = ctx.rollup("touch_daily")
    findings: list[Finding] = []
    for col, allowed in (
        ("utm_source", ctx.settings.sources),
        ("utm_medium", ctx.settings.mediums),
    ):
        t = tp.filter(tp[col].notnull())
        rows = (
            t.group_by(raw=t[col], campaign_id=t.campaign_id)
            .aggregate(n=t.n.sum(), first=t.first.min(), last=t.last.max())
            .to_pyarrow()
            .to_pylist()
        )
        by_canon: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        per_campaign: dict[str | None, dict[str, Any]] = {}
        for r in rows:
            canon = ctx.settings.canonical_utm(r["raw"])
            by_canon[canon][r["raw"]] += r["n"]
            c = per_campaign.setdefault(
                r["campaign_id"], {"total": 0, "off": defaultdict(int), "first": None, "last": None}
            )
            c["total"] += r["n"]
            if r["raw"] != canon:
                c["off"][r["raw"]] += r["n"]
                f, la = _d(r["first"]), _d(r["last"])
                c["first"] = min(x for x in (c["first"], f) if x) if f else c["first"]
                c["last"] = max(x for x in (c["last"], la) if x) if la else c["last"]
        for canon, variants in sorted(by_canon.items()):
            if len(variants) > 1 or canon not in variants:
                findings.append(
                    Finding(
                        "utm_hygiene",
                        "warn",
                        None,
                        f"{col} {canon!r} is written {len(variants)} ways: "
                        + ", ".join(f"{v!r} ({n:,})" for v, n in sorted(variants.items())),
                        {"column": col, "proposed": canon, "variants": dict(variants)},
                    )
                )
            if canon not in allowed:
                findings.append(
                    Finding(
                        "utm_hygiene",
                        "warn",
                        None,
                        f"{col} {canon!r} is outside the taxonomy ({sum(variants.values()):,} "
                        "touchpoints)",
                        {
                            "column": col,
                            "value": canon,
                            "rows": sum(variants.values()),
                            "taxonomy": list(allowed),
                        },
                    )
                )
        for cid, c in sorted(per_campaign.items(), key=lambda kv: str(kv[0])):
            off = sum(c["off"].values())
            if cid is None or off < opt["min_rows"] or off / c["total"] < opt["min_share"]:
                continue
            findings.append(
                Finding(
                    "utm_hygiene",
                    "warn",
                    cid,
                    f"{off:,} of {c['total']:,} touchpoints ({off / c['total']:.0%}) carry a "
                    f"non-canonical {col}: " + ", ".join(f"{k!r}" for k in sorted(c["off"])),
                    {
                        "column": col,
                        "rows": off,
                        "share": round(off / c["total"], 4),
                        "variants": dict(c["off"]),
                        "proposed": {k: ctx.settings.canonical_utm(k) for k in c["off"]},
                    },
                    window=(c["first"], c["last"]) if c["first"] else None,
                )
            )
    return findings


@register(
    "duplicates",
    scope="campaign",
    severity="warn",
    description="events repeated under one natural key (copies folded at ingest still count)",
    holds=True,
    critical_share=0.05,
    active_days=3,
)
def duplicates(ctx: CheckContext, opt: Mapping[str, Any]) -> list[Finding]:
    d = ctx.ws.table("duplicates")
    findings: list[Finding] = []
    # conversions: place each duplicated id on its attributed campaign and its event time
    conv = ctx.conversions
    dc = d.filter(d.kind == "conversions")
    j = dc.join(conv, dc.key == conv.conversion_id)
    none = "(unattributed)"  # one group for them all (null never equals null in a join)
    per = j.group_by(cid=conv.attributed_campaign_id.fill_null(none)).aggregate(
        keys=dc.key.nunique(), copies=dc.copies.sum(), first=conv.ts.min(), last=conv.ts.max()
    )
    # every conversion per campaign from the per-day counts (rollup ``conversion_daily``),
    # not a second pass over every conversion of the history
    cd = ctx.rollup("conversion_daily")
    totals = cd.group_by(cid=cd.campaign_id.fill_null(none)).aggregate(n=cd.n.sum())
    per = per.left_join(totals, per.cid == totals.cid)
    per = per.select(
        campaign_id=ibis.ifelse(per.cid == none, ibis.null("string"), per.cid),
        keys=per.keys,
        copies=per.copies,
        first=per.first,
        last=per.last,
        n=per.n,
    )
    for r in per.order_by("campaign_id").to_pyarrow().to_pylist():
        share = r["copies"] / max(r["n"] or 0, 1)
        last = _d(r["last"])
        active = _active(ctx, last, opt["active_days"])
        severe = share >= opt["critical_share"]
        findings.append(
            Finding(
                "duplicates",
                "critical" if severe and active else "warn",
                r["campaign_id"],
                f"{r['copies']:,} duplicate conversion events ({share:.1%} of "
                f"{r['n'] or 0:,}"
                + (")" if r["campaign_id"] else " that no campaign can claim)")
                + f" under {r['keys']:,} conversion ids; ingest kept one copy each",
                {
                    "kind": "conversions",
                    "copies": int(r["copies"]),
                    "ids": int(r["keys"]),
                    "share": round(share, 4),
                },
                active=active and severe,
                window=(_d(r["first"]), last) if r["first"] else None,  # type: ignore[arg-type]
            )
        )
    other = d.filter(d.kind != "conversions")
    rows = (
        other.group_by(["kind", "campaign_id"])
        .aggregate(keys=other.key.nunique(), copies=other.copies.sum())
        .order_by(["kind", "campaign_id"])
        .to_pyarrow()
        .to_pylist()
    )
    for r in rows:
        findings.append(
            Finding(
                "duplicates",
                "warn",
                r["campaign_id"],
                f"{r['copies']:,} duplicate {r['kind']} rows under {r['keys']:,} keys",
                {"kind": r["kind"], "copies": int(r["copies"]), "keys": int(r["keys"])},
            )
        )
    return findings


@register(
    "timestamps",
    scope="campaign",
    severity="warn",
    description="future times, events before the campaign's first spend, conversions before "
    "their click",
    min_rows=3,
)
def timestamps(ctx: CheckContext, opt: Mapping[str, Any]) -> list[Finding]:
    findings: list[Finding] = []
    q = ctx.ws.table("quarantine")
    fut = (
        q.filter(q.code == "future")
        .group_by("kind")
        .aggregate(n=_.count())
        .to_pyarrow()
        .to_pylist()
    )
    for r in fut:
        findings.append(
            Finding(
                "timestamps",
                "warn",
                None,
                f"{r['n']:,} {r['kind']} rows stamped in the future were quarantined at ingest",
                {"kind": r["kind"], "rows": int(r["n"]), "source": "quarantine"},
            )
        )
    from signalloop import rollups

    touches = rollups.table(ctx.ws, "touch_daily")
    for name in ("touchpoints", "conversions"):
        if name == "touchpoints":
            later = int(touches.filter(touches.day > ctx.as_of).n.sum().fill_null(0).execute())
        else:
            t = ctx.ws.table(name)
            later = int(t.filter(t.ts >= ctx.cutoff).count().execute())
        if later:
            findings.append(
                Finding(
                    "timestamps",
                    "info",
                    None,
                    f"{later:,} {name} lie after the as-of date {ctx.as_of} and are left out",
                    {"kind": name, "rows": later},
                )
            )
    spend = ctx.table("spend")
    first = spend.group_by("campaign_id").aggregate(first_day=spend.date.min())
    tp = ctx.rollup("touch_daily")
    early_tp = tp.join(first, tp.campaign_id == first.campaign_id).filter(tp.day < first.first_day)
    # the conversions per campaign and day (rollup ``conversion_daily``), not every one
    cd = ctx.rollup("conversion_daily")
    early_cv = cd.join(first, cd.campaign_id == first.campaign_id).filter(cd.day < first.first_day)
    before: dict[str | None, dict[str, int]] = defaultdict(dict)
    for label, counted in (
        ("touchpoints", early_tp.group_by("campaign_id").aggregate(n=early_tp.n.sum())),
        ("conversions", early_cv.group_by("campaign_id").aggregate(n=early_cv.n.sum())),
    ):
        for r in counted.to_pyarrow().to_pylist():
            before[r["campaign_id"]][label] = int(r["n"])
    for cid, counts in sorted(before.items()):
        if sum(counts.values()) >= opt["min_rows"]:
            findings.append(
                Finding(
                    "timestamps",
                    "warn",
                    cid,
                    "events before the campaign's first spend: "
                    + ", ".join(f"{n:,} {k}" for k, n in counts.items()),
                    {"before_first_spend": counts},
                )
            )
    # conversion before its click: the row's click_ts, else the clicked touchpoint's time
    c2 = ctx.conversions
    click_ts = ibis.coalesce(c2.click_ts, click_time(c2, ctx.cutoff))
    bad = c2.filter(click_ts.notnull() & (c2.ts < click_ts))
    rows = (
        bad.group_by(campaign_id=bad.attributed_campaign_id)
        .aggregate(
            n=bad.count(),
            worst_hours=((click_ts.epoch_seconds() - bad.ts.epoch_seconds()) / 3600).max(),
        )
        .to_pyarrow()
        .to_pylist()
    )
    for r in sorted(rows, key=lambda r: str(r["campaign_id"])):
        if r["n"] >= opt["min_rows"]:
            findings.append(
                Finding(
                    "timestamps",
                    "warn",
                    r["campaign_id"],
                    f"{r['n']:,} conversions are stamped before their click",
                    {
                        "conversion_before_click": int(r["n"]),
                        "worst_hours_before": round(float(r["worst_hours"]), 1),
                    },
                )
            )
    return findings


@register(
    "label_completeness",
    scope="campaign",
    severity="warn",
    description="conversions without kind or value, unattributable conversions, CRM records "
    "without stage, and how deep the feedback loop reaches",
    max_missing_value_share=0.05,
    max_unattributed_share=0.05,
    outcome_age_days=60,
)
def label_completeness(ctx: CheckContext, opt: Mapping[str, Any]) -> list[Finding]:
    findings: list[Finding] = []
    q = ctx.ws.table("quarantine")
    miss = q.filter((q.code == "missing_value") & q.kind.isin(["conversions", "crm"]))
    for r in miss.group_by(["kind", "column"]).aggregate(n=_.count()).to_pyarrow().to_pylist():
        if (r["kind"], r["column"]) in (("conversions", "kind"), ("crm", "stage")):
            findings.append(
                Finding(
                    "label_completeness",
                    "warn",
                    None,
                    f"{r['n']:,} {r['kind']} rows had no {r['column']} and were quarantined",
                    {"kind": r["kind"], "column": r["column"], "rows": int(r["n"])},
                )
            )
    # one pass over the conversions: counts by campaign, kind and source, summed below
    cells = _conversion_cells(ctx)
    vk: dict[tuple[Any, Any], list[int]] = defaultdict(lambda: [0, 0])
    by_source: dict[Any, list[int]] = defaultdict(lambda: [0, 0])
    for c in cells:
        vk[(c["campaign_id"], c["kind"])][0] += c["n"]
        vk[(c["campaign_id"], c["kind"])][1] += c["valued"]
        by_source[c["source"]][0] += c["n"]
        by_source[c["source"]][1] += c["n"] if c["campaign_id"] is None else 0
    # ordered as the database orders them: campaign, then kind, nulls last
    for (cid, kind), (n, valued) in sorted(vk.items(), key=lambda x: _nulls_last(x[0])):
        r = {"campaign_id": cid, "kind": kind, "n": n, "valued": valued}
        missing = r["n"] - r["valued"]
        if r["valued"] > 0 and missing / r["n"] > opt["max_missing_value_share"]:
            findings.append(
                Finding(
                    "label_completeness",
                    "warn",
                    r["campaign_id"],
                    f"{missing:,} of {r['n']:,} {r['kind']} conversions carry no value",
                    {"kind": r["kind"], "missing_value": int(missing), "rows": int(r["n"])},
                )
            )
    for source, (n, unattributed) in sorted(by_source.items(), key=lambda x: _nulls_last(x[:1])):
        r = {"source": source, "n": n, "unattributed": unattributed}
        if r["n"] and r["unattributed"] / r["n"] > opt["max_unattributed_share"]:
            findings.append(
                Finding(
                    "label_completeness",
                    "warn",
                    None,
                    f"{r['unattributed']:,} of {r['n']:,} {r['source'] or 'unsourced'} "
                    "conversions match no campaign (no campaign_id, click_id or earlier touch)",
                    {
                        "source": r["source"],
                        "unattributed": int(r["unattributed"]),
                        "rows": int(r["n"]),
                    },
                )
            )
    findings.extend(_feedback_depth(ctx, opt))
    return findings


def _nulls_last(key: tuple[Any, ...]) -> tuple[tuple[bool, Any], ...]:
    """A sort key ordering ``key``'s values ascending with ``None`` last (as SQL's ``ORDER
    BY`` does by default).

    >>> sorted([("b",), (None,), ("a",)], key=_nulls_last)
    [('a',), ('b',), (None,)]
    """
    return tuple((v is None, "" if v is None else v) for v in key)


def _conversion_cells(ctx: CheckContext) -> list[dict[str, Any]]:
    """Conversions counted by attributed campaign, kind and source (``n``, ``valued``): one
    grouping of the attributed conversions that label completeness and the feedback depth
    both sum (cached on ``ctx``)."""
    if "conversion_cells" not in ctx.cache:
        # (from the per-day counts of the attributed conversions, kept current as rows
        # arrive, not every conversion of the history)
        cd = ctx.rollup("conversion_kinds")
        ctx.cache["conversion_cells"] = (
            cd.group_by("campaign_id", "kind", "source")
            .aggregate(n=cd.n.sum(), valued=cd.valued.sum())
            .to_pyarrow()
            .to_pylist()
        )
    cells: list[dict[str, Any]] = ctx.cache["conversion_cells"]
    return cells


def _closed_records(ctx: CheckContext) -> Any:
    """The CRM records with a row of the funnel's last stage (``won_ts`` not null) or of
    ``lost`` up to the cut, one row each (:func:`signalloop.rollups.record_outcomes`).

    At the end of the data (the daily run) that is the stored rollup ``crm_record_outcome``,
    which the nowcast's CRM path reads too, kept current as rows arrive. With two passes over
    every CRM row for its won and lost stages instead, the feedback depth took 0.23-0.36 s at
    1,000 campaigns and 89 days and 0.47-0.63 s behind 179 (0.14-0.16 s and 0.17-0.28 s
    from the rollup). Before the end, and without any CRM row (nothing to store: the run then
    reports the rollup ``not read``), the CRM rows up to the cut give it.
    """
    from signalloop import rollups

    won = ctx.settings.funnel[-1]
    crm = ctx.table("crm")
    if ctx.at_the_end and int(crm.count().execute()) > 0:
        return rollups.table(ctx.ws, "crm_record_outcome", won=won)
    o = rollups.record_outcomes(crm, won)
    return o.filter(o.won_ts.notnull() | o.lost_ts.notnull())


def _feedback_depth(ctx: CheckContext, opt: Mapping[str, Any]) -> list[Finding]:
    """Per campaign: how far down the funnel its outcomes are known."""
    rec = crm_record_campaigns(ctx.ws, ctx.cutoff)
    closed = _closed_records(ctx)
    won = closed.filter(closed.won_ts.notnull())
    old_enough = ibis.literal(ctx.cutoff - timedelta(days=opt["outcome_age_days"]))
    r = rec.mutate(
        closed=rec.record_id.isin(closed.record_id),
        won=rec.record_id.isin(won.record_id),
        old=rec.first_ts < old_enough,
    )
    crm_stats = {
        x["campaign_id"]: x
        for x in r.group_by("campaign_id")
        .aggregate(
            records=r.count(),
            old=r.old.sum(),
            old_closed=(r.old & r.closed).sum(),
            won=r.won.sum(),
        )
        .to_pyarrow()
        .to_pylist()
    }
    conv_stats: dict[Any, dict[str, int]] = defaultdict(lambda: {"n": 0, "valued": 0})
    for c in _conversion_cells(ctx):
        conv_stats[c["campaign_id"]]["n"] += c["n"]
        conv_stats[c["campaign_id"]]["valued"] += c["valued"]
    out = []
    for cid in ctx.campaigns:
        cs, rs = conv_stats.get(cid), crm_stats.get(cid)
        if rs and rs["won"]:
            depth = "revenue"
        elif rs:
            depth = "pipeline"
        elif cs and cs["valued"]:
            depth = "revenue"
        elif cs:
            depth = "conversion"
        else:
            depth = "click"
        known = (rs["old_closed"] / rs["old"]) if rs and rs["old"] else None
        evidence = {
            "depth": depth,
            "conversions": int(cs["n"]) if cs else 0,
            "crm_records": int(rs["records"]) if rs else 0,
            "outcome_known_share": round(known, 4) if known is not None else None,
        }
        stops_early = depth in ("click", "conversion")
        out.append(
            Finding(
                "label_completeness",
                "warn" if depth == "click" else "info",
                cid,
                f"feedback reaches {depth}"
                + (
                    f"; CRM outcome known for {known:.0%} of records older than "
                    f"{opt['outcome_age_days']} days"
                    if known is not None
                    else ""
                )
                + ("; outcomes stop before pipeline or revenue" if stops_early else ""),
                evidence,
            )
        )
    return out


@register(
    "stage_regression",
    scope="campaign",
    severity="warn",
    description="CRM lifecycle stages that go backwards or are overwritten",
    min_records=1,
)
def stage_regression(ctx: CheckContext, opt: Mapping[str, Any]) -> list[Finding]:
    ranks = funnel_ranks(ctx.settings.funnel)
    if ctx.at_the_end:  # the records' flags, kept as rows arrive (those of new rows redone)
        from signalloop import rollups

        per_rec = rollups.table(ctx.ws, "crm_record_flags", ranks=ranks)
    else:
        per_rec = stage_flags(ctx.table("crm"), "record_id", "stage", "ts", ranks)
        per_rec = per_rec.filter((per_rec.backwards > 0) | (per_rec.overwritten > 0))
    rec = crm_record_campaigns(ctx.ws, ctx.cutoff)
    j = per_rec.left_join(rec, per_rec.record_id == rec.record_id)
    agg = (
        j.group_by(campaign_id=j.campaign_id)
        .aggregate(
            records=j.count(),
            backwards=(j.backwards > 0).sum(),
            overwritten=(j.overwritten > 0).sum(),
            examples=j.record_id.collect(),
            first=j.last_bad.min(),
            last=j.last_bad.max(),
        )
        .order_by("campaign_id")
        .to_pyarrow()
        .to_pylist()
    )
    totals = {
        x["campaign_id"]: int(x["n"])
        for x in rec.group_by("campaign_id").aggregate(n=rec.count()).to_pyarrow().to_pylist()
    }
    out = []
    for r in agg:
        if r["records"] < opt["min_records"]:
            continue
        n = totals.get(r["campaign_id"], 0)
        out.append(
            Finding(
                "stage_regression",
                "warn",
                r["campaign_id"],
                f"{r['records']:,} CRM records went backwards or were overwritten "
                f"({r['backwards']:,} backwards, {r['overwritten']:,} overwritten at the same "
                f"time) of {n:,}",
                {
                    "records": int(r["records"]),
                    "backwards": int(r["backwards"]),
                    "overwritten": int(r["overwritten"]),
                    "examples": sorted(r["examples"])[:5],
                },
                window=(_d(r["first"]), _d(r["last"])) if r["first"] else None,  # type: ignore[arg-type]
            )
        )
    return out


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), from the regularised incomplete beta function
    (:func:`scipy.special.bdtrc`): one evaluation, whatever ``n`` (a campaign's conversions
    over its whole history), where a sum of its ``n - k`` terms grew with it.

    >>> round(binomial_sf(4, 7, 0.1), 4)
    0.0027
    >>> binomial_sf(300, 2000, 0.1) < 1e-9
    True
    >>> binomial_sf(0, 5, 0.5), binomial_sf(6, 5, 0.5)
    (1.0, 0.0)
    """
    from scipy.special import bdtrc

    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return min(1.0, max(0.0, float(bdtrc(k - 1, n, p))))


def _median_lag(rows: list[dict[str, Any]]) -> int:
    """The median lag of ``rows`` (``lag``, ``n``: ``n`` conversions at that lag), the upper
    one of an even count: the middle of the sorted lags, without listing every conversion.

    >>> _median_lag([{"lag": 3, "n": 2}, {"lag": 0, "n": 1}, {"lag": 9, "n": 1}])
    3
    """
    middle, acc = sum(int(r["n"]) for r in rows) // 2, 0
    for r in sorted(rows, key=lambda r: r["lag"]):
        acc += int(r["n"])
        if acc > middle:
            return int(r["lag"])
    raise ValueError("no conversions")


@register(
    "late_offline_conversions",
    scope="campaign",
    severity="warn",
    description="offline and CRM conversions arriving long after the click, per source: more "
    "of them beyond the rest of the account's 90th-percentile lag than chance allows (and at "
    "least twice as many as expected)",
    min_conversions=4,
    quantile=0.9,
    max_p=0.01,
    min_late_ratio=2.0,
)
def late_offline_conversions(ctx: CheckContext, opt: Mapping[str, Any]) -> list[Finding]:
    conv = ctx.conversions.filter(ctx.conversions.source.isin(["offline", "crm"]))
    c = conv
    click_ts = ibis.coalesce(c.click_ts, click_time(c, ctx.cutoff))
    c = c.filter(click_ts.notnull() & c.attributed_campaign_id.notnull()).mutate(
        lag=((c.ts.epoch_seconds() - click_ts.epoch_seconds()) / 86400.0).floor().cast("int64")
    )
    # one row per (campaign, source, lag in whole days): small, whatever the volume
    hist = (
        c.group_by(campaign_id=c.attributed_campaign_id, source=c.source, lag=c.lag)
        .aggregate(n=_.count(), first=_.ts.min(), last=_.ts.max())
        .to_pyarrow()
        .to_pylist()
    )
    by_source: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in hist:
        by_source[r["source"]][r["campaign_id"]].append(r)
    out = []
    for source, camps in sorted(by_source.items()):
        # the account's conversions per lag; a campaign's "rest of the account" is this
        # less its own (one pass per campaign over the distinct lags, not over the others)
        account: dict[int, int] = defaultdict(int)
        for rows in camps.values():
            for r in rows:
                account[r["lag"]] += r["n"]
        lags_seen = sorted(account)
        account_total = sum(account.values())
        for cid, rows in sorted(camps.items()):
            own: dict[int, int] = defaultdict(int)
            for r in rows:
                own[r["lag"]] += r["n"]
            total = account_total - sum(own.values())
            if total < 10 * opt["min_conversions"]:
                continue
            # the rest of the account's lag quantile (leave this campaign out)
            acc, cut = 0, None
            for lag in lags_seen:
                acc += account[lag] - own.get(lag, 0)
                if account[lag] > own.get(lag, 0) and acc >= opt["quantile"] * total:
                    cut = lag
                    break
            n = sum(r["n"] for r in rows)
            late = [r for r in rows if cut is not None and r["lag"] > cut]
            k = sum(r["n"] for r in late)
            if n < opt["min_conversions"] or cut is None:
                continue
            p = binomial_sf(k, n, 1 - opt["quantile"])
            # significant AND large: with thousands of rows a trivial difference is significant
            if p >= opt["max_p"] or k / n < opt["min_late_ratio"] * (1 - opt["quantile"]):
                continue
            median = _median_lag(rows)
            out.append(
                Finding(
                    "late_offline_conversions",
                    "warn",
                    cid,
                    f"{k} of {n} {source} conversions arrived more than {cut} days after the "
                    f"click, the rest of the account's {opt['quantile']:.0%} lag "
                    f"(median here {median} days)",
                    {
                        "source": source,
                        "conversions": n,
                        "late": k,
                        "account_lag_days_quantile": cut,
                        "median_lag_days": median,
                        "p_value": round(p, 6),
                    },
                    window=(_d(min(r["first"] for r in late)), _d(max(r["last"] for r in late))),  # type: ignore[arg-type]
                )
            )
    return out
