"""kernels/glmm_pirls_gradient.py: the same iterations and values (to rounding) as
kernels.glmm.blockdiag_pirls from lp0, and a gradient equal to central differences of a slow,
obvious reference of glmer's criterion (PIRLS from lp0 in NumPy, level by level, with lme4's
convergence test and step halving)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bigmixed.kernels.glm import (BINOMIAL, CLOGLOG, LOG, LOGIT, POISSON, PROBIT, _dev_resid,
                                  _link, _variance)
from bigmixed.kernels.glmm import blockdiag_pirls
from bigmixed.kernels.glmm_pirls_gradient import blockdiag_pirls_gradient, start_level_sums

TOL = 1e-7  # glmer's tolPwrss
CASES = [(BINOMIAL, LOGIT), (BINOMIAL, PROBIT), (BINOMIAL, CLOGLOG), (POISSON, LOG)]


def make_data(fam, unit, seed=0, n_levels=7):
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(n_levels), rng.integers(2, 12, n_levels))
    rng.shuffle(codes)  # (rows not in level order: the kernel reads X through order)
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
    lp0 = off + X @ np.array([-0.3, 0.2, 0.1]) + 0.5 * rng.normal(size=n)
    return dict(X=X, z=z, y=y, pw=pw, off=off, codes=codes, lp0=lp0, unit=unit)


def sorted_arrays(d, beta):
    order = np.argsort(d["codes"], kind="stable")
    indptr = np.concatenate(([0], np.cumsum(np.bincount(d["codes"])))).astype(np.int64)
    eta_fixed = np.ascontiguousarray((d["off"] + d["X"] @ beta)[order])
    Z = np.ascontiguousarray(d["z"][order][:, None])
    return (order, indptr, eta_fixed, Z, np.ascontiguousarray(d["y"][order]),
            np.ascontiguousarray(d["pw"][order]), np.ascontiguousarray(d["lp0"][order]))


def run_kernels(d, t, beta, fam, link):
    order, indptr, eta_fixed, Z, y, pw, lp0 = sorted_arrays(d, beta)
    n_levels = len(indptr) - 1
    T = np.array([[t]])
    u1 = np.zeros((n_levels, 1))
    L1 = np.empty((n_levels, 1, 1))
    r1 = blockdiag_pirls(indptr, eta_fixed, Z, d["unit"], y, pw, T, fam, link, lp0, u1, L1,
                         TOL, 100)
    p = d["X"].shape[1]
    A0, c0, B0 = np.empty(n_levels), np.empty(n_levels), np.empty((n_levels, p))
    offset = np.ascontiguousarray(d["off"][order])
    start_level_sums(indptr, order, d["X"], offset, Z, d["unit"], y, pw, fam, link, lp0, A0, c0,
                     B0)
    u2 = np.zeros((n_levels, 1))
    L2 = np.empty((n_levels, 1, 1))
    g = np.empty(1 + p)
    r2 = blockdiag_pirls_gradient(indptr, eta_fixed, d["X"], order, Z, d["unit"], y, pw, T, fam,
                                  link, A0, c0, B0, beta, u2, L2, TOL, 100, g)
    return (r1, u1, L1), (r2, u2, L2), g


def reference_criterion(d, t, beta, fam, link):
    """glmer's criterion by its definition: all levels step together from lp0 (u_old = 0),
    u_g = t r_g / (1 + t^2 A_g) at the last linearization point, until the total penalized
    deviance changes by less than TOL (relative); halving toward u_old while it rises; the
    log-determinant at the linearization point of the last step. Returns (value, iterations)."""
    codes, z, y, pw = d["codes"], d["z"], d["y"], d["pw"]
    f = d["off"] + d["X"] @ beta
    levels = np.unique(codes)

    def row_terms(eta):
        mu = np.array([_link(e, link)[0] for e in eta])
        me = np.array([_link(e, link)[1] for e in eta])
        v = np.array([_variance(m, fam) for m in mu])
        w = pw * me * me / v
        dev = np.array([_dev_resid(a, b, c, fam) for a, b, c in zip(y, mu, pw)])
        return dev, w, (eta - f) + (y - mu) / me

    def eta_of(u):
        return f + t * z * u[codes]

    def pdev(u):
        return float(np.sum(row_terms(eta_of(u))[0]) + np.sum(u * u))

    eta_lin = d["lp0"]
    u_old = np.zeros(len(levels))
    old = math.inf
    for it in range(1, 101):
        _, w, zr = row_terms(eta_lin)
        A = np.bincount(codes, w * z * z)
        r = np.bincount(codes, w * z * zr)
        logdet = float(np.sum(np.log(1.0 + t * t * A)))
        u = t * r / (1.0 + t * t * A)
        p = pdev(u)
        if abs((old - p) / p) < TOL:
            return p + logdet, it
        halvings = 0
        while p > old and halvings < 20:
            u = 0.5 * (u_old + u)
            p = pdev(u)
            halvings += 1
        old, u_old, eta_lin = p, u, eta_of(u)
    raise AssertionError("no convergence")


@pytest.mark.parametrize("fam,link", CASES)
@pytest.mark.parametrize("unit", [True, False])
@pytest.mark.parametrize("t", [0.8, 2.5])
def test_the_iterations_and_values_of_blockdiag_pirls(fam, link, unit, t):
    d = make_data(fam, unit, seed=3)
    beta = np.array([-0.2, 0.3, 0.15])
    (r1, u1, L1), (r2, u2, L2), g = run_kernels(d, t, beta, fam, link)
    assert r1[4:] == r2[4:]  # (status, iterations)
    for a, b in zip(r1[:4], r2[:4]):
        assert a == pytest.approx(b, rel=1e-13, abs=1e-13)
    np.testing.assert_allclose(u2, u1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(L2, L1, rtol=1e-12)
    assert np.all(np.isfinite(g))


@settings(max_examples=12, deadline=None)
@given(case=st.sampled_from(CASES), unit=st.booleans(), seed=st.integers(0, 10_000),
       t=st.floats(0.3, 2.0), shift=st.floats(-0.4, 0.4))
def test_gradient_matches_differences_of_the_reference(case, unit, seed, t, shift):
    fam, link = case
    d = make_data(fam, unit, seed=seed)
    beta = np.array([-0.2 + shift, 0.3, 0.15 - shift / 2])
    (r1, _, _), _, g = run_kernels(d, t, beta, fam, link)
    assert r1[4] == 0
    value, iters = reference_criterion(d, t, beta, fam, link)
    assert r1[5] == iters
    assert math.isclose(r1[0] + r1[1] + r1[2] + r1[3], value, rel_tol=1e-10)
    x = np.concatenate(([t], beta))
    for a in range(len(x)):
        h = 1e-5 * max(abs(x[a]), 0.1)
        xp, xm = x.copy(), x.copy()
        xp[a] += h
        xm[a] -= h
        fp, ip = reference_criterion(d, xp[0], xp[1:], fam, link)
        fm, im = reference_criterion(d, xm[0], xm[1:], fam, link)
        if not (ip == im == iters):
            continue  # (the criterion jumps where glmer's iteration count changes)
        fd = (fp - fm) / (2 * h)
        assert abs(g[a] - fd) <= 1e-5 * max(abs(fd), 1.0), (a, g[a], fd)
