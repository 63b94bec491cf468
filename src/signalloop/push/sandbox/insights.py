"""The Meta Insights API stand-in: delivery per ad and day, synchronous pages and report jobs.

Routes (the ad account's node is ``act_<digits>``):

* ``GET /{version}/act_{id}/insights``: the synchronous read, in pages;
* ``POST /{version}/act_{id}/insights``: an asynchronous report job, answered with
  ``{"report_run_id": ...}``;
* ``GET /{version}/{report_run_id}``: the job's ``async_status`` (``Job Not Started``, ``Job
  Running``, ``Job Completed``, ``Job Failed``) and ``async_percent_completion``;
* ``GET /{version}/{report_run_id}/insights``: the finished job's rows, in pages.

Rules, and where each comes from ("confirmed": Meta's Marketing API documentation or its
published clients, found with the ``search`` tool; "PLATFORMS.md": ``../shared/PLATFORMS.md``;
"chosen": the sandbox's own answer where the exact one is not published):

* the fields ``date_start``, ``date_stop``, ``account_id``, ``account_currency``,
  ``campaign_id``, ``adset_id``, ``ad_id`` (and their ``_name``), ``impressions``, ``clicks``,
  ``inline_link_clicks``, ``spend``, ``actions`` and ``action_values`` (lists of
  ``{action_type, value}``), ``attribution_setting``; every number is a string: PLATFORMS.md;
  an unknown field is a code 100 error: chosen wording;
* ``level=ad`` and ``time_increment=1`` are the only ones served, ``time_range`` (JSON
  ``{"since", "until"}``) is required here (Meta defaults to a preset): chosen;
* pages of ``limit`` rows (default 25, capped by ``insights_page_size``) with
  ``paging.cursors.after`` and ``paging.next`` (absent on the last page): confirmed (Graph API
  paging); ``next`` carries no access token here (Graph's does: never log it);
* a synchronous read of more than ``insights_sync_max_rows`` rows answers code 1, HTTP 500,
  "Please reduce the amount of data you're asking for, then retry your request": Graph's
  well-known answer, not found in a page here; the report job is the documented way to read
  long ranges: confirmed (``report_run_id``, ``async_status``, ``async_percent_completion``);
* a job is complete after ``async_polls`` status reads (the rows are those at its creation);
  :meth:`Sandbox.fail_next_report` makes the next job end ``Job Failed``; reading a job that is
  not complete answers code 100: chosen;
* ``GET /{version}/act_{id}`` answers the account's ``name``, ``currency``,
  ``timezone_name``, ``account_status``: confirmed field names (AdAccount reference);
* an ad row appears only for days it has a stored row (Meta omits days without delivery).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from datetime import date
from typing import Any
from urllib.parse import urlencode

from signalloop.push.sandbox.common import Payload
from signalloop.push.sandbox.meta import _meta_error, _MetaApi

#: Fields the Insights stand-in serves.
META_INSIGHTS_FIELDS = (
    "date_start",
    "date_stop",
    "account_id",
    "account_name",
    "account_currency",
    "campaign_id",
    "campaign_name",
    "adset_id",
    "adset_name",
    "ad_id",
    "ad_name",
    "impressions",
    "clicks",
    "inline_link_clicks",
    "spend",
    "actions",
    "action_values",
    "attribution_setting",
)
#: Rows per page when the request names no ``limit`` (Graph's default).
META_DEFAULT_LIMIT = 25

_ACT = re.compile(r"act_(\d+)")


def _num(value: float) -> str:
    """A number as Graph writes it: an integer without a point, else up to 6 decimals."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _offset(cursor: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    head, _, n = text.partition(":")
    return int(n) if head == "offset" and n.isdigit() else None


class _Refused(Exception):
    """An error answer raised from a check (the route returns its payload)."""

    def __init__(self, payload: Payload) -> None:
        super().__init__("refused")
        self.payload = payload


def _invalid(message: str) -> Payload:
    return _meta_error(400, f"(#100) {message}", code=100, type_="OAuthException")


def _no_object(node: str) -> Payload:
    return _meta_error(
        400,
        f"Unsupported get request. Object with ID '{node}' does not exist, cannot be loaded due "
        "to missing permissions, or does not support this operation.",
        code=100,
        subcode=33,
        type_="GraphMethodException",
    )


