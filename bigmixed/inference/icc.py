"""Intraclass correlation per grouping factor."""
from __future__ import annotations

import pandas as pd

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
    if fit.residual is not None:
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
