"""Models at scale: negatives sampled under ``max_rows`` with weights; one refresh per outcome."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from signalloop.errors import UsageError
from signalloop.models.api import fit_workspace, refresh_workspace
from signalloop.models.backtest import backtest
from signalloop.models.card import load_model, read_card
from signalloop.models.estimator import ConversionModel
from signalloop.models.features import build_frame

from .conftest import simulated_workspace
from .test_models import FAST, logistic_data


def rare_data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Stationary logistic data with a base rate near 3% (the regime sampling is for)."""
    rng = np.random.default_rng(seed)
    x, z = rng.normal(size=n), rng.normal(size=n)
    c = rng.choice(["feed", "stories", "search"], n, p=[0.5, 0.3, 0.2])
    logit = -4.0 + 1.2 * x + 0.4 * z + np.where(c == "search", 0.8, 0.0)
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < p).astype(int)
    return pd.DataFrame({"x": x, "z": z, "placement": c}), y, p


# --------------------------------------------------------------------------------- sampling
def test_sampling_keeps_every_positive_and_respects_the_cap() -> None:
    _, y, _ = rare_data(50_000, 1)
    m = ConversionModel(max_rows=5_000, random_state=3)
    keep, w = m.sample_rows(y)
    assert keep is not None and w is not None
    assert len(keep) == 5_000
    assert np.all(np.diff(keep) > 0)  # sorted and distinct: time order is kept
    assert set(np.flatnonzero(y == 1)) <= set(keep)
    assert np.all(w[y[keep] == 1] == 1.0)
    # the weighted sample has as many negatives as the frame, so the base rate is unchanged
    assert w.sum() == pytest.approx(len(y))
    assert np.average(y[keep], weights=w) == pytest.approx(y.mean())


def test_sampling_is_deterministic_under_random_state() -> None:
    _, y, _ = rare_data(20_000, 2)
    a, _ = ConversionModel(max_rows=3_000, random_state=1).sample_rows(y)
    b, _ = ConversionModel(max_rows=3_000, random_state=1).sample_rows(y)
    c, _ = ConversionModel(max_rows=3_000, random_state=2).sample_rows(y)
    assert a is not None and b is not None and c is not None
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    X, y, _ = rare_data(20_000, 2)
    p1 = ConversionModel(max_rows=3_000, **FAST).fit(X, y).predict(X.head(500))
    p2 = ConversionModel(max_rows=3_000, **FAST).fit(X, y).predict(X.head(500))
    np.testing.assert_array_equal(p1, p2)


def test_many_positives_share_the_cap_with_the_negatives() -> None:
    """When positives alone would fill more than half the cap, each class gets half, and the
    weights still add up to each class's rows (the cap bounds every fit)."""
    y = np.r_[np.ones(800, int), np.zeros(9_200, int)]
    keep, w = ConversionModel(max_rows=1_000).sample_rows(y)
    assert keep is not None and w is not None
    assert int(y[keep].sum()) == 500 and int((y[keep] == 0).sum()) == 500
    assert w[y[keep] == 1].sum() == pytest.approx(800)
    assert w.sum() == pytest.approx(len(y))
    # a frame that was itself sampled: its weights multiply the fit's
    frame_w = np.where(y == 1, 1.0, 3.0)
    _, w3 = ConversionModel(max_rows=1_000).sample_rows(y, frame_w)
    assert w3 is not None and w3.sum() == pytest.approx(800 + 3 * 9_200)
    assert ConversionModel(max_rows=20_000).sample_rows(y, frame_w)[1] is not None
    with pytest.raises(UsageError, match="max_rows"):
        ConversionModel(max_rows=0).sample_rows(y)


def test_a_frame_within_the_cap_is_fitted_as_without_one() -> None:
    X, y, _ = logistic_data(3_000, 0)
    capped = ConversionModel(max_rows=3_000, **FAST).fit(X, y)
    free = ConversionModel(max_rows=None, **FAST).fit(X, y)
    assert capped.sample_rows(y) == (None, None)
    assert capped.n_sampled_ == capped.n_rows_ == 3_000 and capped.negative_weight_ == 1.0
    np.testing.assert_array_equal(capped.predict(X), free.predict(X))
    assert capped.calibration_method_ == free.calibration_method_


