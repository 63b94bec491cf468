"""``signalloop pull meta|google`` (spend and the edit history) and ``signalloop connect
test``: connected ad accounts (library: :mod:`signalloop.connect`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from signalloop.cli.common import (
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

#: The account ids ``connect sandbox`` serves.
SANDBOX_META_ACCOUNT = "1000000001"
SANDBOX_CID = "1234567890"

connect_app = typer.Typer(
    help="Connections to the ad accounts (Meta, Google Ads): check what each one lacks.",
    no_args_is_help=True,
)


@handle_errors
def pull_cmd(
    platform: Annotated[str, typer.Argument(help="meta or google.")],
    since: Annotated[
        str | None,
        typer.Option("--since", help="First day (YYYY-MM-DD) \\[default: the lookback's first]."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Last day (YYYY-MM-DD) \\[default: yesterday, account time]."),
    ] = None,
    lookback_days: Annotated[
        int | None,
        typer.Option(
            "--lookback-days",
            help="Days re-read up to --until when --since is not given (platforms restate "
            "recent days) \\[default: \\[connect] lookback_days, 28].",
            show_default=False,
        ),
    ] = None,
    what: Annotated[
        str,
        typer.Option(
            "--what",
            help="spend, changes (the edit history, with who made each edit) or both.",
        ),
    ] = "spend,changes",
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pull daily delivery per ad into the spend kind and the edit history into changes.

    Same validation, quarantine and natural keys as ingest.

    Re-pulling the same data adds nothing; a restated day or edit replaces the stored rows
    (counted).

    Exit 1 when a range or the edit history could not be read.
    """
    from signalloop.config import load_settings
    from signalloop.connect.pull import PLATFORMS, check_what, pull

    if platform not in PLATFORMS:
        raise UsageError(f"pull {platform!r}: expected one of {', '.join(PLATFORMS)}")
    wanted = check_what(what)
    first = _parse_date(since, "--since")
    last = _parse_date(until, "--until")
    settings = load_settings(config)
    res = run_and_report(
        db,
        lambda ws, bar: pull(
            ws,
            platform,
            since=first,
            until=last,
            lookback_days=lookback_days,
            settings=settings,
            progress=bar,
            what=wanted,
        ),
        progress=not as_json and sys.stderr.isatty(),
        as_json=as_json,
        show=print_pull,
    )
    if res.failed or (res.changes or {}).get("status") == "failed":
        raise typer.Exit(1)


def print_pull(doc: dict[str, Any]) -> None:
    """One pull's counts, restated days and failures."""
    if "spend" in doc.get("what", ["spend"]):
        print_spend(doc)
    if doc.get("changes"):
        print_changes(doc["platform"], doc["changes"])


def print_changes(platform: str, ch: dict[str, Any]) -> None:
    """The edit history's counts: who edited what, what was new, restated, skipped."""
    out.print(
        f"[bold]edits {platform}[/] {ch['since'][:16]}..{ch['until'][:16]} "
        f"({ch['requests']} request(s))",
        highlight=False,
    )
    if ch["status"] == "failed":
        out.print(f"  [red]not read[/]: {escape(ch['error'])}", highlight=False)
        return
    out.print(
        f"  {ch['events_read']:,} events: {ch['rows_mapped']:,} edits "
        f"({ch['rows_loaded']:,} new, {ch['rows_restated']:,} restated, "
        f"{ch['rows_unchanged']:,} unchanged, {ch['rows_quarantined']:,} quarantined)",
        highlight=False,
    )
    if ch["by_actor"]:
        who = ", ".join(f"{n:,} {k}" for k, n in ch["by_actor"].items())
        what = ", ".join(f"{n:,} {k}" for k, n in ch["by_field"].items())
        out.print(f"  by: {who}; fields: {what}", highlight=False)
    if ch["rows_own"]:
        out.print(
            f"  {ch['rows_own']:,} edit(s) signalloop applied, already recorded", highlight=False
        )
    if ch["skipped"]:
        top = ", ".join(f"{n:,} {escape(k)}" for k, n in list(ch["skipped"].items())[:5])
        out.print(f"  not edits the contract records: {top}", highlight=False)
    for n in ch["notes"]:
        out.print(f"  note: {escape(n)}", highlight=False)


def print_spend(doc: dict[str, Any]) -> None:
    """The spend part of a pull."""
    out.print(
        f"[bold]pull {doc['platform']}[/] {escape(doc['account'])} {doc['since']}..{doc['until']}"
        f" ({doc['requests']} request(s), {doc['seconds']:.1f} s)",
        highlight=False,
    )
    out.print(
        f"  {doc['rows_pulled']:,} rows: {doc['rows_loaded']:,} new, {doc['rows_restated']:,} "
        f"restated, {doc['rows_unchanged']:,} unchanged, {doc['rows_quarantined']:,} quarantined",
        highlight=False,
    )
    cur = "/".join(doc["currency"]) or ""
    out.print(
        f"  spend in range: {doc['spend_before']:,.2f} -> {doc['spend_after']:,.2f} {cur}",
        highlight=False,
    )
    for d in doc["restated_days"][:10]:
        out.print(
            f"    restated {d['date']}: spend {d['before']:,.2f} -> {d['after']:,.2f}",
            highlight=False,
        )
    if len(doc["restated_days"]) > 10:
        out.print(f"    ... and {len(doc['restated_days']) - 10} more day(s)", highlight=False)
    if doc["quarantine_reasons"]:
        reasons = ", ".join(f"{n:,} {k}" for k, n in doc["quarantine_reasons"].items())
        out.print(
            f"  quarantined: {escape(reasons)} (signalloop quarantine shows them)",
            highlight=False,
        )
    if doc["attribution_setting"]:
        out.print(f"  attribution: {', '.join(doc['attribution_setting'])}", highlight=False)
    for f in doc["failed"]:
        out.print(
            f"  [red]not read[/] {f['since']}..{f['until']}: {escape(f['error'])}",
            highlight=False,
        )
    for n in doc["notes"]:
        out.print(f"  note: {escape(n)}", highlight=False)


