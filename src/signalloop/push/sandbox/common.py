"""The sandbox's shared pieces: the response type, small helpers every platform uses, and
:class:`_Core`, the state the platform handlers read (set by :class:`~.server.Sandbox`) with the
server clock.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from signalloop.push.sandbox.google_conversions import GoogleConversion
    from signalloop.push.sandbox.meta import MetaEvent


_DIGITS = re.compile(r"[0-9]+")


Payload = tuple[int, dict[str, Any]]


def _trace_id() -> str:
    return secrets.token_urlsafe(12)


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _upsert(log: list[dict[str, Any]], item: dict[str, Any], key: Callable[[Any], Any]) -> None:
    """Replace the stored item whose ``key`` equals ``item``'s (a restatement), else append;
    a ``None`` key always appends."""
    k = key(item)
    at = None if k is None else next((i for i, e in enumerate(log) if key(e) == k), None)
    if at is None:
        log.append(item)
    else:
        log[at] = item


def _bearer(headers: Mapping[str, str]) -> str:
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class _Core:
    """What every platform's handlers share: the lock, the server clock and the stored state.

    :class:`~signalloop.push.sandbox.server.Sandbox` sets every attribute in its ``__init__``;
    the handler mixins (:mod:`.meta`, :mod:`.google` and the Google methods' modules) read them.
    """

    _lock: threading.RLock
    _now_value: Callable[[], datetime] | datetime | None
    _expired: set[str]
    # Meta
    meta_token: str
    pixel_ids: frozenset[str] | None
    _meta_events: list[MetaEvent]
    _meta_index: dict[tuple[str, str, str], int]
    _meta_test_events: list[MetaEvent]
    _meta_deduplicated: int
    _url_tokens: int
    # Google: auth and OAuth
    google_developer_token: str
    _access_tokens: dict[str, datetime | None]
    google_client_id: str
    google_client_secret: str
    google_refresh_token: str
    _tokens_issued: int
    customer_ids: frozenset[str] | None
    # Google: uploadClickConversions
    _actions: dict[str, datetime | None] | None
    _clicks: dict[str, datetime] | None
    click_through_window: timedelta
    _conversions: list[GoogleConversion]
    _order_ids: set[tuple[str, str, str]]
    _click_conversions: set[tuple[str, str, str, datetime]]
    _next_job_id: int
    # Google: biddingDataExclusions and googleAds:search
    google_time_zone: tzinfo
    _exclusions: dict[str, dict[str, Any]]
    _next_exclusion_id: int
    _page_tokens: dict[str, tuple[str, str, int]]
    search_page_size: int
    # Delivery (issue 15's pulls): (platform, account) -> {(date, campaign, adset, ad): row}
    _delivery: dict[tuple[str, str], dict[tuple[str, str, str, str], dict[str, Any]]]
    _currencies: dict[tuple[str, str], str]
    stream_batch_size: int
    _broken_streams: int
    # Meta Insights
    meta_ad_accounts: frozenset[str] | None
    meta_action_type: str
    meta_attribution_setting: str
    meta_time_zone: str
    insights_page_size: int
    insights_sync_max_rows: int
    async_polls: int
    _report_jobs: dict[str, dict[str, Any]]
    _next_report_id: int
    _failing_reports: int

    # ---- the server clock ------------------------------------------------------------------

    def now(self) -> datetime:
        """The server clock (tz-aware)."""
        value = self._now_value
        if value is None:
            return datetime.now(UTC)
        if isinstance(value, datetime):
            return _as_utc(value)
        return _as_utc(value())

    def set_now(self, now: Callable[[], datetime] | datetime | None) -> None:
        """Move the server clock (a datetime, a callable, or ``None`` for the wall clock)."""
        with self._lock:
            self._now_value = now
