"""The Open Bandit evaluation: a policy learned from uniform-random logs, valued off-policy.

:class:`RewardModel` (a logistic reward model), :func:`softmax_policy` and
:func:`uniform_policy` make evaluation policies; :func:`evaluate_obd` runs the whole
evaluation on the Open Bandit Dataset and checks the estimators against the click rates the
logged policies actually got.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from signalloop.allocate.logs import LoggedBandit, load_obd
from signalloop.allocate.ope import (
    Estimate,
    dr,
    importance_weights,
    ipw,
    on_policy_value,
    snipw,
)
from signalloop.errors import InputError, UsageError

# --------------------------------------------------------------------------------------
# reward model and learned policy
# --------------------------------------------------------------------------------------


@dataclass
class RewardModel:
    """Logistic regression of the reward on (context, action, position, affinity).

    The features are the context columns, one-hot action, one-hot position and (when the
    logs have it) the user's affinity for the action. Being linear in those, the predicted
    logit for every (round, action, position) is assembled from the coefficients without
    materialising the (n_rounds * n_actions * n_positions) design matrix.

    Parameters
    ----------
    c
        Inverse L2 regularisation strength of :class:`sklearn.linear_model.LogisticRegression`.
    """

    c: float = 1.0
    model: LogisticRegression | None = None
    n_actions: int = 0
    n_positions: int = 0
    n_context: int = 0
    use_affinity: bool = False

    def _design(self, logged: LoggedBandit) -> np.ndarray:
        n = logged.n_rounds
        onehot_a = np.zeros((n, self.n_actions))
        onehot_a[np.arange(n), logged.actions] = 1.0
        onehot_p = np.zeros((n, self.n_positions))
        onehot_p[np.arange(n), logged.positions] = 1.0
        parts = [logged.contexts, onehot_a, onehot_p]
        if self.use_affinity and logged.affinity is not None:
            parts.append(logged.affinity[np.arange(n), logged.actions][:, None])
        return np.hstack(parts)

    def fit(self, logged: LoggedBandit) -> RewardModel:
        """Fit on the logged (context, action, position) -> reward.

        Parameters
        ----------
        logged
            Training logs (rewards 0/1).

        Returns
        -------
        RewardModel
            ``self``, fitted.
        """
        if len(np.unique(logged.rewards)) < 2:
            raise UsageError("reward model: the training logs need both rewards 0 and 1")
        self.n_actions, self.n_positions = logged.n_actions, logged.n_positions
        self.n_context = logged.contexts.shape[1]
        self.use_affinity = logged.affinity is not None
        self.model = LogisticRegression(C=self.c, max_iter=2000)
        self.model.fit(self._design(logged), logged.rewards.astype(int))
        return self

    def logits(self, logged: LoggedBandit) -> np.ndarray:
        """Predicted reward logit per round, action and position.

        Parameters
        ----------
        logged
            Logs with the same action, position and context layout as the training logs.

        Returns
        -------
        numpy.ndarray
            Shape (n_rounds, n_actions, n_positions).
        """
        if self.model is None:
            raise UsageError("reward model is not fitted")
        if logged.contexts.shape[1] != self.n_context:
            raise UsageError(
                f"reward model: {logged.contexts.shape[1]} context columns, fitted on "
                f"{self.n_context}"
            )
        coef = np.asarray(self.model.coef_[0])
        k = self.n_context
        w_x, w_a = coef[:k], coef[k : k + self.n_actions]
        w_p = coef[k + self.n_actions : k + self.n_actions + self.n_positions]
        base = logged.contexts @ w_x + float(self.model.intercept_[0])
        out = base[:, None, None] + w_a[None, :, None] + w_p[None, None, :]
        if self.use_affinity and logged.affinity is not None:
            out = out + coef[-1] * logged.affinity[:, :, None]
        return np.asarray(out)

    def predict(self, logged: LoggedBandit) -> np.ndarray:
        """Predicted click probability per round, action and position (``q_hat``).

        Parameters
        ----------
        logged
            Logs with the training layout.

        Returns
        -------
        numpy.ndarray
            Shape (n_rounds, n_actions, n_positions).
        """
        return np.asarray(1.0 / (1.0 + np.exp(-self.logits(logged))))


def softmax_policy(
    scores: np.ndarray, *, temperature: float = 1.0, epsilon: float = 0.1
) -> np.ndarray:
    """Softmax over actions of ``scores / temperature``, mixed with a uniform epsilon floor.

    ``pi = (1 - epsilon) * softmax(scores / temperature) + epsilon / n_actions`` per round
    and position, so every action keeps at least ``epsilon / n_actions`` and the importance
    weights against a logging policy stay bounded. ``temperature=0`` is greedy.

    Parameters
    ----------
    scores
        Shape (n_rounds, n_actions[, n_positions]); e.g. predicted reward logits.
    temperature
        Softmax temperature (>= 0).
    epsilon
        Uniform floor share, in [0, 1].

    Returns
    -------
    numpy.ndarray
        Action distribution of the same shape, summing to 1 over axis 1.

    Examples
    --------
    >>> softmax_policy(np.array([[0.0, 1.0]]), temperature=0, epsilon=0.2).round(2).tolist()
    [[0.1, 0.9]]
    """
    if temperature < 0 or not 0 <= epsilon <= 1:
        raise UsageError("temperature must be >= 0 and epsilon in [0, 1]")
    s = np.asarray(scores, dtype=float)
    n_actions = s.shape[1]
    if temperature == 0:
        best = np.argmax(s, axis=1)
        p = np.zeros_like(s)
        np.put_along_axis(p, np.expand_dims(best, 1), 1.0, axis=1)
    else:
        z = (s - s.max(axis=1, keepdims=True)) / temperature
        e = np.exp(z)
        p = e / e.sum(axis=1, keepdims=True)
    return np.asarray((1 - epsilon) * p + epsilon / n_actions)


def uniform_policy(logged: LoggedBandit) -> np.ndarray:
    """The uniform random policy over actions, every position: shape (n, n_actions, n_pos).

    Parameters
    ----------
    logged
        The logs to evaluate on.

    Returns
    -------
    numpy.ndarray
        ``1 / n_actions`` everywhere.
    """
    return np.full((logged.n_rounds, logged.n_actions, logged.n_positions), 1.0 / logged.n_actions)


# --------------------------------------------------------------------------------------
# the Open Bandit evaluation
# --------------------------------------------------------------------------------------


def _versus(est: Estimate, truth: float) -> dict[str, Any]:
    return {
        "difference": est.value - truth,
        "relative_error": abs(est.value - truth) / truth if truth else None,
        "ci_covers": est.covers(truth),
    }


def _weight_stats(w: np.ndarray) -> dict[str, float]:
    return {
        "max_importance_weight": float(w.max()),
        "mean_importance_weight": float(w.mean()),
        "effective_sample_size": float(w.sum() ** 2 / (w**2).sum()) if w.any() else 0.0,
    }


def evaluate_obd(
    root: str | Path,
    campaign: str = "all",
    random_state: int = 0,
    *,
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    epsilon: float = 0.1,
    temperature: float = 1.0,
    c: float = 1.0,
) -> dict[str, Any]:
    """Off-policy evaluation on the Open Bandit Dataset, as a JSON-ready dict.

    1. **Learned policy.** The ``random`` logs are split in time order; a logistic reward
       model (:class:`RewardModel`) is fitted on the first half; the evaluation policy is
       a softmax over its predicted click logits per position with an epsilon floor
       (:func:`softmax_policy`). Its value on the later half is estimated with IPW, SNIPW
       and DR (``q_hat`` from the same first-half model), and compared with the click rate
       the logged ``bts`` policy actually got and with the ``random`` policy's own click
       rate (on the same later half).
    2. **Validation** (obp's standard check). The value of the *uniform random* policy is
       estimated from the ``bts`` logs with their true propensities (DR's ``q_hat`` by
       2-fold time-ordered cross-fitting on the ``bts`` logs) and compared with the
       ``random`` logs' actual click rate, the ground truth; relative errors are reported.

    Parameters
    ----------
    root
        The ``open_bandit_sample`` folder (holding ``random/`` and ``bts/``).
    campaign
        ``all``, ``men`` or ``women``.
    random_state
        Seed of the bootstrap intervals.
    alpha
        Significance level of the intervals.
    n_bootstrap
        Bootstrap replicates per estimate (0: normal intervals only).
    epsilon, temperature
        Of the learned policy (see :func:`softmax_policy`).
    c
        Regularisation of the reward model.

    Returns
    -------
    dict
        ``data``, ``ground_truth``, ``learned_policy`` and ``validation`` sections.
    """
    root = Path(root)
    rnd = load_obd(root / "random", campaign)
    bts = load_obd(root / "bts", campaign)
    if rnd.n_actions != bts.n_actions or rnd.n_positions != bts.n_positions:
        raise InputError(
            f"random and bts logs differ in actions/positions ({rnd.n_actions}/"
            f"{rnd.n_positions} vs {bts.n_actions}/{bts.n_positions})",
            file=root,
        )
    kw: dict[str, Any] = {"alpha": alpha, "n_bootstrap": n_bootstrap, "random_state": random_state}

    # 1. a policy learned on the first half of the random logs
    half = rnd.n_rounds // 2
    train, test = rnd.subset(slice(0, half)), rnd.subset(slice(half, None))
    model = RewardModel(c=c).fit(train)
    logits = model.logits(test)
    pi_e = softmax_policy(logits, temperature=temperature, epsilon=epsilon)
    q_hat = 1.0 / (1.0 + np.exp(-logits))
    learned = {
        "ipw": ipw(test, pi_e, **kw),
        "snipw": snipw(test, pi_e, **kw),
        "dr": dr(test, pi_e, q_hat, **kw),
    }
    direct = float(
        np.mean(
            np.sum(
                q_hat[np.arange(test.n_rounds), :, test.positions]
                * pi_e[np.arange(test.n_rounds), :, test.positions],
                axis=1,
            )
        )
    )
    bts_truth = on_policy_value(bts, alpha=alpha)
    random_truth = on_policy_value(rnd, alpha=alpha)
    random_test = on_policy_value(test, alpha=alpha)

    # 2. validation: the uniform policy's value from the bts logs
    uni = uniform_policy(bts)
    h = bts.n_rounds // 2
    first, second = bts.subset(slice(0, h)), bts.subset(slice(h, None))
    q_bts = np.concatenate(
        [RewardModel(c=c).fit(second).predict(first), RewardModel(c=c).fit(first).predict(second)]
    )
    validation = {
        "ipw": ipw(bts, uni, **kw),
        "snipw": snipw(bts, uni, **kw),
        "dr": dr(bts, uni, q_bts, **kw),
    }
    truth = random_truth.value

    return {
        "data": {
            "root": str(root),
            "campaign": campaign,
            "n_rounds": {"random": rnd.n_rounds, "bts": bts.n_rounds},
            "n_actions": rnd.n_actions,
            "n_positions": rnd.n_positions,
            "clicks": {"random": int(rnd.rewards.sum()), "bts": int(bts.rewards.sum())},
        },
        "ground_truth": {
            "bts_policy_ctr": bts_truth.to_dict(),
            "random_policy_ctr": random_truth.to_dict(),
            "random_policy_ctr_test_half": random_test.to_dict(),
        },
        "learned_policy": {
            "description": (
                "softmax over a logistic reward model's click logits per position, "
                "epsilon floor; fitted on the random logs' first half (time order), "
                "evaluated on the later half"
            ),
            "epsilon": epsilon,
            "temperature": temperature,
            "train_rounds": train.n_rounds,
            "train_clicks": int(train.rewards.sum()),
            "test_rounds": test.n_rounds,
            "test_clicks": int(test.rewards.sum()),
            "reward_model_direct_estimate": direct,
            **_weight_stats(importance_weights(test, pi_e)),
            "estimates": {k: v.to_dict() for k, v in learned.items()},
            "vs_bts": {k: _versus(v, bts_truth.value) for k, v in learned.items()},
            "vs_random": {k: _versus(v, random_truth.value) for k, v in learned.items()},
        },
        "validation": {
            "description": (
                "value of the uniform random policy estimated from the bts logs with bts's "
                "true propensities, against the random logs' actual click rate"
            ),
            "ground_truth": truth,
            **_weight_stats(importance_weights(bts, uni)),
            "estimates": {k: v.to_dict() for k, v in validation.items()},
            "relative_error": {k: abs(v.value - truth) / truth for k, v in validation.items()},
            "ci_covers_truth": {k: v.covers(truth) for k, v in validation.items()},
        },
    }
