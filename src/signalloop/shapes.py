"""What this workspace can learn from: its data shape per campaign, and each capability's basis.

Real accounts arrive partial: a platform export alone (with the platform's own conversion
counts), spend plus orders or deals with no click log, a CRM without clicks. Every capability
of signalloop uses what exists; this module says, per campaign, which **layers** of data
exist and, per capability, what it can use, what it has to leave out and which export would
unlock the rest, so that nothing is a silent zero, a silent even split or a silent skip.

Layers (per campaign, counted with ibis over the workspace cut at the as-of day):

* ``spend`` -- delivery rows; ``daily`` -- on at least :data:`MIN_DAILY_DAYS` distinct days
  (a one-period export stamped with one date is not a history); ``platform_conversions`` --
  the rows carry the platform's own conversion count (above zero somewhere); ``adset`` /
  ``creative`` -- rows at ad-set level or with a creative id;
* ``conversions`` -- first-party conversions attributed to it (the contract's rule);
  ``click_ts`` -- of which with a click time (their own ``click_ts`` or their click's);
  ``value`` -- with a value;
* ``touchpoints`` -- click-level touchpoints; ``click_ids`` -- of which with a click id;
* ``crm`` -- CRM records linked to it; ``changes`` -- edit-log rows about it, its ad sets or ads.

A campaign's **shape** names the richest contract layer it has, as the simulator writes them
(:data:`signalloop.simulate.SHAPES`): ``spend`` (spend only), ``spend_conversions`` (spend and
first-party conversions, no touchpoints), ``crm`` (with CRM records, no touchpoints) and
``full`` (click-level touchpoints too). ``platform_conversions`` and ``changes`` are reported
beside it.

Capabilities are data (:data:`CAPABILITIES`): each is an ordered list of :class:`Basis`, best
first; a basis names the layers it needs and what it uses. Per campaign the first basis whose
layers all exist is the one used; the layers of the better bases that are missing say what
is left out and which export (:data:`UNLOCK`) would unlock it.

>>> from signalloop.store import Workspace
>>> learnable(Workspace(":memory:"))["campaigns"]
[]
>>> shape_of({"spend", "conversions", "crm"})
'crm'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from signalloop.store import Workspace

#: Days of spend a campaign needs before day-by-day estimates (fatigue, uptime, learning
#: state per 7 days) mean anything; a one-period export stamped with one date has 1.
MIN_DAILY_DAYS = 7

#: Shapes from the least to the most data (the simulator's names).
SHAPES: tuple[str, ...] = ("spend", "spend_conversions", "crm", "full")

#: Layer -> the export that provides it (what to send to unlock a capability).
UNLOCK: dict[str, str] = {
    "spend": "a spend export (date, platform, campaign_id, impressions, clicks, spend)",
    "platform_conversions": "the platform's conversion counts in the spend export "
    "(platform_conversions, e.g. Meta's Results or Google Ads' Conversions column)",
    "daily": "a daily breakdown of the spend export (one row per day, e.g. Meta's "
    "'Breakdown: Day' or Google Ads' segments.date) covering at least "
    f"{MIN_DAILY_DAYS} days, not one total per period",
    "adset": "spend at ad-set level (adset_id in the spend export)",
    "creative": "spend at ad or creative level (creative_id or ad_id in the spend export)",
    "conversions": "first-party conversions (conversions: conversion_id, ts, kind, with "
    "campaign_id or click_id) from the site, app or CRM",
    "click_ts": "the click time on each conversion (click_ts in the conversions export), or "
    "click-level touchpoints with click_id",
    "value": "the value of each conversion (value in the conversions export, or the CRM "
    "amount of won deals)",
    "touchpoints": "click-level touchpoints (touchpoints: touch_id, ts, user_id, campaign_id, "
    "click_id, UTM tags) from the site's analytics or the click log",
    "click_ids": "click ids on the touchpoints and the conversions (gclid / fbclid kept "
    "through redirects and forms)",
    "crm": "CRM lifecycle stages (crm: record_id, stage, ts, user_id) from HubSpot, "
    "Salesforce or similar",
    "changes": "the edit log (changes: ts, level, entity_id, field, actor), e.g. Meta's "
    "activity log or Google Ads' change history",
}

#: What each layer is, in words (for the "left out" notes).
LAYER_NAMES: dict[str, str] = {
    "spend": "spend",
    "platform_conversions": "platform-reported conversions",
    "daily": "daily spend history",
    "adset": "ad-set level spend",
    "creative": "creative or ad ids in spend",
    "conversions": "first-party conversions",
    "click_ts": "click times on conversions",
    "value": "conversion values",
    "touchpoints": "click-level touchpoints",
    "click_ids": "click ids",
    "crm": "CRM records",
    "changes": "the edit log",
}


@dataclass(frozen=True)
class Basis:
    """One way a capability can work: the layers it needs and what it then uses."""

    name: str
    needs: tuple[str, ...]
    uses: str


@dataclass(frozen=True)
class Capability:
    """A capability and its bases, best first (the first whose layers all exist is used)."""

    name: str
    description: str
    bases: tuple[Basis, ...]
    #: what the capability does when no basis applies
    otherwise: str


#: Every capability, in the order of the loop.
CAPABILITIES: tuple[Capability, ...] = (
    Capability(
        "conversion_volume",
        "conversions per 7 days against the learning threshold (the gate's volume)",
        (
            Basis("first_party", ("conversions",), "first-party conversions"),
            Basis(
                "platform_reported",
                ("platform_conversions",),
                "platform-reported conversions (platforms over-count: labelled as such)",
            ),
        ),
        "no conversions of any kind: volume cannot be judged",
    ),
    Capability(
        "attribution_accuracy",
        "share of conversions joined to their click by click id, per campaign and week",
        (
            Basis(
                "click_ids",
                ("conversions", "touchpoints", "click_ids"),
                "click-id match of conversions to touchpoints",
            ),
        ),
        "not measured: nothing to match conversions to",
    ),
    Capability(
        "utm_hygiene",
        "UTM naming on the clicks",
        (Basis("touchpoints", ("touchpoints",), "UTM tags of the touchpoints"),),
        "not checked: no click log carries UTM tags",
    ),
    Capability(
        "integration_uptime",
        "daily arrival of conversion events against their expected rate (outage windows)",
        (Basis("first_party", ("conversions",), "first-party conversions per day"),),
        "not measured: no first-party conversion events arrive (the platform's own counts "
        "are not checked for outages)",
    ),
    Capability(
        "nowcast",
        "conversions recent clicks will still bring (delay correction of CPA and ROAS)",
        (
            Basis(
                "touchpoints",
                ("conversions", "touchpoints"),
                "click-level cohorts from the touchpoints",
            ),
            Basis(
                "click_ts",
                ("conversions", "click_ts"),
                "cohorts of the spend export's daily clicks, delays from click_ts",
            ),
            Basis(
                "conversion_day",
                ("conversions",),
                "conversions by day, corrected with the account's pooled delay",
            ),
        ),
        "nothing to correct: no first-party conversions",
    ),
    Capability(
        "learning_phase",
        "learning / learning-limited / stable per ad set, and the edits that reset it",
        (
            Basis(
                "ad_sets_with_edits",
                ("adset", "conversions", "changes"),
                "first-party conversions per ad set and the edit log",
            ),
            Basis(
                "first_party",
                ("conversions",),
                "first-party conversions (resets not counted without the edit log)",
            ),
            Basis(
                "platform_reported",
                ("daily", "platform_conversions"),
                "platform-reported conversions over at least 7 days of spend (resets not "
                "counted without the edit log)",
            ),
        ),
        "the learning state is unknown (see what is left out)",
    ),
    Capability(
        "creative_fatigue",
        "CTR decay per creative and creative starvation",
        (
            Basis(
                "creatives",
                ("creative", "daily"),
                "daily impressions and clicks per creative",
            ),
        ),
        "not measured (see what is left out)",
    ),
    Capability(
        "conversion_model",
        "calibrated conversion probabilities from click-level signals",
        (
            Basis(
                "clicks",
                ("touchpoints", "conversions"),
                "click-level features and their conversions",
            ),
        ),
        "no conversion model: it learns from click-level signals",
    ),
    Capability(
        "lead_quality_model",
        "probability that a lead becomes an SQL",
        (
            Basis(
                "leads",
                ("touchpoints", "conversions", "crm"),
                "leads' click-level features and their CRM stages",
            ),
        ),
        "no lead-quality model",
    ),
    Capability(
        "allocation",
        "tomorrow's budget per campaign",
        (
            Basis(
                "first_party",
                ("conversions",),
                "first-party conversions, delay-corrected",
            ),
            Basis(
                "platform_reported",
                ("platform_conversions",),
                "platform-reported conversions, with a wider prior",
            ),
            Basis(
                "spend_only",
                ("spend",),
                "no outcome data: even split within the daily change limit",
            ),
        ),
        "not allocated: the campaign has no spend",
    ),
    Capability(
        "feedback_depth",
        "how deep the outcomes reach (click, lead, pipeline, revenue)",
        (
            Basis("pipeline", ("conversions", "crm"), "CRM stages linked to the conversions"),
            Basis("conversions", ("conversions",), "conversions only: stops short of pipeline"),
            Basis(
                "platform",
                ("platform_conversions",),
                "the platform's conversions only: stops at what the pixel sees",
            ),
        ),
        "clicks only",
    ),
    Capability(
        "override_accounting",
        "who edited what (people, rules, the API) and what each reset cost",
        (Basis("edit_log", ("changes",), "the edit log with actors"),),
        "not counted: no edit log",
    ),
    Capability(
        "audience_bias",
        "whether known users crowd out new ones",
        (
            Basis(
                "users",
                ("touchpoints", "conversions"),
                "users' clicks and their earlier conversions",
            ),
        ),
        "not measured: it needs clicks with user ids and their conversions",
    ),
)

#: Capability name -> spec.
REGISTRY: dict[str, Capability] = {c.name: c for c in CAPABILITIES}


def shape_of(layers: set[str] | frozenset[str]) -> str:
    """The shape name of a set of present layers (see the module docstring).

    >>> shape_of({"spend", "platform_conversions"}), shape_of({"spend", "touchpoints"})
    ('spend', 'full')
    """
    if "touchpoints" in layers:
        return "full"
    if "crm" in layers:
        return "crm"
    if "conversions" in layers:
        return "spend_conversions"
    return "spend"


def resolve(capability: Capability, layers: set[str] | frozenset[str]) -> dict[str, Any]:
    """Which basis of ``capability`` a campaign with ``layers`` gets, and what it misses.

    Returns ``basis`` (name, or ``None``), ``uses``, ``status`` (``full`` for the best basis,
    ``partial`` for a later one, ``unavailable``), ``missing`` (the names of the layers the
    better bases need) and ``unlock`` (the exports that provide them).

    >>> r = resolve(REGISTRY["nowcast"], {"spend", "conversions"})
    >>> r["basis"], r["status"], r["missing"]
    ('conversion_day', 'partial', ['touchpoints', 'click_ts'])
    """
    missing: list[str] = []
    for i, basis in enumerate(capability.bases):
        absent = [n for n in basis.needs if n not in layers]
        if not absent:
            return {
                "basis": basis.name,
                "uses": basis.uses,
                "status": "full" if i == 0 else "partial",
                "missing": missing,
                "unlock": [UNLOCK[m] for m in missing],
            }
        missing.extend(n for n in absent if n not in missing)
    return {
        "basis": None,
        "uses": capability.otherwise,
        "status": "unavailable",
        "missing": missing,
        "unlock": [UNLOCK[m] for m in missing],
    }


def _rows(expr: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = expr.to_pyarrow().to_pylist()
    return out


def _layer_counts(
    ws: Workspace, as_of: date, kinds: Mapping[str, int]
) -> dict[str, dict[str, int]]:
    """Per campaign, the row counts behind each layer (small results, computed with ibis);
    ``kinds`` the workspace's rows per kind (a kind with none is not queried)."""
    from signalloop import rollups
    from signalloop.attribution import attributed_conversions, click_time, crm_record_campaigns

    cutoff = datetime.combine(as_of + timedelta(days=1), datetime.min.time())
    counts: dict[str, dict[str, int]] = {}

    def put(cid: Any, **kv: Any) -> None:
        if cid is None:
            return
        row = counts.setdefault(str(cid), {})
        for k, v in kv.items():
            row[k] = row.get(k, 0) + int(v or 0)

    sp = ws.table("spend")
    sp = sp.filter(sp.date <= as_of)
    for r in _rows(
        sp.group_by("campaign_id").aggregate(
            spend=sp.count(),
            spend_days=sp.date.nunique(),
            platform_conversions=(sp.platform_conversions > 0).sum(),
            adset=sp.adset_id.notnull().sum(),
            creative=(sp.creative_id.notnull() | sp.ad_id.notnull()).sum(),
        )
    ):
        put(r.pop("campaign_id"), **r)
    td = rollups.table(ws, "touch_daily")
    tpc = td.filter(td.campaign_id.notnull() & (td.day < cutoff.date()))
    for r in _rows(
        tpc.group_by("campaign_id").aggregate(
            touchpoints=tpc.n.sum(), click_ids=tpc.click_ids.sum()
        )
    ):
        put(r.pop("campaign_id"), **r)
    conv = attributed_conversions(ws)
    conv = conv.filter(conv.ts < cutoff)
    if kinds.get("conversions", 0):
        c = conv
        timed = c.click_ts.notnull() | click_time(c, cutoff).notnull()
        for r in _rows(
            c.group_by(campaign_id=c.attributed_campaign_id).aggregate(
                conversions=c.count(),
                click_ts=timed.sum(),
                value=(c.value.notnull() & (c.value != 0)).sum(),
                by_campaign_id=(c.attributed_by == "campaign_id").sum(),
                by_click_id=(c.attributed_by == "click_id").sum(),
                by_user_id=(c.attributed_by == "user_id").sum(),
            )
        ):
            cid = r.pop("campaign_id")
            if cid is None:
                put("\0unattributed", conversions=r["conversions"])
            else:
                put(cid, **r)
    if kinds.get("crm", 0):
        rec = crm_record_campaigns(ws, cutoff)
        for r in _rows(rec.group_by("campaign_id").aggregate(crm=rec.count())):
            put(r["campaign_id"] if r["campaign_id"] is not None else "\0unlinked", crm=r["crm"])
    ch = ws.table("changes")
    ch = ch.filter(ch.ts < cutoff)
    if kinds.get("changes", 0):
        ents = sp.select(e_campaign=sp.campaign_id, e_adset=sp.adset_id, e_ad=sp.ad_id)
        by_campaign = ch.filter(ch.level == "campaign").select(cid=ch.entity_id)
        by_adset = (
            ch.filter(ch.level == "adset")
            .join(ents.select("e_campaign", "e_adset").distinct(), ch.entity_id == ents.e_adset)
            .select(cid=ents.e_campaign)
        )
        by_ad = (
            ch.filter(ch.level == "ad")
            .join(ents.select("e_campaign", "e_ad").distinct(), ch.entity_id == ents.e_ad)
            .select(cid=ents.e_campaign)
        )
        u = by_campaign.union(by_adset, distinct=False).union(by_ad, distinct=False)
        for r in _rows(u.group_by("cid").aggregate(changes=u.count())):
            put(r["cid"], changes=r["changes"])
    return counts


