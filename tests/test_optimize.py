"""The optimizer wrapper: bounds, boundary snapping, restarts, never NaN."""
import numpy as np

from bigmixed.fitting.optimize import minimize_theta


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
