"""Models at scale: sampled negatives against the unsampled fit, and the models step's time.

Three measurements, in one run (issue 14, item 2):

1. **Quality of the sampled fit** (the cap forced below the training rows so the comparison is
   real): the live AUC on the time split's holdout (trained on the first 70% of rows, scored
   on the last 30%), calibration (ECE, mean predicted against the base rate) of
   ``ConversionModel(max_rows=cap)`` against ``max_rows=None``, over several random states
   (LightGBM's bagging depends on it too, so the unsampled fit varies as well; each sampled
   fit is compared with the unsampled fit of the same random state), on

   * the simulator: ``SimulationConfig(days=90, campaigns=30, seed=3)``, the ``conversion``
     frame, with the oracle's AUC on the same holdout rows beside it;
   * UCI Bank Marketing (``../shared/data/bank_marketing``, ``duration`` excluded), read as
     ``benchmarks/models_quality.py`` reads it.

2. **Threads or processes**: two capped fits of the simulator's training rows one after the
   other with LightGBM on one thread, one after the other on two threads, and side by side in
   two processes of one thread each (joblib, as the backtest runs its fits).

3. **The models step per outcome** at 10, 30 and 100 campaigns (90 days, seed 3; the account
   simulated, written and ingested once into a workspace file under ``--cache``), each timed
   in a fresh process:

   * ``before``: the code of commit ``--before`` (the last one before this change, extracted
     with ``git archive``): ``run.refresh_models`` for that outcome, i.e. ``fit_workspace``
     (frame, 70/30 check, full fit) then ``backtest_workspace`` (frame again, random split,
     time split, cadence refits in processes) and ``backtest.json``;
   * ``shared`` (``--shared`` sizes only): this code's ``refresh_workspace`` with sampling
     off (``max_rows=None``, every holdout row scored): one frame and one pool of fits;
   * ``after``: ``refresh_workspace`` with its defaults (``max_rows`` 250,000, holdouts
     scored on 500,000 rows at most).

Run: ``make bench-models-scale`` (= ``.venv/bin/python benchmarks/models_scale.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _report import log, machine, write_section

ROOT = Path(__file__).resolve().parents[1]
BANK = ROOT.parent / "shared" / "data" / "bank_marketing" / "bank-additional-full.csv"
BEGIN, END = "<!-- models-scale:begin -->", "<!-- models-scale:end -->"
PACKAGES = ("lightgbm", "scikit-learn", "joblib", "duckdb", "ibis-framework")
#: The last commit before negative sampling and the shared refresh (the "before" code).
BEFORE = "39c449a"
DAYS, SEED, QUALITY_CAMPAIGNS = 90, 3, 30
SIM_CAPS = (250_000, 100_000)
BANK_CAPS = (20_000, 10_000)
#: Random states per data set: the bank's fits take a second, and its time split's AUC moves
#: by about 0.02 with LightGBM's bagging seed alone, so it needs many to resolve 0.005.
SIM_STATES, BANK_STATES = (0, 1, 2), tuple(range(20))
HOLDOUT = 0.3
#: Rounds of the threads-or-processes measurement.
REPEATS = 2


# -- accounts ---------------------------------------------------------------------------------
def account(n: int, cache: Path) -> Path:
    """A workspace file holding ``SimulationConfig(days=90, campaigns=n, seed=3)`` (cached),
    with the simulation's oracle beside it."""
    folder = cache / f"c{n}"
    db = folder / "ws.duckdb"
    if (folder / ".done").exists():
        return db
    from signalloop import simulate as sim
    from signalloop.contract import KINDS
    from signalloop.ingest import ingest_file
    from signalloop.store import Workspace

    if folder.exists():
        shutil.rmtree(folder)
    t0 = time.perf_counter()
    log(f"simulating {n} campaigns")
    result = sim.simulate(sim.SimulationConfig(days=DAYS, campaigns=n, seed=SEED))
    paths = sim.write(result, folder / "data", oracle=True)
    del result
    with Workspace(db) as ws:
        for kind in KINDS:
            if kind in paths:
                ingest_file(ws, kind, paths[kind], now=datetime(2030, 1, 1))
    (folder / ".done").write_text(json.dumps({"seconds": time.perf_counter() - t0}))
    return db


