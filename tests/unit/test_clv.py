"""Simple CLV and the incrementally learned BG/NBD model."""

from __future__ import annotations

import copy
import math
import random

import orjson
import pytest

from models.clv import (
    PARAM_BOUNDS,
    START_PARAMS,
    ClvError,
    Params,
    bgnbd_gradient,
    bgnbd_learn,
    bgnbd_loglik,
    bgnbd_params,
    expected_purchases,
    hyp2f1,
    new_bgnbd,
    p_alive,
    simple_clv,
)

PARAMS: list[Params] = [
    (0.25, 30.0, 0.8, 2.5),
    (0.6, 45.0, 1.2, 3.0),
    (2.0, 90.0, 0.3, 1.5),
    (0.1, 5.0, 1.0, 4.0),  # a = 1: the removable singularity of the closed form
]
Customer = tuple[int, float, float, int]  # x, t_x, T, purchases in the holdout


def test_simple_clv_is_aov_times_frequency_times_lifespan() -> None:
    assert simple_clv(40.0, 3.0, 2.5) == pytest.approx(300.0)
    assert simple_clv(25.0, 4.0, 0.0) == 0.0


def direct_likelihood(params: Params, x: int, t_x: float, big_t: float) -> float:
    """FHL (2005) eq. 6 as printed, with Beta and Gamma functions (no logs)."""
    r, alpha, a, b = params

    def beta(p: float, q: float) -> float:
        return math.gamma(p) * math.gamma(q) / math.gamma(p + q)

    common = math.gamma(r + x) * math.pow(alpha, r) / math.gamma(r)
    value = beta(a, b + x) / beta(a, b) * common / math.pow(alpha + big_t, r + x)
    if x > 0:
        value += beta(a + 1, b + x - 1) / beta(a, b) * common / math.pow(alpha + t_x, r + x)
    return value


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize(
    ("x", "t_x", "big_t"), [(0, 0.0, 200.0), (1, 3.0, 40.0), (7, 150.0, 365.0)]
)
def test_loglik_matches_the_printed_formula(
    params: Params, x: int, t_x: float, big_t: float
) -> None:
    expected = math.log(direct_likelihood(params, x, t_x, big_t))
    assert bgnbd_loglik(params, x, t_x, big_t) == pytest.approx(expected, rel=1e-10)


def simpson(values: list[float], step: float) -> float:
    return step / 3 * (values[0] + values[-1] + 4 * sum(values[1:-1:2]) + 2 * sum(values[2:-1:2]))


def test_likelihood_is_a_probability_distribution_over_histories() -> None:
    # P(x = 0) + Σ_x ∫ L(x, t_x, T) · t_x^(x−1)/(x−1)! dt_x = 1: the factor is the
    # volume of the earlier purchase times, which the likelihood leaves out.
    params, big_t, intervals = (0.5, 20.0, 0.8, 2.5), 100.0, 400
    step = big_t / intervals
    total = math.exp(bgnbd_loglik(params, 0, 0.0, big_t))
    for x in range(1, 80):
        density = [
            math.exp(
                bgnbd_loglik(params, x, i * step, big_t)
                + (x - 1) * math.log(max(i * step, 1e-300))
                - math.lgamma(x)
            )
            for i in range(intervals + 1)
        ]
        total += simpson(density, step)
    assert total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("params", PARAMS)
def test_analytic_gradient_matches_central_differences(params: Params) -> None:
    h = 1e-6
    for x, t_x, big_t in [(0, 0.0, 120.0), (3, 80.0, 300.0), (25, 290.0, 300.0)]:
        grad = bgnbd_gradient(params, x, t_x, big_t)
        for i in range(4):
            up = [v * math.exp(h if j == i else 0.0) for j, v in enumerate(params)]
            down = [v * math.exp(-h if j == i else 0.0) for j, v in enumerate(params)]
            numeric = (
                bgnbd_loglik((up[0], up[1], up[2], up[3]), x, t_x, big_t)
                - bgnbd_loglik((down[0], down[1], down[2], down[3]), x, t_x, big_t)
            ) / (2 * h)
            assert grad[i] == pytest.approx(numeric, rel=1e-5, abs=1e-7)


