"""Speed of the six core signal checks: signalloop (ibis on DuckDB) beside the anchor engines.

Run with ``.venv/bin/python benchmarks/checks_speed.py [--sizes 10000000 50000000]``.

The event logs come from ``shared/bench/gen_events.py`` (written to ``benchmarks/data/`` and
reused when present). For each size, each engine runs in its own process, so its peak RSS is
its own: the raw scan floor (DuckDB ``count(*), sum(cost)``), the six checks in DuckDB SQL
(``duckdb_sql`` of ``shared/bench/anchor_engines.py``), **signalloop** (the six via
:mod:`signalloop.checks.core` on ``ibis.duckdb.connect().read_parquet(path)``), pandas and
Great Expectations 1.x (the anchor classes; GE for the null rates, duplicate ids and UTM values
it can express). The fast engines take the median of 3 runs after a warm-up; pandas and GE run
once. signalloop's results must equal DuckDB SQL's (normalised) or the run fails. The results
go into ``BENCHMARKS.md`` between the ``checks-speed`` markers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from _report import machine
from _report import write_section as write_block

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
BENCH = Path(os.environ.get("SIGNALLOOP_SHARED_BENCH", ROOT.parent / "shared" / "bench"))
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
PACKAGES = (
    "duckdb",
    "ibis-framework",
    "sqlglot",
    "pyarrow",
    "pandas",
    "numpy",
    "great_expectations",
)
BEGIN = "<!-- checks-speed:begin -->"
END = "<!-- checks-speed:end -->"

CHECKS = ["a_null_rate", "b_dup_ids", "c_bad_utm", "d_dropout", "e_delay_q", "f_regress"]
LABELS = {
    "a_null_rate": "a null rates (11 columns)",
    "b_dup_ids": "b duplicate ids",
    "c_bad_utm": "c utm_source outside taxonomy",
    "d_dropout": "d daily dropouts (7-day median)",
    "e_delay_q": "e delay p50/p90/p99 per campaign",
    "f_regress": "f stage regressions",
}
GE_CHECKS = ["a_null_rate", "b_dup_ids", "c_bad_utm"]
ENGINES = ["scan", "duckdb", "signalloop", "pandas", "gx"]
FAST = {"scan", "duckdb", "signalloop"}
# Peak resident memory per million events measured in the anchor run (GiB), for the guard that
# keeps the in-memory engines from pushing the machine into the OOM killer.
GIB_PER_MROWS = {"pandas": 0.26, "gx": 0.43}
MARGIN_GIB = 1.5
REL_TOL = 1e-9


# ----------------------------------------------------------------------------- shared pieces
def anchors() -> ModuleType:
    """``anchor_engines`` from ``shared/bench`` (imported from where it is, never copied)."""
    if not (BENCH / "anchor_engines.py").exists():
        raise FileNotFoundError(f"anchor engines not found: {BENCH / 'anchor_engines.py'}")
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import anchor_engines  # type: ignore[import-not-found]

    mod: ModuleType = anchor_engines
    return mod


def generate(n: int, data: Path = DATA) -> Path:
    """The ``gen_events.py`` event log of ``n`` rows (generated once, then reused)."""
    data.mkdir(parents=True, exist_ok=True)
    path = data / f"events_{n}.parquet"
    if path.exists():
        return path
    tmp = path.with_suffix(".parquet.tmp")
    print(f"generating {path.name} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, str(BENCH / "gen_events.py"), str(n), str(tmp)], check=True)
    tmp.rename(path)
    return path


def signalloop_checks(t: Any) -> dict[str, Callable[[], Any]]:
    """The six checks of the anchor file as calls of :mod:`signalloop.checks.core` on ``t``."""
    from signalloop.checks import core

    a = anchors()
    return {
        "a_null_rate": lambda: core.null_rates(t, a.COLS),
        "b_dup_ids": lambda: core.duplicate_count(t, "event_id"),
        "c_bad_utm": lambda: core.outside_taxonomy(t, "utm_source", a.ALLOWED),
        "d_dropout": lambda: core.daily_dropouts(t, "ts", "campaign_id", ratio=0.2, window=7),
        "e_delay_q": lambda: core.delay_quantiles(t, "ts", "click_ts", "campaign_id"),
        "f_regress": lambda: core.stage_regressions(t, "user_id", "event_type", "ts", a.STAGES),
    }


def _day(v: Any) -> Any:
    """A calendar day from a date, a midnight datetime or a pandas Timestamp."""
    if hasattr(v, "to_pydatetime"):
        v = v.to_pydatetime()
    if isinstance(v, datetime):
        return v.date() if v.time() == datetime.min.time() and v.tzinfo is None else v
    return v


def _num(v: Any) -> Any:
    if v is None:
        return math.nan
    if isinstance(v, bool):
        return v
    if isinstance(v, int) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iu"):
        return int(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _key(v: Any) -> Any:
    """A group or value key: NULL-likes (None, NaN, pd.NA) become None."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if type(v).__name__ in {"NAType", "NaTType"}:
        return None
    return v


