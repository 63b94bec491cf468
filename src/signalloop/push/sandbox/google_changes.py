"""The Google Ads ``change_event`` stand-in: the account's edit history through GAQL.

``SELECT change_event.... FROM change_event WHERE change_event.change_date_time >= '...' AND
change_event.change_date_time <= '...' LIMIT n`` over ``googleAds:search`` /
``searchStream`` (:mod:`.gaql`), over the events :meth:`Sandbox.load_change_events` stored and
those the sandbox's own budget mutates recorded.

Rules ("confirmed": the Google Ads API reference, found with the ``search`` tool; "chosen":
the sandbox's own answer):

* ``ChangeEventError``: ``CHANGE_DATE_RANGE_INFINITE`` without both a lower and an upper
  bound on ``change_event.change_date_time``, ``CHANGE_DATE_RANGE_NEGATIVE`` when the lower
  bound is after the upper, ``START_DATE_TOO_OLD`` when the lower bound is more than 30 days
  before now, ``LIMIT_NOT_SPECIFIED`` without ``LIMIT``, ``INVALID_LIMIT_CLAUSE`` above
  10,000: confirmed (the error enum's descriptions); the 30 days counted on the server clock
  in the account's time zone: chosen;
* fields ``change_date_time``, ``change_resource_type`` (``CAMPAIGN_BUDGET``, ``CAMPAIGN``,
  ``AD_GROUP``, ``AD_GROUP_AD``, ``AD_GROUP_CRITERION``, ...), ``change_resource_name``,
  ``client_type`` (``GOOGLE_ADS_WEB_CLIENT``, ``GOOGLE_ADS_API``,
  ``GOOGLE_ADS_AUTOMATED_RULE``, ``INTERNAL_TOOL``, ...), ``user_email``,
  ``resource_change_operation``, ``changed_fields`` (a FieldMask: in JSON one string of
  comma-separated camelCase paths), ``old_resource`` / ``new_resource`` (``ChangedResource``:
  the changed resource under its own key, ``campaignBudget``, ``campaign``, ``adGroup``, ...),
  ``campaign``, ``ad_group``: confirmed (ChangeEvent reference);
* ``change_date_time`` is ``YYYY-MM-DD HH:MM:SS.ffffff`` in the account's time zone: the
  format as commonly returned, not found verbatim in a page here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from signalloop.push.sandbox.common import _as_utc, _Core, _upsert

if TYPE_CHECKING:
    from signalloop.push.sandbox.gaql import GaqlQuery

#: Most rows a change_event query may ask for.
CHANGE_EVENT_MAX_LIMIT = 10_000
#: How far back change_event reaches.
CHANGE_EVENT_DAYS = 30
_FIELD = "change_event.change_date_time"


def change_time(value: datetime, tz: Any) -> str:
    """A datetime as ``change_date_time`` (the account's time zone, microseconds).

    >>> from datetime import UTC
    >>> change_time(datetime(2026, 3, 1, 12, tzinfo=UTC), UTC)
    '2026-03-01 12:00:00.000000'
    """
    return _as_utc(value).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S.%f")


def _parse(text: Any, tz: Any) -> datetime | None:
    try:
        t = datetime.fromisoformat(str(text).strip())
    except ValueError:
        return None
    return t.replace(tzinfo=tz) if t.tzinfo is None else t


class _ChangeEvents(_Core):
    """Stored change events per customer, and the rules a ``change_event`` query obeys."""

    _change_events: dict[str, list[dict[str, Any]]]

    def load_change_events(self, customer: str, events: Iterable[Mapping[str, Any]]) -> int:
        """Store change events of one customer (snake_case keys as in GAQL, values in REST
        JSON: ``old_resource`` / ``new_resource`` as ``{"campaignBudget": {"amountMicros":
        "..."}}``). ``change_date_time`` may be a datetime (written in the account's time
        zone). An event whose ``change_resource_name`` and ``change_date_time`` are stored
        already replaces it (a restatement). Returns the events stored."""
        cid = str(customer).replace("-", "")
        n = 0
        with self._lock:
            log = self._change_events.setdefault(cid, [])
            for raw in events:
                ev = copy.deepcopy(dict(raw))
                when = ev.get("change_date_time")
                if isinstance(when, datetime):
                    ev["change_date_time"] = change_time(when, self.google_time_zone)
                elif _parse(when, self.google_time_zone) is None:
                    raise ValueError(f"a change event needs change_date_time: {dict(raw)!r}")
                _upsert(log, ev, lambda e: (e.get("change_resource_name"), e["change_date_time"]))
                n += 1
        return n

    def _change_event_rows(self, cid: str, fields: Iterable[str]) -> list[dict[str, Any]]:
        with self._lock:
            found = [copy.deepcopy(e) for e in self._change_events.get(cid, [])]
        return [{f: e.get(f.partition(".")[2]) for f in fields} for e in found]

    def _change_event_problem(self, q: GaqlQuery) -> tuple[str, str] | None:
        """The ``ChangeEventError`` a ``change_event`` query earns, or ``None``."""
        lows = [v for f, op, v in q.conditions if f == _FIELD and op in (">", ">=")]
        highs = [v for f, op, v in q.conditions if f == _FIELD and op in ("<", "<=")]
        if not lows or not highs:
            return (
                "CHANGE_DATE_RANGE_INFINITE",
                "The change_event search request must specify a finite range filter on "
                "change_date_time.",
            )
        tz = self.google_time_zone
        lo = max((t for t in (_parse(v, tz) for v in lows) if t is not None), default=None)
        hi = min((t for t in (_parse(v, tz) for v in highs) if t is not None), default=None)
        if lo is None or hi is None:
            return ("CHANGE_DATE_RANGE_INFINITE", "change_date_time bounds must be date times.")
        if lo > hi:
            return (
                "CHANGE_DATE_RANGE_NEGATIVE",
                "The change event search request has specified invalid date time filters "
                "that can never logically produce any valid results.",
            )
        if lo < self.now().astimezone(tz) - timedelta(days=CHANGE_EVENT_DAYS):
            return (
                "START_DATE_TOO_OLD",
                "The requested start date is too old. It cannot be older than 30 days.",
            )
        if q.limit is None:
            return ("LIMIT_NOT_SPECIFIED", "The change_event search request must specify a LIMIT.")
        if q.limit > CHANGE_EVENT_MAX_LIMIT:
            return (
                "INVALID_LIMIT_CLAUSE",
                "The LIMIT specified by change_event request should be less than or equal to 10K.",
            )
        return None

    def _record_change_event(self, cid: str, event: Mapping[str, Any]) -> None:
        """Log an edit the sandbox itself applied (a budget mutate through the API)."""
        with self._lock:
            self._change_events.setdefault(cid, []).append(dict(event))
