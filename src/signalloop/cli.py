"""The ``signalloop`` command line: parse, call the library, format, translate errors.

Every command that computes something takes ``--json`` and then prints exactly one JSON
document on stdout; progress and messages go to stderr. Exit codes: 0 ok, 1 a problem the
user asked to fail on, 2 bad usage or bad input.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from signalloop import __version__
from signalloop.contract import KINDS
from signalloop.errors import InputError, SignalloopError, UsageError

app = typer.Typer(
    name="signalloop",
    help="Campaign learning engine: check marketing signals, learn from them, decide budgets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
# Messages never wrap mid-line (a long path must not split "1,143 loaded" across lines); piped
# output (CI logs, files) gets room for the tables instead of Rich's 80-column default.
err = Console(stderr=True, soft_wrap=True)
out = Console(width=None if sys.stdout.isatty() else 120, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Workspace DuckDB file (default: $SIGNALLOOP_DB, else ./signalloop.duckdb).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def handle_errors(fn: F) -> F:
    """Turn signalloop's errors into a one-line message on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (InputError, UsageError) as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except SignalloopError as exc:  # pragma: no cover - every raise site is one of the above
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def emit_json(doc: Any) -> None:
    """Write one JSON document to stdout."""
    sys.stdout.write(json.dumps(doc, indent=2, default=str, allow_nan=False) + "\n")


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[str, float | None], None]]:
    """A Rich progress display on stderr, yielded as a ``(label, fraction)`` callback."""
    if not enabled:
        yield lambda label, frac: None
        return
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    tasks: dict[str, Any] = {}
    current: list[Any] = []

    def update(label: str, frac: float | None) -> None:
        stem = label.split(" ", 1)[-1]
        if stem not in tasks:
            tasks[stem] = bar.add_task(label, total=1.0)
        task = tasks[stem]
        current[:] = [task]
        bar.update(task, description=label, completed=frac if frac is not None else 0.0)

    with bar:
        yield update


def _parse_date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} expects a date as YYYY-MM-DD, got {value!r}") from None


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Show the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"signalloop {__version__}")
        raise typer.Exit(0)


