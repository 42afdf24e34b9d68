"""The optimizer step: BOBYQA (nlopt) over theta with lme4's bounds, plus lme4's edge restart.

formula -> design -> structure -> cross-products -> factor -> objective -> **optimizer** -> results.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


INITIAL_STEP = 0.25  # BOBYQA's initial trust radius, relative to |theta| (0.1 to 0.75 all do alike)


@dataclass
class OptimizerRecord:
    """What the optimizer did: evaluations, final theta and objective, convergence."""

    method: str
    n_evaluations: int
    theta: np.ndarray
    objective: float
    converged: bool
    message: str
    restarts: int = 0
    history: list = field(default_factory=list, repr=False)


def minimize_theta(fun, theta0, lower, *, ftol_abs=1e-10, ftol_rel=1e-13, xtol_abs=1e-8,
                   maxeval=100_000, restart_edge=True, restartable=None) -> OptimizerRecord:
    """Minimize fun(theta) subject to theta >= lower with nlopt's BOBYQA.

    Tolerances are tighter than lme4's defaults (1e-8) so that the result is never at a worse
    objective. With restart_edge (lme4's default), a fit that ends with a diagonal element of
    theta at zero is restarted if stepping off the boundary lowers the objective. With
    `restartable` (a boolean mask: diagonal elements of terms with several columns), a fit in
    which such an element ends at zero is also restarted from fresh interior points.
    """
    import nlopt

    theta0 = np.asarray(theta0, dtype=np.float64)
    n = len(theta0)
    evals = [0]
    best = [np.inf, theta0.copy()]

    def wrapped(x, grad):
        evals[0] += 1
        v = fun(x)
        if not np.isfinite(v):
            v = 1e300  # never hand NaN or inf to BOBYQA
        if v < best[0] or (v == best[0] and np.sum(x == 0) > np.sum(best[1] == 0)):
            best[0] = v
            best[1] = x.copy()
        return v

    def run(start):
        opt = nlopt.opt(nlopt.LN_BOBYQA, n)
        opt.set_min_objective(wrapped)
        lb = np.where(np.isfinite(lower), lower, -np.inf)
        opt.set_lower_bounds(lb)
        opt.set_ftol_abs(ftol_abs)
        opt.set_ftol_rel(ftol_rel)
        opt.set_xtol_abs(np.full(n, xtol_abs))
        opt.set_maxeval(maxeval)
        step = np.where(np.abs(start) > 0, INITIAL_STEP * np.maximum(np.abs(start), 0.1), INITIAL_STEP)
        opt.set_initial_step(step)
        start = np.maximum(start, lb)
        try:
            x = opt.optimize(start)
            res = opt.last_optimize_result()
        except nlopt.RoundoffLimited:
            x, res = best[1].copy(), nlopt.ROUNDOFF_LIMITED
        return x, res

    x, res = run(theta0)
    restarts = 0
    if restart_edge:
        for _ in range(3):
            at_edge = np.flatnonzero((lower == 0) & (best[1] == 0))
            if len(at_edge) == 0:
                break
            f0 = best[0]
            trial = best[1].copy()
            improved = False
            for i in at_edge:
                t = trial.copy()
                t[i] = 1e-4
                if wrapped(t, None) < f0:
                    trial = t
                    improved = True
            if not improved:
                break
            restarts += 1
            x, res = run(trial)
    if restartable is not None:
        # A fit that ends on the boundary may sit in a local optimum of the rank-deficient
        # covariance (e.g. a rank-one T pointing the wrong way). Restart from two fresh
        # interior points (the estimate's diagonal with zero variances put back to 1, and a
        # small multiple of lme4's start) and keep the best point found.
        diag = lower == 0
        zero = diag & (best[1] < 1e-4)
        if np.any(zero & restartable):
            tried = [theta0]
            for trial in (np.where(diag, np.where(zero, 1.0, best[1]), 0.0), 0.2 * theta0):
                if any(np.allclose(trial, t) for t in tried):
                    continue
                tried.append(trial)
                f0 = best[0]
                restarts += 1
                x2, res2 = run(trial)
                if best[0] < f0:
                    res = res2
    # Snap variances that are numerically zero onto the boundary when that is no worse,
    # so that singular fits report exact zeros as lme4 does.
    near = np.flatnonzero((lower == 0) & (best[1] > 0) & (best[1] < 1e-5))
    for i in near:
        t = best[1].copy()
        t[i] = 0.0
        f0 = best[0]
        v = wrapped(t, None)
        if v <= f0 + 1e-10 * max(1.0, abs(f0)):  # equal up to rounding: prefer the exact zero
            best[0], best[1] = v, t
    converged = res in (1, 2, 3, 4) or res == -4  # success codes, or roundoff at the optimum
    return OptimizerRecord(
        method="nlopt LN_BOBYQA",
        n_evaluations=evals[0],
        theta=best[1].copy(),
        objective=float(best[0]),
        converged=bool(converged and res != 5),
        message=_RESULT_MESSAGES.get(res, str(res)),
        restarts=restarts,
    )



_RESULT_MESSAGES = {
    1: "success",
    2: "stopval reached",
    3: "ftol reached",
    4: "xtol reached",
    5: "maxeval reached",
    6: "maxtime reached",
    -4: "roundoff limited (at the optimum to machine precision)",
}
