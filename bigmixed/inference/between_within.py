"""nlme's between-within denominator degrees of freedom."""
from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np
from .fixed_terms import fixed_terms

# ======================================================================================
# nlme's between-within ("containment") denominator df
# ======================================================================================

@dataclass
class BetweenWithinDF:
    strata: list  # outermost grouping factor first, then "Residual"
    coef_df: np.ndarray  # per coefficient
    coef_stratum: list
    term_df: dict  # per term label (and "(Intercept)")


def between_within_df(fit) -> BetweenWithinDF:
    """nlme's ``getFixDF``: each column of X is estimated in the innermost stratum (grouping
    level) within whose groups it varies; a stratum's df are its number of groups minus the
    number of groups of the stratum above, minus the coefficients estimated in it.

    Needs nested grouping factors (or a single one); crossed factors raise ValueError.
    """
    st = fit.structure
    factors = sorted(st.factors, key=lambda f: f.n_levels)
    for outer, inner in zip(factors, factors[1:]):
        pairs = np.unique(np.stack([inner.codes.astype(np.int64), outer.codes.astype(np.int64)]), axis=1)
        if pairs.shape[1] != inner.n_levels:
            raise ValueError(
                f"between-within df need nested grouping factors, but {inner.group!r} is not nested "
                f"in {outer.group!r}; use ddf='satterthwaite'")
    X = fit.rows.X
    N, p = X.shape
    names = [f.group for f in factors] + ["Residual"]
    ngrps = np.array([f.n_levels for f in factors], dtype=float)
    df_strata = np.concatenate([ngrps, [N]]) - np.concatenate([[0.0], ngrps])
    has_icpt, terms = fixed_terms(fit)

    def const(x, tol=math.sqrt(np.finfo(float).eps)):
        if x[0] == 0:
            return bool(np.all(np.abs(x) < tol))
        return bool(np.all(np.abs(x / x[0] - 1) < tol))

    not_int = np.array([not const(X[:, j]) for j in range(p)])
    assign = {}
    int_cols = [j for j in range(p) if not not_int[j]]
    if has_icpt:
        assign["(Intercept)"] = [j for j in range(p) if fit.fixed_names[j] == "(Intercept)"]
    for t in terms:
        assign[t.label] = list(t.columns)
    coef_df = np.zeros(p)
    term_df = {k: 0.0 for k in assign}
    strat_idx = np.zeros(p, dtype=int)
    if not_int.any():
        inner = np.ones((p, len(factors) + 1))
        for q, f in enumerate(factors):
            inner[:, q + 1] = _inner_fraction(X, f.codes, f.n_levels)
        strat_idx = np.array([max(i for i in range(len(names)) if inner[j, i] > 0) for j in range(p)])
        dfX = df_strata.copy()
        for j in np.flatnonzero(not_int):
            dfX[strat_idx[j]] -= 1
        if not not_int.all():
            dfX[0] -= 1
        else:
            dfX[1:] += 1
        coef_df[not_int] = dfX[strat_idx[not_int]]
        not_int_terms = {k: bool(any(not_int[c] for c in cols)) for k, cols in assign.items()}
        strat_terms = {k: max(strat_idx[c] for c in cols) for k, cols in assign.items()
                       if not_int_terms[k] and cols}
        dfT = df_strata.copy()
        for k, s in strat_terms.items():
            dfT[s] -= len(assign[k])
        if not all(not_int_terms.values()):
            dfT[0] -= 1
        else:
            dfT[1:] += 1
        for k, s in strat_terms.items():
            term_df[k] = dfT[s]
        if int_cols:
            coef_df[~not_int] = dfX.max()
            for k in assign:
                if not not_int_terms[k]:
                    term_df[k] = dfT.max()
    else:
        coef_df[:] = df_strata.max()
        for k in assign:
            term_df[k] = df_strata.max()
    return BetweenWithinDF(names, coef_df, [names[i] for i in strat_idx], term_df)


def _inner_fraction(X, codes, n_levels) -> np.ndarray:
    """Per column of X: the fraction of groups within which the column is not constant."""
    codes = np.asarray(codes, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    sc = codes[order]
    first = np.searchsorted(sc, np.arange(n_levels))
    out = np.empty(X.shape[1])
    for j in range(X.shape[1]):
        x = X[order, j]
        ref = x[first][sc]
        varies = np.bincount(sc, weights=(x != ref).astype(float), minlength=n_levels) > 0
        out[j] = varies.mean()
    return out
