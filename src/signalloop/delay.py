"""Delay models: how long after a click (or a lead) its conversion (or deal) arrives.

Every model here is fitted on **summarised survival data** (:class:`DelayData`): per group
(campaign), counts of events in delay buckets and counts of subjects still open at an elapsed
time, never per-click frames. A subject (a click, a CRM record) that has not converted by the
as-of time is **right-censored** at its elapsed time: it may still convert, so it is neither
a converter nor a non-converter.

Models follow the scikit-learn estimator contract: ``__init__`` only stores its arguments,
:meth:`~DelayModel.fit` returns ``self`` and sets attributes ending in ``_``, and randomness
comes only from ``random_state`` (or a generator passed in). They register by name in
:data:`DELAY_MODELS`; :func:`make_delay_model` builds one.

``lognormal_cure`` (:class:`LogNormalCure`)
    The mixture-cure model. A subject converts with probability ``p``; a converter's delay is
    LogNormal(``mu``, ``sigma``) with cdf ``F``. Fitted by maximum likelihood with
    right-censoring: an event in bucket ``[lo, hi)`` contributes ``p (F(hi) - F(lo))``, a
    subject still open at elapsed ``e`` contributes ``1 - p F(e)``. Then
    ``P(converts later | not yet at e) = p (1 - F(e)) / (1 - p F(e))``.

    With ``competing=True`` a second terminal outcome (a CRM ``lost`` row) is modelled too:
    non-converters (probability ``1 - p``) get a competing event with probability ``q`` and
    LogNormal(``mu2``, ``sigma2``) delay ``G``; a competing event contributes
    ``(1 - p) q (G(hi) - G(lo))`` and an open subject ``p (1 - F(e)) + (1 - p)(1 - q G(e))``,
    so ``P(converts later | open at e) = p (1 - F) / (p (1 - F) + (1 - p)(1 - q G))`` and a
    subject with a competing event never converts. That is the CRM choice: ``lost`` is a
    competing terminal outcome, not censoring (censored at its loss time, a dead record
    would keep being predicted to win) and not dropped (which would leave only the winners
    and the open among the closed records, and inflate ``p``).

    With ``shift=True`` the delay is ``shift + LogNormal(mu, sigma)`` (three parameters),
    for delays that are sums of stages.

``discrete_hazard`` (:class:`DiscreteHazard`)
    Nonparametric: an actuarial (Kaplan-Meier-style) discrete hazard per time bucket, with the
    competing outcome as a second hazard (Aalen-Johansen). It assumes nothing converts after
    the longest delay seen, so it under-predicts a tail longer than the data.

Partial pooling
---------------
Both models shrink each group toward the account (all groups together) in proportion to how
much the group's own data says. :class:`LogNormalCure` is **empirical Bayes on the
transformed parameters** ``theta = (logit p, mu, log sigma[, log shift][, logit q, mu2,
log sigma2])``:

1. fit the account (every group's data summed) by maximum likelihood: ``theta0``;
2. fit each group with a weak normal prior ``N(theta0, W^2)`` (``prior_scale``): ``theta_g``
   with covariance ``V_g``;
3. estimate the between-group spread by moments,
   ``T_j^2 = mean_g((theta_gj - theta0_j)^2 - V_gjj)``, kept within ``[min_scale^2, W^2]``
   (``W`` is used when fewer than three groups have events);
4. refit each group with the prior ``N(theta0, T^2)``: the posterior mode, which to second
   order is the precision-weighted mean ``(V_g^-1 theta_g + T^-2 theta0) / (V_g^-1 + T^-2)``,
   and its covariance (the inverse Hessian ``C_g``), plus the uncertainty of ``theta0``
   itself in the share the group leans on it, ``(C_g T^-2) cov(theta0) (C_g T^-2)'``
   (without it a fully pooled group would look as certain as the prior's floor).

A tiny campaign's ``V_g`` is large, so it lands near the account; a large one keeps its own
estimate. ``pooling_weight_`` is each parameter's share of posterior precision that comes
from the group's own data. :class:`DiscreteHazard` shrinks each bucket's hazard with a beta
prior of ``prior_strength`` pseudo-subjects at the account's hazard.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> data = simulate_delays(p=0.1, mu=3.0, sigma=1.0, n=20_000, horizon=(0, 200), rng=rng)
>>> m = LogNormalCure().fit(data)
>>> round(float(m.p_[0]), 2), round(float(m.mu_[0]), 1), round(float(m.sigma_[0]), 1)
(0.1, 3.0, 1.0)
"""

from __future__ import annotations

import copy
import inspect
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt
from scipy import optimize, sparse, special  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Group = int | str

__all__ = [
    "DELAY_MODELS",
    "DelayData",
    "DelayModel",
    "DiscreteHazard",
    "LogNormalCure",
    "interpolation",
    "make_delay_model",
    "simulate_delays",
]

_SQRT2PI = math.sqrt(2.0 * math.pi)
#: Log-time spacing of :meth:`LogNormalCure.grid` for a sigma of 1 or more (scaled down below)
GRID_STEP = 0.02
#: Groups from which :meth:`LogNormalCure.fit` fits a shifted model's groups on two processes
PARALLEL_GROUPS = 200
#: Rows (of every kind) of the groups whose Newton fits run together
#: (:meth:`LogNormalCure._map_all`): what a step's arrays hold while they stay in cache
BATCH_ROWS = 65_536


def _f64(x: Any) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


