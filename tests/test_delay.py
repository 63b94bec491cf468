"""Delay models: censored maximum likelihood, pooling, the competing outcome, the contract."""

from __future__ import annotations

import numpy as np
import pytest

from signalloop.delay import (
    DELAY_MODELS,
    DelayData,
    DiscreteHazard,
    LogNormalCure,
    make_delay_model,
    simulate_delays,
)

P, MU, SIGMA = 0.08, 3.2, 1.0  # median delay ~ 24.5 h


def heavy_censoring(seed: int = 1, n: int = 40_000, hours: float = 72) -> DelayData:
    """Clicks observed for 0-72 h: most of them have not had time to convert."""
    rng = np.random.default_rng(seed)
    return simulate_delays(p=P, mu=MU, sigma=SIGMA, n=n, horizon=(0, hours), rng=rng)


def as_non_converters(d: DelayData) -> DelayData:
    """The same data with every open click counted as a non-converter (censored at infinity)."""
    return DelayData.build(
        d.groups,
        (d.event_group, d.event_lo, d.event_hi, d.event_n),
        (d.censor_group, np.full(len(d.censor_t), 1e12), d.censor_n),
    )


def test_censored_mle_recovers_the_parameters() -> None:
    m = LogNormalCure().fit(heavy_censoring())
    assert m.p_[0] == pytest.approx(P, rel=0.08)
    assert m.mu_[0] == pytest.approx(MU, abs=0.1)
    assert m.sigma_[0] == pytest.approx(SIGMA, rel=0.08)
    truth = np.array([np.log(P / (1 - P)), MU, np.log(SIGMA)])
    se = np.sqrt(np.diag(m.cov_[0]))
    assert np.all(np.abs(m.theta_[0] - truth) < 3 * se)
    assert m.converged_.all()
    # the median delay in hours, as reported
    assert m.describe(0)["p50"] == pytest.approx(np.exp(MU), rel=0.1)


def test_treating_open_clicks_as_non_converters_is_biased() -> None:
    data = heavy_censoring()
    wrong = LogNormalCure().fit(as_non_converters(data))
    naive_rate = data.event_n.sum() / (data.event_n.sum() + data.censor_n.sum())
    # every open click counted as lost: the conversion rate is far too low, and the delay
    # is fitted to the short delays that had time to happen
    assert wrong.p_[0] == pytest.approx(naive_rate, rel=0.02)
    assert wrong.p_[0] < 0.75 * P
    assert np.exp(wrong.mu_[0]) < 0.8 * np.exp(MU)
    # the censored fit sees through it
    right = LogNormalCure().fit(data)
    assert abs(right.p_[0] - P) < 0.25 * abs(wrong.p_[0] - P)


def test_the_parameter_uncertainty_covers_the_truth() -> None:
    hits = 0
    for seed in range(20):
        m = LogNormalCure().fit(heavy_censoring(seed, n=8_000))
        se = np.sqrt(m.cov_[0, 0, 0])
        hits += abs(m.theta_[0, 0] - np.log(P / (1 - P))) < 1.645 * se
    assert 15 <= hits <= 20  # a 90% interval, 20 tries


def pooled_account() -> DelayData:
    """Five big campaigns around p = 0.05 and one tiny one that converted 6 of 40 clicks."""
    rng = np.random.default_rng(3)
    parts = [
        simulate_delays(p=p, mu=3.2, sigma=1.0, n=20_000, horizon=(0, 500), rng=rng)
        for p in (0.04, 0.05, 0.06, 0.05, 0.045)
    ]
    tiny = simulate_delays(p=0.15, mu=3.2, sigma=1.0, n=40, horizon=(300, 500), rng=rng)
    parts.append(tiny)
    ev = [np.concatenate([np.full(len(d.event_n), i) for i, d in enumerate(parts)])]
    ev += [np.concatenate([getattr(d, f) for d in parts]) for f in ("event_lo", "event_hi")]
    ev += [np.concatenate([d.event_n for d in parts])]
    ce = [np.concatenate([np.full(len(d.censor_n), i) for i, d in enumerate(parts)])]
    ce += [np.concatenate([getattr(d, f) for d in parts]) for f in ("censor_t", "censor_n")]
    names = [f"c{i}" for i in range(len(parts))]
    return DelayData.build(names, tuple(ev), tuple(ce))  # type: ignore[arg-type]