@app.command()
@handle_errors
def ingest(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(KINDS)}.")],
    files: Annotated[list[Path], typer.Argument(help="CSV (any delimiter, gzip) or Parquet.")],
    profile: Annotated[
        str, typer.Option(help="canonical, meta_ads, google_ads or hubspot.")
    ] = "canonical",
    mapping: Annotated[
        Path | None, typer.Option(help="TOML mapping file for any other export.")
    ] = None,
    report_date: Annotated[
        str | None,
        typer.Option("--date", help="Reporting date (YYYY-MM-DD) for an export without one."),
    ] = None,
    fail_on_quarantine: Annotated[
        bool, typer.Option("--fail-on-quarantine", help="Exit 1 if any row was quarantined.")
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load exports of one KIND into the workspace; bad rows go to quarantine with a reason."""
    from signalloop.contract import get_kind
    from signalloop.ingest import ingest_file
    from signalloop.store import Workspace

    get_kind(kind)
    day = _parse_date(report_date, "--date")
    results: list[dict[str, Any]] = []
    failure: InputError | None = None
    with Workspace(db) as ws, progress_bar(sys.stderr.isatty()) as progress:
        db_path = ws.path
        for f in files:
            try:
                r = ingest_file(
                    ws,
                    kind,
                    f,
                    profile=profile,
                    mapping=mapping,
                    report_date=day,
                    progress=progress,
                )
            except InputError as exc:
                failure = exc
                break
            results.append(r.to_dict())
            if not as_json:
                _print_ingest(r.to_dict())
    quarantined = sum(r["rows_quarantined"] for r in results)
    if as_json:
        doc: dict[str, Any] = {"db": db_path, "kind": kind, "files": results}
        if failure is not None:
            doc["error"] = {
                "file": failure.file,
                "line": failure.line,
                "column": failure.column,
                "message": str(failure),
            }
        emit_json(doc)
    elif quarantined:
        out.print(
            f"see them with: signalloop quarantine --kind {kind}" + (f" --db {db}" if db else ""),
            style="dim",
            highlight=False,
        )
    if failure is not None:
        if results:
            err.print(f"{len(results)} file(s) before it were ingested.", highlight=False)
        raise failure
    if fail_on_quarantine and quarantined:
        raise typer.Exit(1)


def _print_ingest(r: dict[str, Any]) -> None:
    if r["status"] == "skipped":
        err.print(f"[yellow]skipped[/] {r['file']}: {r['message']}", highlight=False)
        return
    out.print(
        f"[green]ingested[/] {r['file']} as {r['kind']} ({r['profile']}): "
        f"{r['rows_read']:,} rows read, [bold]{r['rows_loaded']:,} loaded[/], "
        f"{r['rows_quarantined']:,} quarantined, {r['rows_existing']:,} already present, "
        f"{r['rows_folded']:,} duplicate copies folded",
        highlight=False,
    )
    for code, n in r["quarantine_reasons"].items():
        out.print(f"    quarantined {n:,} x {code}", highlight=False)
    if r.get("message"):
        out.print(f"    note: {escape(r['message'])}", highlight=False)


@app.command()
@handle_errors
def quarantine(
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show (0 = all).")] = 20,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show quarantined rows: file, line, column, reason."""
    from signalloop.store import Workspace

    if kind is not None:
        from signalloop.contract import get_kind

        get_kind(kind)
    with Workspace(db, read_only=True) as ws:
        q = ws.table("quarantine")
        if kind:
            q = q.filter(q.kind == kind)
        total = int(q.count().execute())
        by_code = q.group_by(["kind", "code"]).aggregate(rows=q.count()).order_by(["kind", "code"])
        summary = by_code.to_pyarrow().to_pylist()
        rows = q.order_by(["ingest_id", "line"]).drop("raw", "problems")
        if limit:
            rows = rows.limit(limit)
        listed = rows.to_pyarrow().to_pylist()
    if as_json:
        emit_json({"total": total, "by_reason": summary, "rows": listed})
        return
    out.print(f"{total:,} quarantined rows", highlight=False)
    for s in summary:
        out.print(f"  {s['kind']:<12} {s['code']:<28} {s['rows']:>8,}", highlight=False)
    if listed:
        t = Table("kind", "file", "line", "column", "reason", show_lines=False)
        for r in listed:
            t.add_row(
                r["kind"], Path(r["file"]).name, str(r["line"]), r["column"] or "", r["reason"]
            )
        out.print(t)


@app.command()
@handle_errors
def status(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Summarise the workspace: rows per kind, quarantine, per-campaign spend and CPA."""
    from signalloop.store import Workspace
    from signalloop.summary import workspace_summary

    with Workspace(db, read_only=True) as ws:
        summary = workspace_summary(ws)
    if as_json:
        emit_json(summary)
    else:
        print_summary(summary)


def print_summary(summary: dict[str, Any]) -> None:
    """Render :func:`signalloop.summary.workspace_summary` as Rich tables on stdout."""
    t = Table(title=f"workspace {summary['db']}", title_justify="left")
    t.add_column("kind")
    t.add_column("rows in store", justify="right")
    t.add_column("quarantined", justify="right")
    t.add_column("duplicate copies folded", justify="right")
    for kind, info in summary["kinds"].items():
        t.add_row(kind, f"{info['rows']:,}", f"{info['quarantined']:,}", f"{info['folded']:,}")
    out.print(t)
    if summary["quarantine_by_reason"]:
        q = Table(title="quarantined rows by reason", title_justify="left")
        q.add_column("kind")
        q.add_column("reason")
        q.add_column("rows", justify="right")
        for r in summary["quarantine_by_reason"]:
            q.add_row(r["kind"], r["code"], f"{r['rows']:,}")
        out.print(q)
    c = Table(title="per campaign (conversions attributed per the contract)", title_justify="left")
    for col in ("campaign", "platform", "spend", "clicks", "conv.", "CPA", "value", "ROAS"):
        c.add_column(col, justify="left" if col in ("campaign", "platform") else "right")
    c.add_column("conversions by kind")
    for r in summary["campaigns"]:
        c.add_row(
            r["campaign_id"],
            r["platform"] or "",
            f"{r['spend']:,.0f}",
            f"{r['clicks']:,}",
            f"{r['conversions']:,}",
            f"{r['cpa']:,.2f}" if r["cpa"] is not None else "-",
            f"{r['value']:,.0f}",
            f"{r['roas']:.2f}" if r["roas"] is not None else "-",
            ", ".join(f"{k} {n:,}" for k, n in r["conversions_by_kind"].items()),
        )
    out.print(c)
    a = summary["attribution"]
    rules = ", ".join(f"{k}: {v:,}" for k, v in a.items() if k != "unattributed")
    if rules or a.get("unattributed"):
        out.print(
            f"conversions attributed by {rules or 'no rule'}; "
            f"unattributed: {a.get('unattributed', 0):,}",
            highlight=False,
        )
    else:
        out.print("no conversion events in the workspace yet", highlight=False)
    print_learnable(summary["learnable"])


def print_learnable(doc: dict[str, Any], *, compact: bool = False) -> None:
    """Render :func:`signalloop.shapes.learnable`: the shape, then what each capability uses
    (``compact``: only the capabilities that leave something out)."""
    if not doc["campaigns"]:
        out.print("no campaign with spend yet: nothing to learn from", highlight=False)
        return
    acct = doc["account"]
    shapes = ", ".join(f"{n} {s}" for s, n in acct["by_shape"].items())
    t = Table(
        title=f"what this workspace can learn from (data shape {acct['shape']}: {shapes})",
        title_justify="left",
    )
    t.add_column("capability")
    t.add_column("status")
    t.add_column("uses")
    t.add_column("left out")
    style = {"full": "green", "partial": "yellow", "mixed": "yellow", "unavailable": "red"}
    caps = [c for c in doc["capabilities"] if not compact or c["status"] != "full"]
    if not caps:
        out.print(f"every capability has the data it needs (data shape {acct['shape']})")
        return
    for cap in caps:
        uses = "\n".join(
            b["uses"] + (f" ({b['campaigns']})" if len(cap["bases"]) > 1 else "")
            for b in cap["bases"]
        )
        missing = ", ".join(cap["missing"]) if cap["status"] != "full" else ""
        t.add_row(
            cap["name"],
            f"[{style[cap['status']]}]{cap['status']}[/]",
            escape(uses),
            escape(missing),
        )
    out.print(t)
    shown = doc["unlock"][:3] if compact else doc["unlock"]
    for u in shown:
        out.print(f"to unlock {', '.join(u['unlocks'])}: send {u['export']}", highlight=False)
    if len(shown) < len(doc["unlock"]):
        out.print(
            f"({len(doc['unlock']) - len(shown)} more exports would unlock more: "
            "signalloop status lists them)",
            highlight=False,
        )
    for note in acct["notes"]:
        out.print(f"note: {note}", highlight=False)


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Settings file (default: $SIGNALLOOP_CONFIG, else ./signalloop.toml if present).",
        show_default=False,
    ),
]
AsOfOption = Annotated[
    str | None,
    typer.Option(
        "--as-of", help="Evaluate as of this day (YYYY-MM-DD) \\[default: last day with data]."
    ),
]


@app.command()
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


def _estimate(
    fn: Callable[..., Any], as_of: str | None, db: str | None, config: Path | None
) -> Any:
    """Run one campaign-state estimate (``fn(ws, day, settings=...)``) on a read-only workspace."""
    from signalloop.config import load_settings
    from signalloop.store import Workspace

    settings = load_settings(config)
    day = _parse_date(as_of, "--as-of")
    with Workspace(db, read_only=True) as ws:
        return fn(ws, day, settings=settings)


@app.command()
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


@app.command()
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


@app.command()
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
    for camp in doc["campaigns"]:
        style = "bold red" if camp["starvation"] else "dim"
        out.print(f"  [{style}]{camp['campaign_id']}[/]: {camp['message']}", highlight=False)


@app.command()
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


@app.command()
@handle_errors
def simulate(
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Folder to write the CSVs and truth.json (required without --policy)."
        ),
    ] = None,
    days: Annotated[int, typer.Option(min=1, help="Days to simulate.")] = 90,
    campaigns: Annotated[int, typer.Option(min=1, help="Number of campaigns.")] = 6,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same files.")] = 0,
    start: Annotated[str, typer.Option(help="First day (YYYY-MM-DD).")] = "2026-01-01",
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="NAME@CAMPAIGN:START-END (0-based days, inclusive); repeatable. "
            "CAMPAIGN is an id like c02, a number, or *.",
        ),
    ] = None,
    shape: Annotated[
        str,
        typer.Option(
            "--shape",
            help="Data shape to write: spend (spend.csv only, with platform-reported "
            "conversions), spend_conversions (+ conversions with campaign_id and click_ts), "
            "crm (+ crm) or full (all five kinds). Same world for every shape.",
        ),
    ] = "full",
    no_click_ts: Annotated[
        bool,
        typer.Option(
            "--no-click-ts",
            help="Write the conversions without their click_ts column.",
        ),
    ] = False,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy",
            help="Run this budget policy in a daily loop against the simulated account "
            "(guarded_bayes, even_split, greedy_cpa, epsilon_greedy, thompson) and print "
            "regret, learning resets caused and spend moved in held campaigns; the policy "
            "sees only what --shape (and --no-click-ts) would export.",
        ),
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option(
            "--budget",
            help="With --policy: total daily budget (default: the plan's on the last warm-up day).",
        ),
    ] = None,
    warmup: Annotated[
        int,
        typer.Option("--warmup", min=1, help="With --policy: days at the account's plan first."),
    ] = 7,
    as_json: JsonOption = False,
) -> None:
    """Simulate an ad account (canonical CSVs of a data shape and truth.json), with faults.

    With --policy, run the policy's time loop instead (allocate, deliver, observe with real
    delays, repeat) and print its totals against the oracle.
    """
    from signalloop import simulate as sim

    day0 = _parse_date(start, "--start")
    assert day0 is not None
    ids = sim.campaign_ids(campaigns)
    faults = tuple(sim.parse_fault(f, days=days, campaign_ids=ids) for f in (fault or []))
    if shape not in sim.SHAPES:
        raise UsageError(f"--shape expects one of {', '.join(sim.SHAPES)}, got {shape!r}")
    config = sim.SimulationConfig(
        days=days,
        campaigns=campaigns,
        seed=seed,
        start=day0,
        faults=faults,
        shape=shape,
        click_ts=not no_click_ts,
    )
    if policy is not None:
        from signalloop.allocate.loop import run_policy

        with err.status(f"running {policy} over {days} simulated days", spinner="dots"):
            res = run_policy(policy, config, budget=budget, warmup_days=warmup, random_state=seed)
        if as_json:
            emit_json(res.to_dict())
        else:
            print_loop(res.to_dict())
        return
    if budget is not None or warmup != 7:
        raise UsageError("--budget and --warmup need --policy")
    if out_dir is None:
        raise UsageError("--out is required (the folder for the CSVs), unless --policy is given")
    with err.status("simulating", spinner="dots"):
        result = sim.simulate(config)
        paths = sim.write(result, out_dir)
    rows = {k: t.num_rows for k, t in result.tables.items()}
    if as_json:
        emit_json(
            {"out": str(out_dir), "files": {k: str(v) for k, v in paths.items()}, "rows": rows}
        )
        return
    out.print(f"wrote {out_dir}/", highlight=False)
    for k, pth in paths.items():
        n = f"{rows[k]:,} rows" if k in rows else "ground truth"
        out.print(f"  {Path(pth).name:<18} {n}", highlight=False)


def print_loop(doc: dict[str, Any]) -> None:
    """The totals of a policy's time loop (``signalloop simulate --policy``)."""
    tot = doc["totals"]
    t = Table(
        title=f"policy {doc['policy']}: {tot['days']} days after {doc['warmup_days']} warm-up "
        f"days, budget {doc['budget']:,.2f} a day",
        title_justify="left",
    )
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("expected conversions, policy", f"{tot['expected']:,.1f}")
    t.add_row("expected conversions, oracle", f"{tot['oracle']:,.1f}")
    t.add_row("regret", f"{tot['regret']:,.1f} ({tot['regret_pct']:.1f}% of the oracle)")
    t.add_row("regret ignoring learning", f"{tot['regret_ignoring_learning_pct']:.1f}%")
    t.add_row("realised conversions", f"{tot['realised']:,.0f}")
    t.add_row("learning resets caused (ad sets)", f"{tot['resets_caused']}")
    t.add_row("spend moved in held campaigns", f"{tot['spend_moved_held']:,.2f}")
    t.add_row("held campaign-days", f"{tot['held_days']}")
    if "outcome_source" in tot:
        shape = doc["config"].get("shape", "full")
        t.add_row("outcomes the policy saw", f"{tot['outcome_source']} ({shape} shape)")
    if "breaches" in tot:
        t.add_row("guardrail breaches", f"{tot['breaches']}")
    out.print(t)
    out.print(
        "expected conversions are noise-free, at 80% of peak CTR and each ad set's learning-"
        "phase conversion rate (a reset costs); the oracle keeps its allocation, never "
        "resetting; fatigue beyond 80% is only in the realised conversions",
        highlight=False,
    )


@app.command()
@handle_errors
def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for the simulated CSVs and the workspace.")
    ] = Path("signalloop-demo"),
    seed: Annotated[int, typer.Option(help="Random seed of the simulated account.")] = 7,
    as_json: JsonOption = False,
) -> None:
    """Simulate a 90-day account with faults and run the whole loop on it (signalloop run)."""
    from signalloop.demo import run_demo

    with progress_bar(not as_json or sys.stderr.isatty()) as progress:
        summary = run_demo(out_dir, seed=seed, progress=progress)
    if as_json:
        emit_json(summary)
        return
    print_summary(summary)
    print_check(summary["checks"], min_severity="warn")
    print_state(summary["state"])
    print_run(summary, inbox=False)
    out.print(
        f"\nsimulated files and truth.json: {summary['data_dir']}\n"
        f"workspace: {summary['db']}\n"
        f"next, with --db {summary['db']}: signalloop run | check | diagnose | lens | nowcast "
        "| phase | fatigue | allocate --budget X | model backtest (each takes --json)",
        highlight=False,
    )


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


