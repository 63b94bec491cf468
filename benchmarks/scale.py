"""``signalloop run`` as accounts grow: first run and next day, step by step, with peak memory.

For each account size the simulator writes 90 days of ``SimulationConfig(days=90, campaigns=N,
seed=3)`` (full shape). The rows are split by their day into the **history** (days 1-89) and
the **new day** (day 90, what a daily export drop brings), each a folder of canonical CSVs.

* **first run**: ``signalloop run --inbox history --as-of <day 89>`` on a fresh workspace
  (ingest, checks, state, both models fitted and backtested, allocation, diagnose, lens,
  the signal history backfilled, the report);
* **next day**: ``signalloop run --inbox new-day --as-of <day 90>`` on the same workspace.

Each run is its own process (the CLI, as a user runs it), started by a small launcher that
reports its peak RSS (``wait4``'s ``ru_maxrss``: the launcher starts small, so the
benchmark's own memory is not counted; see ``_LAUNCH``). The anchor is a **plain scan of the
new day's rows**: DuckDB reading the new day's CSVs and summing every numeric column, timed
in the same session; the issue's target is a next day costing at most 2x that plus a fixed
part, independent of history.

Accounts larger than ``--shard`` campaigns are simulated as independent shards of at most
``--shard`` campaigns (seeds 3, 4, ...), their campaign, ad set, ad, creative, user and row
ids prefixed per shard, because one simulation holds its whole account in memory.

Run: ``.venv/bin/python benchmarks/scale.py --campaigns 10,100`` (``make bench-scale``);
simulated accounts are cached in ``--cache`` (default ``/tmp/signalloop-scale``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from _report import log, machine, write_section

BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"
#: The PySpark runs' own section (``--backend pyspark``)
SPARK_BEGIN, SPARK_END = "<!-- scale-pyspark:begin -->", "<!-- scale-pyspark:end -->"
PACKAGES = ("duckdb", "ibis-framework", "lightgbm", "scikit-learn")
STEPS = (
    "ingest",
    "aggregates",
    "checks",
    "state",
    "models",
    "allocate",
    "learnable",
    "diagnose_lens",
    "history",
)
KIND_TIME = {
    "spend": "date",
    "touchpoints": "ts",
    "conversions": "ts",
    "crm": "ts",
    "changes": "ts",
}
#: Columns holding ids that a shard prefixes so shards never collide.
ID_COLUMNS = (
    "campaign_id",
    "adset_id",
    "ad_id",
    "creative_id",
    "user_id",
    "touch_id",
    "click_id",
    "conversion_id",
    "record_id",
    "entity_id",
    "utm_campaign",
)
START = date(2026, 1, 1)


def start_for(days: int, today: date | None = None) -> date:
    """The account's first day: :data:`START`, moved back by whole years until its last day
    lies before ``today`` (default: today, UTC). Ingest quarantines rows more than a day
    after the ingest time, so a 365-day account from 2026-01-01 run in December 2026 loaded
    nothing on its next day.

    >>> start_for(90, date(2026, 12, 6)), start_for(365, date(2026, 12, 6))
    (datetime.date(2026, 1, 1), datetime.date(2025, 1, 1))
    """
    today = today or datetime.now(UTC).date()
    start = START
    while start + timedelta(days=days) > today:
        start = start.replace(year=start.year - 1)
    return start


def account_folder(cache: Path, n: int, days: int, seed: int) -> tuple[Path, date]:
    """The account's cache folder and first day (the folder names a first day other than
    :data:`START`, so an account cached from another first day is not reused)."""
    start = start_for(days)
    name = f"c{n}-d{days}-s{seed}" + ("" if start == START else f"-{start:%Y%m%d}")
    return cache / name, start


def simulate(
    n: int, days: int, seed: int, shard: int, folder: Path, start: date = START
) -> dict[str, Any]:
    """Write the account's canonical CSVs into ``folder/all`` (once; cached)."""
    done = folder / "all" / ".done"
    if done.exists():
        return dict(json.loads(done.read_text()), cached=True)
    from signalloop import simulate as sim

    t0 = time.perf_counter()
    if folder.exists():
        shutil.rmtree(folder)
    parts = []
    for i, lo in enumerate(range(0, n, shard)):
        k = min(shard, n - lo)
        log(f"simulating {k} campaigns (shard {i + 1} of {-(-n // shard)})")
        out = folder / f"shard{i}"
        config = sim.SimulationConfig(days=days, campaigns=k, seed=seed + i, start=start)
        sim.write(sim.simulate(config), out)
        parts.append(out)
    (folder / "all").mkdir(parents=True)
    con = duckdb.connect()
    rows: dict[str, int] = {}
    for kind in KIND_TIME:
        files = [p / f"{kind}.csv" for p in parts if (p / f"{kind}.csv").exists()]
        selects = []
        for i, f in enumerate(files):
            cols = [
                r[0]
                for r in con.execute(
                    f"DESCRIBE SELECT * FROM read_csv('{f}', all_varchar=true)"
                ).fetchall()
            ]
            exprs = [
                (f"CASE WHEN {c} IS NULL OR {c} = '' THEN {c} ELSE 's{i}-' || {c} END AS {c}")
                if len(files) > 1 and c in ID_COLUMNS
                else c
                for c in cols
            ]
            selects.append(f"SELECT {', '.join(exprs)} FROM read_csv('{f}', all_varchar=true)")
        con.execute(
            f"COPY ({' UNION ALL BY NAME '.join(selects)}) TO '{folder / 'all' / kind}.csv' "
            "(HEADER, DELIMITER ',')"
        )
        rows[kind] = con.execute(
            f"SELECT count(*) FROM read_csv('{folder / 'all' / kind}.csv')"
        ).fetchone()[0]  # type: ignore[index]
    for p in parts:
        shutil.rmtree(p)
    info = {"rows": rows, "simulate_seconds": time.perf_counter() - t0}
    done.write_text(json.dumps(info))
    return dict(info, cached=False)


