"""The touch index's lookup of one day's converting users and clicks, cold and warm, against
the length of the history, beside DuckDB's filter of the touchpoints by the same keys (what
the daily attribution read before the index: :mod:`signalloop.touchindex`).

For each workspace given (e.g. the 89-day one ``history.py --keep`` leaves and the doubled
one ``longer.py`` leaves), each in a process of its own: the page cache dropped first when it
can be (as root, ``/proc/sys/vm/drop_caches``; otherwise the section says so and the first
figure is not a cold one), then three lookups of the users and click ids of the new day's
conversions; then, in another process and again from a dropped cache, DuckDB's filter of
the table by the same keys, twice. Both are read-only: the workspaces are not changed.

Run: ``.venv/bin/python benchmarks/lookup.py --workspace W1 --workspace W2 --new-day DIR``
(``DIR`` holding the new day's ``conversions.csv``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from _report import child, log, machine, write_section

from signalloop import touchindex
from signalloop.store import Workspace

BEGIN, END = "<!-- lookup:begin -->", "<!-- lookup:end -->"
DROP = Path("/proc/sys/vm/drop_caches")


def _drop() -> bool:
    """Drop the page cache (as root); whether it was dropped."""
    try:
        os.sync()
        DROP.write_text("3\n")
    except OSError:
        return False
    return True


def _keys(con: duckdb.DuckDBPyConnection, new_day: Path) -> None:
    con.execute(
        "CREATE TEMP TABLE nc AS SELECT * FROM read_csv(?, all_varchar = true)",
        [str(new_day / "conversions.csv")],
    )
    con.execute("CREATE TEMP TABLE u AS SELECT DISTINCT user_id AS u FROM nc WHERE user_id NOTNULL")
    con.execute(
        "CREATE TEMP TABLE k AS SELECT DISTINCT click_id AS k FROM nc WHERE click_id NOTNULL"
    )


def one(how: str, store: Path, new_day: Path) -> dict[str, Any]:
    """One process's measurement: ``index`` (three lookups) or ``table`` (two filters)."""
    ws = Workspace(store, read_only=True)
    con = ws.con
    _keys(con, new_day)
    keys = con.execute("SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM k)").fetchone()
    out: dict[str, Any] = {"users": keys[0] if keys else 0, "clicks": keys[1] if keys else 0}
    out["touchpoints"] = con.execute("SELECT count(*) FROM touchpoints").fetchone()[0]  # type: ignore[index]
    times = []
    if how == "index":
        owner = ws.read_meta(touchindex.META_KEY).get("id")
        index = touchindex.TouchIndex(store.with_name(store.stem + ".touches"), owner=str(owner))
        out["runs"] = index.runs()
        if not out["runs"]:
            return {**out, "error": "no usable touch index: run `signalloop run` on it first"}
        out["cold"] = _drop()
        for _ in range(3):
            t = time.perf_counter()
            found = index.lookup(con, user_sql="SELECT u FROM u", click_sql="SELECT k FROM k")
            times.append(time.perf_counter() - t)
        out["rows"] = found.num_rows
    else:
        out["cold"] = _drop()
        for _ in range(2):
            t = time.perf_counter()
            got = con.execute(
                "SELECT count(*) FROM touchpoints WHERE user_id IN (SELECT u FROM u) "
                "OR click_id IN (SELECT k FROM k)"
            ).fetchone()
            times.append(time.perf_counter() - t)
        out["rows"] = got[0] if got else 0
    ws.close()
    return {**out, "seconds": times}


def measure(store: Path, new_day: Path) -> dict[str, Any]:
    res = {}
    for how in ("index", "table"):
        log(f"{store}: {how}")
        cmd = [sys.executable, __file__, "--one", how, str(store), str(new_day)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"lookup: {' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        res[how] = json.loads(done.stdout)
    return res


def render(results: list[tuple[Path, dict[str, Any]]], started: str) -> str:
    def secs(xs: list[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in xs) + " s"

    cold = all(r[how]["cold"] for _, r in results for how in ("index", "table"))
    lines = [
        BEGIN,
        "## The touch index's lookup against the history",
        "",
        f"Command: `.venv/bin/python benchmarks/lookup.py "
        f"{' '.join(f'--workspace {p}' for p, _ in results)} --new-day DIR`. Measured "
        f"{started} - {datetime.now(UTC):%H:%M} UTC, on {machine(['duckdb', 'pyarrow'])}. "
        + (
            "The page cache was dropped before the first lookup and the first filter."
            if cold
            else "**The page cache could not be dropped (not root): no figure is cold.**"
        ),
        "",
        "| workspace | touchpoints | runs | users, clicks | rows found | index: first, then | "
        "DuckDB's filter: first, then |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for path, r in results:
        i, t = r["index"], r["table"]
        if "error" in i:
            where = "/".join(path.parent.parts[-2:])
            lines.append(f"| `{where}` | {i['touchpoints']:,} | 0 | | | {i['error']} | |")
            continue
        lines.append(
            f"| `{'/'.join(path.parent.parts[-2:])}` | {i['touchpoints']:,} | {i['runs']} | "
            f"{i['users']:,}, {i['clicks']:,} | {i['rows']:,} ({t['rows']:,} matching) | "
            f"{secs(i['seconds'])} | {secs(t['seconds'])} |"
        )
    lines += [
        "",
        "The index returns candidates (every touchpoint of those user and click hashes), which "
        "the caller filters by the ids as it filtered the table: the rows found are at least "
        "the matching ones.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    if child(one):
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, action="append", required=True)
    ap.add_argument("--new-day", type=Path, required=True, help="holds conversions.csv")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = ap.parse_args()
    for p in [*args.workspace, args.new_day / "conversions.csv"]:
        if not p.exists():
            sys.exit(f"lookup: {p} does not exist")
    started = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    block = render([(p, measure(p, args.new_day)) for p in args.workspace], started)
    print(block)
    if not args.no_write:
        write_section(block, BEGIN, END)


if __name__ == "__main__":
    main()
