"""Approximate intervals of a residual structure's parameters, as nlme's intervals()."""
from __future__ import annotations

import numpy as np
import pandas as pd
from .satterthwaite import satterthwaite_state

def residual_intervals(fit, level: float = 0.95) -> pd.DataFrame:
    """Approximate intervals of a residual structure's parameters, as nlme's ``intervals()``.

    Normal intervals on the unconstrained scale the optimizer uses (nlme's: 2 atanh(phi) for
    corAR1, logit(phi) for corCAR1, logit((rho - lo) / (1 - rho)) for corCompSymm, log of the
    varIdent ratios), with the variance from the inverse Hessian of the deviance in
    (theta, eta, sigma) (the Satterthwaite state), mapped back to nlme's scale. Rows: the
    parameters of ``fit.residual_parameters``; columns lower, estimate, upper.
    """
    from scipy import stats

    r = fit.residual
    if r is None:
        raise ValueError("the fit has no residual structure (AR1, CompoundSymmetry, VarIdent)")
    st = satterthwaite_state(fit)
    k0 = fit.structure.n_theta
    eta = np.asarray(fit.residual_eta, dtype=np.float64)
    se = np.sqrt(np.diag(st.vcov_varpar)[k0:k0 + len(eta)])
    z = float(stats.norm.ppf(0.5 + level / 2))
    lower, upper = [], []
    for k in range(len(eta)):
        lo, hi = eta.copy(), eta.copy()
        lo[k] -= z * se[k]
        hi[k] += z * se[k]
        lower.append(r.natural(lo)[k])
        upper.append(r.natural(hi)[k])
    out = pd.DataFrame({"lower": lower, "estimate": r.natural(eta), "upper": upper},
                       index=pd.Index(r.names, name="parameter"))
    out.attrs.update(level=level, method="Wald on nlme's unconstrained scale (nlme's intervals())")
    return out
