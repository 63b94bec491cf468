"""Learning phase per ad set: learning, learning-limited or stable, with override accounting.

The platforms' rule, replayed day by day from the data: a **significant edit** (a budget
change above 20%, bid, bid strategy, targeting, creative, optimisation event, or a restart
after a pause of 7 days or more) puts an ad set back into ``learning``; it becomes
``stable`` once it gathers the threshold of optimisation events (50) since that edit; if 7
days pass without, it is ``learning_limited`` until a 7-day window reaches the threshold.

For every ad set this gives its resets (with who made them), how many days of learning the
human ones cost, when an evaluation becomes meaningful (28 days after the last reset, with the
threshold reached), and a recommendation. Days inside exclusion windows pause the clock:
nothing that happens there counts.

**Which conversions.** Per campaign, the optimisation events are its first-party tracked
conversions (pixel / server) when the workspace holds any for it (``conversions_source``
``"first_party"``; conversions that name no ad set, directly or through their click, are
spread over the campaign's ad sets by each ad set's share of that day's clicks, and
``split_by_clicks_share`` says how much of the campaign's volume that was); else the
platform-reported conversions of its spend rows (``"platform_reported"``: platforms count
view-through and modelled conversions, so this over-counts); else nothing
(``conversions_source`` ``None``).

**State vocabulary.** ``learning``, ``learning_limited`` and ``stable`` as above, and
``unknown`` when the rule cannot be replayed: no conversions of any kind for the campaign, or
only platform-reported counts over fewer than :data:`MIN_DAILY_DAYS` days of spend (an export
of one total per ad stamped with one date is not a daily history). An ``unknown`` entity says
``missing`` (what is not there) and ``unlock`` (the export that would provide it); its
``conversions_7d`` and ``projected_conversions_7d`` are what exists (the platform's counts
dated in the last 7 days, never extrapolated from fewer than 7 days), ``None`` when nothing
does. Readers that gate on learning (``allocate``, ``lens``) treat ``unknown`` as not known
to be learning.

Heavy work (edits joined to entities, daily conversions per ad set) is ibis; the daily replay
steps through the days once, every ad set at once (NumPy), so its cost grows with the days
of history by a few array operations each, not by a Python step per ad set and day.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from signalloop.checks.base import CheckContext, default_as_of, to_date
from signalloop.checks.engine import load_exclusions
from signalloop.config import Settings
from signalloop.errors import UsageError
from signalloop.store import Workspace

SIGNIFICANT_FIELDS = ("bid", "bid_strategy", "targeting", "creative", "optimization_event")
BUDGET_THRESHOLD = 0.2
PAUSE_DAYS = 7
WINDOW = 7
EVALUATION_DAYS = 28
#: Days of spend rows the platform-reported path needs to replay the rule (a one-period
#: export stamped with one date has 1).
MIN_DAILY_DAYS = 7
#: Every state an entity can be in.
STATES = ("learning", "learning_limited", "stable", "unknown")
#: What unlocks the learning state when it is unknown, by what is missing.
UNLOCK = {
    "conversions": "first-party conversions (conversions: conversion_id, ts, kind, with "
    "campaign_id or click_id), or the platform's conversion counts in the spend export "
    "(platform_conversions)",
    "daily history": "a daily breakdown of the spend export (one row per ad set and day, "
    f"at least {MIN_DAILY_DAYS} days) with platform_conversions, or first-party conversions",
}


@dataclass
class Reset:
    """One significant edit that put an ad set back into learning."""

    day: date
    actor: str
    field: str
    detail: str = ""
    days_in_learning: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "date": self.day.isoformat(),
            "actor": self.actor,
            "field": self.field,
            "detail": self.detail,
            "days_in_learning": self.days_in_learning,
        }


@dataclass
class EntityPhase:
    level: str
    entity_id: str
    campaign_id: str
    state: str
    conversions_7d: int | None
    resets: list[Reset] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    evaluation_ready_on: date | None = None
    recommendation: str = ""
    projected_7d: float | None = 0.0
    #: ``"first_party"``, ``"platform_reported"`` or ``None`` (no conversions of any kind)
    conversions_source: str | None = "first_party"
    #: days of history the counts cover (ad set's first day to the as-of date)
    history_days: int = 0
    #: share of the campaign's first-party volume placed on ad sets by their clicks
    split_by_clicks_share: float = 0.0
    #: why the state is ``unknown`` and which export would tell it
    missing: str | None = None
    #: the first day whose resets :meth:`to_dict` lists (``None``: every reset), see
    #: :func:`phase`'s ``list_days``
    list_from: date | None = None

    @property
    def listed_resets(self) -> list[Reset]:
        """The resets :meth:`to_dict` lists: those on or after :attr:`list_from`, and the last
        one before it (the one in effect when that day began); every reset without a window."""
        if self.list_from is None:
            return self.resets
        first = next(
            (i for i, r in enumerate(self.resets) if r.day >= self.list_from), len(self.resets)
        )
        return self.resets[max(first - 1, 0) :]

    @property
    def human_resets(self) -> int:
        """Resets people caused (a launch is not counted: every ad set has to learn once)."""
        return sum(1 for r in self.resets if r.actor == "human" and r.detail != "launch")

    @property
    def days_lost(self) -> int:
        """Days spent back in learning after the resets people caused."""
        return sum(
            r.days_in_learning for r in self.resets if r.actor == "human" and r.detail != "launch"
        )

    def to_dict(self) -> dict[str, Any]:
        last = self.resets[-1] if self.resets else None
        return {
            "level": self.level,
            "entity_id": self.entity_id,
            "campaign_id": self.campaign_id,
            "state": self.state,
            "conversions_7d": self.conversions_7d,
            "projected_conversions_7d": (
                round(self.projected_7d, 1) if self.projected_7d is not None else None
            ),
            "conversions_source": self.conversions_source,
            "history_days": self.history_days,
            "split_by_clicks_share": round(self.split_by_clicks_share, 3),
            "last_significant_edit": last.to_dict() if last else None,
            "resets": [r.to_dict() for r in self.listed_resets],
            "human_resets": self.human_resets,
            "days_lost": self.days_lost,
            "evaluation_ready_on": (
                self.evaluation_ready_on.isoformat() if self.evaluation_ready_on else None
            ),
            "recommendation": self.recommendation,
            **(
                {"missing": self.missing, "unlock": UNLOCK.get(self.missing)}
                if self.missing
                else {}
            ),
        }


@dataclass
class PhaseReport:
    as_of: date
    threshold: int
    entities: list[EntityPhase]
    #: whether the workspace holds an edit log up to ``as_of``: without one no reset is seen,
    #: so an ad set that once left learning reads ``stable`` whatever its volume since
    edit_log: bool = True
    #: what each entity's ``resets`` lists: ``days`` (``None``: every reset), ``from`` and
    #: ``resets_not_listed`` (over every entity)
    listed: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "threshold": self.threshold,
            "edit_log": self.edit_log,
            "entities": [e.to_dict() for e in self.entities],
            "listed": self.listed,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


def _num(v: Any) -> float | None:
    try:
        return float(str(v).replace(",", "").strip())
    except (TypeError, ValueError):
        return None


def phase(
    ws: Workspace,
    as_of: date | None = None,
    *,
    settings: Settings | None = None,
    list_days: int | None = None,
) -> PhaseReport:
    """Replay the learning phase of every ad set up to ``as_of`` (default: last day of data).

    A campaign whose spend rows name no ad set is one entity of level ``"campaign"`` (its
    id the campaign's), so no campaign with spend is left out.

    ``list_days``: each entity lists only the resets of the last ``list_days`` days (and the
    last one before them, in effect when they began); ``None`` lists every reset of
    the history. Every reset is still replayed and counted (``human_resets``, ``days_lost``,
    ``last_significant_edit``), and ``listed`` says how many were left out: a year of edits
    listed again in every daily report grew it with the history (the run lists
    :data:`signalloop.run.REPORT_DAYS`).
    """
    settings = settings or Settings()
    threshold = settings.learning_threshold
    as_of = as_of or default_as_of(ws)
    if as_of is None:
        raise UsageError(f"workspace {ws.path} holds no data yet: ingest something first")
    ctx = CheckContext(ws, as_of, settings)
    spend = ctx.table("spend")
    spend = spend.filter(spend.campaign_id.notnull())
    # the ad sets, their campaign, first day and ads (from delivery); campaigns without ad-set
    # rows are their own entity
    sets = [
        {**r, "level": "adset", "entity": r["adset_id"]}
        for r in spend.filter(spend.adset_id.notnull())
        .group_by(["campaign_id", "adset_id"])
        .aggregate(first=spend.date.min(), last=spend.date.max())
        .order_by(["campaign_id", "adset_id"])
        .to_pyarrow()
        .to_pylist()
    ]
    with_sets = {s["campaign_id"] for s in sets}
    campaigns = (
        spend.group_by("campaign_id")
        .aggregate(
            first=spend.date.min(),
            days=spend.date.nunique(),
            reported=spend.platform_conversions.sum(),
        )
        .order_by("campaign_id")
        .to_pyarrow()
        .to_pylist()
    )
    sets += [
        {**r, "level": "campaign", "entity": r["campaign_id"], "adset_id": None}
        for r in campaigns
        if r["campaign_id"] not in with_sets
    ]
    spend_days = {r["campaign_id"]: int(r["days"]) for r in campaigns}
    reported = {r["campaign_id"] for r in campaigns if (r["reported"] or 0) > 0}
    ads = {
        r["ad_id"]: r["adset_id"]
        for r in spend.filter(spend.ad_id.notnull() & spend.adset_id.notnull())
        .select("ad_id", "adset_id")
        .distinct()
        .to_pyarrow()
        .to_pylist()
    }
    owner = {s["entity"]: s["campaign_id"] for s in sets}
    daily, first_party, split = _first_party_daily(ctx, sets)
    platform = _platform_daily(ctx, sets, reported - first_party)
    edits = _edits(ctx, ads, owner)
    excluded = _excluded_days(ws)
    siblings = Counter(s["campaign_id"] for s in sets)  # each campaign's entities
    sources: list[str | None] = []
    specs: list[_Spec] = []
    for s in sets:
        cid = s["campaign_id"]
        source = (
            "first_party"
            if cid in first_party
            else "platform_reported"
            if cid in reported
            else None
        )
        events = daily if source == "first_party" else platform
        sources.append(source)
        specs.append(
            _Spec(
                s["entity"],
                cid,
                to_date(s["first"]) or as_of,
                events.get(s["entity"], {}),
                edits.get(s["entity"], []),
                excluded.get(cid, set()),
                extrapolate=source == "first_party",
            )
        )
    entities = _replay(specs, as_of, threshold)
    for s, source, ent in zip(sets, sources, entities, strict=True):
        cid = s["campaign_id"]
        ent.level = s["level"]
        ent.conversions_source = source
        ent.split_by_clicks_share = split.get(cid, 0.0)
        if source is None:
            _unknown(ent, "conversions")
        elif source == "platform_reported" and spend_days.get(cid, 0) < MIN_DAILY_DAYS:
            _unknown(ent, "daily history")
        ent.recommendation = _recommend(ent, siblings[cid], threshold, as_of)
    has_log = bool(ctx.table("changes").count().execute())
    edge = None
    if list_days is not None:
        edge = as_of - timedelta(days=max(int(list_days), 1) - 1)
        for ent in entities:
            ent.list_from = edge
    listed = {
        "days": list_days,
        "from": edge.isoformat() if edge else None,
        "resets_not_listed": sum(len(e.resets) - len(e.listed_resets) for e in entities),
    }
    return PhaseReport(as_of, threshold, entities, edit_log=has_log, listed=listed)


def _unknown(ent: EntityPhase, missing: str) -> None:
    """Mark an entity whose learning rule cannot be replayed (says what is missing)."""
    ent.state, ent.missing, ent.evaluation_ready_on = "unknown", missing, None
    ent.states = {d: "unknown" for d in ent.states}
    if missing == "conversions":
        ent.conversions_7d, ent.projected_7d = None, None


def _first_party_daily(
    ctx: CheckContext, sets: list[dict[str, Any]]
) -> tuple[dict[str, dict[date, float]], set[str], dict[str, float]]:
    """Optimisation events (tracked conversions) per entity and event day.

    Returns the daily counts per entity, the campaigns with any first-party event, and per
    campaign the share of its events that named no ad set (directly or through their click)
    and were spread over its ad sets by their share of that day's clicks (of the whole
    history's clicks on a day without any).
    """
    c = ctx.tracked_conversions
    got = (
        c.group_by(campaign_id=c.attributed_campaign_id, adset=c.adset, day=c.day)
        .aggregate(n=c.count())
        .to_pyarrow()
    )
    level = {s["entity"]: s["level"] for s in sets}
    adset_owner = {s["entity"]: s["campaign_id"] for s in sets if s["level"] == "adset"}
    # each row's campaign (its own, else its ad set's) and entity (its ad set when that is
    # an entity, else its campaign when that is one, else none: spread by clicks below),
    # worked out over the columns (a row per campaign, ad set and day: half a million
    # behind 179 days of 1,000 campaigns)
    # (object arrays and dict lookups: pandas' own string columns are slow to step through)
    own = got["campaign_id"].to_numpy(zero_copy_only=False).astype(object)
    adset = got["adset"].to_numpy(zero_copy_only=False).astype(object)
    day = got["day"].cast(pa.int32()).to_numpy()  # (days since 1970)
    n = got["n"].to_numpy().astype(float)
    camp = np.array(
        # (an empty campaign id as none: its ad set's campaign)
        [c or adset_owner.get(a) for c, a in zip(own, adset, strict=True)],
        dtype=object,
    )
    known = np.array([c is not None for c in camp], bool)
    camp, adset, day, n = camp[known], adset[known], day[known], n[known]
    campaigns: set[str] = set(camp.tolist())
    total = {str(c): float(v) for c, v in pd.Series(n).groupby(camp).sum().items()}
    key = np.array(
        [
            a if level.get(a) == "adset" else c if level.get(c) == "campaign" else None
            for c, a in zip(camp.tolist(), adset.tolist(), strict=True)
        ],
        dtype=object,
    )
    placed = np.array([k is not None for k in key], bool)
    # (the ad set's own campaign counts it)
    campaigns |= {adset_owner.get(k, c) for k, c in zip(key[placed], camp[placed], strict=True)}
    out = _by_entity_day(key[placed], day[placed], n[placed])
    unplaced = _by_entity_day(camp[~placed], day[~placed], n[~placed])
    split: dict[str, float] = {}
    if unplaced:
        clicks = _adset_clicks(ctx, set(unplaced))
        for cid, days in unplaced.items():
            by_day = clicks.get(cid, {})
            overall: dict[str, float] = {}
            for per in by_day.values():
                for a, k in per.items():
                    overall[a] = overall.get(a, 0.0) + k
            if not overall:  # no clicks at all: an even split would be made up, keep them out
                continue
            for day, n in days.items():
                weights = by_day.get(day) or overall
                w_sum = sum(weights.values()) or 1.0
                for a, k in weights.items():
                    d = out.setdefault(a, {})
                    d[day] = d.get(day, 0.0) + n * k / w_sum
            split[cid] = sum(days.values()) / total[cid]
    return out, campaigns, split


def _by_entity_day(entity: Any, day: Any, n: Any) -> dict[str, dict[date, float]]:
    """``n`` summed per ``entity`` and ``day`` (days since 1970), as a dict per entity by
    date: sorted by integer keys (the entity's number, the day), not grouped by Python
    objects."""
    if not len(n):
        return {}
    code, names = pd.factorize(entity)
    days = np.asarray(day, np.int64)
    key = (code.astype(np.int64) << 32) | (days - days.min())
    order = np.argsort(key, kind="stable")  # (a group's rows in their order: sums alike)
    key = key[order]
    starts = np.r_[0, np.flatnonzero(key[1:] != key[:-1]) + 1]
    sums = np.add.reduceat(np.asarray(n, float)[order], starts).tolist()
    key = key[starts]
    owner = (key >> 32).tolist()
    at = ((key & 0xFFFFFFFF) + days.min()).tolist()
    when = {d: _EPOCH + timedelta(days=d) for d in set(at)}
    out: dict[str, dict[date, float]] = {}
    label = names.tolist()
    for e, d, v in zip(owner, at, sums, strict=True):
        out.setdefault(label[e], {})[when[d]] = v
    return out


_EPOCH = date(1970, 1, 1)


def _adset_clicks(
    ctx: CheckContext, campaigns: set[str]
) -> dict[str, dict[date, dict[str, float]]]:
    """Clicks per campaign, day and ad set, from the spend rows (small)."""
    sp = ctx.table("spend")
    sp = sp.filter(sp.adset_id.notnull() & sp.campaign_id.isin(sorted(campaigns)))
    out: dict[str, dict[date, dict[str, float]]] = {}
    for r in (
        sp.group_by(["campaign_id", "adset_id", "date"])
        .aggregate(k=sp.clicks.sum())
        .to_pyarrow()
        .to_pylist()
    ):
        if r["k"]:
            out.setdefault(r["campaign_id"], {}).setdefault(r["date"], {})[r["adset_id"]] = float(
                r["k"]
            )
    return out


def _platform_daily(
    ctx: CheckContext, sets: list[dict[str, Any]], campaigns: set[str]
) -> dict[str, dict[date, float]]:
    """Platform-reported conversions per entity and spend day, for these campaigns."""
    out: dict[str, dict[date, float]] = {}
    if not campaigns:
        return out
    level = {s["entity"]: s["level"] for s in sets}
    sp = ctx.table("spend")
    sp = sp.filter(sp.campaign_id.isin(sorted(campaigns)) & sp.platform_conversions.notnull())
    for r in (
        sp.group_by(["campaign_id", "adset_id", "date"])
        .aggregate(n=sp.platform_conversions.sum())
        .to_pyarrow()
        .to_pylist()
    ):
        key = r["adset_id"] if level.get(r["adset_id"]) == "adset" else r["campaign_id"]
        if level.get(key) is None:
            continue
        d = out.setdefault(key, {})
        d[r["date"]] = d.get(r["date"], 0.0) + float(r["n"] or 0.0)
    return out


def _edits(
    ctx: CheckContext, ads: dict[str, str], adset_campaign: dict[str, str]
) -> dict[str, list[Reset]]:
    """Significant edits per ad set, from the change log (small: one row per edit)."""
    ch = ctx.table("changes").order_by("ts").to_pyarrow().to_pylist()
    by_campaign: dict[str, list[str]] = {}
    for a, c in adset_campaign.items():
        by_campaign.setdefault(c, []).append(a)
    out: dict[str, list[Reset]] = {}
    paused_since: dict[str, date] = {}

    def add(targets: list[str], day: date, actor: str, fld: str, detail: str) -> None:
        for t in targets:
            lst = out.setdefault(t, [])
            if lst and lst[-1].day == day:  # several edits on one day: one reset
                if actor == "human" and lst[-1].actor != "human":
                    lst[-1].actor, lst[-1].field, lst[-1].detail = actor, fld, detail
                continue
            lst.append(Reset(day, actor or "unknown", fld, detail))

    for e in ch:
        day = e["ts"].date() if isinstance(e["ts"], datetime) else to_date(e["ts"])
        if day is None:
            continue
        level, ent, fld = e["level"], e["entity_id"], e["field"]
        if level == "campaign":
            targets = by_campaign.get(ent, [])
        elif level == "adset":
            targets = [ent] if ent in adset_campaign else []
        elif level == "ad":
            targets = [ads[ent]] if ent in ads else []
        else:
            targets = []
        if not targets:
            continue
        if fld == "budget":
            old, new = _num(e["old_value"]), _num(e["new_value"])
            if old and new and abs(new / old - 1.0) > BUDGET_THRESHOLD:
                add(targets, day, e["actor"], "budget", f"{old:g} -> {new:g}")
        elif fld in SIGNIFICANT_FIELDS:
            add(targets, day, e["actor"], fld, f"{e['old_value']} -> {e['new_value']}")
        elif fld == "status" and level == "campaign":
            status = str(e["new_value"] or "").upper()
            if status in ("PAUSED", "INACTIVE", "OFF"):
                paused_since[ent] = day
            elif status in ("ACTIVE", "ENABLED", "ON"):
                since = paused_since.pop(ent, None)
                if since is None or (day - since).days >= PAUSE_DAYS:
                    what = "launch" if since is None else f"restart after {(day - since).days} days"
                    add(targets, day, e["actor"], "status", what)
    return out


def _excluded_days(ws: Workspace) -> dict[str, set[date]]:
    out: dict[str, set[date]] = {}
    for e in load_exclusions(ws):
        start = date.fromisoformat(e["start"])
        end = date.fromisoformat(e["end"]) if e["end"] else date(9999, 12, 31)
        d = start
        days = out.setdefault(e["campaign_id"], set())
        while d <= end and (d - start).days < 3660:
            days.add(d)
            d += timedelta(days=1)
    return out


@dataclass
class _Spec:
    """One entity's inputs to :func:`_replay`."""

    entity: str
    campaign: str
    first: date
    #: optimisation events per day
    daily: dict[date, float]
    resets: list[Reset]
    excluded: set[date]
    #: project the 7-day volume from fewer than 7 counted days (first-party daily counts)
    extrapolate: bool = True


_LEARNING, _LIMITED, _STABLE = 0, 1, 2
_CODES = ("learning", "learning_limited", "stable")


def _replay(specs: list[_Spec], as_of: date, threshold: int) -> list[EntityPhase]:
    """Run the platform's learning rule over every entity's days, up to ``as_of``.

    Each entity, from its first day: a reset that day puts it back in ``learning`` (the
    reset it ends records the days it spent learning, unless already set); a day inside an
    exclusion window counts nothing and keeps the state; any other day adds its events: a
    ``learning`` entity counts the day and is ``stable`` once the events since its last reset
    reach the threshold, ``learning_limited`` after :data:`WINDOW` counted days without; a
    ``learning_limited`` one is ``stable`` once its last :data:`WINDOW` counted days reach it.

    The days are stepped through once with every entity at once (arrays over the entities):
    each sum adds the same numbers in the same order as one entity's loop would, so states,
    counts and days in learning are those of replaying each entity alone. The projected
    7-day volume is the mean of the last 14 counted days times 7; with ``extrapolate`` false
    and fewer than 7 days counted it is their sum (a count that may be one total for a whole
    period is not a daily rate).
    """
    n_ent = len(specs)
    start = min([sp.first for sp in specs] + [as_of])
    n_days = (as_of - start).days + 1
    day0 = start.toordinal()
    begin = np.array([sp.first.toordinal() - day0 for sp in specs], dtype=np.int64)
    events = np.zeros((n_ent, n_days))
    held = np.zeros((n_ent, n_days), dtype=bool)  # inside an exclusion window
    reset_at = np.full((n_ent, n_days), -1, dtype=np.int32)  # index into ``flat``
    flat: list[Reset] = []
    window_days: dict[int, np.ndarray] = {}  # per excluded-days set (shared by a campaign)
    for e, sp in enumerate(specs):
        for d, n in sp.daily.items():
            j = d.toordinal() - day0
            if 0 <= j < n_days:
                events[e, j] = n
        if sp.excluded:
            key = id(sp.excluded)
            if key not in window_days:
                js = np.array([d.toordinal() - day0 for d in sp.excluded], dtype=np.int64)
                window_days[key] = js[(js >= 0) & (js < n_days)]
            held[e, window_days[key]] = True
        for r in sp.resets:  # (several on one day: the last, as a dict by day keeps)
            j = r.day.toordinal() - day0
            if 0 <= j < n_days:
                reset_at[e, j] = len(flat)
            flat.append(r)
    learned = np.array([r.days_in_learning for r in flat], dtype=np.int64)
    state = np.full(n_ent, _LEARNING, dtype=np.int64)
    since = np.zeros(n_ent)
    counted = np.zeros(n_ent, dtype=np.int64)
    current = np.full(n_ent, -1, dtype=np.int64)
    last = np.zeros((n_ent, WINDOW))  # the last WINDOW counted days' events, oldest first
    codes = np.full((n_ent, n_days), -1, dtype=np.int8)  # (entities x days: kept small)
    for j in range(n_days):
        on = begin <= j
        new = on & (reset_at[:, j] >= 0)
        if new.any():
            ended = new & (current >= 0)
            idx = current[ended]
            unset = learned[idx] == 0
            learned[idx[unset]] = counted[ended][unset]
            state[new], since[new], counted[new] = _LEARNING, 0.0, 0
            current[new] = reset_at[new, j]
        paused = on & held[:, j]
        codes[paused, j] = state[paused]
        live = on & ~paused
        if not live.any():
            continue
        today = events[:, j]
        last[live, :-1] = last[live, 1:]
        last[live, -1] = today[live]
        since[live] = since[live] + today[live]
        was = state.copy()
        counted[live & (was != _STABLE)] += 1
        learning = live & (was == _LEARNING)
        reached = learning & (since >= threshold)
        state[learning & ~reached & (counted >= WINDOW)] = _LIMITED
        limited = live & (was == _LIMITED)
        window = np.zeros(n_ent)
        for k in range(WINDOW):  # left to right, as sum() over the last WINDOW days
            window = window + last[:, k]
        reached |= limited & (window >= threshold)
        state[reached] = _STABLE
        done = reached & (current >= 0)
        learned[current[done]] = counted[done]
        codes[live, j] = state[live]
    ended = current >= 0
    idx = current[ended]
    unset = learned[idx] == 0  # still not stable at the as-of date
    learned[idx[unset]] = counted[ended][unset]
    for r, k in zip(flat, learned.tolist(), strict=True):
        r.days_in_learning = int(k)
    iso = [date.fromordinal(day0 + j).isoformat() for j in range(n_days)]
    out = []
    for e, sp in enumerate(specs):
        b = int(begin[e])  # (>= 0: the grid starts at the first entity's first day)
        history = events[e, b:][~held[e, b:]].tolist()
        last7 = round(sum(history[-WINDOW:]))
        recent = history[-14:]
        if sp.extrapolate or len(recent) >= WINDOW:
            projected = sum(recent) / len(recent) * WINDOW if recent else 0.0
        else:
            projected = float(sum(recent))
        states = dict(zip(iso[b:], (_CODES[c] for c in codes[e, b:].tolist()), strict=True))
        ent = EntityPhase(
            "adset",
            sp.entity,
            sp.campaign,
            _CODES[int(state[e])],
            last7,
            sp.resets,
            states,
            projected_7d=projected,
            history_days=len(history),
        )
        last_reset = sp.resets[-1].day if sp.resets else sp.first
        if projected >= threshold:
            ready = last_reset + timedelta(days=EVALUATION_DAYS)
            ent.evaluation_ready_on = max(ready, as_of) if ent.state == "stable" else ready
        out.append(ent)
    return out


def _recommend(ent: EntityPhase, siblings: int, threshold: int, as_of: date) -> str:
    recent_human = [
        r
        for r in ent.resets
        if r.actor == "human" and r.detail != "launch" and (as_of - r.day).days < 28
    ]
    if len(recent_human) >= 2:
        return (
            f"stop manual edits: {len(recent_human)} human resets in 28 days cost "
            f"{ent.days_lost} days of learning; hold the calibration window"
        )
    if ent.state == "unknown":
        if ent.missing == "conversions":
            return (
                "learning state unknown: no conversions of any kind for this campaign; send "
                + UNLOCK["conversions"]
            )
        return (
            f"learning state unknown: {ent.projected_7d or 0:.0f} platform-reported conversions "
            f"over {ent.history_days} day(s) of spend rows, not a daily history; send "
            + UNLOCK["daily history"]
        )
    if ent.projected_7d is None:  # only an unknown state has no volume
        return ""
    if ent.state == "stable":
        if ent.evaluation_ready_on and ent.evaluation_ready_on > as_of:
            return f"stable; hold edits, evaluate on or after {ent.evaluation_ready_on}"
        return "stable: evaluate on results"
    if ent.projected_7d >= threshold:
        return "hold the calibration window: on track for the threshold, avoid significant edits"
    if siblings > 1:
        return (
            f"consolidate ad sets: {ent.projected_7d:.0f} events per 7 days here against "
            f"{threshold}; pooling the campaign's ad sets feeds one learner"
        )
    if ent.projected_7d >= threshold / 4:
        return (
            "optimise for an event higher up the funnel (more frequent) until volume reaches "
            "the threshold"
        )
    return "bid manually: even a higher-funnel event cannot reach the threshold at this volume"