def _campaign_row(cid: str, n: Mapping[str, int]) -> dict[str, Any]:
    layers = {k for k in LAYER_NAMES if k != "daily" and n.get(k, 0) > 0}
    if n.get("spend_days", 0) >= MIN_DAILY_DAYS:
        layers.add("daily")
    if "touchpoints" in layers and "conversions" in layers:
        layers.add("click_ts")  # linked through the click log
    return {
        "campaign_id": cid,
        "shape": shape_of(layers),
        "platform_conversions": "platform_conversions" in layers,
        "changes": "changes" in layers,
        "layers": sorted(layers, key=list(LAYER_NAMES).index),
        "counts": dict(sorted(n.items())),
    }


def learnable(
    ws: Workspace,
    as_of: date | None = None,
    *,
    used: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """What this workspace can learn from, per campaign and per capability.

    Parameters
    ----------
    ws
        The workspace.
    as_of
        Count the data up to the end of this day (default: the last day with data).
    used
        What a run actually used, per capability and campaign (e.g. the allocation's
        ``outcome_source``, the nowcast's ``basis``): shown beside what the data allows.

    Returns
    -------
    dict
        ``as_of``; ``account``: ``shape`` (the richest campaign shape), ``by_shape``
        (campaigns per shape), ``kinds`` (rows per kind), ``notes`` (data no campaign can
        use, e.g. unattributed conversions); ``campaigns``: per campaign ``shape``,
        ``platform_conversions``, ``changes``, ``layers`` and ``counts``; ``capabilities``:
        per capability ``name``, ``description``, ``status`` (``full``, ``partial``,
        ``unavailable`` or ``mixed`` across campaigns), ``bases`` (basis -> campaigns, with
        what it uses), ``missing`` and ``unlock`` (layers the better bases need, and the
        exports that provide them), and ``used`` when given; ``unlock``: per missing layer
        the export that provides it and the capabilities it would improve, most first.
    """
    from signalloop.checks.base import default_as_of

    as_of = as_of or default_as_of(ws)
    kinds = {k: int(v) for k, v in ws.counts().items()}
    if as_of is None:
        return {
            "as_of": None,
            "account": {"shape": None, "by_shape": {}, "kinds": kinds, "notes": []},
            "campaigns": [],
            "capabilities": [],
            "unlock": [],
        }
    counts = _layer_counts(ws, as_of, kinds)
    notes: list[str] = []
    orphan = counts.pop("\0unattributed", {}).get("conversions", 0)
    if orphan:
        notes.append(
            f"{orphan:,} conversions reach no campaign (no campaign_id, no click_id of a "
            "known click, no earlier touchpoint of the user): send campaign_id or click_id "
            "with them"
        )
    unlinked = counts.pop("\0unlinked", {}).get("crm", 0)
    if unlinked:
        notes.append(
            f"{unlinked:,} CRM records link to no campaign (no user_id shared with a "
            "conversion or touchpoint): send user_id with the CRM export"
        )
    campaigns = [_campaign_row(c, n) for c, n in sorted(counts.items()) if n.get("spend", 0)]
    no_spend = sorted(c for c, n in counts.items() if not n.get("spend", 0))
    if no_spend:
        notes.append(
            f"{len(no_spend)} campaign(s) have conversions or clicks but no spend rows "
            f"({', '.join(no_spend[:5])}{', ...' if len(no_spend) > 5 else ''}): CPA, "
            "allocation and fatigue leave them out; add them to the spend export"
        )
    by_shape: dict[str, int] = {}
    for c in campaigns:
        by_shape[c["shape"]] = by_shape.get(c["shape"], 0) + 1
    shape = max(by_shape, key=SHAPES.index) if by_shape else None
    caps: list[dict[str, Any]] = []
    gains: dict[str, list[str]] = {}
    for spec in CAPABILITIES:
        cap, missing = _capability(spec, campaigns, (used or {}).get(spec.name))
        caps.append(cap)
        for layer in missing:
            gains.setdefault(layer, []).append(spec.name)
    unlock = [
        {"layer": layer, "missing": LAYER_NAMES[layer], "export": UNLOCK[layer], "unlocks": names}
        for layer, names in sorted(gains.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]
    return {
        "as_of": as_of.isoformat(),
        "account": {
            "shape": shape,
            "by_shape": dict(sorted(by_shape.items(), key=lambda kv: SHAPES.index(kv[0]))),
            "kinds": kinds,
            "notes": notes,
        },
        "campaigns": campaigns,
        "capabilities": caps,
        "unlock": unlock,
    }


def _capability(
    cap: Capability, campaigns: Sequence[Mapping[str, Any]], used: Mapping[str, str] | None
) -> tuple[dict[str, Any], list[str]]:
    """One capability's entry of :func:`learnable`, and the layers its campaigns miss."""
    bases: dict[str | None, dict[str, Any]] = {}
    missing: list[str] = []
    statuses: set[str] = set()
    for c in campaigns:
        r = resolve(cap, set(c["layers"]))
        b = bases.setdefault(r["basis"], {"uses": r["uses"], "status": r["status"], "ids": []})
        b["ids"].append(c["campaign_id"])
        statuses.add(r["status"])
        missing.extend(m for m in r["missing"] if m not in missing)
    status = statuses.pop() if len(statuses) == 1 else ("mixed" if statuses else "unavailable")
    out: dict[str, Any] = {
        "name": cap.name,
        "description": cap.description,
        "status": status,
        "bases": [
            {
                "basis": name,
                "uses": b["uses"],
                "status": b["status"],
                "campaigns": len(b["ids"]),
                "campaign_ids": b["ids"],
            }
            for name, b in bases.items()
        ],
        "missing": [LAYER_NAMES[m] for m in missing],
        "unlock": [UNLOCK[m] for m in missing],
    }
    if used:
        out["used"] = dict(sorted(used.items()))
    return out, missing


__all__ = [
    "CAPABILITIES",
    "LAYER_NAMES",
    "REGISTRY",
    "SHAPES",
    "UNLOCK",
    "Basis",
    "Capability",
    "learnable",
    "resolve",
    "shape_of",
]
