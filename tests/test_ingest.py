"""Ingest: formats, validation and quarantine reasons, idempotency, line numbers."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from signalloop.errors import InputError, UsageError
from signalloop.ingest import ingest_file
from signalloop.store import Workspace
from signalloop.validate import REASON_CODES

from .conftest import shared_data, write_csv

SPEND_HEADER = ["date", "platform", "campaign_id", "adset_id", "impressions", "clicks", "spend"]
GOOD_SPEND = [
    ["2026-01-01", "meta", "c1", "a1", 1000, 10, "12.50"],
    ["2026-01-01", "meta", "c1", "a2", 500, 5, "3"],
    ["2026-01-02", "google", "c2", "", 800, 40, "20.1"],
]


def quarantine_rows(ws: Workspace) -> list[dict[str, object]]:
    q = ws.table("quarantine").order_by("line")
    rows: list[dict[str, object]] = q.to_pyarrow().to_pylist()
    return rows


def test_good_spend_lands_typed(ws: Workspace, tmp_path: Path) -> None:
    f = write_csv(tmp_path / "s.csv", SPEND_HEADER, GOOD_SPEND)
    r = ingest_file(ws, "spend", f)
    assert (r.rows_read, r.rows_loaded, r.rows_quarantined) == (3, 3, 0)
    got = ws.table("spend").order_by(["date", "adset_id"]).to_pyarrow().to_pylist()
    assert got[0]["date"] == date(2026, 1, 1)
    assert got[0]["impressions"] == 1000 and got[0]["spend"] == 12.5
    assert got[2]["adset_id"] is None and got[2]["platform"] == "google"


@pytest.mark.parametrize(
    ("row", "column", "code"),
    [
        (["", "meta", "c1", "a", 10, 1, 1], "date", "missing_value"),
        (["2026-01-01", "meta", "", "a", 10, 1, 1], "campaign_id", "missing_value"),
        (["2026-01-01", "meta", "c1", "a", "ten", 1, 1], "impressions", "not_a_number"),
        (["2026-01-01", "meta", "c1", "a", "10.5", 1, 1], "impressions", "not_a_number"),
        (["2026-01-01", "meta", "c1", "a", 10, -1, 1], "clicks", "negative"),
        (["2026-01-01", "meta", "c1", "a", 10, 1, "-0.5"], "spend", "negative"),
        (["2026-01-01", "meta", "c1", "a", 10, 11, 1], "clicks", "clicks_exceed_impressions"),
        (["01/02/2026", "meta", "c1", "a", 10, 1, 1], "date", "bad_date"),
        (["2999-01-01", "meta", "c1", "a", 10, 1, 1], "date", "future"),
    ],
)
def test_each_spend_reason_quarantines_with_line_and_column(
    ws: Workspace, tmp_path: Path, row: list[object], column: str, code: str
) -> None:
    f = write_csv(tmp_path / "s.csv", SPEND_HEADER, [*GOOD_SPEND[:2], row, GOOD_SPEND[2]])
    r = ingest_file(ws, "spend", f)
    assert (r.rows_loaded, r.rows_quarantined) == (3, 1)
    assert r.quarantine_reasons == {code: 1}
    (q,) = quarantine_rows(ws)
    assert (q["file"], q["line"], q["column"], q["code"]) == (str(f), 4, column, code)
    assert q["reason"]
    raw = json.loads(str(q["raw"]))
    assert raw["campaign_id"] == (row[2] or None)


def test_timestamp_and_enum_reasons(ws: Workspace, tmp_path: Path) -> None:
    header = ["conversion_id", "ts", "kind", "source", "value"]
    rows = [
        ["v1", "2026-01-01T10:00:00Z", "lead", "pixel", "1"],
        ["v2", "yesterday", "lead", "pixel", "1"],
        ["v3", "2999-01-01T00:00:00Z", "lead", "pixel", "1"],
        ["v4", "2026-01-01T10:00:00+02:00", "lead", "carrier pigeon", "1"],
        ["v5", "2026-01-01T10:00:00+02:00", "", "server", "-5"],
    ]
    f = write_csv(tmp_path / "c.csv", header, rows)
    r = ingest_file(ws, "conversions", f)
    assert r.rows_loaded == 1
    codes = [(q["line"], q["column"], q["code"]) for q in quarantine_rows(ws)]
    assert codes == [
        (3, "ts", "bad_timestamp"),
        (4, "ts", "future"),
        (5, "source", "bad_value"),
        (6, "kind", "missing_value"),
    ]


def test_malformed_rows_quarantined_and_later_lines_stay_right(
    ws: Workspace, tmp_path: Path
) -> None:
    text = (
        "date,platform,campaign_id,impressions,clicks,spend\n"
        "2026-01-01,meta,c1,10,1,1\n"
        "2026-01-01,meta,c2,10,1,1,EXTRA\n"
        "2026-01-01,meta\n"
        "2026-01-01,meta,c3,10,1,1\n"
        "2026-01-01,meta,c4,10,20,1\n"
    )
    f = tmp_path / "m.csv"
    f.write_text(text)
    r = ingest_file(ws, "spend", f)
    assert (r.rows_read, r.rows_loaded, r.rows_quarantined) == (5, 2, 3)
    got = [(q["line"], q["code"]) for q in quarantine_rows(ws)]
    assert got == [(3, "malformed_row"), (4, "malformed_row"), (6, "clicks_exceed_impressions")]


def test_line_numbers_hold_in_a_large_parallel_read(ws: Workspace, tmp_path: Path) -> None:
    n = 300_000
    bad = {17, 150_001, 299_998}
    f = tmp_path / "big.csv"
    with f.open("w") as fh:
        fh.write("touch_id,ts,user_id\n")
        for i in range(n):
            ts = "not-a-time" if i in bad else "2026-01-01T00:00:00Z"
            fh.write(f"t{i},{ts},u{i % 97}\n")
    r = ingest_file(ws, "touchpoints", f)
    assert (r.rows_loaded, r.rows_quarantined) == (n - len(bad), len(bad))
    assert [q["line"] for q in quarantine_rows(ws)] == sorted(i + 2 for i in bad)


def test_unterminated_quote_is_a_file_error_naming_the_line(ws: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "u.csv"
    f.write_text('touch_id,ts,user_id\nt1,2026-01-01,u1\nt2,"2026-01-01,u2\nt3,2026-01-01,u3\n')
    with pytest.raises(InputError) as ei:
        ingest_file(ws, "touchpoints", f)
    assert ei.value.file == str(f) and ei.value.line == 3
    assert "unterminated quote" in str(ei.value)
    assert ws.counts()["touchpoints"] == 0


def test_not_utf8_is_a_file_error_naming_the_line(ws: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "latin1.csv"
    f.write_bytes(
        "touch_id,ts,user_id\nt1,2026-01-01,u1\nt2,2026-01-01,J\xfcrgen\n".encode("latin-1")
    )
    try:
        r = ingest_file(ws, "touchpoints", f)
    except InputError as exc:
        assert exc.line == 3 and "UTF-8" in str(exc)
    else:  # DuckDB may instead reject just the row: then it must be quarantined, not dropped
        assert r.rows_loaded == 1 and r.rows_quarantined == 1


def test_missing_required_column_names_it_and_suggests(ws: Workspace, tmp_path: Path) -> None:
    f = write_csv(tmp_path / "s.csv", ["date", "platform", "campaign_id", "clicks"], [])
    with pytest.raises(InputError, match="impressions") as ei:
        ingest_file(ws, "spend", f)
    assert ei.value.line == 1


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_any_delimiter(ws: Workspace, tmp_path: Path, delimiter: str) -> None:
    rows = [*GOOD_SPEND, ["2026-01-03", "meta", "c;1,|x", "a", 1, 1, 1]]
    f = write_csv(tmp_path / "s.csv", SPEND_HEADER, rows, delimiter=delimiter)
    r = ingest_file(ws, "spend", f)
    assert r.rows_loaded == 4
    ids = ws.table("spend").campaign_id.to_pyarrow().to_pylist()
    assert "c;1,|x" in ids


def test_bom_gzip_and_parquet(ws: Workspace, tmp_path: Path) -> None:
    body = "touch_id,ts,user_id\nt1,2026-01-01T00:00:00Z,u1\n"
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + body.encode())
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(body.replace("t1", "t2").encode()))
    pqf = tmp_path / "t.parquet"
    pq.write_table(
        pa.table(
            {"touch_id": ["t3", "t4"], "ts": ["2026-01-01T00:00:00Z", "bad"], "user_id": ["u", "u"]}
        ),
        pqf,
    )
    for f in (bom, gz, pqf):
        ingest_file(ws, "touchpoints", f)
    ids = sorted(ws.table("touchpoints").touch_id.to_pyarrow().to_pylist())
    assert ids == ["t1", "t2", "t3"]
    (q,) = quarantine_rows(ws)
    assert (q["file"], q["line"], q["code"]) == (str(pqf), 2, "bad_timestamp")


def test_reingest_same_file_adds_nothing(ws: Workspace, tmp_path: Path) -> None:
    f = write_csv(tmp_path / "s.csv", SPEND_HEADER, [*GOOD_SPEND, ["x", "meta", "c", "", 1, 1, 1]])
    first = ingest_file(ws, "spend", f)
    before = (ws.counts(), ws.table("quarantine").count().execute())
    again = ingest_file(ws, "spend", f)
    assert first.status == "ok" and again.status == "skipped"
    assert (ws.counts(), ws.table("quarantine").count().execute()) == before


def test_overlapping_exports_add_only_new_rows(ws: Workspace, tmp_path: Path) -> None:
    a = write_csv(tmp_path / "a.csv", SPEND_HEADER, GOOD_SPEND[:2])
    b = write_csv(tmp_path / "b.csv", SPEND_HEADER, GOOD_SPEND[1:])
    ingest_file(ws, "spend", a)
    r = ingest_file(ws, "spend", b)
    assert (r.rows_loaded, r.rows_existing) == (1, 1)
    assert ws.counts()["spend"] == 3


def test_copies_inside_a_file_are_folded_and_counted(ws: Workspace, tmp_path: Path) -> None:
    header = ["conversion_id", "ts", "kind", "campaign_id"]
    rows = [
        ["v1", "2026-01-01T10:00:00Z", "lead", "c1"],
        ["v1", "2026-01-01T10:00:03Z", "lead", "c1"],
        ["v1", "2026-01-01T10:00:04Z", "lead", "c1"],
        ["v2", "2026-01-01T11:00:00Z", "lead", "c2"],
    ]
    r = ingest_file(ws, "conversions", write_csv(tmp_path / "c.csv", header, rows))
    assert (r.rows_loaded, r.rows_folded) == (2, 2)
    (d,) = ws.table("duplicates").to_pyarrow().to_pylist()
    assert (d["key"], d["campaign_id"], d["first_line"], d["copies"]) == ("v1", "c1", 2, 2)
    kept = ws.table("conversions").filter(lambda t: t.conversion_id == "v1").ts.execute()
    assert str(kept.iloc[0]) == "2026-01-01 10:00:00"


def test_utm_parsed_from_landing_url_when_columns_absent(ws: Workspace, tmp_path: Path) -> None:
    header = ["touch_id", "ts", "user_id", "landing_url"]
    rows = [
        [
            "t1",
            "2026-01-01",
            "u",
            "https://x.io/p?utm_source=Face%20Book&utm_medium=paid+social&x=1",
        ],
        ["t2", "2026-01-01", "u", "https://x.io/p#top"],
    ]
    ingest_file(ws, "touchpoints", write_csv(tmp_path / "t.csv", header, rows))
    got = ws.table("touchpoints").order_by("touch_id").to_pyarrow().to_pylist()
    assert (got[0]["utm_source"], got[0]["utm_medium"]) == ("Face Book", "paid social")
    assert got[1]["utm_source"] is None


def test_unmapped_columns_are_kept_as_attributes(ws: Workspace, tmp_path: Path) -> None:
    header = ["touch_id", "ts", "user_id", "device", "Country"]
    ingest_file(
        ws,
        "touchpoints",
        write_csv(tmp_path / "t.csv", header, [["t", "2026-01-01", "u", "ios", "PT"]]),
    )
    (row,) = ws.table("touchpoints").to_pyarrow().to_pylist()
    assert json.loads(row["attrs"]) == {"device": "ios", "Country": "PT"}


def test_timestamps_are_stored_in_utc(ws: Workspace, tmp_path: Path) -> None:
    header = ["touch_id", "ts", "user_id"]
    rows = [["a", "2026-01-01T10:00:00+02:00", "u"], ["b", "2026-01-01 10:00", "u"]]
    ingest_file(ws, "touchpoints", write_csv(tmp_path / "t.csv", header, rows))
    got = ws.con.execute("SELECT touch_id, ts::VARCHAR FROM touchpoints ORDER BY 1").fetchall()
    assert got == [("a", "2026-01-01 08:00:00"), ("b", "2026-01-01 10:00:00")]


def test_every_reason_code_is_documented() -> None:
    assert set(REASON_CODES) >= {
        "malformed_row",
        "missing_value",
        "not_a_number",
        "negative",
        "bad_date",
        "bad_timestamp",
        "future",
        "clicks_exceed_impressions",
        "bad_value",
        "summary_row",
    }


def test_bad_arguments(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown kind"):
        ingest_file(ws, "spends", tmp_path / "x.csv")
    with pytest.raises(InputError, match="no such file"):
        ingest_file(ws, "spend", tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        ingest_file(ws, "spend", empty)


def test_kag_meta_export_lands_every_row_with_matching_sums(ws: Workspace) -> None:
    f = shared_data("facebook_ads_kag", "KAG_conversion_data.csv")
    r = ingest_file(ws, "spend", f, profile="meta_ads", report_date=date(2017, 8, 30))
    assert (r.rows_read, r.rows_loaded, r.rows_quarantined) == (1143, 1143, 0)
    import csv

    with f.open(encoding="utf-8-sig", newline="") as fh:
        src = list(csv.DictReader(fh))
    spend = ws.table("spend")
    sums = (
        spend.aggregate(
            i=spend.impressions.sum(), c=spend.clicks.sum(), s=spend.spend.sum(), n=spend.count()
        )
        .to_pyarrow()
        .to_pylist()[0]
    )
    assert sums["n"] == len(src) == 1143
    assert sums["i"] == sum(int(x["Impressions"]) for x in src)
    assert sums["c"] == sum(int(x["Clicks"]) for x in src)
    assert sums["s"] == pytest.approx(sum(float(x["Spent"]) for x in src), rel=1e-12)
    first = spend.filter(spend.ad_id == "708746").to_pyarrow().to_pylist()[0]
    assert (first["campaign_id"], first["adset_id"], first["platform"]) == ("916", "103916", "meta")
    assert json.loads(first["attrs"])["age"] == "30-34"


def test_every_ingest_is_logged_including_failures(ws: Workspace, tmp_path: Path) -> None:
    good = write_csv(tmp_path / "s.csv", SPEND_HEADER, GOOD_SPEND)
    bad = write_csv(tmp_path / "b.csv", ["date", "platform"], [["2026-01-01", "meta"]])
    ingest_file(ws, "spend", good, report_date=date(2026, 1, 5))
    with pytest.raises(InputError):
        ingest_file(ws, "spend", bad)
    log = ws.table("ingest_log").order_by("ingest_id").to_pyarrow().to_pylist()
    assert [(r["file"], r["status"], r["rows_loaded"]) for r in log] == [
        (str(good), "ok", 3),
        (str(bad), "failed", None),
    ]
    assert "--date ignored" in log[0]["message"]
    assert "impressions" in log[1]["message"]
