"""Intake: request bodies, group commit split per request, idempotency, limits."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalloop import intake
from signalloop.ingest import ingest_file
from signalloop.intake import (
    Batch,
    BodyTooLarge,
    IdempotencyConflict,
    Intake,
    UnknownKind,
    UnreadableBody,
    UnsupportedBody,
    ingest_group,
    parse_body,
)
from signalloop.readers import NULL_TOKENS
from signalloop.store import Workspace

NOW = datetime(2026, 3, 1)
TP = ["touch_id", "ts", "user_id", "campaign_id", "landing_url"]


def csv_body(header: Sequence[str], rows: Sequence[Sequence[object]]) -> bytes:
    """A CSV body as Python's writer makes it (``\r\n``: a lone ``\r`` in a value is quoted)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def jsonl_body(records: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def batch(body: bytes, rid: str, kind: str = "touchpoints", ctype: str = "text/csv") -> Batch:
    return Batch(parse_body(body, ctype, kind=kind), rid)


# -- bodies ---------------------------------------------------------------------------------------


def test_csv_body_any_delimiter_bom_and_blank_lines() -> None:
    body = b"\xef\xbb\xbftouch_id;ts;user_id\r\nt1;2026-01-01T00:00:00Z;u1\r\n\r\n" + (
        b't2;2026-01-01T00:00:00Z;"u;2\r\nx"\r\n'
    )
    parsed = parse_body(body, "text/csv; charset=utf-8", kind="touchpoints")
    assert parsed.groupable and parsed.header == "touch_id;ts;user_id"
    assert parsed.lines == [2, 3]  # a blank line is not a record; a quoted newline stays inside
    assert parsed.keys == [("t1",), ("t2",)]
    assert parsed.records.endswith('"u;2\r\nx"\n')


def test_jsonl_body_becomes_csv_with_the_union_of_keys() -> None:
    body = (
        b'{"touch_id": "t1", "ts": "2026-01-01T00:00:00Z", "user_id": "u1", "n": 3}\n'
        b"\n"
        b'{"touch_id": "t2", "user_id": null, "ts": "x", "nested": {"a": [1, "b"]}, "ok": true}\n'
    )
    parsed = parse_body(body, "application/x-ndjson", kind="touchpoints")
    assert parsed.source == "jsonl" and parsed.lines == [1, 3]
    rows = list(csv.reader(io.StringIO(parsed.header + "\n" + parsed.records)))
    assert rows[0] == ["touch_id", "ts", "user_id", "n", "nested", "ok"]
    assert rows[1] == ["t1", "2026-01-01T00:00:00Z", "u1", "3", "", ""]
    assert rows[2] == ["t2", "x", "", "", '{"a":[1,"b"]}', "true"]


def test_gzip_by_header_by_magic_and_multi_member() -> None:
    body = csv_body(["touch_id", "ts", "user_id"], [["t1", "2026-01-01T00:00:00Z", "u1"]])
    plain = parse_body(body, "text/csv", kind="touchpoints")
    for sent, enc in ((gzip.compress(body), "gzip"), (gzip.compress(body), None)):
        got = parse_body(sent, "text/csv", enc, kind="touchpoints")
        assert (got.records, got.sha256) == (plain.records, plain.sha256)
    half = len(body) // 2
    two = gzip.compress(body[:half]) + gzip.compress(body[half:])
    assert parse_body(two, "text/csv", "gzip", kind="touchpoints").records == plain.records


def test_parquet_body_is_staged_as_sent(tmp_path: Path) -> None:
    table = pa.table({"touch_id": ["t1", "t2"], "ts": ["2026-01-01T00:00:00Z", "no"]})
    table = table.append_column("user_id", pa.array(["u1", "u2"]))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    parsed = parse_body(buf.getvalue(), "application/vnd.apache.parquet", kind="touchpoints")
    assert parsed.source == "parquet" and not parsed.groupable
    with Workspace(tmp_path / "w.duckdb") as ws:
        (answer,) = ingest_group(ws, "touchpoints", [Batch(parsed, "p1")], now=NOW)
    assert (answer["rows_loaded"], answer["rows_quarantined"]) == (1, 1)
    assert answer["quarantined"][0]["line"] == 2  # Parquet rows count from 1


