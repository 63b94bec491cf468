"""Run the registered checks, score the signal environment, decide each campaign's gate.

The result is one :class:`CheckReport`, which renders to a dict, JSON, text (Rich) and HTML.
Outage windows found by ``integration_dropout`` become **exclusions**: stored in the
workspace (table ``exclusions``), left out of learning by every later computation, and
exportable in the shape of Google Ads' bidding data exclusions.
"""

from __future__ import annotations

import csv
import html
import io
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from signalloop.checks.base import REGISTRY, SEVERITY_RANK, CheckContext, Finding, default_as_of
from signalloop.config import Settings
from signalloop.errors import UsageError
from signalloop.store import Workspace

ENVIRONMENT = (
    "conversion_volume",
    "attribution_accuracy",
    "creative_freshness",
    "integration_uptime",
)
#: The checks that score the signal environment (enough for its history, see signalloop.run).
ENVIRONMENT_CHECKS = (
    "conversion_volume",
    "attribution_match",
    "creative_freshness",
    "integration_dropout",
)

EXCLUSIONS_DDL = """
CREATE TABLE IF NOT EXISTS exclusions (
    campaign_id VARCHAR, start DATE, "end" DATE, reason VARCHAR, source VARCHAR,
    as_of DATE, created_at TIMESTAMP
)"""


