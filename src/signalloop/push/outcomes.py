"""Which CRM outcomes may leave: one candidate per record and stage, or the reason it may not.

A candidate is the first time a CRM record reached a funnel stage (as of a date), with the
record's campaign and platform, its identities (Meta lead id, email, phone, gclid and the
click's time) and the stage's amount. It is **validated** when none of these hold, checked in
this order (the first that applies is the reason given):

``gate_held``
    the record's campaign is held by the gate (a critical, active check: an open outage, a
    broken tracking setup): its outcomes are not trustworthy now;
``stage_regression``
    the record's stages went backwards or were overwritten (the ``stage_regression`` rule of
    :func:`signalloop.checks.core.stage_flags`): which stage it "reached" is not known;
``duplicate``
    an earlier record has the same Meta lead id, or the same email, phone, person (user_id)
    or click (gclid) and began at most :data:`DUPLICATE_WINDOW` before it (a double
    submission, a sync re-creating the contact): sending both would count one lead twice;
``crm_dropout``
    the stage change falls inside a CRM-sync dropout window of its campaign (stored by the
    ``integration_dropout`` check): the CRM's record of that window is incomplete;
``unattributed``
    no conversion or touchpoint ties the record to a campaign, so no gate can vouch for it.

Identities come from the CRM rows' attributes; which attribute holds which identity is
configurable (``[push.fields]``, defaults matching HubSpot and Salesforce exports). A Google
campaign's gclid comes from a ``gclid`` attribute, else from the person's last click on a Google
campaign before the record began (the touchpoint's ``click_id``), else from their conversion's
``click_id``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import ibis

from signalloop.attribution import crm_record_campaigns
from signalloop.checks.core import funnel_ranks, stage_flags
from signalloop.config import Settings
from signalloop.push.meta import lead_id as meta_lead_id
from signalloop.push.meta import normalize
from signalloop.push.settings import GOOGLE_PLATFORMS, META_PLATFORMS, field_key
from signalloop.store import Workspace
from signalloop.ties import first_by, last_by

#: How close in time two records of the same email or phone must begin to be one lead twice
#: (a double submission, a sync re-creating a contact); a person who comes back later is a new
#: lead. The same Lead Ads id is one submission whenever it appears.
DUPLICATE_WINDOW = timedelta(hours=24)
#: Skip reasons, in the order they are tested.
REASONS = ("gate_held", "stage_regression", "duplicate", "crm_dropout", "unattributed")


@dataclass
class Outcomes:
    """Validated candidates and the skipped ones, as of a date."""

    as_of: date
    candidates: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    #: campaign -> the checks holding its gate.
    held: dict[str, list[str]] = field(default_factory=dict)
    #: identity -> the attribute it was read from (``None``: no such attribute in the CRM).
    fields: dict[str, str | None] = field(default_factory=dict)
    #: What is missing for a push at all (no CRM rows), with the export that fixes it.
    missing: str | None = None

    def for_platform(self, platform: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Candidates and skipped items of one platform (``meta`` or ``google``)."""
        return (
            [c for c in self.candidates if c["platform"] == platform],
            [s for s in self.skipped if s["platform"] == platform],
        )


def platform_of(raw: str | None) -> str | None:
    """``meta``, ``google`` or ``None`` for a campaign's platform value.

    >>> platform_of("Facebook"), platform_of("google"), platform_of("linkedin")
    ('meta', 'google', None)
    """
    if raw is None:
        return None
    v = raw.strip().lower()
    if v in META_PLATFORMS:
        return "meta"
    if v in GOOGLE_PLATFORMS:
        return "google"
    return None


