"""The nowcast's intervals: each holds its point, and an account total has its own interval.

Two things a reader of the report relies on. A point shown with its 90% interval lies inside
it (a nowcast CPA line outside its own band reads as a bug), which for a count's whole-number
interval and a mean means holding the whole numbers next to the mean
(:func:`~signalloop.nowcast.count_interval`). And the account's band per date is a 90%
interval of the total, from the campaigns' draws added draw by draw
(``account.by_date``), not the campaigns' 90% bounds added up, which hold the total far more
often than the label says.
"""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from signalloop.delay import DelayData
from signalloop.jsonout import rounded
from signalloop.nowcast import (
    _CLICK_NAMES,
    NowcastOptions,
    _by_date,
    _gamma_poisson,
    _Path,
    _Prediction,
    _r,
    _ratio,
    _ratios,
    count_interval,
    shortest_interval,
)


def test_a_nearly_complete_cohort_holds_its_mean() -> None:
    """7 observed, 0.1 still to come on average (93% of the draws: none): the plain interval
    is [7, 7], below the mean 7.1; holding the point makes it [7, 8]."""
    draws = np.repeat([[7.0], [8.0], [9.0]], [930, 60, 10], axis=0)
    point = draws.mean(axis=0)
    assert point[0] == pytest.approx(7.08)
    lo, hi = count_interval(draws, 0.9, np.random.default_rng(0), np.r_[7.0])
    assert (lo[0], hi[0]) == (7.0, 7.0)
    lo, hi = count_interval(draws, 0.9, np.random.default_rng(0), np.r_[7.0], point)
    assert (lo[0], hi[0]) == (7.0, 8.0)
    # a whole-number point needs nothing more
    lo, hi = count_interval(draws, 0.9, np.random.default_rng(0), np.r_[7.0], np.r_[7.0])
    assert (lo[0], hi[0]) == (7.0, 7.0)


def test_holding_the_point_changes_only_the_intervals_that_miss_it() -> None:
    """Over 2000 Poisson counts of every size, the interval with the point is the plain one
    wherever the plain one holds the whole numbers next to the mean; elsewhere it is the plain
    one stretched to them, one bound moved, never by more than what reaches the point."""
    rng = np.random.default_rng(1)
    means = rng.choice([0.05, 0.1, 0.2, 0.5, 1.0, 3.0, 10.0, 40.0], 2000)
    draws = rng.poisson(means, (1000, 2000)).astype(float)
    point = np.round(draws.mean(axis=0) + rng.normal(0, 0.05, 2000).clip(0), 2)
    plain = count_interval(draws, 0.9, np.random.default_rng(2))
    held = count_interval(draws, 0.9, np.random.default_rng(2), None, point)
    lo, hi = held
    assert np.all((lo <= point) & (point <= hi))
    inside = (plain[0] <= np.floor(point)) & (np.ceil(point) <= plain[1])
    assert np.all(lo[inside] == plain[0][inside]) and np.all(hi[inside] == plain[1][inside])
    missed = ~inside
    assert 200 < missed.sum() < 1500  # the small means: plain [0, 0] under a mean of 0.1
    assert np.all(hi[missed] <= np.maximum(plain[1][missed], np.ceil(point[missed])))
    assert np.all(lo[missed] >= np.minimum(plain[0][missed], np.floor(point[missed])))
    # the stretch costs coverage only where it binds: there the interval holds more than 90%
    truth = rng.poisson(means).astype(float)
    cov_plain = np.mean((plain[0] <= truth) & (truth <= plain[1]))
    cov_held = np.mean((lo <= truth) & (truth <= hi))
    assert 0.87 <= cov_plain <= 0.93 and cov_plain < cov_held <= 0.99


