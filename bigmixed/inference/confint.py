"""Confidence intervals: one entry point for every method, one table shape for all of them.

``confint(fit, method)`` returns, whatever the method, one row per parameter in lme4's order
(lme4's ``confint``: the random-effects SDs and correlations in theta's order, ``sigma``,
then the fixed effects), indexed by the parameter's name, with the columns

    term       the name (lme4's ``oldNames = FALSE``: ``sd_(Intercept)|g``, ``cor_x.(Intercept)|g``,
               ``sigma``, then R's coefficient names)
    lme4_name  lme4's default name (``.sig01``, ``.sig02``, ..., ``.sigma``, coefficient names)
    scale      "sd", "cor" (variance parameters, on lme4's SD / correlation scale) or "coef"
    estimate   the fit's estimate (the same column for every method)
    lower, upper

and ``.attrs`` saying the method, the coverage, which estimates (REML or ML fit; for the profile
the ML refit it profiles, as lme4) and the scale. A method that gives no interval for some rows
leaves NaN there, as lme4's ``confint(method = "Wald")`` does for the variance parameters.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .satterthwaite import fixed_effects_test
from .profile import _lower_tri, _term_slices, profile_confint, sdcor_from_theta

COLUMNS = ["term", "lme4_name", "scale", "estimate", "lower", "upper"]
SCALE = ("variance parameters on lme4's scale: random-effect SDs (sd_*), correlations (cor_*) "
         "and the residual SD (sigma); fixed effects as coefficients")


def coverage_argument(coverage, level, where: str) -> float:
    """The interval's coverage from `coverage` or the deprecated alias `level`."""
    if level is not None:
        warnings.warn(f"{where}(level=) is deprecated: the coverage is called `coverage` in "
                      "confint and predict_interval (`level` there is the prediction level, "
                      "'conditional' or 'population')", FutureWarning, stacklevel=3)
        coverage = level
    try:
        coverage = float(coverage)
    except (TypeError, ValueError):
        raise ValueError(f"coverage must be a number in (0, 1), not {coverage!r}") from None
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be in (0, 1), not {coverage!r}")
    return coverage


def parameter_table(fit) -> pd.DataFrame:
    """The rows every confint table has: term, lme4_name, scale, estimate (the fit's)."""
    st = fit.structure
    has_scale = "Residual" in set(fit.variance_components["group"])
    sv = sdcor_from_theta(st, fit.theta, fit.sigma)
    rows = []
    n = 0
    for k, sl, nc in _term_slices(st):
        t = st.terms[k]
        _, idx = _lower_tri(np.zeros(sl.stop - sl.start), nc)
        for (i, j), value in zip(idx, sv[sl]):
            n += 1
            if i == j:
                rows.append((f"sd_{t.column_names[i]}|{t.group}", f".sig{n:02d}", "sd", value))
            else:
                rows.append((f"cor_{t.column_names[i]}.{t.column_names[j]}|{t.group}",
                             f".sig{n:02d}", "cor", value))
    if has_scale:
        rows.append(("sigma", ".sigma", "sd", float(fit.sigma)))
    rp = fit.residual_parameters
    for name, value in rp.items():
        rows.append((name, name, "residual structure (nlme)", float(value)))
    for name, b in zip(fit.fixed_names, fit.beta):
        rows.append((name, name, "coef", float(b)))
    out = pd.DataFrame(rows, columns=["term", "lme4_name", "scale", "estimate"])
    out.index = pd.Index(out["term"].to_list())
    return out


def _finish(fit, table, lower, upper, *, method, coverage, estimates, **attrs) -> pd.DataFrame:
    out = table.copy()
    out["lower"] = pd.Series(lower, dtype=float).reindex(out.index).to_numpy()
    out["upper"] = pd.Series(upper, dtype=float).reindex(out.index).to_numpy()
    out = out[COLUMNS]
    out.attrs.update(method=method, coverage=coverage, level=coverage, estimates=estimates,
                     scale=SCALE, **attrs)
    return out