def campaign_platforms(ws: Workspace) -> dict[str, str | None]:
    """Campaign -> ``meta``, ``google`` or ``None``, from the spend export (else the clicks).

    The clicks are counted from the per-day rollup of the touchpoints, not their history."""
    from signalloop import rollups

    out: dict[str, str | None] = {}
    # (touch_daily's n counts touchpoints; spend is counted by its rows)
    for t, rolled in ((rollups.table(ws, "touch_daily"), True), (ws.table("spend"), False)):
        t = t.filter(t.campaign_id.notnull() & t.platform.notnull())  # spend wins: it is last
        n = t.n.sum() if rolled else t.count()
        counts = t.group_by("campaign_id", "platform").aggregate(n=n).to_pyarrow()
        # each campaign's most frequent platform (ties: the first by name); counted on the
        # backend, picked here (not every backend has a mode aggregate)
        best: dict[str, tuple[int, str]] = {}
        for r in counts.to_pylist():
            key = (-int(r["n"]), str(r["platform"]))
            if r["campaign_id"] not in best or key < best[r["campaign_id"]]:
                best[r["campaign_id"]] = key
        out |= {c: platform_of(p) for c, (_, p) in best.items()}
    return out


def _attr_keys(crm: Any, fields_: Mapping[str, Sequence[str]]) -> dict[str, str | None]:
    """identity -> the attribute key present in the CRM rows that holds it."""
    from signalloop.models.features import _attr_keys as keys_of  # each backend's own SQL

    present = keys_of(crm.filter(crm.attrs.notnull()))
    by_norm: dict[str, str] = {}
    for k in sorted(present):
        by_norm.setdefault(field_key(k), k)
    out: dict[str, str | None] = {}
    for identity, names in fields_.items():
        out[identity] = next(
            (by_norm[field_key(n)] for n in names if field_key(n) in by_norm), None
        )
    return out


def _attr_text(t: Any, key: str) -> Any:
    if ibis.get_backend(t).name == "pyspark":
        from signalloop.models.features import spark_json_text

        return spark_json_text(t, key)
    v = t.attrs.map[key]
    return ibis.coalesce(v.str, v.int.cast("string"), v.float.cast("string"))


def _clicks(ws: Workspace, rec: Any, cutoff: datetime, google: Sequence[str]) -> Any:
    """``(record_id, gclid, click_ts)``: the person's last Google click before the record."""
    tp = ws.table("touchpoints")
    tp = tp.filter(
        (tp.ts < cutoff)
        & tp.click_id.notnull()
        & tp.user_id.notnull()
        & tp.campaign_id.isin(list(google))
    ).select(t_user=tp.user_id, t_ts=tp.ts, t_click=tp.click_id)
    by_touch = (
        rec.join(tp, (rec.user_id == tp.t_user) & (tp.t_ts <= rec.first_ts))
        .group_by(tk_record="record_id")
        .aggregate(tk_gclid=last_by(tp.t_click, tp.t_ts), tk_ts=tp.t_ts.max())
    )
    conv = ws.table("conversions")
    conv = conv.filter(
        (conv.ts < cutoff)
        & conv.click_id.notnull()
        & conv.user_id.notnull()
        & conv.campaign_id.isin(list(google))
    )
    cts = conv.click_ts if "click_ts" in conv.columns else ibis.null("timestamp")
    conv = conv.select(c_user=conv.user_id, c_ts=conv.ts, c_click=conv.click_id, c_cts=cts)
    by_conv = (
        rec.join(
            conv,
            (rec.user_id == conv.c_user) & (conv.c_ts <= rec.first_ts + ibis.interval(hours=1)),
        )
        .group_by(cv_record="record_id")
        .aggregate(
            cv_gclid=last_by(conv.c_click, conv.c_ts),
            cv_ts=last_by(conv.c_cts, conv.c_ts, conv.c_click),
        )
    )
    j = (
        rec.select("record_id")
        .left_join(by_touch, rec.record_id == by_touch.tk_record)
        .left_join(by_conv, rec.record_id == by_conv.cv_record)
    )
    return j.select(
        c_record=j.record_id,
        click_gclid=ibis.coalesce(j.tk_gclid, j.cv_gclid),
        click_ts=ibis.cases((j.tk_gclid.notnull(), j.tk_ts), else_=j.cv_ts),
    )


