"""The optimizer wrapper: bounds, boundary snapping, restarts, never NaN."""
import numpy as np

import pytest

from bigmixed.fitting.optimize import minimize_scalar, minimize_theta


def test_finds_interior_minimum():
    rec = minimize_theta(lambda t: (t[0] - 1.3) ** 2 + (t[1] + 0.4) ** 2 + 5, np.array([1.0, 0.0]),
                         np.array([0.0, -np.inf]))
    np.testing.assert_allclose(rec.params, [1.3, -0.4], atol=1e-6)
    assert rec.converged and rec.objective == rec.objective  # finite


def test_minimum_beyond_the_bound_ends_exactly_on_it():
    rec = minimize_theta(lambda t: (t[0] + 0.5) ** 2, np.array([1.0]), np.array([0.0]))
    assert rec.params[0] == 0.0
    assert rec.objective == 0.25


def test_nan_and_inf_are_never_returned():
    def f(t):
        return np.nan if t[0] > 2 else (t[0] - 1.0) ** 2
    rec = minimize_theta(f, np.array([1.5]), np.array([0.0]))
    assert np.isfinite(rec.objective)
    np.testing.assert_allclose(rec.params, [1.0], atol=1e-5)


# quasi_newton: Newton steps on an analytic gradient with BFGS updates of a starting Hessian

def _quadratic(center, A):
    def fun(x):
        d = x - center
        return float(0.5 * d @ A @ d + 0.25 * np.sum(d ** 4)) + 3.0

    def grad(x):
        d = x - center
        return A @ d + d ** 3
    return fun, grad


def test_quasi_newton_converges_from_a_rough_hessian():
    from bigmixed.fitting.optimize import quasi_newton

    center = np.array([1.2, 0.7, 0.3])
    A = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])
    fun, grad = _quadratic(center, A)
    rec = quasi_newton(fun, grad, np.array([1.0, 0.8, 0.35]), 1.3 * A, np.zeros(3))
    assert rec is not None and rec.converged
    np.testing.assert_allclose(rec.params, center, rtol=1e-7)
    assert rec.objective == fun(rec.params)
    assert rec.n_gradients >= 2 and rec.n_evaluations >= rec.n_gradients


def test_quasi_newton_gives_up_at_a_bound_or_without_curvature():
    from bigmixed.fitting.optimize import quasi_newton

    A = np.diag([2.0, 1.0])
    fun, grad = _quadratic(np.array([-0.5, 1.0]), A)  # minimum beyond theta_0 >= 0
    assert quasi_newton(fun, grad, np.array([0.3, 0.9]), A, np.zeros(2)) is None
    fun, grad = _quadratic(np.array([0.5, 1.0]), A)
    assert quasi_newton(fun, grad, np.array([0.3, 0.9]), -A, np.zeros(2)) is None  # not PD
    assert quasi_newton(fun, grad, np.array([0.0, 0.9]), A, np.zeros(2)) is None  # on the bound
    rec = quasi_newton(fun, grad, np.array([0.3, 0.9]), A, np.zeros(2))
    np.testing.assert_allclose(rec.params, [0.5, 1.0], rtol=1e-8)


def test_quasi_newton_interior_converges_and_reports_a_zero_variance():
    from bigmixed.fitting.optimize import quasi_newton_interior

    # f(a, b) = (a^2 - 0.49)^2 + (b - 0.3)^2 + a b: smooth in a diagonal element a, minimum inside
    def fun(x):
        a, b = x
        return (a * a - 0.49) ** 2 + (b - 0.3) ** 2 + 0.1 * a * b

    def grad(x):
        a, b = x
        return np.array([4 * a * (a * a - 0.49) + 0.1 * b, 2 * (b - 0.3) + 0.1 * a])

    diagonal = np.array([True, False])
    rec = quasi_newton_interior(fun, grad, np.array([1.0, 0.0]), diagonal, xtol=1e-10)
    assert rec.converged and rec.message == "converged"
    assert np.max(np.abs(grad(rec.params))) < 1e-8
    assert rec.objective == min(f for _, f in rec.history)
    # minimum on the boundary a = 0 (f depends on a^2: stationary there), never reached
    rec = quasi_newton_interior(lambda x: (x[0] ** 2 + 1) ** 2 + x[1] ** 2,
                                lambda x: np.array([4 * x[0] * (x[0] ** 2 + 1), 2 * x[1]]),
                                np.array([1.0, 0.5]), diagonal, min_diagonal=1e-3)
    assert not rec.converged and rec.message == "a variance near zero"
    assert 0 < rec.params[0] < 1e-3
    assert quasi_newton_interior(fun, grad, np.array([0.0, 0.0]), diagonal) is None


