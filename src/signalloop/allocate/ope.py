"""Off-policy evaluation (OPE) on logged bandit data with known propensities.

A logging policy chose one action per round (an item, a campaign, an ad) and logged the
reward it got and the probability it had of choosing that action (the *propensity*). From
such logs the value of a *different* policy, the evaluation policy, can be estimated without
running it. This module provides the three standard estimators, following the conventions of
the Open Bandit Pipeline (``obp.ope``; Saito et al., NeurIPS 2021 Datasets and Benchmarks) so
that figures are comparable:

- **IPW** (inverse probability weighting), the per-round contribution
  ``w_i * r_i`` with ``w_i = pi_e(a_i | x_i, k_i) / pi_b(a_i | x_i, k_i)``;
- **SNIPW** (self-normalised IPW), ``sum(w_i r_i) / sum(w_i)``;
- **DR** (doubly robust), the per-round contribution
  ``sum_a pi_e(a | x_i, k_i) q(x_i, a, k_i) + w_i (r_i - q(x_i, a_i, k_i))``.

Here ``k_i`` is the logged position (slot) of round ``i``: with several positions, the
evaluation policy gives a distribution over actions for each position and the one at the
logged position is used (obp's per-position, "independent" treatment). Each estimator returns
an :class:`Estimate` with a normal-approximation confidence interval from the per-round
contributions (the delta method's influence function for SNIPW) and, when asked, a
percentile bootstrap interval.

The logs are a :class:`~signalloop.allocate.logs.LoggedBandit` (read from the Open Bandit
Dataset by :func:`~signalloop.allocate.logs.load_obd`), and
:func:`signalloop.allocate.obd.evaluate_obd` runs the whole evaluation on them: a policy
learned from the uniform-random logs, evaluated on their held-out later half and compared with
the click rate of the logged Bernoulli Thompson sampling policy, plus the standard validation
of the estimators (the uniform policy's value estimated from the Thompson sampling logs
against the click rate the uniform policy actually got).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

from signalloop.allocate.logs import LoggedBandit
from signalloop.errors import UsageError

BOOTSTRAP_CHUNK = 200  # bootstrap replicates drawn per block (bounds memory)

# --------------------------------------------------------------------------------------
# estimators
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A policy-value estimate with its confidence interval.

    Parameters
    ----------
    estimator
        ``ipw``, ``snipw``, ``dr`` or ``on_policy``.
    value
        The point estimate.
    ci_low, ci_high
        Normal-approximation interval, ``value -/+ z * se``.
    se
        Standard error (from the per-round contributions).
    alpha
        The interval is a ``1 - alpha`` interval.
    n_rounds
        Rounds used.
    bootstrap_low, bootstrap_high
        Percentile bootstrap interval, when one was asked for.
    n_bootstrap
        Bootstrap replicates (0: none).
    """

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    se: float
    alpha: float
    n_rounds: int
    bootstrap_low: float | None = None
    bootstrap_high: float | None = None
    n_bootstrap: int = 0

    def covers(self, truth: float) -> bool:
        """Whether the normal interval contains ``truth``."""
        return self.ci_low <= truth <= self.ci_high

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out: dict[str, Any] = {
            "estimator": self.estimator,
            "value": self.value,
            "ci": [self.ci_low, self.ci_high],
            "se": self.se,
            "confidence": 1.0 - self.alpha,
            "n_rounds": self.n_rounds,
        }
        if self.n_bootstrap:
            out["bootstrap_ci"] = [self.bootstrap_low, self.bootstrap_high]
            out["n_bootstrap"] = self.n_bootstrap
        return out


def _as_3d(dist: Any, name: str, logged: LoggedBandit) -> np.ndarray:
    """``dist`` as (n_rounds, n_actions, n_positions'), checked."""
    arr = np.asarray(dist, dtype=float)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise UsageError(f"{name} must have 2 or 3 dimensions, got shape {arr.shape}")
    if arr.shape[0] != logged.n_rounds or arr.shape[1] != logged.n_actions:
        raise UsageError(
            f"{name} must have shape ({logged.n_rounds}, {logged.n_actions}[, n_positions]), "
            f"got {arr.shape}"
        )
    if arr.shape[2] not in (1, logged.n_positions):
        raise UsageError(f"{name} has {arr.shape[2]} positions, the logs have {logged.n_positions}")
    return arr


def _policy(logged: LoggedBandit, action_dist: Any) -> tuple[np.ndarray, np.ndarray]:
    """The checked action distribution and the position index to read it at."""
    dist = _as_3d(action_dist, "action_dist", logged)
    if np.any(dist < 0) or not np.allclose(dist.sum(axis=1), 1.0):
        raise UsageError("action_dist must be a probability distribution over actions")
    pos = logged.positions if dist.shape[2] > 1 else np.zeros(logged.n_rounds, dtype=np.int64)
    return dist, pos