@app.command()
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


@app.command()
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


@app.command("run")
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
    from signalloop.run import run
    from signalloop.store import Workspace

    settings = load_settings(config)
    day = _parse_date(as_of, "--as-of")
    if budget is not None and budget <= 0:
        raise UsageError(f"--budget must be a positive daily amount, got {budget:g}")
    with Workspace(db) as ws, progress_bar(not as_json or sys.stderr.isatty()) as progress:
        doc = run(
            ws,
            as_of=day,
            settings=settings,
            out_dir=out_dir,
            inbox=inbox,
            budget=budget,
            progress=progress,
        )
    if as_json:
        emit_json(run_summary(doc))
    else:
        print_run(doc)
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
    summary["gates"] = [
        {"campaign_id": c["campaign_id"], "gate": c["gate"], "reasons": c["reasons"]}
        for c in doc["checks"]["campaigns"]
    ]
    summary["timings"] = doc["timings"]
    summary["report"] = doc["report"]
    return summary


def print_run(doc: dict[str, Any], *, inbox: bool = True) -> None:
    """A run on the terminal: inbox, models, allocation, warn+ diagnoses, lens, report path."""
    box = doc.get("inbox") if inbox else None
    if box is not None:
        for f in box["files"]:
            _print_ingest(f)
        for x in box["not_taken"]:
            err.print(f"[yellow]not taken[/] {escape(x['file'])}: {x['reason']}", highlight=False)
        for x in box["errors"]:
            err.print(f"[bold red]not ingested[/] {escape(x['message'])}", highlight=False)
    if doc.get("learnable"):
        print_learnable(doc["learnable"], compact=True)
    for m in doc["models"]:
        style = {"refreshed": "green", "fresh": "dim", "skipped": "yellow"}[m["status"]]
        out.print(
            f"model {m['outcome']}: [{style}]{m['status']}[/] ({escape(m.get('reason', ''))})",
            highlight=False,
        )
    if doc["allocation"] is not None:
        print_allocation(doc["allocation"])
    print_diagnoses(doc["diagnosis"], min_severity="warn")
    print_lens(doc["lens"])
    if doc.get("push"):
        print_pushes(doc["push"])
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


