"""Read daily delivery per ad from Meta's Insights API, as canonical ``spend`` rows.

The request (``../shared/PLATFORMS.md``; Marketing API "Insights" and "Async reports"):
``/{version}/act_{id}/insights`` with ``level=ad``, ``time_increment=1``, ``time_range``
``{"since", "until"}`` and the fields of :data:`FIELDS`. Short ranges are read synchronously,
page after page (``paging.cursors.after`` while ``paging.next`` is there); longer ones through a
report job (``POST`` the same parameters, poll ``GET /{report_run_id}`` until ``async_status``
is ``Job Completed``, then page ``GET /{report_run_id}/insights``). A failed job is started
again once.

Every number arrives as a string. ``actions`` / ``action_values`` are lists of
``{action_type, value}``: the configured optimisation event's entries become
``platform_conversions`` / ``platform_conversion_value``; ``attribution_setting`` is kept as an
attribute of each row (what the platform's counts mean).

The access token travels in the ``Authorization`` header, never in a URL (``paging.next`` is
not followed as is: on Graph it carries the token).

>>> row = {"date_start": "2026-03-01", "campaign_id": "1", "adset_id": "2", "ad_id": "3",
...        "impressions": "1000", "clicks": "12", "spend": "34.50",
...        "actions": [{"action_type": "link_click", "value": "12"},
...                    {"action_type": "lead", "value": "2"}],
...        "action_values": [{"action_type": "lead", "value": "80.5"}],
...        "attribution_setting": "7d_click_1d_view", "account_currency": "EUR"}
>>> r = spend_row(row, "lead")
>>> r["platform_conversions"], r["platform_conversion_value"], r["spend"], r["currency"]
(2.0, 80.5, '34.50', 'EUR')
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from signalloop.connect.settings import MetaConnection
from signalloop.errors import CredentialError
from signalloop.push.client import Client, Reply

#: The Insights fields read.
FIELDS: tuple[str, ...] = (
    "date_start",
    "date_stop",
    "account_id",
    "account_currency",
    "campaign_id",
    "campaign_name",
    "adset_id",
    "adset_name",
    "ad_id",
    "ad_name",
    "impressions",
    "clicks",
    "spend",
    "actions",
    "action_values",
    "attribution_setting",
)
#: The activity-log fields read (``AdActivity`` in the ``facebook-business`` SDK).
ACTIVITY_FIELDS: tuple[str, ...] = (
    "event_time",
    "event_type",
    "object_id",
    "object_name",
    "object_type",
    "extra_data",
    "actor_id",
    "actor_name",
    "application_id",
    "application_name",
)
#: Graph error codes that mean "too many calls, try later" (sent with a 400 as often as a 429).
THROTTLE_CODES = frozenset({4, 17, 32, 613, *range(80000, 80015)})
#: Report-job status reads before giving up on a job.
MAX_POLLS = 120

Progress = Callable[[str, float | None], None]


class ReadFailed(Exception):
    """A range could not be read (after the retries); the message says what the platform said."""


def _code(reply: Reply) -> int | None:
    err = reply.body.get("error")
    if isinstance(err, Mapping):
        try:
            return int(err.get("code"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
    return None


def throttled(reply: Reply) -> bool:
    """Meta's "too many calls" answer, whatever the HTTP status."""
    return _code(reply) in THROTTLE_CODES


def auth_fix(reply: Reply) -> str:
    """The message for a refused token: what Meta said and what to do."""
    said = reply.error or f"HTTP {reply.status}"
    return (
        f"Meta refused the access token ({said}): create a new system-user token with "
        "ads_read in Business Settings and set SIGNALLOOP_META_ACCESS_TOKEN (or [meta] "
        "access_token in the secrets file)"
    )


