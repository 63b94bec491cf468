"""Ingest benchmark: canonical touchpoints CSVs of 1M and 10M rows through ``ingest_file``.

Run with ``make bench-ingest`` (or ``.venv/bin/python benchmarks/run.py [--sizes 1000000 ...]``).
Each measurement runs in its own process (peak RSS is per measurement) on a fresh workspace,
beside the anchor measured in the same run: DuckDB's own ``read_csv`` into a table, the floor
any loader on DuckDB pays. Results are written to ``BENCHMARKS.md`` between markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from _report import write_section

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
BEGIN = "<!-- ingest-benchmark:begin -->"
END = "<!-- ingest-benchmark:end -->"


def generate(n: int) -> Path:
    """A canonical touchpoints CSV of ``n`` rows (deterministic; ~1% bad rows)."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"touchpoints_{n}.csv"
    if path.exists():
        return path
    con = duckdb.connect()
    # 0.5% unparseable timestamps, 0.5% missing user_id: the validation path is exercised.
    con.execute(
        f"""
        COPY (
          SELECT
            't' || i AS touch_id,
            CASE WHEN i % 200 = 7 THEN 'yesterday'
                 ELSE strftime(TIMESTAMP '2026-01-01' + to_seconds(i % 7776000),
                               '%Y-%m-%dT%H:%M:%SZ') END AS ts,
            CASE WHEN i % 200 = 11 THEN '' ELSE 'u' || (hash(i) % 500000) END AS user_id,
            'clk' || i AS click_id,
            CASE WHEN i % 3 = 0 THEN 'google' ELSE 'meta' END AS platform,
            'c' || lpad(CAST(i % 40 AS VARCHAR), 2, '0') AS campaign_id,
            'c' || lpad(CAST(i % 40 AS VARCHAR), 2, '0') || '_as' || (i % 3) AS adset_id,
            'ad' || (i % 400) AS ad_id,
            'cr_' || (i % 900) AS creative_id,
            'https://www.example.com/p?utm_source=' ||
              CASE WHEN i % 3 = 0 THEN 'google&utm_medium=cpc'
                   ELSE 'facebook&utm_medium=paid_social' END
              || '&utm_campaign=spring_' || (i % 40) AS landing_url,
            CASE WHEN i % 3 = 0 THEN 'google' ELSE 'facebook' END AS utm_source,
            CASE WHEN i % 3 = 0 THEN 'cpc' ELSE 'paid_social' END AS utm_medium,
            'spring_' || (i % 40) AS utm_campaign,
            'cr_' || (i % 900) AS utm_content,
            NULL AS utm_term
          FROM range({n}) r(i)
        ) TO '{path}' (HEADER, DELIMITER ',')
        """
    )
    con.close()
    return path


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)


def one(task: str, path: Path) -> dict[str, float]:
    """Run one measurement (``anchor``, ``ingest`` or ``reingest-overlap``) in this process."""
    from signalloop.ingest import ingest_file
    from signalloop.store import Workspace

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        db = Path(tmp) / "bench.duckdb"
        t0 = time.perf_counter()
        if task == "anchor":
            con = duckdb.connect(str(db))
            con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{path}', all_varchar=true)")
            row = con.execute("SELECT count(*) FROM t").fetchone()
            con.close()
            out["seconds"] = time.perf_counter() - t0
            out["rows"] = out["loaded"] = float(row[0]) if row else 0.0
            out["quarantined"] = 0.0
        else:
            with Workspace(db) as ws:
                r = ingest_file(ws, "touchpoints", path)
                out["seconds"] = time.perf_counter() - t0
                if task == "ingest":
                    out.update(read_timings(ws))
                else:  # the same rows again, from a file with other bytes
                    copy = Path(tmp) / "copy.csv"
                    copy.write_bytes(path.read_bytes() + b"\n")
                    t0 = time.perf_counter()
                    r = ingest_file(ws, "touchpoints", copy)
                    out["seconds"] = time.perf_counter() - t0
                    assert r.rows_loaded == 0, r
            out.update(rows=r.rows_read, loaded=r.rows_loaded, quarantined=r.rows_quarantined)
    out["peak_rss_gib"] = _peak_rss_gib()
    return out


