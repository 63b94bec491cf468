"""``signalloop apply`` against the local stand-ins (issue 15, item 3): the allocation applied
within the guardrails (daily limit, held, in learning, a budget changed by hand), dry run by
default, Google's partial failure, every change recorded with its actor and recognised by the
next pull, applied once per day, rolled back; the CLI; ``[run] apply``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from signalloop.cli import app
from signalloop.config import Settings, settings_from_dict
from signalloop.connect.apply import apply, rollback
from signalloop.connect.pull import pull
from signalloop.errors import UsageError
from signalloop.phase import phase
from signalloop.push.client import Client
from signalloop.push.sandbox import Sandbox
from signalloop.store import Workspace

from .connect_setup import ACT, CID, ENV, NOW, platform_env, sandbox

TODAY = date(2026, 3, 10)
TOKEN = "meta-apply-secret-81d3"
DEV = "dev-apply-secret-3c5e"
ACCESS = "access-apply-secret-9a27"
#: Meta: 501 has the campaign budget (100.00), 502 its ad sets' (50.00, 30.00); 503 is held,
#: 504 in learning, 505 asked to move 30%. Google: 111 (50.00) and 222 (1.00, too small to cut).
META_OBJECTS = [
    {"id": "501", "kind": "campaign", "daily_budget": 10000},
    {"id": "502", "kind": "campaign"},
    {"id": "5021", "kind": "adset", "campaign_id": "502", "daily_budget": 5000},
    {"id": "5022", "kind": "adset", "campaign_id": "502", "daily_budget": 3000},
    {"id": "5023", "kind": "adset", "campaign_id": "502", "daily_budget": 2000, "status": "PAUSED"},
    {"id": "503", "kind": "campaign", "daily_budget": 4000},
    {"id": "504", "kind": "campaign", "daily_budget": 4000},
    {"id": "505", "kind": "campaign", "daily_budget": 4000},
]
ARMS = [  # campaign, current (mean spend), recommended
    ("501", 80.0, 90.0),  # +12.5%: 100.00 -> 112.50
    ("502", 60.0, 54.0),  # -10%: 50.00 -> 45.00, 30.00 -> 27.00
    ("503", 40.0, 44.0),  # held
    ("504", 40.0, 44.0),  # in learning
    ("505", 40.0, 52.0),  # +30%: over the daily limit
    ("111", 40.0, 46.0),  # +15%: 50.00 -> 57.50
    ("222", 1.0, 0.9),  # -10%: 1.00 -> 0.90, below Google's minimum (the sandbox's)
    ("999", 10.0, 11.0),  # no spend rows on a connected platform
]


def delivery() -> list[dict[str, Any]]:
    rows = []
    for d in range(10):
        day = (TODAY - timedelta(days=1 + d)).isoformat()
        for camp in ("501", "502", "503", "504", "505", "111", "222"):
            rows.append(
                {
                    "date": day,
                    "campaign_id": camp,
                    "adset_id": f"{camp}1",
                    "ad_id": f"{camp}11",
                    "impressions": 1000,
                    "clicks": 20,
                    "spend": 40.0,
                    "conversions": 4,
                }
            )
    return rows


def run_doc(arms: list[tuple[str, float, float]] = ARMS) -> dict[str, Any]:
    return {
        "run_id": "run-1",
        "as_of": (TODAY - timedelta(days=1)).isoformat(),
        "allocation": {
            "arms": [{"campaign_id": c, "current": cur, "recommended": rec} for c, cur, rec in arms]
        },
        "checks": {
            "campaigns": [
                {"campaign_id": c, "gate": "hold" if c == "503" else "open", "reasons": []}
                for c, _, _ in arms
            ]
        },
        "state": {
            "phase": {
                "entities": [
                    {
                        "level": "adset",
                        "entity_id": f"{c}1",
                        "campaign_id": c,
                        "state": "learning" if c == "504" else "stable",
                    }
                    for c, _, _ in arms
                ]
            }
        },
    }


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    platform_env(monkeypatch, TOKEN, DEV, ACCESS)


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(TOKEN, DEV, ACCESS) as s:
        rows = delivery()
        s.load_delivery("meta", ACT, [r for r in rows if r["campaign_id"].startswith("5")])
        s.load_delivery("google", CID, [r for r in rows if not r["campaign_id"].startswith("5")])
        s.load_meta_objects(ACT, META_OBJECTS)
        s.load_google_budgets(CID, {"111": 50_000_000, "222": 1_000_000})
        yield s


def settings(sb: Sandbox) -> Settings:
    return settings_from_dict(
        {
            "connect": {
                "meta": {"ad_account_id": ACT, "base_url": sb.base_url, "currency": "EUR"},
                "google": {"customer_id": CID, "base_url": sb.base_url, "currency": "USD"},
            }
        }
    )


def client() -> Client:
    return Client(sleep=lambda _: None)


def pulled(sb: Sandbox, ws: Workspace | None = None) -> Workspace:
    ws = ws or Workspace(":memory:")
    for platform in ("meta", "google"):
        pull(ws, platform, settings=settings(sb), today=TODAY, client=client())
    return ws


def go(ws: Workspace, sb: Sandbox, **kw: Any) -> dict[str, Any]:
    doc = kw.pop("doc", None) or run_doc()
    res = apply(ws, settings=settings(sb), run_doc=doc, client=client(), now=NOW, **kw)
    out = res.to_dict()
    out["by"] = {(ln["campaign_id"], ln["entity_id"]): ln for ln in out["lines"]}
    return out


def test_dry_run_reads_and_checks_every_line_and_sends_nothing(sb: Sandbox) -> None:
    ws = pulled(sb)
    before = (sb.meta_budgets, sb.google_budgets)
    res = go(ws, sb)
    by = res["by"]
    assert res["mode"] == "dry-run" and (sb.meta_budgets, sb.google_budgets) == before
    assert (by[("501", "501")]["new_budget"], by[("501", "501")]["status"]) == (
        112.5,
        "would_apply",
    )
    assert by[("502", "5021")]["new_units"] == 4500 and by[("502", "5022")]["new_units"] == 2700
    assert ("502", "5023") not in by  # a paused ad set is left alone
    assert by[("111", "111")]["new_units"] == 57_500_000
    assert "gate holds" in by[("503", "503")]["reason"]
    assert "in learning" in by[("504", "504")]["reason"]
    assert "over the daily limit" in by[("505", "505")]["reason"]
    assert "no Meta or Google platform" in by[("999", "999")]["reason"]
    assert res["counts"] == {"refused": 4, "would_apply": 5}
    assert ws.con.execute("SELECT count(*) FROM changes WHERE attrs->>'source' = 'signalloop'")
    n = ws.con.execute(
        "SELECT count(*) FROM changes WHERE json_extract_string(attrs, '$.source') = 'signalloop'"
    ).fetchone()
    assert n == (0,)
    assert any("dry run" in x for x in res["notes"])


def test_live_apply_sends_records_and_is_not_repeated(sb: Sandbox) -> None:
    ws = pulled(sb)
    res = go(ws, sb, live=True)
    by = res["by"]
    assert by[("501", "501")]["status"] == "applied"
    assert sb.meta_budgets["501"] == 11250 and sb.meta_budgets["5021"] == 4500
    assert sb.google_budgets["111"] == 57_500_000
    # Google's partial failure: 222 is refused by the platform, 111 still applied
    assert by[("222", "222")]["status"] == "failed"
    assert "MONEY_AMOUNT_LESS_THAN_CURRENCY_MINIMUM_CBU" in by[("222", "222")]["reason"]
    assert sb.google_budgets["222"] == 1_000_000
    assert res["changes_recorded"] == 4
    rows = ws.con.execute(
        "SELECT level, entity_id, old_value, new_value, actor FROM changes "
        "WHERE json_extract_string(attrs, '$.source') = 'signalloop' ORDER BY entity_id"
    ).fetchall()
    assert rows == [
        ("campaign", "111", "50", "57.5", "automation"),
        ("campaign", "501", "100", "112.5", "automation"),
        ("adset", "5021", "50", "45", "automation"),
        ("adset", "5022", "30", "27", "automation"),
    ]
    again = go(ws, sb, live=True)
    assert again["by"][("501", "501")]["status"] == "already_applied"
    assert sb.meta_budgets["501"] == 11250
    # the next pull of the history finds the platforms' records of these edits: not stored twice
    n_before = ws.con.execute("SELECT count(*) FROM changes").fetchone()
    for platform in ("meta", "google"):
        res_pull = pull(
            ws, platform, settings=settings(sb), today=TODAY, client=client(), what=("changes",)
        )
        assert res_pull.changes is not None and res_pull.changes["rows_own"] >= 1
    assert ws.con.execute("SELECT count(*) FROM changes").fetchone() == n_before


def test_applied_changes_are_automation_in_the_phase_replay(sb: Sandbox) -> None:
    ws = pulled(sb)
    go(ws, sb, live=True, doc=run_doc([("501", 80.0, 90.0)]))
    report = phase(ws, TODAY)
    ent = next(e for e in report.entities if e.campaign_id == "501")
    assert ent.human_resets == 0  # 12.5% is under the 20% significance threshold anyway
    assert all(r.actor != "human" for r in ent.resets)


def test_a_budget_changed_by_hand_since_stops_its_line(sb: Sandbox) -> None:
    ws = pulled(sb)
    go(ws, sb, live=True, doc=run_doc([("501", 80.0, 90.0)]))
    sb.set_meta_budget("501", 15000)  # someone in Ads Manager, not pulled yet
    res = go(ws, sb, live=True, doc={**run_doc([("501", 80.0, 88.0)]), "as_of": "2026-03-10"})
    line = res["by"][("501", "501")]
    assert line["status"] == "refused" and "someone changed it since" in line["reason"]
    assert "150" in line["reason"] and "112.5" in line["reason"]
    assert sb.meta_budgets["501"] == 15000


def test_without_the_edit_history_nothing_is_applied(sb: Sandbox) -> None:
    ws = Workspace(":memory:")
    for platform in ("meta", "google"):
        pull(ws, platform, settings=settings(sb), today=TODAY, client=client(), what=("spend",))
    res = go(ws, sb, live=True)
    assert all(
        "has not read this account's edit history" in ln["reason"]
        for ln in res["lines"]
        if ln["campaign_id"] in ("501", "111")
    )
    assert sb.meta_budgets["501"] == 10000


def test_rollback_restores_what_is_still_as_applied(sb: Sandbox) -> None:
    ws = pulled(sb)
    first = go(ws, sb, live=True)
    assert go(ws, sb, live=True)["counts"].get("applied") is None  # a later apply: nothing
    sb.set_meta_budget("5022", 9900)  # changed by hand after the apply: left alone
    dry = rollback(ws, "run-1", settings=settings(sb), client=client(), now=NOW).to_dict()
    assert dry["counts"] == {"would_restore": 3, "refused": 1}
    assert dry["rollback_of"] == first["apply_id"]  # the run's apply that changed budgets
    assert sb.meta_budgets["501"] == 11250
    done = rollback(
        ws, first["apply_id"], settings=settings(sb), live=True, client=client(), now=NOW
    ).to_dict()
    assert done["rollback_of"] == first["apply_id"] and done["counts"]["restored"] == 3
    assert sb.meta_budgets["501"] == 10000 and sb.meta_budgets["5021"] == 5000
    assert sb.meta_budgets["5022"] == 9900 and sb.google_budgets["111"] == 50_000_000
    with pytest.raises(UsageError, match="already rolled back"):
        rollback(ws, "run-1", settings=settings(sb), client=client())
    with pytest.raises(UsageError, match="no apply or run of that id"):
        rollback(ws, "nope", settings=settings(sb), client=client())
    # after the rollback the day's allocation may be applied again
    assert go(ws, sb)["by"][("501", "501")]["status"] == "would_apply"


def test_cli_apply_json_exit_codes(sb: Sandbox, tmp_path: Path) -> None:
    config = tmp_path / "signalloop.toml"
    config.write_text(
        f'[connect.meta]\nad_account_id = "{ACT}"\nbase_url = "{sb.base_url}"\n\n'
        f'[connect.google]\ncustomer_id = "{CID}"\nbase_url = "{sb.base_url}"\n',
        encoding="utf-8",
    )
    db = str(tmp_path / "w.duckdb")
    base = ["--db", db, "--config", str(config)]
    with Workspace(db) as ws:
        pulled(sb, ws)
    nothing = CliRunner().invoke(app, ["apply", *base, "--json"])
    assert nothing.exit_code == 2 and "run `signalloop run` first" in nothing.stderr
    both = CliRunner().invoke(app, ["apply", *base, "--dry-run", "--yes"])
    assert both.exit_code == 2 and "contradict" in both.stderr
    unknown = CliRunner().invoke(app, ["apply", *base, "--rollback", "nope"])
    assert unknown.exit_code == 2 and "no apply or run of that id" in unknown.stderr
    bad_date = CliRunner().invoke(app, ["apply", *base, "--as-of", "tomorrow"])
    assert bad_date.exit_code == 2
    # a stored run's report: what `signalloop run` leaves behind
    report = tmp_path / "runs" / "run-1"
    report.mkdir(parents=True)
    (report / "report.json").write_text(json.dumps(run_doc()), encoding="utf-8")
    with Workspace(db) as ws:
        from signalloop.runs import end_record, start_record

        start_record(ws, trigger="cli", actor=None, report_dir=report, run_id="run-1")
        end_record(ws, "run-1", status="ok", as_of=TODAY - timedelta(days=1))
    dry = CliRunner().invoke(app, ["apply", *base, "--json"])
    assert dry.exit_code == 0, dry.output
    doc = json.loads(dry.stdout)
    assert doc["run_id"] == "run-1" and doc["counts"]["would_apply"] == 5
    assert TOKEN not in dry.stdout + dry.stderr and ACCESS not in dry.stdout + dry.stderr
    live = CliRunner().invoke(app, ["apply", *base, "--yes", "--as-of", "2026-03-09"])
    assert live.exit_code == 1  # Google refused 222
    assert "applied" in live.stdout and "failed" in live.stdout
    back = CliRunner().invoke(app, ["apply", *base, "--rollback", "run-1", "--yes", "--json"])
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout)["counts"] == {"restored": 4}


def test_run_pulls_then_applies_last_and_a_second_run_applies_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from signalloop.run import run
    from signalloop.simulate.config import SimulationConfig
    from signalloop.simulate.simulation import simulate

    cfg = SimulationConfig(days=21, campaigns=3, shape="spend")
    rows = simulate(cfg).tables["spend"].to_pylist()
    last = cfg.start + timedelta(days=cfg.days - 1)
    for name, value in (
        ("SIGNALLOOP_META_ACCESS_TOKEN", "sandbox-meta-token"),
        ("SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN", "sandbox-developer-token"),
        ("SIGNALLOOP_GOOGLE_ACCESS_TOKEN", "sandbox-access-token"),
    ):
        monkeypatch.setenv(name, value)
    now = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC)
    with Sandbox(now=now) as s:
        s.load_spend(rows, meta_account="7", google_customer="5550001111")
        given = s.give_budgets(rows, meta_account="7", google_customer="5550001111")
        assert set(given) == {"c01", "c02", "c03"} and set(s.meta_budgets) == {"c01", "c03"}
        conf = settings_from_dict(
            {
                "run": {"pull": True, "apply": "live", "out": str(tmp_path / "report")},
                "connect": {
                    "meta": {"ad_account_id": "7", "base_url": s.base_url},
                    "google": {"customer_id": "5550001111", "base_url": s.base_url},
                },
            }
        )
        with Workspace(str(tmp_path / "w.duckdb")) as ws:
            day = last + timedelta(days=1)
            first = run(ws, settings=conf, pull_today=day, push_now=now, run_id="r1")
            applied = first["apply"]
            assert applied["status"] == "ok" and applied["mode"] == "live"
            assert applied["run_id"] == "r1" and len(applied["lines"]) == 3
            assert not applied["counts"].get("failed")
            changed = [ln for ln in applied["lines"] if ln["status"] == "applied"]
            budgets = {**s.meta_budgets, **s.google_budgets}
            for ln in changed:
                assert abs(ln["change_pct"]) <= 18.5
                assert budgets[ln["entity_id"]] == ln["new_units"]
            assert applied["changes_recorded"] == len(changed)
            n = ws.con.execute("SELECT count(*) FROM changes").fetchone()
            second = run(ws, settings=conf, pull_today=day, push_now=now, run_id="r2")
            statuses = {ln["status"] for ln in second["apply"]["lines"]}
            assert "applied" not in statuses
            if changed:
                assert "already_applied" in statuses
            # the pull recognised the platforms' records of the first run's edits
            assert ws.con.execute("SELECT count(*) FROM changes").fetchone() == n


def test_a_refused_credential_fails_its_lines_and_what_was_sent_stays_recorded(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from signalloop.errors import CredentialError

    ws = pulled(sb)
    sb.fail_next("/5021", status=403)  # the token may read but not change this ad set
    res = go(ws, sb, live=True)
    by = res["by"]
    assert by[("501", "501")]["status"] == "applied" and sb.meta_budgets["501"] == 11250
    for ad_set in ("5021", "5022"):
        assert by[("502", ad_set)]["status"] == "failed"
        assert "ads_management" in by[("502", ad_set)]["reason"]
    assert sb.meta_budgets["5021"] == 5000 and sb.meta_budgets["5022"] == 3000
    assert by[("111", "111")]["status"] == "applied"  # Google went on
    assert res["changes_recorded"] == 2
    # nothing could be changed at all: the credential problem is the answer
    monkeypatch.delenv("SIGNALLOOP_META_ACCESS_TOKEN")
    monkeypatch.delenv("SIGNALLOOP_GOOGLE_ACCESS_TOKEN")
    with pytest.raises(CredentialError, match="SIGNALLOOP_META_ACCESS_TOKEN"):
        go(ws, sb, live=True, doc={**run_doc(), "as_of": "2026-03-10"})


def test_an_answer_lost_on_the_way_back_is_retried_and_applied_once(sb: Sandbox) -> None:
    ws = pulled(sb)
    sb.drop_next("campaignBudgets:mutate")  # applied, then the connection drops
    sb.drop_next("/501")  # a read of Meta's campaign dropped midway: read again
    res = go(ws, sb, live=True, doc=run_doc([("501", 80.0, 90.0), ("111", 40.0, 46.0)]))
    assert res["counts"] == {"applied": 2}
    assert sb.meta_budgets["501"] == 11250 and sb.google_budgets["111"] == 57_500_000
    mutates = [r for r in sb.requests if r.path.endswith("campaignBudgets:mutate")]
    assert len(mutates) == 2  # the retry set the same amount again: a no-op
    history = pull(
        ws, "google", settings=settings(sb), today=TODAY, client=client(), what=("changes",)
    ).changes
    assert history is not None and history["rows_own"] == 1 and history["rows_loaded"] == 0


def test_cli_run_reports_an_allocation_it_could_not_apply_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.csv as pacsv

    from signalloop.simulate.config import SimulationConfig
    from signalloop.simulate.simulation import simulate

    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    inbox = tmp_path / "inbox" / "spend"
    inbox.mkdir(parents=True)
    pacsv.write_csv(
        simulate(SimulationConfig(days=21, campaigns=3, shape="spend")).tables["spend"],
        str(inbox / "spend.csv"),
    )
    config = tmp_path / "signalloop.toml"
    config.write_text(
        f'[run]\ninbox = "{tmp_path / "inbox"}"\nout = "{tmp_path / "report"}"\n'
        'apply = "live"\n\n[connect.meta]\nad_account_id = "7"\n'
        'base_url = "http://127.0.0.1:9"\n\n[connect.google]\ncustomer_id = "5550001111"\n'
        'base_url = "http://127.0.0.1:9"\n',
        encoding="utf-8",
    )
    args = ["run", "--db", str(tmp_path / "w.duckdb"), "--config", str(config), "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    doc = json.loads(res.stdout)
    assert doc["apply"]["status"] == "error"
    # no credential anywhere: the message names the variable to set
    assert "SIGNALLOOP_" in doc["apply"]["message"] and "TOKEN" in doc["apply"]["message"]
    assert "the allocation was not applied" in res.stderr


def test_learning_refuses_and_learning_limited_does_not() -> None:
    """A campaign in learning is refused; a learning-limited one is not (stuck for want of
    volume, it moves within the daily limit as the allocator moves it)."""
    from signalloop.connect.apply import held_and_learning

    doc = {
        "checks": {"campaigns": [{"campaign_id": "h", "gate": "hold", "reasons": ["outage"]}]},
        "state": {
            "phase": {
                "entities": [
                    {"campaign_id": "a", "level": "adset", "entity_id": "a1", "state": "learning"},
                    {
                        "campaign_id": "b",
                        "level": "adset",
                        "entity_id": "b1",
                        "state": "learning_limited",
                    },
                    {"campaign_id": "c", "level": "adset", "entity_id": "c1", "state": "stable"},
                ]
            }
        },
    }
    held, learning = held_and_learning(doc)
    assert held == {"h": "outage"} and learning == {"a": "adset a1 is learning"}
