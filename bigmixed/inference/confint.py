"""Confidence intervals: one entry point for every method."""
from __future__ import annotations

import pandas as pd
from .satterthwaite import fixed_effects_test
from .profile import profile_confint

def confint_fixed(fit, level: float = 0.95, method: str = "wald") -> pd.DataFrame:
    """Confidence intervals for the fixed effects.

    method="wald": beta +- z SE (lme4's ``confint(method = "Wald")``);
    "satterthwaite" / "between-within": beta +- t_df SE with those df.
    """
    key = str(method).lower()
    if key == "wald":
        tab = fixed_effects_test(fit, ddf="asymptotic", level=level)
    else:
        tab = fixed_effects_test(fit, ddf=key, level=level)
    out = tab[["term", "estimate", "lower", "upper"]].copy()
    out.attrs["method"] = key
    out.attrs["level"] = level
    return out


def confint(fit, method: str = "wald", level: float = 0.95, **kwargs) -> pd.DataFrame:
    """Confidence intervals by `method`: "wald" (lme4's Wald: fixed effects, normal quantiles),
    "satterthwaite" / "between-within" (fixed effects, t quantiles with those df), "profile"
    (likelihood-profile intervals for all parameters, lme4's ``confint(method = "profile")``),
    "boot" (parametric percentile bootstrap; kwargs nsim, seed)."""
    key = str(method).lower()
    if key in ("wald", "satterthwaite", "between-within"):
        return confint_fixed(fit, level=level, method=key)
    if key == "profile":
        return profile_confint(fit, level=level, **kwargs)
    if key in ("boot", "bootstrap"):
        from .simulate import bootstrap

        nsim = kwargs.pop("nsim", 200)
        seed = kwargs.pop("seed", None)
        return bootstrap(fit, nsim, seed, **kwargs).ci(level)
    raise ValueError(f"method must be 'wald', 'satterthwaite', 'between-within', 'profile' or 'boot', not {method!r}")
