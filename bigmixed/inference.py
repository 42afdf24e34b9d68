"""Inference on a fitted model: denominator df (Satterthwaite, between-within), t and F tests,
Wald intervals, intraclass correlations and lme4's convergence checks.

Satterthwaite follows lmerTest (Kuznetsova, Brockhoff & Christensen 2017, J. Stat. Softw.
82(13)) step by step, so that its numbers are reproduced:

* the variance parameters are varpar = (theta, sigma) and the criterion is the -2 log-likelihood
  (REML: -2 restricted log-likelihood) with beta profiled but sigma *not* profiled::

      ML:   f(theta, sigma) = log det L + r2(theta)/sigma^2 + n log(2 pi sigma^2)
      REML: f(theta, sigma) = log det L + log det(R_X'R_X) + r2(theta)/sigma^2
                              + (n - p) log(2 pi sigma^2)

  (lmerTest's ``devfun_vp``);
* A = Var(varpar) = 2 H^{-1}, H the Hessian of f at the estimates (numDeriv's Richardson
  extrapolation; eigenvalues <= 1e-8 are dropped from the inverse, as lmerTest does);
* Var(beta; varpar) = sigma^2 (R_X'R_X)^{-1}(theta), its Jacobian J_i = dVar(beta)/dvarpar_i by
  Richardson extrapolation;
* for a contrast c: f = c'Var(beta)c, g_i = c'J_i c, df = 2 f^2 / (g'Ag) (``contest1D``);
* for a multi-row L (``contestMD``): eigen-decomposition L Var(beta) L' = P D P', one df nu_m per
  positive eigenvalue, and F's denominator df from E = sum nu_m/(nu_m - 2): 2E/(E - q).

Every evaluation of f works on the level-sized system (``model.state(theta)``), never on the
rows: a Hessian in k = dim(varpar) costs about 8 k^2 objective evaluations.
"""
from __future__ import annotations

import math
import warnings as _warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .warnings import ConvergenceWarning

LOG_2PI = math.log(2.0 * math.pi)
_ZERO_TOL = math.sqrt(np.finfo(float).eps / 7e-7)  # numDeriv's zero.tol

DDF_METHODS = ("satterthwaite", "between-within", "asymptotic")


# ======================================================================================
# numDeriv's Richardson extrapolation (Gilbert & Varadhan), ported to reproduce lmerTest
# ======================================================================================

def richardson_jacobian(func, x, *, d=1e-4, eps=1e-4, r=4, v=2) -> np.ndarray:
    """numDeriv::jacobian(func, x) (method "Richardson"): (len(func(x)), len(x)) array."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    f0 = np.atleast_1d(np.asarray(func(x), dtype=np.float64))
    a = np.empty((len(f0), r, n))
    h = np.abs(d * x) + eps * (np.abs(x) < _ZERO_TOL)
    for k in range(r):
        for i in range(n):
            e = np.zeros(n)
            e[i] = h[i]
            a[:, k, i] = (np.atleast_1d(func(x + e)) - np.atleast_1d(func(x - e))) / (2 * h[i])
        h = h / v
    for m in range(1, r):
        a = (a[:, 1:r + 1 - m, :] * 4.0 ** m - a[:, :r - m, :]) / (4.0 ** m - 1)
    return a[:, 0, :]


def richardson_hessian(func, x, *, d=0.1, eps=1e-4, r=4, v=2) -> np.ndarray:
    """numDeriv::hessian(func, x) (genD with d = 0.1): the (n, n) Hessian of a scalar func."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    f0 = float(func(x))
    h0 = np.abs(d * x) + eps * (np.abs(x) < _ZERO_TOL)

    def extrapolate(vals):
        vals = list(vals)
        for m in range(1, r):
            for k in range(r - m):
                vals[k] = (vals[k + 1] * 4.0 ** m - vals[k]) / (4.0 ** m - 1)
        return vals[0]

    hdiag = np.empty(n)
    for i in range(n):
        h = h0.copy()
        approx = []
        for _ in range(r):
            e = np.zeros(n)
            e[i] = h[i]
            f1, f2 = float(func(x + e)), float(func(x - e))
            approx.append((f1 - 2 * f0 + f2) / h[i] ** 2)
            h = h / v
        hdiag[i] = extrapolate(approx)
    H = np.diag(hdiag)
    for i in range(n):
        for j in range(i):
            h = h0.copy()
            approx = []
            for _ in range(r):
                e = np.zeros(n)
                e[i] += h[i]
                e[j] += h[j]
                f1, f2 = float(func(x + e)), float(func(x - e))
                approx.append((f1 - 2 * f0 + f2 - hdiag[i] * h[i] ** 2 - hdiag[j] * h[j] ** 2)
                              / (2 * h[i] * h[j]))
                h = h / v
            H[i, j] = H[j, i] = extrapolate(approx)
    return H


# ======================================================================================
# The unprofiled criterion f(theta, sigma) and Var(beta; theta, sigma)
# ======================================================================================