class _MetaInsights(_MetaApi):
    """The Insights routes over the rows :meth:`Sandbox.load_delivery` stored for Meta."""

    def _insights_request(
        self, account: str, params: Mapping[str, str]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Check an Insights request's parameters: the query and its rows (an error answer is
        raised as :class:`_Refused`)."""
        if self.meta_ad_accounts is not None and account not in self.meta_ad_accounts:
            raise _Refused(_no_object(f"act_{account}"))
        level = params.get("level", "account")
        if level != "ad":
            raise _Refused(_invalid(f"level={level}: the sandbox serves level=ad only"))
        if params.get("time_increment") != "1":
            raise _Refused(_invalid("the sandbox serves time_increment=1 (one row a day) only"))
        fields = [f.strip() for f in params.get("fields", "").split(",") if f.strip()]
        if not fields:
            raise _Refused(_invalid("fields is required: name the insights fields to return"))
        bad = [f for f in fields if f not in META_INSIGHTS_FIELDS]
        if bad:
            raise _Refused(
                _invalid(
                    f"{bad[0]} is not valid for fields param. please check "
                    "https://developers.facebook.com/docs/marketing-api/reference/ads-insights/"
                )
            )
        raw = params.get("time_range")
        if not raw:
            raise _Refused(
                _invalid('time_range is required: {"since": "YYYY-MM-DD", "until": ...}')
            )
        try:
            tr = json.loads(raw)
            since = date.fromisoformat(tr["since"])
            until = date.fromisoformat(tr["until"])
        except (ValueError, KeyError, TypeError):
            raise _Refused(
                _invalid(f"time_range must be JSON with since and until dates, got {raw!r}")
            ) from None
        if since > until:
            raise _Refused(_invalid("time_range: since must not be after until"))
        if until > self.now().date():
            raise _Refused(_invalid("time_range: until must not be in the future"))
        with self._lock:
            stored = list(self._delivery.get(("meta", account), {}).values())
            currency = self._currencies.get(("meta", account))
        lo, hi = since.isoformat(), until.isoformat()
        rows = sorted(
            (r for r in stored if lo <= r["date"] <= hi),
            key=lambda r: (r["date"], r["campaign_id"], r["adset_id"], r["ad_id"]),
        )
        out = [self._insights_row(account, currency, r, fields) for r in rows]
        return {"account": account, "since": lo, "until": hi, "fields": fields}, out

    def _insights_row(
        self, account: str, currency: str | None, r: dict[str, Any], fields: list[str]
    ) -> dict[str, Any]:
        action = r.get("action_type") or self.meta_action_type
        actions = [{"action_type": "link_click", "value": _num(r["clicks"])}] if r["clicks"] else []
        values = []
        if r["conversions"]:
            actions.append({"action_type": action, "value": _num(r["conversions"])})
        if r["conversion_value"]:
            values.append({"action_type": action, "value": _num(r["conversion_value"])})
        full: dict[str, Any] = {
            "account_id": account,
            "account_name": f"Sandbox account {account}",
            "account_currency": currency or "USD",
            "campaign_id": r["campaign_id"],
            "campaign_name": r.get("campaign_name"),
            "adset_id": r["adset_id"],
            "adset_name": r.get("adset_name"),
            "ad_id": r["ad_id"],
            "ad_name": r.get("ad_name"),
            "impressions": _num(r["impressions"]),
            "clicks": _num(r["clicks"]),
            "inline_link_clicks": _num(r["clicks"]),
            "spend": f"{r['spend']:.2f}",
            "actions": actions,
            "action_values": values,
            "attribution_setting": self.meta_attribution_setting,
        }
        row = {f: full[f] for f in fields if f in full and full[f] not in (None, [])}
        row["date_start"] = row["date_stop"] = r["date"]
        return row

    def _page(self, rows: list[dict[str, Any]], params: Mapping[str, str], url: str) -> Payload:
        """One page of ``rows`` from the ``after`` cursor, with Graph's ``paging``."""
        try:
            limit = int(params.get("limit", META_DEFAULT_LIMIT))
        except ValueError:
            return _invalid(f"limit must be a number, got {params.get('limit')!r}")
        if limit < 1:
            return _invalid("limit must be at least 1")
        limit = min(limit, self.insights_page_size)
        start = 0
        if params.get("after"):
            found = _offset(params["after"])
            if found is None or found > len(rows):
                return _invalid("the after cursor is not valid for this request")
            start = found
        page = rows[start : start + limit]
        body: dict[str, Any] = {"data": page}
        if page:
            paging: dict[str, Any] = {
                "cursors": {"before": _cursor(start), "after": _cursor(start + len(page))}
            }
            if start + len(page) < len(rows):
                query = {k: v for k, v in params.items() if k != "access_token"}
                query["after"] = paging["cursors"]["after"]
                query["limit"] = str(limit)
                paging["next"] = f"{url}?{urlencode(query)}"
            body["paging"] = paging
        return 200, body

    def _meta_insights(
        self,
        method: str,
        version: str,
        node: str,
        headers: Mapping[str, str],
        params: Mapping[str, str],
        url: str,
    ) -> Payload:
        """``GET`` (rows) or ``POST`` (a report job) on ``/{version}/act_{id}/insights``, and
        ``GET /{version}/{report_run_id}/insights`` (a finished job's rows)."""
        denied = self._meta_auth(version, headers, params, None)
        if denied is not None:
            return denied
        m = _ACT.fullmatch(node)
        if m is None:
            with self._lock:
                job = self._report_jobs.get(node)
            if job is None or method != "GET":
                return _no_object(node)
            if job["status"] != "Job Completed":
                return _invalid(
                    f"report {node} is not complete ({job['status']}): poll "
                    f"GET /{version}/{node} until async_status is Job Completed"
                )
            return self._page(job["rows"], params, url)
        try:
            query, rows = self._insights_request(m.group(1), params)
        except _Refused as exc:
            return exc.payload
        if method == "POST":
            with self._lock:
                rid = str(6_000_000_000_000_000 + self._next_report_id)
                self._next_report_id += 1
                fail = self._failing_reports > 0
                if fail:
                    self._failing_reports -= 1
                self._report_jobs[rid] = {
                    **query,
                    "rows": rows,
                    "polls": 0,
                    "fail": fail,
                    "status": "Job Not Started",
                    "percent": 0,
                }
            return 200, {"report_run_id": rid}
        if len(rows) > self.insights_sync_max_rows:
            return _meta_error(
                500,
                "Please reduce the amount of data you're asking for, then retry your request",
                code=1,
                type_="OAuthException",
                transient=False,
            )
        return self._page(rows, params, url)

    def _meta_account(self, account: str, params: Mapping[str, str]) -> Payload:
        """``GET /{version}/act_{id}``: the ad account's ``name``, ``currency`` and
        ``timezone_name`` (what ``signalloop connect test`` reads)."""
        if self.meta_ad_accounts is not None and account not in self.meta_ad_accounts:
            return _no_object(f"act_{account}")
        with self._lock:
            currency = self._currencies.get(("meta", account))
        full = {
            "id": f"act_{account}",
            "account_id": account,
            "name": f"Sandbox account {account}",
            "currency": currency or "USD",
            "timezone_name": self.meta_time_zone,
            "account_status": 1,
        }
        wanted = [f for f in params.get("fields", "").split(",") if f.strip()] or ["name"]
        return 200, {"id": full["id"], **{f: full[f] for f in wanted if f in full}}

    def _meta_report_status(
        self, version: str, node: str, headers: Mapping[str, str], params: Mapping[str, str]
    ) -> Payload:
        """``GET /{version}/{report_run_id}``: the job's status; each read moves it on."""
        denied = self._meta_auth(version, headers, params, None)
        if denied is not None:
            return denied
        m = _ACT.fullmatch(node)
        if m is not None:
            return self._meta_account(m.group(1), params)
        with self._lock:
            job = self._report_jobs.get(node)
            if job is None:
                return _no_object(node)
            if job["status"] not in ("Job Completed", "Job Failed"):
                job["polls"] += 1
                done = job["polls"] >= self.async_polls
                if done:
                    job["status"] = "Job Failed" if job["fail"] else "Job Completed"
                    job["percent"] = job["percent"] if job["fail"] else 100
                else:
                    job["status"] = "Job Running"
                    job["percent"] = int(100 * job["polls"] / self.async_polls)
            doc = {
                "id": node,
                "account_id": job["account"],
                "async_status": job["status"],
                "async_percent_completion": job["percent"],
                "date_start": job["since"],
                "date_stop": job["until"],
            }
        return 200, doc
