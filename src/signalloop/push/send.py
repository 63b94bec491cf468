"""Push validated outcomes and outage exclusions: plan, write, send, record.

Three jobs, one shape. Each takes the workspace, the settings, the as-of date and the send
clock ``now``; builds the platform's request bodies from
:func:`~signalloop.push.outcomes.validated_outcomes` (or the stored exclusion windows); leaves
out, with the reason, everything the ledger says is done and everything the platform's rules
would reject; writes the bodies to ``out`` (one JSON document per request, plus Google's upload
file) and, unless ``dry_run``, sends them, writing the ledger after every acknowledged request.

* :func:`push_meta`: CRM stages to Meta's Conversions API (``POST /{pixel_id}/events``);
* :func:`push_google`: click conversions (or enhanced conversions for leads) to Google Ads
  (``customers/{cid}:uploadClickConversions``);
* :func:`push_exclusions`: outage windows to Google Ads bidding data exclusions
  (``customers/{cid}/biddingDataExclusions:mutate``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from signalloop.config import Settings
from signalloop.errors import CredentialError, UsageError
from signalloop.push import google as g
from signalloop.push import ledger
from signalloop.push import meta as m
from signalloop.push.client import Client, Reply, google_auth_headers
from signalloop.push.outcomes import Outcomes, validated_outcomes
from signalloop.store import Workspace

Progress = Callable[[str, float | None], None]
#: Safety margin on Meta's 7-day age limit (events are judged as if sent this much later).
AGE_MARGIN = timedelta(hours=1)


@dataclass
class PushResult:
    """What one push did (or, dry, would do)."""

    platform: str
    item: str
    as_of: date
    now: datetime
    dry_run: bool
    test: bool = False
    #: Validated candidates for this platform before the ledger and the platform's rules.
    candidates: int = 0
    already_sent: int = 0
    sent: int = 0
    #: Items the gate, stage regression, duplicate or dropout rules stopped.
    skipped: list[dict[str, Any]] = field(default_factory=list)
    #: Items the platform's rules would reject (too old, no identity, ...), not sent.
    left_out: list[dict[str, Any]] = field(default_factory=list)
    #: Items the platform turned away (per row or with their whole request).
    rejected: list[dict[str, Any]] = field(default_factory=list)
    #: Requests that got no answer after the retries (nothing recorded as sent).
    failed: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary with every listed item."""
        return {
            "platform": self.platform,
            "item": self.item,
            "as_of": self.as_of.isoformat(),
            "now": self.now.isoformat(),
            "dry_run": self.dry_run,
            "test": self.test,
            "counts": self.counts(),
            "skipped_by_reason": dict(Counter(s["reason"] for s in self.skipped)),
            "left_out_by_reason": dict(Counter(x["reason"] for x in self.left_out)),
            "rejected_by_code": dict(Counter(str(x.get("code")) for x in self.rejected)),
            "requests": self.requests,
            "files": self.files,
            "notes": self.notes,
            "skipped": self.skipped,
            "left_out": self.left_out,
            "rejected": self.rejected,
            "failed": self.failed,
        }

    def counts(self) -> dict[str, int]:
        """Numbers per outcome of the push."""
        planned = sum(r["items"] for r in self.requests)
        return {
            "candidates": self.candidates,
            "already_sent": self.already_sent,
            "planned" if self.dry_run else "sent": planned if self.dry_run else self.sent,
            "skipped": len(self.skipped),
            "left_out": len(self.left_out),
            "rejected": len(self.rejected),
            "failed_requests": len(self.failed),
        }


