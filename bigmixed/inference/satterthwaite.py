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
from ..warnings import ConvergenceWarning
from .between_within import between_within_df
from .derivatives import richardson_hessian, richardson_jacobian

LOG_2PI = math.log(2.0 * math.pi)

DDF_METHODS = ("satterthwaite", "kenward-roger", "between-within", "asymptotic")


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


@dataclass(frozen=True)
class SatterthwaiteInputs:
    """What Satterthwaite's df need from the criterion, at varpar = (optimizer params, sigma):
    the Hessian H of f(varpar) (symmetrised) and the Jacobian J_i = dVar(beta)/dvarpar_i.
    Computed from the model of a live fit; a saved model holds them (bigmixed.io.modelfile),
    so that a loaded fit answers fixed_effects_test() / anova_terms() as the original."""

    varpar: np.ndarray
    hessian: np.ndarray
    jacobian: tuple  # (p, p) arrays, one per element of varpar


class InputsUnavailable:
    """Put in a fit's memo (key INPUTS_KEY) by the loader of a model file without the
    Satterthwaite section: `error()` is the typed error to raise (a fresh one each time)."""

    def __init__(self, make_error):
        self.error = make_error


INPUTS_KEY = "satterthwaite-inputs"


def satterthwaite_inputs(fit) -> SatterthwaiteInputs:
    """H and the J_i of `fit` (computed once per fit: ``fit.derived``); a loaded fit gives those
    of its file, or raises bigmixed.SavedSectionMissingError when the file has none."""
    inputs = fit.derived(INPUTS_KEY, lambda: _live_inputs(fit))
    if isinstance(inputs, InputsUnavailable):
        raise inputs.error()
    return inputs


def satterthwaite_available(fit) -> bool:
    """Whether `fit` can give Satterthwaite's df (a live LMM fit, or a loaded one whose file
    holds the section) without computing them."""
    if getattr(fit, "_model", None) is not None:
        return True
    memo = getattr(fit, "_memo", {})
    return isinstance(memo.get(INPUTS_KEY), SatterthwaiteInputs)


def _live_inputs(fit) -> SatterthwaiteInputs:
    fns = VarparFunctions(fit._require_model("denominator degrees of freedom (they need the "
                                              "cross-products)"), fit.reml)
    varpar = np.append(np.asarray(fit.optimizer_params, dtype=np.float64), fit.sigma)
    H = richardson_hessian(fns.deviance, varpar)
    H = 0.5 * (H + H.T)
    p = len(fit.beta)
    jac = richardson_jacobian(lambda vp: fns.vcov_beta(vp).ravel(), varpar)
    jac_list = [jac[:, i].reshape(p, p) for i in range(jac.shape[1])]
    jac_list = tuple(0.5 * (J + J.T) for J in jac_list)
    return SatterthwaiteInputs(varpar, H, jac_list)


def satterthwaite_state(fit, *, tol: float = 1e-8) -> SatterthwaiteState:
    """lmerTest's ``as_lmerModLT``: Hessian of f(theta, sigma) and the Jacobian of Var(beta);
    computed once per fit (``fit.derived``)."""
    return fit.derived(f"satterthwaite(tol={tol!r})", lambda: _satterthwaite_state(fit, tol))


def _satterthwaite_state(fit, tol: float) -> SatterthwaiteState:
    inputs = satterthwaite_inputs(fit)
    varpar, H = inputs.varpar, inputs.hessian
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
    jac_list = list(inputs.jacobian)
    st = SatterthwaiteState(varpar, np.array(fit.vcov), H, 2.0 * Hinv, jac_list, messages)
    for msg in messages:
        _warnings.warn(ConvergenceWarning(msg), stacklevel=3)
    return st


def _qform(x, A):
    return float(x @ A @ x)


