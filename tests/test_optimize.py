"""The optimizer wrapper: bounds, boundary snapping, restarts, never NaN."""
import numpy as np

from bigmixed.optimize import minimize_theta


def test_finds_interior_minimum():
    rec = minimize_theta(lambda t: (t[0] - 1.3) ** 2 + (t[1] + 0.4) ** 2 + 5, np.array([1.0, 0.0]),
                         np.array([0.0, -np.inf]))
    np.testing.assert_allclose(rec.theta, [1.3, -0.4], atol=1e-6)
    assert rec.converged and rec.objective == rec.objective  # finite


def test_minimum_beyond_the_bound_ends_exactly_on_it():
    rec = minimize_theta(lambda t: (t[0] + 0.5) ** 2, np.array([1.0]), np.array([0.0]))
    assert rec.theta[0] == 0.0
    assert rec.objective == 0.25


def test_nan_and_inf_are_never_returned():
    def f(t):
        return np.nan if t[0] > 2 else (t[0] - 1.0) ** 2
    rec = minimize_theta(f, np.array([1.5]), np.array([0.0]))
    assert np.isfinite(rec.objective)
    np.testing.assert_allclose(rec.theta, [1.0], atol=1e-5)
