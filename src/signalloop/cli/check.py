"""``signalloop check``: the signal checks and their gates (library:
:mod:`signalloop.checks`).
"""

from __future__ import annotations

from pathlib import Path
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
from signalloop.errors import UsageError


@handle_errors
def check(
    as_of: AsOfOption = None,
    fail_on: Annotated[
        str | None,
        typer.Option(
            "--fail-on",
            help="Exit 1 when a campaign is held (hold), or on any critical / warn finding.",
        ),
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only this check (repeatable).")
    ] = None,
    exclusions_csv: Annotated[
        Path | None,
        typer.Option(
            "--exclusions-csv", help="Write outage windows as Google Ads data exclusions CSV."
        ),
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check whether the signals are fit to learn from; gate each campaign open or hold."""
    from signalloop.checks import exclusions_csv as to_csv
    from signalloop.checks import run_checks
    from signalloop.config import load_settings
    from signalloop.store import Workspace

    if fail_on not in (None, "hold", "critical", "warn"):
        raise UsageError(f"--fail-on expects hold, critical or warn, got {fail_on!r}")
    settings = load_settings(config)
    day = _parse_date(as_of, "--as-of")
    with Workspace(db) as ws, err.status("checking signals", spinner="dots"):
        report = run_checks(ws, as_of=day, settings=settings, only=only)
    if exclusions_csv is not None:
        exclusions_csv.write_text(to_csv(report.exclusions, report.as_of))
    doc = report.to_dict()
    if as_json:
        emit_json(doc)
    else:
        print_check(doc)
        if exclusions_csv is not None:
            out.print(f"exclusions written to {exclusions_csv}", highlight=False)
    if fail_on == "hold" and report.held:
        raise typer.Exit(1)
    levels = {"critical": ("critical",), "warn": ("critical", "warn")}.get(fail_on or "", ())
    if any(f.severity in levels for f in report.findings):
        raise typer.Exit(1)


def print_check(doc: dict[str, Any], min_severity: str = "info") -> None:
    """Render a check report as Rich tables on stdout (findings from ``min_severity`` up)."""
    from signalloop.checks.base import SEVERITY_RANK
    from signalloop.checks.engine import ENVIRONMENT

    t = Table(title=f"gates as of {doc['as_of']}", title_justify="left")
    t.add_column("campaign")
    t.add_column("gate")
    for k in ENVIRONMENT:
        t.add_column(k.replace("_", " "), justify="right")
    t.add_column("held by")
    for c in doc["campaigns"]:
        env = c["signal_environment"]
        t.add_row(
            c["campaign_id"],
            "[bold red]hold[/]" if c["gate"] == "hold" else "[green]open[/]",
            *[
                f"{env[k]['score']:.2f}" if (env.get(k) or {}).get("score") is not None else "-"
                for k in ENVIRONMENT
            ],
            ", ".join(c["reasons"]),
        )
    acct = doc["signal_environment"]
    t.add_row(
        "[bold]account[/]",
        "",
        *[f"{acct[k]['score']:.2f}" if acct[k]["score"] is not None else "-" for k in ENVIRONMENT],
        "",
    )
    out.print(t)
    f = Table(title="findings, most severe first", title_justify="left", show_lines=False)
    f.add_column("severity")
    f.add_column("check")
    f.add_column("campaign")
    f.add_column("finding")
    colour = {"critical": "bold red", "warn": "yellow", "info": "dim"}
    for x in doc["findings"]:
        if SEVERITY_RANK[x["severity"]] < SEVERITY_RANK[min_severity]:
            continue
        f.add_row(
            f"[{colour[x['severity']]}]{x['severity']}[/]",
            x["check"],
            x["campaign_id"] or "account",
            x["message"],
        )
    out.print(f)
    if doc["exclusions"]:
        out.print(
            "exclusions (left out of learning): "
            + "; ".join(
                f"{e['campaign_id']} {e['start']}..{e['end'] or 'open'}" for e in doc["exclusions"]
            ),
            highlight=False,
        )