# minimize_scalar: successive parabolic interpolation over one theta >= lower (GLMM stage 1)

def _counted(f):
    calls = []

    def g(t):
        calls.append(float(t[0]))
        return f(float(t[0]))
    return g, calls


def _bin_1m_shape(t):
    # bin_1m's nAGQ = 0 criterion about its minimum (fitted to its values at 0.95 and 1.05)
    d = t - 0.9887
    return 4.6e4 * d ** 2 - 4.8e4 * d ** 3 + 2e5 * d ** 4


def _grid_minimum(f, lo, hi, n=200_001):
    x = np.linspace(lo, hi, n)
    v = np.array([f(t) for t in x])
    return x[np.argmin(v)]


@pytest.mark.parametrize("f, x0", [
    (lambda t: _bin_1m_shape(t) + 1.1e6, 1.0),
    (lambda t: np.cosh(3 * (t - 2.4)) + 0.1 * t, 1.0),  # the minimum outside the first bracket
    (lambda t: (t - 0.3) ** 4 + (t - 0.3) ** 2, 1.0),
    (lambda t: np.exp(t) + np.exp(-4 * t), 0.05),  # near the bound
])
def test_scalar_minimum_matches_a_dense_grid(f, x0):
    fun, calls = _counted(f)
    rec = minimize_scalar(fun, x0, 0.0, xtol_abs=1e-5)
    truth = _grid_minimum(f, 0.0, 5.0)
    assert rec is not None and rec.converged
    assert abs(rec.params[0] - truth) < 1e-4
    assert rec.objective == f(rec.params[0]) and rec.objective == min(f(t) for t in calls)
    assert rec.n_evaluations == len(set(calls)) == len(calls)  # (no point evaluated twice)


def test_scalar_minimum_near_the_start_takes_few_evaluations():
    fun, calls = _counted(_bin_1m_shape)
    rec = minimize_scalar(fun, 1.0, 0.0, xtol_abs=1e-5)
    assert abs(rec.params[0] - 0.9887) < 1e-5 and len(calls) <= 7


def test_scalar_minimum_beyond_the_bound_ends_on_it():
    fun, calls = _counted(lambda t: (t + 0.5) ** 2)
    rec = minimize_scalar(fun, 1.0, 0.0, xtol_abs=1e-5)
    assert rec.params[0] == 0.0 and rec.objective == 0.25
    assert rec.message == "minimum at the bound" and min(calls) == 0.0


def test_scalar_minimum_steps_back_from_non_finite_values():
    def f(t):
        return np.inf if t > 1.02 else (t - 0.7) ** 2
    rec = minimize_scalar(lambda t: f(t[0]), 1.0, 0.0, xtol_abs=1e-6)
    assert abs(rec.params[0] - 0.7) < 1e-5


def test_scalar_gives_up_without_a_finite_value_or_within_maxeval():
    assert minimize_scalar(lambda t: np.nan, 1.0, 0.0, xtol_abs=1e-5) is None
    # a minimum it cannot reach in 5 evaluations: None (the caller falls back to BOBYQA)
    assert minimize_scalar(lambda t: (t[0] - 40.0) ** 2, 1.0, 0.0, xtol_abs=1e-5, maxeval=5) is None
