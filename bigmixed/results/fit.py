"""The results step: estimates at the optimum, tidy tables, and lme4-style summary.

formula -> design -> structure -> cross-products -> factor -> objective -> optimizer -> **results**.
"""
from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import pandas as pd

from ..fitting.record import OptimizerRecord


class LMMResults:
    """A fitted linear mixed model.

    lme4 names: theta, sigma, beta, vcov, objective (REML criterion or deviance), ranef(), coef(),
    variance_components, fitted / residuals; statsmodels names: params, bse, tvalues,
    cov_params(), llf, aic, bic, fittedvalues, resid, nobs.
    """

    def __init__(self, model, record: OptimizerRecord):
        self.model = model
        self.optimizer = record
        self.reml = model.reml
        self.formula = model.formula
        # the optimizer's vector: theta, then a residual structure's unconstrained parameters
        self.theta, self._residual_eta = (a.copy() for a in model.split_params(record.params))
        state = model.state(self.optimizer_params)
        self._state = state
        self.objective = float(state.criterion(self.reml))
        self.sigma = state.sigma(self.reml)
        d = model.design
        self.fixed_names = list(d.fixed_names)
        self.beta = state.beta()
        self.vcov = self.sigma ** 2 * state.unscaled_vcov()
        self.warnings: list = []
        self.timings: dict = {}

    # ---- sizes -------------------------------------------------------------------------
    @property
    def nobs(self) -> int:
        return self.model.n_obs

    @property
    def n_dropped(self) -> int:
        return self.model.design.n_dropped

    @property
    def n_groups(self) -> dict:
        return {f.group: f.n_levels for f in self.model.structure.factors}

    @property
    def converged(self) -> bool:
        return self.optimizer.converged

    @property
    def is_singular(self) -> bool:
        return self.model.structure.is_singular(self.theta)

    # ---- fixed effects -----------------------------------------------------------------
    @property
    def params(self) -> pd.Series:
        return pd.Series(self.beta, index=self.fixed_names, name="estimate")

    @property
    def bse(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov)), index=self.fixed_names, name="std_error")

    @property
    def tvalues(self) -> pd.Series:
        return pd.Series(self.beta / self.bse.to_numpy(), index=self.fixed_names, name="t_value")

    def cov_params(self) -> pd.DataFrame:
        return pd.DataFrame(self.vcov, index=self.fixed_names, columns=self.fixed_names)

    @property
    def corr_fixed(self) -> pd.DataFrame:
        """Correlation of the fixed-effect estimates (lme4's 'Correlation of Fixed Effects')."""
        s = np.sqrt(np.diag(self.vcov))
        return pd.DataFrame(self.vcov / np.outer(s, s), index=self.fixed_names, columns=self.fixed_names)

    @property
    def fixed_effects(self) -> pd.DataFrame:
        return pd.DataFrame({
            "term": self.fixed_names,
            "estimate": self.beta,
            "std_error": self.bse.to_numpy(),
            "t_value": self.tvalues.to_numpy(),
        })

    # ---- variance components -----------------------------------------------------------
    def term_covariances(self) -> list:
        """Per random-effects term (user order): (group, column names, covariance matrix)."""
        st = self.model.structure
        out = []
        for k, term in enumerate(st.terms):
            fi = st.term_factor[k]
            f = st.factors[fi]
            off = f.term_offsets[f.term_ids.index(k)]
            T = st.T_of(self.theta, fi)[off:off + term.n_columns, off:off + term.n_columns]
            out.append((term.group, list(term.column_names), self.sigma ** 2 * T @ T.T))
        return out

    @property
    def variance_components(self) -> pd.DataFrame:
        """Tidy table like as.data.frame(VarCorr(fit)): one row per variance and per covariance."""
        rows = []
        for group, names, cov in self.term_covariances():
            sd = np.sqrt(np.diag(cov))
            for i, name in enumerate(names):
                rows.append((group, name, None, cov[i, i], sd[i], np.nan))
            for j in range(len(names)):
                for i in range(j + 1, len(names)):
                    denom = sd[i] * sd[j]
                    corr = cov[i, j] / denom if denom > 0 else np.nan
                    rows.append((group, names[j], names[i], cov[i, j], np.nan, corr))
        rows.append(("Residual", None, None, self.sigma ** 2, self.sigma, np.nan))
        return pd.DataFrame(rows, columns=["group", "term1", "term2", "variance", "sd", "corr"])

    @property
    def optimizer_params(self) -> np.ndarray:
        """The optimizer's parameter vector: theta, then a residual structure's unconstrained
        parameters (what ``model.objective`` takes)."""
        return np.concatenate((self.theta, self._residual_eta))

    # ---- residual structure (bigmixed.residual) ----------------------------------------
    @property
    def residual_parameters(self) -> pd.Series:
        """Estimated parameters of the residual structure on nlme's scale: "Phi" (AR(1)),
        "Rho" (compound symmetry), "<column>=<level>" SD ratios to the reference stratum
        (VarIdent). Empty without a residual structure."""
        r = self.model.residual
        if r is None:
            return pd.Series([], dtype=float, name="estimate")
        return pd.Series(r.natural(self._residual_eta), index=r.names, name="estimate")

    def residual_intervals(self, level: float = 0.95) -> pd.DataFrame:
        """Approximate intervals of the residual structure's parameters on nlme's scale, as
        nlme's ``intervals()`` (see bigmixed.inference.residual_intervals)."""
        from ..inference.residual_intervals import residual_intervals

        return residual_intervals(self, level)

    def residual_sd(self) -> pd.Series:
        """Residual SD per VarIdent stratum (sigma times its ratio); sigma alone otherwise."""
        r = self.model.residual
        if r is None or r.variance is None:
            return pd.Series([self.sigma], index=["Residual"], name="sd")
        return pd.Series(self.sigma * r.stratum_sd_ratio(self._residual_eta),
                         index=pd.Index(r.stratum_levels, name=r.variance.by), name="sd")

    # ---- likelihood and information criteria ------------------------------------------
    @property
    def n_params(self) -> int:
        """lme4's df for logLik: length(theta) + p + 1 (sigma), plus the residual structure's
        parameters (nlme's count)."""
        return self.model.n_params + len(self.beta) + 1

    @property
    def llf(self) -> float:
        return -0.5 * self.objective

    @property
    def aic(self) -> float:
        return self.objective + 2 * self.n_params

    @property
    def bic(self) -> float:
        return self.objective + self.n_params * math.log(self.nobs)

    @property
    def deviance(self) -> float:
        """ML deviance at the fitted theta (for REML fits: -2 log-likelihood at the REML estimates)."""
        return self.model.state(self.optimizer_params).criterion(False) if self.reml else self.objective

    # ---- conditional modes -------------------------------------------------------------
    @cached_property
    def _modes(self):
        """Conditional modes b per factor (n_levels, P): cheap, no inverse needed."""
        st = self.model.structure
        self.model.load_residual(self._residual_eta)
        us, _ = self.model.system.modes(self.theta, self._state.beta_work(), condvar=False)
        return [us[fi] @ st.T_of(self.theta, fi).T for fi in range(len(st.factors))]

    @cached_property
    def _condvar(self):
        """Var(b_g | y) per factor (n_levels, P, P): needs the selected inverse on crossed designs."""
        st = self.model.structure
        self.model.load_residual(self._residual_eta)
        _, cinvs = self.model.system.modes(self.theta, self._state.beta_work(), condvar=True)
        out = []
        for fi in range(len(st.factors)):
            T = st.T_of(self.theta, fi)
            out.append(self.sigma ** 2 * np.einsum("ij,ljk,mk->lim", T, cinvs[fi], T))
        return out

    def ranef(self, condvar: bool = True) -> dict:
        """Conditional modes per grouping factor: {group: DataFrame indexed by level}.

        With condvar, columns ``<name>_sd`` hold the conditional SDs (sqrt of lme4's postVar
        diagonal); the full conditional covariances are in ``conditional_variances()``.
        """
        b = self._modes
        out = {}
        for fi, f in enumerate(self.model.structure.factors):
            df = pd.DataFrame(b[fi], index=pd.Index(f.levels, name=f.group), columns=f.column_names)
            if condvar:
                cv = self._condvar
                sds = np.sqrt(np.maximum(np.diagonal(cv[fi], axis1=1, axis2=2), 0.0))
                for i, name in enumerate(f.column_names):
                    df[f"{name}_sd"] = sds[:, i]
            out[f.group] = df
        return out

    def conditional_variances(self) -> dict:
        """{group: (n_levels, P, P) array}: Var(b_g | y) at the estimates (lme4's condVar)."""
        cv = self._condvar
        return {f.group: cv[fi] for fi, f in enumerate(self.model.structure.factors)}

    def coef(self) -> dict:
        """Fixed plus random effects per level (lme4's coef()): {group: DataFrame}."""
        b = self._modes
        out = {}
        for fi, f in enumerate(self.model.structure.factors):
            df = pd.DataFrame(np.tile(self.beta, (f.n_levels, 1)), index=pd.Index(f.levels, name=f.group),
                              columns=self.fixed_names)
            for i, name in enumerate(f.column_names):
                if name in df.columns:
                    df[name] = df[name].to_numpy() + b[fi][:, i]
                else:
                    df[name] = b[fi][:, i]
            out[f.group] = df
        return out

    # ---- fitted values and residuals (one pass over the rows, on request) ---------------
    @cached_property
    def fitted_marginal(self) -> np.ndarray:
        return self.model.design.X @ self.beta

    @cached_property
    def fittedvalues(self) -> np.ndarray:
        """Conditional fitted values X beta + Z b."""
        b = self._modes
        fit = self.fitted_marginal.copy()
        for fi, f in enumerate(self.model.structure.factors):
            if f.unit_z:
                fit += b[fi][f.codes, 0]
            else:
                fit += np.einsum("ij,ij->i", f.Z, b[fi][f.codes])
        return fit

    @property
    def fitted(self) -> np.ndarray:
        return self.fittedvalues

    @property
    def resid(self) -> np.ndarray:
        """Conditional residuals y - X beta - Z b."""
        return self.model.design.y - self.fittedvalues

    @property
    def resid_marginal(self) -> np.ndarray:
        return self.model.design.y - self.fitted_marginal

    @property
    def resid_scaled(self) -> np.ndarray:
        """Conditional residuals divided by sigma (lme4's residuals(fit, scaled = TRUE))."""
        return self.resid / self.sigma

    # ---- inference, prediction, simulation (bigmixed/inference.py, predict.py, compare.py) --
    def fixed_effects_test(self, ddf: str = "satterthwaite", level=None) -> pd.DataFrame:
        """t tests per coefficient with denominator df: "satterthwaite", "between-within" or
        "asymptotic" (see bigmixed.inference)."""
        from ..inference.satterthwaite import fixed_effects_test

        return fixed_effects_test(self, ddf=ddf, level=level)

    def anova_terms(self, type=3, ddf: str = "satterthwaite") -> pd.DataFrame:
        """F tests per fixed-effects term (lmerTest's anova; Type III by default)."""
        from ..inference.terms import anova_terms

        return anova_terms(self, type=type, ddf=ddf)

    def confint(self, method: str = "wald", level: float = 0.95, **kwargs) -> pd.DataFrame:
        """Confidence intervals: "wald" (fixed effects, normal), "satterthwaite" / "between-within"
        (fixed effects, t), "profile" (likelihood profile) or "boot" (parametric bootstrap)."""
        from ..inference.confint import confint

        return confint(self, method=method, level=level, **kwargs)

    def icc(self, interval: str | None = None, **kwargs) -> pd.DataFrame:
        """Intraclass correlation per grouping factor (random-intercept models); with
        interval="bootstrap" (nsim, seed, level), percentile limits from a parametric bootstrap."""
        from ..inference.icc import icc

        return icc(self, interval, **kwargs)

    def check_convergence(self, **kwargs):
        """lme4's checkConv on demand: gradient and Hessian of the objective at theta."""
        from ..inference.convergence import check_convergence

        return check_convergence(self, **kwargs)

    def predict(self, newdata=None, level: str = "conditional", unseen: str = "population") -> np.ndarray:
        """Predicted means (see bigmixed.predict.predict)."""
        from .predict import predict

        return predict(self, newdata, level=level, unseen=unseen)

    def predict_interval(self, newdata=None, **kwargs) -> pd.DataFrame:
        """Predictions with SEs and confidence / prediction intervals (bigmixed.predict)."""
        from .predict import predict_interval

        return predict_interval(self, newdata, **kwargs)

    def simulate(self, nsim: int = 1, seed=None, **kwargs) -> np.ndarray:
        """(n, nsim) responses simulated from the fitted model."""
        from ..inference.simulate import simulate

        return simulate(self, nsim, seed, **kwargs)

    def bootstrap(self, nsim: int = 100, seed=None, func=None, **kwargs):
        """Parametric bootstrap (simulate + refit); `.ci(level)` gives percentile intervals."""
        from ..inference.simulate import bootstrap

        return bootstrap(self, nsim, seed, func, **kwargs)

    def anova(self, *others, **kwargs) -> pd.DataFrame:
        """With other fits: likelihood-ratio tests (bigmixed.anova); alone: F tests per term."""
        if others:
            from ..inference.compare import anova

            return anova(self, *others, **kwargs)
        return self.anova_terms(**kwargs)

    # ---- saving and tidy outputs (bigmixed/io.py, bigmixed/tidy.py) ---------------------
    def save(self, path, *, condvar: bool = True) -> str:
        """Write the fit to one portable file (no pickle); read it back with ``bm.load(path)``.
        See bigmixed.io for the format."""
        from ..io.modelfile import save

        return save(self, path, condvar=condvar)

    def to_dict(self, *, include_versions: bool = True) -> dict:
        """The versioned JSON-able document of the fit (what ``bigmixed fit`` writes)."""
        from ..io.tidy import fit_document

        return fit_document(self, include_versions=include_versions)

    # ---- diagnostic plots (bigmixed/plots.py; needs matplotlib: pip install bigmixed[plots]) --
    def plot_caterpillar(self, path=None, **kwargs):
        """BLUPs with conditional-SD intervals per grouping factor and column; returns the Figure."""
        from ..io.plots import plot_caterpillar

        return plot_caterpillar(self, path, **kwargs)

    def plot_residuals(self, path=None, **kwargs):
        """Residuals against fitted values; returns the Figure."""
        from ..io.plots import plot_residuals

        return plot_residuals(self, path, **kwargs)

    def plot_qq(self, path=None, **kwargs):
        """Normal QQ plot of the (scaled) residuals; returns the Figure."""
        from ..io.plots import plot_qq

        return plot_qq(self, path, **kwargs)

    def plot_qq_ranef(self, path=None, **kwargs):
        """Normal QQ plots of the BLUPs; returns the Figure."""
        from ..io.plots import plot_qq_ranef

        return plot_qq_ranef(self, path, **kwargs)

    def plot_profile(self, path=None, **kwargs):
        """Likelihood profiles (zeta) of the variance parameters, as lme4's
        xyplot(profile(fit)); returns the Figure."""
        from ..io.plots import plot_profile

        return plot_profile(self, path, **kwargs)

    # ---- printing ----------------------------------------------------------------------
    def summary(self, ddf: str | None = None, optimizer_log: bool = False) -> str:
        """lme4's summary; with ddf ("satterthwaite", "between-within") lmerTest's coefficient
        table with df and p-values; with optimizer_log, the optimizer's stages (evaluations,
        objective, seconds) and tolerances."""
        if ddf is not None:
            from ..inference.formatting import summary_with_df

            return summary_with_df(self, ddf, optimizer_log)
        from ..io.summary import format_summary

        return format_summary(self, optimizer_log)

    def __repr__(self) -> str:
        kind = "REML" if self.reml else "ML"
        return f"<LMMResults {kind} {self.formula!r}: objective {self.objective:.4f}, nobs {self.nobs}>"