READ_SQL = """
SELECT campaign_id, CAST(ts AS DATE) AS day, count(*) AS clicks,
       count(DISTINCT user_id) AS users,
       count(DISTINCT lower(trim(utm_source))) AS sources
FROM touchpoints GROUP BY ALL ORDER BY campaign_id, day
"""


def read_timings(ws: Any) -> dict[str, float]:
    """Median of 3 (after a warm-up) of one daily per-campaign read: ibis against raw SQL."""
    t = ws.table("touchpoints")
    expr = (
        t.group_by(campaign_id=t.campaign_id, day=t.ts.date())
        .aggregate(
            clicks=t.count(),
            users=t.user_id.nunique(),
            sources=t.utm_source.strip().lower().nunique(),
        )
        .order_by(["campaign_id", "day"])
    )

    def timed(fn: Any) -> float:
        fn()
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        return sorted(runs)[1]

    ibis_s = timed(lambda: expr.to_pyarrow())
    sql_s = timed(lambda: ws.con.execute(READ_SQL).to_arrow_table())
    a = expr.to_pyarrow().to_pylist()
    b = ws.con.execute(READ_SQL).to_arrow_table().to_pylist()
    assert a == b, "ibis and SQL disagree"
    return {"read_ibis_s": ibis_s, "read_sql_s": sql_s}


def measure(task: str, path: Path) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, "--one", task, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(proc.stdout)
    return result


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB, "
        f"Python {platform.python_version()}, duckdb {duckdb.__version__}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--one", nargs=2, metavar=("TASK", "FILE"), help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true", help="Print only; leave BENCHMARKS.md.")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], Path(args.one[1]))))
        return
    lines = [
        BEGIN,
        "## Ingest throughput",
        "",
        f"Command: `make bench-ingest` (= `.venv/bin/python benchmarks/run.py`). Measured "
        f"{datetime.now(UTC):%Y-%m-%d} on {machine()}.",
        "",
        "Canonical touchpoints CSV (15 columns, ~150 bytes a row, 1% invalid rows that go to "
        "quarantine), each run in a fresh process on a fresh on-disk workspace. The anchor is "
        "DuckDB's own `read_csv` of the same file into a text table (no validation, no "
        "de-duplication): the floor for any loader on DuckDB. Ratio = ours / anchor time.",
        "",
        "| rows | file | signalloop ingest | rows/s | peak RSS | anchor `read_csv` | ratio | "
        "re-ingest of the same rows from another file |",
        "|---|---|---|---|---|---|---|---|",
        "__ROWS__",
        "",
        "Reads go through ibis on the workspace connection. The same daily per-campaign "
        "aggregation (clicks, distinct users, distinct normalised utm_source) as an ibis "
        "expression and as hand-written DuckDB SQL, on the workspace just ingested, median of 3 "
        "after a warm-up; the results are checked equal:",
        "",
        "| rows | ibis | raw SQL | ibis / SQL |",
        "|---|---|---|---|",
    ]
    ingest_rows: list[str] = []
    for n in args.sizes:
        path = generate(n)
        size_mb = path.stat().st_size / 1e6
        print(f"{n:,} rows ({size_mb:.0f} MB)", file=sys.stderr)
        anchor = measure("anchor", path)
        ours = measure("ingest", path)
        again = measure("reingest-overlap", path)
        print(f"  anchor {anchor}\n  ours {ours}\n  again {again}", file=sys.stderr)
        ingest_rows.append(
            f"| {n:,} | {size_mb:,.0f} MB | {ours['seconds']:.1f} s "
            f"({int(ours['loaded']):,} loaded, {int(ours['quarantined']):,} quarantined) | "
            f"{n / ours['seconds']:,.0f} | {ours['peak_rss_gib']:.2f} GiB | "
            f"{anchor['seconds']:.1f} s | {ours['seconds'] / anchor['seconds']:.1f}x | "
            f"{again['seconds']:.1f} s, 0 added |"
        )
        lines.append(
            f"| {n:,} | {ours['read_ibis_s']:.2f} s | {ours['read_sql_s']:.2f} s | "
            f"{ours['read_ibis_s'] / ours['read_sql_s']:.2f} |"
        )
    lines += ["", END]
    block = "\n".join(lines).replace("__ROWS__", "\n".join(ingest_rows))
    print(block)
    if args.no_write:
        return
    write_section(block, BEGIN, END)


if __name__ == "__main__":
    main()
