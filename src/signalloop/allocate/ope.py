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

:func:`load_obd` reads the Open Bandit Dataset (ZOZOTOWN) logs, and :func:`evaluate_obd`
runs the whole evaluation on them: a policy learned from the uniform-random logs, evaluated on
their held-out later half and compared with the click rate of the logged Bernoulli Thompson
sampling policy, plus the standard validation of the estimators (the uniform policy's value
estimated from the Thompson sampling logs against the click rate the uniform policy actually
got).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression

from signalloop.errors import InputError, UsageError

REQUIRED_COLUMNS = ("timestamp", "item_id", "position", "click", "propensity_score")
USER_FEATURE_PREFIX = "user_feature"
AFFINITY_PREFIX = "user-item_affinity_"
BOOTSTRAP_CHUNK = 200  # bootstrap replicates drawn per block (bounds memory)


# --------------------------------------------------------------------------------------
# logged data
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedBandit:
    """Logged bandit feedback: one row a round.

    Parameters
    ----------
    actions
        Logged action per round, integers in ``0 .. n_actions - 1``, shape (n_rounds,).
    positions
        Logged position (slot) per round, integers in ``0 .. n_positions - 1`` (the Open
        Bandit position 1 is 0), shape (n_rounds,).
    rewards
        Observed reward (click) per round, shape (n_rounds,).
    pscore
        Propensity of the logged action under the logging policy, in (0, 1], shape
        (n_rounds,).
    n_actions
        Number of actions.
    n_positions
        Number of positions.
    contexts
        Context features per round, shape (n_rounds, n_features); for the Open Bandit data
        the one-hot encoded user features (first level dropped, as obp does).
    timestamps
        Time of each round (``datetime64[ns]``, UTC), shape (n_rounds,).
    affinity
        Optional user-item affinity per round and action, shape (n_rounds, n_actions).
    context_names
        Names of the context columns.
    source
        Where the logs came from (a file path or a description).
    """

    actions: np.ndarray
    positions: np.ndarray
    rewards: np.ndarray
    pscore: np.ndarray
    n_actions: int
    n_positions: int
    contexts: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="datetime64[ns]"))
    affinity: np.ndarray | None = None
    context_names: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        n = self.actions.shape[0]
        for name in ("positions", "rewards", "pscore"):
            if getattr(self, name).shape != (n,):
                raise UsageError(f"{name} must have shape ({n},), got {getattr(self, name).shape}")
        if n and (self.actions.min() < 0 or self.actions.max() >= self.n_actions):
            raise UsageError(f"actions must be in 0..{self.n_actions - 1}")
        if n and (self.positions.min() < 0 or self.positions.max() >= self.n_positions):
            raise UsageError(f"positions must be in 0..{self.n_positions - 1}")
        if n and (np.any(self.pscore <= 0) or np.any(self.pscore > 1)):
            raise UsageError("pscore must be in (0, 1]")

    @classmethod
    def from_arrays(
        cls,
        actions: Any,
        rewards: Any,
        pscore: Any,
        positions: Any = None,
        *,
        n_actions: int | None = None,
        n_positions: int | None = None,
        contexts: Any = None,
        source: str = "arrays",
    ) -> LoggedBandit:
        """Build logs from plain arrays (positions default to 0, sizes to max + 1).

        Parameters
        ----------
        actions, rewards, pscore
            Logged action, reward and propensity per round.
        positions
            Logged position per round (0-based); all 0 when omitted.
        n_actions, n_positions
            Sizes; inferred as ``max + 1`` when omitted.
        contexts
            Context features, shape (n_rounds, n_features); empty when omitted.
        source
            A description of where the logs came from.

        Returns
        -------
        LoggedBandit
            The logs.

        Examples
        --------
        >>> lb = LoggedBandit.from_arrays([0, 1, 1], [1, 0, 1], [0.5, 0.5, 0.5])
        >>> lb.n_rounds, lb.n_actions, lb.n_positions
        (3, 2, 1)
        """
        a = np.asarray(actions, dtype=np.int64)
        n = a.shape[0]
        pos = np.zeros(n, dtype=np.int64) if positions is None else np.asarray(positions, np.int64)
        ctx = np.zeros((n, 0)) if contexts is None else np.asarray(contexts, dtype=float)
        return cls(
            actions=a,
            positions=pos,
            rewards=np.asarray(rewards, dtype=float),
            pscore=np.asarray(pscore, dtype=float),
            n_actions=int(n_actions if n_actions is not None else (a.max() + 1 if n else 1)),
            n_positions=int(
                n_positions if n_positions is not None else (pos.max() + 1 if n else 1)
            ),
            contexts=ctx,
            timestamps=np.zeros(n, dtype="datetime64[ns]"),
            source=source,
        )

    @property
    def n_rounds(self) -> int:
        """Number of logged rounds."""
        return int(self.actions.shape[0])

    def subset(self, index: np.ndarray | slice) -> LoggedBandit:
        """The rounds selected by ``index`` (a slice, integer or boolean array).

        Parameters
        ----------
        index
            Which rounds to keep.

        Returns
        -------
        LoggedBandit
            The selected rounds, with the same action and position sets.
        """
        ctx = self.contexts[index] if self.contexts.shape[0] == self.n_rounds else self.contexts
        ts = (
            self.timestamps[index] if self.timestamps.shape[0] == self.n_rounds else self.timestamps
        )
        return LoggedBandit(
            actions=self.actions[index],
            positions=self.positions[index],
            rewards=self.rewards[index],
            pscore=self.pscore[index],
            n_actions=self.n_actions,
            n_positions=self.n_positions,
            contexts=ctx,
            timestamps=ts,
            affinity=None if self.affinity is None else self.affinity[index],
            context_names=self.context_names,
            source=self.source,
        )