def send_clock(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo else now.replace(tzinfo=UTC)


def write_body(out: Path | None, name: str, doc: Any) -> str | None:
    if out is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    text = doc if isinstance(doc, str) else json.dumps(doc, indent=1, sort_keys=True)
    path.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
    return str(path)


def _credential(settings: Settings, platform: str, name: str, what: str) -> str:
    value = settings.push.credential(platform, name)
    if not value:
        where = settings.push.env_name(platform, name)
        extra = f" or [{platform}] {name} in the secrets file" if settings.push.secrets else ""
        raise CredentialError(
            f"no {what}: set the environment variable {where}{extra} "
            "(signalloop never stores credentials in the workspace or signalloop.toml)"
        )
    return value


def _outcomes(
    ws: Workspace, as_of: date, settings: Settings, outcomes: Outcomes | None
) -> Outcomes:
    return (
        outcomes if outcomes is not None else validated_outcomes(ws, as_of=as_of, settings=settings)
    )


# ---- Meta ----------------------------------------------------------------------------------


def push_meta(
    ws: Workspace,
    *,
    as_of: date,
    settings: Settings | None = None,
    dry_run: bool = True,
    out: str | Path | None = None,
    now: datetime | None = None,
    outcomes: Outcomes | None = None,
    client: Client | None = None,
    progress: Progress | None = None,
) -> PushResult:
    """CRM stages to Meta's Conversions API; see the module docstring."""
    settings = settings or Settings()
    cfg = settings.push.meta
    now = send_clock(now)
    test = bool(cfg.test_event_code)
    res = PushResult("meta", "event", as_of, now, dry_run, test=test)
    if not dry_run and not cfg.pixel_id:
        raise UsageError(
            "[push.meta] pixel_id is not set: name the dataset (pixel) the CRM events go to "
            "in signalloop.toml"
        )
    oc = _outcomes(ws, as_of, settings, outcomes)
    if oc.missing:
        res.notes.append(oc.missing)
        return res
    cands, skipped = oc.for_platform("meta")
    stages = set(cfg.stages or settings.funnel)
    res.skipped = [s for s in skipped if s["stage"] in stages]
    cands = [c for c in cands if c["stage"] in stages]
    res.candidates = len(cands)
    done = ledger.done_keys(ws, "meta", "event", test=test)
    events: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    for c in cands:
        e = m.build_event(
            c["record_id"],
            c["stage"],
            c["ts"],
            event_name=cfg.event_name(c["stage"]),
            crm_name=settings.push.crm_name,
            lead=c["lead_id"],
            email=c["email"],
            phone=c["phone"],
        )
        if e is None:
            res.left_out.append(_item(c, "no_identity", "no Meta lead id, valid email or phone"))
            continue
        if e["event_id"] in done:
            res.already_sent += 1
            continue
        events.append(e)
        by_id[e["event_id"]] = c
    # planned as if sent AGE_MARGIN later: a long push must not carry an event past Meta's
    # 7 days before its request goes (one such event rejects the whole request)
    plan = m.plan_requests(events, now + AGE_MARGIN)
    for x in plan.left_out:
        c = by_id[x["event"]["event_id"]]
        reason = "too_old" if any("days old" in r for r in x["reasons"]) else "invalid"
        res.left_out.append(_item(c, reason, "; ".join(x["reasons"])))
    too_old = [x for x in res.left_out if x["reason"] == "too_old"]
    if too_old and not plan.requests:
        newest = max(x["ts"] for x in too_old)
        res.notes.append(
            f"every unsent event is older than Meta's 7 days (the newest, {newest[:16]}, as of "
            f"the send clock {now.isoformat()[:16]}): push at least daily; to preview an old "
            "account, --dry-run --now <the morning after its last day>"
        )
    if not oc.fields.get("email") and not oc.fields.get("lead_id"):
        res.notes.append(
            "the CRM rows carry no email or Meta lead id attribute: add the contact's email "
            "(or the Lead Ads id) to the CRM export, or name its column in [push.fields]"
        )
    url = f"{cfg.base_url}/{cfg.api_version}/{cfg.pixel_id or '{pixel_id}'}/events"
    headers = None
    if not dry_run:
        token = _credential(settings, "meta", "access_token", "Meta access token")
        headers = {"Authorization": f"Bearer {token}"}
    send_batches(
        ws,
        res,
        client,
        url=url,
        headers=headers,
        bodies=[m.request_body(batch, cfg.test_event_code) for batch in plan.requests],
        keys=[[(e["event_id"], by_id[e["event_id"]]) for e in batch] for batch in plan.requests],
        folder=Path(out) if out is not None else None,
        name="meta-events",
        label="sending events to Meta",
        progress=progress,
    )
    return res


def send_batches(
    ws: Workspace,
    res: PushResult,
    client: Client | None,
    *,
    url: str,
    headers: Mapping[str, str] | None,
    bodies: Sequence[Mapping[str, Any]],
    keys: Sequence[Sequence[tuple[str, Mapping[str, Any]]]],
    folder: Path | None,
    name: str,
    label: str,
    progress: Progress | None,
    row_errors: Callable[[dict[str, Any], int], list[dict[str, Any] | None]] | None = None,
) -> None:
    """Write each request body to ``folder``; unless ``res.dry_run``, send and record it.

    ``keys[i]`` are the ledger keys (with their candidate) of ``bodies[i]``; ``row_errors``
    parses a 2xx answer's per-row errors (Google's partial failure). Stops at the first
    request that got no answer after the retries.
    """
    for i, (body, batch_keys) in enumerate(zip(bodies, keys, strict=True), start=1):
        path = write_body(folder, f"{name}-{i:04d}.json", body)
        req: dict[str, Any] = {"url": url, "items": len(batch_keys), "file": path}
        res.requests.append(req)
        if path:
            res.files.append(path)
        if res.dry_run:
            continue
        if progress:
            progress(label, (i - 1) / len(bodies))
        reply = need_client(client).post(url, json_body=body, headers=headers)
        req.update(status=reply.status, attempts=reply.attempts)
        errs = row_errors(reply.body, len(batch_keys)) if row_errors and reply.ok else None
        if not record_reply(ws, res, res.platform, res.item, batch_keys, reply, res.test, errs):
            break


def _item(c: Mapping[str, Any], reason: str, detail: str) -> dict[str, Any]:
    return {
        "record_id": c["record_id"],
        "stage": c["stage"],
        "campaign_id": c["campaign_id"],
        "ts": c["ts"].isoformat(),
        "reason": reason,
        "detail": detail,
    }


def _auth_fix(platform: str) -> str:
    if platform == "meta":
        return (
            "Meta refused the access token (expired, revoked or lacking ads_management): "
            "create a new system-user token in Business Settings and set "
            "SIGNALLOOP_META_ACCESS_TOKEN"
        )
    return (
        "Google Ads refused the credentials: check SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN and the "
        "OAuth refresh token (SIGNALLOOP_GOOGLE_REFRESH_TOKEN, CLIENT_ID, CLIENT_SECRET), and "
        "that login_customer_id names the manager account when there is one"
    )


def record_reply(
    ws: Workspace,
    res: PushResult,
    platform: str,
    item: str,
    keys: Sequence[tuple[str, Mapping[str, Any]]],
    reply: Reply,
    test: bool,
    row_errors: Sequence[Mapping[str, Any] | None] | None = None,
) -> bool:
    """Write one request's outcome to the ledger; ``False`` when the push must stop."""
    rid = ledger.new_request_id()
    ctx: dict[str, Any] = {"platform": platform, "item": item, "request_id": rid, "test": test}

    def meta(c: Mapping[str, Any]) -> dict[str, Any]:
        return {k: c.get(k) for k in ("record_id", "stage", "campaign_id")}

    if reply.status in (401, 403):
        ledger.write(
            ws,
            [
                ledger.entry(
                    key=k,
                    status="rejected",
                    message=reply.error,
                    http_status=reply.status,
                    response=reply.body,
                    **meta(c),
                    **ctx,
                )
                for k, c in keys
            ],
        )
        raise CredentialError(_auth_fix(platform))
    if not reply.acknowledged:
        res.failed.append(
            {
                "items": len(keys),
                "status": reply.status,
                "error": reply.error,
                "attempts": reply.attempts,
            }
        )
        ledger.write(
            ws,
            [
                ledger.entry(
                    key=k,
                    status="failed",
                    message=reply.error,
                    http_status=reply.status,
                    **meta(c),
                    **ctx,
                )
                for k, c in keys
            ],
        )
        return False
    rows = []
    for i, (k, c) in enumerate(keys):
        err = row_errors[i] if row_errors is not None else None
        if reply.ok and err is None:
            rows.append(
                ledger.entry(
                    key=k,
                    status="sent",
                    http_status=reply.status,
                    response=reply.body if i == 0 else None,
                    **meta(c),
                    **ctx,
                )
            )
            res.sent += 1
            continue
        code = str(err["code"]) if err else None
        if code == "CLICK_CONVERSION_ALREADY_EXISTS":  # the platform has it: done
            rows.append(
                ledger.entry(
                    key=k,
                    status="sent",
                    code=code,
                    message=str(err.get("message")) if err else None,
                    http_status=reply.status,
                    **meta(c),
                    **ctx,
                )
            )
            res.already_sent += 1
            continue
        final = bool(err) and code not in g.RETRYABLE_ROW_ERRORS
        message = (err or {}).get("message") or reply.error
        rows.append(
            ledger.entry(
                key=k,
                status="rejected",
                final=final,
                code=code,
                message=message,
                http_status=reply.status,
                response=reply.body if i == 0 else None,
                **meta(c),
                **ctx,
            )
        )
        res.rejected.append({**meta(c), "key": k, "code": code, "message": message, "final": final})
    ledger.write(ws, rows)
    return True


# ---- Google click conversions ----------------------------------------------------------------


def google_headers(settings: Settings, client: Client) -> dict[str, str]:
    """Headers for Google Ads: developer token, OAuth access token (refreshed if need be)."""
    cfg = settings.push.google
    return google_auth_headers(
        client,
        need=lambda name, what: _credential(settings, "google", name, what),
        access_token=settings.push.credential("google", "access_token"),
        token_url=cfg.token_url,
        login_customer_id=cfg.login_customer_id,
    )


def push_google(
    ws: Workspace,
    *,
    as_of: date,
    settings: Settings | None = None,
    dry_run: bool = True,
    out: str | Path | None = None,
    now: datetime | None = None,
    outcomes: Outcomes | None = None,
    client: Client | None = None,
    progress: Progress | None = None,
) -> PushResult:
    """Click conversions (or enhanced conversions for leads) to Google Ads."""
    settings = settings or Settings()
    cfg = settings.push.google
    now = send_clock(now)
    res = PushResult("google", "click_conversion", as_of, now, dry_run)
    if not cfg.customer_id:
        raise UsageError(
            "[push.google] customer_id is not set: name the Google Ads account (10 digits) "
            "the conversions go to in signalloop.toml"
        )
    if not cfg.conversion_actions:
        raise UsageError(
            "[push.google.conversion_actions] is empty: map each CRM stage to upload to the id "
            'of a conversion action set up for imports, e.g. sql = "987654321"'
        )
    actions = {
        stage: g.conversion_action_resource(cfg.customer_id, a)
        for stage, a in cfg.conversion_actions.items()
    }
    oc = _outcomes(ws, as_of, settings, outcomes)
    if oc.missing:
        res.notes.append(oc.missing)
        return res
    cands, skipped = oc.for_platform("google")
    res.skipped = [s for s in skipped if s["stage"] in actions]
    cands = [c for c in cands if c["stage"] in actions]
    res.candidates = len(cands)
    done = ledger.done_keys(ws, "google", "click_conversion")
    convs: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    clicks: dict[str, datetime] = {}
    for c in cands:
        conv = g.build_click_conversion(
            c["record_id"],
            c["stage"],
            c["ts"],
            conversion_action=actions[c["stage"]],
            tz=cfg.time_zone,
            gclid=c["gclid"],
            email=c["email"] if cfg.enhanced else None,
            phone=c["phone"] if cfg.enhanced else None,
            value=c["value"],
            currency=cfg.currency if c["value"] is not None else None,
        )
        if conv is None:
            res.left_out.append(
                _item(c, "no_identity", "no gclid" + (", email or phone" if cfg.enhanced else ""))
            )
            continue
        if conv["orderId"] in done:
            res.already_sent += 1
            continue
        convs.append(conv)
        by_id[conv["orderId"]] = c
        if c["click_ts"] is not None:
            clicks[conv["orderId"]] = c["click_ts"]
    plan = g.plan_requests(convs, now, click_ts=clicks, click_window_days=cfg.click_window_days)
    for x in plan.left_out:
        c = by_id[x["event"]["orderId"]]
        res.left_out.append(_item(c, _google_reason(x["reasons"]), "; ".join(x["reasons"])))
    folder = Path(out) if out is not None else None
    base = f"{cfg.base_url}/{cfg.api_version}/customers/{cfg.customer_id}"
    send_batches(
        ws,
        res,
        client,
        url=f"{base}:uploadClickConversions",
        headers=None if dry_run else google_headers(settings, need_client(client)),
        bodies=[g.request_body(batch, partial_failure=True) for batch in plan.requests],
        keys=[[(cv["orderId"], by_id[cv["orderId"]]) for cv in batch] for batch in plan.requests],
        folder=folder,
        name="google-click-conversions",
        label="uploading conversions to Google Ads",
        progress=progress,
        row_errors=g.row_errors,
    )
    gclid_rows = [cv for r in plan.requests for cv in r if cv.get("gclid")]
    if folder is not None and gclid_rows:
        path = write_body(
            folder,
            "google-upload.csv",
            g.upload_csv(gclid_rows, cfg.time_zone, names=cfg.action_names),
        )
        if path:
            res.files.append(path)
    return res


def need_client(client: Client | None) -> Client:
    if client is None:
        raise UsageError("a live push needs a client")
    return client


def _google_reason(reasons: Sequence[str]) -> str:
    text = " ".join(reasons)
    for code, reason in (
        ("EXPIRED_EVENT", "click_too_old"),
        ("TOO_RECENT_EVENT", "click_too_recent"),
        ("CONVERSION_PRECEDES_EVENT", "conversion_before_click"),
    ):
        if code in text:
            return reason
    return "invalid"


TARGETS = ("meta", "google", "exclusions")


def push(
    ws: Workspace,
    target: str,
    *,
    as_of: date | None = None,
    settings: Settings | None = None,
    dry_run: bool = True,
    out: str | Path | None = None,
    now: datetime | None = None,
    outcomes: Outcomes | None = None,
    client: Client | None = None,
    progress: Progress | None = None,
) -> PushResult:
    """Run one push job by name (``meta``, ``google`` or ``exclusions``).

    ``as_of`` defaults to the last day with data; ``now`` (the send clock the platforms judge
    ages against) to the wall clock, and may only be moved for a dry run, since a platform
    judges a live send by its own clock. A live push makes its own :class:`Client` unless one
    is given.
    """
    from signalloop.checks.base import default_as_of

    if target not in TARGETS:
        raise UsageError(f"unknown push target {target!r}: expected {', '.join(TARGETS)}")
    if now is not None and not dry_run and client is None:
        raise UsageError(
            "--now moves the send clock, which only a dry run can do: the platforms judge a "
            "live send's age by their own clock"
        )
    settings = settings or Settings()
    if as_of is None:
        as_of = default_as_of(ws)
        if as_of is None:
            raise UsageError(f"workspace {ws.path} holds no data yet: ingest something first")
    own = client is None and not dry_run
    live_client = Client() if own else client
    common: dict[str, Any] = {
        "as_of": as_of,
        "settings": settings,
        "dry_run": dry_run,
        "out": out,
        "now": now,
        "client": live_client,
    }
    try:
        if target == "exclusions":
            from signalloop.push.exclusions import push_exclusions

            return push_exclusions(ws, **common)
        job = push_meta if target == "meta" else push_google
        return job(ws, outcomes=outcomes, progress=progress, **common)
    finally:
        if own and live_client is not None:
            live_client.close()


def run_pushes(
    ws: Workspace,
    *,
    as_of: date,
    settings: Settings,
    held: Mapping[str, Sequence[str]],
    out: str | Path,
    now: datetime | None = None,
    client: Client | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The pushes ``[push]`` configures, for :func:`signalloop.run.run`.

    Dry runs (bodies written to ``out``) unless ``[push] live = true``. A platform whose
    section lacks its ids is listed with what to set; a failed push (credentials, a platform
    that does not answer) is recorded with its message and does not stop the run. Lists are
    cut to their first 50 items (the counts are whole).
    """
    cfg = settings.push
    dry = not cfg.live
    targets: list[tuple[str, str | None]] = [
        ("meta", None if cfg.meta.pixel_id else "set [push.meta] pixel_id"),
        (
            "google",
            None
            if cfg.google.customer_id and cfg.google.conversion_actions
            else "set [push.google] customer_id and conversion_actions",
        ),
        ("exclusions", None if cfg.google.customer_id else "set [push.google] customer_id"),
    ]
    oc = validated_outcomes(ws, as_of=as_of, settings=settings, held=held)
    own = client is None and not dry
    live_client = Client() if own else client
    done: dict[str, Any] = {}
    try:
        for target, missing in targets:
            if missing:
                done[target] = {"status": "not configured", "message": missing}
                continue
            try:
                res = push(
                    ws,
                    target,
                    as_of=as_of,
                    settings=settings,
                    dry_run=dry,
                    out=Path(out) / target,
                    now=now,
                    outcomes=oc,
                    client=live_client,
                    progress=progress,
                )
            except (UsageError, CredentialError) as exc:
                done[target] = {"status": "error", "message": str(exc)}
                continue
            d = res.to_dict()
            for key in ("skipped", "left_out", "rejected", "failed"):
                d[key] = d[key][:50]
            d["status"] = "dry run" if dry else ("problems" if res.rejected or res.failed else "ok")
            done[target] = d
    finally:
        if own and live_client is not None:
            live_client.close()
    return {"live": not dry, "out": str(out), "targets": done}
