"""The conversion model against the simulator's exact per-click probabilities (the oracle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from signalloop.models.estimator import ConversionModel
from signalloop.models.features import build_frame

from .conftest import simulated_workspace


@pytest.mark.slow
def test_conversion_model_approaches_the_oracle(tmp_path: Path) -> None:
    """Trained on the first 70% of clicks, scored on the rest: better than the ad set's
    probability alone, within reach of the exact probabilities, and calibrated."""
    ws, result, _ = simulated_workspace(tmp_path, days=60, campaigns=4, seed=21)
    with ws:
        tf = build_frame(ws, "conversion")
    f = tf.frame
    oracle = result.oracle.to_pandas().set_index("touch_id")
    cut = round(len(f) * 0.7)
    model = ConversionModel(random_state=0).fit(f[tf.features].iloc[:cut], f.label.iloc[:cut])
    hold = f.iloc[cut:]
    p = model.predict(hold[tf.features])
    truth = oracle.loc[hold.touch_id.astype(str)]
    y = hold.label.to_numpy()
    auc_model = roc_auc_score(y, p)
    auc_oracle = roc_auc_score(y, truth.p_conversion)
    auc_adset = roc_auc_score(y, truth.p_adset)
    print(f"AUC model {auc_model:.3f} oracle {auc_oracle:.3f} adset {auc_adset:.3f}")
    assert auc_model > auc_adset  # the traits carry signal and the model finds it
    assert auc_model > auc_oracle - 0.05
    assert auc_model < auc_oracle + 0.02  # no model beats the truth by more than noise
    # calibrated: the mean prediction matches the observed rate, and tracks the oracle
    assert abs(p.mean() - y.mean()) < 0.1 * y.mean()
    assert np.corrcoef(p, truth.p_conversion)[0, 1] > 0.6
