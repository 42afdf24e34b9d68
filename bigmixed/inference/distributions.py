"""The few distribution functions the everyday outputs need, from scipy.special: the same
ufuncs scipy.stats calls (so the same bits), without importing scipy.stats (~0.3 s, a third
of a small fit from the command line)."""
from __future__ import annotations

from scipy import special


def t_sf(x, df):
    """P(T_df > x) (scipy.stats.t.sf)."""
    return special.stdtr(df, -x)


def t_ppf(p, df):
    """The p quantile of t_df (scipy.stats.t.ppf)."""
    return special.stdtrit(df, p)


def norm_sf(x):
    """P(Z > x) (scipy.stats.norm.sf)."""
    return special.ndtr(-x)


def norm_ppf(p):
    """The p quantile of N(0, 1) (scipy.stats.norm.ppf)."""
    return special.ndtri(p)


def f_sf(x, dfn, dfd):
    """P(F_{dfn, dfd} > x) (scipy.stats.f.sf)."""
    return special.fdtrc(dfn, dfd, x)


def chi2_sf(x, df):
    """P(chi2_df > x) (scipy.stats.chi2.sf)."""
    return special.chdtrc(df, x)
