"""The raw ASGI layer under the app: the request log, injected faults, dropped connections.

:class:`_Outer` wraps the FastAPI app: it reads the whole request, logs it as a
:class:`LoggedRequest` (never a credential: only the headers in ``_LOGGED_HEADERS``, the query's
tokens and the token endpoint's secrets redacted), answers a queued ``fail`` fault with the
platform's error body without calling the app, and for a ``drop`` fault lets the app act, then
sends the headers and half the body and closes the connection.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from signalloop.push.sandbox.common import Payload
from signalloop.push.sandbox.google_errors import _gerr, _google_error
from signalloop.push.sandbox.meta import _meta_error

if TYPE_CHECKING:
    from signalloop.push.sandbox.server import Sandbox


#: Request headers kept in the request log (every other header is left out: no credential).
_LOGGED_HEADERS = ("content-type", "login-customer-id", "user-agent")


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
            # logged before the answer leaves: a client that reads the log right after its
            # answer must find the request there (logging after the send raced the client)
            self.sandbox._log(
                LoggedRequest(
                    method, path, status, platform, log_body, query, logged_headers, "fail"
                )
            )
            await _send_json(send, status, payload, extra)
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
