"""The :class:`Sandbox`: one local server (uvicorn in a thread) for both platforms.

Lifecycle (:meth:`Sandbox.start` / :meth:`Sandbox.stop`, or ``with``), the server clock
(:meth:`Sandbox.set_now`), the stored state and its inspection properties, and the FastAPI app
whose routes hand each request to the platform handlers it inherits (:mod:`.meta`,
:mod:`.google`). The raw request log and the faults' mechanics are in :mod:`.transport`.

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
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import date, datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from signalloop.push.sandbox.budgets import _MetaBudgets
from signalloop.push.sandbox.common import _as_utc
from signalloop.push.sandbox.google import _GoogleApi
from signalloop.push.sandbox.google_conversions import (
    _ACTION_NAME,
    GOOGLE_CLICK_WINDOW,
    GoogleConversion,
)
from signalloop.push.sandbox.meta import MetaEvent
from signalloop.push.sandbox.transport import LoggedRequest, _Fault, _Outer

_PLATFORMS = ("meta", "google", "oauth")


class _Server(uvicorn.Server):
    """uvicorn's server with a 10 ms main-loop tick (uvicorn's 100 ms makes every stop slow)."""

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            await asyncio.sleep(0.01)
            should_exit = await self.on_tick(counter)


class Sandbox(_MetaBudgets, _GoogleApi):
    """Meta and Google Ads stand-ins on one local server (see the package docstring).

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
    stream_batch_size
        Rows per ``googleAds:searchStream`` batch (Google's hold up to 10,000).
    meta_ad_accounts
        Meta ad account ids that exist (digits, without ``act_``); ``None``: any.
    meta_action_type
        The ``action_type`` delivery rows' conversions are reported under (the ad sets'
        optimisation event), unless a row names its own.
    meta_attribution_setting
        The ``attribution_setting`` every Insights row reports.
    meta_time_zone
        The ad accounts' ``timezone_name``.
    insights_page_size
        Most rows in one Insights page, whatever ``limit`` asks.
    insights_sync_max_rows
        Most rows a synchronous Insights read returns; more answers code 1 ("Please reduce
        the amount of data ..."): use a report job.
    async_polls
        Status reads before a report job completes.

    Examples
    --------
    >>> import httpx
    >>> from datetime import UTC
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
        stream_batch_size: int = 10_000,
        meta_ad_accounts: Iterable[str] | None = None,
        meta_action_type: str = "offsite_conversion.fb_pixel_lead",
        meta_attribution_setting: str = "7d_click_1d_view",
        meta_time_zone: str = "UTC",
        insights_page_size: int = 500,
        insights_sync_max_rows: int = 5_000,
        async_polls: int = 2,
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
        for name, value in (
            ("stream_batch_size", stream_batch_size),
            ("insights_page_size", insights_page_size),
            ("insights_sync_max_rows", insights_sync_max_rows),
            ("async_polls", async_polls),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1")
        self.stream_batch_size = stream_batch_size
        self.meta_ad_accounts = (
            None
            if meta_ad_accounts is None
            else frozenset(str(a).removeprefix("act_") for a in meta_ad_accounts)
        )
        self.meta_action_type = meta_action_type
        self.meta_attribution_setting = meta_attribution_setting
        self.meta_time_zone = meta_time_zone
        self.insights_page_size = insights_page_size
        self.insights_sync_max_rows = insights_sync_max_rows
        self.async_polls = async_polls

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
        self._delivery: dict[tuple[str, str], dict[tuple[str, str, str, str], dict[str, Any]]] = {}
        self._currencies: dict[tuple[str, str], str] = {}
        self._broken_streams = 0
        self._report_jobs: dict[str, dict[str, Any]] = {}
        self._next_report_id = 1
        self._failing_reports = 0
        self._activities: dict[str, list[dict[str, Any]]] = {}
        self._change_events: dict[str, list[dict[str, Any]]] = {}
        self._meta_objects: dict[str, dict[str, Any]] = {}
        self._google_budgets: dict[str, dict[str, dict[str, Any]]] = {}

        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.app = self._build_app()

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self, port: int = 0) -> Sandbox:
        """Start the server on 127.0.0.1 and ``port`` (0: a free one); returns ``self`` once it
        listens."""
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (it checks
        # sock.proto); with proto 0, uvicorn's two writes per response wait ~40 ms on Nagle
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
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

    def fail_next_report(self, times: int = 1) -> None:
        """The next ``times`` Meta report jobs end ``Job Failed`` instead of completing."""
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._failing_reports += times

    def break_next_stream(self, times: int = 1) -> None:
        """The next ``times`` ``searchStream`` answers stop after their first batch with an
        ``{"error": ...}`` element (HTTP 200 already sent), as a stream that fails midway."""
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._broken_streams += times

    # ---- delivery (what the pulls read) ----------------------------------------------------

    def load_delivery(
        self,
        platform: str,
        account: str,
        rows: Iterable[Mapping[str, Any]],
        *,
        currency: str | None = None,
    ) -> int:
        """Store (or restate) daily delivery rows of one Meta ad account or Google customer.

        Each row: ``date`` (YYYY-MM-DD), ``campaign_id``, ``adset_id`` (Google's ad group),
        ``ad_id`` (ignored by Google's ad group report), ``impressions``, ``clicks``, ``spend``
        (account currency) and optional ``conversions``, ``conversion_value``,
        ``campaign_name``, ``adset_name``, ``ad_name``, ``action_type`` (Meta). A row with
        the key ``(date, campaign_id, adset_id, ad_id)`` of a stored one replaces it: what a
        platform restating a recent day looks like to the next pull. Returns the rows stored.
        """
        if platform not in ("meta", "google"):
            raise ValueError(f"platform must be 'meta' or 'google', got {platform!r}")
        acct = str(account).removeprefix("act_").replace("-", "")
        n = 0
        with self._lock:
            table = self._delivery.setdefault((platform, acct), {})
            if currency is not None:
                self._currencies[(platform, acct)] = currency
            for raw in rows:
                row = _delivery_row(raw)
                table[(row["date"], row["campaign_id"], row["adset_id"], row["ad_id"])] = row
                n += 1
        return n

    def load_spend(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        meta_account: str = "1000000001",
        google_customer: str = "1234567890",
        currency: str = "USD",
    ) -> dict[str, int]:
        """Serve canonical ``spend`` rows (the simulator's ``spend.csv``, say) as the platforms
        would: rows whose ``platform`` is Meta's go to the Meta ad account, Google's to the
        Google customer, others are left out. Returns the rows stored per platform."""
        from signalloop.push.settings import GOOGLE_PLATFORMS, META_PLATFORMS

        split: dict[str, list[dict[str, Any]]] = {"meta": [], "google": []}
        for r in rows:
            p = str(r.get("platform") or "").strip().lower()
            target = "meta" if p in META_PLATFORMS else "google" if p in GOOGLE_PLATFORMS else None
            if target is None:
                continue
            split[target].append(
                {
                    **r,
                    "conversions": r.get("platform_conversions") or 0,
                    "conversion_value": r.get("platform_conversion_value") or 0,
                }
            )
        return {
            "meta": self.load_delivery("meta", meta_account, split["meta"], currency=currency),
            "google": self.load_delivery(
                "google", google_customer, split["google"], currency=currency
            ),
        }

    def load_changes(
        self,
        changes: Iterable[Mapping[str, Any]],
        spend: Iterable[Mapping[str, Any]],
        *,
        meta_account: str = "1000000001",
        google_customer: str = "1234567890",
    ) -> dict[str, int]:
        """Serve canonical ``changes`` rows (the simulator's edit log) as the platforms record
        edits: Meta activity-log events and Google change events, each on its campaign's
        platform as the ``spend`` rows place it (:mod:`.history`). Returns the records stored
        per platform."""
        from signalloop.push.sandbox.history import platform_records

        meta, google = platform_records(changes, spend, google_customer)
        return {
            "meta": self.load_activities(meta_account, meta),
            "google": self.load_change_events(google_customer, google),
        }

    def give_budgets(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        meta_account: str = "1000000001",
        google_customer: str = "1234567890",
        headroom: float = 1.25,
    ) -> dict[str, float]:
        """Give every campaign of canonical ``spend`` rows a daily budget: ``headroom`` times
        its mean daily spend (a Meta campaign budget, a Google campaign budget), what
        ``signalloop apply`` then reads and changes. Returns the budgets in currency units."""
        from signalloop.push.settings import GOOGLE_PLATFORMS, META_PLATFORMS

        spend: dict[tuple[str, str], float] = {}
        days: dict[tuple[str, str], set[str]] = {}
        for r in rows:
            p = str(r.get("platform") or "").strip().lower()
            name = "meta" if p in META_PLATFORMS else "google" if p in GOOGLE_PLATFORMS else None
            if name is None or not r.get("campaign_id"):
                continue
            key = (name, str(r["campaign_id"]))
            spend[key] = spend.get(key, 0.0) + float(r.get("spend") or 0.0)
            days.setdefault(key, set()).add(str(r.get("date")))
        budgets = {k: max(1.0, round(headroom * v / len(days[k]), 2)) for k, v in spend.items()}
        self.load_meta_objects(
            meta_account,
            [
                {"id": c, "kind": "campaign", "daily_budget": round(b * 100)}
                for (p, c), b in budgets.items()
                if p == "meta"
            ],
        )
        self.load_google_budgets(
            google_customer,
            {c: round(b * 100) * 10_000 for (p, c), b in budgets.items() if p == "google"},
        )
        return {c: b for (_, c), b in budgets.items()}

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

        @app.post("/{version}/customers/{rest:path}:searchStream")
        async def google_stream(version: str, rest: str, request: Request) -> JSONResponse:
            body = await request.body()
            return _json(self._google(version, f"{rest}:searchStream", _headers(request), body))

        @app.get("/{version}/{node}/insights")
        async def insights_get(version: str, node: str, request: Request) -> JSONResponse:
            return _json(
                self._meta_insights(
                    "GET", version, node, _headers(request), _params(request, b""), _url(request)
                )
            )

        @app.post("/{version}/{node}/insights")
        async def insights_post(version: str, node: str, request: Request) -> JSONResponse:
            params = _params(request, await request.body())
            return _json(
                self._meta_insights("POST", version, node, _headers(request), params, _url(request))
            )

        @app.get("/{version}/{node}/activities")
        async def activities(version: str, node: str, request: Request) -> JSONResponse:
            return _json(
                self._meta_activities(
                    version, node, _headers(request), _params(request, b""), _url(request)
                )
            )

        @app.get("/{version}/{node}/adsets")
        async def adsets(version: str, node: str, request: Request) -> JSONResponse:
            return _json(
                self._meta_adsets(
                    version, node, _headers(request), _params(request, b""), _url(request)
                )
            )

        @app.get("/{version}/{node}")
        async def report_status(version: str, node: str, request: Request) -> JSONResponse:
            headers, params = _headers(request), _params(request, b"")
            obj = self._meta_object(version, node, headers, params)
            if obj is not None:
                return _json(obj)
            return _json(self._meta_report_status(version, node, headers, params))

        @app.post("/{version}/{node}")
        async def meta_update(version: str, node: str, request: Request) -> JSONResponse:
            params = _params(request, await request.body())
            return _json(self._meta_update(version, node, _headers(request), params))

        @app.post("/{version}/{pixel_id}/events")
        async def meta(version: str, pixel_id: str, request: Request) -> JSONResponse:
            query = dict(request.query_params)
            return _json(
                self._meta(version, pixel_id, _headers(request), query, await request.body())
            )

        return app


def _headers(request: Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


def _json(payload: tuple[int, Any]) -> JSONResponse:
    status, body = payload
    return JSONResponse(body, status_code=status)


def _params(request: Request, body: bytes) -> dict[str, str]:
    """The query string's parameters, then a form or JSON body's (Graph takes either)."""
    params = dict(request.query_params)
    if not body:
        return params
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        if isinstance(doc, dict):
            params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in doc.items()})
        return params
    params.update({k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()})
    return params


def _url(request: Request) -> str:
    """The request's URL without its query string."""
    return str(request.url).split("?", 1)[0]


def _delivery_row(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A delivery row, checked and typed (a sandbox's own input: a bad one is a test bug)."""

    def text(key: str, required: bool = False) -> str | None:
        v = raw.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == "":
            if required:
                raise ValueError(f"a delivery row needs {key}: {dict(raw)!r}")
            return None
        return str(v).strip()

    def number(key: str) -> float:
        v = raw.get(key)
        if v is None or str(v).strip() == "":
            return 0.0
        out = float(v)
        return 0.0 if math.isnan(out) else out

    day = text("date", True)
    assert day is not None
    row: dict[str, Any] = {
        "date": date.fromisoformat(day[:10]).isoformat(),
        "campaign_id": text("campaign_id", True),
        "adset_id": text("adset_id") or "",
        "ad_id": text("ad_id") or "",
        "campaign_name": text("campaign_name"),
        "adset_name": text("adset_name"),
        "ad_name": text("ad_name"),
        "impressions": int(number("impressions")),
        "clicks": int(number("clicks")),
        "spend": number("spend"),
        "conversions": number("conversions"),
        "conversion_value": number("conversion_value"),
        "action_type": text("action_type"),
    }
    return row