def last_day(db: Path) -> date:
    from signalloop.store import Workspace

    with Workspace(db) as ws:
        day: date = ws.con.execute("SELECT max(ts)::DATE FROM touchpoints").fetchone()[0]  # type: ignore[index]
    return day


# -- 1. quality -------------------------------------------------------------------------------
def compare_caps(
    X: pd.DataFrame,
    y: np.ndarray,
    caps: tuple[int, ...],
    oracle: np.ndarray | None,
    states: tuple[int, ...],
) -> dict[str, Any]:
    """Time split (70/30) fits with each cap and without one, for each random state."""
    from sklearn.metrics import roc_auc_score

    from signalloop.models.estimator import ConversionModel
    from signalloop.models.metrics import scores

    cut = round(len(y) * (1 - HOLDOUT))
    yh = y[cut:]
    out: dict[str, Any] = {"train_rows": cut, "train_positives": int(y[:cut].sum()), "runs": []}
    out["holdout_rows"], out["holdout_base_rate"] = len(yh), float(yh.mean())
    if oracle is not None:
        known = ~np.isnan(oracle[cut:])
        out["oracle_auc"] = float(roc_auc_score(yh[known], oracle[cut:][known]))
        out["oracle_scored"] = int(known.sum())
    out["states"] = list(states)
    for rs in states:
        for cap in (None, *caps):
            t0 = time.perf_counter()
            m = ConversionModel(max_rows=cap, random_state=rs).fit(X.iloc[:cut], y[:cut])
            seconds = time.perf_counter() - t0
            s = scores(yh, m.predict(X.iloc[cut:]))
            run = {"cap": cap, "random_state": rs, "seconds": seconds, "trained_on": m.n_sampled_}
            run.update({k: s[k] for k in ("auc", "log_loss", "ece", "mean_predicted")})
            run["calibration"] = m.calibration_method_
            run["negative_weight"] = m.negative_weight_
            out["runs"].append(run)
            log(
                f"  cap {cap} rs {rs}: AUC {s['auc']:.4f}, ECE {s['ece']:.4f}, "
                f"mean p {s['mean_predicted']:.4f} (base {yh.mean():.4f}), {seconds:.1f} s"
            )
    return out


def quality_sim(db: Path) -> tuple[dict[str, Any], pd.DataFrame, np.ndarray]:
    from signalloop.models.features import build_frame
    from signalloop.store import Workspace

    with Workspace(db) as ws:
        tf = build_frame(ws, "conversion")
    oracle = pd.read_parquet(db.parent / "data" / "oracle.parquet").set_index("touch_id")
    p = oracle["p_conversion"].reindex(tf.frame["touch_id"].astype(str)).to_numpy()
    X, y = tf.frame[tf.features], tf.frame[tf.target].to_numpy(dtype=int)
    log(f"simulator: {len(y):,} rows, oracle missing for {int(np.isnan(p).sum())}")
    res = compare_caps(X, y, SIM_CAPS, p, SIM_STATES)
    res["oracle_missing"] = int(np.isnan(p).sum())
    return res, X.iloc[: res["train_rows"]], y[: res["train_rows"]]


def quality_bank() -> dict[str, Any]:
    from signalloop.models.table import read_table, table_frame

    f = table_frame(
        read_table(BANK), target="y", time_order="row", exclude=["duration"], source=BANK.name
    )
    log(f"bank: {len(f.y):,} rows")
    return compare_caps(f.X, f.y, BANK_CAPS, None, BANK_STATES)


