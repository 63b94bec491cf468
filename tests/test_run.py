"""The whole loop (``signalloop run``): inbox, every step in order, the report, re-runs."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from signalloop import simulate as sim
from signalloop.cli import app
from signalloop.config import Settings, settings_from_dict
from signalloop.contract import KINDS
from signalloop.errors import ConfigError, UsageError
from signalloop.ingest import ingest_file
from signalloop.models.api import default_model_dir
from signalloop.run import inbox_kind, model_due, run, scan_inbox, signal_history
from signalloop.store import Workspace

from .conftest import simulated_workspace, write_csv

runner = CliRunner()


def test_first_run_does_every_step_and_writes_both_files(loop_run: dict[str, Any]) -> None:
    doc = loop_run["doc"]
    assert doc["as_of"] == "2026-02-14"  # 45 days from 2026-01-01
    box = doc["inbox"]
    assert sorted(f["kind"] for f in box["files"]) == sorted(KINDS)
    assert all(f["status"] == "ok" and f["rows_loaded"] > 0 for f in box["files"])
    assert box["errors"] == []
    assert [x["file"].rsplit("/", 1)[-1] for x in box["not_taken"]] == ["truth.json"]
    # the stored aggregates, built whole on the first run
    assert doc["aggregates"]["attribution"] == {"refresh": "full", "touch_index": "built"}
    assert doc["aggregates"]["rollups"] == {
        name: {"refresh": "full", "days": None}
        for name in (
            "touch_daily",
            "touch_hourly",
            "conversion_daily",
            "conversion_kinds",
            "crm_daily",
            # (refreshed where read: the stage-regression check, the nowcast's CRM path)
            "crm_record_flags",
            "crm_record_outcome",
        )
    }
    # the outage was found, stored as an exclusion, and diagnosed on its campaign
    assert [e["campaign_id"] for e in doc["checks"]["exclusions"]] == ["c02"]
    c02 = [d["failure_type"] for d in doc["diagnosis"]["diagnoses"] if d["campaign_id"] == "c02"]
    assert c02[0] in ("integration_dropout", "attribution_error")
    assert [m["outcome"] for m in doc["models"]] == ["conversion", "sql"]
    conv = doc["models"][0]
    assert conv["status"] == "refreshed" and conv["reason"] == "no model saved yet"
    assert (Path(conv["model_dir"]) / "backtest.json").exists()
    assert doc["allocation"]["policy"] == "guarded_bayes"
    assert sum(a["recommended"] for a in doc["allocation"]["arms"]) == pytest.approx(
        doc["allocation"]["budget"], abs=0.05
    )
    assert doc["lens"]["verdict"] in ("scale", "keep_scoped")
    assert len(doc["lens"]["checks"]) == 7
    html, js = Path(doc["report"]["html"]), Path(doc["report"]["json"])
    assert html.parent == js.parent == loop_run["out"]
    saved = json.loads(js.read_text())
    assert saved["as_of"] == doc["as_of"]
    assert set(saved["charts"]) == {
        "signal_environment",
        "conversions",
        "cpa_roas",
        "learning_timeline",
        "fatigue_curves",
        "allocation",
    }


def test_the_report_lists_the_days_its_chart_shows(loop_run: dict[str, Any]) -> None:
    """The run's nowcast lists the last REPORT_DAYS cohort days, the conversions chart's;
    45 days of history are all listed."""
    from signalloop.report import CONVERSION_DAYS
    from signalloop.run import REPORT_DAYS

    assert REPORT_DAYS == CONVERSION_DAYS == 90
    listed = loop_run["doc"]["state"]["nowcast"]["account"]["listed"]
    assert listed == {
        "cohort_days": 90,
        "from": "2025-11-17",
        "cohorts_not_listed": 0,
        "crm_cohorts_not_listed": 0,
    }


def test_history_backfills_weekly_then_records_each_run(loop_run: dict[str, Any]) -> None:
    hist = loop_run["doc"]["history"]
    # 45 days: weekly points back from 2026-02-14 while a full week of data precedes them
    assert [h["as_of"] for h in hist] == [
        "2026-01-10",
        "2026-01-17",
        "2026-01-24",
        "2026-01-31",
        "2026-02-07",
        "2026-02-14",
    ]
    assert [h["source"] for h in hist] == ["backfill"] * 5 + ["run"]
    assert hist[-1]["gates"] is not None and hist[0]["gates"] is None
    env = loop_run["doc"]["checks"]["signal_environment"]
    assert hist[-1]["signal_environment"]["account"] == {k: v["score"] for k, v in env.items()}


def test_a_later_run_adds_one_point_and_backfills_nothing(
    loop_run: dict[str, Any], tmp_path: Path
) -> None:
    db = tmp_path / "acct.duckdb"
    shutil.copy(loop_run["db"], db)
    calls: list[str] = []
    with Workspace(db) as ws:
        hist = signal_history(
            ws,
            date(2026, 2, 15),
            Settings(),
            loop_run["doc"]["checks"],
            lambda s, f: calls.append(s),
        )
    before = [h["as_of"] for h in loop_run["doc"]["history"]]
    assert [h["as_of"] for h in hist] == [*before, "2026-02-15"]
    assert [h["source"] for h in hist][-2:] == ["run", "run"]
    assert calls == []  # no backfill progress: nothing recomputed


def test_conversion_chart_shades_the_stored_outage(loop_run: dict[str, Any]) -> None:
    charts = json.loads(Path(loop_run["doc"]["report"]["json"]).read_text())["charts"]
    outage = charts["conversions"]["outages"]
    excl = loop_run["doc"]["checks"]["exclusions"][0]
    assert outage[0]["campaign_id"] == "c02" and outage[0]["start"] == excl["start"]
    acc = charts["conversions"]["account"]
    assert len(acc["dates"]) == 45
    # observed counts by click date add up to what the nowcast cohorts observed
    total = sum(c["observed_conversions"] for c in loop_run["doc"]["state"]["nowcast"]["cohorts"])
    assert sum(acc["observed"]) == total


def test_second_run_adds_nothing_and_keeps_fresh_models(
    loop_run: dict[str, Any], tmp_path: Path
) -> None:
    db = tmp_path / "acct.duckdb"
    shutil.copy(loop_run["db"], db)
    src_models = default_model_dir(str(loop_run["db"]), "conversion").parent
    shutil.copytree(src_models, default_model_dir(str(db), "conversion").parent)
    with Workspace(db) as ws:
        before = ws.counts()
        doc = run(ws, inbox=loop_run["inbox"], out_dir=tmp_path / "r2")
        assert ws.counts() == before
    assert {f["status"] for f in doc["inbox"]["files"]} == {"skipped"}
    # nothing new: no aggregate is touched
    assert doc["aggregates"]["attribution"] == {"refresh": "unchanged"}
    assert {r["refresh"] for r in doc["aggregates"]["rollups"].values()} == {"unchanged"}
    # (no count of days from an earlier run beside "unchanged": nothing was aggregated)
    assert all(r == {"refresh": "unchanged"} for r in doc["aggregates"]["rollups"].values())
    assert [m["status"] for m in doc["models"]] == ["fresh", "fresh"]
    assert "due in 7 days (default cadence)" in doc["models"][0]["reason"]
    assert [h["source"] for h in doc["history"]].count("run") == 1  # same as-of: replaced


def _backdate_models(db: Path, days: int) -> dict[str, str]:
    """Make the saved models of ``db`` look trained ``days`` earlier; their cards' text."""
    cards = {}
    for folder in default_model_dir(str(db), "conversion").parent.iterdir():
        card = folder / "card.json"
        doc = json.loads(card.read_text())
        trained = date.fromisoformat(doc["data"]["as_of"])
        doc["data"]["as_of"] = (trained - timedelta(days=days)).isoformat()
        card.write_text(json.dumps(doc))
        cards[folder.name] = card.read_text()
    return cards


