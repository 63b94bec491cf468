"""The next day behind a history twice as long as the simulated one, at the same account size.

``history.py`` can only go back as far as the simulated account (90 days at 1,000 campaigns:
13 GB of CSVs; a year would need about 51 GB of disk beside the workspaces). This doubles a
first run's history instead: from the workspace ``history.py --keep`` leaves
(``history-<H>d/before-next-day``), every raw row is copied ``H + 1`` days earlier (spend,
touchpoints, conversions, CRM, edits; touch, click, conversion and record ids prefixed with
``h`` so that none collides), the stores kept from the rows are dropped, a run as of the
same day rebuilds them (a first run, timed apart), and then the same new day runs as the
next day. The first run's ``H``-day workspace runs that next day too, alternately, so the two
histories are measured in the same minutes.

The earlier half is the later half again, shifted: the same campaigns, ad sets, creatives
and users, so a user's touches span both halves. At the seam (the copy's last day and the
original's first) conversions of the copy's last clicks are missing, which the checks read
as outages: several hundred exclusion windows, which the 90-day account does not have. Both
make it a harder history than the simulator's, not an easier one.

Run: ``.venv/bin/python benchmarks/history.py --campaigns 1000 --history 89 --keep`` first,
then ``.venv/bin/python benchmarks/longer.py --campaigns 1000 --history 89``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from _report import log, machine, publish
from history import _copy, _restore, _workspace_files
from scale import PACKAGES, STEPS, RunFailed, _size, account_folder, plain_scan, run_once

from signalloop import touchindex
from signalloop.attribution import ATTRIBUTION_TABLE, CHANGES_TABLE, RECORDS_TABLE
from signalloop.fatigue import FITS_TABLE
from signalloop.models.recent import TABLE as RECENT_TABLE
from signalloop.rollups import REGISTRY
from signalloop.store import Workspace

BEGIN, END = "<!-- longer:begin -->", "<!-- longer:end -->"
#: The ids that must not collide between the two halves.
IDS = {
    "touchpoints": ("touch_id", "click_id"),
    "conversions": ("conversion_id", "click_id"),
    "crm": ("record_id",),
}
#: The tables kept from the rows (rebuilt by the first run on the doubled history): the
#: stored attribution and its change log, the recent label counts, the creatives' decay
#: fits, and every rollup.
DERIVED = (
    ATTRIBUTION_TABLE,
    CHANGES_TABLE,
    RECORDS_TABLE,
    RECENT_TABLE,
    FITS_TABLE,
    *sorted(REGISTRY),
)


def double(store: Path, shift: int) -> dict[str, int]:
    """Copy every raw row of the workspace ``store`` ``shift`` days earlier; rows per kind."""
    con = duckdb.connect(str(store))
    con.execute("SET preserve_insertion_order = false")
    rows = {}
    for kind in ("spend", "touchpoints", "conversions", "crm", "changes"):
        cols = con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {kind})").fetchall()
        sel = []
        for c, t in cols:
            if c in IDS.get(kind, ()):
                sel.append(f"'h' || {c}")
            elif t.startswith("TIMESTAMP"):
                sel.append(f"{c} - INTERVAL {shift} DAY")
            elif t == "DATE":
                sel.append(f"CAST({c} - INTERVAL {shift} DAY AS DATE)")
            else:
                sel.append(c)
        con.execute(f"INSERT INTO {kind} SELECT {', '.join(sel)} FROM {kind}")
        found = con.execute(f"SELECT count(*) FROM {kind}").fetchone()
        rows[kind] = int(found[0]) if found else 0
    for t in DERIVED:
        con.execute(f"DROP TABLE IF EXISTS {t}")
    con.execute("DELETE FROM meta WHERE key <> 'schema_version'")
    con.execute("CHECKPOINT")
    con.close()
    return rows


def current_index(saved: Path) -> float | None:
    """Bring the snapshot's touch index up to this code's format (seconds taken; ``None``
    when it already was): a snapshot left by an older format would otherwise have its index
    built again inside the first next day measured, which the first run with this code
    would have done instead."""
    with Workspace(saved / "ws.duckdb") as ws:
        index = touchindex.for_workspace(ws)
        if index is None or index.state() is not None:
            return None
        log(f"the touch index in {saved} is of another format: building it again first")
        t0 = time.perf_counter()
        index.sync(ws.con, ws.ingest_state("touchpoints"))
        return round(time.perf_counter() - t0, 1)


def _check_room(saved: Path, long: Path) -> None:
    """Stop before starting when the disk cannot hold the doubled workspace (about twice the
    snapshot), its copy that each next day starts from, and the short history's copy, with a
    tenth to spare; the last doubled workspace, replaced, counts as free."""
    snapshot = _size(saved)
    need = int(5 * snapshot * 1.1)
    free = shutil.disk_usage(long.parent).free + (_size(long) if long.exists() else 0)
    if free < need:
        raise RunFailed(
            f"doubling {saved} ({snapshot / 1e9:.1f} GB) needs about {need / 1e9:.0f} GB free "
            f"in {long.parent}, and {free / 1e9:.0f} GB is; free some room"
        )


def measure(
    n: int, h: int, cache: Path, max_gib: float, repeat: int, crm_days: int | None = None
) -> dict[str, Any]:
    started = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    folder, start = account_folder(cache, n, 90, 3)
    last = start + timedelta(days=89)
    base = folder / f"history-{h}d"
    saved, new = base / "before-next-day", base / "new-day"
    if not saved.exists():
        raise RunFailed(
            f"{saved} is missing: run benchmarks/history.py --campaigns {n} --history {h} --keep"
        )
    long = folder / f"history-{2 * h + 1}d-doubled"
    _check_room(saved, long)
    rebuilt = current_index(saved)
    shutil.rmtree(long, ignore_errors=True)
    long.mkdir(parents=True)
    store = long / "ws.duckdb"
    _restore(saved, store)
    log(f"doubling {h} days of history to {2 * h + 1}")
    rows = double(store, h + 1)
    empty = long / "empty"
    empty.mkdir()
    log("the first run on the doubled history (rebuilds what is kept from the rows)")
    env = None
    if crm_days is not None:  # (every run of both histories, the first one too)
        config = long / "signalloop.toml"
        config.write_text(f"[nowcast]\ncrm_settle_days = {int(crm_days)}\n")
        env = {"SIGNALLOOP_CONFIG": str(config)}
    first = run_once(
        store, empty, last - timedelta(days=1), long / "reports" / "first", max_gib, env
    )
    doubled = long / "before-next-day"
    # every next day starts from a copy, as the short history's do: the first run would
    # otherwise leave the long history's first next day most of its workspace in the page
    # cache, and the short one's none (at 1,000 campaigns: 39 s against 48 s a copy)
    _copy(_workspace_files(store), doubled)
    short_store = base / "ws.duckdb"
    runs: dict[str, list[dict[str, Any]]] = {"short": [], "long": []}
    for i in range(repeat):  # alternately, from the same first runs
        for key, st, src in (("short", short_store, saved), ("long", store, doubled)):
            _restore(src, st)
            log(f"round {i + 1}: the next day behind the {key} history")
            out = st.parent / "reports" / f"next-{key}-{i + 1}"
            runs[key].append(run_once(st, new, last, out, max_gib, env))
    shutil.rmtree(doubled, ignore_errors=True)
    return {
        "when": f"{started} - {datetime.now(UTC):%H:%M} UTC",
        "campaigns": n,
        "history": h,
        "rows": rows,
        "first": first,
        "runs": runs,
        "scan": min(plain_scan(new) for _ in range(3)),
        "index_rebuilt": rebuilt,
        "crm_settle_days": crm_days,
        "workspace_gb": store.stat().st_size / 1e9,
    }


def _med(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run (of an even number, the faster of the middle two)."""
    return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]


