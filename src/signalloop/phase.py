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

Heavy work (edits joined to entities, daily conversions per ad set) is ibis; the per-ad-set
daily replay is small and done in Python.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

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
    conversions_7d: int
    resets: list[Reset] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    evaluation_ready_on: date | None = None
    recommendation: str = ""
    projected_7d: float = 0.0

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
            "projected_conversions_7d": round(self.projected_7d, 1),
            "last_significant_edit": last.to_dict() if last else None,
            "resets": [r.to_dict() for r in self.resets],
            "human_resets": self.human_resets,
            "days_lost": self.days_lost,
            "evaluation_ready_on": (
                self.evaluation_ready_on.isoformat() if self.evaluation_ready_on else None
            ),
            "recommendation": self.recommendation,
        }


@dataclass
class PhaseReport:
    as_of: date
    threshold: int
    entities: list[EntityPhase]

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "threshold": self.threshold,
            "entities": [e.to_dict() for e in self.entities],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


def _num(v: Any) -> float | None:
    try:
        return float(str(v).replace(",", "").strip())
    except (TypeError, ValueError):
        return None


def phase(
    ws: Workspace, as_of: date | None = None, *, settings: Settings | None = None
) -> PhaseReport:
    """Replay the learning phase of every ad set up to ``as_of`` (default: last day of data)."""
    settings = settings or Settings()
    threshold = settings.learning_threshold
    as_of = as_of or default_as_of(ws)
    if as_of is None:
        raise UsageError(f"workspace {ws.path} holds no data yet: ingest something first")
    ctx = CheckContext(ws, as_of, settings)
    spend = ctx.table("spend")
    # the ad sets, their campaign, first day and ads (from delivery)
    sets = (
        spend.filter(spend.adset_id.notnull())
        .group_by(["campaign_id", "adset_id"])
        .aggregate(first=spend.date.min(), last=spend.date.max())
        .order_by(["campaign_id", "adset_id"])
        .to_pyarrow()
        .to_pylist()
    )
    ads = {
        r["ad_id"]: r["adset_id"]
        for r in spend.filter(spend.ad_id.notnull() & spend.adset_id.notnull())
        .select("ad_id", "adset_id")
        .distinct()
        .to_pyarrow()
        .to_pylist()
    }
    daily = _adset_daily_conversions(ctx)
    edits = _edits(ctx, ads, {s["adset_id"]: s["campaign_id"] for s in sets})
    excluded = _excluded_days(ws)
    entities = []
    for s in sets:
        ent = _replay(
            s["adset_id"],
            s["campaign_id"],
            to_date(s["first"]) or as_of,
            as_of,
            daily.get(s["adset_id"], {}),
            edits.get(s["adset_id"], []),
            excluded.get(s["campaign_id"], set()),
            threshold,
        )
        siblings = [x for x in sets if x["campaign_id"] == s["campaign_id"]]
        ent.recommendation = _recommend(ent, len(siblings), threshold, as_of)
        entities.append(ent)
    return PhaseReport(as_of, threshold, entities)


def _adset_daily_conversions(ctx: CheckContext) -> dict[str, dict[date, int]]:
    """Optimisation events (tracked conversions) per ad set and event day."""
    c = ctx.tracked_conversions
    rows = c.group_by(["adset", "day"]).aggregate(n=c.count()).to_pyarrow().to_pylist()
    out: dict[str, dict[date, int]] = {}
    for r in rows:
        if r["adset"] is not None:
            out.setdefault(r["adset"], {})[r["day"]] = int(r["n"])
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


def _replay(
    adset: str,
    campaign: str,
    first: date,
    as_of: date,
    daily: dict[date, int],
    resets: list[Reset],
    excluded: set[date],
    threshold: int,
) -> EntityPhase:
    """Run the platform's learning rule over the ad set's days."""
    by_day = {r.day: r for r in resets}
    state, since, counted_days = "learning", 0, 0
    history: list[int] = []
    states: dict[str, str] = {}
    current: Reset | None = None
    d = first
    while d <= as_of:
        r = by_day.get(d)
        if r is not None:
            if current is not None and current.days_in_learning == 0:
                current.days_in_learning = counted_days
            state, since, counted_days, current = "learning", 0, 0, r
        if d in excluded:
            states[d.isoformat()] = state
            d += timedelta(days=1)
            continue
        n = daily.get(d, 0)
        history.append(n)
        since += n
        if state == "learning":
            counted_days += 1
            if since >= threshold:
                state = "stable"
                if current is not None:
                    current.days_in_learning = counted_days
            elif counted_days >= WINDOW:
                state = "learning_limited"
        elif state == "learning_limited":
            counted_days += 1
            if sum(history[-WINDOW:]) >= threshold:
                state = "stable"
                if current is not None:
                    current.days_in_learning = counted_days
        states[d.isoformat()] = state
        d += timedelta(days=1)
    if current is not None and current.days_in_learning == 0:
        current.days_in_learning = counted_days  # still not stable at the as-of date
    last7 = sum(history[-WINDOW:])
    recent = history[-14:]
    rate = sum(recent) / len(recent) if recent else 0.0
    ent = EntityPhase(
        "adset", adset, campaign, state, last7, resets, states, projected_7d=rate * WINDOW
    )
    last_reset = resets[-1].day if resets else first
    if rate * WINDOW >= threshold:
        ready = last_reset + timedelta(days=EVALUATION_DAYS)
        ent.evaluation_ready_on = max(ready, as_of) if state == "stable" else ready
    return ent


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
