"""Customer lifetime value: the simple formula, and a BG/NBD model learned incrementally.

*Simple CLV* is ``docs/definitions.md``'s AOV × purchases per year × expected lifespan.

*Model-based CLV* uses the BG/NBD model (Fader, Hardie & Lee, "Counting your
customers the easy way", Marketing Science 24(2), 2005). While alive a
customer buys at rate λ ~ Gamma(r, α) (α is a rate parameter, so it is
measured in the time unit — here *days*); after each repeat purchase the
customer drops out with probability p ~ Beta(a, b). A customer's history is
summarised by ``x`` (repeat purchases: orders after the first), ``t_x`` (day
of the last purchase, counted from the first) and ``T`` (days from the first
purchase to now).

The population parameters are learned *incrementally*: each call of
:func:`bgnbd_learn` takes one clipped stochastic-gradient ascent step on the
log-parameters for one customer's history, so there is no batch fit and the
state is a small plain dict, ``{"log_params": [log r, log α, log a, log b],
"steps": n}``, that round-trips through JSON unchanged. The likelihood
assumes each ``T`` is chosen independently of the customer's purchases (e.g.
"now" in a periodic sweep over customers), not at the moment of a purchase.

>>> simple_clv(aov=40.0, purchases_per_year=3.0, expected_lifespan_years=2.5)
300.0
>>> state = new_bgnbd()
>>> for _ in range(3):
...     bgnbd_learn(state, x=6, t_x=200.0, T=220.0)
>>> state["steps"]
3

Two customers with 6 repeat purchases in 220 days, the last 20 and 100 days ago:

>>> [round(expected_purchases(state, 6, t_x, 220.0, 90.0), 2) for t_x in (200.0, 120.0)]
[1.74, 0.58]
>>> [round(p_alive(state, 6, t_x, 220.0), 2) for t_x in (200.0, 120.0)]
[0.85, 0.28]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from models.state import BgNbdState as BgNbdState  # declared in models.state, re-exported
from schemas.errors import SegstreamError

Params = tuple[float, float, float, float]

# Starting point: the CDNOW estimates of Fader, Hardie & Lee (2005), r = 0.243,
# α = 4.414 *weeks*, a = 0.793, b = 2.426, rounded and with α converted to days
# (α scales with the time unit: 4.414 weeks ≈ 31 days). That is a plausible
# retail population — mean purchase rate r/α ≈ 3 a year, strongly
# heterogeneous (r < 1), and a mean dropout chance a/(a+b) ≈ 0.24 per repeat
# purchase — from which learning moves smoothly rather than from an arbitrary
# corner of the parameter space.
START_PARAMS: Final[Params] = (0.25, 30.0, 0.8, 2.5)
# Sane box for (r, α, a, b). α is a time scale in days: a population buying
# regularly about once a year (r large) needs α far above 1e3.
PARAM_BOUNDS: Final[tuple[tuple[float, float], ...]] = (
    (1e-3, 1e3),
    (1e-2, 1e5),
    (1e-3, 1e3),
    (1e-3, 1e3),
)
GRADIENT_CLIP: Final = 5.0  # largest Euclidean norm of one step's log-parameter gradient
SERIES_TOLERANCE: Final = 1e-15
# A 2F1 power series still running after this many terms (z close to 1) gives
# way to the 1 − z transformation, whose series converge quickly there.
DIRECT_TERMS: Final = 1_000
MAX_TERMS: Final = 100_000
# A sum whose largest term exceeds it this many times has lost too many digits.
_MAX_CANCELLATION: Final = 1e6
_QUADRATURE_TAIL: Final = 40.0  # quadrature range: integrand below e^-40 beyond it
_QUADRATURE_LEVELS: Final = 9
# Removable singularities (a = 1 in the expectation, integer c − a − b in the
# 1 − z transformation) are stepped around by linear interpolation this far on
# either side: interpolation error ~ gap², cancellation error ~ 1e-16 / gap
# (1e-6 balances the two; checked against mpmath to ~1e-7 even at 1 − z = 1e-10).
_SINGULARITY_GAP: Final = 1e-6

_LOG_BOUNDS: Final = tuple((math.log(lo), math.log(hi)) for lo, hi in PARAM_BOUNDS)


class ClvError(SegstreamError, ValueError):
    """Invalid BG/NBD inputs or parameters, or a series that did not converge."""


def simple_clv(aov: float, purchases_per_year: float, expected_lifespan_years: float) -> float:
    """CLV as average order value × purchases per year × expected lifespan in years.

    >>> simple_clv(25.0, 4.0, 3.0)
    300.0
    """
    return aov * purchases_per_year * expected_lifespan_years


def new_bgnbd() -> BgNbdState:
    """A BG/NBD state at :data:`START_PARAMS` (time unit: days).

    >>> [round(math.exp(v), 3) for v in new_bgnbd()["log_params"]]
    [0.25, 30.0, 0.8, 2.5]
    """
    return {"log_params": [math.log(v) for v in START_PARAMS], "steps": 0}


def bgnbd_params(state_or_params: Mapping[str, Any] | Sequence[float]) -> Params:
    """``(r, alpha, a, b)`` from a state dict or from the parameters themselves."""
    if isinstance(state_or_params, Mapping):
        values = [math.exp(float(v)) for v in state_or_params["log_params"]]
    else:
        values = [float(v) for v in state_or_params]
    if len(values) != 4 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ClvError(f"BG/NBD needs four positive finite parameters, got {values!r}")
    r, alpha, a, b = values
    return r, alpha, a, b


def _check_history(x: int, t_x: float, big_t: float) -> None:
    if x < 0 or x != int(x):
        raise ClvError(f"repeat purchases must be a whole number >= 0, got {x!r}")
    if not (math.isfinite(t_x) and math.isfinite(big_t) and 0.0 <= t_x <= big_t):
        raise ClvError(f"need 0 <= t_x <= T, got t_x={t_x!r}, T={big_t!r}")


def _check_horizon(horizon_days: float) -> None:
    if not (math.isfinite(horizon_days) and horizon_days >= 0):
        raise ClvError(f"horizon must be a finite number of days >= 0, got {horizon_days!r}")


def _log_odds_dead(params: Params, x: int, t_x: float, big_t: float) -> float:
    # log of (a / (b + x - 1)) * ((alpha + T) / (alpha + t_x)) ** (r + x): P(dead) / P(alive).
    r, alpha, a, b = params
    return (
        math.log(a)
        - math.log(b + x - 1)
        + (r + x) * (math.log(alpha + big_t) - math.log(alpha + t_x))
    )


def _logistic(v: float) -> float:
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


def bgnbd_loglik(params: Params, x: int, t_x: float, T: float) -> float:
    """Log-likelihood of one customer's history under BG/NBD (FHL 2005, eq. 6).

    Parameters
    ----------
    params
        ``(r, alpha, a, b)``; ``alpha`` in days.
    x
        Repeat purchases (orders after the first).
    t_x
        Days from the first purchase to the last one (0 when ``x == 0``).
    T
        Days from the first purchase to the end of observation.

    Returns
    -------
    ``log L``; for ``x > 0`` a density in ``t_x`` (up to the parameter-free
    factor ``t_x**(x-1) / (x-1)!``).
    """
    _check_history(x, t_x, T)
    r, alpha, a, b = params
    log_alive = (
        math.lgamma(r + x)
        - math.lgamma(r)
        + r * math.log(alpha)
        + math.lgamma(a + b)
        + math.lgamma(b + x)
        - math.lgamma(b)
        - math.lgamma(a + b + x)
        - (r + x) * math.log(alpha + T)
    )
    if x == 0:
        return log_alive
    # log(L_alive + L_dead) = log L_alive + log(1 + L_dead / L_alive)
    odds = _log_odds_dead(params, x, t_x, T)
    return log_alive + max(odds, 0.0) + math.log1p(math.exp(-abs(odds)))


def _digamma(v: float) -> float:
    # Recurrence up to v >= 6, then the asymptotic series (error < 1e-13); v > 0.
    result = 0.0
    while v < 6.0:
        result -= 1.0 / v
        v += 1.0
    f = 1.0 / (v * v)
    series = f * (1 / 12 - f * (1 / 120 - f * (1 / 252 - f * (1 / 240 - f / 132))))
    return result + math.log(v) - 0.5 / v - series


def bgnbd_gradient(params: Params, x: int, t_x: float, T: float) -> Params:
    """Analytic gradient of :func:`bgnbd_loglik` with respect to the log-parameters."""
    _check_history(x, t_x, T)
    r, alpha, a, b = params
    # Posterior weights of "still alive" and "dropped out after the last purchase".
    w_dead = _logistic(_log_odds_dead(params, x, t_x, T)) if x > 0 else 0.0
    w_alive = 1.0 - w_dead
    log_horizon = w_alive * math.log(alpha + T) + w_dead * math.log(alpha + t_x)
    inv_horizon = w_alive / (alpha + T) + w_dead / (alpha + t_x)
    psi_ab, psi_abx = _digamma(a + b), _digamma(a + b + x)
    d_r = _digamma(r + x) - _digamma(r) + math.log(alpha) - log_horizon
    d_alpha = r / alpha - (r + x) * inv_horizon
    d_a = psi_ab - psi_abx + w_dead / a
    d_b = psi_ab + _digamma(b + x) - _digamma(b) - psi_abx
    if x > 0:
        d_b -= w_dead / (b + x - 1)
    return r * d_r, alpha * d_alpha, a * d_a, b * d_b


def bgnbd_learn(state: BgNbdState, x: int, t_x: float, T: float, lr: float = 0.01) -> None:
    """One stochastic gradient ascent step on the log-parameters, in place.

    The gradient is analytic, its norm clipped to :data:`GRADIENT_CLIP` (one
    odd customer cannot throw the model off), and each parameter is kept in
    :data:`PARAM_BOUNDS`. With a constant ``lr`` the parameters keep moving a
    little around the optimum; that is what lets them follow a changing base.

    Parameters
    ----------
    state
        From :func:`new_bgnbd`, possibly after a JSON round trip.
    x, t_x, T
        One customer's history, as in :func:`bgnbd_loglik`.
    lr
        Step size on the log-parameters.
    """
    params = bgnbd_params(state)
    grad = bgnbd_gradient(params, x, t_x, T)
    norm = math.hypot(*grad)
    scale = lr * min(1.0, GRADIENT_CLIP / norm) if norm > 0 else 0.0
    state["log_params"] = [
        min(max(float(log_value) + scale * g, lo), hi)
        for log_value, g, (lo, hi) in zip(state["log_params"], grad, _LOG_BOUNDS, strict=True)
    ]
    state["steps"] = int(state["steps"]) + 1


def p_alive(
    state_or_params: Mapping[str, Any] | Sequence[float], x: int, t_x: float, T: float
) -> float:
    """Probability that the customer is still alive (has not dropped out) at ``T``.

    ``1 / (1 + (a / (b + x - 1)) * ((alpha + T) / (alpha + t_x)) ** (r + x))``
    for ``x > 0``; 1 for ``x == 0`` (no dropout before a repeat purchase).
    """
    _check_history(x, t_x, T)
    if x == 0:
        return 1.0
    return _logistic(-_log_odds_dead(bgnbd_params(state_or_params), x, t_x, T))


def expected_purchases(
    state_or_params: Mapping[str, Any] | Sequence[float],
    x: int,
    t_x: float,
    T: float,
    horizon_days: float,
) -> float:
    """Expected purchases in the next ``horizon_days``, ``E[Y(t) | x, t_x, T]`` (FHL eq. 10).

    ``E = P(alive) · (a+b+x−1)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x) ·
    2F1(r+x, b+x; a+b+x−1; z)]`` with ``z = t / (α+T+t)`` in [0, 1),
    evaluated in an equivalent form without the removable singularity at
    ``a = 1`` (see :func:`_expected_if_alive`).

    Parameters
    ----------
    state_or_params
        A state from :func:`new_bgnbd` or ``(r, alpha, a, b)``.
    x, t_x, T
        The customer's history, as in :func:`bgnbd_loglik`.
    horizon_days
        Length ``t`` of the future window; 0 gives 0.
    """
    _check_history(x, t_x, T)
    _check_horizon(horizon_days)
    params = bgnbd_params(state_or_params)
    alive = 1.0 if x == 0 else _logistic(-_log_odds_dead(params, x, t_x, T))
    return alive * _expected_if_alive(params, x, T, horizon_days)


def p_no_purchase(
    state_or_params: Mapping[str, Any] | Sequence[float],
    x: int,
    t_x: float,
    T: float,
    horizon_days: float,
) -> float:
    """Probability of no purchase in the next ``horizon_days``: churn over that horizon.

    A customer who has dropped out buys nothing; one still alive at ``T``
    stays alive until their next purchase (dropout follows purchases), so
    buys nothing in ``t`` days with probability ``e^(−λt)``, and with
    ``λ | alive, data ~ Gamma(r+x, α+T)``:
    ``P = 1 − P(alive) · (1 − ((α+T)/(α+T+t))^(r+x))``.

    >>> state = new_bgnbd()
    >>> round(p_no_purchase(state, 6, 200.0, 220.0, 90.0), 3)  # bought 20 days ago
    0.276
    >>> round(p_no_purchase(state, 6, 120.0, 220.0, 90.0), 3)  # 100 days ago
    0.763
    """
    _check_history(x, t_x, T)
    _check_horizon(horizon_days)
    params = bgnbd_params(state_or_params)
    r, alpha, _, _ = params
    alive = 1.0 if x == 0 else _logistic(-_log_odds_dead(params, x, t_x, T))
    quiet_if_alive = math.exp((r + x) * (math.log(alpha + T) - math.log(alpha + T + horizon_days)))
    return 1.0 - alive * (1.0 - quiet_if_alive)


def median_days_to_next_purchase(
    state_or_params: Mapping[str, Any] | Sequence[float], x: int, t_x: float, T: float
) -> float:
    """Days from ``T`` until the next purchase is as likely as not, if the customer is alive.

    Alive, the customer buys nothing in ``t`` days with probability
    ``((α+T)/(α+T+t))^(r+x)``; that is one half at
    ``t = (α+T)·(2^(1/(r+x)) − 1)``. Read it with :func:`p_alive`: a customer
    more likely gone than alive may never buy again.

    >>> round(median_days_to_next_purchase(new_bgnbd(), 6, 200.0, 220.0), 1)
    29.3
    """
    _check_history(x, t_x, T)
    r, alpha, _, _ = bgnbd_params(state_or_params)
    return (alpha + T) * math.expm1(math.log(2) / (r + x))


def _expected_if_alive(params: Params, x: int, big_t: float, t: float) -> float:
    """E[Y(t)] for a customer alive at T: λ | data ~ Gamma(r+x, α+T), p ~ Beta(a, b+x).

    With ``ε = a − 1``, ``c = a+b+x−1`` and ``H = 2F1(a+b−1−r, ε; c; z)``,
    Euler's transformation turns FHL's bracket into ``(c/ε)·[1 − (1−z)^ε·H]``,
    and ``c·(H − 1)/ε`` is a power series with no division by ε or c:
    ``Σ_{n≥1} (a+b−1−r)_n (a)_{n−1} / ((c+1)_{n−1} n!) zⁿ``. Its terms do not
    grow with ``x`` and fall like ``n^−(r+x+2−a) zⁿ``. Methods, in order:

    1. that series, if it converges within ``DIRECT_TERMS`` terms without
       cancellation (it is slow only for ``z`` near 1 with few repeat
       purchases, and cancels only when ``r`` is far above ``a + b``);
    2. the ``1 − z`` transformation of ``H``, if well conditioned;
    3. the defining integral over the dropout probability,
       ``E_p[(1 − (1 + p·t/(α+T))^−(r+x)) / p]`` with ``p ~ Beta(a, b+x)``, by
       double-exponential quadrature (slower, but works for any parameters).
    """
    r, alpha, a, b = params
    if t <= 0:
        return 0.0
    z = t / (alpha + big_t + t)
    log_w = -math.log1p(t / (alpha + big_t))  # log(1 - z), exact for small z
    eps = a - 1.0
    c = a + b + x - 1.0
    top = a + b - 1.0 - r
    lead = c * (-math.expm1(eps * log_w) / eps if eps != 0 else -log_w)
    # Digits lost in the series matter relative to what it is compared with.
    scale = abs(lead) * math.exp(min(-eps * log_w, 700.0))
    tail = _series(top, eps, c, z, top * z, DIRECT_TERMS, scale)
    if tail is not None:
        return lead - math.exp(eps * log_w) * tail
    near_one = _expected_near_one(r, a, b, x, z, log_w)
    if near_one is not None:
        return near_one
    return _expected_by_quadrature(r + x, a, b + x, t / (alpha + big_t))


def _expected_near_one(
    r: float, a: float, b: float, x: int, z: float, log_w: float
) -> float | None:
    # (c/ε)·[1 − (1−z)^ε·H] with H by the 1 − z transformation; removable
    # singularities at ε = 0 and c = 0 are stepped around.
    eps = a - 1.0
    c = a + b + x - 1.0
    if abs(eps) < _SINGULARITY_GAP:
        return _interpolate_across(lambda a_: _expected_near_one(r, a_, b, x, z, log_w), a, 1.0)
    if abs(c) < _SINGULARITY_GAP:
        return _interpolate_across(
            lambda b_: _expected_near_one(r, a, b_, x, z, log_w), b, 1.0 - a - x
        )
    h = _hyp2f1_near_one(a + b - 1.0 - r, eps, c, z)
    if h is None:
        return None
    return c / eps * (1.0 - math.exp(eps * log_w) * h)


def _interpolate_across(
    f: Callable[[float], float | None], value: float, pole: float
) -> float | None:
    # Called within one gap of the pole; evaluates two gaps either side of it.
    lo, hi = pole - 2 * _SINGULARITY_GAP, pole + 2 * _SINGULARITY_GAP
    f_lo, f_hi = f(lo), f(hi)
    if f_lo is None or f_hi is None:
        return None
    return f_lo + (value - lo) / (hi - lo) * (f_hi - f_lo)


def _log1p_exp(v: float) -> float:
    return v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))


def _expected_by_quadrature(k: float, a: float, beta: float, u: float) -> float:
    """``E_p[(1 − (1 + p·u)^−k) / p]`` for ``p ~ Beta(a, beta)``, by tanh-sinh quadrature.

    ``p = 1 / (1 + exp(−π sinh τ))``; the trapezoid rule in τ is refined until
    two levels agree. The range of τ is cut where the integrand, bounded by
    ``k·u · p^a (1−p)^beta / B(a, beta)``, has fallen below ``e^−40``.
    """
    log_norm = math.lgamma(a) + math.lgamma(beta) - math.lgamma(a + beta)
    cut = _QUADRATURE_TAIL + max(0.0, -log_norm) + max(0.0, math.log(k * u))

    def integrand(tau: float) -> float:
        s = math.pi * math.sinh(tau)
        log_p, log_q = -_log1p_exp(-s), -_log1p_exp(s)  # log p, log(1 - p)
        p = math.exp(log_p)
        g = k * u if p * u < 1e-300 else -math.expm1(-k * math.log1p(p * u)) / p
        weight = math.exp(a * log_p + beta * log_q - log_norm) * math.pi * math.cosh(tau)
        return weight * g

    lo = -math.asinh(cut / (math.pi * a))
    hi = math.asinh(cut / (math.pi * beta))
    step = 0.5
    nodes = [lo + i * step for i in range(int((hi - lo) / step) + 1)]
    total = sum(integrand(tau) for tau in nodes)
    estimate = total * step
    for _ in range(_QUADRATURE_LEVELS):
        step /= 2
        total += sum(integrand(tau + step) for tau in nodes)
        nodes = [tau + offset for tau in nodes for offset in (0.0, step)]
        previous, estimate = estimate, total * step
        if abs(estimate - previous) <= 1e-11 * abs(estimate):
            return estimate
    raise ClvError("expected purchases: quadrature did not converge")


def _series(
    a: float, b: float, c: float, z: float, first: float, limit: int, scale: float = 1.0
) -> float | None:
    """``Σ_{n≥1} t_n`` with ``t_1 = first`` and the 2F1 term ratio
    ``t_{n+1}/t_n = (a+n)(b+n) / ((c+n)(n+1)) · z``.

    Stops once past every sign change of the factors and the remaining tail,
    bounded geometrically by the current ratio (or ``|z|``, whichever is
    larger), is below ``SERIES_TOLERANCE`` of the sum. ``None`` if that takes
    more than ``limit`` terms, or if terms cancelled so much (largest term
    over ``_MAX_CANCELLATION`` times the sum, or ``scale`` if larger: what the
    sum is added to) that it cannot be trusted.
    """
    total = term = first
    largest = abs(first)
    settled = max(0.0, -a, -b, -c) + 2.0
    n = 1
    while n < limit:
        ratio = (a + n) * (b + n) / ((c + n) * (n + 1)) * z
        term *= ratio
        total += term
        largest = max(largest, abs(term))
        n += 1
        bound = max(abs(ratio), abs(z))
        if n > settled and bound < 1.0:
            if term == 0 or abs(term) * bound <= SERIES_TOLERANCE * abs(total) * (1.0 - bound):
                return total if largest <= _MAX_CANCELLATION * max(abs(total), scale) else None
    return None


def _gamma_sign(v: float) -> float:
    return 1.0 if v > 0 or math.floor(v) % 2 == 0 else -1.0


def _is_pole(v: float) -> bool:
    return v <= 0 and v == math.floor(v)


def _gamma_ratio(num: Sequence[float], den: Sequence[float], log_factor: float) -> float:
    """``exp(log_factor) · Π Γ(num) / Π Γ(den)`` in log space; 0 if a ``den`` is a pole."""
    if any(_is_pole(v) for v in den):
        return 0.0
    sign, log_value = 1.0, log_factor
    for v in num:
        sign *= _gamma_sign(v)
        log_value += math.lgamma(v)
    for v in den:
        sign *= _gamma_sign(v)
        log_value -= math.lgamma(v)
    return sign * math.exp(log_value)


def hyp2f1(a: float, b: float, c: float, z: float) -> float:
    """Gauss hypergeometric function ``2F1(a, b; c; z)`` for real ``z < 1``.

    * The power series ``Σ (a)ₙ(b)ₙ/((c)ₙ n!) zⁿ`` with convergence control,
      when it converges within ``DIRECT_TERMS`` terms.
    * Otherwise — ``z`` close to 1 — the ``1 − z`` connection formula (DLMF
      15.8.4; its second term Euler-transformed so its terms stay bounded):
      two quickly converging power series in ``1 − z``. At integer
      ``c − a − b`` its two terms have cancelling poles; there it
      interpolates across them in ``c``.
    * ``z < 0``: Pfaff's transformation to ``z / (z − 1)`` in (0, 1).

    Checked against mpmath to ~1e-8 relative for parameters in [−3, 6] and
    ``1 − z`` down to 1e-8. Where cancellation would make the result
    untrustworthy (very large parameters), it raises :class:`ClvError`.

    >>> round(hyp2f1(1.0, 1.0, 2.0, 0.5), 12) == round(-math.log(0.5) / 0.5, 12)
    True
    """
    if not (math.isfinite(z) and z < 1.0):
        raise ClvError(f"hyp2f1 is implemented for real z < 1, got {z!r}")
    if _is_pole(c):
        raise ClvError(f"2F1 is undefined for c = {c!r}")
    if z < 0:
        return float((1.0 - z) ** -a) * hyp2f1(a, c - b, c, z / (z - 1.0))
    direct = _series(a, b, c, z, a * b / c * z, DIRECT_TERMS)
    if direct is not None:
        return 1.0 + direct
    value = _hyp2f1_near_one(a, b, c, z)
    if value is None:
        raise ClvError(f"2F1({a!r}, {b!r}; {c!r}; {z!r}) is too ill-conditioned here")
    return value


def _hyp2f1_near_one(a: float, b: float, c: float, z: float) -> float | None:
    # ``None`` when overflowing or when the two terms cancel too much.
    s = c - a - b
    step = s - round(s)
    if abs(step) < _SINGULARITY_GAP:
        return _interpolate_across(lambda c_: _hyp2f1_near_one(a, b, c_, z), c, c - step)
    w = 1.0 - z
    try:
        first = _gamma_ratio((c, s), (c - a, c - b), 0.0)
        # w^s Γ(c)Γ(−s)/(Γ(a)Γ(b)) · 2F1(c−a, c−b; 1+s; w), the 2F1 Euler-transformed
        # to z^(1−c) · 2F1(1−a, 1−b; 1+s; w).
        second = _gamma_ratio((c, -s), (a, b), s * math.log(w) + (1.0 - c) * math.log(z))
    except OverflowError:
        return None
    if first:
        tail = _series(a, b, 1.0 - s, w, a * b / (1.0 - s) * w, MAX_TERMS)
        first = math.nan if tail is None else first * (1.0 + tail)
    if second:
        tail = _series(
            1.0 - a, 1.0 - b, 1.0 + s, w, (1.0 - a) * (1.0 - b) / (1.0 + s) * w, MAX_TERMS
        )
        second = math.nan if tail is None else second * (1.0 + tail)
    value = first + second
    # Near integer s the terms grow like 1/sin(πs) and cancel by design
    # (see _SINGULARITY_GAP); any cancellation beyond that is ill-conditioning.
    spread = (abs(first) + abs(second)) * min(1.0, abs(math.sin(math.pi * s)))
    if not math.isfinite(value) or spread > _MAX_CANCELLATION * abs(value):
        return None
    return value
