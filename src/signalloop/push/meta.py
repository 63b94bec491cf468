"""Meta Conversions API for CRM leads: normalise, hash, build events, split into requests.

The rules (``../shared/PLATFORMS.md``, from Meta's documentation and the official
``facebook-business`` SDK's normalisation):

* every contact field is trimmed and lower-cased, then SHA-256 hex; a value that already is
  64 hex characters is passed through (lower-cased); ``em`` must look like ``x@y.z``; ``ph``
  keeps digits only, without a leading ``+`` or ``00``; ``country`` is an ISO 3166-1 alpha-2
  code; ``zp`` loses its whitespace and whatever follows a ``-``;
* an event per CRM stage: ``event_name``, ``event_time`` (Unix seconds), ``action_source``
  ``"system_generated"``, ``user_data`` with ``lead_id`` (the 15-16 digit Lead Ads id, an
  unhashed integer) or hashed ``em`` / ``ph``, ``custom_data`` with ``event_source: "crm"``
  and ``lead_event_source`` (the CRM's name), and an ``event_id`` for deduplication;
* at most 1,000 events a request; one event older than 7 days (or invalid) rejects the whole
  request, so such events are split out before sending and reported.

>>> hash_field("em", "  Maria@Example.COM ") == hash_field("em", "maria@example.com")
True
>>> hash_field("ph", "+1 (555) 123-4567") == hash_field("ph", "0015551234567")
True
>>> hash_field("em", "not an email") is None
True
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

#: ``action_source`` values the API accepts.
ACTION_SOURCES: tuple[str, ...] = (
    "email",
    "website",
    "app",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
)
#: Events per request, at most.
MAX_BATCH = 1000
#: Oldest ``event_time`` the API takes, before the send.
MAX_AGE = timedelta(days=7)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LEAD_ID = re.compile(r"^\d{15,16}$")


def normalize(field_name: str, value: Any) -> str | None:
    """A contact field as Meta normalises it before hashing; ``None`` when it is not valid.

    >>> normalize("ph", " +44 (0)20-7946 0000")
    '4402079460000'
    >>> normalize("zp", " 94105-1234 "), normalize("country", "US")
    ('94105', 'us')
    >>> normalize("country", "USA") is None
    True
    """
    if value is None:
        return None
    text = str(value).strip().lower()
    if not text:
        return None
    if _HEX64.match(text):
        return text
    if field_name == "em":
        return text if _EMAIL.match(text) else None
    if field_name == "ph":
        digits = re.sub(r"\D", "", text)  # a leading + goes with the other non-digits
        if digits.startswith("00"):  # the international prefix, as + is
            digits = digits[2:]
        return digits or None
    if field_name == "country":
        return text if re.fullmatch(r"[a-z]{2}", text) else None
    if field_name == "zp":
        return re.sub(r"\s", "", text).split("-", 1)[0] or None
    return text


def hash_field(field_name: str, value: Any) -> str | None:
    """SHA-256 hex of the normalised value; a 64-hex value passes through; ``None`` if invalid."""
    norm = normalize(field_name, value)
    if norm is None:
        return None
    if _HEX64.match(norm):
        return norm
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()


def lead_id(value: Any) -> int | None:
    """Meta's Lead Ads id as an integer (15-16 digits), else ``None``.

    >>> lead_id("1234567890123456"), lead_id("42"), lead_id(None)
    (1234567890123456, None, None)
    """
    if value is None:
        return None
    text = str(value).strip()
    if text.endswith(".0"):  # an id read as a float by a spreadsheet export
        text = text[:-2]
    return int(text) if _LEAD_ID.match(text) else None


def event_id(record_id: str, stage: str) -> str:
    """A stable id per record and stage, so Meta deduplicates a re-sent event.

    >>> event_id("r1", "sql") == event_id("r1", "sql") != event_id("r1", "won")
    True
    """
    digest = hashlib.sha256(f"{record_id}\x1f{stage}".encode()).hexdigest()
    return f"sl-{digest[:32]}"


def build_event(
    record_id: str,
    stage: str,
    ts: datetime,
    *,
    event_name: str,
    crm_name: str,
    lead: Any = None,
    email: Any = None,
    phone: Any = None,
) -> dict[str, Any] | None:
    """One Conversions API event for a record reaching a stage; ``None`` without an identity.

    ``user_data`` holds ``lead_id`` when the record has a valid one, else the hashed ``em`` /
    ``ph`` (each a one-element list, as the API takes them) that are valid.

    >>> e = build_event("r1", "sql", datetime(2026, 3, 1, tzinfo=UTC), event_name="sql",
    ...                 crm_name="HubSpot", email="a@b.co")
    >>> e["event_time"], e["action_source"], sorted(e["user_data"])
    (1772323200, 'system_generated', ['em'])
    """
    user: dict[str, Any] = {}
    lid = lead_id(lead)
    if lid is not None:
        user["lead_id"] = lid
    else:
        for key, raw in (("em", email), ("ph", phone)):
            h = hash_field(key, raw)
            if h is not None:
                user[key] = [h]
    if not user:
        return None
    when = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return {
        "event_name": event_name,
        "event_time": int(when.timestamp()),
        "action_source": "system_generated",
        "event_id": event_id(record_id, stage),
        "user_data": user,
        "custom_data": {"event_source": "crm", "lead_event_source": crm_name},
    }


def problems(event: Mapping[str, Any], now: datetime) -> list[str]:
    """What makes the API reject an event (empty: it is valid), as of ``now``."""
    out: list[str] = []
    for key in ("event_name", "event_time", "action_source", "user_data"):
        if key not in event:
            out.append(f"missing {key}")
    if event.get("action_source") not in ACTION_SOURCES:
        out.append(f"action_source {event.get('action_source')!r} is not one of the API's")
    t = event.get("event_time")
    if not isinstance(t, int) or isinstance(t, bool):
        out.append(f"event_time must be integer Unix seconds, got {t!r}")
    else:
        age = now.timestamp() - t
        if age > MAX_AGE.total_seconds():
            out.append(f"event_time is {age / 86400:.1f} days old (at most 7)")
        elif age < -3600:
            out.append("event_time is in the future")
    user = event.get("user_data") or {}
    if not user:
        out.append("user_data is empty: no lead_id, em or ph")
    lid = user.get("lead_id")
    if lid is not None and (not isinstance(lid, int) or lead_id(lid) is None):
        out.append("lead_id must be the 15-16 digit Lead Ads id, as an integer")
    for key in ("em", "ph"):
        for v in user.get(key, []):
            if not _HEX64.match(str(v)):
                out.append(f"{key} must be SHA-256 hex (64 lower-case hex characters)")
    return out


@dataclass
class Plan:
    """Events split into requests, and the events left out with the reason."""

    requests: list[list[dict[str, Any]]] = field(default_factory=list)
    left_out: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sent_events(self) -> int:
        """Events in the requests."""
        return sum(len(r) for r in self.requests)

    def take(self, item: Mapping[str, Any], size: int) -> None:
        """Add a valid item to the last request, or to a new one when that holds ``size``."""
        if not self.requests or len(self.requests[-1]) >= size:
            self.requests.append([])
        self.requests[-1].append(dict(item))


def plan_requests(
    events: Iterable[Mapping[str, Any]], now: datetime, *, size: int = MAX_BATCH
) -> Plan:
    """Requests of at most ``size`` valid events; every invalid one left out with its reason.

    >>> now = datetime(2026, 3, 10, tzinfo=UTC)
    >>> ok = build_event("r1", "sql", now - timedelta(days=1), event_name="sql",
    ...                  crm_name="HubSpot", phone="555 0100")
    >>> old = build_event("r2", "sql", now - timedelta(days=9), event_name="sql",
    ...                   crm_name="HubSpot", phone="555 0101")
    >>> p = plan_requests([ok, old], now)
    >>> p.sent_events, [x["reasons"] for x in p.left_out]
    (1, [['event_time is 9.0 days old (at most 7)']])
    """
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"size must be 1-{MAX_BATCH}, got {size}")
    plan = Plan()
    for e in events:
        why = problems(e, now)
        if why:
            plan.left_out.append({"event": dict(e), "reasons": why})
            continue
        plan.take(e, size)
    return plan


def request_body(
    events: Sequence[Mapping[str, Any]], test_event_code: str | None = None
) -> dict[str, Any]:
    """The JSON body of one ``POST /{pixel_id}/events`` (the access token goes separately)."""
    body: dict[str, Any] = {"data": [dict(e) for e in events]}
    if test_event_code:
        body["test_event_code"] = test_event_code
    return body


__all__ = [
    "ACTION_SOURCES",
    "MAX_AGE",
    "MAX_BATCH",
    "Plan",
    "build_event",
    "event_id",
    "hash_field",
    "lead_id",
    "normalize",
    "plan_requests",
    "problems",
    "request_body",
]