def _select(table: pd.DataFrame, which) -> pd.DataFrame:
    """Rows by `which`: None (all), "fixed", "variance" (lme4's parm = "theta_"), or names
    (terms or lme4 names)."""
    if which is None:
        return table
    if isinstance(which, str) and which in ("fixed", "beta_"):
        return table[table["scale"] == "coef"]
    if isinstance(which, str) and which in ("variance", "theta_"):
        return table[table["scale"] != "coef"]
    names = [which] if isinstance(which, str) else list(which)
    keep = table["term"].isin(names) | table["lme4_name"].isin(names)
    unknown = set(names) - set(table["term"]) - set(table["lme4_name"])
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)}; the parameters are "
                         f"{table['term'].tolist()}")
    return table[keep]


def _fit_estimates(fit) -> str:
    return "REML fit" if fit.reml else "ML fit"


def confint_fixed(fit, coverage: float = 0.95, method: str = "wald", which=None) -> pd.DataFrame:
    """Confidence intervals for the fixed effects (NaN rows for the variance parameters).

    method="wald": beta +- z SE (lme4's ``confint(method = "Wald")``);
    "satterthwaite" / "between-within": beta +- t_df SE with those df.
    """
    key = str(method).lower()
    tab = fixed_effects_test(fit, ddf="asymptotic" if key == "wald" else key, level=coverage)
    lower = dict(zip(tab["term"], tab["lower"]))
    upper = dict(zip(tab["term"], tab["upper"]))
    desc = {"wald": "Wald (normal quantiles); no intervals for the variance parameters, as lme4"}
    table = _select(parameter_table(fit), which)
    return _finish(fit, table, lower, upper, method=key, coverage=coverage,
                   estimates=_fit_estimates(fit),
                   description=desc.get(key, f"t quantiles with {key} df; no intervals for the "
                                             "variance parameters"))


def confint(fit, method: str = "wald", coverage: float = 0.95, *, level=None, which=None,
            **kwargs) -> pd.DataFrame:
    """Confidence intervals by `method`: "wald" (lme4's Wald: fixed effects, normal quantiles),
    "satterthwaite" / "between-within" (fixed effects, t quantiles with those df), "profile"
    (likelihood-profile intervals for all parameters, lme4's ``confint(method = "profile")``),
    "boot" (parametric percentile bootstrap of all parameters; kwargs nsim (200), seed, n_jobs).

    Every method returns the same table (module docstring): all parameters in lme4's order,
    columns term, lme4_name, scale, estimate (the fit's), lower, upper. `which` selects rows:
    "fixed", "variance" or names. `level` is the deprecated name of `coverage`.
    """
    coverage = coverage_argument(coverage, level, "confint")
    key = str(method).lower()
    if key in ("wald", "satterthwaite", "between-within"):
        if kwargs:
            raise TypeError(f"confint(method={key!r}) takes no {sorted(kwargs)}")
        return confint_fixed(fit, coverage=coverage, method=key, which=which)
    if key == "profile":
        table = _select(parameter_table(fit), which)
        prof = profile_confint(fit, level=coverage, which=list(table["term"]), **kwargs)
        prof = prof.set_index("term")
        return _finish(fit, table, prof["lower"], prof["upper"], method="profile",
                       coverage=coverage, estimates=_fit_estimates(fit),
                       description="likelihood profile of the ML deviance (a REML fit is "
                                   "refitted by ML and profiled, as lme4's profile)",
                       profiled_estimates=prof["estimate"].to_dict())
    if key in ("boot", "bootstrap"):
        from .simulate import bootstrap

        nsim = kwargs.pop("nsim", 200)
        seed = kwargs.pop("seed", None)
        boot = bootstrap(fit, nsim, seed, **kwargs)
        ci = boot.ci(coverage)
        table = _select(parameter_table(fit), which)
        return _finish(fit, table, ci["lower"], ci["upper"], method="boot",
                       coverage=coverage, estimates=_fit_estimates(fit),
                       description=f"parametric bootstrap, percentile ({nsim} refits by "
                                   f"{'REML' if fit.reml else 'ML'}, seed {seed})",
                       nsim=nsim, n_failed=boot.n_failed)
    raise ValueError(f"method must be 'wald', 'satterthwaite', 'between-within', 'profile' or 'boot', not {method!r}")
