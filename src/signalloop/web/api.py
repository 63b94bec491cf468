"""The ingest API: ``POST /api/v1/{kind}`` takes rows in, ``GET /api/v1/ingest/{id}`` replays.

A thin face over :mod:`signalloop.intake`: the route checks the key (scope ``ingest``; the
workspace is the key's own, so the URL names none), reads the body up to the workspace's
``[serve] max_body_mb``, and hands it to the workspace's :class:`~signalloop.intake.Intake`,
whose writer commits it (with whatever other requests are waiting) before the answer is sent.

Statuses: 200 with the counts (also for an ``Idempotency-Key`` replay, marked by the header
``Idempotent-Replayed: true``), 401 without a valid key, 403 without the ``ingest`` scope,
404 for an unknown kind, 413 over the size limit, 415 for an unknown ``Content-Type`` or
``Content-Encoding``, 422 for a body ingest cannot read (``{"error", "line", "column"}``) or an
``Idempotency-Key`` reused with another body, 507 when the workspace's disk is full (the
batch rolled back; free space and send it again).
"""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from signalloop.intake import (
    CONTENT_TYPES,
    BodyTooLarge,
    Intake,
    IntakeError,
    check_kind,
    media_type,
)
from signalloop.profiles import get_profile
from signalloop.web.auth import Principal, get_registry, require
from signalloop.web.registry import WorkspaceHandle

router = APIRouter(prefix="/api/v1", tags=["ingest"])

_CREATE = threading.Lock()
_ERROR = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "error": {"type": "string"},
                    "line": {"type": ["integer", "null"]},
                    "column": {"type": ["string", "null"]},
                },
                "required": ["error"],
            }
        }
    }
}
_ANSWER_EXAMPLE = {
    "request_id": "3f9c0a1b2c3d4e5f6a7b",
    "kind": "touchpoints",
    "status": "ok",
    "file": "api:3f9c0a1b2c3d4e5f6a7b",
    "ingest_id": 42,
    "rows_received": 1000,
    "rows_loaded": 996,
    "rows_quarantined": 2,
    "rows_already_present": 2,
    "rows_existing": 1,
    "rows_folded": 1,
    "quarantine_reasons": {"bad_timestamp": 2},
    "quarantined": [
        {
            "line": 18,
            "column": "ts",
            "code": "bad_timestamp",
            "reason": "not a timestamp (expected ISO 8601): 'yesterday'",
        }
    ],
    "quarantined_more": 1,
    "group_size": 7,
    "message": "",
    "replayed": False,
}


def max_body_bytes(handle: WorkspaceHandle) -> int:
    """The workspace's body limit in bytes (``[serve] max_body_mb``)."""
    return int(handle.settings().serve.max_body_mb * 1024 * 1024)


def intake_for(handle: WorkspaceHandle) -> Intake:
    """The workspace's intake (``handle.extras["intake"]``), made on first use."""
    found = handle.extras.get("intake")
    if isinstance(found, Intake):
        return found
    with _CREATE:
        found = handle.extras.get("intake")
        if not isinstance(found, Intake):
            found = Intake(handle.open, handle.ingest_lock, max_body_bytes=max_body_bytes(handle))
            handle.extras["intake"] = found
        return found


def _refuse(exc: IntakeError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body as sent, refused with :class:`BodyTooLarge` as soon as it passes ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body ({int(declared):,} bytes) is over the limit of {limit:,}")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise BodyTooLarge(f"the body is over the limit of {limit:,} bytes")
    return bytes(data)


@router.post(
    "/{kind}",
    summary="Send rows of one kind (CSV, JSON lines or Parquet; gzip accepted)",
    responses={
        200: {
            "description": "Committed (or replayed): rows loaded, quarantined, already present",
            "content": {"application/json": {"example": _ANSWER_EXAMPLE}},
        },
        401: {**_ERROR, "description": "No valid API key"},
        403: {**_ERROR, "description": "The key lacks the ingest scope"},
        404: {**_ERROR, "description": "Unknown kind"},
        413: {**_ERROR, "description": "Over the size limit ([serve] max_body_mb, 50 MB)"},
        415: {**_ERROR, "description": "Unknown Content-Type or Content-Encoding"},
        422: {**_ERROR, "description": "Unreadable body (line, column) or reused key"},
        507: {**_ERROR, "description": "The workspace's disk is full: rolled back, send again"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                ctype: {"schema": {"type": "string", "format": "binary"}} for ctype in CONTENT_TYPES
            },
        }
    },
)
async def ingest(
    kind: str,
    request: Request,
    principal: Annotated[Principal, Depends(require("ingest"))],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Retry-safe: the same key (for this API key) replays the stored answer",
        ),
    ] = None,
    profile: Annotated[
        str,
        Query(
            description="Profile the body is read with: canonical, meta_ads, google_ads or "
            "hubspot (as `signalloop ingest --profile`); only canonical bodies share commits"
        ),
    ] = "canonical",
) -> JSONResponse:
    """Validate, quarantine and land the rows of one body; answers once they are committed.

    The answer counts rows received, loaded, quarantined (by reason, with the first rows'
    line and column inside this body) and already present (in the workspace, earlier in the
    same commit, or repeated inside this body).
    """
    handle = get_registry(request).get(principal.workspace)
    try:
        check_kind(kind)
        media_type(request.headers.get("content-type"))
        get_profile(profile)  # an unknown profile: 400 naming the profiles
        intake = intake_for(handle)
        intake.max_body_bytes = max_body_bytes(handle)
        body = await _read_body(request, intake.max_body_bytes)
        answer = await run_in_threadpool(
            intake.submit,
            kind,
            body,
            request.headers.get("content-type"),
            request.headers.get("content-encoding"),
            idempotency_key,
            principal.key_id,
            profile=profile,
        )
    except IntakeError as exc:
        return _refuse(exc)
    headers = {"Idempotent-Replayed": "true"} if answer.get("replayed") else {}
    return JSONResponse(answer, headers=headers)


@router.get(
    "/ingest/{request_id}",
    summary="The stored answer of an ingest request",
    responses={404: {**_ERROR, "description": "No such request in this key's workspace"}},
)
def ingest_answer(
    request_id: str,
    request: Request,
    principal: Annotated[Principal, Depends(require("read"))],
) -> JSONResponse:
    """The answer a ``POST /api/v1/{kind}`` gave, as stored when it was committed."""
    handle = get_registry(request).get(principal.workspace)
    found = intake_for(handle).lookup(request_id)
    if found is None:
        return JSONResponse(
            {"error": f"no ingest request {request_id!r} in this workspace"}, status_code=404
        )
    return JSONResponse(found)
