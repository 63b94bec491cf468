"""Who is asking: API keys (``Authorization: Bearer sl_...``) and browser sessions.

A browser logs in once with its key (:func:`login`); the server then sets a session cookie that
names the workspace and the key id, signed with the server's secret, never the key itself. Every
request re-checks the key (a revoked key ends its sessions within seconds). Form posts from a
session carry a CSRF token (a hidden field or the ``X-CSRF-Token`` header) derived from the
session; requests with a bearer key need none (a browser never sends one on its own).

A key opens only the workspace it was created in: a path naming another workspace answers 404,
exactly as for a workspace that does not exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request

from signalloop.config import ServeSettings
from signalloop.errors import SignalloopError
from signalloop.keys import SCOPES, parse_token
from signalloop.web.registry import Registry, WorkspaceHandle

SESSION_COOKIE = "signalloop_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the key's workspace, id, name and scopes."""

    workspace: str
    key_id: str
    name: str
    scopes: tuple[str, ...]
    via: str  # "token" or "session"
    csrf: str | None = None


class LoginRequired(Exception):
    """No valid key or session (browsers are sent to the login form, API callers get 401)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def get_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, payload: dict[str, Any]) -> str:
    """``payload`` as a signed cookie value.

    >>> value = sign(b"k", {"w": "demo"})
    >>> unsign(b"k", value)["w"], unsign(b"other", value)
    ('demo', None)
    """
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    mac = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    return f"{body}.{mac}"


def unsign(secret: bytes, value: str | None) -> dict[str, Any] | None:
    """The payload of a value :func:`sign` made with ``secret``; ``None`` when forged or bad."""
    if not value or value.count(".") != 1:
        return None
    body, mac = value.split(".")
    want = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(want, mac):
        return None
    try:
        doc = json.loads(_unb64(body))
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def csrf_for(secret: bytes, session_value: str) -> str:
    """The CSRF token of a session (stable for the session's life)."""
    return _b64(hmac.new(secret, b"csrf:" + session_value.encode(), hashlib.sha256).digest())[:32]


def session_hours(handle: WorkspaceHandle) -> float:
    """``[serve] session_hours`` of a workspace; the default while its config is unreadable
    (a broken ``signalloop.toml`` must not lock people out of the pages that show it)."""
    try:
        return handle.settings().serve.session_hours
    except SignalloopError:
        return ServeSettings().session_hours


def login(
    registry: Registry, token: str, hours: float | None = None
) -> tuple[Principal, str] | None:
    """Check a key typed into the login form; ``(principal, cookie value)`` or ``None``.

    The session lasts ``hours``, by default the workspace's ``[serve] session_hours``. A login
    needs the ``read`` scope (an ingest-only pipeline key cannot open pages).
    """
    parsed = parse_token(token.strip())
    if parsed is None:
        return None
    found = registry.find_key(parsed[0])
    if found is None:
        return None
    handle, stored = found
    if not stored.verify(parsed[1], "read"):
        return None
    hours = session_hours(handle) if hours is None else hours
    value = sign(
        registry.secret,
        {"w": handle.name, "k": stored.key.key_id, "exp": int(time.time() + hours * 3600)},
    )
    k = stored.key
    p = Principal(
        handle.name, k.key_id, k.name, k.scopes, "session", csrf_for(registry.secret, value)
    )
    return p, value


def authenticate(request: Request) -> Principal | None:
    """The caller of ``request`` from its bearer key or session cookie, else ``None``."""
    registry = get_registry(request)
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        parsed = parse_token(token.strip()) if scheme.lower() == "bearer" else None
        if parsed is None:
            return None
        found = registry.find_key(parsed[0])
        if found is None:
            return None
        handle, stored = found
        k = stored.key
        if not any(stored.verify(parsed[1], s) for s in k.scopes):
            return None
        return Principal(handle.name, k.key_id, k.name, k.scopes, "token")
    value = request.cookies.get(SESSION_COOKIE)
    doc = unsign(registry.secret, value)
    if doc is None or value is None or float(doc.get("exp", 0)) < time.time():
        return None
    try:
        handle = registry.get(str(doc.get("w")))
    except KeyError:
        return None
    session_key = handle.key(str(doc.get("k")))
    if session_key is None or session_key.key.revoked_at is not None:
        return None
    k = session_key.key
    return Principal(
        handle.name, k.key_id, k.name, k.scopes, "session", csrf_for(registry.secret, value)
    )


def require(scope: str) -> Any:
    """A FastAPI dependency: the caller, who must hold ``scope`` (and, on a workspace path,
    belong to that workspace; on a session form post, carry the CSRF token)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")

    async def dependency(request: Request) -> Principal:
        p = authenticate(request)
        if p is None:
            raise LoginRequired("a valid API key is needed (Authorization: Bearer sl_...)")
        ws = request.path_params.get("ws")
        if ws is not None and ws != p.workspace:
            raise HTTPException(404, f"no workspace {ws!r} for this key")
        if scope not in p.scopes:
            raise HTTPException(
                403, f"this key ({p.name}) lacks the {scope!r} scope; it has {', '.join(p.scopes)}"
            )
        if p.via == "session" and request.method not in ("GET", "HEAD", "OPTIONS"):
            sent = request.headers.get(CSRF_HEADER)
            if sent is None and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")
            ):
                form = await request.form()
                field = form.get(CSRF_FIELD)
                sent = field if isinstance(field, str) else None
            if not sent or p.csrf is None or not hmac.compare_digest(sent, p.csrf):
                raise HTTPException(403, "missing or wrong CSRF token: reload the page and retry")
        get_registry(request).get(p.workspace).touch(p.key_id)
        return p

    return dependency
