"""Tests of the dense reference implementation (tests/oracle.py) against published
lme4 / nlme output, closed forms and textbook identities."""
import numpy as np
import pytest
import scipy.linalg as sla
from scipy.stats import multivariate_normal

from oracle import (build_Z, dense_fit, dense_objective, dense_quantities, theta_to_factors)

# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

HPLC = [10.4, 10.6, 10.2, 10.1, 10.3, 10.7, 10.3, 10.9, 10.1, 9.8]
NIR = [10.1, 10.8, 10.2, 9.9, 11.0, 10.5, 10.2, 10.9, 10.4, 9.9]


def tablets(missing=False):
    """y, X = [1, method == hplc] (nir is the reference level), tablet codes."""
    y = HPLC + NIR
    tab = list(range(10)) * 2
    hplc = [1.0] * 10 + [0.0] * 10
    if missing:
        y += [10.8, 9.8, 10.5, 10.3, 9.7]          # tablets 11..15: nir only
        tab += list(range(10, 15))
        hplc += [0.0] * 5
        y += [10.3, 9.6, 10.0, 10.2, 9.9]          # tablets 16..20: hplc only
        tab += list(range(15, 20))
        hplc += [1.0] * 5
    y = np.array(y)
    X = np.column_stack([np.ones(len(y)), hplc])
    return y, X, np.array(tab)


# lme4's Dyestuff (Yield by Batch, 6 batches x 5 preparations)
DYESTUFF = [1545, 1440, 1440, 1520, 1580, 1540, 1555, 1490, 1560, 1495,
            1595, 1550, 1605, 1510, 1560, 1445, 1440, 1595, 1465, 1545,
            1595, 1630, 1515, 1635, 1625, 1520, 1455, 1450, 1480, 1445]


def random_problem(seed, n=60, n1=8, n2=5):
    """y ~ 1 + x + (1 + x | g1) + (1 | g2), with a real signal."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    g1 = rng.permutation(np.arange(n) % n1)
    g2 = rng.integers(0, n2, n)
    g2[:n2] = np.arange(n2)                          # every level used
    X = np.column_stack([np.ones(n), x])
    b1 = rng.multivariate_normal([0, 0], [[1.0, 0.4], [0.4, 0.5]], n1)
    b2 = rng.normal(size=n2) * 0.7
    y = 1 + 0.5 * x + b1[g1, 0] + b1[g1, 1] * x + b2[g2] + rng.normal(size=n) * 0.8
    terms = [(g1, np.column_stack([np.ones(n), x])), (g2, np.ones(n))]
    return y, X, terms


def half_unit(printed):
    """Half a unit in the last printed digit of a number given as a string."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return 0.5 * 10.0 ** (-decimals)


def assert_printed(value, printed):
    assert abs(value - float(printed)) <= half_unit(printed) * (1 + 1e-9), (value, printed)


# ---------------------------------------------------------------------------
# 1. Published lme4 output: tablets, y ~ method + (1 | tablet), REML
# ---------------------------------------------------------------------------

def test_tablets_reml_matches_published_lme4():
    y, X, tab = tablets()
    fit = dense_fit(y, X, [(tab, np.ones(len(y)))], reml=True)
    assert_printed(fit["varcov"][0][0, 0], "0.089333")
    assert_printed(fit["sigma"] ** 2, "0.043611")
    assert_printed(fit["beta"][0], "10.39")
    assert_printed(fit["beta_se"][0], "0.11530")
    assert_printed(fit["beta"][1], "-0.05")
    assert_printed(fit["beta_se"][1], "0.09339")
    # balanced two-way layout: REML = ANOVA estimates (tablet x method, no replication)
    Y = np.column_stack([HPLC, NIR])
    resid = Y - Y.mean(1, keepdims=True) - Y.mean(0) + Y.mean()
    mse = (resid ** 2).sum() / 9
    ms_tab = 2 * ((Y.mean(1) - Y.mean()) ** 2).sum() / 9
    np.testing.assert_allclose(fit["sigma"] ** 2, mse, rtol=1e-7)
    np.testing.assert_allclose(fit["varcov"][0][0, 0], (ms_tab - mse) / 2, rtol=1e-7)
    np.testing.assert_allclose(fit["theta"], np.sqrt((ms_tab - mse) / 2 / mse), rtol=1e-7)


# ---------------------------------------------------------------------------
# 2. Published nlme output: tablets with missing values, REML
# ---------------------------------------------------------------------------