# ---------------------------------------------------------------------------- signalloop model
model_app = typer.Typer(
    help="Conversion-probability models: fit, score, backtest (workspace or file), route leads.",
    no_args_is_help=True,
)
app.add_typer(model_app, name="model")

OutcomeOption = Annotated[
    str,
    typer.Option("--outcome", help="How deep the label reaches: conversion, sql, won or value."),
]
HorizonOption = Annotated[
    int | None,
    typer.Option(
        "--horizon-days",
        help="Days a unit's outcome may take to arrive before it counts as a negative "
        "\\[default: conversion 7, value 14, sql 30, won 60].",
        show_default=False,
    ),
]
ModelDirOption = Annotated[
    Path | None,
    typer.Option(
        "--model-dir",
        help="Folder of the saved model \\[default: <workspace>.models/<outcome>].",
        show_default=False,
    ),
]


def _model_dir(db: str | None, outcome: str, model_dir: Path | None) -> Path:
    from signalloop.models.api import default_model_dir
    from signalloop.store import resolve_db_path

    return model_dir or default_model_dir(resolve_db_path(db), outcome)


def _bar_progress(update: Callable[[str, float | None], None]) -> Callable[[str, int, int], None]:
    return lambda step, done, total: update(f"fitting models ({step})", done / total)


