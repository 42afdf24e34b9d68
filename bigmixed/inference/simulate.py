"""Simulation from a fitted model and the parametric bootstrap."""
from __future__ import annotations

import dataclasses
import warnings as _warnings
import numpy as np
import pandas as pd
from ..warnings import BigmixedWarning

# ======================================================================================
# simulation and parametric bootstrap
# ======================================================================================

def add_random_effects(out, structure, theta, scale, rng) -> None:
    """out += Z b with new random effects b ~ N(0, scale^2 T T') per level and factor (scale
    None: 1, a GLMM's), drawn in factor order from rng."""
    for fi, f in enumerate(structure.factors):
        T = structure.T_of(theta, fi)
        draws = rng.standard_normal((f.n_levels, f.n_columns))
        b = (draws if scale is None else scale * draws) @ T.T
        if f.unit_z:
            out += b[f.codes, 0]
        else:
            out += np.einsum("ij,ij->i", f.Z, b[f.codes])


def simulate(fit, nsim: int = 1, seed=None, *, use_fitted_effects: bool = False) -> np.ndarray:
    """Responses simulated from the fitted model on the fitting rows: an (n, nsim) array.

    Each replicate draws new random effects b ~ N(0, sigma^2 T T') per level (unless
    use_fitted_effects: the conditional modes are kept, lme4's ``use.u = TRUE``) and new
    residuals ~ N(0, sigma^2), or from the residual structure (AR(1), compound symmetry,
    VarIdent). Deterministic for a given seed (numpy's default_rng).
    """
    if getattr(fit, "family", None) is not None:
        return simulate_glmm(fit, nsim, seed, use_fitted_effects=use_fitted_effects)
    rng = np.random.default_rng(seed)
    st = fit.structure
    n = fit.nobs
    base = np.array(fit.fittedvalues if use_fitted_effects else fit.fitted_marginal)  # + offset
    from ..spec.glm_inputs import prior_arrays

    w_prior = prior_arrays(fit.design)[0]
    out = np.empty((n, int(nsim)))
    for s in range(int(nsim)):
        y = base.copy()
        if not use_fitted_effects:
            add_random_effects(y, st, fit.theta, fit.sigma, rng)
        if fit.residual is None and w_prior is not None:  # prior weights: sigma^2 / w_i
            y += fit.sigma * rng.standard_normal(n) / np.sqrt(w_prior)
        elif fit.residual is None:
            y += fit.sigma * rng.standard_normal(n)
        else:  # correlated or heteroscedastic residuals, drawn per series
            model = fit._require_model("simulated responses with a residual structure")
            y += model.residual.simulate_errors(fit.residual_eta, fit.sigma, rng)
        out[:, s] = y
    return out


def simulate_glmm(fit, nsim: int = 1, seed=None, *, use_fitted_effects: bool = False) -> np.ndarray:
    """Responses simulated from a fitted GLMM on the fitting rows: an (n, nsim) array on the
    model's response scale, as lme4's simulate() of a glmer fit.

    Each replicate draws b ~ N(0, T T') per level (or keeps the conditional modes with
    use_fitted_effects, lme4's use.u = TRUE), mu = linkinv(offset + X beta + Z b), and the
    response from the family: binomial with a row's trials m (the prior weights of a
    cbind() or proportion response; 1 for 0/1 data) as Binomial(m, mu) / m, Poisson as
    Poisson(mu). Deterministic for a given seed (numpy's default_rng).
    """
    model = fit._require_model("simulated responses")
    if fit.rows.kind == "dask":
        raise NotImplementedError("simulating responses of a GLMM fitted from Dask data (and so "
                                  "its bootstrap) needs the rows in memory")
    rng = np.random.default_rng(seed)
    st = fit.structure
    n = fit.nobs
    fixed = np.array(fit.linear_predictor if use_fitted_effects else fit._fixed_eta())
    trials = np.asarray(model.prior_weights)
    if fit.family.name == "binomial":
        m = np.rint(trials)
        if np.any(np.abs(trials - m) > 1e-8 * np.maximum(1.0, trials)):
            raise ValueError("simulating a binomial response needs whole numbers of trials; the "
                             "prior weights are not whole numbers")
        m = m.astype(np.int64)
    out = np.empty((n, int(nsim)))
    for s in range(int(nsim)):
        eta = fixed.copy()
        if not use_fitted_effects:
            add_random_effects(eta, st, fit.theta, None, rng)
        mu = fit._linkinv(eta)
        if fit.family.name == "binomial":
            out[:, s] = rng.binomial(m, np.clip(mu, 0.0, 1.0)) / m
        else:
            out[:, s] = rng.poisson(mu)
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
    if getattr(fit, "family", None) is None:  # (a GLMM has no scale parameter)
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
    """Parametric bootstrap: simulate responses from the fit, refit the model to each
    (``fit.model.refit(y=...)``: one pass over the rows for the new response, the symbolic
    factorization reused; started at the fitted theta) and apply func(refit) -> number,
    sequence or Series (default: `default_statistics`). Deterministic for a given seed: the
    responses are drawn up front and each replicate's result is stored at its own index, so the
    thread count (n_jobs, default: all cores) does not change the numbers.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    model = fit._require_model("a bootstrap")
    func = default_statistics if func is None else func
    observed = _as_series(func(fit))
    ysim = simulate(fit, nsim, seed, use_fitted_effects=use_fitted_effects)
    theta0 = np.asarray(fit.optimizer_params, dtype=np.float64)

    def replicate(s):
        try:
            with _warnings.catch_warnings():
                _warnings.simplefilter("ignore", BigmixedWarning)
                r = model.refit(y=ysim[:, s], reml=fit.reml, theta0=theta0)
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