def normalise(check: str, value: Any) -> Any:
    """One canonical shape per check, whichever engine produced ``value``.

    a: ``{column: float}``; b, f: ``int``; c: ``{value or None: int}``;
    d: sorted ``[(group, date, int, float)]``; e: ``{group: (float, ...)}``.
    """
    if check == "a_null_rate":
        return {str(k): _num(v) for k, v in value.items()}
    if check in ("b_dup_ids", "f_regress"):
        return value if isinstance(value, dict) else int(value)
    if check == "c_bad_utm":
        return {_key(k): int(v) for k, v in value.items()}
    if check == "d_dropout":
        return sorted(
            ((_key(g), _day(d), int(c), _num(m)) for g, d, c, m in value),
            key=lambda r: (str(r[0]), str(r[1])),
        )
    if check == "e_delay_q":
        items = value.items() if isinstance(value, dict) else ((r[0], r[1:]) for r in value)
        return {_key(g): tuple(_num(x) for x in qs) for g, qs in items}
    raise ValueError(f"unknown check {check!r}")


def same(a: Any, b: Any, rel: float = REL_TOL) -> bool:
    """Equal, with floats compared to a relative tolerance (NaN equals NaN)."""
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], rel) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y, rel) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def mismatches(ours: dict[str, Any], ref: dict[str, Any], checks: list[str]) -> list[str]:
    """The checks whose (normalised) results differ, each with a short description."""
    out = []
    for c in checks:
        if c not in ours or c not in ref:
            continue
        if not same(ours[c], ref[c]):
            out.append(f"{c}: {_short(ours[c])} != {_short(ref[c])}")
    return out


def _short(v: Any, n: int = 300) -> str:
    s = repr(v)
    return s if len(s) <= n else s[:n] + "..."


# ----------------------------------------------------------------------------- one engine
def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def worker(engine: str, path: Path, repeats: int) -> dict[str, Any]:
    """Run one engine on ``path`` in this process; timings, normalised results, peak RSS."""
    a = anchors()
    out: dict[str, Any] = {"engine": engine, "checks": {}, "results": {}, "runs": 1}
    fns: dict[str, Callable[[], Any]]
    if engine == "scan":
        ctx = a.duckdb_sql.setup(str(path))
        fns = {"scan": lambda: a.duckdb_sql.scan_floor(ctx)}
    elif engine == "duckdb":
        ctx = a.duckdb_sql.setup(str(path))
        fns = {c: partial(getattr(a.duckdb_sql, c), ctx) for c in CHECKS}
    elif engine == "signalloop":
        import ibis

        def setup() -> Any:
            return ibis.duckdb.connect().read_parquet(str(path))

        out["setup_s"], t = _timed(setup)
        fns = signalloop_checks(t)
    elif engine == "pandas":
        out["setup_s"], ctx = _timed(lambda: a.pandas_mem.setup(str(path)))
        fns = {c: partial(getattr(a.pandas_mem, c), ctx) for c in CHECKS}
    elif engine == "gx":
        out["setup_s"], ctx = _timed(lambda: a.gx_pandas.setup(str(path)))
        fns = {c: partial(getattr(a.gx_pandas, c), ctx) for c in GE_CHECKS}
    else:
        raise ValueError(f"unknown engine {engine!r}")

    if engine in FAST:
        for fn in fns.values():  # warm-up
            fn()
        samples: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                dt, r = _timed(fn)
                samples[k].append(dt)
                out["results"][k] = r
        out["checks"] = {k: statistics.median(v) for k, v in samples.items()}
        out["samples"] = samples
        out["runs"] = repeats
    else:
        for k, fn in fns.items():
            print(f"  {engine} {k} ...", file=sys.stderr, flush=True)
            out["checks"][k], out["results"][k] = _timed(fn)
    out["results"] = {k: (normalise(k, v) if k in CHECKS else v) for k, v in out["results"].items()}
    out["peak_rss_gib"] = _peak_rss_gib()
    return out


