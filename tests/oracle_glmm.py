"""Dense, slow, textbook reference for GLMMs: glmer's objectives at fixed parameters.

The *oracle* for the GLMM kernels and engine. Everything is dense NumPy/SciPy from the model

    y_i | u ~ family(mu_i),  mu_i = linkinv(eta_i),  eta = offset + X beta + Z Lambda(theta) u,
    u ~ N(0, I_q),

for small data (n up to a few thousand, q up to a few hundred), independent of bigmixed's
kernels: the family functions are written with scipy.special / scipy.stats, the
log-likelihood is scipy's logpmf (not deviance + constant), the quadrature is scipy's.

Random-effects terms and theta follow tests/oracle.py (``terms`` = list of (codes, Zraw);
theta fills each term's lower-triangular T_k column by column; Lambda = blockdiag of l_k
copies of T_k; Z column j*p_k + c is Zraw[:, c] * (codes == j)).

Families and links
------------------
``family`` in {"binomial", "poisson"}, ``link`` in {"logit", "probit", "cloglog", "log",
"identity"}, with the clamps of ``convention="lme4"`` (lme4's C++ glmFamily, what glmer
evaluates) or ``"R"`` (R's make.link family objects); see kernels/glm.py for the table. For
binomial, y is the proportion of successes and ``prior_w`` the numbers of trials (times any
weights); R's m (``m``) defaults to prior_w.

Objectives (lme4's, -2 log-likelihood scale)
--------------------------------------------
* ``laplace(theta, beta)`` (glmer nAGQ = 1): with u* the conditional mode (minimizer of the
  penalized deviance dev(u) + ||u||^2, found by dense Fisher scoring with step halving to the
  gradient's rounding level) and W the working weights at u*,
      -2 loglik(mu(u*)) + ||u*||^2 + log det(Lambda'Z'W Z Lambda + I)
  (lme4: ldL2 + sqrL + aic).
* ``nagq0(theta)`` (glmer's first stage, nAGQ = 0): (u, beta) jointly minimize the penalized
  deviance; the objective is the same expression at that joint optimum, *without* a log det
  of the fixed-effects block (lme4's glmResp::Laplace ignores ldRX2). Returns beta too.
* ``agq_quad(theta, beta)`` (one scalar term): the exact -2 log marginal likelihood,
  sum_g -2 log integral prod_{i in g} p(y_i | u) phi(u) du, each level's integral by
  scipy.integrate.quad around the mode.
* ``agq_gh(theta, beta, n)``: adaptive Gauss-Hermite with n nodes (numpy's hermegauss rule),
  centred at the mode, scaled by 1/sqrt(Lambda'Z'WZ Lambda + 1) at the mode (-2 log-likelihood
  scale; lme4's glmerAGQ reports this minus the family's aic constant, see `aic_constant`).
"""
from __future__ import annotations

import numpy as np
import scipy.integrate as sint
import scipy.special as ssp
import scipy.stats as sst

from oracle import _as_terms, _build_Lambda, build_Z, theta_to_factors

__all__ = ["GLMMOracle", "LME4_DEVFUN", "family_functions", "lme4_example_data"]

EPS = np.finfo(float).eps
_R_PROBIT_THRESH = -sst.norm.ppf(EPS)


def family_functions(family, link, convention="lme4"):
    """(linkinv, mu_eta, variance) as NumPy functions, with lme4's or R's clamps."""
    lme4 = convention == "lme4"
    if link == "logit":
        if lme4:
            def linkinv(eta):
                return np.clip(ssp.expit(eta), EPS, 1 - EPS)

            def mu_eta(eta):
                return np.maximum(sst.logistic.pdf(eta), EPS)
        else:
            def linkinv(eta):
                e = np.where(eta < -30, EPS, np.where(eta > 30, 1 / EPS, np.exp(np.clip(eta, -30, 30))))
                return e / (1 + e)

            def mu_eta(eta):
                ex = np.exp(np.clip(eta, -30, 30))
                return np.where(np.abs(eta) > 30, EPS, ex / (1 + ex) ** 2)
    elif link == "probit":
        if lme4:
            def linkinv(eta):
                return np.minimum(sst.norm.cdf(eta), 1 - EPS)

            def mu_eta(eta):
                return sst.norm.pdf(eta)
        else:
            def linkinv(eta):
                return sst.norm.cdf(np.clip(eta, -_R_PROBIT_THRESH, _R_PROBIT_THRESH))

            def mu_eta(eta):
                return np.maximum(sst.norm.pdf(eta), EPS)
    elif link == "cloglog":
        def linkinv(eta):
            return np.clip(-np.expm1(-np.exp(eta)), EPS, 1 - EPS)

        if lme4:
            def mu_eta(eta):
                return np.maximum(np.exp(eta - np.exp(eta)), EPS)
        else:
            def mu_eta(eta):
                e = np.minimum(eta, 700)
                return np.maximum(np.exp(e) * np.exp(-np.exp(e)), EPS)
    elif link == "log":
        def linkinv(eta):
            return np.maximum(np.exp(eta), EPS)

        mu_eta = linkinv
    elif link == "identity":
        def linkinv(eta):
            return np.asarray(eta, float)

        def mu_eta(eta):
            return np.ones_like(np.asarray(eta, float))
    else:
        raise ValueError(link)
    if family == "binomial":
        if lme4:
            def variance(mu):
                return np.maximum(mu * (1 - mu), EPS)
        else:
            def variance(mu):
                return mu * (1 - mu)
    elif family == "poisson":
        def variance(mu):
            return np.asarray(mu, float)
    else:
        raise ValueError(family)
    return linkinv, mu_eta, variance