# -- 2. threads or processes ------------------------------------------------------------------
def _fit_seconds(X: pd.DataFrame, y: np.ndarray, w: np.ndarray | None, n_jobs: int) -> float:
    from signalloop.models.estimator import ConversionModel

    t0 = time.perf_counter()
    ConversionModel(n_jobs=n_jobs).fit(X, y, sample_weight=w)
    return time.perf_counter() - t0


def threads_or_processes(X: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
    from joblib import Parallel, delayed

    from signalloop.models.estimator import ConversionModel

    keep, w = ConversionModel().sample_rows(y)
    if keep is not None:
        X, y = X.iloc[keep], y[keep]
    out: dict[str, Any] = {"rows": len(y), "load_before": os.getloadavg()[0]}
    keys = ("sequential_1_thread", "sequential_2_threads", "processes_2x1_thread")
    for k in keys:
        out[k] = []
    for _ in range(REPEATS):  # interleaved, so a burst of other load hits every way alike
        out[keys[0]].append(sum(_fit_seconds(X, y, w, 1) for _ in range(2)))
        out[keys[1]].append(sum(_fit_seconds(X, y, w, 2) for _ in range(2)))
        t0 = time.perf_counter()
        Parallel(n_jobs=2)(delayed(_fit_seconds)(X, y, w, 1) for _ in range(2))
        out[keys[2]].append(time.perf_counter() - t0)
    out["load_after"] = os.getloadavg()[0]
    log(f"threads or processes: {out}")
    return out


# -- 3. the models step -----------------------------------------------------------------------
def step(db: Path, outcome: str, mode: str, as_of: date) -> dict[str, Any]:
    """One outcome's models step in this process (``--step``): what a first run does."""
    from signalloop.config import Settings
    from signalloop.store import Workspace

    shutil.rmtree(db.with_name(db.stem + ".models"), ignore_errors=True)
    settings = Settings()
    with Workspace(db) as ws:
        t0 = time.perf_counter()
        if mode == "before":
            from signalloop.run import refresh_models

            (entry,) = refresh_models(ws, as_of, settings, [outcome])
            auc = (entry.get("time_split") or {}).get("auc")
            rows = entry.get("rows")
        else:
            from signalloop.models.api import default_model_dir, refresh_workspace
            from signalloop.models.estimator import ConversionModel
            from signalloop.run import RUN_CADENCES

            off = mode == "shared"
            res = refresh_workspace(
                ws,
                outcome,
                folder=default_model_dir(str(db), outcome),
                as_of=as_of,
                settings=settings,
                cadences=sorted(RUN_CADENCES),
                model=ConversionModel(max_rows=None) if off else None,
                max_eval_rows=None if off else 500_000,
            )
            auc, rows = res["time_split"]["auc"], res["rows"]
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return {"seconds": seconds, "rows": rows, "auc": auc, "peak_gib": peak}


def timed(db: Path, outcome: str, mode: str, as_of: date, old_src: Path) -> dict[str, Any]:
    env = dict(os.environ)
    if mode == "before":
        env["PYTHONPATH"] = str(old_src)
    cmd = [sys.executable, __file__, "--step", str(db), outcome, mode, as_of.isoformat()]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} {outcome} failed:\n{proc.stderr[-3000:]}")
    res: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    log(f"  {outcome} {mode}: {res['seconds']:.1f} s ({res['rows']} rows, AUC {res['auc']})")
    return res


def models_step(sizes: list[int], shared: set[int], cache: Path) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            f"git archive {BEFORE} src | tar -x -C {tmp}", shell=True, cwd=ROOT, check=True
        )
        for n in sizes:
            db = account(n, cache)
            as_of = last_day(db)
            from signalloop.run import default_outcomes
            from signalloop.store import Workspace

            with Workspace(db) as ws:
                outcomes = default_outcomes(ws)
                touchpoints = ws.counts()["touchpoints"]
            log(f"{n} campaigns: {touchpoints:,} touchpoints, outcomes {outcomes}")
            row: dict[str, Any] = {"campaigns": n, "touchpoints": touchpoints, "outcomes": {}}
            for outcome in outcomes:
                modes = ["before", *(["shared"] if n in shared else []), "after"]
                row["outcomes"][outcome] = {
                    m: timed(db, outcome, m, as_of, Path(tmp) / "src") for m in modes
                }
            out.append(row)
    return out


