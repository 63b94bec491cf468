"""Attribution and the per-campaign summary, as ibis expressions over the workspace.

The contract's rule: a conversion belongs to a campaign by its own ``campaign_id``, else by
``click_id`` to the touchpoint with that click, else by ``user_id`` to that user's last
touchpoint at or before the conversion. Conversions none of these reach stay unattributed
(and are counted, never dropped).
"""

from __future__ import annotations

from typing import Any

import ibis

from signalloop.store import Workspace


def attributed_conversions(ws: Workspace) -> Any:
    """Every conversion with ``attributed_campaign_id`` and ``attributed_by``.

    ``attributed_by`` is ``campaign_id``, ``click_id``, ``user_id`` or null (unattributed).
    """
    conv = ws.table("conversions")
    tp = ws.table("touchpoints")
    clicks = (
        tp.filter(tp.click_id.notnull() & tp.campaign_id.notnull())
        .group_by(tp.click_id)
        .aggregate(click_campaign=tp.campaign_id.argmin(tp.ts))
    )
    touches = tp.filter(tp.user_id.notnull() & tp.campaign_id.notnull()).select(
        touch_user=tp.user_id, touch_ts=tp.ts, touch_campaign=tp.campaign_id
    )
    c = conv.mutate(_row=ibis.row_number())
    by_click = c.left_join(clicks, c.click_id == clicks.click_id).select(
        c._row, clicks.click_campaign
    )
    last_touch = (
        c.select(c._row, c.user_id, c.ts)
        .join(touches, (c.user_id == touches.touch_user) & (touches.touch_ts <= c.ts))
        .group_by("_row")
        .aggregate(user_campaign=touches.touch_campaign.argmax(touches.touch_ts))
    )
    out = (
        c.left_join(by_click, c._row == by_click._row)
        .drop("_row_right")
        .left_join(last_touch, c._row == last_touch._row)
        .drop("_row_right")
    )
    campaign = ibis.coalesce(out.campaign_id, out.click_campaign, out.user_campaign)
    by = ibis.cases(
        (out.campaign_id.notnull(), "campaign_id"),
        (out.click_campaign.notnull(), "click_id"),
        (out.user_campaign.notnull(), "user_id"),
        else_=ibis.null().cast("string"),
    )
    return out.mutate(attributed_campaign_id=campaign, attributed_by=by).drop(
        "_row", "click_campaign", "user_campaign"
    )


def campaign_summary(ws: Workspace) -> list[dict[str, Any]]:
    """Per campaign: spend, impressions, clicks, attributed conversions and value, CPA, ROAS.

    ``conversions`` counts every attributed conversion event, whatever its kind;
    ``conversions_by_kind`` splits it (lead, purchase, deal, ...), most frequent first.

    Returns one dict per campaign (a small result), sorted by spend, largest first.
    Conversions attributed to a campaign with no spend rows still appear.
    """
    spend = ws.table("spend")
    s = spend.group_by(campaign_id=spend.campaign_id).aggregate(
        platform=spend.platform.arbitrary(),
        spend=spend.spend.sum(),
        impressions=spend.impressions.sum(),
        clicks=spend.clicks.sum(),
        platform_conversions=spend.platform_conversions.sum(),
    )
    conv = attributed_conversions(ws)
    conv = conv.filter(conv.attributed_campaign_id.notnull())
    c = conv.group_by(campaign_id=conv.attributed_campaign_id).aggregate(
        conversions=conv.count(), value=conv.value.sum()
    )
    j = s.outer_join(c, s.campaign_id == c.campaign_id)
    j = j.select(
        campaign_id=ibis.coalesce(j.campaign_id, j.campaign_id_right),
        platform=j.platform,
        spend=j.spend.fill_null(0),
        impressions=j.impressions.fill_null(0),
        clicks=j.clicks.fill_null(0),
        platform_conversions=j.platform_conversions,
        conversions=j.conversions.fill_null(0),
        value=j.value.fill_null(0),
    ).order_by(ibis.desc("spend"), "campaign_id")
    rows: list[dict[str, Any]] = j.to_pyarrow().to_pylist()
    per_kind = (
        conv.group_by(campaign_id=conv.attributed_campaign_id, kind=conv.kind)
        .aggregate(n=conv.count())
        .order_by(["campaign_id", ibis.desc("n"), "kind"])
        .to_pyarrow()
        .to_pylist()
    )
    kinds: dict[str, dict[str, int]] = {}
    for k in per_kind:
        kinds.setdefault(k["campaign_id"], {})[k["kind"]] = int(k["n"])
    for r in rows:
        r["conversions_by_kind"] = kinds.get(r["campaign_id"], {})
        conv_n = r["conversions"]
        r["cpa"] = round(r["spend"] / conv_n, 2) if conv_n and r["spend"] else None
        r["roas"] = round(r["value"] / r["spend"], 3) if r["spend"] else None
        r["spend"] = round(r["spend"], 2)
        r["value"] = round(r["value"], 2)
    return rows


def attribution_counts(ws: Workspace) -> dict[str, int]:
    """How many conversions each attribution rule reached, and how many none did."""
    conv = attributed_conversions(ws)
    res = conv.group_by("attributed_by").aggregate(n=conv.count()).to_pyarrow().to_pylist()
    return {(r["attributed_by"] or "unattributed"): int(r["n"]) for r in res}


def crm_record_campaigns(
    ws: Workspace,
    cutoff: Any = None,
    *,
    crm: Any = None,
    conversions: Any = None,
    touchpoints: Any = None,
) -> Any:
    """Each CRM record's campaign.

    The campaign of the user's latest attributed conversion up to an hour after the record
    began (the lead that created it), else the user's last touchpoint before it. Returns an
    ibis table ``(record_id, campaign_id, first_ts)``; a record none of these reach has a
    null campaign.

    Parameters
    ----------
    ws
        The workspace.
    cutoff
        Only rows before this time (applied to the tables read here, not to those given).
    crm, conversions, touchpoints
        Tables to use instead of the workspace's: CRM rows (``record_id``, ``stage``, ``ts``,
        ``user_id``); conversions already attributed (``user_id``, ``ts``,
        ``attributed_campaign_id``: the nowcast passes the conversions it linked, so they are
        not attributed twice); touchpoints (``user_id``, ``ts``, ``campaign_id``).
    """
    if crm is None:
        crm = ws.table("crm")
        crm = crm.filter(crm.ts < cutoff) if cutoff is not None else crm
    if touchpoints is None:
        touchpoints = ws.table("touchpoints")
        if cutoff is not None:
            touchpoints = touchpoints.filter(touchpoints.ts < cutoff)
    if conversions is None:
        conversions = attributed_conversions(ws)
        if cutoff is not None:
            conversions = conversions.filter(conversions.ts < cutoff)
    tp, conv = touchpoints, conversions
    rec = crm.group_by("record_id").aggregate(
        user_id=crm.user_id.arbitrary(), first_ts=crm.ts.min()
    )
    leads = conv.filter(conv.user_id.notnull() & conv.attributed_campaign_id.notnull()).select(
        c_user=conv.user_id, c_ts=conv.ts, c_campaign=conv.attributed_campaign_id
    )
    by_lead = (
        rec.join(
            leads,
            (rec.user_id == leads.c_user) & (leads.c_ts <= rec.first_ts + ibis.interval(hours=1)),
        )
        .group_by(l_record_id="record_id")
        .aggregate(lead_campaign=leads.c_campaign.argmax(leads.c_ts))
    )
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
