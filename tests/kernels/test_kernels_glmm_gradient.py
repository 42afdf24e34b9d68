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
