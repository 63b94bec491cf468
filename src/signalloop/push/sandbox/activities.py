"""The Meta ad account activity log stand-in: ``GET /{version}/act_{id}/activities``.

The edits people, rules and apps made to an ad account, newest first, in pages.

Rules, and where each comes from ("confirmed": the ``facebook-business`` SDK's
``AdActivity`` and ``AdAccount.get_activities``, found with the ``search`` tool; "chosen": the
sandbox's own answer where the exact one is not published):

* fields ``actor_id``, ``actor_name``, ``application_id``, ``application_name``,
  ``date_time_in_timezone``, ``event_time``, ``event_type``, ``extra_data`` (a string),
  ``object_id``, ``object_name``, ``object_type``, ``translated_event_type``; the parameters
  ``since``, ``until``, ``category``, ``limit``, ``after``, ``oid``, ``add_children``:
  confirmed; an unknown field is a code 100 error: chosen wording;
* ``extra_data`` is a JSON document in a string; for budget events it holds ``old_value`` /
  ``new_value`` (minor currency units), ``currency`` and ``type``, either at the top or
  nested (``{"old_value": {...}, "new_value": {...}}``): not documented in a page found here,
  the sandbox serves the flat form unless a stored event carries its own ``extra_data``;
* ``since`` / ``until`` are Unix seconds or ISO dates or times (Graph also takes
  ``strtotime`` strings); events are served newest first; without ``since`` the last 7 days:
  chosen; ``event_time`` is written ``YYYY-MM-DDTHH:MM:SS+0000`` (Graph's datetime form);
* a stored event may be stored twice (the platform's log repeats an event now and then) and
  restated (stored again under the same ``id`` with other values): what a re-pull must
  absorb.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from signalloop.push.sandbox.common import Payload, _as_utc, _upsert
from signalloop.push.sandbox.insights import _invalid, _MetaInsights, _no_object

#: Fields the activity log serves.
META_ACTIVITY_FIELDS = (
    "actor_id",
    "actor_name",
    "application_id",
    "application_name",
    "date_time_in_timezone",
    "event_time",
    "event_type",
    "extra_data",
    "object_id",
    "object_name",
    "object_type",
    "translated_event_type",
)
#: Fields served when the request names none (chosen).
META_ACTIVITY_DEFAULT_FIELDS = ("event_type", "event_time", "object_id", "object_type")

_ACT = re.compile(r"act_(\d+)")


def graph_time(value: datetime) -> str:
    """A datetime as Graph writes it: ``2026-03-01T12:00:00+0000``.

    >>> graph_time(datetime(2026, 3, 1, 12, tzinfo=UTC))
    '2026-03-01T12:00:00+0000'
    """
    return _as_utc(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def _when(text: str) -> datetime | None:
    text = text.strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC)
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        return _as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return None


class _MetaActivities(_MetaInsights):
    """The activity log route over the events :meth:`Sandbox.load_activities` stored."""

    _activities: dict[str, list[dict[str, Any]]]

    def load_activities(self, account: str, events: Iterable[Mapping[str, Any]]) -> int:
        """Store activity-log events of one ad account; returns how many were stored.

        Each event: ``event_time`` (a datetime, or Graph's string), ``event_type``,
        ``object_id``, ``object_type`` (``CAMPAIGN``, ``ADSET``, ``AD``), and optional
        ``object_name``, ``actor_id``, ``actor_name``, ``application_id``,
        ``application_name``, ``extra_data`` (a mapping or a string), ``id``. An event whose
        ``id`` is stored already replaces it (a restatement); an event without one is always
        added (stored twice if loaded twice, as the log sometimes repeats one).
        """
        acct = str(account).removeprefix("act_")
        n = 0
        with self._lock:
            log = self._activities.setdefault(acct, [])
            for raw in events:
                ev = dict(copy.deepcopy(raw))
                when = ev.get("event_time")
                if isinstance(when, datetime):
                    ev["event_time"] = graph_time(when)
                elif not isinstance(when, str) or _when(when) is None:
                    raise ValueError(f"an activity needs event_time: {dict(raw)!r}")
                if not ev.get("event_type") or not ev.get("object_id"):
                    raise ValueError(f"an activity needs event_type and object_id: {dict(raw)!r}")
                ev["object_id"] = str(ev["object_id"])
                extra = ev.get("extra_data")
                if extra is not None and not isinstance(extra, str):
                    ev["extra_data"] = json.dumps(extra, separators=(",", ":"))
                _upsert(log, ev, lambda e: e.get("id") or None)
                n += 1
        return n

    def _record_activity(self, account: str, event: Mapping[str, Any]) -> None:
        """Log an edit the sandbox itself applied (a budget update through the API)."""
        with self._lock:
            self._activities.setdefault(account, []).append(dict(event))

    def _meta_activities(
        self,
        version: str,
        node: str,
        headers: Mapping[str, str],
        params: Mapping[str, str],
        url: str,
    ) -> Payload:
        """``GET /{version}/act_{id}/activities``: the account's edits, newest first, paged."""
        denied = self._meta_auth(version, headers, params, None)
        if denied is not None:
            return denied
        m = _ACT.fullmatch(node)
        if m is None:
            return _no_object(node)
        account = m.group(1)
        if self.meta_ad_accounts is not None and account not in self.meta_ad_accounts:
            return _no_object(node)
        fields = [f.strip() for f in params.get("fields", "").split(",") if f.strip()]
        bad = [f for f in fields if f not in META_ACTIVITY_FIELDS]
        if bad:
            return _invalid(f"{bad[0]} is not a field of AdActivity")
        fields = fields or list(META_ACTIVITY_DEFAULT_FIELDS)
        now = self.now()
        since = _when(params["since"]) if params.get("since") else now - timedelta(days=7)
        until = _when(params["until"]) if params.get("until") else now
        if since is None or until is None:
            return _invalid("since and until must be Unix seconds or ISO 8601 dates or times")
        if since > until:
            return _invalid("since must not be after until")
        with self._lock:
            stored = [copy.deepcopy(e) for e in self._activities.get(account, [])]
        picked = []
        for e in stored:
            t = _when(e["event_time"])
            if t is not None and since <= t <= until:
                picked.append((t, e))
        picked.sort(key=lambda p: p[0], reverse=True)
        rows = []
        for t, e in picked:
            full = {
                **e,
                "date_time_in_timezone": t.strftime("%m/%d/%Y at %-I:%M %p"),
                "translated_event_type": str(e["event_type"]).replace("_", " "),
            }
            rows.append({f: full[f] for f in fields if full.get(f) is not None})
        return self._page(rows, params, url)