class VarparFunctions:
    """f(varpar) and vec(Var(beta; varpar)) for varpar = (theta, sigma); states cached by theta.
    With a residual structure, "theta" is the model's whole parameter vector (theta, then the
    structure's unconstrained parameters)."""

    def __init__(self, model, reml: bool):
        self.model = model
        self.reml = bool(reml)
        self._cache: dict = {}

    def _state(self, theta):
        key = np.asarray(theta, dtype=np.float64).tobytes()
        st = self._cache.get(key)
        if st is None:
            s = self.model.state(theta)
            # log det of V / sigma^2 = log det(L L') + log det R0 (residual structure)
            st = (s.logdet_L + s.logdet_R, s.logdet_RX, s.pwrss, s.unscaled_vcov())
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = st
        return st

    def deviance(self, varpar) -> float:
        varpar = np.asarray(varpar, dtype=np.float64)
        theta, sigma = varpar[:-1], varpar[-1]
        s2 = sigma * sigma
        logdet_L, logdet_RX, r2, _ = self._state(theta)
        n, p = self.model.n_obs, self.model.n_fixed
        if self.reml:
            return logdet_L + logdet_RX + r2 / s2 + (n - p) * (LOG_2PI + math.log(s2))
        return logdet_L + r2 / s2 + n * (LOG_2PI + math.log(s2))

    def vcov_beta(self, varpar) -> np.ndarray:
        varpar = np.asarray(varpar, dtype=np.float64)
        return varpar[-1] ** 2 * self._state(varpar[:-1])[3]


@dataclass
class SatterthwaiteState:
    """What lmerTest stores on an lmerModLmerTest: Var(beta), A = Var(varpar), J_i."""

    varpar: np.ndarray
    vcov_beta: np.ndarray
    hessian: np.ndarray
    vcov_varpar: np.ndarray
    jacobian: list  # J_i = dVar(beta)/dvarpar_i, (p, p) each
    messages: list = field(default_factory=list)


def satterthwaite_state(fit, *, tol: float = 1e-8) -> SatterthwaiteState:
    """lmerTest's ``as_lmerModLT``: Hessian of f(theta, sigma) and the Jacobian of Var(beta)."""
    cached = getattr(fit, "_satterthwaite_state", None)
    if cached is not None:
        return cached
    fns = VarparFunctions(fit.model, fit.reml)
    varpar = np.append(np.asarray(fit.optimizer_params, dtype=np.float64), fit.sigma)
    H = richardson_hessian(fns.deviance, varpar)
    H = 0.5 * (H + H.T)
    w, V = np.linalg.eigh(H)
    messages = []
    neg = w < -tol
    zero = (w >= -tol) & (w <= tol)
    if neg.any():
        messages.append(f"Model failed to converge with {int(neg.sum())} negative eigenvalue(s) of "
                        f"the Hessian of the deviance in (theta, sigma): "
                        + " ".join(f"{x:.1e}" for x in w[neg]))
    if zero.any():
        messages.append(f"Model may not have converged with {int(zero.sum())} eigenvalue(s) of the "
                        f"Hessian close to zero: " + " ".join(f"{x:.1e}" for x in w[zero]))
    pos = w > tol
    Hinv = (V[:, pos] / w[pos]) @ V[:, pos].T
    p = fit.model.n_fixed
    jac = richardson_jacobian(lambda vp: fns.vcov_beta(vp).ravel(), varpar)
    jac_list = [jac[:, i].reshape(p, p) for i in range(jac.shape[1])]
    jac_list = [0.5 * (J + J.T) for J in jac_list]
    st = SatterthwaiteState(varpar, np.array(fit.vcov), H, 2.0 * Hinv, jac_list, messages)
    fit._satterthwaite_state = st
    for msg in messages:
        _warnings.warn(ConvergenceWarning(msg), stacklevel=3)
    return st


def residual_intervals(fit, level: float = 0.95) -> pd.DataFrame:
    """Approximate intervals of a residual structure's parameters, as nlme's ``intervals()``.

    Normal intervals on the unconstrained scale the optimizer uses (nlme's: 2 atanh(phi) for
    corAR1, logit(phi) for corCAR1, logit((rho - lo) / (1 - rho)) for corCompSymm, log of the
    varIdent ratios), with the variance from the inverse Hessian of the deviance in
    (theta, eta, sigma) (the Satterthwaite state), mapped back to nlme's scale. Rows: the
    parameters of ``fit.residual_parameters``; columns lower, estimate, upper.
    """
    from scipy import stats

    r = fit.model.residual
    if r is None:
        raise ValueError("the fit has no residual structure (AR1, CompoundSymmetry, VarIdent)")
    st = satterthwaite_state(fit)
    k0 = fit.model.structure.n_theta
    eta = np.asarray(fit._residual_eta, dtype=np.float64)
    se = np.sqrt(np.diag(st.vcov_varpar)[k0:k0 + len(eta)])
    z = float(stats.norm.ppf(0.5 + level / 2))
    lower, upper = [], []
    for k in range(len(eta)):
        lo, hi = eta.copy(), eta.copy()
        lo[k] -= z * se[k]
        hi[k] += z * se[k]
        lower.append(r.natural(lo)[k])
        upper.append(r.natural(hi)[k])
    out = pd.DataFrame({"lower": lower, "estimate": r.natural(eta), "upper": upper},
                       index=pd.Index(r.names, name="parameter"))
    out.attrs.update(level=level, method="Wald on nlme's unconstrained scale (nlme's intervals())")
    return out


def _qform(x, A):
    return float(x @ A @ x)


