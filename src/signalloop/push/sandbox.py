"""Local stand-ins for the Meta Conversions API and the Google Ads REST API (issue 12).

One :class:`Sandbox` runs a FastAPI app under uvicorn on ``127.0.0.1`` (a free port, a
background thread) that answers as the platforms do, enforcing their documented rules with
its own checks: nothing here imports :mod:`signalloop.push.meta` or ``push.google``, so a bug
in our request builders shows as a rejection, not as two copies of the same mistake.

Routes (REST JSON, the wire formats of ``notes/issue12_brief.md``):

* Meta: ``POST /{version}/{pixel_id}/events`` (``Authorization: Bearer``; the Graph API's
  ``access_token`` query parameter is also accepted, and counted in :attr:`Sandbox.url_tokens`
  because it leaks into URLs and logs);
* Google Ads: ``POST /{version}/customers/{cid}:uploadClickConversions``,
  ``POST /{version}/customers/{cid}/biddingDataExclusions:mutate``,
  ``POST /{version}/customers/{cid}/googleAds:search`` (the GAQL subset of :func:`parse_gaql`);
* OAuth: ``POST /token`` (form ``grant_type=refresh_token``), which issues access tokens.

The server clock is ``now`` (a datetime, a callable, or the wall clock), so a replay can run
the sandbox in simulated time.

Rules enforced, and where each fact comes from. "Confirmed" means found in the platform's
documentation or its published API definitions (the ``search`` tool, 2026: Graph API "Handling
Errors" page; googleapis ``google/ads/googleads/v22`` protos: ``conversion_upload_error``,
``conversion_upload_service``, ``bidding_data_exclusion``, ``date_error``, ``request_error``,
``authentication_error``, ``authorization_error``, ``partial_failure_error``, ``query_error``,
``quota_error``, ``internal_error``, ``mutate_error``, ``field_error``, ``string_length_error``,
``collection_size_error``, ``resource_count_limit_exceeded_error``, ``date_range_error``).
"PLATFORMS.md" means taken from ``../shared/PLATFORMS.md`` without a page found here;
"chosen" means the platform documents the rule but not the exact code, so the sandbox picks a
documented enum value that fits.

Meta (one invalid event rejects the whole request; nothing of it is stored):

* error object ``{"error": {"message", "type", "code", "error_subcode", "error_user_title",
  "error_user_msg", "fbtrace_id"}}``; code 190 for an invalid token and subcode 463 for an
  expired session; codes 1/2 (unknown / service, transient) and 4/17 (too many calls):
  confirmed. HTTP 401 for code 190 follows the brief (Graph has long answered 400 too: key on
  ``error.code``). Code 100 with subcode 33 for a pixel that does not exist: Graph's
  well-known answer, not found in a page here. Invalid parameters: code 100, confirmed as the
  "invalid parameter" code; the per-rule ``error_subcode`` values of the Conversions API are not
  published in a page found here, so the sandbox omits the subcode and names the event index and
  the rule in ``error_user_msg``;
* ``data``: 1 to 1,000 events; ``event_name`` a non-empty string; ``event_time`` integer Unix
  seconds, at most 7 days before the server clock (an older one rejects the request) and not
  in the future (60 s of clock skew tolerated: chosen); ``action_source`` one of the nine
  documented values; ``user_data`` non-empty, ``lead_id`` an integer of 15-16 digits, hashed
  fields (``em``, ``ph``, ``fn``, ``ln``, ``ge``, ``db``, ``ct``, ``st``, ``zp``,
  ``country``) 64 lower-case hex characters (a string or a list of them);
  ``custom_data.event_source == "crm"`` and a non-empty ``lead_event_source`` when
  ``action_source`` is ``system_generated``: PLATFORMS.md (the CRM integration's rules);
* deduplication on ``(pixel, event_name, event_id)``: every copy counts in
  ``events_received`` and later copies are dropped, kept forever here (Meta documents a 48-hour
  window for browser/server pairs); ``test_event_code`` events are kept apart and not
  deduplicated.

Google Ads (whole-request errors ``{"error": {"code": <HTTP status>, "message", "status",
"details": [GoogleAdsFailure]}}``; row errors in ``partialFailureError`` ``{"code": 3, ...}``):

* auth: no bearer token -> 401 ``AUTHENTICATION_ERROR``; unknown -> 401 ``OAUTH_TOKEN_INVALID``;
  expired (by :meth:`Sandbox.expire_token` or past ``expires_in`` on the server clock) -> 401
  ``OAUTH_TOKEN_EXPIRED``; no ``developer-token`` header -> 400 ``requestError:
  DEVELOPER_TOKEN_PARAMETER_MISSING``; a wrong one -> 401 ``DEVELOPER_TOKEN_INVALID`` (both enum
  values are confirmed and marked deprecated in v22+, where developer tokens are being sunset);
  a customer id that is not digits -> 400 ``INVALID_CUSTOMER_ID``; an unknown one -> 403
  ``USER_PERMISSION_DENIED``. The HTTP status of each is chosen from the gRPC status family;
* ``uploadClickConversions``: ``partialFailure`` must be true (``PARTIAL_FAILURE_MODE_REQUIRED``),
  at most 2,000 rows (``TOO_MANY_CONVERSIONS_IN_REQUEST``), unknown JSON fields or wrong JSON
  types -> 400 with a ``google.rpc.BadRequest`` detail (as Google's JSON transcoding answers;
  snake_case and lowerCamelCase names are both accepted, as proto3 JSON parsing does). Per row:
  ``NO_CONVERSION_ACTION_FOUND`` (the action is matched by its id alone, as the service
  documents), ``TOO_RECENT_CONVERSION_ACTION`` (created under 6 hours ago),
  ``dateError: INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET`` /
  ``INVALID_FIELD_VALUES_IN_DATE_TIME``, ``GBRAID_WBRAID_BOTH_SET``, ``UNPARSEABLE_GCLID`` /
  ``_GBRAID`` / ``_WBRAID`` (characters outside ``[A-Za-z0-9_-]``), ``INVALID_USER_IDENTIFIER``
  (not 64 hex), ``UNSUPPORTED_USER_IDENTIFIER`` (not hashed email / phone), ``DUPLICATE_ORDER_ID``
  (in the request) / ``ORDER_ID_ALREADY_IN_USE`` (stored), ``DUPLICATE_CLICK_CONVERSION_IN_REQUEST``
  / ``CLICK_CONVERSION_ALREADY_EXISTS``, and with known clicks ``EVENT_NOT_FOUND`` (an unknown
  click id), ``CONVERSION_PRECEDES_EVENT``, ``EXPIRED_EVENT`` (click before the click-through
  window, 90 days by default, of the conversion or of the server clock), ``TOO_RECENT_EVENT``
  (click under 6 hours before the server clock): all confirmed. Chosen codes: no click id and
  no user identifier -> ``fieldError: REQUIRED``; a gclid together with a gbraid/wbraid ->
  ``fieldError: VALUE_MUST_BE_UNSET``; more than 5 user identifiers -> ``collectionSizeError:
  TOO_MANY``; a negative value -> ``rangeError: TOO_LOW``; a currency that is not 3 upper-case
  letters -> ``currencyCodeError: UNSUPPORTED``. A gclid sent together with user identifiers is
  accepted (enhanced conversions for leads take both). ``CLICK_NOT_FOUND`` (an email or phone that
  matches no click) is never answered: Google removed ``debug_enabled``, the only way to get
  it, in v21 and stopped returning the code in every version from 2025-08-06 (Google Ads
  Developer Blog, 2025-06-26), so ``debugEnabled`` is an unknown field from v21 on and ignored
  before. ``validateOnly`` checks and stores nothing;
* ``biddingDataExclusions:mutate`` (create / update with ``updateMask`` / remove, atomic unless
  ``partialFailure``): scope ``CAMPAIGN`` with 1-2,000 campaigns of this customer and no channel
  types, or ``CHANNEL`` with ``DISPLAY`` / ``SEARCH`` / ``SHOPPING`` and no campaigns;
  ``yyyy-MM-dd HH:mm:ss`` times (``INVALID_STRING_DATE_TIME_SECONDS``), the interval in
  ``(0, 14 days]`` (``START_DATE_AFTER_END_DATE``; chosen ``rangeError: TOO_HIGH`` above 14
  days), name at most 255 and description at most 2,048 characters (``stringLengthError:
  TOO_LONG``), at most 500 active (enabled, ending after the server clock in the account's time
  zone) per account (``resourceCountLimitExceededError: ACCOUNT_LIMIT``): all confirmed except
  the marked code. Results ``{"resourceName": "customers/{cid}/biddingDataExclusions/{id}"}``
  with increasing ids; removed exclusions stay listed with status ``REMOVED``;
* ``googleAds:search``: see :func:`parse_gaql`; rows as ``{"biddingDataExclusion": {...}}`` in
  proto3 JSON (int64 as strings, empty fields and an empty ``results`` omitted), pages of
  ``search_page_size`` rows with ``nextPageToken``.

Fault injection for the client's tests: :meth:`Sandbox.fail_next` (an error status with the
platform's error body and an optional ``Retry-After``, the request not acted on),
:meth:`Sandbox.drop_next` (the request is acted on and stored, then the connection closes
before the response body completes), :meth:`Sandbox.expire_token`. Every request is logged in
:attr:`Sandbox.requests` with method, path, status and JSON body, never a header value that
carries a credential, never the query string's token, never the token endpoint's secrets;
uvicorn's access log is off.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

#: ``action_source`` values the Conversions API documents.
META_ACTION_SOURCES = frozenset(
    {
        "email",
        "website",
        "app",
        "phone_call",
        "chat",
        "physical_store",
        "system_generated",
        "business_messaging",
        "other",
    }
)
#: ``user_data`` fields Meta takes only as SHA-256 hex.
META_HASHED_FIELDS = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country")
META_MAX_EVENTS = 1000
META_MAX_AGE = timedelta(days=7)
#: Clock skew tolerated on ``event_time`` (chosen; Meta rejects future events).
META_FUTURE_SKEW = timedelta(seconds=60)

GOOGLE_MAX_CONVERSIONS = 2000
GOOGLE_MAX_USER_IDENTIFIERS = 5
GOOGLE_TOO_RECENT = timedelta(hours=6)
GOOGLE_CLICK_WINDOW = timedelta(days=90)
EXCLUSION_MAX_LENGTH = timedelta(days=14)
EXCLUSION_MAX_CAMPAIGNS = 2000
EXCLUSION_MAX_ACTIVE = 500
EXCLUSION_NAME_MAX = 255
EXCLUSION_DESCRIPTION_MAX = 2048
EXCLUSION_CHANNELS = frozenset({"DISPLAY", "SEARCH", "SHOPPING"})
DEVICES = frozenset({"MOBILE", "TABLET", "DESKTOP", "CONNECTED_TV", "OTHER"})
ACCESS_TOKEN_LIFETIME = timedelta(seconds=3599)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX64_ANY_CASE = re.compile(r"[0-9a-fA-F]{64}")
_CLICK_ID = re.compile(r"[A-Za-z0-9_-]+")
_DIGITS = re.compile(r"[0-9]+")
_GOOGLE_DT = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}")
_EXCLUSION_DT = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_ACTION_NAME = re.compile(r"customers/(\d+)/conversionActions/(\d+)")
_GOOGLE_ROUTE = re.compile(
    r"(?P<cid>[^/:]+)(?P<method>:uploadClickConversions|/biddingDataExclusions:mutate"
    r"|/googleAds:search)"
)
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
#: Request headers kept in the request log (every other header is left out: no credential).
_LOGGED_HEADERS = ("content-type", "login-customer-id", "user-agent")
_PLATFORMS = ("meta", "google", "oauth")

Payload = tuple[int, dict[str, Any]]


def _trace_id() -> str:
    return secrets.token_urlsafe(12)


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


# --------------------------------------------------------------------------------------------
# data kept by the sandbox


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the sandbox saw it: never a credential.

    ``body`` is the parsed JSON body (``None`` if it was not JSON); for ``/token`` only the
    ``grant_type`` is kept. ``query`` has ``access_token`` replaced by ``"<redacted>"``.
    ``fault`` is ``"fail"`` (answered by :meth:`Sandbox.fail_next`), ``"drop"`` (acted on, then
    the connection dropped) or ``None``.
    """

    method: str
    path: str
    status: int
    platform: str
    body: Any
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None


