"""Google Ads offline conversions and bidding data exclusions, as pure functions.

The rules (``../shared/PLATFORMS.md``), each checked against Google's documentation or the
``googleapis`` protos before it was frozen here:

* a ``ClickConversion`` (REST JSON, camelCase) names its ``conversionAction``
  (``customers/{cid}/conversionActions/{id}``), its ``conversionDateTime`` as
  ``yyyy-mm-dd hh:mm:ss+|-hh:mm`` (the zone is required: ``DateError
  INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET``), an ``orderId`` (our stable
  :func:`signalloop.push.meta.event_id`), and either the click (``gclid``) or, for enhanced
  conversions for leads, up to 5 hashed ``userIdentifiers``;
* enhanced conversions for leads: every value trimmed and lower-cased, phone numbers in E.164
  (with the leading ``+``), and "all periods (.) that precede the domain name in gmail.com and
  googlemail.com email addresses" removed, then SHA-256 hex (Google Ads API guide "Upload with
  form data", developers.google.com/google-ads/api/docs/conversions/upload-identifiers);
* at most 2,000 conversions a request (``TOO_MANY_CONVERSIONS_IN_REQUEST``: "Upload fewer than
  2001 events"); ``partialFailure`` on, so each bad row fails alone and the response says which
  (``partialFailureError.details[].errors[].location.fieldPathElements[].index``);
* the click must be younger than the action's click-through window (``EXPIRED_EVENT``, 90
  days by default), at least 6 hours old (``TOO_RECENT_EVENT``: "occurred less than 6 hours
  ago. Retry after 6 hours have passed") and before the conversion
  (``CONVERSION_PRECEDES_EVENT``);
* the upload file starts with ``Parameters:TimeZone=<tz>``, then ``Google Click ID,Conversion
  Name,Conversion Time,Conversion Value,Conversion Currency``; no other column, no personal
  data (Google Ads Help, "Import conversions from ad clicks into Google Ads");
* a ``BiddingDataExclusion`` has ``scope`` CAMPAIGN (up to 2,000 ``campaigns``) or CHANNEL,
  never both; ``startDateTime`` (inclusive) and ``endDateTime`` (exclusive) as
  ``yyyy-MM-dd HH:mm:ss`` in the account's time zone, the interval "within (0, 14 days]";
  ``name`` up to 255 characters, ``description`` up to 2,048; at most 500 active per account
  (API reference, ``BiddingDataExclusion``).

>>> from datetime import datetime
>>> conversion_date_time(datetime(2026, 7, 1, 16, 30), "America/New_York")
'2026-07-01 12:30:00-04:00'
>>> hash_email(" Jane.Doe@GoogleMail.com ") == hash_email("janedoe@googlemail.com")
True
>>> hash_email("jane.doe@example.com") == hash_email("janedoe@example.com")
False
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from signalloop.push.meta import Plan, event_id
from signalloop.push.meta import normalize as meta_normalize

#: Conversions per ``uploadClickConversions`` request, at most.
MAX_CONVERSIONS = 2000
#: ``userIdentifiers`` per conversion, at most.
MAX_USER_IDENTIFIERS = 5
#: A click younger than this is refused (``TOO_RECENT_EVENT``).
CLICK_MIN_AGE = timedelta(hours=6)
#: The conversion action's click-through window unless configured otherwise, in days.
CLICK_WINDOW_DAYS = 90
#: Longest bidding data exclusion, in days.
MAX_EXCLUSION_DAYS = 14
#: Active bidding data exclusions per account, at most.
MAX_ACTIVE_EXCLUSIONS = 500
#: Campaigns in one CAMPAIGN-scoped exclusion, at most.
MAX_EXCLUSION_CAMPAIGNS = 2000
#: Longest exclusion ``name`` and ``description``.
MAX_NAME = 255
MAX_DESCRIPTION = 2048
#: Header of Google's click-conversion upload file (after the ``Parameters:`` row).
UPLOAD_HEADER: tuple[str, ...] = (
    "Google Click ID",
    "Conversion Name",
    "Conversion Time",
    "Conversion Value",
    "Conversion Currency",
)

#: Row errors worth sending again later; every other row error is permanent. From the
#: documentation of each code: ``TOO_RECENT_EVENT`` ("Retry after 6 hours have passed") and
#: ``TOO_RECENT_CONVERSION_ACTION`` ("Try importing again in 6 hours") succeed on a later run,
#: not on an immediate retry; ``TRANSIENT_ERROR`` ("The user should retry") and
#: ``INTERNAL_ERROR`` are the retryable errors of Google's "Error types" guide. Not retried:
#: ``CLICK_NOT_FOUND``, which the enum documents as "you can safely ignore this warning" (a lead
#: that never clicked a Google ad; the guide for enhanced conversions for leads expects it for
#: every such upload), and ``EVENT_NOT_FOUND`` / ``UNPARSEABLE_GCLID``, which a retry repeats.
RETRYABLE_ROW_ERRORS: frozenset[str] = frozenset(
    {"TOO_RECENT_EVENT", "TOO_RECENT_CONVERSION_ACTION", "TRANSIENT_ERROR", "INTERNAL_ERROR"}
)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_DIGITS = re.compile(r"^[0-9]+$")
_ACTION = re.compile(r"^customers/([0-9]+)/conversionActions/([0-9]+)$")
_CAMPAIGN = re.compile(r"^customers/([0-9]+)/campaigns/([0-9]+)$")
_CDT = re.compile(r"^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:([+-])(\d{2}):(\d{2}))?$")
_EXCL_DT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_GMAIL = ("gmail.com", "googlemail.com")
_CLICK_IDS = ("gclid", "gbraid", "wbraid")
_IDENTIFIER_KEYS = ("hashedEmail", "hashedPhoneNumber")
_CONSENT = ("GRANTED", "DENIED")
_CHANNELS = ("SEARCH", "DISPLAY", "SHOPPING")


# --- times -----------------------------------------------------------------------------------


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {tz!r}") from exc


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _local(ts: datetime, tz: str) -> datetime:
    return _aware(ts).astimezone(_zone(tz))


def conversion_date_time(ts: datetime, tz: str) -> str:
    """``ts`` as ``yyyy-mm-dd hh:mm:ss+hh:mm`` in the account's IANA zone ``tz``.

    A naive ``ts`` is read as UTC; the offset is the one in force at that instant, so the two
    sides of a daylight-saving change get different offsets; microseconds are dropped.

    >>> conversion_date_time(datetime(2026, 3, 7, 12), "America/New_York")
    '2026-03-07 07:00:00-05:00'
    >>> conversion_date_time(datetime(2026, 3, 9, 12), "America/New_York")
    '2026-03-09 08:00:00-04:00'
    >>> conversion_date_time(datetime(2026, 1, 1, tzinfo=UTC), "Asia/Kolkata")
    '2026-01-01 05:30:00+05:30'
    """
    local = _local(ts, tz)
    offset = local.utcoffset() or timedelta(0)
    seconds = int(offset.total_seconds())
    if seconds % 60:
        raise ValueError(f"{tz} has an offset of {offset} at {ts}, not whole minutes")
    sign = "-" if seconds < 0 else "+"
    hours, minutes = divmod(abs(seconds) // 60, 60)
    return f"{local:%Y-%m-%d %H:%M:%S}{sign}{hours:02d}:{minutes:02d}"


def parse_conversion_date_time(text: str) -> datetime:
    """The instant a ``yyyy-mm-dd hh:mm:ss+|-hh:mm`` string names (a fixed-offset datetime).

    Raises ``ValueError`` when the text is not in that format, names an impossible date, or
    has no zone (Google refuses it: ``INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET``).

    >>> parse_conversion_date_time("2026-03-09 08:00:00-04:00").astimezone(UTC)
    datetime.datetime(2026, 3, 9, 12, 0, tzinfo=datetime.timezone.utc)
    >>> parse_conversion_date_time("2026-03-09 08:00:00")
    Traceback (most recent call last):
    ...
    ValueError: conversion date time '2026-03-09 08:00:00' has no zone offset (+hh:mm)
    """
    m = _CDT.match(str(text))
    if m is None:
        raise ValueError(f"conversion date time {text!r} is not yyyy-mm-dd hh:mm:ss+hh:mm")
    if m.group(7) is None:
        raise ValueError(f"conversion date time {text!r} has no zone offset (+hh:mm)")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    oh, om = int(m.group(8)), int(m.group(9))
    if oh > 23 or om > 59:
        raise ValueError(f"conversion date time {text!r} has an impossible offset")
    offset = timedelta(hours=oh, minutes=om) * (-1 if m.group(7) == "-" else 1)
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))


def _wall(ts: datetime, tz: str) -> str:
    """``yyyy-MM-dd HH:mm:ss`` of ``ts`` (naive: UTC) on the wall clock of ``tz``."""
    return f"{_local(ts, tz):%Y-%m-%d %H:%M:%S}"


# --- identities ------------------------------------------------------------------------------


def normalize_customer_id(value: Any) -> str:
    """A Google Ads customer id as the API takes it: digits, the dashes of ``123-456-7890`` gone.

    >>> normalize_customer_id("123-456-7890"), normalize_customer_id(1234567890)
    ('1234567890', '1234567890')
    """
    text = str(value).strip().replace("-", "")
    if not _DIGITS.match(text):
        raise ValueError(f"customer id {value!r} is not digits (like 123-456-7890)")
    return text


def conversion_action_resource(customer_id: Any, action: Any) -> str:
    """``customers/{cid}/conversionActions/{id}`` from a bare numeric id or a resource name.

    A resource name passes through; ``customer_id`` (which may then be ``None``) must, when
    given, be the customer it names: the upload goes to the customer that owns the action.

    >>> conversion_action_resource("123-456-7890", "987")
    'customers/1234567890/conversionActions/987'
    >>> conversion_action_resource(None, "customers/1234567890/conversionActions/987")
    'customers/1234567890/conversionActions/987'
    """
    text = str(action).strip()
    m = _ACTION.match(text)
    if m is not None:
        if customer_id is not None and normalize_customer_id(customer_id) != m.group(1):
            raise ValueError(
                f"conversion action {text} belongs to customer {m.group(1)}, "
                f"not {normalize_customer_id(customer_id)}"
            )
        return text
    if not _DIGITS.match(text):
        raise ValueError(
            f"conversion action {action!r} is neither a numeric id nor "
            "customers/{cid}/conversionActions/{id}"
        )
    if customer_id is None:
        raise ValueError(f"conversion action id {text} needs the customer id")
    return f"customers/{normalize_customer_id(customer_id)}/conversionActions/{text}"


def campaign_resource(customer_id: Any, campaign: Any) -> str:
    """``customers/{cid}/campaigns/{id}`` from a bare numeric campaign id or a resource name.

    >>> campaign_resource("123-456-7890", 42)
    'customers/1234567890/campaigns/42'
    """
    text = str(campaign).strip()
    m = _CAMPAIGN.match(text)
    if m is not None:
        if normalize_customer_id(customer_id) != m.group(1):
            raise ValueError(
                f"campaign {text} is not in customer {normalize_customer_id(customer_id)}"
            )
        return text
    if not _DIGITS.match(text):
        raise ValueError(f"Google campaign id {campaign!r} is not numeric")
    return f"customers/{normalize_customer_id(customer_id)}/campaigns/{text}"


def normalize_email(value: Any) -> str | None:
    """An email as Google normalises it before hashing; ``None`` when it is not one.

    Trimmed and lower-cased (as Meta does, :func:`signalloop.push.meta.normalize`), then the
    periods before the ``@`` of a gmail.com / googlemail.com address removed (Google's rule;
    other domains keep theirs). A value that already is 64 hex characters passes through.

    >>> normalize_email(" Jane.Doe@Gmail.com "), normalize_email("jane.doe@example.com")
    ('janedoe@gmail.com', 'jane.doe@example.com')
    >>> normalize_email("jane") is None
    True
    """
    text = meta_normalize("em", value)
    if text is None or _HEX64.match(text):
        return text
    local, _, domain = text.rpartition("@")
    if domain in _GMAIL:
        local = local.replace(".", "")
    return f"{local}@{domain}" if local else None


def normalize_phone(value: Any, country_code: str | None = None) -> str | None:
    """A phone number in E.164 (``+`` and 7-15 digits), as Google hashes it; else ``None``.

    A number written internationally (a leading ``+`` or ``00``) keeps its country code; a
    national number needs ``country_code`` (e.g. ``"44"``), which replaces its trunk ``0``
    (kept for Italy, ``"39"``, where it belongs to the number); without one it is left out,
    since its hash could never match. Separators go as Meta's normalisation drops them. A
    value that already is 64 hex characters passes through.

    >>> normalize_phone("+1 (650) 555-1212"), normalize_phone("0044 20 7946 0000")
    ('+16505551212', '+442079460000')
    >>> normalize_phone("020 7946 0000") is None, normalize_phone("020 7946 0000", "44")
    (True, '+442079460000')
    """
    if value is None:
        return None
    text = str(value).strip()
    digits = meta_normalize("ph", text)  # digits only, without a leading + or 00
    if digits is None or _HEX64.match(digits):
        return digits
    international = text.startswith("+") or re.sub(r"\D", "", text).startswith("00")
    if not international:
        cc = (country_code or "").strip().lstrip("+")
        if not _DIGITS.match(cc):
            return None
        if digits.startswith("0") and cc != "39":
            digits = digits[1:]
        digits = cc + digits
    return f"+{digits}" if 7 <= len(digits) <= 15 else None


def _sha256(text: str) -> str:
    return text if _HEX64.match(text) else hashlib.sha256(text.encode("utf-8")).hexdigest()


def hash_email(value: Any) -> str | None:
    """SHA-256 hex of :func:`normalize_email`; ``None`` if the email is not valid."""
    norm = normalize_email(value)
    return None if norm is None else _sha256(norm)


def hash_phone(value: Any, country_code: str | None = None) -> str | None:
    """SHA-256 hex of :func:`normalize_phone` (the ``+`` included); ``None`` if not valid.

    >>> hash_phone("+1 650 555 1212") == hashlib.sha256(b"+16505551212").hexdigest()
    True
    """
    norm = normalize_phone(value, country_code)
    return None if norm is None else _sha256(norm)


# --- click conversions -----------------------------------------------------------------------


def build_click_conversion(
    record_id: str,
    stage: str,
    ts: datetime,
    *,
    conversion_action: str,
    tz: str,
    gclid: Any = None,
    email: Any = None,
    phone: Any = None,
    value: Any = None,
    currency: Any = None,
    customer_id: Any = None,
    phone_country_code: str | None = None,
    ad_user_data_consent: str | None = None,
) -> dict[str, Any] | None:
    """One ``ClickConversion`` for a record reaching a stage; ``None`` with nothing to match on.

    With a ``gclid`` the conversion carries the click; without one it is an enhanced
    conversion for leads, carrying the valid hashed ``email`` / ``phone`` as
    ``userIdentifiers`` (``[{"hashedEmail": ...}, {"hashedPhoneNumber": ...}]``).
    ``conversion_action`` is a resource name, or a bare id when ``customer_id`` is given. A
    ``value`` that is not a number is kept as given, for :func:`problems` to name.
    ``ad_user_data_consent`` (``"GRANTED"`` / ``"DENIED"``) fills ``consent.adUserData``, which
    Google asks for on conversions of users in the EEA.

    >>> c = build_click_conversion("r1", "sql", datetime(2026, 3, 1, 15), tz="Europe/Berlin",
    ...     conversion_action="customers/1/conversionActions/2", gclid="Cj0KEAiA", value=120,
    ...     currency="eur")
    >>> c["conversionDateTime"], c["conversionValue"], c["currencyCode"], "userIdentifiers" in c
    ('2026-03-01 16:00:00+01:00', 120.0, 'EUR', False)
    """
    conv: dict[str, Any] = {
        "conversionAction": conversion_action_resource(customer_id, conversion_action),
        "conversionDateTime": conversion_date_time(ts, tz),
        "orderId": event_id(record_id, stage),
    }
    click = "" if gclid is None else str(gclid).strip()
    if click:
        conv["gclid"] = click
    else:
        ids: list[dict[str, str]] = []
        he = hash_email(email)
        if he is not None:
            ids.append({"hashedEmail": he})
        hp = hash_phone(phone, phone_country_code)
        if hp is not None:
            ids.append({"hashedPhoneNumber": hp})
        if not ids:
            return None
        conv["userIdentifiers"] = ids
    if value is not None:
        conv["conversionValue"] = _number(value)
    if currency is not None and str(currency).strip():
        conv["currencyCode"] = str(currency).strip().upper()
    if ad_user_data_consent is not None:
        conv["consent"] = {"adUserData": str(ad_user_data_consent).strip().upper()}
    return conv


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def problems(
    conv: Mapping[str, Any],
    now: datetime,
    *,
    click_ts: datetime | None = None,
    click_window_days: int = CLICK_WINDOW_DAYS,
) -> list[str]:
    """What makes Google refuse a conversion (empty: nothing we can see), as of ``now``.

    Each message names the Google error it avoids. ``click_ts`` (naive: UTC) is the click's
    time when known (for a gclid); without it the click's age cannot be checked here.
    Every code named is in the v22 error protos; that Google answers with it is documented
    for the ``ConversionUploadError`` codes and ``DateError
    INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET``, and our reading for the generic ones
    (``RESOURCE_NAME_MALFORMED``, ``REQUIRED``, ``VALUE_MUST_BE_UNSET``, ``TOO_MANY``,
    ``TOO_LOW``, ``UNSUPPORTED``, ``INVALID_ENUM_VALUE``). A gclid together with
    ``userIdentifiers`` is allowed: Google's guide for enhanced conversions for leads asks
    for the gclid too when there is one.

    >>> now = datetime(2026, 3, 10, tzinfo=UTC)
    >>> c = build_click_conversion("r1", "sql", now - timedelta(days=1), tz="UTC",
    ...     conversion_action="customers/1/conversionActions/2", gclid="abc")
    >>> problems(c, now, click_ts=now - timedelta(days=95))
    ['click is 95.0 days old, past the 90-day click-through window (EXPIRED_EVENT)']
    """
    out: list[str] = []
    action = conv.get("conversionAction")
    if not isinstance(action, str) or not _ACTION.match(action):
        out.append(
            f"conversionAction {action!r} is not customers/{{cid}}/conversionActions/{{id}} "
            "(RESOURCE_NAME_MALFORMED)"
        )
    when: datetime | None = None
    text = conv.get("conversionDateTime")
    if text is None:
        out.append("missing conversionDateTime (FieldError REQUIRED)")
    else:
        try:
            when = parse_conversion_date_time(str(text))
        except ValueError as exc:
            out.append(f"{exc} (INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET)")
    out.extend(_identity_problems(conv))
    if click_ts is not None:
        click = _aware(click_ts)
        age = now - click
        if age > timedelta(days=click_window_days):
            out.append(
                f"click is {age / timedelta(days=1):.1f} days old, past the "
                f"{click_window_days}-day click-through window (EXPIRED_EVENT)"
            )
        elif age < CLICK_MIN_AGE:
            out.append(
                f"click is {age / timedelta(hours=1):.1f} hours old, under 6 hours "
                "(TOO_RECENT_EVENT: retry after 6 hours)"
            )
        if when is not None and when < click:
            at = click.astimezone(UTC)
            out.append(
                f"conversion at {text} precedes its click at {at:%Y-%m-%d %H:%M:%S} UTC "
                "(CONVERSION_PRECEDES_EVENT)"
            )
    if "conversionValue" in conv:
        v = conv["conversionValue"]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            out.append(f"conversionValue {v!r} is not a finite number (not valid JSON for it)")
        elif v < 0:
            out.append(f"conversionValue {v!r} is negative (RangeError TOO_LOW)")
    if "currencyCode" in conv:
        cur = conv["currencyCode"]
        if not isinstance(cur, str) or not _CURRENCY.match(cur):
            out.append(
                f"currencyCode {cur!r} is not 3 upper-case letters of ISO 4217 "
                "(CurrencyCodeError UNSUPPORTED)"
            )
    consent = conv.get("consent")
    if consent is not None and (
        not isinstance(consent, Mapping) or consent.get("adUserData") not in _CONSENT
    ):
        out.append(f"consent {consent!r} is not adUserData GRANTED or DENIED (INVALID_ENUM_VALUE)")
    return out


def _identity_problems(conv: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    clicks = [k for k in _CLICK_IDS if conv.get(k) not in (None, "")]
    ids = conv.get("userIdentifiers")
    if len(clicks) > 1:
        code = "GBRAID_WBRAID_BOTH_SET" if clicks == ["gbraid", "wbraid"] else "VALUE_MUST_BE_UNSET"
        out.append(f"{' and '.join(clicks)} are all set: set one of gclid, gbraid, wbraid ({code})")
    if not clicks and not ids:
        out.append(
            "no gclid, gbraid, wbraid or userIdentifiers: nothing to match the conversion to "
            "(FieldError REQUIRED)"
        )
    for key in clicks:
        v = conv[key]
        if not isinstance(v, str) or not v.strip() or re.search(r"\s", v):
            code = "UNPARSEABLE_GCLID" if key == "gclid" else f"UNPARSEABLE_{key.upper()}"
            out.append(f"{key} {v!r} is not a click id ({code})")
    if ids is not None:
        if not isinstance(ids, list):
            out.append("userIdentifiers must be a list (INVALID_USER_IDENTIFIER)")
            return out
        if len(ids) > MAX_USER_IDENTIFIERS:
            out.append(
                f"{len(ids)} userIdentifiers, at most {MAX_USER_IDENTIFIERS} "
                "(CollectionSizeError TOO_MANY)"
            )
        for ident in ids:
            keys = list(ident) if isinstance(ident, Mapping) else []
            if len(keys) != 1 or keys[0] not in _IDENTIFIER_KEYS:
                out.append(
                    f"user identifier {keys or ident!r} must hold exactly one of hashedEmail, "
                    "hashedPhoneNumber (UNSUPPORTED_USER_IDENTIFIER)"
                )
            elif not isinstance(ident[keys[0]], str) or not _HEX64.match(ident[keys[0]]):
                out.append(
                    f"{keys[0]} must be SHA-256 hex (64 lower-case hex characters) "
                    "(INVALID_USER_IDENTIFIER)"
                )
    return out


def plan_requests(
    convs: Iterable[Mapping[str, Any]],
    now: datetime,
    *,
    click_ts: Mapping[str, datetime] | None = None,
    size: int = MAX_CONVERSIONS,
    click_window_days: int = CLICK_WINDOW_DAYS,
) -> Plan:
    """Requests of at most ``size`` valid conversions; every invalid one left out with reasons.

    ``click_ts`` maps an ``orderId`` to its click's time (for the click-age rules). A second
    conversion with an ``orderId`` already planned, or with the same click, action and
    ``conversionDateTime``, is left out too (``DUPLICATE_ORDER_ID`` /
    ``DUPLICATE_CLICK_CONVERSION_IN_REQUEST`` in one request, ``ORDER_ID_ALREADY_IN_USE`` /
    ``CLICK_CONVERSION_ALREADY_EXISTS`` across two). The :class:`~signalloop.push.meta.Plan`
    is Meta's: ``left_out`` entries hold the conversion under ``"event"``.

    >>> now = datetime(2026, 3, 10, tzinfo=UTC)
    >>> kw = {"tz": "UTC", "conversion_action": "customers/1/conversionActions/2"}
    >>> a = build_click_conversion("r1", "sql", now - timedelta(days=1), gclid="g1", **kw)
    >>> b = build_click_conversion("r2", "sql", now - timedelta(hours=1), gclid="g2", **kw)
    >>> p = plan_requests([a, b], now, click_ts={b["orderId"]: now - timedelta(hours=2)})
    >>> p.sent_events, p.left_out[0]["reasons"]
    (1, ['click is 2.0 hours old, under 6 hours (TOO_RECENT_EVENT: retry after 6 hours)'])
    """
    if not 1 <= size <= MAX_CONVERSIONS:
        raise ValueError(f"size must be 1-{MAX_CONVERSIONS}, got {size}")
    clicks = click_ts or {}
    plan = Plan()
    orders: set[str] = set()
    pairs: set[tuple[str, str, str]] = set()
    for conv in convs:
        order = conv.get("orderId")
        why = problems(
            conv,
            now,
            click_ts=clicks.get(order) if isinstance(order, str) else None,
            click_window_days=click_window_days,
        )
        if isinstance(order, str) and order in orders:
            why.append(f"orderId {order} repeats one already planned (DUPLICATE_ORDER_ID)")
        click = next((str(conv[k]) for k in _CLICK_IDS if conv.get(k)), None)
        pair = (click, str(conv.get("conversionAction")), str(conv.get("conversionDateTime")))
        if click is not None and pair in pairs:
            why.append(
                "same click, action and conversionDateTime as one already planned "
                "(DUPLICATE_CLICK_CONVERSION_IN_REQUEST)"
            )
        if why:
            plan.left_out.append({"event": dict(conv), "reasons": why})
            continue
        if isinstance(order, str):
            orders.add(order)
        if click is not None:
            pairs.add((click, pair[1], pair[2]))
        plan.take(conv, size)
    return plan


def request_body(
    convs: Sequence[Mapping[str, Any]],
    *,
    partial_failure: bool = True,
    validate_only: bool = False,
    debug_enabled: bool = False,
) -> dict[str, Any]:
    """The JSON body of one ``POST customers/{cid}:uploadClickConversions``.

    ``debug_enabled`` asks Google to run every check on enhanced conversions for leads (and
    answer ``CLICK_NOT_FOUND`` for unmatched ones); it is left out of the body when false.

    >>> sorted(request_body([]))
    ['conversions', 'partialFailure', 'validateOnly']
    """
    if len(convs) > MAX_CONVERSIONS:
        raise ValueError(
            f"{len(convs)} conversions in one request, at most {MAX_CONVERSIONS} "
            "(TOO_MANY_CONVERSIONS_IN_REQUEST)"
        )
    body: dict[str, Any] = {
        "conversions": [dict(c) for c in convs],
        "partialFailure": partial_failure,
        "validateOnly": validate_only,
    }
    if debug_enabled:
        body["debugEnabled"] = True
    return body


# --- responses -------------------------------------------------------------------------------


def failure_errors(
    response_json: Mapping[str, Any], *, field: str = "conversions"
) -> list[dict[str, Any]]:
    """Every ``GoogleAdsError`` in a response, in order.

    Reads a partial-failure response's ``partialFailureError`` or a failed request's
    ``error``; each error becomes ``{"code", "kind", "message", "index", "retryable"}``:
    ``code`` is the single value of ``errorCode`` (e.g. ``"EXPIRED_EVENT"``), ``kind`` its key
    (e.g. ``"conversionUploadError"``), ``index`` the position in ``field`` (``"conversions"``,
    or ``"operations"`` for a mutate) the error is about, ``None`` for the request as a whole.
    """
    status = response_json.get("partialFailureError") or response_json.get("error") or {}
    out: list[dict[str, Any]] = []
    if not isinstance(status, Mapping):
        return out
    for detail in status.get("details") or []:
        if not isinstance(detail, Mapping):
            continue
        if not str(detail.get("@type", "")).endswith("GoogleAdsFailure"):
            continue
        for err in detail.get("errors") or []:
            if not isinstance(err, Mapping):
                continue
            code_map = err.get("errorCode") or {}
            kind, code = ("", "UNKNOWN")
            if isinstance(code_map, Mapping) and len(code_map) == 1:
                kind, value = next(iter(code_map.items()))
                code = str(value)
            out.append(
                {
                    "code": code,
                    "kind": str(kind),
                    "message": str(err.get("message", "")),
                    "index": _index(err.get("location"), field),
                    "retryable": code in RETRYABLE_ROW_ERRORS,
                }
            )
    return out


def _index(location: Any, field: str) -> int | None:
    if not isinstance(location, Mapping):
        return None
    for element in location.get("fieldPathElements") or []:
        if isinstance(element, Mapping) and element.get("fieldName") == field:
            try:
                return int(element["index"])
            except (KeyError, TypeError, ValueError):
                return None
    return None


def row_errors(response_json: Mapping[str, Any], n: int) -> list[dict[str, Any] | None]:
    """Per row of a partial-failure upload of ``n`` conversions: its error, or ``None`` if none.

    A row's entry is the first of :func:`failure_errors` about it, with ``codes`` (every code
    about the row, in order) and ``message`` (their messages joined by ``"; "``); an error
    about no row, or a row past ``n``, is not in the list (see :func:`failure_errors`).

    >>> resp = {"results": [{}, {"gclid": "g"}], "partialFailureError": {"code": 3,
    ...     "message": "...", "details": [{"@type": "type.googleapis.com/google.ads."
    ...     "googleads.v22.errors.GoogleAdsFailure", "errors": [{"errorCode":
    ...     {"conversionUploadError": "TOO_RECENT_EVENT"}, "message": "too recent",
    ...     "location": {"fieldPathElements": [{"fieldName": "conversions", "index": 0}]}}]}]}}
    >>> [e and (e["code"], e["retryable"]) for e in row_errors(resp, 2)]
    [('TOO_RECENT_EVENT', True), None]
    """
    if "partialFailureError" not in response_json:
        return [None] * n
    rows: list[dict[str, Any] | None] = [None] * n
    for err in failure_errors(response_json):
        i = err["index"]
        if i is None or not 0 <= i < n:
            continue
        row = rows[i]
        if row is None:
            rows[i] = {**err, "codes": [err["code"]]}
        else:
            row["codes"].append(err["code"])
            row["message"] = f"{row['message']}; {err['message']}"
            row["retryable"] = row["retryable"] and err["retryable"]
    return rows


# --- upload file -----------------------------------------------------------------------------


def _csv_number(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return ""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def upload_csv(
    rows: Iterable[Mapping[str, Any]], tz: str, names: Mapping[str, str] | None = None
) -> str:
    """Google's click-conversion upload file for the conversions that carry a ``gclid``.

    The first row is ``Parameters:TimeZone=<tz>``, then the header :data:`UPLOAD_HEADER`, then
    one row per gclid conversion with its ``Conversion Time`` as ``yyyy-mm-dd hh:mm:ss`` on
    the wall clock of ``tz``. Conversions without a gclid are not written: the file carries no
    personal data. ``names`` maps a conversion action's resource name to its name in Google
    Ads (the file matches actions by name); an action without one gets its numeric id.

    >>> c = {"gclid": "Cj0", "conversionAction": "customers/1/conversionActions/77",
    ...      "conversionDateTime": "2026-07-01 12:30:00-04:00", "conversionValue": 99.5}
    >>> print(upload_csv([c], "Europe/Berlin"), end="")
    Parameters:TimeZone=Europe/Berlin
    Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency
    Cj0,77,2026-07-01 18:30:00,99.5,
    """
    zone = _zone(tz)
    labels = names or {}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([f"Parameters:TimeZone={tz}"])
    w.writerow(UPLOAD_HEADER)
    for conv in rows:
        click = str(conv.get("gclid") or "").strip()
        if not click:
            continue
        action = str(conv.get("conversionAction", ""))
        name = labels.get(action, action.rsplit("/", 1)[-1])
        when = parse_conversion_date_time(str(conv["conversionDateTime"])).astimezone(zone)
        w.writerow(
            [
                click,
                name,
                f"{when:%Y-%m-%d %H:%M:%S}",
                _csv_number(conv.get("conversionValue")),
                str(conv.get("currencyCode") or ""),
            ]
        )
    return buf.getvalue()


# --- bidding data exclusions -----------------------------------------------------------------


def exclusion_windows(
    start: datetime, end: datetime, *, max_days: int = MAX_EXCLUSION_DAYS, tz: str | None = None
) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` split into consecutive pieces of at most ``max_days`` days.

    The pieces cover the window exactly: the first starts at ``start``, each starts where the
    one before ends, the last ends at ``end``. With ``tz`` (the account's zone) a piece that
    would span more than ``max_days`` on that zone's wall clock (a piece over the start of
    daylight-saving time, when clocks go forward, gains an hour there) is shortened so it
    does not.

    >>> s = datetime(2026, 1, 1)
    >>> [(b - a).days for a, b in exclusion_windows(s, s + timedelta(days=30))]
    [14, 14, 2]
    """
    if end <= start:
        raise ValueError(f"exclusion window ends ({end}) at or before it starts ({start})")
    if max_days < 1:
        raise ValueError(f"max_days must be at least 1, got {max_days}")
    longest = timedelta(days=max_days)
    pieces: list[tuple[datetime, datetime]] = []
    a = start
    while a < end:
        b = min(a + longest, end)
        if tz is not None:
            while (
                wall := _local(b, tz).replace(tzinfo=None) - _local(a, tz).replace(tzinfo=None)
            ) > longest:
                b -= wall - longest
        pieces.append((a, b))
        a = b
    return pieces


