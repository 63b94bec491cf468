"""The arm model of budget allocation: outcomes per day as a Gamma-Poisson in spend^beta.

Each campaign (arm) is modelled as ``y_d ~ Poisson(theta * s_d ** beta)``: ``y_d`` the day's
outcome (nowcast-expected eventual conversions, so recent days are not under-counted; or
value in units of the account's mean value per conversion), ``s_d`` its spend, ``beta < 1``
the diminishing return shared by the account. Given ``beta`` a ``Gamma(a, b)`` prior on
``theta`` is conjugate: the posterior is ``Gamma(a + sum y, b + sum s ** beta)``.

Outcomes come from the best source a campaign has (:data:`OUTCOME_SOURCES`): the nowcast's
cohorts, first-party conversions by conversion day, or the ad platform's own counts. The
platform's counts are discounted (:func:`evidence_weight`): a platform over-counts by a factor
that differs from campaign to campaign, so no number of them pins a campaign's rate closer
than that factor's spread (:data:`PLATFORM_BIAS_CV`), and the posterior stays that wide.

The prior is **pooled from the account** (empirical Bayes): the method of moments across the
arms' ``theta_hat = sum y / sum s ** beta``, with the Poisson noise of each estimate taken
out of their spread, so an arm with little history starts at the account's typical rate with
the account's spread. ``beta`` is fitted on the log-log scale with a fixed effect per arm and
shrunk toward :data:`DEFAULT_BETA` (an account's own spend rarely varies enough to pin it).

>>> import numpy as np
>>> from datetime import date
>>> days = [Day(date(2026, 1, d), 100.0, 4, 4.0) for d in range(1, 29)]
>>> m = GammaPoissonArms(beta=0.8).fit([ArmState("c01", 100.0, tuple(days))])
>>> round(float(m.mean_[0] * 100.0**0.8), 2)  # expected conversions a day at 100 spent
4.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

DEFAULT_BETA = 0.8
"""Prior centre of the spend exponent (the simulator's impressions ~ spend^b, b in 0.70-0.85)."""
BETA_BOUNDS = (0.5, 0.95)
OBJECTIVES = ("conversions", "value")
OUTCOME_SOURCES = ("nowcast", "observed", "platform_reported", "none")
"""Where an arm's outcomes come from, best first: the nowcast's cohorts (first-party
conversions by click day, completed for the delay), first-party conversions by conversion day,
the ad platform's own counts (``spend.platform_conversions``), nothing."""
PLATFORM_BIAS_CV = 0.2
"""Spread (coefficient of variation) between campaigns of the ratio of true to
platform-reported conversions: the floor of how well a campaign's platform counts pin its rate.

Measured on the one real export that carries both a platform count and a confirmed one (the
KAG Meta export: ``Total_Conversion``, the platform's, and ``Approved_Conversion``, the
advertiser's): over the 37 ad sets with at least 20 platform conversions the approved share
(0.34 overall) varies between ad sets with a CV of 0.18 beyond its binomial noise (0.08
between its 3 campaigns, 0.18 between its 37 interest groups). Rounded up to 0.2, a platform
count is worth at most ``1 / 0.2 ** 2 = 25`` first-party conversions of evidence."""


@dataclass(frozen=True)
class Day:
    """One day of one arm: spend, outcomes observed so far and nowcast-expected eventually."""

    date: date
    spend: float
    conversions: float = 0.0
    expected_conversions: float = 0.0
    value: float = 0.0
    expected_value: float = 0.0
    excluded: bool = False


@dataclass(frozen=True)
class ArmState:
    """What a policy knows about one campaign when it allocates.

    Attributes
    ----------
    campaign_id
        The arm.
    current
        Its current daily budget (what it spends a day now).
    history
        The last N days, oldest first (:class:`Day`); excluded days (outage windows) are
        kept but left out of learning.
    gate
        ``"open"`` or ``"hold"`` (the signal checks' gate).
    learning_state
        ``"learning"``, ``"learning_limited"`` or ``"stable"`` (the most fragile of its
        ad sets).
    gate_reasons
        The checks that hold it.
    outcome_source
        Where the history's outcomes come from (:data:`OUTCOME_SOURCES`): ``"nowcast"`` and
        ``"observed"`` are first-party and count in full; ``"platform_reported"`` counts are
        discounted (:func:`evidence_weight`); ``"none"``: no source has outcomes for it.
    """

    campaign_id: str
    current: float
    history: tuple[Day, ...] = ()
    gate: str = "open"
    learning_state: str = "stable"
    gate_reasons: tuple[str, ...] = ()
    outcome_source: str = "nowcast"


def arm_data(arm: ArmState, objective: str = "conversions") -> tuple[FloatArray, FloatArray]:
    """Spend and nowcast-expected outcome of the arm's learnable days (spend > 0, not excluded)."""
    rows = [d for d in arm.history if d.spend > 0 and not d.excluded]
    key = "expected_value" if objective == "value" else "expected_conversions"
    spend = np.array([d.spend for d in rows], dtype=float)
    y = np.array([max(float(getattr(d, key)), 0.0) for d in rows], dtype=float)
    return spend, y


def evidence_weight(arm: ArmState, bias_cv: float = PLATFORM_BIAS_CV) -> float:
    """The weight of each of the arm's outcomes in its posterior (1 for first-party ones).

    Platform-reported conversions are ``n`` counts of a rate scaled by an unknown
    campaign-specific over-count factor of spread ``bias_cv``: the relative variance of the
    rate they imply is ``1 / n + bias_cv ** 2``, that of ``n_eff = n / (1 + n * bias_cv ** 2)``
    Poisson counts. Every outcome and unit of exposure is weighted by ``n_eff / n`` (a power
    likelihood: the posterior mean stays the platform's rate, its spread widens to that of
    ``n_eff`` conversions): 2,669 platform conversions weigh as 25, 58 as 17. An arm with no
    outcome source (``"none"``) weighs 0: its spend without outcomes is missing data, not
    zero conversions, so its posterior is the pooled prior.

    >>> days = (Day(date(2026, 1, 1), 100.0, 58, 58.0),)
    >>> reported = ArmState("c01", 100.0, days, outcome_source="platform_reported")
    >>> round(evidence_weight(reported) * 58, 1)
    17.5
    >>> evidence_weight(ArmState("c01", 100.0, days))
    1.0
    """
    if arm.outcome_source == "none":
        return 0.0
    if arm.outcome_source != "platform_reported":
        return 1.0
    n = float(arm_data(arm)[1].sum())
    return 1.0 / (1.0 + n * bias_cv**2)


def fit_beta(
    arms: Sequence[ArmState],
    *,
    prior: float = DEFAULT_BETA,
    prior_sd: float = 0.1,
    bounds: tuple[float, float] = BETA_BOUNDS,
) -> float:
    """The account's spend exponent: within-arm log-log slope, shrunk toward ``prior``.

    The slope of ``log y`` on ``log s`` after removing each arm's mean (days with ``y > 0``),
    combined with the prior ``N(prior, prior_sd^2)`` by precision, clipped to ``bounds``.

    >>> fit_beta([])
    0.8
    """
    xs, ys = [], []
    for arm in arms:
        s, y = arm_data(arm)
        ok = y > 0
        if ok.sum() >= 3:
            ls, ly = np.log(s[ok]), np.log(y[ok])
            xs.append(ls - ls.mean())
            ys.append(ly - ly.mean())
    if not xs:
        return float(prior)
    x, y = np.concatenate(xs), np.concatenate(ys)
    sxx = float(x @ x)
    if sxx < 1e-9 or len(x) < 3 + len(xs):
        return float(prior)
    slope = float(x @ y) / sxx
    resid = y - slope * x
    sigma2 = float(resid @ resid) / max(len(x) - len(xs) - 1, 1)
    prec_data, prec_prior = sxx / max(sigma2, 1e-9), 1.0 / prior_sd**2
    beta = (prec_data * slope + prec_prior * prior) / (prec_data + prec_prior)
    return float(np.clip(beta, *bounds))


class GammaPoissonArms:
    """Posterior of each arm's ``theta`` in ``y ~ Poisson(theta * spend ** beta)``.

    Parameters
    ----------
    beta
        The spend exponent; ``None`` fits it on the account (:func:`fit_beta`).
    objective
        ``"conversions"`` or ``"value"`` (value in units of the account's mean value per
        conversion, so the Poisson's variance is on the right scale).
    min_prior_shape, max_prior_shape
        Bounds of the pooled prior's shape (its weight in pseudo-conversions): at most 10,
        so a cold arm's prior never outweighs two weeks of its own data.
    platform_bias_cv
        Spread of the platform's over-count between campaigns (:func:`evidence_weight`).

    Attributes
    ----------
    arm_ids_ : list of str
    beta_ : float
    prior_shape_, prior_rate_ : float
        The pooled ``Gamma`` prior (shape, rate); ``nan`` when no arm has history.
    shape_, rate_ : ndarray
        Each arm's posterior.
    outcome_, exposure_ : ndarray
        Each arm's ``sum y`` (in model units) and ``sum spend ** beta``, both times its
        evidence weight.
    weight_ : ndarray
        Each arm's evidence weight (:func:`evidence_weight`; 1 for first-party outcomes).
    scale_ : float
        Outcome units per model unit (1 for conversions; mean value per conversion).
    has_data_ : bool
        Whether any arm had a learnable day with spend, and the account any outcome at all.
    """

    def __init__(
        self,
        beta: float | None = None,
        *,
        objective: str = "conversions",
        min_prior_shape: float = 0.5,
        max_prior_shape: float = 10.0,
        platform_bias_cv: float = PLATFORM_BIAS_CV,
    ) -> None:
        self.beta = beta
        self.objective = objective
        self.min_prior_shape = min_prior_shape
        self.max_prior_shape = max_prior_shape
        self.platform_bias_cv = platform_bias_cv

    def fit(self, history: Sequence[ArmState]) -> GammaPoissonArms:
        """Fit ``beta`` (unless fixed), the pooled prior and every arm's posterior."""
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        self.arm_ids_ = [a.campaign_id for a in history]
        self.beta_ = float(self.beta) if self.beta is not None else fit_beta(history)
        self.scale_ = 1.0
        if self.objective == "value":
            n = sum(float(arm_data(a)[1].sum()) for a in history)
            v = sum(float(arm_data(a, "value")[1].sum()) for a in history)
            self.scale_ = v / n if n > 0 and v > 0 else 1.0
        k = len(history)
        self.outcome_ = np.zeros(k)
        self.exposure_ = np.zeros(k)
        self.weight_ = np.array([evidence_weight(a, self.platform_bias_cv) for a in history])
        days = np.zeros(k, dtype=int)
        for i, arm in enumerate(history):
            s, y = arm_data(arm, self.objective)
            self.outcome_[i] = self.weight_[i] * y.sum() / self.scale_
            self.exposure_[i] = self.weight_[i] * (s**self.beta_).sum()
            days[i] = len(s)
        # spend with no outcome anywhere says nothing about which arm returns more
        self.has_data_ = bool((self.exposure_ > 0).any() and self.outcome_.sum() > 0)
        self.prior_shape_, self.prior_rate_ = self._pooled_prior(days)
        a0 = self.prior_shape_ if self.has_data_ else 1.0
        b0 = self.prior_rate_ if self.has_data_ else 1.0
        self.shape_ = a0 + self.outcome_
        self.rate_ = b0 + self.exposure_
        return self

    def _pooled_prior(self, days: npt.NDArray[np.int_]) -> tuple[float, float]:
        """Method of moments across arms with at least 3 learnable days."""
        ok = (self.exposure_ > 0) & (days >= 3)
        if not ok.any():
            ok = self.exposure_ > 0
        if not ok.any():
            return float("nan"), float("nan")
        th = self.outcome_[ok] / self.exposure_[ok]
        m = float(th.mean())
        if m <= 0:  # no arm converted yet: a weak prior at half a conversion over all exposure
            m = 0.5 / float(self.exposure_[ok].sum())
        if ok.sum() < 2:
            shape = self.min_prior_shape
        else:
            between = float(th.var(ddof=1)) - float((th / self.exposure_[ok]).mean())
            shape = m * m / between if between > 0 else self.max_prior_shape
        shape = float(np.clip(shape, self.min_prior_shape, self.max_prior_shape))
        return shape, shape / m

    @property
    def mean_(self) -> FloatArray:
        """Posterior mean of each arm's ``theta`` (model units)."""
        return np.asarray(self.shape_ / self.rate_, dtype=float)

    @property
    def cv_(self) -> FloatArray:
        """Posterior coefficient of variation of each arm's ``theta`` (``1 / sqrt(shape)``)."""
        return np.asarray(1.0 / np.sqrt(self.shape_), dtype=float)

    def sample(self, n: int, rng: np.random.Generator) -> FloatArray:
        """``n`` posterior draws of every arm's ``theta`` in outcome units, shape ``(n, arms)``."""
        draws = rng.gamma(
            self.shape_[None, :], 1.0 / self.rate_[None, :], size=(n, len(self.shape_))
        )
        return np.asarray(draws * self.scale_, dtype=float)


def water_fill(
    theta: FloatArray, beta: float, lo: FloatArray, hi: FloatArray, total: float
) -> FloatArray:
    """Maximise ``sum theta * x ** beta`` subject to ``lo <= x <= hi``, ``sum x = total``.

    Vectorised over rows of ``theta`` (shape ``(draws, arms)``). With ``beta < 1`` the optimum
    equalises marginal returns ``beta * theta * x ** (beta - 1) = lambda`` among arms not at a
    bound: ``x = clip((beta * theta / lambda) ** (1 / (1 - beta)), lo, hi)``, with ``lambda``
    found by bisection on the log scale. Requires ``sum lo <= total <= sum hi``.

    >>> import numpy as np
    >>> x = water_fill(np.array([[1.0, 1.0]]), 0.5, np.zeros(2), np.full(2, 10.0), 10.0)
    >>> x.round(6).tolist()
    [[5.0, 5.0]]
    """
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    p = 1.0 / (1.0 - beta)
    bt = np.maximum(beta * theta, 1e-300)

    def alloc(log_lam: FloatArray) -> FloatArray:
        x = np.exp(np.minimum(p * (np.log(bt) - log_lam[:, None]), 700.0))
        return np.asarray(np.clip(x, lo, hi), dtype=float)

    # bracket: lambda so large every arm is at lo, so small every arm is at hi
    log_bt = np.log(bt)
    top = log_bt.max(axis=1) - (np.log(np.maximum(lo, 1e-12)).min() / p) + 5.0
    bot = log_bt.min(axis=1) - np.log(max(float(hi.max()), 1e-12)) / p - 5.0
    for _ in range(80):
        mid = 0.5 * (top + bot)
        over = alloc(mid).sum(axis=1) > total
        bot = np.where(over, mid, bot)
        top = np.where(over, top, mid)
    x = alloc(0.5 * (top + bot))
    # put the bisection's last residual on the arms with room, in proportion to that room
    resid = total - x.sum(axis=1)
    room = np.where(resid[:, None] > 0, hi - x, x - lo)
    share = room / np.maximum(room.sum(axis=1, keepdims=True), 1e-300)
    return np.asarray(np.clip(x + resid[:, None] * share, lo, hi), dtype=float)
