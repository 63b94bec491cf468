"""API keys: shown once, stored hashed, checked by scope, bound to their workspace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from signalloop.cli import app
from signalloop.errors import UsageError
from signalloop.keys import check, create_key, list_keys, parse_scopes, revoke
from signalloop.store import Workspace


def test_a_key_works_for_its_scopes_only_and_is_stored_hashed(tmp_path: Path) -> None:
    with Workspace(tmp_path / "a.duckdb") as ws:
        key = create_key(ws, "maria", "ingest,read")
        assert key.token is not None and key.token.startswith(f"sl_{key.key_id}_")
        assert check(ws, key.token, "ingest") is not None
        assert check(ws, key.token, "approve") is None
        assert check(ws, key.token[:-1] + ("A" if key.token[-1] != "A" else "B"), "read") is None
        secret = key.token.removeprefix(f"sl_{key.key_id}_")  # (it may hold "_" itself)
        assert len(secret) >= 40
        dump = json.dumps(ws.con.execute("SELECT * FROM api_keys").fetchall(), default=str)
        assert secret not in dump and key.token not in dump
        assert list_keys(ws)[0].last_used_at is not None
        assert all(k.token is None for k in list_keys(ws))


def test_a_revoked_key_stops_and_another_workspace_never_knew_it(tmp_path: Path) -> None:
    with Workspace(tmp_path / "a.duckdb") as a, Workspace(tmp_path / "b.duckdb") as b:
        key = create_key(a, "etl", ["ingest"])
        assert check(b, key.token, "ingest") is None
        revoke(a, key.key_id)
        assert check(a, key.token, "ingest") is None
        with pytest.raises(UsageError, match="no key"):
            revoke(b, key.key_id)


def test_bad_scopes_and_names_are_usage_errors(tmp_path: Path) -> None:
    assert parse_scopes(["approve", "read"]) == ("read", "approve")
    with Workspace(tmp_path / "a.duckdb") as ws:
        with pytest.raises(UsageError, match="scopes"):
            create_key(ws, "x", "read,admin")
        with pytest.raises(UsageError, match="name"):
            create_key(ws, "x;DROP", "read")


def test_cli_prints_the_token_once(tmp_path: Path) -> None:
    db = str(tmp_path / "w.duckdb")
    runner = CliRunner()
    made = runner.invoke(
        app, ["keys", "create", "--workspace", db, "--name", "maria", "--scopes", "read,approve"]
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    with Workspace(db) as ws:
        assert check(ws, token, "approve") is not None
    listed = runner.invoke(app, ["keys", "list", "--db", db, "--json"])
    doc = json.loads(listed.stdout)
    assert doc[0]["name"] == "maria" and "token" not in doc[0] and token not in listed.stdout
    gone = runner.invoke(app, ["keys", "revoke", doc[0]["key_id"], "--db", db])
    assert gone.exit_code == 0
    bad = runner.invoke(app, ["keys", "create", "--db", db, "--name", "x", "--scopes", "root"])
    assert bad.exit_code == 2 and "scopes" in bad.output
