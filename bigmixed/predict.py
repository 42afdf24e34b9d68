"""Predictions, prediction intervals, simulation and parametric bootstrap from a fitted model.

New data are encoded exactly as the fitting data (``design_matrices_for_newdata``: same factor
levels, contrasts and stateful transforms); grouping levels not seen in the fit are handled by
`unseen`.

Variances of a prediction x'beta + z'b at row i (normal approximation, as merTools'
predictInterval but analytic instead of simulated)::

    fixed part        x' Var(beta) x
    seen level g      z' Var(b_g | y) z            (conditional variance, lme4's condVar)
    unseen level      z' G z                        (G = sigma^2 T T', the random-effects covariance)
    residual          sigma^2                       (prediction intervals only)

As in merTools, the conditional covariances between beta-hat and b-hat and between the random
effects of different grouping factors (crossed designs) are neglected: each grouping factor
contributes its own z'Var(b_g | y)z. With one grouping factor and population-level predictions
the variances are exact (given the variance parameters).
"""
from __future__ import annotations

import dataclasses
import warnings as _warnings

import numpy as np
import pandas as pd

from .warnings import BigmixedWarning

LEVELS = ("conditional", "population")
UNSEEN = ("population", "nan", "error")


def _check(level, unseen):
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    if unseen not in UNSEEN:
        raise ValueError(f"unseen must be one of {UNSEEN}, not {unseen!r}")


def _factor_blocks(fit, newdata):
    """X_new and, per grouping factor (structure order), (codes_new, Z_new with the factor's
    columns in the factor's order)."""
    from .design import design_matrices_for_newdata

    X_new, per_term = design_matrices_for_newdata(fit.model.design, newdata)
    st = fit.model.structure
    blocks = []
    for f in st.factors:
        codes = None
        parts = []
        for k in f.term_ids:  # in the factor's column order
            c, Z = per_term[k]
            codes = c if codes is None else codes
            parts.append(Z)
        Z = parts[0] if len(parts) == 1 else np.hstack(parts)
        blocks.append((np.asarray(codes, dtype=np.int64), np.ascontiguousarray(Z, dtype=np.float64)))
    return X_new, blocks


def _unseen_error(fit, newdata, fi, rows):
    f = fit.model.structure.factors[fi]
    term = next(t for t in fit.model.structure.terms if t.group == f.group)
    cols = list(term.group_vars)
    shown = newdata.iloc[rows[:5]][cols].astype(str).agg(":".join, axis=1).tolist()
    raise ValueError(
        f"{len(rows)} row(s) of the new data have a level of {f.group!r} not seen in the fit or "
        f"missing (e.g. {', '.join(shown)}); use unseen='population' (random effect 0, lme4's "
        "allow.new.levels = TRUE) or unseen='nan'")


def predict(fit, newdata=None, *, level: str = "conditional", unseen: str = "population") -> np.ndarray:
    """Predicted means for new data (or the fitting rows when newdata is None).

    level="conditional": X beta + Z b (the fitted levels' conditional modes); "population":
    X beta. unseen: what a level not seen in the fit (or a missing grouping value) gets with
    level="conditional": "population" (random effect 0, as lme4's allow.new.levels = TRUE),
    "nan", or "error". Rows with a missing covariate give NaN (R's na.pass).
    """
    _check(level, unseen)
    if newdata is None:
        return np.array(fit.fittedvalues if level == "conditional" else fit.fitted_marginal)
    X_new, blocks = _factor_blocks(fit, newdata)
    mu = X_new @ fit.beta
    if level == "population":
        return mu
    b = fit._modes
    for fi, (codes, Z) in enumerate(blocks):
        seen = codes >= 0
        if not seen.all():
            if unseen == "error":
                _unseen_error(fit, newdata, fi, np.flatnonzero(~seen))
            if unseen == "nan":
                mu[~seen] = np.nan
        rows = np.flatnonzero(seen)
        mu[rows] += np.einsum("ij,ij->i", Z[rows], b[fi][codes[rows]])
    return mu


