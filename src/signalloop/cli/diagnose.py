"""``signalloop diagnose`` and ``lens``: what is wrong and whether to scale (library:
:mod:`signalloop.diagnose`, :mod:`signalloop.lens`).
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
    _parse_date,
    emit_json,
    err,
    handle_errors,
    out,
)
from signalloop.errors import UsageError


@handle_errors
def diagnose(
    as_of: AsOfOption = None,
    min_severity: Annotated[
        str, typer.Option("--min-severity", help="Show info, warn or critical and above.")
    ] = "info",
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """What is wrong, per campaign and account, with its evidence and the recovery action."""
    from signalloop.config import load_settings
    from signalloop.diagnose import diagnose as run_diagnose
    from signalloop.run import model_evidence
    from signalloop.store import Workspace

    if min_severity not in SEVERITY_ORDER:
        raise UsageError(f"--min-severity must be info, warn or critical, got {min_severity!r}")
    settings = load_settings(config)
    day = _parse_date(as_of, "--as-of")
    with Workspace(db) as ws, err.status("diagnosing", spinner="dots"):
        doc = run_diagnose(ws, day, settings=settings, models=model_evidence(ws))
    if as_json:
        emit_json(doc)
        return
    print_diagnoses(doc, min_severity)


SEVERITY_ORDER = {"info": 0, "warn": 1, "critical": 2}


def print_diagnoses(doc: dict[str, Any], min_severity: str = "info") -> None:
    """The diagnosis table, most severe first, from ``min_severity`` up."""
    t = Table(title=f"diagnoses as of {doc['as_of']}", title_justify="left")
    for col in (
        "severity",
        "campaign",
        "failure",
        "at stake",
        "root cause",
        "do this",
        "days",
        "conf.",
    ):
        t.add_column(col)
    colour = {"critical": "red", "warn": "yellow", "info": "dim"}
    for d in doc["diagnoses"]:
        if SEVERITY_ORDER[d["severity"]] < SEVERITY_ORDER[min_severity]:
            continue
        t.add_row(
            f"[{colour[d['severity']]}]{d['severity']}[/]",
            d["campaign_id"] or "account",
            d["failure_type"],
            escape(impact_text(d.get("impact") or {})),
            escape(d["root_cause"]),
            escape(d["recovery_action"]),
            "-" if d["expected_recovery_days"] is None else f"{d['expected_recovery_days']:g}",
            f"{d['confidence']:.2f}",
        )
    out.print(t)


def impact_text(impact: dict[str, Any]) -> str:
    """A diagnosis' money at stake in one short line: spend a day, share, conversions a week.

    >>> impact_text({"spend_per_day": 265.85, "share_of_account_spend": 0.164,
    ...              "conversions_per_week": 97.0, "conversions_source": "first_party"})
    '265.85/day (16% of spend), 97 conv./week'
    >>> impact_text({"spend_per_day": None})
    '-'
    """
    spend = impact.get("spend_per_day")
    if spend is None:
        return "-"
    text = f"{spend:,.2f}/day"
    share = impact.get("share_of_account_spend")
    if share is not None:
        text += f" ({share:.0%} of spend)" if share >= 0.01 or share == 0 else " (<1% of spend)"
    conv = impact.get("conversions_per_week")
    if conv is not None:
        platform = impact.get("conversions_source") == "platform_reported"
        text += f", {conv:,.0f} {'platform ' if platform else ''}conv./week"
    return text


@handle_errors
def lens(
    as_of: AsOfOption = None,
    fail_on_keep_scoped: Annotated[
        bool,
        typer.Option("--fail-on-keep-scoped", help="Exit 1 unless the verdict is scale."),
    ] = False,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """The seven questions before scaling spend: scale, or keep scoped and fix the weakest."""
    from signalloop.lens import lens as run_lens

    with err.status("reading the signals", spinner="dots"):
        doc = _estimate(run_lens, as_of, db, config)
    if as_json:
        emit_json(doc)
    else:
        print_lens(doc)
    if fail_on_keep_scoped and doc["verdict"] != "scale":
        raise typer.Exit(1)


def print_lens(doc: dict[str, Any]) -> None:
    """The seven lens questions with the verdict in the title."""
    verdict = doc["verdict"]
    colour = "green" if verdict == "scale" else "yellow"
    t = Table(
        title=f"decision lens as of {doc['as_of']}: [{colour}]{verdict}[/]"
        + (f" (fix {doc['weakest']} first)" if doc["weakest"] else ""),
        title_justify="left",
    )
    t.add_column("question")
    t.add_column("passed")
    t.add_column("evidence")
    for c in doc["checks"]:
        ok = "[green]yes[/]" if c["passed"] else "[red]no[/]"
        t.add_row(c["name"], ok, escape(str(c["evidence"].get("message", ""))))
    out.print(t)