class GLMMOracle:
    """Dense GLMM for fixed data: objectives and modes at given (theta, beta)."""

    def __init__(self, y, X, terms, family="binomial", link=None, prior_w=None, offset=None,
                 m=None, convention="lme4"):
        y = np.asarray(y, float).ravel()
        n = y.size
        X = np.asarray(X, float)
        if X.ndim == 1:
            X = X[:, None]
        self.y, self.X, self.n = y, X, n
        self.family = family
        self.link = link or {"binomial": "logit", "poisson": "log"}[family]
        self.prior_w = np.ones(n) if prior_w is None else np.asarray(prior_w, float)
        self.offset = np.zeros(n) if offset is None else np.asarray(offset, float)
        self.m = self.prior_w if m is None else np.asarray(m, float)
        tt = _as_terms(terms, n)
        self.terms = tt
        self.ps = [z.shape[1] for _, z, _ in tt]
        self.nlevs = [nl for _, _, nl in tt]
        self.Z = build_Z([(c, z) for c, z, _ in tt], n)
        self.q = self.Z.shape[1]
        self.linkinv, self.mu_eta, self.variance = family_functions(family, self.link, convention)

    # ---------------------------------------------------------------- pieces
    def Lambda(self, theta):
        return _build_Lambda(theta_to_factors(theta, self.ps), self.nlevs)

    def dev_resids(self, mu):
        y, wt = self.y, self.prior_w
        if self.family == "binomial":
            with np.errstate(divide="ignore", invalid="ignore"):
                a = np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0.0)
                b = np.where(y < 1, (1 - y) * np.log(np.where(y < 1, 1 - y, 1) / (1 - mu)), 0.0)
            return 2 * wt * (a + b)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0.0)
        return 2 * wt * (a - (y - mu))

    def minus2_loglik_rows(self, mu):
        """-2 log p(y_i | mu_i) per row, from scipy's logpmf, as R's family$aic weights it."""
        y, wt = self.y, self.prior_w
        if self.family == "binomial":
            m = self.m
            k = np.rint(m * y)
            M = np.rint(m)
            f = np.where(m > 0, wt / np.where(m > 0, m, 1), 0.0)
            return -2 * f * sst.binom.logpmf(k, M, mu)
        return -2 * wt * sst.poisson.logpmf(y, mu)

    def aic_constant(self):
        """c = -2 loglik(mu) - deviance(mu) (the same for every mu when the counts are integers);
        evaluated at mu = 0.3 (binomial) / 1.7 (poisson), from scipy's logpmf."""
        mu = np.full(self.n, 0.3 if self.family == "binomial" else 1.7)
        return float(np.sum(self.minus2_loglik_rows(mu)) - np.sum(self.dev_resids(mu)))

    def eta(self, theta, beta, u):
        return self.offset + self.X @ np.asarray(beta, float) + self.Z @ (self.Lambda(theta) @ u)

    def _working(self, eta):
        mu = self.linkinv(eta)
        me = self.mu_eta(eta)
        w = self.prior_w * me ** 2 / self.variance(mu)
        return mu, me, w

    def penalized_deviance(self, theta, beta, u):
        mu = self.linkinv(self.eta(theta, beta, u))
        return float(np.sum(self.dev_resids(mu)) + u @ u)

    def score_u(self, theta, beta, u):
        """Gradient of dev + ||u||^2 with respect to u (zero at the mode)."""
        eta = self.eta(theta, beta, u)
        mu, me, _ = self._working(eta)
        s = self.prior_w * me / self.variance(mu) * (self.y - mu)
        return -2 * (self.Lambda(theta).T @ (self.Z.T @ s)) + 2 * u

    def score_beta(self, theta, beta, u):
        eta = self.eta(theta, beta, u)
        mu, me, _ = self._working(eta)
        s = self.prior_w * me / self.variance(mu) * (self.y - mu)
        return -2 * (self.X.T @ s)

    # ---------------------------------------------------------------- modes
    def modes(self, theta, beta, u0=None, max_iter=200):
        """Conditional modes u* by Fisher scoring with step halving, iterated until the
        penalized deviance stops decreasing and the step is at the rounding level."""
        ZL = self.Z @ self.Lambda(theta)
        beta = np.asarray(beta, float)
        fixed = self.offset + self.X @ beta
        u = np.zeros(self.q) if u0 is None else np.array(u0, float)
        f = self.penalized_deviance(theta, beta, u)
        for _ in range(max_iter):
            eta = fixed + ZL @ u
            mu, me, w = self._working(eta)
            H = ZL.T @ (w[:, None] * ZL) + np.eye(self.q)
            g = ZL.T @ (w * (self.y - mu) / me) - u
            step = np.linalg.solve(H, g)
            t = 1.0
            for _h in range(60):
                fn = self.penalized_deviance(theta, beta, u + t * step)
                if fn <= f + 1e-15 * abs(f):
                    break
                t /= 2
            u = u + t * step
            small = np.max(np.abs(t * step)) <= 1e-14 * (1 + np.max(np.abs(u)))
            f = min(f, fn)
            if small:
                break
        return u

    def _logdet(self, theta, beta, u):
        ZL = self.Z @ self.Lambda(theta)
        _, _, w = self._working(self.eta(theta, beta, u))
        return float(np.linalg.slogdet(ZL.T @ (w[:, None] * ZL) + np.eye(self.q))[1])

    # ---------------------------------------------------------------- objectives
    def laplace(self, theta, beta, return_modes=False):
        """glmer's nAGQ = 1 objective at (theta, beta) (see the module docstring)."""
        u = self.modes(theta, beta)
        mu = self.linkinv(self.eta(theta, beta, u))
        val = float(np.sum(self.minus2_loglik_rows(mu)) + u @ u + self._logdet(theta, beta, u))
        return (val, u) if return_modes else val

    def nagq0(self, theta, beta0=None, max_iter=200):
        """glmer's nAGQ = 0 objective at theta: (value, beta, u) at the joint optimum of the
        penalized deviance over (u, beta), by Fisher scoring with step halving."""
        p = self.X.shape[1]
        q = self.q
        ZL = self.Z @ self.Lambda(theta)
        D = np.hstack([ZL, self.X])
        pen = np.r_[np.ones(q), np.zeros(p)]
        th = np.zeros(q + p)
        if beta0 is not None:
            th[q:] = beta0

        def pdev(t):
            mu = self.linkinv(self.offset + D @ t)
            return float(np.sum(self.dev_resids(mu)) + t[:q] @ t[:q])

        f = pdev(th)
        for _ in range(max_iter):
            eta = self.offset + D @ th
            mu, me, w = self._working(eta)
            H = D.T @ (w[:, None] * D) + np.diag(pen)
            g = D.T @ (w * (self.y - mu) / me) - pen * th
            step = np.linalg.solve(H, g)
            t = 1.0
            for _h in range(60):
                fn = pdev(th + t * step)
                if fn <= f + 1e-15 * abs(f):
                    break
                t /= 2
            th = th + t * step
            f = min(f, fn)
            if np.max(np.abs(t * step)) <= 1e-14 * (1 + np.max(np.abs(th))):
                break
        u, beta = th[:q], th[q:]
        mu = self.linkinv(self.offset + D @ th)
        val = float(np.sum(self.minus2_loglik_rows(mu)) + u @ u + self._logdet(theta, beta, u))
        return val, beta, u

    def _scalar_term(self):
        if len(self.terms) != 1 or self.ps[0] != 1:
            raise ValueError("quadrature needs a single scalar random-effects term")
        codes, zraw, nlev = self.terms[0]
        return codes, zraw[:, 0], nlev

    def _level_minus2ll(self, theta, beta):
        """(f, n_levels, rows): f(g, u) = -2 log prod_{i in g} p(y_i | u) + u^2 for a scalar
        term (scipy's logpmf), rows[g] the rows of level g."""
        codes, z, nlev = self._scalar_term()
        t = float(np.ravel(theta)[0])
        fixed = self.offset + self.X @ np.asarray(beta, float)
        rows = [np.flatnonzero(codes == g) for g in range(nlev)]
        subs = [_Sub(self, r) for r in rows]

        def f(g, u):
            r = rows[g]
            mu = self.linkinv(fixed[r] + z[r] * t * u)
            return float(np.sum(subs[g].minus2(mu)) + u * u)

        return f, nlev, rows

    def agq_quad(self, theta, beta):
        """-2 log marginal likelihood for one scalar term, each level by scipy quad."""
        f, nlev, _ = self._level_minus2ll(theta, beta)
        u = self.modes(theta, beta)
        total = 0.0
        for g in range(nlev):
            d0 = f(g, u[g])
            # over u_g +- 40 (the prior's SD is 1, so the integrand is 0 to double precision
            # beyond; an infinite range gives inf - inf = NaN for Poisson's exp(eta))
            val, _err = sint.quad(lambda x: np.exp(-0.5 * (f(g, x) - d0)), u[g] - 40.0,
                                  u[g] + 40.0, points=[u[g]], epsabs=0.0, epsrel=1e-13,
                                  limit=400)
            total += d0 - 2 * np.log(val / np.sqrt(2 * np.pi))
        return float(total)

    def agq_gh(self, theta, beta, n_agq):
        """Adaptive Gauss-Hermite quadrature with n_agq nodes (hermegauss), -2 log-likelihood
        scale, centred at the modes and scaled by the curvature there."""
        from numpy.polynomial.hermite_e import hermegauss

        f, nlev, rows = self._level_minus2ll(theta, beta)
        u = self.modes(theta, beta)
        codes, z, _ = self._scalar_term()
        t = float(np.ravel(theta)[0])
        _, _, w = self._working(self.eta(theta, beta, u))
        zn, wn = hermegauss(n_agq)
        wn = wn / np.sqrt(2 * np.pi)
        total = 0.0
        for g in range(nlev):
            r = rows[g]
            Lg = np.sqrt(t * t * np.sum(w[r] * z[r] ** 2) + 1.0)
            sd = 1.0 / Lg
            d0 = f(g, u[g])
            s = sum(wk * np.exp(-0.5 * (f(g, u[g] + zk * sd) - d0) + 0.5 * zk * zk)
                    for zk, wk in zip(zn, wn))
            total += d0 + 2 * np.log(Lg) - 2 * np.log(s)
        return float(total)