def test_the_cap_bounds_what_a_fit_learns_from() -> None:
    X, y, _ = rare_data(30_000, 4)
    m = ConversionModel(max_rows=4_000, **FAST).fit(X, y)
    assert m.n_rows_ == 30_000 and m.n_sampled_ == 4_000
    assert m.n_train_ + m.n_calibration_ == 4_000
    assert m.negative_weight_ == pytest.approx((y == 0).sum() / (4_000 - y.sum()))
    assert "max_rows" in m.get_params()


def test_weights_keep_the_probabilities_calibrated() -> None:
    """Sampled to an eighth of its negatives, the model still predicts the true base rate.

    60,000 training rows at a ~4% base rate (about 2,500 positives), capped at 10,000 rows:
    each of the 7,500 sampled negatives stands for about 7.7. The mean prediction on 20,000
    later rows is compared with the mean of their *true* probabilities (no label noise).
    Tolerance 0.006, 15% of the base rate: the sampled fit learns the negatives from an
    eighth of the rows, so its leaf values are noisier; on seeds 5-7 of this generator it
    missed by at most 0.0047 (the unsampled fit by at most 0.0017). Without the weights the
    same sample predicts about 25% (2,500 positives among 10,000 rows), so the tolerance is
    far below the bias the weights remove; that unweighted fit is checked to miss.
    """
    X, y, p = rare_data(80_000, 5)
    tr, te = slice(0, 60_000), slice(60_000, None)
    truth = p[te].mean()
    free = ConversionModel(max_rows=None, **FAST).fit(X.iloc[tr], y[tr])
    capped = ConversionModel(max_rows=10_000, **FAST).fit(X.iloc[tr], y[tr])
    assert capped.n_sampled_ == 10_000
    for m in (free, capped):
        assert m.predict(X.iloc[te]).mean() == pytest.approx(truth, abs=0.006)
    # the failure the weights prevent: the same rows, every weight one
    keep, _ = capped.sample_rows(y[tr])
    assert keep is not None
    ones = np.ones(len(keep))
    naive = ConversionModel(max_rows=None, calibration="none", **FAST)
    naive.fit(X.iloc[keep], y[keep], sample_weight=ones)
    assert naive.predict(X.iloc[te]).mean() > truth + 0.05


def test_sampled_fit_ranks_as_well_as_the_full_one() -> None:
    X, y, p = rare_data(80_000, 6)
    from sklearn.metrics import roc_auc_score

    tr, te = slice(0, 60_000), slice(60_000, None)
    free = ConversionModel(max_rows=None, **FAST).fit(X.iloc[tr], y[tr]).predict(X.iloc[te])
    capped = ConversionModel(max_rows=10_000, **FAST).fit(X.iloc[tr], y[tr]).predict(X.iloc[te])
    oracle = roc_auc_score(y[te], p[te])
    assert roc_auc_score(y[te], capped) > oracle - 0.02
    assert abs(roc_auc_score(y[te], capped) - roc_auc_score(y[te], free)) < 0.01


def test_backtest_scores_a_sample_of_a_large_holdout() -> None:
    X, y, _ = rare_data(20_000, 7)
    model = ConversionModel(max_rows=5_000, **FAST)
    r = backtest(X, y, model=model, cadences=[2_000], max_eval_rows=3_000)
    s = r["sampling"]
    assert s["holdout_rows"] == 6_000 and s["holdout_scored"] == 3_000
    assert s["time_split_training_rows"] == 14_000 and s["time_split_trained_on"] == 5_000
    assert r["time_split"]["n"] == 3_000 and r["random_split"]["n"] == 3_000
    assert r["time_split"]["auc"] > 0.7
    # one block per retrain, each scored on its own share of the sampled holdout
    assert {c["every"] for c in r["cadence"]["candidates"]} == {2_000, None}
    again = backtest(X, y, model=model, cadences=[2_000], max_eval_rows=3_000, workers=1)
    assert again["time_split"] == r["time_split"]
    assert again["cadence"] == r["cadence"]