@dataclass(frozen=True)
class MetaEvent:
    """An event Meta accepted: the event as sent, when, and how many copies arrived."""

    pixel_id: str
    event: dict[str, Any]
    received_at: datetime
    count: int = 1
    test_event_code: str | None = None


@dataclass(frozen=True)
class GoogleConversion:
    """A click conversion Google accepted, as sent (keys as the client spelled them)."""

    customer_id: str
    conversion: dict[str, Any]
    received_at: datetime


@dataclass
class _Fault:
    target: str
    kind: str  # "fail" | "drop"
    status: int
    times: int
    retry_after: float | None


def _platform_of(path: str) -> str:
    if path.rstrip("/") == "/token":
        return "oauth"
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[1] == "customers":
        return "google"
    return "meta"


# --------------------------------------------------------------------------------------------
# GAQL


@dataclass(frozen=True)
class GaqlQuery:
    """A parsed GAQL query (the subset :func:`parse_gaql` reads)."""

    fields: tuple[str, ...]
    resource: str
    conditions: tuple[tuple[str, str, Any], ...] = ()
    order_by: tuple[tuple[str, bool], ...] = ()  # (field, descending)
    limit: int | None = None


class GaqlError(ValueError):
    """A query the sandbox cannot run; ``code`` is a ``QueryError`` enum value."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_GAQL_TOKEN = re.compile(
    r"""\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)(?![\w.])"""
    r"""|(?P<op>!=|>=|<=|=|<|>|\(|\)|,)|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"""
)
_GAQL_KEYWORDS = {"SELECT", "FROM", "WHERE", "AND", "ORDER", "BY", "ASC", "DESC", "LIMIT"}
_GAQL_KEYWORDS |= {"IN", "NOT", "LIKE", "IS", "NULL", "PARAMETERS"}


def _gaql_tokens(query: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = query.rstrip()
    while pos < len(text):
        while text[pos].isspace():
            pos += 1
        m = _GAQL_TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos] in "'\"":
                raise GaqlError("STRING_NOT_TERMINATED", "Query contains unterminated string.")
            raise GaqlError("BAD_SYMBOL", f"Unexpected symbol {text[pos]!r} in the query.")
        pos = m.end()
        if m.group("str") is not None:
            raw = m.group("str")[1:-1]
            out.append(("value", re.sub(r"\\(.)", r"\1", raw)))
        elif m.group("num") is not None:
            num = m.group("num")
            out.append(("value", float(num) if "." in num else int(num)))
        elif m.group("op") is not None:
            out.append(("op", m.group("op")))
        else:
            word = m.group("word")
            if word.upper() in _GAQL_KEYWORDS:
                out.append(("kw", word.upper()))
            else:
                out.append(("word", word))
    return out


def parse_gaql(query: str) -> GaqlQuery:
    """Parse the GAQL subset the sandbox serves.

    Supported: ``SELECT f, ... FROM resource [WHERE cond AND ...] [ORDER BY f [ASC|DESC], ...]
    [LIMIT n]`` with conditions ``f = v``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``IN (v, ...)``,
    ``NOT IN (...)``, ``LIKE 'x%'``, ``IS NULL``, ``IS NOT NULL``; values are quoted strings,
    numbers or bare enum constants (``status = ENABLED``). Not supported (``GaqlError``):
    ``OR`` (GAQL has none either), ``BETWEEN``, ``DURING``, ``CONTAINS``, ``PARAMETERS``.

    >>> q = parse_gaql("SELECT bidding_data_exclusion.name FROM bidding_data_exclusion "
    ...                "WHERE bidding_data_exclusion.status = 'ENABLED' LIMIT 5")
    >>> q.resource, q.conditions, q.limit
    ('bidding_data_exclusion', (('bidding_data_exclusion.status', '=', 'ENABLED'),), 5)
    >>> parse_gaql("SELECT name")
    Traceback (most recent call last):
    ...
    signalloop.push.sandbox.GaqlError: Missing FROM clause.
    """
    toks = _gaql_tokens(query)
    i = 0

    def peek() -> tuple[str, Any] | None:
        return toks[i] if i < len(toks) else None

    def take() -> tuple[str, Any]:
        nonlocal i
        if i >= len(toks):
            raise GaqlError("UNEXPECTED_END_OF_QUERY", "Query is incomplete and cannot be parsed.")
        i += 1
        return toks[i - 1]

    def expect_kw(kw: str, code: str, message: str) -> None:
        tok = peek()
        if tok != ("kw", kw):
            raise GaqlError(code, message)
        take()

    def field_name() -> str:
        kind, val = take()
        if kind != "word":
            raise GaqlError("BAD_FIELD_NAME", f"Expected a field name, found {val!r}.")
        return str(val)

    def value() -> Any:
        kind, val = take()
        if kind in ("value", "word"):
            return val
        raise GaqlError("BAD_VALUE", f"Expected a value, found {val!r}.")

    expect_kw("SELECT", "EXPECTED_SELECT", "SELECT is missing at the beginning of query.")
    fields = [field_name()]
    while peek() == ("op", ","):
        take()
        fields.append(field_name())
    expect_kw("FROM", "EXPECTED_FROM", "Missing FROM clause.")
    resource = field_name()
    conditions: list[tuple[str, str, Any]] = []
    order: list[tuple[str, bool]] = []
    limit: int | None = None
    if peek() == ("kw", "WHERE"):
        take()
        while True:
            name = field_name()
            kind, op = take()
            if (kind, op) == ("kw", "NOT"):
                expect_kw("IN", "BAD_OPERATOR", "Expected IN after NOT.")
                op = "NOT IN"
            elif (kind, op) == ("kw", "IS"):
                if peek() == ("kw", "NOT"):
                    take()
                    op = "IS NOT NULL"
                else:
                    op = "IS NULL"
                expect_kw("NULL", "BAD_OPERATOR", "Expected NULL after IS.")
            elif kind == "kw" and op in ("IN", "LIKE"):
                pass
            elif kind != "op" or op in ("(", ")", ","):
                raise GaqlError("BAD_OPERATOR", f"Invalid operator {op!r}.")
            if op in ("IN", "NOT IN"):
                if take() != ("op", "("):
                    raise GaqlError("EXPECTED_LIST", f"{op} needs a list in parentheses.")
                items = [value()]
                while peek() == ("op", ","):
                    take()
                    items.append(value())
                if take() != ("op", ")"):
                    raise GaqlError("EXPECTED_LIST", "Unterminated list.")
                conditions.append((name, op, tuple(items)))
            elif op in ("IS NULL", "IS NOT NULL"):
                conditions.append((name, op, None))
            else:
                v = value()
                if op == "LIKE" and not isinstance(v, str):
                    raise GaqlError("INVALID_VALUE_WITH_LIKE_OPERATOR", "LIKE takes a string.")
                conditions.append((name, op, v))
            if peek() == ("kw", "AND"):
                take()
                continue
            break
    if peek() == ("kw", "ORDER"):
        take()
        expect_kw("BY", "EXPECTED_BY", "Expecting ORDER BY to have BY.")
        while True:
            name = field_name()
            desc = False
            if peek() in (("kw", "ASC"), ("kw", "DESC")):
                desc = take()[1] == "DESC"
            order.append((name, desc))
            if peek() == ("op", ","):
                take()
                continue
            break
    if peek() == ("kw", "LIMIT"):
        take()
        kind, n = take()
        if kind != "value" or not isinstance(n, int):
            raise GaqlError("BAD_LIMIT_VALUE", f"LIMIT takes a number, got {n!r}.")
        if n <= 0:
            raise GaqlError(
                "LIMIT_VALUE_TOO_LOW", "The value passed to the limit clause is too low."
            )
        limit = n
    extra = peek()
    if extra is not None:
        raise GaqlError("UNEXPECTED_INPUT", f"Query has an unexpected extra part: {extra[1]!r}.")
    return GaqlQuery(tuple(fields), resource, tuple(conditions), tuple(order), limit)


def _gaql_match(actual: Any, op: str, expected: Any) -> bool:
    if op == "IS NULL":
        return actual in (None, "", [])
    if op == "IS NOT NULL":
        return actual not in (None, "", [])
    if isinstance(actual, list):
        raise GaqlError(
            "PROHIBITED_FIELD_IN_WHERE_CLAUSE", "Repeated fields cannot be filtered here."
        )

    def norm(v: Any) -> Any:
        if isinstance(v, str) and _DIGITS.fullmatch(v) and isinstance(expected, int):
            return int(v)
        return v

    a = norm(actual)
    if op == "IN":
        return a in tuple(norm(x) for x in expected)
    if op == "NOT IN":
        return a not in tuple(norm(x) for x in expected)
    if op == "LIKE":
        pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in expected)
        return isinstance(a, str) and re.fullmatch(pattern, a) is not None
    if a is None:
        return False
    try:
        if op == "=":
            return bool(a == expected)
        if op == "!=":
            return bool(a != expected)
        if op == "<":
            return bool(a < expected)
        if op == "<=":
            return bool(a <= expected)
        if op == ">":
            return bool(a > expected)
        if op == ">=":
            return bool(a >= expected)
    except TypeError as exc:
        raise GaqlError("BAD_VALUE", f"Cannot compare {a!r} with {expected!r}.") from exc
    raise GaqlError("BAD_OPERATOR", f"Invalid operator {op!r}.")


#: GAQL resources the sandbox serves: resource -> (JSON key of a row, field -> JSON key).
#: Issue 15's pulls add their resources here.
GAQL_RESOURCES: dict[str, tuple[str, dict[str, str]]] = {
    "bidding_data_exclusion": (
        "biddingDataExclusion",
        {
            f: _camel(f)
            for f in (
                "resource_name",
                "data_exclusion_id",
                "scope",
                "status",
                "start_date_time",
                "end_date_time",
                "name",
                "description",
                "devices",
                "campaigns",
                "advertising_channel_types",
            )
        },
    )
}


# --------------------------------------------------------------------------------------------
# the ASGI wrapper: request log, injected faults, dropped connections


class _Outer:
    """Raw ASGI wrapper around the FastAPI app (faults and logging need the raw messages)."""

    def __init__(self, sandbox: Sandbox, app: FastAPI) -> None:
        self.sandbox = sandbox
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        path: str = scope["path"]
        method: str = scope["method"]
        platform = _platform_of(path)
        query = _redacted_query(scope.get("query_string", b""))
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        logged_headers = {h: headers[h] for h in _LOGGED_HEADERS if h in headers}
        log_body = _log_body(path, headers.get("content-type", ""), body)
        fault = self.sandbox._take_fault(platform, path)

        if fault is not None and fault.kind == "fail":
            status, payload = _fault_payload(platform, fault.status, path)
            extra = []
            if fault.retry_after is not None:
                extra.append((b"retry-after", _retry_after(fault.retry_after).encode()))
            await _send_json(send, status, payload, extra)
            self.sandbox._log(
                LoggedRequest(
                    method, path, status, platform, log_body, query, logged_headers, "fail"
                )
            )
            return

        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        start: Message | None = None
        out: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                out.append(message.get("body", b""))

        await self.app(scope, replay, capture)
        assert start is not None  # the FastAPI app always answers
        status = int(start["status"])
        response = b"".join(out)
        dropped = fault is not None and fault.kind == "drop"
        self.sandbox._log(
            LoggedRequest(
                method,
                path,
                status,
                platform,
                log_body,
                query,
                logged_headers,
                "drop" if dropped else None,
            )
        )
        if dropped:
            # the server acted on the request; the client gets the headers and part of the
            # body, then the connection closes (uvicorn closes it when the app returns with
            # the response incomplete), so it sees a network error after the fact
            headers_out = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
            headers_out.append((b"content-length", str(max(len(response), 2)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers_out})
            await send(
                {
                    "type": "http.response.body",
                    "body": response[: len(response) // 2],
                    "more_body": True,
                }
            )
            return
        await send(start)
        await send({"type": "http.response.body", "body": response, "more_body": False})


async def _send_json(
    send: Send, status: int, payload: dict[str, Any], extra: list[tuple[bytes, bytes]]
) -> None:
    data = json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})


def _retry_after(seconds: float) -> str:
    # RFC 9110: delay-seconds is a non-negative integer (a fraction rounds up)
    return str(max(0, math.ceil(seconds)))


def _redacted_query(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, values in parse_qs(raw.decode("latin-1"), keep_blank_values=True).items():
        secret = key in ("access_token", "appsecret_proof", "client_secret", "refresh_token")
        out[key] = "<redacted>" if secret else values[-1]
    return out


def _log_body(path: str, content_type: str, body: bytes) -> Any:
    if _platform_of(path) == "oauth":
        form = parse_qs(body.decode("utf-8", "replace"))
        return {"grant_type": form.get("grant_type", [None])[-1]}
    if not body:
        return None
    if content_type.startswith("application/x-www-form-urlencoded"):
        parsed: Any = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    else:
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
    if isinstance(parsed, dict):
        for key in ("access_token", "appsecret_proof"):
            if key in parsed:
                parsed[key] = "<redacted>"
    return parsed


def _fault_payload(platform: str, status: int, path: str) -> Payload:
    if platform == "meta":
        if status == 429:
            return _meta_error(
                429, "(#4) Application request limit reached", code=4, transient=True
            )
        if status >= 500:
            return _meta_error(
                status,
                "An unexpected error has occurred. Please retry your request later.",
                code=2,
                transient=True,
            )
        return _meta_error(status, "Injected error", code=1, transient=False)
    if platform == "oauth":
        name = "temporarily_unavailable" if status >= 500 or status == 429 else "invalid_request"
        return status, {"error": name, "error_description": "Injected by the sandbox."}
    version = path.strip("/").split("/")[0]
    if status == 429:
        kind, code, msg = "quotaError", "RESOURCE_EXHAUSTED", "Too many requests."
    elif status == 503:
        kind, code = "internalError", "TRANSIENT_ERROR"
        msg = "The service is currently unavailable."
    elif status >= 500:
        kind, code = "internalError", "INTERNAL_ERROR"
        msg = "Internal error encountered."
    else:
        kind, code, msg = "requestError", "UNKNOWN", "Injected error."
    return _google_error(status, msg, [_gerr(kind, code, msg)], version)


# --------------------------------------------------------------------------------------------
# error bodies


def _meta_error(
    status: int,
    message: str,
    *,
    code: int,
    type_: str = "OAuthException",
    subcode: int | None = None,
    title: str | None = None,
    user_msg: str | None = None,
    transient: bool | None = None,
) -> Payload:
    err: dict[str, Any] = {"message": message, "type": type_, "code": code}
    if subcode is not None:
        err["error_subcode"] = subcode
    if transient is not None:
        err["is_transient"] = transient
    if title is not None:
        err["error_user_title"] = title
    if user_msg is not None:
        err["error_user_msg"] = user_msg
    err["fbtrace_id"] = _trace_id()
    return status, {"error": err}


def _gerr(
    kind: str, code: str, message: str, path: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    err: dict[str, Any] = {"errorCode": {kind: code}, "message": message}
    if path:
        err["location"] = {"fieldPathElements": path}
    return err


def _failure(version: str, errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "@type": f"type.googleapis.com/google.ads.googleads.{version}.errors.GoogleAdsFailure",
        "errors": errors,
        "requestId": _trace_id(),
    }


def _google_error(status: int, message: str, errors: list[dict[str, Any]], version: str) -> Payload:
    return status, {
        "error": {
            "code": status,
            "message": message,
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
            "details": [_failure(version, errors)],
        }
    }


def _bad_request(field_path: str, description: str) -> Payload:
    return 400, {
        "error": {
            "code": 400,
            "message": description,
            "status": "INVALID_ARGUMENT",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": field_path, "description": description}],
                }
            ],
        }
    }


def _where(path: list[dict[str, Any]]) -> str:
    out = ""
    for el in path:
        out += ("." if out else "") + str(el["fieldName"])
        if "index" in el:
            out += f"[{el['index']}]"
    return out


# --------------------------------------------------------------------------------------------
# proto3 JSON shape checks (unknown names and wrong types are whole-request errors)

_CLICK_CONVERSION_FIELDS = {
    "gclid": str,
    "gbraid": str,
    "wbraid": str,
    "conversionAction": str,
    "conversionDateTime": str,
    "conversionValue": float,
    "currencyCode": str,
    "orderId": str,
    "externalAttributionData": dict,
    "customVariables": list,
    "cartData": dict,
    "userIdentifiers": list,
    "conversionEnvironment": str,
    "consent": dict,
    "customerType": str,
    "userIpAddress": str,
    "sessionAttributesEncoded": str,
    "sessionAttributesKeyValuePairs": dict,
}
_UPLOAD_FIELDS = {
    "customerId": str,
    "conversions": list,
    "partialFailure": bool,
    "validateOnly": bool,
    "jobId": int,
}
_USER_IDENTIFIER_FIELDS = {
    "hashedEmail": str,
    "hashedPhoneNumber": str,
    "mobileId": str,
    "thirdPartyUserId": str,
    "addressInfo": dict,
    "userIdentifierSource": str,
}
_MUTATE_FIELDS = {
    "customerId": str,
    "operations": list,
    "partialFailure": bool,
    "validateOnly": bool,
    "responseContentType": str,
}
_OPERATION_FIELDS = {"create": dict, "update": dict, "remove": str, "updateMask": str}
_EXCLUSION_FIELDS = {
    "resourceName": str,
    "dataExclusionId": int,
    "scope": str,
    "status": str,
    "startDateTime": str,
    "endDateTime": str,
    "name": str,
    "description": str,
    "devices": list,
    "campaigns": list,
    "advertisingChannelTypes": list,
}
_SEARCH_FIELDS = {
    "customerId": str,
    "query": str,
    "pageToken": str,
    "pageSize": int,
    "validateOnly": bool,
    "returnTotalResultsCount": bool,
    "summaryRowSetting": str,
    "searchSettings": dict,
}


class _ShapeError(ValueError):
    def __init__(self, payload: Payload) -> None:
        super().__init__("shape")
        self.payload = payload


def _typed(value: Any, kind: type) -> bool:
    if kind is float:
        if isinstance(value, bool):
            return False
        if isinstance(value, int | float):
            return True
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                return False
            return True
        return False
    if kind is int:
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (
            isinstance(value, str) and _DIGITS.fullmatch(value) is not None
        )
    return isinstance(value, kind)


def _normalised(obj: Any, spec: Mapping[str, type], where: str) -> dict[str, Any]:
    """``obj`` with keys in lowerCamelCase, checked against ``spec``; ``_ShapeError`` if not."""
    if not isinstance(obj, dict):
        raise _ShapeError(
            _bad_request(where, f"Invalid JSON payload received. Expected an object at '{where}'.")
        )
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = _camel(key) if "_" in key else key
        if name not in spec:
            at = f" at '{where}'" if where else ""
            raise _ShapeError(
                _bad_request(
                    where,
                    f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.',
                )
            )
        if value is not None and not _typed(value, spec[name]):
            path = f"{where}.{_snake(name)}" if where else _snake(name)
            raise _ShapeError(
                _bad_request(
                    path,
                    f"Invalid value at '{path}' ({spec[name].__name__.upper()}), "
                    f"{json.dumps(value)}",
                )
            )
        out[name] = value
    return out


# --------------------------------------------------------------------------------------------
# the sandbox


class _Server(uvicorn.Server):
    """uvicorn's server with a 10 ms main-loop tick (uvicorn's 100 ms makes every stop slow)."""

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            await asyncio.sleep(0.01)
            should_exit = await self.on_tick(counter)


class Sandbox:
    """Meta and Google Ads stand-ins on one local server (see the module docstring).

    Parameters
    ----------
    now
        The server clock: a datetime (fixed; :meth:`set_now` moves it), a callable returning
        one, or ``None`` for the wall clock. Naive datetimes are read as UTC.
    meta_token
        The Meta access token the server accepts (``Authorization: Bearer``).
    pixel_ids
        Pixel (dataset) ids that exist; ``None``: any id of digits.
    google_developer_token
        The ``developer-token`` header value the server accepts.
    google_access_tokens
        Access tokens valid from the start (no expiry); ``/token`` issues more.
    google_client_id, google_client_secret, google_refresh_token
        The OAuth client and refresh token ``/token`` accepts.
    customer_ids
        Google Ads customer ids that exist (digits); ``None``: any id of digits.
    conversion_actions
        Conversion action resource names that exist, as a collection or a mapping to their
        creation time (``TOO_RECENT_CONVERSION_ACTION`` under 6 hours); ``None``: any well-formed
        name. Matched by the action id alone, as the API does.
    clicks
        Known clicks, click id (gclid / gbraid / wbraid) -> click time. When given, an unknown
        click id answers ``EVENT_NOT_FOUND`` and the click time drives
        ``CONVERSION_PRECEDES_EVENT`` / ``EXPIRED_EVENT`` / ``TOO_RECENT_EVENT``; ``None``: format
        checks only.
    click_through_window
        The conversion actions' click-through window (90 days, Google's default).
    google_time_zone
        The Google Ads account's time zone (exclusion times are in it).
    search_page_size
        Rows per ``googleAds:search`` page (Google's REST search pages hold 10,000).

    Examples
    --------
    >>> import httpx
    >>> with Sandbox(now=datetime(2026, 3, 10, tzinfo=UTC), meta_token="t") as sb:
    ...     r = httpx.post(f"{sb.base_url}/v21.0/123/events", json={"data": []},
    ...                    headers={"Authorization": "Bearer t"})
    >>> r.status_code, r.json()["error"]["code"]
    (400, 100)
    """

    def __init__(
        self,
        *,
        now: Callable[[], datetime] | datetime | None = None,
        meta_token: str = "sandbox-meta-token",
        pixel_ids: Iterable[str] | None = None,
        google_developer_token: str = "sandbox-developer-token",
        google_access_tokens: Iterable[str] = ("sandbox-access-token",),
        google_client_id: str = "sandbox-client-id",
        google_client_secret: str = "sandbox-client-secret",
        google_refresh_token: str = "sandbox-refresh-token",
        customer_ids: Iterable[str] | None = None,
        conversion_actions: Mapping[str, datetime | None] | Iterable[str] | None = None,
        clicks: Mapping[str, datetime] | None = None,
        click_through_window: timedelta = GOOGLE_CLICK_WINDOW,
        google_time_zone: str | tzinfo = "UTC",
        search_page_size: int = 10_000,
    ) -> None:
        self._lock = threading.RLock()
        self._now_value: Callable[[], datetime] | datetime | None = now
        self.meta_token = meta_token
        self.pixel_ids = None if pixel_ids is None else frozenset(str(p) for p in pixel_ids)
        self.google_developer_token = google_developer_token
        self._access_tokens: dict[str, datetime | None] = dict.fromkeys(google_access_tokens)
        self.google_client_id = google_client_id
        self.google_client_secret = google_client_secret
        self.google_refresh_token = google_refresh_token
        self.customer_ids = (
            None if customer_ids is None else frozenset(str(c) for c in customer_ids)
        )
        self._actions: dict[str, datetime | None] | None = None
        if conversion_actions is not None:
            items = (
                conversion_actions.items()
                if isinstance(conversion_actions, Mapping)
                else ((name, None) for name in conversion_actions)
            )
            self._actions = {}
            for name, created in items:
                m = _ACTION_NAME.fullmatch(name)
                if m is None:
                    raise ValueError(f"not a conversion action resource name: {name!r}")
                self._actions[m.group(2)] = None if created is None else _as_utc(created)
        self._clicks = None if clicks is None else {k: _as_utc(v) for k, v in clicks.items()}
        self.click_through_window = click_through_window
        self.google_time_zone = (
            ZoneInfo(google_time_zone) if isinstance(google_time_zone, str) else google_time_zone
        )
        if search_page_size < 1:
            raise ValueError("search_page_size must be at least 1")
        self.search_page_size = search_page_size

        self._expired: set[str] = set()
        self._faults: list[_Fault] = []
        self._requests: list[LoggedRequest] = []
        self._meta_events: list[MetaEvent] = []
        self._meta_index: dict[tuple[str, str, str], int] = {}
        self._meta_test_events: list[MetaEvent] = []
        self._meta_deduplicated = 0
        self._conversions: list[GoogleConversion] = []
        self._order_ids: set[tuple[str, str, str]] = set()  # (cid, action id, order id)
        self._click_conversions: set[tuple[str, str, str, datetime]] = set()
        self._exclusions: dict[str, dict[str, Any]] = {}
        self._next_exclusion_id = 1
        self._next_job_id = 1
        self._page_tokens: dict[str, tuple[str, str, int]] = {}
        self._url_tokens = 0
        self._tokens_issued = 0

        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.app = self._build_app()

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Start the server on 127.0.0.1 and a free port; returns ``self`` once it listens."""
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (it checks
        # sock.proto); with proto 0, uvicorn's two writes per response wait ~40 ms on Nagle
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            _Outer(self, self.app),
            host="127.0.0.1",
            port=sock.getsockname()[1],
            http="h11",
            loop="asyncio",
            interface="asgi3",
            lifespan="off",
            access_log=False,
            log_config=None,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
        server = _Server(config)
        logging.getLogger("uvicorn.error").addFilter(self._quiet_drops)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="signalloop-sandbox", daemon=True
        )
        self._server, self._thread, self._socket = server, thread, sock
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop the server and wait for its thread (idempotent)."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        logging.getLogger("uvicorn.error").removeFilter(self._quiet_drops)
        if server is not None:
            server.should_exit = True
            server.force_exit = True  # a test server: no waiting for idle keep-alive clients
        if thread is not None:
            thread.join(timeout=10)
        if sock is not None:
            sock.close()

    @staticmethod
    def _quiet_drops(record: logging.LogRecord) -> bool:
        # a dropped connection is what drop_next asked for, not a server error to report
        return record.getMessage() != "ASGI callable returned without completing response."

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (the same base for Meta, Google and ``/token``)."""
        if self._socket is None:
            raise RuntimeError("the sandbox is not running")
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    @property
    def token_url(self) -> str:
        """The OAuth token endpoint."""
        return f"{self.base_url}/token"

    # ---- clock, faults, tokens -------------------------------------------------------------

    def now(self) -> datetime:
        """The server clock (tz-aware)."""
        value = self._now_value
        if value is None:
            return datetime.now(UTC)
        if isinstance(value, datetime):
            return _as_utc(value)
        return _as_utc(value())

    def set_now(self, now: Callable[[], datetime] | datetime | None) -> None:
        """Move the server clock (a datetime, a callable, or ``None`` for the wall clock)."""
        with self._lock:
            self._now_value = now

    def fail_next(
        self,
        target: str,
        status: int = 500,
        times: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` and the platform's error.

        ``target`` is a platform (``"meta"``, ``"google"``, ``"oauth"``) or a substring of the
        path (``":uploadClickConversions"``). The request is not acted on. ``retry_after``
        (seconds) adds a ``Retry-After`` header (whole seconds, a fraction rounded up). Faults
        queue in call order.
        """
        if not 400 <= status <= 599:
            raise ValueError(f"status must be a 4xx or 5xx, got {status}")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.append(_Fault(target, "fail", status, times, retry_after))

    def drop_next(self, target: str, times: int = 1) -> None:
        """Act on the next ``times`` matching requests, then drop the connection mid-body.

        The data is stored as for a normal request; the client receives the status line and
        headers, part of the body, then the connection closes (``httpx.RemoteProtocolError``).
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.append(_Fault(target, "drop", 200, times, None))

    def expire_token(self, platform: str) -> None:
        """Expire the current credentials: Meta's token (code 190, subcode 463 until
        :attr:`meta_token` is replaced) or every Google access token issued so far
        (``OAUTH_TOKEN_EXPIRED``; refreshing at ``/token`` gives a valid one)."""
        with self._lock:
            if platform == "meta":
                self._expired.add(self.meta_token)
            elif platform == "google":
                self._expired.update(self._access_tokens)
            else:
                raise ValueError(f"platform must be 'meta' or 'google', got {platform!r}")

    def _take_fault(self, platform: str, path: str) -> _Fault | None:
        with self._lock:
            for f in self._faults:
                if f.target == platform or (f.target not in _PLATFORMS and f.target in path):
                    f.times -= 1
                    if f.times == 0:
                        self._faults.remove(f)
                    return replace(f)
        return None

    def _log(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._requests.append(entry)

    # ---- state inspection ------------------------------------------------------------------

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every request, in arrival order (no credential in any of them)."""
        with self._lock:
            return list(self._requests)

    @property
    def meta_events(self) -> list[MetaEvent]:
        """Accepted (non-test) events, one per ``(pixel, event_name, event_id)`` with the count
        of copies received; events without an ``event_id`` are never deduplicated."""
        with self._lock:
            return [replace(e, event=copy.deepcopy(e.event)) for e in self._meta_events]

    @property
    def meta_test_events(self) -> list[MetaEvent]:
        """Events sent with a ``test_event_code`` (kept apart, not deduplicated)."""
        with self._lock:
            return [replace(e, event=copy.deepcopy(e.event)) for e in self._meta_test_events]

    @property
    def meta_deduplicated(self) -> int:
        """Copies dropped as duplicates of an event already received."""
        with self._lock:
            return self._meta_deduplicated

    @property
    def google_conversions(self) -> list[GoogleConversion]:
        """Accepted click conversions, as sent."""
        with self._lock:
            return [replace(c, conversion=copy.deepcopy(c.conversion)) for c in self._conversions]

    @property
    def exclusions(self) -> dict[str, dict[str, Any]]:
        """Bidding data exclusions by resource name (REST JSON fields, ``status`` included)."""
        with self._lock:
            return copy.deepcopy(self._exclusions)

    @property
    def url_tokens(self) -> int:
        """Meta requests that carried the token in the URL (``access_token=``)."""
        with self._lock:
            return self._url_tokens

    @property
    def tokens_issued(self) -> int:
        """Access tokens issued by ``/token``."""
        with self._lock:
            return self._tokens_issued

    # ---- the app ---------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @app.post("/token")
        async def token(request: Request) -> JSONResponse:
            return _json(self._token(await request.body()))

        @app.post("/{version}/customers/{rest:path}")
        async def google(version: str, rest: str, request: Request) -> JSONResponse:
            return _json(self._google(version, rest, _headers(request), await request.body()))

        @app.post("/{version}/{pixel_id}/events")
        async def meta(version: str, pixel_id: str, request: Request) -> JSONResponse:
            query = dict(request.query_params)
            return _json(
                self._meta(version, pixel_id, _headers(request), query, await request.body())
            )

        return app

    # ---- OAuth -----------------------------------------------------------------------------

    def _token(self, body: bytes) -> Payload:
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "refresh_token":
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": "Invalid grant_type: only refresh_token is served here.",
            }
        if (
            form.get("client_id") != self.google_client_id
            or form.get("client_secret") != self.google_client_secret
        ):
            return 401, {"error": "invalid_client", "error_description": "Unauthorized"}
        if form.get("refresh_token") != self.google_refresh_token:
            return 400, {"error": "invalid_grant", "error_description": "Bad Request"}
        token = f"sandbox-{secrets.token_urlsafe(24)}"
        with self._lock:
            self._access_tokens[token] = self.now() + ACCESS_TOKEN_LIFETIME
            self._tokens_issued += 1
        return 200, {
            "access_token": token,
            "expires_in": int(ACCESS_TOKEN_LIFETIME.total_seconds()),
            "scope": "https://www.googleapis.com/auth/adwords",
            "token_type": "Bearer",
        }

    # ---- Meta ------------------------------------------------------------------------------

    def _meta(
        self,
        version: str,
        pixel_id: str,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        body: bytes,
    ) -> Payload:
        payload: Any = None
        unreadable = ""
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            # the facebook-business SDK posts form fields (data as a JSON string, the token too)
            payload = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        else:
            try:
                payload = json.loads(body) if body else {}
            except ValueError:
                unreadable = "The request body is not valid JSON."
        token = _bearer(headers)
        if "access_token" in query:
            with self._lock:
                self._url_tokens += 1
            token = token or query["access_token"]
        if isinstance(payload, dict) and isinstance(payload.get("access_token"), str):
            token = token or payload["access_token"]
        if not token:
            return _meta_error(
                401, "An access token is required to request this resource.", code=190
            )
        now = self.now()
        with self._lock:
            expired = token in self._expired
        if expired:
            stamp = now.strftime("%A, %d-%b-%y %H:%M:%S %Z")
            return _meta_error(
                401,
                f"Error validating access token: Session has expired on {stamp}.",
                code=190,
                subcode=463,
            )
        if token != self.meta_token:
            return _meta_error(
                401, "Invalid OAuth access token - Cannot parse access token", code=190
            )
        if not re.fullmatch(r"v\d+(\.\d+)?", version):
            return _meta_error(400, f"Unknown path components: /{version}", code=2500)
        if not _DIGITS.fullmatch(pixel_id) or (
            self.pixel_ids is not None and pixel_id not in self.pixel_ids
        ):
            return _meta_error(
                400,
                f"Unsupported post request. Object with ID '{pixel_id}' does not exist, cannot be "
                "loaded due to missing permissions, or does not support this operation.",
                code=100,
                subcode=33,
                type_="GraphMethodException",
            )
        if unreadable:
            return _invalid(None, unreadable)
        if not isinstance(payload, dict):
            return _invalid(None, "The request body must be a JSON object.")
        data = payload.get("data")
        if isinstance(data, str):  # Graph also takes data as a JSON-encoded string
            try:
                data = json.loads(data)
            except ValueError:
                return _invalid(None, "data is not valid JSON.")
        if not isinstance(data, list) or not data:
            return _invalid(None, "data must be a non-empty JSON array of events.")
        if len(data) > META_MAX_EVENTS:
            return _invalid(
                None, f"data holds {len(data)} events; at most {META_MAX_EVENTS} per request."
            )
        test_code = payload.get("test_event_code")
        if test_code is not None and (not isinstance(test_code, str) or not test_code):
            return _invalid(None, "test_event_code must be a non-empty string.")
        for i, event in enumerate(data):
            problem = _meta_event_problem(event, now)
            if problem is not None:
                return _invalid(i, problem)
        with self._lock:
            for event in data:
                stored = MetaEvent(pixel_id, copy.deepcopy(event), now, 1, test_code)
                if test_code is not None:
                    self._meta_test_events.append(stored)
                    continue
                eid = event.get("event_id")
                if eid is None:
                    self._meta_events.append(stored)
                    continue
                key = (pixel_id, event["event_name"], eid)
                at = self._meta_index.get(key)
                if at is None:
                    self._meta_index[key] = len(self._meta_events)
                    self._meta_events.append(stored)
                else:
                    self._meta_events[at] = replace(
                        self._meta_events[at], count=self._meta_events[at].count + 1
                    )
                    self._meta_deduplicated += 1
        return 200, {"events_received": len(data), "messages": [], "fbtrace_id": _trace_id()}

    # ---- Google ----------------------------------------------------------------------------

    def _google(self, version: str, rest: str, headers: Mapping[str, str], body: bytes) -> Payload:
        route = _GOOGLE_ROUTE.fullmatch(rest)
        if route is None or not re.fullmatch(r"v\d+", version):
            msg = f"The requested URL /{version}/customers/{rest} was not found on this server."
            return 404, {"error": {"code": 404, "message": msg, "status": "NOT_FOUND"}}
        denied = self._google_auth(version, headers)
        if denied is not None:
            return denied
        cid = route.group("cid")
        if not _DIGITS.fullmatch(cid):
            msg = f"Invalid customer ID '{cid}': digits only, without dashes."
            return _google_error(
                400, msg, [_gerr("requestError", "INVALID_CUSTOMER_ID", msg)], version
            )
        if self.customer_ids is not None and cid not in self.customer_ids:
            msg = (
                "User doesn't have permission to access customer. Note: If you're accessing a "
                "client customer, the manager's customer ID must be set in the "
                "'login-customer-id' header."
            )
            return _google_error(
                403, msg, [_gerr("authorizationError", "USER_PERMISSION_DENIED", msg)], version
            )
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            return _bad_request("", "Invalid JSON payload received. Unexpected token.")
        method = route.group("method")
        try:
            if method == ":uploadClickConversions":
                return self._upload(version, cid, payload)
            if method == "/biddingDataExclusions:mutate":
                return self._mutate(version, cid, payload)
            return self._search(version, cid, payload)
        except _ShapeError as exc:
            return exc.payload

    def _google_auth(self, version: str, headers: Mapping[str, str]) -> Payload | None:
        token = _bearer(headers)

        def unauthenticated(kind: str, code: str, msg: str) -> Payload:
            return _google_error(401, msg, [_gerr(kind, code, msg)], version)

        if not token:
            return unauthenticated(
                "authenticationError",
                "AUTHENTICATION_ERROR",
                "Request is missing required authentication credential. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
            )
        with self._lock:
            known = token in self._access_tokens
            expires = self._access_tokens.get(token)
            expired = token in self._expired
        if not known:
            return unauthenticated(
                "authenticationError",
                "OAUTH_TOKEN_INVALID",
                "OAuth token in the header is not valid.",
            )
        if expired or (expires is not None and self.now() >= expires):
            return unauthenticated(
                "authenticationError",
                "OAUTH_TOKEN_EXPIRED",
                "OAuth token in the header has expired.",
            )
        dev = headers.get("developer-token")
        if not dev:
            msg = "The developer-token parameter is required for all requests."
            return _google_error(
                400, msg, [_gerr("requestError", "DEVELOPER_TOKEN_PARAMETER_MISSING", msg)], version
            )
        if dev != self.google_developer_token:
            return unauthenticated(
                "authenticationError",
                "DEVELOPER_TOKEN_INVALID",
                "The developer token is not valid.",
            )
        login = headers.get("login-customer-id")
        if login is not None and not _DIGITS.fullmatch(login):
            return unauthenticated(
                "authenticationError",
                "CLIENT_CUSTOMER_ID_INVALID",
                "Client customer ID is not a number.",
            )
        return None

    # ---- uploadClickConversions ------------------------------------------------------------

    def _upload(self, version: str, cid: str, payload: Any) -> Payload:
        fields = dict(_UPLOAD_FIELDS)
        if int(version[1:]) < 21:  # present, and ignored, until v21 removed it
            fields["debugEnabled"] = bool
        req = _normalised(payload, fields, "")
        rows_raw = req.get("conversions") or []
        rows = [
            _normalised(r, _CLICK_CONVERSION_FIELDS, f"conversions[{i}]")
            for i, r in enumerate(rows_raw)
        ]
        for i, row in enumerate(rows):
            for j, uid in enumerate(row.get("userIdentifiers") or []):
                _normalised(uid, _USER_IDENTIFIER_FIELDS, f"conversions[{i}].user_identifiers[{j}]")
        if req.get("partialFailure") is not True:
            msg = (
                "The partial failure field was false in the request. This method requires this "
                "field be set to true."
            )
            return _google_error(
                400,
                msg,
                [_gerr("partialFailureError", "PARTIAL_FAILURE_MODE_REQUIRED", msg)],
                version,
            )
        if not rows:
            msg = "The required repeated field was empty: conversions."
            err = _gerr("fieldError", "REQUIRED_NONEMPTY_LIST", msg, [{"fieldName": "conversions"}])
            return _google_error(400, msg, [err], version)
        if len(rows) > GOOGLE_MAX_CONVERSIONS:
            msg = "Upload fewer than 2001 events in a single request."
            return _google_error(
                400,
                msg,
                [_gerr("conversionUploadError", "TOO_MANY_CONVERSIONS_IN_REQUEST", msg)],
                version,
            )
        now = self.now()
        validate_only = req.get("validateOnly") is True
        errors: list[dict[str, Any]] = []
        failed: set[int] = set()
        parsed: dict[int, tuple[str, datetime, str | None]] = {}  # action id, time, click id

        def fail(i: int, kind: str, code: str, msg: str, sub: str | None = None) -> None:
            path: list[dict[str, Any]] = [{"fieldName": "conversions", "index": i}]
            if sub:
                path.append({"fieldName": sub})
            errors.append(_gerr(kind, code, msg, path))
            failed.add(i)

        for i, row in enumerate(rows):
            problem = self._row_problem(cid, row, now)
            if problem is not None:
                fail(i, *problem)
                continue
            m = _ACTION_NAME.fullmatch(row["conversionAction"])
            assert m is not None
            when = datetime.strptime(row["conversionDateTime"], "%Y-%m-%d %H:%M:%S%z")
            click = row.get("gclid") or row.get("gbraid") or row.get("wbraid")
            parsed[i] = (m.group(2), when, click)

        # duplicates inside the request fail every row of the group; then against stored data
        orders: dict[tuple[str, str], list[int]] = {}
        clicks: dict[tuple[str, str, datetime], list[int]] = {}
        for i, (action, when, click) in parsed.items():
            order = rows[i].get("orderId")
            if order:
                orders.setdefault((action, order), []).append(i)
            if click:
                clicks.setdefault((click, action, when.astimezone(UTC)), []).append(i)
        with self._lock:
            for (action, order), idx in orders.items():
                for i in idx:
                    if len(idx) > 1:
                        fail(
                            i,
                            "conversionUploadError",
                            "DUPLICATE_ORDER_ID",
                            "Imported events include multiple conversions with the same order ID "
                            "and were not processed.",
                            "order_id",
                        )
                    elif (cid, action, order) in self._order_ids:
                        fail(
                            i,
                            "conversionUploadError",
                            "ORDER_ID_ALREADY_IN_USE",
                            "The imported event includes an order ID that was previously "
                            "recorded, so the event was not processed.",
                            "order_id",
                        )
            for (click, action, when), idx in clicks.items():
                for i in idx:
                    if i in failed:
                        continue
                    if len(idx) > 1:
                        fail(
                            i,
                            "conversionUploadError",
                            "DUPLICATE_CLICK_CONVERSION_IN_REQUEST",
                            "Multiple events have the same click and conversion_date_time.",
                        )
                    elif (cid, click, action, when) in self._click_conversions:
                        fail(
                            i,
                            "conversionUploadError",
                            "CLICK_CONVERSION_ALREADY_EXISTS",
                            "The imported event has the same click and conversion_date_time as "
                            "an existing conversion.",
                        )
            results: list[dict[str, Any]] = []
            for i, row in enumerate(rows):
                if i in failed:
                    results.append({})
                    continue
                action, when, click = parsed[i]
                if not validate_only:
                    self._conversions.append(GoogleConversion(cid, copy.deepcopy(rows_raw[i]), now))
                    if row.get("orderId"):
                        self._order_ids.add((cid, action, row["orderId"]))
                    if click:
                        self._click_conversions.add((cid, click, action, when.astimezone(UTC)))
                result = {
                    k: row[k]
                    for k in (
                        "gclid",
                        "gbraid",
                        "wbraid",
                        "conversionAction",
                        "conversionDateTime",
                        "userIdentifiers",
                    )
                    if row.get(k)
                }
                results.append(result)
            job = self._next_job_id
            self._next_job_id += 1
        errors.sort(key=lambda e: e["location"]["fieldPathElements"][0]["index"])
        out: dict[str, Any] = {"jobId": str(job)}
        if not validate_only:
            out["results"] = results
        if errors:
            first = errors[0]
            where = _where(first["location"]["fieldPathElements"])
            more = "Multiple errors in 'details'. First error: " if len(errors) > 1 else ""
            out["partialFailureError"] = {
                "code": 3,
                "message": f"{more}{first['message']}, at {where}",
                "details": [_failure(version, errors)],
            }
        return 200, out

    def _row_problem(
        self, cid: str, row: Mapping[str, Any], now: datetime
    ) -> tuple[str, str, str, str | None] | None:
        """The first rule a click conversion breaks: (kind, code, message, field) or ``None``."""
        action = row.get("conversionAction")
        if not action:
            return (
                "fieldError",
                "REQUIRED",
                "The required field was not present.",
                "conversion_action",
            )
        m = _ACTION_NAME.fullmatch(action)
        if m is None:
            return (
                "requestError",
                "RESOURCE_NAME_MALFORMED",
                "Resource name provided is malformed.",
                "conversion_action",
            )
        if self._actions is not None and m.group(2) not in self._actions:
            return (
                "conversionUploadError",
                "NO_CONVERSION_ACTION_FOUND",
                "The conversion action specified in the upload request cannot be found. Make sure "
                "it's available in this account.",
                "conversion_action",
            )
        created = None if self._actions is None else self._actions.get(m.group(2))
        if created is not None and now - created < GOOGLE_TOO_RECENT:
            return (
                "conversionUploadError",
                "TOO_RECENT_CONVERSION_ACTION",
                "Can't import events to a conversion action that was just created. Try importing "
                "again in 6 hours.",
                "conversion_action",
            )
        text = row.get("conversionDateTime")
        if not text:
            return (
                "fieldError",
                "REQUIRED",
                "The required field was not present.",
                "conversion_date_time",
            )
        if not _GOOGLE_DT.fullmatch(text):
            return (
                "dateError",
                "INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET",
                "The string date time's format should be yyyy-mm-dd hh:mm:ss+|-hh:mm.",
                "conversion_date_time",
            )
        try:
            when = datetime.strptime(text, "%Y-%m-%d %H:%M:%S%z")
        except ValueError:
            return (
                "dateError",
                "INVALID_FIELD_VALUES_IN_DATE_TIME",
                "Given field values do not correspond to a valid date time.",
                "conversion_date_time",
            )
        gclid, gbraid, wbraid = row.get("gclid"), row.get("gbraid"), row.get("wbraid")
        uids = row.get("userIdentifiers") or []
        if gbraid and wbraid:
            return (
                "conversionUploadError",
                "GBRAID_WBRAID_BOTH_SET",
                "Can't use both gbraid and wbraid parameters. Use only 1 and try again.",
                "wbraid",
            )
        if gclid and (gbraid or wbraid):
            return (
                "fieldError",
                "VALUE_MUST_BE_UNSET",
                "The field cannot be set.",
                "gbraid" if gbraid else "wbraid",
            )
        if not (gclid or gbraid or wbraid or uids):
            return (
                "fieldError",
                "REQUIRED",
                "The required field was not present: one of gclid, gbraid, wbraid or "
                "user_identifiers.",
                "gclid",
            )
        for name, value in (("gclid", gclid), ("gbraid", gbraid), ("wbraid", wbraid)):
            if value is not None and not _CLICK_ID.fullmatch(value):
                return (
                    "conversionUploadError",
                    f"UNPARSEABLE_{name.upper()}",
                    f"The imported {name} could not be decoded.",
                    name,
                )
        if len(uids) > GOOGLE_MAX_USER_IDENTIFIERS:
            return ("collectionSizeError", "TOO_MANY", "Too many.", "user_identifiers")
        hashes: list[str] = []
        for uid in uids:
            keys = {_camel(k) if "_" in k else k for k in uid} - {"userIdentifierSource"}
            if keys - {"hashedEmail", "hashedPhoneNumber"} or len(keys) != 1:
                return (
                    "conversionUploadError",
                    "UNSUPPORTED_USER_IDENTIFIER",
                    "The provided user identifiers are not supported. Use only hashed email or "
                    "phone number and try again.",
                    "user_identifiers",
                )
            value = next(
                v
                for k, v in uid.items()
                if k != "userIdentifierSource" and k != "user_identifier_source"
            )
            if not isinstance(value, str) or not _HEX64_ANY_CASE.fullmatch(value):
                return (
                    "conversionUploadError",
                    "INVALID_USER_IDENTIFIER",
                    "Make sure you hash user provided data using SHA-256 and ensure you are "
                    "normalizing according to the guidelines.",
                    "user_identifiers",
                )
            hashes.append(value.lower())
        value_ = row.get("conversionValue")
        if value_ is not None and float(value_) < 0:
            return ("rangeError", "TOO_LOW", "Too low.", "conversion_value")
        currency = row.get("currencyCode")
        if currency is not None and not re.fullmatch(r"[A-Z]{3}", currency):
            return (
                "currencyCodeError",
                "UNSUPPORTED",
                "The currency code is not supported.",
                "currency_code",
            )
        click_id = gclid or gbraid or wbraid
        if click_id and self._clicks is not None:
            clicked = self._clicks.get(click_id)
            if clicked is None:
                return (
                    "conversionUploadError",
                    "EVENT_NOT_FOUND",
                    "The imported event could not be attributed to a click. This may be because "
                    "the event did not come from a Google Ads campaign.",
                    None,
                )
            if when < clicked:
                return (
                    "conversionUploadError",
                    "CONVERSION_PRECEDES_EVENT",
                    "The imported event has a conversion_date_time that precedes the click.",
                    "conversion_date_time",
                )
            if (
                when - clicked > self.click_through_window
                or now - clicked > self.click_through_window
            ):
                return (
                    "conversionUploadError",
                    "EXPIRED_EVENT",
                    "The imported event can't be recorded because its click occurred before this "
                    "conversion's click-through window.",
                    None,
                )
            if now - clicked < GOOGLE_TOO_RECENT:
                return (
                    "conversionUploadError",
                    "TOO_RECENT_EVENT",
                    "The click associated with the given identifier or iOS URL parameter occurred "
                    "less than 6 hours ago. Retry after 6 hours have passed.",
                    None,
                )
        return None

    # ---- biddingDataExclusions:mutate ------------------------------------------------------

    def _mutate(self, version: str, cid: str, payload: Any) -> Payload:
        req = _normalised(payload, _MUTATE_FIELDS, "")
        ops = [
            _normalised(op, _OPERATION_FIELDS, f"operations[{i}]")
            for i, op in enumerate(req.get("operations") or [])
        ]
        for i, op in enumerate(ops):
            for kind in ("create", "update"):
                if kind in op:
                    op[kind] = _normalised(op[kind], _EXCLUSION_FIELDS, f"operations[{i}].{kind}")
        if not ops:
            msg = "The required repeated field was empty: operations."
            err = _gerr("fieldError", "REQUIRED_NONEMPTY_LIST", msg, [{"fieldName": "operations"}])
            return _google_error(400, msg, [err], version)
        partial = req.get("partialFailure") is True
        validate_only = req.get("validateOnly") is True
        now = self.now()
        errors: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        with self._lock:
            state = copy.deepcopy(self._exclusions)
            next_id = self._next_exclusion_id
            prefix = f"customers/{cid}/"
            active = sum(
                self._is_active(ex, now) for name, ex in state.items() if name.startswith(prefix)
            )
            for i, op in enumerate(ops):
                target = op.get("remove") or (op.get("update") or {}).get("resourceName")
                before = state.get(target) if isinstance(target, str) else None
                outcome = self._apply_operation(cid, op, state, next_id, now, active)
                if isinstance(outcome, tuple):
                    kind, code, msg, sub = outcome
                    path: list[dict[str, Any]] = [{"fieldName": "operations", "index": i}]
                    path += [{"fieldName": s} for s in sub]
                    errors.append(_gerr(kind, code, msg, path))
                    results.append({})
                    continue
                if "create" in op:
                    next_id += 1
                was_active = before is not None and self._is_active(before, now)
                active += self._is_active(state[outcome], now) - was_active
                results.append({"resourceName": outcome})
            if errors and not partial:
                first = errors[0]
                return _google_error(
                    400,
                    f"{first['message']}, at {_where(first['location']['fieldPathElements'])}",
                    errors,
                    version,
                )
            if not validate_only:
                self._exclusions = state
                self._next_exclusion_id = next_id
        out: dict[str, Any] = {} if validate_only else {"results": results}
        if errors:
            first = errors[0]
            where = _where(first["location"]["fieldPathElements"])
            out["partialFailureError"] = {
                "code": 3,
                "message": f"{first['message']}, at {where}",
                "details": [_failure(version, errors)],
            }
        return 200, out

    def _apply_operation(
        self,
        cid: str,
        op: Mapping[str, Any],
        state: dict[str, dict[str, Any]],
        next_id: int,
        now: datetime,
        active: int,
    ) -> str | tuple[str, str, str, list[str]]:
        """Apply one operation to ``state``: the resource name, or (kind, code, message, path).

        ``active`` is the customer's count of active exclusions before the operation.
        """
        kinds = [k for k in ("create", "update", "remove") if k in op]
        if len(kinds) != 1:
            return (
                "requestError",
                "OPERATION_REQUIRED",
                "Mutate operation should have either create, update, or remove specified.",
                [],
            )
        kind = kinds[0]
        prefix = f"customers/{cid}/biddingDataExclusions/"
        if kind == "remove":
            name = op["remove"]
            current = state.get(name)
            if not name.startswith(prefix) or current is None or current["status"] == "REMOVED":
                return (
                    "mutateError",
                    "RESOURCE_NOT_FOUND",
                    "Requested resource was not found.",
                    ["remove"],
                )
            state[name] = {**current, "status": "REMOVED"}
            return str(name)
        body: dict[str, Any] = dict(op[kind])
        if kind == "create":
            for output_only in ("resourceName", "dataExclusionId", "status"):
                if output_only in body:
                    return (
                        "fieldError",
                        "IMMUTABLE_FIELD",
                        "The field attempted to be mutated is immutable.",
                        ["create", _snake(output_only)],
                    )
            resource = {
                "resourceName": f"{prefix}{next_id}",
                "dataExclusionId": str(next_id),
                "status": "ENABLED",
                **body,
            }
        else:
            name = body.get("resourceName")
            current = state.get(name) if isinstance(name, str) else None
            if (
                current is None
                or not str(name).startswith(prefix)
                or current["status"] == "REMOVED"
            ):
                return (
                    "mutateError",
                    "RESOURCE_NOT_FOUND",
                    "Requested resource was not found.",
                    ["update", "resource_name"],
                )
            mask_text = op.get("updateMask")
            if not mask_text:
                return (
                    "fieldMaskError",
                    "FIELD_MASK_MISSING",
                    "The field mask must be provided for update operations.",
                    ["update_mask"],
                )
            resource = dict(current)
            for raw in mask_text.split(","):
                key = _camel(raw.strip()) if "_" in raw else raw.strip()
                if key not in _EXCLUSION_FIELDS:
                    return (
                        "fieldMaskError",
                        "FIELD_NOT_FOUND",
                        f"The field mask updated a field that does not exist: {raw.strip()}.",
                        ["update_mask"],
                    )
                if key in ("resourceName", "dataExclusionId", "status"):
                    return (
                        "fieldError",
                        "IMMUTABLE_FIELD",
                        "The field attempted to be mutated is immutable.",
                        ["update", _snake(key)],
                    )
                if key in body:
                    resource[key] = body[key]
                else:
                    resource.pop(key, None)
        problem = self._exclusion_problem(cid, resource)
        if problem is not None:
            code_kind, code, msg, sub = problem
            return (code_kind, code, msg, [kind, *sub])
        if kind == "create" and active >= EXCLUSION_MAX_ACTIVE and self._is_active(resource, now):
            return (
                "resourceCountLimitExceededError",
                "ACCOUNT_LIMIT",
                f"This request would exceed the number of allowed resources for the Google Ads "
                f"account: at most {EXCLUSION_MAX_ACTIVE} active bidding data exclusions.",
                [kind],
            )
        state[resource["resourceName"]] = resource
        return str(resource["resourceName"])

    def _exclusion_problem(
        self, cid: str, ex: Mapping[str, Any]
    ) -> tuple[str, str, str, list[str]] | None:
        name = ex.get("name") or ""
        if len(name) > EXCLUSION_NAME_MAX:
            return ("stringLengthError", "TOO_LONG", "Too long.", ["name"])
        if len(ex.get("description") or "") > EXCLUSION_DESCRIPTION_MAX:
            return ("stringLengthError", "TOO_LONG", "Too long.", ["description"])
        scope = ex.get("scope")
        campaigns = ex.get("campaigns") or []
        channels = ex.get("advertisingChannelTypes") or []
        if not scope:
            return ("fieldError", "REQUIRED", "The required field was not present.", ["scope"])
        if scope == "CAMPAIGN":
            if channels:
                return (
                    "fieldError",
                    "VALUE_MUST_BE_UNSET",
                    "The field cannot be set.",
                    ["advertising_channel_types"],
                )
            if not campaigns:
                return (
                    "fieldError",
                    "REQUIRED_NONEMPTY_LIST",
                    "The required repeated field was empty.",
                    ["campaigns"],
                )
            if len(campaigns) > EXCLUSION_MAX_CAMPAIGNS:
                return ("collectionSizeError", "TOO_MANY", "Too many.", ["campaigns"])
            pattern = re.compile(rf"customers/{cid}/campaigns/\d+")
            if any(not isinstance(c, str) or not pattern.fullmatch(c) for c in campaigns):
                return (
                    "requestError",
                    "RESOURCE_NAME_MALFORMED",
                    "Resource name provided is malformed.",
                    ["campaigns"],
                )
        elif scope == "CHANNEL":
            if campaigns:
                return (
                    "fieldError",
                    "VALUE_MUST_BE_UNSET",
                    "The field cannot be set.",
                    ["campaigns"],
                )
            if not channels:
                return (
                    "fieldError",
                    "REQUIRED_NONEMPTY_LIST",
                    "The required repeated field was empty.",
                    ["advertising_channel_types"],
                )
            if any(c not in EXCLUSION_CHANNELS for c in channels):
                return (
                    "fieldError",
                    "INVALID_VALUE",
                    "The field's value is invalid.",
                    ["advertising_channel_types"],
                )
        else:
            return ("fieldError", "INVALID_VALUE", "The field's value is invalid.", ["scope"])
        if any(d not in DEVICES for d in ex.get("devices") or []):
            return ("fieldError", "INVALID_VALUE", "The field's value is invalid.", ["devices"])
        times: dict[str, datetime] = {}
        for key in ("startDateTime", "endDateTime"):
            text = ex.get(key)
            if not text:
                return (
                    "fieldError",
                    "REQUIRED",
                    "The required field was not present.",
                    [_snake(key)],
                )
            if not _EXCLUSION_DT.fullmatch(text):
                return (
                    "dateError",
                    "INVALID_STRING_DATE_TIME_SECONDS",
                    "The string date time's format should be yyyy-mm-dd hh:mm:ss.",
                    [_snake(key)],
                )
            try:
                times[key] = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
            except ValueError:
                return (
                    "dateError",
                    "INVALID_FIELD_VALUES_IN_DATE_TIME",
                    "Given field values do not correspond to a valid date time.",
                    [_snake(key)],
                )
        length = times["endDateTime"] - times["startDateTime"]
        if length <= timedelta(0):
            return (
                "dateRangeError",
                "START_DATE_AFTER_END_DATE",
                "The start date was after the end date.",
                ["end_date_time"],
            )
        if length > EXCLUSION_MAX_LENGTH:
            return (
                "rangeError",
                "TOO_HIGH",
                "The length of [start_date_time, end_date_time) must be within (0, 14 days].",
                ["end_date_time"],
            )
        return None

    def _is_active(self, ex: Mapping[str, Any], now: datetime) -> bool:
        if ex.get("status") != "ENABLED":
            return False
        end = datetime.strptime(ex["endDateTime"], "%Y-%m-%d %H:%M:%S")
        return end.replace(tzinfo=self.google_time_zone) > now

    # ---- googleAds:search ------------------------------------------------------------------

    def _search(self, version: str, cid: str, payload: Any) -> Payload:
        req = _normalised(payload, _SEARCH_FIELDS, "")
        text = req.get("query")
        if not text:
            msg = "The required field was not present: query."
            return _google_error(
                400, msg, [_gerr("fieldError", "REQUIRED", msg, [{"fieldName": "query"}])], version
            )

        def query_error(code: str, msg: str) -> Payload:
            return _google_error(400, msg, [_gerr("queryError", code, msg)], version)

        try:
            q = parse_gaql(text)
        except GaqlError as exc:
            return query_error(exc.code, str(exc))
        spec = GAQL_RESOURCES.get(q.resource)
        if spec is None:
            return query_error(
                "BAD_RESOURCE_TYPE_IN_FROM_CLAUSE",
                f"Invalid resource type {q.resource!r} in the FROM clause (the sandbox serves "
                f"{', '.join(sorted(GAQL_RESOURCES))}).",
            )
        row_key, fields = spec
        for name in (*q.fields, *(c[0] for c in q.conditions), *(o[0] for o in q.order_by)):
            prefix, _, attr = name.partition(".")
            if prefix != q.resource:
                return query_error(
                    "PROHIBITED_RESOURCE_TYPE_IN_SELECT_CLAUSE",
                    f"A field that comes from an incompatible resource was included: {name}.",
                )
            if attr not in fields:
                return query_error(
                    "UNRECOGNIZED_FIELD", f"Unrecognized field in the query: '{name}'."
                )
        rows = self._gaql_rows(q.resource, cid)
        try:
            rows = [
                r
                for r in rows
                if all(
                    _gaql_match(r.get(fields[c[0].partition(".")[2]]), c[1], c[2])
                    for c in q.conditions
                )
            ]
            for name, desc in reversed(q.order_by):
                key = fields[name.partition(".")[2]]
                rows.sort(key=_row_sort_key(key), reverse=desc)
        except GaqlError as exc:
            return query_error(exc.code, str(exc))
        if q.limit is not None:
            rows = rows[: q.limit]
        offset = 0
        token = req.get("pageToken")
        if token:
            with self._lock:
                saved = self._page_tokens.get(token)
            if saved is None or saved[:2] != (cid, text):
                msg = "Next page token specified in user request is invalid."
                return _google_error(
                    400, msg, [_gerr("requestError", "INVALID_PAGE_TOKEN", msg)], version
                )
            offset = saved[2]
        page = rows[offset : offset + self.search_page_size]
        selected = [
            "resource_name",
            *(f.partition(".")[2] for f in q.fields if f.partition(".")[2] != "resource_name"),
        ]
        out: dict[str, Any] = {}
        results = []
        for r in page:
            item = {
                fields[a]: r[fields[a]] for a in selected if r.get(fields[a]) not in (None, "", [])
            }
            results.append({row_key: item})
        if results:
            out["results"] = results
        out["fieldMask"] = ",".join(f"{row_key}.{fields[f.partition('.')[2]]}" for f in q.fields)
        if offset + self.search_page_size < len(rows):
            nxt = secrets.token_urlsafe(16)
            with self._lock:
                self._page_tokens[nxt] = (cid, text, offset + self.search_page_size)
            out["nextPageToken"] = nxt
        if req.get("returnTotalResultsCount") is True:
            out["totalResultsCount"] = str(len(rows))
        return 200, out

    def _gaql_rows(self, resource: str, cid: str) -> list[dict[str, Any]]:
        with self._lock:
            if resource == "bidding_data_exclusion":
                prefix = f"customers/{cid}/"
                return [
                    copy.deepcopy(ex)
                    for name, ex in self._exclusions.items()
                    if name.startswith(prefix)
                ]
        return []


