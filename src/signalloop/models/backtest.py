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
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

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
#: The verdict names a drifting feature when the model takes at least this share of its gain
#: from it (features such as a user's touch count drift as any account ages, harmlessly).
IMPORTANT_SHARE = 0.05
#: Rows scored per evaluation (holdout, random test set, drift period); beyond it a uniform
#: sample is scored. At the simulator's 3.6% base rate (18,000 positives in 500,000 rows) an AUC
#: near 0.65 has a standard error of about 0.0023 (Hanley and McNeil); predicting 500,000 rows
#: costs each fit a few seconds instead of a minute at 32M touchpoints.
MAX_EVAL_ROWS = 500_000
#: A candidate cadence must give the holdout at least 2 and at most this many retrains.
MAX_RETRAINS = 40

Progress = Callable[[str, int, int], None]
#: What ``progress`` is told for each fit (the cadence refits are "retraining").
STEP_NAMES = {"final": "final model", "random": "random split", "time": "time split"}


def _scores(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in scores(y, p, w).items()}


def candidate_cadences(span: float, unit: str) -> list[float]:
    """Cadences worth trying over a holdout of ``span`` rows or days (each retrains 2-40x).

    >>> candidate_cadences(12357, "rows")
    [500, 1000, 2000, 5000]
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
    workers: int | None = None,
    progress: Progress | None = None,
    max_eval_rows: int | None = MAX_EVAL_ROWS,
    final: Callable[[ConversionModel], None] | None = None,
    sample_weight: Any = None,
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
        ``random_state``); it is cloned with its parameters for every fit, and each fit
        samples its own training rows under the model's ``max_rows``.
    holdout, overfit_threshold, tolerance
        Live holdout share; AUC gap that counts as overfitting; how much live AUC a longer
        cadence may give up against the best.
    cadences
        Candidate cadences in ``unit`` (default :func:`candidate_cadences`).
    workers
        Processes for the fits (default: the machine's cores, at most 4).
    progress
        Called as ``progress(step, done, total)`` while models are fitted.
    max_eval_rows
        Rows scored per evaluation: a larger holdout (or random test set, or drift period) is
        scored on a uniform sample of this many rows, drawn with ``random_state``; ``None``
        scores every row.
    final
        When given, the model is also fitted on every row, as one more fit among the
        backtest's own (sharing their worker processes), and handed to ``final``.
    sample_weight
        Row weights of a frame that was itself sampled (each row stands for that many, as
        :attr:`~signalloop.models.features.TrainingFrame.weight`): every fit learns with them
        and every score, rate and drift index is weighted by them.

    Returns
    -------
    dict
        ``rows``, ``target``, ``unit``, ``random_split``, ``time_split`` (with
        ``reliability``), ``gap``, ``overfit``, ``drift``, ``cadence`` (``recommended``,
        ``live_auc``, ``live_log_loss``, ``candidates``, ``decay``), ``sampling`` and
        ``verdict``.
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
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
    if w is not None and len(w) != n:
        raise UsageError(f"{n} labels but {len(w)} sample weights")

    def wt(rows: np.ndarray | slice) -> np.ndarray | None:
        return None if w is None else w[rows]

    if workers is None:
        workers = min(os.cpu_count() or 1, 4)
    template = model or ConversionModel(random_state=random_state)
    params = template.get_params()

    cut = round(n * (1 - holdout))
    span = clk[-1] - clk[cut]
    cands: list[float] = list(cadences) if cadences is not None else candidate_cadences(span, unit)
    starts_by = {c: _block_starts(clk, cut, c) for c in cands}
    # the holdout rows scored (all of them, or a uniform sample on a large frame)
    hold = _eval_rows(np.arange(cut, n), max_eval_rows, random_state)
    rng = np.random.default_rng(random_state)
    perm = rng.permutation(n)
    n_test = round(n * RANDOM_TEST)
    tr, te = perm[n_test:], perm[:n_test]
    if max_eval_rows is not None and len(te) > max_eval_rows:
        te = te[:max_eval_rows]  # a prefix of a random permutation is a uniform sample

    # Every fit is independent of the others: the random split, the time split (which also
    # scores the first cadence block), one per distinct cadence training end (cadences share
    # ends: every 14 days retrains where every 7 does) and the final model. Each is sampled
    # here, so only its sampled rows travel to a worker process.
    reach: dict[int, int] = {}
    for c in cands:
        starts = starts_by[c]
        for b, e in zip(starts, [*starts[1:], n], strict=True):
            reach[b] = max(reach.get(b, b), e)

    def until(b: int, e: int) -> np.ndarray:
        return hold[np.searchsorted(hold, b) : np.searchsorted(hold, e)]

    tasks: list[_Task] = []
    if final is not None:
        tasks.append(("final", slice(0, n), None))
    tasks.append(("random", tr, te))
    tasks.append(("time", slice(0, cut), hold))
    tasks += [(b, slice(0, b), until(b, e)) for b, e in sorted(reach.items()) if b != cut]
    done = 0

    def step(key: Any) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(STEP_NAMES.get(key, "retraining"), done, len(tasks))

    fitted: dict[Any, tuple[ConversionModel | None, np.ndarray]] = {}
    for key, m, p in _fit_predict_all(template, params, X, y, w, tasks, workers, step):
        fitted[key] = (m, p)

    # 1. random split
    random_split = _scores(y[te], fitted["random"][1], wt(te))

    # 2. time split
    m_time, p_hold = fitted["time"]
    assert m_time is not None
    time_split = _scores(y[hold], p_hold, wt(hold))
    time_split["reliability"] = reliability_table(y[hold], p_hold, weight=wt(hold))
    time_split["calibration"] = m_time.calibration_method_

    gap = {
        "auc": _diff(random_split["auc"], time_split["auc"]),
        "log_loss": _diff(time_split["log_loss"], random_split["log_loss"]),
        "brier": _diff(time_split["brier"], random_split["brier"]),
    }
    overfit = gap["auc"] is not None and gap["auc"] > overfit_threshold

    # 3. drift between the training and holdout periods
    ref = _eval_rows(np.arange(cut), max_eval_rows, random_state)
    feats: list[dict[str, Any]] = []
    for col in X.columns:
        v = psi(_at(X[col], ref), _at(X[col], hold), weights=(wt(ref), wt(hold)))
        level = "major" if v > PSI_MAJOR else "moderate" if v > PSI_MODERATE else "stable"
        feats.append({"name": str(col), "psi": round(v, 4), "shift": level})
    feats.sort(key=lambda f: -float(f["psi"]))
    drift = {
        "base_rate_train": round(float(np.average(y[:cut], weights=wt(slice(0, cut)))), 6),
        "base_rate_holdout": round(float(np.average(y[cut:], weights=wt(slice(cut, n)))), 6),
        "features": feats,
    }

    # 4. retraining cadence (rolling origin over the holdout)
    ahead = {b: p for b, (_, p) in fitted.items() if isinstance(b, int)}
    ahead[cut] = p_hold
    yh, ch, wh = y[hold], clk[hold], wt(hold)
    runs = []
    ages: list[np.ndarray] = [ch - clk[cut]]
    preds: list[np.ndarray] = [p_hold]
    models: list[np.ndarray] = [np.zeros(len(hold), dtype=np.int64)]
    for c in cands:
        p = np.empty(len(hold))
        age = np.empty(len(hold))
        mid = np.empty(len(hold), dtype=np.int64)
        starts = starts_by[c]
        for b, e in zip(starts, [*starts[1:], n], strict=True):
            lo, hi = np.searchsorted(hold, b), np.searchsorted(hold, e)
            p[lo:hi] = ahead[b][: hi - lo]
            age[lo:hi] = ch[lo:hi] - clk[b]
            mid[lo:hi] = len(models) * 1_000_000 + b
        s = _scores(yh, p, wh)
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
        models.append(mid)
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
        np.concatenate(ages),
        np.concatenate(preds),
        np.tile(yh, len(preds)),
        np.concatenate(models),
        cands,
        span,
        None if wh is None else np.tile(wh, len(preds)),
    )
    doc = {
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
        "sampling": {
            "max_rows": params.get("max_rows"),
            "time_split_trained_on": m_time.n_sampled_,
            "time_split_training_rows": cut,
            "max_eval_rows": max_eval_rows,
            "holdout_scored": len(hold),
            "holdout_rows": n - cut,
            "weighted": w is not None,
        },
        "feature_importance": _importance(m_time),
        "verdict": _verdict(time_split, gap, overfit, drift, cadence, unit, _importance(m_time)),
    }
    if final is not None:
        m_final = fitted["final"][0]
        assert m_final is not None
        final(m_final)
    return doc


_Rows = TypeVar("_Rows", pd.DataFrame, "pd.Series[Any]")
#: A fit: its key, the rows it trains on (before sampling) and the rows it predicts.
_Task = tuple[Any, slice | np.ndarray, np.ndarray | None]


def _eval_rows(rows: np.ndarray, cap: int | None, random_state: int) -> np.ndarray:
    """``rows``, or a sorted uniform sample of ``cap`` of them (seeded) when there are more."""
    if cap is None or len(rows) <= cap:
        return rows
    rng = np.random.default_rng((random_state, len(rows)))
    return np.sort(rng.choice(rows, size=cap, replace=False))


def _fit_one(
    params: dict[str, Any],
    Xt: pd.DataFrame,
    yt: np.ndarray,
    wt: np.ndarray | None,
    Xp: pd.DataFrame | None,
    key: Any,
    keep_model: bool,
) -> tuple[Any, ConversionModel | None, np.ndarray]:
    m = ConversionModel(**params).fit(Xt, yt, sample_weight=wt)
    p = m.predict(Xp) if Xp is not None and len(Xp) else np.array([])
    return key, (m if keep_model else None), p


def _fit_predict_all(
    template: ConversionModel,
    params: dict[str, Any],
    X: pd.DataFrame,
    y: np.ndarray,
    w: np.ndarray | None,
    tasks: list[_Task],
    workers: int,
    tick: Callable[[Any], None],
) -> Iterator[tuple[Any, ConversionModel | None, np.ndarray]]:
    """Fit each task on its (sampled) training rows and predict its rows, ``workers`` at a
    time; the time split's and the final model come back whole, the others as predictions."""

    def job(task: _Task) -> tuple[Any, ...]:
        key, train, rows = task
        yt = y[train]
        keep, wt = template.sample_rows(yt, None if w is None else w[train])
        if keep is None:
            Xt = X.iloc[train]
        else:
            idx = keep + train.start if isinstance(train, slice) else train[keep]
            Xt, yt = X.iloc[idx], yt[keep]
        Xp = None if rows is None else _at(X, rows)
        return params, Xt, yt, wt, Xp, key, key in ("time", "final")

    if workers <= 1 or len(tasks) < 2:
        for task in tasks:
            res = _fit_one(*job(task))
            yield res
            tick(res[0])
        return
    from joblib import Parallel, delayed

    runs = Parallel(n_jobs=workers, return_as="generator_unordered")(
        delayed(_fit_one)(*job(task)) for task in tasks
    )
    for res in runs:
        yield res
        tick(res[0])


