"""The ingest API over HTTP (FastAPI TestClient): statuses, answers, keys and workspaces."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from signalloop.keys import create_key
from signalloop.store import Workspace
from signalloop.web.app import create_app
from signalloop.web.registry import Registry

HEADER = "touch_id,ts,user_id,campaign_id\n"
GOOD = HEADER + "t1,2026-01-01T10:00:00Z,u1,c1\nt2,2026-01-01T11:00:00Z,u2,c1\n"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """Two workspaces (a, b) served from one folder, and tokens by role."""
    tokens: dict[str, str] = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        with Workspace(tmp_path / name / "signalloop.duckdb") as ws:
            for role, scopes in (("pipe", "ingest"), ("reader", "read"), ("both", "ingest,read")):
                key = create_key(ws, role, scopes)
                assert key.token is not None
                tokens[f"{name}_{role}"] = key.token
    (tmp_path / "a" / "signalloop.toml").write_text("[serve]\nmax_body_mb = 0.01\n")
    registry = Registry.discover(workspaces=tmp_path)
    with TestClient(create_app(registry, schedule=False)) as client:
        yield client, tokens


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def post(
    client: TestClient, token: str, body: bytes | str, ctype: str = "text/csv", **headers: str
) -> tuple[int, dict[str, object], dict[str, str]]:
    data = body.encode() if isinstance(body, str) else body
    r = client.post(
        "/api/v1/touchpoints",
        content=data,
        headers=auth(token, **{"Content-Type": ctype}, **headers),
    )
    return r.status_code, r.json(), dict(r.headers)


def test_a_batch_is_answered_with_its_counts(served: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = served
    body = GOOD + "t3,yesterday,u3,c1\nt1,2026-01-01T10:00:00Z,u1,c1\n"
    status, doc, _ = post(client, tokens["a_pipe"], body)
    assert status == 200
    assert (doc["rows_received"], doc["rows_loaded"]) == (4, 2)
    assert (doc["rows_quarantined"], doc["rows_already_present"]) == (1, 1)
    assert doc["quarantine_reasons"] == {"bad_timestamp": 1}
    assert doc["quarantined"] == [
        {
            "line": 4,
            "column": "ts",
            "code": "bad_timestamp",
            "reason": "not a timestamp (expected ISO 8601): 'yesterday'",
        }
    ]
    status, again, _ = post(client, tokens["b_both"], body.replace("t1", "t9"))
    assert status == 200 and again["rows_loaded"] == 2  # workspace b had none of them
    assert (again["rows_existing"], again["rows_folded"]) == (0, 1)
    r = client.get(f"/api/v1/ingest/{doc['request_id']}", headers=auth(tokens["a_reader"]))
    assert r.status_code == 200 and r.json() == doc


def test_jsonl_and_gzip_bodies(served: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = served
    lines = [
        {"touch_id": "j1", "ts": "2026-01-01T10:00:00Z", "user_id": "u1", "extra": {"a": 1}},
        {"touch_id": "j2", "ts": "2999-01-01T10:00:00Z", "user_id": "u1"},
    ]
    body = gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode())
    status, doc, _ = post(
        client, tokens["b_pipe"], body, "application/x-ndjson", **{"Content-Encoding": "gzip"}
    )
    assert status == 200
    assert (doc["rows_loaded"], doc["quarantine_reasons"]) == (1, {"future": 1})
    assert doc["quarantined"][0]["line"] == 2  # JSON lines: record n is line n


def test_idempotency_key_replays(served: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = served
    key = {"Idempotency-Key": "batch-0001"}
    s1, first, h1 = post(client, tokens["b_pipe"], GOOD, **key)
    s2, second, h2 = post(client, tokens["b_pipe"], GOOD, **key)
    assert (s1, s2) == (200, 200)
    assert "idempotent-replayed" not in h1 and h2["idempotent-replayed"] == "true"
    assert second == {**first, "replayed": True}
    s3, conflict, _ = post(client, tokens["b_pipe"], GOOD + "t5,2026-01-01T10:00:00Z,u,c\n", **key)
    assert s3 == 422 and "different body" in str(conflict["error"])


@pytest.mark.parametrize(
    ("ctype", "body", "status", "needle"),
    [
        ("application/json", GOOD, 415, "text/csv"),
        ("text/csv", HEADER + 't1,"2026-01-01,u1,c1\n', 422, "unterminated quote"),
        ("application/jsonl", '{"touch_id": 1}\n{oops}\n', 422, "not valid JSON"),
        ("application/x-parquet", "PAR1 but not really", 422, "cannot read as Parquet"),
    ],
)
def test_refusals_name_the_problem(
    served: tuple[TestClient, dict[str, str]], ctype: str, body: str, status: int, needle: str
) -> None:
    client, tokens = served
    got, doc, _ = post(client, tokens["b_pipe"], body, ctype)
    assert got == status and needle in str(doc["error"])
    if status == 422 and "Parquet" not in needle:
        assert doc["line"] == 2
    assert "/tmp" not in str(doc["error"]) and "api-" not in str(doc["error"])  # no staging path


def test_a_missing_column_is_422_naming_it(served: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = served
    status, doc, _ = post(client, tokens["b_pipe"], "touch_id,user_id\nt1,u1\n")
    assert status == 422 and "'ts'" in str(doc["error"]) and doc["line"] == 1
    assert "/tmp" not in str(doc["error"]) and "api-" not in str(doc["error"])  # no staging path


def test_a_full_disk_is_507_rolled_back_and_sent_again(
    served: tuple[TestClient, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store's "No space left on device" while landing a batch: 507 with what to do, no
    traceback in the log, nothing landed; the same body sent again once there is room lands."""
    import duckdb

    from signalloop import ingest

    served_client, tokens = served
    # (as a server answers: the test client would otherwise raise what the handler answered)
    client = TestClient(served_client.app, raise_server_exceptions=False)
    land = ingest._land

    def full(*args: object, **kwargs: object) -> object:
        raise duckdb.IOException('IO Error: Could not write file "x.wal": No space left on device')

    monkeypatch.setattr(ingest, "_land", full)
    status, doc, _ = post(client, tokens["b_pipe"], GOOD)
    assert status == 507
    assert "no space left on the disk" in str(doc["error"]) and "send it again" in str(doc["error"])
    assert "Traceback" not in caplog.text
    monkeypatch.setattr(ingest, "_land", land)
    status, doc, _ = post(client, tokens["b_pipe"], GOOD)
    assert status == 200 and doc["rows_loaded"] == 2


