"""``signalloop pull``: a connected ad account's daily delivery into the ``spend`` kind, and
its edit history into ``changes`` (:mod:`signalloop.connect.changes`).

One pull reads a range of days (default: the ``lookback_days`` up to yesterday in the
account's time zone, because platforms restate recent days), in chunks of at most
:data:`CHUNK_DAYS`, turns each platform row into a canonical ``spend`` row
(:mod:`signalloop.connect.meta`, :mod:`signalloop.connect.google`) and lands them through
:func:`signalloop.ingest.ingest_file` with ``restate=True``: the same validation, quarantine and
natural keys as any export; a row already stored unchanged adds nothing, a row the platform
restated replaces the stored one and is counted (``rows_restated``, and each day whose spend
moved in ``restated_days``). A chunk the platform could not serve (after the retries) is left
out and reported in ``failed``; the other chunks still land.

Credentials come from :class:`~signalloop.connect.settings.ConnectSettings` and go only into
request headers: never into the result, a log line or the workspace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from signalloop.config import Settings, load_settings
from signalloop.connect import google as gads
from signalloop.connect import meta
from signalloop.connect.changes import ChangesResult, pull_changes
from signalloop.connect.landing import Landed, land_rows
from signalloop.connect.meta import ReadFailed
from signalloop.contract import KINDS
from signalloop.errors import CredentialError, UsageError
from signalloop.push.client import Client
from signalloop.store import Workspace

#: The platforms a pull reads.
PLATFORMS = ("meta", "google")
#: What a pull can read, and reads by default.
WHAT = ("spend", "changes")
#: Longest range read in one request (or report job).
CHUNK_DAYS = 31
#: Columns of the file handed to ingest: the contract's, then the attributes kept.
COLUMNS: tuple[str, ...] = (*KINDS["spend"].names, "attribution_setting", "account_id")

Progress = Callable[[str, float | None], None]


@dataclass
class PullResult(Landed):
    """What one pull read and landed (the ingest's counts: :class:`Landed`)."""

    platform: str
    account: str
    since: str
    until: str
    status: str = "ok"  # "ok" | "partial" (some ranges failed) | "failed" (none landed)
    requests: int = 0
    report_jobs: int = 0
    rows_pulled: int = 0
    #: Columns the restated rows changed, with how many rows each.
    restated_columns: dict[str, int] = field(default_factory=dict)
    #: Days whose stored spend the pull changed: ``{date, before, after}``.
    restated_days: list[dict[str, Any]] = field(default_factory=list)
    spend_before: float = 0.0
    spend_after: float = 0.0
    currency: list[str] = field(default_factory=list)
    attribution_setting: list[str] = field(default_factory=list)
    #: Ranges that could not be read: ``{since, until, error}``.
    failed: list[dict[str, str]] = field(default_factory=list)
    label: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: What was pulled (``spend``, ``changes``).
    what: list[str] = field(default_factory=lambda: list(WHAT))
    #: The edit history's :class:`~signalloop.connect.changes.ChangesResult` (as a dict), when
    #: pulled.
    changes: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


def check_what(what: Sequence[str] | str) -> tuple[str, ...]:
    """What a pull reads, checked (``"spend,changes"`` or a sequence).

    >>> check_what("changes, spend")
    ('spend', 'changes')
    """
    items = [w.strip() for w in (what.split(",") if isinstance(what, str) else what)]
    bad = [w for w in items if w not in WHAT]
    if bad or not items:
        raise UsageError(
            f"--what {','.join(items) or '(nothing)'}: expected spend, changes or both "
            "(spend,changes)"
        )
    return tuple(w for w in WHAT if w in items)


def chunks(since: date, until: date, days: int = CHUNK_DAYS) -> list[tuple[date, date]]:
    """``[since, until]`` cut into consecutive ranges of at most ``days`` days.

    >>> [(a.isoformat(), b.isoformat()) for a, b in chunks(date(2026, 1, 1), date(2026, 2, 5))]
    [('2026-01-01', '2026-01-31'), ('2026-02-01', '2026-02-05')]
    """
    out = []
    start = since
    while start <= until:
        end = min(until, start + timedelta(days=days - 1))
        out.append((start, end))
        start = end + timedelta(days=1)
    return out


def pull_range(
    since: date | None,
    until: date | None,
    lookback_days: int,
    today: date,
) -> tuple[date, date]:
    """The days a pull reads: ``until`` defaults to yesterday (``today`` is the account's),
    ``since`` to ``lookback_days`` days up to ``until``.

    >>> pull_range(None, None, 28, date(2026, 3, 10))
    (datetime.date(2026, 2, 10), datetime.date(2026, 3, 9))
    """
    if lookback_days < 1:
        raise UsageError(f"--lookback-days must be at least 1, got {lookback_days}")
    end = until or today - timedelta(days=1)
    start = since or end - timedelta(days=lookback_days - 1)
    if end > today:
        raise UsageError(
            f"--until {end} is after today in the account's time zone ({today}): the platform "
            "has no delivery for days that have not happened"
        )
    if start > end:
        raise UsageError(f"--since {start} is after --until {end}: nothing to pull")
    return start, end


def _need_account(settings: Settings, platform: str) -> str:
    if platform == "meta":
        if settings.connect.meta.ad_account_id is None:
            raise UsageError(
                'no Meta ad account: add [connect.meta] ad_account_id = "act_..." to '
                "signalloop.toml (Ads Manager shows it in the account menu)"
            )
        return f"act_{settings.connect.meta.ad_account_id}"
    if platform == "google":
        if settings.connect.google.customer_id is None:
            raise UsageError(
                'no Google Ads customer: add [connect.google] customer_id = "123-456-7890" to '
                "signalloop.toml (the number at the top of the Google Ads UI)"
            )
        return settings.connect.google.customer_id
    raise UsageError(f"unknown platform {platform!r}: expected one of {', '.join(PLATFORMS)}")


def meta_token(settings: Settings) -> str:
    """The Meta access token, or :class:`CredentialError` saying where to set it."""
    token = settings.connect.credential("meta", "access_token")
    if not token:
        raise CredentialError(
            f"no Meta access token: set {settings.connect.where('meta', 'access_token')} "
            "(a system-user token with ads_read; signalloop never stores credentials in the "
            "workspace or signalloop.toml)"
        )
    return token


def _time_zone(settings: Settings, platform: str) -> str:
    cfg = settings.connect.meta if platform == "meta" else settings.connect.google
    return cfg.time_zone


def _spend_by_day(ws: Workspace, platform: str, since: date, until: date) -> dict[date, float]:
    rows = ws.con.execute(
        "SELECT date, sum(spend) FROM spend WHERE platform = ? AND date BETWEEN ? AND ? GROUP BY 1",
        [platform, since, until],
    ).fetchall()
    return {d: float(s or 0.0) for d, s in rows}


def pull(
    ws: Workspace,
    platform: str,
    *,
    since: date | None = None,
    until: date | None = None,
    lookback_days: int | None = None,
    settings: Settings | None = None,
    client: Client | None = None,
    today: date | None = None,
    progress: Progress | None = None,
    poll_wait: float = 2.0,
    what: Sequence[str] = WHAT,
) -> PullResult:
    """Pull one platform's daily delivery into ``spend`` and its edit history into
    ``changes`` (:mod:`signalloop.connect.changes`; in ``PullResult.changes``).

    Parameters
    ----------
    ws
        The workspace (DuckDB).
    platform
        ``"meta"`` or ``"google"``.
    since, until
        The days to read (see :func:`pull_range`).
    lookback_days
        Days re-read when ``since`` is not given (default ``[connect] lookback_days``).
    settings
        Project settings (default: :func:`~signalloop.config.load_settings`).
    client
        The HTTP client (default: a new one, closed at the end).
    today
        The account's today (default: the clock, in the account's time zone).
    progress
        Called with a label and a fraction as the pull proceeds.
    poll_wait
        Seconds between a Meta report job's status reads.
    what
        What to pull: ``"spend"``, ``"changes"`` or both (the default). The edit history is
        read from the first day of the range up to now (up to the end of ``until`` when it
        is given).

    Raises
    ------
    UsageError
        The platform is unknown, not configured, or the range is wrong.
    CredentialError
        A credential is missing, or the platform refused it (the message names the fix).
    """
    started = time.perf_counter()
    settings = settings or load_settings()
    wanted = check_what(what)
    account = _need_account(settings, platform)
    tz = ZoneInfo(_time_zone(settings, platform))
    day = today or datetime.now(tz).date()
    lookback = lookback_days if lookback_days is not None else settings.connect.lookback_days
    start, end = pull_range(since, until, lookback, day)
    label = f"pull:{platform}:{account}:{start}..{end}"
    res = PullResult(
        platform, account, start.isoformat(), end.isoformat(), label=label, what=list(wanted)
    )
    own = client is None
    http = client or Client()
    rows: list[dict[str, Any]] = []
    try:
        reader: meta.MetaReader | gads.GoogleReader
        if platform == "meta":
            reader = meta.MetaReader(
                http, settings.connect.meta, meta_token(settings), poll_wait=poll_wait
            )
        else:
            reader = gads.GoogleReader(http, settings.connect)
        if "spend" in wanted:
            rows = _read_spend(reader, res, settings, platform, account, start, end, progress)
        if "changes" in wanted:
            lo = datetime.combine(start, datetime.min.time(), tz)
            # the history runs to now (today's edits matter to apply); an explicit --until
            # ends it with that day
            last = end if until is not None else day if today is not None else None
            hi = (
                datetime.now(tz)
                if last is None
                else datetime.combine(last + timedelta(days=1), datetime.min.time(), tz)
            )
            spend_requests = reader.requests
            try:
                res.changes = pull_changes(
                    ws,
                    reader,
                    platform,
                    account,
                    lo,
                    hi - timedelta(seconds=1),
                    currency=_currency(settings, platform),
                    time_zone=_time_zone(settings, platform),
                    progress=progress,
                    today=day,
                ).to_dict()
            except CredentialError as exc:
                if "spend" not in wanted:
                    raise
                # the spend read is still landed; the history says what to fix
                failed = ChangesResult(lo.isoformat(), hi.isoformat(), status="failed")
                failed.error = str(exc)
                res.changes = failed.to_dict()
            res.changes["requests"] = reader.requests - spend_requests
            reader.requests = spend_requests
        res.requests = reader.requests
        res.report_jobs = getattr(reader, "jobs", 0)
    finally:
        if own:
            http.close()
    if "spend" in wanted:
        _finish_spend(ws, res, rows, settings, platform, start, end, progress)
    res.seconds = time.perf_counter() - started
    return res


def _read_spend(
    reader: meta.MetaReader | gads.GoogleReader,
    res: PullResult,
    settings: Settings,
    platform: str,
    account: str,
    start: date,
    end: date,
    progress: Progress | None,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    parts = chunks(start, end)
    for i, (lo, hi) in enumerate(parts):
        if progress:
            progress(f"pulling {platform} {lo}..{hi}", i / len(parts))
        try:
            raw = reader.rows(lo, hi)
        except ReadFailed as exc:
            res.failed.append({"since": lo.isoformat(), "until": hi.isoformat(), "error": str(exc)})
            continue
        if platform == "meta":
            rows += meta.spend_rows(raw, settings.connect.meta.optimization_event)
        else:
            rows += gads.spend_rows(raw, settings.connect.google.currency, account)
    return rows


def _currency(settings: Settings, platform: str) -> str | None:
    cfg = settings.connect.meta if platform == "meta" else settings.connect.google
    return cfg.currency


def _finish_spend(
    ws: Workspace,
    res: PullResult,
    rows: list[dict[str, Any]],
    settings: Settings,
    platform: str,
    start: date,
    end: date,
    progress: Progress | None,
) -> None:
    res.rows_pulled = len(rows)
    res.currency = sorted({str(r["currency"]) for r in rows if r.get("currency")})
    res.attribution_setting = sorted(
        {str(r["attribution_setting"]) for r in rows if r.get("attribution_setting")}
    )
    expected = _currency(settings, platform)
    if expected and res.currency and res.currency != [expected]:
        res.notes.append(
            f"the account reports {', '.join(res.currency)}, signalloop.toml says {expected}: "
            "spend is stored in the account's currency"
        )
    if res.failed:
        res.status = "partial" if len(res.failed) < len(chunks(start, end)) else "failed"
    if rows:
        _land(ws, res, rows, platform, start, end, progress)
    elif not res.failed:
        res.notes.append("the platform reported no delivery in this range")


def _land(
    ws: Workspace,
    res: PullResult,
    rows: Sequence[Mapping[str, Any]],
    platform: str,
    start: date,
    end: date,
    progress: Progress | None,
) -> None:
    before = _spend_by_day(ws, platform, start, end)
    got = land_rows(ws, "spend", rows, COLUMNS, res.label, progress)
    after = _spend_by_day(ws, platform, start, end)
    res.count(got)
    res.restated_columns = got.restated_columns
    res.spend_before = round(sum(before.values()), 6)
    res.spend_after = round(sum(after.values()), 6)
    other = ws.con.execute(
        "SELECT count(*) FROM spend s JOIN ingest_log l ON l.ingest_id = s._ingest_id "
        "WHERE s.platform = ? AND s.date BETWEEN ? AND ? AND l.file NOT LIKE 'pull:%'",
        [platform, start, end],
    ).fetchone()
    if other and other[0]:
        res.notes.append(
            f"{other[0]:,} {platform} spend row(s) in this range came from exports, not pulls: "
            "their keys differ from the pulled rows' (an export names creatives, a pull does "
            "not), so both are counted; keep one source per platform"
        )
    res.restated_days = [
        {"date": d.isoformat(), "before": round(before[d], 6), "after": round(after.get(d, 0.0), 6)}
        for d in sorted(before)
        if abs(before[d] - after.get(d, 0.0)) > 1e-9
    ]


def pull_connected(
    ws: Workspace,
    settings: Settings,
    *,
    today: date | None = None,
    client: Client | None = None,
    progress: Progress | None = None,
    poll_wait: float = 2.0,
) -> list[dict[str, Any]]:
    """Pull every platform that has an account in ``[connect]`` (``signalloop run`` with
    ``[run] pull = true``): one :class:`PullResult` dict each, or ``{platform, status:
    "error", message}`` when the pull could not start (a missing or refused credential, a
    wrong setting), so the run goes on with the data it has and says why."""
    out: list[dict[str, Any]] = []
    accounts = {
        "meta": settings.connect.meta.ad_account_id,
        "google": settings.connect.google.customer_id,
    }
    for platform in PLATFORMS:
        if accounts[platform] is None:
            continue
        try:
            res = pull(
                ws,
                platform,
                settings=settings,
                client=client,
                today=today,
                progress=progress,
                poll_wait=poll_wait,
            )
        except (UsageError, CredentialError) as exc:
            out.append({"platform": platform, "status": "error", "message": str(exc)})
            continue
        out.append(res.to_dict())
    return out