@connect_app.command("test")
@handle_errors
def connect_test_cmd(
    platform: Annotated[
        str | None, typer.Argument(help="meta or google \\[default: both].", show_default=False)
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check each connection: the account id, every credential, one read against the platform.

    Says exactly what is missing: the setting or environment variable, never a value.

    Exit 1 when a connection is not usable.
    """
    from signalloop.config import load_settings
    from signalloop.connect.check import check_connections
    from signalloop.connect.pull import PLATFORMS

    if platform is not None and platform not in PLATFORMS:
        raise UsageError(f"connect test {platform!r}: expected one of {', '.join(PLATFORMS)}")
    settings = load_settings(config)
    checks = check_connections(settings, (platform,) if platform else PLATFORMS)
    docs = [c.to_dict() for c in checks]
    if as_json:
        emit_json({"connections": docs, "ok": all(c.ok for c in checks)})
    else:
        for d in docs:
            state = "[green]ok[/]" if d["ok"] else "[red]not usable[/]"
            acct = escape(d["account"] or "no account")
            out.print(f"[bold]{d['platform']}[/] {acct}: {state}", highlight=False)
            if d["ok"]:
                det = d["details"]
                out.print(
                    f"  {escape(str(det.get('name')))}, {det.get('currency')}, "
                    f"{det.get('time_zone')} ({escape(d['base_url'])})",
                    highlight=False,
                )
            for m in d["missing"]:
                out.print(f"  missing: {escape(m)}", highlight=False)
            if d["error"]:
                out.print(f"  error: {escape(d['error'])}", highlight=False)
            for n in d["notes"]:
                out.print(f"  note: {escape(n)}", highlight=False)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@connect_app.command("sandbox")
@handle_errors
def connect_sandbox_cmd(
    spend: Annotated[
        Path, typer.Option("--spend", help="A canonical spend CSV (the simulator's spend.csv).")
    ],
    changes: Annotated[
        Path | None,
        typer.Option(
            "--changes",
            help="A canonical changes CSV (the simulator's): served as the accounts' edit history.",
            show_default=False,
        ),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: a free one).")] = 0,
    serve_for: Annotated[
        float | None,
        typer.Option("--for", help="Stop after this many seconds \\[default: until Ctrl-C]."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Serve a spend file as a Meta ad account and a Google Ads customer on a local server.

    A connected demo without credentials: point [connect.meta] and [connect.google] base_url at
    it and pull. The tokens it accepts are the sandbox's own, printed here. Each campaign gets
    the daily budget its edit history (--changes) last set, else a quarter above its mean daily
    spend, for `signalloop apply` to change.
    """
    import csv
    import time

    from signalloop.demo_connected import budgets_from_history
    from signalloop.push.sandbox import Sandbox

    if not spend.is_file():
        raise UsageError(f"--spend {spend}: no such file")
    with spend.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    dates = sorted(r["date"] for r in rows if r.get("date"))
    sb = Sandbox()
    try:
        served = sb.load_spend(rows, meta_account=SANDBOX_META_ACCOUNT, google_customer=SANDBOX_CID)
    except (KeyError, ValueError) as exc:
        raise UsageError(f"--spend {spend}: not a canonical spend file ({exc})") from None
    edits: list[dict[str, Any]] | None = None
    if changes is not None:
        if not changes.is_file():
            raise UsageError(f"--changes {changes}: no such file")
        with changes.open(encoding="utf-8-sig", newline="") as fh:
            edits = list(csv.DictReader(fh))
        try:
            served["edits"] = sum(
                sb.load_changes(
                    edits, rows, meta_account=SANDBOX_META_ACCOUNT, google_customer=SANDBOX_CID
                ).values()
            )
        except (KeyError, ValueError) as exc:
            raise UsageError(f"--changes {changes}: not a canonical changes file ({exc})") from None
    budgets_from_history(
        sb, rows, edits, meta_account=SANDBOX_META_ACCOUNT, google_customer=SANDBOX_CID
    )
    sb.start(port)
    try:
        env = {
            "SIGNALLOOP_META_ACCESS_TOKEN": sb.meta_token,
            "SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN": sb.google_developer_token,
            "SIGNALLOOP_GOOGLE_ACCESS_TOKEN": "sandbox-access-token",
        }
        doc: dict[str, Any] = {
            "base_url": sb.base_url,
            "rows": served,
            "since": dates[0] if dates else None,
            "until": dates[-1] if dates else None,
            "config": (
                f'[connect.meta]\nad_account_id = "act_{SANDBOX_META_ACCOUNT}"\n'
                f'base_url = "{sb.base_url}"\n\n[connect.google]\n'
                f'customer_id = "{SANDBOX_CID}"\nbase_url = "{sb.base_url}"\n'
            ),
            "environment": env,
        }
        if as_json:
            emit_json(doc)
        else:
            out.print(
                f"sandbox on {sb.base_url}: {served['meta']:,} Meta rows, "
                f"{served['google']:,} Google rows, {doc['since']}..{doc['until']}",
                highlight=False,
            )
            out.print("signalloop.toml:\n" + escape(str(doc["config"])), highlight=False)
            for k, v in env.items():
                out.print(f"export {k}={v}", highlight=False)
        sys.stdout.flush()
        deadline = None if serve_for is None else time.monotonic() + serve_for
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.05 if deadline is not None else 1.0)
    except KeyboardInterrupt:  # pragma: no cover - interactive
        pass
    finally:
        sb.stop()