def contest1d(fit, L, *, rhs: float = 0.0, ddf: str = "satterthwaite", level: float | None = None) -> dict:
    """t test of the contrast L'beta = rhs (lmerTest's contest1D): estimate, SE, df, t, p."""
    L = np.asarray(L, dtype=np.float64).ravel()
    beta = np.asarray(fit.beta)
    est = float(L @ beta)
    var_con = _qform(L, np.asarray(fit.vcov))
    method = resolve_ddf(ddf)
    if method == "kenward-roger":
        from .kenward_roger import contest1d_kr

        row = contest1d_kr(fit, L, level)
        if rhs:
            row["t_value"] = (row["estimate"] - rhs) / row["std_error"]
            row["p_value"] = _t_row(row["estimate"] - rhs, row["estimate"], row["std_error"],
                                    row["df"], None)["p_value"]
        return row
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
    from .distributions import norm_ppf, norm_sf, t_ppf, t_sf

    t = diff / se if se > 0 else np.nan
    p = 2.0 * (t_sf(abs(t), df) if np.isfinite(df) else norm_sf(abs(t)))
    row = {"estimate": est, "std_error": se, "df": df, "t_value": t, "p_value": p}
    if level is not None:
        q = t_ppf(0.5 + level / 2, df) if np.isfinite(df) else norm_ppf(0.5 + level / 2)
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
    from .distributions import chi2_sf, f_sf

    L = np.atleast_2d(np.asarray(L, dtype=np.float64))
    sigma2 = fit.sigma ** 2
    method = resolve_ddf(ddf)

    def table(F, q, df):
        ms = F * sigma2
        p = f_sf(F, q, df) if np.isfinite(df) else chi2_sf(F * q, q)
        return {"sum_sq": ms * q, "mean_sq": ms, "num_df": q, "den_df": df, "F_value": F, "p_value": p}

    if L.shape[0] == 0:
        return table(np.nan, 0, np.nan)
    if method == "kenward-roger" and den_df is None:
        from .kenward_roger import contest_md_kr

        return contest_md_kr(fit, L)
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


def resolve_ddf(ddf: str) -> str:
    key = str(ddf).lower().replace("_", "-").replace(" ", "-")
    aliases = {"satterthwaite": "satterthwaite", "satt": "satterthwaite",
               "kenward-roger": "kenward-roger", "kenwardroger": "kenward-roger",
               "kr": "kenward-roger", "kenward": "kenward-roger",
               "between-within": "between-within", "betweenwithin": "between-within",
               "containment": "between-within", "nlme": "between-within",
               "asymptotic": "asymptotic", "wald": "asymptotic", "normal": "asymptotic",
               "z": "asymptotic", "lme4": "asymptotic", "none": "asymptotic"}
    if key not in aliases:
        raise ValueError(f"ddf must be one of {DDF_METHODS}, not {ddf!r}")
    return aliases[key]


DDF_LABEL = {
    "satterthwaite": "Satterthwaite's method (lmerTest)",
    "kenward-roger": "Kenward-Roger's method (pbkrtest)",
    "between-within": "between-within (nlme's containment rule)",
    "asymptotic": "none: normal (z) reference distribution",
}


# ======================================================================================
# Tables
# ======================================================================================

def fixed_effects_test(fit, ddf: str = "satterthwaite", level: float | None = None) -> pd.DataFrame:
    """Per-coefficient t tests: estimate, std_error, df, t_value, p_value (+ lower/upper).

    ddf: "satterthwaite" (lmerTest's summary), "kenward-roger" (pbkrtest's adjusted SEs and
    df, as lmerTest's summary(ddf = "Kenward-Roger"); bigmixed.inference.kenward_roger),
    "between-within" (nlme's df), or "asymptotic" (z tests). ``table.attrs["ddf_method"]``
    names the method.
    """
    method = resolve_ddf(ddf)
    if method == "kenward-roger":
        from .kenward_roger import fixed_effects_test_kr

        return fixed_effects_test_kr(fit, level)
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
