"""The edit history into ``changes`` (issue 15, item 2): Meta's activity log and Google Ads
``change_event`` from the local stand-ins, with the actor; paging, repeats, restatements,
idempotent re-pulls, Google's change_event rules, and the phase replay counting the pulled
edits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from signalloop.cli import app
from signalloop.config import Settings, settings_from_dict
from signalloop.connect.pull import PullResult, pull
from signalloop.errors import UsageError
from signalloop.phase import phase
from signalloop.push.client import Client
from signalloop.push.sandbox import Sandbox
from signalloop.store import Workspace

from .connect_setup import ACT, CID, platform_env, sandbox

TODAY = date(2026, 3, 10)
TOKEN = "meta-edits-secret-4be1"
DEV = "dev-edits-secret-77a0"
ACCESS = "access-edits-secret-2f9c"


def at(days_ago: int, hour: int = 10) -> datetime:
    return datetime.combine(TODAY - timedelta(days=days_ago), datetime.min.time(), UTC).replace(
        hour=hour
    )


META_EVENTS: list[dict[str, Any]] = [
    {  # a person in Ads Manager raises the ad set's budget by half: a reset
        "id": "e1",
        "event_time": at(5),
        "event_type": "update_ad_set_budget",
        "object_id": "222",
        "object_type": "ADSET",
        "extra_data": {"old_value": 5000, "new_value": 7500, "currency": "EUR"},
        "actor_id": "1001",
        "actor_name": "Ana Example",
        "application_id": "119211728144504",
        "application_name": "Ads Manager",
    },
    {  # an automated rule pauses an ad
        "event_time": at(4),
        "event_type": "update_ad_run_status",
        "object_id": "330",
        "object_type": "AD",
        "extra_data": {"old_value": "ACTIVE", "new_value": "PAUSED"},
        "actor_id": "1002",
        "actor_name": "Automated Rule",
    },
    {  # an API app changes the bid strategy
        "event_time": at(3),
        "event_type": "update_ad_set_bid_strategy",
        "object_id": "222",
        "object_type": "ADSET",
        "extra_data": {
            "old_value": {"value": "LOWEST_COST_WITHOUT_CAP"},
            "new_value": {"value": "COST_CAP"},
        },
        "actor_id": "1003",
        "actor_name": "Bidder Bot",
        "application_id": "555",
        "application_name": "Acme Bidder",
    },
    {  # Meta itself (no actor): a creative update
        "event_time": at(2),
        "event_type": "update_ad_creative",
        "object_id": "331",
        "object_type": "AD",
    },
    {  # not an edit the contract records
        "event_time": at(2, 11),
        "event_type": "ad_account_billing_charge",
        "object_id": ACT,
        "object_type": "ACCOUNT",
        "extra_data": {"new_value": 14368},
    },
]


def delivery(days: int = 30) -> list[dict[str, Any]]:
    return [
        {
            "date": (TODAY - timedelta(days=1 + d)).isoformat(),
            "campaign_id": "111",
            "adset_id": "222",
            "ad_id": f"33{ad}",
            "impressions": 1000,
            "clicks": 20,
            "spend": 10.0,
            "conversions": 6,
        }
        for d in range(days)
        for ad in range(2)
    ]


def budget_event(days_ago: int, client: str, old: int, new: int) -> dict[str, Any]:
    return {
        "change_date_time": at(days_ago),
        "change_resource_type": "CAMPAIGN_BUDGET",
        "change_resource_name": f"customers/{CID}/campaignBudgets/900",
        "client_type": client,
        "user_email": "ana@example.com" if client == "GOOGLE_ADS_WEB_CLIENT" else None,
        "resource_change_operation": "UPDATE",
        "changed_fields": "amountMicros",
        "old_resource": {"campaignBudget": {"amountMicros": str(old)}},
        "new_resource": {"campaignBudget": {"amountMicros": str(new)}},
        "campaign": f"customers/{CID}/campaigns/111",
    }


GOOGLE_EVENTS: list[dict[str, Any]] = [
    budget_event(6, "GOOGLE_ADS_WEB_CLIENT", 20_000_000, 30_000_000),
    {
        "change_date_time": at(4),
        "change_resource_type": "AD_GROUP",
        "change_resource_name": f"customers/{CID}/adGroups/222",
        "client_type": "GOOGLE_ADS_AUTOMATED_RULE",
        "resource_change_operation": "UPDATE",
        "changed_fields": "status,cpcBidMicros",
        "old_resource": {"adGroup": {"status": "ENABLED", "cpcBidMicros": "1000000"}},
        "new_resource": {"adGroup": {"status": "PAUSED", "cpcBidMicros": "1200000"}},
        "campaign": f"customers/{CID}/campaigns/111",
        "ad_group": f"customers/{CID}/adGroups/222",
    },
    {
        "change_date_time": at(3),
        "change_resource_type": "AD_GROUP_CRITERION",
        "change_resource_name": f"customers/{CID}/adGroupCriteria/222~77",
        "client_type": "GOOGLE_ADS_API",
        "resource_change_operation": "CREATE",
        "changed_fields": "keyword.text,keyword.matchType",
        "new_resource": {"adGroupCriterion": {"keyword": {"text": "crm", "matchType": "EXACT"}}},
        "campaign": f"customers/{CID}/campaigns/111",
        "ad_group": f"customers/{CID}/adGroups/222",
    },
    {
        "change_date_time": at(2),
        "change_resource_type": "CAMPAIGN",
        "change_resource_name": f"customers/{CID}/campaigns/111",
        "client_type": "INTERNAL_TOOL",
        "resource_change_operation": "UPDATE",
        "changed_fields": "trackingUrlTemplate",
        "campaign": f"customers/{CID}/campaigns/111",
    },
    {
        "change_date_time": at(1),
        "change_resource_type": "FEED_ITEM",
        "change_resource_name": f"customers/{CID}/feedItems/1~2",
        "client_type": "GOOGLE_ADS_WEB_CLIENT",
        "resource_change_operation": "UPDATE",
        "changed_fields": "attributeValues",
    },
]


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    platform_env(monkeypatch, TOKEN, DEV, ACCESS)


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(TOKEN, DEV, ACCESS, insights_page_size=2) as s:
        s.load_delivery("meta", ACT, delivery(), currency="EUR")
        s.load_delivery("google", CID, delivery(), currency="USD")
        s.load_activities(ACT, META_EVENTS)
        s.load_activities(ACT, META_EVENTS[1:2])  # the log repeats an event
        s.load_change_events(CID, GOOGLE_EVENTS)
        yield s


def settings(sb: Sandbox, lookback: int = 28) -> Settings:
    return settings_from_dict(
        {
            "connect": {
                "lookback_days": lookback,
                "meta": {"ad_account_id": ACT, "base_url": sb.base_url, "currency": "EUR"},
                "google": {"customer_id": CID, "base_url": sb.base_url, "currency": "USD"},
            }
        }
    )


def run(ws: Workspace, sb: Sandbox, platform: str, **kw: Any) -> PullResult:
    s = kw.pop("settings", None) or settings(sb)
    return pull(ws, platform, settings=s, today=TODAY, client=Client(sleep=lambda _: None), **kw)


def stored(ws: Workspace) -> list[dict[str, Any]]:
    rows = ws.con.execute(
        "SELECT strftime(ts, '%Y-%m-%d %H:%M'), level, entity_id, field, old_value, new_value, "
        "actor, attrs FROM changes ORDER BY ts, field"
    ).fetchall()
    keys = ("ts", "level", "entity_id", "field", "old_value", "new_value", "actor", "attrs")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def test_meta_activity_log_lands_with_actors_and_repulls_add_nothing(sb: Sandbox) -> None:
    ws = Workspace(":memory:")
    res = run(ws, sb, "meta", what=("changes",))
    ch = res.changes
    assert ch is not None and ch["status"] == "ok"
    assert res.rows_pulled == 0 and res.what == ["changes"]  # no spend asked for
    # 6 events served 2 a page (one repeated), 5 edits mapped, billing skipped
    assert ch["events_read"] == 6 and ch["requests"] == 3
    assert ch["rows_repeated"] == 1 and ch["skipped"] == {"ad_account_billing_charge": 1}
    assert ch["rows_loaded"] == 4 and ch["by_actor"] == {
        "human": 1,
        "automation": 2,
        "platform": 1,
    }
    rows = stored(ws)
    budget = rows[0]
    assert (budget["level"], budget["entity_id"], budget["field"]) == ("adset", "222", "budget")
    assert (budget["old_value"], budget["new_value"], budget["actor"]) == ("50", "75", "human")
    attrs = json.loads(budget["attrs"])
    assert attrs["application_name"] == "Ads Manager" and attrs["actor_name"] == "Ana Example"
    assert attrs["platform"] == "meta" and attrs["event_type"] == "update_ad_set_budget"
    strategy = next(r for r in rows if r["field"] == "bid_strategy")
    assert (strategy["old_value"], strategy["new_value"]) == ("LOWEST_COST_WITHOUT_CAP", "COST_CAP")
    assert strategy["actor"] == "automation"
    again = run(ws, sb, "meta", what=("changes",)).changes
    assert again is not None and (again["rows_loaded"], again["rows_unchanged"]) == (0, 4)
    assert len(stored(ws)) == 4


def test_a_restated_event_replaces_the_stored_row(sb: Sandbox) -> None:
    ws = Workspace(":memory:")
    run(ws, sb, "meta", what=("changes",))
    # Meta fills in the actor later: same event, same new value, another actor
    sb.load_activities(
        ACT,
        [
            {
                **META_EVENTS[0],
                "actor_name": "Ana B. Example",
                "extra_data": {"old_value": 4000, "new_value": 7500},
            }
        ],
    )
    ch = run(ws, sb, "meta", what=("changes",)).changes
    assert ch is not None and ch["rows_restated"] == 1 and ch["rows_loaded"] == 0
    assert ch["restated"][0]["changed"]["old_value"] == ["50", "40"]
    assert len(stored(ws)) == 4 and stored(ws)[0]["old_value"] == "40"


def test_google_change_events_map_fields_and_client_types(sb: Sandbox) -> None:
    ws = Workspace(":memory:")
    res = run(ws, sb, "google")
    ch = res.changes
    assert res.rows_loaded > 0 and ch is not None and ch["status"] == "ok"
    assert ch["events_read"] == 5 and ch["rows_loaded"] == 4
    assert set(ch["skipped"]) == {"resource FEED_ITEM", "CAMPAIGN fields trackingUrlTemplate"}
    rows = stored(ws)
    by = {(r["field"], r["entity_id"]): r for r in rows}
    budget = by[("budget", "111")]
    assert (budget["level"], budget["old_value"], budget["new_value"]) == ("campaign", "20", "30")
    assert budget["actor"] == "human"
    assert json.loads(budget["attrs"])["user_email"] == "ana@example.com"
    assert by[("status", "222")]["actor"] == "automation"
    assert (by[("bid", "222")]["old_value"], by[("bid", "222")]["new_value"]) == ("1", "1.2")
    targeting = by[("targeting", "222")]
    assert targeting["level"] == "adset" and targeting["actor"] == "automation"
    assert "crm" in targeting["new_value"]
    again = run(ws, sb, "google", what="changes").changes  # type: ignore[arg-type]
    assert again is not None and (again["rows_loaded"], again["rows_unchanged"]) == (0, 4)


def test_google_reads_at_most_30_days_back(sb: Sandbox) -> None:
    ws = Workspace(":memory:")
    res = run(ws, sb, "google", settings=settings(sb, lookback=60), what=("changes",))
    ch = res.changes
    assert ch is not None and ch["status"] == "ok"
    assert any("30 days of change events" in n for n in ch["notes"])
    assert ch["since"] >= (TODAY - timedelta(days=30)).isoformat()


def test_the_sandbox_enforces_the_change_event_rules(sb: Sandbox) -> None:
    url = f"{sb.base_url}/v22/customers/{CID}/googleAds:search"
    headers = {"Authorization": f"Bearer {ACCESS}", "developer-token": DEV}
    base = "SELECT change_event.change_date_time FROM change_event WHERE "
    lo, hi = "change_event.change_date_time >= ", "change_event.change_date_time <= "
    cases = {
        f"{base}{lo}'2026-03-01' LIMIT 10": "CHANGE_DATE_RANGE_INFINITE",
        f"{base}{lo}'2026-03-05' AND {hi}'2026-03-01' LIMIT 10": "CHANGE_DATE_RANGE_NEGATIVE",
        f"{base}{lo}'2026-01-01' AND {hi}'2026-03-01' LIMIT 10": "START_DATE_TOO_OLD",
        f"{base}{lo}'2026-03-01' AND {hi}'2026-03-09'": "LIMIT_NOT_SPECIFIED",
        f"{base}{lo}'2026-03-01' AND {hi}'2026-03-09' LIMIT 10001": "INVALID_LIMIT_CLAUSE",
    }
    for query, code in cases.items():
        r = httpx.post(url, json={"query": query}, headers=headers)
        assert r.status_code == 400, query
        err = r.json()["error"]["details"][0]["errors"][0]
        assert err["errorCode"] == {"changeEventError": code}, query
    ok = httpx.post(
        url, json={"query": f"{base}{lo}'2026-03-01' AND {hi}'2026-03-09' LIMIT 2"}, headers=headers
    )
    assert ok.status_code == 200 and len(ok.json()["results"]) == 2


def test_pulled_human_edits_count_as_resets_in_the_phase_replay(sb: Sandbox) -> None:
    ws = Workspace(":memory:")
    run(ws, sb, "meta")
    report = phase(ws, TODAY - timedelta(days=1))
    ent = next(e for e in report.entities if e.entity_id == "222")
    human = [r for r in ent.resets if r.actor == "human"]
    assert [(r.field, r.day) for r in human] == [("budget", TODAY - timedelta(days=5))]
    # the rule's bid strategy change resets learning too, as automation
    assert any(r.actor == "automation" and r.field == "bid_strategy" for r in ent.resets)
    assert report.edit_log


def test_what_is_checked() -> None:
    ws = Workspace(":memory:")
    with pytest.raises(UsageError, match="expected spend, changes or both"):
        pull(ws, "meta", settings=Settings(), what=("edits",))


def test_cli_pull_changes_json_and_bad_what(
    sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb.set_now(lambda: datetime.now(UTC))
    recent = dict(META_EVENTS[0], event_time=datetime.now(UTC) - timedelta(days=2))
    sb.load_activities(ACT, [recent])
    config = tmp_path / "signalloop.toml"
    config.write_text(
        f'[connect.meta]\nad_account_id = "{ACT}"\nbase_url = "{sb.base_url}"\n', encoding="utf-8"
    )
    args = ["pull", "meta", "--db", str(tmp_path / "w.duckdb"), "--config", str(config)]
    got = CliRunner().invoke(app, [*args, "--what", "changes", "--json"])
    assert got.exit_code == 0, got.output
    doc = json.loads(got.stdout)
    assert doc["what"] == ["changes"] and doc["changes"]["rows_loaded"] == 1
    assert TOKEN not in got.stdout + got.stderr
    human = CliRunner().invoke(app, [*args, "--what", "changes"])
    assert human.exit_code == 0 and "edits meta" in human.stdout and "1 human" in human.stdout
    bad = CliRunner().invoke(app, [*args, "--what", "edits"])
    assert bad.exit_code == 2 and "expected spend, changes or both" in bad.stderr


def test_the_simulators_edit_log_round_trips_through_both_platforms() -> None:
    from collections import Counter
    from decimal import Decimal

    from signalloop.push.sandbox.history import GOOGLE_CHANGE_OF, META_EVENT_OF
    from signalloop.simulate.config import SimulationConfig
    from signalloop.simulate.simulation import simulate

    cfg = SimulationConfig(days=40, campaigns=4, shape="full")
    tables = simulate(cfg).tables
    spend, changes = tables["spend"].to_pylist(), tables["changes"].to_pylist()
    day = cfg.start + timedelta(days=cfg.days)  # the day after the last
    platform = {str(r["campaign_id"]): str(r["platform"]) for r in spend}
    campaign = {str(r["adset_id"]): str(r["campaign_id"]) for r in spend}
    campaign |= {str(r["ad_id"]): str(r["campaign_id"]) for r in spend}
    with Sandbox(
        now=datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12),
        meta_token=TOKEN,
        google_developer_token=DEV,
        google_access_tokens=[ACCESS],
    ) as s:
        s.load_spend(spend, meta_account=ACT, google_customer=CID)
        served = s.load_changes(changes, spend, meta_account=ACT, google_customer=CID)
        assert served["meta"] > 0 and served["google"] > 0
        ws = Workspace(":memory:")
        for name in ("meta", "google"):
            pull(
                ws,
                name,
                settings=settings(s),
                today=day,
                client=Client(sleep=lambda _: None),
                what=("changes",),
            )
    first = day - timedelta(days=28)

    def kept(r: dict[str, Any]) -> bool:
        p = platform.get(campaign.get(str(r["entity_id"]), str(r["entity_id"])))
        known = META_EVENT_OF if p == "meta" else GOOGLE_CHANGE_OF
        return r["ts"].date() >= first and (r["level"], r["field"]) in known

    def key(ts: datetime, fld: str, actor: str) -> tuple[str, str, str]:
        return (ts.strftime("%Y-%m-%d %H:%M:%S"), fld, actor)

    want = [r for r in changes if kept(r)]
    got = stored(ws)
    got_keys = ws.con.execute(
        "SELECT strftime(ts, '%Y-%m-%d %H:%M:%S'), field, actor FROM changes"
    ).fetchall()
    assert Counter(got_keys) == Counter(key(r["ts"], r["field"], r["actor"]) for r in want)
    budgets = {
        (r["entity_id"], Decimal(r["old_value"]), Decimal(r["new_value"]))
        for r in want
        if r["field"] == "budget"
    }
    assert budgets and budgets == {
        (r["entity_id"], Decimal(r["old_value"]), Decimal(r["new_value"]))
        for r in got
        if r["field"] == "budget"
    }


def test_connect_sandbox_serves_a_changes_file(tmp_path: Path) -> None:
    spend = tmp_path / "spend.csv"
    spend.write_text(
        "date,platform,campaign_id,adset_id,ad_id,impressions,clicks,spend\n"
        "2026-01-01,meta,c01,c01_as1,c01_as1_ad1,100,3,4.5\n"
        "2026-01-02,google,c02,c02_as1,c02_as1_ad1,200,9,7.25\n",
        encoding="utf-8",
    )
    edits = tmp_path / "changes.csv"
    edits.write_text(
        "ts,level,entity_id,field,old_value,new_value,actor\n"
        "2026-01-02T10:00:00Z,campaign,c01,budget,40.00,50.00,human\n"
        "2026-01-02T11:00:00Z,adset,c02_as1,status,ENABLED,PAUSED,automation\n",
        encoding="utf-8",
    )
    args = ["connect", "sandbox", "--spend", str(spend), "--for", "0.1", "--json"]
    res = CliRunner().invoke(app, [*args, "--changes", str(edits)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rows"] == {"meta": 1, "google": 1, "edits": 2}
    missing = CliRunner().invoke(app, [*args, "--changes", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr


def test_a_refused_history_read_still_lands_the_spend(sb: Sandbox) -> None:
    from signalloop.errors import CredentialError

    ws = Workspace(":memory:")
    sb.fail_next("/activities", status=403)
    res = run(ws, sb, "meta")
    assert res.rows_loaded > 0 and res.changes is not None
    assert res.changes["status"] == "failed" and "Meta refused access" in res.changes["error"]
    assert TOKEN not in res.changes["error"]
    sb.fail_next("/activities", status=403)
    with pytest.raises(CredentialError):  # the history alone: the refusal is the answer
        run(ws, sb, "meta", what=("changes",))