def split(folder: Path, last: date) -> tuple[Path, Path, dict[str, int]]:
    """The history (before ``last``) and the new day (``last``) as two inbox folders."""
    hist, new = folder / "history", folder / "new-day"
    new_rows: dict[str, int] = {}
    con = duckdb.connect()
    for sub in (hist, new):
        if sub.exists():
            shutil.rmtree(sub)
        sub.mkdir()
    for kind, col in KIND_TIME.items():
        src = folder / "all" / f"{kind}.csv"
        if not src.exists():
            continue
        rel = f"read_csv('{src}', all_varchar=true)"
        day = f"substr({col}, 1, 10)"
        con.execute(
            f"COPY (SELECT * FROM {rel} WHERE {day} < '{last}') TO '{hist / kind}.csv' (HEADER)"
        )
        con.execute(
            f"COPY (SELECT * FROM {rel} WHERE {day} = '{last}') TO '{new / kind}.csv' (HEADER)"
        )
        found = con.execute(f"SELECT count(*) FROM {rel} WHERE {day} = '{last}'").fetchone()
        new_rows[kind] = int(found[0]) if found else 0
    return hist, new, new_rows


def plain_scan(new: Path) -> float:
    """Seconds for DuckDB to read the new day's CSVs and sum every numeric column."""
    con = duckdb.connect()
    t0 = time.perf_counter()
    for f in sorted(new.glob("*.csv")):
        rel = con.sql(f"SELECT * FROM read_csv('{f}')")
        sums = [
            f"sum(TRY_CAST({c} AS DOUBLE))"
            for c, t in zip(rel.columns, rel.types, strict=True)
            if str(t) in ("BIGINT", "DOUBLE", "INTEGER")
        ]
        con.execute(f"SELECT count(*){''.join(', ' + s for s in sums)} FROM read_csv('{f}')")
    return time.perf_counter() - t0


def _last_step(err: str) -> str:
    """The last progress line of a run's stderr (``SIGNALLOOP_PROGRESS=plain``)."""
    lines = [x for x in err.splitlines() if x[:2].isdigit() and x[2:3] == ":"]
    return lines[-1].split(" ", 1)[-1] if lines else "unknown"


class RunFailed(Exception):
    """A run that exited with an error or was stopped over the memory cap."""