def _identity_keys(c: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every identity of a record usable to spot the same person twice."""
    keys: list[tuple[str, str]] = []
    lid = meta_lead_id(c.get("lead_id"))
    if lid is not None:
        keys.append(("lead_id", str(lid)))
    for name, f in (("email", "em"), ("phone", "ph")):
        n = normalize(f, c.get(name))
        if n is not None:
            keys.append((name, hashlib.sha256(n.encode()).hexdigest()))
    if c.get("r_user"):
        keys.append(("user_id", str(c["r_user"])))
    gclid = c.get("gclid") or c.get("click_gclid")
    if gclid:
        keys.append(("gclid", str(gclid)))
    return keys


def _dropouts(ws: Workspace) -> dict[str, list[tuple[date, date]]]:
    from signalloop.checks.engine import load_exclusions

    out: dict[str, list[tuple[date, date]]] = {}
    for e in load_exclusions(ws):
        if str(e["reason"]).startswith("crm_sync_dropout"):
            end = date.fromisoformat(e["end"]) if e["end"] else date.max
            out.setdefault(e["campaign_id"], []).append((date.fromisoformat(e["start"]), end))
    return out


def validated_outcomes(
    ws: Workspace,
    *,
    as_of: date,
    settings: Settings | None = None,
    held: Mapping[str, Sequence[str]] | None = None,
    stages: Sequence[str] | None = None,
) -> Outcomes:
    """The CRM outcomes that may be sent as of ``as_of``, and those that may not, with why.

    Parameters
    ----------
    ws
        The workspace.
    as_of
        Stage changes up to the end of this day count.
    settings
        Funnel order and ``[push.fields]``.
    held
        Campaign -> checks holding its gate (a run passes its own); ``None`` runs the checks.
    stages
        Stages to consider (default: the funnel's; ``lost`` is never an outcome to send).
    """
    settings = settings or Settings()
    cutoff = datetime.combine(as_of + timedelta(days=1), datetime.min.time())
    out = Outcomes(as_of)
    crm = ws.table("crm")
    crm = crm.filter(crm.ts < cutoff)
    if crm.count().execute() == 0:
        out.missing = (
            "no CRM stage changes: export the CRM's lifecycle stage history as the crm kind "
            "(record_id, stage, ts, user_id, with email / phone / lead id columns) and ingest it"
        )
        return out
    if held is None:
        from signalloop.checks import run_checks

        report = run_checks(ws, as_of=as_of, settings=settings)
        held = {c["campaign_id"]: c["reasons"] for c in report.campaigns if c["gate"] == "hold"}
    out.held = {k: list(v) for k, v in held.items()}
    funnel = list(settings.funnel)
    wanted = [s for s in (stages or funnel) if s in funnel]
    out.fields = _attr_keys(crm, settings.push.fields)

    # one row per record: its person, start, campaign and identities
    ident = {
        name: _attr_text(crm, key).max() if key else ibis.null("string")
        for name, key in out.fields.items()
    }
    per_rec = crm.group_by("record_id").aggregate(
        r_user=crm.user_id.arbitrary(), r_first=crm.ts.min(), **ident
    )
    rec_campaign = crm_record_campaigns(ws, cutoff)
    platforms = campaign_platforms(ws)
    google = [c for c, p in platforms.items() if p == "google"]
    base = per_rec.select("record_id", user_id="r_user", first_ts="r_first")
    clicks = _clicks(ws, base, cutoff, google) if google else None

    ev = crm.filter(crm.stage.isin(wanted))
    ev = ev.group_by(["record_id", "stage"]).aggregate(
        ts=ev.ts.min(), amount=first_by(ev.amount, ev.ts)
    )
    j = ev.join(per_rec, "record_id").left_join(
        rec_campaign.select(rc_record="record_id", campaign_id="campaign_id"),
        ev.record_id == rec_campaign.record_id,
    )
    if clicks is not None:
        j = j.left_join(clicks, j.record_id == clicks.c_record)
    rows = j.to_pyarrow().to_pylist()

    flags = stage_flags(crm, "record_id", "stage", "ts", funnel_ranks(funnel))
    bad = {
        r["record_id"]: r
        for r in flags.filter((flags.backwards > 0) | (flags.overwritten > 0))
        .to_pyarrow()
        .to_pylist()
    }
    dropouts = _dropouts(ws)

    # duplicates: a record whose Lead Ads id an earlier record has, or whose email, phone,
    # person or click the latest earlier record of them has, begun at most DUPLICATE_WINDOW
    # before it
    latest: dict[tuple[str, str], tuple[datetime, str]] = {}
    first_of: dict[str, tuple[str, str]] = {}
    seen_rec: set[str] = set()
    for r in sorted(rows, key=lambda x: (x["r_first"], x["record_id"])):
        if r["record_id"] in seen_rec:
            continue
        seen_rec.add(r["record_id"])
        keys = _identity_keys(r)
        for key in keys:
            prev = latest.get(key)
            if prev is not None and (
                key[0] == "lead_id" or r["r_first"] - prev[0] <= DUPLICATE_WINDOW
            ):
                first_of[r["record_id"]] = (prev[1], key[0])
                break
        for key in keys:  # a series of copies, each within the window of the last, is one lead
            latest[key] = (r["r_first"], r["record_id"])

    order = {s: i for i, s in enumerate(funnel)}
    for r in sorted(rows, key=lambda x: (x["record_id"], order.get(x["stage"], 99))):
        cid = r["campaign_id"]
        platform = platforms.get(cid) if cid else None
        if platform is None and cid is None and meta_lead_id(r.get("lead_id")) is not None:
            platform = "meta"  # a Lead Ads id says where the lead came from
        gclid = r.get("gclid") or r.get("click_gclid")
        item = {
            "record_id": r["record_id"],
            "stage": r["stage"],
            "ts": r["ts"].replace(tzinfo=UTC),
            "campaign_id": cid,
            "platform": platform,
            "user_id": r["r_user"],
            "value": None if r["amount"] is None else float(r["amount"]),
            "email": r.get("email"),
            "phone": r.get("phone"),
            "lead_id": r.get("lead_id"),
            "gclid": gclid,
            "click_ts": (
                r["click_ts"].replace(tzinfo=UTC)
                if gclid and not r.get("gclid") and r.get("click_ts")
                else None
            ),
        }
        reason, detail = _why(item, out.held, bad, first_of, dropouts)
        if reason is None:
            out.candidates.append(item)
        else:
            out.skipped.append(
                {k: item[k] for k in ("record_id", "stage", "campaign_id", "platform")}
                | {"ts": item["ts"].isoformat(), "reason": reason, "detail": detail}
            )
    return out


def _why(
    item: Mapping[str, Any],
    held: Mapping[str, Sequence[str]],
    bad: Mapping[str, Mapping[str, Any]],
    first_of: Mapping[str, tuple[str, str]],
    dropouts: Mapping[str, list[tuple[date, date]]],
) -> tuple[str | None, str | None]:
    cid, rid = item["campaign_id"], item["record_id"]
    if cid is not None and cid in held:
        return "gate_held", f"campaign {cid} is held by {', '.join(held[cid]) or 'the gate'}"
    if rid in bad:
        b = bad[rid]
        return "stage_regression", (
            f"stages went backwards {b['backwards']} time(s), overwritten {b['overwritten']} "
            f"time(s), last at {b['last_bad']}"
        )
    if rid in first_of:
        orig, how = first_of[rid]
        return "duplicate", f"same {how} as record {orig}, which came first"
    day = item["ts"].date()
    for start, end in dropouts.get(cid or "", []):
        if start <= day <= end:
            shown = "open" if end == date.max else end.isoformat()
            return "crm_dropout", f"inside the CRM sync dropout {start.isoformat()}..{shown}"
    if cid is None:
        return "unattributed", (
            "no conversion or touchpoint ties this record to a campaign: ingest the clicks "
            "(touchpoints with user_id) or conversions with user_id"
        )
    return None, None