def predict_interval(fit, newdata=None, *, level: str = "conditional", unseen: str = "population",
                     interval: str = "prediction", coverage: float = 0.95) -> pd.DataFrame:
    """Predictions with standard errors and normal intervals.

    interval="confidence": uncertainty of the predicted mean (population level: sqrt(x'Var(beta)x),
    the standard error of X beta-hat; conditional level: plus z'Var(b_g|y)z for seen levels and
    z'Gz for unseen ones). interval="prediction": a new observation, i.e. plus sigma^2, and at the
    population level plus z'Gz for every grouping factor (a new observation in a new group).

    Returns a DataFrame with columns fit, se, lower, upper (and se_fixed, var_random, var_residual).
    """
    from scipy import stats

    _check(level, unseen)
    if interval not in ("prediction", "confidence"):
        raise ValueError(f"interval must be 'prediction' or 'confidence', not {interval!r}")
    if not 0 < coverage < 1:
        raise ValueError("coverage must be in (0, 1)")
    st = fit.model.structure
    if newdata is None:
        d = fit.model.design
        X_new = d.X
        blocks = [(np.asarray(f.codes, dtype=np.int64),
                   np.ones((len(f.codes), 1)) if f.unit_z else f.Z) for f in st.factors]
        index = d.row_index
    else:
        X_new, blocks = _factor_blocks(fit, newdata)
        index = newdata.index
    mu = predict(fit, newdata, level=level, unseen=unseen)
    V = np.asarray(fit.vcov)
    var_fixed = np.einsum("ij,jk,ik->i", X_new, V, X_new)
    var_re = np.zeros(len(mu))
    cv = fit._condvar if level == "conditional" else None
    for fi, (codes, Z) in enumerate(blocks):
        T = st.T_of(fit.theta, fi)
        G = fit.sigma ** 2 * T @ T.T
        zGz = np.einsum("ij,jk,ik->i", Z, G, Z)
        if level == "population":
            if interval == "prediction":
                var_re += zGz
            continue
        seen = codes >= 0
        rows = np.flatnonzero(seen)
        var_re[rows] += np.einsum("ij,ijk,ik->i", Z[rows], cv[fi][codes[rows]], Z[rows])
        var_re[~seen] += zGz[~seen]
    var_res = (fit.sigma ** 2 * _residual_ratio_sq(fit, newdata, len(mu))
               if interval == "prediction" else np.zeros(len(mu)))
    se = np.sqrt(var_fixed + var_re + var_res)
    z = stats.norm.ppf(0.5 + coverage / 2)
    out = pd.DataFrame({"fit": mu, "se": se, "lower": mu - z * se, "upper": mu + z * se,
                        "se_fixed": np.sqrt(var_fixed), "var_random": var_re,
                        "var_residual": var_res}, index=index)
    out.attrs.update(level=level, interval=interval, coverage=coverage)
    return out


def _residual_ratio_sq(fit, newdata, n) -> np.ndarray:
    """Residual variance of each row over sigma^2: 1, or the squared VarIdent SD ratio of the
    row's stratum (NaN for a stratum not seen in the fit)."""
    r = fit.model.residual
    if r is None or r.variance is None:
        return np.ones(n)
    ratios = r.stratum_sd_ratio(fit._residual_eta)
    if newdata is None:
        return ratios[r.strata] ** 2
    by = r.variance.by
    if by not in newdata.columns:
        from .design import _missing_column_error

        raise _missing_column_error(by, "VarIdent stratum, needed for prediction intervals",
                                    newdata.columns)
    lookup = {str(lv): v for lv, v in zip(r.stratum_levels, ratios)}
    return np.array([lookup.get(str(v), np.nan) for v in newdata[by]]) ** 2


# ======================================================================================
# simulation and parametric bootstrap
# ======================================================================================

def simulate(fit, nsim: int = 1, seed=None, *, use_fitted_effects: bool = False) -> np.ndarray:
    """Responses simulated from the fitted model on the fitting rows: an (n, nsim) array.

    Each replicate draws new random effects b ~ N(0, sigma^2 T T') per level (unless
    use_fitted_effects: the conditional modes are kept, lme4's ``use.u = TRUE``) and new
    residuals ~ N(0, sigma^2), or from the residual structure (AR(1), compound symmetry,
    VarIdent). Deterministic for a given seed (numpy's default_rng).
    """
    rng = np.random.default_rng(seed)
    st = fit.model.structure
    n = fit.nobs
    base = np.array(fit.fittedvalues if use_fitted_effects else fit.fitted_marginal)
    out = np.empty((n, int(nsim)))
    for s in range(int(nsim)):
        y = base.copy()
        if not use_fitted_effects:
            for fi, f in enumerate(st.factors):
                T = st.T_of(fit.theta, fi)
                b = fit.sigma * rng.standard_normal((f.n_levels, f.n_columns)) @ T.T
                if f.unit_z:
                    y += b[f.codes, 0]
                else:
                    y += np.einsum("ij,ij->i", f.Z, b[f.codes])
        if fit.model.residual is None:
            y += fit.sigma * rng.standard_normal(n)
        else:  # correlated or heteroscedastic residuals (bigmixed.residual)
            y += fit.model.residual.simulate_errors(fit._residual_eta, fit.sigma, rng)
        out[:, s] = y
    return out


