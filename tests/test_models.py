"""ConversionModel, metrics and backtest against data whose true probabilities are known."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from signalloop.errors import UsageError
from signalloop.models.backtest import backtest, candidate_cadences
from signalloop.models.estimator import ConversionModel
from signalloop.models.metrics import expected_calibration_error, psi, reliability_table, scores

FAST = {"n_estimators": 60, "learning_rate": 0.1, "random_state": 0}


def logistic_data(
    n: int, seed: int, drift: float = 0.0
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Features, labels and true P(y=1); with ``drift`` the effect of ``x`` turns over time."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    z = rng.normal(size=n)
    c = rng.choice(["feed", "stories", "search"], n, p=[0.5, 0.3, 0.2])
    t = np.linspace(0, 1, n)
    slope = 1.5 * (1 - 2 * drift * t)  # drift=1: +1.5 at the start, -1.5 at the end
    logit = -2.0 + slope * x + 0.5 * z + np.select([c == "search", c == "stories"], [1.0, -0.5])
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < p).astype(int)
    return pd.DataFrame({"x": x, "z": z, "placement": c}), y, p


# ---------------------------------------------------------------------------------- metrics
def test_scores_match_hand_computation() -> None:
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    s = scores(y, p)
    assert s["auc"] == pytest.approx(5 / 6)
    assert s["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert s["log_loss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert s["base_rate"] == 0.6 and s["n"] == 5
    assert scores(np.zeros(3, int), np.full(3, 0.2))["auc"] is None


def test_reliability_and_ece() -> None:
    y = [0, 0, 1, 1]
    p = [0.1, 0.1, 0.9, 0.7]
    rows = reliability_table(y, p)
    assert [(r["n"], r["observed_rate"]) for r in rows] == [(2, 0.0), (1, 1.0), (1, 1.0)]
    # |0.1-0| x 2 + |0.7-1| + |0.9-1|, over 4
    assert expected_calibration_error(y, p) == pytest.approx((0.2 + 0.3 + 0.1) / 4)


def test_psi_is_zero_for_same_and_large_for_shift() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=5000)
    assert psi(a[:2500], a[2500:]) < 0.02
    assert psi(a, a + 1.0) > 0.5
    assert psi(["x"] * 10, ["x"] * 10) == 0.0
    # a category that appears only later counts
    assert psi(["x"] * 100, ["x"] * 50 + ["y"] * 50) > 1.0


# -------------------------------------------------------------------------------- estimator
def test_estimator_contract() -> None:
    m = ConversionModel(**FAST)
    assert not [k for k in vars(m) if k.endswith("_")]  # __init__ only stores arguments
    assert m.get_params()["n_estimators"] == 60
    X, y, _ = logistic_data(3000, 0)
    assert m.fit(X, y) is m
    assert {"features_", "booster_", "calibration_method_", "n_train_"} <= set(vars(m))
    a = m.predict(X)
    b = ConversionModel(**FAST).fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)  # randomness only from random_state
    assert m.predict_proba(X).shape == (3000, 2)
    np.testing.assert_allclose(m.predict_proba(X).sum(axis=1), 1.0)


def test_probabilities_recover_the_truth() -> None:
    """On stationary data the calibrated probabilities sit close to the true ones."""
    X, y, p = logistic_data(20_000, 3)
    m = ConversionModel(**FAST).fit(X.iloc[:15_000], y[:15_000])
    q = m.predict(X.iloc[15_000:])
    truth = p[15_000:]
    err = np.mean(np.abs(q - truth))
    assert err < 0.04
    assert err < np.mean(np.abs(y[:15_000].mean() - truth)) / 3  # a third of the base rate's
    assert abs(q.mean() - y[15_000:].mean()) < 0.015
    oracle = roc_auc_score(y[15_000:], truth)
    assert roc_auc_score(y[15_000:], q) > oracle - 0.015
    assert expected_calibration_error(y[15_000:], q) < 0.02


def test_unknown_categories_and_missing_columns() -> None:
    X, y, _ = logistic_data(2000, 4)
    m = ConversionModel(**FAST).fit(X, y)
    new = X.head(3).assign(placement=["tiktok", "feed", None])
    assert np.isfinite(m.predict(new)).all()
    with pytest.raises(UsageError, match="needs feature column"):
        m.predict(X.drop(columns=["z"]))


def test_estimator_refuses_one_class_and_bad_calibration() -> None:
    X, _, _ = logistic_data(500, 5)
    with pytest.raises(UsageError, match="both outcomes"):
        ConversionModel(**FAST).fit(X, np.zeros(500, int))
    with pytest.raises(UsageError, match="calibration must be one of"):
        ConversionModel(calibration="beta").fit(X, np.r_[np.zeros(250, int), np.ones(250, int)])
    with pytest.raises(UsageError, match="not fitted"):
        ConversionModel().predict(X)


@pytest.mark.parametrize("method", ["isotonic", "sigmoid", "none"])
def test_every_calibration_map_keeps_the_ranking(method: str) -> None:
    X, y, _ = logistic_data(6000, 6)
    m = ConversionModel(calibration=method, **FAST).fit(X, y)
    raw = m.booster_.predict_proba(m._frame(X, fitting=False))[:, 1]
    q = m.predict(X)
    assert m.calibration_method_ == method
    assert roc_auc_score(y, q) == pytest.approx(roc_auc_score(y, raw), abs=1e-4)


# --------------------------------------------------------------------------------- backtest
def _bt(X: pd.DataFrame, y: np.ndarray, **kw: Any) -> dict[str, Any]:
    return backtest(X, y, model=ConversionModel(**FAST), **kw)


def test_backtest_on_stationary_data_finds_no_overfitting() -> None:
    X, y, _ = logistic_data(6000, 7)
    r = _bt(X, y, cadences=[900])
    assert r["rows"] == 6000 and r["positives"] == int(y.sum())
    assert r["overfit"] is False
    assert abs(r["gap"]["auc"]) < 0.03
    assert abs(r["drift"]["base_rate_train"] - r["drift"]["base_rate_holdout"]) < 0.03
    assert all(f["shift"] == "stable" for f in r["drift"]["features"])
    # retraining buys nothing here: the longest cadence within tolerance is "never"
    assert r["cadence"]["recommended"] is None
    assert {"auc", "log_loss", "brier"} <= set(r["random_split"]) <= set(r["time_split"])
    assert sum(b["n"] for b in r["time_split"]["reliability"]) == r["time_split"]["n"]


def test_backtest_on_drifting_data_flags_overfit_and_recommends_retraining() -> None:
    """The effect of x turns over: a random split hides it, the live holdout does not."""
    X, y, _ = logistic_data(8000, 8, drift=1.0)
    r = _bt(X, y, cadences=[300, 1200])
    assert r["overfit"] is True
    assert r["gap"]["auc"] > 0.05
    runs = {c["every"]: c for c in r["cadence"]["candidates"]}
    assert runs[300]["live_auc"] > runs[None]["live_auc"] + 0.05
    assert r["cadence"]["recommended"] == 300
    assert r["cadence"]["live_auc"] == runs[300]["live_auc"]
    assert "random split overstates" in r["verdict"] and "retrain every 300 rows" in r["verdict"]
    # older models score worse: the decay table falls with model age
    decay = r["cadence"]["decay"]
    assert decay[0]["auc"] > decay[-1]["auc"]


def test_backtest_refuses_unordered_and_tiny_input() -> None:
    X, y, _ = logistic_data(1000, 9)
    with pytest.raises(UsageError, match="time order"):
        _bt(X, y, clock=np.r_[np.arange(500), np.arange(500)])
    with pytest.raises(UsageError, match="too little"):
        _bt(X.head(100), y[:100])


def test_candidate_cadences() -> None:
    assert candidate_cadences(12357, "rows") == [500, 1000, 2000, 5000]
    assert candidate_cadences(30, "days") == [1, 3, 7, 14]
    assert candidate_cadences(3, "days") == [1]
