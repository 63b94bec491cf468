"""The same workspace on PostgreSQL and PySpark: URLs, ingest, checks (issue 14, item 4).

A PostgreSQL server is started for the session (``initdb`` into a temporary folder, ``pg_ctl``
on a free loopback port, stopped at the end); the PySpark half is ``test_backends_spark.py``.
Missing binaries skip these tests with the reason, except under ``CI=true``, where they fail.

``attribution.refresh_attribution`` and ``rollups.refresh`` answer ``False`` on a non-DuckDB
workspace (their stored tables are DuckDB-only for now): their callers compute the same thing
live.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from signalloop import backends
from signalloop.backends import EXCLUSIONS_SCHEMA, BackendWorkspace, parse_url
from signalloop.checks.engine import load_exclusions, run_checks
from signalloop.contract import KINDS
from signalloop.errors import UsageError
from signalloop.store import Workspace

from .conftest import shared_data, simulated_workspace

IN_CI = os.environ.get("CI", "").lower() == "true"
#: The account both backends are compared on: faults that hold gates, make exclusions,
#: duplicates, stage regressions and quarantined rows.
FAULTS = (
    "tracking_outage@c02:22-27",
    "duplicate_events@c01:5-12",
    "stage_overwrite@c03:10-30",
    "utm_mess@c03:5-35",
    "export_glitches@*:0-39",
)


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {what}: the backend conformance must run in CI")
    pytest.skip(f"{what} (not CI: skipped)")


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The DuckDB reference: a 40-day, 3-campaign account with :data:`FAULTS`, ingested,
    its checks and exclusions."""
    folder = tmp_path_factory.mktemp("account")
    ws, _sim, paths = simulated_workspace(folder, days=40, campaigns=3, seed=11, faults=FAULTS)
    with ws:
        report = run_checks(ws)
        yield {
            "paths": paths,
            "counts": ws.counts(),
            "quarantine": _quarantine_codes(ws),
            "report": report,
            "exclusions": load_exclusions(ws),
        }


def _quarantine_codes(ws: Workspace) -> dict[tuple[str, str], int]:
    q = ws.table("quarantine")
    rows = q.group_by("kind", "code").aggregate(n=q.count()).to_pyarrow().to_pylist()
    return {(r["kind"], r["code"]): int(r["n"]) for r in rows}


