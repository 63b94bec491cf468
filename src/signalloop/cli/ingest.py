"""``signalloop ingest``, ``quarantine``, ``status`` and ``compact``: loading exports, what
the workspace holds, and rewriting its file (library: :mod:`signalloop.ingest`,
:mod:`signalloop.summary`, :mod:`signalloop.shapes`, :mod:`signalloop.compact`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from signalloop.cli.common import (
    DbOption,
    JsonOption,
    _parse_date,
    emit_json,
    err,
    handle_errors,
    out,
    progress_bar,
)
from signalloop.contract import KINDS
from signalloop.errors import InputError


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


@handle_errors
def compact(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Rewrite the DuckDB workspace into a fresh file: space of deleted rows back, ids stored
    uncompressed, the touch index folded back into one run."""
    from signalloop.compact import compact as rewrite

    with progress_bar(not as_json or sys.stderr.isatty()) as progress:
        done = rewrite(db, progress=progress)
    if as_json:
        emit_json(done)
        return
    mib = 1024 * 1024
    out.print(
        f"workspace {escape(done['db'])} rewritten in {done['seconds']:.1f} s: "
        f"{done['bytes_before'] / mib:,.1f} MiB -> {done['bytes_after'] / mib:,.1f} MiB, "
        f"{len(done['tables'])} tables, {sum(done['tables'].values()):,} rows"
    )
    for table, cols in done["rewritten_ids"].items():
        if cols:
            out.print(f"  {table}: {', '.join(cols)} now stored uncompressed (faster joins)")
    if done.get("touch_index"):
        ti = done["touch_index"]
        if ti["refresh"] == "built":
            out.print(f"  touch index built again: {ti['runs_before']} runs -> {ti['runs']}")
        else:  # (the next run's attribution builds it)
            out.print(f"  touch index not built again: {escape(ti['refresh'])}")


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
