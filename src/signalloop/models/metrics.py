"""Scores of a probability: discrimination, calibration, and population stability.

Every verdict signalloop gives about a model is made of these numbers:

* :func:`scores` -- AUC, log loss, Brier score and expected calibration error of predicted
  probabilities against 0/1 labels, as one JSON-ready dict.
* :func:`reliability_table` -- predicted against observed rates in equal-width bins: the table
  behind a reliability diagram and behind :func:`expected_calibration_error`.
* :func:`psi` -- the population stability index of one feature between two periods (training
  and holdout), for numbers (binned at the training deciles) and categories alike.

>>> import numpy as np
>>> y = np.array([0, 0, 1, 1])
>>> p = np.array([0.1, 0.4, 0.35, 0.8])
>>> round(scores(y, p)["auc"], 2)
0.75
>>> psi(np.zeros(100), np.zeros(100))
0.0
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

#: Bins of the reliability table and of the expected calibration error.
N_BINS = 10
#: Floor on a bin's share in :func:`psi` (an empty bin would make the index infinite).
PSI_FLOOR = 1e-4
#: Conventional PSI reading: below 0.1 stable, 0.1-0.25 moderate shift, above 0.25 major.
PSI_MODERATE = 0.1
PSI_MAJOR = 0.25


def _clip(p: Any) -> np.ndarray:
    out: np.ndarray = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return out


def reliability_table(
    y: Any, p: Any, n_bins: int = N_BINS, weight: Any = None
) -> list[dict[str, Any]]:
    """Predicted against observed positive rate in ``n_bins`` equal-width probability bins.

    Returns one dict per non-empty bin: ``lower``, ``upper``, ``n`` (rows), ``mean_predicted``,
    ``observed_rate``. With ``weight`` (rows of a sampled frame, each standing for that many)
    the means and rates are weighted and each bin also has ``weight``, the rows it stands for.

    >>> reliability_table([0, 1, 1], [0.05, 0.95, 0.9], n_bins=2)[1]["observed_rate"]
    1.0
    >>> reliability_table([0, 1], [0.1, 0.2], n_bins=2, weight=[3, 1])[0]["observed_rate"]
    0.25
    """
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    w = None if weight is None else np.asarray(weight, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = idx == b
        n = int(m.sum())
        if n == 0:
            continue
        wb = None if w is None else w[m]
        row = {
            "lower": round(float(edges[b]), 3),
            "upper": round(float(edges[b + 1]), 3),
            "n": n,
            "mean_predicted": float(np.average(p[m], weights=wb)),
            "observed_rate": float(np.average(y[m], weights=wb)),
        }
        if wb is not None:
            row["weight"] = float(wb.sum())
        rows.append(row)
    return rows


def expected_calibration_error(y: Any, p: Any, n_bins: int = N_BINS, weight: Any = None) -> float:
    """Mean |predicted - observed| over the reliability bins, weighted by their sizes.

    >>> expected_calibration_error([0, 1], [0.0, 1.0])
    0.0
    """
    rows = reliability_table(y, p, n_bins, weight)
    size = [r.get("weight", r["n"]) for r in rows]
    n = sum(size)
    if n == 0:
        return float("nan")
    gaps = [abs(r["mean_predicted"] - r["observed_rate"]) for r in rows]
    return float(sum(s * g for s, g in zip(size, gaps, strict=True)) / n)


def scores(y: Any, p: Any, weight: Any = None) -> dict[str, float | None]:
    """AUC, log loss, Brier score, expected calibration error, base rate and mean prediction.

    ``auc`` is ``None`` when ``y`` holds one class only (it is undefined there). ``weight``
    weighs each row (rows of a sampled frame stand for the rows left out); ``n`` counts rows.

    >>> s = scores([0, 0, 1], [0.2, 0.2, 0.6], weight=[2, 2, 1])
    >>> s["base_rate"], round(s["mean_predicted"], 2)
    (0.2, 0.28)
    """
    y = np.asarray(y, dtype=int)
    p = _clip(p)
    w = None if weight is None else np.asarray(weight, dtype=float)
    both = len(np.unique(y)) == 2
    return {
        "auc": float(roc_auc_score(y, p, sample_weight=w)) if both else None,
        "log_loss": float(log_loss(y, p, labels=[0, 1], sample_weight=w)),
        "brier": float(brier_score_loss(y, p, sample_weight=w)),
        "ece": expected_calibration_error(y, p, weight=w),
        "base_rate": float(np.average(y, weights=w)) if len(y) else float("nan"),
        "mean_predicted": float(np.average(p, weights=w)) if len(p) else float("nan"),
        "n": len(y),
    }


def psi(
    expected: Any,
    actual: Any,
    *,
    categorical: bool | None = None,
    bins: int = 10,
    weights: tuple[Any, Any] | None = None,
) -> float:
    """Population stability index of one feature: ``sum((a - e) * ln(a / e))`` over bins.

    Parameters
    ----------
    expected
        The feature in the reference period (training).
    actual
        The feature in the period compared (holdout).
    categorical
        Treat values as categories; by default, anything that is not numeric is.
    bins
        Numeric features are cut at the reference period's quantiles into this many bins
        (fewer when values repeat); missing values are a bin of their own.
    weights
        Row weights of ``expected`` and ``actual`` (rows of a sampled frame): the shares and
        the reference quantiles are weighted.

    >>> round(psi(["a"] * 50 + ["b"] * 50, ["a"] * 90 + ["b"] * 10), 3)
    0.879
    >>> round(psi(["a", "b"], ["a"] * 90 + ["b"] * 10, weights=([1, 1], None)), 3)
    0.879
    """
    e = pd.Series(expected)
    a = pd.Series(actual)
    we = np.ones(len(e)) if weights is None or weights[0] is None else np.asarray(weights[0])
    wa = np.ones(len(a)) if weights is None or weights[1] is None else np.asarray(weights[1])
    if categorical is None:
        categorical = not (pd.api.types.is_numeric_dtype(e) and not pd.api.types.is_bool_dtype(e))
    ek: pd.Series[Any]
    ak: pd.Series[Any]
    if categorical:
        ek = e.astype("string").fillna("<missing>")
        ak = a.astype("string").fillna("<missing>")
    else:
        ev = e.astype(float).to_numpy()
        av = a.astype(float).to_numpy()
        ok = ~np.isnan(ev)
        if not ok.any():
            edges = np.array([])
        else:
            qs = np.linspace(0, 1, bins + 1)[1:-1]
            edges = np.unique(_weighted_quantile(ev[ok], we[ok], qs))
        ek = pd.Series(np.where(np.isnan(ev), -1, np.searchsorted(edges, ev, side="right")))
        ak = pd.Series(np.where(np.isnan(av), -1, np.searchsorted(edges, av, side="right")))
    keys = sorted(set(ek.unique()) | set(ak.unique()), key=str)
    ep = _shares(ek, we, keys)
    ap = _shares(ak, wa, keys)
    ep = np.maximum(ep, PSI_FLOOR)
    ap = np.maximum(ap, PSI_FLOOR)
    return float(np.sum((ap - ep) * np.log(ap / ep)))


def _shares(keys: pd.Series[Any], w: np.ndarray, order: list[Any]) -> np.ndarray:
    """Each key's share of the total weight, in ``order`` (0 for keys absent here)."""
    total = pd.Series(w, index=keys.index).groupby(keys.to_numpy()).sum()
    share = (total / max(float(total.sum()), 1e-300)).reindex(order, fill_value=0.0)
    return np.asarray(share, dtype=float)


def _weighted_quantile(v: np.ndarray, w: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """Quantiles ``qs`` of ``v`` weighted by ``w``; unit weights give numpy's default
    (linear) quantiles."""
    if np.all(w == w[0]):
        out: np.ndarray = np.quantile(v, qs)
        return out
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cum = np.cumsum(w) - 0.5 * w  # each value at the middle of its weight
    res: np.ndarray = np.interp(qs * w.sum(), cum, v)
    return res