# -- report -----------------------------------------------------------------------------------
def _mean(runs: list[dict[str, Any]], cap: int | None, key: str) -> float:
    return float(np.mean([r[key] for r in runs if r["cap"] == cap]))


def quality_rows(name: str, q: dict[str, Any], caps: tuple[int, ...]) -> list[str]:
    runs = q["runs"]
    lines = []
    for cap in (None, *caps):
        mine = [r for r in runs if r["cap"] == cap]
        drops = [
            next(
                u["auc"]
                for u in runs
                if u["cap"] is None and u["random_state"] == r["random_state"]
            )
            - r["auc"]
            for r in mine
        ]
        se = np.std(drops, ddof=1) / np.sqrt(len(drops)) if len(drops) > 1 else 0.0
        drop = "-" if cap is None else f"{np.mean(drops):+.4f} ± {se:.4f} (worst {max(drops):+.4f})"
        lines.append(
            f"| {name} | {'none' if cap is None else f'{cap:,}'} | "
            f"{mine[0]['trained_on']:,} | {_mean(runs, cap, 'auc'):.4f} | {drop} | "
            f"{_mean(runs, cap, 'ece'):.4f} | {_mean(runs, cap, 'mean_predicted'):.4f} / "
            f"{q['holdout_base_rate']:.4f} | {_mean(runs, cap, 'log_loss'):.4f} | "
            f"{_mean(runs, cap, 'seconds'):.1f} |"
        )
    return lines


def _secs(xs: list[float]) -> str:
    return " / ".join(f"{x:.1f}" for x in xs) + " s"