def default_statistics(fit) -> pd.Series:
    """SDs and correlations of the random effects, sigma and the fixed effects, named."""
    vals, names = [], []
    for group, cols, cov in fit.term_covariances():
        sd = np.sqrt(np.diag(cov))
        for i, c in enumerate(cols):
            names.append(f"sd_{c}|{group}")
            vals.append(sd[i])
        for j in range(len(cols)):
            for i in range(j + 1, len(cols)):
                names.append(f"cor_{cols[i]}.{cols[j]}|{group}")
                vals.append(cov[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan)
    names.append("sigma")
    vals.append(fit.sigma)
    rp = fit.residual_parameters
    names += list(rp.index)
    vals += list(rp.to_numpy())
    names += list(fit.fixed_names)
    vals += list(fit.beta)
    return pd.Series(vals, index=names, dtype=float)


@dataclasses.dataclass
class BootstrapResult:
    """Parametric bootstrap replicates of a statistic."""

    observed: pd.Series
    replicates: pd.DataFrame  # nsim rows
    n_failed: int
    seed: object

    def ci(self, level: float = 0.95) -> pd.DataFrame:
        """Percentile intervals."""
        a = (1 - level) / 2
        q = self.replicates.quantile([a, 1 - a])
        out = pd.DataFrame({"estimate": self.observed, "lower": q.iloc[0], "upper": q.iloc[1]})
        out.attrs.update(method="parametric bootstrap, percentile", level=level,
                         nsim=len(self.replicates))
        return out

    def se(self) -> pd.Series:
        return self.replicates.std(ddof=1)


def bootstrap(fit, nsim: int = 100, seed=None, func=None, *, use_fitted_effects: bool = False,
              progress=None, n_jobs: int | None = None) -> BootstrapResult:
    """Parametric bootstrap: simulate responses from the fit, refit the same design to each
    (``LinearMixedModel.from_design`` with the new y, started at the fitted theta) and apply
    func(refit) -> number, sequence or Series (default: `default_statistics`). Deterministic
    for a given seed: the responses are drawn up front and each replicate's result is stored at
    its own index, so the thread count (n_jobs, default: all cores) does not change the numbers.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    from .model import LinearMixedModel

    func = default_statistics if func is None else func
    observed = _as_series(func(fit))
    ysim = simulate(fit, nsim, seed, use_fitted_effects=use_fitted_effects)
    design = fit.model.design
    theta0 = np.asarray(fit.optimizer_params, dtype=np.float64)
    r = fit.model.residual
    structures = {} if r is None else dict(residual=r.residual, variance=r.variance)

    def replicate(s):
        d = dataclasses.replace(design, y=np.ascontiguousarray(ysim[:, s]), warnings=[])
        try:
            with _warnings.catch_warnings():
                _warnings.simplefilter("ignore", BigmixedWarning)
                m = LinearMixedModel.from_design(d, reml=fit.reml, solver=fit.model.solver,
                                                 **structures)
                r = m.fit(theta0=theta0)
            return _as_series(func(r)).reindex(observed.index), False
        except Exception:  # noqa: BLE001 - a failed replicate is counted, not fatal
            return pd.Series(np.nan, index=observed.index), True

    n_jobs = (os.cpu_count() or 1) if n_jobs is None else max(1, int(n_jobs))
    results = [None] * ysim.shape[1]
    # Numba kernels release the GIL, so threads overlap the refits' compiled parts.
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        for done, (s, res) in enumerate(zip(range(ysim.shape[1]), pool.map(replicate, range(ysim.shape[1])))):
            results[s] = res
            if progress is not None:
                progress(done + 1, ysim.shape[1])
    failed = sum(1 for _, bad in results if bad)
    reps = pd.DataFrame([row for row, _ in results]).reset_index(drop=True)
    return BootstrapResult(observed, reps, failed, seed)


def _as_series(v) -> pd.Series:
    if isinstance(v, pd.Series):
        return v.astype(float)
    if isinstance(v, dict):
        return pd.Series(v, dtype=float)
    arr = np.atleast_1d(np.asarray(v, dtype=float))
    return pd.Series(arr, index=[f"stat{i}" for i in range(len(arr))])
