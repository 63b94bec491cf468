"""The sandbox's Meta Insights and Google Ads report stand-ins (issue 15): shapes and rules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from signalloop.push.sandbox import Sandbox

from .connect_setup import ACT, CID, sandbox

TOKEN = "meta-pull-secret-3b7e"
DEV = "dev-pull-secret-8c1d"
ACCESS = "access-pull-secret-2f9a"
EVENT = "offsite_conversion.fb_pixel_lead"


def delivery(days: int, *, ads: int = 2, spend: float = 10.0) -> list[dict[str, Any]]:
    out = []
    for d in range(days):
        day = (date(2026, 3, 9) - timedelta(days=d)).isoformat()
        for ad in range(ads):
            out.append(
                {
                    "date": day,
                    "campaign_id": "111",
                    "adset_id": "222",
                    "ad_id": f"33{ad}",
                    "impressions": 1000,
                    "clicks": 25,
                    "spend": spend,
                    "conversions": 2,
                    "conversion_value": 40.5,
                }
            )
    return out


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(
        TOKEN, DEV, ACCESS, insights_page_size=3, insights_sync_max_rows=8, async_polls=2
    ) as s:
        s.load_delivery("meta", f"act_{ACT}", delivery(5), currency="EUR")
        s.load_delivery("google", CID, delivery(5), currency="USD")
        yield s


def insights(
    sb: Sandbox, since: str = "2026-03-08", until: str = "2026-03-09", **extra: str
) -> httpx.Response:
    params = {
        "level": "ad",
        "time_increment": "1",
        "fields": "date_start,campaign_id,adset_id,ad_id,impressions,clicks,spend,actions,"
        "action_values,attribution_setting,account_currency",
        "time_range": json.dumps({"since": since, "until": until}),
        "limit": "3",
        **extra,
    }
    return httpx.get(
        f"{sb.base_url}/v24.0/act_{ACT}/insights",
        params=params,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )


def stream(sb: Sandbox, query: str) -> httpx.Response:
    return httpx.post(
        f"{sb.base_url}/v22/customers/{CID}/googleAds:searchStream",
        json={"query": query},
        headers={"Authorization": f"Bearer {ACCESS}", "developer-token": DEV},
    )


def test_insights_rows_are_strings_with_actions_and_paged_by_cursor(sb: Sandbox) -> None:
    first = insights(sb).json()
    assert len(first["data"]) == 3
    row = first["data"][0]
    assert row["date_start"] == row["date_stop"] == "2026-03-08"
    assert row["impressions"] == "1000" and row["spend"] == "10.00"
    assert {"action_type": EVENT, "value": "2"} in row["actions"]
    assert {"action_type": "link_click", "value": "25"} in row["actions"]
    assert row["action_values"] == [{"action_type": EVENT, "value": "40.5"}]
    assert row["attribution_setting"] == "7d_click_1d_view" and row["account_currency"] == "EUR"
    assert "access_token" not in first["paging"]["next"]
    second = insights(sb, after=first["paging"]["cursors"]["after"]).json()
    assert len(second["data"]) == 1 and "next" not in second["paging"]


def test_insights_rules(sb: Sandbox) -> None:
    too_much = insights(sb, since="2026-03-01")
    assert too_much.status_code == 500 and too_much.json()["error"]["code"] == 1
    assert "reduce the amount of data" in too_much.json()["error"]["message"]
    assert insights(sb, level="campaign").json()["error"]["code"] == 100
    assert insights(sb, fields="date_start,colour").json()["error"]["code"] == 100
    assert insights(sb, since="2026-03-09", until="2026-03-08").status_code == 400
    assert insights(sb, until="2026-03-11").status_code == 400  # the future
    unknown = httpx.get(
        f"{sb.base_url}/v24.0/act_99/insights", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert unknown.json()["error"]["error_subcode"] == 33
    sb.expire_token("meta")
    expired = insights(sb).json()["error"]
    assert (expired["code"], expired["error_subcode"]) == (190, 463)


def test_report_job_runs_then_serves_pages_and_can_fail(sb: Sandbox) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    form = {
        "level": "ad",
        "time_increment": "1",
        "fields": "date_start,ad_id,spend",
        "time_range": json.dumps({"since": "2026-03-05", "until": "2026-03-09"}),
    }
    rid = httpx.post(f"{sb.base_url}/v24.0/act_{ACT}/insights", data=form, headers=auth).json()[
        "report_run_id"
    ]
    early = httpx.get(f"{sb.base_url}/v24.0/{rid}/insights", headers=auth)
    assert early.status_code == 400
    states = [
        httpx.get(f"{sb.base_url}/v24.0/{rid}", headers=auth).json()["async_status"]
        for _ in range(3)
    ]
    assert states == ["Job Running", "Job Completed", "Job Completed"]
    rows: list[dict[str, Any]] = []
    after = None
    while True:
        page = httpx.get(
            f"{sb.base_url}/v24.0/{rid}/insights",
            params={"limit": "3", **({"after": after} if after else {})},
            headers=auth,
        ).json()
        rows += page["data"]
        if "next" not in page.get("paging", {}):
            break
        after = page["paging"]["cursors"]["after"]
    assert len(rows) == 10  # 5 days x 2 ads, more than a synchronous read may return
    sb.fail_next_report()
    rid = httpx.post(f"{sb.base_url}/v24.0/act_{ACT}/insights", data=form, headers=auth).json()[
        "report_run_id"
    ]
    for _ in range(2):
        status = httpx.get(f"{sb.base_url}/v24.0/{rid}", headers=auth).json()
    assert status["async_status"] == "Job Failed"


def test_restated_delivery_changes_the_next_read(sb: Sandbox) -> None:
    before = insights(sb, since="2026-03-09", until="2026-03-09").json()["data"]
    sb.load_delivery("meta", ACT, delivery(1, spend=12.5))
    after = insights(sb, since="2026-03-09", until="2026-03-09").json()["data"]
    assert [r["spend"] for r in before] == ["10.00", "10.00"]
    assert [r["spend"] for r in after] == ["12.50", "12.50"]


def test_search_stream_ad_group_report(sb: Sandbox) -> None:
    q = (
        "SELECT segments.date, campaign.id, ad_group.id, customer.currency_code, "
        "metrics.impressions, metrics.clicks, metrics.cost_micros, metrics.conversions, "
        "metrics.conversions_value FROM ad_group WHERE segments.date >= '2026-03-08' "
        "AND segments.date <= '2026-03-09'"
    )
    batches = stream(sb, q).json()
    assert isinstance(batches, list)
    rows = [r for b in batches for r in b.get("results", [])]
    assert len(rows) == 2  # one ad group a day: its two ads summed
    r = rows[0]
    assert r["segments"]["date"] == "2026-03-08"
    assert r["adGroup"]["id"] == "222" and r["adGroup"]["resourceName"].endswith("/adGroups/222")
    assert r["metrics"]["costMicros"] == "20000000" and r["metrics"]["impressions"] == "2000"
    assert r["metrics"]["conversions"] == 4.0 and r["customer"]["currencyCode"] == "USD"
    summed = stream(
        sb,
        "SELECT campaign.id, metrics.cost_micros FROM campaign WHERE segments.date >= "
        "'2026-03-05' AND segments.date <= '2026-03-09'",
    ).json()
    assert [x["metrics"]["costMicros"] for x in summed[0]["results"]] == ["100000000"]


def test_search_stream_rules_and_broken_stream(sb: Sandbox) -> None:
    no_dates = stream(sb, "SELECT segments.date, metrics.clicks FROM ad_group").json()
    detail = no_dates["error"]["details"][0]["errors"][0]["errorCode"]
    assert detail == {"queryError": "EXPECTED_FILTERS_ON_DATE_RANGE"}
    wrong = stream(sb, "SELECT bidding_data_exclusion.name FROM ad_group").json()
    assert wrong["error"]["details"][0]["errors"][0]["errorCode"] == {
        "queryError": "PROHIBITED_RESOURCE_TYPE_IN_SELECT_CLAUSE"
    }
    sb.break_next_stream()
    q = (
        "SELECT segments.date, metrics.clicks FROM ad_group WHERE segments.date >= "
        "'2026-03-05' AND segments.date <= '2026-03-09'"
    )
    broken = stream(sb, q)
    assert broken.status_code == 200 and "error" in broken.json()[-1]
    assert all("error" not in b for b in stream(sb, q).json())
    sb.expire_token("google")
    assert stream(sb, q).json()["error"]["status"] == "UNAUTHENTICATED"