# ---- data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DelayData:
    """Summarised right-censored delay data of several groups, in one time unit.

    Every array is one row per bucket; ``*_group`` holds indexes into :attr:`groups`.

    Attributes
    ----------
    groups
        Group names (campaign ids), in index order.
    event_group, event_lo, event_hi, event_n
        Converted subjects: ``event_n`` of them had their delay in ``[event_lo, event_hi)``.
    censor_group, censor_t, censor_n
        Open subjects: ``censor_n`` of them are still unconverted at elapsed ``censor_t``.
    competing_group, competing_lo, competing_hi, competing_n
        Subjects that ended in the competing outcome (CRM ``lost``), delay in ``[lo, hi)``.
        Empty unless the path has one.
    unit
        The time unit of every delay (``"hours"``, ``"days"``).
    """

    groups: tuple[str, ...]
    event_group: IntArray
    event_lo: FloatArray
    event_hi: FloatArray
    event_n: FloatArray
    censor_group: IntArray
    censor_t: FloatArray
    censor_n: FloatArray
    competing_group: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    competing_lo: FloatArray = field(default_factory=lambda: np.zeros(0))
    competing_hi: FloatArray = field(default_factory=lambda: np.zeros(0))
    competing_n: FloatArray = field(default_factory=lambda: np.zeros(0))
    unit: str = "hours"

    @classmethod
    def build(
        cls,
        groups: Sequence[str],
        events: tuple[Any, Any, Any, Any],
        censored: tuple[Any, Any, Any],
        competing: tuple[Any, Any, Any, Any] | None = None,
        unit: str = "hours",
    ) -> DelayData:
        """Build from ``(group_index, lo, hi, n)`` and ``(group_index, t, n)`` arrays.

        Rows with a zero count are dropped; negative counts or times are an error.
        """

        def clean(arrs: tuple[Any, ...], n_col: int) -> list[Any]:
            cols = [np.asarray(a) for a in arrs]
            n = _f64(cols[n_col])
            if np.any(n < 0) or any(np.any(_f64(c) < 0) for c in cols[1:n_col]):
                raise ValueError("delay data: counts and times must not be negative")
            keep = n > 0
            return [
                cols[0][keep].astype(np.int64),
                *(_f64(c)[keep] for c in cols[1:]),
            ]

        ev = clean(events, 3)
        ce = clean(censored, 2)
        empty: list[Any] = [np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0)]
        co = clean(competing, 3) if competing is not None else empty
        k = len(groups)
        for g in (ev[0], ce[0], co[0]):
            if len(g) and (g.min() < 0 or g.max() >= k):
                raise ValueError("delay data: a group index is outside the groups given")
        if np.any(ev[2] <= ev[1]) or np.any(co[2] <= co[1]):
            raise ValueError("delay data: every bucket needs hi > lo")
        return cls(
            groups=tuple(groups),
            event_group=ev[0],
            event_lo=ev[1],
            event_hi=ev[2],
            event_n=ev[3],
            censor_group=ce[0],
            censor_t=ce[1],
            censor_n=ce[2],
            competing_group=co[0],
            competing_lo=co[1],
            competing_hi=co[2],
            competing_n=co[3],
            unit=unit,
        )

    @property
    def has_competing(self) -> bool:
        """Whether any competing outcome is recorded."""
        return bool(len(self.competing_n))

    def select(self, g: int) -> DelayData:
        """Only group ``g`` (as the single group 0)."""
        return self._filtered(lambda idx: idx == g, (self.groups[g],))

    def _take(
        self, groups: tuple[str, ...], e: Any, c: Any, o: Any, first: int | None
    ) -> DelayData:
        """Rows ``e``, ``c``, ``o`` (indexes, slices or masks) of each kind as data of
        ``groups``: each row's group less ``first``, or 0 for every row (``first`` None)."""

        def group(g: IntArray) -> IntArray:
            return np.zeros(len(g), np.int64) if first is None else g - first

        return DelayData(
            groups,
            group(self.event_group[e]),
            self.event_lo[e],
            self.event_hi[e],
            self.event_n[e],
            group(self.censor_group[c]),
            self.censor_t[c],
            self.censor_n[c],
            group(self.competing_group[o]),
            self.competing_lo[o],
            self.competing_hi[o],
            self.competing_n[o],
            unit=self.unit,
        )

    def by_group(self) -> DelayData:
        """The same rows, each kind's sorted by group (each group's in their own order)."""
        e, c, o = (
            np.argsort(g, kind="stable")
            for g in (self.event_group, self.censor_group, self.competing_group)
        )
        return self._take(self.groups, e, c, o, 0)

    def runs(self, max_rows: int) -> list[tuple[IntArray, DelayData]]:
        """The groups cut into runs of consecutive groups of at most ``max_rows`` rows in all
        (a group with more alone), each with its rows as a :class:`DelayData` of its own
        (groups numbered from 0); the rows must be sorted by group (:meth:`by_group`)."""
        k = len(self.groups)
        kinds = (self.event_group, self.censor_group, self.competing_group)
        bounds = [np.searchsorted(g, np.arange(k + 1)) for g in kinds]
        per_group = np.diff(bounds[0]) + np.diff(bounds[1]) + np.diff(bounds[2])
        out: list[tuple[IntArray, DelayData]] = []
        start = 0
        while start < k:
            end, rows = start + 1, int(per_group[start])
            while end < k and rows + int(per_group[end]) <= max_rows:
                rows += int(per_group[end])
                end += 1
            e, c, o = (slice(int(b[start]), int(b[end])) for b in bounds)
            part = self._take(self.groups[start:end], e, c, o, start)
            out.append((np.arange(start, end, dtype=np.int64), part))
            start = end
        return out

    def split(self) -> list[DelayData]:
        """:meth:`select` of every group, in group order, in one pass over the rows.

        >>> events = ([1, 0, 1, 0], [0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], [1, 2, 3, 4])
        >>> d = DelayData.build(["a", "b"], events, ([0, 1], [5.0, 6.0], [7, 8]))
        >>> [x.event_lo.tolist() for x in d.split()]
        [[1.0, 3.0], [0.0, 2.0]]
        >>> [x.censor_t.tolist() for x in d.split()], d.select(1).censor_t.tolist()
        ([[5.0], [6.0]], [6.0])
        """
        k = len(self.groups)

        def cuts(idx: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], list[int]]:
            order = np.argsort(idx, kind="stable")  # each group's rows in their own order
            bounds = np.searchsorted(idx[order], np.arange(k + 1))
            return order, bounds.tolist()

        (eo, eb), (co, cb), (oo, ob) = (
            cuts(x) for x in (self.event_group, self.censor_group, self.competing_group)
        )
        out = []
        for g in range(k):
            e, c, o = eo[eb[g] : eb[g + 1]], co[cb[g] : cb[g + 1]], oo[ob[g] : ob[g + 1]]
            out.append(self._take((self.groups[g],), e, c, o, None))
        return out

    def pooled(self) -> DelayData:
        """Every group merged into one (the account), identical buckets summed.

        The likelihood only depends on each distinct bucket's count, so summing them changes
        nothing but the work: a thousand campaigns' hourly cohorts share the same few
        thousand elapsed times.

        >>> events = ([0, 1, 1], [0.0, 0.0, 1.0], [1.0, 1.0, 2.0], [1, 2, 3])
        >>> d = DelayData.build(["a", "b"], events, ([0, 1], [5.0, 5.0], [7, 8])).pooled()
        >>> d.event_lo.tolist(), d.event_n.tolist(), d.censor_t.tolist(), d.censor_n.tolist()
        ([0.0, 1.0], [3.0, 3.0], [5.0], [15.0])
        """

        def merged(keys: list[FloatArray], n: FloatArray) -> list[FloatArray]:
            if not len(n):
                return [*keys, n]
            order = np.lexsort(keys[::-1])
            sk = [k[order] for k in keys]
            new = np.ones(len(n), bool)
            new[1:] = np.any([k[1:] != k[:-1] for k in sk], axis=0)
            starts = np.flatnonzero(new)
            return [*(k[starts] for k in sk), _f64(np.add.reduceat(n[order], starts))]

        e = merged([self.event_lo, self.event_hi], self.event_n)
        c = merged([self.censor_t], self.censor_n)
        o = merged([self.competing_lo, self.competing_hi], self.competing_n)
        return DelayData(
            ("(account)",),
            np.zeros(len(e[0]), np.int64),
            e[0],
            e[1],
            e[2],
            np.zeros(len(c[0]), np.int64),
            c[0],
            c[1],
            np.zeros(len(o[0]), np.int64),
            o[0],
            o[1],
            o[2],
            unit=self.unit,
        )

    def _filtered(self, keep: Any, groups: tuple[str, ...]) -> DelayData:
        e, c, o = keep(self.event_group), keep(self.censor_group), keep(self.competing_group)
        return self._take(groups, e, c, o, None)

    def totals(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Per group: events, censored subjects, competing events."""
        k = len(self.groups)
        return (
            _f64(np.bincount(self.event_group, self.event_n, minlength=k)),
            _f64(np.bincount(self.censor_group, self.censor_n, minlength=k)),
            _f64(np.bincount(self.competing_group, self.competing_n, minlength=k)),
        )


def simulate_delays(
    *,
    p: float,
    mu: float,
    sigma: float,
    n: int,
    horizon: tuple[float, float],
    rng: np.random.Generator,
    bucket: float = 1.0,
    group: str = "g",
) -> DelayData:
    """Synthetic mixture-cure data: ``n`` subjects observed for Uniform(``horizon``) time.

    Each subject converts with probability ``p`` after LogNormal(``mu``, ``sigma``); what has
    not happened by its observation time is censored there. Delays are bucketed by
    ``bucket``; censoring times are bucketed the same way and put at the bucket middle.

    >>> d = simulate_delays(p=0.5, mu=1.0, sigma=0.5, n=100, horizon=(0, 10),
    ...                     rng=np.random.default_rng(1))
    >>> float(d.event_n.sum() + d.censor_n.sum())
    100.0
    """
    obs = rng.uniform(*horizon, n)
    conv = rng.random(n) < p
    delay = np.exp(mu + sigma * rng.normal(size=n))
    seen = conv & (delay < obs)
    ev_b = np.floor(delay[seen] / bucket)
    ce_b = np.floor(obs[~seen] / bucket)
    ev_u, ev_n = np.unique(ev_b, return_counts=True)
    ce_u, ce_n = np.unique(ce_b, return_counts=True)
    return DelayData.build(
        [group],
        (np.zeros(len(ev_u), np.int64), ev_u * bucket, (ev_u + 1) * bucket, ev_n),
        (np.zeros(len(ce_u), np.int64), (ce_u + 0.5) * bucket, ce_n),
    )


# ---- the estimator contract -------------------------------------------------------------------


class DelayModel(ABC):
    """Base of the delay models: the estimator contract and the prediction interface.

    Subclasses implement :meth:`fit` and :meth:`_curves`; every prediction accepts a group
    (index or name) and returns one row per parameter draw (one row, the point estimate, when
    ``n_draws`` is 0).
    """

    name: ClassVar[str] = ""
    groups_: tuple[str, ...]
    unit_: str

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, as given."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self"}

    def set_params(self, **params: Any) -> Self:
        """Set constructor arguments (call :meth:`fit` again afterwards)."""
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {k!r}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    @abstractmethod
    def fit(self, data: DelayData) -> Self:
        """Fit to ``data``; return ``self`` with the learned attributes (ending in ``_``) set."""

    def _rng(self, rng: np.random.Generator | None) -> np.random.Generator:
        if rng is not None:
            return rng
        return np.random.default_rng(getattr(self, "random_state", None))

    def group_index(self, group: Group) -> int:
        """The index of ``group`` (an index or a name)."""
        if isinstance(group, str):
            try:
                return self.groups_.index(group)
            except ValueError:
                raise KeyError(f"delay model has no group {group!r}") from None
        return int(group)

    @abstractmethod
    def _curves(
        self, g: int, t: FloatArray, n_draws: int, rng: np.random.Generator | None
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """``(incidence, future, eventual)``: shapes (S, n), (S, n), (S,)."""

    def incidence(
        self,
        group: Group,
        t: Any,
        *,
        n_draws: int = 0,
        rng: np.random.Generator | None = None,
    ) -> FloatArray:
        """P(converted by elapsed ``t``), shape ``(max(n_draws, 1), len(t))``."""
        return self._curves(self.group_index(group), _f64(np.atleast_1d(t)), n_draws, rng)[0]

    def future_probability(
        self,
        group: Group,
        t: Any,
        *,
        n_draws: int = 0,
        rng: np.random.Generator | None = None,
    ) -> FloatArray:
        """P(converts later | still open at elapsed ``t``), shape ``(max(n_draws, 1), len(t))``."""
        return self._curves(self.group_index(group), _f64(np.atleast_1d(t)), n_draws, rng)[1]

    def curves(
        self,
        group: Group,
        t: Any,
        *,
        n_draws: int = 0,
        rng: np.random.Generator | None = None,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """:meth:`incidence`, :meth:`future_probability` and :meth:`eventual` from one draw set.

        Returns
        -------
        incidence, future : ndarray of shape (S, len(t))
        eventual : ndarray of shape (S,)
            ``S = max(n_draws, 1)``; with ``n_draws=0`` the single row is the point estimate.
        """
        return self._curves(self.group_index(group), _f64(np.atleast_1d(t)), n_draws, rng)

    def curves_by_point(
        self, group: Group, t: Any, *, n_draws: int, rng: np.random.Generator | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """:meth:`curves`' incidence and future, transposed: C-ordered ``(len(t), S)``, the
        layout a sparse map's product ``M @ curve`` reads without copying (the same values
        and the same draws as :meth:`curves`; a model may compute them in that layout)."""
        inc, fut, _ = self.curves(group, t, n_draws=n_draws, rng=rng)
        return np.ascontiguousarray(inc.T), np.ascontiguousarray(fut.T)

    def eventual(
        self, group: Group, *, n_draws: int = 0, rng: np.random.Generator | None = None
    ) -> FloatArray:
        """P(converts eventually), shape ``(max(n_draws, 1),)``."""
        return self._curves(self.group_index(group), np.zeros(1), n_draws, rng)[2]

    def daily_cdf(
        self,
        group: Group,
        days: int,
        *,
        hours: Any = None,
        n_draws: int = 0,
        rng: np.random.Generator | None = None,
    ) -> FloatArray:
        """Share of a converter's delay over by each day's end, for a click at an unknown hour.

        For clicks made on day 0 with ``hours`` the share in each hour of the day (24
        weights, uniform when ``None``), column ``m`` (``0 .. days``) is the probability that
        a click which converts eventually has converted within ``m`` day boundaries, i.e. by
        the end of day ``m - 1``: the cdf normalised by the eventual probability, averaged
        over the click hours (``sum_h hours_h F(24 m - h - 1/2)``; 0 for ``m = 0``).
        ``daily_cdf[:, k + 1] - daily_cdf[:, k]`` is the share converting on day ``k`` after
        the click day. Needs a model in hours or days.

        >>> m = LogNormalCure()
        >>> m.theta_, m.cov_, m.groups_, m.unit_ = np.array([[0.0, np.log(24.0), 0.5]]), \\
        ...     np.zeros((1, 3, 3)), ("a",), "hours"
        >>> g = m.daily_cdf("a", 3)
        >>> [round(float(x), 3) for x in g[0]]
        [0.0, 0.307, 0.592, 0.709]

        Returns
        -------
        ndarray of shape (max(n_draws, 1), days + 1)
        """
        per_hour = {"hours": 1.0, "days": 1 / 24}.get(self.unit_)
        if per_hour is None:
            raise ValueError(f"daily_cdf needs a model in hours or days, not {self.unit_!r}")
        t = (np.arange(24 * days) + 0.5) * per_hour
        inc, _, eventual = self.curves(group, t, n_draws=n_draws, rng=rng)
        f = inc / np.maximum(eventual, 1e-300)[:, None]
        w = np.full(24, 1 / 24) if hours is None else _f64(hours) / float(np.sum(hours))
        # hour q of each block of 24 is the elapsed time of a click made at hour 23 - q
        by_day = (f.reshape(len(f), days, 24) * w[::-1]).sum(axis=2)
        return _f64(np.concatenate([np.zeros((len(f), 1)), by_day], axis=1))

    def grid(self, group: Group, t: Any) -> FloatArray:
        """Points whose curves give every ``t``'s by linear interpolation in ``log t``.

        The base class returns ``t``'s distinct values: exact. A smooth model returns fewer
        points where ``t`` is dense (see :meth:`LogNormalCure.grid`), so that draws over
        thousands of elapsed times cost draws over a few hundred; :func:`interpolation`
        maps the grid's curves back to sums over the times.
        """
        return np.unique(_f64(np.atleast_1d(t)))

    @abstractmethod
    def new_group(self, name: str = "(new)") -> Self:
        """A fitted copy with one group ``name``: the prediction for a group with no data.

        For a campaign whose own delays are never observed (its conversions carry no click
        time): the account's fit, with the uncertainty of a group drawn from the account
        (the between-group spread) in its parameter draws.
        """

    @abstractmethod
    def quantile(self, group: Group, q: float) -> float:
        """The ``q`` quantile of the delay of converters (in the data's unit)."""

    def describe(self, group: Group) -> dict[str, Any]:
        """A JSON-ready summary of one group's fit: ``p50``, ``p90``, ``model``, ..."""
        return {
            "model": self.name,
            "unit": self.unit_,
            "p50": _round(self.quantile(group, 0.5)),
            "p90": _round(self.quantile(group, 0.9)),
            "eventual": _round(float(self.eventual(group)[0]), 5),
        }


def _round(x: float, nd: int = 2) -> float | None:
    return round(float(x), nd) if math.isfinite(x) else None


def interpolation(
    grid: FloatArray, t: Any, weight: Any, row: Any, n_rows: int
) -> sparse.csr_matrix:
    """Sparse ``(n_rows, len(grid))`` map from curves on ``grid`` to weighted sums over ``t``.

    Row ``row[i]`` gets ``weight[i]`` times the linear interpolation (in ``log t``) of the
    grid's values at ``t[i]``; ``curve @ M.T`` is then the per-row sum
    ``sum_i weight_i * curve(t_i)``. ``t`` must lie inside the grid; a ``t`` on a grid point
    (and every ``t <= 0``) takes that point's value exactly.

    >>> g = np.array([0.0, 1.0, 2.0, 4.0])
    >>> m = interpolation(g, [0.0, 2.0, np.sqrt(8.0)], [1.0, 1.0, 2.0], [0, 0, 1], 2)
    >>> np.round(m.toarray(), 3).tolist()
    [[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]]
    """
    tt, wt = _f64(np.atleast_1d(t)), _f64(np.atleast_1d(weight))
    i = np.clip(np.searchsorted(grid, tt, side="right") - 1, 0, len(grid) - 1)
    on = grid[i] == tt
    j = np.minimum(i + 1, len(grid) - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        up = (np.log(tt) - np.log(grid[i])) / (np.log(grid[j]) - np.log(grid[i]))
    up = np.where(on, 0.0, np.clip(np.nan_to_num(up), 0.0, 1.0))
    rows = np.r_[row, row]
    cols = np.r_[i, j]
    vals = np.r_[wt * (1.0 - up), wt * up]
    return sparse.csr_matrix((vals, (rows, cols)), shape=(n_rows, len(grid)))


# ---- the mixture-cure log-normal model ---------------------------------------------------------


def _lncdf(
    t: FloatArray, mu: Any, s: Any, ls: Any = None
) -> tuple[FloatArray, list[FloatArray], Any]:
    """LogNormal cdf at ``t`` and its derivatives in ``(mu, s = log sigma[, ls = log shift])``.

    With ``ls`` the delay is ``shift + LogNormal(mu, sigma)`` (the three-parameter lognormal).
    Also returns ``z`` (``-inf`` below the shift, ``inf`` at ``t = inf``). Broadcasts.
    """
    sigma = np.exp(s)
    shift = np.exp(ls) if ls is not None else 0.0
    x = np.maximum(t - shift, 0.0)
    with np.errstate(divide="ignore"):
        z = (np.log(x) - mu) / sigma
    cdf = special.ndtr(z)
    finite = np.isfinite(z)
    zf = np.where(finite, np.clip(z, -40.0, 40.0), 40.0)
    dens = np.where(finite, np.exp(-0.5 * zf * zf) / _SQRT2PI, 0.0)
    grads = [-dens / sigma, -dens * np.where(finite, zf, 0.0)]
    if ls is not None:
        safe = np.where(finite & (x > 0), x, 1.0)
        grads.append(np.where(finite & (x > 0), dens * shift / (sigma * safe), 0.0))
    return cdf, grads, z


def _cdf(t: FloatArray, mu: Any, s: Any, ls: Any = None) -> FloatArray:
    """LogNormal cdf at ``t`` (0 at ``t <= shift``). Broadcasts."""
    shift = np.exp(ls) if ls is not None else 0.0
    with np.errstate(divide="ignore"):
        z = (np.log(np.maximum(t - shift, 0.0)) - mu) / np.exp(s)
    return _f64(special.ndtr(z))


def _lndiff(
    lo: FloatArray, hi: FloatArray, mu: float, s: float, ls: float | None = None
) -> tuple[FloatArray, list[FloatArray]]:
    """``F(hi) - F(lo)`` (computed in the tail that keeps precision) and its derivatives."""
    f_lo, g_lo, z_lo = _lncdf(lo, mu, s, ls)
    f_hi, g_hi, z_hi = _lncdf(hi, mu, s, ls)
    upper = z_lo > 0
    diff = np.where(upper, special.ndtr(-z_lo) - special.ndtr(-z_hi), f_hi - f_lo)
    return np.maximum(diff, 1e-300), [h - low for h, low in zip(g_hi, g_lo, strict=True)]


def _dot(a: FloatArray, b: Any) -> float:
    """``a . b`` without BLAS (OpenBLAS threads fight DuckDB's for the cores)."""
    return float(np.add.reduce(a * b))


def _sigmoid(x: Any) -> Any:
    return special.expit(x)


def _neg_log_post(
    theta: FloatArray,
    d: DelayData,
    competing: bool,
    shift: bool,
    prior_mean: FloatArray,
    prior_scale: FloatArray,
) -> tuple[float, FloatArray]:
    """Negative log posterior of one group's data (all of ``d``) and its gradient.

    ``theta = (logit p, mu, log sigma[, log shift][, logit q, mu2, log sigma2])``.
    """
    p = float(_sigmoid(theta[0]))
    main = [1, 2, 3] if shift else [1, 2]
    fpar = (theta[1], theta[2], theta[3] if shift else None)
    cb = len(main) + 1  # the competing block
    grad = np.zeros_like(theta)
    ll = 0.0
    # converters: log p + log(F(hi) - F(lo))
    if len(d.event_n):
        diff, dd = _lndiff(d.event_lo, d.event_hi, *fpar)
        n = d.event_n
        ll += float(n.sum()) * math.log(max(p, 1e-300)) + _dot(n, np.log(diff))
        grad[0] += float(n.sum()) * (1.0 - p)
        for j, dj in zip(main, dd, strict=True):
            grad[j] += _dot(n, dj / diff)
    # open subjects
    if len(d.censor_n):
        n = d.censor_n
        f, fd, _ = _lncdf(d.censor_t, *fpar)
        if competing:
            q = float(_sigmoid(theta[cb]))
            g, gd, _ = _lncdf(d.censor_t, theta[cb + 1], theta[cb + 2])
            like = np.maximum(p * (1 - f) + (1 - p) * (1 - q * g), 1e-300)
            w = n / like
            grad[0] += _dot(w, p * (1 - p) * (q * g - f))
            grad[cb] += _dot(w, -(1 - p) * q * (1 - q) * g)
            for j, dj in zip((cb + 1, cb + 2), gd, strict=True):
                grad[j] += _dot(w, -(1 - p) * q * dj)
        else:
            like = np.maximum(1 - p * f, 1e-300)
            w = n / like
            grad[0] += _dot(w, -p * (1 - p) * f)
        ll += _dot(n, np.log(like))
        for j, dj in zip(main, fd, strict=True):
            grad[j] += _dot(w, -p * dj)
    # competing outcome: log(1 - p) + log q + log(G(hi) - G(lo))
    if competing and len(d.competing_n):
        q = float(_sigmoid(theta[cb]))
        diff, dd = _lndiff(d.competing_lo, d.competing_hi, theta[cb + 1], theta[cb + 2])
        n = d.competing_n
        tot = float(n.sum())
        ll += tot * (math.log(max(1 - p, 1e-300)) + math.log(max(q, 1e-300)))
        ll += _dot(n, np.log(diff))
        grad[0] += -tot * p
        grad[cb] += tot * (1 - q)
        for j, dj in zip((cb + 1, cb + 2), dd, strict=True):
            grad[j] += _dot(n, dj / diff)
    z = (theta - prior_mean) / prior_scale
    value = -ll + 0.5 * _dot(z, z)
    return value, -grad + z / prior_scale


def _lncdf2(t: FloatArray, mu: Any, s: Any) -> tuple[FloatArray, Any, Any, FloatArray]:
    """LogNormal cdf at ``t``, its first and second derivatives in ``(mu, s = log sigma)``.

    ``mu`` and ``s`` are numbers or one per row of ``t``. ``(cdf, [F_mu, F_s], [F_mu_mu,
    F_mu_s, F_s_s], z)``; every derivative is 0 where ``z`` is infinite (``t = 0`` or
    ``t = inf``).
    """
    sigma = np.exp(s)
    with np.errstate(divide="ignore"):
        z = (np.log(t) - mu) / sigma
    cdf = special.ndtr(z)
    finite = np.isfinite(z)
    zf = np.where(finite, np.clip(z, -40.0, 40.0), 0.0)
    dens = np.where(finite, np.exp(-0.5 * zf * zf) / _SQRT2PI, 0.0)
    dz = dens * zf
    first = [-dens / sigma, -dz]
    second = [-dz / sigma**2, (dens - dz * zf) / sigma, dz * (1.0 - zf * zf)]
    return cdf, first, second, z


def _lndiff2(lo: FloatArray, hi: FloatArray, mu: Any, s: Any) -> tuple[FloatArray, Any, Any]:
    """``D = F(hi) - F(lo)`` (in the tail that keeps precision), ``[D_mu, D_s]`` and
    ``[D_mu_mu, D_mu_s, D_s_s]``."""
    f_lo, g_lo, h_lo, z_lo = _lncdf2(lo, mu, s)
    f_hi, g_hi, h_hi, z_hi = _lncdf2(hi, mu, s)
    diff = np.where(z_lo > 0, special.ndtr(-z_lo) - special.ndtr(-z_hi), f_hi - f_lo)
    first = [a - b for a, b in zip(g_hi, g_lo, strict=True)]
    second = [a - b for a, b in zip(h_hi, h_lo, strict=True)]
    return np.maximum(diff, 1e-300), first, second


#: Index pairs ``(j, k)`` of :func:`_lncdf2`'s second derivatives
_PAIRS = ((0, 0), (0, 1), (1, 1))


class _Rows:
    """The rows of one kind a step reads (each one's ``group`` of ``n_groups``), and per
    group the sum of a term over them."""

    def __init__(self, group: IntArray, n_groups: int) -> None:
        self.group, self.n = group, n_groups
        self.starts: IntArray | None = None  # rows sorted by group: where each group's begin
        if n_groups > 1 and len(group) and bool(np.all(group[1:] >= group[:-1])):
            self.starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])

    def total(self, x: FloatArray) -> FloatArray:
        """Per group, the sum of ``x`` (one value per row) over its rows."""
        if self.n == 1:  # one group: a plain sum (no BLAS: its threads fight DuckDB's)
            return _f64([np.add.reduce(x)])
        if self.starts is None:
            return _f64(np.bincount(self.group, weights=x, minlength=self.n))
        out = np.zeros(self.n)
        out[self.group[self.starts]] = np.add.reduceat(x, self.starts)  # contiguous sums
        return out