def markdown(res: dict[str, Any], command: str) -> str:
    sim, bank, tp = res["sim"], res["bank"], res["threads"]
    lines = [
        BEGIN,
        "## Models at scale: sampled negatives, one pass per outcome",
        "",
        f"Command: `{command}`. Measured {res['started'][:10]} on {machine(PACKAGES)}; "
        f"load average {res['load'][0]:.1f} at the start, {res['load'][1]:.1f} at the end "
        "(the 2 cores are shared with other jobs). The whole run took "
        f"{res['seconds'] / 60:.1f} min.",
        "",
        "### Sampled against unsampled fits (live AUC and calibration)",
        "",
        "Trained on the first 70% of rows, scored on the last 30% (the time split's live "
        "holdout). With a cap, every positive is kept and the negatives are sampled down to the "
        "cap, each weighted back in the trees and in the calibration map. Means over random "
        f"states (simulator {len(sim['states'])}, bank {len(bank['states'])}); the AUC drop is "
        "the unsampled fit's AUC minus the sampled one's at the same random state, its mean ± "
        "standard error and its worst (the issue allows 0.005). The default cap, "
        "250,000, samples neither the bank's frame nor the demo's.",
        "",
        f"Simulator (`SimulationConfig(days={DAYS}, campaigns={QUALITY_CAMPAIGNS}, "
        f"seed={SEED})`, `conversion`): {sim['train_rows']:,} training rows "
        f"({sim['train_positives']:,} positive), {sim['holdout_rows']:,} holdout rows; the "
        f"oracle's AUC on them ({sim['oracle_scored']:,} with an oracle probability) is "
        f"{sim['oracle_auc']:.4f}. Bank: {bank['train_rows']:,} "
        f"training rows ({bank['train_positives']:,} positive), {bank['holdout_rows']:,} "
        "holdout rows.",
        "",
        "| data | cap (max_rows) | rows learned from | live AUC | AUC drop (mean ± se, worst) "
        "| ECE "
        "| mean predicted / base rate | log loss | seconds per fit |",
        "|---|---|---|---|---|---|---|---|---|",
        *quality_rows("simulator", sim, SIM_CAPS),
        *quality_rows("bank", bank, BANK_CAPS),
        "",
        "### LightGBM threads or processes",
        "",
        f"Two fits of {tp['rows']:,} sampled rows (the default cap), {REPEATS} rounds "
        "interleaved (seconds per round): one after the other on one thread "
        f"{_secs(tp['sequential_1_thread'])}, one after the other on two threads "
        f"{_secs(tp['sequential_2_threads'])}, side by side in two processes of one thread "
        f"{_secs(tp['processes_2x1_thread'])} (load average {tp['load_before']:.1f} before, "
        f"{tp['load_after']:.1f} after: other jobs held part of the cores). The backtest's fits "
        "run in processes, one thread each.",
        "",
        "### The models step per outcome (first run)",
        "",
        f"`before` is commit {BEFORE} (`run.refresh_models`: `fit_workspace` then "
        "`backtest_workspace`, two frames, the 70/30 check fitted twice); `shared` is "
        "`refresh_workspace` with sampling off (`max_rows=None`, every holdout row scored); "
        "`after` is `refresh_workspace` as the run calls it. Seconds in a fresh process each, "
        "cadences 7 and 14 days as the run uses; AUC is the saved time split's.",
        "",
        "| campaigns | touchpoints | outcome | rows | before s | shared s | after s | "
        "before / after | AUC before / after | peak RSS before / after (GiB, parent) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in res["step"]:
        for outcome, m in row["outcomes"].items():
            b, a = m["before"], m["after"]
            sh = f"{m['shared']['seconds']:.1f}" if "shared" in m else "-"
            lines.append(
                f"| {row['campaigns']} | {row['touchpoints']:,} | {outcome} | {a['rows']:,} | "
                f"{b['seconds']:.1f} | {sh} | {a['seconds']:.1f} | "
                f"{b['seconds'] / a['seconds']:.1f}x | {b['auc']:.4f} / {a['auc']:.4f} | "
                f"{b['peak_gib']:.1f} / {a['peak_gib']:.1f} |"
            )
    lines += ["", END]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--campaigns", default="10,30,100", help="account sizes for the step times")
    ap.add_argument("--shared", default="10,30", help="sizes also timed with sampling off")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/signalloop-models-scale"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--json", type=Path, help="also save the raw figures here")
    ap.add_argument("--step", nargs=4, metavar=("DB", "OUTCOME", "MODE", "AS_OF"))
    args = ap.parse_args()
    if args.step:
        db, outcome, mode, as_of = args.step
        print(json.dumps(step(Path(db), outcome, mode, date.fromisoformat(as_of))))
        return
    started, t0, load0 = datetime.now(UTC), time.perf_counter(), os.getloadavg()[0]
    args.cache.mkdir(parents=True, exist_ok=True)
    sim, X, y = quality_sim(account(QUALITY_CAMPAIGNS, args.cache))
    res: dict[str, Any] = {
        "sim": sim,
        "bank": quality_bank(),
        "threads": threads_or_processes(X, y),
    }
    del X, y
    sizes = [int(c) for c in args.campaigns.split(",")]
    res["step"] = models_step(sizes, {int(c) for c in args.shared.split(",") if c}, args.cache)
    res.update(started=started.isoformat(), seconds=time.perf_counter() - t0)
    res["load"] = [load0, os.getloadavg()[0]]
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
    command = "make bench-models-scale"
    if sys.argv[1:]:
        command = ".venv/bin/python benchmarks/models_scale.py " + " ".join(sys.argv[1:])
    block = markdown(res, command)
    print(block)
    if not args.no_write:
        write_section(block, BEGIN, END)


if __name__ == "__main__":
    main()
