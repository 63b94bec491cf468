"""The runs record, the run manager (one at a time, failures recorded) and the scheduler."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from signalloop import runs
from signalloop.config import Settings
from signalloop.store import Workspace


def test_record_lifecycle(tmp_path: Path) -> None:
    with Workspace(tmp_path / "w.duckdb") as ws:
        rid = runs.new_run_id(datetime(2026, 3, 1, 6, 0, 5))
        assert rid.startswith("20260301T060005-")
        runs.start_record(
            ws, trigger="manual", actor="maria", report_dir=tmp_path / "r", run_id=rid
        )
        (row,) = runs.list_runs(ws)
        assert row["status"] == "running" and row["actor"] == "maria" and row["seconds"] is None
        runs.end_record(ws, rid, status="failed", error="UsageError: no data")
        (row,) = runs.list_runs(ws)
        assert row["status"] == "failed" and row["error"] == "UsageError: no data"
        assert runs.last_report(ws) is None
        with pytest.raises(runs.UsageError, match="trigger must be one of"):
            runs.start_record(ws, trigger="cron", actor=None, report_dir=tmp_path, run_id="x")


def test_report_must_be_the_runs_own(tmp_path: Path) -> None:
    """A report folder later overwritten by another run no longer counts as this run's."""
    out = tmp_path / "report"
    out.mkdir()
    with Workspace(tmp_path / "w.duckdb") as ws:
        runs.start_record(ws, trigger="cli", actor=None, report_dir=out, run_id="r1")
        runs.end_record(ws, "r1", status="ok", as_of=date(2026, 3, 1))
        (out / "report.json").write_text('{"run_id": "r1", "as_of": "2026-03-01"}')
        assert runs.run_report(ws, "r1") == {"run_id": "r1", "as_of": "2026-03-01"}
        (out / "report.json").write_text('{"run_id": "r2", "as_of": "2026-03-02"}')
        assert runs.run_report(ws, "r1") is None
        assert runs.run_report(ws, "nope") is None


def test_execute_records_a_failure_and_raises(tmp_path: Path) -> None:
    with Workspace(tmp_path / "w.duckdb") as ws:
        with pytest.raises(runs.UsageError, match="holds no data"):
            runs.execute(ws, trigger="cli", settings=Settings())
        (row,) = runs.list_runs(ws)
        assert row["status"] == "failed" and "holds no data" in row["error"]
        assert row["report_dir"].endswith(f"w.runs/{row['run_id']}")


def _cursors(db: Workspace) -> Any:
    """What a run manager opens: a cursor of ``db`` for each run's thread."""

    @contextmanager
    def open_ws() -> Any:
        cur = db.cursor()
        try:
            yield cur
        finally:
            cur.close()

    return open_ws


def test_manager_one_at_a_time_and_failure_kept(tmp_path: Path, monkeypatch: Any) -> None:
    db = Workspace(tmp_path / "w.duckdb")
    gate = threading.Event()
    calls: list[str] = []

    def fake_run(ws: Workspace, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs["run_id"])
        kwargs["progress"]("checking the signals", None)
        gate.wait(10)
        raise runs.UsageError("the inbox is not a folder")

    monkeypatch.setattr("signalloop.run.run", fake_run)

    open_ws = _cursors(db)
    m = runs.RunManager(open_ws, Settings)
    rid = m.start(trigger="manual", actor="maria")
    with pytest.raises(runs.RunBusy, match="still going"):
        m.start(trigger="manual", actor="ana")
    for _ in range(100):
        if m.state()["step"] == "checking the signals":
            break
        threading.Event().wait(0.02)
    assert m.state()["running"] and m.state()["step"] == "checking the signals"
    gate.set()
    m.join(10)
    state = m.state()
    assert not state["running"] and state["last_run_id"] == rid
    assert "the inbox is not a folder" in state["last_error"]
    (row,) = runs.list_runs(db)
    assert row["status"] == "failed" and row["actor"] == "maria" and calls == [rid]
    db.close()


def test_scheduler_due_once_a_day() -> None:
    sched = {"a": "06:00", "b": "23:30", "c": None}
    assert list(runs.iter_due(sched, {}, datetime(2026, 3, 1, 5, 59))) == []
    assert list(runs.iter_due(sched, {}, datetime(2026, 3, 1, 6, 0))) == ["a"]
    assert list(runs.iter_due(sched, {"a": date(2026, 3, 1)}, datetime(2026, 3, 1, 23, 45))) == [
        "b"
    ]
    assert runs.next_run("23:30", datetime(2026, 3, 1, 23, 31)) == datetime(2026, 3, 2, 23, 30)


def test_a_scheduled_run_with_separate_retraining_refits_what_it_listed_as_due(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """``[run] retrain = "separate"`` under ``serve``: after a scheduled run, the manager's
    thread refits the models that run listed as due (here with the real ``refresh_models``, on a
    workspace too small to fit them: each is ``skipped`` with its reason and the note a
    separate run reads), and says so in its state. A manual run, a run whose models are
    fresh, and inline retraining leave the models alone."""
    from signalloop.config import RunSettings

    db = Workspace(tmp_path / "w.duckdb")
    listed: list[list[dict[str, Any]]] = []

    def fake_run(ws: Workspace, **kwargs: Any) -> dict[str, Any]:
        return {"as_of": "2026-03-01", "models": listed[-1]}

    monkeypatch.setattr("signalloop.run.run", fake_run)

    open_ws = _cursors(db)
    separate = Settings(run=RunSettings(retrain="separate"))
    due = [{"outcome": "conversion", "status": "due"}, {"outcome": "sql", "status": "fresh"}]
    for trigger, settings, models in (
        ("manual", separate, due),
        ("schedule", Settings(), due),
        ("schedule", separate, [{"outcome": "conversion", "status": "fresh"}]),
    ):
        listed.append(models)
        m = runs.RunManager(open_ws, lambda s=settings: s)
        m.start(trigger=trigger)
        m.join(30)
        assert m.state()["last_refresh"] is None and m.state()["last_error"] is None
    assert not (tmp_path / "w.models").exists()
    listed.append(due)
    m = runs.RunManager(open_ws, lambda: separate)
    rid = m.start(trigger="schedule", actor="schedule")
    m.join(60)
    state = m.state()
    assert state["last_error"] is None and not state["running"]
    refresh = state["last_refresh"]
    assert refresh["run_id"] == rid and refresh["as_of"] == "2026-03-01"
    (entry,) = refresh["models"]  # only the one listed as due
    assert entry["outcome"] == "conversion" and entry["status"] == "skipped"
    assert "touchpoints" in entry["reason"]
    assert (tmp_path / "w.models" / "conversion" / "skipped.json").exists()
    # the next run (manual) keeps what the last refit did on show
    m.start(trigger="manual")
    m.join(30)
    assert m.state()["last_refresh"] == refresh
    db.close()