def test_a_continuous_interval_holds_its_point() -> None:
    """The value interval: 95% of the draws at 120 (no more sales), the mean 121.5; the
    shortest 90% interval is [120, 120]; holding the point, [120, 121.5], and otherwise as
    short as it can be."""
    draws = np.r_[np.full(950, 120.0), np.linspace(140, 160, 50)][:, None]
    point = draws.mean(axis=0)
    assert point[0] == pytest.approx(121.5)
    assert [float(x[0]) for x in shortest_interval(draws, 0.9)] == [120.0, 120.0]
    assert [float(x[0]) for x in shortest_interval(draws, 0.9, (point, point))] == [120.0, 121.5]
    uniform = np.arange(1000.0)[:, None]
    lo, hi = shortest_interval(uniform, 0.9, (np.r_[950.0], np.r_[950.0]))
    assert (lo[0], hi[0]) == (51.0, 950.0)  # the first 90% window reaching 950: not stretched


def synthetic(
    means: list[float], days: int, observed: float, rng: np.random.Generator
) -> tuple[_Path, _Prediction, pd.DataFrame, np.ndarray]:
    """Cohorts of ``len(means)`` campaigns x ``days`` days: ``observed`` seen, Poisson(mean)
    still to come; 1000 draws of that, and one more (the truth) per cohort."""
    start = date(2026, 1, 1)
    cids = [f"c{i + 1:02d}" for i in range(len(means))]
    rows = [(cid, start + timedelta(days=d)) for cid in cids for d in range(days)]
    m = np.array([means[cids.index(c)] for c, _ in rows])
    cohorts = pd.DataFrame(
        {
            "campaign_id": [c for c, _ in rows],
            "date": [d for _, d in rows],
            "subjects": 100.0,
            "observed": observed,
            "observed_value": observed * 10.0,
            "in_window": False,
        }
    )
    samples = observed + rng.poisson(m, (1000, len(rows))).astype(float)
    truth = observed + rng.poisson(m).astype(float)
    empty = DelayData.build([], (*[[]] * 4,), (*[[]] * 3,), unit="days")  # type: ignore[arg-type]
    n = len(cids)
    path = _Path(
        "days", cids, cohorts, pd.DataFrame(), empty, np.zeros(n), np.zeros(n), np.ones(n, bool)
    )
    pred = _Prediction(observed + m, (observed + m) * 10.0, samples, samples * 10.0, 0.0)
    spend = cohorts[["campaign_id", "date"]].assign(spend=50.0)
    return path, pred, spend, truth


def test_the_account_interval_covers_the_total_at_its_level() -> None:
    """Four campaigns, 600 days, each cohort with Poisson(0.5 / 1.5 / 3 / 6) conversions still
    to come. The account's interval per date, from the draws added up, holds the total 90% of
    the time (within the binomial noise of 600 days); the campaigns' bounds added up hold it
    nearly always, a band far wider than its "90%" label."""
    rng = np.random.default_rng(5)
    days = 600
    path, pred, spend, truth = synthetic([0.5, 1.5, 3.0, 6.0], days, 4.0, rng)
    opts = NowcastOptions()
    rows = _by_date(
        [(path, pred)],
        spend,
        date(2026, 1, 1) + timedelta(days=days - 1),
        opts,
        _CLICK_NAMES,
        np.random.default_rng(6),
        with_excluded=False,
    )
    assert len(rows) == days and all(r["campaigns"] == 4 for r in rows)
    total = truth.reshape(4, days).sum(axis=0)
    lo = np.array([r["lower"] for r in rows])
    hi = np.array([r["upper"] for r in rows])
    exp = np.array([r["expected_conversions"] for r in rows])
    assert np.all(exp == 16 + 11.0) and np.all((lo <= exp) & (exp <= hi))
    assert np.all(lo >= 16)  # the observed floor
    covered = float(np.mean((lo <= total) & (total <= hi)))
    assert 0.87 <= covered <= 0.93, covered
    # the campaigns' own 90% intervals, added up per date
    c_lo, c_hi = count_interval(pred.samples, 0.9, np.random.default_rng(7), None, pred.expected)
    s_lo, s_hi = c_lo.reshape(4, days).sum(axis=0), c_hi.reshape(4, days).sum(axis=0)
    summed = float(np.mean((s_lo <= total) & (total <= s_hi)))
    assert summed >= 0.98, summed
    assert np.mean(hi - lo) < 0.75 * np.mean(s_hi - s_lo)
    # spend, CPA and value come along
    r = rows[0]
    assert r["spend"] == 200.0 and r["nowcast_cpa"] == round(200.0 / 27.0, 2)
    assert r["value_lower"] <= r["expected_value"] == 270.0 <= r["value_upper"]
    assert math.isclose(r["observed_value"], 160.0)


