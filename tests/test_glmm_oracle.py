"""The GLMM engine (bigmixed.fitting.glmm, .pirls) against the dense oracle (tests/oracle_glmm.py)
and against itself across solvers and paths."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
from oracle_glmm import GLMMOracle


def _data(seed, n=400, n_g=25, n_h=6, family="binomial"):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_g, n)
    h = rng.integers(0, n_h, n)
    x = rng.standard_normal(n)
    eta = -0.3 + 0.8 * x + rng.normal(0, 0.9, n_g)[g] + rng.normal(0, 0.5, n_h)[h]
    if family == "binomial":
        y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    else:
        y = rng.poisson(np.exp(eta + 0.3)).astype(float)
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{i:02d}" for i in g],
                         "h": [f"h{i}" for i in h], "t": rng.integers(1, 5, n).astype(float)})


def _oracle(m, family):
    st = m.structure
    terms = [(st.terms[k].codes, st.terms[k].Z) for k in st.term_order]
    return GLMMOracle(m.y, m.design.X, terms, family=family, prior_w=m.prior_weights,
                      offset=m.offset)


CASES = [
    ("y ~ x + (1 | g)", "binomial", "auto"),
    ("y ~ x + (1 + x | g)", "binomial", "auto"),
    ("y ~ x + (1 | g) + (1 | h)", "binomial", "cholmod"),
    ("y ~ x + (1 | g) + (1 | h)", "poisson", "schur"),
    ("y ~ x + offset(log(t)) + (1 | g)", "poisson", "auto"),
]


@pytest.mark.parametrize("formula,family,solver", CASES)
def test_exact_laplace_equals_the_dense_oracle(formula, family, solver):
    df = _data(1, family=family)
    m = bm.glmm(formula, df, family=family, solver=solver, pirls="exact")
    o = _oracle(m, family)
    rng = np.random.default_rng(2)
    p = m.n_fixed
    m.set_beta_basis(np.zeros(p), np.eye(p))
    for _ in range(3):
        theta = np.where(m.structure.lower_bounds == 0, rng.uniform(0.3, 1.5, m.structure.n_theta),
                         rng.uniform(-0.5, 0.5, m.structure.n_theta))
        beta = rng.normal(0, 0.5, p)
        got = m.objective(np.concatenate((theta, beta)))
        assert got == pytest.approx(o.laplace(theta, beta), rel=1e-10, abs=1e-8)
        want0 = o.nagq0(theta)[0]
        assert m.objective0(theta) == pytest.approx(want0, rel=1e-9)


def test_quadrature_equals_the_dense_oracle():
    df = _data(3)
    m = bm.glmm("y ~ x + (1 | g)", df, nAGQ=9, pirls="exact")
    o = _oracle(m, "binomial")
    m.set_beta_basis(np.zeros(2), np.eye(2))
    for theta, beta in (([0.8], [-0.2, 0.7]), ([1.3], [0.1, 0.5])):
        got = m.objective(np.r_[theta, beta])
        # glmer reports the quadrature without the family's constant (0 for 0/1 data)
        assert got == pytest.approx(o.agq_gh(np.array(theta), np.array(beta), 9), rel=1e-10)


@pytest.mark.parametrize("mode", ["lme4", "exact"])
def test_the_one_factor_kernel_and_the_solver_path_agree(mode):
    """With one grouping factor stage 2 runs level by level in one kernel; the same criterion
    through the generic PIRLS on the block-diagonal solver gives the same value."""
    df = _data(4)
    m = bm.glmm("y ~ x + (1 + x | g)", df, pirls=mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = m.fit()
    k = m.structure.n_theta
    x = np.asarray(fit.optimizer.params)
    fast = m.objective(x)
    m.use_level_kernels = False
    slow = m.objective(x)
    assert slow == pytest.approx(fast, rel=1e-7 if mode == "lme4" else 1e-11)
    assert len(x) == k + m.n_fixed


@pytest.mark.parametrize("formula,family,solver", CASES)
def test_a_fit_is_at_the_exact_optimum(formula, family, solver):
    df = _data(5, family=family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = bm.glmm(formula, df, family=family, solver=solver, pirls="exact").fit()
    m = fit.model
    o = _oracle(m, family)
    best = o.laplace(fit.theta, fit.beta)
    assert fit.objective == pytest.approx(best, rel=1e-10)
    # no direction of (theta, beta) lowers the oracle's criterion
    rng = np.random.default_rng(6)
    for _ in range(4):
        d = rng.standard_normal(len(fit.theta) + len(fit.beta)) * 1e-3
        th = fit.theta + d[:len(fit.theta)]
        if np.any(th[m.structure.lower_bounds == 0] < 0):
            continue
        assert o.laplace(th, fit.beta + d[len(fit.theta):]) >= best - 1e-9 * abs(best)


def test_fits_are_deterministic_and_immutable():
    df = _data(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        a = bm.glmm("y ~ x + (1 | g) + (1 | h)", df).fit()
        b = bm.glmm("y ~ x + (1 | g) + (1 | h)", df).fit()
    assert a.objective == b.objective and np.array_equal(a.beta, b.beta)
    assert np.array_equal(a.vcov, b.vcov)
    with pytest.raises(AttributeError, match="immutable"):
        a.beta = 1.0
