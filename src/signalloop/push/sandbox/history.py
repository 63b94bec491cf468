"""Canonical ``changes`` rows (the simulator's edit log) as the platforms' own records: Meta
activity-log events and Google Ads change events, so an account's edit history can be served
by the sandbox and pulled back (:meth:`Sandbox.load_changes`).

The platform of an edit is its campaign's (from the spend rows: an ad set's or an ad's
campaign). Actors become what each platform records: a person edits in Ads Manager / the
Google Ads web client, an automation is an automated rule, the platform leaves no actor
(Meta) or is an internal tool (Google). Budgets travel in minor units (Meta) or micros
(Google), bids in micros (Google).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

#: (level, field) -> Meta event type.
META_EVENT_OF: dict[tuple[str, str], str] = {
    ("campaign", "budget"): "update_campaign_budget",
    ("adset", "budget"): "update_ad_set_budget",
    ("campaign", "status"): "update_campaign_run_status",
    ("adset", "status"): "update_ad_set_run_status",
    ("ad", "status"): "update_ad_run_status",
    ("adset", "bid"): "update_ad_set_bidding",
    ("adset", "bid_strategy"): "update_ad_set_bid_strategy",
    ("adset", "targeting"): "update_ad_set_target_spec",
    ("adset", "optimization_event"): "update_ad_set_optimization_goal",
    ("ad", "creative"): "update_ad_creative",
}
#: (level, field) -> (Google resource type, changed field).
GOOGLE_CHANGE_OF: dict[tuple[str, str], tuple[str, str]] = {
    ("campaign", "budget"): ("CAMPAIGN_BUDGET", "amountMicros"),
    ("campaign", "status"): ("CAMPAIGN", "status"),
    ("campaign", "bid_strategy"): ("CAMPAIGN", "biddingStrategyType"),
    ("adset", "status"): ("AD_GROUP", "status"),
    ("adset", "bid"): ("AD_GROUP", "cpcBidMicros"),
    ("adset", "targeting"): ("AD_GROUP_CRITERION", "keyword.text"),
    ("ad", "status"): ("AD_GROUP_AD", "status"),
    ("ad", "creative"): ("AD_GROUP_AD", "ad.finalUrls"),
}
_GOOGLE_CLIENT = {
    "human": "GOOGLE_ADS_WEB_CLIENT",
    "automation": "GOOGLE_ADS_AUTOMATED_RULE",
    "platform": "INTERNAL_TOOL",
}
_GOOGLE_KEY = {
    "CAMPAIGN_BUDGET": "campaignBudget",
    "CAMPAIGN": "campaign",
    "AD_GROUP": "adGroup",
    "AD_GROUP_CRITERION": "adGroupCriterion",
    "AD_GROUP_AD": "adGroupAd",
}


def _scaled(value: Any, factor: int) -> Any:
    try:
        return int(Decimal(str(value)) * factor)
    except (InvalidOperation, ValueError):
        return value


def _when(value: Any) -> datetime:
    t = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _nested(path: str, value: Any) -> dict[str, Any]:
    head, _, rest = path.partition(".")
    return {head: _nested(rest, value) if rest else value}


def meta_event(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """A canonical change as a Meta activity-log event (``None``: Meta has no such event)."""
    event = META_EVENT_OF.get((str(row["level"]), str(row["field"])))
    if event is None:
        return None
    old, new = row.get("old_value"), row.get("new_value")
    if row["field"] == "budget":
        old, new = _scaled(old, 100), _scaled(new, 100)
    actor = row.get("actor")
    who: dict[str, Any] = {}
    if actor == "human":
        who = {
            "actor_id": "1001",
            "actor_name": "Sandbox Person",
            "application_name": "Ads Manager",
        }
    elif actor == "automation":
        who = {"actor_id": "1002", "actor_name": "Automated Rule"}
    return {
        "event_time": _when(row["ts"]),
        "event_type": event,
        "object_id": str(row["entity_id"]),
        "object_type": {"campaign": "CAMPAIGN", "adset": "ADSET"}.get(str(row["level"]), "AD"),
        "extra_data": {"old_value": old, "new_value": new},
        **who,
    }


def google_event(
    row: Mapping[str, Any], cid: str, campaign: str, adset: str | None
) -> dict[str, Any] | None:
    """A canonical change as a Google Ads change event (``None``: no such change here)."""
    spec = GOOGLE_CHANGE_OF.get((str(row["level"]), str(row["field"])))
    if spec is None:
        return None
    rtype, path = spec
    old, new = row.get("old_value"), row.get("new_value")
    if path.endswith("Micros"):
        old, new = _scaled(old, 1_000_000), _scaled(new, 1_000_000)
        old, new = (None if v is None else str(v) for v in (old, new))
    ent = str(row["entity_id"])
    name = {
        "CAMPAIGN_BUDGET": f"customers/{cid}/campaignBudgets/{campaign}",
        "CAMPAIGN": f"customers/{cid}/campaigns/{campaign}",
        "AD_GROUP": f"customers/{cid}/adGroups/{adset}",
        "AD_GROUP_CRITERION": f"customers/{cid}/adGroupCriteria/{adset}~1",
        "AD_GROUP_AD": f"customers/{cid}/adGroupAds/{adset}~{ent}",
    }[rtype]
    key = _GOOGLE_KEY[rtype]
    return {
        "change_date_time": _when(row["ts"]),
        "change_resource_type": rtype,
        "change_resource_name": name,
        "client_type": _GOOGLE_CLIENT.get(str(row.get("actor")), "OTHER"),
        "user_email": "person@example.com" if row.get("actor") == "human" else None,
        "resource_change_operation": "UPDATE",
        "changed_fields": path,
        "old_resource": {key: _nested(path, old)} if old is not None else None,
        "new_resource": {key: _nested(path, new)} if new is not None else None,
        "campaign": f"customers/{cid}/campaigns/{campaign}",
        "ad_group": f"customers/{cid}/adGroups/{adset}" if adset else None,
    }


def platform_records(
    changes: Iterable[Mapping[str, Any]],
    spend: Iterable[Mapping[str, Any]],
    google_customer: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The Meta events and the Google change events of canonical change rows, each edit on
    its campaign's platform (rows whose campaign is on neither are left out)."""
    from signalloop.push.settings import GOOGLE_PLATFORMS, META_PLATFORMS

    platform: dict[str, str] = {}
    adset_campaign: dict[str, str] = {}
    ad_adset: dict[str, str] = {}
    for r in spend:
        p = str(r.get("platform") or "").strip().lower()
        name = "meta" if p in META_PLATFORMS else "google" if p in GOOGLE_PLATFORMS else None
        cid = str(r.get("campaign_id") or "")
        if name is None or not cid:
            continue
        platform[cid] = name
        if r.get("adset_id"):
            adset_campaign[str(r["adset_id"])] = cid
            if r.get("ad_id"):
                ad_adset[str(r["ad_id"])] = str(r["adset_id"])
    meta: list[dict[str, Any]] = []
    google: list[dict[str, Any]] = []
    for row in changes:
        ent, level = str(row["entity_id"]), str(row["level"])
        adset: str | None = (
            ad_adset.get(ent) if level == "ad" else ent if level == "adset" else None
        )
        camp: str | None = ent if level == "campaign" else adset_campaign.get(adset or "")
        where = platform.get(camp or "")
        if where == "meta":
            ev = meta_event(row)
            if ev is not None:
                meta.append(ev)
        elif where == "google" and camp is not None:
            gev = google_event(row, google_customer, camp, adset)
            if gev is not None:
                google.append(gev)
    return meta, google
