"""``signalloop pull`` and ``signalloop connect test`` against the local stand-ins (issue 15)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from signalloop.cli import app
from signalloop.push.sandbox import Sandbox

from .connect_setup import ACT, ENV

TOKEN = "meta-cli-secret-9d2b"


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    # the wall clock: the CLI reads "yesterday" from it
    today = date.today()
    rows = [
        {
            "date": (today - timedelta(days=1 + d)).isoformat(),
            "campaign_id": "111",
            "adset_id": "222",
            "ad_id": "333",
            "impressions": 500,
            "clicks": 10,
            "spend": 5.0,
            "conversions": 1,
        }
        for d in range(10)
    ]
    with Sandbox(meta_token=TOKEN) as s:
        s.load_delivery("meta", ACT, rows, currency="EUR")
        yield s


@pytest.fixture
def workspace(tmp_path: Path, sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "signalloop.toml"
    config.write_text(
        f'[connect.meta]\nad_account_id = "act_{ACT}"\nbase_url = "{sb.base_url}"\n'
        'currency = "EUR"\n',
        encoding="utf-8",
    )
    return {"config": str(config), "db": str(tmp_path / "w.duckdb")}


def invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, args, env=env)


def test_pull_json_is_one_document_and_repulls_add_nothing(workspace: dict[str, Any]) -> None:
    args = ["pull", "meta", "--db", workspace["db"], "--config", workspace["config"], "--json"]
    env = {"SIGNALLOOP_META_ACCESS_TOKEN": TOKEN}
    first = invoke([*args, "--lookback-days", "7"], env)
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    assert doc["rows_loaded"] == 7 and doc["platform"] == "meta" and doc["failed"] == []
    assert TOKEN not in first.stdout + first.stderr
    again = json.loads(invoke([*args, "--lookback-days", "7"], env).stdout)
    assert (again["rows_loaded"], again["rows_unchanged"]) == (0, 7)
    human = invoke(args[:-1], env)
    assert human.exit_code == 0 and "restated" in human.stdout
    assert "7 unchanged" in human.stdout and "3 new" in human.stdout  # 28-day lookback


def test_pull_usage_and_credential_errors_exit_2(workspace: dict[str, Any], sb: Sandbox) -> None:
    base = ["--db", workspace["db"], "--config", workspace["config"]]
    bad_date = invoke(["pull", "meta", "--since", "last week", *base])
    assert bad_date.exit_code == 2 and "--since expects a date" in bad_date.stderr
    unknown = invoke(["pull", "tiktok", *base])
    assert unknown.exit_code == 2 and "expected one of meta, google" in unknown.stderr
    no_token = invoke(["pull", "meta", *base])
    assert no_token.exit_code == 2 and "SIGNALLOOP_META_ACCESS_TOKEN" in no_token.stderr
    sb.expire_token("meta")
    expired = invoke(["pull", "meta", *base, "--json"], {"SIGNALLOOP_META_ACCESS_TOKEN": TOKEN})
    assert expired.exit_code == 2 and expired.stdout == ""
    assert "Session has expired" in expired.stderr and TOKEN not in expired.stderr


def test_pull_exit_1_when_a_range_failed(workspace: dict[str, Any], sb: Sandbox) -> None:
    sb.fail_next_report(2)
    args = ["pull", "meta", "--db", workspace["db"], "--config", workspace["config"], "--json"]
    res = invoke(args, {"SIGNALLOOP_META_ACCESS_TOKEN": TOKEN})
    assert res.exit_code == 1
    assert json.loads(res.stdout)["status"] == "failed"


def test_connect_test_says_what_is_missing(workspace: dict[str, Any]) -> None:
    res = invoke(["connect", "test", "--config", workspace["config"], "--json"])
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    meta, google = doc["connections"]
    assert meta["configured"] and not meta["ok"]
    assert meta["missing"] == [
        "Meta access token: set the environment variable SIGNALLOOP_META_ACCESS_TOKEN"
    ]
    assert not google["configured"]
    assert any("[connect.google] customer_id" in m for m in google["missing"])
    assert any("SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN" in m for m in google["missing"])
    ok = invoke(
        ["connect", "test", "meta", "--config", workspace["config"]],
        {"SIGNALLOOP_META_ACCESS_TOKEN": TOKEN},
    )
    assert ok.exit_code == 0 and "ok" in ok.stdout and "EUR" in ok.stdout
    wrong = invoke(
        ["connect", "test", "meta", "--config", workspace["config"], "--json"],
        {"SIGNALLOOP_META_ACCESS_TOKEN": "not-the-token"},
    )
    assert wrong.exit_code == 1
    assert "Invalid OAuth access token" in json.loads(wrong.stdout)["connections"][0]["error"]


def test_connect_sandbox_serves_a_spend_file(tmp_path: Path) -> None:
    spend = tmp_path / "spend.csv"
    spend.write_text(
        "date,platform,campaign_id,adset_id,ad_id,impressions,clicks,spend\n"
        "2026-01-01,meta,c01,c01_as1,c01_as1_ad1,100,3,4.5\n"
        "2026-01-02,google,c02,c02_as1,c02_as1_ad1,200,9,7.25\n"
        "2026-01-02,linkedin,c05,c05_as1,c05_as1_ad1,50,1,3.0\n",
        encoding="utf-8",
    )
    res = invoke(["connect", "sandbox", "--spend", str(spend), "--for", "0.1", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["rows"] == {"meta": 1, "google": 1}
    assert (doc["since"], doc["until"]) == ("2026-01-01", "2026-01-02")
    assert f'base_url = "{doc["base_url"]}"' in doc["config"]
    missing = invoke(["connect", "sandbox", "--spend", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr
