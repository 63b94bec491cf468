"""``signalloop apply``: a run's allocation applied to the connected ad accounts (library:
:mod:`signalloop.connect.apply`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from signalloop.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    _parse_date,
    handle_errors,
    out,
    run_and_report,
)
from signalloop.errors import UsageError

if TYPE_CHECKING:
    from signalloop.connect.apply import ApplyResult
    from signalloop.store import Workspace

_STYLE = {
    "applied": "green",
    "restored": "green",
    "would_apply": "cyan",
    "would_restore": "cyan",
    "refused": "yellow",
    "failed": "red",
}


@handle_errors
def apply_cmd(
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="The day whose run's allocation to apply (YYYY-MM-DD) \\[default: the newest "
            "run's].",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Read and check every budget, send nothing (the default)."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Apply: send the new budgets.")] = False,
    rollback: Annotated[
        str | None,
        typer.Option(
            "--rollback",
            metavar="RUN",
            help="Restore the budgets an apply replaced: its apply id, or its run's id.",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Apply the day's allocation to Meta and Google Ads budgets, within the guardrails.

    A dry run unless --yes. Refuses, per line: a change over the daily limit, a campaign the
    gate holds or that is in learning, a budget someone changed on the platform since the
    workspace last saw it. Every change is recorded in changes (actor automation).

    Exit 1 when the platform refused a line.
    """
    from signalloop.config import load_settings
    from signalloop.connect.apply import apply
    from signalloop.connect.apply import rollback as undo

    if dry_run and yes:
        raise UsageError("--dry-run and --yes contradict each other: choose one")
    if rollback is not None and as_of is not None:
        raise UsageError("--rollback names an apply or a run: --as-of does not go with it")
    day = _parse_date(as_of, "--as-of")
    settings = load_settings(config)

    def work(ws: Workspace, bar: Callable[[str, float | None], None]) -> ApplyResult:
        if rollback is not None:
            return undo(ws, rollback, settings=settings, live=yes)
        return apply(ws, settings=settings, as_of=day, live=yes, progress=bar)

    res = run_and_report(
        db, work, progress=not as_json and sys.stderr.isatty(), as_json=as_json, show=print_apply
    )
    if any(ln.status == "failed" for ln in res.lines):
        raise typer.Exit(1)


def print_apply(doc: dict[str, Any]) -> None:
    """One apply: a line per budget, then the counts."""
    what = "rollback" if doc["rollback_of"] else "apply"
    undoes = f", restoring what {doc['rollback_of']} changed" if doc["rollback_of"] else ""
    out.print(
        f"[bold]{what}[/] {doc['apply_id']} ({doc['mode']}){undoes}; run "
        f"{doc['run_id'] or '?'}, as of {doc['as_of']}",
        highlight=False,
    )
    for ln in doc["lines"]:
        style = _STYLE.get(ln["status"], "dim")
        budgets = ""
        if ln["platform_budget"] is not None and ln["new_budget"] is not None:
            budgets = f" {ln['platform_budget']:,.2f} -> {ln['new_budget']:,.2f}"
            if ln["change_pct"] is not None:
                budgets += f" ({ln['change_pct']:+.1f}%)"
        ent = ln["campaign_id"]
        if ln["level"] != "campaign":
            ent += f"/{ln['entity_id']}"
        out.print(
            f"  {ln['platform'] or '?'} {ln['level']} {escape(ent)}:{budgets} "
            f"[{style}]{ln['status']}[/]" + (f": {escape(ln['reason'])}" if ln["reason"] else ""),
            highlight=False,
        )
    counts = ", ".join(f"{n} {k}" for k, n in doc["counts"].items())
    out.print(f"  {counts or 'no budget to change'}", highlight=False)
    if doc["changes_recorded"]:
        out.print(f"  {doc['changes_recorded']} change(s) recorded in changes", highlight=False)
    for n in doc["notes"]:
        out.print(f"  note: {escape(n)}", highlight=False)
