"""``signalloop allocate``: tomorrow's budgets (library: :mod:`signalloop.allocate`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from signalloop.cli.common import (
    AsOfOption,
    ConfigOption,
    DbOption,
    JsonOption,
    _parse_date,
    emit_json,
    err,
    handle_errors,
    out,
)


@handle_errors
def allocate(
    budget: Annotated[float, typer.Option("--budget", help="Total daily budget to split.")],
    objective: Annotated[
        str, typer.Option(help="What to maximise: conversions or value.")
    ] = "conversions",
    cpa_cap: Annotated[
        float | None, typer.Option("--cpa-cap", help="Stop-loss cost per conversion.")
    ] = None,
    as_of: AsOfOption = None,
    policy: Annotated[str, typer.Option(help="Allocation policy by name.")] = "guarded_bayes",
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Daily budget per campaign from a Bayesian policy with priors and guardrails."""
    from signalloop.allocate.policy import allocate as run_allocate
    from signalloop.config import load_settings
    from signalloop.store import Workspace

    settings = load_settings(config)
    day = _parse_date(as_of, "--as-of")
    with Workspace(db) as ws, err.status("allocating", spinner="dots"):
        doc = run_allocate(
            ws,
            budget,
            objective=objective,
            cpa_cap=cpa_cap,
            as_of=day,
            settings=settings,
            policy=policy,
        )
    if as_json:
        emit_json(doc)
        return
    print_allocation(doc)


def print_allocation(doc: dict[str, Any]) -> None:
    """Render an :func:`~signalloop.allocate.policy.allocate` result: table, then reasons."""
    t = Table(
        title=f"budget {doc['budget']:,.2f} a day as of {doc['as_of']} ({doc['policy']}, "
        f"{doc['objective']}; current = {doc['current_basis']})",
        title_justify="left",
    )
    for col in (
        "campaign",
        "current",
        "recommended",
        "change",
        "automation",
        "outcomes",
        "CPA (90%)",
        "P(best)",
    ):
        t.add_column(col, no_wrap=True)
    colour = {"manual": "red", "assisted": "yellow", "automated": "green"}
    for a in doc["arms"]:
        lo_hi = a["cpa_interval"]
        cpa = (
            f"{a['expected_cpa']:,.2f} ({lo_hi[0]:,.2f}-{lo_hi[1]:,.2f})"
            if a["expected_cpa"] is not None and lo_hi
            else "-"
        )
        change = f"{a['change_pct']:+.1f}%" if a["change_pct"] is not None else "new"
        t.add_row(
            a["campaign_id"],
            f"{a['current']:,.2f}",
            f"{a['recommended']:,.2f}",
            change,
            f"[{colour[a['automation']]}]{a['automation']}[/]",
            str(a.get("outcome_source", "-")).replace("_", " "),
            cpa,
            f"{a['p_best']:.2f}",
        )
    out.print(t)
    left, why = doc.get("unallocated") or 0.0, doc.get("unallocated_reason")
    if left:
        what = "left unallocated" if left > 0 else "over-allocated"
        out.print(f"  {abs(left):,.2f} {what}: {why}", highlight=False)
    for a in doc["arms"]:
        own = [r for r in a["reasons"] if r != why]
        if own:
            out.print(f"  {a['campaign_id']}: {'; '.join(own)}", highlight=False)
