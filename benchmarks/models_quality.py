"""Score the conversion-probability models against real data and against the simulator's truth.

1. **UCI Bank Marketing** (``../shared/data/bank_marketing/bank-additional-full.csv``, rows in
   time order May 2008 - Nov 2010, target ``y``, ``duration`` excluded as an outcome leak):
   exactly what the CLI runs (``read_table`` -> ``table_frame`` -> ``backtest``), beside the
   published figures and beside plain LightGBM (no calibration) run here in the same run as the
   anchor: random 80/20 split, trained once on the first 70% and scored on the last 30%, and
   retrained every 500 rows on all earlier rows.
2. **Simulator truth**: for each seed a 90-day account of 6 campaigns is simulated, ingested,
   turned into the ``conversion`` frame and backtested on a clock in days; the model trained
   on the first 70% is compared, on the same holdout rows, with ``sim.oracle``'s exact
   probabilities (the ceiling), with the ad set's probability alone, and (optionally) the
   ``sql`` frame of the lead campaigns with the oracle's P(sql | lead).

Run: ``.venv/bin/python benchmarks/models_quality.py [--seeds 5]`` (writes BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _report import ingested, log, machine, write_section
from sklearn.metrics import roc_auc_score

from signalloop.errors import UsageError
from signalloop.models.backtest import HOLDOUT, RANDOM_TEST, backtest
from signalloop.models.estimator import ConversionModel
from signalloop.models.features import build_frame
from signalloop.models.metrics import scores
from signalloop.models.table import read_table, table_frame
from signalloop.simulate import SimulationConfig, simulate

ROOT = Path(__file__).resolve().parents[1]
BANK = ROOT.parent / "shared" / "data" / "bank_marketing" / "bank-additional-full.csv"
PACKAGES = ("lightgbm", "scikit-learn", "duckdb", "ibis-framework", "numpy", "pandas")
BEGIN, END = "<!-- models-quality:begin -->", "<!-- models-quality:end -->"
DAYS, CAMPAIGNS = 90, 6
ANCHOR_EVERY = 500
SQL_HORIZON = 14
#: Retraining cadences (days) tried on the simulated accounts (the CLI's default grid).
SIM_CADENCES = (1.0, 3.0, 7.0)


# -- 1. bank marketing ------------------------------------------------------------------------
def _plain_frame(X: pd.DataFrame) -> pd.DataFrame:
    """Numbers as floats, everything else as pandas categories (LightGBM's native handling)."""
    out: dict[str, Any] = {}
    for c in X.columns:
        s = X[c]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            out[c] = pd.to_numeric(s, errors="coerce").astype(float)
        else:
            out[c] = s.astype("string").astype("category")
    return pd.DataFrame(out, index=X.index)


def _plain_fit_predict(
    Xtr: pd.DataFrame, ytr: np.ndarray, Xte: pd.DataFrame, params: dict[str, Any]
) -> np.ndarray:
    import lightgbm as lgb

    m = lgb.LGBMClassifier(
        n_estimators=params["n_estimators"],
        learning_rate=params["learning_rate"],
        num_leaves=params["num_leaves"],
        random_state=0,
        n_jobs=params["n_jobs"],
        verbose=-1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        m.fit(Xtr, ytr)
        proba: Any = m.predict_proba(Xte)
    return np.asarray(proba[:, 1], dtype=float)


def plain_lightgbm(X: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
    """The anchor: LightGBM with ConversionModel's tree settings, no calibration."""
    params = ConversionModel().get_params()
    Xp = _plain_frame(X)
    n = len(y)
    out: dict[str, Any] = {
        "params": {k: params[k] for k in ("n_estimators", "learning_rate", "num_leaves")}
    }
    perm = np.random.default_rng(0).permutation(n)  # the same split backtest() draws
    n_test = round(n * RANDOM_TEST)
    tr, te = perm[n_test:], perm[:n_test]
    out["random_split"] = scores(y[te], _plain_fit_predict(Xp.iloc[tr], y[tr], Xp.iloc[te], params))
    cut = round(n * (1 - HOLDOUT))
    out["time_split"] = scores(
        y[cut:], _plain_fit_predict(Xp.iloc[:cut], y[:cut], Xp.iloc[cut:], params)
    )
    p = np.empty(n - cut)
    starts = list(range(cut, n, ANCHOR_EVERY))
    for b, e in zip(starts, [*starts[1:], n], strict=True):
        p[b - cut : e - cut] = _plain_fit_predict(Xp.iloc[:b], y[:b], Xp.iloc[b:e], params)
    out["retrained"] = scores(y[cut:], p)
    out["retrains"] = len(starts)
    return out


def run_bank() -> dict[str, Any]:
    t0 = time.perf_counter()
    df = read_table(BANK)
    f = table_frame(df, target="y", time_order="row", exclude=["duration"], source=BANK.name)
    last = [0.0]

    def progress(step: str, done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 10:
            last[0] = time.perf_counter()
            log(f"bank backtest: {done}/{total} {step}")

    r = backtest(f.X, f.y, clock=f.clock, unit=f.unit, target="y", progress=progress)
    t1 = time.perf_counter()
    log(f"bank backtest {t1 - t0:.1f} s")
    anchor = plain_lightgbm(f.X, f.y)
    t2 = time.perf_counter()
    log(f"bank anchor {t2 - t1:.1f} s")
    r.pop("feature_importance", None)
    r["time_split"].pop("reliability", None)
    return {
        "backtest": r,
        "anchor": anchor,
        "features": f.features,
        "ignored": f.ignored,
        "backtest_seconds": t1 - t0,
        "anchor_seconds": t2 - t1,
    }


# -- 2. simulator truth -----------------------------------------------------------------------
def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def _compare(
    y: np.ndarray, p: np.ndarray, oracle: np.ndarray, p_adset: np.ndarray | None
) -> dict[str, Any]:
    s, so = scores(y, p), scores(y, oracle)
    return {
        "n": len(y),
        "positives": int(y.sum()),
        "base_rate": float(y.mean()),
        "model_auc": s["auc"],
        "oracle_auc": so["auc"],
        "adset_auc": None if p_adset is None else _auc(y, p_adset),
        "model_log_loss": s["log_loss"],
        "oracle_log_loss": so["log_loss"],
        "model_ece": s["ece"],
        "oracle_ece": so["ece"],
        "mean_model_p": float(p.mean()),
        "mean_oracle_p": float(oracle.mean()),
        "mae_vs_oracle": float(np.mean(np.abs(p - oracle))),
        "corr_vs_oracle": float(np.corrcoef(p, oracle)[0, 1]),
    }


def _days(ts: pd.Series) -> np.ndarray:
    days: np.ndarray = ((ts - ts.min()).dt.total_seconds() / 86400.0).to_numpy()
    return days


def run_seed(seed: int, sql: bool, cadences: tuple[float, ...]) -> dict[str, Any]:
    t0 = time.perf_counter()
    sim = simulate(SimulationConfig(days=DAYS, campaigns=CAMPAIGNS, seed=seed))
    oracle = sim.oracle.to_pandas().set_index("touch_id")
    out: dict[str, Any] = {"seed": seed}
    with ingested(sim) as ws:
        tf = build_frame(ws, "conversion")
        lf = None
        if sql:
            try:
                lf = build_frame(ws, "sql", horizon_days=SQL_HORIZON)
            except UsageError as exc:
                out["sql_skipped"] = str(exc)
    df = tf.frame
    X, y = df[tf.features], df[tf.target].to_numpy(dtype=int)
    r = backtest(
        X, y, clock=_days(df[tf.time]), unit="days", target="conversion", cadences=cadences
    )
    n = len(y)
    cut = round(n * (1 - HOLDOUT))
    p = ConversionModel(random_state=0).fit(X.iloc[:cut], y[:cut]).predict(X.iloc[cut:])
    o = oracle.reindex(df["touch_id"].iloc[cut:])
    missing = int(o["p_conversion"].isna().sum())
    keep = o["p_conversion"].notna().to_numpy()
    yh = y[cut:][keep]
    cmp = _compare(yh, p[keep], o["p_conversion"].to_numpy()[keep], o["p_adset"].to_numpy()[keep])
    out["conversion"] = {
        "rows": n,
        "censored": tf.censored,
        "excluded": tf.excluded,
        "oracle_missing": missing,
        "random_auc": r["random_split"]["auc"],
        "time_auc": r["time_split"]["auc"],
        "gap": r["gap"]["auc"],
        "overfit": r["overfit"],
        "recommended": r["cadence"]["recommended"],
        "recommended_auc": r["cadence"]["live_auc"],
        "candidates": [(c["every"], c["live_auc"]) for c in r["cadence"]["candidates"]],
        "verdict": r["verdict"],
        **cmp,
        "_arrays": (yh, p[keep], o["p_conversion"].to_numpy()[keep], o["p_adset"].to_numpy()[keep]),
    }
    if lf is not None:
        ld = lf.frame
        lX, ly = ld[lf.features], ld[lf.target].to_numpy(dtype=int)
        m = len(ly)
        lcut = round(m * (1 - HOLDOUT))
        if m >= 200 and ly[:lcut].sum() >= 20 and (lcut - ly[:lcut].sum()) >= 20:
            lp = (
                ConversionModel(random_state=0)
                .fit(lX.iloc[:lcut], ly[:lcut])
                .predict(lX.iloc[lcut:])
            )
            lo = oracle.reindex(ld["touch_id"].iloc[lcut:])
            # a lead has converted: P(sql | lead, traits) = P(sql | click) / P(convert | click)
            cond = (lo["p_sql"] / lo["p_conversion"]).to_numpy()
            ok = np.isfinite(cond)
            lyh = ly[lcut:][ok]
            out["sql"] = {
                "rows": m,
                "censored": lf.censored,
                **_compare(lyh, lp[ok], np.clip(cond[ok], 0, 1), None),
                "_arrays": (lyh, lp[ok], np.clip(cond[ok], 0, 1), None),
            }
        else:
            out["sql_skipped"] = f"{m} leads, {int(ly.sum())} reached sql"
    out["seconds"] = time.perf_counter() - t0
    return out


def pooled(results: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    arrs = [r[key]["_arrays"] for r in results if key in r]
    if not arrs:
        return None
    y = np.concatenate([a[0] for a in arrs])
    p = np.concatenate([a[1] for a in arrs])
    o = np.concatenate([a[2] for a in arrs])
    ad = None if arrs[0][3] is None else np.concatenate([a[3] for a in arrs])
    return _compare(y, p, o, ad)


# -- report -----------------------------------------------------------------------------------
def _f(x: float | None, d: int = 3) -> str:
    return "-" if x is None else f"{x:.{d}f}"


def _every(c: float | None, unit: str) -> str:
    return "trained once" if c is None else f"every {c:g} {unit}"


def markdown(
    res: dict[str, Any], seeds: int, command: str, started: datetime, seconds: float
) -> str:
    b, a = res["bank"]["backtest"], res["bank"]["anchor"]
    rs, ts = b["random_split"], b["time_split"]
    cad = b["cadence"]
    lines = [
        BEGIN,
        "## Conversion-probability models on real data and against the simulator's truth",
        "",
        f"Command: `{command}`{')' if command.startswith('make') else ''}. "
        f"Measured {started:%Y-%m-%d} on {machine(PACKAGES)}. "
        f"The whole run took {seconds / 60:.1f} min.",
        "",
        "### Real data: UCI Bank Marketing",
        "",
        f"`bank-additional-full.csv` ({b['rows']:,} calls, {b['positives']:,} subscribed; rows in "
        "time order, May 2008 - Nov 2010), run exactly as the CLI runs it: `read_table`, "
        '`table_frame(target="y", time_order="row", exclude=["duration"])` (`duration` is '
        "known only after the call: it leaks the outcome), `backtest()` with its defaults "
        f"(ConversionModel, calibrated on the latest 10% of each training set); "
        f"{len(res['bank']['features'])} features. The backtest took "
        f"{res['bank']['backtest_seconds']:.0f} s. The anchor is plain LightGBM (same "
        f"n_estimators={a['params']['n_estimators']}, "
        f"learning_rate={a['params']['learning_rate']}, "
        f"num_leaves={a['params']['num_leaves']}, no calibration, strings as categories) on the "
        "same splits, in this run "
        f"({res['bank']['anchor_seconds']:.0f} s). Reference figures: the published AUC 0.80 "
        "(Moro, Cortez, Rita 2014: a neural net on a rolling window over a 22-feature "
        "superset of this file) and plain LightGBM as measured by the issue: random 80/20 "
        "split 0.80, trained once on the first 70% and scored on the last 30% 0.63 (base "
        "rate 6% -> 25-31%), retrained every 500 rows on all earlier rows 0.78.",
        "",
        "| split | ConversionModel AUC | log loss | Brier | ECE | plain LightGBM AUC | log loss "
        "| ECE | AUC difference (ours - anchor) | issue's figure |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(name: str, s: dict[str, Any], an: dict[str, Any], ref: str) -> str:
        diff = None if s["auc"] is None or an["auc"] is None else s["auc"] - an["auc"]
        return (
            f"| {name} | {_f(s['auc'])} | {_f(s['log_loss'], 4)} | {_f(s['brier'], 4)} | "
            f"{_f(s['ece'], 4)} | {_f(an['auc'])} | {_f(an['log_loss'], 4)} | {_f(an['ece'], 4)} | "
            f"{diff:+.3f} | {ref} |"
        )

    rec500 = next((c for c in cad["candidates"] if c["every"] == ANCHOR_EVERY), None)
    lines += [
        row("random split 80/20", rs, a["random_split"], "0.80"),
        row("time split: first 70%, live on last 30%", ts, a["time_split"], "0.63"),
    ]
    if rec500 is not None:
        s500 = {
            "auc": rec500["live_auc"],
            "log_loss": rec500["live_log_loss"],
            "brier": None,
            "ece": rec500["live_ece"],
        }
        lines.append(
            row(f"retrained every {ANCHOR_EVERY} rows, live", s500, a["retrained"], "0.78")
        )
    drift = b["drift"]
    top = ", ".join(f"{f['name']} {f['psi']:.2f} ({f['shift']})" for f in drift["features"][:5])
    lines += [
        "",
        "| measure | value |",
        "|---|---|",
        f"| random-split AUC - live AUC (gap) | {b['gap']['auc']:+.3f} (`overfit`: "
        f"{str(b['overfit']).lower()}, threshold {b['overfit_threshold']}) |",
        f"| log loss gap / Brier gap (live - random) | {b['gap']['log_loss']:+.4f} / "
        f"{b['gap']['brier']:+.4f} |",
        f"| base rate, train -> holdout | {drift['base_rate_train']:.1%} -> "
        f"{drift['base_rate_holdout']:.1%} |",
        f"| top 5 features by PSI (train vs holdout) | {top} |",
        f"| calibration map chosen (time split) | {ts.get('calibration', '-')} |",
        f"| recommended cadence | {_every(cad['recommended'], b['unit'])}: live AUC "
        f"{_f(cad['live_auc'])}, log loss {_f(cad['live_log_loss'], 4)} (best candidate "
        f"{_f(cad.get('best_live_auc'))}, tolerance {cad.get('tolerance')}) |",
        f"| plain LightGBM retrained every {ANCHOR_EVERY} rows ({a['retrains']} retrains) | "
        f"live AUC {_f(a['retrained']['auc'])}, log loss {_f(a['retrained']['log_loss'], 4)} |",
        "",
        "Every cadence candidate (rolling origin over the holdout, retrained on all earlier rows):",
        "",
        "| cadence | retrains | live AUC | live log loss | live ECE |",
        "|---|---|---|---|---|",
    ]
    for c in cad["candidates"]:
        mark = " (recommended)" if c["every"] == cad["recommended"] else ""
        lines.append(
            f"| {_every(c['every'], b['unit'])}{mark} | {c['retrains']} | {_f(c['live_auc'])} | "
            f"{_f(c['live_log_loss'], 4)} | {_f(c['live_ece'], 4)} |"
        )
    lines += [
        "",
        "Decay by model age (rows since the model's training data ended): the AUC of each "
        "model's own predictions at that age, averaged over the models (the trained-once one "
        "and every cadence's), weighted by rows. This is a within-period ranking, lower than "
        "the live AUC of a cadence, which also ranks rows across periods whose base rates "
        "differ:",
        "",
        "| model age (rows) | scored rows | models | AUC |",
        "|---|---|---|---|",
    ]
    for d in cad["decay"]:
        lines.append(
            f"| {d['age_from']:g} - {d['age_to']:g} | {d['n']:,} | {d.get('models', '-')} "
            f"| {d['auc']:.3f} |"
        )
    lines += ["", f'Verdict: "{b["verdict"]}"', ""]

    # simulator
    sims = res["sim"]
    lines += [
        "### Simulator truth",
        "",
        f"{seeds} seeds, each a {DAYS}-day account of {CAMPAIGNS} campaigns (no faults), "
        'simulated, ingested into an in-memory workspace, `build_frame(ws, "conversion")` '
        "(one row per click, label = a conversion tied to it within 7 days), `backtest()` on a "
        'clock in days since the first click (`unit="days"`; cadences '
        f"{', '.join(f'{c:g}' for c in res.get('sim_cadences', SIM_CADENCES))} days), "
        "and ConversionModel fitted on "
        "the first 70% of rows and scored on the last 30%. On those holdout rows it is compared "
        "with `sim.oracle` (joined on touch_id): `p_conversion` is the exact probability that the "
        "click converts given its ad set and its traits, so no model can beat the oracle's AUC "
        "on average; `p_adset` is the ad set's probability alone (no traits). The oracle is the "
        "*eventual* probability, while the labels are observed within the 7-day horizon (and "
        "through the attribution rules), so the oracle's own ECE against these labels is not "
        "zero, and the model, which learns the observed labels, is compared with a target a bit "
        "higher than what it is trained on.",
        "",
        "| seed | clicks (mature) | holdout base rate | random AUC | live AUC | oracle AUC "
        "| p_adset AUC | model / oracle AUC | recommended cadence (live AUC) | model ECE "
        "| oracle ECE | mean model p / oracle p | mean abs(model p - oracle p) "
        "| corr(model p, oracle p) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sims:
        c = s["conversion"]
        lines.append(
            f"| {s['seed']} | {c['rows']:,} | {c['base_rate']:.2%} | {_f(c['random_auc'])} | "
            f"{_f(c['model_auc'])} | {_f(c['oracle_auc'])} | {_f(c['adset_auc'])} | "
            f"{c['model_auc'] / c['oracle_auc']:.3f} | {_every(c['recommended'], 'days')} "
            f"({_f(c['recommended_auc'])}) | {_f(c['model_ece'], 4)} | {_f(c['oracle_ece'], 4)} | "
            f"{c['mean_model_p']:.4f} / {c['mean_oracle_p']:.4f} | {c['mae_vs_oracle']:.4f} | "
            f"{c['corr_vs_oracle']:.3f} |"
        )
    pc = res["sim_pooled"]["conversion"]
    lines.append(
        f"| pooled | {pc['n']:,} holdout | {pc['base_rate']:.2%} | - | **{_f(pc['model_auc'])}** | "
        f"**{_f(pc['oracle_auc'])}** | {_f(pc['adset_auc'])} | "
        f"{pc['model_auc'] / pc['oracle_auc']:.3f} | - | {_f(pc['model_ece'], 4)} | "
        f"{_f(pc['oracle_ece'], 4)} | {pc['mean_model_p']:.4f} / {pc['mean_oracle_p']:.4f} | "
        f"{pc['mae_vs_oracle']:.4f} | {pc['corr_vs_oracle']:.3f} |"
    )
    mean_gap = float(
        np.mean([s["conversion"]["oracle_auc"] - s["conversion"]["model_auc"] for s in sims])
    )
    lines += [
        "",
        f"Live AUC is {mean_gap:.3f} below the oracle's on average over the seeds "
        f"(log loss, pooled: model {pc['model_log_loss']:.4f}, "
        f"oracle {pc['oracle_log_loss']:.4f}). "
        "The pooled row scores all seeds' holdout rows together. The live AUC here is the "
        "backtest's time split (the same fit, random_state 0).",
        "",
        'Verdicts (`backtest()["verdict"]`):',
        "",
    ]
    for s in sims:
        lines.append(f'- seed {s["seed"]}: "{s["conversion"]["verdict"]}"')
    ps = res["sim_pooled"].get("sql")
    with_sql = [s for s in sims if "sql" in s]
    if ps is not None:
        lines += [
            "",
            "**`sql` on the lead campaigns** "
            f'(`build_frame(ws, "sql", horizon_days={SQL_HORIZON})`: '
            "one row per CRM record, label = reached sql within 14 days of the record's start). "
            "A lead has already converted, so the oracle is P(sql | lead) = `p_sql / p_conversion` "
            "of its click. Fitted on the first 70% of leads, scored on the last 30%:",
            "",
            "| seed | leads (mature) | holdout base rate | model AUC | oracle AUC | model ECE | "
            "oracle ECE | mean abs(model p - oracle p) | corr |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in with_sql:
            q = s["sql"]
            lines.append(
                f"| {s['seed']} | {q['rows']:,} | {q['base_rate']:.1%} | {_f(q['model_auc'])} | "
                f"{_f(q['oracle_auc'])} | {_f(q['model_ece'], 4)} | {_f(q['oracle_ece'], 4)} | "
                f"{q['mae_vs_oracle']:.4f} | {q['corr_vs_oracle']:.3f} |"
            )
        lines.append(
            f"| pooled | {ps['n']:,} holdout | {ps['base_rate']:.1%} | **{_f(ps['model_auc'])}** | "
            f"**{_f(ps['oracle_auc'])}** | {_f(ps['model_ece'], 4)} | {_f(ps['oracle_ece'], 4)} | "
            f"{ps['mae_vs_oracle']:.4f} | {ps['corr_vs_oracle']:.3f} |"
        )
    skipped = [f"seed {s['seed']}: {s['sql_skipped']}" for s in sims if "sql_skipped" in s]
    if skipped:
        lines += ["", "`sql` skipped: " + "; ".join(skipped) + "."]
    secs = [s["seconds"] for s in sims]
    lines += [
        "",
        "Each seed (simulate, ingest, frames, backtest, the extra fits) took "
        f"{np.mean(secs):.0f} s on average (max {np.max(secs):.0f} s), one seed at a time, "
        "each fit single-threaded, the backtest's retrains in 2 processes.",
        "",
        END,
    ]
    return "\n".join(lines)


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items() if k != "_arrays"}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    return o


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--no-sql", action="store_true", help="skip the sql outcome")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--json", type=Path, help="also save the raw figures here (JSON)")
    ap.add_argument(
        "--sim-cadences",
        default=",".join(f"{c:g}" for c in SIM_CADENCES),
        help="cadences in days tried on the simulated accounts",
    )
    ap.add_argument("--render", type=Path, help="re-render the section from a --json file")
    args = ap.parse_args()
    command = (
        f"make bench-models` (= `.venv/bin/python benchmarks/models_quality.py --seeds {args.seeds}"
    )
    if args.seeds != 5 or args.no_sql:
        command = ".venv/bin/python benchmarks/models_quality.py " + " ".join(sys.argv[1:])
    if args.render:
        res = json.loads(args.render.read_text(encoding="utf-8"))
        started = datetime.fromisoformat(res["started"])
    else:
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        cadences = tuple(float(c) for c in args.sim_cadences.split(","))
        res = {"bank": run_bank(), "sim_cadences": list(cadences)}
        if args.json:
            args.json.write_text(json.dumps(_jsonable(res), default=str), encoding="utf-8")
        sims = []
        for seed in range(1, args.seeds + 1):
            s = run_seed(seed, sql=not args.no_sql, cadences=cadences)
            c = s["conversion"]
            log(
                f"seed {seed}: live AUC {c['model_auc']:.3f} (backtest {c['time_auc']:.3f}), "
                f"oracle {c['oracle_auc']:.3f}, p_adset {c['adset_auc']:.3f}; {s['seconds']:.0f} s"
            )
            sims.append(s)
        res["sim"] = sims
        res["sim_pooled"] = {"conversion": pooled(sims, "conversion"), "sql": pooled(sims, "sql")}
        res["seconds"] = time.perf_counter() - t0
        res["started"] = started.isoformat()
        res = _jsonable(res)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
    block = markdown(res, len(res["sim"]), command, started, res["seconds"])
    print(block)
    if args.no_write:
        return
    write_section(block, BEGIN, END)


if __name__ == "__main__":
    main()
