"""Starting values of theta for several grouping factors, from one-factor fits.

lme4 starts every model at theta = identity. With several factors each evaluation is a CHOLMOD
factorization whose cost can be dominated by a dense fill-in block, so a start near the optimum
pays: on a crossed model of InstEval's shape it halves the evaluations.

Each factor is first fitted alone through the block-diagonal path, on cross-products that are
already computed (milliseconds). A one-factor fit puts the other factors' variance into its
residual, so the residual variance is estimated as the smallest one-factor residual variance
minus the other factors' intercept variances (crossed factors), or as the smallest one-factor
residual variance when that subtraction over-corrects (nested factors), and each factor's T is
rescaled to it. The model uses the start only when its criterion beats lme4's start.

When every evaluation costs a large dense factorization (SchurSystem with a dense block of at
least FitControl.refine_min_dense columns), the start is then refined on SchurSystem.approx_update, an
approximate criterion that costs no dense factorization (about a tenth of an evaluation): its
minimum, then, when that moved the start by more than FitControl.refine_min_change, one Newton step on the
exact gradient (central differences: 2 k exact evaluations for k parameters) and the
approximate criterion's Hessian. On the crossed model of InstEval's shape this lands within
1e-5 of the optimum (criterion within 1e-7) against 2-4% for the one-factor start, and the fit
takes 20 fewer evaluations.

When the system also has an analytic gradient (scalar factors), the model fits by quasi-Newton
steps instead (bigmixed.optimize.quasi_newton), started by `approx_newton_start`: the minimum
of the approximate criterion (its own quasi-Newton steps) and its Hessian there.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .objective import NotPositiveDefinite, profiled_state
from .control import FitControl
from .optimize import forward_hessian, minimize_theta, quasi_newton
from ..spec.structure import RandomEffectsStructure
from ..solvers.blockdiag import BlockDiagonalSystem


def one_factor_start(model, control: FitControl = FitControl(), refine: bool = True,
                     objective=None) -> np.ndarray | None:
    """theta (lme4's order) assembled from one-factor fits (BOBYQA to control.loose), or None
    for a single factor; with `refine`, improved by `refine_start` (`objective`: the model's
    criterion as the caller counts it; default model.objective)."""
    st = model.structure
    if len(st.factors) < 2:
        return None
    cp = model.work_crossprods
    n, p, logdet_W = model.n_obs, model.n_fixed, model.basis.logdet_W
    fits = []
    for fi, f in enumerate(st.factors):
        terms = [st.terms[k] for k in f.term_ids]
        sub = RandomEffectsStructure(terms)
        system = BlockDiagonalSystem(replace(cp, zz=[cp.zz[fi]], zxy=[cp.zxy[fi]], pairs=[]), sub)

        def sub_objective(theta, system=system):
            value = system.objective(theta, model.reml, n, p, logdet_W)
            return value if np.isfinite(value) else np.inf

        rec = minimize_theta(sub_objective, sub.initial_theta(), sub.lower_bounds,
                             **control.loose.as_dict(), restart_edge=False,
                             initial_step=control.initial_step, restart_step=control.initial_step)
        try:
            sigma = profiled_state(*system.update(rec.params), n, p, model.basis).sigma(model.reml)
        except NotPositiveDefinite:
            return None
        fits.append((sub, rec.params, sigma))

    # intercept variance of each factor in its own fit (0 when the factor has no intercept)
    v = []
    for f, (sub, theta, sigma) in zip(st.factors, fits):
        T = sub.T_of(theta, 0)
        v.append(sigma**2 * T[0, 0] ** 2 if sub.factors[0].column_names[0] == "(Intercept)" else 0.0)
    s2_single = np.array([sigma**2 for _, _, sigma in fits])
    total_v = sum(v)
    s2 = min(s2_single[i] - (total_v - v[i]) for i in range(len(fits)))
    if s2 < 0.5 * s2_single.min():
        # nested factors share variance (a coarse factor's effect is also in each fine level's),
        # so the subtraction over-corrects: fall back to the smallest one-factor residual
        s2 = s2_single.min()

    T_all = np.zeros((len(st.factors), st.P_max, st.P_max))
    for fi, (f, (sub, theta, sigma)) in enumerate(zip(st.factors, fits)):
        T_sub = sub.T_of(theta, 0) * (sigma / np.sqrt(s2))
        sf = sub.factors[0]
        for j, k in enumerate(f.term_ids):
            pk = st.terms[k].n_columns
            full = f.term_offsets[j]
            part = sf.term_offsets[sf.term_ids.index(f.term_ids.index(k))]
            T_all[fi, full:full + pk, full:full + pk] = T_sub[part:part + pk, part:part + pk]
    start = T_all[st.theta_factor, st.theta_row, st.theta_col]
    start = np.where(st.lower_bounds == 0, np.maximum(start, 0.0), start)
    return refine_start(model, start, control, objective) if refine else start


def approx_criterion(model, control: FitControl = FitControl()):
    """The criterion on the system's approximate update (SchurSystem.approx_update), or None when
    it does not pay: no approximation, a dense block below control.refine_min_dense columns
    (exact evaluations are cheap), more than control.refine_max_theta parameters, or a residual
    structure."""
    system = model.system
    k = model.structure.n_theta
    if (not system.has_approx_update or system.dense_block_size < control.refine_min_dense
            or k > control.refine_max_theta or model.n_params != k):
        return None
    approx = system.approx_update
    n, p, reml = model.n_obs, model.n_fixed, model.reml

    def approx_objective(theta):
        logdet, S = approx(np.asarray(theta, dtype=np.float64))
        try:
            value = profiled_state(logdet, S, n, p, model.basis).criterion(reml)
        except NotPositiveDefinite:
            return np.inf
        return value if np.isfinite(value) else np.inf

    return approx_objective


def approx_newton_start(model, theta0: np.ndarray, control: FitControl = FitControl()):
    """(theta, H, n_evaluations): the minimum of the approximate criterion and its Hessian there, an estimate of
    the exact one for `bigmixed.optimize.quasi_newton`. The minimum is reached by quasi-Newton
    steps from theta0 on forward-difference gradients, from a forward-difference Hessian at
    theta0; H is a fresh forward-difference Hessian at the end point (on crossed_73k the exact
    steps then converge in two iterations, against four from the BFGS-updated one). None when
    there is no approximate criterion, theta0 is on a bound, or the steps fail (the caller then
    uses `refine_start` and BOBYQA)."""
    criterion = approx_criterion(model, control)
    lower = model.structure.lower_bounds
    if criterion is None or np.any(theta0[lower == 0] <= 0):
        return None
    calls = [0]

    def approx_objective(theta):
        calls[0] += 1
        return criterion(theta)

    idx = np.arange(len(theta0))
    f0 = approx_objective(theta0)
    if not np.isfinite(f0):
        return None
    H = forward_hessian(approx_objective, theta0, idx, f0, rel_step=1e-3)
    if not np.all(np.isfinite(H)):
        return None
    last = [None, None]  # (theta, value) of the last evaluation: the gradient's base point

    def remembered(theta):
        value = approx_objective(theta)
        last[0], last[1] = np.array(theta, dtype=np.float64), value
        return value

    def gradient(theta):
        # forward differences: their O(h) error moves the end point by ~1e-4, within the
        # approximation's own error (~2e-3); quasi_newton evaluated f(theta) just before
        h = 1e-4 * np.maximum(np.abs(theta), 0.1)
        f = last[1] if last[0] is not None and np.array_equal(last[0], theta) else approx_objective(theta)
        g = np.empty(len(theta))
        for a in idx:
            e = np.zeros_like(theta)
            e[a] = h[a]
            g[a] = (approx_objective(theta + e) - f) / h[a]
        return g

    rec = quasi_newton(remembered, gradient, theta0, H, lower, xtol=control.approx_newton_xtol,
                       final_step=0.0, method="quasi-Newton (approximate criterion)")
    if rec is None:
        return None
    H = forward_hessian(approx_objective, rec.params, idx, rec.objective, rel_step=1e-3)
    if not np.all(np.isfinite(H)):
        return None
    return rec.params, H, calls[0]


def refine_start(model, theta0: np.ndarray, control: FitControl = FitControl(),
                 objective=None) -> np.ndarray:
    """theta0 improved on the system's approximate criterion (see the module docstring), or
    theta0 itself when the system has none or the refinement does not pay."""
    approx_objective = approx_criterion(model, control)
    if approx_objective is None:
        return theta0
    objective = model.objective if objective is None else objective
    lower = model.structure.lower_bounds

    rec = minimize_theta(approx_objective, theta0, lower, **control.approx_tolerances.as_dict(),
                         restart_edge=False, initial_step=control.initial_step,
                         restart_step=control.initial_step)
    theta_a = rec.params
    free = ~((lower == 0) & (theta_a == 0))
    if not np.isfinite(rec.objective):
        return theta0
    change = np.max(np.abs(theta_a - theta0) / np.maximum(np.abs(theta0), 0.1))
    if not free.any() or change < control.refine_min_change:
        return theta_a
    idx = np.flatnonzero(free)
    H = forward_hessian(approx_objective, theta_a, idx, rec.objective, rel_step=1e-3)
    h = 1e-4 * np.maximum(np.abs(theta_a[idx]), 0.1)
    g = np.empty(len(idx))
    best_value, best_theta = np.inf, theta_a
    for a, i in enumerate(idx):
        values = []
        for sign in (1.0, -1.0):
            t = theta_a.copy()
            t[i] += sign * h[a]
            values.append(objective(t))
            if values[-1] < best_value:
                best_value, best_theta = values[-1], t
        g[a] = (values[0] - values[1]) / (2.0 * h[a])
    step = None
    try:
        w = np.linalg.eigvalsh(H)
        if np.all(np.isfinite(g)) and np.all(np.isfinite(w)) and w.min() > 0:
            step = np.linalg.solve(H, -g)
    except np.linalg.LinAlgError:
        pass
    if step is not None and (np.max(np.abs(step) / np.maximum(np.abs(theta_a[idx]), 0.1))
                             <= control.refine_max_step):
        theta1 = theta_a.copy()
        theta1[idx] += step
        # (the model evaluates its start again: that evaluation is the system's cached one)
        if np.all(theta1 >= lower) and objective(theta1) <= best_value:
            return theta1
    # the approximation did not hold (its Newton step is large or fails): keep the best point
    # evaluated, the one-factor start included
    return theta0 if objective(theta0) <= best_value else best_theta