def _comparable(report: Any) -> dict[str, Any]:
    """The report without timings; ``fatigued_creatives`` by creative (``creative_freshness``
    lists them in the unordered order of a group-by: the one-line ``order_by`` is reported)."""
    doc = report.to_dict()
    doc.pop("timings")
    for c in doc["campaigns"]:
        ev = (c["signal_environment"].get("creative_freshness") or {}).get("evidence") or {}
        ev["fatigued_creatives"] = sorted(
            ev.get("fatigued_creatives", []), key=lambda f: f["creative_id"]
        )
    for f in doc["findings"]:
        if "fatigued_creatives" in f["evidence"]:
            f["evidence"]["fatigued_creatives"] = sorted(
                f["evidence"]["fatigued_creatives"], key=lambda f: f["creative_id"]
            )
    return dict(doc)


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    """Where two JSON-like documents first differ, and how (the assertion's message)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{where}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{where}[{i}]")
    return f"{where}: {a!r:.300} != {b!r:.300}"


# -- PostgreSQL ---------------------------------------------------------------------------------


@dataclass
class Postgres:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str, *, with_password: bool = False) -> str:
        who = f"{self.user}:{self.password}" if with_password else self.user
        return f"postgres://{who}@{self.host}:{self.port}/{database}"


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).is_file():
            return str(folder / name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server of its own on a free loopback port, password-protected."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        _missing("PostgreSQL's initdb/pg_ctl are not installed (make postgres installs them)")
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    assert initdb is not None and pg_ctl is not None
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="signalloop-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            _missing("running as root and there is no postgres user to run the server as")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    password = secrets.token_urlsafe(16)
    pwfile = folder / "pw"
    pwfile.write_text(password + "\n")
    if as_user:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    data, port = folder / "data", _free_port()
    subprocess.run(
        [
            *as_user,
            initdb,
            "-D",
            str(data),
            "-U",
            "signalloop",
            "--auth=scram-sha-256",
            "--pwfile",
            str(pwfile),
            "-E",
            "UTF8",
            "--locale=C",
        ],
        check=True,
        capture_output=True,
    )
    pwfile.unlink()
    opts = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", opts, "-l", str(folder / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield Postgres("127.0.0.1", port, "signalloop", password)
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)


def _create_database(pg: Postgres, name: str) -> None:
    import psycopg

    with psycopg.connect(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        password=pg.password,
        dbname="postgres",
        autocommit=True,
    ) as con:
        con.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture
def pg_env(postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> Postgres:
    """The server, its password in ``$PGPASSWORD`` (as a user would give it)."""
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    return postgres


# -- URLs and errors (no server) ----------------------------------------------------------------


def test_duckdb_urls_open_the_file_as_today(tmp_path: Path) -> None:
    target = tmp_path / "ws.duckdb"
    with Workspace(f"duckdb://{target}") as ws:
        assert type(ws) is Workspace and ws.backend == "duckdb" and ws.path == str(target)
        assert ws.counts()["spend"] == 0
    assert target.is_file()
    with Workspace(str(target), read_only=True) as ws:
        assert ws.path == str(target)


def test_postgres_url_masks_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    u = parse_url("postgresql://ana:p%40ss@db.example:6543/growth")
    assert (u.backend, u.host, u.port, u.user, u.password, u.database) == (
        "postgres",
        "db.example",
        6543,
        "ana",
        "p@ss",
        "growth",
    )
    assert "p@ss" not in u.masked and "p@ss" not in repr(u) and ":***@" in u.masked
    monkeypatch.setenv("PGPASSWORD", "from-env")
    u = parse_url("postgres://ana@db.example/growth")
    assert u.password == "from-env" and u.port == 5432
    assert "from-env" not in u.masked


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://ana:topsecret@h/db", "expected a path, duckdb:///PATH"),
        ("postgres://ana:topsecret@h", "expected postgres://USER@HOST:PORT/DATABASE"),
        ("postgres://ana:topsecret@h:notaport/db", "expected a path, duckdb:///PATH"),
        ("postgres://ana:topsecret@h/db?sslmode=x", "expected postgres://USER@HOST:PORT"),
        ("pyspark://cluster", "expected pyspark://local"),
        ("pyspark://local?cores=8", "expected pyspark://local"),
    ],
)
def test_bad_urls_say_what_was_expected_and_hide_the_password(url: str, expected: str) -> None:
    with pytest.raises(UsageError) as err:
        Workspace(url)
    assert expected in str(err.value) and "got " in str(err.value)
    assert "topsecret" not in str(err.value)


def test_unreachable_server_is_a_usage_error_without_the_password() -> None:
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    url = f"postgres://ana:topsecret@127.0.0.1:{_free_port()}/nothing"
    with pytest.raises(UsageError) as err:
        Workspace(url)
    msg = str(err.value)
    assert "expected a reachable PostgreSQL server" in msg
    assert "postgres://ana:***@127.0.0.1" in msg and "topsecret" not in msg


def test_cli_exits_2_on_an_unreachable_server_and_never_prints_the_password() -> None:
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    url = f"postgres://ana:topsecret@127.0.0.1:{_free_port()}/nothing"
    done = subprocess.run(
        [sys.executable, "-m", "signalloop", "check", "--db", url, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "expected a reachable PostgreSQL server" in done.stderr
    assert "topsecret" not in done.stdout + done.stderr


# -- PostgreSQL workspace -----------------------------------------------------------------------


def test_postgres_workspace_ingests_and_checks_as_duckdb(
    pg_env: Postgres, account: dict[str, Any], tmp_path: Path
) -> None:
    _create_database(pg_env, "conformance")
    with Workspace(pg_env.url("conformance")) as ws:
        assert isinstance(ws, BackendWorkspace) and ws.backend == "postgres"
        assert pg_env.password not in ws.path
        _conformance(ws, account, tmp_path)


def test_postgres_workspace_reopens_with_its_rows(
    pg_env: Postgres, account: dict[str, Any]
) -> None:
    _create_database(pg_env, "reopen")
    url = pg_env.url("reopen", with_password=True)
    with Workspace(url) as ws:
        backends.ingest_file(ws, "spend", account["paths"]["spend"])
    with Workspace(url, read_only=True) as ws:
        assert ws.counts()["spend"] == account["counts"]["spend"]
        with pytest.raises(UsageError, match="DuckDB SQL") as err:
            ws.con.execute("SELECT 1")
        assert pg_env.password not in str(err.value)


def test_postgres_holds_the_attribution_until_something_is_ingested(
    pg_env: Postgres, account: dict[str, Any], tmp_path: Path
) -> None:
    """Not stored on a backend, the attributed conversions and a cutoff's record campaigns
    are computed once into temporary tables, equal to attributing afresh, and let go (the
    tables dropped) when an ingest changes the data."""
    from datetime import datetime

    import pandas as pd

    from signalloop.attribution import attribute, attributed_conversions, crm_record_campaigns

    _create_database(pg_env, "held")
    with Workspace(pg_env.url("held")) as ws:
        for kind in ("touchpoints", "conversions", "crm"):
            backends.ingest_file(ws, kind, account["paths"][kind])
        first = attributed_conversions(ws)
        assert attributed_conversions(ws) is first
        cut = datetime(2026, 2, 1)
        rec = crm_record_campaigns(ws, cut)
        assert crm_record_campaigns(ws, cut) is rec
        held = {t for t in ws.ibis.list_tables() if t.startswith("_signalloop_held_")}
        assert len(held) == 2
        key = ["conversion_id"]
        fresh = attribute(ws, ws.table("conversions")).to_pandas().sort_values(key)
        got = first.to_pandas().sort_values(key)
        cols = [c for c in got.columns if c != "attrs"]  # JSON: text held, objects fresh
        pd.testing.assert_frame_equal(
            got[cols].reset_index(drop=True), fresh[cols].reset_index(drop=True)
        )

        backends.ingest_file(ws, "spend", account["paths"]["spend"])
        assert attributed_conversions(ws) is not first
        now = {t for t in ws.ibis.list_tables() if t.startswith("_signalloop_held_")}
        assert len(now) == 1 and not now & held


def _loop(
    db: str,
    paths: dict[str, Path],
    as_of: date | None,
    out: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """``signalloop run`` as of ``as_of`` (``None``: the last day with data) on a fresh
    workspace ``db``, with the simulated exports ``paths`` as its inbox."""
    from signalloop.run import run

    inbox = out / "inbox"
    inbox.mkdir(parents=True)
    for kind, path in paths.items():
        if kind != "truth":
            shutil.copy(path, inbox / f"{kind}.csv")
    monkeypatch.chdir(out)  # a backend's local records go to ./signalloop-state
    with Workspace(db) as ws:
        return run(ws, inbox=inbox, out_dir=out / "report", as_of=as_of)


def _decisions(doc: dict[str, Any]) -> dict[str, Any]:
    """What a run decided and why, without timings, paths and fitted-model internals."""
    nowcast = doc["state"]["nowcast"]
    return {
        "gates": [(c["campaign_id"], c["gate"]) for c in doc["checks"]["campaigns"]],
        "findings": sorted(
            (f["check"], f.get("campaign_id") or "") for f in doc["checks"]["findings"]
        ),
        "nowcast": [
            (c["campaign_id"], c.get("expected_conversions"), c.get("lower"), c.get("upper"))
            for c in nowcast["campaigns"]
        ],
        "phase": [(e["entity_id"], e["state"]) for e in doc["state"]["phase"]["entities"]],
        "fatigue": sorted(
            (c["creative_id"], c["status"]) for c in doc["state"]["fatigue"]["creatives"]
        ),
        "models": [(m["outcome"], m["status"]) for m in doc["models"]],
        "allocation": [(a["campaign_id"], a["recommended"]) for a in doc["allocation"]["arms"]],
        "diagnoses": sorted(
            (d["failure_type"], str(d["campaign_id"])) for d in doc["diagnosis"]["diagnoses"]
        ),
        "lens": doc["lens"]["verdict"],
        "history": [(h["as_of"], h["source"]) for h in doc["history"]],
    }


@pytest.fixture(scope="module")
def duck_loop(account: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The reference ``run`` of the account on a fresh DuckDB workspace."""
    out = tmp_path_factory.mktemp("duck-loop")
    with pytest.MonkeyPatch.context() as mp:
        return _loop(str(out / "ws.duckdb"), account["paths"], account["report"].as_of, out, mp)


