"""The check contract: a declarative spec, its findings, and the context every check reads.

A check is data: a :class:`CheckSpec` names it, gives its scope, default severity, thresholds
(overridable per project in ``signalloop.toml`` under ``[checks.NAME]``) and whether its
findings may hold a campaign's gate; one function computes it from a :class:`CheckContext`.
Checks register themselves with :func:`register`; :data:`REGISTRY` lists them in order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any, Literal

import ibis

from signalloop.config import Settings
from signalloop.errors import ConfigError
from signalloop.store import Workspace

Severity = Literal["info", "warn", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warn": 1, "critical": 2}


@dataclass
class Finding:
    """One thing a check found.

    ``active`` means the problem is still going at the as-of date (an open outage, a sync
    that is still broken); only active critical findings of a holding check hold a gate.
    ``window`` is the affected period for time-bound findings (end ``None`` = open-ended).
    """

    check: str
    severity: Severity
    campaign_id: str | None
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    active: bool = False
    window: tuple[date, date | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "check": self.check,
            "severity": self.severity,
            "campaign_id": self.campaign_id,
            "message": self.message,
            "evidence": self.evidence,
            "active": self.active,
        }
        if self.window is not None:
            start, end = self.window
            d["window"] = {
                "start": start.isoformat(),
                "end": end.isoformat() if end is not None else None,
            }
        return d


CheckFn = Callable[["CheckContext", Mapping[str, Any]], list[Finding]]


@dataclass(frozen=True)
class CheckSpec:
    """A check: its name, scope, default severity, thresholds and the function computing it."""

    name: str
    scope: Literal["account", "campaign", "adset"]
    severity: Severity
    description: str
    thresholds: Mapping[str, Any]
    holds: bool
    fn: CheckFn

    def options(self, settings: Settings) -> dict[str, Any]:
        """Thresholds with the project's overrides applied (unknown keys are an error)."""
        over = settings.check_options(self.name)
        unknown = set(over) - set(self.thresholds)
        if unknown:
            raise ConfigError(
                f"[checks.{self.name}] has unknown threshold(s) {', '.join(sorted(unknown))}; "
                f"expected {', '.join(sorted(self.thresholds))}"
            )
        return {**self.thresholds, **over}

    def run(self, ctx: CheckContext) -> list[Finding]:
        return self.fn(ctx, self.options(ctx.settings))


REGISTRY: dict[str, CheckSpec] = {}


def register(
    name: str,
    *,
    scope: Literal["account", "campaign", "adset"],
    severity: Severity,
    description: str,
    holds: bool = False,
    **thresholds: Any,
) -> Callable[[CheckFn], CheckFn]:
    """Register a check function under ``name`` with its spec."""

    def deco(fn: CheckFn) -> CheckFn:
        REGISTRY[name] = CheckSpec(name, scope, severity, description, thresholds, holds, fn)
        return fn

    return deco


