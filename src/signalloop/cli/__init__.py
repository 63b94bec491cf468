"""The ``signalloop`` command line: parse, call the library, format, translate errors.

Every command that computes something takes ``--json`` and then prints exactly one JSON
document on stdout; progress and messages go to stderr. Exit codes: 0 ok, 1 a problem the
user asked to fail on, 2 bad usage or bad input.

One module per command group, beside the library module it faces:

- ``common``: the consoles (``out`` for stdout, ``err`` for stderr), :func:`handle_errors`,
  :func:`emit_json`, :func:`progress_bar`, date parsing and the shared options;
- ``ingest``: ``ingest``, ``quarantine``, ``status``, ``compact``;
- ``check``: ``check``;
- ``state``: ``nowcast``, ``phase``, ``fatigue``;
- ``allocate``: ``allocate``;
- ``simulate``: ``simulate``, ``demo``;
- ``diagnose``: ``diagnose``, ``lens``;
- ``run``: ``run``;
- ``model``: the ``model`` sub-app (``fit``, ``score``, ``backtest``, ``route``);
- ``push``: the ``push`` sub-app (``meta``, ``google``, ``exclusions``, ``ledger``);
- ``connect``: ``pull`` and the ``connect`` sub-app (``test``) for connected ad accounts;
- ``apply``: ``apply`` (the allocation to the connected accounts' budgets, and rollback);
- ``serve``: ``serve`` (the web app, :mod:`signalloop.web`);
- ``keys``: the ``keys`` sub-app (``create``, ``list``, ``revoke``) for ``serve``.

This module holds the Typer ``app``, registers every command on it in the order
``signalloop --help`` lists them, and :func:`main`, the console script.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from signalloop import __version__
from signalloop.cli import (
    allocate,
    apply,
    check,
    connect,
    diagnose,
    ingest,
    keys,
    model,
    push,
    run,
    serve,
    simulate,
    state,
)
from signalloop.cli.common import err, out, small_pages

__all__ = ["app", "main"]

app = typer.Typer(
    name="signalloop",
    help="Campaign learning engine: check marketing signals, learn from them, decide budgets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Show the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"signalloop {__version__}")
        raise typer.Exit(0)


app.command()(ingest.ingest)
app.command()(ingest.quarantine)
app.command()(ingest.status)
app.command()(ingest.compact)
app.command()(check.check)
app.command()(state.nowcast)
app.command()(state.phase)
app.command()(state.fatigue)
app.command()(allocate.allocate)
app.command()(simulate.simulate)
app.command()(simulate.demo)
app.command()(diagnose.diagnose)
app.command()(diagnose.lens)
app.command("run")(run.run_loop)
app.add_typer(model.model_app, name="model")
app.add_typer(push.push_app, name="push")
app.command("pull")(connect.pull_cmd)
app.command("apply")(apply.apply_cmd)
app.add_typer(connect.connect_app, name="connect")
app.command()(serve.serve)
app.add_typer(keys.keys_app, name="keys")


def main() -> None:
    """Console-script entry point."""
    small_pages()  # (before any large array: see its docstring)
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        err.print("interrupted")
        sys.exit(130)
