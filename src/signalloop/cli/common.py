"""What every command group shares: the two consoles, error handling, JSON output, the
progress display, date parsing and the common options.

Messages and progress go to ``err`` (stderr); tables and ``--json`` documents go to stdout.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

import duckdb
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

from signalloop import jsonout
from signalloop.errors import (
    InputError,
    SignalloopError,
    UsageError,
    disk_full,
    disk_full_message,
)

if TYPE_CHECKING:
    from signalloop.store import Workspace

# Messages never wrap mid-line (a long path must not split "1,143 loaded" across lines); piped
# output (CI logs, files) gets room for the tables instead of Rich's 80-column default.
err = Console(stderr=True, soft_wrap=True)
out = Console(width=None if sys.stdout.isatty() else 120, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


class Reported(Protocol):
    """A command's result: what it reports is its ``to_dict()`` document."""

    def to_dict(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Reported)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Workspace DuckDB file (default: $SIGNALLOOP_DB, else ./signalloop.duckdb).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


#: NumPy's own switch for its hugepage advice (read at its import); when the user sets it,
#: :func:`small_pages` leaves the choice to them.
HUGEPAGE_ENV = "NUMPY_MADVISE_HUGEPAGE"


def small_pages() -> bool | None:
    """Stop NumPy asking Linux for transparent hugepages for its large arrays, for this process.

    On Linux NumPy advises ``MADV_HUGEPAGE`` for every array of 4 MB or more. Where
    ``/sys/kernel/mm/transparent_hugepage/defrag`` is ``madvise`` (a common default), each
    such array's first touch then waits while the kernel frees whole 2 MB pages, and a daily
    run's memory is mostly the page cache of its workspace, which it compacts or reclaims. On
    the 1,000-campaign next day the nowcast's draws of one path (1,000 x 57,313) took 1.4-1.7 s
    to fill with the advice and 0.34-0.47 s without, and the whole nowcast 26.6-27.0 s
    against 19.9-23.0 s (BENCHMARKS.md). The console script calls this first; a user who
    sets ``NUMPY_MADVISE_HUGEPAGE`` (``1`` keeps the advice) decides instead, and a library
    caller keeps NumPy's default.

    Returns
    -------
    bool or None
        Whether the advice was on before; ``None`` when nothing was changed (the variable is
        set, or this NumPy has no such switch).
    """
    if HUGEPAGE_ENV in os.environ:
        return None
    import numpy as np

    core = getattr(np, "_core", None) or getattr(np, "core", None)
    switch = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    return None if switch is None else bool(switch(False))


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
        except (duckdb.IOException, OSError) as exc:
            if not disk_full(exc):
                raise
            text = escape(
                disk_full_message(
                    exc,
                    "the workspace (--db)",
                    "run again (files already ingested are not added twice)",
                )
            )
            err.print(f"[bold red]error:[/] {text}.", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def emit_json(doc: Any) -> None:
    """Write one JSON document to stdout."""
    sys.stdout.write(jsonout.dumps(doc) + "\n")


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[str, float | None], None]]:
    """A Rich progress display on stderr, yielded as a ``(label, fraction)`` callback.

    With ``SIGNALLOOP_PROGRESS=plain`` (logs, cron, a benchmark watching a long run) every
    step is one timestamped line on stderr instead, whether or not ``enabled``.
    """
    if os.environ.get("SIGNALLOOP_PROGRESS") == "plain":
        seen: list[str] = []

        def line(label: str, frac: float | None) -> None:
            if not seen or seen[-1] != label:
                seen.append(label)
                print(f"{datetime.now():%H:%M:%S} {label}", file=sys.stderr, flush=True)

        yield line
        return
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


def run_and_report(
    db: str | None,
    work: Callable[[Workspace, Callable[[str, float | None], None]], R],
    *,
    progress: bool,
    as_json: bool,
    show: Callable[[dict[str, Any]], None],
) -> R:
    """Run ``work(ws, bar)`` on the workspace ``db`` behind a :func:`progress_bar` (shown when
    ``progress``), then report the result's ``to_dict()`` document: on stdout with ``--json``
    (``as_json``), else through ``show``. Returns the result, for the command's exit code."""
    from signalloop.store import Workspace

    with Workspace(db) as ws, progress_bar(progress) as bar:
        res = work(ws, bar)
    doc = res.to_dict()
    if as_json:
        emit_json(doc)
    else:
        show(doc)
    return res


#: How a model's status is shown (``signalloop run`` and ``signalloop model refresh``).
MODEL_STATUS_STYLE = {"refreshed": "green", "fresh": "dim", "skipped": "yellow", "due": "yellow"}


def print_model(m: dict[str, Any], *, auc: bool = False) -> None:
    """One line for a model entry of :func:`signalloop.run.refresh_models`: its status, why,
    the command that refits it when it is left due, and (``auc``) its time-split AUC."""
    why = m.get("reason", "") + (f"; refit with `{m['command']}`" if m.get("command") else "")
    score = (m.get("time_split") or {}).get("auc")
    shown = f", time-split AUC {score:.3f}" if auc and score is not None else ""
    out.print(
        f"model {m['outcome']}: [{MODEL_STATUS_STYLE[m['status']]}]{m['status']}[/] "
        f"({escape(why)}{shown})",
        highlight=False,
    )


def _parse_date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} expects a date as YYYY-MM-DD, got {value!r}") from None


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
