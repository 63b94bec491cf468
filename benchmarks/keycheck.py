"""What the ingest's check of a new day's keys against every stored key costs, and what a
unique index (DuckDB's ART) would change.

Ingest lands a file's rows whose natural key is not stored yet: an anti-join of the new rows
with the stored table on the key (:func:`signalloop.ingest._land`). Every stored key is read
for it, so its cost grows with the history. An index is the textbook answer; this measures
it. On copies of one workspace (a first run's, e.g. the 89-day one ``history.py --keep``
leaves), the same new day's touchpoints are inserted in one transaction, committed and
checkpointed, by each of:

- ``plain``: no check at all (the floor: writing the rows);
- ``anti``: the anti-join on ``touch_id``, as ingest does;
- ``two-step``: the new keys alone first (an anti-join of one column), then their rows;
- ``unique-index``: a unique index on ``touch_id`` (built once on the copy, timed apart),
  then ``INSERT OR IGNORE``, which probes it key by key.

Each method runs ``--repeat`` times in a process of its own, each on a fresh copy; the
figures are medians, with peak memory and the workspace's size after the checkpoint.

Run: ``.venv/bin/python benchmarks/keycheck.py --workspace W --new-day CSV``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from _report import child, log, machine, write_section

BEGIN, END = "<!-- keycheck:begin -->", "<!-- keycheck:end -->"
METHODS = ("plain", "anti", "two-step", "unique-index")


def one(method: str, store: Path, new_day: Path) -> dict[str, Any]:
    """``method`` on the workspace ``store`` (a scratch copy): its timings, as a dict."""
    con = duckdb.connect(str(store))
    con.execute("SET preserve_insertion_order = false")  # as ingest inserts
    out: dict[str, Any] = {"method": method}

    def timed(name: str, sql: str) -> None:
        t0 = time.perf_counter()
        con.execute(sql)
        out[name] = round(time.perf_counter() - t0, 3)

    if method == "unique-index":
        timed("build", "CREATE UNIQUE INDEX _keycheck ON touchpoints(touch_id)")
        timed("build_checkpoint", "CHECKPOINT")
    header = new_day.read_text(encoding="utf-8").split("\n", 1)[0].strip().split(",")
    typed = ", ".join(
        f"CAST({c} AS {t}) AS {c}" if c in header else f"NULL::{t} AS {c}"
        for c, t in con.execute(
            "SELECT column_name, column_type FROM (DESCRIBE touchpoints)"
        ).fetchall()
    )
    con.execute(f"CREATE TEMP TABLE n0 AS SELECT * FROM read_csv('{new_day}', all_varchar=true)")
    con.execute(f"CREATE TEMP TABLE n AS SELECT {typed} FROM n0")
    before = con.execute("SELECT count(*) FROM touchpoints").fetchone()
    t0 = time.perf_counter()
    con.execute("BEGIN TRANSACTION")
    if method == "plain":
        timed("insert", "INSERT INTO touchpoints SELECT * FROM n")
    elif method == "anti":
        timed(
            "insert",
            "INSERT INTO touchpoints SELECT n.* FROM n ANTI JOIN touchpoints t "
            "ON t.touch_id IS NOT DISTINCT FROM n.touch_id",
        )
    elif method == "two-step":
        timed(
            "keys",
            "CREATE TEMP TABLE nk AS SELECT n.touch_id FROM n ANTI JOIN touchpoints t "
            "ON t.touch_id IS NOT DISTINCT FROM n.touch_id",
        )
        timed(
            "insert",
            "INSERT INTO touchpoints SELECT n.* FROM n SEMI JOIN nk "
            "ON n.touch_id IS NOT DISTINCT FROM nk.touch_id",
        )
    else:
        timed("insert", "INSERT OR IGNORE INTO touchpoints SELECT * FROM n")
    timed("commit", "COMMIT")
    timed("checkpoint", "CHECKPOINT")
    out["total"] = round(time.perf_counter() - t0, 3)
    after = con.execute("SELECT count(*) FROM touchpoints").fetchone()
    assert before is not None and after is not None
    out["inserted"] = int(after[0]) - int(before[0])
    out["new_rows"] = int(con.execute("SELECT count(*) FROM n").fetchone()[0])  # type: ignore[index]
    con.close()
    out["size_gb"] = round(store.stat().st_size / 1e9, 3)
    out["peak_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)
    return out


def measure(workspace: Path, new_day: Path, scratch: Path, repeat: int) -> list[dict[str, Any]]:
    scratch.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    for i in range(repeat):
        for method in METHODS:  # alternated, so an hour's swing of the host hits all alike
            copy = scratch / "ws.duckdb"
            for p in (copy, Path(f"{copy}.wal")):
                p.unlink(missing_ok=True)
            shutil.copy2(workspace, copy)
            os.sync()
            log(f"round {i + 1}: {method}")
            done = subprocess.run(
                [sys.executable, __file__, "--one", method, str(copy), str(new_day)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(done.stdout))
    shutil.rmtree(scratch, ignore_errors=True)
    return runs


def render(runs: list[dict[str, Any]], args: argparse.Namespace, size_before: float) -> str:
    def med(method: str, key: str) -> str:
        xs = [r[key] for r in runs if r["method"] == method and key in r]
        return f"{statistics.median(xs):.2f}" if xs else ""

    rows = [
        "| method | insert | commit | checkpoint | total | inserted | peak | workspace after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in METHODS:
        mine = [r for r in runs if r["method"] == m]
        insert = med(m, "insert")
        if m == "two-step":
            insert = f"{med(m, 'keys')} + {insert}"
        rows.append(
            f"| `{m}` | {insert} s | {med(m, 'commit')} s | {med(m, 'checkpoint')} s | "
            f"**{med(m, 'total')} s** | {mine[0]['inserted']:,} of {mine[0]['new_rows']:,} | "
            f"{med(m, 'peak_gib')} GiB | {med(m, 'size_gb')} GB |"
        )
    build = [r for r in runs if "build" in r]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        BEGIN,
        "## The ingest's key check against an index",
        "",
        f"Command: `.venv/bin/python benchmarks/keycheck.py --workspace {args.workspace} "
        f"--new-day {args.new_day} --repeat {args.repeat}`. Measured {now}, on "
        f"{machine(['duckdb'])}.",
        "",
        f"One workspace ({size_before:.2f} GB) and one new day of touchpoints, inserted in one "
        "transaction, committed and checkpointed, on a fresh copy each time (medians of "
        f"{args.repeat}; the methods alternate). See the script's docstring for each method.",
        "",
        *rows,
    ]
    if build:
        lines += [
            "",
            f"The unique index took {statistics.median(r['build'] for r in build):.1f} s to "
            "build (plus "
            f"{statistics.median(r['build_checkpoint'] for r in build):.1f} s to checkpoint), "
            "once per workspace, and stays on every later write.",
        ]
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    if child(one):
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, required=True, help="a first run's ws.duckdb")
    ap.add_argument("--new-day", type=Path, required=True, help="the next day's touchpoints")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/signalloop-keycheck"))
    ap.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = ap.parse_args()
    for p in (args.workspace, args.new_day):
        if not p.exists():
            sys.exit(f"keycheck: {p} does not exist")
    size = args.workspace.stat().st_size / 1e9
    block = render(measure(args.workspace, args.new_day, args.scratch, args.repeat), args, size)
    print(block)
    if not args.no_write:
        write_section(block, BEGIN, END)


if __name__ == "__main__":
    main()
