"""``signalloop run``: the whole loop, and how a run reads on the terminal (library:
:mod:`signalloop.run`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from signalloop.cli.allocate import print_allocation
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
    print_model,
    progress_bar,
)
from signalloop.cli.diagnose import print_diagnoses, print_lens
from signalloop.cli.ingest import _print_ingest, print_learnable
from signalloop.errors import InputError, UsageError


@handle_errors
def run_loop(
    as_of: AsOfOption = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for report.html and report.json \\[default: \\[run] out, else "
            "signalloop-report].",
            show_default=False,
        ),
    ] = None,
    inbox: Annotated[
        Path | None,
        typer.Option(
            "--inbox",
            help="Folder of new exports to ingest first \\[default: \\[run] inbox].",
            show_default=False,
        ),
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option(
            "--budget",
            help="Daily budget to allocate \\[default: \\[run] budget, else the last 7 days' "
            "mean spend].",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """The whole loop, ingest to lens, writing report.html and report.json.

    In order: ingest new files from the inbox, check the signals, nowcast, learning phase,
    creative fatigue, refresh the models that are due, allocate, diagnose, read the lens.
    """
    from signalloop.config import load_settings
    from signalloop.runs import execute
    from signalloop.store import Workspace

    settings = load_settings(config)
    day = _parse_date(as_of, "--as-of")
    if budget is not None and budget <= 0:
        raise UsageError(f"--budget must be a positive daily amount, got {budget:g}")
    with Workspace(db) as ws, progress_bar(not as_json or sys.stderr.isatty()) as progress:
        doc = execute(
            ws,
            trigger="cli",
            actor=None,
            as_of=day,
            settings=settings,
            out_dir=out_dir if out_dir is not None else settings.run.out,
            inbox=inbox,
            budget=budget,
            progress=progress,
        )
    if as_json:
        emit_json(run_summary(doc))
    else:
        print_run(doc)
    refused = [p for p in doc.get("pull") or [] if p["status"] == "error"]
    if refused:
        raise UsageError(
            f"{refused[0]['platform']} was not pulled; the loop ran without it "
            f"({refused[0]['message']})"
        )
    applied = doc.get("apply") or {}
    if applied.get("status") == "error":
        raise UsageError(f"the allocation was not applied ({applied['message']})")
    errors = (doc["inbox"] or {}).get("errors", [])
    if errors:
        first = errors[0]
        raise InputError(
            f"{len(errors)} inbox file(s) could not be ingested; the loop ran without them "
            f"(first: {first['message']})"
        )


def run_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """What ``run --json`` prints: the run without its chart data (all of it is report.json)."""
    keep = ("as_of", "workspace", "inbox", "learnable", "models", "allocation", "diagnosis", "lens")
    summary = {k: doc[k] for k in keep}
    summary["pull"] = doc.get("pull")
    summary["apply"] = doc.get("apply")
    summary["gates"] = [
        {"campaign_id": c["campaign_id"], "gate": c["gate"], "reasons": c["reasons"]}
        for c in doc["checks"]["campaigns"]
    ]
    summary["aggregates"] = doc.get("aggregates")
    summary["timings"] = doc["timings"]
    summary["report"] = doc["report"]
    return summary


def _aggregates_text(agg: dict[str, Any]) -> str:
    """What the run did to the stored aggregates, in one line.

    >>> _aggregates_text({"attribution": {"refresh": "incremental"},
    ...                   "rollups": {"touch_daily": {"refresh": "incremental", "days": 1},
    ...                               "crm_daily": {"refresh": "unchanged"},
    ...                               "crm_record_flags": {"refresh": "incremental",
    ...                                                    "keys": 12}}}).split("; ")[1]
    'touch_daily 1 day again, crm_daily unchanged, crm_record_flags 12 records again'
    """

    def one(r: dict[str, Any]) -> str:
        if r.get("refresh") == "incremental":
            n, what = (r["keys"], "record") if "keys" in r else (r.get("days") or 0, "day")
            return f"{int(n)} {what}{'s' if int(n) != 1 else ''} again"
        return str(r.get("refresh"))

    head = f"attribution {agg.get('attribution', {}).get('refresh', 'not read')}"
    rolled = ", ".join(f"{name} {one(r)}" for name, r in agg.get("rollups", {}).items())
    return f"{head}; {rolled}" if rolled else head


def print_run(doc: dict[str, Any], *, inbox: bool = True) -> None:
    """A run on the terminal: inbox, models, allocation, warn+ diagnoses, lens, report path."""
    for p in doc.get("pull") or []:
        if p["status"] == "error":
            err.print(f"[bold red]not pulled[/] {p['platform']}: {escape(p['message'])}")
            continue
        err.print(
            f"pulled {p['platform']} {p['since']}..{p['until']}: {p['rows_loaded']:,} new, "
            f"{p['rows_restated']:,} restated, {p['rows_unchanged']:,} unchanged, "
            f"{p['rows_quarantined']:,} quarantined"
            + (f"; [red]{len(p['failed'])} range(s) not read[/]" if p["failed"] else ""),
            highlight=False,
        )
        ch = p.get("changes") or {}
        if ch.get("status") == "failed":
            err.print(f"[red]edit history not read[/] {p['platform']}: {escape(ch['error'])}")
        elif ch:
            err.print(
                f"  edits {p['platform']}: {ch['rows_loaded']:,} new, {ch['rows_restated']:,} "
                f"restated, {ch['rows_unchanged']:,} unchanged",
                highlight=False,
            )
    box = doc.get("inbox") if inbox else None
    if box is not None:
        for f in box["files"]:
            _print_ingest(f)
        for x in box["not_taken"]:
            err.print(f"[yellow]not taken[/] {escape(x['file'])}: {x['reason']}", highlight=False)
        for x in box["errors"]:
            err.print(f"[bold red]not ingested[/] {escape(x['message'])}", highlight=False)
    agg = doc.get("aggregates")
    if agg:
        err.print(f"[dim]aggregates: {_aggregates_text(agg)}[/]", highlight=False)
    if doc.get("learnable"):
        print_learnable(doc["learnable"], compact=True)
    for m in doc["models"]:
        print_model(m)
    if doc["allocation"] is not None:
        print_allocation(doc["allocation"])
    print_diagnoses(doc["diagnosis"], min_severity="warn")
    print_lens(doc["lens"])
    if doc.get("push"):
        print_pushes(doc["push"])
    applied = doc.get("apply")
    if applied and applied["status"] != "ok":
        style = "bold red" if applied["status"] == "error" else "dim"
        err.print(f"[{style}]budgets not applied[/]: {escape(applied['message'])}")
    elif applied:
        counts = ", ".join(f"{n} {k}" for k, n in applied["counts"].items()) or "no line"
        out.print(
            f"[bold]budgets[/] ({applied['mode']}, {applied['apply_id']}): {counts} "
            "(signalloop apply shows each line)",
            highlight=False,
        )
    out.print(
        f"\nreport: {doc['report']['html']}\n(data: {doc['report']['json']})", highlight=False
    )


def print_pushes(push: dict[str, Any]) -> None:
    """One line per push target of a run."""
    mode = "live" if push["live"] else f"dry run, bodies in {push['out']}"
    out.print(f"[bold]sent back to the platforms[/] ({escape(mode)})", highlight=False)
    for name, t in push["targets"].items():
        if "counts" not in t:
            out.print(f"  {name}: {t['status']}: {escape(t['message'])}", highlight=False)
            continue
        c = t["counts"]
        moved = c.get("sent", c.get("planned", 0))
        why = ", ".join(f"{n:,} {k}" for k, n in t["skipped_by_reason"].items())
        left = ", ".join(f"{n:,} {k}" for k, n in t["left_out_by_reason"].items())
        out.print(
            f"  {name}: {moved:,} {'sent' if push['live'] else 'would be sent'}, "
            f"{c['already_sent']:,} already sent"
            + (f"; stopped by validation: {why}" if why else "")
            + (f"; left out by the platform's rules: {left}" if left else ""),
            highlight=False,
        )
