"""The Google Ads REST stand-in: auth, the OAuth ``/token`` endpoint, routing to the methods.

``POST /{version}/customers/{cid}:uploadClickConversions`` (:mod:`.google_conversions`),
``POST /{version}/customers/{cid}/biddingDataExclusions:mutate`` (:mod:`.google_exclusions`),
``POST /{version}/customers/{cid}/campaignBudgets:mutate`` (:mod:`.budgets`),
``POST /{version}/customers/{cid}/googleAds:search`` and ``googleAds:searchStream``
(:mod:`.gaql`); error bodies and the
proto3 JSON checks in :mod:`.google_errors`. ``POST /token`` (form
``grant_type=refresh_token``) issues access tokens that expire after ``expires_in`` on the
server clock.

Google Ads (whole-request errors ``{"error": {"code": <HTTP status>, "message", "status",
"details": [GoogleAdsFailure]}}``; row errors in ``partialFailureError`` ``{"code": 3, ...}``):

* auth: no bearer token -> 401 ``AUTHENTICATION_ERROR``; unknown -> 401 ``OAUTH_TOKEN_INVALID``;
  expired (by :meth:`Sandbox.expire_token` or past ``expires_in`` on the server clock) -> 401
  ``OAUTH_TOKEN_EXPIRED``; no ``developer-token`` header -> 400 ``requestError:
  DEVELOPER_TOKEN_PARAMETER_MISSING``; a wrong one -> 401 ``DEVELOPER_TOKEN_INVALID`` (both enum
  values are confirmed and marked deprecated in v22+, where developer tokens are being sunset);
  a customer id that is not digits -> 400 ``INVALID_CUSTOMER_ID``; an unknown one -> 403
  ``USER_PERMISSION_DENIED``. The HTTP status of each is chosen from the gRPC status family.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

from signalloop.push.sandbox.common import _DIGITS, Payload, _bearer
from signalloop.push.sandbox.gaql import _GaqlSearch
from signalloop.push.sandbox.google_conversions import _ConversionUploads
from signalloop.push.sandbox.google_errors import _bad_request, _gerr, _google_error, _ShapeError
from signalloop.push.sandbox.google_exclusions import _ExclusionMutates

ACCESS_TOKEN_LIFETIME = timedelta(seconds=3599)


_GOOGLE_ROUTE = re.compile(
    r"(?P<cid>[^/:]+)(?P<method>:uploadClickConversions|/biddingDataExclusions:mutate"
    r"|/campaignBudgets:mutate"
    r"|/googleAds:searchStream|/googleAds:search)"
)


class _GoogleApi(_ConversionUploads, _ExclusionMutates, _GaqlSearch):
    """The Google routes: OAuth ``/token``, then auth and customer checks before each method."""

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

    # ---- Google ----------------------------------------------------------------------------

    def _google(
        self, version: str, rest: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, Any]:
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
            if method == "/campaignBudgets:mutate":
                return self._budget_mutate(version, cid, payload)
            if method == "/googleAds:searchStream":
                return self._search_stream(version, cid, payload)
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
