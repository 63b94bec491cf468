"""``signalloop demo --connected`` (issue 15): the connected loop end to end without credentials:
the simulated account served as Meta and Google by the local sandbox, backfilled, run with
``[run] pull = true`` and ``apply = "dry-run"``, then ``signalloop apply`` as a dry run."""

from __future__ import annotations

import csv
import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import signalloop.demo_connected as dc
from signalloop.cli import app
from signalloop.store import Workspace

#: A small account (the demo's is 90 days x 6 campaigns): c05 is the simulator's LinkedIn one.
SMALL = {
    "days": 30,
    "campaigns": 5,
    "faults": ("override_storm@c03:10-16", "export_glitches@*:0-29"),
}
REAL = "a-real-token-that-must-not-travel"


@pytest.fixture(scope="module")
def connected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of the connected demo through the CLI (``--json``), a user's real token set."""
    out = tmp_path_factory.mktemp("connected") / "demo"
    mp = pytest.MonkeyPatch()
    mp.setenv("SIGNALLOOP_META_ACCESS_TOKEN", REAL)
    mp.setenv("SIGNALLOOP_GOOGLE_REFRESH_TOKEN", REAL)
    mp.delenv("SIGNALLOOP_GOOGLE_ACCESS_TOKEN", raising=False)
    mp.setattr(dc, "run_connected_demo", functools.partial(dc.run_connected_demo, **SMALL))
    try:
        res = CliRunner().invoke(app, ["demo", "--connected", "--out", str(out), "--json"])
        env = {k: os.environ.get(k) for k in dc.SANDBOX_TOKENS}
        env["SIGNALLOOP_GOOGLE_REFRESH_TOKEN"] = os.environ.get("SIGNALLOOP_GOOGLE_REFRESH_TOKEN")
    finally:
        mp.undo()
    assert res.exit_code == 0, res.output
    return {"doc": json.loads(res.stdout), "out": out, "env": env}


def test_backfill_then_run_pulls_nothing_new(connected: dict[str, Any]) -> None:
    doc = connected["doc"]
    back = {p["platform"]: p for p in doc["backfill"]}
    assert set(back) == {"meta", "google"}
    for p in back.values():
        assert p["status"] == "ok" and p["since"] == doc["since"] and p["until"] == doc["until"]
        # Meta reads per ad, Google per ad group (the served rows are per ad)
        assert 0 < p["rows_loaded"] <= doc["served"]["rows"][p["platform"]]
        assert p["rows_quarantined"] == 0
        assert p["changes"]["status"] == "ok" and p["changes"]["rows_loaded"] > 0
    run = doc["run"]
    assert [p["status"] for p in run["pull"]] == ["ok", "ok"]
    for p in run["pull"]:
        assert (p["rows_loaded"], p["rows_restated"]) == (0, 0) and p["rows_unchanged"] > 0
        assert p["changes"]["rows_loaded"] == 0
    taken = {Path(f["file"]).name for f in run["inbox"]["files"]}
    assert {"touchpoints.csv", "conversions.csv", "crm.csv", "spend-not-connected.csv"} <= taken
    assert run["apply"]["status"] == "ok" and run["apply"]["mode"] == "dry-run"


def test_apply_dry_run_reads_every_budget_and_sends_nothing(connected: dict[str, Any]) -> None:
    doc = connected["doc"]
    dry = doc["apply"]
    assert dry["mode"] == "dry-run" and dry["run_id"]
    lines = {ln["campaign_id"]: ln for ln in dry["lines"]}
    assert set(lines) == {a["campaign_id"] for a in doc["run"]["allocation"]["arms"]}
    # the LinkedIn campaign has no connector: refused; the others were read from the sandbox
    assert "no Meta or Google" in lines["c05"]["reason"]
    budgets = doc["served"]["budgets"]
    read = [ln for cid, ln in lines.items() if ln["platform_budget"] is not None]
    assert read, lines  # lines not refused before (held, in learning) read the platform
    for ln in read:
        assert ln["platform_budget"] == pytest.approx(budgets[ln["campaign_id"]])
        # the budget the sandbox holds is the one the pulled edit history last set
        assert "someone changed it" not in ln["reason"]
        assert ln["status"] in ("would_apply", "unchanged", "refused"), ln
        assert ln["status"] != "applied"
    assert dry["changes_recorded"] == 0
    with Workspace(doc["db"], read_only=True) as ws:
        own = ws.con.execute(
            "SELECT count(*) FROM changes WHERE json_extract_string(attrs, '$.source') = "
            "'signalloop'"
        ).fetchone()
        assert own == (0,)
        spend = ws.con.execute("SELECT platform, sum(spend) FROM spend GROUP BY 1").fetchall()
    got = dict(spend)
    with (Path(doc["platform_dir"]) / "spend.csv").open(encoding="utf-8") as fh:
        served: dict[str, float] = {}
        for r in csv.DictReader(fh):
            served[r["platform"]] = served.get(r["platform"], 0.0) + float(r["spend"])
    assert set(served) == {"meta", "google"}
    for platform, total in served.items():
        assert got[platform] == pytest.approx(total, abs=0.01)
    assert got.get("linkedin", 0) > 0