class _Sub:
    """The rows r of an oracle, for per-level log-likelihoods."""

    def __init__(self, o, r):
        self.o, self.r = o, r

    def minus2(self, mu):
        o, r = self.o, self.r
        y, wt = o.y[r], o.prior_w[r]
        if o.family == "binomial":
            m = o.m[r]
            fct = np.where(m > 0, wt / np.where(m > 0, m, 1), 0.0)
            return -2 * fct * sst.binom.logpmf(np.rint(m * y), np.rint(m), mu)
        return -2 * wt * sst.poisson.logpmf(y, mu)


# ------------------------------------------------------------------------------------------
# lme4's numbers on two small data sets (for the oracle's and the kernels' tests)
# ------------------------------------------------------------------------------------------
def lme4_example_data(name):
    """The data sets of LME4_DEVFUN: (g, x, y), g the level 0..29 of each row (rows sorted by
    level), x a covariate, y binary ("bin") or a count ("poi"). Fitted in R (lme4 1.1-31) as
    glmer(y ~ x + (1 | g), family = binomial / poisson)."""
    seed, fam = {"bin": (1, "binomial"), "poi": (2, "poisson")}[name]
    rng = np.random.default_rng(seed)
    L = 30
    ng = rng.integers(2, 15, L)
    g = np.repeat(np.arange(L), ng)
    n = g.size
    x = rng.normal(size=n)
    b = rng.normal(size=L) * 0.9
    eta = -0.4 + 0.7 * x + b[g]
    if fam == "binomial":
        y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    else:
        y = rng.poisson(np.exp(eta)).astype(float)
    return g, x, y


