"""signalloop.connect.pull against the local stand-ins: paging, report jobs, restatement,
idempotent re-pulls, retries, refused credentials, partial failures (issue 15)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from signalloop.config import Settings, settings_from_dict
from signalloop.connect.pull import PullResult, pull
from signalloop.errors import CredentialError, UsageError
from signalloop.push.client import Client
from signalloop.push.sandbox import Sandbox
from signalloop.store import Workspace

from .connect_setup import ACT, CID, NOW, platform_env, sandbox

TODAY = date(2026, 3, 10)
TOKEN = "meta-pull-secret-71c2"
DEV = "dev-pull-secret-5a0e"
ACCESS = "access-pull-secret-d41b"
REFRESH = "refresh-pull-secret-0c9f"
CLIENT_SECRET = "client-pull-secret-e3a8"
SECRETS = (TOKEN, DEV, ACCESS, REFRESH, CLIENT_SECRET)
EVENT = "offsite_conversion.fb_pixel_lead"


def delivery(days: int, *, spend: float = 10.0, ads: int = 3) -> list[dict[str, Any]]:
    """``days`` days up to yesterday, ``ads`` ads of one ad set each day."""
    out = []
    for d in range(days):
        day = (TODAY - timedelta(days=1 + d)).isoformat()
        for ad in range(ads):
            out.append(
                {
                    "date": day,
                    "campaign_id": "111",
                    "campaign_name": "Leads, DE",
                    "adset_id": "222",
                    "ad_id": f"33{ad}",
                    "impressions": 1000,
                    "clicks": 20,
                    "spend": spend,
                    "conversions": 2,
                    "conversion_value": 50.0,
                }
            )
    return out


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    platform_env(monkeypatch, TOKEN, DEV, ACCESS)


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(
        TOKEN,
        DEV,
        ACCESS,
        google_refresh_token=REFRESH,
        google_client_secret=CLIENT_SECRET,
        insights_page_size=10,
        async_polls=2,
    ) as s:
        s.load_delivery("meta", ACT, delivery(40), currency="EUR")
        s.load_delivery("google", CID, delivery(40), currency="USD")
        yield s


def settings(sb: Sandbox, **meta: Any) -> Settings:
    return settings_from_dict(
        {
            "connect": {
                "meta": {"ad_account_id": f"act_{ACT}", "base_url": sb.base_url, **meta},
                "google": {
                    "customer_id": "123-456-7890",
                    "base_url": sb.base_url,
                    "token_url": sb.token_url,
                },
            }
        }
    )


def run(ws: Workspace, sb: Sandbox, platform: str, **kw: Any) -> PullResult:
    s = kw.pop("settings", None) or settings(sb)
    client = kw.pop("client", None) or Client(sleep=lambda _: None)
    return pull(ws, platform, settings=s, today=TODAY, client=client, poll_wait=0, **kw)


def stored(ws: Workspace, platform: str) -> tuple[int, float]:
    row = ws.con.execute(
        "SELECT count(*), coalesce(sum(spend), 0) FROM spend WHERE platform = ?", [platform]
    ).fetchone()
    assert row is not None
    return int(row[0]), round(float(row[1]), 6)


def test_meta_pull_pages_a_report_job_and_maps_the_event() -> None:
    with Sandbox(now=NOW, meta_token=TOKEN, insights_page_size=10) as sb:
        sb.load_delivery("meta", ACT, delivery(28), currency="EUR")
        ws = Workspace(":memory:")
        res = run(ws, sb, "meta")
        assert (res.since, res.until) == ("2026-02-10", "2026-03-09")
        assert res.report_jobs == 1 and res.rows_pulled == 84 == res.rows_loaded
        # one job POST, two status reads, 9 pages of 10 rows
        assert res.requests == 1 + 2 + 9
        assert res.currency == ["EUR"] and res.attribution_setting == ["7d_click_1d_view"]
        row = ws.con.execute(
            "SELECT platform_conversions, platform_conversion_value, currency, "
            "attrs->>'attribution_setting', campaign_name FROM spend LIMIT 1"
        ).fetchone()
        # the configured event only (the link clicks in actions are not conversions)
        assert row == (2.0, 50.0, "EUR", "7d_click_1d_view", "Leads, DE")
        assert stored(ws, "meta") == (84, 840.0)
        # a short range is read page by page, without a job
        short = run(ws, sb, "meta", since=date(2026, 3, 7))
        assert short.report_jobs == 0 and short.requests == 1
        assert short.rows_unchanged == 9 and short.rows_loaded == 0


def test_other_action_types_are_not_counted(sb: Sandbox) -> None:
    ws = Workspace(":memory:")
    res = run(
        ws,
        sb,
        "meta",
        settings=settings(sb, optimization_event="purchase"),
        since=TODAY - timedelta(days=2),
    )
    assert res.rows_loaded == 6
    assert ws.con.execute("SELECT sum(platform_conversions) FROM spend").fetchone() == (0.0,)


def test_repull_adds_nothing_and_restated_days_replace_the_stored_rows(sb: Sandbox) -> None:
    ws = Workspace(":memory:")
    first = run(ws, sb, "meta")
    assert first.rows_loaded == 84 and stored(ws, "meta") == (84, 840.0)
    again = run(ws, sb, "meta")
    assert (again.rows_loaded, again.rows_restated, again.rows_unchanged) == (0, 0, 84)
    assert stored(ws, "meta") == (84, 840.0) and again.restated_days == []
    # the platform restates the last three days (late conversions, invalid-click credits)
    sb.load_delivery("meta", ACT, delivery(3, spend=12.0))
    moved = run(ws, sb, "meta")
    assert (moved.rows_loaded, moved.rows_restated, moved.rows_unchanged) == (0, 9, 75)
    assert moved.restated_columns == {"spend": 9}
    assert moved.restated_days == [
        {"date": d, "before": 30.0, "after": 36.0}
        for d in ("2026-03-07", "2026-03-08", "2026-03-09")
    ]
    assert moved.restated[0]["changed"] == {"spend": ["10.0", "12.0"]}
    assert (moved.spend_before, moved.spend_after) == (840.0, 858.0)
    assert stored(ws, "meta") == (84, 858.0)  # replaced, not duplicated
    assert ws.con.execute("SELECT count(*) FROM duplicates").fetchone() == (0,)


def test_google_pull_converts_micros_and_is_idempotent(sb: Sandbox) -> None:
    ws = Workspace(":memory:")
    res = run(ws, sb, "google")
    assert res.rows_pulled == 28 and res.rows_loaded == 28  # one ad group a day
    assert res.currency == ["USD"] and res.requests == 1
    row = ws.con.execute(
        "SELECT spend, impressions, platform_conversions, adset_id, ad_id, attrs->>'account_id' "
        "FROM spend WHERE date = '2026-03-09'"
    ).fetchone()
    assert row == (30.0, 3000, 6.0, "222", None, CID)
    again = run(ws, sb, "google")
    assert again.rows_loaded == 0 and again.rows_unchanged == 28
    sb.load_delivery("google", CID, delivery(1, spend=11.0))
    moved = run(ws, sb, "google")
    assert moved.rows_restated == 1 and stored(ws, "google") == (28, 843.0)


def test_429_with_retry_after_is_waited_out(sb: Sandbox) -> None:
    waits: list[float] = []
    ws = Workspace(":memory:")
    sb.fail_next("meta", status=429, retry_after=3)
    sb.fail_next("google", status=429, retry_after=2, times=2)
    client = Client(sleep=waits.append)
    assert run(ws, sb, "meta", since=TODAY - timedelta(days=1), client=client).rows_loaded == 3
    assert run(ws, sb, "google", client=client).rows_loaded == 28
    assert waits == [3.0, 2.0, 2.0]


def test_expired_meta_token_names_the_fix(sb: Sandbox) -> None:
    sb.expire_token("meta")
    with pytest.raises(CredentialError) as err:
        run(Workspace(":memory:"), sb, "meta")
    msg = str(err.value)
    assert "Session has expired" in msg and "SIGNALLOOP_META_ACCESS_TOKEN" in msg
    assert TOKEN not in msg


def test_expired_google_token_is_renewed_or_named(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb.expire_token("google")
    with pytest.raises(CredentialError) as err:
        run(Workspace(":memory:"), sb, "google")
    assert "UNAUTHENTICATED" in str(err.value) and "REFRESH_TOKEN" in str(err.value)
    monkeypatch.setenv("SIGNALLOOP_GOOGLE_REFRESH_TOKEN", REFRESH)
    monkeypatch.setenv("SIGNALLOOP_GOOGLE_CLIENT_ID", "sandbox-client-id")
    monkeypatch.setenv("SIGNALLOOP_GOOGLE_CLIENT_SECRET", CLIENT_SECRET)
    res = run(Workspace(":memory:"), sb, "google")
    assert res.rows_loaded == 28 and sb.tokens_issued == 1


def test_broken_streams_and_failed_jobs_are_retried_then_reported(sb: Sandbox) -> None:
    ws = Workspace(":memory:")
    sb.break_next_stream()
    assert run(ws, sb, "google").rows_loaded == 28  # retried after the broken stream
    # 40 days: two ranges; the first range's stream breaks three times, the second lands
    sb.break_next_stream(3)
    res = run(ws, sb, "google", since=TODAY - timedelta(days=40))
    assert res.status == "partial" and len(res.failed) == 1
    assert res.failed[0]["since"] == "2026-01-29" and "broke midway" in res.failed[0]["error"]
    assert res.rows_pulled == 9
    sb.fail_next_report(2)
    failed = run(ws, sb, "meta")
    assert failed.status == "failed" and "Job Failed" in failed.failed[0]["error"]
    assert failed.rows_pulled == 0 and stored(ws, "meta") == (0, 0.0)


def test_bad_rows_are_quarantined_with_their_reason(sb: Sandbox) -> None:
    bad = delivery(1)[0] | {"ad_id": "999", "clicks": 5000}  # more clicks than impressions
    sb.load_delivery("meta", ACT, [bad])
    ws = Workspace(":memory:")
    res = run(ws, sb, "meta", since=TODAY - timedelta(days=1))
    assert res.rows_loaded == 3 and res.rows_quarantined == 1
    row = ws.con.execute("SELECT file, code FROM quarantine").fetchone()
    assert row is not None and row[0] == res.label and row[0].startswith("pull:meta:act_42:")


def test_configuration_and_credentials_are_named(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace(":memory:")
    with pytest.raises(UsageError, match=r"\[connect.meta\] ad_account_id"):
        pull(ws, "meta", settings=settings_from_dict({}), today=TODAY)
    with pytest.raises(UsageError, match="after --until"):
        run(ws, sb, "meta", since=TODAY, until=TODAY - timedelta(days=2))
    with pytest.raises(UsageError, match="after today"):
        run(ws, sb, "meta", until=TODAY + timedelta(days=1))
    monkeypatch.delenv("SIGNALLOOP_META_ACCESS_TOKEN")
    with pytest.raises(CredentialError, match="SIGNALLOOP_META_ACCESS_TOKEN"):
        run(ws, sb, "meta")


def test_secrets_file_and_no_secret_anywhere(
    sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIGNALLOOP_META_ACCESS_TOKEN")
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[meta]\naccess_token = "{TOKEN}"\n', encoding="utf-8")
    s = settings_from_dict(
        {
            "connect": {
                "secrets": str(secrets),
                "meta": {"ad_account_id": ACT, "base_url": sb.base_url},
            }
        }
    )
    db = tmp_path / "w.duckdb"
    with Workspace(str(db)) as ws:
        res = run(ws, sb, "meta", settings=s)
        assert res.rows_loaded == 84
        dumped = json.dumps(res.to_dict())
        stored_text = repr(ws.con.execute("SELECT * FROM ingest_log").fetchall())
        stored_text += repr(ws.con.execute("SELECT attrs FROM spend").fetchall())
    record = repr(sb.requests)
    for secret in SECRETS:
        assert secret not in dumped and secret not in record and secret not in stored_text
    assert all("access_token" not in r.query for r in sb.requests)


def test_meta_throttling_codes_are_retried_even_with_a_400() -> None:
    import httpx

    from signalloop.connect.meta import throttled

    answers = [
        httpx.Response(
            400, json={"error": {"message": "(#17) User request limit reached", "code": 17}}
        ),
        httpx.Response(200, json={"data": []}),
    ]
    waits: list[float] = []
    client = Client(transport=httpx.MockTransport(lambda _: answers.pop(0)), sleep=waits.append)
    reply = client.get("http://meta.invalid/v24.0/act_1/insights", retry_if=throttled)
    assert reply.ok and reply.attempts == 2 and len(waits) == 1
    invalid = httpx.Response(400, json={"error": {"message": "(#100) bad field", "code": 100}})
    client = Client(transport=httpx.MockTransport(lambda _: invalid), sleep=waits.append)
    assert client.get("http://meta.invalid/x", retry_if=throttled).attempts == 1


def test_google_campaign_level_and_export_overlap_note(sb: Sandbox, tmp_path: Path) -> None:
    s = settings_from_dict(
        {"connect": {"google": {"customer_id": CID, "base_url": sb.base_url, "level": "campaign"}}}
    )
    ws = Workspace(":memory:")
    res = run(ws, sb, "google", settings=s)
    assert res.rows_loaded == 28 and res.notes == []
    row = ws.con.execute(
        "SELECT spend, adset_id FROM spend WHERE date = '2026-03-09' AND platform = 'google'"
    ).fetchone()
    assert row == (30.0, None)
    export = tmp_path / "spend.csv"
    export.write_text(
        "date,platform,campaign_id,adset_id,ad_id,creative_id,impressions,clicks,spend\n"
        "2026-03-09,meta,111,222,330,cr1,1000,20,10.0\n",
        encoding="utf-8",
    )
    from signalloop.ingest import ingest_file

    ingest_file(ws, "spend", export)
    meta_res = run(ws, sb, "meta", since=TODAY - timedelta(days=1))
    assert any("came from exports" in n for n in meta_res.notes)
