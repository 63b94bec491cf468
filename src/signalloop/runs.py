"""The record of daily runs: when each ran, who or what started it, how it ended, its report.

Every run made through :func:`execute` (``signalloop run``, ``signalloop demo``, the web app's
"run now" and its ``[serve] run_at`` schedule) gets a row in the workspace's ``runs`` table and
its report in a folder of its own, so past reports stay readable. :class:`RunManager` keeps one
run at a time per workspace in a background thread, with its progress, and never lets a failed
run take its caller down: the error is recorded on the run.

>>> next_run("06:00", datetime(2026, 3, 1, 5, 0))
datetime.datetime(2026, 3, 1, 6, 0)
>>> next_run("06:00", datetime(2026, 3, 1, 7, 0))
datetime.datetime(2026, 3, 2, 6, 0)
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

from signalloop.config import Settings
from signalloop.errors import SignalloopError, UsageError
from signalloop.store import Workspace

log = logging.getLogger("signalloop.runs")

RUNS_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, started_at TIMESTAMP, finished_at TIMESTAMP, status VARCHAR,
    trigger VARCHAR, actor VARCHAR, as_of DATE, report_dir VARCHAR, error VARCHAR, timings JSON
)"""

#: How a run was started.
TRIGGERS = ("cli", "demo", "manual", "schedule")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def new_run_id(when: datetime | None = None) -> str:
    """A sortable run id: the UTC start time plus a short random suffix."""
    return f"{(when or _now()):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


def runs_folder(ws: Workspace) -> Path:
    """Where the runs of a file workspace keep their reports: ``<workspace stem>.runs``."""
    if ws.path == ":memory:":
        raise UsageError("an in-memory workspace has nowhere to keep run reports")
    p = Path(ws.local_path)
    return p.with_name(p.stem + ".runs")


def start_record(
    ws: Workspace, *, trigger: str, actor: str | None, report_dir: Path, run_id: str
) -> None:
    """Insert the ``running`` row of a run."""
    if trigger not in TRIGGERS:
        raise UsageError(f"trigger must be one of {', '.join(TRIGGERS)}, got {trigger!r}")
    ws.records.execute(RUNS_DDL)
    ws.records.execute(
        "INSERT INTO runs VALUES (?, ?, NULL, 'running', ?, ?, NULL, ?, NULL, NULL)",
        [run_id, _now(), trigger, actor, str(report_dir)],
    )


def end_record(
    ws: Workspace,
    run_id: str,
    *,
    status: str,
    as_of: date | None = None,
    error: str | None = None,
    timings: dict[str, float] | None = None,
) -> None:
    """Close a run's row: ``ok`` or ``failed`` with its error."""
    ws.records.execute(
        "UPDATE runs SET finished_at = ?, status = ?, as_of = ?, error = ?, timings = ? "
        "WHERE run_id = ?",
        [_now(), status, as_of, error, json.dumps(timings) if timings else None, run_id],
    )


#: The error of a run that was still going when its server stopped.
INTERRUPTED = "interrupted: the server stopped before the run ended"


def close_interrupted(ws: Workspace) -> list[str]:
    """Close the rows a stopped server left ``running`` (``failed``, :data:`INTERRUPTED`).

    Call it when a process opens the workspace before it starts any run: one process holds a
    DuckDB file, so no run of another is going on. Returns the run ids closed.
    """
    ws.records.execute(RUNS_DDL)
    rows = ws.records.execute(
        "UPDATE runs SET status = 'failed', finished_at = ?, error = ? "
        "WHERE status = 'running' RETURNING run_id",
        [_now(), INTERRUPTED],
    ).fetchall()
    return [str(r[0]) for r in rows]


def _select(ws: Workspace, where: str, params: list[Any], limit: int) -> list[dict[str, Any]]:
    ws.records.execute(RUNS_DDL)
    cur = ws.records.execute(
        "SELECT run_id, started_at, finished_at, status, trigger, actor, as_of, report_dir, "
        f"error, timings FROM runs {where} ORDER BY started_at DESC, run_id DESC LIMIT ?",
        [*params, limit],
    )
    cols = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        r = dict(zip(cols, row, strict=True))
        for k in ("started_at", "finished_at"):
            r[k] = r[k].isoformat(sep=" ", timespec="seconds") if r[k] is not None else None
        r["as_of"] = r["as_of"].isoformat() if r["as_of"] is not None else None
        r["timings"] = json.loads(r["timings"]) if r["timings"] else None
        if r["started_at"] and r["finished_at"]:
            took = datetime.fromisoformat(r["finished_at"]) - datetime.fromisoformat(
                r["started_at"]
            )
            r["seconds"] = round(took.total_seconds(), 1)
        else:
            r["seconds"] = None
        out.append(r)
    return out


def list_runs(ws: Workspace, limit: int = 200) -> list[dict[str, Any]]:
    """The workspace's runs, newest first, JSON-ready."""
    return _select(ws, "", [], limit)


def get_run(ws: Workspace, run_id: str) -> dict[str, Any] | None:
    """One run's row (as :func:`list_runs` gives it), ``None`` when there is no such run."""
    found = _select(ws, "WHERE run_id = ?", [run_id], 1)
    return found[0] if found else None


def run_report(
    ws: Workspace, run_id: str, run: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The report document (``report.json``) a run wrote, when it is still its own.

    ``run`` is the run's row when the caller already read it (:func:`get_run`).
    """
    run = run if run is not None else get_run(ws, run_id)
    if run is None or not run["report_dir"]:
        return None
    path = Path(run["report_dir"]) / "report.json"
    if not path.is_file():
        return None
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc if doc.get("run_id") in (run_id, None) else None


def last_report(ws: Workspace) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(run row, report document)`` of the newest successful run whose report is readable."""
    for r in list_runs(ws):
        if r["status"] == "ok":
            doc = run_report(ws, r["run_id"])
            if doc is not None:
                return r, doc
    return None


def execute(
    ws: Workspace,
    *,
    trigger: str,
    actor: str | None = None,
    settings: Settings | None = None,
    out_dir: str | Path | None = None,
    run_id: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run the daily loop (:func:`signalloop.run.run`) and record it in ``runs``.

    ``out_dir`` defaults to ``<workspace stem>.runs/<run id>``. A failure is recorded with its
    message, then raised again.
    """
    from signalloop.run import run

    run_id = run_id or new_run_id()
    out = Path(out_dir) if out_dir is not None else runs_folder(ws) / run_id
    start_record(ws, trigger=trigger, actor=actor, report_dir=out, run_id=run_id)
    try:
        doc = run(ws, settings=settings, out_dir=out, run_id=run_id, **kwargs)
    except BaseException as exc:
        end_record(ws, run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    end_record(
        ws,
        run_id,
        status="ok",
        as_of=date.fromisoformat(doc["as_of"]),
        timings=doc.get("timings"),
    )
    return doc


def next_run(run_at: str, now: datetime) -> datetime:
    """The next time ``run_at`` ("HH:MM") comes round after ``now`` (same clock as ``now``)."""
    at = dtime(int(run_at[:2]), int(run_at[3:]))
    today = datetime.combine(now.date(), at)
    return today if today > now else today + timedelta(days=1)


@dataclass
class RunState:
    """What a workspace's run manager is doing (JSON-ready through :meth:`to_dict`)."""

    run_id: str | None = None
    trigger: str | None = None
    actor: str | None = None
    started_at: datetime | None = None
    step: str | None = None
    fraction: float | None = None
    steps: list[str] = field(default_factory=list)
    last_error: str | None = None
    last_run_id: str | None = None
    #: The models refitted after the last scheduled run (:meth:`RunManager.refresh_due`).
    last_refresh: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "running": self.run_id is not None,
            "run_id": self.run_id,
            "trigger": self.trigger,
            "actor": self.actor,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "step": self.step,
            "fraction": self.fraction,
            "steps_done": list(self.steps),
            "last_run_id": self.last_run_id,
            "last_error": self.last_error,
            "last_refresh": self.last_refresh,
        }


class RunBusy(SignalloopError):
    """A run is already going on in this workspace."""


class RunManager:
    """One run at a time for one workspace, in a background thread.

    After a scheduled run with ``[run] retrain = "separate"``, the same thread refits the
    models that run listed as due (:meth:`refresh_due`), so a server needs no second job for
    ``signalloop model refresh``; the run's report is out first, and the workspace counts as
    busy until the refit ends.

    Parameters
    ----------
    open_workspace
        Returns a context manager yielding a workspace handle for the run's thread.
    settings
        Returns the workspace's current settings (read at the start of each run).
    before
        Called inside the run's thread before the loop (the server ingests the inbox there,
        under its ingest lock); optional.
    """

    def __init__(
        self,
        open_workspace: Callable[[], AbstractContextManager[Workspace]],
        settings: Callable[[], Settings],
        before: Callable[[Workspace, Settings], None] | None = None,
    ) -> None:
        self.open_workspace = open_workspace
        self.settings = settings
        self.before = before
        #: Called (in the run's thread) after a run that ended well, e.g. to warm caches.
        self.on_done: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._state = RunState()
        self._thread: threading.Thread | None = None

    def state(self) -> dict[str, Any]:
        with self._lock:
            return self._state.to_dict()

    def start(self, *, trigger: str, actor: str | None = None, **kwargs: Any) -> str:
        """Start a run in the background and return its id; :class:`RunBusy` when one runs."""
        with self._lock:
            if self._state.run_id is not None:
                raise RunBusy(
                    f"run {self._state.run_id} is still going ({self._state.step or 'starting'})"
                )
            run_id = new_run_id()
            self._state = RunState(
                run_id=run_id,
                trigger=trigger,
                actor=actor,
                started_at=_now(),
                last_error=self._state.last_error,
                last_run_id=self._state.last_run_id,
                last_refresh=self._state.last_refresh,
            )
        self._thread = threading.Thread(
            target=self._work,
            args=(run_id, trigger, actor, kwargs),
            name=f"signalloop-run-{run_id}",
            daemon=True,
        )
        self._thread.start()
        return run_id

    def join(self, timeout: float | None = None) -> None:
        """Wait for the current run's thread (tests, shutdown)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _progress(self, label: str, frac: float | None) -> None:
        with self._lock:
            if self._state.step and self._state.step != label and frac is None:
                self._state.steps.append(self._state.step)
            self._state.step, self._state.fraction = label, frac

    def _work(self, run_id: str, trigger: str, actor: str | None, kwargs: dict[str, Any]) -> None:
        error = None
        refreshed = self._state.last_refresh
        _lower_priority()
        try:
            settings = self.settings()
            with self.open_workspace() as ws:
                if self.before is not None:
                    self._progress("ingesting the inbox", None)
                    self.before(ws, settings)
                    kwargs.setdefault("inbox", "")  # already ingested, under the lock
                doc = execute(
                    ws,
                    trigger=trigger,
                    actor=actor,
                    settings=settings,
                    run_id=run_id,
                    progress=self._progress,
                    **kwargs,
                )
                if trigger == "schedule" and settings.run.retrain == "separate":
                    refreshed = self.refresh_due(ws, settings, doc, run_id) or refreshed
        except Exception as exc:  # recorded on the run; the server goes on
            error = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, SignalloopError):
                error += "\n" + "".join(traceback.format_exception(exc)[-3:])
        finally:
            with self._lock:
                self._state = RunState(last_error=error, last_run_id=run_id, last_refresh=refreshed)
        if error is None and self.on_done is not None:
            # a cache that could not be warmed is made on the first page view instead
            with suppress(Exception):
                self.on_done()

    def refresh_due(
        self, ws: Workspace, settings: Settings, doc: dict[str, Any], run_id: str
    ) -> dict[str, Any] | None:
        """Refit the models the run ``doc`` listed as ``due``, as ``signalloop model refresh``
        does (:func:`signalloop.run.refresh_models`), with this manager's progress; what was
        done (``run_id``, ``as_of``, ``finished_at``, ``models``: each one's ``outcome``,
        ``status`` and ``reason``, or ``error``), or ``None`` when nothing was due.

        A refit that fails is reported here, not on the run, which ended well before it."""
        from signalloop.run import refresh_models

        due = [m["outcome"] for m in doc.get("models") or [] if m.get("status") == "due"]
        if not due:
            return None
        as_of = date.fromisoformat(doc["as_of"])
        out: dict[str, Any] = {"run_id": run_id, "as_of": as_of.isoformat()}
        try:
            entries = refresh_models(ws, as_of, settings, due, self._progress)
            out["models"] = [
                {k: m.get(k) for k in ("outcome", "status", "reason")} for m in entries
            ]
        except Exception as exc:  # the server goes on; the next scheduled run tries again
            out["error"] = f"{type(exc).__name__}: {exc}"
            log.exception("model refresh after run %s", run_id)
        out["finished_at"] = _now().isoformat()
        return out


def _lower_priority(niceness: int = 10) -> None:
    """Make the calling thread (and the model threads it starts) yield the CPU to requests.

    Linux schedules threads as tasks, so this lowers only the run's thread; elsewhere it is a
    no-op.
    """
    import os

    with suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


def iter_due(
    schedules: dict[str, str | None], last: dict[str, date], now: datetime
) -> Iterator[str]:
    """Names whose ``run_at`` has passed today and that have not run today (the scheduler).

    >>> list(iter_due({"a": "06:00", "b": None}, {}, datetime(2026, 3, 1, 6, 1)))
    ['a']
    >>> list(iter_due({"a": "06:00"}, {"a": date(2026, 3, 1)}, datetime(2026, 3, 1, 9)))
    []
    """
    for name, run_at in schedules.items():
        if run_at is None:
            continue
        at = datetime.combine(now.date(), dtime(int(run_at[:2]), int(run_at[3:])))
        if now >= at and last.get(name) != now.date():
            yield name
