"""A fitted GLMM: the LMM's fit record with a family, the mean on the response scale, z tests,
and lme4's conventions for the log-likelihood (nAGQ), the deviance and the parameter count.
"""
from __future__ import annotations


import numpy as np
import pandas as pd

from ..fitting.optimize import finite_difference_derivatives
from .fit import LMMResults, _frozen


class GLMMResults(LMMResults):
    """A fitted generalized linear mixed model (lme4's glmerMod).

    As `LMMResults` (theta, beta, vcov, ranef, coef, variance_components, predict, ...), with:
    family, nAGQ; objective = -2 log-likelihood (Laplace or quadrature; for nAGQ = 0 glmer's
    stage-1 criterion); deviance = lme4's deviance(): the sum of the squared deviance
    residuals at the modes; sigma = 1; n_params = len(theta) + p; vcov from the Hessian of
    the criterion in (theta, beta) (lme4's default, use.hessian = TRUE; for nAGQ = 0 from R_X).
    """

    _fields = LMMResults._fields + ("family", "nAGQ", "_eta", "_mu", "vcov_method")

    @classmethod
    def from_model(cls, model, record, *, warnings=(), timings=None) -> "GLMMResults":
        import time

        t0 = time.perf_counter()
        st = model.structure
        k, p = st.n_theta, model.n_fixed
        params = np.asarray(record.params, dtype=np.float64)
        theta, gamma = params[:k], params[k:]
        beta = model.beta_of(gamma)
        r, fixed = model.modes_at(theta, beta)
        modes = [r.u[fi] @ st.T_of(theta, fi).T for fi in range(len(st.factors))]
        ws = model.modes_system
        _, cinvs = ws.system.modes(theta, np.zeros(0), condvar=True)
        condvar = [np.einsum("ij,ljk,mk->lim", st.T_of(theta, fi), cinvs[fi], st.T_of(theta, fi))
                   for fi in range(len(st.factors))]
        vcov, method = _vcov(model, params, k, p)
        from ..kernels.glm import glm_linkinv

        mu = np.empty_like(r.eta)
        glm_linkinv(r.eta, model.link_id, mu, np.empty_like(r.eta))
        warnings = list(warnings)
        sep = model.separation_warning(mu)
        if sep is not None:
            warnings.append(sep)
        timings = dict(timings or {}, finalize=time.perf_counter() - t0)
        return cls(
            _model=model, rows=model.rows, design=model.design, structure=st, residual=None,
            solver=model.solver, reml=False, formula=model.formula,
            _fixed_names=model.design.fixed_names, theta=theta, residual_eta=np.zeros(0),
            beta=beta, vcov=vcov, sigma=1.0, objective=float(record.objective),
            _deviance=float(r.deviance), conditional_modes=modes, _condvar_saved=condvar,
            _beta_work=np.zeros(0), n_obs=model.n_obs, n_dropped_rows=model.design.n_dropped,
            optimizer=record, _warnings=warnings, timings=timings, family=model.family,
            nAGQ=model.nAGQ, _eta=_frozen(r.eta), _mu=_frozen(mu), vcov_method=method,
        )

    # ---- lme4's conventions -------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """lme4's df for logLik: length(theta) + p (no scale parameter)."""
        return self.structure.n_theta + len(self.beta)

    @property
    def df_resid(self) -> int:
        return self.nobs - self.n_params

    @property
    def tvalues(self) -> pd.Series:
        """z values (glmer's 'z value')."""
        return pd.Series(self.beta / self.bse.to_numpy(), index=self.fixed_names, name="z_value")

    @property
    def pvalues(self) -> pd.Series:
        """Pr(>|z|) of the Wald z tests."""
        from scipy import stats

        return pd.Series(2 * stats.norm.sf(np.abs(self.tvalues.to_numpy())),
                         index=self.fixed_names, name="p_value")

    @property
    def fixed_effects(self) -> pd.DataFrame:
        return pd.DataFrame({
            "term": self.fixed_names,
            "estimate": np.array(self.beta),
            "std_error": self.bse.to_numpy(),
            "z_value": self.tvalues.to_numpy(),
            "p_value": self.pvalues.to_numpy(),
        })

    @property
    def variance_components(self) -> pd.DataFrame:
        vc = super().variance_components
        return vc[vc["group"] != "Residual"].reset_index(drop=True)

    # ---- the mean -------------------------------------------------------------------------
    @property
    def linear_predictor(self) -> np.ndarray:
        """eta = offset + X beta + Z b at the modes (lme4's predict(type = "link"))."""
        return self._eta

    @property
    def fittedvalues(self) -> np.ndarray:
        """The conditional mean on the response scale (lme4's fitted())."""
        return self._mu

    def __repr__(self) -> str:
        return (f"<GLMMResults {self.family.describe()} {self.formula!r}: -2 logLik "
                f"{self.objective:.4f}, nobs {self.nobs}, nAGQ {self.nAGQ}>")


def _vcov(model, params, k, p):
    """Var(beta): 2 H^{-1} restricted to beta, H the Hessian of the criterion in (theta, gamma)
    by central differences (lme4's vcov with use.hessian = TRUE), mapped by beta = beta_ref +
    C gamma; for nAGQ = 0 (no beta in the criterion) C C' = W (R_X'R_X)^{-1} W'."""
    C = model._C
    if model.nAGQ == 0 or p == 0:
        return C @ C.T, "R_X (nAGQ = 0)"
    lower = np.concatenate((model.structure.lower_bounds, np.full(p, -np.inf)))
    free = ~((lower == 0) & (params == 0))
    _, _, H = finite_difference_derivatives(model.objective, params, free, rel_step=1e-3)
    try:
        Hinv = np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return C @ C.T, "R_X (singular Hessian)"
    idx = np.flatnonzero(free)
    pos = [int(np.flatnonzero(idx == k + j)[0]) for j in range(p)]
    Vg = 2.0 * Hinv[np.ix_(pos, pos)]
    V = C @ (0.5 * (Vg + Vg.T)) @ C.T
    if not np.all(np.isfinite(V)) or np.any(np.linalg.eigvalsh(V) <= 0):
        return C @ C.T, "R_X (Hessian not positive definite)"
    return V, "Hessian"