# The run is started by this small launcher, which forks and execs it and reports the
# child's peak RSS. Linux carries a process's high-water RSS across fork and exec, so the
# benchmark's own memory (it holds the simulated account) would otherwise be counted as the
# run's: the launcher starts small, so its child's ``ru_maxrss`` is the run's own.
_LAUNCH = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\n{sys.argv[0]} maxrss-kb {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""
_MAXRSS = re.compile(r"^-c maxrss-kb (\d+)$", re.M)


def _child(pid: int) -> int | None:
    """The launcher's child (the run itself), once it has been forked."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


def _watch(proc: subprocess.Popen[bytes], max_gib: float, stopped: list[float]) -> None:
    """Kill the run when its resident memory passes ``max_gib`` (noted in ``stopped``)."""
    while proc.returncode is None:
        run = _child(proc.pid)
        try:
            text = Path(f"/proc/{run}/status").read_text() if run else ""
            kb = next((int(x.split()[1]) for x in text.splitlines() if "VmRSS" in x), 0)
        except (OSError, ValueError):
            kb = 0
        if kb / 1024**2 > max_gib and run:
            stopped.append(kb / 1024**2)
            os.kill(run, signal.SIGKILL)
            return
        time.sleep(1.0)


def run_once(
    ws: Path | str,
    inbox: Path,
    as_of: date,
    out: Path,
    max_gib: float = 16.0,
    env_extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``signalloop run`` in its own process: wall seconds, peak RSS, the run's timings."""
    cmd = [
        str(Path(sys.executable).parent / "signalloop"),
        "run",
        "--db",
        str(ws),
        "--inbox",
        str(inbox),
        "--as-of",
        as_of.isoformat(),
        "--out",
        str(out),
        "--json",
    ]
    # what came before (the split CSVs, the first run's workspace: gigabytes at 1,000
    # campaigns) on disk before the clock starts. A daily run starts a day after the last,
    # not while the kernel still writes the last one back; without this the next day's
    # first commit waits seconds for that writeback.
    os.sync()
    t0 = time.perf_counter()
    env = dict(os.environ, SIGNALLOOP_PROGRESS="plain")  # a stopped run says where it was
    env.update(env_extra or {})
    out.mkdir(parents=True, exist_ok=True)
    log_file = out / "stderr.log"  # a file, not a pipe: a long run's lines never block it
    with log_file.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, *cmd], stdout=subprocess.DEVNULL, stderr=sink, env=env
        )
    stopped: list[float] = []
    watch = threading.Thread(target=_watch, args=(proc, max_gib, stopped), daemon=True)
    watch.start()
    code = proc.wait()
    seconds = time.perf_counter() - t0
    err = log_file.read_text(errors="replace")
    peak = _MAXRSS.findall(err)
    if stopped:
        raise RunFailed(
            f"stopped after {seconds:.0f} s at {stopped[0]:.1f} GiB resident (over --max-gib "
            f"{max_gib:g}), in step: {_last_step(err)}"
        )
    report = out / "report.json"
    if code not in (0, 1) or not report.exists():  # 1 is a run with held campaigns
        raise RunFailed(f"{' '.join(cmd)} exited {code} in step {_last_step(err)}:\n{err[-3000:]}")
    doc = json.loads(report.read_text())
    return {
        "seconds": seconds,
        "peak_gib": int(peak[-1]) / 1024**2 if peak else float("nan"),
        "timings": doc["timings"],
        # (inside the state step: the nowcast's data and draws, per path)
        "nowcast": ((doc.get("state") or {}).get("nowcast") or {}).get("timings", {}),
        "loaded": (doc.get("inbox") or {}).get("loaded", 0),
        "quarantined": (doc.get("inbox") or {}).get("quarantined", 0),
        "models": [f"{m['outcome']} {m['status']}" for m in doc["models"]],
    }


def measure(
    n: int,
    days: int,
    seed: int,
    shard: int,
    cache: Path,
    max_gib: float,
    backend: str = "duckdb",
) -> dict[str, Any]:
    folder, start = account_folder(cache, n, days, seed)
    info = simulate(n, days, seed, shard, folder, start)
    last = start + timedelta(days=days - 1)
    hist, new, new_rows = split(folder, last)
    env: dict[str, str] = {}
    reports = folder / "reports"
    if backend == "pyspark":  # its tables in a warehouse folder, its models and runs beside
        store, state = folder / "pyspark-wh", folder / "pyspark-state"
        for sub in (store, state):
            shutil.rmtree(sub, ignore_errors=True)
        ws: Path | str = f"pyspark://local?warehouse={store}"
        env["SIGNALLOOP_STATE_DIR"] = str(state)
        reports = folder / "reports-pyspark"
    else:
        store = folder / "ws.duckdb"
        ws = store
        for p in (store, Path(f"{store}.wal")):
            p.unlink(missing_ok=True)
        # a fresh workspace: its models (beside it) and run folders go too
        for sub in ("ws.models", "ws.duckdb.runs"):
            shutil.rmtree(folder / sub, ignore_errors=True)
    shutil.rmtree(reports, ignore_errors=True)
    log(f"{n} campaigns ({backend}): first run as of {last - timedelta(days=1)}")
    first = run_once(ws, hist, last - timedelta(days=1), reports / "first", max_gib, env)
    log(f"{n} campaigns ({backend}): next day as of {last}")
    nxt = run_once(ws, new, last, reports / "next", max_gib, env)
    scan = min(plain_scan(new) for _ in range(3))
    return {
        "campaigns": n,
        "rows": info["rows"],
        "new_rows": new_rows,
        "first": first,
        "next": nxt,
        "scan": scan,
        "workspace_mb": _size(store) / 1e6,
    }


