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

__all__ = ["GLMMOracle", "family_functions"]

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
        """Function (g, u) -> -2 log prod_{i in g} p(y_i | u) + u^2 for a scalar term."""
        codes, z, nlev = self._scalar_term()
        t = float(np.ravel(theta)[0])
        fixed = self.offset + self.X @ np.asarray(beta, float)
        rows = [np.flatnonzero(codes == g) for g in range(nlev)]
        full = self.minus2_loglik_rows

        def f(g, u):
            r = rows[g]
            eta = fixed[r] + z[r] * t * u
            mu = self.linkinv(eta)
            sub = _Sub(self, r)
            return float(np.sum(sub.minus2(mu)) + u * u)

        del full
        return f, nlev, rows

    def agq_quad(self, theta, beta):
        """-2 log marginal likelihood for one scalar term, each level by scipy quad."""
        f, nlev, _ = self._level_minus2ll(theta, beta)
        u = self.modes(theta, beta)
        total = 0.0
        for g in range(nlev):
            d0 = f(g, u[g])
            val, _err = sint.quad(lambda x: np.exp(-0.5 * (f(g, x) - d0)), -np.inf, np.inf,
                                  points=None, epsabs=0.0, epsrel=1e-13, limit=400)
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
