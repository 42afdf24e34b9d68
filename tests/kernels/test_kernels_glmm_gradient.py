"""kernels/glmm_gradient.py against a slow, obvious reference: the exact Laplace criterion of a
one-factor scalar random-effect GLMM computed level by level in NumPy (modes by Newton's
method on each level's penalized deviance), differentiated by central differences."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bigmixed.kernels.glm import (BINOMIAL, CLOGLOG, LOG, LOGIT, POISSON, PROBIT, _dev_resid,
                                  _link, _variance)
from bigmixed.kernels.glm import row_derivatives
from bigmixed.kernels.glmm_gradient import blockdiag_laplace_gradient


def reference_criterion(t, beta, data):
    """sum dev + sum u^2 + sum log(1 + t^2 sum w z^2), the modes by Newton per level."""
    X, z, y, pw, off, codes, fam, link = data
    total = 0.0
    for g in np.unique(codes):
        rows = np.flatnonzero(codes == g)
        f = off[rows] + X[rows] @ beta

        def parts(u):
            eta = f + t * z[rows] * u
            mu = np.array([_link(e, link)[0] for e in eta])
            me = np.array([_link(e, link)[1] for e in eta])
            v = np.array([_variance(m, fam) for m in mu])
            dev = sum(_dev_resid(a, b, c, fam) for a, b, c in zip(y[rows], mu, pw[rows]))
            w = pw[rows] * me * me / v
            return dev + u * u, w

        u = 0.0
        for _ in range(200):  # Newton on the level's penalized deviance, by differences
            h = 1e-5
            f0, fp, fm = parts(u)[0], parts(u + h)[0], parts(u - h)[0]
            d1, d2 = (fp - fm) / (2 * h), (fp - 2 * f0 + fm) / (h * h)
            step = -d1 / max(d2, 1e-8)
            u += step
            if abs(step) < 1e-12:
                break
        pdev, w = parts(u)
        total += pdev + math.log(1.0 + t * t * np.sum(w * z[rows] ** 2))
    return total


def make_data(fam, link, unit, seed=0, n_levels=6):
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(n_levels), rng.integers(2, 9, n_levels))
    n = len(codes)
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.uniform(0, 2, n)])
    z = np.ones(n) if unit else rng.uniform(0.5, 1.5, n)
    off = rng.normal(scale=0.2, size=n)
    if fam == BINOMIAL:
        pw = rng.integers(1, 6, n).astype(float)
        y = rng.binomial(pw.astype(int), 0.4) / pw
    else:
        pw = np.ones(n)
        y = rng.poisson(1.5, n).astype(float)
    return X, z, y, pw, off, codes, fam, link


def kernel_gradient(t, beta, data, u):
    X, z, y, pw, off, codes, fam, link = data
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    eta_fixed = np.ascontiguousarray((off + X @ beta)[order])
    Z = np.ascontiguousarray(z[order][:, None])
    g = np.empty(1 + X.shape[1])
    blockdiag_laplace_gradient(indptr, eta_fixed, X, order, Z, bool(np.all(z == 1)),
                               np.ascontiguousarray(y[order]), np.ascontiguousarray(pw[order]),
                               t, fam, link, u, g)
    return g


def reference_modes(t, beta, data):
    X, z, y, pw, off, codes, fam, link = data
    from scipy.optimize import minimize_scalar

    out = []
    for g in np.unique(codes):
        rows = np.flatnonzero(codes == g)
        f = off[rows] + X[rows] @ beta

        def pdev(u):
            eta = f + t * z[rows] * u
            return sum(_dev_resid(a, _link(e, link)[0], c, fam)
                       for a, e, c in zip(y[rows], eta, pw[rows])) + u * u

        out.append(minimize_scalar(pdev, bracket=(-1, 1), tol=1e-12).x)
    return np.array(out)


CASES = [(BINOMIAL, LOGIT, True), (BINOMIAL, PROBIT, True), (BINOMIAL, CLOGLOG, False),
         (POISSON, LOG, True), (POISSON, LOG, False), (BINOMIAL, LOGIT, False)]


@pytest.mark.parametrize("fam,link,unit", CASES)
def test_gradient_equals_differences_of_the_reference_criterion(fam, link, unit):
    data = make_data(fam, link, unit, seed=fam * 10 + link)
    t, beta = 0.8, np.array([-0.3, 0.2, 0.1])
    u = reference_modes(t, beta, data)
    g = kernel_gradient(t, beta, data, u)
    x = np.concatenate(([t], beta))
    num = np.empty_like(x)
    for a in range(len(x)):
        h = 1e-4
        e = np.zeros_like(x)
        e[a] = h
        num[a] = (reference_criterion(x[0] + e[0], x[1:] + e[1:], data)
                  - reference_criterion(x[0] - e[0], x[1:] - e[1:], data)) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=2e-4, atol=2e-5)
    # the same bits on every call
    np.testing.assert_array_equal(g, kernel_gradient(t, beta, data, u))


@pytest.mark.parametrize("fam,link", [(BINOMIAL, LOGIT), (BINOMIAL, PROBIT), (BINOMIAL, CLOGLOG),
                                      (POISSON, LOG)])
def test_row_derivatives_are_the_derivatives_of_the_deviance_and_the_weight(fam, link):
    def dev(eta, y, w):
        return _dev_resid(y, _link(eta, link)[0], w, fam)

    def weight(eta, w):
        mu, me = _link(eta, link)
        return w * me * me / _variance(mu, fam)

    for eta, y in ((0.3, 1.0), (-0.7, 0.0), (1.1, 0.4 if fam == BINOMIAL else 3.0)):
        d1, d2, w, w1 = row_derivatives(eta, y, 2.0, fam, link)
        h = 1e-5
        assert d1 == pytest.approx((dev(eta + h, y, 2) - dev(eta - h, y, 2)) / (2 * h), rel=1e-6)
        h2 = 1e-4
        assert d2 == pytest.approx((dev(eta + h2, y, 2) - 2 * dev(eta, y, 2) + dev(eta - h2, y, 2))
                                   / (h2 * h2), rel=1e-4)
        assert w == pytest.approx(weight(eta, 2.0), rel=1e-14)
        assert w1 == pytest.approx((weight(eta + h, 2) - weight(eta - h, 2)) / (2 * h), rel=1e-6)


def sorted_inputs(t, beta, data, n_levels_pad=0):
    X, z, y, pw, off, codes, fam, link = data
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    eta_fixed = np.ascontiguousarray((off + X @ beta)[order])
    Z = np.ascontiguousarray(z[order][:, None])
    return (indptr, eta_fixed, X, order, Z, bool(np.all(z == 1)), np.ascontiguousarray(y[order]),
            np.ascontiguousarray(pw[order]))


def fused(t, beta, data, u0, step_tol=0.0, serial=False, with_gradient=True):
    from bigmixed.kernels.glmm_gradient import (blockdiag_laplace_fused,
                                                blockdiag_laplace_fused_serial)

    indptr, eta_fixed, X, order, Z, unit, ys, pws = sorted_inputs(t, beta, data)
    fam, link = data[6], data[7]
    u = np.array(u0, dtype=np.float64).reshape(-1, 1).copy()
    L = np.empty((len(u), 1, 1))
    g = np.empty(1 + X.shape[1])
    kernel = blockdiag_laplace_fused_serial if serial else blockdiag_laplace_fused
    du = np.zeros((len(u), 1 + X.shape[1]))
    out = kernel(indptr, eta_fixed, X, order, Z, unit, ys, pws, np.array([[t]]), fam, link, u, L,
                 1e-13, step_tol, 60, with_gradient, g, du)
    fused.du = du
    return out, u, L, g


@pytest.mark.parametrize("fam,link,unit", CASES)
def test_fused_laplace_and_gradient_equal_the_separate_kernels(fam, link, unit):
    """blockdiag_laplace_fused (modes, then each level's gradient in one pass; for logit and
    log, the gradient's sums taken in the modes' own evaluations) against
    blockdiag_laplace followed by the two-pass blockdiag_laplace_gradient: with step_tol = 0
    the modes and the criterion's sums are the same bits, the gradient equal to rounding
    (its sums are rearranged); with a step tolerance the modes move by at most ~it. The
    parallel and serial kernels give the same bits, and so does every call."""
    from bigmixed.kernels.glmm import blockdiag_laplace

    data = make_data(fam, link, unit, seed=fam * 10 + link + 3, n_levels=40)
    t, beta = 0.8, np.array([-0.3, 0.2, 0.1])
    n_levels = int(data[5].max()) + 1
    u0 = np.linspace(-0.5, 0.5, n_levels)  # a warm start away from the modes
    indptr, eta_fixed, X, order, Z, unit_z, ys, pws = sorted_inputs(t, beta, data)
    u_old = u0.reshape(-1, 1).copy()
    L_old = np.empty((n_levels, 1, 1))
    old = blockdiag_laplace(indptr, eta_fixed, Z, unit_z, ys, pws, np.array([[t]]), fam, link,
                            np.zeros(0), u_old, L_old, 1e-13, 60)
    g_old = kernel_gradient(t, beta, data, np.ascontiguousarray(u_old[:, 0]))
    out, u, L, g = fused(t, beta, data, u0)
    assert out == old
    np.testing.assert_array_equal(u, u_old)
    np.testing.assert_array_equal(L, L_old)
    scale = np.max(np.abs(g_old)) + 1.0
    assert np.max(np.abs(g - g_old)) <= 1e-12 * scale
    # against the slow reference: the modes by scalar minimization, the gradient by differences
    np.testing.assert_allclose(u[:, 0], reference_modes(t, beta, data), atol=1e-6)
    x = np.concatenate(([t], beta))
    num = np.array([(reference_criterion(*(lambda v: (v[0], v[1:]))(x + e), data)
                     - reference_criterion(*(lambda v: (v[0], v[1:]))(x - e), data)) / 2e-4
                    for e in np.eye(len(x)) * 1e-4])
    np.testing.assert_allclose(g, num, rtol=2e-4, atol=2e-5)
    # serial = parallel, run to run
    for st in (0.0, 1e-12):
        a = fused(t, beta, data, u0, step_tol=st)
        b = fused(t, beta, data, u0, step_tol=st, serial=True)
        c = fused(t, beta, data, u0, step_tol=st)
        assert a[0] == b[0] == c[0]
        for i in (1, 2, 3):
            np.testing.assert_array_equal(a[i], b[i])
            np.testing.assert_array_equal(a[i], c[i])
    # a step tolerance: the same modes to ~it, the same criterion to rounding
    out_s, u_s, _, g_s = fused(t, beta, data, u0, step_tol=1e-12)
    np.testing.assert_allclose(u_s, u, rtol=0, atol=1e-10)
    crit = lambda o: o[0] + o[1] + o[2] + o[3]  # noqa: E731
    assert abs(crit(out_s) - crit(out)) <= 1e-12 * abs(crit(out))
    assert np.max(np.abs(g_s - g)) <= 1e-8 * scale
    # without the gradient: the same modes and sums, a zero gradient
    out_n, u_n, _, g_n = fused(t, beta, data, u0, with_gradient=False)
    assert out_n == out and not np.any(g_n)
    np.testing.assert_array_equal(u_n, u)


@pytest.mark.parametrize("fam,link,unit", CASES)
def test_fused_mode_derivatives_predict_the_modes_at_nearby_parameters(fam, link, unit):
    """du_out: the modes' derivatives in (t, beta), against differences of the modes (each
    level's mode by the kernel from a cold start)."""
    data = make_data(fam, link, unit, seed=fam * 10 + link + 7, n_levels=30)
    t, beta = 0.8, np.array([-0.3, 0.2, 0.1])
    n_levels = int(data[5].max()) + 1
    _, u, _, _ = fused(t, beta, data, np.zeros(n_levels))
    du = fused.du.copy()
    x = np.concatenate(([t], beta))
    h = 1e-5
    for a in range(len(x)):
        e = np.zeros_like(x)
        e[a] = h
        up = fused((x + e)[0], (x + e)[1:], data, np.zeros(n_levels))[1]
        um = fused((x - e)[0], (x - e)[1:], data, np.zeros(n_levels))[1]
        np.testing.assert_allclose(du[:, a], (up - um)[:, 0] / (2 * h), rtol=1e-5, atol=1e-7)
