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
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .objective import NotPositiveDefinite, profiled_state
from .optimize import minimize_theta
from .structure import RandomEffectsStructure
from .system import BlockDiagonalSystem


def one_factor_start(model, tolerances: dict) -> np.ndarray | None:
    """theta (lme4's order) assembled from one-factor fits, or None for a single factor."""
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

        def objective(theta, system=system):
            value = system.objective(theta, model.reml, n, p, logdet_W)
            return value if np.isfinite(value) else np.inf

        rec = minimize_theta(objective, sub.initial_theta(), sub.lower_bounds, **tolerances,
                             restart_edge=False)
        try:
            sigma = profiled_state(*system.update(rec.theta), n, p, model.basis).sigma(model.reml)
        except NotPositiveDefinite:
            return None
        fits.append((sub, rec.theta, sigma))

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
    return np.where(st.lower_bounds == 0, np.maximum(start, 0.0), start)
