"""The results step: a fit is data -- estimates at the optimum, the fitted specification, where
its rows are, and (for refit-based inference) the model that made it.

formula -> design -> structure -> cross-products -> factor -> objective -> optimizer -> **results**.

One class serves fits of in-memory data, of Dask data and fits loaded from a file; what
differs is the row source (bigmixed.results.rows) and whether a live model is attached. A fit
is immutable: its attributes cannot be reassigned and its arrays are read-only; quantities
derived from it on request (conditional variances, fitted values, a Satterthwaite state) are
computed once and kept in a memo the class owns.
"""
from __future__ import annotations

import math
import threading
from types import MappingProxyType

import numpy as np
import pandas as pd

from .base import FittedModel


def _frozen(a, copy: bool = True) -> np.ndarray:
    """A read-only copy of a float64 array (copy=False: the array itself, made read-only, for
    one made for the result and referenced nowhere else)."""
    out = np.array(a, dtype=np.float64, copy=True) if copy else np.asarray(a, dtype=np.float64)
    out.flags.writeable = False
    return out


class LMMResults(FittedModel):
    """A fitted linear mixed model.

    lme4 names: theta, sigma, beta, vcov, objective (REML criterion or deviance), VarCorr(),
    fixef(), ranef(), coef(), refit_ml() (refitML), variance_components, fitted / residuals;
    statsmodels names: params, bse, tvalues, pvalues (Satterthwaite), conf_int(alpha),
    cov_params(), llf, aic, bic, fittedvalues, resid, nobs.

    Attributes (read-only)
    ----------------------
    theta, residual_eta, beta, vcov, sigma, objective, reml, formula, fixed_names,
    conditional_modes (per factor, lme4's b), optimizer (OptimizerRecord), warnings,
    timings, design (the encodings predict uses; rows too for in-memory data), structure,
    residual (the residual structure's parameter mapping, or None), solver, rows (where the
    rows are: bigmixed.results.rows), model (the LinearMixedModel that made the fit, for
    refit-based inference; None for a loaded fit).
    """

    _fields = ("_model", "rows", "design", "structure", "residual", "solver", "reml", "formula",
               "_fixed_names", "theta", "residual_eta", "beta", "vcov", "sigma", "objective",
               "_deviance", "conditional_modes", "_condvar_saved", "_beta_work", "n_obs",
               "n_dropped_rows", "optimizer", "_warnings", "timings")

    def __init__(self, **fields):
        missing = set(self._fields) - set(fields)
        if missing or set(fields) - set(self._fields):
            raise TypeError(f"LMMResults fields: missing {sorted(missing)}, "
                            f"unknown {sorted(set(fields) - set(self._fields))}")
        for name in ("theta", "residual_eta", "beta", "vcov"):
            fields[name] = _frozen(fields[name])
        fields["conditional_modes"] = tuple(_frozen(b) for b in fields["conditional_modes"])
        if fields["_condvar_saved"] is not None:
            fields["_condvar_saved"] = tuple(_frozen(c) for c in fields["_condvar_saved"])
        fields["_warnings"] = tuple(fields["_warnings"])
        fields["timings"] = MappingProxyType(dict(fields["timings"]))
        fields["_fixed_names"] = tuple(fields["_fixed_names"])
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_memo", {})
        object.__setattr__(self, "_memo_lock", threading.RLock())

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_model(cls, model, record, *, warnings=(), timings=None) -> "LMMResults":
        """The fit of `model` at the optimizer's end point `record.params`."""
        import time

        from ..spec.residual import ResidualParameters

        t0 = time.perf_counter()
        theta, eta = model.split_params(record.params)
        state = model.state(record.params)
        reml = model.reml
        objective = float(state.criterion(reml))
        sigma = state.sigma(reml)
        beta_work = state.beta_work()
        # conditional modes b per factor (n_levels, P): cheap, no inverse needed
        st = model.structure
        model.load_residual(eta)
        us, _ = model.system.modes(theta, beta_work, condvar=False)
        modes = [us[fi] @ st.T_of(theta, fi).T for fi in range(len(st.factors))]
        residual = (None if model.residual is None
                    else ResidualParameters.from_meta(model.residual.to_meta()))
        timings = dict(timings or {}, finalize=time.perf_counter() - t0)
        return cls(
            _model=model, rows=model.rows, design=model.design, structure=st, residual=residual,
            solver=model.solver, reml=reml, formula=model.formula,
            _fixed_names=model.design.fixed_names, theta=theta, residual_eta=eta,
            beta=state.beta(), vcov=sigma ** 2 * state.unscaled_vcov(), sigma=sigma,
            objective=objective,
            # for REML fits: -2 log-likelihood at the REML estimates
            _deviance=float(state.criterion(False)) if reml else objective,
            conditional_modes=modes, _condvar_saved=None, _beta_work=beta_work,
            n_obs=model.n_obs, n_dropped_rows=model.design.n_dropped, optimizer=record,
            _warnings=warnings, timings=timings,
        )

    def __setattr__(self, name, value):
        raise AttributeError(
            f"a fit is immutable: {name!r} cannot be set; refit the model for other estimates "
            "(fit.model.refit(...)) or evaluate it elsewhere (fit.model.results_at(params))")

    def __delattr__(self, name):
        raise AttributeError(f"a fit is immutable: {name!r} cannot be deleted")

    def derived(self, key: str, compute):
        """A quantity derived from this (immutable) fit, computed once: `compute()` the first
        time, the same object afterwards (e.g. the Satterthwaite state, a Dask pass)."""
        memo = self._memo
        if key not in memo:
            with self._memo_lock:
                if key not in memo:
                    memo[key] = compute()
        return memo[key]

    @property
    def model(self):
        """The LinearMixedModel that made this fit (for refits: ``fit.model.refit(...)``)."""
        return self._require_model("its model")

    def _require_model(self, what: str):
        if self._model is None:
            raise AttributeError(
                f"a loaded model cannot give {what}: it keeps the estimates and the encodings, "
                "not the data or the cross-products; refit with bm.lmm(formula, data) for this")
        return self._model

    @property
    def fixed_names(self) -> list:
        """Names of the fixed-effects coefficients (R's model.matrix names)."""
        return list(self._fixed_names)

    @property
    def warnings(self) -> list:
        """Typed warnings of the design and the fit (RankDeficiencyWarning, SingularFitWarning,
        ConvergenceWarning, ...), as raised."""
        return list(self._warnings)

    # ---- sizes -------------------------------------------------------------------------
    @property
    def nobs(self) -> int:
        return int(self.n_obs)

    @property
    def n_dropped(self) -> int:
        return int(self.n_dropped_rows)

    @property
    def n_groups(self) -> dict:
        return {f.group: f.n_levels for f in self.structure.factors}

    @property
    def converged(self) -> bool:
        return self.optimizer.converged

    @property
    def is_singular(self) -> bool:
        return self.structure.is_singular(self.theta)

    # ---- fixed effects -----------------------------------------------------------------
    @property
    def params(self) -> pd.Series:
        return pd.Series(self.beta, index=list(self.fixed_names), name="estimate")

    @property
    def bse(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov)), index=list(self.fixed_names), name="std_error")

    @property
    def tvalues(self) -> pd.Series:
        return pd.Series(self.beta / self.bse.to_numpy(), index=list(self.fixed_names), name="t_value")

    def cov_params(self) -> pd.DataFrame:
        names = list(self.fixed_names)
        return pd.DataFrame(np.array(self.vcov), index=names, columns=names)

    @property
    def corr_fixed(self) -> pd.DataFrame:
        """Correlation of the fixed-effect estimates (lme4's 'Correlation of Fixed Effects')."""
        s = np.sqrt(np.diag(self.vcov))
        names = list(self.fixed_names)
        return pd.DataFrame(self.vcov / np.outer(s, s), index=names, columns=names)

    @property
    def fixed_effects(self) -> pd.DataFrame:
        return pd.DataFrame({
            "term": list(self.fixed_names),
            "estimate": np.array(self.beta),
            "std_error": self.bse.to_numpy(),
            "t_value": self.tvalues.to_numpy(),
        })

    # ---- variance components -----------------------------------------------------------
    def term_covariances(self) -> list:
        """Per random-effects term (user order): (group, column names, covariance matrix)."""
        st = self.structure
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
        return np.concatenate((self.theta, self.residual_eta))

    # ---- residual structure (bigmixed.spec.residual) -----------------------------------
    @property
    def residual_parameters(self) -> pd.Series:
        """Estimated parameters of the residual structure on nlme's scale: "Phi" (AR(1)),
        "Rho" (compound symmetry), "<column>=<level>" SD ratios to the reference stratum
        (VarIdent). Empty without a residual structure."""
        r = self.residual
        if r is None:
            return pd.Series([], dtype=float, name="estimate")
        return pd.Series(r.natural(self.residual_eta), index=r.names, name="estimate")

    def residual_intervals(self, level: float = 0.95) -> pd.DataFrame:
        """Approximate intervals of the residual structure's parameters on nlme's scale, as
        nlme's ``intervals()`` (see bigmixed.inference.residual_intervals)."""
        from ..inference.residual_intervals import residual_intervals

        return residual_intervals(self, level)

    def residual_sd(self) -> pd.Series:
        """Residual SD per VarIdent stratum (sigma times its ratio); sigma alone otherwise."""
        r = self.residual
        if r is None or r.variance is None:
            return pd.Series([self.sigma], index=["Residual"], name="sd")
        return pd.Series(self.sigma * r.stratum_sd_ratio(self.residual_eta),
                         index=pd.Index(r.stratum_levels, name=r.variance.by), name="sd")

    # ---- likelihood and information criteria ------------------------------------------
    @property
    def n_optimizer_params(self) -> int:
        """Length of the optimizer's vector: theta, then the residual structure's parameters."""
        return self.structure.n_theta + (0 if self.residual is None else self.residual.n_params)

    @property
    def n_params(self) -> int:
        """lme4's df for logLik: length(theta) + p + 1 (sigma), plus the residual structure's
        parameters (nlme's count)."""
        return self.n_optimizer_params + len(self.beta) + 1

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
        if self._deviance is None:
            raise AttributeError("the deviance was not saved")
        return self._deviance

    # ---- conditional modes -------------------------------------------------------------
    def _condvar(self) -> tuple:
        """Var(b_g | y) per factor (n_levels, P, P): needs the selected inverse on crossed designs."""
        if self._condvar_saved is not None:
            return self._condvar_saved
        if self._model is None:
            raise AttributeError("the conditional covariances of the BLUPs were not saved "
                                 "(save(..., condvar=True))")
        return self.derived("condvar", self._compute_condvar)

    def _compute_condvar(self) -> tuple:
        model, st = self.model, self.structure
        model.load_residual(self.residual_eta)
        _, cinvs = model.system.modes(self.theta, self._beta_work, condvar=True)
        out = []
        for fi in range(len(st.factors)):
            T = st.T_of(self.theta, fi)
            out.append(_frozen(self.sigma ** 2 * np.einsum("ij,ljk,mk->lim", T, cinvs[fi], T)))
        return tuple(out)

    def ranef(self, condvar: bool = True) -> dict:
        """Conditional modes per grouping factor: {group: DataFrame indexed by level}.

        With condvar, columns ``<name>_sd`` hold the conditional SDs (sqrt of lme4's postVar
        diagonal); the full conditional covariances are in ``conditional_variances()``.
        """
        out = {}
        for fi, f in enumerate(self.structure.factors):
            df = pd.DataFrame(np.array(self.conditional_modes[fi]),
                              index=pd.Index(f.levels, name=f.group), columns=f.column_names)
            if condvar:
                cv = self._condvar()
                sds = np.sqrt(np.maximum(np.diagonal(cv[fi], axis1=1, axis2=2), 0.0))
                for i, name in enumerate(f.column_names):
                    df[f"{name}_sd"] = sds[:, i]
            out[f.group] = df
        return out

    def conditional_variances(self) -> dict:
        """{group: (n_levels, P, P) array}: Var(b_g | y) at the estimates (lme4's condVar)."""
        cv = self._condvar()
        return {f.group: cv[fi] for fi, f in enumerate(self.structure.factors)}

    def coef(self) -> dict:
        """Fixed plus random effects per level (lme4's coef()): {group: DataFrame}."""
        out = {}
        for fi, f in enumerate(self.structure.factors):
            b = self.conditional_modes[fi]
            df = pd.DataFrame(np.tile(self.beta, (f.n_levels, 1)), index=pd.Index(f.levels, name=f.group),
                              columns=list(self.fixed_names))
            for i, name in enumerate(f.column_names):
                if name in df.columns:
                    df[name] = df[name].to_numpy() + b[:, i]
                else:
                    df[name] = b[:, i]
            out[f.group] = df
        return out

    # ---- fitted values and residuals (one pass over the rows, on request) ---------------
    @property
    def fitted_marginal(self) -> np.ndarray:
        return self.derived("fitted_marginal", lambda: _frozen(self.rows.fitted(self, False)))

    @property
    def fittedvalues(self) -> np.ndarray:
        """Conditional fitted values X beta + Z b."""
        return self.derived("fitted", lambda: _frozen(self.rows.fitted(self, True)))

    @property
    def fitted(self) -> np.ndarray:
        return self.fittedvalues

    @property
    def resid(self) -> np.ndarray:
        """Conditional residuals y - X beta - Z b."""
        return self.rows.y - self.fittedvalues

    @property
    def resid_marginal(self) -> np.ndarray:
        return self.rows.y - self.fitted_marginal

    @property
    def resid_scaled(self) -> np.ndarray:
        """Conditional residuals divided by sigma (lme4's residuals(fit, scaled = TRUE))."""
        return self.resid / self.sigma

    def resid_quantiles(self) -> np.ndarray:
        """Min, quartiles and max of the scaled residuals (the summary's): from the rows in
        memory, one pass over Dask partitions (approximate quartiles), or as saved."""
        return self.derived("resid_quantiles", lambda: self.rows.scaled_residual_quantiles(self))

    # ---- fits from Dask data: fitted values per partition, never collected -------------
    def fitted_dask(self, level: str = "conditional"):
        """Fitted values as a dask Series (X beta + Z b; level="population": X beta)."""
        if level not in ("conditional", "population"):
            raise ValueError("level must be 'conditional' or 'population'")
        col = "fitted" if level == "conditional" else "fitted_marginal"
        return self.rows.dask_frame(self, "all")[col].rename("fitted")

    def resid_dask(self, level: str = "conditional"):
        """Residuals y - fitted as a dask Series."""
        if level not in ("conditional", "population"):
            raise ValueError("level must be 'conditional' or 'population'")
        col = "resid" if level == "conditional" else "resid_marginal"
        return self.rows.dask_frame(self, "all")[col].rename("resid")

    def fitted_frame_dask(self):
        """A dask DataFrame with columns fitted, resid, fitted_marginal, resid_marginal."""
        return self.rows.dask_frame(self, "all")

    def write_fitted(self, path, **to_parquet_kwargs):
        """Write fitted values and residuals (columns fitted, resid) per partition to Parquet."""
        return self.rows.dask_frame(self, "fitted_resid").to_parquet(path, **to_parquet_kwargs)

    # ---- inference, prediction, simulation (bigmixed/inference, results/predict.py) --------
    def fixed_effects_test(self, ddf: str = "satterthwaite", level=None) -> pd.DataFrame:
        """t tests per coefficient with denominator df: "satterthwaite", "between-within" or
        "asymptotic" (see bigmixed.inference)."""
        from ..inference.satterthwaite import fixed_effects_test

        return fixed_effects_test(self, ddf=ddf, level=level)

    def anova_terms(self, type=3, ddf: str = "satterthwaite") -> pd.DataFrame:
        """F tests per fixed-effects term (lmerTest's anova; Type III by default)."""
        from ..inference.terms import anova_terms

        return anova_terms(self, type=type, ddf=ddf)

    def confint(self, method: str = "wald", coverage: float = 0.95, *, level=None,
                **kwargs) -> pd.DataFrame:
        """Confidence intervals: "wald" (fixed effects, normal), "satterthwaite" / "between-within"
        (fixed effects, t), "profile" (likelihood profile) or "boot" (parametric bootstrap).
        One table for every method: all parameters in lme4's order (bigmixed.inference.confint);
        `coverage` as in predict_interval (`level` is its deprecated alias)."""
        from ..inference.confint import confint

        return confint(self, method=method, coverage=coverage, level=level, **kwargs)

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """statsmodels' ``conf_int(alpha)``: Wald intervals of the fixed effects (normal
        quantiles, as statsmodels' MixedLM), a DataFrame indexed by name with columns 0, 1."""
        from ..inference.confint import confint

        ci = confint(self, method="wald", coverage=1 - alpha, which="fixed")
        return pd.DataFrame({0: ci["lower"].to_numpy(), 1: ci["upper"].to_numpy()},
                            index=list(ci["term"]))

    @property
    def pvalues(self) -> pd.Series:
        """statsmodels' name: two-sided p-values of the fixed effects' t tests with
        Satterthwaite's df (lmerTest's summary); ``fixed_effects_test(ddf=...)`` for others."""
        tab = self.fixed_effects_test(ddf="satterthwaite")
        return pd.Series(tab["p_value"].to_numpy(), index=list(self.fixed_names), name="p_value")

    # ---- lme4's names ------------------------------------------------------------------
    def VarCorr(self):
        """lme4's ``VarCorr(fit)``: prints as lme4's ``print(VarCorr(fit))``; ``vc[group]`` is a
        term's covariance matrix, ``vc.as_data_frame()`` is ``as.data.frame(VarCorr(fit))``
        (bigmixed.io.summary.VarCorr)."""
        from ..io.summary import VarCorr

        return VarCorr(self)

    def fixef(self) -> pd.Series:
        """lme4's ``fixef(fit)``: the fixed-effects estimates named by coefficient."""
        return pd.Series(np.array(self.beta), index=list(self.fixed_names), name="estimate")

    def refit_ml(self) -> "LMMResults":
        """lme4's ``refitML(fit)``: the model refitted by maximum likelihood, started at this
        fit's theta (``fit.model.refit(reml=False)``); an ML fit is returned as it is."""
        from ..inference.compare import refit_ml

        return refit_ml(self)

    def icc(self, interval: str | None = None, **kwargs) -> pd.DataFrame:
        """Intraclass correlation per grouping factor; random slopes: conditional on the
        covariates given by ``at={"time": 0}`` (bigmixed.inference.icc); with
        interval="bootstrap" (nsim, seed, coverage), percentile limits from a parametric bootstrap."""
        from ..inference.icc import icc

        return icc(self, interval, **kwargs)

    def check_convergence(self, **kwargs):
        """lme4's checkConv on demand: gradient and Hessian of the objective at theta."""
        from ..inference.convergence import check_convergence

        return check_convergence(self, **kwargs)

    def predict(self, newdata=None, level: str = "conditional", unseen: str = "population") -> np.ndarray:
        """Predicted means (see bigmixed.results.predict.predict)."""
        from .predict import predict

        return predict(self, newdata, level=level, unseen=unseen)

    def predict_interval(self, newdata=None, **kwargs) -> pd.DataFrame:
        """Predictions with SEs and confidence / prediction intervals (bigmixed.results.predict)."""
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

    def update(self, formula: str | None = None, *, reml: bool | None = None, data=None,
               **fit_options):
        """lme4's update(): the fit of a changed model -- formula (". ~ . - x", R's '.'),
        reml (through model.refit), data (see bigmixed.inference.update)."""
        from ..inference.update import update

        return update(self, formula, reml=reml, data=data, **fit_options)

    def drop1(self, test: str = "Chisq", scope=None) -> pd.DataFrame:
        """lme4's drop1(fit, test = "Chisq"): an ML likelihood-ratio test per droppable
        fixed term, or per term of `scope` (bigmixed.inference.drop)."""
        from ..inference.drop import drop1

        return drop1(self, test=test, scope=scope)

    def ranova(self, reduce_terms: bool = True) -> pd.DataFrame:
        """lmerTest's ranova(): a likelihood-ratio test per random term, with lmerTest's
        chi-square p-value and the boundary mixture (bigmixed.inference.drop)."""
        from ..inference.drop import ranova

        return ranova(self, reduce_terms=reduce_terms)

    # ---- saving and tidy outputs (bigmixed/io) ------------------------------------------
    def save(self, path, *, condvar: bool = True) -> str:
        """Write the fit to one portable file (no pickle); read it back with ``bm.load(path)``.
        See bigmixed.io.modelfile for the format."""
        from ..io.modelfile import save

        return save(self, path, condvar=condvar)

    def to_dict(self, *, include_versions: bool = True) -> dict:
        """The versioned JSON-able document of the fit (what ``bigmixed fit`` writes)."""
        from ..io.tidy import fit_document

        return fit_document(self, include_versions=include_versions)

    # ---- diagnostic plots (bigmixed/io/plots.py; needs matplotlib: pip install bigmixed[plots]) --
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
        where = {"memory": "", "saved": ", loaded", "dask": ", from Dask data"}.get(self.rows.kind, "")
        return f"<LMMResults {kind} {self.formula!r}: objective {self.objective:.4f}, nobs {self.nobs}{where}>"