def contest1d(fit, L, *, rhs: float = 0.0, ddf: str = "satterthwaite", level: float | None = None) -> dict:
    """t test of the contrast L'beta = rhs (lmerTest's contest1D): estimate, SE, df, t, p."""
    L = np.asarray(L, dtype=np.float64).ravel()
    beta = np.asarray(fit.beta)
    est = float(L @ beta)
    var_con = _qform(L, np.asarray(fit.vcov))
    method = _ddf_method(ddf)
    if method == "satterthwaite":
        st = satterthwaite_state(fit)
        grad = np.array([_qform(L, J) for J in st.jacobian])
        denom = _qform(grad, st.vcov_varpar)
        df = 2.0 * var_con ** 2 / denom if denom > 0 else np.inf
    elif method == "asymptotic":
        df = np.inf
    else:
        raise ValueError("between-within df are given per coefficient and term: use "
                         "fixed_effects_test(ddf='between-within')")
    return _t_row(est - rhs, est, math.sqrt(var_con), df, level)


def _t_row(diff, est, se, df, level):
    from scipy import stats

    t = diff / se if se > 0 else np.nan
    p = 2.0 * (stats.t.sf(abs(t), df) if np.isfinite(df) else stats.norm.sf(abs(t)))
    row = {"estimate": est, "std_error": se, "df": df, "t_value": t, "p_value": p}
    if level is not None:
        q = stats.t.ppf(0.5 + level / 2, df) if np.isfinite(df) else stats.norm.ppf(0.5 + level / 2)
        row["lower"], row["upper"] = est - q * se, est + q * se
    return row


def fstat_ddf(nu, tol: float = 1e-8) -> float:
    """lmerTest's get_Fstat_ddf: F denominator df from the per-eigenvector df nu_m."""
    nu = np.asarray(nu, dtype=np.float64)
    if len(nu) == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(nu.mean())
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2)))
    return 2 * E / (E - len(nu))


def contest_md(fit, L, *, ddf: str = "satterthwaite", eps: float = math.sqrt(np.finfo(float).eps),
               den_df: float | None = None) -> dict:
    """F test of L beta = 0 (lmerTest's contestMD): Sum Sq, Mean Sq, NumDF, DenDF, F, p.

    `den_df` overrides the denominator df (used by the between-within method).
    """
    from scipy import stats

    L = np.atleast_2d(np.asarray(L, dtype=np.float64))
    sigma2 = fit.sigma ** 2
    method = _ddf_method(ddf)

    def table(F, q, df):
        ms = F * sigma2
        p = stats.f.sf(F, q, df) if np.isfinite(df) else stats.chi2.sf(F * q, q)
        return {"sum_sq": ms * q, "mean_sq": ms, "num_df": q, "den_df": df, "F_value": F, "p_value": p}

    if L.shape[0] == 0:
        return table(np.nan, 0, np.nan)
    if L.shape[0] == 1:
        r = contest1d(fit, L[0], ddf="asymptotic" if den_df is not None else method)
        df = den_df if den_df is not None else r["df"]
        return table(r["t_value"] ** 2, 1, df)
    beta = np.asarray(fit.beta)
    VL = L @ np.asarray(fit.vcov) @ L.T
    d, P = np.linalg.eigh(0.5 * (VL + VL.T))
    d, P = d[::-1], P[:, ::-1]  # R's eigen(): decreasing
    tol = max(eps * d[0], 0.0)
    pos = d > tol
    q = int(pos.sum())
    if q == 0:
        return table(np.nan, 0, np.nan)
    PtL = (P.T @ L)[:q]
    if q == 1:
        r = contest1d(fit, PtL[0], ddf="asymptotic" if den_df is not None else method)
        df = den_df if den_df is not None else r["df"]
        return table(r["t_value"] ** 2, 1, df)
    t2 = (PtL @ beta) ** 2 / d[:q]
    F = float(t2.sum() / q)
    if den_df is not None:
        df = den_df
    elif method == "asymptotic":
        df = np.inf
    else:
        st = satterthwaite_state(fit)
        nu = []
        for m in range(q):
            grad = np.array([_qform(PtL[m], J) for J in st.jacobian])
            nu.append(2 * d[m] ** 2 / _qform(grad, st.vcov_varpar))
        df = fstat_ddf(nu)
    return table(F, q, df)


def _ddf_method(ddf: str) -> str:
    key = str(ddf).lower().replace("_", "-").replace(" ", "-")
    aliases = {"satterthwaite": "satterthwaite", "satt": "satterthwaite",
               "between-within": "between-within", "betweenwithin": "between-within",
               "containment": "between-within", "nlme": "between-within",
               "asymptotic": "asymptotic", "wald": "asymptotic", "normal": "asymptotic",
               "z": "asymptotic", "lme4": "asymptotic", "none": "asymptotic"}
    if key not in aliases:
        raise ValueError(f"ddf must be one of {DDF_METHODS}, not {ddf!r}")
    return aliases[key]


DDF_LABEL = {
    "satterthwaite": "Satterthwaite's method (lmerTest)",
    "between-within": "between-within (nlme's containment rule)",
    "asymptotic": "none: normal (z) reference distribution",
}


# ======================================================================================
# Tables
# ======================================================================================