def test_separate_retraining_leaves_due_models_to_model_refresh(
    loop_run: dict[str, Any], tmp_path: Path
) -> None:
    db = tmp_path / "acct.duckdb"
    shutil.copy(loop_run["db"], db)
    models = default_model_dir(str(db), "conversion").parent
    shutil.copytree(default_model_dir(str(loop_run["db"]), "conversion").parent, models)
    cards = _backdate_models(db, 7)
    separate = settings_from_dict({"run": {"retrain": "separate"}})
    with Workspace(db) as ws:
        doc = run(ws, settings=separate, out_dir=tmp_path / "r2")
    assert [(m["outcome"], m["status"], m["saved"]) for m in doc["models"]] == [
        ("conversion", "due", True),
        ("sql", "due", True),
    ]
    assert doc["models"][0]["reason"].startswith("trained 7 days before 2026-02-14")
    assert {m["command"] for m in doc["models"]} == {"signalloop model refresh"}
    # the saved models are untouched and still read: their backtests are diagnose's evidence
    assert {f.name: (f / "card.json").read_text() for f in models.iterdir()} == cards
    assert doc["timings"]["models"] < doc["timings"]["state"]  # (no fit: nothing to wait on)
    html = (tmp_path / "r2" / "report.html").read_text()
    assert "refit with <code>signalloop model refresh</code>" in html

    got = runner.invoke(app, ["model", "refresh", "--db", str(db), "--outcome", "sql", "--json"])
    assert got.exit_code == 0, got.output
    refreshed = json.loads(got.stdout)
    assert refreshed["as_of"] == "2026-02-14"
    [sql] = refreshed["models"]
    assert (sql["outcome"], sql["status"]) == ("sql", "refreshed")
    assert sql["time_split"]["auc"] is not None
    assert json.loads((models / "sql" / "card.json").read_text())["data"]["as_of"] == "2026-02-14"
    assert (models / "conversion" / "card.json").read_text() == cards["conversion"]

    got = runner.invoke(app, ["model", "refresh", "--db", str(db), "--outcome", "sql"])
    assert got.exit_code == 0 and "model sql: fresh (trained 0 days ago" in got.stdout
    got = runner.invoke(app, ["model", "refresh", "--db", str(db), "--outcome", "revenue"])
    assert got.exit_code == 2 and "--outcome must be one of" in got.output


