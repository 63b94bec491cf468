"""Who converts: new users, or users already known before the click (audience bias evidence).

A learner that optimises on conversions drifts towards the users who convert fastest, and
those are often people the business already has: past converters, leads in the CRM. When most
of a campaign's conversions come from them, new-user acquisition starves while the reported
CPA looks fine. :func:`audience` measures it per campaign over a recent window: a conversion
counts as from a **known user** when its user converted before, or has a CRM record that
started, at least ``known_before_days`` before the click that led to this conversion.

The result feeds ``diagnose(..., models={"audience": ...})`` (the ``audience_bias`` rule).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import ibis

from signalloop.attribution import attributed_conversions
from signalloop.checks.base import default_as_of
from signalloop.errors import UsageError
from signalloop.store import Workspace

#: Days of conversions measured.
WINDOW_DAYS = 28
#: A user is known if their first conversion or CRM record came this many days before the click.
KNOWN_BEFORE_DAYS = 1


def audience(
    ws: Workspace,
    as_of: date | None = None,
    *,
    window_days: int = WINDOW_DAYS,
    known_before_days: int = KNOWN_BEFORE_DAYS,
) -> list[dict[str, Any]]:
    """Per campaign, the share of recent conversions from users known before the click.

    Parameters
    ----------
    ws
        The workspace.
    as_of
        Last day counted (default: the last day with data).
    window_days
        Conversions of the last ``window_days`` days up to ``as_of`` are measured.
    known_before_days
        How long before the click a user's first conversion or CRM record must be.

    Returns
    -------
    list of dict
        ``campaign_id``, ``conversions`` (with a user id), ``known_user_conversions``,
        ``known_user_share``, ``new_user_conversions``, ``window`` ([start, end]); campaigns
        in id order. Conversions without a user id or a campaign are not counted.
    """
    as_of = as_of or default_as_of(ws)
    if as_of is None:
        raise UsageError(f"workspace {ws.path} holds no data yet: ingest something first")
    start = as_of - timedelta(days=window_days - 1)
    # the conversion's own campaign, else its click's (the user's last touch does not count)
    att = attributed_conversions(ws)
    recent = att.filter(att.user_id.notnull() & (att.ts.date() <= as_of) & (att.ts.date() >= start))
    recent = recent.mutate(
        campaign=ibis.ifelse(
            recent.attributed_by.isin(["campaign_id", "click_id"]),
            recent.attributed_campaign_id,
            ibis.null(),
        ),
        clicked=ibis.coalesce(recent.click_ts, recent.ts),
    )
    recent = recent.filter(recent.campaign.notnull())
    # when each of those users was first seen: only their own rows are grouped (a semi-join
    # first), not every user's of the history
    users = recent.user_id
    conv = ws.table("conversions")
    conv = conv.filter(conv.user_id.isin(users) & (conv.ts.date() <= as_of))
    first_conv = conv.group_by("user_id").aggregate(first_seen=conv.ts.min())
    crm = ws.table("crm")
    crm = crm.filter(crm.user_id.isin(users) & (crm.ts.date() <= as_of))
    first_crm = crm.group_by("user_id").aggregate(first_seen=crm.ts.min())
    known = (
        first_conv.union(first_crm)
        .group_by("user_id")
        .aggregate(first_seen=lambda t: t.first_seen.min())
    )
    j = recent.left_join(known, recent.user_id == known.user_id)
    j = j.mutate(
        is_known=ibis.ifelse(
            j.first_seen.notnull()
            & (j.first_seen <= j.clicked - ibis.interval(days=known_before_days)),
            1,
            0,
        )
    )
    rows = (
        j.group_by("campaign")
        .aggregate(conversions=j.count(), known=j.is_known.sum())
        .order_by("campaign")
        .to_pyarrow()
        .to_pylist()
    )
    return [
        {
            "campaign_id": r["campaign"],
            "conversions": int(r["conversions"]),
            "known_user_conversions": int(r["known"] or 0),
            "new_user_conversions": int(r["conversions"]) - int(r["known"] or 0),
            "known_user_share": round(int(r["known"] or 0) / int(r["conversions"]), 4),
            "window": [start.isoformat(), as_of.isoformat()],
        }
        for r in rows
        if r["conversions"]
    ]