def _markers(crm_days: int | None) -> tuple[str, str]:
    """The BENCHMARKS.md section's markers: one section per CRM window measured."""
    if crm_days is None:
        return BEGIN, END
    return f"<!-- longer-crm{crm_days}:begin -->", f"<!-- longer-crm{crm_days}:end -->"


def render(res: dict[str, Any], args: argparse.Namespace) -> str:
    h = res["history"]
    crm_days = res.get("crm_settle_days")
    begin, end = _markers(crm_days)
    short, long = _med(res["runs"]["short"]), _med(res["runs"]["long"])
    every = {k: ", ".join(f"{r['seconds']:.1f}" for r in v) for k, v in res["runs"].items()}
    slope = (long["seconds"] - short["seconds"]) / (h + 1)
    option = f" --crm-settle-days {crm_days}" if crm_days is not None else ""
    lines = [
        begin,
        "## The next day behind a doubled history"
        + (f", the CRM lead days settled at {crm_days} days" if crm_days is not None else ""),
        "",
        f"Command: `.venv/bin/python benchmarks/longer.py --campaigns {res['campaigns']} "
        f"--history {h} --repeat {args.repeat}{option}` (after `benchmarks/history.py "
        f"--campaigns "
        f"{res['campaigns']} --history {h} --keep`). Measured {res['when']}, on "
        f"{machine(PACKAGES)}. See the "
        "script's docstring for how the history is doubled and what that changes.",
        "",
        f"The doubled workspace: {res['rows']['touchpoints']:,} touchpoints, "
        f"{res['rows']['conversions']:,} conversions, {res['rows']['crm']:,} CRM rows "
        f"({res['workspace_gb']:.1f} GB). Its first run (rebuilding the stored attribution, "
        f"rollups and label counts from the rows) took {res['first']['seconds']:.1f} s, peak "
        f"{res['first']['peak_gib']:.2f} GiB. A plain scan of the new day: {res['scan']:.3f} s."
        + (
            f" The {h}-day snapshot's touch index was of an older format and was built again "
            f"before the runs ({res['index_rebuilt']:.1f} s, not in any figure here)."
            if res.get("index_rebuilt")
            else ""
        ),
        "",
        f"| | {h} days of history | {2 * h + 1} days (doubled) |",
        "|---|---:|---:|",
        f"| next day (median of {args.repeat}) | **{short['seconds']:.1f} s** | "
        f"**{long['seconds']:.1f} s** |",
        f"| every run | {every['short']} s | {every['long']} s |",
        f"| peak memory | {short['peak_gib']:.2f} GiB | {long['peak_gib']:.2f} GiB |",
    ]
    for step in STEPS:
        a, b = short["timings"].get(step), long["timings"].get(step)
        if a is not None or b is not None:
            lines.append(f"| {step} | {a or 0:.1f} s | {b or 0:.1f} s |")
        if step == "state":  # the nowcast's part of it, per path
            for part in ("click_data", "click_model", "crm_data", "crm_model"):
                a, b = (r.get("nowcast", {}).get(part) for r in (short, long))
                if a is not None or b is not None:
                    lines.append(f"| · nowcast {part} | {a or 0:.1f} s | {b or 0:.1f} s |")
    lines += [
        f"| models | {', '.join(short['models'])} | {', '.join(long['models'])} |",
        "",
        f"Each day of history added **{slope:.3f} s** to the next day here "
        f"({h + 1} days more: {long['seconds'] - short['seconds']:+.1f} s). Every next day "
        "starts from a copy of its workspace, made just before it (so neither finds more of "
        "its workspace in the page cache than the other).",
        end,
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--campaigns", type=int, default=100)
    ap.add_argument("--history", type=int, default=89)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/signalloop-scale"))
    ap.add_argument("--max-gib", type=float, default=16.0)
    ap.add_argument(
        "--crm-settle-days",
        type=int,
        default=None,
        help="the nowcast's crm_settle_days for every run (default: the setting's, 180): "
        "below both histories, the CRM lead days drawn are the same for both",
    )
    ap.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = ap.parse_args()
    try:
        res = measure(
            args.campaigns,
            args.history,
            args.cache,
            args.max_gib,
            args.repeat,
            args.crm_settle_days,
        )
    except RunFailed as exc:
        sys.exit(f"longer: {exc}")
    publish(render(res, args), *_markers(args.crm_settle_days), write=not args.no_write, raw=res)


if __name__ == "__main__":
    main()