def test_separate_retraining_without_a_saved_model_runs_without_one(
    loop_run: dict[str, Any], tmp_path: Path
) -> None:
    db = tmp_path / "acct.duckdb"
    shutil.copy(loop_run["db"], db)
    separate = settings_from_dict({"run": {"retrain": "separate"}})
    with Workspace(db) as ws:
        doc = run(ws, settings=separate, out_dir=tmp_path / "r2")
    assert [(m["status"], m["saved"], m["reason"]) for m in doc["models"]] == [
        ("due", False, "no model saved yet"),
        ("due", False, "no model saved yet"),
    ]
    assert not default_model_dir(str(db), "conversion").parent.exists()
    assert doc["lens"]["verdict"] in ("scale", "keep_scoped")


def test_model_due_on_age_and_on_changed_settings(loop_run: dict[str, Any]) -> None:
    folder = default_model_dir(str(loop_run["db"]), "conversion")
    assert model_due(folder, "conversion", date(2026, 2, 14), Settings()) == (
        False,
        "trained 0 days ago; due in 7 days (default cadence)",
    )
    due, why = model_due(folder, "conversion", date(2026, 2, 21), Settings())
    assert due and why.startswith("trained 7 days before 2026-02-21 (retrain every 7 days")
    declared = settings_from_dict({"lens": {"retrain_every_days": 3}})
    assert model_due(folder, "conversion", date(2026, 2, 17), declared)[0]
    longer = settings_from_dict({"models": {"horizon_days": {"conversion": 3}}})
    assert model_due(folder, "conversion", date(2026, 2, 14), longer) == (
        True,
        "its settings changed (horizon, funnel or parameters)",
    )
    assert model_due(folder.parent / "won", "won", date(2026, 2, 14), Settings()) == (
        True,
        "no model saved yet",
    )


def test_inbox_takes_kinds_by_folder_or_name_and_lists_the_rest(tmp_path: Path) -> None:
    (tmp_path / "spend").mkdir()
    for name in ("spend/meta export.csv", "crm_hubspot.csv.gz", "notes.csv", "readme.md"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / ".hidden.csv").write_text("x\n")
    take, left = scan_inbox(tmp_path)
    assert [(k, p.name) for k, p in take] == [
        ("spend", "meta export.csv"),
        ("crm", "crm_hubspot.csv.gz"),
    ]
    assert sorted(Path(x["file"]).name for x in left) == ["notes.csv", "readme.md"]
    assert "kind unknown" in next(x for x in left if x["file"].endswith("notes.csv"))["reason"]
    assert inbox_kind(tmp_path / "CONVERSIONS-2026.parquet", tmp_path) == "conversions"
    with pytest.raises(UsageError, match="is not a folder"):
        scan_inbox(tmp_path / "missing")