@dataclass
class CheckReport:
    """Everything one ``check`` run found, with the gate per campaign."""

    as_of: date
    findings: list[Finding]
    campaigns: list[dict[str, Any]]
    signal_environment: dict[str, Any]
    exclusions: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def held(self) -> list[str]:
        return [c["campaign_id"] for c in self.campaigns if c["gate"] == "hold"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "signal_environment": self.signal_environment,
            "campaigns": self.campaigns,
            "findings": [f.to_dict() for f in self.findings],
            "exclusions": self.exclusions,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_text(self) -> str:
        """A plain-text rendering (the CLI draws Rich tables from :meth:`to_dict` instead)."""
        lines = [f"signal checks as of {self.as_of}"]
        for c in self.campaigns:
            reasons = f" ({', '.join(c['reasons'])})" if c["reasons"] else ""
            lines.append(f"  {c['campaign_id']}: {c['gate']}{reasons}")
        for f in self.findings:
            where = f.campaign_id or "account"
            lines.append(f"  [{f.severity}] {f.check} {where}: {f.message}")
        return "\n".join(lines)

    def to_html(self) -> str:
        """A self-contained HTML fragment: gates, then findings, most severe first."""
        rows = "".join(
            f"<tr><td>{html.escape(c['campaign_id'])}</td><td class='{c['gate']}'>{c['gate']}"
            f"</td><td>{html.escape(', '.join(c['reasons']))}</td></tr>"
            for c in self.campaigns
        )
        finds = "".join(
            f"<tr><td>{f.severity}</td><td>{html.escape(f.check)}</td>"
            f"<td>{html.escape(f.campaign_id or 'account')}</td>"
            f"<td>{html.escape(f.message)}</td></tr>"
            for f in self.findings
        )
        return (
            f"<section class='checks'><h2>Signal checks as of {self.as_of}</h2>"
            f"<table><tr><th>campaign</th><th>gate</th><th>held by</th></tr>{rows}</table>"
            f"<table><tr><th>severity</th><th>check</th><th>campaign</th><th>finding</th></tr>"
            f"{finds}</table></section>"
        )


def run_checks(
    ws: Workspace,
    *,
    as_of: date | None = None,
    settings: Settings | None = None,
    only: list[str] | None = None,
    store_exclusions: bool = True,
) -> CheckReport:
    """Run the checks (all, or ``only`` these) over the workspace as of a date.

    ``as_of`` defaults to the latest day with data. When ``integration_dropout`` runs, the
    exclusions it finds replace the stored ones, unless ``store_exclusions`` is false.
    """
    import signalloop.checks.hygiene
    import signalloop.checks.signals  # noqa: F401

    settings = settings or Settings()
    if as_of is None:
        as_of = default_as_of(ws)
        if as_of is None:
            raise UsageError(
                f"workspace {ws.path} holds no spend, touchpoints or conversions yet: "
                "ingest something first (signalloop ingest KIND FILE)"
            )
    names = only or list(REGISTRY)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise UsageError(f"unknown check(s) {', '.join(unknown)}: expected {', '.join(REGISTRY)}")
    ctx = CheckContext(ws, as_of, settings)
    findings: list[Finding] = []
    timings: dict[str, float] = {}
    for name in names:
        t0 = time.perf_counter()
        findings.extend(REGISTRY[name].run(ctx))
        timings[name] = time.perf_counter() - t0
    findings.sort(key=lambda f: (-SEVERITY_RANK[f.severity], f.campaign_id or "", f.check))
    campaigns = _gates(ctx, findings)
    environment = _environment(ctx, campaigns)
    exclusions = [
        {
            "campaign_id": f.campaign_id,
            "start": f.window[0].isoformat(),
            "end": f.window[1].isoformat() if f.window[1] else None,
            "reason": f"{f.evidence.get('kind', f.check)}: {f.message}",
        }
        for f in findings
        if f.check == "integration_dropout"
        and f.window is not None
        and f.evidence.get("kind") != "delivery_stop"
    ]
    if store_exclusions and not ws.read_only and "integration_dropout" in names:
        save_exclusions(ws, exclusions, as_of)
    return CheckReport(as_of, findings, campaigns, environment, exclusions, timings)


def _gates(ctx: CheckContext, findings: list[Finding]) -> list[dict[str, Any]]:
    out = []
    for cid in ctx.campaigns:
        holding = [
            f
            for f in findings
            if f.campaign_id == cid
            and f.severity == "critical"
            and f.active
            and REGISTRY[f.check].holds
        ]
        reasons = sorted({f.check for f in holding})
        out.append(
            {
                "campaign_id": cid,
                "gate": "hold" if holding else "open",
                "reasons": reasons,
                "signal_environment": {k: ctx.environment.get(cid, {}).get(k) for k in ENVIRONMENT},
            }
        )
    return out


def _environment(ctx: CheckContext, campaigns: list[dict[str, Any]]) -> dict[str, Any]:
    """Account-level signal environment: each component's spend-weighted mean over campaigns."""
    spend = ctx.table("spend")
    weights = {
        r["campaign_id"]: float(r["s"] or 0.0)
        for r in spend.group_by("campaign_id")
        .aggregate(s=spend.spend.sum())
        .to_pyarrow()
        .to_pylist()
    }
    env: dict[str, Any] = {}
    for k in ENVIRONMENT:
        num = den = 0.0
        for c in campaigns:
            comp = c["signal_environment"].get(k)
            if comp is None or comp.get("score") is None:  # not measurable there (says why)
                continue
            w = weights.get(c["campaign_id"], 0.0) or 1e-9
            num += w * comp["score"]
            den += w
        env[k] = {
            "score": round(num / den, 3) if den else None,
            "evidence": {
                "campaigns": sum(
                    1
                    for c in campaigns
                    if (c["signal_environment"].get(k) or {}).get("score") is not None
                )
            },
        }
    return env


def save_exclusions(ws: Workspace, exclusions: list[dict[str, Any]], as_of: date) -> None:
    """Replace the check-made exclusions in the workspace (manual ones are kept)."""
    if ws.backend != "duckdb":
        from signalloop.backends import save_exclusions as portable

        portable(ws, exclusions, as_of)
        return
    import pyarrow as pa

    from signalloop.backends import EXCLUSIONS_SCHEMA, check_exclusion_rows

    ws.con.execute(EXCLUSIONS_DDL)
    # one statement for all (one a window cost 0.25 s for the 581 windows of a doubled
    # 1,000-campaign history, and windows accumulate with the history)
    new = pa.Table.from_pylist(
        check_exclusion_rows(exclusions, as_of), EXCLUSIONS_SCHEMA.to_pyarrow()
    )
    with ws.transaction() as con:
        con.execute("DELETE FROM exclusions WHERE source = 'check'")
        con.register("_exclusions_new", new)
        try:
            con.execute("INSERT INTO exclusions SELECT * FROM _exclusions_new")
        finally:
            con.unregister("_exclusions_new")


def load_exclusions(ws: Workspace) -> list[dict[str, Any]]:
    """Every stored exclusion window (campaign, start, end or None, reason, source)."""
    if "exclusions" not in ws.ibis.list_tables():
        return []
    t = ws.table("exclusions").order_by(["campaign_id", "start"])
    return [
        {**r, "start": r["start"].isoformat(), "end": r["end"].isoformat() if r["end"] else None}
        for r in t.select("campaign_id", "start", "end", "reason", "source")
        .to_pyarrow()
        .to_pylist()
    ]


def exclusions_csv(exclusions: list[dict[str, Any]], as_of: date | None = None) -> str:
    """Exclusions in the shape of Google Ads' bidding data exclusions (one row a window).

    Columns: Name, Scope, Campaigns, Devices, Start time, End time, Description. An open
    window ends at the end of the as-of day (extend it when the fix is confirmed).
    """
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["Name", "Scope", "Campaigns", "Devices", "Start time", "End time", "Description"])
    for i, e in enumerate(exclusions, start=1):
        end = e["end"] or (as_of.isoformat() if as_of else e["start"])
        w.writerow(
            [
                f"signalloop exclusion {i}: {e['campaign_id']} {e['start']}",
                "CAMPAIGN",
                e["campaign_id"],
                "",
                f"{e['start']} 00:00:00",
                f"{end} 23:59:59",
                e["reason"][:200],
            ]
        )
    return buf.getvalue()


