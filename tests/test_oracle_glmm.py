"""The dense GLMM oracle against numerical integration, its own optimality conditions and lme4."""
import numpy as np
import pytest
import scipy.integrate as sint

from oracle_glmm import LME4_DEVFUN, GLMMOracle, lme4_example_data


def tiny_model(family, seed=0, L=6, per=4, link=None):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(L), per)
    n = g.size
    x = rng.normal(size=n)
    X = np.column_stack([np.ones(n), x])
    b = rng.normal(size=L)
    eta = 0.2 + 0.6 * x + b[g]
    if family == "binomial":
        y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    else:
        y = rng.poisson(np.exp(eta)).astype(float)
    return GLMMOracle(y, X, [(g, np.ones(n))], family=family, link=link), g


def direct_marginal(o, g, theta, beta):
    """-2 log of prod_g integral prod_{i in g} p(y_i | u) phi(u) du, written out separately
    from the oracle's own quadrature (no centring at the mode, plain normal density)."""
    t = theta[0]
    fixed = o.X @ beta
    total = 0.0
    for lev in range(g.max() + 1):
        r = np.flatnonzero(g == lev)

        def integrand(u):
            mu = o.linkinv(fixed[r] + t * u)
            like = np.exp(-0.5 * np.sum(_rows_m2ll(o, r, mu)))  # prod_i p(y_i | u)
            return like * np.exp(-u * u / 2) / np.sqrt(2 * np.pi)

        val, _ = sint.quad(integrand, -12, 12, epsabs=0, epsrel=1e-12, limit=500)
        total += -2 * np.log(val)
    return total


def _rows_m2ll(o, r, mu):
    full = np.full(o.n, 0.5)
    full[r] = mu
    return o.minus2_loglik_rows(full)[r]


@pytest.mark.parametrize("family,link", [
    ("binomial", "logit"), ("binomial", "probit"), ("poisson", "log")])
def test_agq25_equals_numerical_integration_and_laplace_is_close(family, link):
    o, g = tiny_model(family, seed=3, link=link)
    theta, beta = [1.1], np.array([0.1, 0.5])
    exact = direct_marginal(o, g, theta, beta)
    quad = o.agq_quad(theta, beta)
    gh25 = o.agq_gh(theta, beta, 25)
    lap = o.laplace(theta, beta)
    assert abs(quad - exact) <= 1e-9 * abs(exact)
    assert abs(gh25 - quad) <= 1e-8 * abs(quad)
    # the Laplace approximation is close, but not equal
    assert 1e-5 < abs(lap - quad) < 0.05 * abs(quad)
    # one Gauss-Hermite node is the Laplace approximation
    assert abs(o.agq_gh(theta, beta, 1) - lap) <= 1e-11 * abs(lap)


@pytest.mark.parametrize("family,link", [("binomial", "logit"), ("binomial", "cloglog"),
                                         ("poisson", "log")])
def test_modes_satisfy_the_score_equations(family, link):
    rng = np.random.default_rng(5)
    L, per = 12, 9
    g = np.repeat(np.arange(L), per)
    n = g.size
    x = rng.normal(size=n)
    X = np.column_stack([np.ones(n), x])
    eta = -0.2 + 0.4 * x + rng.normal(size=L)[g] + 0.5 * rng.normal(size=L)[g] * x
    y = ((rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float) if family == "binomial"
         else rng.poisson(np.exp(eta)).astype(float))
    o = GLMMOracle(y, X, [(g, np.column_stack([np.ones(n), x]))], family=family, link=link)
    theta = np.array([0.9, 0.2, 0.5])
    beta = np.array([-0.1, 0.3])
    _, u = o.laplace(theta, beta, return_modes=True)
    grad = o.score_u(theta, beta, u)
    assert np.max(np.abs(grad)) <= 1e-9
    # a perturbed u has a larger penalized deviance (a minimum, not a saddle)
    f0 = o.penalized_deviance(theta, beta, u)
    for _ in range(5):
        assert o.penalized_deviance(theta, beta, u + 1e-3 * rng.normal(size=u.size)) > f0


def test_nagq0_joint_optimum_satisfies_the_score_equations():
    o, _ = tiny_model("poisson", seed=8, L=10, per=6)
    val, beta, u = o.nagq0([0.7])
    assert np.max(np.abs(o.score_u([0.7], beta, u))) <= 1e-9
    assert np.max(np.abs(o.score_beta([0.7], beta, u))) <= 1e-9
    # the nAGQ = 0 objective at theta is the Laplace formula at the joint optimum's beta
    assert abs(o.laplace([0.7], beta) - val) <= 1e-10 * abs(val)


def test_aic_constant_does_not_depend_on_mu():
    for family in ("binomial", "poisson"):
        o, _ = tiny_model(family, seed=1)
        c = o.aic_constant()
        mu = np.linspace(0.1, 0.9, o.n) if family == "binomial" else np.linspace(0.2, 5, o.n)
        assert abs(np.sum(o.minus2_loglik_rows(mu)) - np.sum(o.dev_resids(mu)) - c) <= 1e-10 * (1 + abs(c))


@pytest.mark.parametrize("name", ["bin", "poi"])
def test_oracle_matches_lme4_with_a_tight_pirls_tolerance(name):
    """glmer's objectives (lme4 1.1-31, tolPwrss = 1e-13) at fixed parameters. lme4 takes its
    log determinant with the weights before its last PIRLS step, so even at 1e-13 its
    Laplace value is off the exact one by O(sqrt(tolPwrss)) (seen: 1.4e-9 relative)."""
    g, x, y = lme4_example_data(name)
    n = y.size
    X = np.column_stack([np.ones(n), x])
    o = GLMMOracle(y, X, [(g, np.ones(n))], family={"bin": "binomial", "poi": "poisson"}[name])
    c = o.aic_constant()
    refs = LME4_DEVFUN[name]
    for nagq in (1, 5, 25):
        for pars, want in refs["dev"][(1e-13, nagq)]:
            theta, beta = pars[:1], pars[1:]
            if nagq == 1:
                got = o.laplace(theta, beta)
                assert abs(got - want) <= 3e-9 * abs(want)
            else:  # lme4's AGQ objective leaves out the family's aic constant
                got = o.agq_gh(theta, beta, nagq) - c
                assert abs(got - want) <= 1e-10 * abs(want)
    for theta, want, beta in refs["nagq0"][1e-13]:
        got, b, _ = o.nagq0([theta])
        assert abs(got - want) <= 1e-9 * abs(want)
        np.testing.assert_allclose(b, beta, rtol=0, atol=1e-12)