def test_over_the_limit_is_413_naming_it(served: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = served  # workspace a: max_body_mb = 0.01 (10,485 bytes)
    big = HEADER + "".join(f"t{i},2026-01-01T10:00:00Z,u1,c1\n" for i in range(1000))
    status, doc, _ = post(client, tokens["a_pipe"], big)
    assert status == 413 and "10,485" in str(doc["error"])
    status, doc, _ = post(
        client, tokens["a_pipe"], gzip.compress(big.encode()), **{"Content-Encoding": "gzip"}
    )
    assert status == 413 and "decompresses" in str(doc["error"])
    status, _, _ = post(client, tokens["b_pipe"], big)  # workspace b: the default 50 MB
    assert status == 200


def test_unknown_kind_is_404_listing_the_kinds(served: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = served
    r = client.post(
        "/api/v1/clicks",
        content=GOOD,
        headers=auth(tokens["a_pipe"], **{"Content-Type": "text/csv"}),
    )
    assert r.status_code == 404 and "touchpoints" in r.json()["error"]


def test_keys_scopes_and_workspaces(served: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = served
    r = client.post("/api/v1/touchpoints", content=GOOD, headers={"Content-Type": "text/csv"})
    assert r.status_code == 401
    r = client.post(
        "/api/v1/touchpoints",
        content=GOOD,
        headers=auth("sl_abcdefghij_" + "x" * 43, **{"Content-Type": "text/csv"}),
    )
    assert r.status_code == 401
    status, doc, _ = post(client, tokens["a_reader"], GOOD)
    assert status == 403 and "ingest" in str(doc["error"])
    # a key writes into its own workspace only: a's batch is not in b
    s, sent, _ = post(client, tokens["a_pipe"], GOOD)
    assert s == 200 and sent["rows_loaded"] == 2
    url = f"/api/v1/ingest/{sent['request_id']}"
    assert client.get(url, headers=auth(tokens["b_reader"])).status_code == 404
    assert client.get(url, headers=auth(tokens["a_pipe"])).status_code == 403  # no read scope
    assert client.get(url, headers=auth(tokens["a_reader"])).status_code == 200
    s, in_b, _ = post(client, tokens["b_pipe"], GOOD)
    assert s == 200 and in_b["rows_loaded"] == 2  # still new in b