def test_pooling_shrinks_a_tiny_campaign_toward_the_account() -> None:
    data = pooled_account()
    alone = LogNormalCure(pooling="none").fit(data)
    pooled = LogNormalCure().fit(data)
    account = 1 / (1 + np.exp(-pooled.account_theta_[0]))
    tiny, big = 5, 2
    # the tiny campaign's own estimate is far from the account; pooled, most of the way back
    assert abs(alone.p_[tiny] - account) > 0.05
    assert abs(pooled.p_[tiny] - account) < 0.5 * abs(alone.p_[tiny] - account)
    assert pooled.pooling_weight_[tiny, 0] < 0.75 < 0.95 < pooled.pooling_weight_[big, 0]
    # a big campaign keeps its own estimate
    assert pooled.p_[big] == pytest.approx(alone.p_[big], rel=0.03)
    # complete pooling gives everyone the account
    full = LogNormalCure(pooling="complete").fit(data)
    assert np.allclose(full.p_, account)


def test_competing_outcome_is_a_terminal_non_conversion() -> None:
    """CRM records: won with p, or lost (70% of the rest); an open record may still win."""
    rng = np.random.default_rng(5)
    n, p = 60_000, 0.05
    age = rng.uniform(0, 120, n)
    won = rng.random(n) < p
    t_won = np.exp(np.log(30) + 0.5 * rng.normal(size=n))
    lost = ~won & (rng.random(n) < 0.7)
    t_lost = np.exp(np.log(10) + 0.8 * rng.normal(size=n))
    seen_won, seen_lost = won & (t_won < age), lost & (t_lost < age)
    still = ~(seen_won | seen_lost)

    def buckets(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.unique(np.floor(t), return_counts=True)

    (w, wn), (lo, ln), (o, on) = (
        buckets(t_won[seen_won]),
        buckets(t_lost[seen_lost]),
        buckets(age[still]),
    )
    z = np.zeros
    data = DelayData.build(
        ["crm"],
        (z(len(w), int), w, w + 1, wn),
        (z(len(o), int), o + 0.5, on),
        (z(len(lo), int), lo, lo + 1, ln),
        unit="days",
    )
    m = LogNormalCure(competing=True).fit(data)
    assert m.p_[0] == pytest.approx(p, rel=0.08)
    assert m.quantile(0, 0.5) == pytest.approx(30, rel=0.08)
    assert m.describe(0)["competing"]["q"] == pytest.approx(0.7, abs=0.05)
    young = still & (age < 14)
    predicted = m.future_probability(0, age[young])[0].sum()
    assert predicted == pytest.approx((won & young).sum(), rel=0.1)
    # a record that was lost cannot win: ignoring the losses would count them as open
    assert m.future_probability(0, [5.0])[0, 0] > p


def test_discrete_hazard_agrees_with_the_parametric_model_inside_the_data() -> None:
    data = heavy_censoring(hours=1000)
    km = DiscreteHazard().fit(data)
    ln = LogNormalCure().fit(data)
    t = np.array([1.0, 6.0, 24.0, 48.0])
    assert np.allclose(km.incidence(0, t), ln.incidence(0, t), atol=0.004)
    assert km.quantile(0, 0.5) == pytest.approx(ln.quantile(0, 0.5), rel=0.1)
    draws = km.future_probability(0, t, n_draws=50, rng=np.random.default_rng(1))
    assert draws.shape == (50, 4)
    assert np.all((draws >= 0) & (draws <= 1))


def test_estimator_contract_and_registry() -> None:
    assert set(DELAY_MODELS) == {"lognormal_cure", "discrete_hazard"}
    m = make_delay_model("lognormal_cure", random_state=7)
    assert m.get_params()["random_state"] == 7
    assert not [k for k in vars(m) if k.endswith("_")]  # nothing learned before fit
    data = heavy_censoring(n=5_000)
    assert m.fit(data) is m
    assert m.set_params(pooling="none").get_params()["pooling"] == "none"
    a = m.future_probability("g", [10.0, 30.0], n_draws=5)
    b = m.future_probability("g", [10.0, 30.0], n_draws=5)
    assert np.array_equal(a, b)  # randomness only from random_state
    with pytest.raises(ValueError, match="unknown delay model"):
        make_delay_model("weibull")
    with pytest.raises(ValueError, match="no parameter"):
        m.set_params(alpha=1)
    with pytest.raises(KeyError):
        m.future_probability("nope", [1.0])


def test_delay_data_is_checked() -> None:
    with pytest.raises(ValueError, match="negative"):
        DelayData.build(["a"], ([0], [1.0], [2.0], [-1]), ([0], [1.0], [1]))
    with pytest.raises(ValueError, match="outside"):
        DelayData.build(["a"], ([1], [1.0], [2.0], [1]), ([0], [1.0], [1]))
    with pytest.raises(ValueError, match="hi > lo"):
        DelayData.build(["a"], ([0], [2.0], [2.0], [1]), ([0], [1.0], [1]))
    d = DelayData.build(["a", "b"], ([0, 1], [1.0, 2.0], [2.0, 3.0], [1, 0]), ([1], [1.0], [3]))
    assert len(d.event_n) == 1  # zero counts dropped
    assert [float(x.sum()) for x in d.totals()] == [1.0, 3.0, 0.0]


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("competing", [False, True])
def test_grid_interpolation_reproduces_every_elapsed_time(sigma: float, competing: bool) -> None:
    """The nowcast draws its curves on the model's grid: sums over 2,160 hourly elapsed times
    (90 days, with exclusion-window shifts) come back within 2e-5 per time of the exact ones."""
    from signalloop.delay import interpolation

    m = LogNormalCure(competing=competing)
    theta = [-2.0, 3.0, np.log(sigma)] + ([-1.0, 4.0, np.log(sigma)] if competing else [])
    m.theta_ = np.array([theta])
    m.cov_ = np.eye(len(theta))[None] * 0.01
    m.groups_, m.unit_ = ("a",), "hours"
    t = np.r_[np.arange(2160) + 0.5, np.maximum(np.arange(2160) + 0.5 - 37.25, 0.0)]
    grid = m.grid("a", t)
    assert len(grid) < len(np.unique(t)) / 3
    rows = np.arange(len(t))
    w = interpolation(grid, t, np.ones(len(t)), rows, len(t))
    for i, (exact, on_grid) in enumerate(
        zip(
            m.curves("a", t, n_draws=50, rng=np.random.default_rng(0)),
            m.curves("a", grid, n_draws=50, rng=np.random.default_rng(0)),
            strict=True,
        )
    ):
        if i < 2:  # incidence and future probability, per draw
            assert np.max(np.abs(on_grid @ w.T - exact)) < 2e-5
    # a model without a smooth curve (and a shifted lognormal) is evaluated at every time
    assert len(DiscreteHazard().grid(0, t)) == len(np.unique(t))
    shifted = LogNormalCure(shift=True)
    assert len(shifted.grid(0, t)) == len(np.unique(t))


def test_many_groups_fit_on_two_processes_exactly_as_in_one_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From PARALLEL_GROUPS groups the shifted model's BFGS fits run in a process pool: the
    same numbers, bit for bit."""
    import signalloop.delay as delay

    data = pooled_account()
    one = LogNormalCure(shift=True).fit(data)
    monkeypatch.setattr(delay, "PARALLEL_GROUPS", 2)
    monkeypatch.setattr(delay.os, "cpu_count", lambda: 2)
    two = LogNormalCure(shift=True).fit(data)
    assert np.array_equal(one.theta_, two.theta_)
    assert np.array_equal(one.cov_, two.cov_)
    assert np.array_equal(one.between_scale_, two.between_scale_)


@pytest.mark.parametrize("competing", [False, True])
def test_exact_hessian_matches_finite_differences_and_newton_finds_the_bfgs_mode(
    competing: bool,
) -> None:
    """The Newton fit's value and gradient are :func:`_neg_log_post`'s, its Hessian matches
    central differences of that gradient, and its mode is the one BFGS finds."""
    from scipy import optimize

    import signalloop.delay as delay

    rng = np.random.default_rng(4)
    data = simulate_delays(p=0.2, mu=3.0, sigma=0.8, n=3_000, horizon=(0, 150), rng=rng)
    if competing:
        lost = simulate_delays(p=0.5, mu=2.0, sigma=0.6, n=1_500, horizon=(0, 150), rng=rng)
        data = DelayData.build(
            data.groups,
            (data.event_group, data.event_lo, data.event_hi, data.event_n),
            (data.censor_group, data.censor_t, data.censor_n),
            (lost.event_group, lost.event_lo, lost.event_hi, lost.event_n),
        )
    k = 6 if competing else 3
    theta = np.array([-1.2, 2.7, -0.1, 0.3, 2.2, -0.4][:k])
    mean, scale = theta + 0.2, np.full(k, 1.5)
    value, grad = delay._neg_log_post(theta, data, competing, False, mean, scale)
    v2, g2, hess = (
        x[0] for x in delay._neg_log_post_hess(theta[None], data, competing, mean, scale)
    )
    assert v2 == pytest.approx(value, rel=1e-12)
    assert np.allclose(g2, grad, rtol=1e-10, atol=1e-8)
    numeric = np.zeros((k, k))
    for j in range(k):
        e = np.zeros(k)
        e[j] = 1e-5
        up = delay._neg_log_post(theta + e, data, competing, False, mean, scale)[1]
        dn = delay._neg_log_post(theta - e, data, competing, False, mean, scale)[1]
        numeric[:, j] = (up - dn) / 2e-5
    assert np.allclose(hess, numeric, rtol=1e-6, atol=1e-6 * np.abs(numeric).max())
    modes, _, ok = delay._newton(
        lambda x, which: delay._neg_log_post_hess(x, data, competing, mean, scale, which),
        theta[None],
    )
    args = (data, competing, False, mean, scale)
    bfgs = optimize.minimize(delay._neg_log_post, theta, args=args, jac=True, method="BFGS")
    assert ok[0]
    assert np.allclose(modes[0], bfgs.x, atol=1e-4)
    assert delay._neg_log_post(modes[0], *args)[0] <= bfgs.fun + 1e-9


@pytest.mark.parametrize("competing", [False, True])
def test_groups_fitted_together_equal_each_fitted_alone(competing: bool) -> None:
    """The Newton fits of many groups at once (in runs that share array passes) give each
    group what fitting its rows alone gives, to the last digits: every sum stays in its own
    group, whatever else is in the run, and every group takes its own steps."""
    import signalloop.delay as delay

    rng = np.random.default_rng(11)
    parts = []
    for g in range(7):  # groups of very different sizes, one without any event
        n = int(rng.integers(50, 4_000)) if g != 3 else 40
        p = 0.0 if g == 3 else float(rng.uniform(0.05, 0.4))
        d = simulate_delays(
            p=p, mu=float(rng.uniform(1.0, 4.0)), sigma=0.8, n=n, horizon=(0, 150), rng=rng
        )
        lost = simulate_delays(p=0.4, mu=2.0, sigma=0.6, n=n // 2, horizon=(0, 150), rng=rng)
        parts.append((d, lost))

    def rows(kind: int, name: str) -> np.ndarray:
        """Every group's ``name`` column (its events, else its lost ones), group by group."""
        got = [getattr(parts[g][kind], name) for g in range(7)]
        if name == "event_group" or name == "censor_group":
            got = [np.full(len(x), g) for g, x in enumerate(got)]
        return np.concatenate(got)

    event = ("event_group", "event_lo", "event_hi", "event_n")
    data = DelayData.build(
        [f"g{g}" for g in range(7)],
        tuple(rows(0, c) for c in event),
        tuple(rows(0, c) for c in ("censor_group", "censor_t", "censor_n")),
        tuple(rows(1, c) for c in event) if competing else None,
    )
    model = delay.LogNormalCure(competing=competing, pooling="none")
    k = model._k()
    mean, scale = np.zeros(k), np.full(k, 2.0)
    x0 = [np.zeros(k)] * 7
    # runs of about a third of the rows: several groups share a run, and there are several
    size = (len(data.event_n) + len(data.censor_n) + len(data.competing_n)) // 3
    runs = data.by_group().runs(size)
    assert 1 < len(runs) < 7
    together = model._map_all(runs, [], mean, scale, x0)
    for g, sub in enumerate(data.split()):
        alone = model._newton_fits(sub, mean, scale, np.zeros((1, k)))[0]
        assert together[g].converged and alone.converged
        assert np.allclose(together[g].theta, alone.theta, rtol=1e-10, atol=1e-10)
        assert np.allclose(together[g].cov, alone.cov, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize(
    "model",
    [LogNormalCure(), LogNormalCure(shift=True), LogNormalCure(competing=True), DiscreteHazard()],
    ids=["lognormal", "shifted", "competing", "discrete"],
)
@pytest.mark.parametrize("n_draws", [0, 40])
def test_curves_by_point_are_the_curves_transposed_bit_for_bit(model: object, n_draws: int) -> None:
    """The nowcast's draws read the curves as ``(grid, draws)``: the same numbers as
    :meth:`curves` (not merely close: the nowcast's results must not move), from the same
    random stream."""
    d = heavy_censoring(n=4_000)
    m = model.fit(d)  # type: ignore[attr-defined]
    t = np.r_[0.0, np.geomspace(0.25, 2000.0, 97)]
    inc, fut, _ = m.curves(0, t, n_draws=n_draws, rng=np.random.default_rng(5))
    inc_t, fut_t = m.curves_by_point(0, t, n_draws=n_draws, rng=np.random.default_rng(5))
    assert inc_t.flags.c_contiguous and fut_t.flags.c_contiguous
    for a, b in ((inc_t, inc.T), (fut_t, fut.T)):
        assert np.array_equal(a, b, equal_nan=True)