def _at(obj: _Rows, rows: np.ndarray) -> _Rows:
    """``obj`` (a frame or a column) at positions ``rows``; a slice when they are consecutive."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1:
        return obj.iloc[int(rows[0]) : int(rows[-1]) + 1]
    return obj.iloc[rows]


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
    age: np.ndarray,
    p: np.ndarray,
    y: np.ndarray,
    model_id: np.ndarray,
    cands: Sequence[float],
    span: float,
    w: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Live AUC by model age (time since the model's training data ended).

    AUC is computed within each model's own predictions in an age bin (a pooled AUC would mix
    periods whose base rates differ) and averaged over models, weighted by rows (each row
    weighted by ``w`` inside its AUC when the frame was sampled).
    """
    edges = sorted({0.0, *[float(c) for c in cands], float(span) + 1.0})
    rows = []
    for lo, hi in itertools.pairwise(edges):
        m = (age >= lo) & (age < hi)
        total, weighted, models = 0, 0.0, 0
        for mid in np.unique(model_id[m]):
            g = m & (model_id == mid)
            if g.sum() < 50 or len(np.unique(y[g])) < 2:
                continue
            auc = scores(y[g], p[g], None if w is None else w[g])["auc"] or 0.0
            total += int(g.sum())
            weighted += auc * int(g.sum())
            models += 1
        if total:
            rows.append(
                {
                    "age_from": lo,
                    "age_to": hi,
                    "n": total,
                    "models": models,
                    "auc": round(weighted / total, 4),
                }
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
    importance: list[dict[str, Any]],
) -> str:
    parts = []
    leaned_on = {f["name"] for f in importance if f["share"] >= IMPORTANT_SHARE}
    if overfit:
        parts.append(
            f"the random split overstates it: AUC {time_split['auc'] + gap['auc']:.3f} there "
            f"against {time_split['auc']:.3f} on the later holdout"
        )
    else:
        parts.append(f"live AUC {time_split['auc']:.3f}, close to the random split's")
    bt, bh = drift["base_rate_train"], drift["base_rate_holdout"]
    moved = [
        f["name"] for f in drift["features"] if f["shift"] == "major" and f["name"] in leaned_on
    ]
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