# -------------------------------------------------------------------------- one refresh
def test_refresh_builds_one_frame_and_matches_fit_and_backtest(tmp_path: Path) -> None:
    ws, _, _ = simulated_workspace(tmp_path, days=45, campaigns=3, seed=5)
    with ws:
        folder = tmp_path / "m" / "conversion"
        out = refresh_workspace(ws, "conversion", folder=folder, cadences=[7, 14], workers=2)
        model, card = load_model(folder)
        ref = fit_workspace(ws, "conversion", folder=tmp_path / "ref")
        ref_model, _ = load_model(tmp_path / "ref")
        tf = build_frame(ws, "conversion")
    bt = json.loads((folder / "backtest.json").read_text())
    assert bt == json.loads(json.dumps(out["backtest"], default=str))
    for key in ("rows", "positives", "time_split", "calibration", "config_hash", "schema_hash"):
        assert key in out
    assert out["rows"] == ref["rows"] == bt["rows"]
    assert out["config_hash"] == ref["config_hash"] and out["schema_hash"] == ref["schema_hash"]
    # the backtest's time split is fit_workspace's 70/30 check: same model, same rows
    for k in ("auc", "log_loss", "brier", "ece", "n"):
        assert out["time_split"][k] == pytest.approx(ref["time_split"][k], abs=1e-6)
    assert read_card(folder)["metrics"]["time_split"] == out["time_split"]
    # the final model, fitted in a worker process, is the one fit_workspace fits
    X = tf.frame[tf.features]
    np.testing.assert_array_equal(model.predict(X), ref_model.predict(X))
    assert card["data"]["rows"] == ref["rows"]


