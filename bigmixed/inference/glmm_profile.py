"""Likelihood-profile confidence intervals of a GLMM, as lme4's ``confint(fit, method =
"profile")`` of a glmer fit.

The profiled quantity is the fit's own criterion, -2 log-likelihood by the Laplace
approximation or adaptive quadrature (the model's `objective` at (theta, gamma), beta = beta_ref
+ C gamma), in the parameters (sd, cor per random-effects term in theta's order, then beta; no
sigma). zeta(x) = sign(x - x_hat) sqrt(dev_min(x) - dev_hat); the interval is where |zeta| =
qnorm((1 + level)/2). lme4 follows the profile on a grid and interpolates with a spline; here
each end point is found by root finding on the exact profile, each profile point by BOBYQA over
the other parameters, warm-started from the previous point. The fixed effects are profiled in
the well-conditioned gamma basis: with beta_j held at b, gamma moves in the null space of row j
of C. An end point the profile does not reach before a bound (sd 0, cor +-1) is the bound.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .profile import (Profiler, _bobyqa, profile_rows, sdcor_from_theta, theta_from_sdcor,
                      variance_names)


class GLMMProfiler:
    """Profiles of a fitted GLMM's criterion (see the module docstring)."""

    endpoint = Profiler.endpoint

    def __init__(self, fit):
        self.fit = fit
        self.model = fit._require_model("a likelihood profile")
        if fit.nAGQ == 0:
            raise ValueError("a profile needs the Laplace or quadrature criterion in (theta, "
                             "beta): refit with nAGQ >= 1 (lme4's profile of an nAGQ = 0 fit "
                             "is not defined either)")
        self.st = fit.structure
        self.nt = self.st.n_theta
        self.p = len(fit.beta)
        self.theta_hat = np.asarray(fit.theta, dtype=np.float64)
        # sdcor without sigma (sigma = 1 for the families here)
        self.sv_hat = sdcor_from_theta(self.st, self.theta_hat, 1.0)[:-1]
        self.params_hat = np.asarray(fit.optimizer.params, dtype=np.float64)
        self.gamma_hat = self.params_hat[self.nt:]
        self.base = float(fit.objective)
        diag = self.st.theta_row == self.st.theta_col
        self.lower = np.where(diag, 0.0, -1.0)
        self.upper = np.where(diag, np.inf, 1.0)
        self.C = np.asarray(self.model._C, dtype=np.float64)
        self.beta_ref = np.asarray(self.model._beta_ref, dtype=np.float64)
        self._start: dict = {}

    def names(self) -> list:
        return variance_names(self.st) + list(self.fit.fixed_names)

    def _dev(self, sv, gamma) -> float:
        theta = theta_from_sdcor(self.st, np.append(sv, 1.0))
        return float(self.model.objective(np.concatenate((theta, gamma))))

    def zeta_var(self, w, x) -> float:
        others = [i for i in range(self.nt) if i != w]
        start = self._start.get(("v", w), np.concatenate((self.sv_hat[others], self.gamma_hat)))
        lo = np.concatenate((self.lower[others], np.full(self.p, -np.inf)))
        hi = np.concatenate((self.upper[others], np.full(self.p, np.inf)))
        m = len(others)

        def f(z):
            sv = np.empty(self.nt)
            sv[w] = x
            sv[others] = z[:m]
            return self._dev(sv, z[m:])

        z, val = _bobyqa(f, start, lo, hi)
        self._start[("v", w)] = z
        return math.copysign(math.sqrt(max(0.0, val - self.base)), x - self.sv_hat[w])

    def zeta_fixed(self, j, b) -> float:
        c = self.C[j]
        # gamma = g0 + N z keeps beta_j = beta_ref_j + c'gamma at b
        g0 = c * (b - self.beta_ref[j]) / (c @ c)
        _, _, vt = np.linalg.svd(c[None, :])
        N = vt[1:].T
        z_hat = N.T @ self.gamma_hat
        start = self._start.get(("b", j), np.concatenate((self.sv_hat, z_hat)))
        lo = np.concatenate((self.lower, np.full(N.shape[1], -np.inf)))
        hi = np.concatenate((self.upper, np.full(N.shape[1], np.inf)))

        def f(z):
            return self._dev(z[:self.nt], g0 + N @ z[self.nt:])

        z, val = _bobyqa(f, start, lo, hi)
        self._start[("b", j)] = z
        return math.copysign(math.sqrt(max(0.0, val - self.base)), b - self.fit.beta[j])

    def target(self, k, cutoff):
        """(estimate, lower bound, upper bound, first step, zeta) of profile parameter k."""
        if k < self.nt:
            x_hat = float(self.sv_hat[k])
            lo, hi = float(self.lower[k]), float(self.upper[k])
            step = 0.1 if lo == -1.0 else (0.25 * abs(x_hat) if abs(x_hat) > 1e-8 else 0.05)
            return x_hat, lo, hi, step, lambda x: self.zeta_var(k, x)
        j = k - self.nt
        se = float(np.sqrt(self.fit.vcov[j, j]))
        x_hat = float(self.fit.beta[j])
        return x_hat, -np.inf, np.inf, cutoff * se, lambda x: self.zeta_fixed(j, x)


def profile_confint_glmm(fit, level: float = 0.95, which=None) -> pd.DataFrame:
    """Likelihood-profile confidence intervals of a GLMM (lme4's ``confint(fit, method =
    "profile")``), rows named as lme4's ``oldNames = FALSE`` (``sd_(Intercept)|g``,
    ``cor_x.(Intercept)|g``, then the fixed effects); `which` selects rows by name."""
    pr = GLMMProfiler(fit)
    out = profile_rows(pr, pr.target, level, which)
    crit = "Laplace" if fit.nAGQ == 1 else f"adaptive Gauss-Hermite quadrature (nAGQ = {fit.nAGQ})"
    out.attrs.update(method=f"profile (-2 log-likelihood, {crit})", level=level,
                     scale="random effects: standard deviations and correlations; fixed "
                           "effects: the linear predictor's scale")
    return out
