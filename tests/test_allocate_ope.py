"""Off-policy evaluation: hand-computed values, CI coverage, obp cross-check, real logs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from signalloop.allocate.logs import LoggedBandit, load_obd
from signalloop.allocate.obd import RewardModel, evaluate_obd, softmax_policy, uniform_policy
from signalloop.allocate.ope import dr, ipw, snipw
from signalloop.errors import InputError, UsageError

from .conftest import shared_data, write_csv

# ---------------------------------------------------------------- (1) hand-computed values

# 3 rounds, 2 actions, one position.
ACTIONS = [0, 1, 0]
REWARDS = [1.0, 0.0, 1.0]
PSCORE = [0.5, 0.25, 0.8]
PI_E = np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
Q_HAT = np.array([[0.5, 0.2], [0.4, 0.1], [0.7, 0.3]])
# weights w = pi_e(a_i) / pscore_i = 0.6/0.5, 0.7/0.25, 0.9/0.8 = 1.2, 2.8, 1.125


def tiny() -> LoggedBandit:
    return LoggedBandit.from_arrays(ACTIONS, REWARDS, PSCORE, n_actions=2)


def test_ipw_by_hand() -> None:
    est = ipw(tiny(), PI_E)
    assert est.value == pytest.approx((1.2 + 0.0 + 1.125) / 3)  # 0.775
    # contributions 1.2, 0, 1.125: sample variance 0.451875
    assert est.se == pytest.approx(math.sqrt(0.451875 / 3))
    assert est.ci_low == pytest.approx(0.775 - 1.959963985 * est.se)
    assert est.ci_high == pytest.approx(0.775 + 1.959963985 * est.se)
    assert est.n_rounds == 3


def test_snipw_by_hand() -> None:
    est = snipw(tiny(), PI_E)
    assert est.value == pytest.approx(2.325 / 5.125)  # sum(w r) / sum(w)
    # delta method: influence w_i (r_i - V) / mean(w)
    v = 2.325 / 5.125
    infl = np.array([1.2 * (1 - v), 2.8 * (0 - v), 1.125 * (1 - v)]) / (5.125 / 3)
    assert est.se == pytest.approx(float(np.std(infl, ddof=1)) / math.sqrt(3))


def test_dr_by_hand() -> None:
    est = dr(tiny(), PI_E, Q_HAT)
    # direct part 0.38, 0.19, 0.66; corrections 1.2*0.5, 2.8*(-0.1), 1.125*0.3
    assert est.value == pytest.approx((0.98 - 0.09 + 0.9975) / 3)  # 0.629166...


def test_per_position_action_dist() -> None:
    # the evaluation policy's distribution at the logged position is the one used
    logged = LoggedBandit.from_arrays(ACTIONS, REWARDS, PSCORE, [0, 1, 1], n_actions=2)
    dist = np.stack([PI_E, PI_E[:, ::-1]], axis=2)  # position 1: the reversed distribution
    q = np.stack([Q_HAT, Q_HAT[:, ::-1]], axis=2)
    # round 0 at position 0: w = 0.6/0.5; rounds 1, 2 at position 1: 0.3/0.25, 0.1/0.8
    assert ipw(logged, dist).value == pytest.approx((1.2 + 0 + 0.125) / 3)
    assert snipw(logged, dist).value == pytest.approx(1.325 / (1.2 + 1.2 + 0.125))
    # DR direct part at position 1 uses the reversed rows: round 1 0.7*0.1+0.3*0.4=0.19,
    # round 2 0.1*0.3+0.9*0.7=0.66; factual q: 0.5, q[1,1,1]=0.4, q[2,0,1]=0.3
    expected = (0.38 + 1.2 * 0.5) + (0.19 + 1.2 * (0 - 0.4)) + (0.66 + 0.125 * (1 - 0.3))
    assert dr(logged, dist, q).value == pytest.approx(expected / 3)
    # a 2-D action_dist is the same distribution at every position
    assert ipw(logged, PI_E).value == pytest.approx(0.775)


def test_bad_inputs() -> None:
    with pytest.raises(UsageError, match="probability distribution"):
        ipw(tiny(), PI_E * 2)
    with pytest.raises(UsageError, match="shape"):
        ipw(tiny(), PI_E[:2])
    with pytest.raises(UsageError, match="pscore"):
        LoggedBandit.from_arrays([0], [1], [0.0])


def test_bootstrap_is_seeded() -> None:
    rng = np.random.default_rng(1)
    logged, pi_e, q, _ = synthetic(rng, 500)
    a = ipw(logged, pi_e, n_bootstrap=200, random_state=3)
    b = ipw(logged, pi_e, n_bootstrap=200, random_state=3)
    assert a.bootstrap_low == b.bootstrap_low and a.bootstrap_high == b.bootstrap_high
    for est in (
        a,
        snipw(logged, pi_e, n_bootstrap=200, random_state=3),
        dr(logged, pi_e, q, n_bootstrap=200, random_state=3),
    ):
        assert est.bootstrap_low is not None and est.bootstrap_high is not None
        assert est.bootstrap_low < est.value < est.bootstrap_high
        assert est.to_dict()["n_bootstrap"] == 200


def test_softmax_policy() -> None:
    p = softmax_policy(np.log(np.array([[[1.0], [3.0]]])), temperature=1.0, epsilon=0.2)
    assert p[0, :, 0] == pytest.approx([0.8 * 0.25 + 0.1, 0.8 * 0.75 + 0.1])
    assert uniform_policy(tiny()).shape == (3, 2, 1)


# ------------------------------------------------- (2) CIs cover the true value (synthetic)

N_ACTIONS, N_POS, N_CTX = 4, 2, 3


def synthetic(
    rng: np.random.Generator, n: int
) -> tuple[LoggedBandit, np.ndarray, np.ndarray, float]:
    """Logs from a context-dependent logging policy, an evaluation policy, a biased q_hat,
    and the exact value of the evaluation policy."""
    base = np.random.default_rng(12345)  # the environment is fixed; only the logs vary
    p_click = base.uniform(0.02, 0.3, size=(N_CTX, N_ACTIONS, N_POS))
    pi_b = base.dirichlet(np.ones(N_ACTIONS) * 2, size=(N_CTX, N_POS)).transpose(0, 2, 1)
    pi_e_x = base.dirichlet(np.ones(N_ACTIONS), size=(N_CTX, N_POS)).transpose(0, 2, 1)
    truth = float(np.mean((pi_e_x * p_click).sum(axis=1)))  # x and position uniform
    x = rng.integers(0, N_CTX, n)
    pos = rng.integers(0, N_POS, n)
    u = rng.random(n)
    cdf = np.cumsum(pi_b[x, :, pos], axis=1)
    a = np.minimum((u[:, None] > cdf).sum(axis=1), N_ACTIONS - 1)
    r = (rng.random(n) < p_click[x, a, pos]).astype(float)
    logged = LoggedBandit.from_arrays(
        a, r, pi_b[x, a, pos], pos, n_actions=N_ACTIONS, n_positions=N_POS
    )
    q_hat = np.clip(p_click[x] + 0.05, 0, 1)  # a biased reward model: DR stays unbiased
    return logged, pi_e_x[x], q_hat, truth


def test_confidence_intervals_cover_the_true_value() -> None:
    rng = np.random.default_rng(0)
    reps = 300
    hits = {"ipw": 0, "snipw": 0, "dr": 0}
    for _ in range(reps):
        logged, pi_e, q, truth = synthetic(rng, 1000)
        hits["ipw"] += ipw(logged, pi_e).covers(truth)
        hits["snipw"] += snipw(logged, pi_e).covers(truth)
        hits["dr"] += dr(logged, pi_e, q).covers(truth)
    for name, h in hits.items():
        assert 0.90 <= h / reps <= 0.99, (name, h / reps)


def test_estimates_are_close_on_a_large_log() -> None:
    logged, pi_e, q, truth = synthetic(np.random.default_rng(7), 50_000)
    for est in (ipw(logged, pi_e), snipw(logged, pi_e), dr(logged, pi_e, q)):
        assert est.covers(truth)
        assert abs(est.value - truth) < 0.01
        assert est.ci_high - est.ci_low < 0.03


# ----------------------------------------------------------- (3) obp's estimators, where it is


def test_matches_obp_estimators() -> None:
    ope = pytest.importorskip(
        "obp.ope",
        reason="obp is not installed (obp 0.4.1 needs torch, matplotlib, seaborn, tqdm, pyyaml)",
    )
    from obp.utils import estimate_confidence_interval_by_bootstrap  # type: ignore[import-not-found]

    logged, pi_e, q, _ = synthetic(np.random.default_rng(5), 2000)
    kw = {
        "reward": logged.rewards,
        "action": logged.actions,
        "position": logged.positions,
        "pscore": logged.pscore,
        "action_dist": pi_e,
    }
    ours = {"ipw": ipw(logged, pi_e), "snipw": snipw(logged, pi_e), "dr": dr(logged, pi_e, q)}
    theirs = {
        "ipw": ope.InverseProbabilityWeighting().estimate_policy_value(**kw),
        "snipw": ope.SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**kw),
        "dr": ope.DoublyRobust().estimate_policy_value(**kw, estimated_rewards_by_reg_model=q),
    }
    for name in ours:
        assert abs(ours[name].value - theirs[name]) < 1e-9, name
    # the bootstrap of a mean of per-round contributions draws obp's random stream
    mine = ipw(logged, pi_e, n_bootstrap=300, random_state=11)
    contrib = ope.InverseProbabilityWeighting()._estimate_round_rewards(**kw)
    ci = estimate_confidence_interval_by_bootstrap(
        contrib, n_bootstrap_samples=300, random_state=11
    )
    assert mine.bootstrap_low == pytest.approx(ci["95.0% CI (lower)"], abs=1e-12)
    assert mine.bootstrap_high == pytest.approx(ci["95.0% CI (upper)"], abs=1e-12)


def test_load_obd_matches_obp_dataset() -> None:
    pytest.importorskip("obp.dataset", reason="obp is not installed")
    import pandas as pd
    from obp.dataset import OpenBanditDataset  # type: ignore[import-not-found]

    class UserContextOnly(OpenBanditDataset):  # type: ignore[misc]
        """obp 0.4.1's own loading; its item-context step calls ``DataFrame.drop`` with a
        positional axis, which pandas 2+ rejects, so only its user-context step is kept."""

        def pre_process(self) -> None:
            user_cols = self.data.columns.str.contains("user_feature")
            self.context = pd.get_dummies(self.data.loc[:, user_cols], drop_first=True).values

    root = shared_data("open_bandit_sample")
    for policy in ("random", "bts"):
        ours = load_obd(root / policy, "all")
        theirs = UserContextOnly(behavior_policy=policy, campaign="all", data_path=root)
        np.testing.assert_array_equal(ours.actions, theirs.action)
        np.testing.assert_array_equal(ours.positions, theirs.position)
        np.testing.assert_array_equal(ours.rewards, theirs.reward)
        np.testing.assert_allclose(ours.pscore, theirs.pscore)
        np.testing.assert_allclose(ours.contexts, np.asarray(theirs.context, dtype=float))
        assert ours.n_actions == theirs.n_actions and ours.n_positions == theirs.len_list


# ------------------------------------------------------------------------- loading errors


def test_load_obd_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"all\.csv"):
        load_obd(tmp_path / "random")
    folder = tmp_path / "random" / "all"
    folder.mkdir(parents=True)
    header = ["", "timestamp", "item_id", "position", "propensity_score", "user_feature_0"]
    write_csv(folder / "all.csv", header, [[0, "2019-11-24 00:00:00+00:00", 1, 1, 0.5, "u"]])
    with pytest.raises(InputError, match="'click'"):
        load_obd(tmp_path / "random")
    header.insert(4, "click")
    rows: list[list[object]] = [
        [0, "2019-11-24 00:00:00+00:00", 1, 1, 0, 0.5, "u"],
        [1, "2019-11-24 00:00:01+00:00", 0, 2, 7, 0.5, "v"],
    ]
    write_csv(folder / "all.csv", header, rows)
    with pytest.raises(InputError, match=r"line 3, column 'click'"):
        load_obd(tmp_path / "random")
    rows[1][4] = 1
    write_csv(folder / "all.csv", header, rows)
    logged = load_obd(tmp_path / "random")
    assert logged.n_actions == 2 and logged.n_positions == 2
    assert logged.positions.tolist() == [0, 1] and logged.contexts.shape == (2, 1)


# -------------------------------------------------------------- (4) the real Open Bandit logs


def test_load_obd_real_logs() -> None:
    logged = load_obd(shared_data("open_bandit_sample", "random"), "all")
    assert logged.n_rounds == 10_000
    assert (logged.n_actions, logged.n_positions) == (80, 3)
    assert np.allclose(logged.pscore, 1 / 80)  # uniform over 80 items
    assert np.all(np.diff(logged.timestamps.astype("int64")) >= 0)
    assert logged.affinity is not None and logged.affinity.shape == (10_000, 80)
    model = RewardModel().fit(logged.subset(slice(0, 5000)))
    q = model.predict(logged.subset(slice(5000, None)))
    assert q.shape == (5000, 80, 3) and 0 < q.mean() < 0.05


@pytest.mark.slow
def test_uniform_policy_value_from_bts_logs() -> None:
    """obp's validation: the uniform policy's value estimated from the bts logs, against the
    click rate the uniform policy actually got in the random logs."""
    report = evaluate_obd(shared_data("open_bandit_sample"), "all", random_state=0)
    truth = report["validation"]["ground_truth"]
    assert truth == pytest.approx(38 / 10_000)
    assert report["ground_truth"]["bts_policy_ctr"]["value"] == pytest.approx(42 / 10_000)
    for name in ("ipw", "snipw", "dr"):
        est = report["validation"]["estimates"][name]
        assert est["ci"][0] <= truth <= est["ci"][1], name
        assert report["validation"]["relative_error"][name] < 0.6, name
        learned = report["learned_policy"]["estimates"][name]
        assert learned["ci"][0] < learned["value"] < learned["ci"][1]
        assert learned["bootstrap_ci"][0] < learned["value"] < learned["bootstrap_ci"][1]
    assert report["learned_policy"]["max_importance_weight"] <= 80 * (0.9 + 0.1 / 80) + 1e-9
