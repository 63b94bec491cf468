"""Honest validation: random split beside the live holdout, drift, and a retraining cadence.

A model that looks great on a random split can be poor on the traffic that comes next: a random
split lets it learn from the future of every row it is scored on. :func:`backtest` therefore
scores the same model three ways on rows in time order:

1. **random split** (80/20, shuffled): the figure vendors quote;
2. **time split**: trained on the first 70%, scored on the last 30% as if live (the verdict);
3. **retrained on a cadence** (rolling origin): at each candidate cadence the model is
   retrained on all rows before each block of the holdout and scores that block; the live
   score of every cadence, and the score by *model age* pooled over them, show how fast
   performance decays. The recommended cadence is the longest whose live AUC is within
   ``tolerance`` of the best one's.

The gap between 1 and 2 flags overfitting (``"overfit": true`` past ``overfit_threshold``
AUC points); the base rate and each feature's population stability index (PSI) between the
training and holdout periods say what moved.

The clock is either the row order (``unit="rows"``: cadences in rows) or a time column
(``unit="days"``: cadences in days).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from signalloop.errors import UsageError
from signalloop.models.estimator import ConversionModel
from signalloop.models.metrics import PSI_MAJOR, PSI_MODERATE, psi, reliability_table, scores

#: Random split test share, and the time split's holdout share.
RANDOM_TEST = 0.2
HOLDOUT = 0.3
OVERFIT_THRESHOLD = 0.05
CADENCE_TOLERANCE = 0.01
ROW_CADENCES = (250, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000, 250_000)
DAY_CADENCES = (1, 3, 7, 14, 28, 56, 91)
#: A candidate cadence must give the holdout at least 2 and at most this many retrains.
MAX_RETRAINS = 50

Progress = Callable[[str, int, int], None]


def _scores(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in scores(y, p).items()}


def candidate_cadences(span: float, unit: str) -> list[float]:
    """Cadences worth trying over a holdout of ``span`` rows or days (each retrains 2-50x).

    >>> candidate_cadences(12357, "rows")
    [250, 500, 1000, 2000, 5000]
    >>> candidate_cadences(27, "days")
    [1, 3, 7]
    """
    grid = ROW_CADENCES if unit == "rows" else DAY_CADENCES
    return [c for c in grid if span / MAX_RETRAINS <= c <= span / 2]


def backtest(
    X: pd.DataFrame,
    y: Any,
    *,
    clock: Any = None,
    unit: str = "rows",
    target: str = "label",
    model: ConversionModel | None = None,
    holdout: float = HOLDOUT,
    overfit_threshold: float = OVERFIT_THRESHOLD,
    tolerance: float = CADENCE_TOLERANCE,
    cadences: Sequence[float] | None = None,
    random_state: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Random split, time split, drift and cadence for one model on rows in time order.

    Parameters
    ----------
    X
        Features, one row per unit, **sorted by time**.
    y
        0/1 labels.
    clock
        Each row's time in ``unit`` (non-decreasing); default the row number.
    unit
        ``"rows"`` or ``"days"``: what the clock and the cadences count.
    target
        Name of the label, for the report.
    model
        The unfitted model to evaluate (default :class:`ConversionModel` with
        ``random_state``); it is cloned with its parameters for every fit.
    holdout, overfit_threshold, tolerance
        Live holdout share; AUC gap that counts as overfitting; how much live AUC a longer
        cadence may give up against the best.
    cadences
        Candidate cadences in ``unit`` (default :func:`candidate_cadences`).
    progress
        Called as ``progress(step, done, total)`` while models are fitted.

    Returns
    -------
    dict
        ``rows``, ``target``, ``unit``, ``random_split``, ``time_split`` (with
        ``reliability``), ``gap``, ``overfit``, ``drift``, ``cadence`` (``recommended``,
        ``live_auc``, ``live_log_loss``, ``candidates``, ``decay``) and ``verdict``.
    """
    y = np.asarray(y, dtype=int)
    n = len(y)
    if unit not in ("rows", "days"):
        raise UsageError(f"unit must be 'rows' or 'days', got {unit!r}")
    clk = np.arange(n, dtype=float) if clock is None else np.asarray(clock, dtype=float)
    if len(clk) != n or len(X) != n:
        raise UsageError(f"{len(X)} feature rows, {n} labels and {len(clk)} clock values differ")
    if n < 200 or y.sum() < 20 or (n - y.sum()) < 20:
        raise UsageError(
            f"too little to backtest: {n} rows with {int(y.sum())} positive; a backtest needs "
            "at least 200 rows and 20 of each outcome"
        )
    if np.any(np.diff(clk) < 0):
        raise UsageError("rows must be in time order (the clock goes backwards)")
    template = model or ConversionModel(random_state=random_state)
    params = template.get_params()

    def fit(Xt: pd.DataFrame, yt: np.ndarray) -> ConversionModel:
        return ConversionModel(**params).fit(Xt, yt)

    cut = round(n * (1 - holdout))
    span = clk[-1] - clk[cut]
    cands: list[float] = list(cadences) if cadences is not None else candidate_cadences(span, unit)
    starts_by = {c: _block_starts(clk, cut, c) for c in cands}
    total = 2 + sum(len(s) for s in starts_by.values())
    done = 0

    def step(what: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(what, done, total)

    # 1. random split
    rng = np.random.default_rng(random_state)
    perm = rng.permutation(n)
    n_test = round(n * RANDOM_TEST)
    tr, te = perm[n_test:], perm[:n_test]
    m_rand = fit(X.iloc[tr], y[tr])
    random_split = _scores(y[te], m_rand.predict(X.iloc[te]))
    step("random split")

    # 2. time split
    m_time = fit(X.iloc[:cut], y[:cut])
    p_hold = m_time.predict(X.iloc[cut:])
    time_split = _scores(y[cut:], p_hold)
    time_split["reliability"] = reliability_table(y[cut:], p_hold)
    time_split["calibration"] = m_time.calibration_method_
    step("time split")

    gap = {
        "auc": _diff(random_split["auc"], time_split["auc"]),
        "log_loss": _diff(time_split["log_loss"], random_split["log_loss"]),
        "brier": _diff(time_split["brier"], random_split["brier"]),
    }
    overfit = gap["auc"] is not None and gap["auc"] > overfit_threshold

    # 3. drift between the training and holdout periods
    feats: list[dict[str, Any]] = []
    for col in X.columns:
        v = psi(X[col].iloc[:cut], X[col].iloc[cut:])
        level = "major" if v > PSI_MAJOR else "moderate" if v > PSI_MODERATE else "stable"
        feats.append({"name": str(col), "psi": round(v, 4), "shift": level})
    feats.sort(key=lambda f: -float(f["psi"]))
    drift = {
        "base_rate_train": round(float(y[:cut].mean()), 6),
        "base_rate_holdout": round(float(y[cut:].mean()), 6),
        "features": feats,
    }

    # 4. retraining cadence (rolling origin over the holdout)
    runs = []
    ages: list[np.ndarray] = [clk[cut:] - clk[cut]]
    preds: list[np.ndarray] = [p_hold]
    for c in cands:
        p = np.empty(n - cut)
        age = np.empty(n - cut)
        starts = starts_by[c]
        for b, e in zip(starts, [*starts[1:], n], strict=True):
            m = fit(X.iloc[:b], y[:b])
            p[b - cut : e - cut] = m.predict(X.iloc[b:e])
            age[b - cut : e - cut] = clk[b:e] - clk[b]
            step(f"retrain every {_fmt(c)} {unit}")
        s = _scores(y[cut:], p)
        runs.append(
            {
                "every": c,
                "retrains": len(starts),
                "live_auc": s["auc"],
                "live_log_loss": s["log_loss"],
                "live_ece": s["ece"],
            }
        )
        ages.append(age)
        preds.append(p)
    runs.append(
        {
            "every": None,
            "retrains": 1,
            "live_auc": time_split["auc"],
            "live_log_loss": time_split["log_loss"],
            "live_ece": time_split["ece"],
        }
    )
    cadence = _recommend(runs, tolerance)
    cadence["candidates"] = runs
    cadence["decay"] = _decay(
        np.concatenate(ages), np.concatenate(preds), np.tile(y[cut:], len(preds)), cands, span
    )
    return {
        "rows": n,
        "target": target,
        "unit": unit,
        "positives": int(y.sum()),
        "random_split": random_split,
        "time_split": time_split,
        "gap": gap,
        "overfit": bool(overfit),
        "overfit_threshold": overfit_threshold,
        "drift": drift,
        "cadence": cadence,
        "feature_importance": _importance(m_time),
        "verdict": _verdict(time_split, gap, overfit, drift, cadence, unit),
    }


def _block_starts(clk: np.ndarray, cut: int, every: float) -> list[int]:
    edges = clk[cut] + every * np.arange(int(np.ceil((clk[-1] - clk[cut]) / every)) + 1)
    starts = sorted({int(np.searchsorted(clk, e, side="left")) for e in edges})
    return [s for s in starts if cut <= s < len(clk)]


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 6)


