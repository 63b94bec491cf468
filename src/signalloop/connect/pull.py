"""``signalloop pull``: a connected ad account's daily delivery into the ``spend`` kind.

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

import csv
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from signalloop.config import Settings, load_settings
from signalloop.connect import google as gads
from signalloop.connect import meta
from signalloop.connect.meta import ReadFailed
from signalloop.contract import KINDS
from signalloop.errors import CredentialError, UsageError
from signalloop.ingest import ingest_file
from signalloop.push.client import Client
from signalloop.store import Workspace

#: The platforms a pull reads.
PLATFORMS = ("meta", "google")
#: Longest range read in one request (or report job).
CHUNK_DAYS = 31
#: Columns of the file handed to ingest: the contract's, then the attributes kept.
COLUMNS: tuple[str, ...] = (*KINDS["spend"].names, "attribution_setting", "account_id")

Progress = Callable[[str, float | None], None]


@dataclass
class PullResult:
    """What one pull read and landed."""

    platform: str
    account: str
    since: str
    until: str
    status: str = "ok"  # "ok" | "partial" (some ranges failed) | "failed" (none landed)
    requests: int = 0
    report_jobs: int = 0
    rows_pulled: int = 0
    rows_loaded: int = 0
    rows_unchanged: int = 0
    rows_restated: int = 0
    rows_quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    #: Columns the restated rows changed, with how many rows each.
    restated_columns: dict[str, int] = field(default_factory=dict)
    #: Days whose stored spend the pull changed: ``{date, before, after}``.
    restated_days: list[dict[str, Any]] = field(default_factory=list)
    #: The first restated rows, with each changed column's old and new value.
    restated: list[dict[str, Any]] = field(default_factory=list)
    spend_before: float = 0.0
    spend_after: float = 0.0
    currency: list[str] = field(default_factory=list)
    attribution_setting: list[str] = field(default_factory=list)
    #: Ranges that could not be read: ``{since, until, error}``.
    failed: list[dict[str, str]] = field(default_factory=list)
    ingest_id: int | None = None
    label: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


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


def _write(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in COLUMNS])


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
) -> PullResult:
    """Pull one platform's daily delivery into ``spend``.

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

    Raises
    ------
    UsageError
        The platform is unknown, not configured, or the range is wrong.
    CredentialError
        A credential is missing, or the platform refused it (the message names the fix).
    """
    started = time.perf_counter()
    settings = settings or load_settings()
    account = _need_account(settings, platform)
    tz = ZoneInfo(_time_zone(settings, platform))
    day = today or datetime.now(tz).date()
    lookback = lookback_days if lookback_days is not None else settings.connect.lookback_days
    start, end = pull_range(since, until, lookback, day)
    label = f"pull:{platform}:{account}:{start}..{end}"
    res = PullResult(platform, account, start.isoformat(), end.isoformat(), label=label)
    own = client is None
    http = client or Client()
    try:
        reader: meta.MetaReader | gads.GoogleReader
        if platform == "meta":
            reader = meta.MetaReader(
                http, settings.connect.meta, meta_token(settings), poll_wait=poll_wait
            )
        else:
            reader = gads.GoogleReader(http, settings.connect)
        rows: list[dict[str, Any]] = []
        parts = chunks(start, end)
        for i, (lo, hi) in enumerate(parts):
            if progress:
                progress(f"pulling {platform} {lo}..{hi}", i / len(parts))
            try:
                raw = reader.rows(lo, hi)
            except ReadFailed as exc:
                res.failed.append(
                    {"since": lo.isoformat(), "until": hi.isoformat(), "error": str(exc)}
                )
                continue
            if platform == "meta":
                rows += meta.spend_rows(raw, settings.connect.meta.optimization_event)
            else:
                rows += gads.spend_rows(raw, settings.connect.google.currency, account)
        res.requests = reader.requests
        res.report_jobs = getattr(reader, "jobs", 0)
    finally:
        if own:
            http.close()
    res.rows_pulled = len(rows)
    res.currency = sorted({str(r["currency"]) for r in rows if r.get("currency")})
    res.attribution_setting = sorted(
        {str(r["attribution_setting"]) for r in rows if r.get("attribution_setting")}
    )
    expected = settings.connect.meta.currency if platform == "meta" else None
    expected = expected or (settings.connect.google.currency if platform == "google" else None)
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
    res.seconds = time.perf_counter() - started
    return res


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
    with tempfile.TemporaryDirectory(prefix="signalloop-pull-") as tmp:
        path = Path(tmp) / f"{platform}-spend.csv"
        _write(rows, path)
        got = ingest_file(
            ws,
            "spend",
            path,
            restate=True,
            label=res.label,
            # the account's yesterday can be today in UTC (a zone east of it): not the future
            now=datetime.now(UTC).replace(tzinfo=None) + timedelta(days=1),
            progress=progress,
        )
    after = _spend_by_day(ws, platform, start, end)
    res.ingest_id = got.ingest_id
    res.rows_loaded = got.rows_loaded
    res.rows_unchanged = got.rows_existing
    res.rows_restated = got.rows_restated
    res.rows_quarantined = got.rows_quarantined
    res.quarantine_reasons = got.quarantine_reasons
    res.restated_columns = got.restated_columns
    res.restated = got.restated
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