def test_tablets_with_missing_values_reml_matches_published_nlme():
    y, X, tab = tablets(missing=True)
    terms = [(tab, np.ones(len(y)))]
    fit = dense_fit(y, X, terms, reml=True)
    # nlme stops its optimiser ~3e-7 away (on the SD scale) from the optimum, which moves
    # the last printed digit of a few numbers: compare the fit to 1e-6 ...
    np.testing.assert_allclose(np.sqrt(fit["varcov"][0][0, 0]), 0.3192429, atol=1e-6)
    np.testing.assert_allclose(fit["sigma"], 0.2085067, atol=1e-6)
    np.testing.assert_allclose(fit["beta"], [10.283857, -0.072111], atol=1e-6)
    np.testing.assert_allclose(fit["beta_se"], [0.09259174, 0.0869718], atol=1e-7)
    # ... and at nlme's own estimate of theta every printed digit must match.
    theta_nlme = [0.3192429 / 0.2085067]
    q = dense_quantities(theta_nlme, y, X, terms, reml=True)
    assert_printed(np.sqrt(q["varcov"][0][0, 0]), "0.3192429")
    assert_printed(q["sigma"], "0.2085067")
    assert_printed(q["beta"][0], "10.283857")
    assert_printed(q["beta"][1], "-0.072111")
    assert_printed(q["beta_se"][0], "0.09259174")
    assert_printed(q["beta_se"][1], "0.0869718")
    # our optimum is (slightly) better than nlme's
    assert fit["objective"] <= q["objective"]
    assert q["objective"] - fit["objective"] < 1e-9


# ---------------------------------------------------------------------------
# Published lme4 output: Dyestuff, Yield ~ 1 + (1 | Batch), REML and ML
# ---------------------------------------------------------------------------

def test_dyestuff_matches_published_lme4_reml_and_ml():
    y = np.array(DYESTUFF, dtype=float)
    X = np.ones((30, 1))
    terms = [(np.repeat(np.arange(6), 5), np.ones(30))]
    reml = dense_fit(y, X, terms, reml=True)
    assert_printed(reml["objective"], "319.6543")      # REML criterion at convergence
    assert_printed(reml["theta"][0], "0.8483238")
    assert_printed(np.sqrt(reml["varcov"][0][0, 0]), "42.00")
    assert_printed(reml["sigma"], "49.51")
    assert_printed(reml["beta"][0], "1527.50")
    assert_printed(reml["beta_se"][0], "19.38")
    ml = dense_fit(y, X, terms, reml=False)
    assert_printed(ml["objective"], "327.3271")        # deviance
    assert_printed(ml["loglik"], "-163.6635")
    assert_printed(ml["aic"], "333.3271")
    assert_printed(ml["bic"], "337.5307")
    assert_printed(ml["theta"][0], "0.7525807")
    assert_printed(np.sqrt(ml["varcov"][0][0, 0]), "37.26")
    assert_printed(ml["sigma"], "49.51")
    assert_printed(ml["beta_se"][0], "17.69")


# ---------------------------------------------------------------------------
# 3. Balanced one-way layout: REML = ANOVA (method of moments) when positive
# ---------------------------------------------------------------------------

def anova_one_way(y, a, m):
    Y = y.reshape(a, m)
    msb = m * ((Y.mean(1) - Y.mean()) ** 2).sum() / (a - 1)
    msw = ((Y - Y.mean(1, keepdims=True)) ** 2).sum() / (a * (m - 1))
    return msb, msw


@pytest.mark.parametrize("seed,a,m,tau", [(1, 8, 6, 1.5), (2, 5, 3, 0.8), (3, 12, 4, 2.0)])
def test_balanced_one_way_reml_equals_anova(seed, a, m, tau):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(a), m)
    y = 3.0 + tau * rng.normal(size=a)[g] + rng.normal(size=a * m)
    msb, msw = anova_one_way(y, a, m)
    assert msb > msw                                       # interior case
    fit = dense_fit(y, np.ones((a * m, 1)), [(g, np.ones(a * m))], reml=True)
    np.testing.assert_allclose(fit["sigma"] ** 2, msw, rtol=1e-7)
    np.testing.assert_allclose(fit["varcov"][0][0, 0], (msb - msw) / m, rtol=1e-6)
    np.testing.assert_allclose(fit["beta"][0], y.mean(), rtol=1e-12)
    np.testing.assert_allclose(fit["beta_se"][0], np.sqrt(msb / (a * m)), rtol=1e-7)
    # BLUPs are shrunken group means; condVar has the closed form sigma^2 tau^2 / (sigma^2 + m tau^2)
    s2, t2 = msw, (msb - msw) / m
    shrink = m * t2 / (s2 + m * t2)
    Y = y.reshape(a, m)
    np.testing.assert_allclose(fit["blups"][0][:, 0], shrink * (Y.mean(1) - y.mean()), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fit["cond_var"][0][:, 0, 0], s2 * t2 / (s2 + m * t2), rtol=1e-6)


