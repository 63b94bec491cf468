"""Profiles and mapping files: real export layouts onto the contract."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest

from signalloop.errors import ConfigError, InputError, UsageError
from signalloop.ingest import IngestResult, ingest_file
from signalloop.profiles import PROFILES, get_profile, load_mapping
from signalloop.store import Workspace

from .conftest import write_csv


def test_meta_ads_manager_export(ws: Workspace, tmp_path: Path) -> None:
    header = [
        "Reporting starts",
        "Reporting ends",
        "Campaign name",
        "Ad set name",
        "Ad name",
        "Impressions",
        "Link clicks",
        "Amount spent (EUR)",
        "Results",
        "Frequency",
    ]
    rows = [
        [
            "2026-03-01",
            "2026-03-01",
            "Spring | Prospecting",
            "Lookalike 1%",
            "Video A",
            "12,000",
            "",
            "",
            "",
            "",
        ],
        [
            "2026-03-01",
            "2026-03-01",
            "Spring | Prospecting",
            "Lookalike 1%",
            "Video B",
            "9000",
            "120",
            "80.5",
            "7",
            "1.8",
        ],
    ]
    r = ingest_file(ws, "spend", write_csv(tmp_path / "meta.csv", header, rows), profile="meta_ads")
    # "12,000" is not a number in a Meta export (no thousands separators there): quarantined
    assert (r.rows_loaded, r.rows_quarantined) == (1, 1)
    (row,) = ws.table("spend").to_pyarrow().to_pylist()
    assert row["campaign_id"] == "Spring | Prospecting"  # no ID column: the name is the id
    assert (row["adset_id"], row["ad_id"], row["currency"]) == ("Lookalike 1%", "Video B", "EUR")
    assert (row["clicks"], row["spend"], row["platform_conversions"]) == (120, 80.5, 7.0)
    assert row["platform"] == "meta"
    assert "Frequency" in row["attrs"] and "Reporting ends" in row["attrs"]


GOOGLE_HEADER = "Day,Campaign,Campaign ID,Impr.,Clicks,Cost,Conversions,Currency code\n"


def _google_report(ws: Workspace, tmp_path: Path, text: str) -> IngestResult:
    """``text`` ingested as a Google Ads spend report (``--profile google_ads``)."""
    f = tmp_path / "google.csv"
    f.write_text(text)
    return ingest_file(ws, "spend", f, profile="google_ads")


def test_google_ads_report_with_preamble_totals_and_thousands(
    ws: Workspace, tmp_path: Path
) -> None:
    r = _google_report(
        ws,
        tmp_path,
        "Campaign performance report\n"
        '"March 1, 2026 - March 2, 2026"\n'
        + GOOGLE_HEADER
        + '2026-03-01,Brand,111,"12,345",678,"1,234.56",12.5,USD\n'
        "2026-03-02,Brand,111,100,5,7.00,0,USD\n"
        'Total: Account,--,--,"12,445",683,"1,241.56",12.5,--\n',
    )
    assert (r.rows_read, r.rows_loaded, r.rows_quarantined) == (3, 2, 1)
    got = ws.table("spend").order_by("date").to_pyarrow().to_pylist()
    assert (got[0]["impressions"], got[0]["spend"], got[0]["campaign_name"]) == (
        12345,
        1234.56,
        "Brand",
    )
    assert got[0]["campaign_id"] == "111" and got[0]["platform"] == "google"
    (q,) = ws.table("quarantine").to_pyarrow().to_pylist()
    assert (q["line"], q["code"]) == (6, "summary_row")


def test_google_ads_clicks_over_impressions_with_thousands_are_quarantined(
    ws: Workspace, tmp_path: Path
) -> None:
    """More clicks than impressions, both written with thousands separators: the rule reads
    the numbers as the typed columns do ("1,500" > "1,200"), not the text (which is no
    number, so it never compared)."""
    r = _google_report(
        ws,
        tmp_path,
        GOOGLE_HEADER + '2026-03-01,Brand,111,"1,200","1,500",7.00,0,USD\n'
        '2026-03-02,Brand,111,"12,345",678,"1,234.56",12.5,USD\n',
    )
    assert (r.rows_read, r.rows_loaded, r.rows_quarantined) == (2, 1, 1)
    assert r.quarantine_reasons == {"clicks_exceed_impressions": 1}
    (q,) = ws.table("quarantine").to_pyarrow().to_pylist()
    assert q["line"] == 2 and "1,500" in q["reason"]


def test_hubspot_contacts_with_stage_dates_melt_to_history(ws: Workspace, tmp_path: Path) -> None:
    header = [
        "Record ID",
        "Email",
        "Lifecycle Stage",
        "Contact owner",
        "Became a Lead Date",
        "Became a Marketing Qualified Lead Date",
        "Became a Sales Qualified Lead Date",
        "Became a Customer Date",
    ]
    rows = [
        [
            "1",
            "a@x.io",
            "Customer",
            "Ana",
            "2026-01-02 10:00",
            "2026-01-05 09:00",
            "",
            "2026-02-01 12:00",
        ],
        ["2", "b@x.io", "Lead", "Rui", "2026-01-03 08:00", "", "", ""],
        ["3", "c@x.io", "Subscriber", "Rui", "", "", "", ""],
    ]
    r = ingest_file(
        ws, "crm", write_csv(tmp_path / "contacts.csv", header, rows), profile="hubspot"
    )
    assert (r.rows_loaded, r.rows_quarantined) == (4, 1)
    got = ws.table("crm").order_by(["record_id", "ts"]).to_pyarrow().to_pylist()
    assert [(g["record_id"], g["stage"]) for g in got] == [
        ("1", "lead"),
        ("1", "mql"),
        ("1", "won"),
        ("2", "lead"),
    ]
    assert got[0]["ts"] == datetime(2026, 1, 2, 10, 0) and got[0]["owner"] == "Ana"
    (q,) = ws.table("quarantine").to_pyarrow().to_pylist()
    assert (q["line"], q["column"], q["code"]) == (4, "stage", "missing_value")


def test_hubspot_deals_export_maps_stage_values(ws: Workspace, tmp_path: Path) -> None:
    header = ["Record ID", "Deal Stage", "Amount", "Last Modified Date", "Deal owner"]
    rows = [
        ["9", "Closed Won", "12000", "2026-02-01 10:00", "Ana"],
        ["8", "contractsent", "5000", "2026-02-02 10:00", "Rui"],
        ["7", "closedlost", "", "2026-02-03 10:00", "Rui"],
    ]
    ingest_file(ws, "crm", write_csv(tmp_path / "deals.csv", header, rows), profile="hubspot")
    got = dict(ws.con.execute("SELECT record_id, stage FROM crm").fetchall())
    assert got == {"9": "won", "8": "opportunity", "7": "lost"}


def test_mapping_file_maps_any_export(ws: Workspace, tmp_path: Path) -> None:
    mapping = tmp_path / "tiktok.toml"
    mapping.write_text(
        'kind = "spend"\n'
        "[columns]\n"
        'date = "Stat time"\n'
        'campaign_id = ["Campaign ID", "Campaign"]\n'
        'impressions = "Impression"\n'
        'clicks = "Click"\n'
        'spend = "Cost"\n'
        "[constants]\n"
        'platform = "tiktok"\n'
        "[options]\n"
        'date_format = "%d/%m/%Y"\n'
    )
    f = write_csv(
        tmp_path / "tt.csv",
        ["Stat time", "Campaign", "Impression", "Click", "Cost", "CTR"],
        [["31/01/2026", "Launch", 100, 3, 2.5, "3%"]],
    )
    r = ingest_file(ws, "spend", f, mapping=mapping)
    assert r.rows_loaded == 1 and r.profile == "mapping:tiktok.toml"
    (row,) = ws.table("spend").to_pyarrow().to_pylist()
    assert (row["date"], row["platform"], row["campaign_id"]) == (
        date(2026, 1, 31),
        "tiktok",
        "Launch",
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[columns\n", "not valid TOML"),
        ("colums = {}\n", "unknown key"),
        ('[columns]\nbudget = "x"\n', "not a spend column"),
        ('kind = "crm"\n', "is for kind 'crm'"),
        ('[options]\nformat = "x"\n', "unknown option"),
        ('extends = "tiktok"\n', "unknown profile"),
    ],
)
def test_bad_mapping_files_say_what_is_wrong(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "m.toml"
    f.write_text(text)
    with pytest.raises(UsageError, match=match):
        load_mapping(f, "spend")


def test_missing_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_mapping(tmp_path / "nope.toml", "spend")


def test_unknown_profile() -> None:
    with pytest.raises(UsageError, match="meta_ads"):
        get_profile("facebook")
    assert set(PROFILES) >= {"canonical", "meta_ads", "google_ads", "hubspot"}


def test_kag_without_date_asks_for_date(ws: Workspace, tmp_path: Path) -> None:
    f = write_csv(
        tmp_path / "kag.csv",
        ["ad_id", "xyz_campaign_id", "fb_campaign_id", "Impressions", "Clicks", "Spent"],
        [["1", "916", "103916", "10", "1", "1.5"]],
    )
    with pytest.raises(InputError, match="--date"):
        ingest_file(ws, "spend", f, profile="meta_ads")