def test_excluded_cohorts_are_left_out_or_counted_and_always_named() -> None:
    rng = np.random.default_rng(8)
    path, pred, spend, _ = synthetic([1.0, 2.0], 3, 5.0, rng)
    path.cohorts.loc[
        (path.cohorts.campaign_id == "c02") & (path.cohorts.date == date(2026, 1, 2)), "in_window"
    ] = True
    as_of = date(2026, 1, 3)
    kw = {"spend": spend, "as_of": as_of, "opts": NowcastOptions(), "names": _CLICK_NAMES}
    out = _by_date([(path, pred)], rng=np.random.default_rng(0), with_excluded=False, **kw)  # type: ignore[arg-type]
    every = _by_date([(path, pred)], rng=np.random.default_rng(0), with_excluded=True, **kw)  # type: ignore[arg-type]
    assert [r["campaigns"] for r in out] == [2, 1, 2]
    assert [r["campaigns"] for r in every] == [2, 2, 2]
    assert [r["excluded"] for r in out] == [[], ["c02"], []] == [r["excluded"] for r in every]
    assert out[1]["expected_conversions"] == 6.0 and every[1]["expected_conversions"] == 13.0
    assert out[1]["spend"] == 50.0 and every[1]["spend"] == 100.0
    # cohort_days: only the days the cohort rows show
    short = _by_date(
        [(path, pred)],
        spend,
        as_of,
        NowcastOptions(cohort_days=2),
        _CLICK_NAMES,
        np.random.default_rng(0),
        with_excluded=True,
    )
    assert [r["date"] for r in short] == ["2026-01-02", "2026-01-03"]


@pytest.mark.parametrize("level", [0.5, 0.8, 0.9, 0.95])
def test_shortest_interval_is_that_of_the_fully_sorted_draws(level: float) -> None:
    """Only the k smallest and k largest draws are sorted (a partition first): the same
    interval as from every draw sorted, for either memory layout, ties and a point."""
    rng = np.random.default_rng(11)
    draws = rng.poisson(rng.uniform(0, 30, 400), size=(1000, 400)).astype(float)
    point = draws.mean(axis=0) + rng.normal(0, 3, 400)

    def naive(a: np.ndarray, contain: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
        s = np.sort(a, axis=0)
        n = len(s)
        m = min(max(math.ceil(level * n), 1), n)
        low = np.fmin(s[: n - m + 1], contain[0][None, :])
        high = np.fmax(s[m - 1 :], contain[1][None, :])
        start = np.argmin(high - low, axis=0)[None, :]
        return np.take_along_axis(low, start, 0)[0], np.take_along_axis(high, start, 0)[0]

    want = naive(draws, (point, point))
    for layout in (draws, np.asfortranarray(draws)):
        got = shortest_interval(layout, level, (point, point))
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    scratch = np.asfortranarray(draws)
    got = shortest_interval(scratch, level, (point, point), overwrite=True)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_the_intervals_of_some_columns_are_those_of_the_whole_call() -> None:
    """A report listing its last days asks for those cohorts' intervals only (``columns``):
    each is the interval the call over every column gives it (the randomisation is drawn for
    every column, in the same order), for either memory layout, with and without a floor."""
    rng = np.random.default_rng(5)
    draws = rng.poisson(rng.uniform(0, 8, 3000), size=(500, 3000)).astype(float)
    point, floor = draws.mean(axis=0), np.floor(draws.min(axis=0))
    cols = np.sort(rng.choice(3000, 1100, replace=False))
    for layout in (draws, np.asfortranarray(draws)):
        for fl in (None, floor):
            whole = count_interval(layout, 0.9, np.random.default_rng(1), fl, point)
            some = count_interval(
                layout,
                0.9,
                np.random.default_rng(1),
                None if fl is None else fl[cols],
                point[cols],
                columns=cols,
            )
            assert all(np.array_equal(w[cols], s) for w, s in zip(whole, some, strict=True))
        whole = shortest_interval(layout, 0.9, (point, point))
        some = shortest_interval(layout, 0.9, (point[cols], point[cols]), columns=cols)
        assert all(np.array_equal(w[cols], s) for w, s in zip(whole, some, strict=True))


_halves = st.integers(-(10**9), 10**9).map(lambda k: (k + 0.5) / 100)  # ties in decimal
_cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), _halves, _halves.map(lambda x: x * (1 + 2e-16))
)


