"""Signal checks and the gate, on a seeded simulated account whose truth we know."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from signalloop.checks import REGISTRY, exclusions_csv, load_exclusions, run_checks
from signalloop.checks.base import CheckContext
from signalloop.checks.signals import poisson_cdf
from signalloop.config import Settings, settings_from_dict
from signalloop.errors import ConfigError, UsageError
from signalloop.ingest import ingest_file
from signalloop.store import Workspace

from .conftest import simulated_workspace, write_csv

FAULTS = (
    "tracking_outage@c06:54-59",  # still going at the as-of date: must hold c06
    "crm_sync_dropout@c05:20-27",  # over: excluded, not held
    "utm_mess@c03:10-40",
    "duplicate_events@c01:10-30",
    "stage_overwrite@c04:10-50",
)
START = date(2026, 1, 1)


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Any]]:
    tmp = tmp_path_factory.mktemp("acct")
    ws, result, _ = simulated_workspace(tmp, days=60, campaigns=6, seed=5, faults=FAULTS)
    yield ws, result
    ws.close()


@pytest.fixture(scope="module")
def report(account: tuple[Workspace, Any]) -> Any:
    ws, _ = account
    return run_checks(ws)


def findings(report: Any, check: str, campaign: str | None = None) -> list[Any]:
    return [
        f
        for f in report.findings
        if f.check == check and (campaign is None or f.campaign_id == campaign)
    ]


def day(i: int) -> date:
    return START + timedelta(days=i)


def test_as_of_defaults_to_the_last_day_with_data(report: Any) -> None:
    assert report.as_of == day(59)


def test_open_tracking_outage_is_found_to_the_day_and_holds(report: Any) -> None:
    (f,) = [x for x in findings(report, "integration_dropout", "c06") if x.severity != "info"]
    assert f.evidence["kind"] == "tracking_outage"
    assert abs((f.window[0] - day(54)).days) <= 1
    assert f.window[1] is None and f.active and f.severity == "critical"
    gate = {c["campaign_id"]: c for c in report.campaigns}
    assert gate["c06"]["gate"] == "hold" and gate["c06"]["reasons"] == ["integration_dropout"]


def test_past_crm_sync_dropout_is_excluded_not_held(
    account: tuple[Workspace, Any], report: Any
) -> None:
    ws, _ = account
    (f,) = [x for x in findings(report, "integration_dropout", "c05") if x.severity != "info"]
    assert f.evidence["kind"] == "crm_sync_dropout" and not f.active
    assert abs((f.window[0] - day(20)).days) <= 1 and abs((f.window[1] - day(27)).days) <= 1
    assert {c["campaign_id"]: c["gate"] for c in report.campaigns}["c05"] == "open"
    stored = load_exclusions(ws)
    assert {(e["campaign_id"], e["end"] is None) for e in stored} == {("c05", False), ("c06", True)}


def test_no_healthy_campaign_is_held_and_no_outage_at_the_recent_edge(report: Any) -> None:
    assert report.held == ["c06"]
    for cid in ("c01", "c02", "c03", "c04"):
        assert not [x for x in findings(report, "integration_dropout", cid) if x.severity != "info"]


def test_utm_mess_found_with_canonical_proposals(report: Any) -> None:
    (src, *_rest) = [f for f in findings(report, "utm_hygiene", "c03")]
    assert set(src.evidence["proposed"].values()) <= {
        "facebook",
        "google",
        "linkedin",
        "cpc",
        "paid_social",
        "social",
    }
    account_level = findings(report, "utm_hygiene", None)
    assert any(
        f.evidence.get("variants") and len(f.evidence["variants"]) > 1 for f in account_level
    )
    assert not findings(report, "utm_hygiene", "c01")


def test_duplicates_count_what_ingest_folded(account: tuple[Workspace, Any], report: Any) -> None:
    _, result = account
    note = next(x for x in result.truth["faults"] if x["name"] == "duplicate_events")
    (f,) = findings(report, "duplicates", "c01")
    assert f.evidence["copies"] == note["rows"]["added"]["conversions"]
    assert not findings(report, "duplicates", "c02")


def test_stage_regressions_found_on_the_overwritten_campaign(
    account: tuple[Workspace, Any], report: Any
) -> None:
    _, result = account
    note = next(x for x in result.truth["faults"] if x["name"] == "stage_overwrite")
    (f,) = findings(report, "stage_regression", "c04")
    truth_ids = set(note["record_ids"])
    assert f.evidence["backwards"] >= 0.9 * len(truth_ids)
    assert set(f.evidence["examples"]) <= truth_ids
    assert not findings(report, "stage_regression", "c01")


def test_json_contract(report: Any) -> None:
    doc = json.loads(report.to_json())
    assert {"as_of", "signal_environment", "campaigns", "findings", "exclusions"} <= set(doc)
    for c in doc["campaigns"]:
        assert {"campaign_id", "gate", "reasons", "signal_environment"} <= set(c)
        assert c["gate"] in ("open", "hold")
        for comp in c["signal_environment"].values():
            assert comp is None or 0.0 <= comp["score"] <= 1.0
    for f in doc["findings"]:
        assert f["severity"] in ("info", "warn", "critical")
        assert {"check", "campaign_id", "message", "evidence"} <= set(f)
    assert set(doc["signal_environment"]) == {
        "conversion_volume",
        "attribution_accuracy",
        "creative_freshness",
        "integration_uptime",
    }
    assert [e["campaign_id"] for e in doc["exclusions"]] == ["c06", "c05"]


def test_exclusions_export_as_google_ads_data_exclusions(report: Any) -> None:
    rows = list(csv.DictReader(io.StringIO(exclusions_csv(report.exclusions, report.as_of))))
    assert [r["Campaigns"] for r in rows] == ["c06", "c05"]
    assert rows[0]["Scope"] == "CAMPAIGN" and rows[0]["End time"] == f"{day(59)} 23:59:59"
    assert rows[1]["Start time"].endswith("00:00:00")


def test_an_earlier_as_of_sees_the_outage_as_not_yet_there(account: tuple[Workspace, Any]) -> None:
    ws, _ = account
    early = run_checks(ws, as_of=day(45), store_exclusions=False)
    assert early.as_of == day(45) and early.held == []
    assert not [
        f
        for f in early.findings
        if f.campaign_id == "c06" and f.check == "integration_dropout" and f.severity != "info"
    ]


def test_thresholds_come_from_settings_and_unknown_ones_fail(
    account: tuple[Workspace, Any],
) -> None:
    ws, _ = account
    strict = settings_from_dict({"learning_threshold": 10_000})
    r = run_checks(ws, settings=strict, only=["conversion_volume"], store_exclusions=False)
    assert {f.campaign_id for f in r.findings if f.severity == "warn"} == {
        f"c0{i}" for i in range(1, 7)
    }
    with pytest.raises(ConfigError, match="unknown threshold"):
        run_checks(
            ws,
            settings=settings_from_dict({"checks": {"duplicates": {"share": 1}}}),
            only=["duplicates"],
            store_exclusions=False,
        )
    with pytest.raises(UsageError, match="unknown check"):
        run_checks(ws, only=["dupes"], store_exclusions=False)


def test_every_check_is_a_declared_spec() -> None:
    assert set(REGISTRY) == {
        "utm_hygiene",
        "duplicates",
        "timestamps",
        "label_completeness",
        "stage_regression",
        "late_offline_conversions",
        "integration_dropout",
        "attribution_match",
        "creative_freshness",
        "conversion_volume",
    }
    for spec in REGISTRY.values():
        assert spec.severity in ("info", "warn", "critical") and spec.description
        assert spec.options(Settings()) == dict(spec.thresholds)


def test_delivery_stop_is_not_a_tracking_outage(ws: Workspace, tmp_path: Path) -> None:
    # 30 days of clicks and conversions; days 20-24 the campaign delivers nothing at all
    tps, convs = [], []
    n = 0
    for d in range(30):
        clicks = 0 if 20 <= d <= 24 else 40
        for k in range(clicks):
            ts = datetime(2026, 1, 1) + timedelta(days=d, minutes=10 + 30 * k)
            tps.append([f"t{n}", ts.isoformat() + "Z", f"u{n}", f"k{n}", "c1"])
            if k % 4 == 0:
                cts = ts + timedelta(hours=2)
                convs.append(
                    [f"v{n}", cts.isoformat() + "Z", "lead", f"k{n}", ts.isoformat() + "Z", "pixel"]
                )
            n += 1
    ingest_file(
        ws,
        "touchpoints",
        write_csv(
            tmp_path / "t.csv", ["touch_id", "ts", "user_id", "click_id", "campaign_id"], tps
        ),
    )
    ingest_file(
        ws,
        "conversions",
        write_csv(
            tmp_path / "c.csv",
            ["conversion_id", "ts", "kind", "click_id", "click_ts", "source"],
            convs,
        ),
    )
    r = run_checks(ws, only=["integration_dropout"], store_exclusions=False)
    kinds = [f.evidence["kind"] for f in r.findings]
    assert kinds == ["delivery_stop"]
    assert r.findings[0].window == (date(2026, 1, 21), date(2026, 1, 25))
    assert r.held == [] and r.exclusions == []


def test_poisson_tail() -> None:
    assert poisson_cdf(0, 10.0) == pytest.approx(4.54e-5, rel=1e-2)
    assert poisson_cdf(10, 10.0) == pytest.approx(0.583, abs=1e-3)


def test_empty_workspace_says_what_to_do(ws: Workspace) -> None:
    with pytest.raises(UsageError, match="ingest something first"):
        run_checks(ws)


def test_cli_check_json_and_fail_on_hold(account: tuple[Workspace, Any], tmp_path: Path) -> None:
    import shutil

    ws, _ = account
    ws.con.execute("CHECKPOINT")
    db = tmp_path / "copy.duckdb"  # DuckDB allows one writer: the fixture holds the original
    shutil.copy(ws.path, db)
    out = tmp_path / "excl.csv"
    cmd = [sys.executable, "-m", "signalloop", "check", "--db", str(db), "--json"]
    p = subprocess.run(
        [*cmd, "--fail-on", "hold", "--exclusions-csv", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert [c["campaign_id"] for c in doc["campaigns"] if c["gate"] == "hold"] == ["c06"]
    assert out.read_text().startswith("Name,Scope,Campaigns")
    p = subprocess.run([*cmd, "--as-of", "2026-02-10"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and json.loads(p.stdout)["as_of"] == "2026-02-10"
    p = subprocess.run([*cmd, "--as-of", "10/02/2026"], capture_output=True, text=True)
    assert p.returncode == 2 and "YYYY-MM-DD" in p.stderr


def test_context_cuts_tables_at_the_as_of_day(account: tuple[Workspace, Any]) -> None:
    ws, _ = account
    ctx = CheckContext(ws, day(10), Settings())
    latest = ctx.table("touchpoints").ts.max().execute()
    assert latest < datetime(2026, 1, 12)
    assert ctx.table("spend").date.max().execute().date() == day(10)


def test_exclusions_are_honoured_and_kept_by_partial_runs(account: tuple[Workspace, Any]) -> None:
    from signalloop.checks.engine import without_exclusions

    ws, _ = account
    run_checks(ws, only=["duplicates"])  # integration_dropout did not run: keep what is stored
    assert len(load_exclusions(ws)) == 2
    t = ws.table("touchpoints")
    kept = without_exclusions(ws, t, "campaign_id", t.ts.date())
    gone = t.count().execute() - kept.count().execute()
    in_windows = t.filter(
        ((t.campaign_id == "c06") & (t.ts.date() >= day(54)))
        | ((t.campaign_id == "c05") & t.ts.date().between(day(20), day(27)))
    )
    # the stored windows are the detected ones (to within a day of the truth)
    assert abs(gone - in_windows.count().execute()) < 0.2 * gone


def test_trailing_mean_equals_the_mean_of_each_window() -> None:
    """The integration-dropout check's CRM activity baseline, from running sums, equals the
    day-by-day mean of the window before each day it replaced (counts: whole numbers)."""
    import numpy as np

    from signalloop.checks.signals import _trailing_mean

    rng = np.random.default_rng(4)
    for n, window in ((0, 14), (5, 14), (8, 3), (40, 14), (400, 14), (60, 90)):
        o = rng.poisson(rng.uniform(0, 50), size=n).astype(float)
        want = np.zeros(n)
        for t in range(7, n):
            want[t] = float(o[max(0, t - window) : t].mean())
        assert np.array_equal(_trailing_mean(o, window), want)


def test_saved_exclusions_replace_the_checks_own_and_keep_the_manual_ones(
    tmp_path: Path,
) -> None:
    """``save_exclusions`` writes every window in one statement (a doubled history has
    hundreds): each window as given (dates as text or dates, an open end as null), the
    checks' earlier windows replaced, a window entered by hand kept; none at all empties
    the checks' own."""
    from signalloop.checks.engine import save_exclusions

    with Workspace(tmp_path / "ws.duckdb") as ws:
        save_exclusions(ws, [], day(0))
        ws.con.execute(
            "INSERT INTO exclusions VALUES ('c09', DATE '2026-01-03', NULL, 'by hand', "
            "'manual', DATE '2026-01-03', TIMESTAMP '2026-01-03 09:00')"
        )
        windows = [
            {"campaign_id": f"c{i:03d}", "start": day(i), "end": None, "reason": "outage"}
            for i in range(300)
        ]
        windows[1] = {
            "campaign_id": "c'1",
            "start": "2026-01-05",
            "end": "2026-01-07",
            "reason": "tracking: it's down",
        }
        save_exclusions(ws, windows, day(30))
        save_exclusions(ws, windows, day(31))  # (replaced, not added)
        got = {
            (e["campaign_id"], e["start"], e["end"], e["reason"], e["source"])
            for e in load_exclusions(ws)
        }
        want = {
            (str(w["campaign_id"]), str(w["start"]), w["end"], w["reason"], "check")
            for w in windows
        }
        assert got == want | {("c09", "2026-01-03", None, "by hand", "manual")}
        assert ws.con.execute(
            "SELECT count(*), min(as_of) FROM exclusions WHERE source = 'check'"
        ).fetchone() == (300, day(31))
        save_exclusions(ws, [], day(32))
        assert [e["source"] for e in load_exclusions(ws)] == ["manual"]