def test_balanced_one_way_reml_on_the_boundary_when_msb_below_msw():
    """If MSB < MSW the REML estimate of the group variance is 0 and sigma^2 = SST / (N - 1)."""
    rng = np.random.default_rng(0)
    a, m = 6, 4
    g = np.repeat(np.arange(a), m)
    for _ in range(100):
        y = rng.normal(size=a * m)
        msb, msw = anova_one_way(y, a, m)
        if msb < 0.7 * msw:
            break
    assert msb < 0.7 * msw
    fit = dense_fit(y, np.ones((a * m, 1)), [(g, np.ones(a * m))], reml=True)
    assert fit["theta"][0] == 0.0
    np.testing.assert_allclose(fit["sigma"] ** 2, ((y - y.mean()) ** 2).sum() / (a * m - 1), rtol=1e-12)


# ---------------------------------------------------------------------------
# 4. Identities
# ---------------------------------------------------------------------------

THETA = np.array([0.9, 0.3, 0.6, 0.5])      # T_1 = [[0.9, 0], [0.3, 0.6]], T_2 = [[0.5]]


def test_theta_parameterisation_is_lme4s():
    T1, T2 = theta_to_factors(THETA, [2, 1])
    np.testing.assert_array_equal(T1, [[0.9, 0.0], [0.3, 0.6]])
    np.testing.assert_array_equal(T2, [[0.5]])
    T3, = theta_to_factors([1, 2, 3, 4, 5, 6], [3])
    np.testing.assert_array_equal(T3, [[1, 0, 0], [2, 4, 0], [3, 5, 6]])
    y, X, terms = random_problem(0)
    q = dense_quantities(THETA, y, X, terms)
    np.testing.assert_allclose(q["varcov"][0], q["sigma"] ** 2 * T1 @ T1.T, rtol=1e-14)
    np.testing.assert_allclose(q["varcov"][1], q["sigma"] ** 2 * T2 @ T2.T, rtol=1e-14)
    # Z layout: column j * p + c of the first term is Zraw[:, c] * (codes == j)
    Z = build_Z(terms)
    codes, zraw = terms[0]
    assert Z.shape == (len(y), 8 * 2 + 5)
    np.testing.assert_array_equal(Z[:, 3 * 2 + 1], zraw[:, 1] * (codes == 3))
    np.testing.assert_array_equal(Z[:, 16 + 4], (terms[1][0] == 4).astype(float))


def test_ml_and_reml_beta_agree_at_fixed_theta():
    y, X, terms = random_problem(1)
    n, p = X.shape
    ml = dense_quantities(THETA, y, X, terms, reml=False)
    re = dense_quantities(THETA, y, X, terms, reml=True)
    np.testing.assert_allclose(ml["beta"], re["beta"], rtol=1e-13)
    np.testing.assert_allclose(ml["sigma"] ** 2 * n, re["sigma"] ** 2 * (n - p), rtol=1e-13)
    np.testing.assert_allclose(ml["vcov_beta"] * n, re["vcov_beta"] * (n - p), rtol=1e-12)
    for b_ml, b_re in zip(ml["blups"], re["blups"]):
        np.testing.assert_allclose(b_ml, b_re, rtol=1e-12)