def expected_by_integration(params: Params, x: int, t_x: float, big_t: float, t: float) -> float:
    """E[Y(t)] from its definition, without any hypergeometric function.

    Alive at T, λ ~ Gamma(r+x, α+T) and p ~ Beta(a, b+x) independently, and
    E[Y(t) | λ, p] = (1 − exp(−λpt)) / p. The λ-integral is closed; the
    p-integral is a midpoint rule after p = v^(4/a), which turns p^(a−1) dp
    into (4/a) v³ dv and leaves an integrand smooth enough at v = 0.
    """
    r, alpha, a, b = params
    k, beta_, u, n = r + x, b + x, t / (alpha + big_t), 20_000
    log_beta = math.lgamma(a) + math.lgamma(beta_) - math.lgamma(a + beta_)
    total = 0.0
    for i in range(n):
        v = (i + 0.5) / n
        p = v ** (4 / a)
        total += v**3 * (1 - p) ** (beta_ - 1) * -math.expm1(-k * math.log1p(p * u)) / p
    if_alive = total / n * 4 / a / math.exp(log_beta)
    return p_alive(params, x, t_x, big_t) * if_alive


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize(
    ("x", "t_x", "big_t", "horizon"),
    [
        (0, 0.0, 0.0, 90.0),  # brand-new customer
        (0, 0.0, 0.0, 3 * 365.0),  # ... over three years: z close to 1
        (4, 200.0, 365.0, 90.0),
        (40, 360.0, 365.0, 30.0),
    ],
)
def test_expected_purchases_match_direct_integration(
    params: Params, x: int, t_x: float, big_t: float, horizon: float
) -> None:
    expected = expected_by_integration(params, x, t_x, big_t, horizon)
    assert expected_purchases(params, x, t_x, big_t, horizon) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("horizon", [90.0, 5_000.0])
def test_expected_purchases_are_continuous_through_a_equal_one(horizon: float) -> None:
    values = [
        expected_purchases((0.4, 20.0, a, 2.0), 0, 0.0, 0.0, horizon)
        for a in (1 - 1e-9, 1.0, 1 + 1e-9, 1 - 1e-7, 1 + 1e-7)
    ]
    assert max(values) - min(values) < 1e-6 * values[1]


def test_expected_purchases_grow_with_the_horizon_from_zero() -> None:
    state = new_bgnbd()
    assert expected_purchases(state, 3, 100.0, 200.0, 0.0) == 0.0
    assert expected_purchases(state, 3, 100.0, 200.0, 1e-6) == pytest.approx(0.0, abs=1e-6)
    values = [expected_purchases(state, 3, 100.0, 200.0, h) for h in (1, 7, 30, 90, 365, 3650)]
    assert values == sorted(values)
    assert len(set(values)) == len(values)


def test_frequent_recent_buyer_is_expected_to_buy_more_than_a_lapsed_one() -> None:
    state = new_bgnbd()
    frequent_recent = expected_purchases(state, 12, 360.0, 365.0, 90.0)
    lapsed = expected_purchases(state, 12, 100.0, 365.0, 90.0)
    occasional = expected_purchases(state, 1, 300.0, 365.0, 90.0)
    assert frequent_recent > occasional > lapsed > 0


def test_p_alive_falls_with_the_gap_since_the_last_purchase() -> None:
    state = new_bgnbd()
    assert p_alive(state, 0, 0.0, 500.0) == 1.0
    gaps = [p_alive(state, 5, t_x, 365.0) for t_x in (365.0, 300.0, 200.0, 100.0)]
    assert gaps == sorted(gaps, reverse=True)
    assert 0.0 < gaps[-1] < gaps[0] <= 1.0
    assert p_alive(state, 5, 100.0, 200.0) > p_alive(state, 5, 100.0, 400.0)


def test_hyp2f1_matches_closed_forms_including_near_one_and_negative_z() -> None:
    for z in (0.3, 0.9, 0.999, 1 - 1e-9, -0.5, -20.0):
        assert hyp2f1(1.0, 1.0, 2.0, z) == pytest.approx(-math.log1p(-z) / z, rel=1e-9)
        assert hyp2f1(0.7, 2.5, 2.5, z) == pytest.approx((1 - z) ** -0.7, rel=1e-9)
    for s in (0.3, 0.8, 0.99):
        assert hyp2f1(0.5, 0.5, 1.5, s * s) == pytest.approx(math.asin(s) / s, rel=1e-9)
    # Gauss's sum at z -> 1 for c - a - b > 0.
    a, b, c = 0.4, 1.3, 3.1
    gauss = math.gamma(c) * math.gamma(c - a - b) / (math.gamma(c - a) * math.gamma(c - b))
    assert hyp2f1(a, b, c, 1 - 1e-12) == pytest.approx(gauss, rel=1e-9)


