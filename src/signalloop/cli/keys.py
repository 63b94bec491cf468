"""``signalloop keys create|list|revoke``: the workspace's API keys (library:
:mod:`signalloop.keys`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from signalloop.cli.common import JsonOption, emit_json, err, handle_errors, out

keys_app = typer.Typer(
    help="API keys of a workspace (for signalloop serve): create, list, revoke.",
    no_args_is_help=True,
)

WorkspaceOption = Annotated[
    str | None,
    typer.Option(
        "--workspace",
        "--db",
        help="Workspace DuckDB file (default: $SIGNALLOOP_DB, else ./signalloop.duckdb).",
        show_default=False,
    ),
]


@keys_app.command("create")
@handle_errors
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who or what uses it (maria, etl).")],
    scopes: Annotated[
        str, typer.Option("--scopes", help="Comma-separated: ingest, read, approve.")
    ] = "read",
    db: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key; its token is printed once and never stored (only its hash is)."""
    from signalloop.keys import create_key
    from signalloop.store import Workspace

    with Workspace(db) as ws:
        key = create_key(ws, name, scopes)
    if as_json:
        emit_json(key.to_dict())
        return
    err.print(
        f"key {key.key_id} for {escape(key.name)} ({', '.join(key.scopes)}); the token below "
        "is shown once: store it now",
        highlight=False,
    )
    out.print(key.token, highlight=False, soft_wrap=True)


@keys_app.command("list")
@handle_errors
def keys_list(db: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """The workspace's keys (never a token)."""
    from signalloop.keys import list_keys
    from signalloop.store import Workspace

    with Workspace(db) as ws:
        keys = list_keys(ws)
    if as_json:
        emit_json([k.to_dict() for k in keys])
        return
    if not keys:
        out.print("no keys yet: signalloop keys create --name NAME --scopes read")
        return
    t = Table("key", "name", "scopes", "created", "last used", "revoked")
    for k in keys:
        d = k.to_dict()
        t.add_row(
            k.key_id,
            escape(k.name),
            ",".join(k.scopes),
            d["created_at"],
            d["last_used_at"] or "",
            d["revoked_at"] or "",
        )
    out.print(t)


@keys_app.command("revoke")
@handle_errors
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (signalloop keys list).")],
    db: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a key: it stops working at once."""
    from signalloop.keys import revoke
    from signalloop.store import Workspace

    with Workspace(db) as ws:
        key = revoke(ws, key_id)
    if as_json:
        emit_json(key.to_dict())
        return
    out.print(f"key {key.key_id} ({escape(key.name)}) revoked", highlight=False)
