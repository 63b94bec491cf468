"""``signalloop nowcast``, ``phase`` and ``fatigue``: the campaign state estimates (library:
:mod:`signalloop.nowcast`, :mod:`signalloop.phase`, :mod:`signalloop.fatigue`).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from signalloop.cli.common import (
    AsOfOption,
    ConfigOption,
    DbOption,
    JsonOption,
    _estimate,
    emit_json,
    err,
    handle_errors,
    out,
)
from signalloop.errors import UsageError


@handle_errors
def nowcast(
    as_of: AsOfOption = None,
    days: Annotated[int, typer.Option(help="Cohort days to show in the table.")] = 7,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Conversions and value that recent cohorts will still receive; CPA and ROAS both ways."""
    from signalloop.nowcast import nowcast as run_nowcast

    with err.status("fitting delays", spinner="dots"):
        report = _estimate(run_nowcast, as_of, db, config)
    doc = report.to_dict()
    if doc.get("as_of") is None:
        raise UsageError(
            f"workspace {db or 'signalloop.duckdb'} holds no clicks or conversions yet: "
            "ingest something first (signalloop ingest KIND FILE)"
        )
    if as_json:
        emit_json(doc)
    else:
        out.print(report.to_text(days=days), highlight=False)


@handle_errors
def phase(
    as_of: AsOfOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Learning phase per ad set: learning, learning-limited or stable; resets and who made them."""
    from signalloop.phase import phase as run_phase

    doc = _estimate(run_phase, as_of, db, config).to_dict()
    if as_json:
        emit_json(doc)
        return
    t = Table(
        title=f"learning phase as of {doc['as_of']} (threshold {doc['threshold']} per 7 days)",
        title_justify="left",
    )
    for col in (
        "campaign",
        "ad set",
        "state",
        "conv. 7d",
        "resets (human)",
        "days lost",
        "last significant edit",
        "evaluate from",
    ):
        t.add_column(col, no_wrap=True)
    colour = {"stable": "green", "learning": "yellow", "learning_limited": "red", "unknown": "dim"}
    for e in doc["entities"]:
        last = e["last_significant_edit"]
        t.add_row(
            e["campaign_id"],
            e["entity_id"],
            f"[{colour[e['state']]}]{e['state']}[/]",
            "-" if e["conversions_7d"] is None else str(e["conversions_7d"]),
            f"{len(e['resets'])} ({e['human_resets']})",
            str(e["days_lost"]),
            f"{last['date']} {last['field']} ({last['actor']})" if last else "-",
            e["evaluation_ready_on"] or "-",
        )
    out.print(t)
    for e in doc["entities"]:
        out.print(f"  {e['entity_id']}: {e['recommendation']}", highlight=False)


@handle_errors
def fatigue(
    as_of: AsOfOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Creative fatigue: CTR decay per creative with its uncertainty; starvation per campaign."""
    from signalloop.fatigue import fatigue as run_fatigue

    doc = _estimate(run_fatigue, as_of, db, config).to_dict()
    if as_json:
        emit_json(doc)
        return
    t = Table(title=f"live creatives as of {doc['as_of']}", title_justify="left")
    for col in (
        "campaign",
        "creative",
        "age",
        "CTR start",
        "CTR now",
        "relative (90%)",
        "status",
        "onset",
        "days to fatigue",
        "spend 7d",
    ):
        t.add_column(col, no_wrap=True)
    colour = {"fresh": "green", "peaking": "yellow", "fatigued": "red"}
    for c in doc["creatives"]:
        if not c["live"]:
            continue
        lo, hi = c["relative_ctr_90"]
        t.add_row(
            c["campaign_id"],
            c["creative_id"],
            f"{c['days']}d",
            f"{c['ctr_start']:.2%}",
            f"{c['ctr_now']:.2%}",
            f"{c['relative_ctr']:.2f} ({lo:.2f}-{hi:.2f})",
            f"[{colour[c['status']]}]{c['status']}[/]",
            c["onset"] or "-",
            str(c["days_to_fatigue"]) if c["days_to_fatigue"] is not None else "-",
            f"{c['spend_7d']:,.0f}",
        )
    out.print(t)
    if doc.get("missing"):
        out.print(
            f"[yellow]creative fatigue not judged[/]: missing {escape(doc['missing'])}; send "
            f"{escape(doc['unlock'])}",
            highlight=False,
        )
    for camp in doc["campaigns"]:
        style = "bold red" if camp["starvation"] else "dim"
        out.print(f"  [{style}]{camp['campaign_id']}[/]: {camp['message']}", highlight=False)


def print_state(state: dict[str, Any]) -> None:
    """One table per campaign: nowcast CPA, learning state of its ad sets, creatives."""
    t = Table(title="campaign state (signalloop nowcast / phase / fatigue)", title_justify="left")
    for col in (
        "campaign",
        "CPA 7d observed",
        "CPA 7d nowcast",
        "ad sets by state",
        "human resets",
        "live creatives",
        "fatigued",
        "starving",
    ):
        t.add_column(col, justify="left" if col in ("campaign", "ad sets by state") else "right")
    camps = {c["campaign_id"]: c for c in state["nowcast"].get("campaigns", [])}
    starving = {c["campaign_id"]: c for c in state["fatigue"]["campaigns"]}
    for cid in sorted(set(camps) | set(starving)):
        w7 = (camps.get(cid) or {}).get("windows", {}).get("7d") or {}
        sets = [e for e in state["phase"]["entities"] if e["campaign_id"] == cid]
        counts: dict[str, int] = {}
        for e in sets:
            counts[e["state"]] = counts.get(e["state"], 0) + 1
        live = [c for c in state["fatigue"]["creatives"] if c["campaign_id"] == cid and c["live"]]

        def money(v: Any) -> str:
            return f"{v:,.2f}" if isinstance(v, int | float) else "-"

        t.add_row(
            cid,
            money(w7.get("observed_cpa")),
            money(w7.get("nowcast_cpa")),
            ", ".join(
                f"{n} {k.replace('learning_limited', 'limited')}" for k, n in sorted(counts.items())
            ),
            str(sum(e["human_resets"] for e in sets)),
            str(len(live)),
            str(sum(1 for c in live if c["status"] == "fatigued")),
            "yes" if starving.get(cid, {}).get("starvation") else "no",
        )
    out.print(t)
