"""The next day's ``signalloop run`` against the length of the history behind it.

``scale.py`` grows the account (campaigns), so the new day and the history grow together. This
holds the new day fixed and grows only the history: from the same cached simulation as
``scale.py`` (``SimulationConfig(days=90, campaigns=N, seed=3)``, full shape; ``--days``
another length), each history length H takes days ``90-H .. 89`` as the first run's inbox
(a fresh workspace, run as of day 89) and the very same day 90 as the next day (run as of
day 90). What the next day costs beyond a plain scan of its rows, and whether that grows
with H, is the issue's target: "the next day's cost growing with the new day's rows (at
most 2x a plain scan of them plus a fixed part), not with the history".

The figures: per H, the first run, the next day step by step and its peak memory, and a
least-squares line through the next days, ``next day = a + b * H``: ``b`` is what each day of
history adds to every next day, ``a`` the part that does not depend on history at all.

``--repeat N`` runs each next day N times from a copy of the same first run's workspace and
reports the median (this host's speed swings by about 10% from hour to hour).

``--against SRC`` (the ``src`` folder of another checkout, e.g. a ``git worktree`` of an
earlier commit) runs each next day with that code too, on ``PYTHONPATH``, alternating with
this checkout's from the same first run's workspace (``--repeat`` times each): the two codes
in the same minutes, which this host's swing between hours would otherwise blur.

``--retrain-day`` also runs, from the same first run's workspace with its models made a
retraining cadence (:data:`signalloop.run.DEFAULT_RETRAIN_DAYS`) older, the next day on which
they are due: once as the run does it by default (``[run] retrain = "inline"``: refitted and
backtested inside the run), once with ``retrain = "separate"`` (the run only lists them as due)
followed by ``signalloop model refresh`` in a process of its own, the job that then refits
them.

``--keep`` leaves each first run's workspace in ``history-<H>d/before-next-day/`` (what
``keycheck.py`` measures on).

Run: ``.venv/bin/python benchmarks/history.py --campaigns 1000 --history 45,67,89``
(``make bench-history`` runs 100 campaigns); the accounts are cached as ``scale.py`` caches
them, in ``--cache`` (default ``/tmp/signalloop-scale``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from _report import log, machine, publish
from scale import (
    _LAUNCH,
    _MAXRSS,
    KIND_TIME,
    PACKAGES,
    STEPS,
    RunFailed,
    account_folder,
    plain_scan,
    run_once,
    simulate,
)

BEGIN, END = "<!-- history:begin -->", "<!-- history:end -->"


def window(folder: Path, first: date, last: date, dest: Path) -> tuple[Path, Path]:
    """Days ``first .. last - 1`` (the history) and ``last`` (the new day) as two inboxes."""
    hist, new = dest / "history", dest / "new-day"
    con = duckdb.connect()
    for sub in (hist, new):
        shutil.rmtree(sub, ignore_errors=True)
        sub.mkdir(parents=True)
    for kind, col in KIND_TIME.items():
        src = folder / "all" / f"{kind}.csv"
        if not src.exists():
            continue
        rel, day = f"read_csv('{src}', all_varchar=true)", f"substr({col}, 1, 10)"
        where = {hist: f"{day} >= '{first}' AND {day} < '{last}'", new: f"{day} = '{last}'"}
        for sub, cond in where.items():
            con.execute(f"COPY (SELECT * FROM {rel} WHERE {cond}) TO '{sub / kind}.csv' (HEADER)")
    return hist, new


def _rows(inbox: Path, kind: str) -> int:
    f = inbox / f"{kind}.csv"
    if not f.exists():
        return 0
    found = duckdb.connect().execute(f"SELECT count(*) FROM read_csv('{f}')").fetchone()
    return int(found[0]) if found else 0


def _workspace_files(store: Path) -> list[Path]:
    """The workspace file, its WAL, and the folders named after it (models, touch index, run
    records)."""
    return [
        store,
        Path(f"{store}.wal"),
        store.with_suffix(".models"),
        store.with_suffix(".touches"),
        Path(f"{store}.runs"),
    ]


def _copy(files: list[Path], to: Path) -> None:
    """``files`` (those that exist) into the folder ``to``, replacing what it held."""
    shutil.rmtree(to, ignore_errors=True)
    to.mkdir(parents=True)
    for f in files:
        if f.is_dir():
            shutil.copytree(f, to / f.name)
        elif f.exists():
            shutil.copy2(f, to / f.name)


def _restore(saved: Path, store: Path) -> None:
    """The workspace as :func:`_copy` saved it in ``saved``."""
    for f in _workspace_files(store):
        if f.is_dir():
            shutil.rmtree(f)
        else:
            f.unlink(missing_ok=True)
    for f in saved.iterdir():
        (shutil.copytree if f.is_dir() else shutil.copy2)(f, store.parent / f.name)


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median time, with every run's ``seconds_all``."""
    median = sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]
    return {**median, "seconds_all": [round(r["seconds"], 2) for r in runs]}


