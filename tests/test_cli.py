"""The command line as a user meets it: real processes, exit codes, stdout JSON, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import shared_data, write_csv


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signalloop", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def assert_no_traceback(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr


def test_malformed_file_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "broken.csv"
    f.write_text('touch_id,ts,user_id\nt1,2026-01-01,u1\nt2,2026-01-01,u2\nt3,"2026-01-01,u3\n')
    p = run("ingest", "touchpoints", str(f), "--db", str(tmp_path / "w.duckdb"))
    assert p.returncode == 2
    assert_no_traceback(p)
    assert "broken.csv" in p.stderr and "line 4" in p.stderr and "unterminated quote" in p.stderr
    assert p.stdout == ""


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    db = str(tmp_path / "w.duckdb")
    for args in (
        ("ingest", "spendz", "x.csv", "--db", db),
        ("ingest", "spend", str(tmp_path / "missing.csv"), "--db", db),
        ("ingest", "spend", "x.csv", "--profile", "tiktok", "--db", db),
        ("ingest", "spend", "x.csv", "--date", "30/08/2017", "--db", db),
        ("simulate", "--out", str(tmp_path / "s"), "--fault", "meteor@c01:1-2"),
        ("quarantine", "--db", str(tmp_path / "nowhere.duckdb")),
        ("nonsense",),
    ):
        p = run(*args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert_no_traceback(p)


def test_ingest_json_is_one_document_and_quarantine_lists_rows(tmp_path: Path) -> None:
    db = str(tmp_path / "w.duckdb")
    f = write_csv(
        tmp_path / "spend.csv",
        ["date", "platform", "campaign_id", "impressions", "clicks", "spend"],
        [["2026-01-01", "meta", "c1", 100, 3, 1.5], ["2026-01-01", "meta", "c2", 100, 300, 1.5]],
    )
    p = run("ingest", "spend", str(f), "--db", db, "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    (res,) = doc["files"]
    assert (res["rows_loaded"], res["rows_quarantined"]) == (1, 1)
    assert res["quarantine_reasons"] == {"clicks_exceed_impressions": 1}

    p = run("ingest", "spend", str(f), "--db", db, "--fail-on-quarantine")
    assert p.returncode == 0  # already ingested: skipped, nothing new quarantined
    assert "skipped" in p.stderr

    q = json.loads(run("quarantine", "--db", db, "--json").stdout)
    assert q["total"] == 1
    assert (q["rows"][0]["line"], q["rows"][0]["column"]) == (3, "clicks")

    s = json.loads(run("status", "--db", db, "--json").stdout)
    assert s["kinds"]["spend"] == {"rows": 1, "quarantined": 1, "folded": 0}


def test_fail_on_quarantine_exits_1(tmp_path: Path) -> None:
    f = write_csv(
        tmp_path / "spend.csv",
        ["date", "platform", "campaign_id", "impressions", "clicks", "spend"],
        [["2026-01-01", "meta", "c1", 100, 3, -1]],
    )
    p = run("ingest", "spend", str(f), "--db", str(tmp_path / "w.duckdb"), "--fail-on-quarantine")
    assert p.returncode == 1
    assert "negative" in p.stdout


def test_workspace_from_environment(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "SIGNALLOOP_DB": str(tmp_path / "env.duckdb")}
    kag = shared_data("facebook_ads_kag", "KAG_conversion_data.csv")
    p = run("ingest", "spend", str(kag), "--profile", "meta_ads", "--date", "2017-08-30", env=env)
    assert p.returncode == 0, p.stderr
    assert "1,143 loaded" in p.stdout
    assert (tmp_path / "env.duckdb").exists()
    s = json.loads(run("status", "--json", env=env).stdout)
    assert s["kinds"]["spend"]["rows"] == 1143
    assert {c["campaign_id"] for c in s["campaigns"]} == {"916", "936", "1178"}


def test_default_workspace_is_in_the_working_directory(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "SIGNALLOOP_DB"}
    f = write_csv(tmp_path / "t.csv", ["touch_id", "ts", "user_id"], [["t", "2026-01-01", "u"]])
    p = run("ingest", "touchpoints", str(f), cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "signalloop.duckdb").exists()


def test_plain_progress_lines_and_a_bad_memory_limit(tmp_path: Path) -> None:
    """SIGNALLOOP_PROGRESS=plain logs each step as a timestamped stderr line (stdout keeps
    its one JSON document); a memory limit DuckDB cannot read exits 2 naming the variable."""
    import os
    import re

    kag = shared_data("facebook_ads_kag", "KAG_conversion_data.csv")
    db = str(tmp_path / "p.duckdb")
    env = {**os.environ, "SIGNALLOOP_PROGRESS": "plain"}
    args = ("--profile", "meta_ads", "--date", "2017-08-30", "--db", db, "--json")
    p = run("ingest", "spend", str(kag), *args, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["files"][0]["rows_loaded"] == 1143
    assert re.search(r"^\d\d:\d\d:\d\d \S", p.stderr, re.M), p.stderr
    bad = run("status", "--db", db, env={**os.environ, "SIGNALLOOP_MEMORY_LIMIT": "lots"})
    assert bad.returncode == 2
    assert "SIGNALLOOP_MEMORY_LIMIT" in bad.stderr and "lots" in bad.stderr
    assert_no_traceback(bad)


def test_a_full_disk_is_one_message_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """DuckDB's "No space left on device" (a 1,000-campaign history filled /tmp once) is a
    message, not a traceback; any other error still raises."""
    import errno

    import duckdb
    import typer

    from signalloop.cli.common import handle_errors
    from signalloop.errors import disk_full

    def failing(exc: BaseException) -> None:
        raise exc

    full = duckdb.IOException('IO Error: Could not write file "ws.duckdb": No space left on device')
    with pytest.raises(typer.Exit) as got:
        handle_errors(failing)(full)
    assert got.value.exit_code == 2
    assert "no space left on the disk" in capsys.readouterr().err
    assert disk_full(OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(duckdb.IOException):
        handle_errors(failing)(duckdb.IOException("IO Error: permission denied"))


def test_help_reflows_paragraphs_and_keeps_brackets_and_placeholders() -> None:
    """--help joins a docstring paragraph's lines (its line breaks are the source's, not the
    terminal's) and shows what Rich markup would have eaten: a settings section such as
    ``[serve]`` and a placeholder such as ``<workspace>``."""
    import os

    env = {**os.environ, "COLUMNS": "200"}
    refresh = run("model", "refresh", "--help", env=env)
    assert refresh.returncode == 0, refresh.stderr
    # "keeps" ends a line of the docstring: the paragraph is one line at 200 columns
    assert any("keeps using the saved ones" in line for line in refresh.stdout.splitlines())
    assert '[run] retrain = "separate"' in refresh.stdout
    assert "<workspace>.models/<outcome>" in refresh.stdout
    fit = run("model", "fit", "--help", env=env)
    assert "[default: <workspace>.models/<outcome>]" in fit.stdout
    serve = run("serve", "--help", env=env)
    assert "[serve] run_at" in serve.stdout


def _hugepage_switch() -> Any:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return core.multiarray._set_madvise_hugepage


def test_the_console_script_turns_numpys_hugepage_advice_off_unless_the_user_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from signalloop.cli import common

    switch = _hugepage_switch()
    before = switch(True)  # (NumPy's default on Linux 4.6 and later)
    try:
        monkeypatch.delenv(common.HUGEPAGE_ENV, raising=False)
        assert common.small_pages() is True  # it was on
        assert switch(False) is False  # and is off now
        switch(True)
        monkeypatch.setenv(common.HUGEPAGE_ENV, "1")  # the user's choice stands
        assert common.small_pages() is None
        assert switch(True) is True
    finally:
        switch(before)


def test_main_asks_for_small_pages_before_any_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import signalloop.cli as cli

    calls: list[str] = []
    monkeypatch.setattr(cli, "small_pages", lambda: calls.append("small_pages"))
    monkeypatch.setattr(sys, "argv", ["signalloop", "--version"])
    with pytest.raises(SystemExit) as ended:
        cli.main()
    assert ended.value.code == 0 and calls == ["small_pages"]