def simulate(rng: random.Random, customers: int, params: Params) -> list[Customer]:
    """BG/NBD customers: first purchase in a 365-day window, then a 90-day holdout."""
    r, alpha, a, b = params
    rows: list[Customer] = []
    for _ in range(customers):
        rate = rng.gammavariate(r, 1 / alpha)
        dropout = rng.betavariate(a, b)
        big_t = 365.0 - rng.uniform(0.0, 364.0)  # days from first purchase to cutoff
        t, x, t_x, holdout = 0.0, 0, 0.0, 0
        while True:
            t += rng.expovariate(rate)
            if t > big_t + 90.0:
                break
            if t <= big_t:
                x, t_x = x + 1, t
            else:
                holdout += 1
            if rng.random() < dropout:  # drops out right after this purchase
                break
        rows.append((x, t_x, big_t, holdout))
    return rows


def learn(rows: list[Customer], passes: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    state = new_bgnbd()
    order = list(range(len(rows)))
    for _ in range(passes):
        rng.shuffle(order)
        for i in order:
            x, t_x, big_t, _ = rows[i]
            bgnbd_learn(state, x, t_x, big_t)
    return state


def test_incremental_learning_recovers_a_simulated_population() -> None:
    truth: Params = (0.7, 10.0, 0.5, 5.0)  # frequent buyers: ~25 purchases a year while alive
    rows = simulate(random.Random(42), 3_000, truth)
    state = learn(rows, passes=3, seed=7)
    assert state["steps"] == 3 * len(rows)

    def loglik(params: Params) -> float:
        return sum(bgnbd_loglik(params, x, t_x, big_t) for x, t_x, big_t, _ in rows)

    learned = bgnbd_params(state)
    assert loglik(learned) > loglik(START_PARAMS) + 1_000
    assert loglik(learned) > loglik(truth) - 50

    def mean_prediction(params: Params) -> float:
        return sum(expected_purchases(params, x, t, bt, 90.0) for x, t, bt, _ in rows) / len(rows)

    actual = sum(holdout for *_, holdout in rows) / len(rows)
    assert abs(mean_prediction(learned) - actual) < 0.25 * actual
    # The starting parameters were more than 25 % off: the learning did the work.
    assert abs(mean_prediction(START_PARAMS) - actual) > 0.25 * actual


def test_learning_is_deterministic_and_survives_json_round_trips() -> None:
    rows = simulate(random.Random(1), 300, (0.5, 20.0, 0.8, 3.0))
    straight = learn(rows, passes=1, seed=3)
    assert learn(rows, passes=1, seed=3) == straight
    # The same steps, with the state stored and reloaded (as a Faust table does) each time.
    stored: object = new_bgnbd()
    order = list(range(len(rows)))
    random.Random(3).shuffle(order)
    for i in order:
        x, t_x, big_t, _ = rows[i]
        assert isinstance(stored, dict)
        bgnbd_learn(stored, x, t_x, big_t)
        stored = orjson.loads(orjson.dumps(stored))
    assert stored == straight
    assert expected_purchases(straight, 2, 50.0, 80.0, 90.0) == expected_purchases(
        orjson.loads(orjson.dumps(straight)), 2, 50.0, 80.0, 90.0
    )


def test_parameters_stay_in_their_box_under_extreme_histories() -> None:
    state = new_bgnbd()
    for i in range(3_000):
        if i % 2:
            bgnbd_learn(state, 5_000, 1.0, 1.0, lr=1.0)
        else:
            bgnbd_learn(state, 0, 0.0, 50_000.0, lr=1.0)
        for value, (lo, hi) in zip(bgnbd_params(state), PARAM_BOUNDS, strict=True):
            assert lo * (1 - 1e-12) <= value <= hi * (1 + 1e-12)
    assert math.isfinite(expected_purchases(state, 3, 10.0, 20.0, 90.0))


def test_invalid_histories_are_rejected() -> None:
    state = new_bgnbd()
    before = copy.deepcopy(state)
    for x, t_x, big_t in [
        (-1, 0.0, 10.0),
        (2, 20.0, 10.0),
        (1, math.nan, 10.0),
        (1, 1.0, math.inf),
    ]:
        with pytest.raises(ClvError):
            bgnbd_learn(state, x, t_x, big_t)
        with pytest.raises(ValueError):  # ClvError is a ValueError too
            expected_purchases(state, x, t_x, big_t, 90.0)
    with pytest.raises(ClvError):
        expected_purchases(state, 1, 1.0, 10.0, -5.0)
    with pytest.raises(ClvError):
        bgnbd_params((1.0, -2.0, 1.0, 1.0))
    assert state == before