def check_auth(reply: Reply, node: str) -> None:
    """Raise :class:`CredentialError` for an answer that refuses the token or the account."""
    code = _code(reply)
    if reply.status == 401 or code in (102, 190):
        raise CredentialError(auth_fix(reply))
    if reply.status == 403 or code in (10, 200, 294):
        raise CredentialError(
            f"Meta refused access to {node} ({reply.error or reply.status}): give the token's "
            "system user the ad account (ads_read) in Business Settings"
        )


def insights_params(since: date, until: date, page_size: int) -> dict[str, str]:
    """The Insights query for one range (no token: it goes in a header)."""
    return {
        "level": "ad",
        "time_increment": "1",
        "fields": ",".join(FIELDS),
        "time_range": json.dumps({"since": since.isoformat(), "until": until.isoformat()}),
        "limit": str(page_size),
    }


def _number(text: Any) -> float | str:
    try:
        return float(text)
    except (TypeError, ValueError):
        return str(text)  # left for the ingest's validation to quarantine, with its reason


def _action(items: Any, event: str) -> float | str:
    """The sum of ``items``' values whose ``action_type`` is ``event`` (0 when none)."""
    if not isinstance(items, list):
        return 0.0
    total = 0.0
    for it in items:
        if isinstance(it, Mapping) and it.get("action_type") == event:
            v = _number(it.get("value"))
            if isinstance(v, str):
                return v
            total += v
    return total


def spend_row(raw: Mapping[str, Any], event: str) -> dict[str, Any]:
    """One Insights row as a canonical ``spend`` row (numbers left as sent, except the
    optimisation event's counts)."""
    return {
        "date": raw.get("date_start"),
        "platform": "meta",
        "campaign_id": raw.get("campaign_id"),
        "adset_id": raw.get("adset_id"),
        "ad_id": raw.get("ad_id"),
        "campaign_name": raw.get("campaign_name"),
        "adset_name": raw.get("adset_name"),
        "ad_name": raw.get("ad_name"),
        "impressions": raw.get("impressions", "0"),
        "clicks": raw.get("clicks", "0"),
        "spend": raw.get("spend", "0"),
        "platform_conversions": _action(raw.get("actions"), event),
        "platform_conversion_value": _action(raw.get("action_values"), event),
        "currency": raw.get("account_currency"),
        "attribution_setting": raw.get("attribution_setting"),
        "account_id": raw.get("account_id"),
    }