@pytest.mark.parametrize("reml", [True, False])
def test_invariant_to_row_order(reml):
    y, X, terms = random_problem(2)
    perm = np.random.default_rng(5).permutation(len(y))
    pterms = [(c[perm], z[perm]) for c, z in terms]
    a = dense_quantities(THETA, y, X, terms, reml=reml)
    b = dense_quantities(THETA, y[perm], X[perm], pterms, reml=reml)
    np.testing.assert_allclose(a["objective"], b["objective"], rtol=1e-13)
    np.testing.assert_allclose(a["beta"], b["beta"], rtol=1e-11)
    np.testing.assert_allclose(a["beta_se"], b["beta_se"], rtol=1e-11)
    for k in range(2):
        np.testing.assert_allclose(a["blups"][k], b["blups"][k], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(a["cond_var"][k], b["cond_var"][k], rtol=1e-10, atol=1e-13)


def test_theta_zero_gives_ols():
    y, X, terms = random_problem(3)
    n, p = X.shape
    beta_ols, *_ = np.linalg.lstsq(X, y, rcond=None)
    rss = float(((y - X @ beta_ols) ** 2).sum())
    zero = np.zeros(4)
    ml = dense_quantities(zero, y, X, terms, reml=False)
    np.testing.assert_allclose(ml["objective"], n * (1 + np.log(2 * np.pi * rss / n)), rtol=1e-13)
    np.testing.assert_allclose(dense_objective(zero, y, X, terms, reml=False), ml["objective"], rtol=0)
    np.testing.assert_allclose(ml["beta"], beta_ols, rtol=1e-12)
    re = dense_quantities(zero, y, X, terms, reml=True)
    want = np.linalg.slogdet(X.T @ X)[1] + (n - p) * (1 + np.log(2 * np.pi * rss / (n - p)))
    np.testing.assert_allclose(re["objective"], want, rtol=1e-13)
    np.testing.assert_allclose(re["beta_se"], np.sqrt(np.diag(rss / (n - p) * np.linalg.inv(X.T @ X))),
                               rtol=1e-12)
    for b in ml["blups"]:
        assert np.all(b == 0)


def test_profiled_criteria_equal_unprofiled_gaussian_likelihoods():
    """-2 log N(y; X beta, V) and the restricted version, at (beta_hat, sigma_hat)."""
    y, X, terms = random_problem(4)
    n, p = X.shape
    Z = build_Z(terms)
    T1, T2 = theta_to_factors(THETA, [2, 1])
    Gr = sla.block_diag(*([T1 @ T1.T] * 8 + [T2 @ T2.T] * 5))
    for reml in (False, True):
        q = dense_quantities(THETA, y, X, terms, reml=reml)
        V = q["sigma"] ** 2 * (Z @ Gr @ Z.T + np.eye(n))
        m2ll = -2 * multivariate_normal(X @ q["beta"], V).logpdf(y)
        if reml:
            m2ll += np.linalg.slogdet(X.T @ np.linalg.solve(V, X))[1] - p * np.log(2 * np.pi)
        np.testing.assert_allclose(q["objective"], m2ll, rtol=1e-12)
        np.testing.assert_allclose(q["loglik"], -0.5 * m2ll, rtol=1e-12)
        k = 4 + p + 1
        np.testing.assert_allclose(q["aic"], m2ll + 2 * k, rtol=1e-12)
        np.testing.assert_allclose(q["bic"], m2ll + k * np.log(n), rtol=1e-12)


def test_blups_and_condvar_equal_lme4_pls_forms():
    """b = Lambda u with (Lambda'Z'Z Lambda + I) u = Lambda'Z'(y - X beta) and
    condVar = sigma^2 Lambda (Lambda'Z'Z Lambda + I)^-1 Lambda' (diagonal blocks)."""
    y, X, terms = random_problem(5)
    Z = build_Z(terms)
    T1, T2 = theta_to_factors(THETA, [2, 1])
    Lam = sla.block_diag(*([T1] * 8 + [T2] * 5))
    q = dense_quantities(THETA, y, X, terms, reml=True)
    A = Lam.T @ Z.T @ Z @ Lam + np.eye(Lam.shape[0])
    b = Lam @ np.linalg.solve(A, Lam.T @ Z.T @ (y - X @ q["beta"]))
    C = q["sigma"] ** 2 * Lam @ np.linalg.solve(A, Lam.T)
    np.testing.assert_allclose(q["blups"][0], b[:16].reshape(8, 2), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(q["blups"][1][:, 0], b[16:], rtol=1e-10, atol=1e-12)
    for j in range(8):
        np.testing.assert_allclose(q["cond_var"][0][j], C[2 * j:2 * j + 2, 2 * j:2 * j + 2], rtol=1e-10)
    np.testing.assert_allclose(q["cond_var"][1][:, 0, 0], np.diag(C)[16:], rtol=1e-10)
    # log|Vr| = log|Lambda'Z'Z Lambda + I| (lme4's log|L|^2)
    n = len(y)
    q_ml = dense_quantities(THETA, y, X, terms, reml=False)
    r2 = n * q_ml["sigma"] ** 2
    np.testing.assert_allclose(q_ml["objective"] - n * (1 + np.log(2 * np.pi * r2 / n)),
                               np.linalg.slogdet(A)[1], rtol=1e-11)


@pytest.mark.parametrize("reml", [True, False])
def test_fit_with_correlated_slopes_is_a_stationary_minimum(reml):
    y, X, terms = random_problem(8)
    fit = dense_fit(y, X, terms, reml=reml)
    theta = fit["theta"]
    assert np.all(theta[[0, 2, 3]] > 0.05)                 # interior solution
    f0 = fit["objective"]
    np.testing.assert_allclose(f0, dense_objective(theta, y, X, terms, reml=reml), rtol=0)
    # central-difference gradient ~ 0 and no better point nearby
    h = 1e-5
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        fp = dense_objective(theta + e, y, X, terms, reml=reml)
        fm = dense_objective(theta - e, y, X, terms, reml=reml)
        assert abs(fp - fm) / (2 * h) < 1e-4
        assert fp >= f0 - 1e-10 and fm >= f0 - 1e-10
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert dense_objective(theta + 1e-3 * rng.normal(size=theta.size), y, X, terms, reml=reml) > f0
    # a different start reaches the same optimum
    again = dense_fit(y, X, terms, reml=reml, theta0=np.array([0.2, -0.5, 1.5, 2.0]), n_random_starts=0, seed=1)
    assert abs(again["objective"] - f0) < 1e-8
    np.testing.assert_allclose(again["theta"], theta, atol=1e-4)
