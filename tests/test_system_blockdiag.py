"""BlockDiagonalSystem's analytic gradient (one grouping factor, any number of random effects
per level) and the quasi-Newton fit built on it (bigmixed.fitting.stages.OneFactorQuasiNewton)."""
import warnings

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
from bigmixed.fitting.control import FitControl

BOBYQA_PATH = FitControl(qn_one_factor=False)


def _frame(seed, n=400, levels=30, slope_sd=0.5, intercept_sd=0.8):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, levels, size=n)
    g[:levels] = np.arange(levels)
    x, w = rng.normal(size=n), rng.normal(size=n)
    y = (1.0 + 0.5 * x + intercept_sd * rng.normal(size=levels)[g]
         + slope_sd * rng.normal(size=levels)[g] * x + 0.3 * rng.normal(size=levels)[g] * w
         + rng.normal(size=n))
    return pd.DataFrame({"y": y, "x": x, "w": w, "wt": rng.uniform(0.5, 2.0, size=n),
                         "g": pd.Categorical([f"l{v:03d}" for v in g])})


FORMULAS = ["y ~ x + (1 | g)", "y ~ x + (x | g)", "y ~ x + w + (1 + x + w | g)",
            "y ~ x + (x || g)"]


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula", FORMULAS)
def test_gradient_equals_differences_of_the_dense_oracle(formula, reml):
    """Against central differences of the slow dense criterion (V = Z G Z' + sigma^2 I), at
    random theta, one of them on the boundary (a zero diagonal element)."""
    from oracle import dense_objective

    m = bm.lmm(formula, _frame(1), reml=reml)
    assert m.solver == "blockdiag" and m.has_gradient
    design, st = m.design, m.structure
    terms = [(design.terms[k].codes, design.terms[k].Z) for k in st.term_order]
    rng = np.random.default_rng(4)
    diag = st.lower_bounds == 0
    thetas = [np.where(diag, rng.uniform(0.3, 1.5, st.n_theta), rng.uniform(-0.5, 0.5, st.n_theta))
              for _ in range(2)]
    edge = thetas[0].copy()
    edge[np.flatnonzero(diag)[-1]] = 0.0
    for theta in thetas + [edge]:
        m.objective(theta)
        got = m.gradient(theta)
        h = 1e-5 * np.maximum(np.abs(theta), 0.1)
        want = np.array([(dense_objective(theta + h[k] * e, design.y, design.X, terms, reml=reml)
                          - dense_objective(theta - h[k] * e, design.y, design.X, terms, reml=reml))
                         / (2 * h[k]) for k, e in enumerate(np.eye(st.n_theta))])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_gradient_with_prior_weights_and_without_a_fresh_evaluation():
    """Prior weights enter through the cross-products; a gradient at a theta other than the
    last evaluation's factors the system again (same numbers as after an evaluation there)."""
    m = bm.lmm("y ~ x + (x | g)", _frame(2), weights="wt")
    theta = np.array([0.7, 0.2, 0.4])
    m.objective(theta)
    g1 = m.gradient(theta)
    m.objective(theta + 0.1)
    g2 = m.gradient(theta)  # the system's last evaluation was elsewhere
    assert np.array_equal(g1, g2)
    h = 1e-6
    want = [(m.objective(theta + h * e) - m.objective(theta - h * e)) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(g1, want, rtol=1e-5)


def _fits(formula, df, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = bm.lmm(formula, df, **kw).fit()
        ref = bm.lmm(formula, df, **kw).fit(control=BOBYQA_PATH)
    return fit, ref


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula", FORMULAS)
def test_quasi_newton_fit_agrees_with_bobyqa(formula, reml):
    df = _frame(3, n=3000, levels=300)
    fit, ref = _fits(formula, df, reml=reml)
    assert [s.stage for s in fit.optimizer.stages] == ["quasi-Newton (one factor)"]
    assert [s.stage for s in ref.optimizer.stages] == ["BOBYQA", "Newton polish"]
    assert fit.converged and not fit.warnings
    assert fit.objective <= ref.objective + 1e-12 * abs(ref.objective)
    np.testing.assert_allclose(fit.theta, ref.theta, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fit.beta, ref.beta, rtol=1e-7)
    np.testing.assert_allclose(fit.bse, ref.bse, rtol=1e-6)
    assert np.max(np.abs(fit.optimizer.gradient)) < 1e-3
    assert fit.optimizer.n_evaluations < ref.optimizer.n_evaluations
    again = bm.lmm(formula, df, reml=reml).fit()
    assert np.array_equal(again.theta, fit.theta) and again.objective == fit.objective


def test_a_variance_at_zero_falls_back_to_bobyqa():
    """No random slope in the data: the slope's variance heads to zero, BFGS hands over to
    BOBYQA, and the fit ends on the boundary as BOBYQA's from lme4's start does."""
    df = _frame(5, n=3000, levels=300, slope_sd=0.0)
    fit, ref = _fits("y ~ x + (1 | g) + (0 + x | g)", df)
    stages = [s.stage for s in fit.optimizer.stages]
    assert stages[0] == "quasi-Newton (one factor)" and "BOBYQA" in stages
    assert fit.optimizer.stages[0].note == "a variance near zero: BOBYQA from its end point"
    assert fit.theta[1] == 0.0 and ref.theta[1] == 0.0
    assert fit.objective <= ref.objective + 1e-12 * abs(ref.objective)
    np.testing.assert_allclose(fit.theta, ref.theta, rtol=1e-6)


def test_user_tolerances_and_no_polish_keep_bobyqa():
    m = bm.lmm("y ~ x + (x | g)", _frame(6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        assert m.fit(xtol_abs=1e-6).optimizer.method == "nlopt LN_BOBYQA"
        assert m.fit(polish=False).optimizer.method == "nlopt LN_BOBYQA"


@pytest.mark.parametrize("formula", FORMULAS)
def test_subsample_start_ends_at_the_same_optimum(formula):
    """Many levels: BFGS first on every k-th level's criterion, then a few steps on the full
    one; the same optimum as BOBYQA's and as BFGS from lme4's start, in fewer full
    evaluations. (Thresholds lowered so that 2000 levels take that path; with fewer than a few
    hundred levels kept, the subsample's criterion is too rough and the path is not taken.)"""
    df = _frame(7, n=20000, levels=2000)
    sub_control = FitControl(qn_subsample_min_levels=100, qn_subsample_levels=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = bm.lmm(formula, df).fit(control=sub_control)
        plain = bm.lmm(formula, df).fit()
        ref = bm.lmm(formula, df).fit(control=BOBYQA_PATH)
    (stage,) = fit.optimizer.stages
    assert stage.note.startswith("start from one level in 5")
    assert fit.objective <= ref.objective + 1e-12 * abs(ref.objective)
    np.testing.assert_allclose(fit.theta, ref.theta, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fit.theta, plain.theta, rtol=1e-6, atol=1e-8)
    assert fit.optimizer.n_evaluations <= plain.optimizer.n_evaluations
    system = bm.lmm(formula, df).system
    sub = system.subsample(5)
    assert sub.zz.shape[0] == 400 and np.array_equal(sub.zz, system.zz[::5])
    np.testing.assert_array_equal(sub.cp.gram, system.cp.gram * 0.2)


def test_a_failed_subsample_start_changes_nothing():
    df = _frame(7, n=4000, levels=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = bm.lmm("y ~ x + (x | g)", df).fit(
            control=FitControl(qn_subsample_min_levels=100, qn_subsample_levels=80))
        plain = bm.lmm("y ~ x + (x | g)", df).fit()
    assert fit.optimizer.stages[0].note == "subsample start failed"
    assert np.array_equal(fit.theta, plain.theta) and fit.objective == plain.objective