def next_days(
    store: Path,
    new: Path,
    as_of: date,
    out: Path,
    max_gib: float,
    repeat: int,
    retrain_day: bool = False,
    against: Path | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """The next day run ``repeat`` times, each from the same first run's workspace (copied
    aside first): the run of median time, with every run's ``seconds_all``. This host's speed
    swings by about 10% from one hour to the next, more than what a day of history adds.
    ``retrain_day``: also :func:`retraining_day` from that workspace (under ``retrain``).
    ``against``: another checkout's ``src``; each of this code's runs is followed by one of
    that code's (``PYTHONPATH``, reports under ``<out>-against``), their median in
    ``against``. ``keep``: leave the first run's workspace in ``before-next-day/``."""
    saved = store.parent / "before-next-day"
    if repeat > 1 or retrain_day or against is not None or keep:
        _copy(_workspace_files(store), saved)
    runs, others = [], []
    for i in range(repeat):
        if i:
            _restore(saved, store)
        runs.append(run_once(store, new, as_of, out, max_gib))
        if against is not None:
            _restore(saved, store)
            other = Path(f"{out}-against")
            others.append(run_once(store, new, as_of, other, max_gib, {"PYTHONPATH": str(against)}))
    doc = _median(runs)
    if others:
        doc["against"] = _median(others)
    if retrain_day:
        doc["retrain"] = retraining_day(saved, store, new, as_of, out.parent, max_gib)
    if not keep:
        shutil.rmtree(saved, ignore_errors=True)
    return doc


def _age_models(store: Path, days: int) -> None:
    """Make the models saved beside ``store`` look trained ``days`` earlier (due now)."""
    for card in store.with_suffix(".models").glob("*/card.json"):
        doc = json.loads(card.read_text())
        trained = date.fromisoformat(doc["data"]["as_of"])
        doc["data"]["as_of"] = (trained - timedelta(days=days)).isoformat()
        card.write_text(json.dumps(doc, indent=2))


def refresh_once(store: Path, as_of: date, out: Path) -> dict[str, Any]:
    """``signalloop model refresh`` in its own process: wall seconds, peak RSS, its entries."""
    cmd = [
        str(Path(sys.executable).parent / "signalloop"),
        "model",
        "refresh",
        "--db",
        str(store),
        "--as-of",
        as_of.isoformat(),
        "--json",
    ]
    out.mkdir(parents=True, exist_ok=True)
    os.sync()
    t0 = time.perf_counter()
    env = dict(os.environ, SIGNALLOOP_PROGRESS="plain")
    with (out / "stderr.log").open("wb") as sink, (out / "refresh.json").open("wb") as doc:
        code = subprocess.call(
            [sys.executable, "-c", _LAUNCH, *cmd], stdout=doc, stderr=sink, env=env
        )
    seconds = time.perf_counter() - t0
    err = (out / "stderr.log").read_text(errors="replace")
    if code != 0:
        raise RunFailed(f"{' '.join(cmd)} exited {code}:\n{err[-3000:]}")
    peak = _MAXRSS.findall(err)
    models = json.loads((out / "refresh.json").read_text())["models"]
    return {
        "seconds": seconds,
        "peak_gib": int(peak[-1]) / 1024**2 if peak else float("nan"),
        "models": [f"{m['outcome']} {m['status']}" for m in models],
    }


def retraining_day(
    saved: Path, store: Path, new: Path, as_of: date, out: Path, max_gib: float
) -> dict[str, Any]:
    """The next day with the models due, from the first run's workspace in ``saved``:
    refitted inside the run (``inline``), and left to ``signalloop model refresh``
    (``separate``: the run, then the refresh in its own process)."""
    from signalloop.run import DEFAULT_RETRAIN_DAYS

    doc: dict[str, Any] = {}
    for mode in ("inline", "separate"):
        _restore(saved, store)
        _age_models(store, DEFAULT_RETRAIN_DAYS)
        config = out / f"retrain-{mode}.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f'[run]\nretrain = "{mode}"\n')
        env = {"SIGNALLOOP_CONFIG": str(config)}
        log(f"retraining day ({mode}) as of {as_of}")
        doc[mode] = run_once(store, new, as_of, out / f"retrain-{mode}", max_gib, env_extra=env)
    log(f"signalloop model refresh as of {as_of}")
    doc["refresh"] = refresh_once(store, as_of, out / "retrain-refresh")
    return doc


def measure(
    n: int,
    lengths: list[int],
    days: int,
    seed: int,
    shard: int,
    cache: Path,
    max_gib: float,
    repeat: int = 1,
    retrain_day: bool = False,
    against: Path | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    folder, start = account_folder(cache, n, days, seed)
    simulate(n, days, seed, shard, folder, start)
    last = start + timedelta(days=days - 1)
    out: list[dict[str, Any]] = []
    new: Path | None = None
    for h in lengths:
        dest = folder / f"history-{h}d"
        hist, new = window(folder, last - timedelta(days=h), last, dest)
        store = dest / "ws.duckdb"
        for p in (store, Path(f"{store}.wal")):
            p.unlink(missing_ok=True)
        for sub in ("ws.models", "ws.duckdb.runs", "reports"):
            shutil.rmtree(dest / sub, ignore_errors=True)
        log(f"{n} campaigns, {h} days of history: first run as of {last - timedelta(days=1)}")
        first = run_once(store, hist, last - timedelta(days=1), dest / "reports" / "first", max_gib)
        log(f"{n} campaigns, {h} days of history: next day as of {last}")
        nxt = next_days(
            store, new, last, dest / "reports" / "next", max_gib, repeat, retrain_day, against, keep
        )
        if nxt["quarantined"] or not nxt["loaded"]:  # a next day that read nothing new
            raise RunFailed(
                f"the next day ({new}) loaded {nxt['loaded']:,} rows and quarantined "
                f"{nxt['quarantined']:,}: see {dest / 'reports' / 'next' / 'report.json'}"
            )
        out.append(
            {
                "history_days": h,
                "touchpoints": _rows(hist, "touchpoints"),
                "first": first,
                "next": nxt,
                "workspace_mb": store.stat().st_size / 1e6,
            }
        )
        shutil.rmtree(hist)  # the account's CSVs stay in all/; the workspace stays for a look
    assert new is not None
    scan = min(plain_scan(new) for _ in range(3))
    new_rows = sum(_rows(new, k) for k in KIND_TIME)
    return {"campaigns": n, "runs": out, "scan": scan, "new_rows": new_rows}


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares ``y = a + b * x``: ``(a, b)``; one point gives ``(y, 0)``.

    >>> fit_line([30, 60, 90], [10.0, 13.0, 16.0])
    (7.0, 0.1)
    """
    if len(xs) < 2:
        return (ys[0] if ys else 0.0), 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return round(my - b * mx, 10), round(b, 10)


def _next_cell(nxt: dict[str, Any]) -> str:
    """The next day's seconds, with the range of its repeats (``--repeat``)."""
    every = nxt.get("seconds_all") or [nxt["seconds"]]
    span = f" ({min(every):.1f}-{max(every):.1f})" if len(every) > 1 else ""
    return f"{nxt['seconds']:.1f} s{span}"


def render(result: dict[str, Any], args: argparse.Namespace) -> str:
    runs, n, scan, d = result["runs"], result["campaigns"], result["scan"], args.days
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    a, b = fit_line([r["history_days"] for r in runs], [r["next"]["seconds"] for r in runs])
    step_lines = []
    for step in STEPS:
        cells = [f"{r['next']['timings'].get(step, 0.0):.1f} s" for r in runs]
        step_lines.append(f"| {step.replace('_', ' + ')} | " + " | ".join(cells) + " |")
    rest = [
        r["next"]["seconds"] - sum(r["next"]["timings"].get(s, 0.0) for s in STEPS) for r in runs
    ]
    lines = [
        BEGIN,
        "## History: the next day against the length of the history behind it",
        "",
        f"Command: `.venv/bin/python benchmarks/history.py --campaigns {n} --history "
        f"{args.history}"
        + ("" if d == 90 else f" --days {d}")
        + ("" if args.repeat == 1 else f" --repeat {args.repeat}")
        + (" --retrain-day" if getattr(args, "retrain_day", False) else "")
        + (f" --against {args.against}" if getattr(args, "against", None) else "")
        + f"`. Measured {stamp} on "
        f"{machine(PACKAGES)}.",
        "",
        f"One simulated account ({n:,} campaigns, {d} days, full shape, seed {args.seed}); "
        f"each history length H ingests days {d}-H .. {d - 1} into a fresh workspace (first run "
        f"as of day {d - 1}), then the same day {d} (next day, as of day {d}). The new day is "
        "the same "
        f"{result['new_rows']:,} rows every time; a plain DuckDB scan of them (count and sum of "
        f"every numeric column) takes {scan:.3f} s.",
        "",
        *(
            [
                f"Each next day ran {args.repeat} times from a copy of the same first run's "
                "workspace: the table gives the median run (its steps below) and the range.",
                "",
            ]
            if args.repeat > 1
            else []
        ),
        "| history | touchpoints | first run | next day | next day / scan | peak (next day) "
        "| workspace |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['history_days']} days | {r['touchpoints']:,} | {r['first']['seconds']:.1f} s "
            f"| {_next_cell(r['next'])} | {r['next']['seconds'] / scan:,.0f}x | "
            f"{r['next']['peak_gib']:.2f} GiB | {r['workspace_mb']:,.0f} MB |"
        )
    lines += [
        "",
        "The next day by step:",
        "",
        "| step | " + " | ".join(f"{r['history_days']} days" for r in runs) + " |",
        "|---|" + "---:|" * len(runs),
        *step_lines,
        "| the rest (start-up, report) | " + " | ".join(f"{x:.1f} s" for x in rest) + " |",
        "| models | " + " | ".join(", ".join(r["next"]["models"]) for r in runs) + " |",
        "",
        (
            f"Least squares through the next days: **{a:.1f} s {'-' if b < 0 else '+'} "
            f"{abs(b):.3f} s per day of history** "
            f"(2x the plain scan is {2 * scan:.2f} s). Over the {runs[-1]['history_days']} days "
            f"measured, history adds {b * runs[-1]['history_days']:.1f} s of the "
            f"{runs[-1]['next']['seconds']:.1f} s."
            if len(runs) > 1
            else f"One history length gives no slope: pass two or more to `--history` for what "
            f"each day of history adds (2x the plain scan is {2 * scan:.2f} s)."
        ),
        "",
        *_against_lines(runs, args),
        *_retrain_lines(runs, scan),
        END,
    ]
    return "\n".join(lines)


def _against_lines(runs: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """This code's next days beside ``--against``'s, run alternately (if it was given)."""
    if not any("against" in r["next"] for r in runs):
        return []
    lines = [
        f"The same next days with the code of `{args.against}` (on `PYTHONPATH`), each run "
        "right after one of this checkout's, from the same first run's workspace (medians, "
        "with the range):",
        "",
        "| history | this checkout | `--against` | difference | state, this / against |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        mine, other = r["next"], r["next"]["against"]
        lines.append(
            f"| {r['history_days']} days | {_next_cell(mine)} | {_next_cell(other)} | "
            f"{mine['seconds'] - other['seconds']:+.1f} s | "
            f"{mine['timings'].get('state', 0.0):.1f} / "
            f"{other['timings'].get('state', 0.0):.1f} s |"
        )
    if len(runs) > 1:
        xs = [r["history_days"] for r in runs]
        _, b_mine = fit_line(xs, [r["next"]["seconds"] for r in runs])
        _, b_other = fit_line(xs, [r["next"]["against"]["seconds"] for r in runs])
        lines += [
            "",
            f"Per day of history: {b_mine:.3f} s with this checkout, {b_other:.3f} s with "
            "`--against`.",
        ]
    return [*lines, ""]


def _retrain_lines(runs: list[dict[str, Any]], scan: float) -> list[str]:
    """The retraining day's table (``--retrain-day``), if it was measured."""
    if not any("retrain" in r["next"] for r in runs):
        return []
    lines = [
        "The next day on which the models are due (their cards made "
        "`signalloop.run.DEFAULT_RETRAIN_DAYS` older), from the same first run's workspace: "
        'refitted inside the run (`[run] retrain = "inline"`, the default), or left to '
        '`signalloop model refresh` (`retrain = "separate"`), run after it in its own process:',
        "",
        "| history | next day, models due, inline | of which models | peak | next day, "
        "separate | `model refresh` | its peak |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        t = r["next"].get("retrain")
        if not t:
            continue
        inline, sep, ref = t["inline"], t["separate"], t["refresh"]
        lines.append(
            f"| {r['history_days']} days | {inline['seconds']:.1f} s "
            f"({inline['seconds'] / scan:,.0f}x the scan) "
            f"| {inline['timings'].get('models', 0.0):.1f} s | {inline['peak_gib']:.2f} GiB "
            f"| {sep['seconds']:.1f} s ({sep['seconds'] / scan:,.0f}x) | {ref['seconds']:.1f} s "
            f"| {ref['peak_gib']:.2f} GiB |"
        )
    said = []
    for r in runs:
        t = r["next"].get("retrain")
        if t:
            inline, sep, ref = (
                ", ".join(t[k]["models"]) for k in ("inline", "separate", "refresh")
            )
            said.append(f"{r['history_days']} days: inline {inline}; separate {sep}, then {ref}")
    lines += ["", "Models: " + "; ".join(said) + ".", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaigns", type=int, default=100)
    ap.add_argument("--history", default="45,67,89", help="comma-separated days of history")
    ap.add_argument("--days", type=int, default=90, help="days the account is simulated for")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--shard", type=int, default=100, help="campaigns per simulated shard")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/signalloop-scale"))
    ap.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    ap.add_argument("--max-gib", type=float, default=16.0)
    ap.add_argument(
        "--repeat", type=int, default=1, help="next days per history, from the same first run"
    )
    ap.add_argument(
        "--retrain-day",
        action="store_true",
        help="also the next day with the models due, inline and with model refresh apart",
    )
    ap.add_argument(
        "--against",
        type=Path,
        help="another checkout's src folder: each next day also runs with it, alternately",
    )
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep each first run's workspace in history-<H>d/before-next-day (keycheck.py)",
    )
    args = ap.parse_args()
    if args.against is not None and not (args.against / "signalloop" / "__init__.py").exists():
        ap.error(f"--against: expected a src folder holding signalloop/, got {args.against}")
    if args.repeat < 1:
        ap.error(f"--repeat: expected 1 or more, got {args.repeat}")
    lengths = sorted({int(h) for h in args.history.split(",")})
    if not lengths or lengths[0] < 1 or lengths[-1] > args.days - 1:
        ap.error(f"--history: expected days between 1 and {args.days - 1}, got {args.history}")
    try:
        result = measure(
            args.campaigns,
            lengths,
            args.days,
            args.seed,
            args.shard,
            args.cache,
            args.max_gib,
            args.repeat,
            args.retrain_day,
            args.against,
            args.keep,
        )
    except RunFailed as exc:
        sys.exit(f"history: {exc}")
    publish(render(result, args), BEGIN, END, write=not args.no_write, raw=result)


if __name__ == "__main__":
    main()