@model_app.command("fit")
@handle_errors
def model_fit(
    outcome: OutcomeOption = "conversion",
    as_of: AsOfOption = None,
    horizon_days: HorizonOption = None,
    model_dir: ModelDirOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fit the model for one outcome on the workspace and save it with its model card."""
    from signalloop.models.api import fit_workspace

    folder = _model_dir(db, outcome, model_dir)
    with err.status("fitting", spinner="dots"):
        doc = _estimate(
            lambda ws, day, settings: fit_workspace(
                ws, outcome, folder=folder, as_of=day, settings=settings, horizon_days=horizon_days
            ),
            as_of,
            db,
            config,
        )
    if as_json:
        emit_json(doc)
        return
    ts = doc["time_split"]
    out.print(
        f"fitted the {outcome} model on {doc['rows']:,} {doc['unit']}s "
        f"({doc['positives']:,} positive, {doc['censored']:,} too recent to label, "
        f"{doc['excluded']:,} in exclusion windows), {doc['window'][0][:10]} to "
        f"{doc['window'][1][:10]}; calibration {doc['calibration']}\n"
        f"time-ordered check (first 70% -> last 30%): AUC {_num(ts['auc'])}, log loss "
        f"{_num(ts['log_loss'])}, Brier {_num(ts['brier'])}, ECE {_num(ts['ece'])}\n"
        f"saved to {doc['model_dir']} (model card: card.json)",
        highlight=False,
    )
    for flag in doc["feedback"]["flags"]:
        out.print(f"[yellow]feedback:[/] {flag['message']}", highlight=False)


def _num(v: Any, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


@model_app.command("score")
@handle_errors
def model_score(
    outcome: OutcomeOption = "conversion",
    as_of: AsOfOption = None,
    horizon_days: HorizonOption = None,
    model_dir: ModelDirOption = None,
    limit: Annotated[int, typer.Option(help="Units to show, highest first (0 = all).")] = 20,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score the units whose outcome has not arrived yet with the saved model."""
    from signalloop.models.api import score_workspace

    folder = _model_dir(db, outcome, model_dir)
    doc = _estimate(
        lambda ws, day, settings: score_workspace(
            ws, outcome, folder=folder, as_of=day, settings=settings, horizon_days=horizon_days
        ),
        as_of,
        db,
        config,
    )
    if as_json:
        emit_json(doc)
        return
    t = Table(
        title=f"{outcome} expected among {doc['scored']:,} open {doc['unit']}s",
        title_justify="left",
    )
    for col in ("campaign", "units", "expected"):
        t.add_column(col, justify="left" if col == "campaign" else "right")
    for c in doc["campaigns"]:
        t.add_row(c["campaign_id"], f"{c['units']:,}", f"{c['expected']:,.1f}")
    out.print(t)
    units = sorted(doc["units"], key=lambda u: -u["probability"])
    u = Table(title="highest probabilities", title_justify="left")
    idc = (
        next(k for k in units[0] if k not in ("campaign_id", "ts", "probability")) if units else ""
    )
    for col in (idc, "campaign", "time", "probability"):
        u.add_column(col, justify="right" if col == "probability" else "left")
    for r in units[: limit or None]:
        u.add_row(str(r[idc]), r["campaign_id"], r["ts"][:16], f"{r['probability']:.3f}")
    if units:
        out.print(u)


@model_app.command("backtest")
@handle_errors
def model_backtest(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="A table (CSV, delimiter sniffed, or Parquet); omit for the workspace."
        ),
    ] = None,
    outcome: OutcomeOption = "conversion",
    target: Annotated[
        str | None, typer.Option(help="FILE: the outcome column.", show_default=False)
    ] = None,
    positive: Annotated[
        str | None,
        typer.Option(help="FILE: the target value that counts as the outcome.", show_default=False),
    ] = None,
    time: Annotated[
        str | None, typer.Option("--time", help="FILE: a time column to order by.")
    ] = None,
    time_order: Annotated[
        str | None,
        typer.Option("--time-order", help="FILE: 'row' when the rows are already in time order."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", help="FILE: a column not to learn from (repeatable)."),
    ] = None,
    as_of: AsOfOption = None,
    horizon_days: HorizonOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Random split against the time-ordered live holdout, drift, and a retraining cadence."""
    from signalloop.config import load_settings
    from signalloop.models.api import backtest_file, backtest_workspace
    from signalloop.store import Workspace

    with progress_bar(not as_json or sys.stderr.isatty()) as update:
        if file is not None:
            if target is None:
                raise UsageError("model backtest FILE needs --target COLUMN (the outcome column)")
            doc = backtest_file(
                file,
                target=target,
                positive=positive,
                time=time,
                time_order=time_order,
                exclude=exclude,
                progress=_bar_progress(update),
            )
        else:
            if target or positive or time or time_order or exclude:
                raise UsageError(
                    "--target, --positive, --time, --time-order and --exclude are for a FILE; "
                    "the workspace backtest takes --outcome"
                )
            settings = load_settings(config)
            with Workspace(db, read_only=True) as ws:
                doc = backtest_workspace(
                    ws,
                    outcome,
                    as_of=_parse_date(as_of, "--as-of"),
                    settings=settings,
                    horizon_days=horizon_days,
                    progress=_bar_progress(update),
                )
            # beside a saved model of this outcome, the backtest is its cadence evidence (lens)
            folder = _model_dir(db, outcome, None)
            if (folder / "card.json").exists():
                (folder / "backtest.json").write_text(
                    json.dumps(doc, indent=2, default=str, allow_nan=False) + "\n"
                )
                err.print(f"saved beside the model: {folder / 'backtest.json'}", highlight=False)
    if as_json:
        emit_json(doc)
    else:
        print_backtest(doc)


@model_app.command("route")
@handle_errors
def model_route(
    outcome: Annotated[
        str, typer.Option("--outcome", help="The lead outcome the model predicts: sql or won.")
    ] = "sql",
    threshold: Annotated[
        float | None,
        typer.Option(help="Probability from which a lead goes to sales \\[default: 2x base rate]."),
    ] = None,
    require: Annotated[
        list[str] | None,
        typer.Option("--require", help="A CRM field that must be present (repeatable)."),
    ] = None,
    as_of: AsOfOption = None,
    horizon_days: HorizonOption = None,
    model_dir: ModelDirOption = None,
    limit: Annotated[int, typer.Option(help="Leads to show (0 = all).")] = 30,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Route open leads to sales, review or nurture: probability plus CRM-stage guardrails."""
    from signalloop.models.api import route_workspace

    folder = _model_dir(db, outcome, model_dir)
    doc = _estimate(
        lambda ws, day, settings: route_workspace(
            ws,
            folder=folder,
            outcome=outcome,
            as_of=day,
            threshold=threshold,
            settings=settings,
            required=tuple(require or ("user_id",)),
            horizon_days=horizon_days,
        ),
        as_of,
        db,
        config,
    )
    if as_json:
        emit_json(doc)
        return
    sm = doc["summary"]
    t = Table(
        title=f"lead routing as of {doc['as_of']} ({outcome} threshold {doc['threshold']:.3f}; "
        f"sales {sm.get('sales', 0)}, review {sm.get('review', 0)}, "
        f"nurture {sm.get('nurture', 0)})",
        title_justify="left",
    )
    for col in ("record", "campaign", "created", "probability", "route", "reasons"):
        t.add_column(col, justify="right" if col == "probability" else "left")
    colour = {"sales": "green", "review": "yellow", "nurture": "dim"}
    for lead in doc["leads"][: limit or None]:
        p = lead["probability"]
        t.add_row(
            lead["record_id"],
            lead["campaign_id"] or "-",
            str(lead["created"])[:16],
            "-" if p is None else f"{p:.3f}",
            f"[{colour.get(lead['route'], 'white')}]{lead['route']}[/]",
            "; ".join(r["message"] for r in lead["reasons"]),
        )
    out.print(t)


def print_backtest(doc: dict[str, Any]) -> None:
    """Render a backtest report as Rich tables."""
    t = Table(
        title=f"backtest of {doc['target']} on {doc['rows']:,} rows "
        f"({doc['positives']:,} positive)",
        title_justify="left",
    )
    for col in ("evaluation", "AUC", "log loss", "Brier", "ECE", "base rate"):
        t.add_column(col, justify="left" if col == "evaluation" else "right")
    for label, key in (
        ("random split 80/20", "random_split"),
        ("live: first 70% -> last 30%", "time_split"),
    ):
        s = doc[key]
        t.add_row(
            label,
            _num(s["auc"]),
            _num(s["log_loss"]),
            _num(s["brier"]),
            _num(s["ece"]),
            f"{s['base_rate']:.1%}",
        )
    out.print(t)
    g = doc["gap"]
    flag = "[red]overfit[/]" if doc["overfit"] else "[green]no overfitting flagged[/]"
    out.print(
        f"gap random - live: AUC {_num(g['auc'])}, log loss {_num(g['log_loss'])}: {flag} "
        f"(threshold {doc['overfit_threshold']})",
        highlight=False,
    )
    d = doc["drift"]
    moved = [f for f in d["features"] if f["shift"] != "stable"][:8]
    out.print(
        f"drift: base rate {d['base_rate_train']:.1%} in training -> {d['base_rate_holdout']:.1%} "
        "in the holdout; "
        + (
            "PSI " + ", ".join(f"{f['name']} {f['psi']:.2f} ({f['shift']})" for f in moved)
            if moved
            else "no feature shifted (PSI < 0.1)"
        ),
        highlight=False,
    )
    c = doc["cadence"]
    ct = Table(title=f"retraining cadence (rolling origin, in {doc['unit']})", title_justify="left")
    for col in ("retrain every", "retrains", "live AUC", "live log loss", "live ECE"):
        ct.add_column(col, justify="right")
    for r in c["candidates"]:
        every = "never" if r["every"] is None else f"{r['every']:g}"
        mark = " <- recommended" if r["every"] == c["recommended"] else ""
        ct.add_row(
            every + mark,
            str(r["retrains"]),
            _num(r["live_auc"]),
            _num(r["live_log_loss"]),
            _num(r["live_ece"]),
        )
    out.print(ct)
    out.print(f"verdict: {doc['verdict']}", highlight=False)


push_app = typer.Typer(
    help="Send validated CRM outcomes to Meta and Google, and outage windows to Google bidding.",
    no_args_is_help=True,
)
app.add_typer(push_app, name="push")

DryRunOption = Annotated[
    bool,
    typer.Option("--dry-run", help="Write the exact request bodies to --out and send nothing."),
]
PushOutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Folder for the request bodies (one JSON document per request) and Google's "
        "upload file \\[default: none when live; signalloop-push with --dry-run].",
        show_default=False,
    ),
]
NowOption = Annotated[
    str | None,
    typer.Option(
        "--now",
        help="Send clock for a dry run (ISO time): replay an old account as if sent then.",
        show_default=False,
    ),
]