def test_refresh_fits_and_saves_when_the_frame_is_too_small_to_backtest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Too small to backtest but not to fit: saved as fit_workspace saves it, no backtest."""
    import signalloop.models.api as api

    def refuse(*args: object, **kwargs: object) -> None:
        raise UsageError("too little to backtest: 150 rows with 12 positive")

    monkeypatch.setattr(api, "backtest", refuse)
    ws, _, _ = simulated_workspace(tmp_path, days=30, campaigns=2, seed=6)
    folder = tmp_path / "m" / "conversion"
    with ws:
        out = refresh_workspace(ws, "conversion", folder=folder, workers=1)
        ref = fit_workspace(ws, "conversion", folder=tmp_path / "ref")
    assert out["backtest"] is None and "too little to backtest" in out["backtest_error"]
    assert not (folder / "backtest.json").exists()
    assert out["time_split"] == ref["time_split"] and out["config_hash"] == ref["config_hash"]
    assert read_card(folder)["metrics"]["time_split"] == ref["time_split"]


# ------------------------------------------------------------------ frames sampled in SQL
def test_a_large_frame_is_sampled_on_the_backend_with_weights(tmp_path: Path) -> None:
    """Over the cap, every positive and a hashed share of the negatives are fetched; the
    weights give back each class's units exactly; the kept rows are the full frame's rows."""
    ws, _, _ = simulated_workspace(tmp_path, days=45, campaigns=3, seed=5)
    with ws:
        full = build_frame(ws, "conversion")
        n, pos = len(full.frame), int(full.frame["label"].sum())
        cap = n // 4
        tf = build_frame(ws, "conversion", max_rows=cap)
        again = build_frame(ws, "conversion", max_rows=cap)
        other = build_frame(ws, "conversion", max_rows=cap, random_state=1)
        scored = build_frame(ws, "conversion", max_rows=cap, include_censored=True)
        within = build_frame(ws, "conversion", max_rows=n)
    assert full.weight is None and full.sample is None and full.weights() is None
    assert within.weight is None and within.frame.equals(full.frame)
    assert tf.weight == "weight" and tf.sample is not None
    assert tf.units == (n, pos) and tf.sample["rows"] == len(tf.frame)
    y, w = tf.frame["label"].to_numpy(), tf.weights()
    assert w is not None
    assert int(y.sum()) == pos  # every positive (they fit in half the cap)
    # the hash keeps about the negatives' quota (binomial: 4 standard errors)
    k_neg = cap - pos
    assert abs(int((y == 0).sum()) - k_neg) < 4 * np.sqrt(k_neg)
    assert w[y == 1].sum() == pytest.approx(pos) and w[y == 0].sum() == pytest.approx(n - pos)
    assert np.average(y, weights=w) == pytest.approx(full.frame["label"].mean())
    # the same rows as the full frame, feature for feature, in time order
    ref = full.frame.set_index("touch_id").loc[tf.frame["touch_id"]].reset_index()
    kept = tf.frame.drop(columns="weight")
    pd.testing.assert_frame_equal(kept, ref[kept.columns], check_categorical=False)
    # seeded: the same sample each time, another one under another random_state
    pd.testing.assert_frame_equal(tf.frame, again.frame)
    assert set(other.frame["touch_id"]) != set(tf.frame["touch_id"])
    # the units to score are never sampled
    open_units = scored.frame[scored.frame["label"] < 0]
    assert len(open_units) == scored.censored and (open_units["weight"] == 1.0).all()


def test_a_sampled_frame_trains_a_calibrated_model(tmp_path: Path) -> None:
    """``[models] max_frame_rows`` caps the frame of a refresh: the card counts the account's
    units, the backtest is weighted, and the weighted holdout is predicted at its base rate."""
    from signalloop.config import Settings

    ws, _, _ = simulated_workspace(tmp_path, days=45, campaigns=3, seed=5)
    with ws:
        full = refresh_workspace(
            ws, "conversion", folder=tmp_path / "full", cadences=[7], workers=2
        )
        small = refresh_workspace(
            ws,
            "conversion",
            folder=tmp_path / "small",
            cadences=[7],
            workers=2,
            settings=Settings(models={"max_frame_rows": 15_000}),
        )
        with pytest.raises(UsageError, match="max_frame_rows"):
            build_frame(ws, "conversion", settings=Settings(models={"max_frame_rows": "lots"}))
    assert small["rows"] == full["rows"] and small["positives"] == full["positives"]
    assert small["sample"]["cap"] == 15_000 and full["sample"] is None
    assert read_card(tmp_path / "small")["data"]["rows"] == full["rows"]
    bt = small["backtest"]
    assert bt["sampling"]["weighted"] and bt["rows"] == small["sample"]["rows"]
    ts, ref = small["time_split"], full["time_split"]
    assert ts["base_rate"] == pytest.approx(ref["base_rate"], rel=0.1)
    assert ts["mean_predicted"] == pytest.approx(ts["base_rate"], rel=0.15)
    assert ts["auc"] > ref["auc"] - 0.03


def test_lead_frames_compute_features_for_the_linked_users_only_and_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lead frame's features come from the linked clicks' users alone (every window is per
    user): the same frame as computing them over every touchpoint."""
    import signalloop.models.features as features

    ws, _, _ = simulated_workspace(
        tmp_path, days=45, campaigns=3, seed=8, faults=("stage_overwrite@c01:10-30",)
    )
    with ws:
        narrow = {o: build_frame(ws, o, include_censored=True).frame for o in ("sql", "won")}
        whole = features._touch_features

        def everyone(*args: object, users: object = None) -> object:
            return whole(*args[:6])  # type: ignore[arg-type]

        monkeypatch.setattr(features, "_touch_features", everyone)
        wide = {o: build_frame(ws, o, include_censored=True).frame for o in ("sql", "won")}
    for outcome in ("sql", "won"):
        assert len(narrow[outcome]) > 500
        pd.testing.assert_frame_equal(narrow[outcome], wide[outcome])


def test_max_frame_rows_is_read_from_signalloop_toml() -> None:
    from signalloop.config import ConfigError, settings_from_dict

    s = settings_from_dict({"models": {"max_frame_rows": 500_000}})
    assert s.models["max_frame_rows"] == 500_000
    assert "max_frame_rows" not in settings_from_dict({}).models
    for bad in (0, "lots", True):
        with pytest.raises(ConfigError, match="max_frame_rows must be a number of rows"):
            settings_from_dict({"models": {"max_frame_rows": bad}})
    with pytest.raises(ConfigError, match=r"\[models\] takes horizon_days and max_frame_rows"):
        settings_from_dict({"models": {"max_rows": 5}})