def _fmt(x: float) -> str:
    return f"{x:g}"


def _recommend(runs: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    scored = [r for r in runs if r["live_auc"] is not None]
    if not scored:
        return {"recommended": None, "live_auc": None, "live_log_loss": None}
    best = max(r["live_auc"] for r in scored)
    ok = [r for r in scored if r["live_auc"] >= best - tolerance]
    # the longest cadence that is good enough ("never" = None is the longest of all)
    pick = max(ok, key=lambda r: float("inf") if r["every"] is None else r["every"])
    return {
        "recommended": pick["every"],
        "live_auc": pick["live_auc"],
        "live_log_loss": pick["live_log_loss"],
        "best_live_auc": best,
        "tolerance": tolerance,
    }


def _decay(
    age: np.ndarray, p: np.ndarray, y: np.ndarray, cands: Sequence[float], span: float
) -> list[dict[str, Any]]:
    """Live AUC by model age (time since the model's training data ended), pooled."""
    edges = sorted({0.0, *[float(c) for c in cands], float(span) + 1.0})
    rows = []
    for lo, hi in itertools.pairwise(edges):
        m = (age >= lo) & (age < hi)
        if m.sum() < 50 or len(np.unique(y[m])) < 2:
            continue
        s = scores(y[m], p[m])
        rows.append(
            {"age_from": lo, "age_to": hi, "n": int(m.sum()), "auc": round(s["auc"] or 0.0, 4)}
        )
    return rows


def _importance(m: ConversionModel) -> list[dict[str, Any]]:
    total = sum(m.feature_importances_.values()) or 1.0
    items = sorted(m.feature_importances_.items(), key=lambda kv: -kv[1])
    return [{"name": k, "share": round(v / total, 4)} for k, v in items]


def _verdict(
    time_split: dict[str, Any],
    gap: dict[str, Any],
    overfit: bool,
    drift: dict[str, Any],
    cadence: dict[str, Any],
    unit: str,
) -> str:
    parts = []
    if overfit:
        parts.append(
            f"the random split overstates it: AUC {time_split['auc'] + gap['auc']:.3f} there "
            f"against {time_split['auc']:.3f} on the later holdout"
        )
    else:
        parts.append(f"live AUC {time_split['auc']:.3f}, close to the random split's")
    bt, bh = drift["base_rate_train"], drift["base_rate_holdout"]
    moved = [f["name"] for f in drift["features"] if f["shift"] == "major"]
    if abs(bh - bt) > 0.25 * max(bt, 1e-9) or moved:
        what = f"base rate {bt:.1%} -> {bh:.1%}"
        if moved:
            what += f"; major shift in {', '.join(moved[:5])}"
        parts.append(f"the data drifts ({what})")
    every = cadence.get("recommended")
    if every is not None:
        parts.append(
            f"retrain every {_fmt(every)} {unit}: live AUC {cadence['live_auc']:.3f} "
            f"(trained once: {time_split['auc']:.3f})"
        )
    elif cadence.get("live_auc") is not None:
        parts.append("retraining more often does not help here")
    return "; ".join(parts)
