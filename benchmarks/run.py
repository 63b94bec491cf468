"""Ingest benchmark: canonical touchpoints CSVs of 1M and 10M rows through ``ingest_file``.

Run with ``make bench`` (or ``.venv/bin/python benchmarks/run.py [--sizes 1000000 ...]``).
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

import duckdb

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
    """Run one measurement in this process; prints JSON."""
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        db = Path(tmp) / "bench.duckdb"
        t0 = time.perf_counter()
        if task == "anchor":
            con = duckdb.connect(str(db))
            con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{path}', all_varchar=true)")
            rows = con.execute("SELECT count(*) FROM t").fetchone()[0]  # type: ignore[index]
            con.close()
            loaded = quarantined = rows
        else:
            from signalloop.ingest import ingest_file
            from signalloop.store import Workspace

            with Workspace(db) as ws:
                r = ingest_file(ws, "touchpoints", path)
                if task == "reingest-overlap":
                    copy = Path(tmp) / "copy.csv"
                    copy.write_bytes(path.read_bytes() + b"\n")  # same rows, other file
                    t0 = time.perf_counter()
                    r = ingest_file(ws, "touchpoints", copy)
                    assert r.rows_loaded == 0, r
            rows, loaded, quarantined = r.rows_read, r.rows_loaded, r.rows_quarantined
        seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "rows": rows,
        "loaded": loaded,
        "quarantined": quarantined,
        "peak_rss_gib": _peak_rss_gib(),
    }


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
        f"Command: `make bench` (= `.venv/bin/python benchmarks/run.py`). Measured "
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
    ]
    for n in args.sizes:
        path = generate(n)
        size_mb = path.stat().st_size / 1e6
        print(f"{n:,} rows ({size_mb:.0f} MB)", file=sys.stderr)
        anchor = measure("anchor", path)
        ours = measure("ingest", path)
        again = measure("reingest-overlap", path)
        print(f"  anchor {anchor}\n  ours {ours}\n  again {again}", file=sys.stderr)
        lines.append(
            f"| {n:,} | {size_mb:,.0f} MB | {ours['seconds']:.1f} s "
            f"({int(ours['loaded']):,} loaded, {int(ours['quarantined']):,} quarantined) | "
            f"{n / ours['seconds']:,.0f} | {ours['peak_rss_gib']:.2f} GiB | "
            f"{anchor['seconds']:.1f} s | {ours['seconds'] / anchor['seconds']:.1f}x | "
            f"{again['seconds']:.1f} s, 0 added |"
        )
    lines += ["", END]
    block = "\n".join(lines)
    print(block)
    if args.no_write:
        return
    bench = ROOT / "BENCHMARKS.md"
    text = bench.read_text() if bench.exists() else "# Benchmarks\n\n"
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    bench.write_text(text)


if __name__ == "__main__":
    main()
