"""The platforms' edit history as canonical ``changes`` rows, with who made each edit.

**Meta**: the ad account's activity log, ``GET /{version}/act_{id}/activities`` with
``since`` / ``until`` (Unix seconds), ``fields`` (:data:`~signalloop.connect.meta.ACTIVITY_FIELDS`)
and cursor paging (``AdActivity`` and ``AdAccount.get_activities`` in the official
``facebook-business`` SDK). ``event_type`` says what changed (:data:`META_EVENTS`);
``extra_data`` is a JSON document in a string with ``old_value`` / ``new_value``.

**Google Ads**: ``change_event`` through GAQL (:func:`change_event_query`): Google requires a
finite ``change_event.change_date_time`` range starting at most 30 days back and a ``LIMIT`` of
at most 10,000 (``ChangeEventError``); a range with more events is read again from the last
event's time. ``change_resource_type`` and ``changed_fields`` say what changed
(:data:`GOOGLE_FIELDS`), ``old_resource`` / ``new_resource`` the values, ``client_type`` and
``user_email`` who.

**Who** (the contract's ``actor``: ``human``, ``automation``, ``platform``):

* Google's ``client_type`` (documented values): the web client, the mobile app, Editor, bulk
  uploads and recommendations applied by hand are a person (``human``); the API, automated
  rules, scripts, Search Ads 360 and auto-applied recommendations (the "subscription") are
  ``automation``; ``INTERNAL_TOOL``, ``OTHER`` and ``UNKNOWN`` are the ``platform``;
* Meta: no page found here says which ``application_name`` an edit made in Ads Manager
  carries, or how an automated rule is named. The rule used: a ``rule`` in the application or
  actor name is ``automation``; no actor at all is the ``platform``; an edit with no
  application or one of Meta's own apps (Ads Manager, Business Suite / Manager, the mobile
  apps) is ``human``; any other application (an API app) is ``automation``. The raw actor
  detail (``actor_id``, ``actor_name``, ``application_id``, ``application_name``;
  ``client_type``, ``user_email``) is kept as attributes of each row, so a wrong guess can be
  seen and corrected.

**Values**: budgets as currency units (Meta sends minor units: cents, or whole units for the
currencies Meta lists with offset 1, such as JPY and KRW; Google micros, bids too), other
values as text. Meta's ``extra_data`` layout is not documented: both the flat form
(``{"old_value": 5000, "new_value": 7500}``) and values nested in objects (``{"old_value":
{"value": ...}}``) are read; an event whose values cannot be read keeps empty ones.

Edits signalloop applied itself (``signalloop apply``) come back in the history as API edits:
they are recognised by entity, field, new value and a time within :data:`OWN_EDIT_WINDOW` of
the stored change, and not stored twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from signalloop.contract import KINDS

#: Meta ``event_type`` -> (level, field). ``update_ad_set_targeting`` is not in the SDK's enum
#: (``update_ad_set_target_spec`` is); both are read.
META_EVENTS: dict[str, tuple[str, str]] = {
    "update_campaign_budget": ("campaign", "budget"),
    "update_ad_set_budget": ("adset", "budget"),
    "update_ad_set_bid_strategy": ("adset", "bid_strategy"),
    "update_ad_bid_type": ("ad", "bid_strategy"),
    "update_ad_set_bidding": ("adset", "bid"),
    "update_ad_set_bid_adjustments": ("adset", "bid"),
    "update_ad_bid_info": ("ad", "bid"),
    "update_ad_set_target_spec": ("adset", "targeting"),
    "update_ad_set_targeting": ("adset", "targeting"),
    "update_ad_targets_spec": ("ad", "targeting"),
    "update_ad_set_optimization_goal": ("adset", "optimization_event"),
    "update_campaign_run_status": ("campaign", "status"),
    "update_ad_set_run_status": ("adset", "status"),
    "update_ad_run_status": ("ad", "status"),
    "update_ad_creative": ("ad", "creative"),
    "edit_and_update_ad_creative": ("ad", "creative"),
    "create_ad": ("ad", "creative"),
}
#: Currencies Meta counts in whole units (offset 1) rather than cents: Meta's list of
#: currency offsets, as commonly cited; not verified against a page here.
META_WHOLE_UNIT_CURRENCIES = frozenset(
    {"CLP", "COP", "CRC", "HUF", "ISK", "IDR", "JPY", "KRW", "PYG", "TWD", "VND"}
)
_META_HUMAN_APPS = ("ads manager", "business suite", "business manager", "meta ads", "facebook")

#: Google ``client_type`` -> actor.
GOOGLE_ACTORS: dict[str, str] = {
    "GOOGLE_ADS_WEB_CLIENT": "human",
    "GOOGLE_ADS_MOBILE_APP": "human",
    "GOOGLE_ADS_EDITOR": "human",
    "GOOGLE_ADS_BULK_UPLOAD": "human",
    "GOOGLE_ADS_RECOMMENDATIONS": "human",
    "GOOGLE_ADS_API": "automation",
    "GOOGLE_ADS_AUTOMATED_RULE": "automation",
    "GOOGLE_ADS_SCRIPTS": "automation",
    "GOOGLE_ADS_RECOMMENDATIONS_SUBSCRIPTION": "automation",
    "SEARCH_ADS_360_SYNC": "automation",
    "SEARCH_ADS_360_POST": "automation",
    "INTERNAL_TOOL": "platform",
    "OTHER": "platform",
    "UNKNOWN": "platform",
}
#: Google ``change_resource_type`` -> (level, [(changed path prefix, field)]); ``*`` is any
#: changed field. Ad-group ads are read at the ad group (a new or edited ad is a creative
#: change of its ad group), except their status.
GOOGLE_FIELDS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "CAMPAIGN_BUDGET": ("campaign", (("amountMicros", "budget"),)),
    "CAMPAIGN": (
        "campaign",
        (
            ("status", "status"),
            ("biddingStrategyType", "bid_strategy"),
            ("biddingStrategy", "bid_strategy"),
            ("manualCpc", "bid_strategy"),
            ("targetCpa", "bid"),
            ("targetRoas", "bid"),
            ("maximizeConversions", "bid"),
            ("maximizeConversionValue", "bid"),
            ("targetSpend", "bid"),
            ("selectiveOptimization", "optimization_event"),
        ),
    ),
    "AD_GROUP": (
        "adset",
        (
            ("status", "status"),
            ("cpcBidMicros", "bid"),
            ("cpmBidMicros", "bid"),
            ("targetCpaMicros", "bid"),
            ("targetRoas", "bid"),
        ),
    ),
    "AD_GROUP_BID_MODIFIER": ("adset", (("*", "bid"),)),
    "AD_GROUP_CRITERION": ("adset", (("*", "targeting"),)),
    "CAMPAIGN_CRITERION": ("campaign", (("*", "targeting"),)),
    "AD_GROUP_AD": ("adset", (("status", "status"), ("*", "creative"))),
    "AD": ("adset", (("*", "creative"),)),
}
#: The change_event fields read.
CHANGE_EVENT_FIELDS: tuple[str, ...] = (
    "change_event.change_date_time",
    "change_event.change_resource_type",
    "change_event.change_resource_name",
    "change_event.client_type",
    "change_event.user_email",
    "change_event.resource_change_operation",
    "change_event.changed_fields",
    "change_event.old_resource",
    "change_event.new_resource",
    "change_event.campaign",
    "change_event.ad_group",
)
#: Google's largest change_event LIMIT.
CHANGE_EVENT_LIMIT = 10_000
#: How far back Google serves change events (days).
CHANGE_EVENT_DAYS = 30
#: An API edit this close to a change signalloop applied (same entity, field, new value) is
#: that change coming back.
OWN_EDIT_WINDOW = timedelta(hours=1)
#: Columns of the file handed to ingest: the contract's, then the attributes kept.
COLUMNS: tuple[str, ...] = (
    *KINDS["changes"].names,
    "platform",
    "account_id",
    "event_type",
    "actor_id",
    "actor_name",
    "application_id",
    "application_name",
    "client_type",
    "user_email",
    "resource_name",
    "operation",
)
#: Longest text kept as a value (targeting and creative specs can be long).
MAX_VALUE_CHARS = 500


def money_text(value: Decimal | float | int) -> str:
    """A currency amount as stored in ``old_value`` / ``new_value`` (no trailing zeros).

    >>> money_text(Decimal("12.50")), money_text(40), money_text(Decimal("1E+2"))
    ('12.5', '40', '100')
    """
    d = Decimal(str(value)).normalize()
    return format(d, "f")


def _minor(value: Any, currency: str | None) -> str | None:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    div = 1 if (currency or "").upper() in META_WHOLE_UNIT_CURRENCIES else 100
    return money_text(d / div)


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        out = value
    elif isinstance(value, bool | int | float):
        out = str(value)
    else:
        out = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return out[:MAX_VALUE_CHARS]


def _utc_text(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")


def _extra(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        doc = json.loads(str(raw)) if raw else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _side(extra: Mapping[str, Any], key: str) -> Any:
    v = extra.get(key)
    if isinstance(v, Mapping):  # nested: {"old_value": {"value": ...}} or the same key again
        for k in (key, "value", "amount", "budget"):
            if k in v:
                return v[k]
    return v


def meta_actor(event: Mapping[str, Any]) -> str:
    """``human``, ``automation`` or ``platform`` for an activity-log event (see the module
    docstring: Meta documents no rule for this).

    >>> meta_actor({"actor_id": "1", "actor_name": "Ana", "application_name": "Ads Manager"})
    'human'
    >>> meta_actor({"actor_id": "1", "actor_name": "Automated Rule"})
    'automation'
    >>> meta_actor({"actor_id": "1", "application_name": "Acme Bidder"})
    'automation'
    >>> meta_actor({})
    'platform'
    """
    app = str(event.get("application_name") or "").lower()
    name = str(event.get("actor_name") or "").lower()
    if "rule" in app or "rule" in name:
        return "automation"
    if not event.get("actor_id") and not name:
        return "platform"
    if not app and not event.get("application_id"):
        return "human"
    if any(h in app for h in _META_HUMAN_APPS):
        return "human"
    return "automation"


def meta_change(
    event: Mapping[str, Any], account: str, currency: str | None
) -> dict[str, Any] | None:
    """One activity-log event as a canonical ``changes`` row; ``None`` for an event type that
    is not an edit the contract records (billing, audiences, names, ...).

    >>> r = meta_change({"event_type": "update_ad_set_budget", "object_id": "9",
    ...                  "event_time": "2026-03-01T10:00:00+0000",
    ...                  "extra_data": '{"old_value": 5000, "new_value": 7500}',
    ...                  "actor_id": "7", "actor_name": "Ana"}, "act_1", "EUR")
    >>> r["level"], r["field"], r["old_value"], r["new_value"], r["actor"], r["ts"]
    ('adset', 'budget', '50', '75', 'human', '2026-03-01 10:00:00.000000+00:00')
    """
    kind = META_EVENTS.get(str(event.get("event_type") or ""))
    if kind is None:
        return None
    level, fld = kind
    try:
        t = datetime.strptime(str(event.get("event_time")), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        t = None
    extra = _extra(event.get("extra_data"))
    old, new = _side(extra, "old_value"), _side(extra, "new_value")
    if fld == "budget":
        cur = extra.get("currency") or currency
        old_v, new_v = _minor(old, cur), _minor(new, cur)
    else:
        old_v, new_v = _text(old), _text(new)
    return {
        "ts": _utc_text(t) if t is not None else event.get("event_time"),
        "level": level,
        "entity_id": event.get("object_id"),
        "field": fld,
        "old_value": old_v,
        "new_value": new_v,
        "actor": meta_actor(event),
        "platform": "meta",
        "account_id": account,
        "event_type": event.get("event_type"),
        "actor_id": event.get("actor_id"),
        "actor_name": event.get("actor_name"),
        "application_id": event.get("application_id"),
        "application_name": event.get("application_name"),
    }


def _tail(resource_name: Any) -> str | None:
    """The id at the end of a resource name (``customers/1/adGroupAds/2~3`` -> ``3``)."""
    if not resource_name:
        return None
    return str(resource_name).rsplit("/", 1)[-1].rsplit("~", 1)[-1]


def _at(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def _resource_key(resource_type: str) -> str:
    head, *rest = resource_type.lower().split("_")
    return head + "".join(p.title() for p in rest)


def change_event_query(since: datetime, until: datetime, tz: ZoneInfo) -> str:
    """The GAQL query for the change events between two instants (the account's time zone).

    >>> from zoneinfo import ZoneInfo
    >>> q = change_event_query(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC),
    ...                        ZoneInfo("UTC"))
    >>> q.split(" WHERE ")[1].split(" AND ")[0], q.endswith("LIMIT 10000")
    ("change_event.change_date_time >= '2026-03-01 00:00:00'", True)
    """
    lo = since.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    hi = until.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"SELECT {', '.join(CHANGE_EVENT_FIELDS)} FROM change_event WHERE "
        f"change_event.change_date_time >= '{lo}' AND change_event.change_date_time <= '{hi}' "
        f"ORDER BY change_event.change_date_time LIMIT {CHANGE_EVENT_LIMIT}"
    )


def google_changes(
    result: Mapping[str, Any], customer_id: str, tz: ZoneInfo
) -> tuple[list[dict[str, Any]], str | None]:
    """One ``change_event`` result as canonical ``changes`` rows (one per changed field the
    contract records), and why none came out of it (``None`` when some did)."""
    ev = result.get("changeEvent") or {}
    rtype = str(ev.get("changeResourceType") or "")
    spec = GOOGLE_FIELDS.get(rtype)
    if spec is None:
        return [], f"resource {rtype or '?'}"
    level, wanted = spec
    try:
        t = datetime.fromisoformat(str(ev.get("changeDateTime")))
        t = t.replace(tzinfo=tz) if t.tzinfo is None else t
    except ValueError:
        return [], "unreadable change_date_time"
    paths = [p.strip() for p in str(ev.get("changedFields") or "").split(",") if p.strip()]
    key = _resource_key(rtype)
    old_res = _at(ev.get("oldResource"), key)
    new_res = _at(ev.get("newResource"), key)
    op = ev.get("resourceChangeOperation")
    if level == "campaign":
        entity = _tail(ev.get("campaign"))
        if entity is None and rtype == "CAMPAIGN":
            entity = _tail(ev.get("changeResourceName"))
    else:
        entity = _tail(ev.get("adGroup"))
        if entity is None and rtype == "AD_GROUP":
            entity = _tail(ev.get("changeResourceName"))
    if entity is None:
        return [], f"{rtype} without its {level} (a shared budget or asset)"
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for prefix, fld in wanted:
        hit = [p for p in paths if prefix == "*" or p == prefix or p.startswith(prefix + ".")]
        if prefix == "*":
            hit = [p for p in hit if not any(p == w or p.startswith(w + ".") for w, _ in wanted)]
            if op == "CREATE" or op == "REMOVE":
                hit = hit or paths[:1] or ["*"]
        if not hit or fld in seen:
            continue
        seen.add(fld)
        row_level, row_entity = level, entity
        if rtype == "AD_GROUP_AD" and fld == "status":
            row_level, row_entity = "ad", _tail(ev.get("changeResourceName")) or entity
        if hit[0].endswith("Micros"):  # budgets and bids: currency units
            ov, nv = _at(old_res, hit[0]), _at(new_res, hit[0])
            old_v = money_text(Decimal(str(ov)) / 1_000_000) if ov not in (None, "") else None
            new_v = money_text(Decimal(str(nv)) / 1_000_000) if nv not in (None, "") else None
        elif prefix == "*":
            old_v, new_v = _text(old_res), _text(new_res)
        else:
            old_v, new_v = _text(_at(old_res, hit[0])), _text(_at(new_res, hit[0]))
        rows.append(
            {
                "ts": _utc_text(t),
                "level": row_level,
                "entity_id": row_entity,
                "field": fld,
                "old_value": old_v,
                "new_value": new_v,
                "actor": GOOGLE_ACTORS.get(str(ev.get("clientType") or ""), "platform"),
                "platform": "google",
                "account_id": customer_id,
                "client_type": ev.get("clientType"),
                "user_email": ev.get("userEmail"),
                "resource_name": ev.get("changeResourceName"),
                "operation": op,
            }
        )
    return rows, (None if rows else f"{rtype} fields {','.join(paths) or 'none'}")


def dedupe(rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Rows with their exact repeats dropped (a log that served an event twice), and how many
    were dropped."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for r in rows:
        k = tuple(r.get(c) for c in COLUMNS)
        if k in seen:
            continue
        seen.add(k)
        out.append(dict(r))
    return out, len(rows) - len(out)