def test_no_credential_is_written_and_the_environment_is_restored(
    connected: dict[str, Any],
) -> None:
    env = connected["env"]
    assert env["SIGNALLOOP_META_ACCESS_TOKEN"] == REAL
    assert env["SIGNALLOOP_GOOGLE_REFRESH_TOKEN"] == REAL
    assert env["SIGNALLOOP_GOOGLE_ACCESS_TOKEN"] is None
    out: Path = connected["out"]
    toml = (out / "signalloop.toml").read_text(encoding="utf-8")
    assert "[connect.meta]" in toml and "pull = true" in toml and 'apply = "dry-run"' in toml
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".toml", ".csv", ".json", ".txt", ".html"):
            text = path.read_text(encoding="utf-8", errors="replace")
            assert REAL not in text, path
            for token in dc.SANDBOX_TOKENS.values():
                assert token not in text, path


def test_connect_sandbox_gives_the_budget_the_history_last_set() -> None:
    from signalloop.push.sandbox import Sandbox

    spend = [
        {"date": "2026-01-01", "platform": "meta", "campaign_id": "m1", "spend": "100"},
        {"date": "2026-01-01", "platform": "google", "campaign_id": "g1", "spend": "50"},
        {"date": "2026-01-01", "platform": "google", "campaign_id": "g2", "spend": "80"},
    ]
    edits = [
        {"ts": "2026-01-01T06:00:00Z", "level": "campaign", "entity_id": "m1",
         "field": "budget", "old_value": "90.00", "new_value": "111.50", "actor": "human"},
        {"ts": "2026-01-01T07:00:00Z", "level": "campaign", "entity_id": "g1",
         "field": "budget", "old_value": "40.00", "new_value": "55.25", "actor": "automation"},
    ]  # fmt: skip
    sb = Sandbox()
    got = dc.budgets_from_history(sb, spend, edits)
    assert got == {"m1": 111.5, "g1": 55.25, "g2": 100.0}
    assert sb.meta_budgets["m1"] == 11150
    assert sb.google_budgets == {"g1": 55_250_000, "g2": 100_000_000}


def test_google_history_since_long_ago_reads_30_days_back_from_the_platform_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``pull google --since <60 days ago> --until <yesterday>`` in the afternoon: the change
    events are read from no earlier than 30 days before the platform's clock (it was clamped
    against the end of ``until``, which Google refused after noon: 'older than 30 days')."""
    from datetime import UTC, date, datetime, timedelta

    from signalloop.config import settings_from_dict
    from signalloop.connect.pull import pull
    from signalloop.push.client import Client
    from signalloop.push.sandbox import Sandbox

    today = date(2026, 3, 10)
    for k, v in dc.SANDBOX_TOKENS.items():
        monkeypatch.setenv(k, v)
    edit = {
        "ts": "2026-03-05T10:00:00Z", "level": "campaign", "entity_id": "g1",
        "field": "budget", "old_value": "40.00", "new_value": "55.25", "actor": "human",
    }  # fmt: skip
    spend = [{"date": "2026-03-05", "platform": "google", "campaign_id": "g1", "spend": "9"}]
    with Sandbox(now=datetime(2026, 3, 10, 18, tzinfo=UTC)) as sb:
        sb.load_spend(spend, google_customer="5550001111")
        sb.load_changes([edit], spend, google_customer="5550001111")
        settings = settings_from_dict(
            {"connect": {"google": {"customer_id": "5550001111", "base_url": sb.base_url}}}
        )
        res = pull(
            Workspace(":memory:"),
            "google",
            since=today - timedelta(days=60),
            until=today - timedelta(days=1),
            today=today,
            settings=settings,
            client=Client(sleep=lambda _: None),
            what=("changes",),
        )
    ch = res.changes
    assert ch is not None and ch["status"] == "ok", ch
    assert ch["rows_loaded"] == 1
    assert ch["since"][:10] == (today - timedelta(days=29)).isoformat()
    assert any("30 days of change events" in n for n in ch["notes"])