def _row_sort_key(key: str) -> Callable[[dict[str, Any]], tuple[bool, Any]]:
    def sort_key(row: dict[str, Any]) -> tuple[bool, Any]:
        return (row.get(key) is None, _sort_key(row.get(key)))

    return sort_key


def _sort_key(value: Any) -> Any:
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return (0, int(value), "")
    if isinstance(value, int | float):
        return (0, value, "")
    return (1, 0, str(value))


def _meta_event_problem(event: Any, now: datetime) -> str | None:
    """The first rule a Conversions API event breaks, as a sentence; ``None`` if valid."""
    if not isinstance(event, dict):
        return "the event is not a JSON object"
    name = event.get("event_name")
    if not isinstance(name, str) or not name.strip():
        return "event_name must be a non-empty string"
    t = event.get("event_time")
    if not isinstance(t, int) or isinstance(t, bool):
        return f"event_time must be integer Unix seconds, got {json.dumps(t)}"
    age = now.timestamp() - t
    if age > META_MAX_AGE.total_seconds():
        return (
            f"event_time is {age / 86400:.1f} days before the send; events older than 7 days "
            "are rejected (Event Timestamp Too Old)"
        )
    if -age > META_FUTURE_SKEW.total_seconds():
        return "event_time is in the future"
    source = event.get("action_source")
    if source not in META_ACTION_SOURCES:
        return f"action_source {json.dumps(source)} is not one of {sorted(META_ACTION_SOURCES)}"
    user = event.get("user_data")
    if not isinstance(user, dict) or not any(v not in (None, "", [], {}) for v in user.values()):
        return "user_data must hold at least one customer information parameter"
    if "lead_id" in user:
        lid = user["lead_id"]
        if not isinstance(lid, int) or isinstance(lid, bool) or not 10**14 <= lid < 10**16:
            return "user_data.lead_id must be the 15-16 digit Lead Ads id, as an integer"
    for key in META_HASHED_FIELDS:
        if key not in user:
            continue
        values = user[key] if isinstance(user[key], list) else [user[key]]
        if not values or any(not isinstance(v, str) or not _HEX64.fullmatch(v) for v in values):
            return (
                f"user_data.{key} must be SHA-256 hex (64 lower-case hexadecimal characters): "
                "normalise and hash it before sending"
            )
    if source == "system_generated":
        custom = event.get("custom_data")
        if not isinstance(custom, dict) or custom.get("event_source") != "crm":
            return 'custom_data.event_source must be "crm" for system_generated CRM events'
        lead_source = custom.get("lead_event_source")
        if not isinstance(lead_source, str) or not lead_source.strip():
            return "custom_data.lead_event_source (the CRM's name) must be a non-empty string"
    eid = event.get("event_id")
    if eid is not None and (not isinstance(eid, str) or not eid):
        return "event_id must be a non-empty string"
    return None


def _invalid(index: int | None, rule: str) -> Payload:
    where = f"Event {index}: " if index is not None else ""
    return _meta_error(
        400,
        "Invalid parameter",
        code=100,
        title="Invalid parameter",
        user_msg=f"{where}{rule}.",
    )


def _bearer(headers: Mapping[str, str]) -> str:
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _headers(request: Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


def _json(payload: Payload) -> JSONResponse:
    status, body = payload
    return JSONResponse(body, status_code=status)


__all__ = [
    "GAQL_RESOURCES",
    "META_ACTION_SOURCES",
    "GaqlError",
    "GaqlQuery",
    "GoogleConversion",
    "LoggedRequest",
    "MetaEvent",
    "Sandbox",
    "parse_gaql",
]
