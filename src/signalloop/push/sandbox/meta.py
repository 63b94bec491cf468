"""The Meta Conversions API stand-in: ``POST /{version}/{pixel_id}/events``.

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
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from signalloop.push.sandbox.common import _DIGITS, Payload, _bearer, _Core, _trace_id

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


_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class MetaEvent:
    """An event Meta accepted: the event as sent, when, and how many copies arrived."""

    pixel_id: str
    event: dict[str, Any]
    received_at: datetime
    count: int = 1
    test_event_code: str | None = None


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


class _MetaApi(_Core):
    """The events route: token, pixel, then every event's rules (one bad event rejects all)."""

    def _meta_auth(
        self, version: str, headers: Mapping[str, str], query: Mapping[str, str], payload: Any
    ) -> Payload | None:
        """The token (``Authorization: Bearer``, else ``access_token`` in the query, counted in
        :attr:`url_tokens`, or the body) and the API version; ``None`` when both are good."""
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
        with self._lock:
            expired = token in self._expired
        if expired:
            stamp = self.now().strftime("%A, %d-%b-%y %H:%M:%S %Z")
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
        return None

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
        denied = self._meta_auth(version, headers, query, payload)
        if denied is not None:
            return denied
        now = self.now()
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
