"""Outage windows to Google Ads bidding data exclusions (``signalloop push exclusions``).

Each stored outage window (``signalloop check`` and ``run`` store what the
``integration_dropout`` check finds) of a Google campaign becomes an exclusion of scope
CAMPAIGN: its start moved back by the campaign's measured median click-to-conversion delay (the
account's when the campaign has too few measured delays; unmoved, and said, when there are
none), so the clicks whose conversions were lost are covered; split into pieces of at most 14
days on the account's clock; keyed by the window's campaign, stored start and piece, so a
re-run sends nothing twice and an outage still open when the next run comes is extended by an
``update`` of the same exclusion, never a second copy (and a window later cut into fewer pieces
has the pieces beyond removed); at most 500 active per account.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from signalloop.config import Settings
from signalloop.errors import UsageError
from signalloop.push import google as g
from signalloop.push import ledger
from signalloop.push.client import Client
from signalloop.push.send import (
    PushResult,
    google_headers,
    need_client,
    record_reply,
    send_clock,
    write_body,
)
from signalloop.store import Workspace


def median_delays(ws: Workspace, cutoff: datetime) -> dict[str, timedelta]:
    """Measured median click-to-conversion delay per campaign (conversions with a click time)."""
    conv = ws.table("conversions")
    if "click_ts" not in conv.columns:
        return {}
    conv = conv.filter(conv.click_ts.notnull() & conv.campaign_id.notnull() & (conv.ts < cutoff))
    secs = conv.ts.epoch_seconds() - conv.click_ts.epoch_seconds()
    conv = conv.mutate(secs=secs).filter(lambda t: t.secs >= 0)
    rows = (
        conv.group_by("campaign_id")
        .aggregate(med=conv.secs.median(), n=conv.count())
        .to_pyarrow()
        .to_pylist()
    )
    return {r["campaign_id"]: timedelta(seconds=float(r["med"])) for r in rows if r["n"] >= 5}


def push_exclusions(
    ws: Workspace,
    *,
    as_of: date,
    settings: Settings | None = None,
    dry_run: bool = True,
    out: str | Path | None = None,
    now: datetime | None = None,
    client: Client | None = None,
    platforms: Mapping[str, str | None] | None = None,
) -> PushResult:
    """Stored outage windows to Google Ads bidding data exclusions (idempotent)."""
    from signalloop.checks.engine import load_exclusions
    from signalloop.push.outcomes import campaign_platforms

    settings = settings or Settings()
    cfg = settings.push.google
    now = send_clock(now)
    res = PushResult("google", "exclusion", as_of, now, dry_run)
    if not cfg.customer_id:
        raise UsageError(
            "[push.google] customer_id is not set: name the Google Ads account (10 digits) "
            "the exclusions go to in signalloop.toml"
        )
    plat = platforms if platforms is not None else campaign_platforms(ws)
    windows = load_exclusions(ws)
    if not windows:
        res.notes.append(
            "no outage windows are stored: signalloop check (or run) stores the windows the "
            "integration_dropout check finds"
        )
    cutoff = datetime.combine(as_of + timedelta(days=1), time.min)
    delays = median_delays(ws, cutoff)
    account = sorted(delays.values())
    fallback = account[len(account) // 2] if account else None
    headers = None if dry_run else google_headers(settings, need_client(client))
    if headers is not None:  # what the account already holds of ours (a lost answer, ledger)
        adopt_existing(ws, need_client(client), headers, settings)
    sent = ledger.sent_exclusions(ws)
    ops: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for w in windows:
        cid = w["campaign_id"]
        info = {"record_id": None, "stage": None, "campaign_id": cid}
        if plat.get(cid) != "google":
            res.skipped.append(
                {
                    **info,
                    "reason": "not_google",
                    "detail": f"{cid} is not a Google Ads campaign",
                    "window": [w["start"], w["end"]],
                }
            )
            continue
        gid = cfg.campaign_id(cid)
        if gid is None:
            res.skipped.append(
                {
                    **info,
                    "reason": "no_google_id",
                    "detail": f"no Google campaign id for {cid}: add "
                    f'[push.google.campaigns] {cid} = "<id>"',
                    "window": [w["start"], w["end"]],
                }
            )
            continue
        start = datetime.combine(date.fromisoformat(w["start"]), time.min)
        end_day = date.fromisoformat(w["end"]) if w["end"] else as_of
        end = datetime.combine(end_day, time(23, 59, 59))
        delay = delays.get(cid, fallback)
        if delay is None:
            res.notes.append(
                f"{cid}: no measured click-to-conversion delay; its window starts unshifted"
            )
        shifted = g.shift_start(start, delay)
        pieces = g.exclusion_windows(shifted, end, tz=cfg.time_zone)
        for k, (s, e) in enumerate(pieces):
            key = g.exclusion_key(cid, w["start"], k)
            body = g.build_exclusion(
                cfg.customer_id,
                gid,
                s,
                e,
                tz=cfg.time_zone,
                name=f"signalloop {key}",
                description=f"{w['reason']} (start moved back {delay or timedelta(0)} "
                "for the conversion delay)",
            )
            prev = sent.get(key)
            if prev and prev.get("removed"):
                prev = None
            detail = {
                "start": body["startDateTime"],
                "end": body["endDateTime"],
                "window": [w["start"], w["end"]],
            }
            if prev and prev.get("start") == detail["start"] and prev.get("end") == detail["end"]:
                res.already_sent += 1
                continue
            op: dict[str, Any]
            if prev:
                op = {
                    "update": {**body, "resourceName": prev["resource"]},
                    "updateMask": "startDateTime,endDateTime,description",
                }
            else:
                op = {"create": body}
            res.candidates += 1
            ops.append((key, op, {**info, "detail": detail}))
        # a window now cut into fewer pieces (a shorter outage, a shorter delay): the pieces
        # beyond are removed, not left behind
        k = len(pieces)
        while (key := g.exclusion_key(cid, w["start"], k)) in sent:
            if not sent[key].get("removed"):
                res.candidates += 1
                gone = {"removed": True, "window": [w["start"], w["end"]]}
                ops.append((key, {"remove": sent[key]["resource"]}, {**info, "detail": gone}))
            k += 1
    local_now = g.conversion_date_time(now, cfg.time_zone)[:19]  # the account's wall clock
    active = sum(
        1 for v in sent.values() if not v.get("removed") and str(v.get("end", "")) >= local_now
    )
    room = max(0, g.MAX_ACTIVE_EXCLUSIONS - active)
    creates = [o for o in ops if "create" in o[1]]
    if len(creates) > room:
        dropped = {
            id(o)
            for o in sorted(creates, key=lambda o: o[1]["create"]["startDateTime"])[
                : len(creates) - room
            ]
        }
        for o in creates:
            if id(o) in dropped:
                res.left_out.append(
                    {
                        **o[2],
                        "key": o[0],
                        "reason": "account_limit",
                        "detail": f"{g.MAX_ACTIVE_EXCLUSIONS} active exclusions is Google's limit",
                    }
                )
        ops = [o for o in ops if id(o) not in dropped]
    folder = Path(out) if out is not None else None
    url = (
        f"{cfg.base_url}/{cfg.api_version}/customers/{cfg.customer_id}/biddingDataExclusions:mutate"
    )
    for i, (key, op, info) in enumerate(ops, start=1):
        body = {"operations": [op], "partialFailure": False}
        problems = [] if "remove" in op else g.exclusion_problems(op.get("create") or op["update"])
        if problems:
            res.left_out.append(
                {**info, "key": key, "reason": "invalid", "detail": "; ".join(problems)}
            )
            continue
        path = write_body(folder, f"google-exclusion-{i:04d}.json", body)
        req: dict[str, Any] = {
            "url": url,
            "items": 1,
            "file": path,
            "key": key,
            "op": next(iter(op)),
        }
        res.requests.append(req)
        if path:
            res.files.append(path)
        if dry_run:
            continue
        reply = need_client(client).post(
            url, json_body=body, headers=headers, retry_network="create" not in op
        )
        req.update(status=reply.status, attempts=reply.attempts)
        if reply.ok:
            results = reply.body.get("results") or [{}]
            resource = (
                results[0].get("resourceName")
                or (op.get("update") or {}).get("resourceName")
                or op.get("remove")
            )
            ledger.write(
                ws,
                [
                    ledger.entry(
                        "google",
                        "exclusion",
                        key,
                        status="sent",
                        request_id=ledger.new_request_id(),
                        campaign_id=info["campaign_id"],
                        resource=resource,
                        detail=info["detail"],
                        http_status=reply.status,
                        response=reply.body,
                    )
                ],
            )
            res.sent += 1
        elif not record_reply(ws, res, "google", "exclusion", [(key, info)], reply, False):
            break
    return res


#: Exclusions signalloop made are named ``signalloop <key>``.
NAME_PREFIX = "signalloop sl-excl-"


def adopt_existing(
    ws: Workspace, client: Client, headers: Mapping[str, str], settings: Settings
) -> int:
    """Record in the ledger the exclusions of ours the account holds that it does not know.

    A create whose answer was lost (the connection dropped after Google acted), or a ledger
    that was lost with its workspace, would otherwise send a second copy. One
    ``googleAds:search`` (paged) lists the account's exclusions named ``signalloop sl-excl-...``;
    each one the ledger lacks is written as sent. Returns how many were adopted.
    """
    cfg = settings.push.google
    url = f"{cfg.base_url}/{cfg.api_version}/customers/{cfg.customer_id}/googleAds:search"
    query = (
        "SELECT bidding_data_exclusion.resource_name, bidding_data_exclusion.name, "
        "bidding_data_exclusion.start_date_time, bidding_data_exclusion.end_date_time, "
        "bidding_data_exclusion.status FROM bidding_data_exclusion "
        f"WHERE bidding_data_exclusion.name LIKE '{NAME_PREFIX}%'"
    )
    known = ledger.sent_exclusions(ws)
    adopted, token = [], None
    while True:
        body: dict[str, Any] = {"query": query}
        if token:
            body["pageToken"] = token
        reply = client.post(url, json_body=body, headers=headers)
        if not reply.ok:
            return 0  # the account cannot be listed now: the ledger alone decides
        for row in reply.body.get("results", []):
            x = row.get("biddingDataExclusion", {})
            key = str(x.get("name", ""))[len("signalloop ") :]
            if x.get("status") == "REMOVED" or not key:
                continue
            mine = known.get(key)
            if mine and mine.get("resource") == x.get("resourceName") and not mine.get("removed"):
                continue
            adopted.append(
                ledger.entry(
                    "google",
                    "exclusion",
                    key,
                    status="sent",
                    request_id=ledger.new_request_id(),
                    resource=x.get("resourceName"),
                    code="ADOPTED",
                    message="found in the account, not in the ledger",
                    detail={"start": x.get("startDateTime"), "end": x.get("endDateTime")},
                )
            )
        token = reply.body.get("nextPageToken")
        if not token:
            break
    return ledger.write(ws, adopted)