@pytest.mark.parametrize(
    ("ctype", "encoding", "needle"),
    [
        (None, None, "no Content-Type"),
        ("application/json", None, "text/csv"),
        ("text/csv; charset=latin-1", None, "UTF-8"),
        ("text/csv", "br", "gzip"),
    ],
)
def test_unsupported_types_are_415_naming_what_is_accepted(
    ctype: str | None, encoding: str | None, needle: str
) -> None:
    with pytest.raises(UnsupportedBody, match=needle) as info:
        parse_body(b"a\n1\n", ctype, encoding, kind="touchpoints")
    assert info.value.status == 415


def test_unknown_kind_is_404_listing_the_kinds() -> None:
    with pytest.raises(UnknownKind, match="spend, touchpoints") as info:
        parse_body(b"a\n1\n", "text/csv", kind="clicks")
    assert info.value.status == 404


def test_size_limit_on_the_wire_and_against_gzip_bombs() -> None:
    body = b"touch_id,ts,user_id\n" + b"t,2026-01-01T00:00:00Z,u\n" * 100
    with pytest.raises(BodyTooLarge, match="1,000 bytes") as info:
        parse_body(body * 2, "text/csv", kind="touchpoints", max_bytes=1000)
    assert info.value.status == 413
    bomb = gzip.compress(b"0" * 50_000_000, compresslevel=9)  # ~50 kB on the wire
    assert len(bomb) < 100_000
    with pytest.raises(BodyTooLarge, match="decompresses"):
        parse_body(bomb, "text/csv", "gzip", kind="touchpoints", max_bytes=1_000_000)


@pytest.mark.parametrize(
    ("body", "ctype", "line", "needle"),
    [
        (b'{"touch_id": "t1"}\n{"touch_id": \n', "application/jsonl", 2, "not valid JSON"),
        (b'{"touch_id": "t1"}\n\n[1, 2]\n', "application/jsonl", 3, "JSON object"),
        (b"touch_id\n", "application/x-parquet", None, "PAR1"),
        (b"   \n", "text/csv", 1, "empty"),
        (gzip.compress(b"touch_id\n", mtime=0)[:-6], "text/csv", None, "truncated"),
    ],
)
def test_unreadable_bodies_are_422_with_the_line(
    body: bytes, ctype: str, line: int | None, needle: str
) -> None:
    with pytest.raises(UnreadableBody, match=needle) as info:
        parse_body(body, ctype, kind="touchpoints")
    assert info.value.status == 422 and info.value.line == line


def test_a_csv_ingest_cannot_read_is_422_naming_line_and_column(ws: Workspace) -> None:
    it = Intake.for_workspace(ws, now=NOW)
    try:
        bad_quote = b'touch_id,ts,user_id\nt1,2026-01-01T00:00:00Z,u1\nt2,"2026,u2\n'
        with pytest.raises(UnreadableBody, match="unterminated quote") as info:
            it.submit("touchpoints", bad_quote, "text/csv")
        assert info.value.line == 3
        with pytest.raises(UnreadableBody, match="'ts'") as info:
            it.submit("touchpoints", b"touch_id,user_id\nt1,u1\n", "text/csv")
        assert info.value.line == 1
        with pytest.raises(UnreadableBody, match="needs column") as info:
            it.submit("touchpoints", b'{"touch_id": "t1"}\n', "application/jsonl")
        assert info.value.line is None  # the header we made is no line of the body
        failed = ws.con.execute("SELECT file FROM ingest_log WHERE status = 'failed'").fetchall()
        assert len(failed) == 3 and all(f.startswith("api:") for (f,) in failed)
    finally:
        it.close()