class _Sums:
    """A batch's log likelihoods, gradients and Hessians (``(G,)``, ``(G, k)``,
    ``(G, k, k)``), each group's from its own rows only."""

    def __init__(self, n_groups: int, k: int) -> None:
        self.grad = np.zeros((n_groups, k))
        self.hess = np.zeros((n_groups, k, k))
        self.ll = np.zeros(n_groups)

    def log_sum(
        self,
        rows: _Rows,
        n: FloatArray,
        like: FloatArray,
        first: dict[int, FloatArray],
        second: dict[tuple[int, int], FloatArray],
    ) -> None:
        """Add ``sum(n * log(like))`` per group, its gradient and Hessian, given ``like``'s
        derivatives: ``first`` maps a parameter index to ``d like``, ``second`` an index pair
        ``(j <= k)`` to ``d2 like`` (absent pairs are zero)."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # like >= 1e-300
            w = n / like
            ww = w / like
            self.ll += rows.total(n * np.log(like))
        for j, dj in first.items():
            self.grad[:, j] += rows.total(w * dj)
        idx = sorted(first)
        for a, j in enumerate(idx):
            for k in idx[a:]:
                v = -rows.total(ww * first[j] * first[k])
                if (j, k) in second:
                    v += rows.total(w * second[(j, k)])
                self.hess[:, j, k] += v
                if j != k:
                    self.hess[:, k, j] += v


def _neg_log_post_hess(
    theta: FloatArray,
    d: DelayData,
    competing: bool,
    prior_mean: FloatArray,
    prior_scale: FloatArray,
    groups: npt.NDArray[np.bool_] | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """:func:`_neg_log_post` without a shift, and its exact Hessian, of every group at once.

    ``theta`` is ``(n_groups, k)``, a row ``(logit p, mu, log sigma[, logit q, mu2, log
    sigma2])`` per group of ``d``. Returns each group's value ``(n_groups,)``, gradient
    ``(n_groups, k)`` and Hessian ``(n_groups, k, k)``; with ``groups`` (a mask) only those
    groups' rows are read (the others' results are then their prior's alone).
    """
    n_groups, k = theta.shape
    s = _Sums(n_groups, k)

    def rows(group: IntArray) -> Any:
        return slice(None) if groups is None else groups[group]

    def read(group: IntArray) -> _Rows:
        return _Rows(group, n_groups)

    def per_row(x: FloatArray, group: IntArray) -> Any:
        """``x`` (one value per group) for each row of ``group`` (a number for one group)."""
        return x[0] if n_groups == 1 else x[group]

    p = _f64(_sigmoid(theta[:, 0]))
    dp, ddp = p * (1 - p), p * (1 - p) * (1 - 2 * p)
    mu, ls = theta[:, 1], theta[:, 2]
    if len(d.event_n):
        r = rows(d.event_group)
        ge, n = d.event_group[r], d.event_n[r]
        diff, dd, hd = _lndiff2(d.event_lo[r], d.event_hi[r], per_row(mu, ge), per_row(ls, ge))
        on = read(ge)
        tot = on.total(n)
        s.ll += tot * np.log(np.maximum(p, 1e-300))
        s.grad[:, 0] += tot * (1.0 - p)
        s.hess[:, 0, 0] -= tot * dp
        second = {(j + 1, kk + 1): h for (j, kk), h in zip(_PAIRS, hd, strict=True)}
        s.log_sum(on, n, diff, {1: dd[0], 2: dd[1]}, second)
    if len(d.censor_n):
        r = rows(d.censor_group)
        gc, n = d.censor_group[r], d.censor_n[r]
        pr, dpr, ddpr = per_row(p, gc), per_row(dp, gc), per_row(ddp, gc)
        f, fd, fh, _ = _lncdf2(d.censor_t[r], per_row(mu, gc), per_row(ls, gc))
        second = {(j + 1, kk + 1): -pr * h for (j, kk), h in zip(_PAIRS, fh, strict=True)}
        first = {1: -pr * fd[0], 2: -pr * fd[1]}
        second[(0, 1)], second[(0, 2)] = -dpr * fd[0], -dpr * fd[1]
        if competing:
            q = per_row(_f64(_sigmoid(theta[:, 3])), gc)
            dq, ddq = q * (1 - q), q * (1 - q) * (1 - 2 * q)
            g, gd, gh, _ = _lncdf2(
                d.censor_t[r], per_row(theta[:, 4], gc), per_row(theta[:, 5], gc)
            )
            like = np.maximum(pr * (1 - f) + (1 - pr) * (1 - q * g), 1e-300)
            first[0] = dpr * (q * g - f)
            first[3] = -(1 - pr) * dq * g
            first[4], first[5] = -(1 - pr) * q * gd[0], -(1 - pr) * q * gd[1]
            second[(0, 0)] = ddpr * (q * g - f)
            second[(0, 3)] = dpr * dq * g
            second[(0, 4)], second[(0, 5)] = dpr * q * gd[0], dpr * q * gd[1]
            second[(3, 3)] = -(1 - pr) * ddq * g
            second[(3, 4)], second[(3, 5)] = -(1 - pr) * dq * gd[0], -(1 - pr) * dq * gd[1]
            for (j, kk), h in zip(_PAIRS, gh, strict=True):
                second[(j + 4, kk + 4)] = -(1 - pr) * q * h
        else:
            like = np.maximum(1 - pr * f, 1e-300)
            first[0] = -dpr * f
            second[(0, 0)] = -ddpr * f
        s.log_sum(read(gc), n, like, first, second)
    if competing and len(d.competing_n):
        r = rows(d.competing_group)
        go, n = d.competing_group[r], d.competing_n[r]
        q_all = _f64(_sigmoid(theta[:, 3]))
        mu2, ls2 = per_row(theta[:, 4], go), per_row(theta[:, 5], go)
        diff, dd, hd = _lndiff2(d.competing_lo[r], d.competing_hi[r], mu2, ls2)
        on = read(go)
        tot = on.total(n)
        s.ll += tot * (np.log(np.maximum(1 - p, 1e-300)) + np.log(np.maximum(q_all, 1e-300)))
        s.grad[:, 0] -= tot * p
        s.grad[:, 3] += tot * (1 - q_all)
        s.hess[:, 0, 0] -= tot * dp
        s.hess[:, 3, 3] -= tot * q_all * (1 - q_all)
        second = {(j + 4, kk + 4): h for (j, kk), h in zip(_PAIRS, hd, strict=True)}
        s.log_sum(on, n, diff, {4: dd[0], 5: dd[1]}, second)
    z = (theta - prior_mean) / prior_scale
    value = -s.ll + 0.5 * np.sum(z * z, axis=1)
    return value, -s.grad + z / prior_scale, -s.hess + np.diag(1.0 / prior_scale**2)


def _newton(
    fun: Any, x0: FloatArray, max_iter: int = 60
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Minimise many independent problems by damped Newton steps, all at once.

    ``x0`` is ``(n, k)``, one start per problem; ``fun(x, which)`` returns the value ``(n,)``,
    gradient ``(n, k)`` and Hessian ``(n, k, k)`` of every problem at ``x``, exact for those
    in the mask ``which``. Each problem takes its own steps: the Hessian's eigenvalues in
    absolute value (floored), so a step is always a descent direction; the step halved until
    the value drops enough (Armijo); stopped when the Newton decrement ``g' H^-1 g`` is below
    ``1e-14 * max(1, |f|)``. Returns the minima, the Hessians there and whether each
    converged. The work of a step is array work over the rows of the problems still moving,
    not a Python loop per problem.
    """
    x = _f64(x0).copy()
    n = len(x)
    f, g, h = fun(x, None)
    moving = np.ones(n, dtype=bool)
    ok = np.zeros(n, dtype=bool)
    for _ in range(max_iter):
        at = np.nonzero(moving)[0]
        if not len(at):
            break
        sym = 0.5 * (h[at] + np.swapaxes(h[at], 1, 2))
        vals, vecs = np.linalg.eigh(sym)
        vals = np.maximum(np.abs(vals), 1e-8)
        coef = np.einsum("nji,nj->ni", vecs, g[at]) / vals
        step = -np.einsum("nij,nj->ni", vecs, coef)
        dec = -np.sum(g[at] * step, axis=1)
        done = dec <= 1e-14 * np.maximum(1.0, np.abs(f[at]))
        moving[at[done]], ok[at[done]] = False, True
        at, step, dec = at[~done], step[~done], dec[~done]
        t = np.ones(len(at))
        look = np.arange(len(at))  # positions in `at` still halving their step
        while len(look):
            who = at[look]
            trial = x.copy()
            trial[who] = x[who] + t[look, None] * step[look]
            mask = np.zeros(n, dtype=bool)
            mask[who] = True
            with np.errstate(invalid="ignore"):
                fn, gn, hn = fun(trial, mask)
            fn, gn, hn = fn[who], gn[who], hn[who]
            finite = (
                np.isfinite(fn) & np.isfinite(gn).all(axis=1) & np.isfinite(hn).all(axis=(1, 2))
            )
            good = finite & (fn <= f[who] - 1e-4 * t[look] * dec[look])
            took = who[good]
            x[took], f[took], g[took], h[took] = trial[took], fn[good], gn[good], hn[good]
            rest = look[~good]
            t[rest] *= 0.5
            short = t[rest] < 1e-10
            stop = rest[short]  # no step lowers it: stays where it is
            moving[at[stop]] = False
            ok[at[stop]] = dec[stop] <= 1e-8 * np.maximum(1.0, np.abs(f[at[stop]]))
            look = rest[~short]
    return x, h, ok


