"""One HTTP client for the platforms' REST endpoints: retries, backoff, no secret in sight.

* 429 and 5xx answers and network failures (refused, timed out, dropped mid-answer) are retried
  with exponential backoff (a ``Retry-After`` header is honoured, capped);
* any other 4xx is not retried: its error message goes back to the caller (and into the push
  ledger);
* credentials travel only in headers, never in a URL, and :class:`Reply` never holds them; a
  401/403 answer becomes :class:`~signalloop.errors.CredentialError` naming the fix.

The platforms' official Python clients were considered: ``google-ads`` speaks gRPC only (its
``endpoint`` option still needs a gRPC server with TLS), and ``facebook-business`` hard-codes
``https://graph.facebook.com`` in its session class; neither can be pointed at a plain local test
server without patching their internals, so the documented REST endpoints are called directly,
with a configurable base URL.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

#: Statuses worth another try.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass
class Reply:
    """What one request came back with, after the retries.

    ``status`` is 0 when no answer arrived (``error`` says why); ``body`` is the parsed JSON
    answer (or ``{"text": ...}`` when it was not JSON).
    """

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    attempts: int = 1
    error: str | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer arrived."""
        return 200 <= self.status < 300

    @property
    def acknowledged(self) -> bool:
        """The platform answered (2xx or a final 4xx): what it said can be written down."""
        return self.status != 0 and self.status not in RETRY_STATUSES


class Client:
    """POST JSON (or GET) with retries.

    Parameters
    ----------
    retries
        Further attempts after the first (429, 5xx, network failures only).
    backoff
        First wait in seconds, doubled each retry.
    max_wait
        Longest single wait, also the cap on ``Retry-After``.
    timeout
        Seconds per attempt.
    transport
        An ``httpx`` transport (tests); default the network.
    sleep
        The waiting function (tests pass a recorder).
    """

    def __init__(
        self,
        *,
        retries: int = 4,
        backoff: float = 0.5,
        max_wait: float = 30.0,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self.timeout = timeout
        self.transport = transport
        self.sleep = sleep
        self._http: httpx.Client | None = None

    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout, transport=self.transport)
        return self._http

    def close(self) -> None:
        """Close the connection pool."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        wait = self.backoff * 2**attempt
        if retry_after:
            with contextlib.suppress(ValueError):
                wait = float(retry_after)
        return float(max(0.0, min(wait, self.max_wait)))

    def post(
        self,
        url: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        retry_network: bool = True,
        retry_if: Callable[[Reply], bool] | None = None,
    ) -> Reply:
        """POST and retry what is worth retrying; never raises for an HTTP or network failure.

        ``retry_network=False`` for a request the platform does not deduplicate (creating a
        resource): an answer lost on the way back may mean it was done, and the caller
        reconciles instead of sending it twice. ``retry_if`` marks further answers as worth
        another try (a platform's throttling error sent with a 400, say).
        """
        return self._request(
            "POST",
            url,
            json_body=json_body,
            form=form,
            headers=headers,
            retry_network=retry_network,
            retry_if=retry_if,
        )

    def get(
        self,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        retry_if: Callable[[Reply], bool] | None = None,
    ) -> Reply:
        """GET with the same retries as :meth:`post` (a read is always safe to repeat).

        ``params`` are the query string: never put a credential there (it ends up in logs).
        """
        return self._request("GET", url, params=params, headers=headers, retry_if=retry_if)

    def _request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        retry_network: bool = True,
        retry_if: Callable[[Reply], bool] | None = None,
    ) -> Reply:
        attempt = 0
        while True:
            try:
                r = self._client().request(
                    method,
                    url,
                    params=dict(params) if params is not None else None,
                    json=dict(json_body) if json_body is not None else None,
                    data=dict(form) if form is not None else None,
                    headers=dict(headers or {}),
                )
            except httpx.TransportError as exc:
                reply = Reply(0, attempts=attempt + 1, error=f"{type(exc).__name__}: no answer")
                retry_after = None
            else:
                try:
                    body = r.json()
                    if not isinstance(body, dict):
                        body = {"data": body}
                except (json.JSONDecodeError, ValueError):
                    body = {"text": r.text[:2000]}
                reply = Reply(r.status_code, body, attempts=attempt + 1)
                if not reply.ok:
                    reply.error = error_message(body) or f"HTTP {r.status_code}"
                retry_after = r.headers.get("retry-after")
            extra = retry_if is not None and reply.status != 0 and retry_if(reply)
            if reply.status not in RETRY_STATUSES and reply.status != 0 and not extra:
                return reply
            if reply.status == 0 and not retry_network:
                return reply
            if attempt >= self.retries:
                return reply
            self.sleep(self._wait(attempt, retry_after))
            attempt += 1


def error_message(body: Mapping[str, Any]) -> str | None:
    """The human message of a Meta or Google error body, if it is one.

    >>> error_message({"error": {"message": "Invalid parameter", "error_user_msg": "event 3"}})
    'Invalid parameter: event 3'
    >>> error_message({"error": {"code": 401, "message": "Request is missing credentials",
    ...                          "status": "UNAUTHENTICATED"}})
    'UNAUTHENTICATED: Request is missing credentials'
    """
    err = body.get("error")
    if not isinstance(err, Mapping):
        return None
    msg = str(err.get("message", "")).strip()
    if err.get("error_user_msg"):
        msg = f"{msg}: {err['error_user_msg']}" if msg else str(err["error_user_msg"])
    if err.get("status"):
        msg = f"{err['status']}: {msg}"
    return msg or None


def google_auth_headers(
    client: Client,
    *,
    need: Callable[[str, str], str],
    access_token: str | None,
    token_url: str,
    login_customer_id: str | None,
) -> dict[str, str]:
    """Google Ads request headers: the developer token and an OAuth access token.

    ``need(name, what)`` returns a credential or raises
    :class:`~signalloop.errors.CredentialError` naming where to set it. Without an
    ``access_token``, one is obtained from ``token_url`` with the refresh token, client id and
    client secret. ``login-customer-id`` is sent when a manager account is configured.
    """
    from signalloop.errors import CredentialError

    dev = need("developer_token", "Google Ads developer token")
    access = access_token
    if not access:
        refresh = need("refresh_token", "Google OAuth refresh token")
        cid = need("client_id", "Google OAuth client id")
        secret = need("client_secret", "Google OAuth client secret")
        reply = client.post(
            token_url,
            form={
                "grant_type": "refresh_token",
                "refresh_token": refresh,
                "client_id": cid,
                "client_secret": secret,
            },
        )
        access = reply.body.get("access_token") if reply.ok else None
        if not access:
            raise CredentialError(
                "Google's token endpoint refused the refresh token "
                f"({reply.error or reply.status}): "
                "create a new OAuth refresh token for the Google Ads API scope and set "
                "SIGNALLOOP_GOOGLE_REFRESH_TOKEN"
            )
    headers = {"Authorization": f"Bearer {access}", "developer-token": dev}
    if login_customer_id:
        headers["login-customer-id"] = login_customer_id
    return headers
