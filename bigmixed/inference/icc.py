"""Intraclass correlation per grouping factor."""
from __future__ import annotations

import numpy as np
import pandas as pd

# ======================================================================================
# Intraclass correlation and convergence
# ======================================================================================

def icc(fit, interval: str | None = None, *, at=None, nsim: int = 200, seed=0,
        coverage: float = 0.95, level=None) -> pd.DataFrame:
    """Intraclass correlations, one row per grouping factor.

    interval="bootstrap" adds `lower` / `upper`: percentile limits of the ICC over a seeded,
    deterministic parametric bootstrap (`nsim` refits of the same design), with `coverage`
    as in confint and predict_interval (`level` is its deprecated alias).

    icc = var_g / (sum of the groups' variances + sigma^2): the correlation of two
    observations that share the level of g and of no other factor (for a single grouping
    factor the usual var_g / (var_g + sigma^2)); icc_vs_residual = var_g / (var_g + sigma^2)
    ignores the other factors.

    Random slopes: the variance of a group's effect depends on the covariates, so the ICC is
    conditional on them: `at` gives the values of the random-effect columns, e.g.
    ``at={"time": 0}`` (keys are the columns' names as in ``fit.variance_components``;
    "(Intercept)" is 1), and var_g = z' G_g z at z = those values (the correlation of two
    observations of the same level, both at `at`). Without `at` such a model raises
    bm.OptionError naming the columns to give.
    """
    from ..errors import OptionError

    if fit.residual is not None:
        raise NotImplementedError(
            "the ICC of a model with a residual structure (AR1, CompoundSymmetry, VarIdent) is "
            "not defined here: the within-group correlation then also depends on the residual "
            "correlation and stratum")
    at = {} if at is None else dict(at)
    covs = fit.term_covariances()
    slopes = sorted({n for _, names, _ in covs for n in names if n != "(Intercept)"})
    if slopes and not at:
        raise OptionError(
            f"the ICC of a model with random slopes depends on the covariates: give their values, "
            f"e.g. icc(at={{{', '.join(f'{n!r}: 0' for n in slopes)}}}) for the conditional ICC "
            "there; an ICC without covariates is defined for random-intercept terms only")
    missing = [n for n in slopes if n not in at]
    unknown = [k for k in at if k not in slopes]
    if missing or unknown:
        raise OptionError(f"icc(at=...) needs a value for each random-slope column {slopes}; "
                          + (f"missing {missing}" if missing else f"unknown {unknown}"))
    per_group: dict = {}
    for group, names, cov in covs:
        z = np.array([1.0 if n == "(Intercept)" else float(at[n]) for n in names])
        per_group[group] = per_group.get(group, 0.0) + float(z @ cov @ z)
    rows = list(per_group.items())
    s2 = fit.sigma ** 2
    total = sum(v for _, v in rows) + s2
    out = pd.DataFrame({
        "group": [g for g, _ in rows],
        "variance": [v for _, v in rows],
        "icc": [v / total for _, v in rows],
        "icc_vs_residual": [v / (v + s2) for _, v in rows],
    })
    out.attrs["residual_variance"] = s2
    if at:
        out.attrs["at"] = dict(at)
    if interval is None:
        return out
    if interval != "bootstrap":
        raise ValueError(f"interval must be None or 'bootstrap', not {interval!r}")
    from .confint import coverage_argument

    level = coverage_argument(coverage, level, "icc")
    boot = fit.bootstrap(nsim, seed, func=lambda f: icc(f, at=at or None)["icc"].to_numpy())
    ci = boot.ci(level)
    out["lower"] = ci.iloc[:, -2].to_numpy()
    out["upper"] = ci.iloc[:, -1].to_numpy()
    out.attrs["interval"] = f"parametric bootstrap, {nsim} refits, seed {seed}, percentile {level:.0%}"
    return out