def windows_by_campaign(
    windows: Iterable[Mapping[str, Any]], as_of: date
) -> dict[Any, list[tuple[date, date]]]:
    """Exclusion windows (``campaign_id``, ``start``, ``end`` or ``None``) as ``(start, end)``
    dates per campaign, an open window ending on ``as_of``; what :func:`excluded_days` reads.
    """
    out: dict[Any, list[tuple[date, date]]] = {}
    for w in windows:
        end = date.fromisoformat(w["end"]) if w["end"] else as_of
        out.setdefault(w["campaign_id"], []).append((date.fromisoformat(w["start"]), end))
    return out


def excluded_days(
    by_campaign: Mapping[Any, list[tuple[date, date]]], campaign: Any, first: date, n_days: int
) -> Any:
    """Which of the ``n_days`` days from ``first`` lie in an exclusion window of ``campaign``
    or of the whole account (campaign ``None``): a boolean array, each window one slice.

    >>> w = windows_by_campaign(
    ...     [{"campaign_id": "c1", "start": "2026-03-02", "end": "2026-03-03"},
    ...      {"campaign_id": None, "start": "2026-03-05", "end": None}],
    ...     as_of=date(2026, 3, 5))
    >>> excluded_days(w, "c1", date(2026, 3, 1), 5).tolist()
    [False, True, True, False, True]
    >>> excluded_days(w, "c2", date(2026, 3, 1), 5).tolist()
    [False, False, False, False, True]
    """
    import numpy as np

    out = np.zeros(n_days, dtype=bool)
    for start, end in [*by_campaign.get(campaign, []), *by_campaign.get(None, [])]:
        lo = max((start - first).days, 0)
        out[lo : max((end - first).days + 1, lo)] = True
    return out


def without_exclusions(ws: Workspace, t: Any, campaign: str, day: Any) -> Any:
    """``t`` without the rows that fall in a stored exclusion window of their campaign.

    ``campaign`` names ``t``'s campaign column and ``day`` is a date expression over ``t``
    (for example ``t.ts.date()``). Open windows run to the end of time. Every computation that
    learns from the data (nowcast, phase, models, allocation) filters through this.
    """
    import ibis

    if "exclusions" not in ws.ibis.list_tables():
        return t
    ex = ws.table("exclusions")
    far = ibis.literal(date(9999, 12, 31))
    return anti_join(
        ws,
        t,
        ex,
        lambda x: [x.campaign_id == t[campaign], x.start <= day, x["end"].fill_null(far) >= day],
    )


def anti_join(ws: Workspace, t: Any, other: Any, predicates: Callable[[Any], list[Any]]) -> Any:
    """``t``'s rows that no row of ``other`` matches, on any backend.

    DuckDB runs ibis's anti-join; elsewhere (the PostgreSQL dialect has no ``ANTI JOIN``,
    and the generated SQL keeps one inside nested queries) it is a left join keeping the rows
    that found no match, which is the same set: a matched row is dropped however many
    matches it has, an unmatched one appears once. ``predicates`` builds the join conditions
    from the ``other`` it is given.
    """
    import ibis

    if ws.backend == "duckdb":
        return t.anti_join(other, predicates(other))
    hit = other.mutate(_anti_hit=ibis.literal(1))
    j = t.left_join(hit, predicates(hit))
    return j.filter(j._anti_hit.isnull()).select(*t.columns)