# -- CSV <-> JSON lines ---------------------------------------------------------------------------

_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
)
_special = st.sampled_from(
    [",", '"', "\n", "\r\n", "\r", ";", " x ", "é", "日本", "\u2028", "NULL"]
)
_value = st.one_of(_text, _special, st.lists(_special, max_size=4).map("".join))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_value, _value), min_size=1, max_size=6))
def test_jsonl_round_trips_through_csv(values: list[tuple[str, str]]) -> None:
    records = [
        {"touch_id": f"t{i}", "ts": "2026-01-01T00:00:00Z", "user_id": "u", "a": a, "b": b}
        for i, (a, b) in enumerate(values)
    ]
    parsed = parse_body(jsonl_body(records), "application/jsonl", kind="touchpoints")
    rows = list(csv.reader(io.StringIO(parsed.header + "\n" + parsed.records, newline="")))
    assert rows[0] == list(records[0])
    assert [dict(zip(rows[0], r, strict=True)) for r in rows[1:]] == records
    as_csv = parse_body(
        csv_body(rows[0], rows[1:]), "text/csv", kind="touchpoints"
    )  # the same rows sent as CSV read back the same
    assert as_csv.lines == [i + 2 for i in range(len(records))]
    assert as_csv.keys == parsed.keys


def _stored_text(value: str) -> str | None:
    """What the store keeps for a text value: DuckDB's null tokens, then ingest's trim."""
    if value in NULL_TOKENS:
        return None
    trimmed = value.strip(" ")
    return trimmed or None


@settings(max_examples=40, deadline=None)
@given(st.lists(_value, min_size=1, max_size=5))
def test_jsonl_and_csv_bodies_land_the_same_values(values: list[str]) -> None:
    records = [
        {"touch_id": f"t{i}", "ts": "2026-01-01T00:00:00Z", "user_id": "u", "landing_url": v}
        for i, v in enumerate(values)
    ]
    rows = [list(r.values()) for r in records]
    got = []
    for name, body, ctype in (
        ("j", jsonl_body(records), "application/jsonl"),
        ("c", csv_body(list(records[0]), rows), "text/csv"),
    ):
        with Workspace(":memory:") as ws:
            (a,) = ingest_group(ws, "touchpoints", [batch(body, name, ctype=ctype)], now=NOW)
            assert a["rows_loaded"] == len(records)
            got.append(ws.con.execute("SELECT touch_id, landing_url FROM touchpoints").fetchall())
    assert sorted(got[0]) == sorted(got[1])
    assert dict(got[0]) == {f"t{i}": _stored_text(v) for i, v in enumerate(values)}


# -- group commit ---------------------------------------------------------------------------------


def _random_bodies(rng: random.Random, n: int, pool: int) -> list[bytes]:
    """CSV bodies of touchpoints with bad rows, copies inside and across bodies."""
    bodies = []
    for _ in range(n):
        rows: list[list[object]] = []
        for _ in range(rng.randint(0, 12)):
            tid = f"t{rng.randrange(pool)}"
            row: list[object] = [tid, f"2026-01-0{rng.randint(1, 9)}T10:00:00Z", "u1"]
            url = rng.choice(["https://x.example/?a=1", 'https://x.example/?a=1,b="2"'])
            row += [rng.choice(["c1", "c2", ""]), url]  # the second is quoted in the CSV
            fault = rng.random()
            if fault < 0.1:
                row[1] = "yesterday"
            elif fault < 0.15:
                row[2] = ""
            elif fault < 0.2:
                row.append("extra field")
            elif fault < 0.25:
                row[1] = "2999-01-01T00:00:00Z"
            elif fault < 0.3:
                row[0] = f" {tid} "  # the same key once trimmed
            rows.append(row)
        bodies.append(csv_body(TP, rows))
    return bodies