def _hex(s):
    return np.array([float.fromhex(t) for t in s.split()])


# LME4_DEVFUN[name]["lp0"][tolPwrss]: environment(devfun)$lp0, the linear predictor every
# evaluation of glmer's stage-2 objective restarts PIRLS from (lme4's default tolPwrss 1e-7
# only); ["dev"][(tolPwrss, nAGQ)]: [((theta, beta0, beta1), devfun value), ...] for
# glmer(..., nAGQ = nAGQ, devFunOnly = TRUE, control = glmerControl(tolPwrss = tolPwrss));
# ["nagq0"][tolPwrss]: [(theta, value, beta)] for the nAGQ = 0 devfun (beta = pp$beta(1)).
LME4_DEVFUN = {
    "bin": {
        "lp0": {1e-07: _hex(
            "-0x1.7dbe457b075cfp-2 -0x1.9445b6888c6dp-1 -0x1.098706f55e6acp+0 -0x1.66ee8f89fefb6p+0 "
            "-0x1.02cc39939346fp+0 -0x1.a0534e70c9fbcp-1 -0x1.064fa77c3f1e1p+0 0x1.29e325cb0e42ap-3 "
            "0x1.edd32423646e4p-2 -0x1.2505e5166c7ecp+1 -0x1.ad26bf373e8bbp+0 -0x1.980ece225611ep-2 "
            "-0x1.2a76028482d9cp-1 -0x1.be42e92d08748p-4 -0x1.b3073ce2a17fp-4 0x1.4f7ed9f723899p+0 "
            "-0x1.9531bed09d7b7p+0 -0x1.090acf071dda2p+0 0x1.89b32701ed051p-1 -0x1.16463cbc51818p-2 "
            "-0x1.09c92d3f67b52p-2 -0x1.2312859774c94p+0 -0x1.fb7dfe61201fdp+0 -0x1.420c413c544f8p-1 "
            "-0x1.585b516a8184fp-1 -0x1.ab341b71f3493p+0 -0x1.435d8fb5125d9p+0 -0x1.ca12ecde2fd47p-2 "
            "-0x1.190fc13e7563fp+0 -0x1.de17ee767b06bp-2 -0x1.4a31b7ecfcfcp-2 -0x1.77ea70e10f7e3p-2 "
            "-0x1.8ac6b70b056d6p-1 0x1.91355fc729968p-5 0x1.152ebd26ad0fbp-2 -0x1.3c53fdf8c8062p-3 "
            "-0x1.00eab702be328p+0 0x1.36d667f480f2ap-3 -0x1.88ecac7c1ef8ep-1 0x1.0c0485c2081dfp-2 "
            "-0x1.314decd2dc281p+0 0x1.48984697241d8p-3 -0x1.12888436fed7ap-1 -0x1.cff76a1a3280bp+0 "
            "-0x1.1d908c9344963p+0 -0x1.aeac98238e594p-1 -0x1.a825cc83f0837p-1 -0x1.c3914e641d694p+0 "
            "-0x1.db750df39bc2cp+0 -0x1.c416a5c41e2cap-1 -0x1.6134389fafb42p+0 -0x1.b660e42fd596p-1 "
            "-0x1.dcc1ae799b378p-2 -0x1.216393c1d619cp+1 -0x1.af2bee2f4e896p-1 -0x1.e6d37b4879e5p-4 "
            "-0x1.40e90f762d0d6p+0 -0x1.a2dd128675957p+0 0x1.7697c19e707e9p-3 -0x1.82e90cbc5ba4bp-3 "
            "0x1.28f11eaa646b8p-2 -0x1.453801ffce7cdp-1 -0x1.7b834270f7d19p+0 -0x1.d6e579d3215cp-2 "
            "-0x1.6b9e97360d677p-1 0x1.99d41a9a54ff9p-3 -0x1.de3a02073dd23p-3 -0x1.97f3f9a9beb53p+0 "
            "-0x1.44cf16c40ec57p+0 0x1.1fb5c410943acp-2 0x1.07f0e26c09cf1p-3 -0x1.b5d2669849ea7p-1 "
            "-0x1.cddc626dc182p-6 0x1.380edde4194e4p-2 0x1.497c573694451p-2 0x1.4066f54146919p-1 "
            "0x1.4f708e0e33fd8p-3 -0x1.4872d4199f00ap-1 -0x1.870cc6175e135p-1 0x1.bac210bbb35a1p-3 "
            "-0x1.1fd5a4b9e6aaap+1 -0x1.592d0cefcceabp-1 -0x1.17a90a53e38p-1 -0x1.024c8b5ba807ap+1 "
            "-0x1.6a28a324fa4dp-1 -0x1.70e0fec61077dp+0 -0x1.40077995574a6p-2 -0x1.0c8f239b1e8f4p+0 "
            "-0x1.d393840a36b53p-2 -0x1.7fced56c261ap-5 -0x1.5707ef5420ddcp-1 -0x1.9bb5ba9f378b6p+0 "
            "-0x1.0ac9cb33aa7aap+1 0x1.680f4d1f29896p-2 -0x1.09d4894c432b4p+0 -0x1.77fe7431d3e2ap+0 "
            "-0x1.b67ad6b7fc68cp-4 -0x1.6dd94de2d49fcp-2 0x1.aebc91561775ap-2 -0x1.83ad3ba90c2c4p-3 "
            "-0x1.a27ba0fe32b5p-3 -0x1.7e9a16cf6584ap-1 0x1.1567c97e046dap-3 -0x1.dd43e7ee6a276p+0 "
            "-0x1.31c903101734cp-1 0x1.5b4a82d6b6fep-5 -0x1.1d7720432f2a8p+1 -0x1.774e110b03ad4p+1 "
            "0x1.436908647f70ep+0 0x1.59f53df649058p+1 0x1.d5aa39c1b892p-5 -0x1.07e755b0bfe8p-3 "
            "0x1.3e1588ccd55a2p+0 0x1.69febfb3fd8ap-3 0x1.b47bf6f5c43b8p-2 0x1.1682c4afcacd1p-1 "
            "0x1.33367e0a88686p+0 0x1.00af6121ac01ap-1 0x1.02b7d2d65bc93p+0 0x1.57ffd1d49c366p-1 "
            "-0x1.4c1b094211d9bp+0 -0x1.cfe4d54d373c5p-1 -0x1.604844dc07453p+0 -0x1.5356dec4b1cd6p-1 "
            "-0x1.8162c131c9ef6p+0 -0x1.8b64c179e6078p+0 0x1.6cd4bf618f449p-2 -0x1.89f61bd65a9a2p-1 "
            "-0x1.8a3c3e5edcafcp-1 -0x1.64d96ab164316p-2 -0x1.0b253c29d2221p+0 -0x1.cce337d1213b4p-1 "
            "0x1.6bb009a58d901p-2 0x1.fd77d221096aep-3 -0x1.a6e411c738272p-1 0x1.51a397299aabap-1 "
            "-0x1.9b8c18e5713f4p-2 -0x1.7f7eed178d49cp-1 -0x1.441b457edf4e6p-1 -0x1.02f6b362b3374p-2 "
            "0x1.4055932e82058p+0 -0x1.ad16c1faccac8p-1 -0x1.255c6cad7f32ep-2 -0x1.ffdc10dc66e52p+0 "
            "-0x1.a0bfd55f77386p-2 0x1.0f1f01e8f9b1ap-2 -0x1.2a1a9470c68dbp-1 -0x1.bffb7731cad14p-1 "
            "-0x1.dda9dcac799ddp-3 0x1.db99ade57691ap-4 0x1.6c2ba8f23b03ap-4 0x1.a5623ec73d4efp-2 "
            "-0x1.ce4f017a59c46p-1 -0x1.801f8b2e4d31fp+0 -0x1.4c11f7139e7cep-3 -0x1.f4d848051137cp-4 "
            "-0x1.4be9db558a01fp-2 -0x1.b5d6a322750e8p-2 -0x1.1a1f3a6d151c3p-2 -0x1.a695eb32d5a14p+0 "
            "0x1.b4be209968b2cp-3 -0x1.aad1ac4d3c3eep-1 -0x1.479bd8fbde6cp+0 0x1.1f9d2b5f6e934p-4 "
            "0x1.275327d25f89bp-1 -0x1.348ddde601798p-5 -0x1.23e5d53dd089ep-2 -0x1.19a11ccfb7528p+0 "
            "0x1.bc4409b59a65cp+0 -0x1.454d8f0100b85p-2 -0x1.d2ba111d9fedbp+0 -0x1.8e177fbb7a3d8p+0 "
            "-0x1.d16c10ab7ca6ep-1 -0x1.1100d71dbfc7p+1 -0x1.b24223fc48e36p-1 -0x1.50eaa45542976p+0 "
            "-0x1.e96d6dbc834c8p-5 -0x1.06c9dafe0173bp-2 -0x1.7f5bd3921bca8p+1 -0x1.e2b3ee68d2fbp-1 "
            "-0x1.af1aca4dd5d7ep+0 0x1.6549c21d721cp-2 -0x1.696b9aaee741p-2 -0x1.1c7dab401b162p-4 "
            "-0x1.45b2cb826f70dp+0 0x1.c4fc38067d48dp-1 0x1.0710967fc094bp+0 -0x1.45a1841d8e534p+0 "
            "-0x1.9a50c064851a1p-3 -0x1.f5d9a43069d94p-1 -0x1.fbbbe75397cfcp-2 -0x1.6bf6901c08b86p+0 "
            "0x1.1e0fcda632479p+0 -0x1.fe6a6970a3789p-1 -0x1.fb07ed6e625ep-2 0x1.9721d7c7378f4p-4 "
            "-0x1.83a9dd0ca1e53p-1 -0x1.cfb1f4a0c2d62p-2 -0x1.63a22cca77461p-1 -0x1.7ee4f753d9292p-2 "
            "-0x1.5d7f2f763f8f4p+0 -0x1.a36659a294cf3p-1 -0x1.4b32a340a0b82p-1 -0x1.7b9b2be34f097p-1 "
            "-0x1.cd31440d184c2p-2 -0x1.6c19ed0f0bb1cp-1 0x1.19f57c50e9e0ep-4 -0x1.77964dfb3e592p-1 "
            "-0x1.306357c633a74p-1 -0x1.f9f5bc65478fap-1 -0x1.c530128cb3a59p-1 -0x1.6f6cffd5e7832p+0 "
            "0x1.7eb52466936a4p-4 -0x1.251d7ef07d34dp+0 -0x1.b2d634ac0a05ep-1 -0x1.a1b40a99f77fp-6 "
            "0x1.bdf4961a140cp-8 -0x1.2ee0ade1cd996p-1 -0x1.5872fc064fec4p+1 -0x1.be9b66c2fe61ep-1 "
            "-0x1.fc0965192c5d6p-1 -0x1.1e8ab395e2c73p+1 -0x1.39187bfac2819p-1 -0x1.b558aa2f00cc4p+0 "
            "-0x1.033be759c3e27p+1 -0x1.f99e2520899d6p-1 -0x1.3122d10463483p+0 -0x1.d0d1e073c74bcp-1 "
            "-0x1.20c1506b2680bp+1 0x1.2b0930374b38dp-2 -0x1.8215fbfb33347p+0 -0x1.1a72f945c99d1p+1 "
            "-0x1.31f644d44cb82p-1 -0x1.52c95f565ae51p+0 -0x1.a22aa8ebdf67cp-1 -0x1.4fe3018da94e9p+0 "
            "-0x1.1a7a696182192p+0 -0x1.925aaffa3a81cp-1 -0x1.8691068a590d8p+0 -0x1.da353da18f472p-2 "
            "-0x1.1e6ebc19b4a46p+0 -0x1.6ab9d0ff59f04p+0 -0x1.6c1e19bcd815dp-1 -0x1.bf51cdf8285c8p-2 "
            "-0x1.e0f37e3cc4574p-1 "
        )},
        "dev": {
            (1e-07, 1): [
                (_hex("0x1.999999999999ap-1 -0x1.3333333333333p-2 0x1p-1"), float.fromhex("0x1.2bec3aedf0d94p+8")),
                (_hex("0x1.4cccccccccccdp+0 -0x1p-1 0x1.ccccccccccccdp-1"), float.fromhex("0x1.2ba3a20b18e45p+8")),
            ],
            (1e-07, 5): [
                (_hex("0x1.999999999999ap-1 -0x1.3333333333333p-2 0x1p-1"), float.fromhex("0x1.2b8261b3741f5p+8")),
                (_hex("0x1.4cccccccccccdp+0 -0x1p-1 0x1.ccccccccccccdp-1"), float.fromhex("0x1.2ad9878254038p+8")),
            ],
            (1e-07, 25): [
                (_hex("0x1.999999999999ap-1 -0x1.3333333333333p-2 0x1p-1"), float.fromhex("0x1.2b821d35c86bbp+8")),
                (_hex("0x1.4cccccccccccdp+0 -0x1p-1 0x1.ccccccccccccdp-1"), float.fromhex("0x1.2ad73b7094754p+8")),
            ],
            (1e-13, 1): [
                (_hex("0x1.999999999999ap-1 -0x1.3333333333333p-2 0x1p-1"), float.fromhex("0x1.2bec3a0b43a9p+8")),
                (_hex("0x1.4cccccccccccdp+0 -0x1p-1 0x1.ccccccccccccdp-1"), float.fromhex("0x1.2ba33de5eb738p+8")),
            ],
            (1e-13, 5): [
                (_hex("0x1.999999999999ap-1 -0x1.3333333333333p-2 0x1p-1"), float.fromhex("0x1.2b8261b36e721p+8")),
                (_hex("0x1.4cccccccccccdp+0 -0x1p-1 0x1.ccccccccccccdp-1"), float.fromhex("0x1.2ad98788e2fc6p+8")),
            ],
            (1e-13, 25): [
                (_hex("0x1.999999999999ap-1 -0x1.3333333333333p-2 0x1p-1"), float.fromhex("0x1.2b821d35c86bbp+8")),
                (_hex("0x1.4cccccccccccdp+0 -0x1p-1 0x1.ccccccccccccdp-1"), float.fromhex("0x1.2ad73b7094753p+8")),
            ],
        },
        "nagq0": {
            1e-07: [
                (float.fromhex("0x1.999999999999ap-1"), float.fromhex("0x1.26f95c0bb244p+8"), _hex("-0x1.273e6eb117515p-1 0x1.81c2a4398d2d7p-1")),
                (float.fromhex("0x1.4cccccccccccdp+0"), float.fromhex("0x1.2b46b044da53ap+8"), _hex("-0x1.41a6f3fdbcebcp-1 0x1.924443fdbfba1p-1")),
            ],
            1e-13: [
                (float.fromhex("0x1.999999999999ap-1"), float.fromhex("0x1.26f95b27266dp+8"), _hex("-0x1.273e6eb118f6ap-1 0x1.81c2a4399644dp-1")),
                (float.fromhex("0x1.4cccccccccccdp+0"), float.fromhex("0x1.2b46a9b4a3634p+8"), _hex("-0x1.41a6f3fe21cc9p-1 0x1.924443fe22873p-1")),
            ],
        },
    },
    "poi": {
        "lp0": {1e-07: _hex(
            "0x1.2eaab192154d4p-2 0x1.9acd58fc522aap-1 -0x1.a97306bbf72f8p-4 0x1.e4a964890914ep-2 "
            "-0x1.4fe9fe07e7f4ap-2 0x1.09055ed6e1b12p+0 0x1.0af904953defdp-1 0x1.445b79fae9bf8p-1 "
            "0x1.6489c204a538bp-1 -0x1.af50fa1fe98c6p-2 0x1.fa93b4970fa13p-1 0x1.fda596b045bc4p+0 "
            "-0x1.33351a245e7d2p+0 -0x1.4584f552c2eecp+0 -0x1.184fcaa1954a6p+0 0x1.7ffcb9fea99a1p-1 "
            "0x1.842780993469p-3 0x1.b851718799c28p-1 0x1.29076ed8118ap-1 0x1.6bd2cdd05a80cp-3 "
            "-0x1.32bc17071af22p+0 -0x1.8e1575715eb62p+0 -0x1.7a2ebeac31002p-1 -0x1.27a92be99a289p+1 "
            "-0x1.c0d4b5e0116cep+0 -0x1.3a58e3cc98ecp-1 0x1.3917fdb25bcebp-1 -0x1.67f66aafc14f4p+0 "
            "-0x1.a74a58966bed6p+0 -0x1.3f7745869295ep+0 -0x1.5ed5fe3b2f58p-5 -0x1.fac4346a1ff1p-1 "
            "0x1.650b532a4b2fp-5 -0x1.3c2f4f09752cbp+1 -0x1.c42ef938c6fp-4 -0x1.78ea770dbae5p-3 "
            "-0x1.0e80f1dc28fb1p+1 -0x1.c1082675f5c1bp-1 -0x1.5670d6985283p-5 -0x1.db77b03e770bbp-1 "
            "-0x1.b18b81bc5336cp-3 0x1.bd428e8a5825cp-1 -0x1.90943ea6a97bp-1 -0x1.37df5371397afp+0 "
            "-0x1.921e8949a1b81p+0 -0x1.d1cfbaabe885cp-2 -0x1.1e824b9c1a17cp+0 -0x1.1ae38d0ac920ep+0 "
            "-0x1.0c189acdeb17p+0 -0x1.d05ba777ac546p-2 -0x1.cd8f6e39a198p+0 0x1.f2cd8a256562p-5 "
            "-0x1.4cc5e56b45e7ap-1 0x1.1a6b9dcca45cp+1 0x1.50c6353af9b12p-3 0x1.4b3a37ab0aeaep+0 "
            "0x1.9707b252d60cp-4 -0x1.e89c5ae337724p-2 0x1.edcb9c3fcc3afp-2 0x1.7a6760876669p-5 "
            "-0x1.28c6eb70053a7p+1 -0x1.03a01557e9b0fp+1 0x1.d200ccdb7a2ep-5 -0x1.0dc1ed805e4cap+0 "
            "-0x1.01450fdff8f47p+0 -0x1.8cc1e33cf322p+0 -0x1.dfed7364dfdcap+0 -0x1.4332841cfd545p-1 "
            "-0x1.6a2627106e7dep+0 -0x1.552301b93de85p+0 -0x1.aea884c6ce987p-1 -0x1.72a06828a3bb8p+0 "
            "-0x1.2c25809d668a5p-1 0x1.37dcea05e2e58p-3 -0x1.64a1d33be83bep+0 0x1.8cf0840699ee6p-2 "
            "-0x1.42b8651a8aa0ap+0 -0x1.3ae5268fa2904p-1 -0x1.64b15adbdce26p+0 -0x1.d22139f81db48p-1 "
            "-0x1.6592d5b883a91p-1 -0x1.89fed09c2cbep-1 -0x1.f5f923ec699d2p-1 -0x1.ebe85737241e4p-1 "
            "-0x1.12cb6c16f8867p+0 -0x1.a98d20d63853ep+0 -0x1.44dcfb33b4576p-1 -0x1.cbe5686b52775p-4 "
            "0x1.2574c05fd72c1p-2 0x1.4c3caea6b3903p-4 0x1.8129a06e68a7p+0 -0x1.6ac47b7c92be8p-3 "
            "-0x1.92f0e433a2c8bp+0 0x1.06b46329e27p-2 -0x1.04f14f32556a3p+1 -0x1.d0834b036bd56p-2 "
            "-0x1.f759da25f271p+0 -0x1.df993f360921ap-1 -0x1.61a89e7b4d7a1p+1 -0x1.041e24c8379c8p-1 "
            "-0x1.56efc44469f58p+0 -0x1.f9dfe643839c8p+0 0x1.ac837da83d4ap-4 -0x1.3a08808ab013ap-1 "
            "-0x1.2ddc48952ec62p+0 -0x1.cd236b94c2cecp+0 -0x1.b07a477843f8p-5 -0x1.2e4728d173278p-3 "
            "0x1.1a38944498a63p-1 0x1.37bb1af23333p-1 -0x1.ed283e89d739ep+0 -0x1.d55387951d3b6p+0 "
            "-0x1.d1d7bf81b2a6cp+0 -0x1.3b2d61eb058ffp+1 -0x1.ddd26c45e8a24p+0 -0x1.79571ea1114ap+0 "
            "-0x1.b74d460907e69p-1 -0x1.73cab39568fbp-2 -0x1.04ba95b437572p+1 -0x1.efa7d55e12d98p-1 "
            "-0x1.c03510984d3b3p+0 0x1.d7f3bb441e614p-3 -0x1.708bf2b1f5196p+0 -0x1.5bed9e153c1cbp-3 "
            "-0x1.4d044e362ca03p+0 -0x1.b26a7e195216dp+0 -0x1.cd3f97c688cb5p-1 -0x1.5c88eed297a15p+0 "
            "-0x1.9037a304554fap-1 -0x1.24cf2958f2588p+1 -0x1.13edcbee941d2p-1 -0x1.c44a1b7d6adc1p+0 "
            "0x1.2dfc5da1cd8e2p-2 -0x1.494b164eb3bdbp+0 0x1.bf96c926af144p-1 -0x1.15e457956898p+0 "
            "0x1.650d138982747p-2 -0x1.5faf869d93c77p-1 -0x1.7c5ffa5e76a52p-2 -0x1.0181bb41e8808p+0 "
            "-0x1.4648e72613ed5p+0 -0x1.a286fe4e52907p-1 -0x1.bfd2d3aab738ap-2 -0x1.e8996edb4ed6ap-1 "
            "-0x1.895055f0257a9p+0 -0x1.4514936414a1ap+1 -0x1.0cd6cd99320a4p+1 -0x1.9f1c002b74266p+0 "
            "-0x1.9169931e28ce2p+1 -0x1.c09f3e1743085p-1 -0x1.a7f15919f0da5p+0 -0x1.aa4b4dedd224p+0 "
            "-0x1.71980af2a2a2bp-1 -0x1.ea3f7af7d2591p-1 -0x1.4f1618af66023p+0 -0x1.229203442de49p+1 "
            "-0x1.3d1607e052272p+0 -0x1.35e36ffa190d6p+0 -0x1.d11dc4265a9cap-1 0x1.37203ff467bd7p-1 "
            "0x1.7e42eb7b862d2p-3 -0x1.c2eff21402f4p+0 -0x1.de7f681e787ccp-4 -0x1.350957ad2941ap+0 "
            "0x1.5c91a199c4c74p-1 0x1.afff527c782a6p-2 -0x1.149b163f5a4fap+0 -0x1.7c17ee49d10c4p+0 "
            "-0x1.6aeefd90c6a34p-1 -0x1.f4158587bb44fp-1 0x1.a434fd6a1ebd4p-2 -0x1.a6803dc106e94p-3 "
            "-0x1.1d689635fa143p-2 0x1.96eab109e4d4bp-2 -0x1.a7985c3c81bbdp+0 0x1.76b04ae9ee5c8p+0 "
            "0x1.e6b84ce8b60ecp+0 0x1.144a54b37f14fp+0 0x1.52b23312e2968p-1 0x1.aa36ff5ffd3a5p+0 "
            "0x1.614a3bfbad818p+1 0x1.618d99eaa8c37p+0 0x1.5ae3994faba9cp-2 0x1.2dad0cfba8239p+1 "
            "-0x1.07580a96192bcp-2 0x1.9d9b973698a4ap+0 -0x1.d1272ea475d02p-1 0x1.1f981268e6a9fp-2 "
            "-0x1.1e6d8b954b0fep+0 0x1.2e1e440ecfa14p-1 -0x1.b7e1ac33b6daep-3 -0x1.cf0a674262368p+0 "
            "-0x1.0060c064f7305p+1 -0x1.95557b9b7dc21p-1 0x1.e5f181bbda2bap-2 -0x1.c5dd88dc7d6fep-2 "
            "-0x1.f61aa3e5541e1p-2 -0x1.750c87e8bb1e9p-1 0x1.300896ed6d57ep-5 -0x1.f8a7c4f8a1d38p-3 "
            "-0x1.4a6a8dd53cb8cp-2 -0x1.5142c51f5490cp+0 0x1.904de01ade814p-2 0x1.155bac5062971p+0 "
            "-0x1.02fd36140493cp+0 0x1.d242826d7deap+0 0x1.28d2a1f827e4ap-1 -0x1.7d0d9700ae136p-2 "
            "-0x1.7c5f6b31a4908p+0 0x1.0e635eb2faf96p-1 0x1.cccad0cd53d78p-2 -0x1.d3b67e1525132p-2 "
            "-0x1.6576e2fce541ep+0 -0x1.10bc6b0c289d4p-3 -0x1.7ae0291074b4bp+0 -0x1.6368d1ce4b372p+0 "
            "0x1.386084596804p+0 0x1.4fd21c16d5a2cp-1 -0x1.11d8d605f4d78p-2 -0x1.601f99c94a8b6p+0 "
            "-0x1.036c8e118062fp-1 -0x1.67da359c8a632p+1 -0x1.de017704ab88ep-1 -0x1.9d65f224d4661p+0 "
            "-0x1.039e85e42ec38p+1 -0x1.21883b57f3282p+1 -0x1.35798e9928f4dp-1 0x1.43271ecfa2d1cp-1 "
            "0x1.5f814b353dcdcp-1 0x1.392b6aa3bbb28p+0 -0x1.ab71a5e441dap-4 -0x1.a47c27a4dfc88p-2 "
            "-0x1.abf5a4092a88cp-1 0x1.3080b8b3fc724p-2 "
        )},
        "dev": {
            (1e-07, 1): [
                (_hex("0x1.999999999999ap-1 -0x1.3333333333333p-2 0x1p-1"), float.fromhex("0x1.0ebe83f94edf5p+9")),
                (_hex("0x1.4cccccccccccdp+0 -0x1p-1 0x1.ccccccccccccdp-1"), float.fromhex("0x1.09a746d95dd19p+9")),
            ],
            (1e-07, 5): [
                (_hex("0x1.999999999999ap-1 -0x1.3333333333333p-2 0x1p-1"), float.fromhex("0x1.15564eb70d782p+8")),
                (_hex("0x1.4cccccccccccdp+0 -0x1p-1 0x1.ccccccccccccdp-1"), float.fromhex("0x1.0ae74e2c17a5cp+8")),
            ],
            (1e-07, 25): [
                (_hex("0x1.999999999999ap-1 -0x1.3333333333333p-2 0x1p-1"), float.fromhex("0x1.1554197795b11p+8")),
                (_hex("0x1.4cccccccccccdp+0 -0x1p-1 0x1.ccccccccccccdp-1"), float.fromhex("0x1.0adbd9797a789p+8")),
            ],
            (1e-13, 1): [
                (_hex("0x1.999999999999ap-1 -0x1.3333333333333p-2 0x1p-1"), float.fromhex("0x1.0ebe83de6fffep+9")),
                (_hex("0x1.4cccccccccccdp+0 -0x1p-1 0x1.ccccccccccccdp-1"), float.fromhex("0x1.09a7024668ac4p+9")),
            ],
            (1e-13, 5): [
                (_hex("0x1.999999999999ap-1 -0x1.3333333333333p-2 0x1p-1"), float.fromhex("0x1.15564eb717d29p+8")),
                (_hex("0x1.4cccccccccccdp+0 -0x1p-1 0x1.ccccccccccccdp-1"), float.fromhex("0x1.0ae750568bf29p+8")),
            ],
            (1e-13, 25): [
                (_hex("0x1.999999999999ap-1 -0x1.3333333333333p-2 0x1p-1"), float.fromhex("0x1.1554197795b11p+8")),
                (_hex("0x1.4cccccccccccdp+0 -0x1p-1 0x1.ccccccccccccdp-1"), float.fromhex("0x1.0adbd9797aa08p+8")),
            ],
        },
        "nagq0": {
            1e-07: [
                (float.fromhex("0x1.999999999999ap-1"), float.fromhex("0x1.05b069e7568f3p+9"), _hex("-0x1.dd1d91abab43fp-2 0x1.9288b6b0213b5p-1")),
                (float.fromhex("0x1.4cccccccccccdp+0"), float.fromhex("0x1.081ae9e1dd19dp+9"), _hex("-0x1.143526002f497p-1 0x1.92ac0650d19abp-1")),
            ],
            1e-13: [
                (float.fromhex("0x1.999999999999ap-1"), float.fromhex("0x1.05b0651d8ed8cp+9"), _hex("-0x1.dd1d91ad693f2p-2 0x1.9288b6b030ac5p-1")),
                (float.fromhex("0x1.4cccccccccccdp+0"), float.fromhex("0x1.081adac223cbep+9"), _hex("-0x1.1435260e5e94dp-1 0x1.92ac065135dcdp-1")),
            ],
        },
    },
}