def _size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def render(
    results: list[dict[str, Any]],
    args: argparse.Namespace,
    failed: list[tuple[int, str]] | None = None,
) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    cols = [(r, lab) for r in results for lab in ("first", "next")]
    spark = args.backend == "pyspark"
    begin, end = (SPARK_BEGIN, SPARK_END) if spark else (BEGIN, END)
    title = (
        "## Scale on PySpark: `signalloop run --db pyspark://local` at growing account sizes"
        if spark
        else "## Scale: `signalloop run` at growing account sizes"
    )
    command = (
        f"`.venv/bin/python benchmarks/scale.py --backend pyspark --campaigns {args.campaigns}`"
        if spark
        else "`make bench-scale` (benchmarks/scale.py --campaigns "
        f"{args.campaigns} --days {args.days} --seed {args.seed})"
    )
    where = (
        "A local Spark session (the workspace's tables in a warehouse folder; Spark's own "
        "defaults but 4 shuffle partitions; ingest validates each file in DuckDB, as on every "
        "backend, then appends to Spark). Peak memory is the Python process's; the JVM's is "
        "not counted. The same accounts and steps as the DuckDB section above, beside it."
        if spark
        else "Each run is the CLI in its own process; peak memory is that process's maximum RSS."
    )
    head = "| step | " + " | ".join(
        f"{r['campaigns']:,} campaigns, {'first run' if lab == 'first' else 'next day'}"
        for r, lab in cols
    )
    lines = [
        begin,
        title,
        "",
        f"Command: {command}. Measured {stamp} on {machine(PACKAGES)}.",
        "",
        "Each account is the simulator's full shape, 90 days; the first run ingests days 1-89 "
        "into a fresh workspace and runs as of day 89; the next day ingests day 90's rows and "
        f"runs as of day 90. {where} The anchor is a plain DuckDB scan of the new day's CSVs "
        "(count and sum of every numeric column), in the same session.",
        "",
        head + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for step in STEPS:
        cells = [f"{r[lab]['timings'].get(step, 0.0):.1f} s" for r, lab in cols]
        lines.append(f"| {step.replace('_', ' + ')} | " + " | ".join(cells) + " |")
    lines += [
        "| the rest (start-up, report) | "
        + " | ".join(
            f"{r[lab]['seconds'] - sum(r[lab]['timings'].get(s, 0.0) for s in STEPS):.1f} s"
            for r, lab in cols
        )
        + " |",
        "| **whole run** (process) | "
        + " | ".join(f"**{r[lab]['seconds']:.1f} s**" for r, lab in cols)
        + " |",
        "| peak memory | " + " | ".join(f"{r[lab]['peak_gib']:.2f} GiB" for r, lab in cols) + " |",
        "| rows ingested | " + " | ".join(f"{r[lab]['loaded']:,}" for r, lab in cols) + " |",
        "| models | " + " | ".join(", ".join(r[lab]["models"]) for r, lab in cols) + " |",
        "",
        "| campaigns | touchpoints | new day's rows | plain scan of them | next day | "
        "next day / scan | workspace |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['campaigns']:,} | {r['rows'].get('touchpoints', 0):,} | "
            f"{sum(r['new_rows'].values()):,} | {r['scan']:.3f} s | "
            f"{r['next']['seconds']:.1f} s | {r['next']['seconds'] / r['scan']:,.0f}x | "
            f"{r['workspace_mb']:,.0f} MB |"
        )
    for n, why in failed or []:
        lines += ["", f"**{n:,} campaigns did not complete:** {why}"]
    lines += ["", end]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaigns", default="10,100", help="comma-separated account sizes")
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--shard", type=int, default=100, help="campaigns per simulated shard")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/signalloop-scale"))
    ap.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    ap.add_argument("--backend", choices=("duckdb", "pyspark"), default="duckdb")
    ap.add_argument(
        "--max-gib", type=float, default=16.0, help="stop a run past this resident memory"
    )
    args = ap.parse_args()
    results, failed = [], []
    for n in args.campaigns.split(","):
        try:
            results.append(
                measure(
                    int(n),
                    args.days,
                    args.seed,
                    args.shard,
                    args.cache,
                    args.max_gib,
                    args.backend,
                )
            )
        except RunFailed as exc:  # reported in the section, the other sizes still count
            log(f"{n} campaigns: {exc}")
            failed.append((int(n), str(exc).splitlines()[0][:300]))
    block = render(results, args, failed)
    if not args.no_write:
        spark = args.backend == "pyspark"
        write_section(block, *((SPARK_BEGIN, SPARK_END) if spark else (BEGIN, END)))
    print(block)
    print(json.dumps(results, default=str), file=sys.stderr)


if __name__ == "__main__":
    main()
