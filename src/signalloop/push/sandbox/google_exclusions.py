"""``POST /{version}/customers/{cid}/biddingDataExclusions:mutate``: Google's data exclusion rules.

``biddingDataExclusions:mutate`` (create / update with ``updateMask`` / remove, atomic unless
``partialFailure``): scope ``CAMPAIGN`` with 1-2,000 campaigns of this customer and no channel
types, or ``CHANNEL`` with ``DISPLAY`` / ``SEARCH`` / ``SHOPPING`` and no campaigns;
``yyyy-MM-dd HH:mm:ss`` times (``INVALID_STRING_DATE_TIME_SECONDS``), the interval in
``(0, 14 days]`` (``START_DATE_AFTER_END_DATE``; chosen ``rangeError: TOO_HIGH`` above 14
days), name at most 255 and description at most 2,048 characters (``stringLengthError:
TOO_LONG``), at most 500 active (enabled, ending after the server clock in the account's time
zone) per account (``resourceCountLimitExceededError: ACCOUNT_LIMIT``): all confirmed except
the marked code. Results ``{"resourceName": "customers/{cid}/biddingDataExclusions/{id}"}``
with increasing ids; removed exclusions stay listed with status ``REMOVED``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from signalloop.push.sandbox.common import Payload, _camel, _Core, _snake
from signalloop.push.sandbox.google_errors import (
    _atomic_error,
    _gerr,
    _google_error,
    _mutate_reply,
    _normalised,
)

EXCLUSION_MAX_LENGTH = timedelta(days=14)
EXCLUSION_MAX_CAMPAIGNS = 2000
EXCLUSION_MAX_ACTIVE = 500
EXCLUSION_NAME_MAX = 255
EXCLUSION_DESCRIPTION_MAX = 2048
EXCLUSION_CHANNELS = frozenset({"DISPLAY", "SEARCH", "SHOPPING"})
DEVICES = frozenset({"MOBILE", "TABLET", "DESKTOP", "CONNECTED_TV", "OTHER"})


_EXCLUSION_DT = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


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


class _ExclusionMutates(_Core):
    """``biddingDataExclusions:mutate``: create / update / remove, atomic unless partial."""

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
                return _atomic_error(errors, version)
            if not validate_only:
                self._exclusions = state
                self._next_exclusion_id = next_id
        return _mutate_reply(results, errors, validate_only, version)

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