def test_run_settings_are_validated() -> None:
    s = settings_from_dict(
        {"run": {"inbox": "in", "budget": 900, "profiles": {"spend": "meta_ads"}}},
        source="/p/signalloop.toml",
    )
    assert s.run.inbox == "/p/in" and s.run.out == "/p/signalloop-report"
    assert s.run.budget == 900.0 and s.run.profiles == {"spend": "meta_ads"}
    for bad, match in (
        ({"budget": -1}, "budget must be a positive number"),
        ({"objective": "clicks"}, "objective must be conversions or value"),
        ({"outcomes": ["revenue"]}, "outcomes must be a list of"),
        ({"profiles": {"ads": "meta_ads"}}, r"\[run.profiles\] maps kinds"),
        ({"inbx": "x"}, r"unknown \[run\] key\(s\) inbx"),
        ({"retrain": "weekly"}, r'retrain must be "inline" or "separate"'),
    ):
        with pytest.raises(ConfigError, match=match):
            settings_from_dict({"run": bad})


def test_cli_run_reports_a_refused_inbox_file_exits_2_and_still_writes(
    loop_run: dict[str, Any], tmp_path: Path
) -> None:
    db = tmp_path / "acct.duckdb"
    shutil.copy(loop_run["db"], db)
    shutil.copytree(
        default_model_dir(str(loop_run["db"]), "conversion").parent,
        default_model_dir(str(db), "conversion").parent,
    )
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "spend_broken.csv").write_text('date,campaign_id,spend\n2026-02-14,"c01,12\n')
    res = runner.invoke(
        app, ["run", "--db", str(db), "--inbox", str(inbox), "--out", str(tmp_path / "r")]
    )
    assert res.exit_code == 2, res.output
    assert "1 inbox file(s) could not be ingested; the loop ran without them" in res.output
    assert "spend_broken.csv" in res.output
    assert "Traceback" not in res.output
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["inbox"]["errors"][0]["kind"] == "spend"
    res = runner.invoke(
        app, ["run", "--db", str(db), "--out", str(tmp_path / "r3"), "--json", "--budget", "500"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["allocation"]["budget"] == 500.0 and doc["inbox"] is None
    assert "charts" not in doc and doc["report"]["html"].endswith("report.html")


def test_run_refuses_an_empty_workspace(tmp_path: Path) -> None:
    res = runner.invoke(app, ["run", "--db", str(tmp_path / "empty.duckdb")])
    assert res.exit_code == 2
    assert "holds no data yet" in res.output


def test_a_dateless_export_takes_the_date_in_its_name_and_empty_charts_say_why(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rows = [("meta", "c1", 1000, 20, 50.0), ("meta", "c2", 2000, 30, 80.0)]
    header = ["platform", "campaign_id", "impressions", "clicks", "spend"]
    write_csv(inbox / "spend_meta_2026-03-01.csv", header, rows)
    with Workspace(tmp_path / "ws.duckdb") as ws:
        doc = run(ws, inbox=inbox, out_dir=tmp_path / "r")
    (f,) = doc["inbox"]["files"]
    assert f["rows_loaded"] == 2 and f["message"] == "reporting date 2026-03-01 from the file name"
    assert doc["as_of"] == "2026-03-01"
    assert doc["allocation"]["budget"] == pytest.approx(130.0 / 7, abs=0.01)
    # no CRM row: the nowcast reads no CRM outcome, and the report says so (not "live")
    assert doc["aggregates"]["rollups"]["crm_record_outcome"] == {"refresh": "not read"}
    charts = doc["charts"]
    assert charts["conversions"]["account"]["dates"] == []
    assert charts["fatigue_curves"]["creatives"] == []
    html = Path(doc["report"]["html"]).read_text(encoding="utf-8")
    assert "no clicks or conversions in the workspace yet" in html
    assert "no live creative with delivery" in html


def test_an_inbox_of_refused_files_only_says_so(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_csv(inbox / "spend.csv", ["platform", "campaign_id", "spend"], [("meta", "c1", 5)])
    with Workspace(tmp_path / "ws.duckdb") as ws, pytest.raises(UsageError) as exc:
        run(ws, inbox=inbox, out_dir=tmp_path / "r")
    msg = str(exc.value)
    assert "holds no data yet: 1 inbox file(s) could not be ingested" in msg
    assert "spend.csv, line 1: a spend file needs column(s) 'date'" in msg
    assert "put the date in the file name" in msg


def test_a_long_history_is_backfilled_once_within_its_weeks(tmp_path: Path) -> None:
    """120 days of spend, more than the 12 weeks the history shows: the first run backfills
    the 11 weeks before it; the next day adds its own point and runs no checks (it had
    backfilled 11 more weeks back from the earliest point, every day until the first week:
    8 s a day at 100 campaigns and a year of history)."""
    from signalloop.checks import run_checks

    ws, _, _ = simulated_workspace(tmp_path, days=120, campaigns=2, seed=4, shape="spend")
    day = date(2026, 4, 20)
    with ws:
        calls: list[float] = []
        checks = run_checks(ws, as_of=day, settings=Settings()).to_dict()
        hist = signal_history(ws, day, Settings(), checks, lambda s, f: calls.append(f))
        assert [h["as_of"] for h in hist] == [
            (day - timedelta(days=7 * k)).isoformat() for k in range(11, -1, -1)
        ]
        assert [h["source"] for h in hist] == ["backfill"] * 11 + ["run"]
        assert calls[-1] == 1.0
        calls.clear()
        nxt = day + timedelta(days=1)
        later = signal_history(ws, nxt, Settings(), checks, lambda s, f: calls.append(f))
    assert [h["as_of"] for h in later] == [h["as_of"] for h in hist] + [nxt.isoformat()]
    assert calls == []


def test_separate_retraining_lists_a_model_refresh_could_not_fit_as_skipped(
    tmp_path: Path,
) -> None:
    """An account too small to fit (no touchpoints: the crm shape): with retrain =
    "separate" the run lists the models as due until `model refresh` has tried; then, for a
    week, as skipped with the refresh's reason; then due again."""
    res = sim.simulate(sim.SimulationConfig(days=30, campaigns=2, seed=3, shape="crm"))
    paths = sim.write(res, tmp_path / "data")
    db = tmp_path / "small.duckdb"
    separate = settings_from_dict({"run": {"retrain": "separate"}})
    with Workspace(db) as ws:
        for kind, p in paths.items():
            if kind in KINDS:
                ingest_file(ws, kind, p)
        first = run(ws, settings=separate, out_dir=tmp_path / "r1")
    assert {(m["status"], m["reason"]) for m in first["models"]} == {("due", "no model saved yet")}
    got = runner.invoke(app, ["model", "refresh", "--db", str(db), "--json"])
    assert got.exit_code == 0, got.output
    tried = json.loads(got.stdout)["models"]
    assert tried and {m["status"] for m in tried} == {"skipped"}
    notes = {m["outcome"]: m["reason"] for m in tried}
    with Workspace(db) as ws:
        second = run(ws, settings=separate, out_dir=tmp_path / "r2")
    as_of = second["as_of"]
    for m in second["models"]:
        assert (m["status"], m["saved"]) == ("skipped", False)
        assert m["reason"].startswith(f"the refit as of {as_of} could not fit it: ")
        assert notes[m["outcome"]] in m["reason"] and "tried again from" in m["reason"]
    # a week later the model is due again (the refresh job then tries once more)
    for m in second["models"]:
        note = Path(m["model_dir"]) / "skipped.json"
        doc = json.loads(note.read_text())
        doc["as_of"] = (date.fromisoformat(doc["as_of"]) - timedelta(days=7)).isoformat()
        note.write_text(json.dumps(doc))
    with Workspace(db) as ws:
        third = run(ws, settings=separate, out_dir=tmp_path / "r3")
    assert {(m["status"], m["reason"]) for m in third["models"]} == {("due", "no model saved yet")}