def _first_bad(mask: np.ndarray) -> int:
    """1-based file line of the first True in ``mask`` (the header is line 1)."""
    return int(np.flatnonzero(mask)[0]) + 2


def load_obd(folder: str | Path, campaign: str = "all") -> LoggedBandit:
    """Read one Open Bandit Dataset log (one logging policy, one campaign).

    The file is ``folder / campaign / f"{campaign}.csv"`` (e.g.
    ``open_bandit_sample/random/all/all.csv``), with its unnamed first index column. Rounds
    are sorted by timestamp (stable), as obp's ``OpenBanditDataset`` does.

    Parameters
    ----------
    folder
        The logging policy's folder (``.../open_bandit_sample/random`` or ``.../bts``).
    campaign
        ``all``, ``men`` or ``women``.

    Returns
    -------
    LoggedBandit
        Actions are the item ids; positions are 0-based (file position 1 is 0); rewards
        the clicks; pscore the logged ``propensity_score``; contexts the one-hot encoded
        ``user_feature_*`` columns (first level dropped, as obp does); affinity the
        ``user-item_affinity_*`` columns when present. ``n_actions`` is the number of items
        in ``item_context.csv`` when that file is there, else the largest item id + 1.

    Raises
    ------
    InputError
        The file is missing or unreadable, a required column is missing, or a value is out
        of range (the message names the file, line and column).
    """
    path = Path(folder) / campaign / f"{campaign}.csv"
    if not path.is_file():
        raise InputError(
            f"missing Open Bandit log file (expected {campaign}/{campaign}.csv under {folder})",
            file=path,
        )
    try:
        df = pd.read_csv(path, index_col=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read as CSV: {exc}", file=path) from exc
    for col in REQUIRED_COLUMNS:
        if col not in df.columns:
            raise InputError(
                f"missing required column (have: {list(df.columns)[:8]}...)", file=path, column=col
            )
    user_cols = [c for c in df.columns if str(c).startswith(USER_FEATURE_PREFIX)]
    if not user_cols:
        raise InputError("no user feature columns", file=path, column=f"{USER_FEATURE_PREFIX}_*")

    ts = pd.to_datetime(df["timestamp"], utc=True, errors="coerce")
    if ts.isna().any():
        bad = ts.isna().to_numpy()
        raise InputError(
            "not an ISO 8601 timestamp", file=path, line=_first_bad(bad), column="timestamp"
        )
    df = df.assign(_ts=ts, _line=np.arange(len(df)) + 2)
    df = df.sort_values("_ts", kind="stable").reset_index(drop=True)

    def numeric(col: str) -> np.ndarray:
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        if np.isnan(values).any():
            line = int(df["_line"].to_numpy()[np.isnan(values)][0])
            raise InputError("not a number", file=path, line=line, column=col)
        return values

    def check(ok: np.ndarray, col: str, what: str) -> None:
        if not ok.all():
            line = int(df["_line"].to_numpy()[~ok][0])
            raise InputError(what, file=path, line=line, column=col)

    item = numeric("item_id")
    check((item >= 0) & (item == np.round(item)), "item_id", "item id must be an integer >= 0")
    position = numeric("position")
    check(
        (position >= 1) & (position == np.round(position)),
        "position",
        "position must be an integer >= 1",
    )
    click = numeric("click")
    check(np.isin(click, (0.0, 1.0)), "click", "click must be 0 or 1")
    pscore = numeric("propensity_score")
    check((pscore > 0) & (pscore <= 1), "propensity_score", "propensity must be in (0, 1]")

    actions = item.astype(np.int64)
    n_actions = int(actions.max()) + 1 if len(actions) else 1
    item_path = path.parent / "item_context.csv"
    if item_path.is_file():
        n_items = len(pd.read_csv(item_path, index_col=0))
        if n_items < n_actions:
            raise InputError(
                f"item_context.csv lists {n_items} items but item ids reach {n_actions - 1}",
                file=item_path,
            )
        n_actions = n_items

    dummies = pd.get_dummies(df[user_cols].astype(str), drop_first=True, dtype=float)
    aff_cols = [f"{AFFINITY_PREFIX}{j}" for j in range(n_actions)]
    affinity = (
        df[aff_cols].to_numpy(dtype=float) if all(c in df.columns for c in aff_cols) else None
    )
    positions = position.astype(np.int64) - 1
    return LoggedBandit(
        actions=actions,
        positions=positions,
        rewards=click,
        pscore=pscore,
        n_actions=n_actions,
        n_positions=int(positions.max()) + 1 if len(positions) else 1,
        contexts=dummies.to_numpy(dtype=float),
        timestamps=df["_ts"].dt.tz_convert(None).to_numpy(dtype="datetime64[ns]"),
        affinity=affinity,
        context_names=tuple(str(c) for c in dummies.columns),
        source=str(path),
    )


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
    c = ipw_round_rewards(logged, action_dist)
    boot = (
        _bootstrap(lambda idx: c[idx].mean(axis=1), c.shape[0], n_bootstrap, alpha, random_state)
        if n_bootstrap
        else None
    )
    return _from_contributions("ipw", float(c.mean()), c, alpha, boot, n_bootstrap)


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
    boot = (
        _bootstrap(lambda idx: c[idx].mean(axis=1), c.shape[0], n_bootstrap, alpha, random_state)
        if n_bootstrap
        else None
    )
    return _from_contributions("dr", float(c.mean()), c, alpha, boot, n_bootstrap)


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
    r = logged.rewards
    return _from_contributions("on_policy", float(r.mean()), r, alpha, None, 0)


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
