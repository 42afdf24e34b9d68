"""Likelihood-profile confidence intervals, as lme4's confint(method = "profile")."""
from __future__ import annotations

import math
import numpy as np
import pandas as pd
from .satterthwaite import LOG_2PI, VarparFunctions

# ======================================================================================
# Profile-likelihood intervals (lme4's profile() + confint(method = "profile"))
# ======================================================================================
#
# As lme4, the profile is that of the ML deviance (a REML fit is refitted by ML first: lme4's
# devfun2 calls refitML), in the parameters (sd, cor per random-effects term in theta's order,
# sigma, beta). zeta(x) = sign(x - x_hat) sqrt(dev_min(x) - dev_hat); the interval is where
# |zeta| = qnorm((1 + level)/2). lme4 follows the profile on a grid and interpolates with a
# spline; here each end point is found by root finding on the exact profile. An end point that
# the profile does not reach before the parameter's bound (sd 0, cor +-1) is the bound.
#
# Fixed effects need no new pass over the data: for fixed theta the penalized RSS is exactly
# quadratic in beta, r2(theta, beta) = r2(theta) + (beta - beta_hat)' R_X'R_X (beta - beta_hat),
# so with beta_j held at b and the other coefficients profiled,
#     min r2 = r2(theta) + (b - beta_hat_j(theta))^2 / [(R_X'R_X)^{-1}]_jj,
# and dev_min(b) = min over theta of log det L + n (1 + log(2 pi min r2 / n)).

def _term_slices(structure):
    """[(term index, theta slice, n_columns)] in theta's (lme4's) order."""
    out, start = [], 0
    for k in structure.term_order:
        nc = structure.terms[k].n_columns
        m = nc * (nc + 1) // 2
        out.append((k, slice(start, start + m), nc))
        start += m
    return out


def _lower_tri(vec, nc):
    T = np.zeros((nc, nc))
    idx = [(i, j) for j in range(nc) for i in range(j, nc)]
    for v, (i, j) in zip(vec, idx):
        T[i, j] = v
    return T, idx