def shift_start(start: datetime, median_delay: timedelta | None) -> datetime:
    """``start`` moved back by the measured median click-to-conversion delay.

    Exclusions act on clicks, so the clicks whose conversions an outage lost began that much
    earlier (Google's advice). ``None`` (no measured delay) leaves ``start`` as it is; the
    caller reports that the window was not widened.

    >>> shift_start(datetime(2026, 5, 10), timedelta(days=2, hours=6))
    datetime.datetime(2026, 5, 7, 18, 0)
    """
    if median_delay is None:
        return start
    if median_delay < timedelta(0):
        raise ValueError(f"median delay {median_delay} is negative")
    return start - median_delay


def build_exclusion(
    customer_id: Any,
    google_campaign_id: Any,
    start: datetime,
    end: datetime,
    *,
    tz: str,
    name: str,
    description: str = "",
) -> dict[str, Any]:
    """A ``BiddingDataExclusion`` create body for one campaign and one window piece.

    ``start`` / ``end`` (naive: UTC) are written on the account's wall clock (``tz``);
    ``name`` is cut to 255 characters and ``description`` to 2,048. The window is not split
    here: give it a piece of :func:`exclusion_windows`, and check with
    :func:`exclusion_problems`. A short window that ends inside the hour the clocks repeat
    (the end of daylight-saving time) would end before it starts on the wall clock: its end
    moves on by whole hours until it does not, widening the exclusion by at most one hour.

    >>> e = build_exclusion("123-456-7890", 42, datetime(2026, 5, 1, 8), datetime(2026, 5, 3),
    ...                     tz="Europe/Paris", name="outage")
    >>> e["campaigns"], e["startDateTime"], e["endDateTime"]
    (['customers/1234567890/campaigns/42'], '2026-05-01 10:00:00', '2026-05-03 02:00:00')
    """
    first, last = _wall(start, tz), _wall(end, tz)
    if _aware(end) > _aware(start):
        while last <= first:  # same-width strings: text order is time order
            end = _aware(end) + timedelta(hours=1)
            last = _wall(end, tz)
    return {
        "name": str(name)[:MAX_NAME],
        "description": str(description)[:MAX_DESCRIPTION],
        "scope": "CAMPAIGN",
        "campaigns": [campaign_resource(customer_id, google_campaign_id)],
        "startDateTime": first,
        "endDateTime": last,
    }


