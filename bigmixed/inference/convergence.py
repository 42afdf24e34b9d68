"""lme4's checkConv on demand: gradient and Hessian of the objective at the estimates."""
from __future__ import annotations

import warnings as _warnings
from dataclasses import dataclass
import numpy as np
from ..warnings import ConvergenceWarning

@dataclass
class ConvergenceCheck:
    """lme4's checkConv at the optimum: gradient and Hessian of the objective in theta."""

    ok: bool
    singular: bool
    gradient: np.ndarray | None
    hessian: np.ndarray | None
    scaled_gradient: np.ndarray | None  # lme4's solve(chol(H), g)
    max_scaled_gradient: float  # lme4's max(pmin(|scaled|, |g|)); tol 0.002
    newton_step: np.ndarray | None  # H^{-1} g
    hessian_eigenvalues: np.ndarray | None
    messages: list


def check_convergence(fit, *, grad_tol: float = 2e-3, hess_tol: float = 1e-6,
                      rel_step: float = 1e-4, warn: bool = True) -> ConvergenceCheck:
    """lme4's convergence checks (``checkConv``) on demand, after the fit.

    Singular fits are not checked further (lme4 stops at "boundary (singular) fit"). Otherwise
    the gradient and Hessian of the objective are taken by central differences in theta
    (``bigmixed.optimize.finite_difference_derivatives``, step rel_step * max(|theta_i|, 0.1);
    lme4's ``deriv12`` steps 1e-4); the fit is flagged when max(min(|scaled gradient|, |gradient|))
    > grad_tol, the scaled gradient being lme4's solve(chol(H), g), or when the Hessian is not
    positive definite; a ratio of eigenvalues above 1/hess_tol is noted as in lme4 ("nearly
    unidentifiable"). A ConvergenceWarning is issued for a failed check (warn=True).
    """
    from ..fitting.optimize import finite_difference_derivatives

    model = fit._require_model("a convergence check (it evaluates the objective)")
    theta = np.asarray(fit.optimizer_params, dtype=np.float64)
    if model.structure.is_singular(fit.theta):
        return ConvergenceCheck(True, True, None, None, None, 0.0, None, None,
                                ["boundary (singular) fit: gradient and Hessian not checked (as lme4)"])
    free = np.ones(len(theta), dtype=bool)
    # central differences, step rel_step * max(|theta_i|, 0.1) (lme4's deriv12: 1e-4 absolute)
    _, g, H = finite_difference_derivatives(model.objective, theta, free, rel_step=rel_step)
    messages = []
    ok = True
    w = np.linalg.eigvalsh(0.5 * (H + H.T))
    scaled = newton = None
    maxmin = np.nan
    try:
        R = np.linalg.cholesky(0.5 * (H + H.T)).T  # upper, R'R = H
        import scipy.linalg

        scaled = scipy.linalg.solve_triangular(R, g, lower=False)
        newton = np.linalg.solve(H, g)
        maxmin = float(np.max(np.minimum(np.abs(scaled), np.abs(g))))
        if maxmin > grad_tol:
            ok = False
            comp = int(np.argmax(np.minimum(np.abs(scaled), np.abs(g)))) + 1
            messages.append(f"Model failed to converge with max|grad| = {maxmin:.6g} "
                            f"(tol = {grad_tol}, component {comp})")
    except np.linalg.LinAlgError:
        ok = False
        messages.append("unable to evaluate scaled gradient")
    if w.min() <= 0:
        ok = False
        messages.append(f"Model failed to converge: degenerate Hessian with {int((w < 0).sum())} "
                        "negative eigenvalues")
    elif w.max() / w.min() > 1.0 / hess_tol:
        messages.append("Model is nearly unidentifiable: very large eigenvalue ratio "
                        f"{w.max() / w.min():.3g} - Rescale variables?")
    rec = ConvergenceCheck(ok, False, g, H, scaled, maxmin, newton, w, messages)
    if warn and not ok:
        for m in messages:
            _warnings.warn(ConvergenceWarning(m), stacklevel=3)
    return rec
