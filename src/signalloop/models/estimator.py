"""The conversion-probability model: LightGBM, calibrated on a later time slice.

:class:`ConversionModel` follows the scikit-learn estimator contract: ``__init__`` only stores
its arguments, :meth:`~ConversionModel.fit` returns ``self`` and sets the learned attributes
(ending in ``_``), and all randomness comes from ``random_state``.

Fitting takes rows **in time order**. The earliest ``1 - calibration_fraction`` of them train
gradient-boosted trees (LightGBM through its scikit-learn API); the latest slice, which those
trees never saw, fits the calibration map from raw scores to probabilities: isotonic
regression when the slice has enough of both outcomes to pin a monotone curve down, else Platt
scaling (a logistic fit on the raw score's logit). Calibrating on a later slice is what makes
the probabilities honest about the drift between training and use: a calibrator fitted on the
training rows themselves would inherit the trees' overconfidence.

With ``refit=True`` (the default) the trees that score are then refitted on all the rows, and
the map learned out of time is applied to them: the map says how a model's scores translate
into outcome rates just after the period it learned from, which is how the model is used. On
drifting data the latest rows are the most valuable ones to learn from (on the bank-marketing
data, withholding the latest 20% from the trees cost 0.15 AUC on the next 30% of rows);
``refit=False`` keeps the trees that the calibrator saw.

**Large frames are sampled.** With more than ``max_rows`` rows, every positive is kept (up
to half the cap) and the negatives are sampled uniformly (seeded by ``random_state``) down to
the cap; each sampled row carries the weight ``n_class / n_sampled`` of its class, in the
trees and in the calibration map alike, so the weighted sample stands for the whole frame and
the probabilities stay calibrated to the true base rate (:meth:`ConversionModel.sample_rows`,
:func:`class_quotas`). A frame within the cap is fitted exactly as it would be without one.

>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> X = pd.DataFrame({"x": rng.normal(size=2000), "c": rng.choice(["a", "b"], 2000)})
>>> y = (rng.random(2000) < 1 / (1 + np.exp(-2 * X.x))).astype(int)
>>> m = ConversionModel(n_estimators=50, random_state=0).fit(X, y)
>>> m.calibration_method_ in ('isotonic', 'sigmoid', 'none'), m.predict_proba(X).shape
(True, (2000, 2))
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from signalloop.errors import UsageError

#: Default cap on the rows one fit learns from (see :meth:`ConversionModel.sample_rows`).
MAX_ROWS = 250_000
#: ``calibration="auto"`` uses isotonic regression from this many positives and negatives in
#: the calibration slice; below it the two-parameter Platt fit is the safer map.
ISOTONIC_MIN_CLASS = 100
CALIBRATIONS = ("auto", "isotonic", "sigmoid", "none")


def class_quotas(positives: int, negatives: int, cap: int) -> tuple[int, int]:
    """How many positives and negatives a sample of at most ``cap`` rows keeps.

    Every positive while they fit in half the cap (the rarer class carries the signal), the
    rest of the cap for negatives; a class smaller than its share leaves the rest to the
    other. The two quotas never exceed ``cap`` together, nor either class's size.

    >>> class_quotas(100, 9_900, 1_000), class_quotas(3_000, 7_000, 1_000)
    ((100, 900), (500, 500))
    >>> class_quotas(9_900, 100, 1_000), class_quotas(10, 20, 1_000)
    ((900, 100), (10, 20))
    """
    if cap < 1:
        raise UsageError(f"a row cap must be a positive number of rows, got {cap}")
    k_pos = min(positives, max(cap - negatives, cap // 2))
    return k_pos, min(negatives, cap - k_pos)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    out: np.ndarray = np.log(p / (1 - p))
    return out


def _fit_map(method: str, raw: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> Any:
    if method == "isotonic":
        iso = IsotonicRegression(y_min=1e-4, y_max=1 - 1e-4, out_of_bounds="clip")
        return iso.fit(raw, y, sample_weight=w)
    if method == "sigmoid":
        return LogisticRegression(C=1e6).fit(_logit(raw)[:, None], y, sample_weight=w)
    return None


def _apply_map(method: str, calibrator: Any, raw: np.ndarray) -> np.ndarray:
    if method == "isotonic":
        # a step function ties whole score ranges; a vanishing slope keeps the trees' ranking
        # (and so their AUC) without moving any probability by more than 1e-6
        p = np.asarray(calibrator.predict(raw), dtype=float) + 1e-6 * (raw - 0.5)
    elif method == "sigmoid":
        p = calibrator.predict_proba(_logit(raw)[:, None])[:, 1]
    else:
        p = raw
    out: np.ndarray = np.clip(p, 1e-4, 1 - 1e-4)
    return out


class ConversionModel:
    """Gradient-boosted conversion probabilities, calibrated on the latest slice of training.

    Parameters
    ----------
    n_estimators, learning_rate, num_leaves, min_child_samples, subsample, colsample_bytree
        Passed to :class:`lightgbm.LGBMClassifier`.
    calibration
        ``"auto"`` (isotonic, sigmoid or none: whichever, fitted on the earlier half of the
        calibration slice, predicts its later half best), ``"isotonic"``, ``"sigmoid"``
        (Platt) or ``"none"``.
    calibration_fraction
        Share of the (time-ordered) training rows, taken from the end, that calibrate.
    refit
        Refit the trees on all rows after calibrating (see the module docstring).
    max_rows
        Cap on the rows a fit learns from: a larger frame keeps every positive (up to half the
        cap) and a uniform sample of its negatives, weighted back (see :meth:`sample_rows`);
        ``None`` disables
        the cap. The default, :data:`MAX_ROWS`, as measured by
        ``benchmarks/models_scale.py``: on the simulator's 30-campaign account (626,414
        training rows, 40% of them kept) the capped fit's live AUC was 0.001 below the
        unsampled fit's, in under half the fit time; the bank data (28,832 training rows) is
        never sampled by it. A cap that removes a large share of a *small* frame costs more
        (the bank capped at 20,000 rows lost about 0.02 AUC), hence a cap in rows, not a
        sampling rate.
    random_state
        Seed of every random choice (LightGBM's bagging and feature sampling, the negatives
        sampled under ``max_rows``).
    n_jobs
        Threads LightGBM may use. One by default: on small frames LightGBM's OpenMP threads
        spend more time synchronising than computing (a 30,000-row fit takes 0.84 s on one
        thread, 0.69 s on two idle cores, 3.9 s on two with passive waiting, and minutes when
        another job shares the cores); :func:`~signalloop.models.backtest.backtest` runs
        independent fits in parallel processes instead. At the cap it is the same: two
        250,000-row fits with other jobs on the 2 cores took 34-43 s one after the other on
        one thread, 249-304 s on two threads, 16-21 s side by side in two processes
        (``benchmarks/models_scale.py``).

    Attributes
    ----------
    features_ : list of str
        Columns the model was fitted on, in order.
    categories_ : dict
        Categories of each categorical column seen in training (others map to missing).
    booster_ : lightgbm.LGBMClassifier
        The fitted trees.
    calibrator_ : object or None
        The fitted calibration map.
    calibration_method_ : str
        The map actually used (``auto`` resolved; ``none`` when the slice had one class).
    calibration_scores_ : dict
        With ``auto``: each candidate map's log loss on the later half of the slice.
    n_rows_, n_sampled_ : int
        Rows given to :meth:`fit`, and rows it learned from (fewer when ``max_rows`` sampled).
    negative_weight_ : float
        Largest weight of a negative learned from (1.0 when nothing was sampled or weighted).
    n_train_, n_calibration_ : int
        Rows that trained the trees that were calibrated, and rows that calibrated them (with
        ``refit``, the scoring trees trained on ``n_train_ + n_calibration_`` rows).
    feature_importances_ : dict
        Total split gain per feature.
    """

    def __init__(
        self,
        *,
        n_estimators: int = 200,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 40,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        calibration: str = "auto",
        calibration_fraction: float = 0.1,
        refit: bool = True,
        max_rows: int | None = MAX_ROWS,
        random_state: int = 0,
        n_jobs: int = 1,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.calibration = calibration
        self.calibration_fraction = calibration_fraction
        self.refit = refit
        self.max_rows = max_rows
        self.random_state = random_state
        self.n_jobs = n_jobs

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments (what a model card hashes)."""
        return {
            k: getattr(self, k)
            for k in (
                "n_estimators",
                "learning_rate",
                "num_leaves",
                "min_child_samples",
                "subsample",
                "colsample_bytree",
                "calibration",
                "calibration_fraction",
                "refit",
                "max_rows",
                "random_state",
                "n_jobs",
            )
        }

    # -- input --------------------------------------------------------------------------------
    def _frame(self, X: pd.DataFrame, *, fitting: bool) -> pd.DataFrame:
        if fitting:
            self.features_ = [str(c) for c in X.columns]
            self.categories_ = {}
            for c in self.features_:
                s = X[c]
                if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
                    cats = pd.Series(s.astype("string").dropna().unique()).sort_values()
                    self.categories_[c] = [str(v) for v in cats]
        missing = [c for c in self.features_ if c not in X.columns]
        if missing:
            raise UsageError(
                f"the model needs feature column(s) {', '.join(missing)}, "
                f"which the data does not have (it has {', '.join(map(str, X.columns))})"
            )
        out: dict[str, Any] = {}
        for c in self.features_:
            s = X[c]
            if c in self.categories_:
                known = self.categories_[c]
                v = s.astype("string")
                out[c] = pd.Categorical(v.where(v.isin(known)), categories=known)
            else:
                out[c] = pd.to_numeric(s, errors="coerce").astype(float)
        return pd.DataFrame(out, index=X.index)

    # -- sampling -----------------------------------------------------------------------------
    def sample_rows(
        self, y: Any, weight: Any = None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The rows a fit on labels ``y`` learns from, and their weights.

        Within ``max_rows`` (or with ``max_rows=None``): ``(None, weight)``, every row, with
        the weights given (``None``: weight one). Above it, :func:`class_quotas` says how
        many positives and negatives to keep (every positive up to half the cap); each class
        is drawn uniformly without replacement with ``random_state``'s generator, the
        positions come back sorted (time order is kept), and each kept row's weight is
        multiplied by ``n_class / n_kept`` of its class, so the weighted sample has the
        frame's (weighted) positives and negatives and the base rate is unchanged. ``weight``
        is what a frame that was itself sampled carries (for example
        :attr:`~signalloop.models.features.TrainingFrame.weight`).

        >>> m = ConversionModel(max_rows=6)
        >>> idx, w = m.sample_rows([0, 1, 0, 0, 0, 0, 1, 0, 0, 0])
        >>> len(idx), int(w.sum()), sorted(set(idx) & {1, 6})
        (6, 10, [1, 6])
        """
        y = np.asarray(y, dtype=int)
        w_in = None if weight is None else np.asarray(weight, dtype=float)
        n = len(y)
        if self.max_rows is None or n <= self.max_rows:
            return None, w_in
        if self.max_rows < 1:
            raise UsageError(f"max_rows must be a positive number of rows, got {self.max_rows}")
        pos = np.flatnonzero(y == 1)
        neg = np.flatnonzero(y != 1)
        k_pos, k_neg = class_quotas(len(pos), len(neg), self.max_rows)
        rng = np.random.default_rng(self.random_state)
        if k_pos < len(pos):
            pos = rng.choice(pos, size=k_pos, replace=False)
        keep = np.sort(np.concatenate([pos, rng.choice(neg, size=k_neg, replace=False)]))
        up = np.where(y[keep] == 1, len(y) - len(neg), len(neg)) / np.where(
            y[keep] == 1, max(k_pos, 1), max(k_neg, 1)
        )
        return keep, (up if w_in is None else up * w_in[keep])

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> ConversionModel:
        """Fit on rows in time order: trees on the earlier rows, calibration on the latest.

        Parameters
        ----------
        X
            Feature columns; non-numeric ones are treated as categories.
        y
            0/1 labels, one per row.
        sample_weight
            Row weights, for rows that were already sampled (what :meth:`sample_rows` returns
            for them, or a sampled frame's weights). A frame larger than ``max_rows`` is
            sampled here either way, its weights multiplied by the sample's.
        """
        if self.calibration not in CALIBRATIONS:
            raise UsageError(
                f"calibration must be one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}"
            )
        y = np.asarray(y, dtype=int)
        if len(y) != len(X):
            raise UsageError(f"{len(X)} rows of features but {len(y)} labels")
        self.n_rows_ = len(y)
        if sample_weight is not None and len(sample_weight) != len(y):
            raise UsageError(f"{len(y)} labels but {len(sample_weight)} sample weights")
        keep, w = self.sample_rows(y, sample_weight)
        if keep is not None:
            X, y = X.iloc[keep], y[keep]
        self.n_sampled_ = len(y)
        self.negative_weight_ = float(w[y != 1].max()) if w is not None and (y != 1).any() else 1.0
        Xf = self._frame(X, fitting=True)
        n = len(y)
        n_cal = round(n * self.calibration_fraction) if self.calibration != "none" else 0
        if n - n_cal < 20 or len(np.unique(y[: n - n_cal])) < 2:
            raise UsageError(
                f"too little to train on: {n - n_cal} training rows with "
                f"{int(y[: n - n_cal].sum())} positive; a model needs both outcomes"
            )
        head = slice(0, n - n_cal)
        self.booster_ = self._trees(Xf.iloc[head], y[head], None if w is None else w[head])
        self.n_train_ = n - n_cal
        self.n_calibration_ = n_cal
        self.calibrator_: Any = None
        self.calibration_scores_: dict[str, float] = {}
        method = self.calibration
        if n_cal:
            yc = y[n - n_cal :]
            wc = None if w is None else w[n - n_cal :]
            raw = self._raw(Xf.iloc[n - n_cal :])
            if len(np.unique(yc)) < 2:
                method = "none"
            elif method == "auto":
                method = self._choose_map(raw, yc, wc)
            self.calibrator_ = _fit_map(method, raw, yc, wc)
        else:
            method = "none"
        self.calibration_method_ = method
        if self.refit and n_cal:
            self.booster_ = self._trees(Xf, y, w)
        gain = self.booster_.booster_.feature_importance(importance_type="gain")
        self.feature_importances_ = {f: float(g) for f, g in zip(self.features_, gain, strict=True)}
        return self

    def _choose_map(self, raw: np.ndarray, yc: np.ndarray, wc: np.ndarray | None = None) -> str:
        """The map that predicts the later half of the calibration slice best (log loss).

        Each candidate is fitted on the slice's earlier half and scored on its later half, so
        the choice is itself made out of time; isotonic needs :data:`ISOTONIC_MIN_CLASS` of
        each outcome in the half it is fitted on. Scores land in ``calibration_scores_``
        (weighted by ``wc`` when the rows were sampled).
        """
        from sklearn.metrics import log_loss

        h = len(yc) // 2
        fit_y, eval_y = yc[:h], yc[h:]
        fit_w, eval_w = (None, None) if wc is None else (wc[:h], wc[h:])
        if len(np.unique(fit_y)) < 2 or len(np.unique(eval_y)) < 2:
            return "sigmoid"
        candidates = ["sigmoid", "none"]
        if min(int(fit_y.sum()), int(h - fit_y.sum())) >= ISOTONIC_MIN_CLASS:
            candidates.insert(0, "isotonic")
        for m in candidates:
            p = _apply_map(m, _fit_map(m, raw[:h], fit_y, fit_w), raw[h:])
            loss = log_loss(eval_y, p, labels=[0, 1], sample_weight=eval_w)
            self.calibration_scores_[m] = float(loss)
        return min(candidates, key=lambda m: self.calibration_scores_[m])

    def _trees(self, Xf: pd.DataFrame, y: np.ndarray, w: np.ndarray | None = None) -> Any:
        import lightgbm as lgb

        trees = lgb.LGBMClassifier(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            subsample=self.subsample,
            subsample_freq=1 if self.subsample < 1 else 0,
            colsample_bytree=self.colsample_bytree,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
            verbose=-1,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            trees.fit(Xf, y, sample_weight=w)
        return trees

    def _raw(self, Xf: pd.DataFrame) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return np.asarray(self.booster_.predict_proba(Xf)[:, 1], dtype=float)

    # -- prediction ---------------------------------------------------------------------------
    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities, shape ``(n, 2)``: column 1 is P(outcome)."""
        if not hasattr(self, "booster_"):
            raise UsageError("this model is not fitted yet: call fit first")
        raw = self._raw(self._frame(X, fitting=False))
        p = _apply_map(self.calibration_method_, self.calibrator_, raw)
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """P(outcome) per row (column 1 of :meth:`predict_proba`)."""
        return self.predict_proba(X)[:, 1]