def importance_weights(logged: LoggedBandit, action_dist: Any) -> np.ndarray:
    """``pi_e(a_i | x_i, k_i) / pscore_i`` per round.

    Parameters
    ----------
    logged
        The logs.
    action_dist
        Evaluation policy, shape (n_rounds, n_actions[, n_positions]).

    Returns
    -------
    numpy.ndarray
        The importance weight of each round.
    """
    dist, pos = _policy(logged, action_dist)
    rounds = np.arange(logged.n_rounds)
    return np.asarray(dist[rounds, logged.actions, pos] / logged.pscore)


def _bootstrap(
    stat: Any, n: int, n_bootstrap: int, alpha: float, random_state: int | None
) -> tuple[float, float]:
    """Percentile interval of ``stat(idx)`` over ``n_bootstrap`` resamples of ``n`` rounds.

    Resampling draws ``RandomState(random_state).randint(0, n, n)`` once per replicate, the
    same stream as obp's ``estimate_confidence_interval_by_bootstrap``, so for IPW and DR
    (means of per-round contributions) the interval equals obp's for the same seed.
    """
    rng = np.random.RandomState(random_state)
    stats = np.empty(n_bootstrap)
    done = 0
    while done < n_bootstrap:
        size = min(BOOTSTRAP_CHUNK, n_bootstrap - done)
        idx = rng.randint(0, n, size=(size, n))
        stats[done : done + size] = stat(idx)
        done += size
    return (
        float(np.percentile(stats, 100 * alpha / 2)),
        float(np.percentile(stats, 100 * (1 - alpha / 2))),
    )


