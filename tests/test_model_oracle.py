"""The engine against the slow dense oracle (V = Z G Z' + sigma^2 I) on random small problems."""
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import bigmixed as bm
from bigmixed.spec.design import Design, RandomTerm
from oracle import dense_fit, dense_objective, dense_quantities


def make_problem(seed, n, p, term_shapes):
    """term_shapes: list of (n_levels, n_columns, group name)."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, p - 1))]) if p else np.zeros((n, 0))
    y = rng.normal(size=n) * 2.0 + 1.0
    terms = []
    for k, (L, P, group) in enumerate(term_shapes):
        raw = rng.integers(0, L, n)
        shared = group in {t.group for t in terms}
        if shared:  # a second term on the same factor, as `||` makes: covariates only
            raw = next(t for t in terms if t.group == group).codes
        uniq, codes = np.unique(raw, return_inverse=True)
        if shared:
            Z = rng.normal(size=(n, P))
            names = [f"x{k}_{j}" for j in range(P)]
        else:
            Z = np.column_stack([np.ones(n)] + [rng.normal(size=n) for _ in range(P - 1)])
            names = ["(Intercept)"] + [f"x{k}_{j}" for j in range(1, P)]
        # a real signal so that fits are mostly interior
        b = rng.normal(size=(len(uniq), P))
        y += np.einsum("ij,ij->i", Z, b[codes])
        terms.append(RandomTerm("1", group, names, uniq.astype(str).astype(object),
                                codes.astype(np.int32), np.ascontiguousarray(Z)))
    names = ["(Intercept)"] + [f"b{j}" for j in range(1, p)]
    design = Design("y ~ ...", "y", y, np.ascontiguousarray(X), names[:p], terms, 0, pd.RangeIndex(n))
    return design


shapes = st.sampled_from([
    [(6, 1, "g")],
    [(5, 2, "g")],
    [(7, 1, "g"), (4, 1, "h")],          # crossed intercepts
    [(6, 2, "g"), (3, 1, "h")],          # slope + crossed intercept
    [(5, 1, "g"), (5, 1, "g")],          # two terms on one factor (like ||)
    [(4, 3, "g")],
])


def oracle_terms(design, model):
    return [(design.terms[k].codes, design.terms[k].Z) for k in model.structure.term_order]


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(25, 70), p=st.integers(1, 3), shape=shapes,
       reml=st.booleans(), theta_seed=st.integers(0, 1000))
def test_objective_equals_dense_oracle(seed, n, p, shape, reml, theta_seed):
    design = make_problem(seed, n, p, shape)
    rng = np.random.default_rng(theta_seed)
    for solver in ("auto", "cholmod"):
        model = bm.LinearMixedModel.from_design(design, reml=reml, solver=solver)
        st_ = model.structure
        theta = np.where(st_.theta_row == st_.theta_col, rng.uniform(0.0, 2.0, st_.n_theta),
                         rng.normal(0, 0.7, st_.n_theta))
        want = dense_objective(theta, design.y, design.X, oracle_terms(design, model), reml=reml)
        got = model.objective(theta)
        assert abs(got - want) <= 1e-8 * abs(want), (got, want, solver)


fit_cases = dict(seed=st.integers(0, 2**31 - 1), n=st.integers(30, 60), p=st.integers(1, 3), shape=shapes,
                 reml=st.booleans())


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(**fit_cases)
def test_fit_is_at_least_as_good_as_dense_oracle_and_quantities_agree(seed, n, p, shape, reml):
    check_fit_against_oracle(seed, n, p, shape, reml)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**fit_cases)
def test_fit_against_dense_oracle_many_random_problems(seed, n, p, shape, reml):
    check_fit_against_oracle(seed, n, p, shape, reml)


def check_fit_against_oracle(seed, n, p, shape, reml):
    design = make_problem(seed, n, p, shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        for solver in ("auto", "cholmod"):
            model = bm.LinearMixedModel.from_design(design, reml=reml, solver=solver)
            fit = model.fit()
            terms = oracle_terms(design, model)
            ref = dense_fit(design.y, design.X, terms, reml=reml, theta0=fit.theta, n_random_starts=1)
            assert fit.objective <= ref["objective"] + 1e-6 * abs(ref["objective"]), solver
            # everything else, compared at the engine's theta
            q = dense_quantities(fit.theta, design.y, design.X, terms, reml=reml)
            np.testing.assert_allclose(fit.objective, q["objective"], rtol=1e-9)
            np.testing.assert_allclose(fit.sigma, q["sigma"], rtol=1e-7)
            np.testing.assert_allclose(fit.beta, q["beta"], rtol=1e-7, atol=1e-9 * fit.sigma)
            np.testing.assert_allclose(fit.bse, q["beta_se"], rtol=1e-6)
            ranef = fit.ranef()
            condvar = fit.conditional_variances()
            for pos, k in enumerate(model.structure.term_order):
                t = design.terms[k]
                fi = model.structure.term_factor[k]
                f = model.structure.factors[fi]
                cols = slice(f.term_offsets[f.term_ids.index(k)], f.term_offsets[f.term_ids.index(k)] + t.n_columns)
                got_b = ranef[t.group].to_numpy()[:, : f.n_columns][:, cols]
                np.testing.assert_allclose(got_b, q["blups"][pos], rtol=1e-6, atol=1e-7 * fit.sigma)
                got_v = condvar[t.group][:, cols, cols]
                np.testing.assert_allclose(got_v, q["cond_var"][pos], rtol=1e-6, atol=1e-9 * fit.sigma**2)


def test_boundary_restart_finds_the_better_rank_one_covariance():
    """Found by hypothesis: 3 correlated effects on 4 levels (ML). From lme4's start BOBYQA ends in a
    rank-one T with T[0, 0] = 0 at deviance 210.985; the dense oracle finds 208.346 with
    T[0, 0] = 0.312. The boundary restart must reach the better optimum."""
    design = make_problem(0, 52, 3, [(4, 3, "g")])
    from bigmixed.fitting.control import FitControl

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = bm.LinearMixedModel.from_design(design, reml=False).fit()
        # BOBYQA from lme4's start (the default hands BOBYQA the one-factor BFGS end point,
        # from which it needs no restart)
        bobyqa = bm.LinearMixedModel.from_design(design, reml=False).fit(
            control=FitControl(qn_one_factor=False))
    want = dense_objective(np.array([0.312272926, -0.217153261, -0.283318373, 0.0, 0.0, 0.0]),
                           design.y, design.X, [(design.terms[0].codes, design.terms[0].Z)], reml=False)
    assert want < 208.3461
    assert fit.objective <= want + 1e-6 * want
    assert bobyqa.objective <= want + 1e-6 * want
    assert bobyqa.optimizer.restarts >= 1