def fixed_effects_test(fit, ddf: str = "satterthwaite", level: float | None = None) -> pd.DataFrame:
    """Per-coefficient t tests: estimate, std_error, df, t_value, p_value (+ lower/upper).

    ddf: "satterthwaite" (lmerTest's summary), "between-within" (nlme's df), or
    "asymptotic" (z tests). ``table.attrs["ddf_method"]`` names the method.
    """
    method = _ddf_method(ddf)
    p = len(fit.beta)
    if method == "between-within":
        bw = between_within_df(fit)
        rows = []
        for j in range(p):
            est, se = float(fit.beta[j]), float(math.sqrt(fit.vcov[j, j]))
            rows.append(_t_row(est, est, se, float(bw.coef_df[j]), level))
    else:
        rows = []
        for j in range(p):
            e = np.zeros(p)
            e[j] = 1.0
            rows.append(contest1d(fit, e, ddf=method, level=level))
    out = pd.DataFrame(rows, index=pd.Index(fit.fixed_names, name="term")).reset_index()
    out.attrs["ddf_method"] = DDF_LABEL[method]
    return out


def confint_fixed(fit, level: float = 0.95, method: str = "wald") -> pd.DataFrame:
    """Confidence intervals for the fixed effects.

    method="wald": beta +- z SE (lme4's ``confint(method = "Wald")``);
    "satterthwaite" / "between-within": beta +- t_df SE with those df.
    """
    key = str(method).lower()
    if key == "wald":
        tab = fixed_effects_test(fit, ddf="asymptotic", level=level)
    else:
        tab = fixed_effects_test(fit, ddf=key, level=level)
    out = tab[["term", "estimate", "lower", "upper"]].copy()
    out.attrs["method"] = key
    out.attrs["level"] = level
    return out


# ---- terms and contrasts -------------------------------------------------------------

@dataclass
class FixedTerm:
    label: str  # R's term label, e.g. "age:arm"
    variables: list  # factor expressions of the term
    numeric: list  # those that are numeric (R's dataClasses "numeric")
    columns: list  # indices into fit.beta


def fixed_terms(fit) -> tuple[bool, list]:
    """R's terms of the fixed part with the columns of X each one owns (R's ``assign``).

    Returns (has_intercept, [FixedTerm, ...]) in R's term order; terms whose columns were all
    dropped as aliased keep an empty column list.
    """
    ms = fit.model.design.fixed_spec.matrix
    names_all = ms.all_names if ms.all_names is not None else ms.names
    keep = list(range(len(names_all))) if ms.keep is None else list(ms.keep)
    new_index = {old: new for new, old in enumerate(keep)}
    has_intercept = bool(ms.intercept)
    terms = []
    if ms.model_spec is None:
        return has_intercept, terms
    spec = ms.model_spec
    col = 0
    enc = spec.encoder_state or {}
    for st in spec.structure:
        facs = [f.expr for f in st.term.factors if f.eval_method.value != "literal"]
        ncol = len(st.columns)
        idx = [new_index[c] for c in range(col, col + ncol) if c in new_index]
        col += ncol
        if not facs:
            continue  # the intercept
        numeric = []
        for f in facs:
            kind = enc.get(f, (None,))[0]
            kind = getattr(kind, "value", kind)
            if kind != "categorical" and not _is_matrix_transform(f):
                numeric.append(f)
        terms.append(FixedTerm(":".join(facs), facs, numeric, idx))
    return has_intercept, terms


def _is_matrix_transform(expr: str) -> bool:
    e = expr.replace(" ", "")
    return e.startswith(("poly(", "ns(", "bs(", "splines::", "cbind("))


def _zapsmall(x, digits: int = 7):
    x = np.asarray(x, dtype=np.float64)
    mx = np.max(np.abs(x)) if x.size else 0.0
    if not np.isfinite(mx) or mx <= 0:
        return np.round(x, digits)
    return np.round(x, max(0, digits - int(math.ceil(math.log10(mx)))))