class CheckContext:
    """What every check reads: the workspace cut at the as-of date, settings, shared estimates.

    Tables from :meth:`table` hold only rows at or before the end of the as-of day; shared
    expressions (attributed conversions, daily clicks, the delay distribution) are built once.
    """

    def __init__(self, ws: Workspace, as_of: date, settings: Settings) -> None:
        self.ws = ws
        self.as_of = as_of
        self.settings = settings
        self.cutoff = datetime.combine(as_of + timedelta(days=1), datetime.min.time())
        #: shared estimates computed once per run (the delay distribution, ...)
        self.cache: dict[str, Any] = {}
        #: campaign -> signal-environment component -> {"score", "evidence"}; checks fill it
        self.environment: dict[str, dict[str, dict[str, Any]]] = {}

    def rollup(self, name: str) -> Any:
        """The rollup ``name`` (:mod:`signalloop.rollups`) cut at the as-of date (by day)."""
        from signalloop import rollups

        t = rollups.table(self.ws, name)
        return t.filter(t.day <= self.as_of)

    def table(self, name: str) -> Any:
        """The table ``name`` cut at the as-of date (by its event time)."""
        t = self.ws.table(name)
        if name == "spend":
            return t.filter(t.date <= self.as_of)
        if "ts" in t.columns:
            return t.filter(t.ts < self.cutoff)
        return t

    @cached_property
    def conversions(self) -> Any:
        """Conversions up to the as-of date, with their attributed campaign and what their
        click id finds in the touchpoints (:func:`~signalloop.attribution.attribute`)."""
        from signalloop.attribution import attributed_conversions

        conv = attributed_conversions(self.ws)
        return conv.filter(conv.ts < self.cutoff)

    @cached_property
    def at_the_end(self) -> bool:
        """Whether no conversion or CRM row lies at or after the cut (the daily run's case).

        Then each stored CRM record's campaign is the one the rows before the cut give it,
        and the per-day CRM aggregates (rollup ``crm_daily``) may be read for this cut
        (:func:`~signalloop.attribution.rows_from`, which the stored record campaigns ask
        too)."""
        from signalloop.attribution import rows_from

        return not rows_from(self.ws, self.cutoff)

    @cached_property
    def campaigns(self) -> list[str]:
        """Every campaign with spend or touchpoints up to the as-of date, sorted."""
        s = self.table("spend").select(campaign_id="campaign_id")
        t = self.rollup("touch_daily")
        t = t.filter(t.campaign_id.notnull()).select(campaign_id="campaign_id")
        ids = s.union(t).distinct().order_by("campaign_id").to_pyarrow().column(0).to_pylist()
        return [str(x) for x in ids]

    @cached_property
    def first_day(self) -> date | None:
        """The first day with spend, touchpoints or conversions."""
        days = [to_date(self.table("spend").date.min().execute())]
        days.append(to_date(self.rollup("touch_daily").day.min().execute()))
        days.append(to_date(self.table("conversions").ts.min().execute()))
        found = [d for d in days if d is not None]
        return min(found) if found else None

    @cached_property
    def tracked_conversions(self) -> Any:
        """Pixel and server conversions (the optimisation events), with ``adset`` (their own
        ad set, else their click's) and ``day`` (their event date)."""
        conv = self.conversions
        c = conv.filter(conv.source.isin(["pixel", "server"]) | conv.source.isnull())
        # the click's ad set, when its touchpoint is known by the as-of date
        t_adset = ibis.ifelse(c.click_first_ts < self.cutoff, c.click_adset_id, ibis.null())
        return c.mutate(adset=ibis.coalesce(c.adset_id, t_adset), day=c.ts.date())


#: What an ad id stands in for a creative with: ``ad:`` and the ad id (see :func:`creative_rows`).
AD_CREATIVE = "ad:"


def creative_rows(spend: Any) -> Any:
    """The spend rows that name a creative, with ``creative_id`` set to it: the row's own
    ``creative_id``, else ``ad:`` and its ``ad_id``.

    An ad shows one creative: a Google Ads ad cannot change its creative (an edit makes a new
    ad) and a Meta ad rarely does, and an ad-level export (Google Ads, Meta Ads Manager)
    carries the ad id but seldom a creative id. So fatigue, the creative freshness check and
    the report's curves read an ad without a creative id as its creative, named ``ad:<ad_id>``
    so that it never merges with a creative id of the same text. ``learnable`` counts the
    same rows as the creative layer.
    """
    key = ibis.coalesce(
        spend.creative_id, ibis.literal(AD_CREATIVE).concat(spend.ad_id.cast("string"))
    )
    return spend.mutate(creative_id=key).filter(key.notnull())


def to_date(v: Any) -> date | None:
    """A date from what a scalar ibis result may be (date, datetime, pandas Timestamp, NaT)."""
    import pandas as pd

    if v is None or pd.isna(v):
        return None
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    if hasattr(v, "to_pydatetime"):
        try:
            return v.to_pydatetime().date()  # type: ignore[no-any-return]
        except (ValueError, AttributeError):  # NaT
            return None
    return None


def default_as_of(ws: Workspace) -> date | None:
    """The latest day with data: the last spend date, touchpoint or conversion."""
    days = [to_date(ws.table("spend").date.max().execute())]
    for name in ("touchpoints", "conversions"):
        days.append(to_date(ws.table(name).ts.max().execute()))
    found = [d for d in days if d is not None]
    return max(found) if found else None