def _snapshot(ws: Workspace, labels: dict[str, str]) -> dict[str, list[tuple[Any, ...]]]:
    """The workspace's rows, quarantine and duplicates, files mapped to request labels."""

    def lab(f: str) -> str:
        return labels.get(f, f)

    con = ws.con
    return {
        "rows": sorted(
            con.execute("SELECT * EXCLUDE (_ingest_id) FROM touchpoints").fetchall(), key=repr
        ),
        "quarantine": sorted(
            (lab(r[0]), *r[1:])
            for r in con.execute(
                'SELECT file, line, kind, "column", code, reason, problems, '
                # DuckDB keeps the "\n" of a "\r\n" before a rejected line; a group does not
                """replace(CAST(raw AS VARCHAR), '{"csv_line":"\\n', '{"csv_line":"') """
                "FROM quarantine"
            ).fetchall()
        ),
        "duplicates": sorted(
            (lab(r[0]), *r[1:])
            for r in con.execute(
                "SELECT file, kind, key, campaign_id, first_line, copies FROM duplicates"
            ).fetchall()
        ),
    }


def _alone(
    tmp_path: Path, bodies: Sequence[bytes], pre: bytes | None, kind: str = "touchpoints"
) -> tuple[Workspace, list[Any], dict[str, str]]:
    """Each body ingested alone, in order, as a file (the reference)."""
    ws = Workspace(tmp_path / "alone.duckdb")
    if pre is not None:
        (tmp_path / "pre.csv").write_bytes(pre)
        ingest_file(ws, kind, tmp_path / "pre.csv", now=NOW)
    results, labels = [], {}
    for i, body in enumerate(bodies):
        p = tmp_path / f"alone{i}.csv"
        p.write_bytes(body)
        results.append(ingest_file(ws, kind, p, now=NOW))
        labels[str(p)] = f"api:r{i}"
    return ws, results, labels


