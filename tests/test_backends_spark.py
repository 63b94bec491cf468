"""The same workspace on PySpark (a local session, Java 17): ingest, checks, the daily loop
(issue 14, item 4), against DuckDB, with the helpers of :mod:`tests.test_backends`.

A file of its own so that ``make test`` (one file per worker) runs it beside the PostgreSQL
half: each half takes several minutes. Missing Java or pyspark skips these tests with the
reason, except under ``CI=true``, where they fail.
"""

# ruff: noqa: F401, F811  (account and duck_loop are fixtures imported for this file's tests)
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from signalloop.backends import BackendWorkspace
from signalloop.contract import KINDS
from signalloop.store import Workspace

from .test_backends import (  # the fixtures are this module's too (built once per file)
    _checks_as_duckdb,
    _decisions,
    _first_difference,
    _ingest_all,
    _missing,
    _reingest,
    account,
    duck_loop,
)

# -- PySpark workspace --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def spark_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``pyspark://local`` with a warehouse of its own (one Spark session per process)."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        _missing("Java (17) is not installed")
    try:
        import pyspark
    except ImportError:
        _missing("pyspark is not installed (the pyspark extra)")
    return f"pyspark://local?warehouse={tmp_path_factory.mktemp('warehouse')}"


@pytest.fixture(scope="module")
def spark_ws(spark_url: str, account: dict[str, Any]) -> Iterator[Workspace]:
    """The account ingested into a PySpark workspace (asserting every ingest went through)."""
    with Workspace(spark_url) as ws:
        assert isinstance(ws, BackendWorkspace) and ws.backend == "pyspark"
        _ingest_all(ws, account)
        yield ws


@pytest.mark.slow
def test_pyspark_workspace_ingests_as_duckdb(spark_ws: Workspace) -> None:
    """The counts and quarantine are compared in ``spark_ws``; the rows went to Spark as
    Parquet files in hidden staging folders of the warehouse, each removed with its view."""
    assert isinstance(spark_ws, BackendWorkspace) and spark_ws.backend == "pyspark"
    assert not list(Path(spark_ws.url.warehouse).glob(".staging-*"))
    session = spark_ws.ibis._session
    assert not [t for t in session.catalog.listTables() if t.name.startswith("_signalloop_")]


def test_spark_memory_from_the_environment_or_a_quarter_of_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from signalloop.backends import ENV_SPARK_MEMORY, spark_memory

    monkeypatch.setenv(ENV_SPARK_MEMORY, "3g")
    assert spark_memory() == "3g"
    monkeypatch.delenv(ENV_SPARK_MEMORY)
    quarter = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4 // 1024**2
    assert spark_memory() == f"{min(max(quarter, 1024), 8192)}m"


@pytest.mark.slow
def test_pyspark_checks_as_duckdb(spark_ws: Workspace, account: dict[str, Any]) -> None:
    _checks_as_duckdb(spark_ws, account)


@pytest.mark.slow
def test_pyspark_workspace_runs_the_daily_loop_as_duckdb(
    spark_url: str, account: dict[str, Any], duck_loop: Any, tmp_path: Path
) -> None:
    """The whole ``run`` on PySpark decides what it decides on DuckDB. In a process of its own:
    this one's Spark session holds another warehouse (one session per process)."""
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        _missing("Java (17) is not installed")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for kind, path in account["paths"].items():
        shutil.copy(path, inbox / f"{kind}.csv")
    code = (
        "import json, sys, datetime; from signalloop.store import Workspace; "
        "from signalloop.run import run; "
        "ws = Workspace(sys.argv[1]); "
        "doc = run(ws, inbox=sys.argv[2], out_dir=sys.argv[3], "
        "as_of=datetime.date.fromisoformat(sys.argv[4])); ws.close(); "
        "open(sys.argv[5], 'w').write(json.dumps(doc, default=str))"
    )
    url = f"pyspark://local?warehouse={tmp_path / 'warehouse'}"
    as_of = account["report"].as_of.isoformat()
    out = tmp_path / "run.json"
    done = subprocess.run(
        [sys.executable, "-c", code, url, str(inbox), str(tmp_path / "report"), as_of, str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=tmp_path,  # its local records go to ./signalloop-state, beside the warehouse
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(out.read_text())
    a, b = _decisions(doc), _decisions(json.loads(json.dumps(duck_loop, default=str)))
    assert a == b, _first_difference(a, b)
    assert (tmp_path / "report" / "report.html").exists()


@pytest.mark.slow
def test_pyspark_reingest_and_reopen(
    spark_ws: Workspace, spark_url: str, account: dict[str, Any], tmp_path: Path
) -> None:
    _reingest(spark_ws, account, tmp_path)
    # another process finds the tables in the warehouse (a local catalogue lives in memory)
    code = (
        "import json, sys; from signalloop.store import Workspace; "
        "print(json.dumps(Workspace(sys.argv[1], read_only=True).counts()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, spark_url], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts == account["counts"] | {"changes": account["counts"]["changes"] + 1}


@pytest.mark.slow
def test_pyspark_reopens_a_warehouse_whose_tables_are_empty(spark_url: str, tmp_path: Path) -> None:
    """A table that never got a row has a folder without a Parquet file to infer a schema
    from: another process still opens the workspace (it failed with UNABLE_TO_INFER_SCHEMA on
    the next day's run of a workspace whose quarantine was empty), and rewrites the
    exclusions of a table it registered from its folder (LOCATION_ALREADY_EXISTS before)."""
    url = f"pyspark://local?warehouse={tmp_path / 'warehouse'}"
    code = (
        "import datetime, json, sys; from signalloop.store import Workspace; "
        "from signalloop.backends import save_exclusions; "
        "ws = Workspace(sys.argv[1]); "
        "ex = [{'campaign_id': 'c1', 'start': '2026-01-01', 'end': '2026-01-02', 'reason': 'r'}]; "
        "save_exclusions(ws, ex if sys.argv[2] == 'reopen' else [], datetime.date(2026, 1, 3)); "
        "n = ws.table('exclusions').count().execute(); "
        "print(json.dumps(ws.counts() | {'exclusions': int(n)})); ws.close()"
    )
    for mode in ("create", "reopen"):
        done = subprocess.run(
            [sys.executable, "-c", code, url, mode],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        counts = json.loads(done.stdout.strip().splitlines()[-1])
        assert counts.pop("exclusions") == (mode == "reopen")
        assert set(counts) == set(KINDS) and not any(counts.values())