def _from_contributions(
    name: str,
    value: float,
    influence: np.ndarray,
    alpha: float,
    boot: tuple[float, float] | None,
    n_bootstrap: int,
) -> Estimate:
    n = influence.shape[0]
    se = float(np.std(influence, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    z = float(norm.ppf(1 - alpha / 2))
    return Estimate(
        estimator=name,
        value=value,
        ci_low=value - z * se,
        ci_high=value + z * se,
        se=se,
        alpha=alpha,
        n_rounds=n,
        bootstrap_low=None if boot is None else boot[0],
        bootstrap_high=None if boot is None else boot[1],
        n_bootstrap=n_bootstrap if boot is not None else 0,
    )


def _mean_estimate(
    name: str, c: np.ndarray, alpha: float, n_bootstrap: int, random_state: int | None
) -> Estimate:
    """An estimate that is the mean of per-round contributions ``c`` (IPW, DR, on-policy)."""
    boot = (
        _bootstrap(lambda idx: c[idx].mean(axis=1), c.shape[0], n_bootstrap, alpha, random_state)
        if n_bootstrap
        else None
    )
    return _from_contributions(name, float(c.mean()), c, alpha, boot, n_bootstrap)


def _check_alpha(alpha: float, n_bootstrap: int, logged: LoggedBandit) -> None:
    if not 0 < alpha < 1:
        raise UsageError(f"alpha must be in (0, 1), got {alpha}")
    if n_bootstrap < 0:
        raise UsageError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    if logged.n_rounds == 0:
        raise UsageError("no logged rounds to estimate from")


def ipw_round_rewards(logged: LoggedBandit, action_dist: Any) -> np.ndarray:
    """IPW per-round contributions ``w_i * r_i`` (their mean is the IPW estimate).

    Parameters
    ----------
    logged
        The logs.
    action_dist
        Evaluation policy, shape (n_rounds, n_actions[, n_positions]).

    Returns
    -------
    numpy.ndarray
        One contribution per round.
    """
    return np.asarray(logged.rewards * importance_weights(logged, action_dist))


def dr_round_rewards(logged: LoggedBandit, action_dist: Any, q_hat: Any) -> np.ndarray:
    """DR per-round contributions (their mean is the DR estimate).

    ``sum_a pi_e(a | x_i, k_i) q(x_i, a, k_i) + w_i (r_i - q(x_i, a_i, k_i))``, with the
    first term a weighted average over actions as in obp (``np.average`` with the policy's
    probabilities as weights).

    Parameters
    ----------
    logged
        The logs.
    action_dist
        Evaluation policy, shape (n_rounds, n_actions[, n_positions]).
    q_hat
        Estimated expected reward per round, action (and position), same layout.

    Returns
    -------
    numpy.ndarray
        One contribution per round.
    """
    dist, pos = _policy(logged, action_dist)
    q = _as_3d(q_hat, "q_hat", logged)
    rounds = np.arange(logged.n_rounds)
    q_pos = logged.positions if q.shape[2] > 1 else np.zeros(logged.n_rounds, dtype=np.int64)
    if q.shape[2] > 1 and dist.shape[2] == 1:
        dist = np.broadcast_to(dist, q.shape)
        pos = logged.positions
    q_at = q[rounds, :, q_pos]
    pi_at = dist[rounds, :, pos]
    direct = np.average(q_at, weights=pi_at, axis=1)
    iw = pi_at[rounds, logged.actions] / logged.pscore
    return np.asarray(direct + iw * (logged.rewards - q_at[rounds, logged.actions]))


def ipw(
    logged: LoggedBandit,
    action_dist: Any,
    *,
    alpha: float = 0.05,
    n_bootstrap: int = 0,
    random_state: int | None = None,
) -> Estimate:
    """Inverse probability weighting estimate of the evaluation policy's value.

    Equals ``obp.ope.InverseProbabilityWeighting().estimate_policy_value``.

    Parameters
    ----------
    logged
        The logs.
    action_dist
        Evaluation policy's probability of each action per round (and position), shape
        (n_rounds, n_actions) or (n_rounds, n_actions, n_positions).
    alpha
        Significance level of the intervals.
    n_bootstrap
        Bootstrap replicates for a percentile interval (0: normal interval only).
    random_state
        Seed of the bootstrap.

    Returns
    -------
    Estimate
        Mean of the per-round contributions, with intervals.

    Examples
    --------
    >>> lb = LoggedBandit.from_arrays([0, 1, 1], [1, 0, 1], [0.5, 0.5, 0.5])
    >>> round(ipw(lb, [[1, 0], [1, 0], [1, 0]]).value, 6)  # only round 0 matches
    0.666667
    """
    _check_alpha(alpha, n_bootstrap, logged)
    return _mean_estimate(
        "ipw", ipw_round_rewards(logged, action_dist), alpha, n_bootstrap, random_state
    )


def snipw(
    logged: LoggedBandit,
    action_dist: Any,
    *,
    alpha: float = 0.05,
    n_bootstrap: int = 0,
    random_state: int | None = None,
) -> Estimate:
    """Self-normalised IPW estimate: ``sum(w_i r_i) / sum(w_i)``.

    Equals ``obp.ope.SelfNormalizedInverseProbabilityWeighting().estimate_policy_value``.
    The normal interval uses the delta method (influence ``w_i (r_i - V) / mean(w)``); the
    bootstrap recomputes the ratio on each resample.

    Parameters
    ----------
    logged
        The logs.
    action_dist
        Evaluation policy, shape (n_rounds, n_actions[, n_positions]).
    alpha
        Significance level of the intervals.
    n_bootstrap
        Bootstrap replicates (0: none).
    random_state
        Seed of the bootstrap.

    Returns
    -------
    Estimate
        The estimate with intervals.

    Raises
    ------
    UsageError
        All importance weights are zero (the policy never picks a logged action).
    """
    _check_alpha(alpha, n_bootstrap, logged)
    w = importance_weights(logged, action_dist)
    if w.sum() <= 0:
        raise UsageError("snipw: every importance weight is 0; the policy never matches the logs")
    r = logged.rewards
    value = float((w * r).sum() / w.sum())
    influence = w * (r - value) / w.mean()

    def ratio(idx: np.ndarray) -> np.ndarray:
        ws = w[idx]
        den = ws.sum(axis=1)
        return np.asarray(
            np.where(den > 0, (ws * r[idx]).sum(axis=1) / np.where(den > 0, den, 1), 0.0)
        )

    boot = _bootstrap(ratio, w.shape[0], n_bootstrap, alpha, random_state) if n_bootstrap else None
    est = _from_contributions("snipw", value, influence, alpha, boot, n_bootstrap)
    return est


def dr(
    logged: LoggedBandit,
    action_dist: Any,
    q_hat: Any,
    *,
    alpha: float = 0.05,
    n_bootstrap: int = 0,
    random_state: int | None = None,
) -> Estimate:
    """Doubly robust estimate of the evaluation policy's value.

    Equals ``obp.ope.DoublyRobust().estimate_policy_value`` with
    ``estimated_rewards_by_reg_model=q_hat``.

    Parameters
    ----------
    logged
        The logs.
    action_dist
        Evaluation policy, shape (n_rounds, n_actions[, n_positions]).
    q_hat
        Reward model's expected reward per round, action (and position), same layout.
    alpha
        Significance level of the intervals.
    n_bootstrap
        Bootstrap replicates (0: none).
    random_state
        Seed of the bootstrap.

    Returns
    -------
    Estimate
        Mean of the per-round contributions, with intervals.
    """
    _check_alpha(alpha, n_bootstrap, logged)
    c = dr_round_rewards(logged, action_dist, q_hat)
    return _mean_estimate("dr", c, alpha, n_bootstrap, random_state)


def on_policy_value(logged: LoggedBandit, *, alpha: float = 0.05) -> Estimate:
    """The logging policy's own value: the mean reward, with its normal interval.

    Parameters
    ----------
    logged
        The logs.
    alpha
        Significance level.

    Returns
    -------
    Estimate
        Mean reward (``estimator="on_policy"``).
    """
    _check_alpha(alpha, 0, logged)
    return _mean_estimate("on_policy", logged.rewards, alpha, 0, None)
