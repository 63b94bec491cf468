"""Frames sampled on the backend: live AUC and calibration against the unsampled frame.

``build_frame`` fetches at most ``[models] max_frame_rows`` mature units (default 2,000,000):
every positive up to half the cap and a hashed sample of the negatives, each row weighted by
its class's units over its kept rows (issue 14, item 2). This measures what that costs a
model, on the simulator's 100-campaign account (``SimulationConfig(days=90, campaigns=100,
seed=3)``, 3.05 million mature units, cached by ``benchmarks/models_scale.py``):

* the **time split**: units up to the 70% point in time train, the later 30% are scored;
* **unsampled**: ``ConversionModel`` fitted on the full frame's training units (the fit
  itself samples them to its own ``max_rows``, as every fit does);
* **sampled**: the same model fitted on the sampled frame's training units with their
  weights, for frame caps of 2,000,000 (the default) and 1,000,000;
* every model is scored on the **same** rows: all the full frame's holdout units, unweighted,
  with the simulator's oracle probability on them as the ceiling;
* three random states (each seeds the frame's hash, the fit's own sample and LightGBM); the
  AUC drop is the unsampled fit's AUC minus the sampled one's at the same random state.

Run: ``.venv/bin/python benchmarks/frame_sample.py`` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _report import log, machine, write_section
from models_scale import account

BEGIN, END = "<!-- frame-sample:begin -->", "<!-- frame-sample:end -->"
PACKAGES = ("lightgbm", "scikit-learn", "duckdb", "ibis-framework")
CAMPAIGNS, CAPS, STATES, HOLDOUT = 100, (2_000_000, 1_000_000), (0, 1, 2), 0.3
UNCAPPED = 10**12


def measure(cache: Path) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    from signalloop.models.estimator import ConversionModel
    from signalloop.models.features import build_frame
    from signalloop.models.metrics import scores
    from signalloop.store import Workspace

    db = account(CAMPAIGNS, cache)
    out: dict[str, Any] = {"frames": [], "runs": [], "started": datetime.now(UTC).isoformat()}
    out["load"] = [os.getloadavg()[0]]
    t_start = time.perf_counter()
    with Workspace(db) as ws:
        t0 = time.perf_counter()
        full = build_frame(ws, "conversion", max_rows=UNCAPPED)
        out["frames"].append(_frame_row(full, None, None, time.perf_counter() - t0))
        frames = {}
        for cap in CAPS:
            for rs in STATES:
                t0 = time.perf_counter()
                frames[cap, rs] = tf = build_frame(ws, "conversion", max_rows=cap, random_state=rs)
                out["frames"].append(_frame_row(tf, cap, rs, time.perf_counter() - t0))
    f = full.frame
    cut_ts = f[full.time].iloc[round(len(f) * (1 - HOLDOUT))]
    hold = f[f[full.time] >= cut_ts]
    yh = hold[full.target].to_numpy(dtype=int)
    oracle = pd.read_parquet(db.parent / "data" / "oracle.parquet").set_index("touch_id")
    p_or = oracle["p_conversion"].reindex(hold["touch_id"].astype(str)).to_numpy()
    known = ~np.isnan(p_or)
    out["holdout"] = {
        "rows": len(yh),
        "base_rate": float(yh.mean()),
        "oracle_auc": float(roc_auc_score(yh[known], p_or[known])),
        "oracle_scored": int(known.sum()),
        "from": str(cut_ts),
    }
    log(f"holdout {len(yh):,} units from {cut_ts}, oracle AUC {out['holdout']['oracle_auc']:.4f}")
    for rs in STATES:
        for cap in (None, *CAPS):
            tf = full if cap is None else frames[cap, rs]
            train = tf.frame[tf.frame[tf.time] < cut_ts]
            w = None if tf.weight is None else train[tf.weight].to_numpy(dtype=float)
            t0 = time.perf_counter()
            m = ConversionModel(random_state=rs).fit(
                train[tf.features], train[tf.target].to_numpy(dtype=int), w
            )
            seconds = time.perf_counter() - t0
            s = scores(yh, m.predict(hold[tf.features]))
            run = {"cap": cap, "random_state": rs, "seconds": seconds, "trained_on": m.n_sampled_}
            run["training_units"] = len(train)
            run.update({k: s[k] for k in ("auc", "log_loss", "ece", "mean_predicted")})
            out["runs"].append(run)
            log(
                f"  frame cap {cap} rs {rs}: AUC {s['auc']:.4f}, ECE {s['ece']:.4f}, mean p "
                f"{s['mean_predicted']:.4f} (base {yh.mean():.4f}), fit {seconds:.1f} s"
            )
    out["load"].append(os.getloadavg()[0])
    out["seconds"] = time.perf_counter() - t_start
    return out


def _frame_row(tf: Any, cap: int | None, rs: int | None, seconds: float) -> dict[str, Any]:
    gib = float(tf.frame.memory_usage(deep=True).sum()) / 2**30
    units, positives = tf.units
    row = {"cap": cap, "random_state": rs, "rows": len(tf.frame), "units": units}
    row |= {"positives": positives, "seconds": seconds, "gib": gib}
    log(f"frame cap {cap} rs {rs}: {len(tf.frame):,} rows of {units:,}, {seconds:.1f} s")
    return row


def markdown(res: dict[str, Any], command: str) -> str:
    h = res["holdout"]
    lines = [
        BEGIN,
        "## Frames sampled on the backend (`[models] max_frame_rows`)",
        "",
        f"Command: `{command}`. Measured {res['started'][:10]} on {machine(PACKAGES)}; load "
        f"average {res['load'][0]:.1f} at the start, {res['load'][1]:.1f} at the end (the 2 "
        f"cores are shared with other jobs: the seconds are loose). The whole run took "
        f"{res['seconds'] / 60:.1f} min.",
        "",
        f"Simulator, {CAMPAIGNS} campaigns, 90 days, seed 3, outcome `conversion`. Every "
        f"model is scored on the same {h['rows']:,} holdout units (the full frame's units "
        f"from {h['from']} on, unweighted; base rate {h['base_rate']:.4f}); the oracle's AUC "
        f"on them is {h['oracle_auc']:.4f} ({h['oracle_scored']:,} with an oracle "
        "probability). Each fit samples its training units to its own cap (250,000) in every "
        "row; the sampled frames' fits learn with the frame's weights. AUC drop: the "
        "unsampled frame's AUC minus the sampled one's at the same random state, mean ± "
        "standard error and worst (the issue allows 0.005).",
        "",
        "| frame | rows fetched (of units) | build s | frame GiB | live AUC | AUC drop "
        "(mean ± se, worst) | ECE | mean predicted / base rate | log loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cap in (None, *CAPS):
        fr = [f for f in res["frames"] if f["cap"] == cap]
        runs = [r for r in res["runs"] if r["cap"] == cap]
        ref = {r["random_state"]: r["auc"] for r in res["runs"] if r["cap"] is None}
        drops = np.array([ref[r["random_state"]] - r["auc"] for r in runs])
        drop = (
            "-"
            if cap is None
            else f"{drops.mean():+.4f} ± {drops.std(ddof=1) / np.sqrt(len(drops)):.4f} "
            f"(worst {drops.max():+.4f})"
        )
        name = "unsampled" if cap is None else f"cap {cap:,}"
        lines.append(
            f"| {name} | {np.mean([f['rows'] for f in fr]):,.0f} (of {fr[0]['units']:,}) | "
            f"{np.mean([f['seconds'] for f in fr]):.1f} | "
            f"{np.mean([f['gib'] for f in fr]):.2f} | "
            f"{np.mean([r['auc'] for r in runs]):.4f} | {drop} | "
            f"{np.mean([r['ece'] for r in runs]):.4f} | "
            f"{np.mean([r['mean_predicted'] for r in runs]):.4f} / {h['base_rate']:.4f} | "
            f"{np.mean([r['log_loss'] for r in runs]):.4f} |"
        )
    lines += ["", END]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/signalloop-models-scale"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    res = measure(args.cache)
    block = markdown(res, ".venv/bin/python benchmarks/frame_sample.py")
    if not args.no_write:
        write_section(block, BEGIN, END)
    print(block)


if __name__ == "__main__":
    main()
