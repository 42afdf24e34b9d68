"""Complete and quasi-complete separation of a binomial response by the fixed effects.

A direction d of the coefficients separates the data when x_i'd >= 0 for every row with all
successes, x_i'd <= 0 for every row with all failures and x_i'd = 0 for rows with both, with
x_i'd != 0 for some row: moving beta along d then raises the likelihood without bound, the
estimate of some coefficient diverges and its Wald statistics mean nothing (glm's "fitted
probabilities numerically 0 or 1 occurred"; lme4 does not check). The random effects can absorb
a separated group but not a separating covariate, so the check is on X.

`separating_direction` solves the linear program of Konis (2007) as detectseparation does:
maximize sum_i |x_i'd| over the box -1 <= d <= 1 under the sign constraints (scipy's HiGHS).
It is run only when a fit shows the symptom (fitted means at 0 or 1), on the distinct rows.
"""
from __future__ import annotations

import numpy as np

SYMPTOM = 1e-8  # a fitted mean this close to 0 or 1


def has_symptom(mu: np.ndarray) -> bool:
    return bool(np.any((mu < SYMPTOM) | (mu > 1.0 - SYMPTOM)))


def separating_direction(X: np.ndarray, y: np.ndarray, tol: float = 1e-7) -> np.ndarray | None:
    """A direction d (p,) that separates the data (see the module docstring), or None."""
    from scipy.optimize import linprog

    n, p = X.shape
    if p == 0:
        return None
    sign = np.where(y >= 1.0, 1.0, np.where(y <= 0.0, -1.0, 0.0))
    rows = np.unique(np.column_stack([X, sign]), axis=0)
    Xu, s = rows[:, :p], rows[:, p]
    pos, neg, mid = Xu[s > 0], Xu[s < 0], Xu[s == 0]
    # maximize sum(pos d) - sum(neg d): = sum |x d| under the sign constraints
    c = -(pos.sum(axis=0) - neg.sum(axis=0))
    A_ub = np.vstack([-pos, neg]) if len(pos) + len(neg) else None
    b_ub = np.zeros(len(pos) + len(neg)) if A_ub is not None else None
    A_eq = mid if len(mid) else None
    b_eq = np.zeros(len(mid)) if len(mid) else None
    res = linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=[(-1.0, 1.0)] * p,
                  method="highs")
    if not res.success or -res.fun <= tol * max(1.0, float(np.abs(Xu).sum())):
        return None
    d = res.x
    d[np.abs(d) < 1e-9] = 0.0
    return d