def test_events_before_the_first_spend_and_duplicate_shares_count_every_conversion(
    ws: Workspace, tmp_path: Path
) -> None:
    # c1 spends from day 5; its clicks (5 a day) and conversions (2 a day) start on day 1.
    # Three conversions arrive twice, and one conversion no campaign can claim arrives twice.
    day0 = datetime(2026, 1, 1)
    spend = [
        [(day0 + timedelta(days=d)).date().isoformat(), "meta", "c1", 100, 5, 10.0]
        for d in range(4, 9)
    ]
    tps, convs = [], []
    for d in range(9):
        for k in range(5):
            ts = day0 + timedelta(days=d, hours=1 + k)
            tps.append([f"t{d}-{k}", ts.isoformat() + "Z", f"u{d}-{k}", "c1"])
        for k in range(2):
            ts = day0 + timedelta(days=d, hours=8 + k)
            convs.append([f"v{d}-{k}", ts.isoformat() + "Z", "lead", "c1", f"u{d}-{k}"])
    convs += [convs[0], convs[5], convs[17]]  # (days 1, 3 and 9)
    stray = ["v-stray", (day0 + timedelta(days=8, hours=12)).isoformat() + "Z", "lead", "", "x"]
    convs += [stray, stray]
    ingest_file(
        ws,
        "spend",
        write_csv(
            tmp_path / "s.csv",
            ["date", "platform", "campaign_id", "impressions", "clicks", "spend"],
            spend,
        ),
    )
    ingest_file(
        ws,
        "touchpoints",
        write_csv(tmp_path / "t.csv", ["touch_id", "ts", "user_id", "campaign_id"], tps),
    )
    ingest_file(
        ws,
        "conversions",
        write_csv(
            tmp_path / "c.csv", ["conversion_id", "ts", "kind", "campaign_id", "user_id"], convs
        ),
    )
    r = run_checks(ws, only=["timestamps", "duplicates"], store_exclusions=False)
    (early,) = [f for f in r.findings if f.check == "timestamps" and f.campaign_id == "c1"]
    assert early.evidence["before_first_spend"] == {"touchpoints": 20, "conversions": 8}
    dup = {f.campaign_id: f.evidence for f in r.findings if f.check == "duplicates"}
    assert dup["c1"]["copies"] == 3 and dup["c1"]["share"] == round(3 / 18, 4)
    assert dup[None]["copies"] == 1 and dup[None]["share"] == 1.0