def exclusion_problems(excl: Mapping[str, Any]) -> list[str]:
    """What makes Google refuse an exclusion body (empty: nothing we can see).

    >>> e = build_exclusion(1, 2, datetime(2026, 5, 1), datetime(2026, 5, 20), tz="UTC",
    ...                     name="outage")
    >>> exclusion_problems(e)
    ['the window is 19 days, 0:00:00 long, at most 14 days']
    """
    out: list[str] = []
    name = excl.get("name")
    if not isinstance(name, str) or not name.strip():
        out.append("name is empty (StringLengthError EMPTY)")
    elif len(name) > MAX_NAME:
        out.append(f"name is {len(name)} characters, at most {MAX_NAME} (TOO_LONG)")
    desc = excl.get("description", "")
    if not isinstance(desc, str) or len(desc) > MAX_DESCRIPTION:
        n = len(desc) if isinstance(desc, str) else desc
        out.append(f"description is {n!r} characters, at most {MAX_DESCRIPTION} (TOO_LONG)")
    scope = excl.get("scope")
    campaigns = excl.get("campaigns") or []
    channels = excl.get("advertisingChannelTypes") or []
    if scope == "CAMPAIGN":
        if not campaigns:
            out.append("scope CAMPAIGN needs at least one campaign")
        if len(campaigns) > MAX_EXCLUSION_CAMPAIGNS:
            out.append(f"{len(campaigns)} campaigns, at most {MAX_EXCLUSION_CAMPAIGNS}")
        for c in campaigns:
            if not isinstance(c, str) or not _CAMPAIGN.match(c):
                out.append(f"campaign {c!r} is not customers/{{cid}}/campaigns/{{id}}")
        if channels:
            out.append("scope CAMPAIGN with advertisingChannelTypes: set one or the other")
    elif scope == "CHANNEL":
        if not channels:
            out.append("scope CHANNEL needs advertisingChannelTypes")
        for ch in channels:
            if ch not in _CHANNELS:
                out.append(f"advertising channel type {ch!r} is not one of {', '.join(_CHANNELS)}")
        if campaigns:
            out.append("scope CHANNEL with campaigns: set one or the other")
    else:
        out.append(f"scope {scope!r} is not CAMPAIGN or CHANNEL")
    bounds: list[datetime] = []
    for key in ("startDateTime", "endDateTime"):
        v = excl.get(key)
        try:
            if not isinstance(v, str) or not _EXCL_DT.match(v):
                raise ValueError
            bounds.append(datetime.strptime(v, "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            out.append(f"{key} {v!r} is not yyyy-MM-dd HH:mm:ss (INVALID_STRING_DATE_TIME_SECONDS)")
    if len(bounds) == 2:
        span = bounds[1] - bounds[0]
        if span <= timedelta(0):
            out.append("endDateTime is not after startDateTime (START_DATE_AFTER_END_DATE)")
        elif span > timedelta(days=MAX_EXCLUSION_DAYS):
            out.append(f"the window is {span} long, at most {MAX_EXCLUSION_DAYS} days")
    return out


def exclusion_key(campaign_id: Any, start_date: date | datetime | str, piece_index: int) -> str:
    """A stable key for one exclusion piece, so the same outage piece is never sent twice.

    Give the stored outage window's own start (before :func:`shift_start`): a re-measured
    delay then moves the exclusion (an ``update``) instead of creating a second one. An
    aware ``datetime`` is keyed by its UTC instant, a naive one is read as UTC.

    >>> paris = timezone(timedelta(hours=2))
    >>> k = exclusion_key("42", datetime(2026, 5, 1, 2, tzinfo=paris), 0)
    >>> k == exclusion_key(42, datetime(2026, 5, 1), 0) != exclusion_key(42, date(2026, 5, 1), 0)
    True
    >>> k  # doctest: +ELLIPSIS
    'sl-excl-...'
    """
    if isinstance(start_date, datetime):
        start = f"{_aware(start_date).astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
    elif isinstance(start_date, date):
        start = start_date.isoformat()
    else:
        start = str(start_date).strip()
    digest = hashlib.sha256(f"{str(campaign_id).strip()}\x1f{start}\x1f{int(piece_index)}".encode())
    return f"sl-excl-{digest.hexdigest()[:24]}"


__all__ = [
    "CLICK_MIN_AGE",
    "CLICK_WINDOW_DAYS",
    "MAX_ACTIVE_EXCLUSIONS",
    "MAX_CONVERSIONS",
    "MAX_DESCRIPTION",
    "MAX_EXCLUSION_CAMPAIGNS",
    "MAX_EXCLUSION_DAYS",
    "MAX_NAME",
    "MAX_USER_IDENTIFIERS",
    "RETRYABLE_ROW_ERRORS",
    "UPLOAD_HEADER",
    "Plan",
    "build_click_conversion",
    "build_exclusion",
    "campaign_resource",
    "conversion_action_resource",
    "conversion_date_time",
    "exclusion_key",
    "exclusion_problems",
    "exclusion_windows",
    "failure_errors",
    "hash_email",
    "hash_phone",
    "normalize_customer_id",
    "normalize_email",
    "normalize_phone",
    "parse_conversion_date_time",
    "plan_requests",
    "problems",
    "request_body",
    "row_errors",
    "shift_start",
    "upload_csv",
]