@pytest.mark.slow
def test_postgres_workspace_runs_the_daily_loop_as_duckdb(
    pg_env: Postgres,
    account: dict[str, Any],
    duck_loop: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole ``run`` (ingest, checks, state, models, allocation, diagnose, lens, history,
    report) on PostgreSQL decides what it decides on DuckDB; signalloop's own records and
    models stay in the local state folder."""
    _create_database(pg_env, "loop")
    as_of = account["report"].as_of
    remote = _loop(pg_env.url("loop"), account["paths"], as_of, tmp_path / "pg", monkeypatch)
    a, b = _decisions(remote), _decisions(duck_loop)
    assert a == b, _first_difference(a, b)
    # nothing of the aggregates is stored there: each is computed where it is read
    agg = remote["aggregates"]
    assert agg["attribution"] == {"refresh": "live"}
    assert {r["refresh"] for r in agg["rollups"].values()} == {"live"}
    state = tmp_path / "pg" / "signalloop-state"
    assert sorted(p.name for p in state.iterdir())[:1] == [
        f"postgres-{pg_env.host}-{pg_env.port}-loop.duckdb"
    ]
    assert (tmp_path / "pg" / "report" / "report.html").exists()


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["spend", "spend_conversions", "crm"])
def test_postgres_runs_partial_accounts_as_duckdb(
    shape: str, pg_env: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A platform export alone, spend with orders but no click log, and the same with the
    CRM: the loop on PostgreSQL decides what it decides on DuckDB (the paths without
    touchpoints, the conversion-day nowcast, the CRM path and the capabilities it says it
    could not use)."""
    _ws, _sim, paths = simulated_workspace(
        tmp_path / "sim",
        days=30,
        campaigns=3,
        seed=5,
        faults=("tracking_outage@c02:18-22",),
        shape=shape,
        click_ts=False,
        db=":memory:",
    )
    _ws.close()
    duck = _loop(str(tmp_path / "duck" / "ws.duckdb"), paths, None, tmp_path / "duck", monkeypatch)
    _create_database(pg_env, f"shape_{shape}")
    remote = _loop(pg_env.url(f"shape_{shape}"), paths, None, tmp_path / "pg", monkeypatch)
    a, b = _decisions(remote), _decisions(duck)
    assert a == b, _first_difference(a, b)
    assert remote["learnable"] == duck["learnable"]
    assert b["nowcast"], f"{shape}: no nowcast rows to compare"


@pytest.mark.slow
def test_postgres_runs_the_real_meta_export_as_duckdb(
    pg_env: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The public Meta Ads export (``facebook_ads_kag``, one reporting period, the platform's
    own conversion counts), ingested with the ``meta_ads`` profile and run: the same
    decisions and the same quarantine on PostgreSQL as on DuckDB."""
    from signalloop.ingest import ingest_file
    from signalloop.run import run

    kag = shared_data("facebook_ads_kag", "KAG_conversion_data.csv")
    monkeypatch.chdir(tmp_path)
    _create_database(pg_env, "kag")
    docs, quarantined = [], []
    for name, db in (("duck", str(tmp_path / "kag.duckdb")), ("pg", pg_env.url("kag"))):
        with Workspace(db) as ws:
            ingest_file(ws, "spend", kag, profile="meta_ads", report_date=date(2017, 8, 30))
            docs.append(run(ws, out_dir=tmp_path / name))
            quarantined.append(_quarantine_codes(ws))
    a, b = _decisions(docs[1]), _decisions(docs[0])
    assert a == b, _first_difference(a, b)
    assert docs[1]["learnable"] == docs[0]["learnable"]
    assert quarantined[1] == quarantined[0]
    assert [c for c, _ in b["allocation"]] == ["1178", "916", "936"]


# -- the conformance both backends pass ----------------------------------------------------------


def _conformance(ws: Workspace, account: dict[str, Any], tmp_path: Path) -> None:
    """Ingest the account's exports into ``ws`` and compare everything with DuckDB's."""
    _ingest_all(ws, account)
    _checks_as_duckdb(ws, account)
    _reingest(ws, account, tmp_path)


def _ingest_all(ws: Workspace, account: dict[str, Any]) -> None:
    paths = account["paths"]
    for kind in KINDS:
        if kind in paths:
            r = backends.ingest_file(ws, kind, paths[kind])
            assert r.status == "ok" and r.rows_existing == 0, r
    assert ws.counts() == account["counts"]
    assert _quarantine_codes(ws) == account["quarantine"]


def _checks_as_duckdb(ws: Workspace, account: dict[str, Any]) -> None:
    """The checks: the same findings, gates, environment and exclusions as on DuckDB."""
    reference = account["report"]
    got = run_checks(ws, as_of=reference.as_of, store_exclusions=False)
    a, b = _comparable(got), _comparable(reference)
    assert a == b, _first_difference(a, b)
    assert got.held == reference.held
    backends.save_exclusions(ws, got.exclusions, got.as_of)
    assert load_exclusions(ws) == account["exclusions"] != []
    # a manual exclusion survives the checks' replacement of theirs
    manual = {
        "campaign_id": "c01",
        "start": date(2026, 1, 2),
        "end": None,
        "reason": "by hand",
        "source": "manual",
        "as_of": reference.as_of,
        "created_at": None,
    }
    backends.append_rows(
        ws.ibis, "exclusions", pa.Table.from_pylist([manual], EXCLUSIONS_SCHEMA.to_pyarrow())
    )
    backends.save_exclusions(ws, got.exclusions, got.as_of)
    stored = load_exclusions(ws)
    assert [e["source"] for e in stored].count("manual") == 1
    assert [e for e in stored if e["source"] == "check"] == account["exclusions"]


def _reingest(ws: Workspace, account: dict[str, Any], tmp_path: Path) -> None:
    """The same file again is skipped; a file with old rows and one new adds only the new."""
    paths = account["paths"]
    again = backends.ingest_file(ws, "spend", paths["spend"])
    assert again.status == "skipped" and again.rows_loaded == 0
    lines = paths["changes"].read_text(encoding="utf-8").splitlines(keepends=True)
    header = lines[0].rstrip("\r\n").split(",")
    new_row = dict.fromkeys(header, "") | {
        "ts": f"{account['report'].as_of.isoformat()}T10:00:00Z",
        "level": "campaign",
        "entity_id": "c01",
        "field": "budget",
        "new_value": "123456",
        "actor": "human",
    }
    extra = tmp_path / "changes_more.csv"
    extra.write_text("".join(lines) + ",".join(new_row[h] for h in header) + "\n")
    more = backends.ingest_file(ws, "changes", extra)
    assert (more.status, more.rows_loaded) == ("ok", 1)
    assert more.rows_existing == account["counts"]["changes"]
    assert ws.counts()["changes"] == account["counts"]["changes"] + 1
    log = ws.table("ingest_log")
    ids = log.order_by("ingest_id").ingest_id.to_pyarrow().to_pylist()
    assert ids == list(range(1, len(ids) + 1))
    last = log.filter(log.ingest_id == ids[-1]).to_pyarrow().to_pylist()[0]
    assert (last["rows_loaded"], last["rows_existing"]) == (1, more.rows_existing)