def run_engine(engine: str, path: Path, repeats: int) -> dict[str, Any]:
    """:func:`worker` in a fresh process (its own peak RSS), with the load average around it."""
    with tempfile.TemporaryDirectory() as tmp:
        res = Path(tmp) / "out.pickle"
        cmd = [sys.executable, __file__, "--worker", engine, str(path), str(repeats), str(res)]
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        with res.open("rb") as fh:
            out: dict[str, Any] = pickle.load(fh)
    out["wall_s"] = wall
    out["load"] = (load0, os.getloadavg()[0])
    return out


def mem_available_gib() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    return math.inf


# ----------------------------------------------------------------------------- the report
def total(r: dict[str, Any] | None, checks: list[str] | None = None) -> float:
    if r is None:
        return math.nan
    cs = checks if checks is not None else [c for c in CHECKS if c in r["checks"]]
    return float(sum(r["checks"][c] for c in cs))


def _s(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "n/a"
    return f"{v:.2f} s" if v < 100 else f"{v:.0f} s"


def _x(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2f}" if v < 10 else f"{v:.0f}"


def size_section(n: int, path: Path, r: dict[str, Any], notes: list[str]) -> list[str]:
    sql, ours, pd_, gx, scan = (r.get(k) for k in ("duckdb", "signalloop", "pandas", "gx", "scan"))
    mb = path.stat().st_size / 1e6
    cols = [("DuckDB SQL", sql), ("signalloop", ours), ("pandas", pd_), ("GE 1.x", gx)]
    lines = [
        f"### {n:,} events ({mb:,.0f} MB Parquet)",
        "",
        "| seconds | " + " | ".join(c for c, _ in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for c in CHECKS:
        cells = [_s(e["checks"].get(c)) if e else "not run" for _, e in cols]
        lines.append(f"| {LABELS[c]} | " + " | ".join(cells) + " |")
    lines.append(
        "| **six checks** | "
        + " | ".join(
            (
                "not run"
                if e is None
                else f"**{_s(total(e))}**"
                if all(c in e["checks"] for c in CHECKS)
                else f"{_s(total(e))} (a, b, c only)"
            )
            for _, e in cols
        )
        + " |"
    )
    lines.append(
        "| load / setup | "
        + " | ".join(
            "not run"
            if e is None
            else _s(e.get("setup_s"))
            if "setup_s" in e
            else "none (lazy scan)"
            for _, e in cols
        )
        + " |"
    )
    lines.append(
        "| peak RSS | "
        + " | ".join("not run" if e is None else f"{e['peak_rss_gib']:.2f} GiB" for _, e in cols)
        + " |"
    )
    lines.append(
        "| runs | "
        + " | ".join(
            "not run"
            if e is None
            else f"median of {e['runs'] * e.get('rounds', 1)}: {e.get('rounds', 1)} "
            f"process(es) x {e['runs']} runs after a warm-up"
            if e["engine"] in FAST
            else "one run"
            for _, e in cols
        )
        + " |"
    )
    lines.append("")
    if scan:
        lines.append(
            f"Raw scan floor (DuckDB `count(*), sum(cost)`): {_s(scan['checks']['scan'])}, "
            f"peak RSS {scan['peak_rss_gib']:.2f} GiB."
        )
        lines.append("")
    ratio_sql = total(ours) / total(sql) if ours and sql else math.nan
    fastest = math.nan
    if ours and sql and "all_samples" in ours and "all_samples" in sql:
        fastest = sum(min(ours["all_samples"][c]) for c in CHECKS) / sum(
            min(sql["all_samples"][c]) for c in CHECKS
        )
    lines.append(
        f"- signalloop / DuckDB SQL: **{_x(ratio_sql)}** (target ≤ 1.2: "
        f"{'met' if ratio_sql <= 1.2 else 'NOT met'}); on the fastest run of each check "
        f"{_x(fastest)}"
    )
    if pd_ and ours:
        incl = (total(pd_) + pd_["setup_s"]) / total(ours)
        only = total(pd_) / total(ours)
        lines.append(
            f"- pandas / signalloop: **{_x(incl)}** with pandas' load, {_x(only)} checks only "
            f"(target ≥ 3: {'met' if incl >= 3 else 'NOT met'})"
        )
    if gx and ours:
        incl = (total(gx) + gx["setup_s"]) / total(ours, GE_CHECKS)
        only = total(gx) / total(ours, GE_CHECKS)
        nulls = gx["checks"]["a_null_rate"] / ours["checks"]["a_null_rate"]
        vs_six = (total(gx) + gx["setup_s"]) / total(ours)
        lines.append(
            f"- GE / signalloop on the three checks GE expresses (a, b, c): **{_x(incl)}** with "
            f"GE's load and setup, {_x(only)} checks only (target ≥ 20: "
            f"{'met' if incl >= 20 else 'NOT met'}); null rates alone {_x(nulls)}; GE's three "
            f"with its load against signalloop's six {_x(vs_six)}. GE's b is its "
            "`ExpectColumnValuesToBeUnique` (rows in duplicate groups), not the surplus count"
        )
    if ours:
        lines.append(
            f"- signalloop peak RSS {ours['peak_rss_gib']:.2f} GiB"
            + (
                f" ({'under' if ours['peak_rss_gib'] < 4 else 'NOT under'} 4 GiB)"
                if n >= 50_000_000
                else ""
            )
        )
    lines += [f"- {x}" for x in notes]
    lines.append("")
    return lines


def write_section(body: list[str], md: Path = BENCHMARKS_MD) -> None:
    """Replace the ``checks-speed`` block of ``md`` (or append it); other sections stay."""
    write_block("\n".join([BEGIN, *body, END]), BEGIN, END, md)


# ----------------------------------------------------------------------------- driver
def pair(
    path: Path, rounds: int, repeats: int, got: dict[str, list[dict[str, Any]]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``rounds`` more rounds of DuckDB SQL and signalloop, in alternating order, added to
    ``got``; per check the median of all runs of all rounds so far."""
    for _ in range(rounds):
        i = len(got["duckdb"])
        order = ["duckdb", "signalloop"] if i % 2 == 0 else ["signalloop", "duckdb"]
        for e in order:
            print(f"  {e} (round {i + 1}) ...", file=sys.stderr, flush=True)
            got[e].append(run_engine(e, path, repeats))
        bad = mismatches(got["signalloop"][-1]["results"], got["duckdb"][-1]["results"], CHECKS)
        if bad:
            raise SystemExit(
                "signalloop's results differ from the DuckDB SQL anchor's:\n  " + "\n  ".join(bad)
            )
    merged = []
    for e in ("duckdb", "signalloop"):
        runs = got[e]
        m = dict(runs[-1])
        m["checks"] = {
            c: statistics.median([x for r in runs for x in r["samples"][c]]) for c in CHECKS
        }
        m["all_samples"] = {c: [x for r in runs for x in r["samples"][c]] for c in CHECKS}
        m["peak_rss_gib"] = max(r["peak_rss_gib"] for r in runs)
        m["rounds"] = len(runs)
        m["load"] = (min(r["load"][0] for r in runs), max(r["load"][1] for r in runs))
        merged.append(m)
    return merged[0], merged[1]


def bench_size(n: int, args: argparse.Namespace) -> tuple[Path, dict[str, Any], list[str]]:
    path = generate(n, args.data)
    r: dict[str, Any] = {}
    notes: list[str] = []
    engines = args.engines
    print(f"{n:,} events: {path}", file=sys.stderr, flush=True)
    if "scan" in engines:
        r["scan"] = run_engine("scan", path, args.repeats)
    if "duckdb" in engines and "signalloop" in engines:
        got: dict[str, list[dict[str, Any]]] = {"duckdb": [], "signalloop": []}
        r["duckdb"], r["signalloop"] = pair(path, args.pair_rounds, args.repeats, got)
        extra = 0
        while total(r["signalloop"]) / total(r["duckdb"]) > 1.2 and extra < args.extra_rounds:
            extra += 1
            print("  ratio above 1.2: re-running the pair", file=sys.stderr, flush=True)
            r["duckdb"], r["signalloop"] = pair(path, 2, args.repeats, got)
        if extra:
            notes.append(
                f"the signalloop / DuckDB SQL pair was re-run {extra} time(s) because the "
                "ratio came out above 1.2; the figures are over all rounds"
            )
    for e in ("pandas", "gx"):
        if e not in engines:
            continue
        need = GIB_PER_MROWS[e] * n / 1e6 + MARGIN_GIB
        avail = mem_available_gib()
        if need > avail and not args.force_memory:
            name = "GE" if e == "gx" else "pandas"
            notes.append(
                f"{name} not run at this size: it needs about {need - MARGIN_GIB:.0f} GiB "
                f"resident (anchor run) and {avail:.1f} GiB was available with other work "
                "on the machine"
            )
            continue
        r[e] = run_engine(e, path, 1)
    ref = r.get("duckdb", {}).get("results")
    if ref:
        for e, checks in (("pandas", CHECKS), ("gx", ["a_null_rate", "c_bad_utm"])):
            if e in r:
                bad = mismatches(r[e]["results"], ref, checks)
                name = "GE" if e == "gx" else e
                if bad:
                    notes.append(f"{name} results differ from DuckDB SQL: " + "; ".join(bad))
                else:
                    what = "six results" if e == "pandas" else "null rates and UTM counts"
                    owner = "pandas'" if e == "pandas" else "GE's"
                    notes.append(f"{owner} {what} equal DuckDB SQL's")
    spread = [
        (max(v) / min(v), e, c, min(v), max(v))
        for e in ("duckdb", "signalloop")
        if e in r
        for c, v in r[e]["all_samples"].items()
        if min(v) > 0
    ]
    if spread and max(spread)[0] > 1.5:
        x, e, c, lo, hi = max(spread)
        notes.append(
            f"runs of the same check varied by up to {x:.1f}x ({e} {c}: {lo:.2f} to {hi:.2f} s) "
            "with other work on the machine: read the median and fastest-run ratios together"
        )
    loads = [x for e in r.values() for x in e["load"]]
    if loads:
        notes.append(
            f"1-minute load average between {min(loads):.1f} and {max(loads):.1f} around the "
            f"runs (2 cores = full at 2.0)"
            + (
                ": other work was running on the machine, so timings are noisy"
                if max(loads) > 2.5
                else ""
            )
        )
    return path, r, notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000_000, 50_000_000])
    ap.add_argument("--engines", nargs="+", choices=ENGINES, default=ENGINES)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of the fast engines")
    ap.add_argument(
        "--pair-rounds",
        type=int,
        default=2,
        help="processes per engine for the DuckDB SQL / signalloop pair, in alternating order",
    )
    ap.add_argument(
        "--extra-rounds", type=int, default=1, help="re-runs of the pair if its ratio is > 1.2"
    )
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--force-memory", action="store_true", help="skip the memory guard")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        engine, path, repeats, out = args.worker
        res = worker(engine, Path(path), int(repeats))
        with open(out, "wb") as fh:
            pickle.dump(res, fh)
        return

    started = datetime.now(UTC)
    cmd = "`.venv/bin/python benchmarks/checks_speed.py" + (
        "`"
        if args.sizes == [10_000_000, 50_000_000]
        else f" --sizes {' '.join(map(str, args.sizes))}`"
    )
    body = [
        "## Signal checks speed",
        "",
        f"Command: {cmd}. Measured {started:%Y-%m-%d} on {machine(PACKAGES)}.",
        "",
        "Data: the event log of `shared/bench/gen_events.py` (impressions, clicks, leads and CRM "
        "stages in one table; 200 campaigns, 90 days, planted defects). The six checks are the "
        "ones of `shared/bench/anchor_engines.py`, whose docstring defines them; DuckDB SQL, "
        "pandas and GE are its classes, run unchanged. signalloop is `signalloop.checks.core` "
        "(one ibis expression per check) on `ibis.duckdb.connect().read_parquet(path)`; its "
        "six results are checked equal to DuckDB SQL's in every run. Each engine runs in its own "
        "process (peak RSS = `ru_maxrss` of that process, warm-up included). pandas and GE read "
        "the whole file into memory first (load / setup row); DuckDB and signalloop scan the "
        "Parquet file on every check. Absolute times are not comparable with the figures in "
        "`shared/bench/README.md` (measured with duckdb 2.0.0; this project pins duckdb < 2 for "
        "ibis 12, and other work may share the machine): the targets are ratios within one run.",
        "",
    ]
    summary: list[str] = []
    raw_runs: dict[int, dict[str, Any]] = {}
    for n in args.sizes:
        path, r, notes = bench_size(n, args)
        raw_runs[n] = r
        body += size_section(n, path, r, notes)
        ours, sql = r.get("signalloop"), r.get("duckdb")
        if ours and sql:
            summary.append(
                f"{n:,}: signalloop {total(ours):.2f} s, DuckDB SQL {total(sql):.2f} s, "
                f"ratio {total(ours) / total(sql):.2f}, signalloop RSS "
                f"{ours['peak_rss_gib']:.2f} GiB"
            )
    raw = {
        str(n): {e: {k: v for k, v in x.items() if k != "results"} for e, x in r.items()}
        for n, r in raw_runs.items()
    }
    args.data.mkdir(parents=True, exist_ok=True)
    (args.data / "checks_speed_last.json").write_text(json.dumps(raw, indent=1, default=str))
    text = "\n".join(body)
    print(text)
    print("\n".join(summary), file=sys.stderr)
    if not args.no_write:
        write_section(body)
        print(f"wrote the checks-speed section of {BENCHMARKS_MD}", file=sys.stderr)


if __name__ == "__main__":
    main()