@given(st.lists(_cells, max_size=60), st.sampled_from([2, 3]))
def test_rounding_a_column_at_once_is_rounding_each_cell(xs: list[float], nd: int) -> None:
    """The report's cells rounded by whole columns are the floats ``round`` gives, sign of
    zero included, and ``None`` where a cell is not finite: the vectorised rows of
    ``nowcast.cohorts`` equal those built cell by cell."""
    got = rounded(xs, nd)
    for x, g in zip(xs, got, strict=True):
        want = _r(x, nd)
        assert (g is None) == (want is None)
        if want is not None:
            assert g == want and math.copysign(1, g) == math.copysign(1, want)  # type: ignore[arg-type]


@given(st.lists(st.tuples(_cells, st.floats(-5, 5) | st.just(0.0)), max_size=40))
def test_ratios_of_columns_are_the_ratio_of_each_pair(pairs: list[tuple[float, float]]) -> None:
    num, den = [p[0] for p in pairs], [p[1] for p in pairs]
    assert _ratios(num, den, 3) == [_ratio(a, b, 3) for a, b in pairs]


@pytest.mark.parametrize(
    ("shape", "rate", "lam"),
    [
        (2.0, 4.0, 0.01),  # an old cohort barely overlapping a window: nearly always 0
        (0.6, 1.5, 0.8),  # few conversions and much cohort variation: a long tail
        (300.0, 310.0, 3.0),  # many conversions: nearly Poisson
        (5.0, 2.0, 4.0),  # q = 2/3: drawn as gamma and Poisson, not inverted
        (40.0, 41.0, 45.0),  # a mean above 30: drawn as gamma and Poisson
        (None, None, 0.3),  # no cohort variation: Poisson
        (None, None, 35.0),
    ],
)
def test_lost_conversions_drawn_by_inversion_follow_their_distribution(
    shape: float | None, rate: float | None, lam: float
) -> None:
    """The conversions an exclusion window hid from a cohort with nothing open are drawn by
    :func:`~signalloop.nowcast._gamma_poisson`: their frequencies are the negative binomial's
    (the Poisson's without cohort variation) within 4.5 standard errors, over 200,000 draws,
    in both of its regimes (inverted, and drawn as they stand), mixed in one call."""
    from scipy import stats

    n, other = 200_000, 0.05  # a second column, always inverted, mixed in the same call
    rng = np.random.default_rng(7)
    lam_arr = np.column_stack([np.full(n, lam), np.full(n, other)])
    if shape is None or rate is None:
        x = _gamma_poisson(rng, None, None, lam_arr)
        dists = [stats.poisson(lam), stats.poisson(other)]
    else:
        rate_arr = np.column_stack([np.full(n, rate), np.full(n, 1.0)])
        x = _gamma_poisson(rng, np.array([shape, 1.5]), rate_arr, lam_arr)
        dists = [
            stats.nbinom(shape, rate / (rate + lam)),
            stats.nbinom(1.5, 1.0 / (1.0 + other)),
        ]
    assert x.shape == (n, 2) and x.dtype == np.int64 and (x >= 0).all()
    for col, dist in enumerate(dists):
        got = np.bincount(x[:, col], minlength=80)[:80] / n
        want = dist.pmf(np.arange(80))
        se = np.sqrt(want * (1 - want) / n) + 1e-6
        assert np.all(np.abs(got - want) <= 4.5 * se), (col, np.max(np.abs(got - want) / se))
        mean, var = dist.stats()
        assert abs(x[:, col].mean() - mean) <= 4.5 * math.sqrt(var / n)
