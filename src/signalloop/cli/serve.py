"""``signalloop serve``: the web app (library: :mod:`signalloop.web`)."""

from __future__ import annotations

from typing import Annotated

import typer

from signalloop.cli.common import err, handle_errors

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@handle_errors
def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (localhost unless told otherwise).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="One workspace: its DuckDB file, or a folder holding signalloop.duckdb "
            "(default: $SIGNALLOOP_DB, else ./signalloop.duckdb).",
            show_default=False,
        ),
    ] = None,
    workspaces: Annotated[
        str | None,
        typer.Option(
            "--workspaces",
            help="A folder of workspaces: each sub-folder holding a signalloop.duckdb is one "
            "(one per client account).",
            show_default=False,
        ),
    ] = None,
    schedule: Annotated[
        bool,
        typer.Option(
            "--schedule/--no-schedule", help="Run each workspace's [serve] run_at daily loop."
        ),
    ] = True,
) -> None:
    """Serve the web app: overview, campaigns, allocation approvals, data, runs, ingest API."""
    import uvicorn

    from signalloop.store import resolve_db_path
    from signalloop.web.app import create_app
    from signalloop.web.registry import Registry

    registry = Registry.discover(
        db=None if workspaces else resolve_db_path(db), workspaces=workspaces
    )
    if host not in LOCAL_HOSTS:
        err.print(
            f"[yellow]warning[/]: bound to {host}, reachable from the network; put it behind "
            "TLS (a reverse proxy) so keys and session cookies never cross it in clear text"
        )
    names = ", ".join(registry.names())
    err.print(
        f"serving {names} on http://{host}:{port}/ (log in with a key: signalloop keys create "
        "--workspace W --name you --scopes read,approve); Ctrl-C stops",
        highlight=False,
    )
    app = create_app(registry, schedule=schedule)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=True)