def _push(
    target: str,
    as_of: str | None,
    dry_run: bool,
    out_dir: Path | None,
    now: str | None,
    db: str | None,
    config: Path | None,
    as_json: bool,
) -> None:
    from datetime import datetime

    from signalloop.config import load_settings
    from signalloop.push.send import push
    from signalloop.store import Workspace

    settings = load_settings(config)
    day = _parse_date(as_of, "--as-of")
    clock = None
    if now is not None:
        try:
            clock = datetime.fromisoformat(now)
        except ValueError:
            raise UsageError(
                f"--now expects an ISO time like 2026-04-01T06:00, got {now!r}"
            ) from None
    if dry_run and out_dir is None:
        out_dir = Path("signalloop-push")
    with Workspace(db) as ws, progress_bar(not as_json) as bar:
        res = push(
            ws,
            target,
            as_of=day,
            settings=settings,
            dry_run=dry_run,
            out=out_dir,
            now=clock,
            progress=bar,
        )
    doc = res.to_dict()
    if as_json:
        emit_json(doc)
    else:
        print_push(doc)
    if res.rejected or res.failed:
        raise typer.Exit(1)


@push_app.command("meta")
@handle_errors
def push_meta_cmd(
    as_of: AsOfOption = None,
    dry_run: DryRunOption = False,
    out_dir: PushOutOption = None,
    now: NowOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """CRM stages reached to Meta's Conversions API (Conversion Leads), validated only."""
    _push("meta", as_of, dry_run, out_dir, now, db, config, as_json)


@push_app.command("google")
@handle_errors
def push_google_cmd(
    as_of: AsOfOption = None,
    dry_run: DryRunOption = False,
    out_dir: PushOutOption = None,
    now: NowOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """CRM stages as Google Ads offline click conversions (enhanced for leads without a gclid)."""
    _push("google", as_of, dry_run, out_dir, now, db, config, as_json)


@push_app.command("exclusions")
@handle_errors
def push_exclusions_cmd(
    to: Annotated[str, typer.Option("--to", help="The platform: google.")] = "google",
    as_of: AsOfOption = None,
    dry_run: DryRunOption = False,
    out_dir: PushOutOption = None,
    now: NowOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stored outage windows as Google Ads bidding data exclusions (idempotent)."""
    if to != "google":
        raise UsageError(
            f"--to {to!r}: only Google Ads has bidding data exclusions (Meta has no equivalent)"
        )
    _push("exclusions", as_of, dry_run, out_dir, now, db, config, as_json)


@push_app.command("ledger")
@handle_errors
def push_ledger_cmd(
    limit: Annotated[int, typer.Option("--limit", help="Newest rows to list.")] = 20,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """What was sent, when, and what the platforms answered."""
    from signalloop.push import ledger
    from signalloop.store import Workspace

    with Workspace(db) as ws:
        doc = {"summary": ledger.summary(ws), "recent": ledger.recent(ws, limit)}
    if as_json:
        emit_json(doc)
        return
    t = Table("platform", "item", "status", "test", "rows", "items", "last")
    for r in doc["summary"]:
        t.add_row(
            r["platform"],
            r["item"],
            r["status"],
            str(r["test"]).lower(),
            f"{r['rows']:,}",
            f"{r['keys']:,}",
            r["last"] or "",
        )
    out.print(t if doc["summary"] else "the push ledger is empty: nothing has been sent yet")


def print_push(doc: dict[str, Any]) -> None:
    """One push's counts, reasons and files."""
    what = {"event": "events", "click_conversion": "click conversions", "exclusion": "exclusions"}
    mode = "dry run, nothing sent" if doc["dry_run"] else "live"
    if doc["test"]:
        mode += ", test events"
    out.print(
        f"[bold]push {doc['platform']} {what[doc['item']]}[/] as of {doc['as_of']} ({mode})",
        highlight=False,
    )
    c = doc["counts"]
    verb = "planned" if doc["dry_run"] else "sent"
    out.print(
        f"  {c['candidates']:,} validated, {c['already_sent']:,} already sent, "
        f"{c[verb]:,} {verb} in {len(doc['requests']):,} request(s)",
        highlight=False,
    )
    for label, key in (
        ("skipped", "skipped_by_reason"),
        ("left out", "left_out_by_reason"),
        ("rejected", "rejected_by_code"),
    ):
        if doc[key]:
            parts = ", ".join(
                f"{n:,} {k}" for k, n in sorted(doc[key].items(), key=lambda x: -x[1])
            )
            out.print(f"  {label}: {escape(parts)}", highlight=False)
    for x in doc["skipped"][:5]:
        out.print(
            f"    {x.get('record_id') or x.get('campaign_id')} {x.get('stage') or ''}: "
            f"{x['reason']} ({escape(str(x['detail']))})",
            highlight=False,
        )
    for f in doc["failed"]:
        out.print(
            f"  [red]no answer[/] after {f['attempts']} attempt(s): {escape(str(f['error']))}",
            highlight=False,
        )
    for n in doc["notes"]:
        out.print(f"  note: {escape(n)}", highlight=False)
    if doc["files"]:
        folder = str(Path(doc["files"][0]).parent)
        out.print(f"  {len(doc['files']):,} file(s) written to {escape(folder)}", highlight=False)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        err.print("interrupted")
        sys.exit(130)