class MetaReader:
    """Reads one ad account's Insights through :class:`~signalloop.push.client.Client`.

    Parameters
    ----------
    client
        The HTTP client (retries 429, 5xx and Meta's throttling codes).
    cfg
        ``[connect.meta]``.
    token
        The access token (sent as ``Authorization: Bearer``; never logged).
    poll_wait
        Seconds between report-job status reads.
    sleep
        The waiting function (tests pass a recorder).
    """

    def __init__(
        self,
        client: Client,
        cfg: MetaConnection,
        token: str,
        *,
        poll_wait: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if cfg.node is None:
            raise ValueError("the Meta connection has no ad account")
        self.client, self.cfg = client, cfg
        self.node: str = cfg.node
        self._headers = {"Authorization": f"Bearer {token}"}
        self.poll_wait, self.sleep = poll_wait, sleep
        self.requests = 0
        self.jobs = 0

    def _url(self, *parts: str) -> str:
        return "/".join((self.cfg.base_url, self.cfg.api_version, *parts))

    def _get(self, url: str, params: Mapping[str, str]) -> Reply:
        self.requests += 1
        reply = self.client.get(url, params=params, headers=self._headers, retry_if=throttled)
        check_auth(reply, self.node)
        return reply

    def read(self, node: str, fields: str) -> Reply:
        """``GET /{node}?fields=...`` (a campaign, an ad set), the token checked."""
        return self._get(self._url(node), {"fields": fields})

    def update(self, node: str, form: Mapping[str, str]) -> Reply:
        """``POST /{node}`` with ``form`` (a budget change); a refused token raises."""
        self.requests += 1
        reply = self.client.post(
            self._url(node), form=form, headers=self._headers, retry_if=throttled
        )
        if reply.status == 403 or _code(reply) in (10, 200, 294):
            raise CredentialError(
                f"Meta refused the change to {node} ({reply.error or reply.status}): give the "
                "token's system user ads_management on the ad account in Business Settings"
            )
        check_auth(reply, self.node)
        return reply

    def adsets(self, campaign: str, fields: str) -> list[dict[str, Any]]:
        """A campaign's ad sets (every page)."""
        return self._pages(
            self._url(campaign, "adsets"),
            {"fields": fields, "limit": str(self.cfg.page_size)},
            "the ad sets",
        )

    def account(self) -> dict[str, Any]:
        """The ad account's name, currency and time zone (what ``connect test`` shows)."""
        reply = self._get(self._url(self.node), {"fields": "name,currency,timezone_name"})
        if not reply.ok:
            raise ReadFailed(f"reading {self.node}: {reply.error or reply.status}")
        return dict(reply.body)

    def rows(self, since: date, until: date) -> list[dict[str, Any]]:
        """Every Insights row (as sent) of one range: synchronous for short ranges, a report
        job for ranges longer than ``async_after_days``."""
        params = insights_params(since, until, self.cfg.page_size)
        if (until - since).days + 1 > self.cfg.async_after_days:
            return self._job(params)
        return self._pages(self._url(self.node, "insights"), params)

    def _pages(
        self, url: str, params: Mapping[str, str], what: str = "insights"
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = dict(params)
            if after is not None:
                page["after"] = after
            reply = self._get(url, page)
            if not reply.ok:
                raise ReadFailed(f"reading {what} of {self.node}: {reply.error}")
            data = reply.body.get("data")
            if not isinstance(data, list):
                raise ReadFailed(f"{what} of {self.node}: the answer has no data list")
            out.extend(r for r in data if isinstance(r, dict))
            paging = reply.body.get("paging") or {}
            after = (paging.get("cursors") or {}).get("after")
            if not paging.get("next") or not after or not data:
                return out

    def activities(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """The ad account's activity log between two instants (every page), as sent."""
        params = {
            "fields": ",".join(ACTIVITY_FIELDS),
            "since": str(int(since.timestamp())),
            "until": str(int(until.timestamp())),
            "limit": str(self.cfg.page_size),
        }
        return self._pages(self._url(self.node, "activities"), params, "the activity log")

    def _job(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        failed = ""
        for _attempt in range(2):
            self.requests += 1
            self.jobs += 1
            reply = self.client.post(
                self._url(self.node, "insights"),
                form=params,
                headers=self._headers,
                retry_if=throttled,
            )
            check_auth(reply, self.node)
            rid = reply.body.get("report_run_id") if reply.ok else None
            if not rid:
                raise ReadFailed(f"starting a report job on {self.node}: {reply.error}")
            status = self._wait(str(rid))
            if status == "Job Completed":
                return self._pages(self._url(str(rid), "insights"), {"limit": params["limit"]})
            failed = status
        raise ReadFailed(f"the report job on {self.node} ended {failed!r} twice")

    def _wait(self, rid: str) -> str:
        for _ in range(MAX_POLLS):
            reply = self._get(self._url(rid), {"fields": "async_status,async_percent_completion"})
            if not reply.ok:
                raise ReadFailed(f"reading report job {rid}: {reply.error}")
            status = str(reply.body.get("async_status", ""))
            if status in ("Job Completed", "Job Failed", "Job Skipped"):
                return status
            self.sleep(self.poll_wait)
        return f"still running after {MAX_POLLS} status reads"


def spend_rows(raw: Sequence[Mapping[str, Any]], event: str) -> list[dict[str, Any]]:
    """Insights rows as canonical ``spend`` rows."""
    return [spend_row(r, event) for r in raw]
