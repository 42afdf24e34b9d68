"""A fitted GLMM: the LMM's fit record with a family, the mean on the response scale, z tests,
and lme4's conventions for the log-likelihood (nAGQ), the deviance and the parameter count.
"""
from __future__ import annotations


from types import MappingProxyType

import numpy as np
import pandas as pd

from .fit import LMMResults, _frozen


class GLMMResults(LMMResults):
    """A fitted generalized linear mixed model (lme4's glmerMod).

    As `LMMResults` (theta, beta, vcov, ranef, coef, variance_components, predict, ...), with:
    family, nAGQ; objective = -2 log-likelihood (Laplace or quadrature; for nAGQ = 0 glmer's
    stage-1 criterion); deviance = lme4's deviance(): the sum of the squared deviance
    residuals at the modes; sigma = 1; n_params = len(theta) + p; vcov from the Hessian of
    the criterion in (theta, beta) (lme4's default, use.hessian = TRUE; for nAGQ = 0 from R_X).
    """

    _fields = LMMResults._fields + ("family", "nAGQ", "_eta", "_mu", "vcov_method", "offset_spec")

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
        condvar = model.conditional_variances(theta)
        vcov, method = _vcov(model, params, k, p)
        from ..kernels.glm import glm_linkinv

        if isinstance(r.eta, np.ndarray):
            eta = r.eta
            mu = np.empty_like(eta)
            glm_linkinv(eta, model.link_id, mu, np.empty_like(eta))
        else:  # rows that stay in Dask: the linear predictor is coefficients (rows.dask_frame)
            eta = mu = np.zeros(0)
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
            nAGQ=model.nAGQ, _eta=_frozen(eta), _mu=_frozen(mu, copy=False), vcov_method=method,
            offset_spec=MappingProxyType(dict(model.offset_spec)),
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
        from ..inference.distributions import norm_sf

        return pd.Series(2 * norm_sf(np.abs(self.tvalues.to_numpy())),
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

    @property
    def response_label(self) -> str:
        """The response as the formula writes it (``cbind(incidence, size - incidence)``)."""
        return self._model.response_label if self._model is not None else self.design.response

    # ---- the mean -------------------------------------------------------------------------
    @property
    def linear_predictor(self) -> np.ndarray:
        """eta = offset + X beta + Z b at the modes (lme4's predict(type = "link"))."""
        return self._eta

    @property
    def fittedvalues(self) -> np.ndarray:
        """The conditional mean on the response scale (lme4's fitted())."""
        return self._mu

    @property
    def fitted_marginal(self) -> np.ndarray:
        """The mean at the random effects' zero, linkinv(offset + X beta), on the response
        scale."""
        return self.derived("fitted_marginal", lambda: _frozen(self._linkinv(self._fixed_eta())))

    def _fixed_eta(self) -> np.ndarray:
        """offset + X beta on the fitting rows."""
        model = self._require_model("fitted values at the population level")
        return model.offset + self.rows.X @ self.beta

    def _linkinv(self, eta) -> np.ndarray:
        from ..kernels.glm import glm_linkinv

        eta = np.ascontiguousarray(eta, dtype=np.float64)
        mu = np.empty_like(eta)
        glm_linkinv(eta, self.family.ids[1], mu, np.empty_like(eta))
        return mu

    # ---- residuals (lme4's residuals.glmResp) -----------------------------------------
    def residuals(self, type: str = "deviance") -> np.ndarray:
        """Residuals on the fitting rows, lme4's ``residuals(fit, type)``: "deviance"
        (default: sign(y - mu) sqrt(d_i)), "pearson" ((y - mu) sqrt(w) / sqrt(V(mu))),
        "response" (y - mu) or "working" ((y - mu) / mu.eta). For a binomial response y is
        the proportion of successes and w the number of trials times the prior weights."""
        from ..kernels.glm import glm_dev_resids, glm_linkinv, glm_variance

        kinds = ("deviance", "pearson", "response", "working")
        if type not in kinds:
            raise ValueError(f"type must be one of {kinds}, not {type!r}")

        def compute():
            model = self._require_model(f"{type} residuals")
            y, w, mu = model.y, model.prior_weights, np.asarray(self._mu)
            fid, lid = self.family.ids
            r = y - mu
            if type == "response":
                return _frozen(r)
            if type == "deviance":
                d = np.empty_like(mu)
                glm_dev_resids(y, mu, w, fid, d)
                return _frozen(np.sign(r) * np.sqrt(np.maximum(d, 0.0)))
            if type == "pearson":
                v = np.empty_like(mu)
                glm_variance(mu, fid, v)
                return _frozen(r * np.sqrt(w) / np.sqrt(v))
            me = np.empty_like(mu)
            glm_linkinv(np.ascontiguousarray(self._eta), lid, np.empty_like(mu), me)
            return _frozen(r / me)

        return self.derived(f"residuals_{type}", compute)

    @property
    def resid(self) -> np.ndarray:
        """Deviance residuals (lme4's default residuals() of a glmer fit)."""
        return self.residuals("deviance")

    @property
    def resid_response(self) -> np.ndarray:
        return self.residuals("response")

    @property
    def resid_pearson(self) -> np.ndarray:
        return self.residuals("pearson")

    @property
    def resid_deviance(self) -> np.ndarray:
        return self.residuals("deviance")

    @property
    def resid_marginal(self) -> np.ndarray:
        """y - linkinv(offset + X beta)."""
        return self.rows.y - self.fitted_marginal

    @property
    def resid_scaled(self) -> np.ndarray:
        """Pearson residuals (the summary's scaled residuals; sigma = 1)."""
        return self.residuals("pearson")

    # ---- prediction ---------------------------------------------------------------------
    def predict(self, newdata=None, level: str = "conditional", unseen: str = "population",
                type: str = "link", offset=None) -> np.ndarray:
        """Predictions, lme4's ``predict(fit, newdata, re.form, type)``: the linear predictor
        (type="link", lme4's default) or the mean (type="response"); level="conditional" uses
        the conditional modes of the levels seen in the fit (unseen levels: "population" = 0,
        lme4's allow.new.levels = TRUE; "nan"; "error"), "population" none (re.form = NA).
        The offset is part of the prediction: its formula terms and a column given as
        ``offset=`` are evaluated on `newdata`; an offset given as an array must be given
        again here (`offset=`, one value per row of newdata)."""
        from .predict import predict as _predict

        if type not in ("link", "response"):
            raise ValueError(f"type must be 'link' or 'response', not {type!r}")
        if newdata is None:
            if offset is not None:
                raise ValueError("offset= applies to newdata; the fitting rows keep their offset")
            if level not in ("conditional", "population"):
                raise ValueError("level must be 'conditional' or 'population'")
            if type == "response":
                return np.array(self._mu if level == "conditional" else self.fitted_marginal)
            return np.array(self._eta if level == "conditional" else self._fixed_eta())
        eta = _predict(self, newdata, level=level, unseen=unseen)
        eta = eta + self._offset_for(newdata, offset)
        return self._linkinv(eta) if type == "response" else eta

    def _offset_for(self, newdata, offset) -> np.ndarray | float:
        """The offset of the new rows: the formula's offset() terms and offset= (a column or an
        expression re-evaluated on newdata, or the values given here)."""
        from ..spec import glm_inputs

        spec = self.offset_spec
        n = len(newdata)
        total = np.zeros(n)
        for expr in spec.get("terms", ()):
            total = total + glm_inputs.evaluate(expr, newdata, f"offset term offset({expr})")
        arg = spec.get("argument")
        if offset is not None:
            v = np.asarray(offset, dtype=np.float64).reshape(-1)
            if isinstance(offset, str):
                v = glm_inputs.evaluate(offset, newdata, "offset=")
            if v.shape[0] != n:
                raise ValueError(f"offset= needs one value per row of newdata ({n}), got {v.shape[0]}")
            total = total + v
        elif arg == "values":
            raise ValueError("the fit's offset= was given as values, not a column: pass offset= "
                             "(one value per row of newdata) to predict")
        elif arg is not None:
            total = total + glm_inputs.evaluate(arg, newdata, "offset=")
        return total

    # ---- simulation and refit-based inference -------------------------------------------
    def simulate(self, nsim: int = 1, seed=None, **kwargs) -> np.ndarray:
        """Responses simulated from the fit on the fitting rows, an (n, nsim) array on the
        model's response scale (binomial: proportions of the rows' trials; Poisson: counts);
        see bigmixed.inference.simulate.simulate_glmm."""
        from ..inference.simulate import simulate_glmm

        return simulate_glmm(self, nsim, seed, **kwargs)

    def confint(self, method: str = "wald", coverage: float = 0.95, *, level=None, which=None,
                **kwargs) -> pd.DataFrame:
        """Confidence intervals, in the table every method returns (bigmixed.inference.confint):
        "wald" (fixed effects, beta +- z SE, lme4's Wald; NaN for the random-effect SDs),
        "profile" (likelihood profiles of the Laplace / quadrature deviance for the SDs and
        correlations and the fixed effects, lme4's ``confint(method = "profile")``; see
        bigmixed.inference.glmm_profile), "boot" (parametric percentile bootstrap; nsim, seed)."""
        key = str(method).lower()
        if key == "profile":
            from ..inference.confint import _finish, _select, coverage_argument, parameter_table
            from ..inference.glmm_profile import profile_confint_glmm

            coverage = coverage_argument(coverage, level, "confint")
            table = _select(parameter_table(self), which)
            prof = profile_confint_glmm(self, level=coverage, which=list(table["term"]), **kwargs)
            prof = prof.set_index("term")
            return _finish(self, table, prof["lower"], prof["upper"], method="profile",
                           coverage=coverage, estimates="ML fit", description=prof.attrs["method"])
        if key not in ("wald", "boot", "bootstrap"):
            raise ValueError(f"method must be 'wald', 'profile' or 'boot' for a GLMM, not {method!r}")
        return super().confint(method=method, coverage=coverage, level=level, which=which, **kwargs)

    def summary(self, ddf: str | None = None, optimizer_log: bool = False) -> str:
        """glmer's summary (AIC, BIC, logLik, deviance, df.resid; scaled (Pearson)
        residuals; random effects; fixed effects with z and Pr(>|z|))."""
        if ddf is not None:
            raise ValueError("ddf does not apply to a GLMM: its fixed effects are tested by "
                             "Wald z tests (lme4's summary of a glmer fit)")
        from ..io.glmm_summary import format_glmm_summary

        return format_glmm_summary(self, optimizer_log)

    def __repr__(self) -> str:
        return (f"<GLMMResults {self.family.describe()} {self.formula!r}: -2 logLik "
                f"{self.objective:.4f}, nobs {self.nobs}, nAGQ {self.nAGQ}>")


def _vcov(model, params, k, p):
    """Var(beta): 2 H^{-1} restricted to beta, H the Hessian of the criterion in (theta, gamma)
    by differences (lme4's vcov with use.hessian = TRUE: central on the diagonal, one-sided
    corners off it; with the exact mode's analytic gradient, the analytic Hessian; for glmer's
    criterion with its analytic gradient, differences of that), mapped by beta = beta_ref +
    C gamma; for nAGQ = 0 (no beta in the criterion) C C' = W (R_X'R_X)^{-1} W'."""
    C = model._C
    if model.nAGQ == 0 or p == 0:
        return C @ C.T, "R_X (nAGQ = 0)"
    lower = np.concatenate((model.structure.lower_bounds, np.full(p, -np.inf)))
    free = ~((lower == 0) & (params == 0))
    from ..fitting.optimize import corner_difference_hessian, gradient_difference_hessian

    if model.has_analytic_gradient and model.pirls_mode == "exact" and free.all():
        H = model.hessian(params)  # (analytic: kernels.glmm_gradient.blockdiag_laplace_hessian)
    elif model.has_analytic_gradient and free.all():
        # glmer's criterion: differences of its analytic gradient (kernels/glmm_pirls_gradient)
        H = gradient_difference_hessian(model.lme4_gradient, params, rel_step=1e-3)
    else:
        H = corner_difference_hessian(model.objective, params, free, rel_step=1e-3)
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