@pytest.mark.parametrize("seed", range(8))
def test_group_split_is_exactly_each_body_alone(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    bodies = _random_bodies(rng, rng.randint(2, 7), pool=25)
    pre = csv_body(TP, [[f"t{i}", "2026-01-01T00:00:00Z", "u0", "c9", ""] for i in range(0, 25, 4)])
    ref, results, labels = _alone(tmp_path, bodies, pre)
    with Workspace(tmp_path / "group.duckdb") as ws:
        (tmp_path / "pre.csv").write_bytes(pre)
        ingest_file(ws, "touchpoints", tmp_path / "pre.csv", now=NOW)
        batches = [batch(b, f"r{i}") for i, b in enumerate(bodies)]
        answers = ingest_group(ws, "touchpoints", batches, now=NOW)
        assert {a["ingest_id"] for a in answers} == {2}  # one ingest for the group
        for a, r in zip(answers, results, strict=True):
            got = (a["rows_received"], a["rows_loaded"], a["rows_quarantined"])
            assert got == (r.rows_read, r.rows_loaded, r.rows_quarantined)
            assert (a["rows_existing"], a["rows_folded"]) == (r.rows_existing, r.rows_folded)
            assert a["quarantine_reasons"] == r.quarantine_reasons
            assert a["group_size"] == len(bodies)
        assert _snapshot(ws, {}) == _snapshot(ref, labels)
        stored = ws.con.execute("SELECT count(*) FROM api_requests").fetchone()
        assert stored == (len(bodies),)
        (log,) = ws.con.execute("SELECT file FROM ingest_log WHERE ingest_id = 2").fetchone() or ()
        assert log == "api:" + ",".join(f"r{i}" for i in range(len(bodies)))
    ref.close()


def test_group_split_when_every_good_row_is_new(tmp_path: Path) -> None:
    """No copies, nothing already stored: the split needs no keys, only the quarantine."""
    bodies = _random_bodies(random.Random(11), 4, pool=1_000_000)
    ref, results, labels = _alone(tmp_path, bodies, None)
    assert all(r.rows_existing == r.rows_folded == 0 for r in results)
    with Workspace(tmp_path / "group.duckdb") as ws:
        answers = ingest_group(ws, "touchpoints", [batch(b, f"r{i}") for i, b in enumerate(bodies)])
        assert [a["group_size"] for a in answers] == [4] * 4
        got = [(a["rows_loaded"], a["rows_quarantined"]) for a in answers]
        assert got == [(r.rows_loaded, r.rows_quarantined) for r in results]
        assert sum(a["rows_quarantined"] for a in answers) > 0
        assert _snapshot(ws, {}) == _snapshot(ref, labels)
    ref.close()


def test_group_split_with_a_typed_composite_key(tmp_path: Path) -> None:
    """CRM's key (record_id, stage, ts): timestamps written two ways are one key."""
    header = ["record_id", "stage", "ts", "amount"]
    bodies = [
        csv_body(header, [["r1", "Lead", "2026-01-02T10:00:00Z", 1], ["r2", "mql", "bad", 1]]),
        csv_body(header, [["r1", "lead", "2026-01-02 10:00:00+00:00", 2], ["r3", "sql", "", 1]]),
        csv_body(
            header,
            [
                ["r4", "won", "2026-01-03T00:00:00Z", 5],
                ["r4", "WON", "2026-01-03T01:00:00+01:00", 5],
            ],
        ),
    ]
    ref, results, labels = _alone(tmp_path, bodies, None, kind="crm")
    with Workspace(tmp_path / "group.duckdb") as ws:
        answers = ingest_group(ws, "crm", [batch(b, f"r{i}", "crm") for i, b in enumerate(bodies)])
        got = [(a["rows_loaded"], a["rows_existing"], a["rows_folded"]) for a in answers]
        assert got == [(r.rows_loaded, r.rows_existing, r.rows_folded) for r in results]
        assert got == [(1, 0, 0), (0, 1, 0), (1, 0, 1)]
        snap = _snapshot_crm(ws, {})
        assert snap == _snapshot_crm(ref, labels)
    ref.close()


def _snapshot_crm(ws: Workspace, labels: dict[str, str]) -> tuple[Any, ...]:
    con = ws.con
    return (
        sorted(con.execute("SELECT * EXCLUDE (_ingest_id) FROM crm").fetchall(), key=repr),
        sorted(
            (labels.get(f, f), *rest)
            for f, *rest in con.execute(
                'SELECT file, line, code, "column" FROM quarantine'
            ).fetchall()
        ),
        sorted(
            (labels.get(f, f), *rest)
            for f, *rest in con.execute(
                "SELECT file, key, first_line, copies FROM duplicates"
            ).fetchall()
        ),
    )


def test_jsonl_bodies_group_and_report_their_own_lines(ws: Workspace) -> None:
    recs = [{"touch_id": "t1", "ts": "2026-01-01T00:00:00Z", "user_id": "u1"}]
    bad = [{"touch_id": "t2", "ts": "nope", "user_id": "u2"}]
    b1 = jsonl_body(recs) + b"\n\n" + jsonl_body(bad)  # the bad record is on line 4
    b2 = csv_body(["touch_id", "ts", "user_id"], [["t1", "2026-01-01T00:00:00Z", "u1"]])
    answers = ingest_group(
        ws,
        "touchpoints",
        [batch(b1, "j", ctype="application/jsonl"), batch(b2, "c")],
        now=NOW,
    )
    assert [a["group_size"] for a in answers] == [2, 2]  # same header, one ingest
    assert answers[0]["quarantined"][0]["line"] == 4
    assert (answers[1]["rows_loaded"], answers[1]["rows_existing"]) == (0, 1)


def test_mixed_batches_fall_back_to_one_ingest_each(ws: Workspace) -> None:
    b1 = csv_body(["touch_id", "ts", "user_id"], [["t1", "2026-01-01T00:00:00Z", "u1"]])
    b2 = csv_body(["user_id", "touch_id", "ts"], [["u2", "t2", "2026-01-01T00:00:00Z"]])
    answers = ingest_group(ws, "touchpoints", [batch(b1, "a"), batch(b2, "b")], now=NOW)
    assert [a["ingest_id"] for a in answers] == [1, 2]
    assert [a["rows_loaded"] for a in answers] == [1, 1]


def test_a_split_that_does_not_add_up_rolls_back_and_ingests_one_by_one(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kw: object) -> None:
        raise intake._Mismatch("test")

    monkeypatch.setattr(intake, "_split", broken)
    bodies = _random_bodies(random.Random(3), 3, pool=10)
    answers = ingest_group(ws, "touchpoints", [batch(b, f"r{i}") for i, b in enumerate(bodies)])
    assert [a["group_size"] for a in answers] == [1, 1, 1]
    logs = ws.con.execute("SELECT file, status FROM ingest_log ORDER BY ingest_id").fetchall()
    assert logs == [("api:r0", "ok"), ("api:r1", "ok"), ("api:r2", "ok")]  # group rolled back


def test_a_failure_before_commit_leaves_nothing(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kw: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(intake, "_store", broken)
    bodies = _random_bodies(random.Random(5), 3, pool=10)
    with pytest.raises(RuntimeError, match="disk on fire"):
        ingest_group(ws, "touchpoints", [batch(b, f"r{i}") for i, b in enumerate(bodies)])
    counts = ws.con.execute(
        "SELECT (SELECT count(*) FROM touchpoints), (SELECT count(*) FROM quarantine), "
        "(SELECT count(*) FROM ingest_log WHERE status = 'ok'), "
        "(SELECT count(*) FROM api_requests)"
    ).fetchone()
    assert counts == (0, 0, 0, 0)


def test_large_bodies_are_ingested_as_sent(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake, "GROUP_MAX_BODY_BYTES", 10)
    body = b"touch_id,ts,user_id\nt1,2026-01-01T00:00:00Z,u1\n\nt2,bad,u2\n"
    parsed = parse_body(body, "text/csv", kind="touchpoints")
    assert parsed.raw is not None and not parsed.groupable
    (a,) = ingest_group(ws, "touchpoints", [Batch(parsed, "big")], now=NOW)
    assert (a["rows_received"], a["rows_loaded"], a["rows_quarantined"]) == (2, 1, 1)
    assert a["quarantined"][0]["line"] == 3  # as ingest counts it for the file as sent


# -- the writer -----------------------------------------------------------------------------------


def test_concurrent_requests_share_ingests_and_all_land(ws: Workspace) -> None:
    it = Intake.for_workspace(ws, now=NOW)
    n_threads, per_thread, rows = 6, 5, 40
    answers: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def client(t: int) -> None:
        for j in range(per_thread):
            body = csv_body(
                TP,
                [[f"t{t}_{j}_{k}", "2026-01-01T00:00:00Z", "u", "c1", ""] for k in range(rows)]
                + [[f"bad{t}_{j}", "never", "u", "c1", ""]],
            )
            try:
                answers.append(it.submit("touchpoints", body, "text/csv"))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=client, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    it.close()
    assert not errors
    assert len(answers) == n_threads * per_thread
    assert all((a["rows_loaded"], a["rows_quarantined"]) == (rows, 1) for a in answers)
    assert all(a["quarantined"][0]["line"] == rows + 2 for a in answers)
    assert it.groups < n_threads * per_thread  # requests were committed together
    total = ws.con.execute("SELECT count(*) FROM touchpoints").fetchone()
    assert total == (n_threads * per_thread * rows,)


def test_idempotency_key_replays_the_stored_answer(ws: Workspace) -> None:
    it = Intake.for_workspace(ws, now=NOW)
    try:
        body = csv_body(["touch_id", "ts", "user_id"], [["t1", "2026-01-01T00:00:00Z", "u1"]])
        first = it.submit("touchpoints", body, "text/csv", None, "k-1", "key_a")
        again = it.submit("touchpoints", gzip.compress(body), "text/csv", "gzip", "k-1", "key_a")
        assert again == {**first, "replayed": True}
        assert it.lookup(first["request_id"]) == first
        with pytest.raises(IdempotencyConflict, match="different body") as info:
            it.submit(
                "touchpoints",
                body + b"t2,2026-01-01T00:00:00Z,u\n",
                "text/csv",
                None,
                "k-1",
                "key_a",
            )
        assert info.value.status == 422
        other = it.submit("touchpoints", body, "text/csv", None, "k-1", "key_b")  # another key
        assert not other["replayed"] and other["request_id"] != first["request_id"]
        assert other["status"] == "skipped"  # not a replay: the same content, skipped by ingest
        with pytest.raises(IdempotencyConflict, match="kind"):  # same body, another kind
            it.submit("conversions", body, "text/csv", None, "k-1", "key_a")
        with pytest.raises(UnreadableBody, match="Idempotency-Key"):
            it.submit("touchpoints", body, "text/csv", None, "has space", "key_a")
        logs = ws.con.execute("SELECT count(*) FROM ingest_log").fetchone()
        assert logs == (1,)
    finally:
        it.close()


def test_the_same_idempotency_key_sent_concurrently_ingests_once(ws: Workspace) -> None:
    it = Intake.for_workspace(ws, now=NOW)
    body = csv_body(["touch_id", "ts", "user_id"], [["t1", "2026-01-01T00:00:00Z", "u1"]])
    answers: list[dict[str, Any]] = []
    barrier = threading.Barrier(5)

    def client() -> None:
        barrier.wait()
        answers.append(it.submit("touchpoints", body, "text/csv", None, "same", "key_a"))

    threads = [threading.Thread(target=client) for _ in range(5)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    it.close()
    assert len({a["request_id"] for a in answers}) == 1
    assert sorted(a["replayed"] for a in answers) == [False, True, True, True, True]
    assert ws.con.execute("SELECT count(*) FROM api_requests").fetchone() == (1,)


def test_a_reingested_identical_body_is_skipped(ws: Workspace) -> None:
    it = Intake.for_workspace(ws, now=NOW)
    try:
        body = csv_body(["touch_id", "ts", "user_id"], [["t1", "2026-01-01T00:00:00Z", "u1"]])
        assert it.submit("touchpoints", body, "text/csv")["status"] == "ok"
        again = it.submit("touchpoints", body, "text/csv")
        assert again["status"] == "skipped" and "already ingested" in again["message"]
        assert (again["rows_loaded"], again["rows_already_present"]) == (0, 1)
    finally:
        it.close()


def test_writer_checkpoints_off_the_request_path(tmp_path: Path, monkeypatch: Any) -> None:
    """DuckDB's own checkpoint (inside a commit) is pushed out; the writer folds the WAL into
    the database once nothing is waiting, so no request pays for it."""
    import time as _time

    from signalloop import intake as mod

    monkeypatch.setattr(mod, "CHECKPOINT_MIN_BYTES", 0)
    monkeypatch.setattr(mod, "IDLE_SECONDS", 0.05)
    ws = Workspace(tmp_path / "w.duckdb")
    it = mod.Intake.for_workspace(ws)
    body = b"touch_id,ts,user_id\nt1,2026-01-01T10:00:00Z,u1\nt2,2026-01-01T11:00:00Z,u2\n"
    assert it.submit("touchpoints", body, "text/csv")["rows_loaded"] == 2
    threshold = ws.con.execute("SELECT current_setting('checkpoint_threshold')").fetchone()
    assert threshold == ("976.5 MiB",)  # WAL_CAP_BYTES, 1024 MB
    wal = tmp_path / "w.duckdb.wal"
    for _ in range(100):
        if not wal.exists() or wal.stat().st_size == 0:
            break
        _time.sleep(0.05)
    assert not wal.exists() or wal.stat().st_size == 0, "the idle writer did not checkpoint"
    it.close()
    assert ws.con.execute("SELECT count(*) FROM touchpoints").fetchone() == (2,)
    ws.close()
