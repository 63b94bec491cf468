"""``POST /{version}/customers/{cid}:uploadClickConversions``: Google's click conversion rules.

``uploadClickConversions``: ``partialFailure`` must be true (``PARTIAL_FAILURE_MODE_REQUIRED``),
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
before. ``validateOnly`` checks and stores nothing.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from signalloop.push.sandbox.common import Payload, _camel, _Core
from signalloop.push.sandbox.google_errors import (
    _failure,
    _gerr,
    _google_error,
    _normalised,
    _where,
)

GOOGLE_MAX_CONVERSIONS = 2000
GOOGLE_MAX_USER_IDENTIFIERS = 5
GOOGLE_TOO_RECENT = timedelta(hours=6)
GOOGLE_CLICK_WINDOW = timedelta(days=90)


_HEX64_ANY_CASE = re.compile(r"[0-9a-fA-F]{64}")
_CLICK_ID = re.compile(r"[A-Za-z0-9_-]+")


_GOOGLE_DT = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}")


_ACTION_NAME = re.compile(r"customers/(\d+)/conversionActions/(\d+)")


@dataclass(frozen=True)
class GoogleConversion:
    """A click conversion Google accepted, as sent (keys as the client spelled them)."""

    customer_id: str
    conversion: dict[str, Any]
    received_at: datetime


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


class _ConversionUploads(_Core):
    """``uploadClickConversions``: the request's checks, then each row's rules."""

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