@dataclass
class _Fit:
    theta: FloatArray
    cov: FloatArray
    converged: bool


def _map_chunk(
    model: LogNormalCure,
    subsets: list[DelayData],
    mean: FloatArray,
    scale: FloatArray,
    x0: list[FloatArray],
) -> list[_Fit]:
    """:meth:`LogNormalCure._map` of a chunk of groups (one task of the process pool)."""
    return [model._map(d, mean, scale, x) for d, x in zip(subsets, x0, strict=True)]


class LogNormalCure(DelayModel):
    """Mixture-cure model with LogNormal delays, censored MLE and empirical-Bayes pooling.

    Parameters
    ----------
    competing
        Also model a competing terminal outcome (CRM ``lost``): see the module docstring.
    shift
        Make the converters' delay ``shift + LogNormal(mu, sigma)`` (the three-parameter
        lognormal, ``shift`` fitted too). A delay that is the sum of several stages (lead to
        mql to sql to opportunity to won) has a minimum and a log that is skewed right; a
        plain lognormal fitted to its censored early part then has too short a tail, which
        biases ``p`` low. Off for click delays, which start at zero.
    pooling
        ``"empirical_bayes"`` (shrink each group toward the account by the estimated
        between-group spread), ``"none"`` (each group on its own, with only the weak prior)
        or ``"complete"`` (every group gets the account's fit).
    prior_scale
        The weak prior's standard deviations ``W`` on ``(logit p, mu, log sigma)`` (also used
        for ``(logit q, mu2, log sigma2)``; ``log shift`` gets the third). The between-group
        spread is never set wider.
    min_scale
        The floor of the between-group spread ``T``, so no group is pooled completely.
    random_state
        Seed of the parameter draws when no generator is passed to a prediction.

    Attributes
    ----------
    groups_ : tuple of str
    theta_ : ndarray of shape (n_groups, k)
        Posterior modes of ``(logit p, mu, log sigma[, log shift][, logit q, mu2,
        log sigma2])``.
    cov_ : ndarray of shape (n_groups, k, k)
        Their posterior covariances (inverse Hessians).
    p_, mu_, sigma_, shift_ : ndarray of shape (n_groups,)
        Natural parameters (``shift_`` is 0 without ``shift``).
    account_theta_, account_cov_ : ndarray
        The account fit (every group's data summed).
    between_scale_ : ndarray of shape (k,)
        The prior scale ``T`` used for the groups (empirical Bayes) or ``W``.
    pooling_weight_ : ndarray of shape (n_groups, k)
        Share of each parameter's posterior precision that comes from the group's own data
        (1 = its own estimate, 0 = the account's).
    n_events_, n_censored_, n_competing_ : ndarray of shape (n_groups,)
    converged_ : ndarray of bool, shape (n_groups,)
    unit_ : str
    """

    name = "lognormal_cure"

    def __init__(
        self,
        *,
        competing: bool = False,
        shift: bool = False,
        pooling: Literal["empirical_bayes", "none", "complete"] = "empirical_bayes",
        prior_scale: Sequence[float] = (2.5, 1.5, 0.7),
        min_scale: Sequence[float] = (0.05, 0.05, 0.03),
        random_state: int | None = None,
    ) -> None:
        self.competing = competing
        self.shift = shift
        self.pooling = pooling
        self.prior_scale = prior_scale
        self.min_scale = min_scale
        self.random_state = random_state

    # -- parameter layout -------------------------------------------------------------------
    def _k(self) -> int:
        return 3 + int(self.shift) + 3 * int(self.competing)

    @property
    def _cb(self) -> int:
        """Index of ``logit q``, the first parameter of the competing block."""
        return 3 + int(self.shift)

    def _scales(self, given: Sequence[float]) -> FloatArray:
        v = _f64(given)
        if len(v) != 3:
            raise ValueError(f"expected 3 scales (logit p, mu, log sigma), got {len(v)}")
        out = list(v)
        if self.shift:
            out.append(float(v[2]))
        if self.competing:
            out += list(v)
        return _f64(out)

    def _fpar(self, th: FloatArray) -> tuple[Any, Any, Any]:
        """``(mu, log sigma, log shift or None)`` columns of parameter rows ``th``."""
        return th[..., 1:2], th[..., 2:3], th[..., 3:4] if self.shift else None

    # -- fitting --------------------------------------------------------------------------
    def _start(self, d: DelayData) -> FloatArray:
        ev, ce, co = (float(x.sum()) for x in d.totals())
        tot = ev + ce + co
        p = min(max((ev + 0.5) / (tot + 1.0), 1e-4), 0.9)
        if ev > 0:
            mid = np.sqrt(np.maximum(d.event_lo, 1e-3 * d.event_hi) * d.event_hi)
            mu = float(np.average(np.log(mid), weights=d.event_n))
        else:
            mu = float(np.log(np.average(d.censor_t, weights=d.censor_n) + 1.0)) if ce else 0.0
        theta = [float(special.logit(p)), mu, 0.0]
        if self.shift:
            first = float(np.min(d.event_lo)) if ev > 0 else math.exp(mu)
            shift0 = max(0.5 * first, 0.05 * math.exp(mu), 1e-3)
            theta[1] = math.log(max(math.exp(mu) - shift0, 1e-3))
            theta.append(math.log(shift0))
        if self.competing:
            q = min(max((co + 0.5) / (co + ce + 1.0), 1e-3), 0.99)
            if co > 0:
                mid = np.sqrt(np.maximum(d.competing_lo, 1e-3 * d.competing_hi) * d.competing_hi)
                mu2 = float(np.average(np.log(mid), weights=d.competing_n))
            else:
                mu2 = mu
            theta += [float(special.logit(q)), mu2, 0.0]
        return _f64(theta)

    def _map(self, d: DelayData, mean: FloatArray, scale: FloatArray, x0: FloatArray) -> _Fit:
        """Posterior mode and covariance of one group's data under ``N(mean, scale^2)``.

        Without a shift: damped Newton on the exact gradient and Hessian
        (:func:`_neg_log_post_hess`), about five evaluations; the covariance is the inverse
        Hessian at the mode. With a shift: BFGS on the analytic gradient (L-BFGS-B's BLAS
        calls contend with DuckDB's threads), the covariance the inverse of the
        finite-difference Hessian of the gradient.
        """
        k = self._k()
        if not self.shift:
            return self._newton_fits(d, mean, scale, _f64(x0)[None, :])[0]
        args = (d, self.competing, self.shift, mean, scale)
        res = optimize.minimize(_neg_log_post, x0, args=args, jac=True, method="BFGS")
        theta = _f64(res.x)
        hess = np.zeros((k, k))
        for j in range(k):
            h = 1e-4 * max(1.0, abs(theta[j]))
            up, dn = theta.copy(), theta.copy()
            up[j] += h
            dn[j] -= h
            hess[:, j] = (_neg_log_post(up, *args)[1] - _neg_log_post(dn, *args)[1]) / (2 * h)
        hess = 0.5 * (hess + hess.T)
        vals, vecs = np.linalg.eigh(hess)
        vals = np.maximum(vals, 1e-8)
        cov = (vecs / vals) @ vecs.T
        return _Fit(theta, cov, bool(res.success))

    def _newton_fits(
        self, d: DelayData, mean: FloatArray, scale: FloatArray, x0: FloatArray
    ) -> list[_Fit]:
        """Posterior modes and covariances of every group of ``d`` without a shift: damped
        Newton on the exact gradients and Hessians (:func:`_neg_log_post_hess`), every group's
        steps taken together; each covariance the inverse Hessian at its mode. Rows sorted by
        group (:meth:`DelayData.by_group`) are summed per group in contiguous runs."""

        def fun(x: FloatArray, which: npt.NDArray[np.bool_] | None) -> Any:
            return _neg_log_post_hess(x, d, self.competing, mean, scale, which)

        theta, hess, ok = _newton(fun, x0)
        vals, vecs = np.linalg.eigh(0.5 * (hess + np.swapaxes(hess, 1, 2)))
        cov = (vecs / np.maximum(vals, 1e-8)[:, None, :]) @ np.swapaxes(vecs, 1, 2)
        return [_Fit(theta[g], cov[g], bool(ok[g])) for g in range(len(theta))]

    def _map_all(
        self,
        runs: list[tuple[IntArray, DelayData]],
        subsets: list[DelayData],
        mean: FloatArray,
        scale: FloatArray,
        x0: list[FloatArray],
    ) -> list[_Fit]:
        """:meth:`_map` of every group, each fit independent and deterministic.

        Without a shift, Newton (:meth:`_newton_fits`), the groups taken together in ``runs``
        (:meth:`DelayData.runs` of at most :data:`BATCH_ROWS` rows): one array pass over a
        run's rows replaces a Python step per group (a thousand campaigns' CRM lead days:
        1.2 -> 0.1 s), and a run's rows stay in the CPU's cache while a step works through
        them (a run of every group's click hours, two million rows, would stream through
        memory at every step and lose to the per-group loop). With a shift, one BFGS fit per
        group of ``subsets``, on two processes from :data:`PARALLEL_GROUPS` groups (the
        processes return exactly what one loop would).
        """
        if not self.shift:
            start = np.array(x0, dtype=float)
            fits: list[_Fit] = []
            for groups, part in runs:
                fits += self._newton_fits(part, mean, scale, start[groups])
            return fits
        workers = min(os.cpu_count() or 1, 2)
        if len(subsets) < PARALLEL_GROUPS or workers < 2:
            return [self._map(d, mean, scale, x) for d, x in zip(subsets, x0, strict=True)]
        from joblib import Parallel, delayed

        chunks = np.array_split(np.arange(len(subsets)), 4 * workers)
        done = Parallel(n_jobs=workers)(
            delayed(_map_chunk)(self, [subsets[i] for i in c], mean, scale, [x0[i] for i in c])
            for c in chunks
        )
        return [f for part in done for f in part]

    def fit(self, data: DelayData) -> Self:
        """Fit every group of ``data`` (see the module docstring for the pooling).

        Parameters
        ----------
        data
            Summarised delay data; competing rows are ignored unless ``competing``.

        Returns
        -------
        LogNormalCure
            ``self``, fitted.
        """
        if self.pooling not in ("empirical_bayes", "none", "complete"):
            raise ValueError(f"unknown pooling {self.pooling!r}")
        k, n_groups = self._k(), len(data.groups)
        wide = self._scales(self.prior_scale)
        floor = self._scales(self.min_scale)
        pooled = data.pooled()
        start = self._start(pooled)
        acct = self._map(pooled, start, np.full(k, 10.0), start)
        self.account_theta_, self.account_cov_ = acct.theta, acct.cov
        ev, ce, co = data.totals()
        self.n_events_, self.n_censored_, self.n_competing_ = ev, ce, co
        # the groups' rows: one by one for BFGS, in runs for Newton (both fitting passes)
        subsets = data.split() if self.shift else []
        runs = [] if self.shift else data.by_group().runs(BATCH_ROWS)
        if self.pooling == "complete":
            fits = [acct] * n_groups
            scale = np.full(k, np.nan)
        else:
            first = self._map_all(runs, subsets, acct.theta, wide, [acct.theta] * n_groups)
            scale = wide
            if self.pooling == "empirical_bayes":
                informative = [f for f, e in zip(first, ev, strict=True) if e > 0]
                if len(informative) >= 3:
                    dev = np.array([(f.theta - acct.theta) ** 2 for f in informative])
                    var = np.array([np.diag(f.cov) for f in informative])
                    t2 = np.mean(dev - var, axis=0)
                    scale = np.clip(np.sqrt(np.maximum(t2, 0.0)), floor, wide)
                fits = self._map_all(runs, subsets, acct.theta, scale, [f.theta for f in first])
            else:
                fits = first
        self.between_scale_ = scale
        self.theta_ = np.array([f.theta for f in fits]).reshape(n_groups, k)
        self.cov_ = np.array([f.cov for f in fits]).reshape(n_groups, k, k)
        if self.pooling == "empirical_bayes":
            # the prior's centre is itself estimated: a group leaning on it inherits its
            # uncertainty, (I - A_g) cov0 (I - A_g)' with I - A_g = cov_g T^-2
            lean = self.cov_ / scale**2
            self.cov_ = self.cov_ + lean @ acct.cov @ np.swapaxes(lean, 1, 2)
        self.converged_ = np.array([f.converged for f in fits], dtype=bool)
        if self.pooling == "complete":
            self.pooling_weight_ = np.zeros((n_groups, k))
        else:
            post_var = np.diagonal(self.cov_, axis1=1, axis2=2)
            self.pooling_weight_ = np.clip(1.0 - post_var / scale**2, 0.0, 1.0)
        self.p_ = _f64(_sigmoid(self.theta_[:, 0]))
        self.mu_ = self.theta_[:, 1].copy()
        self.sigma_ = np.exp(self.theta_[:, 2])
        self.shift_ = np.exp(self.theta_[:, 3]) if self.shift else np.zeros(n_groups)
        self.groups_ = data.groups
        self.unit_ = data.unit
        return self

    # -- prediction -----------------------------------------------------------------------
    def draw_theta(
        self, group: Group, n_draws: int, rng: np.random.Generator | None = None
    ) -> FloatArray:
        """Parameter draws ``(n_draws, k)`` from the normal posterior; the mode if 0.

        The draws go through the covariance's Cholesky factor, which moves as little as the
        covariance does: a fit that differs in its last digits (another optimiser's stop, an
        incremental refit) gives draws that differ as little, where the default SVD factor can
        flip a singular vector's sign and move a draw by several standard deviations. A
        covariance that is not positive definite falls back to its eigen-decomposition.
        """
        g = self.group_index(group)
        if n_draws <= 0:
            return _f64(self.theta_[g][None, :])
        gen, mean, cov = self._rng(rng), self.theta_[g], self.cov_[g]
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            return _f64(gen.multivariate_normal(mean, cov, n_draws, method="eigh"))
        return _f64(gen.multivariate_normal(mean, cov, n_draws, method="cholesky"))

    def _curves(
        self, g: int, t: FloatArray, n_draws: int, rng: np.random.Generator | None
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        th = self.draw_theta(g, n_draws, rng)
        p = _sigmoid(th[:, 0])[:, None]
        f = _cdf(t[None, :], *self._fpar(th))
        inc = p * f
        if self.competing:
            cb = self._cb
            q = _sigmoid(th[:, cb])[:, None]
            gc = _cdf(t[None, :], th[:, cb + 1 : cb + 2], th[:, cb + 2 : cb + 3])
            win = p * (1 - f)
            fut = win / np.maximum(win + (1 - p) * (1 - q * gc), 1e-300)
        else:
            fut = p * (1 - f) / np.maximum(1 - inc, 1e-300)
        return _f64(inc), _f64(fut), _f64(p[:, 0])

    def curves_by_point(
        self, group: Group, t: Any, *, n_draws: int, rng: np.random.Generator | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """:meth:`DelayModel.curves_by_point`, computed in the ``(len(t), S)`` layout: every
        element is the same operation on the same numbers as in :meth:`_curves` (so the same
        value), with fewer temporaries and no transposed copies."""
        if self.competing:
            return super().curves_by_point(group, t, n_draws=n_draws, rng=rng)
        th = self.draw_theta(self.group_index(group), n_draws, rng)
        p = _sigmoid(th[:, 0])[None, :]
        mu, ls, lsh = (None if x is None else x.T for x in self._fpar(th))
        f = _cdf(_f64(np.atleast_1d(t))[:, None], mu, ls, lsh)
        inc = p * f
        fut = np.subtract(1.0, f, out=f)  # p (1 - f) / max(1 - p f, tiny), in place
        fut *= p
        den = np.subtract(1.0, inc)
        np.maximum(den, 1e-300, out=den)
        fut /= den
        return inc, fut

    def grid(self, group: Group, t: Any) -> FloatArray:
        """Distinct ``t`` where sparse, and a log-spaced grid where ``t`` is dense.

        The cdf is ``Phi((log t - mu) / sigma)``, smooth in ``log t``: on points at most
        ``h = GRID_STEP * min(1, sigma)`` apart in ``log t`` linear interpolation is off by
        at most ``h^2 / 8 * max|Phi''| / sigma^2 < 1.3e-5`` (for the smallest sigma of the
        group's fit). ``t`` is cut into bins of width ``h`` in ``log t``: a bin holding one
        distinct value keeps it (exact), a bin holding more is replaced by its two edges.
        Exact for a shifted lognormal (not smooth at the shift) and for ``t <= 0``.

        >>> m = LogNormalCure()
        >>> m.theta_, m.cov_, m.groups_, m.unit_ = np.array([[0.0, 3.0, 0.0]]), \\
        ...     np.zeros((1, 3, 3)), ("a",), "hours"
        >>> t = np.arange(2160) + 0.5
        >>> len(m.grid("a", t)) < 400
        True
        """
        u = np.unique(_f64(np.atleast_1d(t)))
        if self.shift or len(u) < 2:
            return u
        th = self.theta_[self.group_index(group)]
        log_sigma = min(float(th[2]), float(th[self._cb + 2]) if self.competing else 0.0, 0.0)
        h = GRID_STEP * math.exp(log_sigma)
        pos = u[u > 0]
        bins = np.floor(np.log(pos) / h).astype(np.int64)
        first = np.r_[True, bins[1:] != bins[:-1]]
        count = np.diff(np.r_[np.nonzero(first)[0], len(pos)])
        single = np.repeat(count == 1, count)
        dense = np.unique(bins[~single])
        edges = np.exp(np.r_[dense, dense + 1] * h)
        return np.unique(np.r_[u[u <= 0], pos[single], edges])

    def new_group(self, name: str = "(new)") -> Self:
        """The account's parameters, with covariance ``cov(theta0) + T^2`` (a new group).

        ``T`` is :attr:`between_scale_` (0 with complete pooling): a group drawn from the
        account differs from it by that spread, on top of the account's own uncertainty.

        >>> rng = np.random.default_rng(0)
        >>> d = simulate_delays(p=0.1, mu=3.0, sigma=1.0, n=5000, horizon=(0, 200), rng=rng)
        >>> m = LogNormalCure().fit(d).new_group("x")
        >>> m.groups_, round(float(m.mu_[0]), 1), bool(m.cov_[0, 1, 1] > m.account_cov_[1, 1])
        (('x',), 3.0, True)
        """
        out = copy.copy(self)
        scale = np.nan_to_num(_f64(self.between_scale_), nan=0.0)
        out.theta_ = _f64(self.account_theta_)[None, :].copy()
        out.cov_ = (_f64(self.account_cov_) + np.diag(scale**2))[None, :, :]
        th = out.theta_
        out.p_ = _f64(_sigmoid(th[:, 0]))
        out.mu_, out.sigma_ = th[:, 1].copy(), np.exp(th[:, 2])
        out.shift_ = np.exp(th[:, 3]) if self.shift else np.zeros(1)
        out.pooling_weight_ = np.zeros((1, th.shape[1]))
        out.n_events_, out.n_censored_, out.n_competing_ = np.zeros(1), np.zeros(1), np.zeros(1)
        out.converged_ = np.ones(1, dtype=bool)
        out.groups_ = (name,)
        return out

    def quantile(self, group: Group, q: float) -> float:
        """The ``q`` quantile of converters' delay: ``shift + exp(mu + sigma * Phi^-1(q))``.

        >>> m = LogNormalCure()
        >>> m.theta_, m.groups_ = np.array([[0.0, np.log(24.0), 0.0]]), ("a",)
        >>> round(m.quantile("a", 0.5), 6)
        24.0
        """
        g = self.group_index(group)
        th = self.theta_[g]
        shift = math.exp(th[3]) if self.shift else 0.0
        return float(shift + np.exp(th[1] + np.exp(th[2]) * special.ndtri(q)))

    def describe(self, group: Group) -> dict[str, Any]:
        """``p50``, ``p90``, ``model``, ``unit``, the parameters and the pooling weights."""
        g = self.group_index(group)
        out = super().describe(g)
        sd = np.sqrt(np.diag(self.cov_[g]))
        out |= {
            "p": round(float(self.p_[g]), 5),
            "mu": round(float(self.mu_[g]), 4),
            "sigma": round(float(self.sigma_[g]), 4),
            "se_logit_p": round(float(sd[0]), 4),
            "se_mu": round(float(sd[1]), 4),
            "pooling_weight": {
                k: round(float(w), 3)
                for k, w in zip(("p", "mu", "sigma"), self.pooling_weight_[g][:3], strict=True)
            },
            "events": int(self.n_events_[g]),
            "open": round(float(self.n_censored_[g])),
        }
        if self.shift:
            out["shift"] = round(float(self.shift_[g]), 3)
        if self.competing:
            th, cb = self.theta_[g], self._cb
            out["competing"] = {
                "q": round(float(_sigmoid(th[cb])), 4),
                "p50": _round(float(np.exp(th[cb + 1]))),
                "events": int(self.n_competing_[g]),
            }
        return out


# ---- the nonparametric discrete-hazard model ------------------------------------------------


class DiscreteHazard(DelayModel):
    """Actuarial (Kaplan-Meier-style) discrete hazard per time bucket, pooled toward the account.

    Time is cut into buckets of ``bucket`` units. In bucket ``d`` the hazard of converting is
    ``events / at_risk`` (subjects censored inside a bucket count half, the actuarial rule);
    each group's hazard is shrunk as ``(e_g + k h_0) / (r_g + k)`` toward the account's
    ``h_0`` with ``k = prior_strength``. With a competing outcome both hazards are estimated
    and combined as cumulative incidences (Aalen-Johansen). Nothing converts after the last
    bucket with data. Parameter draws are Dirichlet draws of each bucket's hazards.

    Parameters
    ----------
    competing
        Estimate the competing outcome's hazard; when false, competing rows count as
        censored at their time.
    bucket
        Bucket width in the data's unit.
    prior_strength
        Pseudo-subjects at the account's hazard added to each group's bucket.
    random_state
        Seed of the hazard draws when no generator is passed.

    Attributes
    ----------
    groups_, unit_
    edges_ : ndarray of shape (n_buckets + 1,)
    hazard_, competing_hazard_ : ndarray of shape (n_groups, n_buckets)
    events_, at_risk_, competing_events_ : ndarray of shape (n_groups, n_buckets)
    """

    name = "discrete_hazard"

    def __init__(
        self,
        *,
        competing: bool = False,
        bucket: float = 1.0,
        prior_strength: float = 50.0,
        random_state: int | None = None,
    ) -> None:
        self.competing = competing
        self.bucket = bucket
        self.prior_strength = prior_strength
        self.random_state = random_state

    def fit(self, data: DelayData) -> Self:
        """Estimate the pooled hazards of every group of ``data``.

        Returns
        -------
        DiscreteHazard
            ``self``, fitted.
        """
        n_groups = len(data.groups)
        b = float(self.bucket)
        last = max(
            float(np.max(data.event_lo, initial=0.0)),
            float(np.max(data.censor_t, initial=0.0)),
            float(np.max(data.competing_lo, initial=0.0)),
        )
        n_b = int(last // b) + 1
        ev = np.zeros((n_groups, n_b))
        co = np.zeros((n_groups, n_b))
        ce = np.zeros((n_groups, n_b))
        np.add.at(ev, (data.event_group, (data.event_lo // b).astype(int)), data.event_n)
        co_at = (data.competing_group, (data.competing_lo // b).astype(int))
        np.add.at(co if self.competing else ce, co_at, data.competing_n)
        np.add.at(ce, (data.censor_group, (data.censor_t // b).astype(int)), data.censor_n)
        leaving = ev + co + ce
        entering = np.cumsum(leaving[:, ::-1], axis=1)[:, ::-1]
        risk = np.maximum(entering - 0.5 * ce, 0.0)
        tot_r, tot_e, tot_c = risk.sum(0), ev.sum(0), co.sum(0)
        h0 = np.divide(tot_e, tot_r, out=np.zeros(n_b), where=tot_r > 0)
        c0 = np.divide(tot_c, tot_r, out=np.zeros(n_b), where=tot_r > 0)
        k = float(self.prior_strength)
        self.hazard_ = (ev + k * h0) / (risk + k)
        self.competing_hazard_ = (co + k * c0) / (risk + k)
        self.events_, self.competing_events_, self.at_risk_ = ev, co, risk
        self.edges_ = np.arange(n_b + 1) * b
        self.groups_, self.unit_ = data.groups, data.unit
        return self

    def _hazards(
        self, g: int, n_draws: int, rng: np.random.Generator | None
    ) -> tuple[FloatArray, FloatArray]:
        h, c = self.hazard_[g][None, :], self.competing_hazard_[g][None, :]
        if n_draws <= 0:
            return h, c
        r = self._rng(rng)
        k = float(self.prior_strength)
        n = self.at_risk_[g] + k
        a_e = np.maximum(h[0] * n, 1e-9)
        a_c = np.maximum(c[0] * n, 1e-9)
        a_s = np.maximum(n - a_e - a_c, 1e-9)
        ge = r.gamma(a_e, size=(n_draws, len(a_e)))
        gc = r.gamma(a_c, size=(n_draws, len(a_c)))
        gs = r.gamma(a_s, size=(n_draws, len(a_s)))
        tot = ge + gc + gs
        return ge / tot, gc / tot

    def _curves(
        self, g: int, t: FloatArray, n_draws: int, rng: np.random.Generator | None
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        h, c = self._hazards(g, n_draws, rng)
        surv = np.cumprod(1 - h - c, axis=1)
        before = np.concatenate([np.ones((len(h), 1)), surv[:, :-1]], axis=1)
        cif = np.concatenate([np.zeros((len(h), 1)), np.cumsum(before * h, axis=1)], axis=1)
        s_edges = np.concatenate([np.ones((len(h), 1)), surv], axis=1)
        grid = self.edges_
        inc = np.array([np.interp(t, grid, row) for row in cif])
        s_t = np.array([np.interp(t, grid, row) for row in s_edges])
        eventual = cif[:, -1]
        fut = np.clip((eventual[:, None] - inc) / np.maximum(s_t, 1e-12), 0.0, 1.0)
        return _f64(inc), _f64(fut), _f64(eventual)

    def new_group(self, name: str = "(new)") -> Self:
        """The account's hazards, held by only the prior's pseudo-subjects (a new group)."""
        out = copy.copy(self)
        ev, co, risk = (
            x.sum(axis=0) for x in (self.events_, self.competing_events_, self.at_risk_)
        )
        out.hazard_ = np.divide(ev, risk, out=np.zeros_like(ev), where=risk > 0)[None, :]
        out.competing_hazard_ = np.divide(co, risk, out=np.zeros_like(co), where=risk > 0)[None, :]
        out.events_, out.competing_events_ = np.zeros_like(ev)[None, :], np.zeros_like(co)[None, :]
        out.at_risk_ = np.zeros_like(risk)[None, :]
        out.groups_ = (name,)
        return out

    def quantile(self, group: Group, q: float) -> float:
        """The ``q`` quantile of converters' delay (linear within a bucket)."""
        g = self.group_index(group)
        inc, _, ev = self._curves(g, _f64(self.edges_), 0, None)
        if ev[0] <= 0:
            return math.nan
        return float(np.interp(q, inc[0] / ev[0], self.edges_))

    def describe(self, group: Group) -> dict[str, Any]:
        g = self.group_index(group)
        return super().describe(g) | {"events": int(self.events_[g].sum())}


# ---- the registry -------------------------------------------------------------------------

#: Every delay model, by name.
DELAY_MODELS: Mapping[str, type[DelayModel]] = {
    LogNormalCure.name: LogNormalCure,
    DiscreteHazard.name: DiscreteHazard,
}


def make_delay_model(name: str, **params: Any) -> DelayModel:
    """Build the delay model registered as ``name`` with ``params``.

    >>> make_delay_model("lognormal_cure", competing=True, shift=True)._k()
    7
    >>> make_delay_model("discrete_hazard", bucket=24.0)
    DiscreteHazard(competing=False, bucket=24.0, prior_strength=50.0, random_state=None)
    """
    try:
        cls = DELAY_MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown delay model {name!r}; expected one of {', '.join(DELAY_MODELS)}"
        ) from None
    return cls(**params)
