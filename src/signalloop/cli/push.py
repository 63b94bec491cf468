"""``signalloop push meta|google|exclusions|ledger``: validated outcomes and outage windows
back to the platforms (library: :mod:`signalloop.push`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from signalloop.cli.common import (
    AsOfOption,
    ConfigOption,
    DbOption,
    JsonOption,
    _parse_date,
    emit_json,
    handle_errors,
    out,
    run_and_report,
)
from signalloop.errors import UsageError

push_app = typer.Typer(
    help="Send validated CRM outcomes to Meta and Google, and outage windows to Google bidding.",
    no_args_is_help=True,
)

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
    res = run_and_report(
        db,
        lambda ws, bar: push(
            ws,
            target,
            as_of=day,
            settings=settings,
            dry_run=dry_run,
            out=out_dir,
            now=clock,
            progress=bar,
        ),
        progress=not as_json,
        as_json=as_json,
        show=print_push,
    )
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
