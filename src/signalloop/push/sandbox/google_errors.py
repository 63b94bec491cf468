"""Google Ads' wire shapes that every method shares: the error bodies and the proto3 JSON checks.

Whole-request errors are ``{"error": {"code": <HTTP status>, "message", "status", "details":
[GoogleAdsFailure]}}``; row errors sit in ``partialFailureError`` ``{"code": 3, ...}`` with the
same ``GoogleAdsFailure`` detail. A request body with an unknown field name or a wrong JSON type
is a whole-request 400 with a ``google.rpc.BadRequest`` detail (as Google's JSON transcoding
answers); snake_case and lowerCamelCase names are both accepted, as proto3 JSON parsing does.
Each method's field lists sit in its own module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from signalloop.push.sandbox.common import _DIGITS, Payload, _camel, _snake, _trace_id

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


def _atomic_error(errors: list[dict[str, Any]], version: str) -> Payload:
    """A mutate without ``partialFailure`` that has failed operations: the whole request
    fails, named by its first error."""
    first = errors[0]
    where = _where(first["location"]["fieldPathElements"])
    return _google_error(400, f"{first['message']}, at {where}", errors, version)


def _mutate_reply(
    results: list[dict[str, Any]],
    errors: list[dict[str, Any]],
    validate_only: bool,
    version: str,
) -> Payload:
    """A mutate's answer: the results (none for ``validateOnly``) and, when operations
    failed under ``partialFailure``, the ``partialFailureError`` naming them."""
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