def sdcor_from_theta(structure, theta, sigma) -> np.ndarray:
    """lme4's Cv_to_Sv: per theta element, the SD (diagonal) or correlation (off-diagonal)."""
    theta = np.asarray(theta, dtype=np.float64)
    out = np.empty(len(theta) + 1)
    for _, sl, nc in _term_slices(structure):
        T, idx = _lower_tri(theta[sl], nc)
        S = T @ T.T
        sd = np.sqrt(np.maximum(np.diag(S), 0.0))
        vals = []
        for i, j in idx:
            if i == j:
                vals.append(sigma * sd[i])
            else:
                vals.append(S[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else 0.0)
        out[sl] = vals
    out[-1] = sigma
    return out


def theta_from_sdcor(structure, sv) -> np.ndarray:
    """lme4's Sv_to_Cv (sv ends with sigma)."""
    sv = np.asarray(sv, dtype=np.float64)
    sigma = sv[-1]
    theta = np.empty(len(sv) - 1)
    for _, sl, nc in _term_slices(structure):
        _, idx = _lower_tri(sv[sl], nc)
        sd = np.zeros(nc)
        C = np.eye(nc)
        for v, (i, j) in zip(sv[sl], idx):
            if i == j:
                sd[i] = v / sigma
            else:
                C[i, j] = C[j, i] = v
        S = sd[:, None] * C * sd[None, :]
        T = chol_psd(S)
        theta[sl] = [T[i, j] for i, j in idx]
    return theta


def variance_names(structure) -> list:
    """lme4's names (oldNames = FALSE) of the SDs and correlations, in theta's order:
    ``sd_(Intercept)|g``, ``cor_x.(Intercept)|g``."""
    names = []
    for k, sl, nc in _term_slices(structure):
        t = structure.terms[k]
        _, idx = _lower_tri(np.zeros(sl.stop - sl.start), nc)
        for i, j in idx:
            names.append(f"sd_{t.column_names[i]}|{t.group}" if i == j
                         else f"cor_{t.column_names[i]}.{t.column_names[j]}|{t.group}")
    return names


def chol_psd(S):
    """Lower Cholesky factor that tolerates a singular (positive semi-definite) matrix."""
    n = S.shape[0]
    L = np.zeros((n, n))
    for j in range(n):
        d = S[j, j] - L[j, :j] @ L[j, :j]
        if d <= 1e-14 * max(1.0, abs(S[j, j])):
            continue  # column stays zero
        L[j, j] = math.sqrt(d)
        for i in range(j + 1, n):
            L[i, j] = (S[i, j] - L[i, :j] @ L[j, :j]) / L[j, j]
    return L


def _bobyqa(fun, x0, lower, upper, *, ftol=1e-11, maxeval=20000):
    import nlopt

    x0 = np.asarray(x0, dtype=np.float64)
    n = len(x0)
    if n == 0:
        return x0, float(fun(x0))
    best = [np.inf, x0.copy()]

    def f(x, grad):
        v = fun(x)
        if not np.isfinite(v):
            v = 1e300
        if v < best[0]:
            best[0], best[1] = v, x.copy()
        return v

    if n == 1:
        # BOBYQA needs two or more variables: golden-section / bounded Brent instead
        from scipy.optimize import minimize_scalar

        lo = lower[0] if np.isfinite(lower[0]) else x0[0] - 10 * max(1.0, abs(x0[0]))
        hi = upper[0] if np.isfinite(upper[0]) else x0[0] + 10 * max(1.0, abs(x0[0]))
        r = minimize_scalar(lambda t: f(np.array([t]), None), bounds=(lo, hi), method="bounded",
                            options={"xatol": 1e-10 * max(1.0, abs(x0[0]))})
        f(np.array([r.x]), None)
        return best[1], best[0]
    opt = nlopt.opt(nlopt.LN_BOBYQA, n)
    opt.set_min_objective(f)
    opt.set_lower_bounds(lower)
    opt.set_upper_bounds(upper)
    opt.set_ftol_abs(ftol)
    opt.set_xtol_abs(np.full(n, 1e-10))
    opt.set_maxeval(maxeval)
    start = np.clip(x0, lower, upper)
    step = np.maximum(0.05 * np.abs(start), 0.02)
    # keep the initial step inside the bounds where a bound is close
    opt.set_initial_step(step)
    try:
        opt.optimize(start)
    except Exception:  # noqa: BLE001 - nlopt's roundoff-limited stop: keep the best point
        pass
    return best[1], best[0]


class Profiler:
    def __init__(self, fit):
        from .compare import refit_ml

        if fit.residual is not None:
            raise NotImplementedError(
                "likelihood profiles of models with a residual structure (AR1, CompoundSymmetry, "
                "VarIdent) are not implemented; use method='wald' or 'satterthwaite' for the "
                "fixed effects, or method='boot'")

        self.ml = refit_ml(fit)
        self.model = self.ml.model
        self.st = self.model.structure
        self.fns = VarparFunctions(self.model, reml=False)
        self.theta_hat = np.asarray(self.ml.theta, dtype=np.float64)
        self.sv_hat = sdcor_from_theta(self.st, self.theta_hat, self.ml.sigma)
        self.base = self.ml.objective
        nt = self.st.n_theta
        diag = self.st.theta_row == self.st.theta_col
        self.lower = np.append(np.where(diag, 0.0, -1.0), 1e-12 * max(self.ml.sigma, 1e-300))
        self.upper = np.append(np.where(diag, np.inf, 1.0), np.inf)
        self.nt = nt
        self._start: dict = {}

    def names(self):
        return variance_names(self.st) + ["sigma"] + list(self.ml.fixed_names)

    def dev_sv(self, sv):
        theta = theta_from_sdcor(self.st, sv)
        return self.fns.deviance(np.append(theta, sv[-1]))

    def zeta_var(self, w, x):
        others = [i for i in range(self.nt + 1) if i != w]
        start = self._start.get(("v", w), self.sv_hat[others])

        def f(z):
            sv = np.empty(self.nt + 1)
            sv[w] = x
            sv[others] = z
            return self.dev_sv(sv)

        z, val = _bobyqa(f, start, self.lower[others], self.upper[others])
        self._start[("v", w)] = z
        d = max(0.0, val - self.base)
        return math.copysign(math.sqrt(d), x - self.sv_hat[w])

    def zeta_fixed(self, j, b):
        n = self.model.n_obs
        start = self._start.get(("b", j), self.theta_hat)

        def f(theta):
            try:
                s = self.model.state(theta)
            except Exception:  # noqa: BLE001 - not positive definite
                return np.inf
            V = s.unscaled_vcov()
            r2 = s.pwrss + (b - s.beta()[j]) ** 2 / V[j, j]
            return s.logdet_L + n * (1.0 + LOG_2PI + math.log(r2 / n))

        lb = self.st.lower_bounds
        theta, val = _bobyqa(f, start, lb, np.full(len(lb), np.inf))
        self._start[("b", j)] = theta
        d = max(0.0, val - self.base)
        return math.copysign(math.sqrt(d), b - self.ml.beta[j])

    def endpoint(self, zeta, x_hat, step, side, lo, hi, cutoff):
        """x on `side` (+1/-1) of x_hat with zeta(x) = side * cutoff, or the bound."""
        from scipy.optimize import brentq

        bound = hi if side > 0 else lo
        a = x_hat
        h = step
        for _ in range(60):
            b = x_hat + side * h
            if (side > 0 and b >= bound) or (side < 0 and b <= bound):
                b = bound
            zb = zeta(b)
            if abs(zb) >= cutoff:
                return brentq(lambda x: abs(zeta(x)) - cutoff, a, b, xtol=1e-9 * max(1.0, abs(x_hat)),
                              rtol=1e-10) if a != b else b
            if b == bound:
                return bound
            a = b
            h *= 2.0
        return np.nan


def profile_target(pr, k, cutoff, se_fixed):
    """For profile parameter k of a `Profiler`: (estimate, lower bound, upper bound, first step,
    zeta function). Variance parameters k <= pr.nt (sd, cor, sigma), then the fixed effects."""
    if k <= pr.nt:
        x_hat = float(pr.sv_hat[k])
        lo, hi = pr.lower[k], pr.upper[k]
        step = 0.25 * abs(x_hat) if abs(x_hat) > 1e-8 else 0.05
        if lo == -1.0:
            step = 0.1

        def zeta(x):
            return pr.zeta_var(k, x)
    else:
        j = k - pr.nt - 1
        x_hat = float(pr.ml.beta[j])
        lo, hi = -np.inf, np.inf
        step = cutoff * se_fixed[j]

        def zeta(x):
            return pr.zeta_fixed(j, x)
    return x_hat, lo, hi, step, zeta


def profile_confint(fit, level: float = 0.95, which=None) -> pd.DataFrame:
    """Likelihood-profile confidence intervals (lme4's ``confint(fit, method = "profile")``).

    Rows named as lme4's ``oldNames = FALSE`` (``sd_(Intercept)|g``, ``cor_x.(Intercept)|g``,
    ``sigma``, fixed effects); `which` selects rows by name. Always based on the ML deviance.
    """
    pr = Profiler(fit)
    se_fixed = np.sqrt(np.diag(pr.ml.vcov))
    out = profile_rows(pr, lambda k, cutoff: profile_target(pr, k, cutoff, se_fixed), level, which)
    out.attrs.update(method="profile (ML deviance)", level=level)
    return out


def profile_rows(pr, target, level: float, which=None) -> pd.DataFrame:
    """The end points of the profiles of a profiler `pr` (names(), endpoint, its warm starts
    `_start`): target(k, cutoff) gives parameter k's (estimate, lower bound, upper bound, first
    step, zeta); each end point is where |zeta| = qnorm((1 + level) / 2), or the bound."""
    from .distributions import norm_ppf

    names = pr.names()
    cutoff = float(norm_ppf(0.5 + level / 2))
    want = names if which is None else [n for n in names if n in set(which)]
    rows = []
    for name in want:
        x_hat, lo, hi, step, zeta = target(names.index(name), cutoff)
        lower = pr.endpoint(zeta, x_hat, step, -1, lo, hi, cutoff)
        pr._start.clear()
        upper = pr.endpoint(zeta, x_hat, step, +1, lo, hi, cutoff)
        pr._start.clear()
        rows.append((name, x_hat, lower, upper))
    return pd.DataFrame(rows, columns=["term", "estimate", "lower", "upper"])