def doolittle(x, eps: float = 1e-6):
    """lmerTest's doolittle(): x = L U with unit lower L (entries below eps zeroed)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    L = np.eye(n)
    U = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            U[i, j] = x[i, j] - L[i, :i] @ U[:i, j]
        for j in range(i + 1, n):
            v = x[j, i] - L[j, :i] @ U[:i, i]
            L[j, i] = 0.0 if abs(U[i, i]) < eps else v / U[i, i]
    L[np.abs(L) < eps] = 0.0
    U[np.abs(U) < eps] = 0.0
    return L, U


def contrasts_type1(fit) -> dict:
    """lmerTest's Type I (sequential) hypotheses: rows of t(doolittle(X'X)$L) per term."""
    _, terms = fixed_terms(fit)
    p = len(fit.beta)
    XtX = np.asarray(fit.model.crossprods.gram)[:p, :p]
    Lt = np.eye(1) if p == 1 else doolittle(XtX)[0].T
    return {t.label: Lt[t.columns] for t in terms if t.columns}


def contrasts_type3(fit) -> dict:
    """lmerTest's Type III hypotheses for treatment-coded factors (``extract_contrasts_type3``).

    lmerTest builds, per term, the over-parameterised ``model.matrix(~ 0 + term)`` (rdX), maps it
    on the parameters (L = t(ginv(X) rdX)), makes each term's columns orthogonal to the terms
    that contain it (highest order first) and keeps the rows of the X columns. ginv(X) rdX is
    the unique C with X C = rdX, which depends on the coding only, not on the rows: it is
    computed here on a synthetic grid (every combination of factor levels, random numeric
    values), so no pass over the data is needed.
    """
    has_icpt, terms = fixed_terms(fit)
    if not terms or len(fit.beta) <= 1 or len(terms) <= 1:
        return contrasts_type1(fit)
    design = fit.model.design
    fs = design.fixed_spec
    for info in fs.variables.values():
        if info.kind == "factor" and info.ordered:
            raise NotImplementedError(
                "Type III contrasts are implemented for treatment-coded factors only; "
                f"{info.name!r} is an ordered factor (contr.poly). Use type=1 or a plain Categorical.")
    grid = _reference_grid(fs, len(fit.beta))
    Xg = fs.matrix.matrix(grid)
    from .design import _build_matrix  # noqa: PLC0415 (private helper, same package)
    from .formula import r_term_order

    _, term_factors = r_term_order(design.parsed.fixed)
    tstate = getattr(fs.matrix.model_spec, "transform_state", None) or {}
    rd_cols, rd_names, rd_term = [], [], []
    if has_icpt:
        rd_cols.append(np.ones((len(grid), 1)))
        rd_names.append("(Intercept)")
        rd_term.append(None)
    for t, facs in zip(terms, term_factors):
        Z, spec = _build_matrix(t.label, False, [facs], grid, "Type III contrasts", tstate)
        rd_cols.append(Z)
        rd_names.extend(spec.names)
        rd_term.extend([t.label] * Z.shape[1])
    rdX = np.hstack(rd_cols)
    C, res, rank, _ = np.linalg.lstsq(Xg, rdX, rcond=None)
    if rank < Xg.shape[1] or not np.allclose(Xg @ C, rdX, atol=1e-8 * max(1.0, np.abs(rdX).max())):
        raise NotImplementedError(
            "could not map the over-parameterised Type III design on the model's parameters "
            "(aliased or transformed columns); use type=1")
    L = _zapsmall(C.T)  # rows: rdX columns, columns: X columns
    contains = {t.label: [u.label for u in terms
                          if set(t.variables) < set(u.variables) and set(t.numeric) == set(u.numeric)]
                for t in terms}
    cols_of = {t.label: t.columns for t in terms}
    for t in sorted(terms, key=lambda t: -len(t.variables)):
        cont = contains[t.label]
        if cont and t.columns:
            A = L[:, [c for u in cont for c in cols_of[u]]]
            B = L[:, t.columns]
            coef, *_ = np.linalg.lstsq(A, B, rcond=None)
            L[:, t.columns] = _zapsmall(B - A @ coef)
    pos = {n: i for i, n in enumerate(rd_names)}
    missing = [n for n in fit.fixed_names if n not in pos]
    if missing:
        raise NotImplementedError(f"Type III contrasts: columns {missing} are not treatment coded")
    L = L[[pos[n] for n in fit.fixed_names]]
    out = {}
    for t in terms:
        Lt = L[:, t.columns].T
        out[t.label] = Lt[np.abs(Lt).sum(axis=1) > 1e-8]
    return out


def _reference_grid(fs, p: int, max_cells: int = 20000, seed: int = 20240607) -> pd.DataFrame:
    """Every combination of the factors' levels (or a random sample of them), repeated with
    random numeric values in (1, 2) until there are comfortably more rows than parameters."""
    rng = np.random.default_rng(seed)
    factors = {v: info for v, info in fs.variables.items() if info.kind == "factor"}
    numerics = [v for v, info in fs.variables.items() if info.kind != "factor"]
    sizes = [len(info.levels) for info in factors.values()]
    cells = int(np.prod(sizes)) if sizes else 1
    reps = max(3, int(math.ceil(4 * p / cells)))
    if cells <= max_cells:
        grids = np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij") if sizes else []
        codes = [np.tile(g.ravel(), reps) for g in grids]
        n = cells * reps
    else:
        n = max(50 * p, 2000)
        codes = [rng.integers(0, s, n) for s in sizes]
    frame = {}
    for (v, info), c in zip(factors.items(), codes):
        frame[v] = pd.Categorical.from_codes(c, categories=list(info.levels), ordered=info.ordered)
    for v in numerics:
        frame[v] = rng.uniform(1.0, 2.0, n)
    return pd.DataFrame(frame)


def anova_terms(fit, type: int | str = 3, ddf: str = "satterthwaite") -> pd.DataFrame:
    """F tests per fixed-effects term (lmerTest's ``anova(fit, type, ddf)``).

    type: 3 (default; lmerTest's Type III for treatment contrasts), 1 (sequential) or
    "marginal" (each term's own coefficients). ddf: "satterthwaite", "between-within"
    (nlme's term df) or "asymptotic" (chi-square / q). The method is in
    ``table.attrs["heading"]``.
    """
    method = _ddf_method(ddf)
    kind = str(type).lower()
    if kind in ("3", "iii"):
        Ls, label = contrasts_type3(fit), "Type III"
    elif kind in ("1", "i"):
        Ls, label = contrasts_type1(fit), "Type I"
    elif kind == "marginal":
        p = len(fit.beta)
        Ls = {t.label: np.eye(p)[t.columns] for t in fixed_terms(fit)[1] if t.columns}
        label = "Marginal"
    else:
        raise ValueError(f"type must be 3, 1 or 'marginal', not {type!r}")
    term_df = between_within_df(fit).term_df if method == "between-within" else None
    rows = {}
    for name, L in Ls.items():
        rows[name] = contest_md(fit, L, ddf=method,
                                den_df=None if term_df is None else term_df[name])
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "term"
    out = out.reset_index()
    out.attrs["heading"] = f"{label} Analysis of Variance Table with {DDF_LABEL[method]}"
    out.attrs["ddf_method"] = DDF_LABEL[method]
    return out


# ======================================================================================
# nlme's between-within ("containment") denominator df
# ======================================================================================

@dataclass
class BetweenWithinDF:
    strata: list  # outermost grouping factor first, then "Residual"
    coef_df: np.ndarray  # per coefficient
    coef_stratum: list
    term_df: dict  # per term label (and "(Intercept)")


def between_within_df(fit) -> BetweenWithinDF:
    """nlme's ``getFixDF``: each column of X is estimated in the innermost stratum (grouping
    level) within whose groups it varies; a stratum's df are its number of groups minus the
    number of groups of the stratum above, minus the coefficients estimated in it.

    Needs nested grouping factors (or a single one); crossed factors raise ValueError.
    """
    st = fit.model.structure
    factors = sorted(st.factors, key=lambda f: f.n_levels)
    for outer, inner in zip(factors, factors[1:]):
        pairs = np.unique(np.stack([inner.codes.astype(np.int64), outer.codes.astype(np.int64)]), axis=1)
        if pairs.shape[1] != inner.n_levels:
            raise ValueError(
                f"between-within df need nested grouping factors, but {inner.group!r} is not nested "
                f"in {outer.group!r}; use ddf='satterthwaite'")
    X = fit.model.design.X
    N, p = X.shape
    names = [f.group for f in factors] + ["Residual"]
    ngrps = np.array([f.n_levels for f in factors], dtype=float)
    df_strata = np.concatenate([ngrps, [N]]) - np.concatenate([[0.0], ngrps])
    has_icpt, terms = fixed_terms(fit)

    def const(x, tol=math.sqrt(np.finfo(float).eps)):
        if x[0] == 0:
            return bool(np.all(np.abs(x) < tol))
        return bool(np.all(np.abs(x / x[0] - 1) < tol))

    not_int = np.array([not const(X[:, j]) for j in range(p)])
    assign = {}
    int_cols = [j for j in range(p) if not not_int[j]]
    if has_icpt:
        assign["(Intercept)"] = [j for j in range(p) if fit.fixed_names[j] == "(Intercept)"]
    for t in terms:
        assign[t.label] = list(t.columns)
    coef_df = np.zeros(p)
    term_df = {k: 0.0 for k in assign}
    strat_idx = np.zeros(p, dtype=int)
    if not_int.any():
        inner = np.ones((p, len(factors) + 1))
        for q, f in enumerate(factors):
            inner[:, q + 1] = _inner_fraction(X, f.codes, f.n_levels)
        strat_idx = np.array([max(i for i in range(len(names)) if inner[j, i] > 0) for j in range(p)])
        dfX = df_strata.copy()
        for j in np.flatnonzero(not_int):
            dfX[strat_idx[j]] -= 1
        if not not_int.all():
            dfX[0] -= 1
        else:
            dfX[1:] += 1
        coef_df[not_int] = dfX[strat_idx[not_int]]
        not_int_terms = {k: bool(any(not_int[c] for c in cols)) for k, cols in assign.items()}
        strat_terms = {k: max(strat_idx[c] for c in cols) for k, cols in assign.items()
                       if not_int_terms[k] and cols}
        dfT = df_strata.copy()
        for k, s in strat_terms.items():
            dfT[s] -= len(assign[k])
        if not all(not_int_terms.values()):
            dfT[0] -= 1
        else:
            dfT[1:] += 1
        for k, s in strat_terms.items():
            term_df[k] = dfT[s]
        if int_cols:
            coef_df[~not_int] = dfX.max()
            for k in assign:
                if not not_int_terms[k]:
                    term_df[k] = dfT.max()
    else:
        coef_df[:] = df_strata.max()
        for k in assign:
            term_df[k] = df_strata.max()
    return BetweenWithinDF(names, coef_df, [names[i] for i in strat_idx], term_df)


def _inner_fraction(X, codes, n_levels) -> np.ndarray:
    """Per column of X: the fraction of groups within which the column is not constant."""
    codes = np.asarray(codes, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    sc = codes[order]
    first = np.searchsorted(sc, np.arange(n_levels))
    out = np.empty(X.shape[1])
    for j in range(X.shape[1]):
        x = X[order, j]
        ref = x[first][sc]
        varies = np.bincount(sc, weights=(x != ref).astype(float), minlength=n_levels) > 0
        out[j] = varies.mean()
    return out


# ======================================================================================
# Intraclass correlation and convergence
# ======================================================================================

def icc(fit, interval: str | None = None, *, nsim: int = 200, seed=0, level: float = 0.95) -> pd.DataFrame:
    """Intraclass correlations of a random-intercept model, one row per grouping factor.

    interval="bootstrap" adds `lower` / `upper`: percentile limits of the ICC over a seeded,
    deterministic parametric bootstrap (`nsim` refits of the same design).

    icc = var_g / (sum of the random-intercept variances + sigma^2): the correlation of two
    observations that share the level of g and of no other factor (for a single grouping
    factor the usual var_g / (var_g + sigma^2)); icc_vs_residual = var_g / (var_g + sigma^2)
    ignores the other factors. Models with random slopes raise ValueError (the ICC then
    depends on the covariates).
    """
    if fit.model.residual is not None:
        raise NotImplementedError(
            "the ICC of a model with a residual structure (AR1, CompoundSymmetry, VarIdent) is "
            "not defined here: the within-group correlation then also depends on the residual "
            "correlation and stratum")
    rows = []
    for group, names, cov in fit.term_covariances():
        if list(names) != ["(Intercept)"]:
            raise ValueError(f"the ICC is defined for random-intercept terms only; the term on "
                             f"{group!r} has columns {list(names)}")
        rows.append((group, float(cov[0, 0])))
    s2 = fit.sigma ** 2
    total = sum(v for _, v in rows) + s2
    out = pd.DataFrame({
        "group": [g for g, _ in rows],
        "variance": [v for _, v in rows],
        "icc": [v / total for _, v in rows],
        "icc_vs_residual": [v / (v + s2) for _, v in rows],
    })
    out.attrs["residual_variance"] = s2
    if interval is None:
        return out
    if interval != "bootstrap":
        raise ValueError(f"interval must be None or 'bootstrap', not {interval!r}")
    boot = fit.bootstrap(nsim, seed, func=lambda f: icc(f)["icc"].to_numpy())
    ci = boot.ci(level)
    out["lower"] = ci.iloc[:, -2].to_numpy()
    out["upper"] = ci.iloc[:, -1].to_numpy()
    out.attrs["interval"] = f"parametric bootstrap, {nsim} refits, seed {seed}, percentile {level:.0%}"
    return out


@dataclass
class ConvergenceCheck:
    """lme4's checkConv at the optimum: gradient and Hessian of the objective in theta."""

    ok: bool
    singular: bool
    gradient: np.ndarray | None
    hessian: np.ndarray | None
    scaled_gradient: np.ndarray | None  # lme4's solve(chol(H), g)
    max_scaled_gradient: float  # lme4's max(pmin(|scaled|, |g|)); tol 0.002
    newton_step: np.ndarray | None  # H^{-1} g
    hessian_eigenvalues: np.ndarray | None
    messages: list


def check_convergence(fit, *, grad_tol: float = 2e-3, hess_tol: float = 1e-6,
                      rel_step: float = 1e-4, warn: bool = True) -> ConvergenceCheck:
    """lme4's convergence checks (``checkConv``) on demand, after the fit.

    Singular fits are not checked further (lme4 stops at "boundary (singular) fit"). Otherwise
    the gradient and Hessian of the objective are taken by central differences in theta
    (``bigmixed.optimize.finite_difference_derivatives``, step rel_step * max(|theta_i|, 0.1);
    lme4's ``deriv12`` steps 1e-4); the fit is flagged when max(min(|scaled gradient|, |gradient|))
    > grad_tol, the scaled gradient being lme4's solve(chol(H), g), or when the Hessian is not
    positive definite; a ratio of eigenvalues above 1/hess_tol is noted as in lme4 ("nearly
    unidentifiable"). A ConvergenceWarning is issued for a failed check (warn=True).
    """
    from .optimize import finite_difference_derivatives

    model = fit.model
    theta = np.asarray(fit.optimizer_params, dtype=np.float64)
    if model.structure.is_singular(fit.theta):
        return ConvergenceCheck(True, True, None, None, None, 0.0, None, None,
                                ["boundary (singular) fit: gradient and Hessian not checked (as lme4)"])
    free = np.ones(len(theta), dtype=bool)
    # central differences, step rel_step * max(|theta_i|, 0.1) (lme4's deriv12: 1e-4 absolute)
    _, g, H = finite_difference_derivatives(model.objective, theta, free, rel_step=rel_step)
    messages = []
    ok = True
    w = np.linalg.eigvalsh(0.5 * (H + H.T))
    scaled = newton = None
    maxmin = np.nan
    try:
        R = np.linalg.cholesky(0.5 * (H + H.T)).T  # upper, R'R = H
        import scipy.linalg

        scaled = scipy.linalg.solve_triangular(R, g, lower=False)
        newton = np.linalg.solve(H, g)
        maxmin = float(np.max(np.minimum(np.abs(scaled), np.abs(g))))
        if maxmin > grad_tol:
            ok = False
            comp = int(np.argmax(np.minimum(np.abs(scaled), np.abs(g)))) + 1
            messages.append(f"Model failed to converge with max|grad| = {maxmin:.6g} "
                            f"(tol = {grad_tol}, component {comp})")
    except np.linalg.LinAlgError:
        ok = False
        messages.append("unable to evaluate scaled gradient")
    if w.min() <= 0:
        ok = False
        messages.append(f"Model failed to converge: degenerate Hessian with {int((w < 0).sum())} "
                        "negative eigenvalues")
    elif w.max() / w.min() > 1.0 / hess_tol:
        messages.append("Model is nearly unidentifiable: very large eigenvalue ratio "
                        f"{w.max() / w.min():.3g} - Rescale variables?")
    rec = ConvergenceCheck(ok, False, g, H, scaled, maxmin, newton, w, messages)
    if warn and not ok:
        for m in messages:
            _warnings.warn(ConvergenceWarning(m), stacklevel=3)
    return rec


# ======================================================================================
# Text output
# ======================================================================================

def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "NA"
    return "<2e-16" if p < 2e-16 else f"{p:.3g}"


def format_fixed_effects_test(table: pd.DataFrame) -> list:
    """lmerTest-style coefficient table lines (Estimate, Std. Error, df, t value, Pr(>|t|))."""
    header = ["", "Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
    rows = [[r.term, f"{r.estimate:.6g}", f"{r.std_error:.6g}",
             f"{r.df:.6g}" if np.isfinite(r.df) else "Inf", f"{r.t_value:.3f}", _fmt_p(r.p_value)]
            for r in table.itertuples()]
    widths = [max(len(h), *(len(x[k]) for x in rows)) for k, h in enumerate(header)]
    return [" ".join(c.ljust(widths[k]) if k == 0 else c.rjust(widths[k]) for k, c in enumerate(line))
            for line in [header] + rows]


def format_anova_terms(table: pd.DataFrame) -> str:
    """lmerTest-style text of an `anova_terms` table."""
    header = ["", "Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]
    rows = [[r.term, f"{r.sum_sq:.5g}", f"{r.mean_sq:.5g}", f"{r.num_df:g}",
             f"{r.den_df:.5g}" if np.isfinite(r.den_df) else "Inf", f"{r.F_value:.4f}", _fmt_p(r.p_value)]
            for r in table.itertuples()]
    widths = [max(len(h), *(len(x[k]) for x in rows)) if rows else len(h) for k, h in enumerate(header)]
    lines = [table.attrs.get("heading", "")]
    lines += [" ".join(c.ljust(widths[k]) if k == 0 else c.rjust(widths[k]) for k, c in enumerate(line))
              for line in [header] + rows]
    return "\n".join(lines)


def summary_with_df(fit, ddf: str = "satterthwaite") -> str:
    """The fit's summary with lmerTest's coefficient table: df and p-values by `ddf`, and a
    line naming the method."""
    from .summary import format_summary

    base = format_summary(fit)
    table = fixed_effects_test(fit, ddf=ddf)
    block = ["Fixed effects:"] + format_fixed_effects_test(table)
    block.append(f"(df and p-values: {table.attrs['ddf_method']})")
    lines = base.split("\n")
    try:
        start = lines.index("Fixed effects:")
        end = start + 1
        while end < len(lines) and lines[end].strip():
            end += 1
        lines[start:end] = block
    except ValueError:
        lines += [""] + block
    return "\n".join(lines)


def confint(fit, method: str = "wald", level: float = 0.95, **kwargs) -> pd.DataFrame:
    """Confidence intervals by `method`: "wald" (lme4's Wald: fixed effects, normal quantiles),
    "satterthwaite" / "between-within" (fixed effects, t quantiles with those df), "profile"
    (likelihood-profile intervals for all parameters, lme4's ``confint(method = "profile")``),
    "boot" (parametric percentile bootstrap; kwargs nsim, seed)."""
    key = str(method).lower()
    if key in ("wald", "satterthwaite", "between-within"):
        return confint_fixed(fit, level=level, method=key)
    if key == "profile":
        return profile_confint(fit, level=level, **kwargs)
    if key in ("boot", "bootstrap"):
        from .predict import bootstrap

        nsim = kwargs.pop("nsim", 200)
        seed = kwargs.pop("seed", None)
        return bootstrap(fit, nsim, seed, **kwargs).ci(level)
    raise ValueError(f"method must be 'wald', 'satterthwaite', 'between-within', 'profile' or 'boot', not {method!r}")


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
        T = _chol_psd(S)
        theta[sl] = [T[i, j] for i, j in idx]
    return theta


def _chol_psd(S):
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


class _Profiler:
    def __init__(self, fit):
        from .compare import refit_ml

        if fit.model.residual is not None:
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
        names = []
        for k, sl, nc in _term_slices(self.st):
            t = self.st.terms[k]
            _, idx = _lower_tri(np.zeros(sl.stop - sl.start), nc)
            for i, j in idx:
                names.append(f"sd_{t.column_names[i]}|{t.group}" if i == j
                             else f"cor_{t.column_names[i]}.{t.column_names[j]}|{t.group}")
        return names + ["sigma"] + list(self.ml.fixed_names)

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
    """For profile parameter k of a `_Profiler`: (estimate, lower bound, upper bound, first step,
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
    from scipy import stats

    pr = _Profiler(fit)
    names = pr.names()
    cutoff = float(stats.norm.ppf(0.5 + level / 2))
    want = names if which is None else [n for n in names if n in set(which)]
    rows = []
    ml = pr.ml
    se_fixed = np.sqrt(np.diag(ml.vcov))
    for name in want:
        x_hat, lo, hi, step, zeta = profile_target(pr, names.index(name), cutoff, se_fixed)
        lower = pr.endpoint(zeta, x_hat, step, -1, lo, hi, cutoff)
        pr._start.clear()
        upper = pr.endpoint(zeta, x_hat, step, +1, lo, hi, cutoff)
        pr._start.clear()
        rows.append((name, x_hat, lower, upper))
    out = pd.DataFrame(rows, columns=["term", "estimate", "lower", "upper"])
    out.attrs.update(method="profile (ML deviance)", level=level)
    return out
